"""Range IDs: stores (SQLite file, a redis-server of our own, PostgreSQL), prefetch,
adaptive blocks, threads, spawned and forked processes, crashes and store outages."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from conftest import run_threads
from servers import RedisServer

import idgen
from idgen import (
    MAX_LOOKAHEAD,
    ConfigError,
    GeneratorDisabled,
    IdGenError,
    IdSpaceExhausted,
    RangeBlock,
    RangeExhausted,
    RangeGenerator,
    RedisStore,
    SQLAlchemyStore,
    SQLiteStore,
    StoreError,
)

PG_URL = os.environ.get("SHARDKIT_TEST_PG_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
FORK_WITH_THREADS = pytest.mark.filterwarnings(  # Python >= 3.12 warns; we test exactly that
    "ignore:This process .* is multi-threaded:DeprecationWarning")


# --- helpers --------------------------------------------------------------------------------


class MemoryStore:
    """In-process store that records every call (and can be told to fail)."""

    def __init__(self, first: int = 1) -> None:
        self.next = first
        self.lock = threading.Lock()
        self.calls: list[tuple[int, int, str]] = []  # (start, end, thread name)
        self.failing = False

    def allocate(self, name: str, size: int) -> tuple[int, int]:
        with self.lock:
            if self.failing:
                raise RuntimeError("store is down")
            start = self.next
            self.next += size
            self.calls.append((start, self.next, threading.current_thread().name))
            return start, self.next

    def close(self) -> None:
        pass

    def inside_blocks(self, ids: list[int]) -> bool:
        blocks = sorted((s, e) for s, e, _ in self.calls)
        starts = [s for s, _ in blocks]
        import bisect

        for i in ids:
            k = bisect.bisect_right(starts, i) - 1
            if k < 0 or not blocks[k][0] <= i < blocks[k][1]:
                return False
        return True


class CountingStore:
    """Wraps a real store; records the thread of every allocation."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.threads: list[str] = []

    def allocate(self, name: str, size: int) -> tuple[int, int]:
        self.threads.append(threading.current_thread().name)
        result: tuple[int, int] = self.inner.allocate(name, size)
        return result

    def close(self) -> None:
        self.inner.close()


def _make_store(spec: tuple[str, ...]) -> Any:
    kind = spec[0]
    if kind == "sqlite":
        return SQLiteStore(spec[1])
    if kind == "redis":
        return RedisStore(spec[1])
    return SQLAlchemyStore(spec[1], table=spec[2])


def _mint(spec: tuple[str, ...], count: int, queue: Any) -> None:
    """A spawned process: lease blocks from the store and send the IDs back."""
    with RangeGenerator(_make_store(spec), "seq", block_size=700) as gen:
        ids = [gen.next_id() for _ in range(count // 2)]
        while len(ids) < count:
            ids += gen.next_ids(min(333, count - len(ids)))
    queue.put(ids)


def _across_spawned_processes(spec: tuple[str, ...], count: int = 15_000,
                              parent: RangeGenerator | None = None) -> list[int]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_mint, args=(spec, count, queue)) for _ in range(3)]
    for p in procs:
        p.start()
    mine = [parent.next_id() for _ in range(count)] if parent is not None else []
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    ids = mine + [i for batch in results for i in batch]
    assert len(ids) == count * (3 + (parent is not None))
    return ids


def _in_threads(gen: RangeGenerator, threads: int = 8, per_thread: int = 4000) -> list[int]:
    results: list[list[int]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def work(k: int) -> None:
        try:
            barrier.wait()
            out = results[k]
            for j in range(per_thread):
                if j % 50 == 0:
                    out += gen.next_ids(j % 7)
                else:
                    out.append(gen.next_id())
        except BaseException as exc:  # reported below
            errors.append(exc)

    run_threads(work, threads)
    assert not errors, errors
    return [i for out in results for i in out]


def _assert_unique(ids: list[int]) -> None:
    dups = len(ids) - len(set(ids))
    assert dups == 0, f"{dups} duplicate IDs"
    assert all(i >= 1 for i in ids)


def _fork_and_mint(gen: RangeGenerator, count: int) -> tuple[list[int], dict[str, Any]]:
    """Fork; the child and the parent each take ``count`` IDs from ``gen``."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        signal.alarm(30)  # a hang fails the test instead of stalling it
        code = 0
        try:
            ids = [gen.next_id() for _ in range(count // 2)]
            ids += gen.next_ids(count - len(ids))
            block = gen.current_block
            payload = {"ids": ids, "block": [block.start, block.end] if block else None}
            data = json.dumps(payload).encode()
            while data:
                data = data[os.write(write_fd, data):]
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    parent_ids = [gen.next_id() for _ in range(count)]
    chunks = []
    while chunk := os.read(read_fd, 1 << 20):
        chunks.append(chunk)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return parent_ids, json.loads(b"".join(chunks))


# --- servers ----------------------------------------------------------------------------------


@pytest.fixture()
def pg_table() -> Iterator[tuple[str, str]]:
    """``(url, table)``: a table name unique to this test, dropped at the end."""
    table = f"shardkit_id_ranges_t{os.getpid()}_{uuid.uuid4().hex[:8]}"
    yield PG_URL, table
    engine = sa.create_engine(PG_URL)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))
    finally:
        engine.dispose()


# --- options and errors -----------------------------------------------------------------------


def test_bad_options_raise_config_error_naming_the_value() -> None:
    store = MemoryStore()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"block_size": 0}, r"block_size must be an int in \[1, 4294967296\], got 0"),
        ({"block_size": 2.5}, "block_size must be an int .* got 2.5"),
        ({"block_size": True}, "block_size must be an int .* got True"),
        ({"block_size": 1 << 33}, "block_size must be an int .* got 8589934592"),
        ({"prefetch_at": 1.5}, r"prefetch_at must be a number in \[0, 1\] .* got 1.5"),
        ({"prefetch_at": -0.1}, r"prefetch_at must be a number in \[0, 1\] .* got -0.1"),
        ({"prefetch_at": "10%"}, "prefetch_at must be a number .* got '10%'"),
        ({"adaptive": True, "block_size": 500, "max_block_size": 100},
         r"max_block_size must be an int in \[500, 4294967296\] \(from block_size to 2\*\*32\)"
         ", got 100"),
        ({"adaptive": 1}, "adaptive must be a bool, got 1"),
        ({"name": ""}, "name must be a non-empty str"),
        ({"lookahead": 0}, r"lookahead must be an int in \[1, 256\] or None \(automatic\), got 0"),
        ({"lookahead": 257}, r"lookahead must be an int in \[1, 256\] .* got 257"),
        ({"lookahead": True}, "lookahead must be an int .* got True"),
        ({"lookahead": "4"}, "lookahead must be an int .* got '4'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ConfigError, match=message):
            RangeGenerator(store, **kwargs)
    with pytest.raises(ConfigError, match=r"store must be a RangeStore .* got str"):
        RangeGenerator("redis://localhost")  # type: ignore[arg-type]
    assert issubclass(ConfigError, ValueError)
    assert issubclass(StoreError, IdGenError) and issubclass(StoreError, ConnectionError)
    # not adaptive: max_block_size is not used, so a larger block_size is fine
    assert RangeGenerator(store, block_size=5_000_000).block_size == 5_000_000


def test_store_bad_arguments(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db")
    with pytest.raises(ConfigError, match=r"size must be an int in \[1, 2\*\*40\], got 0"):
        store.allocate("a", 0)
    with pytest.raises(ConfigError, match="name must be a non-empty str"):
        store.allocate("", 5)
    with pytest.raises(ConfigError, match="table must be an SQL identifier"):
        SQLiteStore(tmp_path / "r.db", table="x; DROP TABLE y")
    with pytest.raises(ConfigError, match="timeout must be a number of seconds >= 0"):
        SQLiteStore(tmp_path / "r.db", timeout=-1)
    with pytest.raises(ConfigError, match=r"first must be an int in \[0, 2\*\*62\)"):
        SQLiteStore(tmp_path / "r.db", first=-1)
    with pytest.raises(ConfigError, match="url_or_client must be a redis:// URL"):
        RedisStore(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="url_or_engine must be a database URL"):
        SQLAlchemyStore(42)  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="cannot open the SQLite range store"):
        SQLiteStore(tmp_path / "r.db" / "not-a-dir.db")
    store.close()
    with pytest.raises(StoreError, match="is closed"):
        store.allocate("a", 1)


def test_range_exhausted_never_reaches_the_caller() -> None:
    for block_size in (1, 2, 3, 17):
        for prefetch_at in (0.0, 0.1, 0.5, 1.0):
            store = MemoryStore()
            with RangeGenerator(store, block_size=block_size, prefetch_at=prefetch_at) as gen:
                ids: list[int] = []
                for k in range(300):
                    ids.append(gen.next_id())
                    ids += gen.next_ids(k % (2 * block_size + 3))
                _assert_unique(ids)
                assert store.inside_blocks(ids)
    # with threads racing over tiny blocks
    store = MemoryStore()
    with RangeGenerator(store, block_size=3, prefetch_at=0.5) as gen:
        ids = _in_threads(gen, threads=6, per_thread=1500)
    _assert_unique(ids)
    assert store.inside_blocks(ids)
    assert not issubclass(StoreError, RangeExhausted)


def test_blocks_prefetch_and_current_block() -> None:
    store = MemoryStore()
    gen = RangeGenerator(store, block_size=100, prefetch_at=0.25, lookahead=1)
    assert gen.current_block is None
    assert gen.next_id() == 1
    block = gen.current_block
    assert block == RangeBlock("default", 1, 101, 2)
    assert block.size == 100 and block.remaining == 99 and 50 in block and 101 not in block
    assert [gen.next_id() for _ in range(99)] == list(range(2, 101))
    assert gen.current_block == RangeBlock("default", 1, 101, 101)
    assert gen.next_id() == 101  # the prefetched block
    assert [t for _, _, t in store.calls] == [threading.current_thread().name,
                                             "idgen-range-prefetch-default"]
    assert gen.stats()["sync_fetches"] == 1 and gen.stats()["prefetched"] == 1
    # a batch larger than a block leases a block of its own
    big = gen.next_ids(250)
    _assert_unique(big)
    assert big[:99] == list(range(102, 201))  # the rest of the block first
    assert store.calls[-1][1] - store.calls[-1][0] == 151
    gen.close()
    with pytest.raises(GeneratorDisabled, match="closed"):
        gen.next_id()
    with pytest.raises(GeneratorDisabled, match="closed"):
        gen.next_ids(3)
    gen.close()  # idempotent


def test_prefetch_failures_surface_only_when_an_id_is_needed() -> None:
    store = MemoryStore()
    gen = RangeGenerator(store, block_size=50, prefetch_at=0.5)
    first = gen.next_id()
    store.failing = True  # the prefetch (at 25 IDs left) fails and is retried
    rest = [gen.next_id() for _ in range(49)]  # the leased block is still served
    assert rest == list(range(first + 1, first + 50))
    with pytest.raises(StoreError, match="store is down") as info:
        gen.next_id()
    assert isinstance(info.value.__cause__, RuntimeError)
    assert isinstance(info.value, ConnectionError)
    store.failing = False  # the store is back: the next call leases a block
    after = [gen.next_id() for _ in range(200)]
    _assert_unique([first, *rest, *after])
    assert gen.stats()["store_failures"] >= 1
    gen.close()


def test_a_store_returning_a_bad_block_is_refused() -> None:
    class Liar(MemoryStore):
        def allocate(self, name: str, size: int) -> tuple[int, int]:
            return 5, 5 + size - 1

    with pytest.raises(StoreError, match=r"returned \(5, 14\), not a block of 10 IDs"):
        RangeGenerator(Liar(), block_size=10).next_id()


def test_adaptive_block_size_doubles_then_halves(monkeypatch: pytest.MonkeyPatch) -> None:
    from idgen import _ranges

    now = [0.0]
    monkeypatch.setattr(_ranges, "_monotonic", lambda: now[0])
    store = MemoryStore()
    gen = RangeGenerator(store, block_size=10, adaptive=True, max_block_size=80,
                         lookahead=1)
    ids: list[int] = []
    for _ in range(2000):  # each block lasts 1 s of the fake clock: < 15 s, so doubles
        ids.append(gen.next_id())
        if gen.current_block is not None and gen.current_block.remaining == 0:
            now[0] += 1.0
    sizes = [e - s for s, e, _ in store.calls]
    assert sizes[:6] == [10, 10, 20, 40, 80, 80] and max(sizes) == 80
    assert gen.block_size == 80
    for _ in range(1000):  # now each block lasts 1000 s (> 600 s): halves, down to 10
        ids.append(gen.next_id())
        if gen.current_block is not None and gen.current_block.remaining == 0:
            now[0] += 1000.0
    assert gen.block_size == 10
    sizes = [e - s for s, e, _ in store.calls]
    assert sizes[-3:] == [10, 10, 10] and 40 in sizes[6:]
    _assert_unique(ids)
    assert store.inside_blocks(ids)
    gen.close()
    # not adaptive: always the configured size
    store = MemoryStore()
    with RangeGenerator(store, block_size=10, lookahead=1) as gen:
        for _ in range(95):
            gen.next_id()
    assert {e - s for s, e, _ in store.calls} == {10}


class SlowStore(MemoryStore):
    """A store with a round trip of ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def allocate(self, name: str, size: int) -> tuple[int, int]:
        time.sleep(self.delay)
        return super().allocate(name, size)


def test_auto_lookahead_keeps_a_fast_caller_off_a_slow_store() -> None:
    # 5 ms per store call, blocks of 1,000 used up in well under 1 ms: one block ready
    # (a plain double buffer) would make about every block switch wait for the store.
    store = SlowStore(0.005)
    with RangeGenerator(store, block_size=1000) as gen:
        ids = [gen.next_id() for _ in range(600_000)]
        stats = gen.stats()
    assert ids == list(range(1, 600_001))  # one process: consecutive blocks, in order
    assert store.inside_blocks(ids)
    assert stats["blocks"] >= 600 and stats["sync_fetches"] == 1
    # several blocks per store call, so few calls and almost no waits
    assert stats["prefetched"] >= 599 and stats["prefetch_calls"] * 10 <= stats["prefetched"]
    assert stats["waits"] <= 10, stats
    assert stats["lookahead"] > 1
    assert max(e - s for s, e, _ in store.calls) % 1000 == 0  # whole blocks
    assert max(e - s for s, e, _ in store.calls) <= MAX_LOOKAHEAD * 1000


def test_auto_lookahead_stays_one_block_for_a_slow_caller() -> None:
    store = MemoryStore()
    with RangeGenerator(store, block_size=10) as gen:
        for _ in range(60):  # 10 IDs take ~50 ms: far more than a fetch
            gen.next_id()
            time.sleep(0.005)
        stats = gen.stats()
    assert stats["lookahead"] == 1
    assert {e - s for s, e, _ in store.calls} == {10}


def test_fixed_lookahead_holds_that_many_blocks_ready() -> None:
    store = SlowStore(0.002)
    with RangeGenerator(store, block_size=10, lookahead=3) as gen:
        ids = gen.next_ids(5)
        runs = set()
        for _ in range(3000):
            ids.append(gen.next_id())
            block = gen.current_block
            assert block is not None and ids[-1] in block
            runs.add(block.size)
        assert gen.stats()["lookahead"] == 3
    assert runs <= {10, 20} and 20 in runs  # two contiguous ready blocks issued as one run
    _assert_unique(ids)
    assert store.inside_blocks(ids)
    sizes = [e - s for s, e, _ in store.calls]
    assert sizes[0] == 10 and set(sizes) <= {10, 20, 30} and 30 in sizes


def test_default_store_is_a_sqlite_file_in_the_lease_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARDKIT_IDGEN_DIR", str(tmp_path / "leases"))
    with RangeGenerator() as gen:
        assert gen.next_id() == 1
        store = gen.store
        assert isinstance(store, SQLiteStore)
        assert store.path == str(tmp_path / "leases" / "ranges.sqlite3")
    with pytest.raises(StoreError, match="closed"):  # the generator closed its own store
        store.allocate("default", 1)
    with RangeGenerator() as gen:  # a new process would continue after the used block
        assert gen.next_id() == 1001
    assert "RangeGenerator(SQLiteStore(" in repr(gen)
    assert "RangeGenerator" in idgen.__all__ and "StoreError" in idgen.__all__


# --- SQLite -----------------------------------------------------------------------------------


def test_sqlite_store_blocks(tmp_path: Path) -> None:
    path = tmp_path / "ranges.db"
    store = SQLiteStore(path)
    assert store.allocate("a", 10) == (1, 11)
    assert store.allocate("a", 5) == (11, 16)
    assert store.allocate("b", 3) == (1, 4)
    store.close()
    store = SQLiteStore(path, first=1000)  # continues; `first` only starts new sequences
    assert store.allocate("a", 1) == (16, 17)
    assert store.allocate("c", 2) == (1000, 1002)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.execute("UPDATE shardkit_id_ranges SET next = ? WHERE name = 'c'",
                     ((1 << 63) - 10,))
    with pytest.raises(IdSpaceExhausted, match="cannot hand out 100 more IDs"):
        store.allocate("c", 100)
    assert store.allocate("c", 9) == ((1 << 63) - 10, (1 << 63) - 1)
    store.close()


@pytest.mark.slow
def test_sqlite_unique_across_spawned_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "ranges.db")
    with RangeGenerator(SQLiteStore(path), "seq", block_size=500) as parent:
        ids = _across_spawned_processes(("sqlite", path), parent=parent)
    _assert_unique(ids)


@FORK_WITH_THREADS
def test_sqlite_fork_child_leases_its_own_block(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "ranges.db")
    gen = RangeGenerator(store, block_size=1000, prefetch_at=0.5)
    before = [gen.next_id() for _ in range(700)]  # a prefetch is under way or done
    inherited = gen.current_block
    assert inherited is not None
    parent_ids, child = _fork_and_mint(gen, 20_000)
    assert child["block"][0] >= inherited.end  # never the parent's block
    everything = before + parent_ids + child["ids"]
    _assert_unique(everything)
    assert len(everything) == 40_700
    gen.close()
    store.close()


@FORK_WITH_THREADS
def test_sqlite_fork_while_another_thread_is_in_a_transaction(tmp_path: Path) -> None:
    # A child must not inherit a connection in the middle of a write transaction:
    # SQLite would see the file locked by the child itself and wait out the timeout.
    store = SQLiteStore(tmp_path / "ranges.db", timeout=3.0)
    stop = threading.Event()
    parent_blocks: list[tuple[int, int]] = []

    def hammer() -> None:
        while not stop.is_set():  # a transaction open most of the time, with gaps
            parent_blocks.append(store.allocate("seq", 10))
            time.sleep(0.001)

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        child_blocks = []
        for _ in range(20):
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    start, end = store.allocate("seq", 10)
                    os.write(write_fd, f"{start} {end}".encode())
                    code = 0
                except BaseException as exc:
                    os.write(write_fd, repr(exc).encode())
                finally:
                    os._exit(code)
            os.close(write_fd)
            _, status = os.waitpid(pid, 0)
            answer = os.read(read_fd, 4096).decode()
            os.close(read_fd)
            assert os.waitstatus_to_exitcode(status) == 0, answer
            start, end = map(int, answer.split())
            child_blocks.append((start, end))
    finally:
        stop.set()
        thread.join()
    blocks = sorted(parent_blocks + child_blocks)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(blocks))  # disjoint
    store.close()


_KILLED_CHILD = """
import sys, time
from idgen import RangeGenerator, SQLiteStore
gen = RangeGenerator(SQLiteStore(sys.argv[1]), "seq", block_size=1000)
ids = [gen.next_id() for _ in range(1500)]  # halfway through the second block
print(" ".join(map(str, ids)), flush=True)
time.sleep(60)
"""


def test_sqlite_process_killed_mid_block_never_reused(tmp_path: Path) -> None:
    path = str(tmp_path / "ranges.db")
    child = subprocess.Popen([sys.executable, "-c", _KILLED_CHILD, path],
                             stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    killed_ids = [int(x) for x in line.split()]
    assert len(killed_ids) == 1500
    with RangeGenerator(SQLiteStore(path), "seq", block_size=1000) as gen:
        new_ids = gen.next_ids(3000)
    assert not set(killed_ids) & set(new_ids)
    assert min(new_ids) > max(killed_ids)  # a gap (the rest of the killed blocks) is fine


def test_sqlite_threads_share_one_generator(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "ranges.db")
    with RangeGenerator(store, block_size=64, prefetch_at=0.5) as gen:
        ids = _in_threads(gen)
    _assert_unique(ids)
    # and threads sharing the store directly
    blocks: list[tuple[int, int]] = []

    def grab() -> None:
        for _ in range(40):
            blocks.append(store.allocate("direct", 7))

    pool = [threading.Thread(target=grab) for _ in range(8)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    covered = [i for s, e in blocks for i in range(s, e)]
    assert sorted(covered) == list(range(1, 8 * 40 * 7 + 1))
    store.close()


# --- Redis ------------------------------------------------------------------------------------


def test_redis_store_blocks(redis_url: str) -> None:
    store = RedisStore(redis_url)
    assert store.allocate("a", 10) == (1, 11)
    assert store.allocate("a", 5) == (11, 16)
    client = redis.Redis.from_url(redis_url)
    assert client.get("shardkit:idgen:a") == b"15"  # the last ID handed out
    other = RedisStore(client, prefix="p:", first=100)
    assert other.allocate("a", 2) == (100, 102)
    assert other.allocate("a", 2) == (102, 104)
    client.set("p:z", (1 << 63) - 5)
    with pytest.raises(IdSpaceExhausted):
        other.allocate("z", 10)
    other.close()  # a client passed in stays open
    assert client.ping()
    client.close()
    store.close()


@pytest.mark.slow
def test_redis_unique_across_spawned_processes(redis_url: str) -> None:
    with RangeGenerator(RedisStore(redis_url), "seq", block_size=500) as parent:
        ids = _across_spawned_processes(("redis", redis_url), parent=parent)
    _assert_unique(ids)


@FORK_WITH_THREADS
def test_redis_fork_child_reconnects_and_leases_its_own_block(redis_url: str) -> None:
    store = RedisStore(redis_url)
    gen = RangeGenerator(store, block_size=1000)
    before = gen.next_ids(950)
    parent_ids, child = _fork_and_mint(gen, 10_000)
    _assert_unique(before + parent_ids + child["ids"])
    gen.close()
    store.close()


def test_redis_prefetch_keeps_the_store_off_the_callers_thread(redis_url: str) -> None:
    store = CountingStore(RedisStore(redis_url))
    gen = RangeGenerator(store, "pf", block_size=1000)
    ids = [gen.next_id() for _ in range(5000)]  # warm-up: the first block is leased here
    assert store.threads[0] == threading.current_thread().name
    warm = len(store.threads)
    ids += [gen.next_id() for _ in range(30_000)]
    ids += gen.next_ids(900)
    assert len(store.threads) >= warm
    assert set(store.threads[1:]) == {"idgen-range-prefetch-pf"}  # never the caller
    stats = gen.stats()
    assert stats["sync_fetches"] == 1 and stats["blocks"] >= 35
    assert stats["prefetched"] >= 34 and len(store.threads) >= 1 + stats["prefetch_calls"]
    _assert_unique(ids)
    gen.close()
    store.close()


def test_redis_killed_raises_store_error_then_resumes(tmp_path: Path) -> None:
    # Range IDs need a Redis that keeps its data: this server persists every write.
    server = RedisServer(tmp_path, "--save", "", "--appendonly", "yes",
                         "--appendfsync", "always")
    try:
        gen = RangeGenerator(RedisStore(server.url, timeout=1.0), "outage", block_size=100,
                             lookahead=1)
        ids = [gen.next_id() for _ in range(250)]
        server.kill()
        raised = None
        for _ in range(1000):  # what is left of this block (and a prefetched one)
            try:
                ids.append(gen.next_id())
            except StoreError as exc:
                raised = exc
                break
        assert raised is not None, "no StoreError although the server is gone"
        assert isinstance(raised.__cause__, (redis.RedisError, StoreError))
        with pytest.raises(StoreError):  # still down: each call tries once, fails fast
            gen.next_id()
        server.start()  # same port, same append-only file
        ids += [gen.next_id() for _ in range(1000)]
        ids += gen.next_ids(500)
        _assert_unique(ids)
        gen.close()
    finally:
        server.stop()


# --- PostgreSQL (SQLAlchemy) ------------------------------------------------------------------


def test_sqlalchemy_store_blocks_on_postgres(pg_table: tuple[str, str]) -> None:
    url, table = pg_table
    store = SQLAlchemyStore(url, table=table)
    assert store.allocate("a", 10) == (1, 11)
    assert store.allocate("a", 5) == (11, 16)
    again = SQLAlchemyStore(store.engine, table=table, first=50)  # table exists already
    assert again.allocate("b", 2) == (50, 52)
    again._use_returning = False  # the SELECT ... FOR UPDATE path (MySQL)
    assert again.allocate("a", 4) == (16, 20)
    assert again.allocate("new", 4) == (50, 54)
    with store.engine.begin() as conn:
        conn.execute(sa.text(f'UPDATE "{table}" SET next = :v WHERE name = \'b\''),
                     {"v": (1 << 63) - 3})
    for s in (store, again):
        with pytest.raises(IdSpaceExhausted):
            s.allocate("b", 5)
    again.close()  # an engine passed in stays usable
    assert store.allocate("a", 1) == (20, 21)
    store.close()


def _allocate_in_threads(make: Callable[[], Any], threads: int = 8,
                         each: int = 25) -> list[tuple[int, int]]:
    blocks: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def grab() -> None:
        try:
            store = make()
            for _ in range(each):
                blocks.append(store.allocate("race", 3))
        except BaseException as exc:  # reported below
            errors.append(exc)

    pool = [threading.Thread(target=grab) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors, errors
    return blocks


def test_sqlalchemy_concurrent_first_allocations(pg_table: tuple[str, str]) -> None:
    url, table = pg_table
    engine = sa.create_engine(url, pool_size=10)
    SQLAlchemyStore(engine, table=table)  # creates the table

    def with_returning() -> SQLAlchemyStore:
        return SQLAlchemyStore(engine, table=table)

    def with_lock() -> SQLAlchemyStore:
        store = SQLAlchemyStore(engine, table=table)
        store._use_returning = False
        return store

    blocks = _allocate_in_threads(with_returning) + _allocate_in_threads(with_lock)
    covered = sorted(i for s, e in blocks for i in range(s, e))
    assert covered == list(range(1, 2 * 8 * 25 * 3 + 1))  # no overlap, no loss
    engine.dispose()


@pytest.mark.slow
def test_postgres_unique_across_processes_and_threads(pg_table: tuple[str, str]) -> None:
    url, table = pg_table
    store = SQLAlchemyStore(url, table=table)
    with RangeGenerator(store, "seq", block_size=300) as gen:
        threaded = _in_threads(gen, per_thread=2000)
        ids = _across_spawned_processes(("sqlalchemy", url, table), parent=gen)
    _assert_unique(threaded + ids)
    store.close()


@FORK_WITH_THREADS
def test_postgres_fork_child_leases_its_own_block(pg_table: tuple[str, str]) -> None:
    url, table = pg_table
    store = SQLAlchemyStore(url, table=table)
    gen = RangeGenerator(store, block_size=1000)
    before = gen.next_ids(990)
    parent_ids, child = _fork_and_mint(gen, 5000)
    _assert_unique(before + parent_ids + child["ids"])
    gen.close()
    store.close()
