"""Entry point for ``python -m fastcore``."""

from ._cli import main

raise SystemExit(main())
