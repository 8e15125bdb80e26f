"""``CacheClient``: keys sharded over Memcached / Redis servers (or the in-process
backend) with the ``fastcore`` ring; multi-key calls fan out to every server at once."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from fastcore import HashRing

from ._backends import MemcachedBackend, RedisBackend, parse_server
from ._errors import ConfigError, ServerUnavailable
from ._keys import KeyCodec
from ._memory import MemoryBackend
from ._values import Serializer

if TYPE_CHECKING:
    from idgen import TrueTimeGenerator

    from ._replicated import ReplicaRange

__all__ = ("CacheClient",)

log = logging.getLogger("cachelib")
_C = TypeVar("_C", bound="CacheClient")
_MISSING = object()
_MAX_TTL = 30 * 24 * 3600  # memcached reads larger expiry times as Unix timestamps


def _check_ttl(ttl: object) -> int:
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= _MAX_TTL:
        raise ConfigError(
            f"ttl must be an int number of seconds in [0, {_MAX_TTL}] (0: no expiry), "
            f"got {ttl!r}")
    return ttl


class _Local:
    """A backend that answers in-process (no I/O): its multi-key calls run at send."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.name = backend.name
        self.max_value = getattr(backend, "max_value", 1 << 62)
        for op in ("get", "set", "add", "delete", "touch", "incr", "decr", "flush", "close"):
            setattr(self, op, getattr(backend, op))
        if hasattr(backend, "add_hints"):  # an in-process server that keeps hints itself
            self.add_hints = backend.add_hints

    @property
    def stats(self) -> Any:
        return self.backend.stats

    def send_get_many(self, keys: list[bytes]) -> Any:
        return self.backend.get_many(keys)

    def send_set_many(self, items: list[tuple[bytes, bytes, int]], ttl: int) -> Any:
        self.backend.set_many({k: (p, f) for k, p, f in items}, ttl)
        return []

    def send_delete_many(self, keys: list[bytes]) -> Any:
        return self.backend.delete_many(keys)

    @staticmethod
    def recv_get_many(done: Any) -> Any:
        return done

    recv_set_many = recv_delete_many = recv_get_many


class CacheClient:
    """A cache client over several servers, keys placed by a consistent-hash ring.

    Args:
        servers: server URLs (``memcached://host:port``, ``unix:///path``,
            ``redis://[user:password@]host:port/db``, ``rediss://...``,
            ``redis+unix:///path``), backend objects, ``(url, weight)`` pairs, or a
            mapping of URL to weight. None (the default): one in-process
            :class:`~cachelib.MemoryBackend`, no server needed.
        ring: ``"xxh3"`` (default) or ``"ketama"`` (libmemcached's placement, for pools
            shared with pylibmc / libmemcached clients).
        vnodes: ring points per unit of weight.
        hash_tags: place keys by the part inside ``{...}`` only (Redis Cluster's rule).
        key_prefix: prepended to every key.
        hash_unsafe_keys: hash keys that memcached refuses (over 250 bytes, spaces,
            control characters) instead of raising.
        pickle, hmac_key, compress_threshold: see :class:`~cachelib.Serializer`.
        timeout, connect_timeout: seconds, per server operation.
        dead_timeout: seconds a failed server is skipped before it is probed again.
        ignore_errors: return a miss (None / False / empty) instead of raising
            :class:`~cachelib.ServerUnavailable` when a server fails.
        failover: when a key's server is down, use the next server of its preference
            list (reads and writes). Off by default: a down server's keys fail (or
            miss, with ``ignore_errors``) rather than move.

    No stale reads after a server returns: a write or delete that fails on a server
    (and, with ``failover``, every key written elsewhere while it was down) is kept as
    a hinted invalidation; the server deletes those keys (or, past 100,000 of them, is
    flushed) before it serves anything again, and the copies written to fallback
    servers are deleted then too.
        on_op: ``on_op(server_name, op, keys, seconds, error)`` after every server
            call, for metrics export (an exception it raises is logged, not raised).
        replicas: servers that hold each key (N). 1, the default: this client, one
            copy per key. N > 1 builds a :class:`~cachelib.ReplicatedCacheClient`
            (versioned records, quorums, read repair, hinted handoff); the options
            ``write_quorum``, ``read_quorum``, ``on_conflict``, ``versions``,
            ``tombstone_ttl`` and ``repair_ttl`` are documented there and only used
            with N > 1.

    Raises:
        ConfigError: a bad option or server.

    Thread safe: share one client between threads (each server has a connection pool).
    Fork safe: a child process never uses its parent's connections.
    """

    _replicas = 1  # copies of each key (ReplicatedCacheClient: N)

    def __new__(cls: type[_C], *args: Any, **kwargs: Any) -> _C:
        # the one dispatch: replicas > 1 is a ReplicatedCacheClient, chosen here so that
        # this class's methods stay as they are (no replication test on the hot path)
        if cls is CacheClient and kwargs.get("replicas", 1) != 1:
            from ._replicated import ReplicatedCacheClient

            return cast(_C, object.__new__(ReplicatedCacheClient))
        return object.__new__(cls)

    def __init__(self, servers: Any = None, *, ring: str = "xxh3", vnodes: int = 160,
                 hash_tags: bool = False, key_prefix: str | bytes = b"",
                 hash_unsafe_keys: bool = False, pickle: bool = False,
                 hmac_key: bytes | None = None, compress_threshold: int | None = 1024,
                 timeout: float = 0.25, connect_timeout: float = 0.25,
                 dead_timeout: float = 2.0, ignore_errors: bool = False,
                 failover: bool = False,
                 on_op: Callable[[str, str, int, float, BaseException | None], None]
                 | None = None, replicas: int = 1, write_quorum: int | None = None,
                 read_quorum: int | None = None,
                 on_conflict: Callable[[Any, list[int]], None] | None = None,
                 versions: TrueTimeGenerator | None = None, tombstone_ttl: int = 60,
                 repair_ttl: int | None = None) -> None:
        if replicas.__class__ is not int or replicas != 1:
            raise ConfigError(
                f"replicas must be an int >= 1, got {replicas!r}" if replicas.__class__
                is not int else f"{type(self).__name__} keeps one copy of each key: for "
                f"replicas={replicas}, subclass ReplicatedCacheClient")
        if write_quorum not in (None, 1) or read_quorum not in (None, 1):
            raise ConfigError(f"with replicas=1 the quorums are 1, got write_quorum="
                              f"{write_quorum!r}, read_quorum={read_quorum!r}")
        for what, value in (("timeout", timeout), ("connect_timeout", connect_timeout),
                            ("dead_timeout", dead_timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"{what} must be a positive number of seconds, got {value!r}")
        if ring not in ("xxh3", "ketama"):
            raise ConfigError(f"ring must be 'xxh3' or 'ketama', got {ring!r}")
        opts: dict[str, Any] = {"timeout": float(timeout),
                                "connect_timeout": float(connect_timeout),
                                "dead_timeout": float(dead_timeout)}
        backends: list[tuple[Any, int]] = []
        if servers is None:
            servers = [MemoryBackend()]
        items = servers.items() if isinstance(servers, Mapping) else servers
        if isinstance(items, (str, bytes)):
            raise ConfigError("servers must be a list of URLs or backends, not a single str")
        for entry in items:
            server, weight = entry if isinstance(entry, tuple) else (entry, 1)
            backends.append((self._backend(server, opts), weight))
        if not backends:
            raise ConfigError("servers must name at least one server")
        self._backends: dict[str, Any] = {}
        weights: dict[str, int] = {}
        for backend, weight in backends:
            name = getattr(backend, "ketama_name", backend.name) if ring == "ketama" \
                else backend.name
            if name in self._backends:
                raise ConfigError(f"server {name!r} is given twice")
            self._backends[name] = backend
            weights[name] = weight
        self._ring = HashRing(weights, vnodes=vnodes, mode=ring, hash_tags=hash_tags)
        self._node_of = self._ring.get_node
        self._max_value = min(getattr(b, "max_value", 1 << 62) for b in self._backends.values())
        memcached = any(isinstance(b, MemcachedBackend) for b in self._backends.values())
        self._keys = KeyCodec(key_prefix, hash_unsafe=hash_unsafe_keys,
                              memcached_rules=memcached or hash_unsafe_keys)
        self._values = Serializer(pickle=pickle, hmac_key=hmac_key,
                                  compress_threshold=compress_threshold,
                                  max_size=self._max_value)
        self._encode = self._keys.encode
        self._dumps = self._values.dumps
        self._loads = self._values.loads
        self._ignore = bool(ignore_errors)
        if not isinstance(failover, bool):
            raise ConfigError(f"failover must be a bool, got {failover!r}")
        self._failover = failover
        if on_op is not None and not callable(on_op):
            raise ConfigError(f"on_op must be callable, got {on_op!r}")
        for backend in self._backends.values():
            if hasattr(backend, "on_op"):
                backend.on_op = on_op
        self._closed = False

    # help() and IDEs read a class's signature from its own __new__ first: show __init__'s
    __new__.__signature__ = inspect.signature(__init__)  # type: ignore[attr-defined]

    @staticmethod
    def _backend(server: Any, opts: dict[str, Any]) -> Any:
        if isinstance(server, str):
            kind = parse_server(server)["kind"]
            if kind == "redis-cluster":  # the whole cluster is one backend of the ring
                from ._cluster import RedisClusterBackend

                return RedisClusterBackend(server, **opts)
            return MemcachedBackend(server, **opts) if kind == "memcached" \
                else RedisBackend(server, **opts)
        if all(hasattr(server, m) for m in ("send_get_many", "recv_get_many")):
            return server
        if all(hasattr(server, m) for m in ("name", "get", "set", "get_many", "set_many",
                                             "delete_many")):
            return _Local(server)
        raise ConfigError(f"not a server URL or backend: {server!r}")

    # --- routing -------------------------------------------------------------------------

    @property
    def ring(self) -> HashRing:
        """The placement ring (node names are the servers' names)."""
        return self._ring

    @property
    def servers(self) -> dict[str, Any]:
        """Server name -> backend."""
        return dict(self._backends)

    def server_for(self, key: str | bytes) -> str:
        """The name of the server that holds ``key`` (with replicas: its first replica)."""
        return self._node_of(self._encode(key))

    @property
    def replicas(self) -> int:
        """How many servers hold each key (N)."""
        return self._replicas

    def preference_list(self, key: str | bytes) -> list[str]:
        """The names of the ``replicas`` servers that hold ``key``, first replica first
        (the first ``replicas`` distinct servers clockwise from the key on the ring;
        the next ones stand in for them while they are down)."""
        return self._ring.get_nodes(self._encode(key), self._replicas)

    def replica_ranges(self) -> list[ReplicaRange]:
        """The ring's hash space as sorted ``ReplicaRange(lo, hi, replicas)``: the keys
        whose ring position (``ring.key_hash`` of the stored key, prefix included) is in
        ``[lo, hi)`` live on ``replicas`` (see :func:`cachelib._replicated.replica_ranges`)."""
        from ._replicated import replica_ranges

        return replica_ranges(self._ring, self._replicas)

    def replication_stats(self) -> dict[str, int]:
        """Replication counters; with one copy per key they are all zero (see
        :meth:`ReplicatedCacheClient.replication_stats`)."""
        from ._replicated import unreplicated_stats

        return unreplicated_stats()

    def repair(self, **options: Any) -> Any:
        """One Merkle anti-entropy round over this client's servers: compare the
        replicas of every key range and copy the newest record where they differ.
        Options and result: :func:`cachelib.repair` / :class:`cachelib.RepairReport`."""
        from ._repair import repair

        return repair(self, **options)

    def _route(self, key: str | bytes) -> tuple[bytes, Any]:
        k = self._encode(key)
        return k, self._backends[self._node_of(k)]

    def _fail(self, exc: ServerUnavailable) -> None:
        log.warning("cache server failure: %s", exc)
        if not self._ignore:
            raise exc

    def _fallback(self, k: bytes, primary: Any) -> Any:
        """With ``failover``: the next server of ``k``'s preference list not marked
        down, or None."""
        for name in self._ring.successors(k):
            backend = self._backends[name]
            breaker = getattr(backend, "breaker", None)
            if backend is not primary and not (breaker and breaker.is_down):
                return backend
        return None

    def _hint(self, backend: Any, keys: Iterable[bytes],
              cleanup: list[tuple[Any, bytes]] | None = None) -> None:
        add = getattr(backend, "add_hints", None)
        if add is not None:
            add(keys, cleanup)

    def _one(self, op: str, key: str | bytes, *args: Any, write: bool = True) -> Any:
        """One single-key call; on a failed server: hints (writes), failover, or raise."""
        k = self._encode(key)
        backend = self._backends[self._node_of(k)]
        try:
            return getattr(backend, op)(k, *args)
        except ServerUnavailable as exc:
            return self._recover(exc, op, k, backend, args, write)

    def _recover(self, exc: ServerUnavailable, op: str, k: bytes, backend: Any,
                 args: tuple[Any, ...], write: bool) -> Any:
        if write:  # the server may still hold the old value: invalidate it later
            self._hint(backend, (k,))
        if self._failover:
            other = self._fallback(k, backend)
            if other is not None:
                try:
                    result = getattr(other, op)(k, *args)
                except ServerUnavailable as exc2:
                    if write:
                        self._hint(other, (k,))
                    log.warning("cache failover failed too: %s", exc2)
                else:
                    if write:  # the copy goes once the primary is back
                        self._hint(backend, (), [(other, k)])
                    return result
        self._fail(exc)
        return _MISSING

    # --- single keys -------------------------------------------------------------------

    def get(self, key: str | bytes, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when it is absent (or, with
        ``ignore_errors``, when its server fails).

        Raises:
            ServerUnavailable: the key's server failed.
            KeyTypeError, InvalidKeyError: a bad key.
            SerializationError: a stored value that cannot be decoded.
        """
        k = self._encode(key)
        backend = self._backends[self._node_of(k)]
        try:
            hit = backend.get(k)
        except ServerUnavailable as exc:
            hit = self._recover(exc, "get", k, backend, (), False)
        if hit is None or hit is _MISSING:
            return default
        return self._loads(hit[0], hit[1])

    def set(self, key: str | bytes, value: Any, ttl: int = 0) -> bool:
        """Store ``value`` under ``key`` for ``ttl`` seconds (0: no expiry).

        Returns True (False only with ``ignore_errors`` when the server failed).

        Raises:
            ServerUnavailable, KeyTypeError, InvalidKeyError, ValueTypeError,
            ValueTooLargeError, ConfigError (a bad ttl).
        """
        payload, flags = self._dumps(value)
        if ttl.__class__ is not int or not 0 <= ttl <= _MAX_TTL:
            _check_ttl(ttl)
        k = self._encode(key)
        backend = self._backends[self._node_of(k)]
        try:
            backend.set(k, payload, flags, ttl)
        except ServerUnavailable as exc:
            return self._recover(exc, "set", k, backend, (payload, flags, ttl),
                                 True) is not _MISSING
        return True

    def add(self, key: str | bytes, value: Any, ttl: int = 0) -> bool:
        """Store ``value`` only if ``key`` is absent; True if stored."""
        payload, flags = self._dumps(value)
        return self._one("add", key, payload, flags, _check_ttl(ttl)) is True

    def delete(self, key: str | bytes) -> bool:
        """Remove ``key``; True if it was there."""
        return self._one("delete", key) is True

    def touch(self, key: str | bytes, ttl: int = 0) -> bool:
        """Give ``key`` a new ``ttl``; True if it was there."""
        return self._one("touch", key, _check_ttl(ttl)) is True

    def _delta(self, op: str, key: str | bytes, delta: int) -> int | None:
        if isinstance(delta, bool) or not isinstance(delta, int) or not 0 <= delta < 1 << 64:
            raise ConfigError(f"delta must be an int in [0, 2**64), got {delta!r}")
        value = self._one(op, key, delta)
        return None if value is _MISSING else value

    def incr(self, key: str | bytes, delta: int = 1) -> int | None:
        """Add ``delta`` to the int stored under ``key``; the new value, or None if
        absent (memcached semantics: wraps at 2**64)."""
        return self._delta("incr", key, delta)

    def decr(self, key: str | bytes, delta: int = 1) -> int | None:
        """Subtract ``delta`` (not below 0); the new value, or None if absent."""
        return self._delta("decr", key, delta)

    # --- several keys: one request per server, all in flight at once --------------------

    def _groups(self, keys: Iterable[str | bytes]
                ) -> tuple[dict[bytes, Any], dict[str, list[bytes]]]:
        keys = keys if isinstance(keys, list) else list(keys)
        originals = dict(zip(self._keys.encode_many(keys), keys))
        groups = self._ring.group_by_node(list(originals)) if originals else {}
        return originals, groups  # type: ignore[return-value]  # the keys are bytes

    def _fan_out(self, groups: Mapping[str, Any], send: str, recv: str, *args: Any
                 ) -> tuple[list[tuple[str, Any]], list[tuple[str, ServerUnavailable]]]:
        """Write every server's request, then read every reply (no threads)."""
        pending = []
        errors: list[tuple[str, ServerUnavailable]] = []
        backends = self._backends
        for name, part in groups.items():
            backend = backends[name]
            try:
                pending.append((name, backend, getattr(backend, send)(part, *args)))
            except ServerUnavailable as exc:
                errors.append((name, exc))
        results = []
        for name, backend, p in pending:
            try:
                results.append((name, getattr(backend, recv)(p)))
            except ServerUnavailable as exc:
                errors.append((name, exc))
        return results, errors

    def _retry_elsewhere(self, groups: Mapping[str, list[Any]], failed: list[str],
                         key_of: Callable[[Any], bytes]) -> dict[str, list[Any]]:
        """With ``failover``: the failed servers' parts regrouped by fallback server."""
        out: dict[str, list[Any]] = {}
        names = {b: n for n, b in self._backends.items()}
        for name in failed:
            primary = self._backends[name]
            for part in groups[name]:
                other = self._fallback(key_of(part), primary)
                if other is not None:
                    out.setdefault(names[other], []).append(part)
        return out

    def _raise_first(self, errors: list[tuple[str, ServerUnavailable]]) -> None:
        for _, exc in errors:
            log.warning("cache server failure: %s", exc)
        if errors and not self._ignore:
            raise errors[0][1]

    def get_many(self, keys: Iterable[str | bytes]) -> dict[Any, Any]:
        """The values of the ``keys`` that are present, as ``{key: value}``, with one
        multi-key request per server, all servers at once.

        Raises:
            ServerUnavailable: a server failed (after the other replies were read);
                with ``ignore_errors`` its keys are missing from the result instead.
        """
        originals, groups = self._groups(keys)
        if not groups:
            return {}
        results, errors = self._fan_out(groups, "send_get_many", "recv_get_many")
        if errors and self._failover:
            retry = self._retry_elsewhere(groups, [n for n, _ in errors], bytes)
            more, errors2 = self._fan_out(retry, "send_get_many", "recv_get_many")
            results += more
            if not errors2 and sum(len(v) for v in retry.values()) == sum(
                    len(groups[n]) for n, _ in errors):
                errors = []  # every key of the failed servers was asked elsewhere
            else:
                errors += errors2
        self._raise_first(errors)
        loads = self._loads
        out: dict[Any, Any] = {}
        for _, found in results:
            for k, (payload, flags) in found.items():
                out[originals[k]] = loads(payload, flags)
        return out

    def set_many(self, mapping: Mapping[str | bytes, Any], ttl: int = 0) -> list[Any]:
        """Store every item; returns the keys that were not stored (empty when all
        were; with ``ignore_errors``, the keys of failed servers too).

        Raises:
            ServerUnavailable: a server failed (the other servers' items are stored).
            and as :meth:`set` for bad keys or values, before anything is sent.
        """
        _check_ttl(ttl)
        originals, encoded = self._encode_items(mapping)
        if not encoded:
            return []
        groups: dict[str, list[tuple[bytes, bytes, int]]] = {}
        for name, ks in self._ring.group_by_node(list(encoded)).items():
            groups[name] = [(k, *encoded[k]) for k in ks]  # type: ignore[index, misc]
        results, errors = self._fan_out(groups, "send_set_many", "recv_set_many", ttl)
        not_stored = {k for _, keys in results for k in keys}
        for name, _ in errors:  # the old values may still be there: invalidate later
            self._hint(self._backends[name], [k for k, _, _ in groups[name]])
            not_stored.update(k for k, _, _ in groups[name])
        if errors and self._failover:
            failed = [n for n, _ in errors]
            retry = self._retry_elsewhere(groups, failed, lambda part: part[0])
            more, errors2 = self._fan_out(retry, "send_set_many", "recv_set_many", ttl)
            missed = {k for _, keys in more for k in keys}
            for name, _ in errors2:
                self._hint(self._backends[name], [k for k, _, _ in retry[name]])
                missed.update(k for k, _, _ in retry[name])
            stored = {k for part in retry.values() for k, _, _ in part} - missed
            for name in failed:  # the copies go once the primary is back
                cleanup = [(self._backends[n], k) for n, part in retry.items()
                           for k, _, _ in part if k in stored and self._node_of(k) == name]
                self._hint(self._backends[name], (), cleanup)
            not_stored -= stored
            errors = [(n, e) for n, e in errors
                      if any(k not in stored for k, _, _ in groups[n])] + errors2
        self._raise_first(errors)
        return [originals[k] for k in originals if k in not_stored]

    def _encode_items(self, mapping: Mapping[str | bytes, Any]
                      ) -> tuple[dict[bytes, Any], dict[bytes, tuple[bytes, int]]]:
        """``({encoded key: key}, {encoded key: (payload, flags)})``; bad keys or values
        raise before anything is sent."""
        encode, dumps = self._encode, self._dumps
        originals: dict[bytes, Any] = {}
        encoded: dict[bytes, tuple[bytes, int]] = {}
        for key, value in mapping.items():
            k = encode(key)
            originals[k] = key
            encoded[k] = dumps(value)
        return originals, encoded

    def delete_many(self, keys: Iterable[str | bytes]) -> int:
        """Remove the keys; how many were there. A key whose server failed is
        invalidated there before the server serves again."""
        _, groups = self._groups(keys)
        if not groups:
            return 0
        results, errors = self._fan_out(groups, "send_delete_many", "recv_delete_many")
        for name, _ in errors:
            self._hint(self._backends[name], groups[name])
        if errors and self._failover:
            retry = self._retry_elsewhere(groups, [n for n, _ in errors], bytes)
            more, errors2 = self._fan_out(retry, "send_delete_many", "recv_delete_many")
            results += more
            errors = errors2
        self._raise_first(errors)
        return sum(n for _, n in results)

    # --- the rest ----------------------------------------------------------------------

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per server: ops, keys, hits, misses, errors, timeouts, fast failures (calls
        refused by the circuit breaker), latency, and whether it is marked down."""
        out = {}
        for name, backend in self._backends.items():
            st = backend.stats.as_dict() if hasattr(backend.stats, "as_dict") \
                else dict(backend.stats())
            breaker = getattr(backend, "breaker", None)
            st["down"] = bool(breaker and breaker.is_down)
            out[name] = st
        return out

    def flush_all(self) -> None:
        """Empty every server (use only on servers of your own)."""
        for backend in self._backends.values():
            backend.flush()

    def close(self) -> None:
        """Close every connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for backend in self._backends.values():
            backend.close()

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CacheClient({list(self._backends)!r}, ring={self._ring.mode!r})"

