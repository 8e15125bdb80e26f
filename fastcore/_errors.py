"""Exceptions and limits shared by the native modules and their pure-Python twins.

The ``.pyx`` files import from here so that both implementations raise the same
classes with the same messages.
"""

from __future__ import annotations

__all__ = (
    "MAX_MERKLE_DEPTH",
    "MAX_NODES",
    "MAX_POINTS",
    "MAX_VNODES",
    "MAX_WEIGHT",
    "ArgumentTypeError",
    "ClockMovedBackwardsError",
    "ClockStalledError",
    "CorruptTreeError",
    "EmptyRingError",
    "FastcoreError",
    "GeneratorDisabledError",
    "IdGenError",
    "IdSpaceExhaustedError",
    "InvalidArgumentError",
    "KeyRangeError",
    "RangeExhaustedError",
    "TreeMismatchError",
    "UnknownNodeError",
    "check_int",
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


class KeyRangeError(InvalidArgumentError):
    """A key (or token) lies outside the hash range ``[lo, hi)`` a Merkle tree covers."""


class TreeMismatchError(InvalidArgumentError):
    """Two Merkle trees of different shapes (depth, range or inner rule) were combined."""


class CorruptTreeError(InvalidArgumentError):
    """Bytes given to ``MerkleTree.from_bytes`` are not a valid serialised tree."""


#: Deepest Merkle tree: 2**24 leaves, 256 MiB of digests.
MAX_MERKLE_DEPTH = 24


class IdGenError(FastcoreError):
    """Root of the errors the ID core raises while issuing IDs."""


class ClockMovedBackwardsError(IdGenError, RuntimeError):
    """The clock moved back further than the generator waits out.

    Args:
        step_ms: how far the clock moved back, in ms.
        backward_wait_ms: the largest step back the generator waits out.

    Attributes:
        step_ms: how far the clock moved back, in ms.
        backward_wait_ms: the largest step back the generator waits out.
    """

    def __init__(self, step_ms: int, backward_wait_ms: int = 5) -> None:
        super().__init__(
            f"clock moved backwards by {step_ms} ms "
            f"(more than the {backward_wait_ms} ms the generator waits out)"
        )
        self.step_ms = step_ms
        self.backward_wait_ms = backward_wait_ms

    def __reduce__(self) -> tuple[object, tuple[int, int]]:
        return (type(self), (self.step_ms, self.backward_wait_ms))


class ClockStalledError(IdGenError, RuntimeError):
    """The clock did not reach the tick the generator waited for within its guard time."""


class IdSpaceExhaustedError(IdGenError, OverflowError):
    """The layout's time field ran out (the message names the date), or a range is used up."""


class RangeExhaustedError(IdSpaceExhaustedError):
    """A :class:`~fastcore.RangeCounter` has no IDs left for the request."""


class GeneratorDisabledError(IdGenError, RuntimeError):
    """The generator was disabled; the message is the reason given to ``disable()``."""


def check_int(value: object, what: str, lo: int, hi: int) -> int:
    """``value`` if it is an int (not a bool) in ``[lo, hi]``; else the error naming it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"{what} must be an int, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise InvalidArgumentError(f"{what} must be in [{lo}, {hi}], got {value}")
    return value
