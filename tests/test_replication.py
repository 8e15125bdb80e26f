"""Replicated CacheClient (``replicas=N`` > 1) over real memcached and redis-server
processes and the in-process backend: placement, quorums, versions and conflicts, read
repair, tombstones, hinted handoff through a server that flaps, threads, fork."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import pickle
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymemcache.client.base
import pytest
import redis
from conftest import run_threads
from servers import MemcachedServer, RedisServer

from cachelib import (
    CacheClient,
    ConfigError,
    MemoryBackend,
    QuorumError,
    ReplicatedCacheClient,
    ServerUnavailable,
)
from cachelib._versions import Record, unwrap, wrap
from idgen import TrueTimeGenerator

FORK_WITH_THREADS = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning")
VALUES: list[Any] = [b"raw \x00 bytes", "unicode \u00e9\U0001f600", 42, -7, 2**70, 3.5,
                     float("inf"), None, True, [1, "a", None], {"k": [1, 2]}, b"", "",
                     b"z" * 5000]


@pytest.fixture()
def cleanup() -> Iterator[contextlib.ExitStack]:
    """Servers and clients a test registers are stopped / closed even if it fails."""
    with contextlib.ExitStack() as stack:
        yield stack


def _servers(kind: str, urls: dict[str, list[str]]) -> list[Any]:
    if kind == "memory":
        return [MemoryBackend(name=f"mem{i}") for i in range(4)]
    return urls[kind]


@pytest.fixture(params=["memcached", "redis", "memory"])
def pool(request: pytest.FixtureRequest, memcached_urls: list[str],
         redis_urls: list[str]) -> list[Any]:
    """Four servers (never stopped): the session's processes, or in-process backends."""
    return _servers(request.param, {"memcached": memcached_urls, "redis": redis_urls})


def _client(servers: list[Any], stack: contextlib.ExitStack, **options: Any) -> Any:
    options.setdefault("key_prefix", f"r{uuid.uuid4().hex[:8]}:")
    return stack.enter_context(CacheClient(servers, replicas=3, **options))


def _record(client: Any, server: str, key: str) -> Record | tuple[bytes, int] | None:
    """What ``server`` holds for ``key``: a record, None, or a value without a version."""
    hit = client.servers[server].get(client._encode(key))
    if hit is None:
        return None
    rec = unwrap(*hit)
    return hit if rec is None else rec


def _put(client: Any, server: str, key: str, stored: tuple[bytes, int]) -> None:
    """Write ``(payload, flags)`` on one server behind the client's back."""
    client.servers[server].set(client._encode(key), stored[0], stored[1], 0)


def _own(kind: str, count: int, tmp_path: Path, stack: contextlib.ExitStack
         ) -> list[MemcachedServer | RedisServer]:
    """``count`` servers of this test's own, stopped together at its end (memcached
    takes a second to exit on SIGTERM: one second for all, not one each)."""
    out: list[MemcachedServer | RedisServer] = []
    stack.callback(_stop_all, out)
    for i in range(count):
        if kind == "memcached":
            out.append(MemcachedServer())
        else:
            (tmp_path / f"r{i}").mkdir()
            out.append(RedisServer(tmp_path / f"r{i}", "--save", "", "--appendonly", "no"))
    return out


def _stop_all(servers: list[MemcachedServer | RedisServer]) -> None:
    running = [s.proc for s in servers if s.proc is not None and s.proc.poll() is None]
    for proc in running:  # by PID, as ServerProcess.stop does
        os.kill(proc.pid, signal.SIGCONT)
        os.kill(proc.pid, signal.SIGTERM)
    for proc in running:
        proc.wait(timeout=10)


# --- placement and plain operations ------------------------------------------------------


def test_round_trips_of_every_value_type_on_three_replicas(
        pool: list[Any], cleanup: contextlib.ExitStack) -> None:
    c = _client(pool, cleanup)
    assert type(c) is ReplicatedCacheClient and isinstance(c, CacheClient)
    assert c.replicas == 3 and "replicas=3, write_quorum=2, read_quorum=2" in repr(c)
    for i, value in enumerate(VALUES):
        assert c.set(f"v{i}", value) is True
        got = c.get(f"v{i}", default="MISSING")
        assert got == value and type(got) is type(value), (value, got)
    assert c.get("absent") is None and c.get("absent", 5) == 5
    # each key on exactly the three servers of its preference list, as a record
    for i in range(len(VALUES)):
        pl = c.preference_list(f"v{i}")
        assert len(set(pl)) == 3 and pl[0] == c.server_for(f"v{i}")
        held = {name for name in c.servers if _record(c, name, f"v{i}") is not None}
        assert held == set(pl)
        assert all(isinstance(_record(c, name, f"v{i}"), Record) for name in pl)
    items = {f"user:{i}": {"id": i} for i in range(150)}
    assert c.set_many(items, ttl=600) == []
    assert c.get_many([*items, "absent:1"]) == items
    assert c.get_many([]) == {} and c.set_many({}) == [] and c.delete_many([]) == 0
    assert c.delete("user:0") is True and c.get("user:0") is None
    assert c.delete_many(list(items)[:50]) == 50
    assert c.get_many(items) == {k: v for k, v in list(items.items())[50:]}
    c.set("ttl", b"soon", ttl=1)
    assert c.get("ttl") == b"soon"
    for op, args in (("add", ("k", 1)), ("incr", ("k",)), ("decr", ("k",)),
                     ("touch", ("k", 5))):
        with pytest.raises(ConfigError, match=rf"{op}\(\) is not supported with replicas=3"):
            getattr(c, op)(*args)
    st = c.replication_stats()
    assert st["writes"] == len(VALUES) + 150 + 1 + 50 + 1 and st["reads"] > 150
    assert st["quorum_failures"] == st["read_repairs"] == st["concurrent"] == 0


def test_replicas_1_is_the_unreplicated_client(memcached_urls: list[str],
                                                cleanup: contextlib.ExitStack) -> None:
    prefix = f"u{uuid.uuid4().hex[:8]}:"
    for c in (cleanup.enter_context(CacheClient(memcached_urls, key_prefix=prefix)),
              cleanup.enter_context(CacheClient(memcached_urls, key_prefix=prefix,
                                                replicas=1))):
        assert type(c) is CacheClient and c.replicas == 1
        c.set("plain", b"bytes as they are")
        assert c.preference_list("plain") == [c.server_for("plain")]
        assert c.replication_stats()["writes"] == 0
        assert all(len(r.replicas) == 1 for r in c.replica_ranges())
    host, port = c.servers[c.server_for("plain")].name.split(":")
    raw = pymemcache.client.base.Client((host, int(port)))
    try:  # no version in front: what an unreplicated client always stored
        assert raw.get(f"{prefix}plain") == b"bytes as they are"
    finally:
        raw.close()


def test_bad_replication_options(memcached_urls: list[str]) -> None:
    four = [MemoryBackend(name=f"m{i}") for i in range(4)]
    for options, message in (
            ({"replicas": 5}, r"replicas must be an int in \[1, 4\] \(the number of servers\)"),
            ({"replicas": 0}, r"replicas must be an int in \[1, 4\]"),
            ({"replicas": "3"}, r"replicas must be an int in \[1, 4\]"),
            ({"replicas": True}, "replicas must be an int >= 1, got True"),
            ({"replicas": 3, "write_quorum": 4}, r"write_quorum must be an int in \[1, replicas=3"),
            ({"replicas": 3, "read_quorum": 0}, r"read_quorum must be an int in \[1, replicas=3"),
            ({"write_quorum": 2}, "with replicas=1 the quorums are 1"),
            ({"replicas": 3, "on_conflict": "log"}, "on_conflict must be callable"),
            ({"replicas": 3, "versions": object()}, "versions must be an idgen.TrueTimeGenerator"),
            ({"replicas": 3, "tombstone_ttl": 0}, "tombstone_ttl must be an int"),
            ({"replicas": 3, "repair_ttl": 61}, r"repair_ttl must be .* \[0, tombstone_ttl=60\]")):
        with pytest.raises(ConfigError, match=message):
            CacheClient(four, **options)
    with CacheClient(four, replicas=4, write_quorum=1, read_quorum=4, repair_ttl=0) as c:
        assert c.replication_stats()["read_quorum"] == 4 and c.set("k", 1) and c.get("k") == 1


@pytest.mark.parametrize("kind", ["memcached", "redis"])
def test_single_key_calls_are_one_round_trip(kind: str, memcached_urls: list[str],
                                             redis_urls: list[str],
                                             cleanup: contextlib.ExitStack) -> None:
    spans: list[tuple[str, float, float]] = []

    def on_op(server: str, op: str, keys: int, seconds: float, error: Any) -> None:
        now = time.perf_counter()
        spans.append((server, now - seconds, now))

    c = _client(memcached_urls if kind == "memcached" else redis_urls, cleanup, on_op=on_op)
    for call in (lambda: c.set("one-trip", b"x"), lambda: c.get("one-trip"),
                 lambda: c.set("one-trip", b"y", ttl=60), lambda: c.delete("one-trip")):
        spans.clear()
        call()
        assert len(spans) == 3 and len({s for s, _, _ in spans}) == 3
        # every request was on the wire before the first reply was read
        assert max(start for _, start, _ in spans) < min(end for _, _, end in spans)


def test_replica_ranges_match_the_preference_lists(pool: list[Any],
                                                   cleanup: contextlib.ExitStack) -> None:
    import bisect

    c = _client(pool, cleanup)
    ranges = c.replica_ranges()
    assert ranges[0].lo == 0 and ranges[-1].hi == 1 << 64
    assert all(a.hi == b.lo and a.replicas != b.replicas for a, b in itertools.pairwise(ranges))
    los = [r.lo for r in ranges]
    for i in range(500):
        k = c._encode(f"key:{i}")
        at = ranges[bisect.bisect_right(los, c.ring.key_hash(k)) - 1]
        assert list(at.replicas) == c.preference_list(f"key:{i}")
    with CacheClient([MemoryBackend(name=f"m{i}") for i in range(4)], ring="ketama",
                     replicas=2) as k:
        assert k.replica_ranges()[-1].hi == 1 << 32
        assert k.set_many({f"k{i}": i for i in range(50)}) == []
        assert k.get_many([f"k{i}" for i in range(50)]) == {f"k{i}": i for i in range(50)}
        held = {n for n, b in k.servers.items() if b.get(k._encode("k7")) is not None}
        assert held == set(k.preference_list("k7")) and len(held) == 2


# --- quorums ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memcached", "redis"])
def test_two_of_three_down_is_a_quorum_error(kind: str, tmp_path: Path,
                                             cleanup: contextlib.ExitStack) -> None:
    servers = _own(kind, 3, tmp_path, cleanup)
    urls = [s.url for s in servers]
    c = _client(urls, cleanup, dead_timeout=30)
    quiet = _client(urls, cleanup, key_prefix=c._keys.prefix, ignore_errors=True)
    assert c.set("k", "before") and c.set_many({"a": 1, "b": 2}) == []
    names = list(c.servers)
    servers[1].kill()
    servers[2].kill()
    with pytest.raises(QuorumError) as info:
        c.set("k", "after")
    err = info.value
    assert isinstance(err, ServerUnavailable) and isinstance(err, ConnectionError)
    assert err.acked == 1 and err.needed == 2 and set(err.failed) == set(names[1:])
    assert err.keys == ["k"] and err.server in names[1:]
    message = str(err)
    assert message.startswith("set of 'k': 1 server acknowledged, write_quorum=2 needed "
                              "(replicas=3); failed: ")
    assert all(name in message for name in names[1:])
    again = pickle.loads(pickle.dumps(err))  # e.g. through a process pool
    assert (type(again), str(again), again.acked, again.needed, again.failed, again.keys,
            again.server) == (QuorumError, message, 1, 2, err.failed, ["k"], err.server)
    with pytest.raises(QuorumError, match=r"get of 'k': 1 server answered, read_quorum=2"):
        c.get("k")
    with pytest.raises(QuorumError, match=r"get_many: 2 of 2 keys short of the quorum"):
        c.get_many(["a", "b"])
    with pytest.raises(QuorumError, match="delete of 'a': 1 server acknowledged"):
        c.delete("a")
    with pytest.raises(QuorumError, match="set_many: 2 of 2 keys") as many:
        c.set_many({"a": 3, "b": 4})
    assert sorted(many.value.keys) == ["a", "b"]
    # with ignore_errors: a miss, False, the keys not stored
    assert quiet.get("k", default="miss") == "miss" and quiet.get_many(["a", "b"]) == {}
    assert quiet.set("k", 1) is False and quiet.delete("k") is False
    assert sorted(quiet.set_many({"a": 1, "b": 2})) == ["a", "b"]
    assert quiet.delete_many(["a", "b"]) == 0
    assert c.replication_stats()["quorum_failures"] == 1 + 1 + 2 + 1 + 2
    # the one live replica kept hints for the others: the new records are deleted on them
    # before they serve again
    assert c.servers[names[1]].pending_hints > 0


# --- versions: read repair, tombstones, conflicts -----------------------------------------------


def test_a_stale_replica_is_repaired_by_a_read(pool: list[Any],
                                               cleanup: contextlib.ExitStack) -> None:
    c = _client(pool, cleanup)
    c.set_many({"older": "new", "missing": "here", "legacy": "versioned", "fine": 1})
    newest = {k: _record(c, c.server_for(k), k) for k in ("older", "missing", "legacy")}
    assert all(isinstance(r, Record) for r in newest.values())
    pl = {k: c.preference_list(k) for k in newest}
    # behind the client's back: an older record, a lost copy, a value without a version
    _put(c, pl["older"][1], "older", wrap(newest["older"].version - (1000 << 22), b"old", 16))
    assert c.servers[pl["missing"][2]].delete(c._encode("missing"))
    _put(c, pl["legacy"][0], "legacy", (b"unversioned", 16))
    assert c.get("older") == "new" and c.get("missing") == "here"
    assert c.get_many(["legacy", "fine"]) == {"legacy": "versioned", "fine": 1}
    for key, rec in newest.items():  # every replica holds the newest record again
        assert [_record(c, name, key) for name in pl[key]] == [rec] * 3
    st = c.replication_stats()
    assert st["read_repairs"] == 3 and st["stale_answers"] == 3 and st["concurrent"] == 0
    c.get_many(["older", "missing", "legacy"])  # nothing left to repair
    assert c.replication_stats()["read_repairs"] == 3


@pytest.mark.parametrize("kind", ["memcached", "redis"])
def test_repaired_bytes_on_the_server_and_their_ttl(kind: str, memcached_urls: list[str],
                                                    redis_urls: list[str],
                                                    cleanup: contextlib.ExitStack) -> None:
    urls = memcached_urls if kind == "memcached" else redis_urls
    c = _client(urls, cleanup)
    c.set("raw", "value")
    victim = c.preference_list("raw")[1]
    assert c.servers[victim].delete(c._encode("raw"))
    assert c.get("raw") == "value"
    rec = _record(c, c.server_for("raw"), "raw")
    assert isinstance(rec, Record)
    key = c._encode("raw")
    stored = wrap(rec.version, rec.payload, rec.flags)
    if kind == "memcached":
        host, port = victim.split(":")
        with socket_to(host, int(port)) as s:
            s.sendall(b"get " + key + b"\r\n")
            reply = read_until(s, b"END\r\n")
        assert reply == b"VALUE %s %d %d\r\n%s\r\nEND\r\n" % (
            key, stored[1], len(stored[0]), stored[0])
    else:
        url = next(u for u in urls if victim in u)
        r = redis.Redis.from_url(url)
        try:
            assert r.get(key) == bytes([stored[1]]) + stored[0]
            # a repaired copy ends repair_ttl (60 s) after the write, however long the
            # value was written for: it cannot outlive a newer tombstone
            assert 0 < r.pttl(key) <= 60_000
        finally:
            r.close()


@contextlib.contextmanager
def socket_to(host: str, port: int) -> Iterator[Any]:
    import socket

    s = socket.create_connection((host, port), timeout=2)
    try:
        yield s
    finally:
        s.close()


def read_until(s: Any, end: bytes) -> bytes:
    buf = b""
    while not buf.endswith(end):
        chunk = s.recv(65536)
        assert chunk, "closed"
        buf += chunk
    return buf


def test_tombstones_beat_older_values_and_are_never_undone(
        pool: list[Any], cleanup: contextlib.ExitStack) -> None:
    c = _client(pool, cleanup)
    c.set_many({"gone": "v1", "gone2": "v1", "legacy": "v1"})
    old = {k: _record(c, c.server_for(k), k) for k in ("gone", "gone2", "legacy")}
    assert c.delete("gone") and c.delete_many(["gone2", "legacy"]) == 2
    pl = c.preference_list("gone")
    stones = [_record(c, name, "gone") for name in pl]
    assert all(isinstance(s, Record) and s.deleted for s in stones) and len(set(stones)) == 1
    stone = stones[0]
    assert isinstance(stone, Record) and stone.version > old["gone"].version  # type: ignore[union-attr]
    # a replica that missed the delete still holds the old value: the tombstone wins, and
    # read repair writes the tombstone over it, never the value over the tombstones
    _put(c, pl[0], "gone", wrap(old["gone"].version, b"v1", 16))  # type: ignore[union-attr]
    _put(c, c.preference_list("gone2")[2], "gone2",
         wrap(old["gone2"].version, b"v1", 16))  # type: ignore[union-attr]
    _put(c, c.preference_list("legacy")[1], "legacy", (b"v1", 16))
    assert c.get("gone") is None and c.get("gone", "dflt") == "dflt"
    assert c.get_many(["gone2", "legacy"]) == {}
    assert [_record(c, name, "gone") for name in pl] == [stone] * 3
    for key in ("gone2", "legacy"):
        assert all(r.deleted for r in (_record(c, n, key) for n in c.preference_list(key)))
    # a new write after a delete wins
    assert c.delete("gone") and c.set("gone", "v2") and c.get("gone") == "v2"


def test_old_records_are_not_repaired_past_repair_ttl(cleanup: contextlib.ExitStack) -> None:
    four = [MemoryBackend(name=f"m{i}") for i in range(4)]
    c = _client(four, cleanup, repair_ttl=30)
    two_minutes_ago = TrueTimeGenerator(
        worker=77, clock=lambda: time.time_ns() // 1_000_000 - 120_000)
    cleanup.callback(two_minutes_ago.close)
    old = wrap(two_minutes_ago.next_id(), b"aged", 16)
    pl = c.preference_list("aged")
    for name in pl[:2]:
        _put(c, name, "aged", old)
    assert c.get("aged") == "aged"  # read, but not copied: its repair window is over
    assert _record(c, pl[2], "aged") is None
    assert c.replication_stats()["read_repairs"] == 0


def _concurrent_pair(cleanup: contextlib.ExitStack, error_us: int) -> tuple[int, int]:
    gens = [TrueTimeGenerator(worker=w, eps_source=lambda: (error_us, False))
            for w in (1001, 1002)]
    for g in gens:
        cleanup.callback(g.close)
    a, b = gens[0].next_id(), gens[1].next_id()
    assert not gens[0].definitely_before(a, b) and not gens[0].definitely_before(b, a)
    return a, b


def test_concurrent_versions_are_counted_and_reported(
        pool: list[Any], cleanup: contextlib.ExitStack,
        caplog: pytest.LogCaptureFixture) -> None:
    calls: list[tuple[Any, list[int]]] = []
    c = _client(pool, cleanup, on_conflict=lambda key, versions: calls.append((key, versions)))
    a, b = _concurrent_pair(cleanup, 50_000)  # +-64 ms: the two intervals overlap
    pl = c.preference_list("both")
    _put(c, pl[0], "both", wrap(a, b"from 1001", 16))
    for name in pl[1:]:
        _put(c, name, "both", wrap(b, b"from 1002", 16))
    winner = "from 1001" if a > b else "from 1002"  # the larger ID, on every client
    assert c.get("both") == winner
    assert calls == [("both", sorted([a, b]))]
    assert c.replication_stats()["concurrent"] == 1
    assert {_record(c, name, "both").version for name in pl} == {max(a, b)}  # type: ignore[union-attr]
    assert c.get("both") == winner and len(calls) == 1  # repaired: no conflict left
    # a failing hook is logged, never raised
    boom = _client(pool, cleanup, key_prefix=c._keys.prefix,
                   on_conflict=lambda key, versions: 1 / 0)
    _put(c, pl[2], "both", wrap(min(a, b), b"loser", 16))
    with caplog.at_level(logging.ERROR, logger="cachelib"):
        assert boom.get("both") == winner
    assert "on_conflict hook failed" in caplog.text
    # versions surely apart (1 ms bounds, minted 20 ms apart) are not concurrent
    first = TrueTimeGenerator(worker=3, eps_source=lambda: (1000, False))
    cleanup.callback(first.close)
    early = first.next_id()
    time.sleep(0.02)
    late_gen = TrueTimeGenerator(worker=4, eps_source=lambda: (1000, False))
    cleanup.callback(late_gen.close)
    late = late_gen.next_id()
    _put(c, pl[0], "apart", wrap(early, b"early", 16))
    for name in pl[1:]:
        _put(c, name, "apart", wrap(late, b"late", 16))
    assert c.get("apart") == "late" and c.replication_stats()["concurrent"] == 1


# --- hinted handoff: a server that flaps ------------------------------------------------------


@pytest.mark.parametrize("mode", ["freeze", "kill"])
@pytest.mark.parametrize("kind", ["memcached", "redis"])
def test_no_stale_reads_when_a_replica_flaps(kind: str, mode: str, tmp_path: Path,
                                             cleanup: contextlib.ExitStack) -> None:
    servers = _own(kind, 4, tmp_path, cleanup)
    c = _client([s.url for s in servers], cleanup, timeout=0.2, dead_timeout=0.3)
    names = list(c.servers)
    victim, victim_name = servers[2], names[2]
    keys = [f"key{i}" for i in range(120)]
    on_victim = [k for k in keys if victim_name in c.preference_list(k)]
    latest: dict[str, Any] = {k: f"v0:{k}" for k in keys}
    assert c.set_many(latest) == []
    stale: list[tuple[str, Any, Any]] = []

    def check(where: str) -> None:
        for k in keys[::3]:
            got = c.get(k)
            if got != latest[k]:
                stale.append((where, k, got))
        got_many = c.get_many(keys)
        stale.extend((where + " many", k, got_many.get(k)) for k in keys
                     if got_many.get(k) != latest[k])

    victim.freeze() if mode == "freeze" else victim.kill()
    try:
        for rnd in range(1, 4):  # writes of every kind while it is down, all acknowledged
            for i, k in enumerate(keys):
                if i % 5 == rnd:
                    assert c.delete(k)
                    latest[k] = None
                elif i % 5 == 0:
                    assert c.set(k, f"v{rnd}:{k}")
                    latest[k] = f"v{rnd}:{k}"
            batch = {k: f"b{rnd}:{k}" for k in keys[rnd::4]}
            assert c.set_many(batch) == []
            latest.update(batch)
            gone = keys[rnd + 1::7]
            assert c.delete_many(gone) == len(gone)
            latest.update(dict.fromkeys(gone))
            check(f"down, round {rnd}")
        assert c.servers[victim_name].pending_hints > 0
        st = c.replication_stats()  # writes and reads went to the stand-ins
        assert st["hinted_writes"] > 0 and st["fallback_answers"] > 0
        assert st["quorum_failures"] == 0
    finally:
        victim.thaw() if mode == "freeze" else victim.start()
    if mode == "freeze":  # the proof this test can fail: it kept values since replaced
        old = [k for k in on_victim if latest[k] != f"v0:{k}" and
               (_raw_get(kind, victim.url, c._encode(k)) or (b"",))[0][8:] == f"v0:{k}".encode()]
        assert old
    time.sleep(0.35)  # the dead_timeout window passes: the next call probes and delivers
    check("back")
    assert stale == []
    assert c.servers[victim_name].pending_hints == 0
    # the stand-ins' copies are gone: with 4 servers and 3 replicas, the one server off a
    # key's preference list holds nothing for it
    for k in on_victim:
        (spare,) = set(names) - set(c.preference_list(k))
        assert _record(c, spare, k) is None, k


def _raw_get(kind: str, url: str, key: bytes) -> tuple[bytes, int] | None:
    """``(payload, flags)`` the server at ``url`` holds for ``key``, read without the
    client (which would deliver its hints first)."""
    if kind == "memcached":
        host, port = url.split("//")[1].split(":")
        with socket_to(host, int(port)) as s:
            s.sendall(b"get " + key + b"\r\n")
            reply = read_until(s, b"END\r\n")
        if not reply.startswith(b"VALUE "):
            return None
        head, rest = reply.split(b"\r\n", 1)
        _, _, flags, size = head.split()
        return rest[:int(size)], int(flags)
    r = redis.Redis.from_url(url)
    try:
        data = r.get(key)
    finally:
        r.close()
    return None if data is None else (data[1:], data[0])


class Switchable:
    """An in-process server that can be switched off; it keeps its own hints."""

    def __init__(self, name: str) -> None:
        self.backend = MemoryBackend(name=name)
        self.name = name
        self.down = False
        self.hints: set[bytes] = set()
        self.cleanup: list[tuple[Any, bytes]] = []

    def add_hints(self, keys: Any, cleanup: list[tuple[Any, bytes]] | None = None) -> None:
        self.hints.update(keys)
        self.cleanup += cleanup or []

    def __getattr__(self, attr: str) -> Any:
        method = getattr(self.backend, attr)
        if not callable(method):
            return method

        def call(*args: Any) -> Any:
            if self.down:
                raise ServerUnavailable(self.name, f"{self.name} is switched off")
            if self.hints or self.cleanup:
                self.backend.delete_many(list(self.hints))
                for other, k in self.cleanup:
                    other.delete(k)
                self.hints, self.cleanup = set(), []
            return method(*args)
        return call


def test_in_process_servers_as_replicas_with_hinted_handoff(
        cleanup: contextlib.ExitStack) -> None:
    servers = [Switchable(f"s{i}") for i in range(4)]
    c = _client(servers, cleanup)
    keys = [f"k{i}" for i in range(60)]
    c.set_many({k: 0 for k in keys})
    for k in keys:  # on exactly its three replicas
        assert {s.name for s in servers if s.backend.get(c._encode(k))} == \
            set(c.preference_list(k))
    servers[1].down = True
    for k in keys[::2]:
        assert c.set(k, 1)
    assert c.delete_many(keys[1::4]) == len(keys[1::4])
    expected = {k: 1 if i % 2 == 0 else (None if i % 4 == 1 else 0) for i, k in enumerate(keys)}
    assert c.get_many(keys) == {k: v for k, v in expected.items() if v is not None}
    assert servers[1].hints and c.replication_stats()["hinted_writes"] > 0
    servers[1].down = False
    assert all(c.get(k) == expected[k] for k in keys)
    assert not servers[1].hints and not servers[1].cleanup
    for k in keys:
        (spare,) = {s.name for s in servers} - set(c.preference_list(k))
        assert c.servers[spare].get(c._encode(k)) is None


# --- threads and fork --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memcached", "redis"])
def test_threads_share_one_replicated_client(kind: str, memcached_urls: list[str],
                                             redis_urls: list[str],
                                             cleanup: contextlib.ExitStack) -> None:
    c = _client(memcached_urls if kind == "memcached" else redis_urls, cleanup)
    errors: list[str] = []

    def work(t: int) -> None:
        for i in range(60):
            key = f"th{t}:{i}"
            c.set(key, [t, i])
            if c.get(key) != [t, i]:
                errors.append(key)
            c.set("shared", [t, i])  # everyone writes it: some newest version wins
            if i % 20 == 0:
                batch = {f"th{t}:b{i}:{j}": t * 1000 + j for j in range(20)}
                c.set_many(batch)
                if c.get_many(batch) != batch:
                    errors.append(f"batch {t} {i}")
                c.delete_many(batch)
                if c.get_many(batch):
                    errors.append(f"deleted batch {t} {i}")

    run_threads(work, 8)
    assert errors == []
    final = c.get("shared")
    assert {_record(c, n, "shared") for n in c.preference_list("shared")} == \
        {_record(c, c.server_for("shared"), "shared")} and final[1] == 59


@FORK_WITH_THREADS
@pytest.mark.parametrize("kind", ["memcached", "redis"])
def test_fork_child_has_its_own_connections_and_version_worker(
        kind: str, memcached_urls: list[str], redis_urls: list[str],
        cleanup: contextlib.ExitStack) -> None:
    c = _client(memcached_urls if kind == "memcached" else redis_urls, cleanup)
    c.set_many({f"warm{i}": i for i in range(30)})  # connections open, a version minted
    parent_worker = c.versions.worker
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.alarm(30)
            bad = 0
            versions = []
            for i in range(100):
                c.set(f"child{i}", f"c{i}")
                bad += c.get(f"child{i}") != f"c{i}"
                versions.append(_record(c, c.server_for(f"child{i}"), f"child{i}").version)
            c.set_many({f"cb{j}": j for j in range(30)})
            bad += c.get_many([f"cb{j}" for j in range(30)]) != {f"cb{j}": j for j in range(30)}
            os.write(write_fd, json.dumps([bad, c.versions.worker, versions]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    bad = 0
    versions = []
    for i in range(100):
        c.set(f"parent{i}", f"p{i}")
        bad += c.get(f"parent{i}") != f"p{i}"
        versions.append(_record(c, c.server_for(f"parent{i}"), f"parent{i}").version)
    _, status = os.waitpid(pid, 0)
    data = b""
    while chunk := os.read(read_fd, 65536):
        data += chunk
    os.close(read_fd)
    assert os.waitstatus_to_exitcode(status) == 0
    child_bad, child_worker, child_versions = json.loads(data)
    assert bad == 0 and child_bad == 0
    assert child_worker != parent_worker and c.versions.worker == parent_worker
    assert {c.versions.decode(v).worker for v in child_versions} == {child_worker}
    assert not set(child_versions) & set(versions)

