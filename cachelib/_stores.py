"""Stores: the system of record behind a cache, which the write policies read and write.

A cache in front of a database needs somewhere to load a missing value from and to
write changed values to (read-through, write-through, write-behind). That place is a
:class:`Store`: a table of keys and values with batch calls. Any object with the
methods of :class:`Store` will do (its docstring shows one backed by a dict); two
ship with cachelib:

* :class:`SQLiteStore`: a file on this host, safe across threads, processes and
  ``fork()``; WAL with ``synchronous=FULL``, so a write that returned survives a crash
  or a power loss.
* :class:`SQLAlchemyStore`: a table in PostgreSQL, SQLite, MySQL, ... through
  SQLAlchemy Core, for data shared by many hosts.

Both write each value as the ``(payload, flags)`` pair a
:class:`~cachelib.Serializer` makes of it (by default without pickle and without
compression), so they store the same types the cache servers do. ``None`` is a value
like any other; a key that is not there reads as :data:`ABSENT`.

Keys are str of 1 to 1024 bytes in UTF-8, without NUL (PostgreSQL cannot keep it in
text) and without lone surrogates (not UTF-8). A batch (``put_many``,
``delete_many``) is one transaction: it is written whole or not at all.
"""

from __future__ import annotations

import enum
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from fastcore._forks import ForkAware

from ._errors import CacheError, ConfigError, InvalidKeyError, KeyTypeError
from ._values import Serializer

if TYPE_CHECKING:
    import sqlalchemy

__all__ = (
    "ABSENT",
    "MAX_STORE_KEY_LENGTH",
    "SQLAlchemyStore",
    "SQLiteStore",
    "Store",
    "StoreError",
)

#: The longest key a store takes, in bytes of UTF-8.
MAX_STORE_KEY_LENGTH: Final = 1024
#: Keys per ``WHERE key IN (...)`` query, well below every database's limit on
#: parameters (SQLite's is 999 before 3.32).
_CHUNK: Final = 500
#: Rows per multi-row upsert (three parameters each: 900, again below 999).
_ROWS: Final = 300
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}\Z")
_COUNTERS: Final = (
    "reads", "rows_read", "writes", "rows_written", "deletes", "rows_deleted", "failures",
)

_T = TypeVar("_T")
_S = TypeVar("_S", bound="_StoreBase")


class _Absent(enum.Enum):
    # An enum member: one object that survives pickling and copying, and that type
    # checkers can narrow with ``is``.
    ABSENT = "ABSENT"

    def __repr__(self) -> str:
        return "cachelib.ABSENT"

    def __str__(self) -> str:
        return "cachelib.ABSENT"


#: What :meth:`Store.get` returns for a key that is not in the store (``None`` is a
#: value that can be stored). Compare with ``is``.
ABSENT: Final = _Absent.ABSENT


class StoreError(CacheError, ConnectionError):
    """The store's database failed: unreachable, locked past the timeout, refused the
    write, ...; the database's own exception is chained as ``__cause__``.

    A batch that failed was not half written. A write whose connection was lost while
    it committed may have been applied or not: write it again.
    """


class Store(Protocol):
    """The system of record behind a cache: what the write policies need of it.

    Implementations must be safe to call from several threads at once. Keys are str;
    :class:`SQLiteStore` and :class:`SQLAlchemyStore` take 1 to 1024 bytes of UTF-8
    without NUL, and raise :class:`~cachelib.KeyTypeError` /
    :class:`~cachelib.InvalidKeyError` for others. A failure of the database raises
    :class:`StoreError`.

    A store of your own needs only these methods; one backed by a dict, for tests::

        import threading
        from cachelib import ABSENT

        class DictStore:
            def __init__(self):
                self._data = {}
                self._lock = threading.Lock()

            def get(self, key):
                with self._lock:
                    return self._data.get(key, ABSENT)

            def get_many(self, keys):
                with self._lock:
                    return {k: self._data[k] for k in keys if k in self._data}

            def put(self, key, value):
                with self._lock:
                    self._data[key] = value

            def put_many(self, items):
                with self._lock:  # all or nothing: no other call sees half of it
                    self._data.update(items)

            def delete(self, key):
                with self._lock:
                    return self._data.pop(key, ABSENT) is not ABSENT

            def delete_many(self, keys):
                with self._lock:
                    return sum(self._data.pop(k, ABSENT) is not ABSENT for k in set(keys))

            def close(self):
                pass
    """

    def get(self, key: str) -> Any:
        """The value stored under ``key``, or :data:`ABSENT` if there is none."""
        ...

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The values of those ``keys`` that are present (absent keys are left out)."""
        ...

    def put(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key``, replacing any value there."""
        ...

    def put_many(self, items: Mapping[str, Any]) -> None:
        """Store every item in one transaction: all are written, or (on an error) none."""
        ...

    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it was there."""
        ...

    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove ``keys`` in one transaction; how many were there."""
        ...

    def close(self) -> None:
        """Release connections (idempotent)."""
        ...


# --- argument checks --------------------------------------------------------------------------


def _check_key(key: object) -> str:
    if type(key) is not str:
        if not isinstance(key, str):
            raise KeyTypeError(
                f"a store key must be a str, not {type(key).__name__} ({key!r:.60})"
            )
        key = str.__str__(key)  # a plain str: drivers may bind subclasses differently
    if key.isascii():
        size = len(key)
    else:
        try:
            size = len(key.encode())
        except UnicodeEncodeError:
            raise InvalidKeyError(
                f"store key {key!r:.80} holds a lone surrogate: it is not valid UTF-8"
            ) from None
    if not 0 < size <= MAX_STORE_KEY_LENGTH:
        raise InvalidKeyError(
            f"a store key must be 1 to {MAX_STORE_KEY_LENGTH} bytes of UTF-8, got "
            f"{size} bytes ({key!r:.60})"
        )
    if "\x00" in key:
        raise InvalidKeyError(f"store key {key!r:.80} holds NUL, which PostgreSQL cannot store")
    return key


def _check_keys(keys: Iterable[str]) -> list[str]:
    """The checked keys, each once, in their first order."""
    if isinstance(keys, (str, bytes, bytearray, memoryview)):
        raise KeyTypeError(
            f"keys must be an iterable of str keys, not a single {type(keys).__name__} "
            f"({keys!r:.60}); wrap one key in a list"
        )
    try:
        return list(dict.fromkeys(_check_key(key) for key in keys))
    except TypeError as exc:
        if isinstance(exc, KeyTypeError):
            raise
        raise KeyTypeError(f"keys must be an iterable of str keys: {exc}") from None


def _encode_items(serializer: Serializer, items: Mapping[str, Any]) -> list[tuple[str, bytes, int]]:
    """``(key, payload, flags)`` rows: every key checked and every value encoded first,
    so that a bad one fails the batch before anything reaches the database."""
    try:
        pairs = items.items()
    except AttributeError:
        raise TypeError(
            f"items must be a mapping of keys to values, not {type(items).__name__}"
        ) from None
    rows = []
    for key, value in pairs:
        checked = _check_key(key)
        payload, flags = serializer.dumps(value)
        rows.append((checked, payload, flags))
    return rows


def _check_serializer(serializer: object) -> Serializer:
    if serializer is None:
        return Serializer(pickle=False, compress_threshold=None)
    if not (callable(getattr(serializer, "dumps", None))
            and callable(getattr(serializer, "loads", None))):
        raise ConfigError(
            f"serializer must be a cachelib.Serializer (or have its dumps and loads), "
            f"got {type(serializer).__name__}"
        )
    return serializer  # type: ignore[return-value]  # a Serializer or its duck twin


def _check_identifier(value: object, what: str) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise ConfigError(
            f"{what} must be an SQL identifier (a letter or _, then letters, digits or _, "
            f"at most 63 characters), got {value!r}"
        )
    return value


def _chunks(keys: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(keys), _CHUNK):
        yield keys[start:start + _CHUNK]


def _keys_text(n: int) -> str:
    return "1 key" if n == 1 else f"{n} keys"


# --- what both stores share: counters, closing, fork hooks -----------------------------------

class _StoreBase(ForkAware):
    """Counters, the closed flag, the context manager and the fork hooks."""

    _serializer: Serializer
    _closed: bool

    def _init_base(self, serializer: Serializer | None) -> None:
        self._serializer = _check_serializer(serializer)
        self._closed = False
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._counts_lock = threading.Lock()

    @property
    def serializer(self) -> Serializer:
        """The serializer that encodes values for the table."""
        return self._serializer

    def _count(self, op: str, rows_name: str, rows: int) -> None:
        with self._counts_lock:
            self._counts[op] += 1
            self._counts[rows_name] += rows

    def _count_failure(self) -> None:
        with self._counts_lock:
            self._counts["failures"] += 1

    def stats(self) -> dict[str, int]:
        """Counters since the store was created.

        Returns:
            ``reads``, ``writes``, ``deletes``: calls that reached the database and
            succeeded (a batch counts once; an empty batch never reaches it);
            ``rows_read`` (values found), ``rows_written``, ``rows_deleted`` (rows that
            were there); ``failures``: calls that raised :class:`StoreError`.
        """
        with self._counts_lock:
            return dict(self._counts)

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _closed_error(self) -> StoreError:
        return StoreError(f"{self!r} is closed")

    def _decode_rows(self, keys: list[str], rows: Iterable[Any]) -> dict[str, Any]:
        loads = self._serializer.loads
        found = {str(row[0]): loads(row[1], int(row[2])) for row in rows}
        if len(found) == len(keys):
            return {key: found[key] for key in keys}
        return {key: found[key] for key in keys if key in found}

    # fork handling

    def _after_fork_in_child(self) -> None:
        # another thread may have held it at the fork: it would never be released
        self._counts_lock = threading.Lock()


# --- SQLite ---------------------------------------------------------------------------------

#: Connections inherited through fork(): kept referenced in the child so that they are
#: never used or closed there (SQLite forbids carrying a connection across fork()).
_INHERITED_SQLITE: list[sqlite3.Connection] = []


class SQLiteStore(_StoreBase):
    """A store in an SQLite file: on one host, shared by threads and processes.

    One table ``(key TEXT PRIMARY KEY, payload BLOB, flags INTEGER) WITHOUT ROWID``,
    created if missing, in a file in WAL mode with ``synchronous=FULL``: readers never
    wait for a writer, and a write that returned survives a crash or a power loss.
    Writes take SQLite's write lock with ``BEGIN IMMEDIATE``, so processes sharing the
    file take turns; a batch is one transaction (multi-row upserts, 300 rows per statement),
    and ``get_many`` reads its keys, 500 per query, from one snapshot.

    Thread safe: one connection per process, used under a lock. Fork safe: a child
    never uses its parent's connection (it opens its own on first use), and no
    transaction is open across ``fork()``. Needs SQLite >= 3.24 (upsert).

    Args:
        path: The database file (created, with its folder, if missing). Not
            ``":memory:"``: a store is a file that outlives the process.
        table: The table name.
        serializer: Encodes values; by default ``Serializer(pickle=False,
            compress_threshold=None)``. Readers and writers of one table must use the
            same options.
        timeout: Seconds to wait for another connection's write lock before raising
            :class:`StoreError`.

    Raises:
        ConfigError: A bad option.
        StoreError: The file cannot be opened or set up.
    """

    def __init__(self, path: str | os.PathLike[str], *, table: str = "shardkit_cache_store",
                 serializer: Serializer | None = None, timeout: float = 30.0) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or \
                not timeout >= 0:
            raise ConfigError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        try:
            path = os.fspath(path)
        except TypeError:
            raise ConfigError(f"path must be a file path, got {path!r}") from None
        if not isinstance(path, str) or path in ("", ":memory:"):
            raise ConfigError(f"path must name a file (a str or os.PathLike), got {path!r}")
        if sqlite3.sqlite_version_info < (3, 24):
            raise ConfigError(
                f"SQLiteStore needs SQLite >= 3.24 (upsert), this is {sqlite3.sqlite_version}"
            )
        self._init_base(serializer)
        self._path = path
        self._table = _check_identifier(table, "table")
        self._timeout = float(timeout)
        self._lock = threading.Lock()
        self._held_over_fork = False
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        t = f'"{self._table}"'
        self._sql_get = f'SELECT payload, flags FROM {t} WHERE "key" = ?'
        self._sql_put = (
            f'INSERT INTO {t} ("key", payload, flags) VALUES (?, ?, ?) '
            f'ON CONFLICT ("key") DO UPDATE SET payload = excluded.payload, '
            f"flags = excluded.flags"
        )
        self._sql_delete = f'DELETE FROM {t} WHERE "key" = ?'
        self._sql_get_chunk = self._sql_get_many(_CHUNK)
        self._sql_put_chunk = self._sql_put_many(_ROWS)
        self._sql_delete_chunk = self._sql_delete_many(_CHUNK)
        self._run("open the file", lambda conn: None, begin=None)
        self._register_fork_hook()

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    @property
    def table(self) -> str:
        """The table name."""
        return self._table

    def _sql_get_many(self, n: int) -> str:
        marks = ",".join("?" * n)
        return f'SELECT "key", payload, flags FROM "{self._table}" WHERE "key" IN ({marks})'

    def _sql_put_many(self, n: int) -> str:
        rows = ",".join(["(?, ?, ?)"] * n)
        return (f'INSERT INTO "{self._table}" ("key", payload, flags) VALUES {rows} '
                'ON CONFLICT ("key") DO UPDATE SET payload = excluded.payload, '
                "flags = excluded.flags")

    def _sql_delete_many(self, n: int) -> str:
        marks = ",".join("?" * n)
        return f'DELETE FROM "{self._table}" WHERE "key" IN ({marks})'

    def _connection(self) -> sqlite3.Connection:
        # with self._lock held; raises sqlite3.Error / OSError
        if self._pid != os.getpid():  # fork() without the hook (should not happen)
            self._after_fork_in_child()
        if self._conn is not None:
            return self._conn
        folder = os.path.dirname(os.path.abspath(self._path))
        os.makedirs(folder, mode=0o700, exist_ok=True)
        conn = sqlite3.connect(self._path, timeout=self._timeout, isolation_level=None,
                               check_same_thread=False)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise sqlite3.OperationalError(
                    f"the file cannot be put in WAL mode (journal_mode is {mode!r}); "
                    "is it on a network file system?"
                )
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{self._table}" ("key" TEXT PRIMARY KEY, '
                "payload BLOB NOT NULL, flags INTEGER NOT NULL) WITHOUT ROWID"
            )
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _run(self, what: str, work: Callable[[sqlite3.Connection], _T], *,
             begin: str | None) -> _T:
        """``work(conn)`` under the lock, in a ``begin`` transaction if one is given;
        a database error becomes :class:`StoreError`."""
        with self._lock:
            if self._closed:
                raise self._closed_error()
            try:
                conn = self._connection()
                if begin is None:
                    return work(conn)
                conn.execute(begin)
                try:
                    result = work(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    self._rollback(conn)
                    raise
                return result
            except (sqlite3.Error, OSError) as exc:
                self._count_failure()
                raise StoreError(
                    f"SQLite store {self._path!r} (table {self._table!r}) failed to {what}: "
                    f"{exc}"
                ) from exc

    def _rollback(self, conn: sqlite3.Connection) -> None:
        if not conn.in_transaction:
            return  # SQLite rolled back itself (or COMMIT failed before starting)
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            # The connection is in an unknown state: drop it, reconnect on the next call.
            self._conn = None
            conn.close()

    def get(self, key: str) -> Any:
        """The value stored under ``key``, or :data:`ABSENT`.

        Raises:
            KeyTypeError, InvalidKeyError: A bad key.
            StoreError: The database failed.
            SerializationError: The stored value cannot be decoded.
        """
        key = _check_key(key)
        row = self._run(f"get {key!r:.80}",
                        lambda conn: conn.execute(self._sql_get, (key,)).fetchone(), begin=None)
        self._count("reads", "rows_read", int(row is not None))
        if row is None:
            return ABSENT
        return self._serializer.loads(row[0], int(row[1]))

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The values of those ``keys`` that are present, read from one snapshot.

        Returns:
            ``{key: value}`` in the order of ``keys``, without the absent ones.

        Raises:
            KeyTypeError, InvalidKeyError: A bad key (nothing is read).
            StoreError: The database failed.
            SerializationError: A stored value cannot be decoded.
        """
        wanted = _check_keys(keys)
        if not wanted:
            if self._closed:
                raise self._closed_error()
            return {}

        def work(conn: sqlite3.Connection) -> list[Any]:
            rows: list[Any] = []
            for chunk in _chunks(wanted):
                sql = self._sql_get_chunk if len(chunk) == _CHUNK else \
                    self._sql_get_many(len(chunk))
                rows += conn.execute(sql, chunk).fetchall()
            return rows

        # One read transaction when there is more than one query: one snapshot.
        rows = self._run(f"get {_keys_text(len(wanted))}", work,
                         begin="BEGIN" if len(wanted) > _CHUNK else None)
        self._count("reads", "rows_read", len(rows))
        return self._decode_rows(wanted, rows)

    def put(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` (replacing any value there).

        Raises:
            KeyTypeError, InvalidKeyError: A bad key.
            ValueTypeError, ValueTooLargeError: The serializer refused the value.
            StoreError: The database failed.
        """
        key = _check_key(key)
        payload, flags = self._serializer.dumps(value)
        self._run(f"put {key!r:.80}",
                  lambda conn: conn.execute(self._sql_put, (key, payload, flags)),
                  begin="BEGIN IMMEDIATE")
        self._count("writes", "rows_written", 1)

    def put_many(self, items: Mapping[str, Any]) -> None:
        """Store every item in one transaction: all of them, or (on an error) none.

        Every key is checked and every value encoded before the transaction starts.

        Raises:
            KeyTypeError, InvalidKeyError: A bad key (nothing is written).
            ValueTypeError, ValueTooLargeError: The serializer refused a value (nothing
                is written).
            StoreError: The database failed (nothing is written).
        """
        rows = _encode_items(self._serializer, items)
        if not rows:
            if self._closed:
                raise self._closed_error()
            return
        def work(conn: sqlite3.Connection) -> None:
            # Many rows per statement: one sqlite3_step (one GIL release) per _ROWS
            # rows rather than per row, which a thread writing alongside feels.
            for start in range(0, len(rows), _ROWS):
                chunk = rows[start:start + _ROWS]
                sql = self._sql_put_chunk if len(chunk) == _ROWS else \
                    self._sql_put_many(len(chunk))
                conn.execute(sql, [x for row in chunk for x in row])

        self._run(f"put {_keys_text(len(rows))}", work, begin="BEGIN IMMEDIATE")
        self._count("writes", "rows_written", len(rows))

    def delete(self, key: str) -> bool:
        """Remove ``key``.

        Returns:
            Whether it was there.

        Raises:
            KeyTypeError, InvalidKeyError: A bad key.
            StoreError: The database failed.
        """
        key = _check_key(key)
        gone = self._run(f"delete {key!r:.80}",
                         lambda conn: conn.execute(self._sql_delete, (key,)).rowcount,
                         begin="BEGIN IMMEDIATE")
        self._count("deletes", "rows_deleted", gone)
        return gone > 0

    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove ``keys`` in one transaction.

        Returns:
            How many of them were there.

        Raises:
            KeyTypeError, InvalidKeyError: A bad key (nothing is deleted).
            StoreError: The database failed (nothing is deleted).
        """
        doomed = _check_keys(keys)
        if not doomed:
            if self._closed:
                raise self._closed_error()
            return 0
        def work(conn: sqlite3.Connection) -> int:
            gone = 0
            for chunk in _chunks(doomed):
                sql = self._sql_delete_chunk if len(chunk) == _CHUNK else \
                    self._sql_delete_many(len(chunk))
                gone += conn.execute(sql, chunk).rowcount
            return gone

        gone = self._run(f"delete {_keys_text(len(doomed))}", work, begin="BEGIN IMMEDIATE")
        self._count("deletes", "rows_deleted", gone)
        return gone

    def close(self) -> None:
        """Close this process's connection (idempotent); later calls raise StoreError."""
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                conn.close()

    def _before_fork(self) -> None:
        # Let no transaction of this process be open across fork(): SQLite keeps its
        # file locks in a process-wide table, and a child inheriting a connection that
        # held the write lock would see the database locked by itself. Waits for at
        # most one call under way.
        self._held_over_fork = self._lock.acquire(timeout=self._timeout)

    def _after_fork_in_parent(self) -> None:
        if self._held_over_fork:
            self._held_over_fork = False
            self._lock.release()

    def _after_fork_in_child(self) -> None:
        # No I/O: park the inherited connection, take a fresh lock (the old one is held
        # over the fork), reconnect on the next call.
        super()._after_fork_in_child()
        if self._conn is not None:
            _INHERITED_SQLITE.append(self._conn)
            self._conn = None
        self._lock = threading.Lock()
        self._held_over_fork = False
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"SQLiteStore({self._path!r}, table={self._table!r})"


# --- SQLAlchemy -----------------------------------------------------------------------------


class SQLAlchemyStore(_StoreBase):
    """A store in an SQL database through SQLAlchemy Core (PostgreSQL, SQLite, MySQL, ...).

    One table ``(key VARCHAR(1024) PRIMARY KEY, payload <binary>, flags INTEGER)``,
    created if missing. Each call is one transaction. Writes are upserts: ``INSERT ...
    ON CONFLICT (key) DO UPDATE`` on PostgreSQL and SQLite, a ``DELETE`` and an
    ``INSERT`` in one transaction elsewhere (retried if a concurrent writer inserted
    the same key first). ``get_many`` and ``delete_many`` send 500 keys per query.

    Keys compare as the column's collation does: exactly on PostgreSQL and SQLite;
    MySQL's default collations ignore case and trailing spaces (give the table a
    binary collation there).

    Args:
        url_or_engine: A database URL (the store owns the engine it creates, with
            ``pool_pre_ping`` so that connections broken by a server restart are
            replaced) or an SQLAlchemy ``Engine`` (left open by :meth:`close`).
        table: The table name.
        serializer: Encodes values; by default ``Serializer(pickle=False,
            compress_threshold=None)``. Readers and writers of one table must use the
            same options.

    Fork safety: in a forked child the engine's pool is replaced without closing the
    parent's connections (``engine.dispose(close=False)``), also for an engine passed
    in, as SQLAlchemy recommends.

    Raises:
        ConfigError: A bad option.
        StoreError: The table cannot be created.
    """

    def __init__(self, url_or_engine: str | sqlalchemy.URL | sqlalchemy.Engine, *,
                 table: str = "shardkit_cache_store",
                 serializer: Serializer | None = None) -> None:
        import sqlalchemy as sa

        self._init_base(serializer)
        self._table_name = _check_identifier(table, "table")
        self._owns_engine = not isinstance(url_or_engine, sa.Engine)
        if isinstance(url_or_engine, sa.Engine):
            self._engine = url_or_engine
        elif isinstance(url_or_engine, (str, sa.URL)):
            try:
                self._engine = sa.create_engine(url_or_engine, pool_pre_ping=True)
            except (sa.exc.ArgumentError, ImportError) as exc:
                raise ConfigError(f"bad database URL {url_or_engine!r}: {exc}") from None
        else:
            raise ConfigError(
                f"url_or_engine must be a database URL or an sqlalchemy Engine, "
                f"got {type(url_or_engine).__name__}"
            )
        metadata = sa.MetaData()
        self._table = sa.Table(
            self._table_name, metadata,
            sa.Column("key", sa.String(MAX_STORE_KEY_LENGTH), primary_key=True),
            sa.Column("payload", sa.LargeBinary, nullable=False),
            sa.Column("flags", sa.Integer, nullable=False),
        )
        #: The dialect's upsert, or None: DELETE + INSERT.
        self._upsert: sqlalchemy.Insert | None = self._make_upsert()
        self._create_table(metadata)
        self._register_fork_hook()

    @property
    def engine(self) -> sqlalchemy.Engine:
        """The SQLAlchemy engine in use."""
        return self._engine

    @property
    def table(self) -> str:
        """The table name."""
        return self._table_name

    def _make_upsert(self) -> sqlalchemy.Insert | None:
        dialect = self._engine.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            pg = pg_insert(self._table)
            return pg.on_conflict_do_update(
                index_elements=[self._table.c.key],
                set_={"payload": pg.excluded.payload, "flags": pg.excluded.flags},
            )
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            lite = sqlite_insert(self._table)
            return lite.on_conflict_do_update(
                index_elements=[self._table.c.key],
                set_={"payload": lite.excluded.payload, "flags": lite.excluded.flags},
            )
        return None

    def _create_table(self, metadata: sqlalchemy.MetaData) -> None:
        import sqlalchemy as sa

        try:
            metadata.create_all(self._engine, checkfirst=True)
        except sa.exc.SQLAlchemyError as exc:
            # another process may have created it between the check and the CREATE
            try:
                exists = sa.inspect(self._engine).has_table(self._table_name)
            except sa.exc.SQLAlchemyError:
                exists = False
            if not exists:
                raise StoreError(
                    f"cannot create the store table {self._table_name!r}: {_reason(exc)}"
                ) from exc

    def _run(self, what: str, work: Callable[[sqlalchemy.Connection], _T], *,
             write: bool) -> _T:
        """``work(conn)`` in one transaction (committed if ``write``); a database
        error becomes :class:`StoreError`."""
        import sqlalchemy as sa

        if self._closed:
            raise self._closed_error()
        try:
            if write:
                with self._engine.begin() as conn:
                    return work(conn)
            with self._engine.connect() as conn:
                return work(conn)
        except sa.exc.SQLAlchemyError as exc:
            self._count_failure()
            raise StoreError(
                f"SQL store {self._table_name!r} on {self._url()} failed to {what}: "
                f"{_reason(exc)}"
            ) from exc

    def _url(self) -> str:
        return self._engine.url.render_as_string(hide_password=True)

    def get(self, key: str) -> Any:
        """The value stored under ``key``, or :data:`ABSENT` (see :meth:`SQLiteStore.get`)."""
        import sqlalchemy as sa

        key = _check_key(key)
        t = self._table
        query = sa.select(t.c.payload, t.c.flags).where(t.c.key == key)
        row = self._run(f"get {key!r:.80}", lambda conn: conn.execute(query).first(),
                        write=False)
        self._count("reads", "rows_read", int(row is not None))
        if row is None:
            return ABSENT
        return self._serializer.loads(row[0], int(row[1]))

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The values of those ``keys`` that are present (see :meth:`SQLiteStore.get_many`);
        the queries run in one transaction."""
        import sqlalchemy as sa

        wanted = _check_keys(keys)
        if not wanted:
            if self._closed:
                raise self._closed_error()
            return {}
        t = self._table

        def work(conn: sqlalchemy.Connection) -> list[Any]:
            rows: list[Any] = []
            for chunk in _chunks(wanted):
                query = sa.select(t.c.key, t.c.payload, t.c.flags).where(t.c.key.in_(chunk))
                rows += conn.execute(query).all()
            return rows

        rows = self._run(f"get {_keys_text(len(wanted))}", work, write=False)
        self._count("reads", "rows_read", len(rows))
        return self._decode_rows(wanted, rows)

    def put(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` (see :meth:`SQLiteStore.put`)."""
        key = _check_key(key)
        payload, flags = self._serializer.dumps(value)
        self._write(f"put {key!r:.80}", [{"key": key, "payload": payload, "flags": flags}])

    def put_many(self, items: Mapping[str, Any]) -> None:
        """Store every item in one transaction (see :meth:`SQLiteStore.put_many`)."""
        rows = [{"key": k, "payload": p, "flags": f}
                for k, p, f in _encode_items(self._serializer, items)]
        if not rows:
            if self._closed:
                raise self._closed_error()
            return
        self._write(f"put {_keys_text(len(rows))}", rows)

    def _write(self, what: str, rows: list[dict[str, Any]]) -> None:
        import sqlalchemy as sa

        t = self._table
        upsert = self._upsert
        if upsert is not None:
            self._run(what, lambda conn: conn.execute(upsert, rows), write=True)
        else:
            def replace(conn: sqlalchemy.Connection) -> None:
                for chunk in _chunks([row["key"] for row in rows]):
                    conn.execute(sa.delete(t).where(t.c.key.in_(chunk)))
                conn.execute(sa.insert(t), rows)

            for attempt in range(3):
                try:
                    self._run(what, replace, write=True)
                    break
                except StoreError as exc:
                    # A concurrent writer inserted one of the keys between our DELETE
                    # and INSERT: the transaction was rolled back, run it again.
                    if attempt == 2 or not isinstance(exc.__cause__, sa.exc.IntegrityError):
                        raise
        self._count("writes", "rows_written", len(rows))

    def delete(self, key: str) -> bool:
        """Remove ``key``; whether it was there (see :meth:`SQLiteStore.delete`)."""
        import sqlalchemy as sa

        key = _check_key(key)
        t = self._table
        gone = self._run(f"delete {key!r:.80}",
                         lambda conn: int(conn.execute(sa.delete(t).where(t.c.key == key))
                                          .rowcount),
                         write=True)
        self._count("deletes", "rows_deleted", gone)
        return gone > 0

    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove ``keys`` in one transaction; how many were there (see
        :meth:`SQLiteStore.delete_many`)."""
        import sqlalchemy as sa

        doomed = _check_keys(keys)
        if not doomed:
            if self._closed:
                raise self._closed_error()
            return 0
        t = self._table

        def work(conn: sqlalchemy.Connection) -> int:
            return sum(int(conn.execute(sa.delete(t).where(t.c.key.in_(chunk))).rowcount)
                       for chunk in _chunks(doomed))

        gone = self._run(f"delete {_keys_text(len(doomed))}", work, write=True)
        self._count("deletes", "rows_deleted", gone)
        return gone

    def close(self) -> None:
        """Dispose of the engine if this store created it (idempotent); later calls
        raise StoreError."""
        self._closed = True
        if self._owns_engine:
            self._engine.dispose()

    def _after_fork_in_child(self) -> None:
        super()._after_fork_in_child()
        self._engine.dispose(close=False)

    def __repr__(self) -> str:
        return f"SQLAlchemyStore({self._url()!r}, table={self._table_name!r})"


def _reason(exc: BaseException) -> str:
    """The driver's own message: SQLAlchemy's adds the statement and its parameters
    (our payloads), which stay in the chained exception."""
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc).strip()
