"""shardkit's native core: hashing, consistent-hash placement and ID generation.

Every native module has a pure-Python twin with the same behaviour. The native
modules load by default; ``SHARDKIT_PURE_PYTHON=1`` (or a non-CPython interpreter,
or a missing extension) selects the twins. :data:`NATIVE` says which are in use.

Note: PyPI has an unrelated project also imported as ``fastcore`` (fast.ai's);
this is shardkit's.
"""

from __future__ import annotations

from ._errors import (
    MAX_MERKLE_DEPTH,
    MAX_NODES,
    MAX_POINTS,
    MAX_VNODES,
    MAX_WEIGHT,
    ArgumentTypeError,
    ClockMovedBackwardsError,
    ClockStalledError,
    CorruptTreeError,
    EmptyRingError,
    FastcoreError,
    GeneratorDisabledError,
    IdGenError,
    IdSpaceExhaustedError,
    InvalidArgumentError,
    KeyRangeError,
    RangeExhaustedError,
    TreeMismatchError,
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
    from ._merkle import MerkleTree, item_digest, key_token
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
    from ._merkle_py import MerkleTree, item_digest, key_token
    from ._ring_py import HashRing

from ._bounded import BoundedLoadBalancer, pick_bounded
from ._merkle_common import KeyDiff, MerkleDiff, compare_keys, diff_levels

__version__ = "0.1.0"

__all__ = (
    "MAX_MERKLE_DEPTH",
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
    "CorruptTreeError",
    "EmptyRingError",
    "FastcoreError",
    "GeneratorDisabledError",
    "HashRing",
    "IdCore",
    "IdGenError",
    "IdLayout",
    "IdSpaceExhaustedError",
    "InvalidArgumentError",
    "KeyDiff",
    "KeyRangeError",
    "MerkleDiff",
    "MerkleTree",
    "RangeCounter",
    "RangeExhaustedError",
    "TreeMismatchError",
    "UnknownNodeError",
    "__version__",
    "compare_keys",
    "diff_levels",
    "eps_bound_ms",
    "eps_code",
    "item_digest",
    "key_token",
    "md5_digest",
    "pick_bounded",
    "xxh3_64",
    "xxh64",
)
