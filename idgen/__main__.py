"""Entry point for ``python -m idgen``."""

from ._cli import main

raise SystemExit(main())
