"""shardkit's native core: hashing and consistent-hash placement.

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
    EmptyRingError,
    FastcoreError,
    InvalidArgumentError,
    UnknownNodeError,
)
from ._impl import NATIVE

if NATIVE:
    from ._hash import md5_digest, xxh3_64, xxh64
    from ._ring import HashRing
else:
    from ._hash_py import md5_digest, xxh3_64, xxh64
    from ._ring_py import HashRing

from ._bounded import BoundedLoadBalancer, pick_bounded

__version__ = "0.1.0"

__all__ = (
    "MAX_NODES",
    "MAX_POINTS",
    "MAX_VNODES",
    "MAX_WEIGHT",
    "NATIVE",
    "ArgumentTypeError",
    "BoundedLoadBalancer",
    "EmptyRingError",
    "FastcoreError",
    "HashRing",
    "InvalidArgumentError",
    "UnknownNodeError",
    "__version__",
    "md5_digest",
    "pick_bounded",
    "xxh3_64",
    "xxh64",
)
