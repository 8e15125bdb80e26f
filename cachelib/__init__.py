"""shardkit's cache client: keys sharded over Memcached and Redis servers with the
``fastcore`` ring, multi-key calls fanned out to every server at once, honest failure
handling (a circuit breaker per server, hinted invalidations, never a silent miss unless
asked for), and an in-process LRU + TTL backend as the embedded default. On top of it:
replication (N copies, quorums, TrueTime-style versions, read repair, hinted handoff),
Merkle anti-entropy (``repair``), a Redis Cluster backend, and write-through,
write-around and write-back caching in front of a store (``CachedStore``).

Example::

    from cachelib import CacheClient

    cache = CacheClient(["memcached://10.0.0.5:11211", "memcached://10.0.0.6:11211"])
    cache.set("user:42", {"name": "Ada"}, ttl=300)
    cache.get("user:42")                  # {'name': 'Ada'}
    cache.get_many(["user:42", "user:7"]) # one request per server, all in flight at once

    replicated = CacheClient(urls, replicas=3)   # write and read quorums of 2
    replicated.repair()                          # one anti-entropy round

From a shell: ``python -m cachelib demo`` (the whole library, no server needed),
``python -m cachelib where KEY``, ``python -m cachelib repair --servers ...``.
"""

from __future__ import annotations

from ._backends import MemcachedBackend, RedisBackend, ServerStats
from ._client import CacheClient
from ._cluster import RedisClusterBackend
from ._errors import (
    CacheError,
    ConfigError,
    InvalidKeyError,
    KeyTypeError,
    QuorumError,
    SerializationError,
    ServerRefusedError,
    ServerUnavailable,
    SignatureError,
    ValueTooLargeError,
    ValueTypeError,
)
from ._keys import KeyCodec
from ._memory import MemoryBackend
from ._policies import CachedStore, WriteAround, WriteBack, WriteThrough, cached
from ._repair import BackgroundRepair, PairResult, RepairReport, repair
from ._replicated import ReplicaRange, ReplicatedCacheClient
from ._stores import ABSENT, SQLAlchemyStore, SQLiteStore, Store, StoreError
from ._values import Serializer
from ._writeback import (
    NOT_PENDING,
    TOMBSTONE,
    JournalCorruptError,
    JournalLockedError,
    QueueClosedError,
    QueueFullError,
    WriteBackQueue,
)

__version__ = "0.1.0"

__all__ = (
    "ABSENT",
    "NOT_PENDING",
    "TOMBSTONE",
    "BackgroundRepair",
    "CacheClient",
    "CacheError",
    "CachedStore",
    "ConfigError",
    "InvalidKeyError",
    "JournalCorruptError",
    "JournalLockedError",
    "KeyCodec",
    "KeyTypeError",
    "MemcachedBackend",
    "MemoryBackend",
    "PairResult",
    "QueueClosedError",
    "QueueFullError",
    "QuorumError",
    "RedisBackend",
    "RedisClusterBackend",
    "RepairReport",
    "ReplicaRange",
    "ReplicatedCacheClient",
    "SQLAlchemyStore",
    "SQLiteStore",
    "SerializationError",
    "Serializer",
    "ServerRefusedError",
    "ServerStats",
    "ServerUnavailable",
    "SignatureError",
    "Store",
    "StoreError",
    "ValueTooLargeError",
    "ValueTypeError",
    "WriteAround",
    "WriteBack",
    "WriteBackQueue",
    "WriteThrough",
    "__version__",
    "cached",
    "repair",
)
