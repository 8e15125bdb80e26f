"""Central range stores: where :class:`~idgen.RangeGenerator` leases its blocks of IDs.

A store keeps one counter per named sequence and hands out consecutive blocks
``[start, end)`` of it atomically, so no two callers (threads, processes, hosts) ever
get overlapping blocks. The first block of a new sequence starts at ``first``
(default 1: ID 0 is never issued). Blocks are not given back: IDs left in a block
when a process stops or crashes are skipped (gaps), never reissued.

Three stores: :class:`SQLiteStore` (the default: a file, safe across processes on one
host), :class:`RedisStore` (``INCRBY``, for many hosts; the Redis server must persist
its data) and :class:`SQLAlchemyStore` (a table in PostgreSQL, MySQL, SQLite, ...).
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from typing import TYPE_CHECKING, Protocol

from fastcore._forks import ForkAware

from ._errors import ConfigError, IdGenError, IdSpaceExhausted

if TYPE_CHECKING:
    import redis
    import sqlalchemy

__all__ = ("RangeStore", "RedisStore", "SQLAlchemyStore", "SQLiteStore", "StoreError")

#: Largest counter value the stores keep (a signed 64-bit column); blocks end below it.
_MAX_NEXT = (1 << 63) - 1
_MAX_NAME = 255
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}\Z")


class StoreError(IdGenError, ConnectionError):
    """The range store failed (unreachable, timed out, refused the write, ...).

    The store's own exception is chained as ``__cause__``.
    """


class RangeStore(Protocol):
    """What :class:`~idgen.RangeGenerator` needs from a central range store."""

    def allocate(self, name: str, size: int) -> tuple[int, int]:
        """Atomically reserve the next ``size`` IDs of sequence ``name``.

        Args:
            name: the sequence; a new name starts a new sequence whose first block
                starts at the store's ``first`` value (1 by default).
            size: how many IDs, >= 1.

        Returns:
            ``(start, end)``: the block ``[start, end)``, with ``end - start == size``,
            disjoint from every block handed out before, to any caller.

        Raises:
            StoreError: the store failed; no block was reserved for the caller (one
                may have been reserved and lost: a gap, never a duplicate).
            IdSpaceExhausted: the sequence would pass ``2**63 - 1``.
            ConfigError: a bad name or size.
        """
        ...

    def close(self) -> None:
        """Release connections (idempotent)."""
        ...


# --- shared checks and fork handling -------------------------------------------------------


def _check_block_request(name: object, size: object) -> None:
    if not isinstance(name, str) or not 0 < len(name) <= _MAX_NAME:
        raise ConfigError(
            f"name must be a non-empty str of at most {_MAX_NAME} characters, got {name!r}"
        )
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 1 << 40:
        raise ConfigError(f"size must be an int in [1, 2**40], got {size!r}")


def _check_first(first: object) -> int:
    if isinstance(first, bool) or not isinstance(first, int) or not 0 <= first < 1 << 62:
        raise ConfigError(f"first must be an int in [0, 2**62), got {first!r}")
    return first


def _check_identifier(value: object, what: str) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise ConfigError(
            f"{what} must be an SQL identifier (a letter or _, then letters, digits or _, "
            f"at most 63 characters), got {value!r}"
        )
    return value


def _exhausted(name: str, size: int) -> IdSpaceExhausted:
    return IdSpaceExhausted(
        f"sequence {name!r} cannot hand out {size} more IDs below 2**63 - 1"
    )


# --- SQLite ---------------------------------------------------------------------------------

#: Connections inherited through fork(): kept referenced in the child so that they are
#: never used or closed there (SQLite forbids carrying a connection across fork()).
_INHERITED_SQLITE: list[sqlite3.Connection] = []


class SQLiteStore(ForkAware):
    """Range store in an SQLite file: the embedded default, safe across processes on one host.

    The file holds one table ``(name TEXT PRIMARY KEY, next INTEGER)``; ``next`` is the
    first ID not handed out yet. An allocation is one ``BEGIN IMMEDIATE`` transaction
    (an upsert ``... RETURNING next``), so processes sharing the file serialise on
    SQLite's write lock; the file is in WAL mode with ``synchronous=FULL``, so a
    committed block survives a crash or power loss. Each process opens its own
    connection (one inherited through ``fork()`` is left alone and a new one opened).
    Thread safe. Needs SQLite >= 3.35 (``RETURNING``).

    Args:
        path: the database file (created, with its folder, if missing).
        timeout: seconds to wait for another process's write lock before failing.
        table: the table name.
        first: the first ID of a new sequence.

    Raises:
        ConfigError: a bad option.
        StoreError: the file cannot be opened or set up.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0,
                 table: str = "shardkit_id_ranges", first: int = 1) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or \
                not timeout >= 0:
            raise ConfigError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        if sqlite3.sqlite_version_info < (3, 35):
            raise ConfigError(
                f"SQLiteStore needs SQLite >= 3.35 (RETURNING), this is {sqlite3.sqlite_version}"
            )
        self._path = os.fspath(path)
        self._timeout = float(timeout)
        self._table = _check_identifier(table, "table")
        self._first = _check_first(first)
        self._lock = threading.Lock()
        self._held_over_fork = False
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._closed = False
        self._sql = (
            f'INSERT INTO "{self._table}" (name, next) VALUES (?, ?) '
            f"ON CONFLICT (name) DO UPDATE SET next = next + ? WHERE next <= ? "
            f"RETURNING next"
        )
        with self._lock:
            self._connection()
        self._register_fork_hook()

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    def _connection(self) -> sqlite3.Connection:
        # with self._lock held
        if self._closed:
            raise StoreError(f"the SQLite range store {self._path!r} is closed")
        if self._pid != os.getpid():  # fork() without the hook (should not happen)
            self._after_fork_in_child()
        if self._conn is not None:
            return self._conn
        try:
            folder = os.path.dirname(os.path.abspath(self._path))
            os.makedirs(folder, mode=0o700, exist_ok=True)
            conn = sqlite3.connect(self._path, timeout=self._timeout, isolation_level=None,
                                   check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute(
                    f'CREATE TABLE IF NOT EXISTS "{self._table}" '
                    "(name TEXT PRIMARY KEY, next INTEGER NOT NULL)"
                )
            except BaseException:
                conn.close()
                raise
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the SQLite range store {self._path!r}: {exc}") \
                from exc
        self._conn = conn
        return conn

    def allocate(self, name: str, size: int) -> tuple[int, int]:
        """Reserve the next ``size`` IDs of ``name`` (see :meth:`RangeStore.allocate`)."""
        _check_block_request(name, size)
        if self._first + size > _MAX_NEXT:
            raise _exhausted(name, size)
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    rows = conn.execute(
                        self._sql, (name, self._first + size, size, _MAX_NEXT - size)
                    ).fetchall()
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreError(
                    f"SQLite range store {self._path!r} failed to allocate {size} IDs of "
                    f"{name!r}: {exc}"
                ) from exc
        if not rows:
            raise _exhausted(name, size)
        end = int(rows[0][0])
        return end - size, end

    def close(self) -> None:
        """Close this process's connection (idempotent); later allocations fail."""
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                conn.close()

    def _before_fork(self) -> None:
        # Let no transaction of this process be open across fork(): SQLite keeps its
        # file locks in a process-wide table, and a child inheriting a connection that
        # held the write lock would see the database locked by itself (and wait for
        # `timeout`). Waits for at most one allocation under way.
        self._held_over_fork = self._lock.acquire(timeout=self._timeout)

    def _after_fork_in_parent(self) -> None:
        if getattr(self, "_held_over_fork", False):
            self._held_over_fork = False
            self._lock.release()

    def _after_fork_in_child(self) -> None:
        # No I/O: park the inherited connection, take a fresh lock (the old one is held
        # over the fork), reconnect on the next allocation.
        if self._conn is not None:
            _INHERITED_SQLITE.append(self._conn)
            self._conn = None
        self._lock = threading.Lock()
        self._held_over_fork = False
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"SQLiteStore({self._path!r}, table={self._table!r})"


# --- Redis ----------------------------------------------------------------------------------


class RedisStore(ForkAware):
    """Range store in Redis: ``INCRBY`` on one key per sequence, for many hosts.

    The key ``prefix + name`` holds the last ID handed out; ``INCRBY key size`` returns
    the new last ID ``L`` and the block is ``[L - size + 1, L + 1)`` (with the default
    ``first=1``, a missing key counts as 0, so the first block starts at 1).

    The server must keep its data: if the key is lost (a restart without persistence,
    a failover to a replica that missed the write, ``FLUSHALL``) the sequence starts
    again and repeats IDs. Use ``appendonly yes`` (``appendfsync always`` to survive a
    host crash or power loss, ``everysec`` survives a crash of the Redis process only).

    Args:
        url_or_client: a ``redis://`` URL (the store owns the client it creates) or a
            ``redis.Redis`` client (left open by :meth:`close`).
        prefix: prepended to sequence names to form the keys.
        first: the first ID of a new sequence; set with ``SET NX`` in the same
            ``MULTI`` as the first ``INCRBY`` when it is not 1.
        timeout: socket connect and read timeout in seconds, for a URL.

    Fork safety: a client created from a URL is rebuilt in a forked child; a client
    passed in relies on redis-py's own check (its pool resets itself in a new process).

    Raises:
        ConfigError: a bad option.
    """

    def __init__(self, url_or_client: str | redis.Redis, *,
                 prefix: str = "shardkit:idgen:", first: int = 1,
                 timeout: float = 5.0) -> None:
        import redis as redis_module

        if not isinstance(prefix, str):
            raise ConfigError(f"prefix must be a str, got {prefix!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or \
                not timeout > 0:
            raise ConfigError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        self._prefix = prefix
        self._first = _check_first(first)
        self._timeout = float(timeout)
        self._errors: tuple[type[BaseException], ...] = (redis_module.RedisError, OSError)
        self._url: str | None
        if isinstance(url_or_client, str):
            self._url = url_or_client
            self._client = self._connect()
        elif isinstance(url_or_client, redis_module.Redis):
            self._url = None
            self._client = url_or_client
        else:
            raise ConfigError(
                f"url_or_client must be a redis:// URL or a redis.Redis client, "
                f"got {type(url_or_client).__name__}"
            )
        self._register_fork_hook()

    def _connect(self) -> redis.Redis:
        import redis as redis_module
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        assert self._url is not None
        try:
            # One retry: a pooled connection may be stale after a server restart. A
            # retried INCRBY that had already been applied only leaves a gap.
            return redis_module.Redis.from_url(
                self._url, socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout, retry=Retry(NoBackoff(), 1),
            )
        except ValueError as exc:
            raise ConfigError(f"bad Redis URL {self._url!r}: {exc}") from None

    @property
    def client(self) -> redis.Redis:
        """The redis-py client in use."""
        return self._client

    def allocate(self, name: str, size: int) -> tuple[int, int]:
        """Reserve the next ``size`` IDs of ``name`` (see :meth:`RangeStore.allocate`)."""
        _check_block_request(name, size)
        key = self._prefix + name
        try:
            if self._first == 1:
                last = int(self._client.incrby(key, size))
            else:
                pipe = self._client.pipeline(transaction=True)
                pipe.set(key, self._first - 1, nx=True)
                pipe.incrby(key, size)
                last = int(pipe.execute()[1])
        except self._errors as exc:
            if "overflow" in str(exc):
                raise _exhausted(name, size) from exc
            raise StoreError(
                f"Redis range store failed to allocate {size} IDs of {name!r} "
                f"(key {key!r}): {exc}"
            ) from exc
        if last > _MAX_NEXT - 1:
            raise _exhausted(name, size)
        return last - size + 1, last + 1

    def close(self) -> None:
        """Close the client if this store created it (idempotent)."""
        if self._url is not None:
            self._client.close()

    def _after_fork_in_child(self) -> None:
        if self._url is not None:  # no I/O: a new client connects on first use
            self._client = self._connect()

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self._prefix!r}, client={self._client!r})"


# --- SQLAlchemy -----------------------------------------------------------------------------


class SQLAlchemyStore(ForkAware):
    """Range store in an SQL database through SQLAlchemy Core (PostgreSQL, MySQL, ...).

    One table ``(name VARCHAR(255) PRIMARY KEY, next BIGINT)``, created if missing;
    ``next`` is the first ID not handed out yet. An allocation is one transaction: an
    atomic ``UPDATE ... SET next = next + size ... RETURNING next`` where the dialect
    supports it (PostgreSQL, SQLite, MariaDB), else ``SELECT ... FOR UPDATE`` and an
    ``UPDATE`` (MySQL). A new sequence's row is inserted first; two processes racing
    to insert it are fine (the loser's unique-key error is ignored).

    Args:
        url_or_engine: a database URL (the store owns the engine it creates) or an
            SQLAlchemy ``Engine`` (left open by :meth:`close`).
        table: the table name.
        first: the first ID of a new sequence.

    Fork safety: in a forked child the engine's pool is replaced without closing the
    parent's connections (``engine.dispose(close=False)``), also for an engine passed
    in, as SQLAlchemy recommends.

    Raises:
        ConfigError: a bad option.
        StoreError: the table cannot be created.
    """

    def __init__(self, url_or_engine: str | sqlalchemy.URL | sqlalchemy.Engine, *,
                 table: str = "shardkit_id_ranges", first: int = 1) -> None:
        import sqlalchemy as sa

        self._first = _check_first(first)
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
            sa.Column("name", sa.String(_MAX_NAME), primary_key=True),
            sa.Column("next", sa.BigInteger, nullable=False),
        )
        #: UPDATE ... RETURNING in one statement; else SELECT ... FOR UPDATE + UPDATE.
        self._use_returning = bool(self._engine.dialect.update_returning)
        self._create_table(metadata)
        self._register_fork_hook()

    @property
    def engine(self) -> sqlalchemy.Engine:
        """The SQLAlchemy engine in use."""
        return self._engine

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
                    f"cannot create the range table {self._table_name!r}: {exc}"
                ) from exc

    def _bump(self, conn: sqlalchemy.Connection, name: str, size: int) -> int | None:
        """The new ``next`` after adding ``size``; None if the row was missing."""
        import sqlalchemy as sa

        t = self._table
        if self._use_returning:
            row = conn.execute(
                sa.update(t)
                .where(t.c.name == name, t.c.next <= _MAX_NEXT - size)
                .values(next=t.c.next + size)
                .returning(t.c.next)
            ).first()
            if row is not None:
                return int(row[0])
            current = conn.execute(sa.select(t.c.next).where(t.c.name == name)).first()
        else:
            current = conn.execute(
                sa.select(t.c.next).where(t.c.name == name).with_for_update()
            ).first()
            if current is not None and int(current[0]) <= _MAX_NEXT - size:
                end = int(current[0]) + size
                conn.execute(sa.update(t).where(t.c.name == name).values(next=end))
                return end
        if current is not None and int(current[0]) > _MAX_NEXT - size:
            raise _exhausted(name, size)
        return None  # missing (or created by another transaction since the UPDATE)

    def allocate(self, name: str, size: int) -> tuple[int, int]:
        """Reserve the next ``size`` IDs of ``name`` (see :meth:`RangeStore.allocate`)."""
        import sqlalchemy as sa

        _check_block_request(name, size)
        try:
            for _ in range(3):
                with self._engine.begin() as conn:
                    end = self._bump(conn, name, size)
                if end is not None:
                    return end - size, end
                try:  # a new sequence: create its row, then allocate as usual
                    with self._engine.begin() as conn:
                        conn.execute(sa.insert(self._table).values(name=name, next=self._first))
                except sa.exc.IntegrityError:
                    pass  # another process created it first
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(
                f"SQL range store {self._table_name!r} failed to allocate {size} IDs of "
                f"{name!r}: {exc}"
            ) from exc
        raise StoreError(f"the row of sequence {name!r} in {self._table_name!r} keeps vanishing")

    def close(self) -> None:
        """Dispose of the engine if this store created it (idempotent)."""
        if self._owns_engine:
            self._engine.dispose()

    def _after_fork_in_child(self) -> None:
        self._engine.dispose(close=False)

    def __repr__(self) -> str:
        return f"SQLAlchemyStore({self._engine.url!r}, table={self._table_name!r})"
