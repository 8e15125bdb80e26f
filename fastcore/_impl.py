"""Chooses the native modules or their pure-Python twins, once, at import time."""

from __future__ import annotations

import os
import platform

__all__ = ("NATIVE", "PURE_PYTHON_REQUESTED")

#: True when the user asked for the pure-Python twins (``SHARDKIT_PURE_PYTHON=1``)
#: or the interpreter is not CPython (the extensions are CPython-only).
PURE_PYTHON_REQUESTED: bool = (
    os.environ.get("SHARDKIT_PURE_PYTHON", "") == "1"
    or platform.python_implementation() != "CPython"
)


def _native_available() -> bool:
    if PURE_PYTHON_REQUESTED:
        return False
    try:
        from . import _hash, _ids, _merkle, _ring  # noqa: F401
    except ImportError:
        return False
    return True


#: True when the compiled Cython modules are in use.
NATIVE: bool = _native_available()
