"""Anti-entropy (cachelib._repair) against real memcached and redis-server processes of
our own and in-process backends.

The replicas are written here, not by a replicated client: for each key its replica set
comes from the ring (the first N distinct servers of its preference list) and the same
versioned record goes to each replica's backend directly. Then the tests diverge the
replicas behind the client's back and check that one round repairs everything, that a
second round finds nothing, and what crossed the network.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import MemcachedServer, RedisServer

from cachelib import CacheClient, ConfigError, MemoryBackend, ServerUnavailable
from cachelib._repair import BackgroundRepair, RepairReport, record_digest, repair
from cachelib._versions import tombstone, unwrap, wrap

N = 3
KINDS = ("memcached", "redis", "memory")
Record = tuple[bytes, int]


# --- servers and clients ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def memcached_servers() -> Iterator[list[str]]:
    """Four memcached processes of this module, stopped by PID at the end."""
    servers = [MemcachedServer() for _ in range(4)]
    try:
        yield [s.url for s in servers]
    finally:
        stop_all(servers)


@pytest.fixture(scope="module")
def redis_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Four redis-server processes of this module, stopped by PID at the end."""
    servers: list[RedisServer] = []
    try:
        for i in range(4):
            servers.append(RedisServer(tmp_path_factory.mktemp(f"repair-redis{i}"),
                                       "--save", "", "--appendonly", "no"))
        yield [s.url for s in servers]
    finally:
        stop_all(servers)


def stop_all(servers: list[Any]) -> None:
    """Stops the servers by PID, all at once (memcached takes ~1 s to exit on SIGTERM)."""
    for s in servers:
        if s.proc is not None and s.proc.poll() is None:
            s.proc.terminate()
    for s in servers:
        s.stop()


def make_client(request: pytest.FixtureRequest, kind: str, **options: Any) -> CacheClient:
    """A client over 4 empty servers of ``kind``."""
    servers: list[Any]
    if kind == "memory":
        servers = [MemoryBackend(name=f"mem{i}") for i in range(4)]
    else:
        servers = request.getfixturevalue(f"{kind}_servers")
    client = CacheClient(servers, timeout=2.0, connect_timeout=2.0, **options)
    client.flush_all()
    request.addfinalizer(client.close)
    return client


@pytest.fixture(params=KINDS)
def client(request: pytest.FixtureRequest) -> CacheClient:
    return make_client(request, request.param)


# --- writing replicas behind the client's back ----------------------------------------------


def raw(client: CacheClient, name: str) -> Any:
    """The server's backend (the client wraps in-process backends)."""
    backend = client.servers[name]
    return getattr(backend, "backend", backend)


def replicas_of(client: CacheClient, key: str, n: int = N) -> list[str]:
    return client.ring.get_nodes(client._encode(key), n)


def record(client: CacheClient, version: int, text: str) -> Record:
    """The versioned record of a str value, as a replicated client would write it."""
    return wrap(version, *client._dumps(text))


def seed(client: CacheClient, records: dict[str, Record], ttl: int = 0, n: int = N) -> None:
    """Writes each record to every replica of its key (one multi-set per server)."""
    per_server: dict[str, list[tuple[bytes, bytes, int]]] = {}
    for key, (payload, flags) in records.items():
        k = client._encode(key)
        for name in client.ring.get_nodes(k, n):
            per_server.setdefault(name, []).append((k, payload, flags))
    for name, items in per_server.items():
        backend = raw(client, name)
        for i in range(0, len(items), 1000):
            part = items[i:i + 1000]
            if hasattr(backend, "send_set_many"):
                assert backend.recv_set_many(backend.send_set_many(part, ttl)) == []
            else:
                backend.set_many({k: (p, f) for k, p, f in part}, ttl)


def put(client: CacheClient, name: str, key: str, rec: Record, ttl: int = 0) -> None:
    raw(client, name).set(client._encode(key), rec[0], rec[1], ttl)


def drop(client: CacheClient, name: str, key: str) -> None:
    raw(client, name).delete(client._encode(key))


def stored(client: CacheClient, key: str, n: int = N) -> list[Record | None]:
    """The record on each replica of ``key`` (None where missing)."""
    k = client._encode(key)
    return [raw(client, name).get(k) for name in client.ring.get_nodes(k, n)]


def get_many(backend: Any, keys: list[bytes]) -> dict[bytes, Record]:
    if hasattr(backend, "send_get_many"):
        return backend.recv_get_many(backend.send_get_many(keys))  # type: ignore[no-any-return]
    return backend.get_many(keys)  # type: ignore[no-any-return]


def assert_converged(client: CacheClient, expected: dict[str, Record | None],
                     n: int = N) -> None:
    """Every replica of every key holds exactly the expected record (one multi-get per
    server and 500 keys)."""
    per_server: dict[str, list[bytes]] = {}
    encoded = {key: client._encode(key) for key in expected}
    for k in encoded.values():
        for name in client.ring.get_nodes(k, n):
            per_server.setdefault(name, []).append(k)
    found: dict[tuple[str, bytes], Record] = {}
    for name, ks in per_server.items():
        for i in range(0, len(ks), 500):
            found.update(((name, k), rec)
                         for k, rec in get_many(raw(client, name), ks[i:i + 500]).items())
    wrong = {}
    for key, rec in expected.items():
        k = encoded[key]
        held = [found.get((name, k)) for name in client.ring.get_nodes(k, n)]
        if held != [rec] * n:
            wrong[key] = held
    assert not wrong, f"{len(wrong)} keys differ from the newest record, e.g. " \
        f"{next(iter(wrong.items()))}"


def assert_clean(client: CacheClient, n: int = N) -> RepairReport:
    """A second round finds nothing and writes nothing."""
    again = repair(client, replicas=n)
    assert again.ok, again.summary()
    assert (again.keys_differing, again.keys_repaired) == (0, 0), again.summary()
    assert all(p.leaves_differing == 0 for p in again.pairs)
    assert again.tree_bytes == 16 * len(again.pairs)  # the handshakes: roots are equal
    return again


# --- repair ------------------------------------------------------------------------------------


def test_repairs_every_kind_of_divergence(client: CacheClient) -> None:
    keys = [f"user:{i}" for i in range(300)]
    originals = {k: record(client, 10_000 + i, f"value {i}") for i, k in enumerate(keys)}
    seed(client, originals)
    expected: dict[str, Record | None] = dict(originals)

    flushed = client.ring.nodes[3]  # one whole server loses everything
    raw(client, flushed).flush()
    # then, behind the client's back, on one replica each:
    r = {k: replicas_of(client, k) for k in keys}
    put(client, r["user:1"][1], "user:1", record(client, 5, "older"))
    newer = record(client, 10**9, "newer")
    put(client, r["user:2"][2], "user:2", newer)
    expected["user:2"] = newer
    drop(client, r["user:3"][0], "user:3")
    dead = tombstone(10**9)  # a newer delete: copied, never undone
    put(client, r["user:4"][1], "user:4", dead)
    expected["user:4"] = dead
    put(client, r["user:5"][2], "user:5", tombstone(1))  # an older delete: overwritten
    put(client, r["user:6"][0], "user:6", client._dumps("not a versioned record"))
    put(client, r["user:7"][0], "user:7", record(client, 100, "v100"))  # three versions
    put(client, r["user:7"][1], "user:7", record(client, 30_000, "v30000"))
    put(client, r["user:7"][2], "user:7", record(client, 200, "v200"))
    expected["user:7"] = record(client, 30_000, "v30000")
    for name in r["user:8"][1:]:  # a tombstone on one replica, nothing on the others
        drop(client, name, "user:8")
    put(client, r["user:8"][0], "user:8", dead)
    expected["user:8"] = dead

    report = repair(client, replicas=N)
    assert report.ok, report.summary()
    assert report.pairs_compared == len(report.pairs) == 6
    lost = sum(flushed in r[k] for k in keys)
    assert lost > 50
    assert report.keys_repaired >= lost
    assert sum(report.repaired_by_direction.values()) == report.keys_repaired
    assert_converged(client, expected)
    assert_clean(client)
    summary = report.summary()
    assert "keys repaired" in summary and "full key-by-key comparison" in summary


def test_remaining_ttl_is_copied(client: CacheClient) -> None:
    seed(client, {"short": record(client, 7, "expires")}, ttl=300)
    seed(client, {"forever": record(client, 8, "stays")})
    for key in ("short", "forever"):
        drop(client, replicas_of(client, key)[0], key)
    assert repair(client, replicas=N).keys_repaired == 2
    for key, low, high in (("short", 290, 300), ("forever", None, None)):
        for name in replicas_of(client, key):
            k = client._encode(key)
            (_, _, ttl), = raw(client, name).get_many_with_ttl([k]).values()
            if low is None:
                assert ttl is None
            else:
                assert ttl is not None and low < ttl <= high


def test_dry_run_changes_nothing(client: CacheClient) -> None:
    keys = [f"k{i}" for i in range(200)]
    seed(client, {k: record(client, 1000 + i, f"v{i}") for i, k in enumerate(keys)})
    for k in keys[:5]:
        drop(client, replicas_of(client, k)[1], k)
    for k in keys[5:10]:
        put(client, replicas_of(client, k)[2], k, record(client, 1, "older"))
    before = {k: stored(client, k) for k in keys}

    dry = repair(client, replicas=N, dry_run=True)
    assert dry.dry_run and dry.ok
    assert (dry.keys_differing, dry.keys_repaired) == (10, 10)
    assert {k: stored(client, k) for k in keys} == before
    assert "dry run" in dry.summary() and "keys to repair 10" in dry.summary()

    real = repair(client, replicas=N)
    assert (real.keys_differing, real.keys_repaired) == (10, 10)
    assert real.repaired_by_direction == dry.repaired_by_direction
    assert_clean(client)


def test_exchange_is_far_below_a_full_comparison(client: CacheClient) -> None:
    rnd = random.Random(7)
    keys = [f"item:{i:06d}" for i in range(20_000)]
    originals = {k: record(client, 50_000 + i, f"payload {i:06d} " + "x" * 32)
                 for i, k in enumerate(keys)}
    seed(client, originals)
    for i, key in enumerate(rnd.sample(keys, 100)):  # one replica each: missing / older / newer
        name = rnd.choice(replicas_of(client, key))
        if i % 3 == 0:
            drop(client, name, key)
        elif i % 3 == 1:
            put(client, name, key, record(client, 1, "older"))
        else:
            originals[key] = record(client, 10**12 + i, "newer")
            put(client, name, key, originals[key])

    report = repair(client, replicas=N)
    print(report.summary())
    assert report.ok
    # a missing or older copy is one write; a newer copy goes to the 2 other replicas
    assert (report.keys_differing, report.keys_repaired) == (133, 34 + 33 + 2 * 33)
    assert sum(report.keys_listed.values()) == 3 * 20_000 - 34  # the 34 deleted copies
    assert report.savings >= 20, report.summary()
    assert report.exchange_bytes < 64 * 1024
    assert_converged(client, dict(originals))
    assert_clean(client)


def test_empty_servers(client: CacheClient) -> None:
    report = repair(client, replicas=N)
    assert report.ok and report.pairs == ()
    assert report.keys_listed == {name: 0 for name in client.servers}
    assert (report.keys_differing, report.keys_repaired, report.exchange_bytes) == (0, 0, 0)
    assert "pairs compared 0 of 0" in report.summary()


def test_unicode_keys(client: CacheClient) -> None:
    keys = ["ключ:1", "键:2", "emoji:\U0001f600", "café:3", "plain:4"]
    originals = {k: record(client, 100 + i, f"значение {i}") for i, k in enumerate(keys)}
    seed(client, originals)
    for i, k in enumerate(keys):
        name = replicas_of(client, k)[i % N]
        if i % 2:
            drop(client, name, k)
        else:
            put(client, name, k, record(client, 1, "старое"))
    report = repair(client, replicas=N)
    assert report.keys_repaired == len(keys), report.summary()
    assert_converged(client, dict(originals))
    assert_clean(client)


@pytest.mark.parametrize("kind", KINDS)
def test_only_keys_with_the_client_prefix_are_listed(request: pytest.FixtureRequest,
                                                     kind: str) -> None:
    # glob characters in the prefix: Redis' MATCH pattern must escape them
    c = make_client(request, kind, key_prefix="a*[b]?:")
    seed(c, {f"k{i}": record(c, 10 + i, "v") for i in range(40)})
    name = c.ring.nodes[0]
    foreign = b"aZb!:other"  # matched by the pattern a*[b]?:* were it not escaped
    raw(c, name).set(foreign, b"not ours", 0, 0)
    report = repair(c, replicas=N)
    assert sum(report.keys_listed.values()) == 3 * 40
    assert report.keys_repaired == 0
    assert [raw(c, n).get(foreign) for n in c.servers] == \
        [(b"not ours", 0) if n == name else None for n in c.servers]


@pytest.mark.parametrize("depth", [0, 1, 16])
def test_fixed_depths(request: pytest.FixtureRequest, depth: int) -> None:
    c = make_client(request, "memory")
    originals = {f"k{i}": record(c, 10 + i, "v") for i in range(500)}
    seed(c, originals)
    for i in range(0, 500, 50):
        drop(c, replicas_of(c, f"k{i}")[i % N], f"k{i}")
    report = repair(c, replicas=N, depth=depth)
    assert report.keys_repaired == 10
    assert {p.depth for p in report.pairs} == {depth}
    assert_converged(c, dict(originals))


def test_mixed_backends_compare_digests(request: pytest.FixtureRequest) -> None:
    """A record has the same digest on memcached, Redis and in-process (Redis hashes it
    on the server), so replicas on different kinds of server compare."""
    mc = request.getfixturevalue("memcached_servers")
    rd = request.getfixturevalue("redis_servers")
    c = CacheClient([mc[0], rd[0], MemoryBackend(name="mem"), rd[1]], timeout=2.0)
    c.flush_all()
    request.addfinalizer(c.close)
    rec = record(c, 42, "same everywhere")
    for name in c.servers:
        put(c, name, "probe", rec)
    want = record_digest(*rec)
    for name in c.servers:
        assert list(raw(c, name).scan_digests(b"")) == [(b"probe", want)]
    c.flush_all()

    originals = {f"m{i}": record(c, 500 + i, f"v{i}") for i in range(300)}
    seed(c, originals)
    for i in range(0, 300, 10):
        put(c, replicas_of(c, f"m{i}")[i % N], f"m{i}", record(c, 1, "older"))
    report = repair(c, replicas=N)
    assert report.keys_repaired == 30, report.summary()
    assert_converged(c, dict(originals))
    assert_clean(c)


# --- one copy, bad arguments -----------------------------------------------------------------


def test_one_replica_has_nothing_to_repair(request: pytest.FixtureRequest) -> None:
    c = make_client(request, "memory")
    seed(c, {"k": record(c, 1, "v")}, n=1)
    assert not hasattr(c, "replicas") or c.replicas == 1
    for report in (repair(c), repair(c, replicas=1)):
        assert report.replicas == 1 and report.pairs == () and report.keys_listed == {}
        assert "nothing to compare or repair" in report.note
        assert "nothing to compare or repair" in report.summary()


def test_bad_arguments(request: pytest.FixtureRequest) -> None:
    c = make_client(request, "memory")
    for kwargs in ({"replicas": 0}, {"replicas": 5}, {"replicas": True}, {"depth": -1},
                   {"depth": 25}, {"depth": "3"}, {"max_keys_per_second": 0},
                   {"max_keys_per_second": -1.0}, {"batch": 0}, {"dry_run": "yes"},
                   {"default_ttl": -1}):
        with pytest.raises(ConfigError):
            repair(c, **{"replicas": N, **kwargs})
    for interval in (0, -1, None, float("inf")):
        with pytest.raises(ConfigError, match="interval"):
            BackgroundRepair(c, interval, replicas=N)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="scan_digests"):
        repair(CacheClient([_NoListing("x"), _NoListing("y")]), replicas=2)


class _NoListing:
    """A backend that cannot list its contents (a cache client accepts it)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.inner = MemoryBackend(name=name)
        self.stats = self.inner.stats
        for op in ("get", "set", "add", "delete", "touch", "incr", "decr", "flush", "close",
                   "get_many", "set_many", "delete_many"):
            setattr(self, op, getattr(self.inner, op))


# --- failures --------------------------------------------------------------------------------


def test_server_down_is_reported_per_pair(tmp_path: Path) -> None:
    servers: list[RedisServer] = []
    try:
        for i in range(3):
            (tmp_path / f"r{i}").mkdir()
            servers.append(RedisServer(tmp_path / f"r{i}", "--save", "", "--appendonly", "no"))
        c = CacheClient([s.url for s in servers], timeout=0.5, connect_timeout=0.5)
        names = list(c.servers)
        originals = {f"k{i}": record(c, 100 + i, "v") for i in range(200)}
        seed(c, originals, n=2)
        down = names[2]
        healthy = [k for k in originals if set(replicas_of(c, k, 2)) == set(names[:2])]
        for k in healthy[:10]:
            drop(c, replicas_of(c, k, 2)[0], k)
        servers[2].kill()

        report = repair(c, replicas=2)
        assert not report.ok
        assert report.errors[down].startswith("not listed: ServerUnavailable")
        by_pair = {p.servers: p for p in report.pairs}
        assert by_pair[names[0], names[1]].error is None
        assert by_pair[names[0], names[1]].repaired == 10
        for pair in ((names[0], down), (names[1], down)):
            assert by_pair[pair].error == f"not compared: {down} could not be listed"
        assert report.pairs_compared == 1
        assert "ERROR not compared" in report.summary()
        assert_converged(c, {k: originals[k] for k in healthy}, n=2)
        c.close()
    finally:
        stop_all(servers)


class _FlakyBackend(MemoryBackend):
    """An in-process backend whose writes fail as a dead server's would."""

    failing = False

    def set(self, key: bytes, payload: bytes, flags: int, ttl: float | None) -> None:
        if self.failing:
            raise ServerUnavailable(self.name, f"{self.name} went away")
        super().set(key, payload, flags, ttl)


def test_server_failing_during_repair_is_reported_and_others_repaired() -> None:
    backends = [_FlakyBackend(name=f"f{i}") for i in range(4)]
    c = CacheClient(backends)
    originals = {f"k{i}": record(c, 100 + i, "v") for i in range(400)}
    seed(c, originals)
    for i in range(0, 400, 4):
        drop(c, replicas_of(c, f"k{i}")[i % N], f"k{i}")
    backends[1].failing = True  # listed fine, then every write to it fails

    report = repair(c, replicas=N)
    failed = {p.servers for p in report.pairs if p.error}
    assert failed and all("f1" in pair for pair in failed)
    assert all(v.startswith("ServerUnavailable") for v in report.errors.values())
    assert set(report.errors) == {f"{a} <-> {b}" for a, b in failed}
    assert report.keys_repaired == sum(report.repaired_by_direction.values())
    untouched = {k: v for k, v in originals.items() if "f1" not in replicas_of(c, k)}
    assert_converged(c, untouched)

    backends[1].failing = False
    assert repair(c, replicas=N).ok
    assert_converged(c, dict(originals))


def test_memcached_without_metadump_is_reported(request: pytest.FixtureRequest) -> None:
    no_dump = MemcachedServer("-X")  # lru_crawler metadump disabled
    try:
        others = request.getfixturevalue("memcached_servers")[:2]
        c = CacheClient([no_dump.url, *others], timeout=2.0)
        c.flush_all()
        seed(c, {"k": record(c, 1, "v")}, n=2)
        report = repair(c, replicas=2)
        name = next(iter(c.servers))
        assert "metadump" in report.errors[name] and "-X" in report.errors[name]
        c.close()
    finally:
        no_dump.stop()


# --- pacing and the background thread --------------------------------------------------------


def test_rate_limit(request: pytest.FixtureRequest) -> None:
    c = make_client(request, "memory")
    originals = {f"k{i}": record(c, 10 + i, "v") for i in range(600)}
    seed(c, originals)
    for i in range(0, 600, 10):
        drop(c, replicas_of(c, f"k{i}")[0], f"k{i}")
    report = repair(c, replicas=N, max_keys_per_second=200)
    assert report.keys_repaired == 60
    assert report.seconds >= 0.28  # 60 writes at 200/s, in batches of 20
    assert_converged(c, dict(originals))


def test_background_repair(request: pytest.FixtureRequest) -> None:
    c = make_client(request, "memory")
    originals = {f"k{i}": record(c, 10 + i, "v") for i in range(300)}
    seed(c, originals)
    for i in range(0, 300, 7):
        drop(c, replicas_of(c, f"k{i}")[1], f"k{i}")
    seen: list[RepairReport] = []
    with BackgroundRepair(c, 0.02, replicas=N, on_report=seen.append) as bg:
        deadline = time.monotonic() + 10
        while bg.rounds < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert bg.running
    assert not bg.running and bg.last_error is None
    assert seen[0].keys_repaired == 43 and seen[-1].keys_differing == 0
    assert bg.last_report is seen[-1]
    assert_converged(c, dict(originals))


def test_background_repair_stops_a_slow_round(request: pytest.FixtureRequest) -> None:
    c = make_client(request, "memory")
    seed(c, {f"k{i}": record(c, 10 + i, "v") for i in range(200)})
    for i in range(200):
        drop(c, replicas_of(c, f"k{i}")[0], f"k{i}")
    bg = BackgroundRepair(c, 60, replicas=N, max_keys_per_second=5)
    time.sleep(0.3)
    started = time.monotonic()
    bg.stop(timeout=5)
    assert not bg.running and time.monotonic() - started < 1
    report = bg.last_report
    assert report is not None and "stopped" in report.note
    assert 0 < report.keys_repaired < 200
    assert report.keys_repaired == sum(report.repaired_by_direction.values())


class _Exploding(MemoryBackend):
    def scan_digests(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("listing bug")


def test_background_repair_logs_errors_and_keeps_going(caplog: pytest.LogCaptureFixture
                                                      ) -> None:
    c = CacheClient([_Exploding(name="x"), MemoryBackend(name="y")])
    with caplog.at_level(logging.ERROR, logger="cachelib"):
        bg = BackgroundRepair(c, 0.01, replicas=2)
        deadline = time.monotonic() + 10
        while bg.rounds < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        bg.stop()
    assert bg.rounds >= 3 and bg.last_report is None
    assert isinstance(bg.last_error, RuntimeError)
    assert "anti-entropy round failed" in caplog.text and "listing bug" in caplog.text


def test_with_the_replicated_client(request: pytest.FixtureRequest,
                                    caplog: pytest.LogCaptureFixture) -> None:
    """The records a ReplicatedCacheClient writes (values and tombstones), repaired with
    its own N."""
    backends = [MemoryBackend(name=f"r{i}") for i in range(4)]
    c = CacheClient(backends, replicas=N)
    request.addfinalizer(c.close)
    for i in range(300):
        c.set(f"k{i}", {"i": i}, ttl=600)
    for i in range(0, 300, 30):
        c.delete(f"k{i}")
    for i in range(1, 300, 30):  # a value lost on one replica
        drop(c, replicas_of(c, f"k{i}")[i % N], f"k{i}")
    for i in range(0, 300, 60):  # a tombstone lost on one replica
        drop(c, replicas_of(c, f"k{i}")[0], f"k{i}")
    expected = {f"k{i}": stored(c, f"k{i}")[2] for i in range(300)}  # never dropped
    report = repair(c)  # N from the client
    assert report.replicas == N and report.keys_repaired == 10 + 5, report.summary()
    assert_converged(c, expected)
    assert_clean(c)
    assert [c.get(f"k{i}") for i in (0, 1, 2, 30, 31)] == [None, {"i": 1}, {"i": 2}, None,
                                                            {"i": 31}]
    with caplog.at_level(logging.WARNING, logger="cachelib"):
        BackgroundRepair(c, 3600, replicas=N).stop()
    assert "tombstones live" in caplog.text


def test_values_older_than_the_tombstones_are_not_copied_to_a_missing_side() -> None:
    """A replica lacking a key may have held a tombstone that expired: a value older than
    ``tombstone_ttl`` is not copied there (it could be a deleted key coming back)."""
    c = CacheClient([MemoryBackend(name=f"t{i}") for i in range(4)], replicas=N,
                    tombstone_ttl=1)
    try:
        c.set("old", 1, ttl=600)
        for name in replicas_of(c, "old")[1:]:  # the others' (expired) tombstones: gone
            drop(c, name, "old")
        time.sleep(1.3)
        c.set("young", 2, ttl=600)
        drop(c, replicas_of(c, "young")[0], "young")  # a young value lost: copied back
        report = repair(c)
        assert report.kept_old == 2 and report.keys_repaired == 1, report.summary()
        assert report.as_dict()["kept_old"] == 2
        held = [stored(c, "old")[i] for i in range(N)]
        assert sum(x is not None for x in held) == 1  # still on one replica only
        assert all(x is not None for x in (stored(c, "young")[i] for i in range(N)))
    finally:
        c.close()


def test_record_digest_is_the_redis_server_side_sha1() -> None:
    import hashlib

    for payload, flags in (wrap(5, b"abc", 1), tombstone(9), (b"123", 2), (b"", 0)):
        stored_bytes = (b"" if flags == 2 else bytes((flags,))) + payload
        assert record_digest(payload, flags) == int(
            hashlib.sha1(stored_bytes).hexdigest()[:16], 16)
        if flags & 0x80:
            assert unwrap(payload, flags) is not None
