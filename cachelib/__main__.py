"""Entry point for ``python -m cachelib``."""

import os
import sys

from ._cli import main

try:
    code = main()
    sys.stdout.flush()
except BrokenPipeError:
    # the reader went away (``| head``): stop quietly, as Unix tools do
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    code = 1
raise SystemExit(code)
