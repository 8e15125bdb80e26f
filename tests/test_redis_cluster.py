"""CacheClient over a real Redis Cluster of our own (3 primaries, 3 replicas, on
loopback ports): every operation, keys spread over every primary, the bytes stored,
hash tags, the write policies, bad input, redirects, a hung primary and a failover."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import run_threads
from redis.cluster import RedisCluster
from redis.crc import key_slot
from servers import RedisClusterServers, free_port

from cachelib import (
    CacheClient,
    CachedStore,
    ConfigError,
    InvalidKeyError,
    KeyTypeError,
    RedisClusterBackend,
    ServerRefusedError,
    ServerUnavailable,
    SQLiteStore,
    ValueTooLargeError,
    ValueTypeError,
)

FORK_WITH_THREADS = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning")

VALUES: list[Any] = [b"raw \x00 bytes", b"", "unicode \u00e9\U0001f600", "", 0, 42, -7, 2**70,
                     -(2**70), 3.5, float("inf"), None, True, False, [1, "a", None],
                     {"k": [1, 2]}, "compressible " * 500, bytes(range(256)) * 40]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """Six redis-server processes of our own joined in a cluster, shared by the module."""
    servers = RedisClusterServers(tmp_path_factory.mktemp("cluster"))
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture()
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}:"  # the cluster is shared: every test has its own keys


@pytest.fixture()
def client(cluster: RedisClusterServers, prefix: str) -> Iterator[CacheClient]:
    with CacheClient([cluster.url], key_prefix=prefix) as c:
        yield c


def backend_of(client: CacheClient) -> RedisClusterBackend:
    (backend,) = client.servers.values()
    assert isinstance(backend, RedisClusterBackend)
    return backend


def slot_owners(cluster: RedisClusterServers) -> dict[int, int]:
    """Slot -> port of the primary serving it, from ``CLUSTER SLOTS`` of a live primary."""
    c = cluster.client(cluster.primaries()[0])
    try:
        ranges = c.execute_command("CLUSTER SLOTS")
    finally:
        c.close()
    return {slot: int(r[2][1]) for r in ranges for slot in range(int(r[0]), int(r[1]) + 1)}


def holders(cluster: RedisClusterServers, full_keys: list[bytes]) -> dict[bytes, list[int]]:
    """Which primaries hold each key (by asking every primary, not the client)."""
    out: dict[bytes, list[int]] = {k: [] for k in full_keys}
    for node in cluster.primaries():
        c = cluster.client(node)
        try:
            pipe = c.pipeline(transaction=False)
            for k in full_keys:
                pipe.execute_command("EXISTS", k)  # the slot's owner answers, others MOVED
            for k, found in zip(full_keys, pipe.execute(raise_on_error=False)):
                if found == 1:
                    out[k].append(node.port)
        finally:
            c.close()
    return out


@contextlib.contextmanager
def raw_cluster(cluster: RedisClusterServers) -> Iterator[Any]:
    """redis-py's own cluster client, to read the bytes the backend wrote."""
    node = cluster.primaries()[0]
    rc = RedisCluster(host="127.0.0.1", port=node.port, socket_timeout=2)
    try:
        yield rc
    finally:
        rc.close()


# --- configuration ---------------------------------------------------------------------------


def test_urls_names_and_config_errors(cluster: RedisClusterServers) -> None:
    first = cluster.nodes[0]
    with CacheClient([f"redis+cluster://127.0.0.1:{first.port}"]) as c:  # one node: found all
        (name,) = c.servers
        assert name == f"cluster:127.0.0.1:{first.port}"
        assert c.set("k", "v") and c.get("k") == "v"
        assert len(backend_of(c)._client.get_primaries()) == 3
        assert repr(backend_of(c)) == f"RedisClusterBackend('redis+cluster://127.0.0.1:{first.port}')"
    nodes = [f"127.0.0.1:{n.port}" for n in cluster.nodes[:2]]
    backend = RedisClusterBackend([nodes[0], ("127.0.0.1", cluster.nodes[1].port)])
    assert backend.name == "cluster:" + ",".join(nodes)
    assert backend.url == "redis+cluster://" + ",".join(nodes)
    with CacheClient([backend]) as c:
        assert c.set("k", 1) and c.get("k") == 1
    assert not backend._client  # closed with the client
    for bad in ("redis+cluster://", "redis+cluster://h:1,", "redis+cluster://h:x",
                "redis+cluster://h:1/3", "redis+cluster://h:1?db=1", "redis+cluster://h:1/a/b",
                "redis+cluster://h:99999"):
        with pytest.raises(ConfigError):
            CacheClient([bad])
    for nodes_arg in ([], [("h",)], [("h", "1")], [("h", True)], [5], ["h:1/x"]):
        with pytest.raises(ConfigError):
            RedisClusterBackend(nodes_arg)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="retries"):
        RedisClusterBackend("redis+cluster://h:1", retries=-1)
    with pytest.raises(ConfigError, match="redis\\+cluster://"):
        CacheClient(["rediscluster://h:1"])


def test_unreachable_cluster_fails_loudly_then_fast() -> None:
    port = free_port()  # nothing listens there
    with CacheClient([f"redis+cluster://127.0.0.1:{port}"], dead_timeout=0.3) as c:
        with pytest.raises(ServerUnavailable, match=r"cannot be connected|refused|111") as info:
            c.get("k")
        assert info.value.server == f"cluster:127.0.0.1:{port}"
        with pytest.raises(ServerUnavailable, match="marked down"):
            c.set("k", 1)
        with pytest.raises(ServerUnavailable):
            c.get_many(["a", "b"])
        stats = c.stats()[f"cluster:127.0.0.1:{port}"]
        assert stats["errors"] >= 1 and stats["fast_failures"] >= 1 and stats["down"]
    with CacheClient([f"redis+cluster://127.0.0.1:{port}"], ignore_errors=True) as c:
        assert c.get("k", "dflt") == "dflt" and c.get_many(["a"]) == {}


# --- operations ------------------------------------------------------------------------------


def test_single_key_operations(client: CacheClient, cluster: RedisClusterServers,
                               prefix: str) -> None:
    for i, value in enumerate(VALUES):
        assert client.set(f"v{i}", value) is True
        got = client.get(f"v{i}", default="MISSING")
        assert got == value and type(got) is type(value), (value, got)
    assert client.get("absent") is None and client.get("absent", 5) == 5
    assert client.add("v0", b"other") is False and client.get("v0") == VALUES[0]
    assert client.add("fresh", b"x", ttl=100) is True and client.get("fresh") == b"x"
    assert client.delete("fresh") is True and client.delete("fresh") is False
    assert client.set("n", 40)
    assert client.incr("n", 2) == 42 and client.get("n") == 42
    assert client.decr("n", 50) == 0 and client.get("n") == 0  # not below 0
    assert client.incr("absent") is None and client.decr("absent") is None
    assert client.get("absent") is None  # incr does not create
    with raw_cluster(cluster) as rc:
        assert client.set("ttl", b"soon", ttl=100)
        assert 99_000 < rc.pttl(f"{prefix}ttl") <= 100_000  # PX, in ms
        assert client.touch("ttl", 5) is True and 4_000 < rc.pttl(f"{prefix}ttl") <= 5_000
        assert client.touch("ttl", 0) is True and rc.pttl(f"{prefix}ttl") == -1  # persisted
        assert client.touch("ttl", 0) is True  # present without a TTL: still found
        assert client.touch("absent", 5) is False and client.touch("absent", 0) is False
        assert client.add("soon", 1, ttl=7) and 6_000 < rc.pttl(f"{prefix}soon") <= 7_000
    assert client.set_many({"m1": 1, "m2": 2}, ttl=3) == []
    with raw_cluster(cluster) as rc:
        assert 2_000 < rc.pttl(f"{prefix}m1") <= 3_000
    stats = next(iter(client.stats().values()))
    assert stats["ops"] > 40 and stats["errors"] == 0 and stats["hits"] > 0


def test_multi_key_operations_spread_over_every_primary(client: CacheClient,
                                                        cluster: RedisClusterServers,
                                                        prefix: str) -> None:
    items: dict[Any, Any] = {f"user:{i}": {"id": i, "name": f"n{i}"} for i in range(600)}
    items[b"bytes-key"] = b"\xff" * 10
    assert client.set_many(items) == []
    full = [prefix.encode() + (k if isinstance(k, bytes) else k.encode()) for k in items]
    # the cluster's own hash agrees with the client's grouping
    probe = cluster.client(cluster.primaries()[0])
    try:
        for k in full[:50]:
            assert probe.execute_command("CLUSTER KEYSLOT", k) == key_slot(k)
    finally:
        probe.close()
    slots = {key_slot(k) for k in full}
    assert len(slots) > 500  # hundreds of slots: one MGET / MSET / DEL each
    owners = slot_owners(cluster)
    where = holders(cluster, full)
    assert all(where[k] == [owners[key_slot(k)]] for k in full)  # each on its slot's primary
    assert {p for ports in where.values() for p in ports} == \
        {n.port for n in cluster.primaries()}  # all three primaries hold some
    keys = [*items, "absent:1", "absent:2"]
    assert client.get_many(keys) == items
    assert client.get_many(iter(["user:1", "absent:3"])) == {"user:1": items["user:1"]}
    assert client.get_many([]) == {}
    assert client.set_many({k: i for i, k in enumerate(items)}, ttl=600) == []
    assert client.get_many(list(items)) == {k: i for i, k in enumerate(items)}
    assert client.delete_many([*items, "absent:1"]) == len(items)
    assert client.get_many(keys) == {}
    assert client.delete_many([]) == 0 and client.set_many({}) == []


def test_bytes_are_those_of_a_standalone_redis(client: CacheClient, cluster: RedisClusterServers,
                                               prefix: str, redis_url: str) -> None:
    standalone = CacheClient([redis_url], key_prefix=prefix)
    plain = redis.Redis.from_url(redis_url)
    try:
        with raw_cluster(cluster) as rc:
            for i, value in enumerate(VALUES):
                assert client.set(f"v{i}", value) and standalone.set(f"v{i}", value)
                on_cluster = rc.get(f"{prefix}v{i}")
                assert on_cluster == plain.get(f"{prefix}v{i}") and on_cluster is not None
                # bytes written by a standalone Redis read back through the cluster
                rc.set(f"{prefix}copy{i}", plain.get(f"{prefix}v{i}"))
                got = client.get(f"copy{i}")
                assert got == value and type(got) is type(value)
            assert client.set_many({"many": VALUES[-2]}) == [] and \
                rc.get(f"{prefix}many") == plain.get(f"{prefix}v{len(VALUES) - 2}")
            assert rc.get(f"{prefix}v5") == b"42"  # ints are ASCII: INCRBY works on them
    finally:
        standalone.close()
        plain.close()


def test_hash_tags_share_one_slot(cluster: RedisClusterServers, prefix: str) -> None:
    with CacheClient([cluster.url], hash_tags=True, key_prefix=prefix) as c:
        keys = [f"user:{{42}}:{part}" for part in ("profile", "cart", "prefs", "sessions")]
        full = [f"{prefix}{k}".encode() for k in keys]
        probe = cluster.client(cluster.primaries()[0])
        try:
            slots = {probe.execute_command("CLUSTER KEYSLOT", k) for k in full}
        finally:
            probe.close()
        assert slots == {key_slot(b"42")}  # Redis hashes the tag of the full key
        assert c.set_many({k: i for i, k in enumerate(keys)}) == []
        assert c.get_many([*keys, "user:{42}:absent"]) == {k: i for i, k in enumerate(keys)}
        with raw_cluster(cluster) as rc:  # one slot: even a plain MGET works on them
            assert rc.mget(full) == [b"0", b"1", b"2", b"3"]
        assert c.delete_many(keys) == 4
        assert len({key_slot(f"{prefix}user:{i}".encode()) for i in range(50)}) > 40
    # why a key_prefix must not contain braces: its tag places every key in one slot
    with CacheClient([cluster.url], key_prefix="{app}:") as c:
        keys = [f"user:{i}" for i in range(30)]
        assert c.set_many(dict.fromkeys(keys, 1)) == []
        where = holders(cluster, [f"{{app}}:{k}".encode() for k in keys])
        assert len({p for ports in where.values() for p in ports}) == 1
        assert c.delete_many(keys) == 30


@pytest.mark.parametrize("policy", ["write-through", "write-back"])
def test_cached_store_over_the_cluster(client: CacheClient, tmp_path: Path, policy: str) -> None:
    store = SQLiteStore(tmp_path / "sor.db")
    opts = {"max_delay": 0.01} if policy == "write-back" else None
    try:
        with CachedStore(client, store, policy=policy, writeback=opts) as cs:
            for i in range(50):
                cs.put(f"k{i}", {"v": i})
            assert all(cs.get(f"k{i}") == {"v": i} for i in range(50))  # read-your-writes
            cs.put("k0", {"v": "new"})
            assert cs.get("k0") == {"v": "new"}
            cs.delete("k1")
            assert cs.get("k1", "gone") == "gone"
            assert cs.flush()
            assert store.get("k0") == {"v": "new"} and store.get("k2") == {"v": 2}
            store.put("from-store", [1, 2])  # written behind the cache's back
            assert cs.get("from-store") == [1, 2]  # read-through, then cached
            assert client.get_many(["k2"])  # the cluster really holds the entries
            assert cs.get_many(["k2", "from-store", "absent"]) == {"k2": {"v": 2},
                                                                   "from-store": [1, 2]}
    finally:
        store.close()


# --- bad input and refusals ---------------------------------------------------------------


def test_bad_keys_and_values_are_refused_like_on_a_standalone_redis(
        cluster: RedisClusterServers, redis_url: str) -> None:
    clients = [CacheClient([redis_url]), CacheClient([cluster.url])]
    limited = CacheClient([RedisClusterBackend(cluster.url, max_value=1024 * 1024)])
    try:
        for c in clients:
            before = sum(s["ops"] for s in c.stats().values())
            with pytest.raises(InvalidKeyError):
                c.set("", b"v")
            for key in (None, 5, 2.0, ["k"]):
                with pytest.raises(KeyTypeError):
                    c.get(key)  # type: ignore[arg-type]
            with pytest.raises(ValueTypeError):
                c.set("k", object())
            for bad_ttl in (-1, 2.5, 10**9):
                with pytest.raises(ConfigError):
                    c.set("k", b"v", ttl=bad_ttl)  # type: ignore[arg-type]
            with pytest.raises(ConfigError):
                c.incr("k", -1)
            assert sum(s["ops"] for s in c.stats().values()) == before  # nothing was sent
            # redis key rules (no memcached limits): long keys and spaces are fine
            assert c.set("a" * 1000, b"long") and c.get("a" * 1000) == b"long"
            assert c.set("with space", 1) and c.get("with space") == 1
        with pytest.raises(ValueTooLargeError):
            limited.set("big", os.urandom(2 * 1024 * 1024))
        # a command the cluster refuses: ServerRefusedError, and the cluster stays in use
        c = clients[1]
        assert c.set("text", "not a number")
        with pytest.raises(ServerRefusedError, match="not an integer"):
            c.incr("text")
        assert c.get("text") == "not a number" and not c.stats()[next(iter(c.servers))]["down"]
    finally:
        for c in (*clients, limited):
            c.close()


# --- redirects, threads, fork ----------------------------------------------------------------


def test_stale_slot_map_follows_moved(client: CacheClient, cluster: RedisClusterServers) -> None:
    items = {f"m{i}": i for i in range(200)}
    assert client.set_many(items) == []
    nodes = backend_of(client)._client.nodes_manager
    wrong = {}
    for slot in {key_slot(client._encode(k)) for k in items}:  # point every slot elsewhere
        right = nodes.slots_cache[slot][0]
        other = next(n for n in backend_of(client)._client.get_primaries() if n is not right)
        wrong[slot] = nodes.slots_cache[slot] = [other]
    assert client.get_many(list(items)) == items  # MOVED: map reloaded, sent again
    assert all(nodes.slots_cache[s][0] is not wrong[s][0] for s in wrong)
    slot = key_slot(client._encode("m1"))
    nodes.slots_cache[slot] = wrong[slot]
    assert client.get("m1") == 1 and client.incr("m1", 1) == 2


def test_slot_migration_ask_then_moved(client: CacheClient, cluster: RedisClusterServers,
                                       prefix: str) -> None:
    key = "mig:0"
    slot = key_slot(f"{prefix}{key}".encode())
    other = next(f"mig:{i}" for i in range(1, 100_000)
                 if key_slot(f"{prefix}mig:{i}".encode()) == slot)
    assert client.set(key, "before")
    source = cluster.node_at(slot_owners(cluster)[slot])
    target = next(n for n in cluster.primaries() if n is not source)
    src, dst = cluster.client(source), cluster.client(target)
    try:
        src_id, dst_id = src.execute_command("CLUSTER MYID"), dst.execute_command("CLUSTER MYID")
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
        assert client.get(key) == "before"  # still on the source
        assert client.set(other, "new")  # absent on the source: ASK -> the target
        assert client.get(other) == "new" and client.get_many([key, other]) == \
            {key: "before", other: "new"}
        assert dst.execute_command("CLUSTER COUNTKEYSINSLOT", slot) == 1
        src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000,
                            "KEYS", f"{prefix}{key}")
        for c in (dst, src):
            c.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
        for node in cluster.primaries():
            if node not in (source, target):
                c = cluster.client(node)
                try:
                    c.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
                finally:
                    c.close()
    finally:
        src.close()
        dst.close()
    # the client's map still says the source: MOVED, map reloaded
    assert client.get_many([key, other]) == {key: "before", other: "new"}
    assert client.get(key) == "before" and client.delete(other) is True
    assert client.get(other) is None
    assert slot_owners(cluster)[slot] == target.port


def test_threads_share_one_client(client: CacheClient) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(60):
                key = f"t{n}:{i}"
                assert client.set(key, [n, i])
                assert client.get(key) == [n, i]
            assert client.get_many([f"t{n}:{i}" for i in range(60)]) == \
                {f"t{n}:{i}": [n, i] for i in range(60)}
            assert client.incr("shared") is not None
        except BaseException as exc:  # reported below
            errors.append(exc)

    assert client.set("shared", 0)
    run_threads(work, 8)
    assert errors == [] and client.get("shared") == 8


@FORK_WITH_THREADS
def test_fork_child_builds_its_own_cluster_client(client: CacheClient) -> None:
    assert client.set("before-fork", 1)
    backend = backend_of(client)
    parent_client = backend._client
    assert parent_client is not None
    pid = os.fork()
    if pid == 0:  # the child: its own connections, the parent's never touched
        code = 1
        try:
            fresh = backend._client is None and backend._forked_from[-1] is parent_client
            ok = client.get("before-fork") == 1 and client.set("from-child", 2)
            ok = ok and client.get_many(["before-fork", "from-child"]) == \
                {"before-fork": 1, "from-child": 2}
            code = 0 if fresh and ok and backend._client is not parent_client else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert backend._client is parent_client
    assert client.get("from-child") == 2 and client.set("after-fork", 3)


def test_raw_connections_closed_by_the_server_are_dropped_before_use(
        client: CacheClient, cluster: RedisClusterServers, prefix: str) -> None:
    """The hot paths hold their own idle connections (from redis-py's node pools): one
    the server closed meanwhile is dropped before anything is written to it; an error
    reply leaves the connection in sync."""
    items = {f"s{i}": i for i in range(100)}
    assert client.set_many(items) == [] and client.get_many(list(items)) == items
    assert client.get("s1") == 1
    for node in cluster.primaries():  # the server closes every client connection
        c = cluster.client(node)
        try:
            c.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        finally:
            c.close()
    assert client.get("s1") == 1 and client.set("s2", "x") and client.get("s2") == "x"
    assert client.get_many(list(items))["s3"] == 3
    full = f"{prefix}lst".encode()
    with raw_cluster(cluster) as rc:
        rc.rpush(full, b"x")  # a list: GET answers WRONGTYPE
    for _ in range(3):
        with pytest.raises(ServerRefusedError, match="WRONGTYPE"):
            client.get("lst")
        assert client.get_many(["lst", "s1"]) == {"s1": 1}  # MGET: nil for a list
        with pytest.raises(ServerRefusedError, match="WRONGTYPE"):
            client.incr("lst")
        assert client.get("s1") == 1
    assert client.stats()[next(iter(client.servers))]["errors"] == 0


# --- failures --------------------------------------------------------------------------------


def _wait(what: str, condition: Any, timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_hung_primary_then_failover(tmp_path: Path) -> None:
    """A frozen primary costs one timeout, then fails fast; an incr it may have run is
    not sent again. Then the primary is killed: calls fail during the failover and
    succeed once its replica took over, with every key (replicated before the kill)."""
    servers = RedisClusterServers(tmp_path)
    try:
        c = CacheClient([servers.url], key_prefix="fo:", timeout=0.25, dead_timeout=0.3)
        name = next(iter(c.servers))
        items = {f"k{i}": i for i in range(1000)}
        assert c.set_many(items) == []
        owners = slot_owners(servers)
        victim = servers.node_at(owners[key_slot(b"fo:k0")])
        on_victim = [k for k in items if owners[key_slot(f"fo:{k}".encode())] == victim.port]
        elsewhere = [k for k in items if k not in on_victim]
        assert on_victim and elsewhere
        replica = servers.replica_of(victim)

        # 1. hung (SIGSTOP, shorter than the node timeout): one timeout, then fast failures
        assert c.incr("k0", 0) == 0  # the incr script is now cached on the victim
        victim.freeze()
        try:
            started = time.monotonic()
            with pytest.raises(ServerUnavailable, match="Timeout"):
                c.incr("k0", 5)
            assert time.monotonic() - started < 0.25 * 4
            with pytest.raises(ServerUnavailable, match="marked down"):
                c.get("k1")
        finally:
            victim.thaw()
        raw = servers.client(victim)
        try:  # the incr ran when the primary woke up, once: it was not sent again
            _wait("the frozen incr", lambda: raw.get("fo:k0") == b"5", 5)
            time.sleep(0.35)  # the breaker's window passes
            assert raw.get("fo:k0") == b"5"
        finally:
            raw.close()
        assert c.get("k0") is None  # the failed incr's key was invalidated before serving
        assert c.set("k0", 0)
        stats = c.stats()[name]
        assert stats["timeouts"] == 1 and stats["fast_failures"] >= 1

        # 2. killed: its replica takes over
        primary = servers.client(victim)
        try:  # every key is on the replica before the kill (replication is asynchronous)
            assert primary.execute_command("WAIT", 1, 1000) == 1
        finally:
            primary.close()
        victim.kill()  # SIGKILL, by PID
        killed = time.monotonic()
        failures = successes = 0
        promoted = False
        i = 0
        while not promoted:
            assert time.monotonic() - killed < 15, "the replica was not promoted in 15 s"
            key = on_victim[i % len(on_victim)] if i % 2 else elsewhere[i % len(elsewhere)]
            i += 1
            try:
                assert c.get(key) == items[key]
                successes += 1
            except ServerUnavailable:
                failures += 1
            promoted = servers.role(replica) == "master"
            time.sleep(0.01)
        took = time.monotonic() - killed
        live = [n for n in servers.nodes if n is not victim]
        servers.wait_ok(live, timeout=10, replicas=None)
        assert failures > 0  # calls to the dead primary's slots failed meanwhile
        time.sleep(0.35)  # the breaker's window passes

        # 3. every key reads back (those of the dead primary from the promoted replica)
        assert c.get_many(list(items)) == items
        assert all(c.get(k) == items[k] for k in on_victim[:20] + elsewhere[:20])
        promoted_client = servers.client(replica)
        try:
            assert all(promoted_client.get(f"fo:{k}") == str(items[k]).encode()
                       for k in on_victim)
        finally:
            promoted_client.close()
        # new writes succeed everywhere, the promoted replica's slots included
        fresh = {f"new{i}": -i for i in range(300)}
        assert c.set_many(fresh) == [] and c.get_many(list(fresh)) == fresh
        assert c.incr(on_victim[0], 1) == items[on_victim[0]] + 1
        assert c.set(on_victim[1], "after") and c.get(on_victim[1]) == "after"
        assert c.delete_many(list(fresh)) == len(fresh)
        stats = c.stats()[name]
        assert stats["errors"] >= 2 and not stats["down"]
        print(f"failover: promoted after {took:.2f} s, {failures} calls failed, "
              f"{successes} succeeded meanwhile; stats {stats}")
        c.close()
    finally:
        servers.stop()
