"""Distributed ID generation: Snowflake and TrueTime-style IDs with a native core.

``SnowflakeGenerator`` and ``TrueTimeGenerator`` mint 63-bit, time-ordered IDs in C
(thread safe, never a duplicate, waits out sequence exhaustion and small clock steps
back), lease their worker id (``FileLease`` on one host by default), survive ``fork()``
(the child leases a new worker id), and decode IDs back to their fields.
``RangeGenerator`` hands out IDs from blocks leased from a central store (SQLite,
Redis or any SQL database through SQLAlchemy), fetching the next block ahead of need.

Note: PyPI has unrelated projects imported under similar names; this is shardkit's.
"""

from __future__ import annotations

from fastcore import SNOWFLAKE, TRUETIME, IdLayout

from ._errors import (
    ClockMovedBackwards,
    ClockStalled,
    ConfigError,
    ForkedGeneratorError,
    GeneratorDisabled,
    IdGenError,
    IdSpaceExhausted,
    LeaseError,
    LeaseLost,
    NoFreeWorkerId,
    RangeExhausted,
)
from ._format import ID_STYLES, format_id, parse_id
from ._generators import (
    TWITTER_EPOCH_MS,
    DecodedId,
    SnowflakeGenerator,
    TrueTimeGenerator,
    UUIDGenerator,
    decode,
)
from ._lease import FileLease, RedisLease, WorkerLease, default_lease_dir
from ._ranges import MAX_LOOKAHEAD, RangeBlock, RangeGenerator
from ._stores import RangeStore, RedisStore, SQLAlchemyStore, SQLiteStore, StoreError

__version__ = "0.1.0"

__all__ = (
    "ID_STYLES",
    "MAX_LOOKAHEAD",
    "SNOWFLAKE",
    "TRUETIME",
    "TWITTER_EPOCH_MS",
    "ClockMovedBackwards",
    "ClockStalled",
    "ConfigError",
    "DecodedId",
    "FileLease",
    "ForkedGeneratorError",
    "GeneratorDisabled",
    "IdGenError",
    "IdLayout",
    "IdSpaceExhausted",
    "LeaseError",
    "LeaseLost",
    "NoFreeWorkerId",
    "RangeBlock",
    "RangeExhausted",
    "RangeGenerator",
    "RangeStore",
    "RedisLease",
    "RedisStore",
    "SQLAlchemyStore",
    "SQLiteStore",
    "SnowflakeGenerator",
    "StoreError",
    "TrueTimeGenerator",
    "UUIDGenerator",
    "WorkerLease",
    "__version__",
    "decode",
    "default_lease_dir",
    "format_id",
    "parse_id",
)
