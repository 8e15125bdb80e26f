"""Exceptions and limits shared by the native modules and their pure-Python twins.

The ``.pyx`` files import from here so that both implementations raise the same
classes with the same messages.
"""

from __future__ import annotations

__all__ = (
    "MAX_NODES",
    "MAX_POINTS",
    "MAX_VNODES",
    "MAX_WEIGHT",
    "ArgumentTypeError",
    "EmptyRingError",
    "FastcoreError",
    "InvalidArgumentError",
    "UnknownNodeError",
)

#: Largest ``vnodes`` a ring accepts.
MAX_VNODES = 1 << 16
#: Largest integer weight of one node.
MAX_WEIGHT = 1 << 16
#: Largest number of nodes on one ring.
MAX_NODES = 1 << 20
#: Largest number of points on one ring (about 400 MiB of arrays).
MAX_POINTS = 1 << 25


class FastcoreError(Exception):
    """Root of every exception raised by ``fastcore``."""


class InvalidArgumentError(FastcoreError, ValueError):
    """An argument has a value outside what is allowed (the message says what is)."""


class ArgumentTypeError(FastcoreError, TypeError):
    """A key, node name, seed or data argument has the wrong type."""


class EmptyRingError(FastcoreError, LookupError):
    """A lookup was made on a ring that has no nodes."""


class UnknownNodeError(FastcoreError, KeyError):
    """A node named in a call is not on the ring."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""
