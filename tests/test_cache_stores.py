"""cachelib's stores: SQLiteStore (real files) and SQLAlchemyStore (an SQLite file and
PostgreSQL): every value type, ABSENT vs None, batches, keys, atomicity, threads,
spawned and forked processes, and outages of the database (a locked SQLite file, a
PostgreSQL server of our own stopped and started again)."""

from __future__ import annotations

import datetime
import decimal
import enum
import inspect
import math
import multiprocessing
import os
import pickle
import signal
import sqlite3
import textwrap
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import run_threads
from servers import PostgresServer, free_port

import cachelib
from cachelib import (
    CacheError,
    ConfigError,
    InvalidKeyError,
    KeyTypeError,
    SerializationError,
    Serializer,
    ValueTypeError,
    _stores,
)
from cachelib._stores import ABSENT, SQLAlchemyStore, SQLiteStore, Store, StoreError

PG_URL = os.environ.get("SHARDKIT_TEST_PG_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
FORK_WITH_THREADS = pytest.mark.filterwarnings(  # Python >= 3.12 warns; we test exactly that
    "ignore:This process .* is multi-threaded:DeprecationWarning")
KINDS = ["sqlite", "sqlalchemy-sqlite", "sqlalchemy-postgres"]


# --- fixtures and helpers ---------------------------------------------------------------------


def _unique_table() -> str:
    return f"shardkit_cache_store_t{os.getpid()}_{uuid.uuid4().hex[:8]}"


@dataclass
class Opener:
    """Opens stores of one kind on one table unique to the test; closes them (and drops
    the PostgreSQL table) at the end."""

    kind: str
    directory: Path
    table: str = field(default_factory=_unique_table)
    opened: list[Any] = field(default_factory=list)

    @property
    def sqlite_path(self) -> Path:
        return self.directory / ("store.db" if self.kind == "sqlite" else "sa.db")

    @property
    def url(self) -> str:
        return PG_URL if self.kind == "sqlalchemy-postgres" else f"sqlite:///{self.sqlite_path}"

    def __call__(self, **options: Any) -> Any:
        store: Any
        if self.kind == "sqlite":
            store = SQLiteStore(self.sqlite_path, table=self.table, **options)
        else:
            store = SQLAlchemyStore(self.url, table=self.table, **options)
        self.opened.append(store)
        return store

    def execute(self, sql: str) -> None:
        """Run ``sql`` on the store's database, beside the store."""
        if self.kind == "sqlite":
            with sqlite3.connect(self.sqlite_path, isolation_level=None) as conn:
                conn.execute(sql)
            conn.close()
            return
        # a lock timeout: a test that failed with a transaction open makes the DROP fail
        # instead of wait
        options = {"options": "-c lock_timeout=5000"} if "postgresql" in self.url else {}
        engine = sa.create_engine(self.url, connect_args=options)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(sql))
        finally:
            engine.dispose()

    def cleanup(self) -> None:
        for store in self.opened:
            store.close()
        if self.kind == "sqlalchemy-postgres":  # only our own table, never another
            self.execute(f'DROP TABLE IF EXISTS "{self.table}"')


@pytest.fixture(params=KINDS)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    op = Opener(request.param, tmp_path)
    try:
        yield op
    finally:
        op.cleanup()


@pytest.fixture()
def sqlite_opener(tmp_path: Path) -> Iterator[Opener]:
    op = Opener("sqlite", tmp_path)
    try:
        yield op
    finally:
        op.cleanup()


def _poison(op: Opener) -> None:
    """Make the database itself refuse a row with the key 'poison' (mid-transaction)."""
    if op.kind == "sqlalchemy-postgres":
        op.execute(f'ALTER TABLE "{op.table}" ADD CONSTRAINT no_poison CHECK (key <> \'poison\')')
    else:
        op.execute(
            f'CREATE TRIGGER no_poison BEFORE INSERT ON "{op.table}" '
            "WHEN NEW.key = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"
        )


class Color(enum.IntEnum):
    RED = 1


@dataclass(frozen=True)
class Point:
    x: int
    y: int


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, float) and math.isnan(want):
        return isinstance(got, float) and math.isnan(got)
    return type(got) is type(want) and bool(got == want)


# Every type the default serializer stores: (value written, value read back).
PLAIN_VALUES: list[tuple[Any, Any]] = [
    (b"", b""),
    (b"\x00\xff" * 10, b"\x00\xff" * 10),
    (bytes(range(256)) * 400, bytes(range(256)) * 400),  # 100 KiB
    (bytearray(b"ba"), b"ba"),
    (memoryview(b"mv"), b"mv"),
    ("", ""),
    ("h\u00e9llo \u2603 \U0001d11e", "h\u00e9llo \u2603 \U0001d11e"),
    ("x" * 200_000, "x" * 200_000),
    (0, 0),
    (-1, -1),
    (2**63, 2**63),
    (-(2**200), -(2**200)),
    (1.5, 1.5),
    (-0.0, -0.0),
    (float("inf"), float("inf")),
    (float("-inf"), float("-inf")),
    (float("nan"), float("nan")),
    (None, None),
    (True, True),
    (False, False),
    ([], []),
    ([1, "a", None, 2.5, [True]], [1, "a", None, 2.5, [True]]),
    ((1, 2), [1, 2]),
    ({}, {}),
    ({"a": {"b": [1.5, None]}, "\u00e9": "\u2603"}, {"a": {"b": [1.5, None]}, "\u00e9": "\u2603"}),
    (Color.RED, 1),  # without pickle, a subclass is stored as its base type
]

PICKLE_KEY = b"k" * 32
# With pickle (signed) and compression: anything picklable, keeping its type.
PICKLED_VALUES: list[Any] = [
    {1, 2, 3},
    frozenset({"a"}),
    datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc),
    decimal.Decimal("1.10"),
    uuid.UUID(int=7),
    Point(1, 2),
    Color.RED,
    OrderedDict(a=1),
    {1: "int keys"},
    "lone \ud800 surrogate",
    [2**70],  # beyond JSON's 64 bits
    "compressible " * 1000,
    b"z" * 5000,
]


# --- values -----------------------------------------------------------------------------------


def test_every_value_type_round_trips(opener: Opener) -> None:
    store = opener()
    for i, (value, _) in enumerate(PLAIN_VALUES):
        store.put(f"v{i}", value)
    for i, (_, want) in enumerate(PLAIN_VALUES):
        got = store.get(f"v{i}")
        assert _same(got, want), (i, got, want)
    many = store.get_many([f"v{i}" for i in range(len(PLAIN_VALUES))])
    assert list(many) == [f"v{i}" for i in range(len(PLAIN_VALUES))]
    for i, (_, want) in enumerate(PLAIN_VALUES):
        assert _same(many[f"v{i}"], want), i

    pickling = opener(serializer=Serializer(pickle=True, hmac_key=PICKLE_KEY,
                                            compress_threshold=64))
    items = {f"p{i}": value for i, value in enumerate(PICKLED_VALUES)}
    pickling.put_many(items)
    for key, value in items.items():
        assert _same(pickling.get(key), value), key
    assert pickling.get_many(items) == items
    assert type(pickling.get("p6")) is Color

    # pickles are not read without pickle, nor with another key
    with pytest.raises(SerializationError):
        store.get("p0")
    other_key = opener(serializer=Serializer(pickle=True, hmac_key=b"o" * 32))
    with pytest.raises(SerializationError):
        other_key.get("p0")


def test_absent_is_not_none(opener: Opener) -> None:
    store = opener()
    assert repr(ABSENT) == "cachelib.ABSENT" == str(ABSENT)
    assert pickle.loads(pickle.dumps(ABSENT)) is ABSENT
    assert store.get("nothing") is ABSENT
    store.put("none", None)
    assert store.get("none") is None
    assert store.get_many(["none", "nothing"]) == {"none": None}
    assert store.delete("none") is True
    assert store.delete("none") is False
    assert store.get("none") is ABSENT
    store.put_many({"n1": None, "n2": None})
    assert store.get_many(["n1", "n2", "n3"]) == {"n1": None, "n2": None}


# --- batches and keys -------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 301, 1201])  # across 300-row upserts, 500-key IN lists
def test_batches(opener: Opener, n: int) -> None:
    store = opener()
    items = {f"key:{i}": ({"i": i} if i % 3 else i) for i in range(n)}
    keys = list(items)
    store.put_many(items)
    missing = [f"missing:{i}" for i in range(min(n, 50))]
    got = store.get_many(keys + missing + keys[:5])  # absent and repeated keys too
    assert got == items
    assert list(got) == keys  # in the caller's order
    store.put_many({k: "new" for k in keys[::2]})  # an upsert over existing rows
    assert store.get_many(keys) == {k: "new" if i % 2 == 0 else items[k]
                                    for i, k in enumerate(keys)}
    half = n // 2
    assert store.delete_many(keys[:half] + missing + keys[:half]) == half
    assert list(store.get_many(keys)) == keys[half:]
    assert store.delete_many(iter(keys)) == n - half
    assert store.get_many(keys) == {}
    assert store.delete_many([]) == 0
    assert store.get_many([]) == {}
    store.put_many({})
    stats = store.stats()
    assert stats["rows_written"] == n + len(keys[::2])
    assert stats["rows_deleted"] == n
    assert stats["failures"] == 0


UNICODE_KEYS = [
    "\u043a\u043b\u044e\u0447",  # ключ
    "\u9375",
    "\U0001f511" * 256,  # 1024 bytes of UTF-8: the longest key
    "\u00e9" * 512,
    "a" * 1024,
    "with space\tand\nnewline",
    "Key",
    "key",
    "key ",
    "'; DROP TABLE users; --",
    "%",
    "_",
    "\u00e9",  # NFC ...
    "e\u0301",  # ... and NFD: two keys
    "\U0010ffff",
]


def test_unicode_keys_are_exact(opener: Opener) -> None:
    store = opener()
    for i, key in enumerate(UNICODE_KEYS):
        store.put(key, i)
    for i, key in enumerate(UNICODE_KEYS):
        assert store.get(key) == i, key
    assert store.get_many(UNICODE_KEYS) == {key: i for i, key in enumerate(UNICODE_KEYS)}
    assert store.get("KEY") is ABSENT
    assert store.delete("key") is True
    assert store.get("Key") == UNICODE_KEYS.index("Key")
    assert store.delete_many(UNICODE_KEYS) == len(UNICODE_KEYS) - 1


class StrKey(str):
    def __str__(self) -> str:
        return "not the key"


BAD_KEYS: list[tuple[Any, type[CacheError]]] = [
    (123, KeyTypeError),
    (b"bytes", KeyTypeError),
    (None, KeyTypeError),
    ("", InvalidKeyError),
    ("a" * 1025, InvalidKeyError),
    ("\u00e9" * 513, InvalidKeyError),  # 513 characters, 1026 bytes
    ("\ud800", InvalidKeyError),
    ("nul\x00", InvalidKeyError),
]


def test_bad_keys_are_refused_before_the_database(opener: Opener) -> None:
    store = opener()
    for key, error in BAD_KEYS:
        calls: list[tuple[str, tuple[Any, ...]]] = [
            ("get", (key,)),
            ("put", (key, 1)),
            ("delete", (key,)),
            ("get_many", (["ok", key],)),
            ("put_many", ({"ok": 1, key: 2},)),
            ("delete_many", (["ok", key],)),
        ]
        for name, args in calls:
            with pytest.raises(error):
                getattr(store, name)(*args)
    assert issubclass(KeyTypeError, TypeError) and issubclass(InvalidKeyError, ValueError)
    assert store.get("ok") is ABSENT  # nothing of a batch with a bad key was written
    for not_a_list in ("abc", b"ab", 5):
        with pytest.raises(KeyTypeError):
            store.get_many(not_a_list)
        with pytest.raises(KeyTypeError):
            store.delete_many(not_a_list)
    with pytest.raises(TypeError):
        store.put_many([("a", 1)])
    store.put(StrKey("sub"), 1)  # a str subclass is its str value
    assert store.get("sub") == 1
    assert store.stats()["failures"] == 0


# --- atomicity --------------------------------------------------------------------------------


def test_put_many_is_all_or_nothing(opener: Opener) -> None:
    store = opener()
    store.put_many({"a": "old", "b": "old"})
    # a value the serializer refuses: nothing reaches the database
    with pytest.raises(ValueTypeError):
        store.put_many({"a": "new", "c": object(), "d": 1})
    assert store.get_many(["a", "b", "c", "d"]) == {"a": "old", "b": "old"}
    # the database refuses a row in the middle: the rows before it are rolled back
    _poison(opener)
    batch = {**{f"k{i}": i for i in range(600)}, "a": "new", "poison": 1,
             **{f"m{i}": i for i in range(600)}}
    with pytest.raises(StoreError) as info:
        store.put_many(batch)
    assert info.value.__cause__ is not None
    assert store.get_many(list(batch)) == {"a": "old"}
    assert store.stats()["failures"] == 1
    store.put_many({"k1": 1, "a": "new"})  # the store still works
    assert store.get_many(["k1", "a", "b"]) == {"k1": 1, "a": "new", "b": "old"}


def test_delete_and_insert_path_of_other_dialects(tmp_path: Path) -> None:
    # Dialects without an upsert replace rows with DELETE + INSERT in one transaction;
    # exercised here on SQLite with the upsert switched off.
    op = Opener("sqlalchemy-sqlite", tmp_path)
    try:
        store = op()
        store._upsert = None
        store.put("a", 1)
        store.put("a", 2)
        store.put_many({f"k{i}": i for i in range(1200)})
        store.put_many({"a": 3, **{f"k{i}": -i for i in range(0, 1200, 2)}})
        got = store.get_many(["a"] + [f"k{i}" for i in range(1200)])
        assert got == {"a": 3, **{f"k{i}": (-i if i % 2 == 0 else i) for i in range(1200)}}
        _poison(op)
        with pytest.raises(StoreError):
            store.put_many({"a": 4, "k1": 0, "poison": 1})
        assert store.get_many(["a", "k1", "poison"]) == {"a": 3, "k1": 1}

        errors: list[BaseException] = []

        def work(t: int) -> None:
            try:
                for _ in range(10):
                    store.put_many({f"shared{j}": t for j in range(20)})
            except BaseException as exc:  # reported below
                errors.append(exc)

        run_threads(work, 4)
        assert not errors, errors
        assert len(set(store.get_many([f"shared{j}" for j in range(20)]).values())) == 1
    finally:
        op.cleanup()


# --- threads and processes --------------------------------------------------------------------


def test_eight_threads_share_one_store(opener: Opener) -> None:
    store = opener()
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            mine = {f"t{t}:{i}": [t, i] for i in range(60)}
            keys = list(mine)
            for key in keys[:20]:
                store.put(key, mine[key])
                assert store.get(key) == mine[key]
            store.put_many(mine)
            assert store.get_many(keys) == mine
            store.put("shared", t)
            store.put_many({f"batch{j}": t for j in range(20)})
            assert store.delete_many(keys[:30]) == 30
            for key in keys[30:40]:
                assert store.delete(key) is True
            assert store.get_many(keys) == {k: mine[k] for k in keys[40:]}
        except BaseException as exc:  # reported below
            errors.append(exc)

    run_threads(work, 8)
    assert not errors, errors
    assert store.get("shared") in range(8)
    # batches are transactions: the last one written wins whole
    assert len(set(store.get_many([f"batch{j}" for j in range(20)]).values())) == 1
    for t in range(8):
        assert len(store.get_many([f"t{t}:{i}" for i in range(60)])) == 20
    stats = store.stats()
    assert stats["writes"] == 8 * 23 and stats["failures"] == 0


def _spawned_writer(path: str, table: str, name: str, count: int) -> None:
    """A spawned process: writes its keys through its own SQLiteStore on the same file."""
    with SQLiteStore(path, table=table) as store:
        for i in range(0, count, 25):
            store.put_many({f"{name}:{j}": [name, j] for j in range(i, i + 25)})
            store.put(f"{name}:single:{i}", i)
            store.put("shared", name)
        assert store.delete_many([f"{name}:{j}" for j in range(0, count, 2)]) == count // 2


def test_two_spawned_processes_write_one_sqlite_file(sqlite_opener: Opener) -> None:
    store = sqlite_opener(timeout=30)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_spawned_writer,
                         args=(str(sqlite_opener.sqlite_path), sqlite_opener.table, name, 400))
             for name in ("p1", "p2")]
    for p in procs:
        p.start()
    for i in range(200):  # the parent writes too, meanwhile
        store.put_many({f"parent:{i}": i, "shared": "parent"})
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for name in ("p1", "p2"):
        keys = [f"{name}:{j}" for j in range(400)]
        assert store.get_many(keys) == {f"{name}:{j}": [name, j] for j in range(1, 400, 2)}
        assert len(store.get_many([f"{name}:single:{i}" for i in range(0, 400, 25)])) == 16
    assert len(store.get_many([f"parent:{i}" for i in range(200)])) == 200
    assert store.get("shared") in ("p1", "p2", "parent")


def _fork(child: Callable[[], None]) -> tuple[int, Callable[[], None]]:
    """Fork; the child runs ``child()`` and exits 0, or 1 with the error sent back.
    Returns the child's PID and a function that waits for it and checks it."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        signal.alarm(30)  # a hang fails the test instead of stalling it
        code = 1
        try:
            os.close(read_fd)
            child()
            code = 0
        except BaseException as exc:
            os.write(write_fd, repr(exc).encode()[:4000])
        finally:
            os._exit(code)
    os.close(write_fd)

    def wait() -> None:
        _, status = os.waitpid(pid, 0)
        answer = os.read(read_fd, 4096).decode()
        os.close(read_fd)
        assert os.waitstatus_to_exitcode(status) == 0, answer

    return pid, wait


@FORK_WITH_THREADS
def test_fork_child_writes_through_an_inherited_store(opener: Opener) -> None:
    store = opener()
    store.put("from-parent", "p")
    store.get_many(["from-parent"])  # the parent's connection is open and pooled

    def child() -> None:
        assert store.get("from-parent") == "p"
        store.put("from-child", os.getpid())
        store.put_many({f"child:{i}": i for i in range(100)})
        assert store.delete("from-parent") is True

    pid, wait = _fork(child)
    # The parent keeps going meanwhile, in a thread: a child using the parent's own
    # connection would garble both sides' messages and hang the parent, which must fail
    # the test rather than stall it.
    parent = threading.Thread(target=store.put_many,
                              args=({f"parent:{i}": i for i in range(100)},), daemon=True)
    parent.start()
    wait()
    parent.join(timeout=20)
    assert not parent.is_alive(), "the parent hung: its connection was used by the child"
    assert store.get("from-child") == pid
    assert store.get("from-parent") is ABSENT
    assert len(store.get_many([f"child:{i}" for i in range(100)])) == 100
    assert len(store.get_many([f"parent:{i}" for i in range(100)])) == 100


@FORK_WITH_THREADS
def test_sqlite_fork_while_another_thread_writes(sqlite_opener: Opener) -> None:
    # No child may inherit a connection in the middle of a write transaction: SQLite
    # would see the file locked by the child itself and wait out the timeout.
    store = sqlite_opener(timeout=5)
    stop = threading.Event()

    def hammer() -> None:
        i = 0
        while not stop.is_set():  # a transaction open most of the time, with gaps
            store.put_many({f"h{i % 50}:{j}": i for j in range(50)})
            i += 1
            time.sleep(0.001)

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        for k in range(10):
            def child(k: int = k) -> None:
                store.put(f"child{k}", k)
                assert store.get(f"child{k}") == k

            _, wait = _fork(child)
            wait()
    finally:
        stop.set()
        thread.join()
    assert store.get_many([f"child{k}" for k in range(10)]) == {f"child{k}": k for k in range(10)}


# --- outages ----------------------------------------------------------------------------------


def test_sqlite_locked_by_another_connection(sqlite_opener: Opener) -> None:
    store = sqlite_opener(timeout=0.2)
    store.put("k", "before")
    other = sqlite3.connect(sqlite_opener.sqlite_path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        with pytest.raises(StoreError) as info:
            store.put("k", "during")
        assert 0.15 < time.monotonic() - started < 5  # waited for the timeout, no longer
        assert isinstance(info.value, ConnectionError) and isinstance(info.value, CacheError)
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        assert "locked" in str(info.value)
        with pytest.raises(StoreError):
            store.put_many({"k": "during", "j": 1})
        with pytest.raises(StoreError):
            store.delete_many(["k"])
        assert store.get("k") == "before"  # WAL: readers never wait for the writer
        assert store.stats()["failures"] == 3
    finally:
        other.execute("ROLLBACK")
        other.close()
    store.put_many({"k": "after", "j": 1})
    assert store.get_many(["k", "j"]) == {"k": "after", "j": 1}


def test_sqlalchemy_sqlite_locked_then_released(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.2})
    store = SQLAlchemyStore(engine, table="cache_locked")
    store.put("k", "before")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # no WAL here: it keeps readers out too
    try:
        with pytest.raises(StoreError):
            store.put("k", "during")
        with pytest.raises(StoreError):
            store.get("k")
    finally:
        other.execute("ROLLBACK")
        other.close()
    store.put("k", "after")
    assert store.get("k") == "after"
    store.close()
    with engine.connect() as conn:  # an engine passed in is left open
        assert conn.execute(sa.text("SELECT count(*) FROM cache_locked")).scalar() == 1
    engine.dispose()


def test_postgres_stopped_and_started_again() -> None:
    server = PostgresServer()  # our own server, never the shared one
    try:
        store = SQLAlchemyStore(server.url, table="cache_outage")
        items = {f"k{i}": [i] for i in range(200)}
        store.put_many(items)
        store.put("none", None)
        server.kill()  # immediate shutdown, by PID
        calls: list[Callable[[], object]] = [
            lambda: store.put("k1", "down"),
            lambda: store.put_many({"k1": "down", "x": 1}),
            lambda: store.get("k1"),
            lambda: store.get_many(["k1", "k2"]),
            lambda: store.delete("k2"),
            lambda: store.delete_many(["k2", "k3"]),
        ]
        for call in calls:
            started = time.monotonic()
            with pytest.raises(StoreError) as info:
                call()
            assert time.monotonic() - started < 10
            assert isinstance(info.value.__cause__, sa.exc.OperationalError)
            assert "cache_outage" in str(info.value)
        assert store.stats()["failures"] == len(calls)
        server.start()  # crash recovery; the pool's dead connections are replaced
        assert store.get_many([*items, "none"]) == {**items, "none": None}
        store.put("k1", "up")
        assert store.delete("k2") is True
        assert store.get_many(["k1", "k2", "x"]) == {"k1": "up"}
        store.close()
    finally:
        server.close()


# --- options, lifecycle, the protocol ---------------------------------------------------------


def test_bad_options(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    for table in ("x; DROP TABLE y", "1abc", "", "a" * 64, 5):
        with pytest.raises(ConfigError):
            SQLiteStore(path, table=table)  # type: ignore[arg-type]
        with pytest.raises(ConfigError):
            SQLAlchemyStore(f"sqlite:///{path}", table=table)  # type: ignore[arg-type]
    for timeout in (-1, "1", True, float("nan")):
        with pytest.raises(ConfigError, match="timeout"):
            SQLiteStore(path, timeout=timeout)  # type: ignore[arg-type]
    for bad_path in ("", ":memory:", 123):
        with pytest.raises(ConfigError, match="path"):
            SQLiteStore(bad_path)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="serializer"):
        SQLiteStore(path, serializer=object())  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        SQLAlchemyStore(123)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        SQLAlchemyStore("no-such-dialect://x")
    assert issubclass(ConfigError, ValueError)
    assert not path.exists()  # nothing was created by a refused store
    with pytest.raises(StoreError):
        SQLiteStore(tmp_path)  # a directory
    with pytest.raises(StoreError) as info:  # nothing listens there
        SQLAlchemyStore(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x")
    assert isinstance(info.value.__cause__, sa.exc.OperationalError)


def test_stats_repr_close_and_context_manager(opener: Opener) -> None:
    with opener() as store:
        assert store.stats() == dict.fromkeys(
            ["reads", "rows_read", "writes", "rows_written", "deletes", "rows_deleted",
             "failures"], 0)
        store.put("a", 1)
        store.put_many({"b": 2, "c": 3})
        store.get("a")
        store.get("zzz")
        store.get_many(["a", "b", "zzz"])
        store.delete("a")
        store.delete_many(["b", "c", "zzz"])
        store.get_many([])  # empty batches never reach the database
        store.put_many({})
        assert store.stats() == {"reads": 3, "rows_read": 3, "writes": 2, "rows_written": 3,
                                 "deletes": 2, "rows_deleted": 3, "failures": 0}
        assert opener.table in repr(store)
        assert repr(store).startswith(type(store).__name__ + "(")
        assert isinstance(store.serializer, Serializer) and not store.serializer.pickle
        assert store.serializer.compress_threshold is None
    for call in (lambda: store.get("a"), lambda: store.put("a", 1),
                 lambda: store.get_many([]), lambda: store.put_many({}),
                 lambda: store.delete_many([])):
        with pytest.raises(StoreError, match="closed"):
            call()
    store.close()  # idempotent
    again = opener()  # the data outlives the store
    again.put("kept", 1)
    again.close()
    assert opener().get("kept") == 1


def test_corrupt_rows_raise_serialization_error_not_store_error(sqlite_opener: Opener) -> None:
    store = sqlite_opener()
    sqlite_opener.execute(
        f"INSERT INTO \"{sqlite_opener.table}\" VALUES ('bad-flags', x'00', 16384), "
        "('bad-int', CAST('12x' AS BLOB), 2)"
    )
    for key in ("bad-flags", "bad-int"):
        with pytest.raises(SerializationError):
            store.get(key)
    with pytest.raises(SerializationError):
        store.get_many(["bad-int"])
    assert store.stats()["failures"] == 0


def _exercise(store: Any) -> None:
    """The Store protocol's semantics, for any store."""
    assert store.get("a") is ABSENT
    store.put("a", None)
    assert store.get("a") is None
    store.put_many({"b": 1, "c": [2]})
    assert store.get_many(["a", "b", "c", "d"]) == {"a": None, "b": 1, "c": [2]}
    assert store.delete("a") is True and store.delete("a") is False
    assert store.delete_many(["b", "c", "d"]) == 2
    assert store.get_many(["a", "b", "c"]) == {}
    store.close()


def test_the_docstring_store_and_ours_follow_the_protocol(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the example imports ABSENT from cachelib, as users will (a no-op once exported)
    monkeypatch.setattr(cachelib, "ABSENT", ABSENT, raising=False)
    doc = Store.__doc__
    assert doc is not None
    namespace: dict[str, Any] = {}
    exec(textwrap.dedent(doc.split("::\n", 1)[1]), namespace)
    _exercise(namespace["DictStore"]())
    _exercise(SQLiteStore(tmp_path / "p.db"))
    _exercise(SQLAlchemyStore(f"sqlite:///{tmp_path}/q.db"))
    methods = [name for name in vars(Store) if not name.startswith("_")]
    assert sorted(methods) == ["close", "delete", "delete_many", "get", "get_many", "put",
                               "put_many"]
    for cls in (SQLiteStore, SQLAlchemyStore):
        for name in methods:
            ours = list(inspect.signature(getattr(cls, name)).parameters)
            assert ours == list(inspect.signature(getattr(Store, name)).parameters), name
    assert set(_stores.__all__) >= {"ABSENT", "SQLAlchemyStore", "SQLiteStore", "Store",
                                    "StoreError"}
