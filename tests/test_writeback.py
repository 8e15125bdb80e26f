"""WriteBackQueue: coalescing, batches, read-your-writes, failures, back-pressure, close,
threads, fork, and the journal (replay after SIGKILL, torn and corrupt files, locking).

Two stores of our own with the Store protocol: ``MemStore`` (a dict that can fail or
hang on demand) and ``SQLiteFileStore`` (a real SQLite file, for checks across
processes). This module is also imported by the child processes of the crash tests,
so it has no side effects at import.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cachelib import CacheError, ConfigError, KeyTypeError, Serializer, ValueTypeError
from cachelib._writeback import (
    NOT_PENDING,
    TOMBSTONE,
    JournalCorruptError,
    JournalLockedError,
    QueueClosedError,
    QueueFullError,
    WriteBackQueue,
)

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
_ABSENT = object()


@dataclass
class Point:
    x: int


class FakeStoreError(Exception):
    """What MemStore raises when told to fail."""


class MemStore:
    """A dict with the Store protocol that can fail or hang on demand."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.calls: list[tuple[str, int]] = []  # ("put_many" | "delete_many" | ..., n)
        self.fail = False
        self.fail_until = 0.0  # monotonic time until which every call fails
        self.gate = threading.Event()  # cleared: calls wait here (a hung store)
        self.gate.set()
        self.waiting = threading.Event()  # a call is waiting at the gate

    def _enter(self, what: str, n: int) -> None:
        if not self.gate.is_set():
            self.waiting.set()
            self.gate.wait()
        if self.fail or time.monotonic() < self.fail_until:
            with self.lock:
                self.calls.append((what + ":failed", n))
            raise FakeStoreError(f"{what} failed on purpose")

    def get(self, key: str) -> Any:
        with self.lock:
            return self.data.get(key, _ABSENT)

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        with self.lock:
            return {k: self.data[k] for k in keys if k in self.data}

    def put(self, key: str, value: Any) -> None:
        self._enter("put", 1)
        with self.lock:
            self.calls.append(("put", 1))
            self.data[key] = value

    def put_many(self, items: Mapping[str, Any]) -> None:
        self._enter("put_many", len(items))
        with self.lock:
            self.calls.append(("put_many", len(items)))
            self.data.update(items)

    def delete(self, key: str) -> bool:
        self._enter("delete", 1)
        with self.lock:
            self.calls.append(("delete", 1))
            return self.data.pop(key, _ABSENT) is not _ABSENT

    def delete_many(self, keys: Iterable[str]) -> int:
        keys = list(keys)
        self._enter("delete_many", len(keys))
        with self.lock:
            self.calls.append(("delete_many", len(keys)))
            return sum(self.data.pop(k, _ABSENT) is not _ABSENT for k in keys)

    def close(self) -> None:
        pass

    def rows(self, what: str = "put_many") -> int:
        with self.lock:
            return sum(n for name, n in self.calls if name == what)

    def batches(self, what: str = "put_many") -> list[int]:
        with self.lock:
            return [n for name, n in self.calls if name == what]


class SQLiteFileStore:
    """A Store over a SQLite file (values as JSON), safe across threads and fork."""

    def __init__(self, path: str | Path, *, delay: float = 0.0, hang: bool = False) -> None:
        self.path = str(path)
        self.delay = delay
        self.hang = hang
        self.lock = threading.Lock()
        self._pid = -1
        self._conn: sqlite3.Connection | None = None
        self.conn().execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT)")

    def conn(self) -> sqlite3.Connection:
        if self._pid != os.getpid() or self._conn is None:  # never share one across fork
            self.lock = threading.Lock()
            self._conn = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._pid = os.getpid()
        return self._conn

    def _gate(self) -> None:
        if self.hang:
            threading.Event().wait()  # forever: the process is killed
        if self.delay:
            time.sleep(self.delay)

    def get(self, key: str) -> Any:
        rows = self.get_many([key])
        return rows.get(key, _ABSENT)

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        keys = list(keys)
        with self.lock:
            conn = self.conn()
            out = {}
            for k in keys:
                row = conn.execute("SELECT v FROM kv WHERE k = ?", (k,)).fetchone()
                if row is not None:
                    out[k] = json.loads(row[0])
            return out

    def all(self) -> dict[str, Any]:
        with self.lock:
            rows = self.conn().execute("SELECT k, v FROM kv").fetchall()
        return {k: json.loads(v) for k, v in rows}

    def put(self, key: str, value: Any) -> None:
        self.put_many({key: value})

    def put_many(self, items: Mapping[str, Any]) -> None:
        self._gate()
        with self.lock:
            conn = self.conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)",
                    [(k, json.dumps(v)) for k, v in items.items()],
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def delete(self, key: str) -> bool:
        return self.delete_many([key]) == 1

    def delete_many(self, keys: Iterable[str]) -> int:
        keys = list(keys)
        self._gate()
        with self.lock:
            conn = self.conn()
            conn.execute("BEGIN IMMEDIATE")
            n = sum(conn.execute("DELETE FROM kv WHERE k = ?", (k,)).rowcount for k in keys)
            conn.execute("COMMIT")
            return n

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None


@pytest.fixture()
def stores() -> Iterator[list[MemStore]]:
    """MemStores whose hung calls are released at the end of the test."""
    made: list[MemStore] = []
    yield made
    for store in made:
        store.fail = False
        store.gate.set()


@pytest.fixture()
def store(stores: list[MemStore]) -> MemStore:
    s = MemStore()
    stores.append(s)
    return s


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.002)


def small_rotation(q: WriteBackQueue, limit: int) -> None:
    """Rotate the queue's journal past ``limit`` bytes instead of 64 MiB."""
    assert q._journal is not None
    q._journal.rotate_bytes = q._journal.rotate_at = limit


def run_script(code: str, *args: str, **kw: Any) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(TESTS)]))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kw,
    )


# --- coalescing, tombstones, read-your-writes ----------------------------------------------


def test_coalescing_last_write_wins(store: MemStore) -> None:
    with WriteBackQueue(store, max_delay=0.2, batch_size=500) as q:
        for i in range(1000):
            q.put(f"k{i % 10}", i)
        assert q.flush()
        stats = q.stats()
    assert store.data == {f"k{j}": 990 + j for j in range(10)}
    assert store.rows() <= 30  # 1000 writes, far fewer rows
    assert stats["writes"] == 1000
    assert stats["coalesced"] >= 1000 - store.rows()
    assert stats["rows_written"] == store.rows()
    assert stats["pending"] == 0 and stats["loss_window_writes"] == 0


def test_deletes_are_tombstones(store: MemStore) -> None:
    store.data.update({"a": 1, "b": 2})
    with WriteBackQueue(store, max_delay=5) as q:
        q.delete("a")
        q.put("b", 3)
        q.put("c", 4)
        q.delete("c")  # the delete replaces the put
        q.put(k := "d", 5)
        q.delete(k)
        q.put(k, 6)  # and a put replaces a delete
        assert q.pending("a") is TOMBSTONE
        assert q.pending("c") is TOMBSTONE
        assert q.pending("d") == 6
        assert q.pending("zzz") is NOT_PENDING
        assert q.pending_many(["a", "b", "zzz"]) == {"a": TOMBSTONE, "b": 3}
        q.put("e", TOMBSTONE)  # putting the marker is a delete
        assert q.pending("e") is TOMBSTONE
        assert q.flush()
        assert q.stats()["deletes_written"] == 3
        assert q.pending("a") is NOT_PENDING
    assert store.data == {"b": 3, "d": 6}
    assert store.batches("delete_many") == [3]
    # puts and deletes of distinct keys: the puts first, then the deletes
    assert [name for name, _ in store.calls] == ["put_many", "delete_many"]


def test_read_your_writes_while_the_batch_is_in_flight(store: MemStore) -> None:
    store.gate.clear()
    q = WriteBackQueue(store, max_delay=0.0)
    q.put("k", "v1")
    assert store.waiting.wait(5)  # the flusher is inside put_many with k=v1
    assert q.pending("k") == "v1"  # in flight: still pending
    q.put("k", "v2")  # a newer write while the old one is being written
    q.delete("gone")
    assert q.pending("k") == "v2"
    assert q.stats()["coalesced"] == 0  # the in-flight write is not replaced
    store.gate.set()
    assert q.flush(5)
    assert q.pending("k") is NOT_PENDING
    assert store.data == {"k": "v2"}
    assert q.close() == []


def test_marker_values_and_key_types(store: MemStore) -> None:
    with WriteBackQueue(store) as q:
        with pytest.raises(KeyTypeError):
            q.put(b"bytes", 1)  # type: ignore[arg-type]
        with pytest.raises(KeyTypeError):
            q.delete(1)  # type: ignore[arg-type]
        with pytest.raises(CacheError, match="NOT_PENDING"):
            q.put("k", NOT_PENDING)
    assert repr(TOMBSTONE) == "cachelib.TOMBSTONE"


# --- batches and delays --------------------------------------------------------------------


def test_batch_size_is_honoured(store: MemStore) -> None:
    q = WriteBackQueue(store, batch_size=50, max_delay=30)
    for i in range(120):
        q.put(f"k{i}", i)
    wait_for(lambda: store.rows() >= 100)  # two full batches go at once, no delay
    time.sleep(0.1)
    assert store.batches() == [50, 50]
    assert len(q) == 20  # the incomplete batch waits for max_delay (or a flush)
    assert q.flush()
    assert store.batches() == [50, 50, 20]
    assert q.close() == []


def test_max_delay_is_honoured(store: MemStore) -> None:
    with WriteBackQueue(store, batch_size=1000, max_delay=0.15) as q:
        start = time.monotonic()
        q.put("a", 1)
        time.sleep(0.05)
        q.put("a", 2)  # coalesced: keeps the age of the first write
        q.put("b", 1)
        time.sleep(0.03)
        assert store.data == {}
        wait_for(lambda: "a" in store.data)
        elapsed = time.monotonic() - start
        assert 0.14 <= elapsed < 1.0
        assert q.stats()["oldest_pending_age_s"] < 0.15
    assert store.data == {"a": 2, "b": 1}


# --- failures ------------------------------------------------------------------------------


def test_failing_store_then_recovery_loses_nothing(store: MemStore) -> None:
    letters: list[tuple[list[tuple[str, Any]], BaseException]] = []
    store.fail_until = time.monotonic() + 0.4
    q = WriteBackQueue(
        store,
        batch_size=64,
        max_delay=0.01,
        retries=2,
        backoff=0.01,
        max_backoff=0.05,
        dead_letter=lambda items, exc: letters.append((items, exc)),
    )
    expected: dict[str, Any] = {}
    end = time.monotonic() + 0.6
    i = 0
    while time.monotonic() < end:
        key = f"k{i % 300}"
        if i % 11 == 5:
            q.delete(key)
            expected.pop(key, None)
        else:
            q.put(key, i)
            expected[key] = i
        i += 1
        if i % 50 == 0:
            time.sleep(0.001)
    assert q.close(10) == []
    stats = q.stats()
    for key in list(store.data):
        if key not in expected:  # deleted after its last put: the store never saw it
            raise AssertionError(f"{key} should have been deleted")
    assert store.data == expected  # 0 writes lost, last value won
    assert stats["failures"] > 0
    assert stats["retries"] > 0
    assert stats["dead_lettered"] == len(letters) > 0
    items, exc = letters[0]
    assert isinstance(exc, FakeStoreError)
    assert items and all(isinstance(k, str) for k, _ in items)
    assert stats["pending"] == 0 and stats["loss_window_writes"] == 0


def test_retries_back_off_exponentially(store: MemStore) -> None:
    store.fail = True
    letters: list[Any] = []
    q = WriteBackQueue(
        store, max_delay=0, retries=3, backoff=0.02, max_backoff=0.05,
        dead_letter=lambda items, exc: letters.append(items),
    )
    start = time.monotonic()
    q.put("k", 1)
    wait_for(lambda: letters)
    elapsed = time.monotonic() - start
    # waits 0.02 + 0.04 + 0.05 (capped) between the 4 attempts
    assert 0.10 <= elapsed < 1.0
    assert letters[0] == [("k", 1)]
    assert q.stats()["retries"] == 3
    assert q.pending("k") == 1  # handed back, never dropped
    store.fail = False
    assert q.close(5) == []
    assert store.data == {"k": 1}


def test_dead_letter_hook_errors_are_logged(
    store: MemStore, caplog: pytest.LogCaptureFixture
) -> None:
    def hook(items: Any, exc: BaseException) -> None:
        raise RuntimeError("hook bug")

    store.fail = True
    q = WriteBackQueue(store, max_delay=0, retries=0, backoff=0.01, dead_letter=hook)
    with caplog.at_level(logging.WARNING, logger="cachelib"):
        q.put("k", 1)
        wait_for(lambda: "hook bug" in caplog.text)
    assert "dead_letter hook raised" in caplog.text
    store.fail = False
    assert q.close(5) == []
    assert store.data == {"k": 1}


def test_dead_letter_may_discard(store: MemStore) -> None:
    store.fail = True
    q: WriteBackQueue

    def give_up(items: list[tuple[str, Any]], exc: BaseException) -> None:
        q.discard(k for k, _ in items)

    q = WriteBackQueue(store, max_delay=0, retries=0, backoff=0.01, dead_letter=give_up)
    q.put("poison", 1)
    wait_for(lambda: len(q) == 0)
    assert q.stats()["loss_window_writes"] == 0
    assert q.close(1) == []
    assert store.data == {}


def test_close_with_failing_store_returns_undrained_keys(
    store: MemStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.fail = True
    q = WriteBackQueue(store, max_delay=0.01, retries=2, backoff=0.05, max_backoff=0.2)
    for i in range(30):
        q.put(f"k{i}", i)
    time.sleep(0.05)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="cachelib"):
        left = q.close(timeout=0.5)
    elapsed = time.monotonic() - start
    assert sorted(left) == sorted(f"k{i}" for i in range(30))
    assert elapsed < 0.5 + 0.3
    assert "30 writes not in the store" in caplog.text
    assert q.close() == left  # idempotent
    with pytest.raises(QueueClosedError):
        q.put("k0", 1)


def test_close_with_hung_store_keeps_its_deadline(store: MemStore) -> None:
    store.gate.clear()
    q = WriteBackQueue(store, max_delay=0, batch_size=4)
    for i in range(10):
        q.put(f"k{i}", i)
    assert store.waiting.wait(5)
    start = time.monotonic()
    left = q.close(timeout=0.3)
    assert time.monotonic() - start < 0.6
    assert sorted(left) == sorted(f"k{i}" for i in range(10))  # in flight ones too
    store.gate.set()  # the stuck call returns; the flusher thread ends


def test_discard(store: MemStore) -> None:
    q = WriteBackQueue(store, max_delay=30)
    for i in range(5):
        q.put(f"k{i}", i)
    assert q.discard(["k1", "nope"]) == ["k1"]
    assert sorted(q.discard()) == ["k0", "k2", "k3", "k4"]
    assert len(q) == 0
    assert q.stats()["loss_window_writes"] == 0
    assert q.close() == []
    assert store.data == {}


# --- back-pressure ---------------------------------------------------------------------------


def test_block_when_full_then_queue_full_error(store: MemStore) -> None:
    store.gate.clear()
    q = WriteBackQueue(store, max_pending=5, batch_size=2, max_delay=0, block_timeout=0.2)
    for i in range(5):
        q.put(f"k{i}", i)
    q.put("k0", "again")  # a pending key has room: coalesced or queued after its flight
    start = time.monotonic()
    with pytest.raises(QueueFullError, match="5 keys pending"):
        q.put("new", 1)
    assert 0.2 <= time.monotonic() - start < 1.0
    assert q.pending("new") is NOT_PENDING

    # a blocked writer proceeds as soon as the store makes room
    done = threading.Event()

    def writer() -> None:
        q.block_timeout = 5.0
        q.put("late", 1)
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(0.1)
    assert not done.is_set()
    store.gate.set()
    t.join(5)
    assert done.is_set()
    assert q.close(5) == []
    assert store.data["late"] == 1 and store.data["k0"] == "again"


class BatchFailStore(MemStore):
    """put_many fails while ``batches_fail`` is set; single puts and deletes work."""

    batches_fail = True

    def put_many(self, items: Mapping[str, Any]) -> None:
        if self.batches_fail:
            raise FakeStoreError("batch refused")
        super().put_many(items)


def test_write_through_when_full() -> None:
    store = BatchFailStore()  # the pending keys stay pending: the queue stays full
    q = WriteBackQueue(store, max_pending=3, max_delay=30, when_full="write_through",
                       retries=0, backoff=10, max_backoff=10)
    for i in range(3):
        q.put(f"k{i}", i)
    q.put("k0", "coalesced")  # room for a pending key
    q.put("direct", 42)  # no room: written by this thread
    assert store.data == {"direct": 42}
    assert q.pending("direct") is NOT_PENDING
    q.delete("direct")
    assert store.data == {}
    store.fail = True
    with pytest.raises(FakeStoreError):  # the store's error reaches the caller
        q.put("direct2", 1)
    assert q.pending("direct2") is NOT_PENDING
    store.fail = False
    stats = q.stats()
    assert stats["write_through"] == 2 and stats["pending"] == 3
    store.batches_fail = False
    assert q.close() == []
    assert store.data == {"k0": "coalesced", "k1": 1, "k2": 2}


# --- flush, threads, fork -----------------------------------------------------------------


def test_flush(store: MemStore) -> None:
    q = WriteBackQueue(store, max_delay=30, retries=1, backoff=0.01)
    for i in range(1200):
        q.put(f"k{i}", i)
    assert q.flush()
    assert len(store.data) == 1200 and store.batches() == [500, 500, 200]
    assert q.flush()  # nothing pending
    store.fail = True
    q.put("x", 1)
    assert q.flush() is False  # one round of retries, then gives up
    start = time.monotonic()
    assert q.flush(timeout=0.2) is False  # keeps trying until the deadline
    assert time.monotonic() - start < 0.6
    store.fail = False
    assert q.flush(timeout=5)
    assert store.data["x"] == 1
    assert q.close() == []


def test_threads_write_distinct_keys(store: MemStore) -> None:
    q = WriteBackQueue(store, batch_size=100, max_delay=0.005, max_pending=1000)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        def work(n: int) -> None:
            for i in range(600):
                q.put(f"t{n}:{i}", (n, i))
                if i % 10 == 0:
                    q.put(f"t{n}:{i}", (n, i, "final"))

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert q.close(10) == []
    assert len(store.data) == 8 * 600
    for n in range(8):
        for i in range(600):
            want = (n, i, "final") if i % 10 == 0 else (n, i)
            assert store.data[f"t{n}:{i}"] == want
    assert q.stats()["writes"] == 8 * 660


def _fork() -> int:
    with warnings.catch_warnings():  # Python 3.12+: fork() of a threaded process
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


def test_fork_child_gets_an_empty_queue(tmp_path: Path) -> None:
    db = SQLiteFileStore(tmp_path / "kv.db")
    q = WriteBackQueue(db, max_delay=30)
    for i in range(20):
        q.put(f"parent{i}", i)
    r, w = os.pipe()
    pid = _fork()
    if pid == 0:  # the child: report, and never return into pytest
        code = 1
        try:
            report = {"pending": len(q), "p0": repr(q.pending("parent0"))}
            q.put("child", "c")
            report["child_pending"] = q.pending("child")
            report["left"] = q.close(5)
            os.write(w, json.dumps(report).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(r) as f:
        report = json.loads(f.read())
    assert os.waitstatus_to_exitcode(status) == 0
    assert report == {"pending": 0, "p0": "cachelib.NOT_PENDING", "child_pending": "c",
                      "left": []}
    # the child wrote its own write only, never the parent's
    assert db.all() == {"child": "c"}
    assert len(q) == 20 and q.pending("parent0") == 0
    assert q.close() == []
    assert db.all() == {"child": "c", **{f"parent{i}": i for i in range(20)}}


def test_fork_child_cannot_use_the_parents_journal(tmp_path: Path, store: MemStore) -> None:
    q = WriteBackQueue(store, journal=tmp_path / "j", max_delay=30)
    q.put("p", 1)
    r, w = os.pipe()
    pid = _fork()
    if pid == 0:
        code = 1
        try:
            try:
                q.put("c", 1)
                out = "accepted"
            except QueueClosedError as exc:
                out = str(exc)
            os.write(w, out.encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r) as f:
        out = f.read()
    assert "fork" in out and "own journal" in out
    with pytest.raises(JournalLockedError):  # the parent still holds the lock
        WriteBackQueue(MemStore(), journal=tmp_path / "j")
    assert q.close() == []
    assert store.data == {"p": 1}


# --- loss window and the journal ---------------------------------------------------------


def test_loss_window_without_journal(store: MemStore) -> None:
    store.gate.clear()
    q = WriteBackQueue(store, max_delay=0)
    for i in range(100):
        q.put(f"k{i % 10}", i)
    assert q.stats()["loss_window_writes"] == 100  # what a crash would lose now
    store.gate.set()
    assert q.flush(5)
    assert q.stats()["loss_window_writes"] == 0
    q.close()


@pytest.mark.parametrize("fsync", ["always", "interval", "never"])
def test_journal_replays_after_close_with_failing_store(
    tmp_path: Path, store: MemStore, fsync: str
) -> None:
    path = tmp_path / "wb.journal"
    store.fail = True
    q = WriteBackQueue(store, journal=path, fsync=fsync, max_delay=0.01, retries=0,
                       backoff=0.01)
    for i in range(50):
        q.put(f"k{i % 20}", {"i": i})
    q.delete("k3")
    stats = q.stats()
    assert stats["journal_bytes"] > 0
    if fsync == "always":
        assert stats["loss_window_writes"] == 0
    assert sorted(q.close(0.1)) == sorted(f"k{i}" for i in range(20))
    assert path.stat().st_size > 0  # kept for the next queue

    fresh = MemStore()
    fresh.gate.clear()  # hold the replayed writes in flight: still pending
    q2 = WriteBackQueue(fresh, journal=path, fsync=fsync)
    assert q2.stats()["replayed"] == 51
    assert q2.pending("k3") is TOMBSTONE
    fresh.gate.set()
    assert q2.flush(5)
    assert path.stat().st_size == 0  # compacted once nothing is pending
    assert q2.close() == []
    want = {f"k{i}": {"i": 40 + i if i < 10 else 20 + i} for i in range(20)}
    del want["k3"]
    assert fresh.data == want


def test_journal_is_truncated_after_flush(tmp_path: Path, store: MemStore) -> None:
    path = tmp_path / "j"
    with WriteBackQueue(store, journal=path, max_delay=30) as q:
        q.put("a", "x" * 100)
        assert q.stats()["journal_bytes"] == path.stat().st_size > 100
        assert q.flush()
        assert q.stats()["journal_bytes"] == path.stat().st_size == 0
        q.put("b", 1)
    assert path.stat().st_size == 0
    assert store.data == {"a": "x" * 100, "b": 1}


def test_journal_rotates_while_writes_keep_coming(tmp_path: Path, store: MemStore) -> None:
    path = tmp_path / "j"
    store.fail = True  # nothing reaches the store: the journal can only be rotated
    q = WriteBackQueue(store, journal=path, max_delay=0.01, retries=0, backoff=0.05)
    small_rotation(q, 8192)
    for i in range(3000):
        q.put(f"k{i % 20}", "v" * 100 + str(i))
        assert path.stat().st_size < 8192 + 200
    q.close(0.05)
    fresh = MemStore()
    fresh.gate.clear()
    with WriteBackQueue(fresh, journal=path) as q2:
        # the last snapshot (20 records) plus the records appended after it
        assert 20 <= q2.stats()["replayed"] <= 8192 // 100
        assert len(q2) == 20
        fresh.gate.set()
    assert fresh.data == {f"k{j}": "v" * 100 + str(2980 + j) for j in range(20)}


def test_rotation_keeps_the_write_in_flight(tmp_path: Path, store: MemStore) -> None:
    path = tmp_path / "j"
    store.gate.clear()  # the first batch hangs in the store: it is in flight, not dirty
    q = WriteBackQueue(store, journal=path, max_delay=0, batch_size=1)
    small_rotation(q, 4096)
    q.put("inflight", "first")
    assert store.waiting.wait(5)
    for i in range(500):
        q.put(f"k{i % 5}", "v" * 100)
    assert path.stat().st_size < 4096 + 200  # rotated
    assert "inflight" in q.close(0.05)
    fresh = MemStore()
    fresh.gate.clear()
    with WriteBackQueue(fresh, journal=path) as q2:
        assert q2.pending("inflight") == "first"
        fresh.gate.set()
    assert fresh.data["inflight"] == "first"


class PoisonStore(MemStore):
    """Fails every batch that holds the key "poison"."""

    def put_many(self, items: Mapping[str, Any]) -> None:
        if "poison" in items:
            raise FakeStoreError("poison")
        super().put_many(items)


def test_write_through_is_journaled_after_the_store_has_it(tmp_path: Path) -> None:
    path = tmp_path / "j"
    store = PoisonStore()
    q = WriteBackQueue(store, journal=path, max_delay=30, batch_size=1,
                       when_full="write_through", retries=0, backoff=0.01)
    q.put("k", "v1")
    q.put("poison", 1)
    q.flush()
    wait_for(lambda: store.data == {"k": "v1"})
    assert q.pending("poison") == 1  # k reached the store, poison did not: the journal
    q.max_pending = 1  # keeps both records, and the queue is now full
    q.put("k", "v2")  # full: written through
    assert store.data == {"k": "v2"}
    size = path.stat().st_size
    store.fail = True
    with pytest.raises(FakeStoreError):
        q.put("other", 1)  # failed: not journaled, never replayed
    assert path.stat().st_size == size
    assert q.close(0) == ["poison"]  # a crash, as far as the journal knows
    fresh = MemStore()
    fresh.gate.clear()
    with WriteBackQueue(fresh, journal=path) as q2:
        assert q2.pending("k") == "v2"  # not the older v1 record
        assert q2.pending("other") is NOT_PENDING
        fresh.gate.set()
    assert fresh.data == {"k": "v2", "poison": 1}


def test_journal_values_use_the_serializer(tmp_path: Path, store: MemStore) -> None:
    store.fail = True
    q = WriteBackQueue(store, journal=tmp_path / "j", max_delay=30)
    q.put("p", Point(3))  # needs pickle: the default journal serializer has it on
    q.put("b", b"\x00bytes")

    class Local:  # cannot be pickled: refused before it is acknowledged
        pass

    with pytest.raises(ValueTypeError):
        q.put("bad", Local())
    assert q.pending("bad") is NOT_PENDING
    q.close(0)
    store.fail = False
    with pytest.raises(CacheError, match="cannot be decoded"):  # a reader without pickle
        WriteBackQueue(store, journal=tmp_path / "j", serializer=Serializer())
    store.gate.clear()
    with WriteBackQueue(store, journal=tmp_path / "j") as q2:
        assert q2.pending("p") == Point(3)
        store.gate.set()
    assert store.data == {"p": Point(3), "b": b"\x00bytes"}


def _journal_with_three_records(path: Path) -> list[int]:
    """Write records a, b, c to a journal (left pending); return the record offsets."""
    store = MemStore()
    store.fail = True
    q = WriteBackQueue(store, journal=path, max_delay=30)
    offsets = []
    for key in ("a", "b", "c"):
        offsets.append(path.stat().st_size)
        q.put(key, key * 10)
    assert sorted(q.close(0)) == ["a", "b", "c"]
    return offsets


@pytest.mark.parametrize("damage", ["short-header", "short-body", "bad-crc"])
def test_torn_last_record_is_dropped_with_a_warning(
    tmp_path: Path, store: MemStore, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    path = tmp_path / "j"
    offsets = _journal_with_three_records(path)
    data = path.read_bytes()
    good = len(data)
    record = data[offsets[2] :]
    if damage == "short-header":
        data += record[:5]
    elif damage == "short-body":
        data += record[:-3]
    else:
        data += record[:-1] + bytes([record[-1] ^ 0xFF])
    path.write_bytes(data)
    store.gate.clear()  # the replayed writes stay in flight: the journal keeps them
    with caplog.at_level(logging.WARNING, logger="cachelib"):
        q = WriteBackQueue(store, journal=path, max_delay=30)
    assert "torn last record" in caplog.text
    assert path.stat().st_size == good  # cut back, so new records follow intact ones
    assert q.stats()["replayed"] == 3
    store.gate.set()
    q.put("d", 1)
    assert q.close() == []
    assert store.data == {"a": "a" * 10, "b": "b" * 10, "c": "c" * 10, "d": 1}


@pytest.mark.parametrize("damage", ["body-byte", "length"])
def test_corrupt_record_in_the_middle_raises(
    tmp_path: Path, store: MemStore, damage: str
) -> None:
    path = tmp_path / "j"
    offsets = _journal_with_three_records(path)
    data = bytearray(path.read_bytes())
    if damage == "body-byte":
        data[offsets[1] + 12] ^= 0x01
    else:
        data[offsets[1]] = 0x7F  # a huge length
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorruptError, match=f"corrupt at byte {offsets[1]}"):
        WriteBackQueue(store, journal=path)
    assert path.read_bytes() == bytes(data)  # left as it was for inspection
    # the lock was released: after the user's repair the journal opens
    path.write_bytes(bytes(data[: offsets[1]]))
    with WriteBackQueue(store, journal=path) as q:
        assert q.stats()["replayed"] == 1
    assert store.data == {"a": "a" * 10}


def test_journal_lock_is_exclusive(tmp_path: Path, store: MemStore) -> None:
    path = tmp_path / "j"
    proc = run_script(
        """
        import sys
        from cachelib._writeback import WriteBackQueue
        from test_writeback import MemStore
        q = WriteBackQueue(MemStore(), journal=sys.argv[1])
        print("ready", flush=True)
        sys.stdin.read()
        q.close()
        """,
        str(path),
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        with pytest.raises(JournalLockedError, match="in use by another queue"):
            WriteBackQueue(store, journal=path)
    finally:
        proc.communicate("", timeout=10)
    assert proc.returncode == 0
    with WriteBackQueue(store, journal=path) as q:  # free once the other one closed
        with pytest.raises(JournalLockedError):  # also within one process
            WriteBackQueue(store, journal=path)
        q.put("k", 1)
    assert store.data == {"k": 1}


# --- crash: SIGKILL mid-stream, then replay --------------------------------------------------

CRASH_KEYS = 1009  # most keys written 2 or 3 times: a lost record shows


def crash_op(i: int) -> tuple[str, str, Any]:
    """The i-th write of the crash child: (op, key, value)."""
    key = f"k{i % CRASH_KEYS}"
    if i % 7 == 3:
        return "D", key, None
    return "P", key, {"i": i, "pad": "x" * (i % 60)}


def crash_child(journal: str, db: str, mode: str) -> None:  # pragma: no cover - a child
    """Write forever, printing each acknowledged write; the test kills us."""
    store = SQLiteFileStore(db, hang=mode == "hung", delay=0.002 if mode == "slow" else 0)
    q = WriteBackQueue(store, journal=journal, fsync="interval", batch_size=64,
                       max_delay=0.005)
    if mode == "hung":
        small_rotation(q, 16384)  # rotate often under the kill
    out = sys.stdout
    i = 0
    while True:
        op, key, value = crash_op(i)
        if op == "D":
            q.delete(key)
        else:
            q.put(key, value)
        out.write(f"{i}\n")  # acknowledged
        out.flush()
        i += 1
        if mode == "slow":  # the store keeps up: batches land while writes come in,
            time.sleep(0.05 if i % 300 == 0 else 0.0005)  # pauses: the journal is emptied


@pytest.mark.parametrize("mode", ["hung", "slow"])
def test_sigkill_loses_no_acknowledged_write(tmp_path: Path, mode: str) -> None:
    journal, db = tmp_path / "wb.journal", tmp_path / "kv.db"
    SQLiteFileStore(db).close()
    proc = run_script(
        """
        import sys
        from test_writeback import crash_child
        crash_child(*sys.argv[1:])
        """,
        str(journal),
        str(db),
        mode,
    )
    acked: list[int] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            acked.append(int(line))
            if len(acked) >= 2000:
                break
        else:
            raise AssertionError(f"the child died: {proc.stderr.read() if proc.stderr else ''}")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert proc.stdout is not None and proc.stderr is not None
    # everything printed before the kill: the pipe and what the reader buffered ahead
    rest = proc.stdout.read()
    proc.stdout.close()
    proc.stderr.close()
    assert proc.stdin is not None
    proc.stdin.close()
    acked += [int(line) for line in rest.splitlines(keepends=True) if line.endswith("\n")]
    assert proc.returncode == -signal.SIGKILL
    last_acked = acked[-1]
    assert acked == list(range(last_acked + 1))

    store = SQLiteFileStore(db)
    before = store.all()
    q = WriteBackQueue(store, journal=journal)
    replayed = q.stats()["replayed"]
    assert q.flush(10)
    assert q.close() == []
    rows = store.all()

    # Each key must hold its last acknowledged write, or the one write the child may
    # have journaled (but not yet acknowledged) when it was killed.
    last: dict[str, tuple[str, Any]] = {}
    for i in range(last_acked + 1):
        op, key, value = crash_op(i)
        last[key] = (op, value)
    n_op, n_key, n_value = crash_op(last_acked + 1)
    lost = []
    for key, (op, value) in last.items():
        allowed = [None if op == "D" else value]
        if key == n_key:
            allowed.append(None if n_op == "D" else n_value)
        if rows.get(key) not in allowed:
            lost.append((key, rows.get(key), allowed))
    assert lost == [], f"{len(lost)} acknowledged writes lost (replayed {replayed})"
    if mode == "hung":
        assert before == {} and replayed > 0  # everything came from the journal


# --- exit and arguments ------------------------------------------------------------------------


def test_atexit_drains_queues_nobody_closed(tmp_path: Path) -> None:
    db = tmp_path / "kv.db"
    proc = run_script(
        """
        import sys
        from cachelib._writeback import WriteBackQueue
        from test_writeback import SQLiteFileStore
        q = WriteBackQueue(SQLiteFileStore(sys.argv[1], delay=0.01), max_delay=30)
        for i in range(100):
            q.put(f"k{i}", i)
        print(len(q))
        """,
        str(db),
    )
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert out == "100\n"
    assert SQLiteFileStore(db).all() == {f"k{i}": i for i in range(100)}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_size": 0},
        {"batch_size": 1.5},
        {"max_delay": -1},
        {"max_pending": True},
        {"when_full": "drop"},
        {"block_timeout": "1"},
        {"retries": -1},
        {"backoff": 1.0, "max_backoff": 0.5},
        {"fsync": "sometimes"},
        {"dead_letter": 42},
        {"serializer": "json"},
    ],
)
def test_bad_arguments(store: MemStore, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        WriteBackQueue(store, **kwargs)


def test_store_without_batch_methods() -> None:
    with pytest.raises(TypeError, match=r"put\(\) method"):
        WriteBackQueue(object())  # type: ignore[arg-type]
    assert issubclass(QueueFullError, CacheError)
    assert issubclass(JournalLockedError, CacheError)
