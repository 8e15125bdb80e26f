"""shardkit's native core: hashing, consistent-hash placement and ID generation.

Every native module has a pure-Python twin with the same behaviour. The native
modules load by default; ``SHARDKIT_PURE_PYTHON=1`` (or a non-CPython interpreter,
or a missing extension) selects the twins. :data:`NATIVE` says which are in use.

Note: PyPI has an unrelated project also imported as ``fastcore`` (fast.ai's);
this is shardkit's.
"""

from __future__ import annotations

from ._errors import (
    MAX_NODES,
    MAX_POINTS,
    MAX_VNODES,
    MAX_WEIGHT,
    ArgumentTypeError,
    ClockMovedBackwardsError,
    ClockStalledError,
    EmptyRingError,
    FastcoreError,
    GeneratorDisabledError,
    IdGenError,
    IdSpaceExhaustedError,
    InvalidArgumentError,
    RangeExhaustedError,
    UnknownNodeError,
)
from ._impl import NATIVE

if NATIVE:
    from ._hash import md5_digest, xxh3_64, xxh64
    from ._ids import (
        SNOWFLAKE,
        TRUETIME,
        IdCore,
        IdLayout,
        RangeCounter,
        eps_bound_ms,
        eps_code,
    )
    from ._ring import HashRing
else:
    from ._hash_py import md5_digest, xxh3_64, xxh64
    from ._ids_py import (
        SNOWFLAKE,
        TRUETIME,
        IdCore,
        IdLayout,
        RangeCounter,
        eps_bound_ms,
        eps_code,
    )
    from ._ring_py import HashRing

from ._bounded import BoundedLoadBalancer, pick_bounded

__version__ = "0.1.0"

__all__ = (
    "MAX_NODES",
    "MAX_POINTS",
    "MAX_VNODES",
    "MAX_WEIGHT",
    "NATIVE",
    "SNOWFLAKE",
    "TRUETIME",
    "ArgumentTypeError",
    "BoundedLoadBalancer",
    "ClockMovedBackwardsError",
    "ClockStalledError",
    "EmptyRingError",
    "FastcoreError",
    "GeneratorDisabledError",
    "HashRing",
    "IdCore",
    "IdGenError",
    "IdLayout",
    "IdSpaceExhaustedError",
    "InvalidArgumentError",
    "RangeCounter",
    "RangeExhaustedError",
    "UnknownNodeError",
    "__version__",
    "eps_bound_ms",
    "eps_code",
    "md5_digest",
    "pick_bounded",
    "xxh3_64",
    "xxh64",
)
