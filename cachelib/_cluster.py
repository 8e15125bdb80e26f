"""A Redis Cluster as one cache backend, over redis-py's :class:`redis.cluster.RedisCluster`.

:class:`~cachelib.CacheClient` shards keys over its servers with its own ring; a Redis
Cluster shards them itself, by hash slot. So a cluster is *one* backend in the ring
(every key the ring sends it, the cluster places), and this module does what a cluster
client must: it sends each command to the primary that serves the key's slot, follows
``MOVED`` / ``ASK`` redirects, and refreshes its slot map when the topology changes (a
primary fails and its replica takes over).

Values are stored byte for byte as :class:`~cachelib.RedisBackend` stores them (the
Serializer's flags in a first byte, ints as plain ASCII decimal; TTLs as ``PX``), so
a key reads the same from a cluster node as from a standalone Redis.

Multi-key calls group the keys by slot (one ``MGET`` / ``MSET`` / ``DEL`` per slot: never
a ``CROSSSLOT`` error) and pipeline each primary's commands on one connection, every
primary's request written before any reply is read.

Every command of this backend is written as RESP and its reply parsed here, on
connections made and handshaken by redis-py's per-node pools and then held here (the
technique of :class:`~cachelib.RedisBackend`); redis-py's slot map routes them, and
redis-py itself only serves the rare paths (a redirect after the first resend,
``NOSCRIPT``, ``TRYAGAIN``, ``FLUSHDB``).

Hash tags: Redis places a key by the part inside its first ``{...}``, and the key it
sees is the *full* key, the client's ``key_prefix`` included. So a ``key_prefix``
must not contain braces (a prefix ``"{app}:"`` would put every key in one slot).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import threading
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

from ._backends import _DECR as _DECR_SCRIPT
from ._backends import _INCR as _INCR_SCRIPT
from ._backends import (
    REDIS_MAX_VALUE,
    _Backend,
    _pack,
    _read_resp_one,
    _readable,
    _set_request,
    _unpack,
    kernel_timeouts,
    pool_connection,
)
from ._errors import ConfigError, ServerRefusedError

__all__ = ("RedisClusterBackend", "parse_cluster_url")

_SCHEME = "redis+cluster://"
_perf_counter = time.perf_counter


def parse_cluster_url(url: str) -> dict[str, Any]:
    """Splits ``redis+cluster://[user:password@]host:port[,host:port...][/0]``.

    Returns:
        ``{"nodes": [(host, port), ...], "username": str | None, "password": str | None}``
        (port 6379 when omitted).

    Raises:
        ConfigError: a malformed URL, no node, a database other than 0 (a cluster has
            only database 0), or query options (none are supported).
    """
    if not isinstance(url, str) or not url.startswith(_SCHEME):
        raise ConfigError(f"not a Redis Cluster URL (redis+cluster://host:port,...): {url!r}")
    rest = url[len(_SCHEME):]
    rest, _, query = rest.partition("?")
    if query:
        raise ConfigError(f"Redis Cluster URL {url!r}: query options are not supported")
    netloc, _, path = rest.partition("/")
    if path not in ("", "0"):
        raise ConfigError(
            f"Redis Cluster URL {url!r}: a cluster has only database 0, got {path!r}")
    userinfo, _, hosts = netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username = urllib.parse.unquote(user) or None
        password = urllib.parse.unquote(secret) if colon else None
    nodes: list[tuple[str, int]] = []
    for part in hosts.split(","):
        nodes.append(_host_port(part.strip(), url))
    return {"nodes": nodes, "username": username, "password": password}


def _host_port(part: str | tuple[str, int], where: object) -> tuple[str, int]:
    if isinstance(part, tuple):
        if len(part) == 2 and isinstance(part[0], str) and part[0] \
                and isinstance(part[1], int) and not isinstance(part[1], bool) \
                and 0 < part[1] < 65536:
            return part
        raise ConfigError(f"a startup node must be (host, port), got {part!r} in {where!r}")
    if not isinstance(part, str) or not part:
        raise ConfigError(f"empty or bad startup node {part!r} in {where!r}")
    split = urllib.parse.urlsplit("//" + part)
    try:
        port = split.port
    except ValueError as exc:
        raise ConfigError(f"bad port in startup node {part!r} of {where!r}: {exc}") from None
    if not split.hostname or split.path or split.username or split.password:
        raise ConfigError(f"a startup node must be host:port, got {part!r} in {where!r}")
    return split.hostname, port or 6379


_WORDS = {w: w.encode() for w in ("GET", "SET", "MGET", "MSET", "DEL", "PX", "NX", "PEXPIRE",
                                  "PERSIST", "EXISTS", "EVALSHA", "EVAL")}


def _resp(commands: list[tuple[Any, ...]]) -> bytes:
    """Commands of bytes, str and int arguments as one RESP request (redis-py's packer
    costs more than the round trip for a fan-out of hundreds of commands)."""
    out: list[bytes] = []
    for args in commands:
        out.append(b"*%d\r\n" % len(args))
        for arg in args:
            if arg.__class__ is not bytes:
                arg = _WORDS.get(arg) or str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


def _read_replies(sock: Any, count: int, parse_error: Any) -> list[Any]:
    """``count`` RESP2 replies read from ``sock``, as redis-py's parser gives them without
    response callbacks (bulk and simple strings as bytes, nil as None, integers, arrays
    as lists), an error reply as redis-py's exception for it (``parse_error``), not
    raised. Bytes past the last reply mean a desynchronised connection: OSError."""
    recv = sock.recv
    buf = recv(262144)
    if not buf:
        raise ConnectionResetError("the server closed the connection")
    pos = 0
    replies: list[Any] = []
    arrays: list[tuple[list[Any], int]] = []  # the arrays being read, innermost last
    item: Any
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
        if kind == 0x24:  # '$' bulk string
            size = int(buf[pos + 1:end])
            if size < 0:
                item = None
                pos = end + 2
            else:
                start = end + 2
                stop = start + size
                while len(buf) < stop + 2:
                    chunk = recv(max(262144, stop + 2 - len(buf)))
                    if not chunk:
                        raise ConnectionResetError("the server closed the connection")
                    buf += chunk
                item = buf[start:stop]
                pos = stop + 2
        elif kind == 0x2A:  # '*' array
            size = int(buf[pos + 1:end])
            pos = end + 2
            if size > 0:
                arrays.append(([], size))
                continue
            item = None if size < 0 else []
        elif kind == 0x3A:  # ':' integer
            item = int(buf[pos + 1:end])
            pos = end + 2
        elif kind == 0x2B:  # '+' simple string
            item = buf[pos + 1:end]
            pos = end + 2
        elif kind == 0x2D:  # '-' error
            item = parse_error(buf[pos + 1:end].decode("utf-8", "replace"))
            pos = end + 2
        elif kind == 0x5F:  # '_' RESP3 null
            item = None
            pos = end + 2
        else:
            raise OSError(f"unexpected RESP reply: {buf[pos:end][:80]!r}")
        while arrays:
            elements, size = arrays[-1]
            elements.append(item)
            if len(elements) < size:
                break
            arrays.pop()
            item = elements
        else:
            replies.append(item)
            if len(replies) == count:
                if pos != len(buf):
                    raise OSError("unexpected bytes after the replies")
                return replies


def _timeout_named(exc: BaseException) -> BaseException:
    """A kernel-enforced socket timeout (EAGAIN) as the TimeoutError it is."""
    if isinstance(exc, BlockingIOError):
        named = TimeoutError(f"no reply in time ({exc})")
        named.__cause__ = exc
        return named
    return exc


def _primary(nodes: Any, slot: int) -> Any:
    """The primary serving ``slot`` in redis-py's slot map (``NodesManager.slots_cache``,
    read as its ``get_node_from_slot`` reads it, without the cost of its deprecation
    wrapper); SlotNotCoveredError for a slot without one."""
    found = nodes.slots_cache.get(slot)
    if found:
        return found[0]
    return nodes.get_node_from_slot(slot)


def _node_name(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class RedisClusterBackend(_Backend):
    """A Redis Cluster through redis-py's ``RedisCluster``: one backend of a
    :class:`~cachelib.CacheClient`, which the cluster shards by hash slot.

    Args:
        url_or_startup_nodes: ``redis+cluster://[user:password@]host:port[,host:port...]``,
            or a list of ``"host:port"`` strings / ``(host, port)`` pairs. One reachable
            node is enough: the others are discovered (``CLUSTER SLOTS``).
        timeout: seconds to wait for a reply.
        connect_timeout: seconds to wait for a connection.
        dead_timeout: seconds the cluster is skipped after a failed call (circuit
            breaker; one for the whole cluster, as a cluster with
            ``cluster-require-full-coverage yes`` refuses every key while one of its
            slot ranges has no primary).
        max_value: largest value payload sent (Redis' default is 512 MiB).
        max_connections: connections per cluster node.
        retries: how many times a command whose node refused the *connection* is
            sent again after the slot map is refreshed (nothing was sent, so this is safe
            for every command, ``incr`` included). A command that was sent is never sent
            twice: a timeout or a connection lost mid-reply fails the call.

    Failover: when a primary dies, calls to its slots fail with
    :class:`~cachelib.ServerUnavailable` (connection refused; then, once the cluster
    notices after ``cluster-node-timeout``, ``CLUSTERDOWN`` for every key) until its
    replica is promoted; the next call after that refreshes the slot map and goes to
    the new primary. Resharding: on ``MOVED`` the slot map is reloaded and the commands
    sent again; ``ASK`` is followed; a multi-key command that gets ``TRYAGAIN`` (its
    slot's keys half migrated) is sent again key by key.

    Hash tags: the cluster places a key by the first ``{...}`` of the *full* key, the
    client's ``key_prefix`` included, so keys sharing a tag share a slot (and with
    ``CacheClient(hash_tags=True)`` a ring server too). A ``key_prefix`` must not
    contain braces: its tag would put every key in one slot, on one primary.

    Errors: an unreachable node, a timeout, ``CLUSTERDOWN`` or an uncovered slot raise
    :class:`~cachelib.ServerUnavailable` (and open the breaker); a command the cluster
    refuses (e.g. ``OOM``, ``WRONGTYPE``) raises :class:`~cachelib.ServerRefusedError`.

    Raises:
        ConfigError: a bad URL or node list. Nothing is connected until the first call.

    Thread safe (redis-py's per-node connection pools); fork safe: a child process
    builds its own cluster client and never uses its parent's connections.
    """

    def __init__(self, url_or_startup_nodes: str | Sequence[str | tuple[str, int]], *,
                 timeout: float = 0.25, connect_timeout: float = 0.25,
                 dead_timeout: float = 2.0, max_value: int = REDIS_MAX_VALUE,
                 max_connections: int = 64, retries: int = 2) -> None:
        if isinstance(url_or_startup_nodes, str):
            spec = parse_cluster_url(url_or_startup_nodes)
            self.url = url_or_startup_nodes
        elif isinstance(url_or_startup_nodes, Sequence) and url_or_startup_nodes:
            spec = {"nodes": [_host_port(n, url_or_startup_nodes)
                              for n in url_or_startup_nodes],
                    "username": None, "password": None}
            self.url = _SCHEME + ",".join(_node_name(h, p) for h, p in spec["nodes"])
        else:
            raise ConfigError("a Redis Cluster needs a redis+cluster:// URL or a non-empty "
                              f"list of host:port startup nodes, got {url_or_startup_nodes!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigError(f"retries must be an int >= 0, got {retries!r}")
        self.startup_nodes: list[tuple[str, int]] = spec["nodes"]
        name = "cluster:" + ",".join(_node_name(h, p) for h, p in self.startup_nodes)
        super().__init__(name, dead_timeout)
        self.ketama_name = name
        self.max_value = max_value
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._username: str | None = spec["username"]
        self._password: str | None = spec["password"]
        self._max_connections = max_connections
        self._retries = retries
        self._client: Any = None  # redis.cluster.RedisCluster, made on first use
        self._lock = threading.Lock()
        self._stale_map = False  # refresh the slot map before the next call
        self._forked_from: list[Any] = []  # the parent's clients (never used, never closed)
        # EVALSHA by the scripts' SHA1 (Redis' names for them); EVAL on NOSCRIPT
        self._incr_sha = hashlib.sha1(_INCR_SCRIPT.encode()).hexdigest()
        self._decr_sha = hashlib.sha1(_DECR_SCRIPT.encode()).hexdigest()
        self._scripts = {self._incr_sha: _INCR_SCRIPT, self._decr_sha: _DECR_SCRIPT}
        # connections of the hot paths: made (and handshaken) by redis-py's per-node
        # pools, then held here by node name, with (pool, connection) to give them back
        self._idle: dict[str, collections.deque[tuple[Any, Any]]] = {}
        self._max_idle = 16
        import redis
        from redis._parsers.base import BaseParser
        from redis.crc import key_slot

        self._key_slot = key_slot
        self._response_error = redis.ResponseError
        self._parse_error: Any = BaseParser.parse_error  # error text -> redis-py's exception
        self._register_fork_hook()

    # --- the redis-py client -----------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        # The parent's client holds its sockets and locks (maybe taken by a parent thread
        # at fork time): kept referenced, so that it is never closed here, and replaced.
        if self._client is not None:
            self._forked_from.append(self._client)
        self._client = None
        self._lock = threading.Lock()
        self._idle = {}  # the parent's sockets: never touched here

    def _cluster(self) -> Any:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._new_client()
                    self._stale_map = False
                client = self._client
        elif self._stale_map:
            self._refresh(client)
        return client

    def _new_client(self) -> Any:
        from redis.backoff import NoBackoff
        from redis.cluster import ClusterNode, RedisCluster
        from redis.retry import Retry

        return RedisCluster(
            startup_nodes=[ClusterNode(h, p)  # type: ignore[no-untyped-call]
                           for h, p in self.startup_nodes],
            username=self._username, password=self._password,
            socket_timeout=self.timeout, socket_connect_timeout=self.connect_timeout,
            # redis-py's own retries only serve the rare calls made through it (flush,
            # redirects): the ones made here are never sent twice (see _send / _recv)
            retry=Retry(NoBackoff(), self._retries), require_full_coverage=False,
            max_connections=self._max_connections, health_check_interval=0)

    def _acquire(self, client: Any, node: Any) -> tuple[Any, Any]:
        """(pool, connection) to ``node``: an idle one of ours, else one from redis-py's
        pool of the node (connected, handshaken; then given kernel-enforced timeouts,
        so that a reply costs no poll()). An idle connection the server closed is
        dropped before anything is written to it."""
        idle = self._idle.get(node.name)
        if idle is not None:
            while True:
                try:
                    pool, conn = idle.pop()
                except IndexError:
                    break
                sock = conn._sock
                if sock is not None and not _readable(sock):
                    return pool, conn
                self._release(pool, conn, False)
        pool = client.get_redis_connection(node).connection_pool
        conn = pool_connection(pool)
        try:
            sock = conn._sock
            sock.settimeout(None)
            kernel_timeouts(sock, self.timeout)
        except BaseException:
            self._release(pool, conn, False)
            raise
        return pool, conn

    def _release(self, pool: Any, conn: Any, ok: bool) -> None:
        """Keep a connection in sync for reuse; else close it and give it back to its
        pool (which connects it again, with its own settings, when it is next used)."""
        if ok:
            name = f"{conn.host}:{conn.port}"  # redis-py's node name
            idle = self._idle.get(name)
            if idle is None:
                idle = self._idle.setdefault(name, collections.deque())
            if len(idle) < self._max_idle:
                idle.append((pool, conn))
                return
        with contextlib.suppress(Exception):
            conn.disconnect()
        with contextlib.suppress(Exception):
            pool.release(conn)

    def _drop_idle(self) -> None:
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for pool, conn in conns:
                self._release(pool, conn, False)

    def _refresh(self, client: Any) -> None:
        """Reload the slot map from the cluster (concurrent refreshes run once)."""
        self._stale_map = False
        client.nodes_manager.initialize()

    # --- commands: one write per node, then every reply --------------------------------

    def _send(self, what: str, commands: list[tuple[int, tuple[Any, ...]]]) -> Any:
        """Write ``(slot, command)`` pairs, each node's on one connection; pending state
        for :meth:`_recv`. A node that refuses the connection gets the slot map
        refreshed and its commands regrouped (they were not sent)."""
        if self.breaker.down_until or self._hints_pending:
            self.check()
        return self._write(what, commands, _perf_counter())

    def _write(self, what: str, commands: list[tuple[int, tuple[Any, ...]]],
               started: float) -> Any:
        try:
            client = self._cluster()
            groups = self._connect(client, commands)
        except Exception as exc:
            raise self.failed(exc, what) from exc
        for n, (_, conn, indices) in enumerate(groups):
            try:
                conn._sock.sendall(_resp([commands[i][1] for i in indices]))
            except Exception as exc:
                self._stale_map = True
                for m, (pool2, conn2, _) in enumerate(groups):
                    # written to, or half: its replies are unread
                    self._release(pool2, conn2, m > n)
                raise self.failed(_timeout_named(exc), what) from exc
        return what, commands, groups, started

    def _connect(self, client: Any, commands: list[tuple[int, tuple[Any, ...]]]
                 ) -> list[tuple[Any, Any, list[int]]]:
        """One connection per node serving the commands' slots: (pool, connection,
        indices of its commands)."""
        import redis

        nodes = client.nodes_manager
        for attempt in range(self._retries + 1):
            by_node: dict[str, tuple[Any, list[int]]] = {}
            for i, (slot, _) in enumerate(commands):
                node = _primary(nodes, slot)  # SlotNotCoveredError: not covered
                entry = by_node.get(node.name)
                if entry is None:
                    by_node[node.name] = (node, [i])
                else:
                    entry[1].append(i)
            groups: list[tuple[Any, Any, list[int]]] = []
            try:
                for node, indices in by_node.values():
                    pool, conn = self._acquire(client, node)
                    groups.append((pool, conn, indices))
            except redis.ConnectionError:  # refused / reset at connect: nothing was sent
                for pool, conn, _ in groups:
                    self._release(pool, conn, True)
                self._refresh(client)
                moved = any(_primary(nodes, commands[i][0]).name != node.name
                            for i in indices)
                if attempt == self._retries or not moved:
                    self._stale_map = True  # the map may still change (a failover)
                    raise
            except BaseException:
                self._stale_map = True
                for pool, conn, _ in groups:
                    self._release(pool, conn, True)
                raise
            else:
                return groups
        raise AssertionError("unreachable")  # pragma: no cover

    def _recv(self, pending: Any, resent: bool = False) -> tuple[list[Any], float]:
        """Every reply of a :meth:`_send`, in command order. Commands the cluster
        redirected did not run: on ``MOVED`` the slot map is reloaded and they are sent
        again together (once); after ``ASK``, ``TRYAGAIN``, ``NOSCRIPT`` (or a second
        ``MOVED``) one by one, through redis-py, which follows the redirects."""
        what, commands, groups, started = pending
        replies: list[Any] = [None] * len(commands)
        lost: BaseException | None = None
        parse_error = self._parse_error
        for pool, conn, indices in groups:
            if lost is None:
                try:
                    got = _read_replies(conn._sock, len(indices), parse_error)
                except Exception as exc:
                    lost = exc
                    self._release(pool, conn, False)
                    continue
                for i, reply in zip(indices, got):
                    replies[i] = reply
                self._release(pool, conn, True)
            else:
                self._release(pool, conn, False)  # its replies stay unread
        if lost is not None:
            self._stale_map = True
            lost = _timeout_named(lost)
            raise self.failed(lost, what) from lost
        return self._settle(what, commands, replies, started, resent)

    def _settle(self, what: str, commands: list[tuple[int, tuple[Any, ...]]],
                replies: list[Any], started: float, resent: bool = False
                ) -> tuple[list[Any], float]:
        """``replies`` with the redirected commands' replaced by those of the commands
        sent again (see :meth:`_recv`); an error reply raised as cachelib's error."""
        from redis.exceptions import MovedError

        moved = [i for i, reply in enumerate(replies) if isinstance(reply, MovedError)]
        if moved and not resent:
            try:
                self._refresh(self._client)
            except Exception as exc:
                raise self.failed(exc, what) from exc
            again, _ = self._recv(self._write(what, [commands[i] for i in moved], started),
                                  True)
            for i, reply in zip(moved, again):
                replies[i] = reply
        refused: BaseException | None = None
        for i, reply in enumerate(replies):
            if isinstance(reply, BaseException):
                try:
                    replies[i] = self._again(what, commands[i], reply)
                except ServerRefusedError as exc:
                    refused = refused or exc
        if refused is not None:
            raise refused
        return replies, started

    def _again(self, what: str, command: tuple[int, tuple[Any, ...]],
               error: BaseException) -> Any:
        """The reply to a command that got ``error``: sent again if the cluster
        redirected it (it did not run), else the error mapped to cachelib's."""
        from redis.exceptions import AskError, NoScriptError, TryAgainError

        slot, args = command
        if isinstance(error, NoScriptError) and args[0] == "EVALSHA":
            return self._redo(what, slot, ("EVAL", self._scripts[args[1]], *args[2:]))
        if isinstance(error, TryAgainError) and args[0] in ("MGET", "MSET", "DEL") \
                and len(args) > (3 if args[0] == "MSET" else 2):
            # a slot migrating with its keys on both nodes: key by key, each where it is
            keys = args[1:]
            if args[0] == "MGET":
                return [self._redo(what, slot, ("GET", k)) for k in keys]
            if args[0] == "DEL":
                return sum(int(self._redo(what, slot, ("DEL", k))) for k in keys)
            for i in range(0, len(keys), 2):  # MSET
                self._redo(what, slot, ("SET", keys[i], keys[i + 1]))
            return True
        if isinstance(error, (AskError, TryAgainError)):  # MovedError is an AskError
            return self._redo(what, slot, args)
        raise self._mapped(error, what) from error

    def _redo(self, what: str, slot: int, args: tuple[Any, ...]) -> Any:
        """``args`` through redis-py, starting at the slot's primary in our map. With
        ``target_nodes`` redis-py never sends a command again after a connection error
        (it may have run); it follows ``MOVED`` / ``ASK`` and waits out ``TRYAGAIN``."""
        client = self._client
        try:
            return client.execute_command(
                *args, target_nodes=client.nodes_manager.get_node_from_slot(slot))
        except Exception as exc:
            raise self._mapped(exc, what) from exc

    def _mapped(self, exc: BaseException, what: str) -> Exception:
        """cachelib's error for ``exc``: refused (an error reply about the command
        itself; the cluster is fine) or unavailable (anything else; the breaker opens)."""
        from redis.exceptions import AskError, ClusterDownError, ReadOnlyError, TryAgainError

        if isinstance(exc, self._response_error) and not isinstance(
                exc, (ClusterDownError, ReadOnlyError, AskError, TryAgainError)):
            return ServerRefusedError(f"redis cluster {self.name} refused {what}: {exc}")
        self._stale_map = True
        return self.failed(exc, what)

    def _run(self, what: str, key: bytes, *commands: tuple[Any, ...]) -> tuple[list[Any], float]:
        slot = self._key_slot(key)
        return self._recv(self._send(what, [(slot, c) for c in commands]))

    def _one(self, what: str, key: bytes, request: bytes, args: tuple[Any, ...]
             ) -> tuple[Any, float]:
        """GET and SET, the hot path: ``request`` (``args`` as RESP) written, and its
        bulk or simple string reply read, here, on one connection to the slot's primary.
        Anything unusual (no client yet, a stale map, no connection) takes the general
        path of :meth:`_write` / :meth:`_recv`; an error reply (a redirect) that of
        :meth:`_settle`. The command is written once, as there."""
        if self.breaker.down_until or self._hints_pending:
            self.check()
        started = _perf_counter()
        slot = self._key_slot(key)
        client = self._client
        conn = None
        if client is not None and not self._stale_map:
            try:
                pool, conn = self._acquire(client, _primary(client.nodes_manager, slot))
            except Exception:  # nothing was written: the general path, its errors
                conn = None
        if conn is None:
            (reply,), started = self._recv(self._write(what, [(slot, args)], started))
            return reply, started
        try:
            sock = conn._sock
            sock.sendall(request)
            reply = _read_resp_one(sock)
        except ServerRefusedError as exc:  # an error reply: the connection is in sync
            self._release(pool, conn, True)
            error = self._parse_error(str(exc).partition(": ")[2])
            (reply,), started = self._settle(what, [(slot, args)], [error], started)
            return reply, started
        except Exception as exc:
            self._release(pool, conn, False)
            self._stale_map = True
            lost = _timeout_named(exc)
            raise self.failed(lost, what) from lost
        self._release(pool, conn, True)
        return reply, started

    # --- single keys -------------------------------------------------------------------

    def get(self, key: bytes) -> tuple[bytes, int] | None:
        data, started = self._one("get", key,
                                  b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key),
                                  ("GET", key))
        value = _unpack(data)
        self.done("get", started, 1, value is not None)
        return value

    def set(self, key: bytes, payload: bytes, flags: int, ttl: int) -> None:
        data = _pack(payload, flags)
        request = _set_request(key, data, ttl)
        command: tuple[Any, ...] = ("SET", key, data, "PX", int(ttl * 1000)) if ttl else \
            ("SET", key, data)
        _, started = self._one("set", key, request, command)
        self.done("set", started, 1, 1)

    def add(self, key: bytes, payload: bytes, flags: int, ttl: int) -> bool:
        data = _pack(payload, flags)
        command: tuple[Any, ...] = ("SET", key, data, "NX", "PX", int(ttl * 1000)) if ttl \
            else ("SET", key, data, "NX")
        (stored,), started = self._run("add", key, command)
        self.done("add", started, 1, 1)
        return bool(stored)

    def delete(self, key: bytes) -> bool:
        (found,), started = self._run("delete", key, ("DEL", key))
        self.done("delete", started, 1, bool(found))
        return bool(found)

    def touch(self, key: bytes, ttl: int) -> bool:
        if ttl:
            (found,), started = self._run("touch", key, ("PEXPIRE", key, int(ttl * 1000)))
        else:  # one round trip: PERSIST answers 0 for a key without a TTL too
            (_, found), started = self._run("touch", key, ("PERSIST", key), ("EXISTS", key))
        self.done("touch", started, 1, bool(found))
        return bool(found)

    def incr(self, key: bytes, delta: int) -> int | None:
        (value,), started = self._run("incr", key, ("EVALSHA", self._incr_sha, 1, key, delta))
        if value is None or value is False:  # the script's false: absent (RESP2 / RESP3)
            self.done("incr", started, 1, False)
            return None
        self.done("incr", started, 1, True)
        return int(value)

    def decr(self, key: bytes, delta: int) -> int | None:
        (value,), started = self._run("decr", key, ("EVALSHA", self._decr_sha, 1, key, delta))
        if value is None or value is False:  # the script's false: absent (RESP2 / RESP3)
            self.done("decr", started, 1, False)
            return None
        self.done("decr", started, 1, True)
        return int(value)

    # --- several keys: one command per slot, one write per node --------------------------

    def _by_slot(self, keys: list[bytes]) -> dict[int, list[bytes]]:
        key_slot = self._key_slot
        slots: dict[int, list[bytes]] = {}
        for k in keys:
            slot = key_slot(k)
            found = slots.get(slot)
            if found is None:
                slots[slot] = [k]
            else:
                found.append(k)
        return slots

    def send_get_many(self, keys: list[bytes]) -> Any:
        slots = self._by_slot(keys)
        return self._send("get_many", [(s, ("MGET", *ks)) for s, ks in slots.items()]), \
            list(slots.values()), len(keys)

    def recv_get_many(self, pending: Any) -> dict[bytes, tuple[bytes, int]]:
        sent, groups, count = pending
        replies, started = self._recv(sent)
        out: dict[bytes, tuple[bytes, int]] = {}
        for keys, values in zip(groups, replies):
            for key, data in zip(keys, values):
                if data is not None:
                    out[key] = _unpack(data)  # type: ignore[assignment]
        self.done("get_many", started, count, len(out))
        return out

    def send_set_many(self, items: list[tuple[bytes, bytes, int]], ttl: int) -> Any:
        key_slot = self._key_slot
        commands: list[tuple[int, tuple[Any, ...]]]
        if ttl:
            px = int(ttl * 1000)
            commands = [(key_slot(k), ("SET", k, _pack(p, f), "PX", px)) for k, p, f in items]
        else:
            slots: dict[int, list[bytes]] = {}
            for k, p, f in items:
                slots.setdefault(key_slot(k), []).extend((k, _pack(p, f)))
            commands = [(s, ("MSET", *args)) for s, args in slots.items()]
        return self._send("set_many", commands), len(items)

    def recv_set_many(self, pending: Any) -> list[bytes]:
        """The keys not stored: none (the cluster stores every item or the call fails)."""
        sent, count = pending
        _, started = self._recv(sent)
        self.done("set_many", started, count, count)
        return []

    def send_delete_many(self, keys: list[bytes]) -> Any:
        slots = self._by_slot(keys)
        return self._send("delete_many", [(s, ("DEL", *ks)) for s, ks in slots.items()]), \
            len(keys)

    def recv_delete_many(self, pending: Any) -> int:
        sent, count = pending
        replies, started = self._recv(sent)
        found = sum(int(n) for n in replies)
        self.done("delete_many", started, count, found)
        return found

    # --- the rest ----------------------------------------------------------------------

    def flush(self) -> None:
        """Empty every primary (``FLUSHDB`` on each; the replicas follow)."""
        if self.breaker.down_until or self._hints_pending:
            self.check()
        try:
            client = self._cluster()
            client.flushdb(target_nodes=client.PRIMARIES)
        except Exception as exc:
            raise self._mapped(exc, "flushdb") from exc

    def close(self) -> None:
        """Close every connection; a later call connects again."""
        with self._lock:
            client, self._client = self._client, None
        self._drop_idle()
        if client is not None:
            client.close()

    def __repr__(self) -> str:
        return f"RedisClusterBackend({self.url!r})"
