"""Server backends: one Memcached or Redis server each, over the field's own clients
(pymemcache, redis-py), with a connection pool, fork safety and a circuit breaker.

A backend stores raw ``(payload, flags)`` under ``bytes`` keys, as
:class:`~cachelib.MemoryBackend` does; :class:`~cachelib.CacheClient` serialises values,
encodes keys and picks the backend with the ring. Multi-key operations are split in a
``send_*`` half that writes the request and a ``recv_*`` half that reads the reply, so
the client can put every server's request on the wire before it reads any reply.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import select
import socket
import struct
import threading
import time
import urllib.parse
from typing import Any

from fastcore._forks import ForkAware

from ._errors import CacheError, ConfigError, ServerRefusedError, ServerUnavailable

__all__ = ("Breaker", "MemcachedBackend", "RedisBackend", "ServerStats", "parse_server")

#: Largest value payload a Memcached backend sends by default: memcached's default item
#: size is 1 MiB (``-I``), which also holds the key and the item header.
log = logging.getLogger("cachelib")
_perf_counter = time.perf_counter
#: Hinted invalidations kept per server; beyond this the server is flushed when it returns.
MAX_HINTS = 100_000
MEMCACHED_MAX_VALUE = 1024 * 1024 - 1024
REDIS_MAX_VALUE = 512 * 1024 * 1024
_INT_FLAGS = 2  # the Serializer's type code of an int: stored as plain ASCII decimal


class ServerStats:
    """Counters of one server (read them through ``CacheClient.stats()``)."""

    __slots__ = ("errors", "fast_failures", "hits", "keys", "latency_s", "lock", "misses",
                 "ops", "timeouts")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ops = self.keys = self.hits = self.misses = 0
        self.errors = self.timeouts = self.fast_failures = 0
        self.latency_s = 0.0

    def as_dict(self) -> dict[str, float]:
        with self.lock:
            return {"ops": self.ops, "keys": self.keys, "hits": self.hits,
                    "misses": self.misses, "errors": self.errors, "timeouts": self.timeouts,
                    "fast_failures": self.fast_failures, "latency_s": self.latency_s,
                    "mean_latency_us": self.latency_s / self.ops * 1e6 if self.ops else 0.0}


class Breaker:
    """Circuit breaker of one server.

    A refused connection or a timeout marks the server down for ``dead_timeout``
    seconds; meanwhile calls fail at once without touching the network. After the
    window one call (the probe) may try again; the others keep failing fast until the
    probe succeeds. So a hung server costs at most one timeout per window.
    """

    __slots__ = ("_lock", "_prober", "dead_timeout", "down_until", "last_error")

    def __init__(self, dead_timeout: float) -> None:
        self.dead_timeout = dead_timeout
        self.down_until = 0.0
        self.last_error: str = ""
        self._prober = 0  # the thread probing the server, 0 if none
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """Whether a call may go to the server now."""
        if not self.down_until:
            return True
        me = threading.get_ident()
        with self._lock:
            if not self.down_until or self._prober == me:
                return True
            if self._prober or time.monotonic() < self.down_until:
                return False
            self._prober = me  # this caller probes
            return True

    def success(self) -> None:
        if self.down_until:
            with self._lock:
                self.down_until = 0.0
                self._prober = 0

    def failure(self, error: str) -> None:
        with self._lock:
            self.down_until = time.monotonic() + self.dead_timeout
            self._prober = 0
            self.last_error = error

    @property
    def is_down(self) -> bool:
        return bool(self.down_until)


def parse_server(url: str) -> dict[str, Any]:
    """Splits a server URL into its parts.

    ``memcached://host:port``, ``redis://[user:password@]host:port/db``, ``rediss://``
    (TLS), ``unix:///path`` (memcached), ``redis+unix:///path?db=N`` or
    ``redis+cluster://[user:password@]host:port[,host:port...]`` (a Redis Cluster).

    Raises:
        ConfigError: an unknown scheme or a malformed URL.
    """
    if not isinstance(url, str):
        raise ConfigError(f"a server must be a URL str or a backend, not {type(url).__name__}")
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme
    if scheme == "redis+cluster":  # several host:port: RedisClusterBackend splits them
        return {"kind": "redis-cluster", "url": url}
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"bad port in server URL {url!r}: {exc}") from None
    if scheme == "memcached":
        if not parts.hostname:
            raise ConfigError(f"server URL {url!r} has no host")
        return {"kind": "memcached", "host": parts.hostname, "port": port or 11211}
    if scheme == "unix":
        if not parts.path:
            raise ConfigError(f"server URL {url!r} has no socket path")
        return {"kind": "memcached", "path": parts.path}
    if scheme in ("redis", "rediss", "redis+unix"):
        return {"kind": "redis", "url": url}
    raise ConfigError(
        f"unknown server URL scheme {scheme!r} in {url!r}: use memcached://host:port, "
        "unix:///path, redis://host:port/db, rediss://host:port/db, redis+unix:///path "
        "or redis+cluster://host:port,host:port")


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _is_timeout(exc: BaseException) -> bool:
    import redis

    seen: BaseException | None = exc
    for _ in range(4):  # the exception and what it was raised from
        if seen is None:
            return False
        if isinstance(seen, (TimeoutError, socket.timeout, BlockingIOError,
                             redis.TimeoutError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _stale_error(exc: BaseException) -> bool:
    """A connection the server closed while it sat in the pool (it restarted, or
    dropped an idle client): not a timeout, not a refused connection."""
    if _is_timeout(exc) or isinstance(exc, ConnectionRefusedError):
        return False
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return False
        if isinstance(seen, (ConnectionResetError, BrokenPipeError, EOFError)) or \
                type(seen).__name__ == "MemcacheUnexpectedCloseError":
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _readable(sock: socket.socket) -> bool:
    """Whether an idle connection has something to read: for us, only EOF or a reset."""
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def kernel_timeouts(sock: socket.socket, seconds: float) -> None:
    """Give a blocking socket send and receive timeouts enforced by the kernel
    (``SO_SNDTIMEO`` / ``SO_RCVTIMEO``): a reply that does not come fails the call with
    ``EAGAIN`` (``BlockingIOError``) after ``seconds``, while a reply that does costs no
    extra ``poll()`` per call, as a Python-level socket timeout would."""
    sec = int(seconds)
    tv = struct.pack("ll", sec, int((seconds - sec) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


class _Backend(ForkAware):
    """What the two server backends share: naming, stats, breaker, error handling."""

    name: str
    max_value: int

    def __init__(self, name: str, dead_timeout: float) -> None:
        self.name = name
        self.stats = ServerStats()
        self.breaker = Breaker(dead_timeout)
        #: ``on_op(server, op, keys, seconds, error)`` after every call (set by the client)
        self.on_op: Any = None
        # Hinted invalidations: keys that must be deleted on this server before it serves
        # again (a write or delete that failed here, or a key written to another server
        # while this one was down). Past MAX_HINTS keys the server is flushed instead.
        self._hints: set[bytes] = set()
        self._hints_overflow = False
        self._hints_pending = False
        self._hint_lock = threading.Lock()
        self._deliverer = 0
        self.cleanup: list[tuple[Any, bytes]] = []  # (other backend, key) to delete after

    def add_hints(self, keys: Any, cleanup: list[tuple[Any, bytes]] | None = None) -> None:
        """Remember ``keys`` to delete on this server before it serves again; and, with
        ``cleanup``, copies on other servers to delete once that is done."""
        with self._hint_lock:
            if not self._hints_overflow:
                self._hints.update(keys)
                if len(self._hints) > MAX_HINTS:
                    self._hints_overflow = True
                    self._hints.clear()
            if cleanup:
                self.cleanup += cleanup
            self._hints_pending = True

    @property
    def pending_hints(self) -> int:
        """Keys waiting to be invalidated here (-1: too many, the server gets flushed)."""
        return -1 if self._hints_overflow else len(self._hints)

    def _deliver_hints(self) -> None:
        me = threading.get_ident()
        if self._deliverer == me:
            return  # the delivery's own requests
        with self._hint_lock:  # others wait: they must not read before the delivery
            if not self._hints_pending:
                return
            keys, overflow = list(self._hints), self._hints_overflow
            cleanup = self.cleanup
            self._deliverer = me
            try:
                if overflow:
                    self.flush()  # type: ignore[attr-defined]
                for i in range(0, 0 if overflow else len(keys), 500):
                    pending = self.send_delete_many(keys[i:i + 500])  # type: ignore[attr-defined]
                    self.recv_delete_many(pending)  # type: ignore[attr-defined]
            finally:
                self._deliverer = 0
            self._hints.clear()
            self._hints_overflow = False
            self._hints_pending = False
            self.cleanup = []
        log.info("delivered %s hinted invalidations to %s",
                 "a flush" if overflow else len(keys), self.name)
        for other, key in cleanup:  # best effort: the copies written while it was down
            with contextlib.suppress(ServerUnavailable):
                other.delete(key)

    def _hook(self, op: str, keys: int, seconds: float, error: BaseException | None) -> None:
        try:
            self.on_op(self.name, op, keys, seconds, error)
        except Exception:  # a metrics hook must never break the cache call
            log.exception("cachelib on_op hook failed")

    def check(self) -> None:
        """Raise :class:`ServerUnavailable` at once if the breaker is open; deliver
        pending hinted invalidations before the server serves anything else."""
        if not self.breaker.allow():
            with self.stats.lock:
                self.stats.fast_failures += 1
            raise ServerUnavailable(
                self.name, f"{self.name} is marked down ({self.breaker.last_error}); "
                f"retried after {self.breaker.dead_timeout:g} s")
        if self._hints_pending:
            self._deliver_hints()

    def failed(self, exc: BaseException, what: str) -> ServerUnavailable:
        """Record a failure, open the breaker; the error to raise."""
        timeout = _is_timeout(exc)
        with self.stats.lock:
            self.stats.errors += 1
            self.stats.timeouts += timeout
        reason = _reason(exc)
        self.breaker.failure(reason)
        self._drop_idle()  # the other pooled connections are most likely dead too
        if self.on_op is not None:
            self._hook(what, 0, 0.0, exc)
        err = ServerUnavailable(self.name, f"{what} on {self.name} failed: {reason}")
        err.__cause__ = exc
        return err

    def _drop_idle(self) -> None:
        """Close the pooled idle connections (after a failure)."""

    def done(self, op: str, started: float, keys: int, hits: int) -> None:
        if self.breaker.down_until:
            self.breaker.success()
        elapsed = time.perf_counter() - started
        if self.on_op is not None:
            self._hook(op, keys, elapsed, None)
        # Plain increments, no lock: no Python code runs between the read and the write
        # of one, so under the GIL none is lost (a free-threaded build may lose a few).
        st = self.stats
        st.ops += 1
        st.keys += keys
        st.hits += hits
        st.misses += keys - hits
        st.latency_s += elapsed


# --- Memcached -----------------------------------------------------------------------------


class _Serde:
    """pymemcache serde passing ``(payload, flags)`` through untouched."""

    @staticmethod
    def serialize(key: bytes, value: tuple[bytes, int]) -> tuple[bytes, int]:
        return value

    @staticmethod
    def deserialize(key: bytes, value: bytes, flags: int) -> tuple[bytes, int]:
        return value, flags


_PmClient: Any = None


class MemcachedBackend(_Backend):
    """One memcached server through pymemcache, with a pool of connections.

    Args:
        url: ``memcached://host:port`` or ``unix:///path``.
        timeout: seconds to wait for a reply (a hung server fails after this).
        connect_timeout: seconds to wait for a connection.
        dead_timeout: seconds a failed server is skipped (circuit breaker).
        max_value: largest value payload sent (memcached's item size, minus overhead).
        max_idle: connections kept in the pool.
    """

    def __init__(self, url: str, *, timeout: float = 0.25, connect_timeout: float = 0.25,
                 dead_timeout: float = 2.0, max_value: int = MEMCACHED_MAX_VALUE,
                 max_idle: int = 16) -> None:
        spec = parse_server(url)
        if spec["kind"] != "memcached":
            raise ConfigError(f"not a memcached URL: {url!r}")
        self._address: tuple[str, int] | str = spec.get("path") or (spec["host"], spec["port"])
        host_port = spec.get("path") or (
            spec["host"] if spec["port"] == 11211 else f"{spec['host']}:{spec['port']}")
        super().__init__(f"{spec['host']}:{spec['port']}" if "host" in spec else spec["path"],
                         dead_timeout)
        self.ketama_name = host_port  # libmemcached's point strings omit port 11211
        self.url = url
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_value = max_value
        self._max_idle = max_idle
        self._idle: collections.deque[Any] = collections.deque()  # pop/append: atomic
        self._pid = os.getpid()
        self._register_fork_hook()

    def _after_fork_in_child(self) -> None:
        # the idle connections are the parent's: forget them (closing is the parent's job)
        self._idle = collections.deque()
        self._pid = os.getpid()

    # connections ----------------------------------------------------------------------

    def _new_client(self) -> Any:
        global _PmClient
        if _PmClient is None:
            from pymemcache.client.base import Client  # type: ignore[import-untyped]

            class _KernelTimeoutClient(Client):  # type: ignore[misc]
                sk_timeout = 0.25

                def _connect(self) -> None:
                    super()._connect()  # blocking socket: pymemcache's timeout is None
                    kernel_timeouts(self.sock, self.sk_timeout)

            _PmClient = _KernelTimeoutClient
        client = _PmClient(self._address, serde=_Serde(), timeout=None,
                           connect_timeout=self.connect_timeout, no_delay=True,
                           default_noreply=False)
        client.sk_timeout = self.timeout
        return client

    def _acquire(self) -> Any:
        try:
            return self._idle.pop()
        except IndexError:
            return self._new_client()

    def _drop_idle(self) -> None:
        idle, self._idle = self._idle, collections.deque()
        for client in idle:
            with contextlib.suppress(Exception):
                client.close()

    def _release(self, client: Any, ok: bool) -> None:
        if ok and len(self._idle) < self._max_idle:
            self._idle.append(client)
            return
        with contextlib.suppress(Exception):
            client.close()

    def _with_client(self, what: str, work: Any, retry: bool = True) -> tuple[Any, float]:
        """``work(client)`` on a pooled connection: (result, start time). A connection
        the server closed meanwhile gets one retry on a fresh one (if ``retry``)."""
        if self.breaker.down_until or self._hints_pending:
            self.check()
        started = _perf_counter()
        client = self._acquire()
        try:
            result = work(client)
        except ServerRefusedError:
            self._release(client, True)
            raise
        except Exception as exc:
            self._release(client, False)
            if not (retry and _stale_error(exc)):
                raise self.failed(exc, what) from exc
            self._drop_idle()
            client = self._new_client()
            try:
                result = work(client)
            except Exception as exc2:
                self._release(client, False)
                raise self.failed(exc2, what) from exc2
        self._release(client, True)
        return result, started

    def _call(self, what: str, *args: Any, **kwargs: Any) -> tuple[Any, float]:
        """pymemcache's method ``what``: (result, start time); incr / decr are not
        idempotent, so they are never sent twice."""
        return self._with_client(what, lambda c: getattr(c, what)(*args, **kwargs),
                                 retry=what not in ("incr", "decr"))

    # single keys ----------------------------------------------------------------------

    # get and set, the hot path: the protocol written and read here on the pooled
    # pymemcache connection's socket (pymemcache's own get costs ~40 Python calls)

    @staticmethod
    def _exchange(client: Any, request: bytes, read: Any) -> Any:
        sock = client.sock
        if sock is None:
            client._connect()
            sock = client.sock
        sock.sendall(request)
        return read(sock)

    def _roundtrip(self, what: str, request: bytes, read: Any) -> tuple[Any, float]:
        return self._with_client(what, lambda c: self._exchange(c, request, read))

    def get(self, key: bytes) -> tuple[bytes, int] | None:
        found, started = self._roundtrip("get", b"get " + key + b"\r\n", _read_values)
        value: tuple[bytes, int] | None = found.get(key)
        self.done("get", started, 1, value is not None)
        return value

    def set(self, key: bytes, payload: bytes, flags: int, ttl: int) -> None:
        request = b"set %s %d %d %d\r\n%s\r\n" % (key, flags, ttl, len(payload), payload)
        reply, started = self._roundtrip("set", request, _read_line)
        if reply != b"STORED":
            raise _refused(reply, "set", self.name)
        self.done("set", started, 1, 1)

    def add(self, key: bytes, payload: bytes, flags: int, ttl: int) -> bool:
        stored, started = self._call("add", key, (payload, flags), expire=ttl, noreply=False)
        self.done("add", started, 1, 1)
        return bool(stored)

    def delete(self, key: bytes) -> bool:
        found, started = self._call("delete", key, noreply=False)
        self.done("delete", started, 1, bool(found))
        return bool(found)

    def touch(self, key: bytes, ttl: int) -> bool:
        found, started = self._call("touch", key, expire=ttl, noreply=False)
        self.done("touch", started, 1, bool(found))
        return bool(found)

    def incr(self, key: bytes, delta: int) -> int | None:
        value, started = self._call("incr", key, delta, noreply=False)
        self.done("incr", started, 1, value is not None)
        return None if value is None else int(value)

    def decr(self, key: bytes, delta: int) -> int | None:
        value, started = self._call("decr", key, delta, noreply=False)
        self.done("decr", started, 1, value is not None)
        return None if value is None else int(value)

    # several keys: request out, reply in ----------------------------------------------

    def _send(self, data: bytes, what: str) -> Any:
        if self.breaker.down_until or self._hints_pending:
            self.check()
        client = self._acquire()
        if client.sock is not None and _readable(client.sock):  # closed by the server
            self._release(client, False)
            client = self._new_client()
        try:
            if client.sock is None:
                client._connect()
            client.sock.sendall(data)
        except Exception as exc:
            self._release(client, False)
            raise self.failed(exc, what) from exc
        return client

    def send_get_many(self, keys: list[bytes]) -> Any:
        return (self._send(b"get " + b" ".join(keys) + b"\r\n", "get_many"), len(keys),
                time.perf_counter())

    def recv_get_many(self, pending: Any) -> dict[bytes, tuple[bytes, int]]:
        client, count, started = pending
        try:
            out = _read_values(client.sock)
        except Exception as exc:
            self._release(client, False)
            raise self.failed(exc, "get_many") from exc
        self._release(client, True)
        self.done("get_many", started, count, len(out))
        return out

    def send_set_many(self, items: list[tuple[bytes, bytes, int]], ttl: int) -> Any:
        expire = str(ttl).encode()
        chunks = []
        for key, payload, flags in items:
            chunks += [b"set ", key, b" ", str(flags).encode(), b" ", expire, b" ",
                       str(len(payload)).encode(), b"\r\n", payload, b"\r\n"]
        return (self._send(b"".join(chunks), "set_many"), [k for k, _, _ in items],
                time.perf_counter())

    def recv_set_many(self, pending: Any) -> list[bytes]:
        """The keys that were not stored (empty when all were)."""
        client, keys, started = pending
        failed: list[bytes] = []
        try:
            reader = _Reader(client.sock)
            for key in keys:
                line = reader.line()
                if line != b"STORED":
                    if line.startswith((b"SERVER_ERROR", b"CLIENT_ERROR", b"ERROR")):
                        failed.append(key)
                    else:
                        raise OSError(f"unexpected reply to set: {line[:80]!r}")
        except Exception as exc:
            self._release(client, False)
            raise self.failed(exc, "set_many") from exc
        self._release(client, True)
        self.done("set_many", started, len(keys), len(keys) - len(failed))
        return failed

    def send_delete_many(self, keys: list[bytes]) -> Any:
        data = b"".join(b"delete " + k + b"\r\n" for k in keys)
        return self._send(data, "delete_many"), len(keys), time.perf_counter()

    def recv_delete_many(self, pending: Any) -> int:
        client, count, started = pending
        found = 0
        try:
            reader = _Reader(client.sock)
            for _ in range(count):
                line = reader.line()
                if line == b"DELETED":
                    found += 1
                elif line != b"NOT_FOUND":
                    raise OSError(f"unexpected reply to delete: {line[:80]!r}")
        except Exception as exc:
            self._release(client, False)
            raise self.failed(exc, "delete_many") from exc
        self._release(client, True)
        self.done("delete_many", started, count, found)
        return found

    def flush(self) -> None:
        self._call("flush_all", noreply=False)

    def close(self) -> None:
        idle, self._idle = self._idle, collections.deque()
        if self._pid == os.getpid():
            for c in idle:
                with contextlib.suppress(Exception):
                    c.close()

    def __repr__(self) -> str:
        return f"MemcachedBackend({self.url!r})"

    # listing, for anti-entropy (cachelib._repair) ----------------------------------------

    def scan_digests(self, prefix: bytes = b"", count: int = 1000,
                     on_bytes: collections.abc.Callable[[int], None] | None = None
                     ) -> collections.abc.Iterator[tuple[bytes, int]]:
        """Every key starting with ``prefix`` with the 64-bit digest of its record
        (:func:`cachelib._repair.record_digest`), for anti-entropy.

        memcached cannot hash on the server: the keys come from ``lru_crawler metadump``
        (on by default since memcached 1.6; refused when started with ``-X``), and the
        values are fetched with multi-key ``get`` in batches of ``count`` and
        digested here. The dump walks the hash table (``metadump hash``, memcached
        1.6.9+): a walk of the LRU lists (``metadump all``, the fallback for servers
        without it) misses items that move between LRU segments meanwhile (measured: 11 %
        of 75,000 recently read items). A key may still be missing (expired or evicted
        meanwhile) or listed twice.

        Args:
            prefix: only keys starting with it (the client's key prefix).
            count: keys per ``get`` request.
            on_bytes: called with the number of bytes read from the server, per reply.

        Raises:
            ServerUnavailable: the server failed.
            ServerRefusedError: the server refuses ``lru_crawler metadump``.
        """
        from urllib.parse import unquote_to_bytes

        from ._repair import record_digest

        keys: list[bytes] = []
        deadline = time.monotonic() + max(10.0, 40 * self.timeout)
        mode = b"hash"
        while True:  # the crawler runs one request at a time: BUSY means wait and retry
            if self.breaker.down_until or self._hints_pending:
                self.check()
            started = _perf_counter()
            client = self._new_client()
            client.sk_timeout = max(self.timeout, 5.0)  # the crawler may pause between items
            try:
                client._connect()
                dump, busy = self._metadump(client.sock, mode, prefix, unquote_to_bytes,
                                            keys)
            except ServerRefusedError as exc:
                if mode == b"all" or "not allowed" in str(exc):
                    raise
                mode, dump, busy = b"all", 0, True  # no hash walk here: walk the LRUs
            except Exception as exc:
                raise self.failed(exc, "scan_digests") from exc
            finally:
                with contextlib.suppress(Exception):
                    client.close()
            self.done("metadump", started, 0, 0)
            if on_bytes is not None:
                on_bytes(dump)
            if not busy:
                break
            if time.monotonic() > deadline:
                raise ServerUnavailable(
                    self.name, f"the LRU crawler of {self.name} stayed busy: no metadump")
            time.sleep(0.05)
        for i in range(0, len(keys), count):
            batch = keys[i:i + count]
            found = self.recv_get_many(self.send_get_many(batch))
            if on_bytes is not None:  # VALUE <key> <flags> <size>\r\n<data>\r\n ... END\r\n
                on_bytes(5 + sum(len(b"VALUE %s %d %d\r\n\r\n" % (k, f, len(p))) + len(p)
                                 for k, (p, f) in found.items()))
            for key in batch:
                hit = found.get(key)
                if hit is not None:
                    yield key, record_digest(hit[0], hit[1])

    @staticmethod
    def _metadump(sock: socket.socket, mode: bytes, prefix: bytes, unquote: Any,
                  keys: list[bytes]) -> tuple[int, bool]:
        """Sends ``lru_crawler metadump <mode>`` and appends the keys starting with
        ``prefix`` to ``keys``: (bytes read, whether the crawler was busy)."""
        sock.sendall(b"lru_crawler metadump " + mode + b"\r\n")
        buf, total = b"", 0
        while True:
            chunk = sock.recv(262144)
            if not chunk:
                raise ConnectionResetError("the server closed the connection")
            total += len(chunk)
            *lines, buf = (buf + chunk).split(b"\n")
            for line in lines:  # key=<url-encoded> exp=.. la=.. cas=.. fetch=.. cls=.. size=..
                if line.startswith(b"key="):
                    key = unquote(line[4:line.find(b" ")])
                    if key.startswith(prefix):
                        keys.append(key)
                elif line == b"END\r":
                    return total, False
                elif line.startswith(b"BUSY"):
                    return total, True
                else:
                    text = line.decode("ascii", "replace").strip()
                    raise ServerRefusedError(
                        f"lru_crawler metadump refused: {text} (anti-entropy lists keys "
                        "with it: start memcached without -X, with the LRU crawler on)")

    def get_many_with_ttl(self, keys: list[bytes]
                          ) -> dict[bytes, tuple[bytes, int, float | None]]:
        """``{key: (payload, flags, remaining seconds or None for no expiry)}`` for the
        keys present, with one pipelined meta-get (``mg <key> v f t``) per key.

        Raises:
            ServerUnavailable: the server failed.
        """
        if not keys:
            return {}

        def work(client: Any) -> dict[bytes, tuple[bytes, int, float | None]]:
            request = b"".join(b"mg " + k + b" v f t\r\n" for k in keys) + b"mn\r\n"
            self._exchange(client, request, lambda sock: None)
            reader = _Reader(client.sock)
            out: dict[bytes, tuple[bytes, int, float | None]] = {}
            for key in keys:
                head = reader.line()
                if head == b"EN":
                    continue
                parts = head.split()
                if parts[0] != b"VA":
                    if head.startswith((b"SERVER_ERROR", b"CLIENT_ERROR", b"ERROR")):
                        raise _refused(head, "mg", self.name)
                    raise OSError(f"unexpected reply to mg: {head[:80]!r}")
                flags, ttl = 0, -1
                for token in parts[2:]:
                    if token[:1] == b"f":
                        flags = int(token[1:])
                    elif token[:1] == b"t":
                        ttl = int(token[1:])
                data = reader.exactly(int(parts[1]) + 2)[:-2]
                out[key] = (data, flags, None if ttl < 0 else float(ttl))
            if reader.line() != b"MN":
                raise OSError("unexpected reply to mn after the meta-gets")
            return out

        found, started = self._with_client("get_many_with_ttl", work, retry=True)
        self.done("get_many_with_ttl", started, len(keys), len(found))
        return found  # type: ignore[no-any-return]


def _refused(reply: bytes, what: str, server: str) -> CacheError:
    text = reply.decode("ascii", "replace")
    if reply.startswith((b"SERVER_ERROR", b"CLIENT_ERROR", b"ERROR")):
        return ServerRefusedError(f"memcached {server} refused {what}: {text}")
    return ServerUnavailable(server, f"unexpected reply to {what} from {server}: {text[:80]}")


def _read_line(sock: socket.socket) -> bytes:
    """One reply line (a reply to one command: nothing follows it)."""
    buf = sock.recv(4096)
    while not buf.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionResetError("the server closed the connection")
        buf += chunk
    if not buf:
        raise ConnectionResetError("the server closed the connection")
    return buf[:-2]


_VALUE = re.compile(rb"VALUE (\S+) (\d+) (\d+)\r\n")


def _read_values(sock: socket.socket) -> dict[bytes, tuple[bytes, int]]:
    """The ``VALUE key flags size`` items of a memcached ``get`` reply, up to ``END``,
    parsed in one loop over a growing buffer (one regex match per item)."""
    out: dict[bytes, tuple[bytes, int]] = {}
    recv = sock.recv
    match = _VALUE.match
    buf = recv(262144)
    pos = 0
    while True:
        m = match(buf, pos)
        if m is None:
            if buf.startswith(b"END\r\n", pos):
                if pos + 5 != len(buf):
                    raise OSError("unexpected bytes after END in a get reply")
                return out
            if buf.find(b"\r\n", pos) >= 0 and not buf.startswith(b"VALUE ", pos):
                raise OSError(f"unexpected reply to get: {buf[pos:pos + 80]!r}")
            chunk = recv(262144)  # the header is not complete yet
            if not chunk:
                raise ConnectionResetError("the server closed the connection")
            buf = buf[pos:] + chunk
            pos = 0
            continue
        key, flags, size = m.groups()
        start = m.end()
        stop = start + int(size)
        pos = stop + 2
        while len(buf) < pos:
            chunk = recv(max(262144, pos - len(buf)))
            if not chunk:
                raise ConnectionResetError("the server closed the connection")
            buf += chunk
        out[key] = (buf[start:stop], int(flags))


class _Reader:
    """Buffered reads of memcached text replies from one socket."""

    __slots__ = ("_buf", "_pos", "_sock")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def _more(self) -> None:
        chunk = self._sock.recv(262144)
        if not chunk:
            raise ConnectionResetError("the server closed the connection")
        self._buf = self._buf[self._pos:] + chunk
        self._pos = 0

    def line(self) -> bytes:
        while True:
            end = self._buf.find(b"\r\n", self._pos)
            if end >= 0:
                line = self._buf[self._pos:end]
                self._pos = end + 2
                return line
            self._more()

    def exactly(self, n: int) -> bytes:
        while len(self._buf) - self._pos < n:
            self._more()
        data = self._buf[self._pos:self._pos + n]
        self._pos += n
        return data


# --- Redis -------------------------------------------------------------------------------

# Values carry the Serializer's flags in a first byte (never an ASCII digit or '-');
# ints are stored as plain ASCII decimal, so that INCRBY / DECRBY work on them.
_INCR = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
return redis.call('INCRBY', KEYS[1], ARGV[1])
"""
_DECR = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local v = redis.call('DECRBY', KEYS[1], ARGV[1])
if v < 0 then redis.call('SET', KEYS[1], '0', 'KEEPTTL') return 0 end
return v
"""


def _read_resp_array(sock: socket.socket, count: int) -> list[bytes | None]:
    """An array of ``count`` bulk strings (or nils: RESP2 ``$-1``, RESP3 ``_``) read
    from ``sock``; an error reply raises."""
    recv = sock.recv
    buf = recv(262144)
    pos = 0
    out: list[bytes | None] = []
    header = True
    while True:
        end = buf.find(b"\r\n", pos)
        if end < 0:
            chunk = recv(262144)
            if not chunk:
                raise ConnectionResetError("the server closed the connection")
            buf = buf[pos:] + chunk
            pos = 0
            continue
        kind = buf[pos]
        if header:
            if kind != 0x2A or int(buf[pos + 1:end]) != count:  # '*'
                raise OSError(f"unexpected reply to MGET: {buf[pos:end][:80]!r}")
            header = False
            pos = end + 2
        elif kind == 0x24:  # '$'
            size = int(buf[pos + 1:end])
            if size < 0:
                out.append(None)
                pos = end + 2
            else:
                start = end + 2
                stop = start + size
                while len(buf) < stop + 2:
                    chunk = recv(max(262144, stop + 2 - len(buf)))
                    if not chunk:
                        raise ConnectionResetError("the server closed the connection")
                    buf += chunk
                out.append(buf[start:stop])
                pos = stop + 2
        elif kind == 0x5F:  # '_': RESP3 null
            out.append(None)
            pos = end + 2
        else:
            raise OSError(f"unexpected reply to MGET: {buf[pos:end][:80]!r}")
        if len(out) == count:
            if pos != len(buf):
                raise OSError("unexpected bytes after an MGET reply")
            return out


def _read_resp_one(sock: socket.socket) -> bytes | None:
    """One RESP reply to one command: a bulk string, nil (None), a simple string (its
    text); an error reply raises :class:`ServerRefusedError` (the server is up)."""
    buf = sock.recv(262144)
    while True:
        end = buf.find(b"\r\n")
        if end >= 0:
            break
        chunk = sock.recv(262144)
        if not chunk:
            raise ConnectionResetError("the server closed the connection")
        buf += chunk
    kind = buf[:1]
    if kind == b"$":
        size = int(buf[1:end])
        if size < 0:
            return None
        stop = end + 2 + size
        while len(buf) < stop + 2:
            chunk = sock.recv(max(262144, stop + 2 - len(buf)))
            if not chunk:
                raise ConnectionResetError("the server closed the connection")
            buf += chunk
        return buf[end + 2:stop]
    if kind == b"_":
        return None
    if kind == b"+":
        return buf[1:end]
    if kind == b"-":
        text = buf[1:end].decode("utf-8", "replace")
        raise ServerRefusedError(f"redis refused the command: {text}")
    raise OSError(f"unexpected RESP reply: {buf[:80]!r}")


def _set_request(key: bytes, data: bytes, ttl: float) -> bytes:
    """RESP of ``SET key data [PX ms]`` (no expiry when ``ttl`` is 0)."""
    if ttl:
        px = b"%d" % int(ttl * 1000)
        return (b"*5\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$2\r\nPX\r\n"
                b"$%d\r\n%s\r\n") % (len(key), key, len(data), data, len(px), px)
    return b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(data), data)


def _pack(payload: bytes, flags: int) -> bytes:
    if flags == _INT_FLAGS:
        return payload
    return bytes((flags,)) + payload


def _unpack(data: bytes | None) -> tuple[bytes, int] | None:
    if data is None:
        return None
    if not data:
        return data, 0
    first = data[0]
    if 0x30 <= first <= 0x39 or first == 0x2D:  # '0'-'9' or '-': an int written raw
        return data, _INT_FLAGS
    return data[1:], first


def pool_connection(pool: Any) -> Any:
    """A connected connection from a redis-py pool (counted against its
    ``max_connections``; give it back with ``pool.release``)."""
    try:
        return pool.get_connection()
    except TypeError:  # redis-py before 5.3: a command name is required (and unused)
        return pool.get_connection("_")


class RedisBackend(_Backend):
    """One Redis server through redis-py (hiredis parses replies when installed).

    Args:
        url: ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS) or
            ``redis+unix:///path?db=N``.
        timeout, connect_timeout, dead_timeout: as :class:`MemcachedBackend`.
        max_value: largest value payload sent (Redis' default is 512 MiB).
        max_connections: size of redis-py's connection pool.
    """

    def __init__(self, url: str, *, timeout: float = 0.25, connect_timeout: float = 0.25,
                 dead_timeout: float = 2.0, max_value: int = REDIS_MAX_VALUE,
                 max_connections: int = 64) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        if parse_server(url)["kind"] != "redis":
            raise ConfigError(f"not a redis URL: {url!r}")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "redis+unix":
            name = parts.path
            url = "unix://" + url[len("redis+unix://"):]
        else:
            db = parts.path.strip("/") or "0"
            name = f"{parts.hostname}:{parts.port or 6379}" + (f"/{db}" if db != "0" else "")
        super().__init__(name, dead_timeout)
        self.ketama_name = name
        self.url = url
        self.max_value = max_value
        tls = parts.scheme == "rediss"
        self._pool = redis.ConnectionPool.from_url(
            url, socket_timeout=timeout if tls else None,
            socket_connect_timeout=connect_timeout, retry=Retry(NoBackoff(), 0),
            max_connections=max_connections, health_check_interval=0)
        if not tls:  # kernel-enforced timeouts: no poll() per call
            base = self._pool.connection_class

            class _KernelTimeoutConnection(base):  # type: ignore[misc, valid-type]
                def _connect(self) -> socket.socket:
                    sock: socket.socket = super()._connect()
                    kernel_timeouts(sock, timeout)
                    return sock

            self._pool.connection_class = _KernelTimeoutConnection
        self._client = redis.Redis(connection_pool=self._pool)
        # connections of the multi-key fan-out: made (and handshaken) by redis-py, then
        # owned here, outside redis-py's pool (whose checkout polls the socket each time)
        self._raw_idle: collections.deque[Any] = collections.deque()
        self._max_idle = 16
        self._register_fork_hook()
        self._response_error = redis.ResponseError
        self._incr = self._client.register_script(_INCR)
        self._decr = self._client.register_script(_DECR)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
        """``fn(*args, **kwargs)`` through redis-py: (result, start time)."""
        if self.breaker.down_until or self._hints_pending:
            self.check()
        started = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
        except self._response_error:  # the server answered: it is up
            raise
        except Exception as exc:
            raise self.failed(exc, what) from exc
        return result, started

    def get(self, key: bytes) -> tuple[bytes, int] | None:
        # GET and SET, the hot path: RESP written and read here on a connection redis-py
        # opened (handshake, AUTH, TLS); redis-py's own GET costs ~140 Python calls
        data, started = self._roundtrip(
            "get", b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key))
        value = _unpack(data)
        self.done("get", started, 1, value is not None)
        return value

    @staticmethod
    def _px(ttl: float) -> int | None:
        return int(ttl * 1000) if ttl else None

    def set(self, key: bytes, payload: bytes, flags: int, ttl: int) -> None:
        request = _set_request(key, _pack(payload, flags), ttl)
        reply, started = self._roundtrip("set", request)
        if reply != b"OK":
            raise ServerUnavailable(self.name, f"unexpected reply to SET: {reply!r:.80}")
        self.done("set", started, 1, 1)

    def _roundtrip(self, what: str, request: bytes) -> tuple[Any, float]:
        if self.breaker.down_until or self._hints_pending:
            self.check()
        started = _perf_counter()
        # no poll per call: a connection the server closed meanwhile fails at once
        # (reset / EOF), and GET and SET are safe to send again on a fresh one
        for attempt in (0, 1):
            conn = None
            try:
                conn = self._raw_acquire(poll=attempt == 1)
                sock: Any = conn._sock
                sock.sendall(request)
                reply = _read_resp_one(sock)
            except ServerRefusedError:
                self._raw_release(conn, True)
                raise
            except Exception as exc:
                if conn is not None:
                    self._raw_release(conn, False)
                if attempt == 0 and _stale_error(exc):
                    self._drop_idle()
                    continue
                raise self.failed(exc, what) from exc
            self._raw_release(conn, True)
            return reply, started
        raise AssertionError("unreachable")  # pragma: no cover

    def add(self, key: bytes, payload: bytes, flags: int, ttl: int) -> bool:
        stored, started = self._call("add", self._client.set, key, _pack(payload, flags),
                                     nx=True, px=self._px(ttl))
        self.done("add", started, 1, 1)
        return bool(stored)

    def delete(self, key: bytes) -> bool:
        found, started = self._call("delete", self._client.delete, key)
        self.done("delete", started, 1, bool(found))
        return bool(found)

    def _touch(self, key: bytes, ttl: int) -> bool:
        if ttl:
            return bool(self._client.pexpire(key, int(ttl * 1000)))
        return bool(self._client.persist(key) or self._client.exists(key))

    def touch(self, key: bytes, ttl: int) -> bool:
        found, started = self._call("touch", self._touch, key, ttl)
        self.done("touch", started, 1, found)
        return bool(found)

    def incr(self, key: bytes, delta: int) -> int | None:
        value, started = self._call("incr", self._incr, keys=[key], args=[delta])
        self.done("incr", started, 1, value is not None)
        return None if value is None else int(value)

    def decr(self, key: bytes, delta: int) -> int | None:
        value, started = self._call("decr", self._decr, keys=[key], args=[delta])
        self.done("decr", started, 1, value is not None)
        return None if value is None else int(value)

    # several keys ---------------------------------------------------------------------

    def _send(self, commands: list[tuple[Any, ...]], what: str) -> Any:
        self.check()
        try:
            conn = self._raw_acquire()  # connects (or raises) here
        except Exception as exc:
            raise self.failed(exc, what) from exc
        try:
            conn.send_packed_command(conn.pack_commands(commands))
        except Exception as exc:
            self._raw_release(conn, False)
            raise self.failed(exc, what) from exc
        return conn

    def _recv(self, conn: Any, count: int, what: str) -> list[Any]:
        try:
            replies = [conn.read_response() for _ in range(count)]
        except Exception as exc:
            self._raw_release(conn, False)
            raise self.failed(exc, what) from exc
        self._raw_release(conn, True)
        return replies

    def _after_fork_in_child(self) -> None:
        self._raw_idle = collections.deque()  # the parent's sockets: never touched here

    def _raw_acquire(self, poll: bool = True) -> Any:
        while True:
            try:
                conn = self._raw_idle.pop()
            except IndexError:
                # From redis-py's pool (it connects, and counts it against
                # max_connections); handed back to it when dropped, see _discard.
                return pool_connection(self._pool)
            if conn._sock is not None and not (poll and _readable(conn._sock)):
                return conn
            self._raw_release(conn, False)  # closed by the server meanwhile

    def _drop_idle(self) -> None:
        raw, self._raw_idle = self._raw_idle, collections.deque()
        for conn in raw:
            self._discard(conn)

    def _raw_release(self, conn: Any, ok: bool) -> None:
        if ok and len(self._raw_idle) < self._max_idle:
            self._raw_idle.append(conn)
            return
        self._discard(conn)

    def _discard(self, conn: Any) -> None:
        """Close a connection and give it back to redis-py's pool, so that the pool's
        count of connections in use stays true (else, after ``max_connections``
        reconnections in the life of the process, it would refuse to make more)."""
        with contextlib.suppress(Exception):
            conn.disconnect()
        with contextlib.suppress(Exception):
            self._pool.release(conn)

    def send_get_many(self, keys: list[bytes]) -> Any:
        # MGET written and read here, on the pooled connection's socket (redis-py's
        # command packer and reply parser cost more than the round trip at 25+ keys)
        if self.breaker.down_until or self._hints_pending:
            self.check()
        started = time.perf_counter()
        parts = [b"*%d\r\n$4\r\nMGET\r\n" % (len(keys) + 1)]
        for k in keys:
            parts.append(b"$%d\r\n%s\r\n" % (len(k), k))
        try:
            conn = self._raw_acquire()
        except Exception as exc:
            raise self.failed(exc, "get_many") from exc
        try:
            sock: Any = conn._sock  # connected by get_connection()
            sock.sendall(b"".join(parts))
        except Exception as exc:
            self._raw_release(conn, False)
            raise self.failed(exc, "get_many") from exc
        return conn, keys, started

    def recv_get_many(self, pending: Any) -> dict[bytes, tuple[bytes, int]]:
        conn, keys, started = pending
        try:
            values = _read_resp_array(conn._sock, len(keys))
        except Exception as exc:
            self._raw_release(conn, False)
            raise self.failed(exc, "get_many") from exc
        self._raw_release(conn, True)
        out = {}
        for key, data in zip(keys, values):
            if data is not None:
                out[key] = _unpack(data)
        self.done("get_many", started, len(keys), len(out))
        return out  # type: ignore[return-value]

    def send_set_many(self, items: list[tuple[bytes, bytes, int]], ttl: int) -> Any:
        if ttl:
            px = int(ttl * 1000)
            commands: list[tuple[Any, ...]] = [
                ("SET", k, _pack(p, f), "PX", px) for k, p, f in items]
        else:
            args: list[bytes] = []
            for k, p, f in items:
                args += (k, _pack(p, f))
            commands = [("MSET", *args)]
        return (self._send(commands, "set_many"), [k for k, _, _ in items], len(commands),
                time.perf_counter())

    def recv_set_many(self, pending: Any) -> list[bytes]:
        conn, keys, count, started = pending
        self._recv(conn, count, "set_many")
        self.done("set_many", started, len(keys), len(keys))
        return []

    def send_delete_many(self, keys: list[bytes]) -> Any:
        return self._send([("DEL", *keys)], "delete_many"), len(keys), time.perf_counter()

    def recv_delete_many(self, pending: Any) -> int:
        conn, count, started = pending
        (found,) = self._recv(conn, 1, "delete_many")
        self.done("delete_many", started, count, int(found))
        return int(found)

    def flush(self) -> None:
        self._call("flushdb", self._client.flushdb)

    def close(self) -> None:
        raw, self._raw_idle = self._raw_idle, collections.deque()
        for conn in raw:
            with contextlib.suppress(Exception):
                conn.disconnect()
        self._pool.disconnect()

    def __repr__(self) -> str:
        return f"RedisBackend({self.name!r})"

    # listing, for anti-entropy (cachelib._repair) ----------------------------------------

    def _script(self, name: str, source: str) -> Any:
        """A Lua script registered once per backend (EVALSHA, loaded on NOSCRIPT)."""
        script = self.__dict__.get(name)
        if script is None:
            script = self.__dict__[name] = self._client.register_script(source)
        return script

    def scan_digests(self, prefix: bytes = b"", count: int = 1000,
                     on_bytes: collections.abc.Callable[[int], None] | None = None
                     ) -> collections.abc.Iterator[tuple[bytes, int]]:
        """Every key starting with ``prefix`` with the 64-bit digest of its record
        (:func:`cachelib._repair.record_digest`), for anti-entropy.

        One Lua script call per ``SCAN`` batch of about ``count`` keys: the server hashes
        each value (``redis.sha1hex`` of the stored bytes), so values never cross the
        network, only keys and 16 hex digits each. ``SCAN``'s guarantees apply: a key
        present for the whole scan is listed (maybe twice); keys that are not strings
        are skipped.

        Args:
            prefix: only keys starting with it (glob characters are escaped).
            count: ``SCAN``'s ``COUNT`` hint.
            on_bytes: called with the bytes of each reply read from the server.

        Raises:
            ServerUnavailable: the server failed.
        """
        script = self._script("_scan_digests_script", """
local r = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local out = {r[1]}
for _, k in ipairs(r[2]) do
  local v = redis.pcall('GET', k)
  if type(v) == 'string' then
    out[#out + 1] = k
    out[#out + 1] = string.sub(redis.sha1hex(v), 1, 16)
  end
end
return out
""")
        match = re.sub(rb"([*?\[\]\\])", rb"\\\1", prefix) + b"*"
        cursor: bytes | int = 0
        while True:
            try:
                reply, started = self._call("scan_digests", script,
                                            args=[cursor, match, count])
            except self._response_error as exc:  # scripting refused: the server is up
                raise ServerRefusedError(f"redis {self.name} refused the listing script: "
                                         f"{exc}") from exc
            self.done("scan_digests", started, 0, 0)
            if on_bytes is not None:  # *n\r\n then $len\r\n<data>\r\n per element
                on_bytes(len(b"*%d\r\n" % len(reply)) + sum(
                    len(b"$%d\r\n\r\n" % len(x)) + len(x) for x in reply))
            for i in range(1, len(reply) - 1, 2):
                yield reply[i], int(reply[i + 1], 16)
            cursor = reply[0]
            if cursor in (b"0", 0):
                return

    def get_many_with_ttl(self, keys: list[bytes]
                          ) -> dict[bytes, tuple[bytes, int, float | None]]:
        """``{key: (payload, flags, remaining seconds or None for no expiry)}`` for the
        keys present: ``GET`` and ``PTTL`` of every key in one Lua script call.

        Raises:
            ServerUnavailable: the server failed.
        """
        if not keys:
            return {}
        script = self._script("_get_ttl_script", """
local out = {}
for i, k in ipairs(KEYS) do
  local v = redis.pcall('GET', k)
  if type(v) == 'string' then
    out[2 * i - 1] = v
    out[2 * i] = redis.call('PTTL', k)
  else
    out[2 * i - 1] = false
    out[2 * i] = -2
  end
end
return out
""")
        try:
            reply, started = self._call("get_many_with_ttl", script, keys=keys)
        except self._response_error as exc:
            raise ServerRefusedError(f"redis {self.name} refused the read script: "
                                     f"{exc}") from exc
        out: dict[bytes, tuple[bytes, int, float | None]] = {}
        for i, key in enumerate(keys):
            data, pttl = reply[2 * i], reply[2 * i + 1]
            if data is None or pttl == -2:
                continue
            payload, flags = _unpack(data)  # type: ignore[misc]
            out[key] = (payload, flags, None if pttl < 0 else pttl / 1000)
        self.done("get_many_with_ttl", started, len(keys), len(out))
        return out

    # one key on several servers at once (the replicated client's fan-out) ------------------

    def send_set(self, key: bytes, payload: bytes, flags: int, ttl: int) -> Any:
        """The request half of :meth:`set` (RESP written here, as :meth:`set` does), so a
        client can have one request on each of several servers in flight; the reply is
        read by :meth:`recv_set`."""
        request = _set_request(key, _pack(payload, flags), ttl)
        if self.breaker.down_until or self._hints_pending:
            self.check()
        started = _perf_counter()
        conn = None
        try:
            conn = self._raw_acquire()
            conn._sock.sendall(request)
        except Exception as exc:
            if conn is not None:
                self._raw_release(conn, False)
            raise self.failed(exc, "set") from exc
        return conn, started

    def recv_set(self, pending: Any) -> None:
        """The reply half of :meth:`send_set`."""
        conn, started = pending
        try:
            reply = _read_resp_one(conn._sock)
        except ServerRefusedError:
            self._raw_release(conn, True)
            raise
        except Exception as exc:
            self._raw_release(conn, False)
            raise self.failed(exc, "set") from exc
        self._raw_release(conn, True)
        if reply != b"OK":
            raise ServerUnavailable(self.name, f"unexpected reply to SET: {reply!r:.80}")
        self.done("set", started, 1, 1)
