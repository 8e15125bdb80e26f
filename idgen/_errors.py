"""idgen's exceptions: every one subclasses :class:`IdGenError`.

The ID core in ``fastcore`` raises the clock and exhaustion errors; they are the same
classes, re-exported here under idgen's names.
"""

from __future__ import annotations

from fastcore import (
    ClockMovedBackwardsError,
    ClockStalledError,
    GeneratorDisabledError,
    IdGenError,
    IdSpaceExhaustedError,
    RangeExhaustedError,
)

__all__ = (
    "ClockMovedBackwards",
    "ClockStalled",
    "ConfigError",
    "ForkedGeneratorError",
    "GeneratorDisabled",
    "IdGenError",
    "IdSpaceExhausted",
    "LeaseError",
    "LeaseLost",
    "NoFreeWorkerId",
    "RangeExhausted",
)

#: The clock moved back further than the generator waits out (``.step_ms`` says how far).
ClockMovedBackwards = ClockMovedBackwardsError
#: The clock did not advance while the generator waited for the next tick.
ClockStalled = ClockStalledError
#: The layout's time field (or a range block) is used up.
IdSpaceExhausted = IdSpaceExhaustedError
#: A range block is used up.
RangeExhausted = RangeExhaustedError
#: The generator was disabled (its lease was lost, or it was inherited by a fork).
GeneratorDisabled = GeneratorDisabledError


class ConfigError(IdGenError, ValueError):
    """A generator option is invalid (worker id out of range, epoch in the future, ...)."""


class LeaseError(IdGenError, RuntimeError):
    """A worker-id lease could not be taken or kept."""


class NoFreeWorkerId(LeaseError):  # noqa: N818 (the name says what happened)
    """Every worker id is leased by another live process."""


class LeaseLost(LeaseError):  # noqa: N818
    """The lease expired or was taken by another owner; generation stopped."""


class ForkedGeneratorError(IdGenError, RuntimeError):
    """A generator with a fixed worker id was used in a forked child process."""
