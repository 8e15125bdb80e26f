"""The embedded backend: an in-process LRU + TTL store with memcached's semantics.

It needs no server: a :class:`~cachelib.CacheClient` created without servers uses
one, and tests can shard over several. Like a memcached server it stores raw
``(payload, flags)`` pairs under byte keys; the client above it encodes keys and
serialises values.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping

from ._errors import ConfigError, SerializationError, ValueTooLargeError

__all__ = ("ENTRY_OVERHEAD", "MemoryBackend")

#: Bytes counted for each entry on top of its key and payload (the dict slot, the
#: entry tuple and its fields), so that many tiny items still count against the limit.
ENTRY_OVERHEAD = 64
_U64 = 1 << 64
_MAX_COUNTER_DIGITS = 20  # len(str(2**64 - 1))

# An entry: (payload, flags, deadline); deadline 0.0 means it never expires.
_Entry = tuple[bytes, int, float]


class MemoryBackend:
    """An in-process cache backend: LRU eviction by size and count, TTL per entry.

    Thread safe (one lock around each call). The size of an entry is its key's and
    payload's lengths plus :data:`ENTRY_OVERHEAD` bytes; when a write takes the total
    over ``max_bytes`` (or the count over ``max_items``) the least recently used
    entries are evicted. Reads (:meth:`get`, :meth:`get_many`) and writes make an
    entry the most recently used. Expired entries are misses; they are removed when
    they are next touched, or evicted first when they reach the end of the LRU order.

    TTLs are relative seconds (int or float): ``0`` or ``None`` means no expiry.
    Unlike memcached, a TTL over 30 days is not read as a Unix time.

    Args:
        max_bytes: Most bytes held, counted as above.
        max_items: Most entries held; None for no limit but ``max_bytes``.
        clock: Monotonic clock in seconds, for tests (default :func:`time.monotonic`).
        name: Name of this backend (a client over several needs distinct names).

    Raises:
        ConfigError: ``max_bytes`` or ``max_items`` is not a positive int.
    """

    def __init__(
        self,
        *,
        max_bytes: int = 64 * 2**20,
        max_items: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str = "memory",
    ) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ConfigError(f"max_bytes must be a positive int, got {max_bytes!r}")
        if max_items is not None and (
            isinstance(max_items, bool) or not isinstance(max_items, int) or max_items <= 0
        ):
            raise ConfigError(f"max_items must be a positive int or None, got {max_items!r}")
        self.name = name
        self.max_bytes = max_bytes
        self.max_items = max_items
        #: Largest payload a single entry can hold (its key still counts against it).
        self.max_value = max_bytes - ENTRY_OVERHEAD
        self._max_items = max_items if max_items is not None else 1 << 62
        self._clock = clock
        self._lock = threading.Lock()
        self._data: OrderedDict[bytes, _Entry] = OrderedDict()
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._expired = 0

    def __repr__(self) -> str:
        return (
            f"MemoryBackend(name={self.name!r}, max_bytes={self.max_bytes}, "
            f"max_items={self.max_items}, items={len(self._data)})"
        )

    # -- reads --------------------------------------------------------------------------

    def get(self, key: bytes) -> tuple[bytes, int] | None:
        """Return ``(payload, flags)`` stored under ``key``, or None on a miss."""
        with self._lock:
            entry = self._data.get(key)
            if entry is None or (entry[2] and entry[2] <= self._clock() and self._expire(key)):
                self._misses += 1
                return None
            self._data.move_to_end(key)
            self._hits += 1
            return entry[0], entry[1]

    def get_many(self, keys: Iterable[bytes]) -> dict[bytes, tuple[bytes, int]]:
        """Return ``{key: (payload, flags)}`` for the keys present (misses are left out)."""
        found: dict[bytes, tuple[bytes, int]] = {}
        with self._lock:
            data = self._data
            now = 0.0
            for key in keys:
                entry = data.get(key)
                if entry is not None and entry[2]:
                    now = now or self._clock()
                    if entry[2] <= now and self._expire(key):
                        entry = None
                if entry is None:
                    self._misses += 1
                    continue
                data.move_to_end(key)
                found[key] = entry[0], entry[1]
            self._hits += len(found)
        return found

    # -- writes -------------------------------------------------------------------------

    def set(self, key: bytes, payload: bytes, flags: int, ttl: float | None) -> None:
        """Store ``(payload, flags)`` under ``key``, replacing any entry.

        Raises:
            ValueTooLargeError: The entry alone is larger than ``max_bytes``.
            ConfigError: ``ttl`` is negative or not a number.
        """
        size = self._check_size(key, payload)
        deadline = self._deadline(ttl)
        with self._lock:
            self._store(key, (payload, flags, deadline), size)

    def set_many(self, items: Mapping[bytes, tuple[bytes, int]], ttl: float | None) -> None:
        """Store every ``key: (payload, flags)`` of ``items``, all with the same TTL.

        Every entry is checked before any is stored: on an error nothing is stored.

        Raises:
            ValueTooLargeError: An entry alone is larger than ``max_bytes``.
            ConfigError: ``ttl`` is negative or not a number.
        """
        deadline = self._deadline(ttl)
        sized = [
            (key, payload, flags, self._check_size(key, payload))
            for key, (payload, flags) in items.items()
        ]
        with self._lock:
            for key, payload, flags, size in sized:
                self._store(key, (payload, flags, deadline), size)

    def add(self, key: bytes, payload: bytes, flags: int, ttl: float | None) -> bool:
        """Store ``(payload, flags)`` only if ``key`` is absent (or expired).

        Returns:
            True if stored, False if ``key`` was present (it becomes the most recently
            used, as in memcached).
        """
        size = self._check_size(key, payload)
        deadline = self._deadline(ttl)
        with self._lock:
            if self._live(key) is not None:
                self._data.move_to_end(key)
                return False
            self._store(key, (payload, flags, deadline), size)
            return True

    def touch(self, key: bytes, ttl: float | None) -> bool:
        """Give ``key`` a new TTL; True if it was present."""
        deadline = self._deadline(ttl)
        with self._lock:
            entry = self._live(key)
            if entry is None:
                return False
            self._data[key] = (entry[0], entry[1], deadline)
            self._data.move_to_end(key)
            return True

    def incr(self, key: bytes, delta: int) -> int | None:
        """Add ``delta`` to the decimal counter under ``key`` (wrapping at 2**64).

        Returns:
            The new value, or None if ``key`` is absent. The entry keeps its flags
            and TTL.

        Raises:
            SerializationError: The stored value is not an unsigned 64-bit decimal.
            ConfigError: ``delta`` is not an int in [0, 2**64).
        """
        return self._count(key, delta, +1)

    def decr(self, key: bytes, delta: int) -> int | None:
        """Subtract ``delta`` from the decimal counter under ``key``, stopping at 0.

        Returns:
            The new value, or None if ``key`` is absent. The entry keeps its flags
            and TTL.

        Raises:
            SerializationError: The stored value is not an unsigned 64-bit decimal.
            ConfigError: ``delta`` is not an int in [0, 2**64).
        """
        return self._count(key, delta, -1)

    def delete(self, key: bytes) -> bool:
        """Remove ``key``; True if it was present (and not expired)."""
        with self._lock:
            if self._live(key) is None:
                return False
            self._remove(key)
            return True

    def delete_many(self, keys: Iterable[bytes]) -> int:
        """Remove every key of ``keys``; return how many were present."""
        removed = 0
        with self._lock:
            for key in keys:
                if self._live(key) is not None:
                    self._remove(key)
                    removed += 1
        return removed

    def flush(self) -> None:
        """Remove every entry (the counters of :meth:`stats` are kept)."""
        with self._lock:
            self._data.clear()
            self._bytes = 0

    def stats(self) -> dict[str, int]:
        """Return counters: items, bytes, hits, misses, evictions, expired.

        ``hits`` and ``misses`` count keys looked up by :meth:`get` and
        :meth:`get_many`; ``evictions`` counts live entries pushed out by the limits;
        ``expired`` counts expired entries removed.
        """
        with self._lock:
            return {
                "items": len(self._data),
                "bytes": self._bytes,
                "hits": self._hits,
                "misses": self._misses,
                "evictions": self._evictions,
                "expired": self._expired,
            }

    def close(self) -> None:
        """Free the stored entries. The backend stays usable (and empty)."""
        self.flush()

    # -- internals (the caller holds the lock where noted) ----------------------------

    def _check_size(self, key: bytes, payload: bytes) -> int:
        size = len(key) + len(payload) + ENTRY_OVERHEAD
        if size > self.max_bytes:
            raise ValueTooLargeError(size, self.max_bytes, "item (key, value and overhead)")
        return size

    def _deadline(self, ttl: float | None) -> float:
        if ttl is None:
            return 0.0
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl >= 0:
            raise ConfigError(  # (not ttl >= 0 also catches nan)
                f"ttl must be a number of seconds >= 0 (0 or None: no expiry), got {ttl!r}"
            )
        return self._clock() + ttl if ttl else 0.0

    def _live(self, key: bytes) -> _Entry | None:
        """The entry under ``key`` unless missing or expired (lock held)."""
        entry = self._data.get(key)
        if entry is not None and entry[2] and entry[2] <= self._clock():
            self._expire(key)
            return None
        return entry

    def _expire(self, key: bytes) -> bool:
        """Remove the expired entry under ``key`` (lock held); always True."""
        self._remove(key)
        self._expired += 1
        return True

    def _remove(self, key: bytes) -> None:
        payload = self._data.pop(key)[0]
        self._bytes -= len(key) + len(payload) + ENTRY_OVERHEAD

    def _store(self, key: bytes, entry: _Entry, size: int) -> None:
        """Insert or replace, then evict down to the limits (lock held)."""
        data = self._data
        old = data.get(key)
        if old is not None:
            self._bytes -= len(key) + len(old[0]) + ENTRY_OVERHEAD
        data[key] = entry
        data.move_to_end(key)
        self._bytes += size
        if self._bytes > self.max_bytes or len(data) > self._max_items:
            self._evict()

    def _evict(self) -> None:
        data = self._data
        now = self._clock()
        while self._bytes > self.max_bytes or len(data) > self._max_items:
            key, (payload, _, deadline) = data.popitem(last=False)
            self._bytes -= len(key) + len(payload) + ENTRY_OVERHEAD
            if deadline and deadline <= now:
                self._expired += 1
            else:
                self._evictions += 1

    def _count(self, key: bytes, delta: int, sign: int) -> int | None:
        if isinstance(delta, bool) or not isinstance(delta, int) or not 0 <= delta < _U64:
            raise ConfigError(f"delta must be an int in [0, 2**64), got {delta!r}")
        with self._lock:
            entry = self._live(key)
            if entry is None:
                return None
            payload, flags, deadline = entry
            if not (0 < len(payload) <= _MAX_COUNTER_DIGITS and payload.isdigit()):
                raise SerializationError(
                    f"cannot increment or decrement a non-numeric value ({payload[:40]!r}); "
                    "counters hold unsigned 64-bit decimal numbers"
                )
            value = int(payload)
            if value >= _U64:
                raise SerializationError(
                    f"cannot increment or decrement {value}: counters are unsigned 64-bit"
                )
            value = (value + delta) % _U64 if sign > 0 else max(value - delta, 0)
            new = b"%d" % value
            self._store(key, (new, flags, deadline), len(key) + len(new) + ENTRY_OVERHEAD)
            return value

    # -- listing, for anti-entropy (cachelib._repair) ---------------------------------

    def scan_digests(
        self, prefix: bytes = b"", count: int = 1000,
        on_bytes: Callable[[int], None] | None = None,
    ) -> Iterable[tuple[bytes, int]]:
        """Every live key starting with ``prefix`` with the 64-bit digest of its record
        (:func:`cachelib._repair.record_digest`), for anti-entropy.

        The entries are copied under the lock (the LRU order is not touched) and
        digested outside it. ``count`` and ``on_bytes`` exist for the servers'
        signature: nothing crosses a network here, so ``on_bytes`` is never called.
        """
        from ._repair import record_digest

        with self._lock:
            now = self._clock()
            items = [(key, entry[0], entry[1]) for key, entry in self._data.items()
                     if key.startswith(prefix) and not (entry[2] and entry[2] <= now)]
        return ((key, record_digest(payload, flags)) for key, payload, flags in items)

    def get_many_with_ttl(
        self, keys: Iterable[bytes],
    ) -> dict[bytes, tuple[bytes, int, float | None]]:
        """``{key: (payload, flags, remaining seconds or None for no expiry)}`` for the
        live keys of ``keys`` (the LRU order and the hit counters are not touched)."""
        out: dict[bytes, tuple[bytes, int, float | None]] = {}
        with self._lock:
            now = self._clock()
            for key in keys:
                entry = self._data.get(key)
                if entry is None or (entry[2] and entry[2] <= now):
                    continue
                out[key] = (entry[0], entry[1], entry[2] - now if entry[2] else None)
        return out
