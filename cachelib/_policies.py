"""A cache in front of a system of record: write-through, write-around and write-back,
read-through with single-flight, probabilistic early recomputation (XFetch), TTL
jitter and negative caching; and the ``@cached`` decorator.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import math
import random
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from ._client import _MAX_TTL, CacheClient
from ._errors import CacheError, ConfigError, ServerUnavailable
from ._values import Serializer

__all__ = ("CachedStore", "WriteAround", "WriteBack", "WriteThrough", "cached")

log = logging.getLogger("cachelib")
_F = TypeVar("_F", bound=Callable[..., Any])
_CS = TypeVar("_CS", bound="CachedStore")

# A cache entry of a read-through layer: magic, kind, expiry (Unix s), recompute time
# (s), then the value's flags and payload. The kind byte tells a cached value from a
# cached absence, so no stored value can pass for "absent".
_MAGIC = b"\x00SKe1"
_HEAD = struct.Struct("<5scddI")
_pack = _HEAD.pack
_random = random.random
_time = time.time
_VALUE, _NEGATIVE = b"V", b"N"
POLICIES = ("write-through", "write-around", "write-back")


def _check_ttl(ttl: object) -> float:
    """A per-call TTL of a cache entry: seconds, > 0 and at most 30 days."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or \
            not 0 < ttl <= _MAX_TTL / 1.5:
        raise ConfigError(f"ttl must be a number of seconds in (0, {_MAX_TTL // 1.5:.0f}] "
                          f"(room for the jitter), got {ttl!r}")
    return float(ttl)


class _Flight:
    """Per-key single-flight: the first caller loads, the others wait for its result."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, _Call] = {}

    def run(self, key: str, load: Callable[[], Any]) -> Any:
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if leader:
                call = self._calls[key] = _Call()
        assert call is not None
        if not leader:
            return call.wait()
        try:
            call.result = load()
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            with self._lock:
                del self._calls[key]
            call.done.set()
        return call.result

    def busy(self, key: str) -> bool:
        return key in self._calls


class _Call:
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def wait(self) -> Any:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.result


class _Entries:
    """Encodes read-through cache entries (value or absence, expiry, recompute time)."""

    def __init__(self, serializer: Serializer, ttl: float, jitter: float,
                 negative_ttl: float, beta: float) -> None:
        self.values = serializer
        self.ttl = ttl
        self.jitter = jitter
        self.negative_ttl = negative_ttl
        self.beta = beta
        self._dumps = serializer.dumps

    def _ttl(self, base: float) -> int:
        if self.jitter:
            base *= 1 + random.uniform(-self.jitter, self.jitter)
        return max(1, round(base))

    def value(self, v: Any, delta: float, base: float | None = None) -> tuple[bytes, int]:
        # Inlined (this is on every write): a put costs its cache write plus this.
        ttl = self.ttl if base is None else base
        if self.jitter:
            ttl *= 1.0 + self.jitter * (2.0 * _random() - 1.0)
        t = int(ttl + 0.5) or 1
        payload, flags = self._dumps(v)
        return _pack(_MAGIC, _VALUE, _time() + t, delta, flags) + payload, t

    def negative(self, delta: float) -> tuple[bytes, int]:
        ttl = self._ttl(self.negative_ttl)
        return _HEAD.pack(_MAGIC, _NEGATIVE, time.time() + ttl, delta, 0), ttl

    def read(self, data: Any) -> tuple[bool, Any, float, float] | None:
        """``(present, value, expiry, delta)``, or None for something not ours."""
        if not isinstance(data, bytes) or not data.startswith(_MAGIC) or \
                len(data) < _HEAD.size:
            return None
        _, kind, expiry, delta, flags = _HEAD.unpack_from(data)
        if kind == _NEGATIVE:
            return False, None, expiry, delta
        return True, self.values.loads(data[_HEAD.size:], flags), expiry, delta

    def early(self, expiry: float, delta: float) -> bool:
        """XFetch (Vattani et al., 2015): recompute before expiry with a probability
        that rises as it nears, scaled by how long a recompute takes."""
        if not self.beta or delta <= 0:
            return False
        return time.time() - delta * self.beta * math.log(1.0 - random.random()) >= expiry


class CachedStore:
    """A :class:`CacheClient` in front of a store (the system of record).

    Args:
        cache: the cache (any :class:`CacheClient`, the in-process one included).
        store: the system of record: a :class:`~cachelib.Store` (``get`` returning
            :data:`~cachelib.ABSENT` for a missing key, ``get_many``, ``put``,
            ``put_many``, ``delete``, ``delete_many``).
        policy: ``"write-through"`` (store, then cache), ``"write-around"`` (store,
            then invalidate the cache) or ``"write-back"`` (cache and a write-back
            queue now, the store later in batches).
        ttl: seconds a loaded value stays cached (spread by ``ttl_jitter``).
        ttl_jitter: +/- fraction of the TTL, so keys loaded together do not expire
            together (default 0.1).
        negative_ttl: seconds an absent key is remembered as absent (0: never).
        xfetch_beta: XFetch early recomputation factor (0 disables; 1 is the paper's).
        writeback: options of the :class:`~cachelib.WriteBackQueue` (``batch_size``,
            ``max_delay``, ``journal``, ...), or a queue.

    Reads (all policies) are read-through: a miss loads from the store once per key
    however many threads miss at once (single-flight), and fills the cache.

    Write-through: a store failure reaches the caller and leaves the cache unchanged;
    a cache failure after the store succeeded invalidates the key (the cache client
    delivers the invalidation when the server returns). Write-around: the store, then
    the key is invalidated. Write-back: reads see pending writes first
    (read-your-writes); ``flush()`` / ``close()`` drain the queue.
    """

    def __init__(self, cache: CacheClient, store: Any, *, policy: str = "write-through",
                 ttl: float = 300, ttl_jitter: float = 0.1, negative_ttl: float = 30,
                 xfetch_beta: float = 1.0, writeback: Any = None,
                 serializer: Serializer | None = None) -> None:
        if policy not in POLICIES:
            raise ConfigError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        for what, value in (("ttl", ttl), ("negative_ttl", negative_ttl),
                            ("ttl_jitter", ttl_jitter), ("xfetch_beta", xfetch_beta)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{what} must be a number >= 0, got {value!r}")
        if ttl_jitter >= 1:
            raise ConfigError(f"ttl_jitter must be below 1, got {ttl_jitter!r}")
        if not ttl:
            raise ConfigError("ttl must be > 0 for a read-through cache")
        self.cache = cache
        self.store = store
        self.policy = policy
        self._entries = _Entries(serializer or Serializer(pickle=False), float(ttl),
                                 float(ttl_jitter), float(negative_ttl), float(xfetch_beta))
        self._flight = _Flight()
        self._queue: Any = None
        if policy == "write-back":
            from ._writeback import WriteBackQueue

            self._queue = writeback if isinstance(writeback, WriteBackQueue) else \
                WriteBackQueue(store, **(writeback or {}))
        elif writeback is not None:
            raise ConfigError("writeback options need policy='write-back'")
        self._stats = {"hits": 0, "misses": 0, "loads": 0, "negative_hits": 0,
                       "early_recomputes": 0, "invalidations": 0}

    # --- reads ---------------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``: pending write (write-back), cache, or the store."""
        if self._queue is not None:
            from ._writeback import NOT_PENDING, TOMBSTONE

            pending = self._queue.pending(key)
            if pending is not NOT_PENDING:
                return default if pending is TOMBSTONE else pending
        try:
            entry = self._entries.read(self.cache.get(key))
        except ServerUnavailable:
            entry = None  # the cache is down: read from the store (not cached)
        if entry is not None:
            present, value, expiry, delta = entry
            if time.time() < expiry:
                if self._entries.early(expiry, delta) and not self._flight.busy(key):
                    self._stats["early_recomputes"] += 1
                    return self._load(key, default)
                if present:
                    self._stats["hits"] += 1
                    return value
                self._stats["negative_hits"] += 1
                return default
        self._stats["misses"] += 1
        return self._load(key, default)

    def _load(self, key: str, default: Any) -> Any:
        from ._stores import ABSENT

        def load() -> Any:
            started = time.perf_counter()
            value = self.store.get(key)
            self._stats["loads"] += 1
            delta = time.perf_counter() - started
            if value is ABSENT:
                if self._entries.negative_ttl:
                    data, ttl = self._entries.negative(delta)
                    self._cache_set(key, data, ttl)
                return ABSENT
            data, ttl = self._entries.value(value, delta)
            self._cache_set(key, data, ttl)
            return value

        value = self._flight.run(key, load)
        return default if value is ABSENT else value

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The values of the keys present (pending writes, cache, then one store read
        for all the misses)."""
        from ._stores import ABSENT

        keys = list(dict.fromkeys(keys))
        out: dict[str, Any] = {}
        rest = keys
        if self._queue is not None:
            from ._writeback import TOMBSTONE

            pending = self._queue.pending_many(keys)  # one lock for the whole batch
            rest = [k for k in keys if k not in pending]
            out.update((k, v) for k, v in pending.items() if v is not TOMBSTONE)
        try:
            cached_entries = self.cache.get_many(rest)
        except ServerUnavailable:
            cached_entries = {}
        now = time.time()
        missing = []
        for k in rest:
            entry = self._entries.read(cached_entries.get(k))
            if entry is not None and now < entry[2]:
                if entry[0]:
                    out[k] = entry[1]
                continue
            missing.append(k)
        if missing:
            started = time.perf_counter()
            loaded = self.store.get_many(missing)
            delta = (time.perf_counter() - started) / len(missing)
            self._stats["loads"] += 1
            fill: dict[str | bytes, Any] = {}
            for k in missing:
                value = loaded.get(k, ABSENT)
                if value is ABSENT:
                    if self._entries.negative_ttl:
                        fill[k] = self._entries.negative(delta)[0]
                else:
                    out[k] = value
                    fill[k] = self._entries.value(value, delta)[0]
            if fill:
                try:
                    self.cache.set_many(fill, ttl=max(1, round(self._entries.ttl)))
                except ServerUnavailable as exc:
                    log.warning("cache fill failed: %s", exc)
        return out

    # --- writes --------------------------------------------------------------------------

    def put(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Write ``value`` under ``key`` through the policy.

        Args:
            key: the key.
            value: the value.
            ttl: seconds the cache keeps it (spread by ``ttl_jitter``); default the
                store's ``ttl``.

        Raises:
            StoreError: write-through / write-around: the store failed (the cache is
                left as it was).
            QueueFullError: write-back: the queue is full (``when_full="block"``).
        """
        if ttl is not None:
            ttl = _check_ttl(ttl)
        queue = self._queue
        if queue is not None:  # write-back
            queue.put(key, value)
            data, t = self._entries.value(value, 0.0, ttl)
            try:
                self.cache.set(key, data, ttl=t)
            except ServerUnavailable as exc:  # the pending write serves reads meanwhile
                log.warning("cache write failed: %s", exc)
            return
        self.store.put(key, value)  # a failure reaches the caller, the cache untouched
        if self.policy == "write-around":
            self._invalidate(key)
            return
        data, t = self._entries.value(value, 0.0, ttl)
        if not self._cache_set(key, data, t):
            self._invalidate(key)

    set = put  # the cache-like name (``policy.set(key, value, ttl=...)``)

    def put_many(self, items: Mapping[str, Any], ttl: float | None = None) -> None:
        """Write every item through the policy: one store batch (write-through and
        write-around: all or nothing) and one cache fan-out.

        Raises:
            StoreError: write-through / write-around: the store failed (nothing was
                written, the cache is left as it was).
            QueueFullError: write-back: the queue is full (the items before the one
                that did not fit are queued).
        """
        if ttl is not None:
            ttl = _check_ttl(ttl)
        items = dict(items)
        if not items:
            return
        if self._queue is not None:
            for key, value in items.items():
                self._queue.put(key, value)
        else:
            self.store.put_many(items)  # a failure reaches the caller, the cache untouched
            if self.policy == "write-around":
                self._invalidate_many(list(items))
                return
        entries = {k: self._entries.value(v, 0.0, ttl) for k, v in items.items()}
        by_ttl: dict[int, dict[str | bytes, bytes]] = {}
        for k, (data, t) in entries.items():  # jittered TTLs: one fan-out per distinct TTL
            by_ttl.setdefault(t, {})[k] = data
        failed: list[str] = []
        for t, part in by_ttl.items():
            try:
                failed += [str(k) for k in self.cache.set_many(part, ttl=t)]
            except ServerUnavailable as exc:  # the client keeps hints for that server
                log.warning("cache write failed: %s", exc)
                failed += [str(k) for k in part]
        if failed and self._queue is None:
            self._invalidate_many(failed)  # never a stale value left in the cache

    set_many = put_many

    def delete_many(self, keys: Iterable[str]) -> None:
        """Delete ``keys`` from the store (now, or via the write-back queue) and the
        cache."""
        keys = list(dict.fromkeys(keys))
        if self._queue is not None:
            for key in keys:
                self._queue.delete(key)
        else:
            self.store.delete_many(keys)
        self._invalidate_many(keys)

    def delete(self, key: str) -> None:
        """Delete ``key`` from the store (now, or via the write-back queue) and the cache."""
        if self.policy == "write-back":
            self._queue.delete(key)
        else:
            self.store.delete(key)
        self._invalidate(key)

    def _cache_set(self, key: str, data: bytes, ttl: int) -> bool:
        try:
            return bool(self.cache.set(key, data, ttl=ttl))
        except ServerUnavailable as exc:  # the client keeps a hint for that server
            log.warning("cache write failed: %s", exc)
            return False

    def _invalidate_many(self, keys: list[str]) -> None:
        if not keys:
            return
        self._stats["invalidations"] += len(keys)
        try:
            self.cache.delete_many(keys)
        except ServerUnavailable as exc:  # delivered as hints when the server returns
            log.warning("cache invalidation of %d keys deferred: %s", len(keys), exc)

    def _invalidate(self, key: str) -> None:
        self._stats["invalidations"] += 1
        try:
            self.cache.delete(key)
        except ServerUnavailable as exc:  # delivered as a hint when the server returns
            log.warning("cache invalidation of %r deferred: %s", key, exc)

    # --- the rest ------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Write-back: write every pending write to the store now (True when none is
        left). Other policies: True."""
        return True if self._queue is None else bool(self._queue.flush(timeout))

    def close(self, timeout: float = 10.0) -> list[str]:
        """Drain the write-back queue within ``timeout`` s; the keys not drained."""
        if self._queue is None:
            return []
        left: list[str] = self._queue.close(timeout)
        return left

    def stats(self) -> dict[str, Any]:
        """Read-through counters, and the write-back queue's when there is one."""
        out: dict[str, Any] = dict(self._stats)
        if self._queue is not None:
            out["writeback"] = self._queue.stats()
        return out

    def __enter__(self: _CS) -> _CS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WriteThrough(CachedStore):
    """:class:`CachedStore` with ``policy="write-through"``: the store, then the cache
    (same options, but ``policy`` and ``writeback``)."""

    _POLICY = "write-through"

    def __init__(self, cache: CacheClient, store: Any, **options: Any) -> None:
        for fixed in ("policy", "writeback"):
            if fixed in options:
                raise ConfigError(f"{type(self).__name__} takes no {fixed!r} option; use "
                                  f"CachedStore(policy=...) to choose a policy")
        super().__init__(cache, store, policy=self._POLICY, **options)


class WriteAround(WriteThrough):
    """:class:`CachedStore` with ``policy="write-around"``: the store, then the cache
    entry is invalidated; reads fill it."""

    _POLICY = "write-around"


class WriteBack(CachedStore):
    """:class:`CachedStore` with ``policy="write-back"``, the queue's options given
    directly: ``WriteBack(cache, store, journal="/var/lib/app/wb.journal",
    max_delay=0.05)`` (``batch_size``, ``max_delay``, ``max_pending``, ``journal``,
    ``fsync``, ... as :class:`~cachelib.WriteBackQueue`), or ``queue=`` an existing
    queue."""

    def __init__(self, cache: CacheClient, store: Any, *, ttl: float = 300,
                 ttl_jitter: float = 0.1, negative_ttl: float = 30,
                 xfetch_beta: float = 1.0, serializer: Serializer | None = None,
                 queue: Any = None, **queue_options: Any) -> None:
        from ._writeback import WriteBackQueue

        if "policy" in queue_options or "writeback" in queue_options:
            raise ConfigError("WriteBack takes the queue's options directly (and no "
                              "'policy' / 'writeback'); or use CachedStore(policy=...)")
        if queue is not None and queue_options:
            raise ConfigError("give either queue= or the queue's options, not both")
        known = set(inspect.signature(WriteBackQueue.__init__).parameters) - {"self", "store"}
        unknown = sorted(set(queue_options) - known)
        if unknown:
            raise ConfigError(f"unknown write-back option(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(known))}")
        super().__init__(cache, store, policy="write-back", ttl=ttl, ttl_jitter=ttl_jitter,
                         negative_ttl=negative_ttl, xfetch_beta=xfetch_beta,
                         serializer=serializer,
                         writeback=queue if queue is not None else queue_options)


# --- the decorator ---------------------------------------------------------------------------


def _key_of(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
            prefix: str) -> str:
    try:
        text = repr((args, sorted(kwargs.items())))
    except Exception as exc:  # pragma: no cover - a repr that raises
        raise CacheError(f"cannot build a cache key from the arguments: {exc}") from exc
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16)
    return f"{prefix}{func.__module__}.{func.__qualname__}:{digest.hexdigest()}"


def cached(cache: CacheClient | None = None, *, ttl: float = 300, ttl_jitter: float = 0.1,
           negative: bool = False, negative_ttl: float = 30, xfetch_beta: float = 1.0,
           key: Callable[..., str] | None = None, prefix: str = "") -> Callable[[_F], _F]:
    """Cache a function's results (``@cached(cache, ttl=60)``), as cachetools /
    dogpile.cache users expect: one call per key at a time (single-flight), XFetch
    early recomputation, TTL jitter.

    The key is ``prefix + module.qualname + ":" + blake2b(repr(args, kwargs))`` unless
    ``key(*args, **kwargs)`` builds it. A result of None is cached only with
    ``negative=True`` (for ``negative_ttl`` s). The wrapper has ``invalidate(*args,
    **kwargs)`` and ``key_for(*args, **kwargs)``.
    """
    client = cache if cache is not None else CacheClient()
    entries = _Entries(Serializer(pickle=False), float(ttl), float(ttl_jitter),
                       float(negative_ttl) if negative else 0.0, float(xfetch_beta))
    flight = _Flight()

    def decorate(func: _F) -> _F:
        def key_for(*args: Any, **kwargs: Any) -> str:
            return key(*args, **kwargs) if key is not None else \
                _key_of(func, args, kwargs, prefix)

        def load(k: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            started = time.perf_counter()
            result = func(*args, **kwargs)
            delta = time.perf_counter() - started
            if result is None:
                if entries.negative_ttl:
                    data, t = entries.negative(delta)
                    client.set(k, data, ttl=t)
                return None
            data, t = entries.value(result, delta)
            client.set(k, data, ttl=t)
            return result

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            k = key_for(*args, **kwargs)
            entry = entries.read(client.get(k))
            if entry is not None:
                present, value, expiry, delta = entry
                if time.time() < expiry and not (
                        entries.early(expiry, delta) and not flight.busy(k)):
                    return value if present else None
            return flight.run(k, lambda: load(k, args, kwargs))

        def invalidate(*args: Any, **kwargs: Any) -> bool:
            return bool(client.delete(key_for(*args, **kwargs)))

        wrapper.invalidate = invalidate  # type: ignore[attr-defined]
        wrapper.key_for = key_for  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate
