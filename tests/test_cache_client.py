"""CacheClient over real memcached and redis-server processes (and the in-process
backend): operations, placement, fan-out, threads, fork, failures, bad input."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pylibmc
import pymemcache.client.base
import pytest
import redis
from conftest import run_threads
from servers import MemcachedServer, RedisServer

from cachelib import (
    CacheClient,
    CacheError,
    ConfigError,
    InvalidKeyError,
    KeyTypeError,
    MemoryBackend,
    RedisBackend,
    ServerUnavailable,
    ValueTooLargeError,
)

FORK_WITH_THREADS = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning")


@pytest.fixture(params=["memcached", "redis", "memory"])
def client(request: pytest.FixtureRequest, memcached_urls: list[str],
           redis_urls: list[str]) -> Iterator[CacheClient]:
    # every test gets its own key prefix: the session's servers are shared
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    if request.param == "memcached":
        c = CacheClient(memcached_urls, key_prefix=prefix)
    elif request.param == "redis":
        c = CacheClient(redis_urls, key_prefix=prefix)
    else:
        c = CacheClient(key_prefix=prefix)
    try:
        yield c
    finally:
        c.close()


def test_single_key_operations_and_types(client: CacheClient) -> None:
    values: list[Any] = [b"raw \x00 bytes", "unicode \u00e9\U0001f600", 42, -7, 2**70, 3.5,
                         float("inf"), None, True, [1, "a", None], {"k": [1, 2]}, b"", ""]
    for i, value in enumerate(values):
        assert client.set(f"v{i}", value) is True
        got = client.get(f"v{i}", default="MISSING")
        assert got == value and type(got) is type(value), (value, got)
    assert client.get("absent") is None and client.get("absent", 5) == 5
    assert client.add("v0", b"other") is False and client.get("v0") == values[0]
    assert client.add("fresh", b"x") is True and client.get("fresh") == b"x"
    assert client.delete("fresh") is True and client.delete("fresh") is False
    assert client.touch("v1", 100) is True and client.touch("absent", 100) is False
    assert client.incr("v2", 8) == 50 and client.get("v2") == 50
    assert client.decr("v2", 60) == 0  # memcached semantics: not below 0
    assert client.incr("absent") is None and client.decr("absent") is None
    client.set("ttl", b"soon", ttl=1)
    assert client.get("ttl") == b"soon"


def test_get_many_set_many_delete_many_across_servers(client: CacheClient) -> None:
    items = {f"user:{i}": {"id": i, "name": f"n{i}"} for i in range(200)}
    items[b"bytes-key"] = b"\xff" * 10
    assert client.set_many(items, ttl=600) == []
    servers = {client.server_for(k) for k in items}
    assert len(servers) == len(client.servers)  # the keys really are spread
    keys = [*items, "absent:1", "absent:2"]
    got = client.get_many(keys)
    assert got == items  # absent keys are left out; original key objects come back
    assert client.get_many([]) == {} and client.delete_many([]) == 0
    assert client.set_many({}) == []
    assert client.delete_many(keys) == len(items)
    assert client.get_many(keys) == {}


def test_keys_live_on_the_ring_server(memcached_urls: list[str], redis_urls: list[str]) -> None:
    prefix = f"p{uuid.uuid4().hex[:8]}:"
    with CacheClient(memcached_urls, key_prefix=prefix) as mc:
        for i in range(50):
            mc.set(f"k{i}", f"value {i}")
        by_name = {url.split("//")[1]: url for url in memcached_urls}
        for i in range(50):
            host, port = by_name[mc.server_for(f"k{i}")].split("//")[1].split(":")
            raw = pymemcache.client.base.Client((host, int(port)))
            try:
                assert raw.get(f"{prefix}k{i}") == f"value {i}".encode()
            finally:
                raw.close()
    with CacheClient(redis_urls, key_prefix=prefix) as rc:
        rc.set("hello", b"world")
        owner = rc.server_for("hello")
        for url in redis_urls:
            r = redis.Redis.from_url(url)
            stored = r.get(f"{prefix}hello")
            r.close()
            assert (stored is not None) == (url.split("//")[1].rstrip("/0") == owner)


def test_ketama_ring_agrees_with_pylibmc(memcached_urls: list[str]) -> None:
    prefix = f"kt{uuid.uuid4().hex[:8]}:"
    with CacheClient(memcached_urls, ring="ketama", key_prefix=prefix) as ours:
        assert ours.set_many({f"k{i}": f"v{i}".encode() for i in range(300)}) == []
        hosts = [u.split("//")[1] for u in memcached_urls]
        theirs = pylibmc.Client(hosts, behaviors={"ketama_weighted": True})
        try:
            found = theirs.get_multi([f"{prefix}k{i}" for i in range(300)])
        finally:
            theirs.disconnect_all()
        assert found == {f"{prefix}k{i}": f"v{i}".encode() for i in range(300)}


def test_threads_share_one_client(client: CacheClient) -> None:
    errors: list[str] = []

    def work(t: int) -> None:
        for i in range(150):
            key = f"th{t}:{i}"
            client.set(key, [t, i])
            if client.get(key) != [t, i]:
                errors.append(key)
            if i % 25 == 0:
                batch = {f"th{t}:b{i}:{j}": t * 1000 + j for j in range(20)}
                client.set_many(batch)
                if client.get_many(batch) != batch:
                    errors.append(f"batch {t} {i}")

    run_threads(work, 8)
    assert errors == []


@FORK_WITH_THREADS
@pytest.mark.parametrize("kind", ["memcached", "redis"])
def test_fork_parent_and_child_never_share_a_socket(kind: str, memcached_urls: list[str],
                                                    redis_urls: list[str]) -> None:
    urls = memcached_urls if kind == "memcached" else redis_urls
    client = CacheClient(urls, key_prefix=f"f{uuid.uuid4().hex[:8]}:")
    client.set_many({f"warm{i}": i for i in range(50)})  # connections open before fork
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.alarm(30)
            bad = 0
            for i in range(400):
                client.set(f"child{i}", f"c{i}")
                bad += client.get(f"child{i}") != f"c{i}"
                if i % 40 == 0:
                    batch = {f"cb{i}:{j}": j for j in range(30)}
                    client.set_many(batch)
                    bad += client.get_many(batch) != batch
            os.write(write_fd, json.dumps(bad).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    bad = 0
    for i in range(400):
        client.set(f"parent{i}", f"p{i}")
        bad += client.get(f"parent{i}") != f"p{i}"
        if i % 40 == 0:
            batch = {f"pb{i}:{j}": -j for j in range(30)}
            client.set_many(batch)
            bad += client.get_many(batch) != batch
    _, status = os.waitpid(pid, 0)
    child_bad = json.loads(os.read(read_fd, 100))
    os.close(read_fd)
    assert os.waitstatus_to_exitcode(status) == 0
    assert bad == 0 and child_bad == 0
    client.close()


# --- failures --------------------------------------------------------------------------------


@pytest.fixture()
def cleanup() -> Iterator[contextlib.ExitStack]:
    """Servers and clients a test registers are stopped / closed even if it fails."""
    with contextlib.ExitStack() as stack:
        yield stack


def _server(kind: str, tmp_path: Path, stack: contextlib.ExitStack
            ) -> MemcachedServer | RedisServer:
    server: MemcachedServer | RedisServer
    if kind == "memcached":
        server = MemcachedServer()
    else:
        server = RedisServer(tmp_path, "--save", "", "--appendonly", "no")
    stack.callback(server.stop)
    return server


@pytest.mark.parametrize("kind", ["memcached", "redis"])
def test_killed_server_fails_fast_and_loudly(kind: str, tmp_path: Path,
                                             memcached_urls: list[str],
                                             redis_urls: list[str],
                                             cleanup: contextlib.ExitStack) -> None:
    victim = _server(kind, tmp_path, cleanup)
    healthy = memcached_urls[:2] if kind == "memcached" else redis_urls[:2]
    prefix = f"k{uuid.uuid4().hex[:8]}:"
    client = cleanup.enter_context(
        CacheClient([*healthy, victim.url], key_prefix=prefix, dead_timeout=0.5))
    quiet = cleanup.enter_context(
        CacheClient([*healthy, victim.url], key_prefix=prefix, ignore_errors=True))
    victim_name = list(client.servers)[-1]
    keys = [f"key{i}" for i in range(60)]
    client.set_many({k: k for k in keys})
    on_victim = [k for k in keys if client.server_for(k) == victim_name]
    elsewhere = [k for k in keys if k not in on_victim]
    assert on_victim and elsewhere
    victim.kill()
    started = time.perf_counter()
    with pytest.raises(ServerUnavailable) as info:
        client.get(on_victim[0])
    assert time.perf_counter() - started < 0.2  # refused: no timeout paid
    assert info.value.server == victim_name
    assert isinstance(info.value, ConnectionError) and isinstance(info.value, CacheError)
    with pytest.raises(ServerUnavailable, match="marked down"):  # the breaker is open
        client.set(on_victim[1], "x")
    assert all(client.get(k) == k for k in elsewhere)  # the others are unaffected
    with pytest.raises(ServerUnavailable):  # a batch touching it fails loudly...
        client.get_many(keys)
    assert set(quiet.get_many(keys)) == set(elsewhere)  # ...or misses, when asked for
    assert quiet.get(on_victim[0], default="miss") == "miss"
    assert quiet.set(on_victim[0], "x") is False
    assert client.stats()[victim_name]["down"] is True
    quiet.close()
    victim.start()  # back, empty, on the same port
    time.sleep(0.6)  # the dead_timeout window passes
    assert client.get(on_victim[0]) is None  # a miss, never a stale value
    client.set(on_victim[0], "new")
    assert client.get(on_victim[0]) == "new"
    client.close()
    victim.stop()


@pytest.mark.parametrize("kind", ["memcached", "redis"])
def test_hung_server_costs_one_timeout_per_window(kind: str, tmp_path: Path,
                                                  memcached_urls: list[str],
                                                  redis_urls: list[str],
                                                  cleanup: contextlib.ExitStack) -> None:
    victim = _server(kind, tmp_path, cleanup)
    healthy = memcached_urls[:2] if kind == "memcached" else redis_urls[:2]
    client = cleanup.enter_context(
        CacheClient([*healthy, victim.url], key_prefix=f"h{uuid.uuid4().hex[:8]}:",
                    timeout=0.2, dead_timeout=1.0))
    victim_name = list(client.servers)[-1]
    keys = [f"key{i}" for i in range(80)]
    on_victim = [k for k in keys if client.server_for(k) == victim_name]
    elsewhere = [k for k in keys if client.server_for(k) != victim_name]
    client.set_many({k: k for k in keys})
    victim.freeze()
    try:
        slow = 0
        started = time.perf_counter()
        for k in on_victim * 5:  # within one window: one timeout, then fast failures
            t0 = time.perf_counter()
            with pytest.raises(ServerUnavailable):
                client.get(k)
            slow += time.perf_counter() - t0 > 0.15
        assert slow == 1
        assert time.perf_counter() - started < 0.8
        t0 = time.perf_counter()
        assert all(client.get(k) == k for k in elsewhere)  # healthy servers stay fast
        assert time.perf_counter() - t0 < 0.5
        st = client.stats()[victim_name]
        assert st["timeouts"] == 1 and st["fast_failures"] >= len(on_victim) * 5 - 1
    finally:
        victim.thaw()
    time.sleep(1.1)
    assert client.get(on_victim[0]) == on_victim[0]  # data survived the freeze
    client.close()
    victim.stop()


# --- bad input ---------------------------------------------------------------------------------


def test_bad_keys_and_values_are_refused_before_sending(memcached_urls: list[str]) -> None:
    with CacheClient(memcached_urls) as c:
        before = sum(s["ops"] for s in c.stats().values())
        for key in ("", "a" * 251, "has space", "tab\there", "nl\n", "del\x7f"):
            with pytest.raises(InvalidKeyError):
                c.set(key, b"v")
        for key in (None, 5, 2.0, ["k"]):
            with pytest.raises(KeyTypeError):
                c.get(key)  # type: ignore[arg-type]
        with pytest.raises(ValueTooLargeError):
            c.set("big", os.urandom(2 * 1024 * 1024))  # random: does not compress
        with pytest.raises(ConfigError):
            c.set("k", b"v", ttl=-1)
        assert sum(s["ops"] for s in c.stats().values()) == before  # nothing was sent
        assert c.set("a" * 250, b"ok") and c.get("a" * 250) == b"ok"
        assert c.set("ключ-\U0001f600", b"unicode") and c.get("ключ-\U0001f600") == b"unicode"
    with CacheClient(memcached_urls, hash_unsafe_keys=True) as c:
        assert c.set("a" * 1000, b"long") and c.get("a" * 1000) == b"long"
        assert c.set("with space", 1) and c.get("with space") == 1


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown server URL scheme"):
        CacheClient(["http://127.0.0.1:80"])
    with pytest.raises(ConfigError, match="ring must be"):
        CacheClient(ring="md5")
    with pytest.raises(ConfigError, match="timeout must be a positive"):
        CacheClient(timeout=0)
    with pytest.raises(ConfigError, match="single str"):
        CacheClient("memcached://127.0.0.1:11211")
    with pytest.raises(ConfigError, match="given twice"):
        CacheClient(["memcached://127.0.0.1:1", "memcached://127.0.0.1:1"])
    with CacheClient([MemoryBackend()]) as c:
        assert c.set("k", 1) and c.get("k") == 1


@pytest.mark.parametrize("failover", [False, True], ids=["misses", "failover"])
@pytest.mark.parametrize("kind", ["memcached", "redis"])
def test_no_stale_reads_after_a_frozen_server_returns(kind: str, failover: bool,
                                                      tmp_path: Path,
                                                      memcached_urls: list[str],
                                                      redis_urls: list[str],
                                                      cleanup: contextlib.ExitStack) -> None:
    victim = _server(kind, tmp_path, cleanup)
    healthy = memcached_urls[:2] if kind == "memcached" else redis_urls[:2]
    prefix = f"s{uuid.uuid4().hex[:8]}:"
    client = cleanup.enter_context(
        CacheClient([*healthy, victim.url], key_prefix=prefix, timeout=0.2,
                    dead_timeout=0.4, failover=failover, ignore_errors=True))
    victim_name = list(client.servers)[-1]
    keys = [f"key{i}" for i in range(240)]
    on_victim = [k for k in keys if client.server_for(k) == victim_name]
    latest: dict[str, str | None] = {k: f"v0:{k}" for k in keys}
    assert client.set_many(latest) == []
    victim.freeze()  # a hung server: it keeps its (soon old) data
    try:
        for rnd in range(1, 4):
            for i, k in enumerate(keys):
                if i % 7 == rnd:
                    client.delete(k)
                    latest[k] = None
                else:
                    value = f"v{rnd}:{k}"
                    client.set(k, value)
                    latest[k] = value
            batch = {k: f"b{rnd}:{k}" for k in keys[::5]}
            client.set_many(batch)
            latest.update(batch)
            for k in keys:  # while it is down: a miss or the newest value, never older
                got = client.get(k)
                assert got is None or got == latest[k], (k, got, latest[k])
        if failover:  # the writes went to the next servers: they are readable
            assert [k for k in on_victim if client.get(k) != latest[k]] == []
        assert client.servers[victim_name].pending_hints > 0
    finally:
        victim.thaw()
    # the proof that this test can fail: the returned server still holds old values
    raw_old = 0
    if kind == "memcached":
        host, port = victim.url.split("//")[1].split(":")
        raw = pymemcache.client.base.Client((host, int(port)))
        raw_old = sum(raw.get(f"{prefix}{k}") == f"v0:{k}".encode() for k in on_victim[:20])
        raw.close()
    else:
        r = redis.Redis.from_url(victim.url)
        raw_old = sum(r.get(f"{prefix}{k}") is not None for k in on_victim[:20])
        r.close()
    assert raw_old > 0
    time.sleep(0.5)  # the dead_timeout window passes: the next call probes and delivers
    stale = [k for k in keys if client.get(k) not in (None, latest[k])]
    assert stale == []
    got = client.get_many(keys)
    assert all(latest[k] == v for k, v in got.items())
    assert client.servers[victim_name].pending_hints == 0
    if failover:  # the copies written to other servers while it was down are gone
        for k in on_victim:
            other = client._fallback(client._encode(k), client.servers[victim_name])
            assert other.get(client._encode(k)) is None
    client.close()
    victim.stop()


def test_get_many_parses_tricky_and_large_values(client: CacheClient) -> None:
    tricky = {
        "end": b"END\r\n",
        "fake": b"VALUE x 0 3\r\nabc\r\nEND\r\n",
        "resp": b"*2\r\n$-1\r\n_\r\n",
        "crlf": b"\r\n" * 100,
        "empty": b"",
        "big1": os.urandom(900_000),  # spans several reads (memcached's item size: 1 MiB)
        "big2": b"\x00" * 700_000,
    }
    tricky.update({f"n{i}": i for i in range(50)})
    assert client.set_many(tricky) == []
    got = client.get_many([*tricky, "absent1", "absent2"])
    assert got == tricky
    for key, value in tricky.items():
        assert client.get(key) == value


@pytest.mark.parametrize("kind", ["memcached", "redis"])
def test_server_restarted_while_idle_costs_no_error(kind: str, tmp_path: Path,
                                                    cleanup: contextlib.ExitStack) -> None:
    # pooled connections to a server that restarted between two calls are stale: the
    # client notices (zero-timeout poll, or one retry on a fresh connection) and the
    # caller sees no error, no server marked down
    server = _server(kind, tmp_path, cleanup)
    client = cleanup.enter_context(CacheClient([server.url]))
    client.set_many({f"k{i}": i for i in range(20)})
    assert client.get("k1") == 1 and client.get_many(["k2", "k3"]) == {"k2": 2, "k3": 3}
    server.kill()
    server.start()  # empty, same port
    assert client.get("k1") is None  # a miss on the restarted server, not an error
    server.kill()
    server.start()
    assert client.get_many(["k2", "k3"]) == {}
    server.kill()
    server.start()
    assert client.set("k4", 4) and client.get("k4") == 4
    stats = next(iter(client.stats().values()))
    assert stats["errors"] == 0 and not stats["down"]


def test_unix_sockets_passwords_acl_users_and_hash_tags(tmp_path: Path,
                                                        cleanup: contextlib.ExitStack) -> None:
    import shutil
    import subprocess

    from servers import MEMCACHED, REDIS_SERVER

    # memcached and redis on unix sockets; a redis with a password, one with an ACL user
    mc_sock, rd_sock = tmp_path / "mc.sock", tmp_path / "rd.sock"
    procs = [
        subprocess.Popen([MEMCACHED, "-s", str(mc_sock), "-u",  # (it must reach tmp_path)
                          "root" if os.geteuid() == 0 else os.environ.get("USER", "root")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([REDIS_SERVER, "--port", "0", "--unixsocket", str(rd_sock),
                          "--save", "", "--dir", str(tmp_path)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    for p in procs:
        cleanup.callback(lambda p=p: (p.terminate(), p.wait(10)))
    pw = RedisServer(tmp_path, "--save", "", "--requirepass", "s3cret")
    cleanup.callback(pw.stop)
    acl = RedisServer(tmp_path, "--save", "", "--user", "default", "off",
                      "--user", "alice", "on", ">wonder", "~app:*", "+@all")
    cleanup.callback(acl.stop)
    deadline = time.monotonic() + 10
    while not (mc_sock.exists() and rd_sock.exists()):
        assert time.monotonic() < deadline, "the unix-socket servers did not start"
        time.sleep(0.02)
    assert shutil.which("redis-server")
    urls = [f"unix://{mc_sock}"]
    with cleanup.enter_context(CacheClient(urls)) as c:
        assert c.set("k", b"over a unix socket") and c.get("k") == b"over a unix socket"
        assert c.get_many(["k", "absent"]) == {"k": b"over a unix socket"}
    with cleanup.enter_context(CacheClient([f"redis+unix://{rd_sock}?db=3"])) as c:
        assert c.set("k", "unix redis db 3") and c.get("k") == "unix redis db 3"
        assert c.get_many(["k"]) == {"k": "unix redis db 3"}
    raw = redis.Redis(unix_socket_path=str(rd_sock), db=3)
    assert raw.exists("k") == 1
    raw.close()
    port = pw.url.rsplit(":", 1)[1].split("/")[0]
    with cleanup.enter_context(CacheClient([f"redis://:s3cret@127.0.0.1:{port}/0"])) as c:
        assert c.set("k", 1) and c.get("k") == 1 and c.get_many(["k"]) == {"k": 1}
    wrong = cleanup.enter_context(CacheClient([f"redis://:nope@127.0.0.1:{port}/0"]))
    with pytest.raises(ServerUnavailable, match=r"(?i)auth|password"):
        wrong.get("k")
    port = acl.url.rsplit(":", 1)[1].split("/")[0]
    with cleanup.enter_context(
            CacheClient([f"redis://alice:wonder@127.0.0.1:{port}/0"], key_prefix="app:")) as c:
        assert c.set("k", "acl") and c.get("k") == "acl" and c.get_many(["k"]) == {"k": "acl"}
    # hash tags: every key with the same {tag} lands on one server
    with CacheClient(["memcached://127.0.0.1:1", "memcached://127.0.0.1:2",
                      "memcached://127.0.0.1:3"], hash_tags=True) as c:
        assert len({c.server_for(f"user:{{42}}:{part}") for part in "abcdefgh"}) == 1
        assert len({c.server_for(f"user:{i}") for i in range(50)}) == 3


def test_on_op_hook_and_stats(memcached_urls: list[str]) -> None:
    seen: list[tuple[str, str, int, float, str | None]] = []

    def hook(server: str, op: str, keys: int, seconds: float,
             error: BaseException | None) -> None:
        seen.append((server, op, keys, seconds, type(error).__name__ if error else None))
        if op == "delete":
            raise RuntimeError("a broken exporter must not break the cache")

    with CacheClient(memcached_urls, on_op=hook, key_prefix=f"o{uuid.uuid4().hex[:8]}:") as c:
        c.set("a", 1)
        c.get("a")
        c.get("absent")
        c.delete("a")  # the hook raises: logged, not raised
        c.get_many([f"k{i}" for i in range(40)])
        stats = c.stats()
    ops = [op for _, op, _, _, _ in seen]
    assert ops[:4] == ["set", "get", "get", "delete"] and ops.count("get_many") >= 2
    assert all(seconds >= 0 and err is None for _, _, _, seconds, err in seen)
    assert sum(k for _, op, k, _, _ in seen if op == "get_many") == 40
    assert sum(s["hits"] for s in stats.values()) >= 2
    assert sum(s["misses"] for s in stats.values()) >= 41
    assert all(s["errors"] == 0 and not s["down"] for s in stats.values())
    with pytest.raises(ConfigError, match="on_op must be callable"):
        CacheClient(memcached_urls, on_op=5)  # type: ignore[arg-type]


def test_memcached_refusing_a_value_is_not_a_dead_server(cleanup: contextlib.ExitStack) -> None:
    # a memcached with a 64 KiB item size refuses a 100 KiB value: an error for that
    # call, while the server stays up (not marked down, no hint, next calls work)
    from cachelib import MemcachedBackend, ServerRefusedError

    server = MemcachedServer("-I", "64k", "-o", "slab_chunk_max=32768")
    cleanup.callback(server.stop)
    backend = MemcachedBackend(server.url)  # its own max_value: 1 MiB, larger than -I
    client = cleanup.enter_context(CacheClient([backend], compress_threshold=None))
    with pytest.raises(ServerRefusedError, match="refused set"):
        client.set("big", os.urandom(100_000))
    assert client.set("small", b"ok") and client.get("small") == b"ok"
    assert not client.stats()[backend.name]["down"] and backend.pending_hints == 0


def test_rediss_tls(tmp_path: Path, cleanup: contextlib.ExitStack) -> None:
    import subprocess

    from servers import REDIS_SERVER, free_port

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    port = free_port()
    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file",
         str(cert), "--tls-auth-clients", "no", "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cleanup.callback(lambda: (proc.terminate(), proc.wait(10)))
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    deadline = time.monotonic() + 10
    while True:
        try:
            probe = redis.Redis.from_url(url)
            probe.ping()
            probe.close()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "the TLS redis-server did not start"
            time.sleep(0.05)
    client = cleanup.enter_context(CacheClient([url]))
    assert client.set("k", {"over": "TLS"}) and client.get("k") == {"over": "TLS"}
    assert client.set_many({f"m{i}": i for i in range(30)}) == []
    assert client.get_many([f"m{i}" for i in range(30)]) == {f"m{i}": i for i in range(30)}
    plain = cleanup.enter_context(CacheClient([f"redis://127.0.0.1:{port}/0"],
                                              timeout=0.3))
    with pytest.raises(ServerUnavailable):  # no TLS: the server drops the connection
        plain.get("k")


def test_redis_reconnections_never_exhaust_the_pool(redis_url: str) -> None:
    """Connections the server closed are dropped and replaced many more times than the
    pool's max_connections, and every call still succeeds: a dropped connection goes
    back to redis-py's pool, which would otherwise count it forever and refuse to
    make new ones ("Too many connections") once the process had reconnected 4 times."""
    backend = RedisBackend(redis_url, max_connections=4)
    admin = redis.Redis.from_url(redis_url)
    try:
        client = CacheClient([backend], key_prefix="reconnect:")
        for i in range(12):
            client.set("k", i)
            assert client.get_many(["k"]) == {"k": i}
            admin.client_kill_filter(_type="normal", skipme=True)  # the server drops us
            assert client.get("k") == i  # a fresh connection, no error
        assert backend.stats.as_dict()["errors"] == 0
    finally:
        admin.close()
        backend.close()
