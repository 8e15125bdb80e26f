"""The write-back queue: writes acknowledged now, written to the store later, in batches.

:class:`WriteBackQueue` sits between a write policy and a :class:`~cachelib.Store` (the
system of record). ``put()`` and ``delete()`` record the key as *dirty* and return at
once; a background flusher thread writes the dirty keys to the store in batches. It
follows the data grids' write-behind (Hazelcast MapStore, Ignite, Infinispan, Ehcache):

* **Coalescing**: one pending write per key, the last one wins. A key keeps the place
  (and the age) of its first pending write, so a hot key is still written within
  ``max_delay`` of when it first became dirty.
* **Batches**: the flusher wakes when ``batch_size`` keys are dirty or the oldest dirty
  write is ``max_delay`` old, and writes up to ``batch_size`` keys: the puts with one
  ``store.put_many()``, then the deletes with one ``store.delete_many()`` (a batch holds
  each key once, so the order between the two calls does not matter). One batch is
  written at a time, so two writes of one key always reach the store in order.
* **Read-your-writes**: :meth:`WriteBackQueue.pending` returns the newest pending
  write of a key (a value, or :data:`TOMBSTONE` for a delete), including one that is
  being written right now, until the store has it (Ignite's ``loadAll``).
* **Failures never drop a write**: a failed batch is retried ``retries`` times with
  exponential backoff; then it goes back to the front of the pending set, the
  ``dead_letter`` hook is told, and the flusher tries again later (backing off up to
  ``max_backoff``), for as long as it takes (Hazelcast retries indefinitely too). Only
  :meth:`WriteBackQueue.discard` forgets pending writes.
* **Bounded**: at most ``max_pending`` distinct keys are pending (a full queue is
  flushed at once). A write of a new key beyond that blocks (``when_full="block"``, up
  to ``block_timeout``, then :class:`QueueFullError`) or is written straight to the
  store by the calling thread (``when_full="write_through"``, Infinispan's behaviour;
  it waits for the batch being written, so that writes of one key stay in order).
* **flush()** writes, from the calling thread, everything written before the call and
  says whether all of it reached the store.
* **Shutdown**: :meth:`WriteBackQueue.close` drains within a deadline (Infinispan's
  ``shutdown-timeout``) and returns the keys it could not write; an :mod:`atexit`
  handler does the same, with a short deadline, for queues nobody closed.

Durability. Without a journal a write lives only in this process until the store has
it: a crash loses the acknowledged writes not yet written, which ``stats()`` reports as
``loss_window_writes`` (at most about ``max_delay`` x the write rate while the store
keeps up). With ``journal=path`` every write is appended to a local file *before*
``put()`` returns, and a new queue on the same file replays it; what survives then
depends on ``fsync``:

=============  ===========================  ===============================================
``fsync``      process crash (kill -9)       machine crash (power loss, kernel panic)
=============  ===========================  ===============================================
``"always"``   nothing lost                  nothing lost (each ``put()`` waits for fsync;
                                             concurrent writers share one fsync)
``"interval"`` nothing lost (the kernel has  the writes of the last interval: the flusher
               the bytes once ``put()``      fsyncs at each cycle, about every
               returned)                     ``max_delay`` s (longer while one store call
                                             hangs)
``"never"``    nothing lost                  whatever the kernel had not written back
=============  ===========================  ===============================================

Replay re-queues *every* record in the journal (coalesced, in order) and flushes it
again: puts and deletes are idempotent, so writing a value the store already has is
harmless, as long as this queue is the only writer of its keys. If other processes write
the same keys to the store directly, a replay can overwrite their newer values; version
the rows in the store if that can happen. The journal is emptied whenever a flush leaves
nothing pending, and rewritten as a snapshot of the pending writes when it grows past
:data:`JOURNAL_ROTATE_BYTES` while writes keep coming (by the ``put()`` that crosses
the size, under the queue's lock: that one call pays for writing the snapshot). One
queue at a time may use a journal file (an exclusive ``flock``); a second one, in this
or another process, gets :class:`JournalLockedError`. With a journal every value must
be encodable by the journal's serializer (``put()`` raises before acknowledging one
that is not); without one, values are held as they are and never encoded here.

Journal format: a sequence of records, each ``length (4 bytes) | crc32 (4 bytes) |
body``, big-endian, the CRC (zlib's crc32) over the body; the body is ``op (1 byte,
b"P" put or b"D" delete) | key length (4 bytes) | key (UTF-8) | flags (4 bytes) |
payload`` with ``(payload, flags)`` from the :class:`~cachelib.Serializer` (a delete
has flags 0 and no payload). A damaged last record (a write torn by the crash) is
dropped with a logged warning; damage followed by intact records raises
:class:`JournalCorruptError` (nothing is guessed).

Fork. The parent owns its pending writes. In a child made by ``os.fork()`` (or
multiprocessing's fork start method) every queue is reset: nothing pending, no flusher
(one starts on the child's first write), counters at zero, so the child never writes the
parent's writes a second time. A queue with a journal is closed in the child (its
journal belongs to the parent; writes raise :class:`QueueClosedError`): create a new
queue with its own journal there. The store object is the store's business (the shipped
stores reopen their connections in a child).
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import fcntl
import itertools
import logging
import os
import struct
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Protocol

from ._errors import CacheError, ConfigError, KeyTypeError, SerializationError, ValueTypeError
from ._values import Serializer

__all__ = (
    "JOURNAL_ROTATE_BYTES",
    "NOT_PENDING",
    "TOMBSTONE",
    "JournalCorruptError",
    "JournalLockedError",
    "QueueClosedError",
    "QueueFullError",
    "WritableStore",
    "WriteBackQueue",
)

log = logging.getLogger("cachelib")

#: When the journal grows past this many bytes it is rewritten as a snapshot of the
#: pending writes (64 MiB).
JOURNAL_ROTATE_BYTES: Final = 64 * 2**20
#: Deadline of the :mod:`atexit` drain of queues that were not closed, in seconds.
ATEXIT_TIMEOUT: Final = 2.0

_WHEN_FULL: Final = ("block", "write_through")
_FSYNC: Final = ("always", "interval", "never")
_HEADER = struct.Struct(">II")  # body length, crc32(body)
_U32 = struct.Struct(">I")
_OP_PUT: Final = b"P"
_OP_DELETE: Final = b"D"
_MIN_BODY: Final = 9  # op, key length, flags
_MAX_RECORD: Final = 2**32 - 1


class _Marker(enum.Enum):
    # Enum members: single objects that survive pickling and copying, and that type
    # checkers narrow with ``is`` (like cachelib.ABSENT).
    TOMBSTONE = "TOMBSTONE"
    NOT_PENDING = "NOT_PENDING"

    def __repr__(self) -> str:
        return f"cachelib.{self.value}"

    __str__ = __repr__


#: A pending delete, as :meth:`WriteBackQueue.pending` returns it.
TOMBSTONE: Final = _Marker.TOMBSTONE
#: What :meth:`WriteBackQueue.pending` returns for a key with no pending write (read the
#: cache or the store). Compare with ``is``.
NOT_PENDING: Final = _Marker.NOT_PENDING


class QueueFullError(CacheError):
    """``max_pending`` keys were pending and no room came within ``block_timeout``
    (``when_full="block"``); the write was not accepted."""


class QueueClosedError(CacheError, RuntimeError):
    """The queue was closed (or belongs to the parent of this forked process); the
    write was not accepted."""


class JournalCorruptError(CacheError, ValueError):
    """The journal holds a damaged record followed by intact ones (not a torn last
    write); the message gives the file and the byte offset. Nothing was replayed."""


class JournalLockedError(CacheError, BlockingIOError):
    """Another queue (in this or another process) holds the journal file's lock."""


class WritableStore(Protocol):
    """What the queue needs of a :class:`~cachelib.Store`: its write methods.

    Each batch call is one transaction; a failure raises (any exception counts as a
    failure and is retried).
    """

    def put(self, key: str, value: Any) -> None: ...

    def put_many(self, items: Mapping[str, Any]) -> None: ...

    def delete(self, key: str) -> bool: ...

    def delete_many(self, keys: Iterable[str]) -> int: ...


DeadLetterHook = Callable[[list[tuple[str, Any]], BaseException], object]


class _Entry:
    """One pending write of a key: the newest value (or TOMBSTONE), its journal record,
    when the key first became dirty, its order, and how many writes it coalesces."""

    __slots__ = ("n", "record", "seq", "t", "value")

    def __init__(self, value: Any, record: bytes | None, t: float, seq: int) -> None:
        self.value = value
        self.record = record
        self.t = t
        self.seq = seq
        self.n = 1


_Batch = list[tuple[str, _Entry]]

# Every queue (weakly), for the fork hook; the open ones, for the atexit drain.
_ALL: weakref.WeakSet[WriteBackQueue] = weakref.WeakSet()
_OPEN: weakref.WeakSet[WriteBackQueue] = weakref.WeakSet()


def _check_number(name: str, value: object, minimum: float, *, integer: bool = False) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (integer and not isinstance(value, int))
        or value < minimum
    ):
        what = "an int" if integer else "a number"
        raise ConfigError(f"{name} must be {what} >= {minimum}, got {value!r}")


class WriteBackQueue:
    """Coalescing, bounded, retrying write-behind buffer in front of a store.

    ``put()`` / ``delete()`` return at once; a daemon flusher thread (started on the
    first write) writes batches to the store. See the module documentation for the
    semantics, the durability of each journal mode and fork behaviour.

    Values are held by reference until they are written: do not mutate a value after
    putting it (with a journal, the journal keeps the serialized value of the moment).

    Args:
        store: The system of record (``put``, ``put_many``, ``delete``,
            ``delete_many``).
        batch_size: Most keys per store batch; a batch is written as soon as this many
            keys are dirty.
        max_delay: Seconds the oldest dirty write may wait before its batch is written.
        max_pending: Most distinct keys pending (dirty or being written).
        when_full: What a write of a new key does when ``max_pending`` keys are pending:
            ``"block"`` (wait up to ``block_timeout`` s for room, then raise
            :class:`QueueFullError`) or ``"write_through"`` (write it to the store from
            the calling thread; the store's error reaches the caller).
        block_timeout: Seconds a blocked write waits for room; also the longest a
            write-through waits for the batch being written.
        retries: How many times a failed batch is retried before it is handed back to
            the pending set and reported to ``dead_letter``.
        backoff: First wait between retries, in seconds; doubled each time.
        max_backoff: Longest wait between retries (and between failed flush cycles).
        dead_letter: Called as ``dead_letter(items, exc)`` with the batch's
            ``[(key, value or TOMBSTONE), ...]`` and the last error when a batch failed
            all its retries. The items stay pending (they are retried later); the hook
            may call :meth:`discard` to give them up. Its exceptions are logged.
        journal: Path of an append-only journal file that makes acknowledged writes
            survive a crash of this process (see ``fsync``); replayed on construction.
        fsync: ``"always"`` (fsync before ``put()`` returns), ``"interval"`` (fsync at
            each flush cycle) or ``"never"``; only with a journal.
        serializer: Encodes values for the journal (default
            ``Serializer(pickle=True)``: the journal is local and read only by this
            code). Unused without a journal.

    Raises:
        ConfigError: An option is invalid.
        TypeError: ``store`` lacks a write method.
        JournalLockedError: Another queue holds the journal.
        JournalCorruptError: The journal is damaged beyond a torn last record.
        SerializationError: A journal record's value cannot be decoded.
        OSError: The journal cannot be opened, read or written.
    """

    def __init__(
        self,
        store: WritableStore,
        *,
        batch_size: int = 500,
        max_delay: float = 0.05,
        max_pending: int = 100_000,
        when_full: str = "block",
        block_timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.05,
        max_backoff: float = 2.0,
        dead_letter: DeadLetterHook | None = None,
        journal: str | os.PathLike[str] | None = None,
        fsync: str = "interval",
        serializer: Serializer | None = None,
    ) -> None:
        for method in ("put", "put_many", "delete", "delete_many"):
            if not callable(getattr(store, method, None)):
                raise TypeError(
                    f"store must have a {method}() method (a cachelib Store); "
                    f"got {type(store).__name__}"
                )
        _check_number("batch_size", batch_size, 1, integer=True)
        _check_number("max_delay", max_delay, 0)
        _check_number("max_pending", max_pending, 1, integer=True)
        _check_number("block_timeout", block_timeout, 0)
        _check_number("retries", retries, 0, integer=True)
        _check_number("backoff", backoff, 0)
        _check_number("max_backoff", max_backoff, 0)
        if when_full not in _WHEN_FULL:
            raise ConfigError(f"when_full must be 'block' or 'write_through', got {when_full!r}")
        if fsync not in _FSYNC:
            raise ConfigError(f"fsync must be 'always', 'interval' or 'never', got {fsync!r}")
        if max_backoff < backoff:
            raise ConfigError(f"max_backoff ({max_backoff!r}) is below backoff ({backoff!r})")
        if dead_letter is not None and not callable(dead_letter):
            raise ConfigError(f"dead_letter must be callable or None, got {dead_letter!r}")
        if serializer is not None and not isinstance(serializer, Serializer):
            raise ConfigError(f"serializer must be a cachelib Serializer, got {serializer!r}")
        self._store = store
        self.batch_size = batch_size
        self.max_delay = float(max_delay)
        self.max_pending = max_pending
        self.when_full = when_full
        self.block_timeout = float(block_timeout)
        self.retries = retries
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.dead_letter = dead_letter
        self.fsync = fsync
        self.journal = None if journal is None else os.fspath(journal)
        self._init_state()
        self._journal: _Journal | None = None
        if self.journal is not None:
            journal_file = _Journal(self.journal, fsync, serializer or Serializer(pickle=True))
            self._replay(journal_file.open())
            self._journal = journal_file
        _ALL.add(self)
        _OPEN.add(self)
        if self._dirty:
            with self._lock:
                self._start_flusher()

    def _init_state(self) -> None:
        """Fresh locks, an empty pending set and zero counters (construction, fork)."""
        self._lock = threading.Lock()  # the pending set, the journal appends, counters
        self._wake = threading.Condition(self._lock)  # the flusher's sleep
        self._room = threading.Condition(self._lock)  # writers waiting for room
        self._mutex = threading.Lock()  # held by whoever writes a batch to the store
        self._stop = threading.Event()
        self._close_lock = threading.Lock()
        self._dirty: dict[str, _Entry] = {}
        self._inflight: dict[str, _Entry] = {}
        self._discarded: set[str] = set()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._closed_why = "the queue is closed"
        self._close_result: list[str] | None = None
        self._seq = 0
        self._room_waiters = 0
        self._retry_at = 0.0
        self._cycle_delay = self.backoff
        self._unflushed = 0  # acknowledged writes not yet in the store
        self._counts = dict.fromkeys(
            (
                "writes",
                "coalesced",
                "flushes",
                "rows_written",
                "deletes_written",
                "retries",
                "failures",
                "dead_lettered",
                "write_through",
                "replayed",
            ),
            0,
        )

    # --- writes ------------------------------------------------------------------------

    def put(self, key: str, value: Any) -> None:
        """Queue ``value`` for ``key``; returns once the write is acknowledged.

        Acknowledged means held in this process (and, with a journal, appended to it,
        and fsynced with ``fsync="always"``). A later write of the same key replaces
        it (coalescing).

        Args:
            key: The key (str).
            value: The value; held by reference until written.

        Raises:
            KeyTypeError: ``key`` is not a str.
            QueueFullError: ``when_full="block"`` and no room came in time.
            QueueClosedError: The queue is closed.
            ValueTypeError: With a journal: the serializer cannot encode the value.
            Exception: ``when_full="write_through"``: whatever the store raised.
        """
        if type(key) is not str:
            raise KeyTypeError(f"a write-back key must be a str, not {type(key).__name__}")
        if value is TOMBSTONE:
            self.delete(key)
            return
        if value is NOT_PENDING:
            raise ValueTypeError("NOT_PENDING is a marker, it cannot be stored")
        journal = self._journal
        if journal is None:
            # The common case first, in as few steps as possible: a key already dirty
            # takes the new value (coalescing); no room check, no new entry.
            with self._lock:
                entry = self._dirty.get(key)
                if entry is not None and not self._closed:
                    entry.value = value
                    entry.n += 1
                    self._unflushed += 1
                    counts = self._counts
                    counts["writes"] += 1
                    counts["coalesced"] += 1
                    return
            self._write(key, value, None)
            return
        self._write(key, value, journal.encode(_OP_PUT, key, value))

    def delete(self, key: str) -> None:
        """Queue a delete of ``key`` (a :data:`TOMBSTONE`); same contract as :meth:`put`."""
        if type(key) is not str:
            raise KeyTypeError(f"a write-back key must be a str, not {type(key).__name__}")
        journal = self._journal
        record = None if journal is None else journal.encode(_OP_DELETE, key, TOMBSTONE)
        self._write(key, TOMBSTONE, record)

    def _write(self, key: str, value: Any, record: bytes | None) -> None:
        deadline = 0.0
        end = 0
        while True:
            with self._lock:
                if self._closed:
                    raise QueueClosedError(f"cannot write {key!r}: {self._closed_why}")
                dirty = self._dirty
                entry = dirty.get(key)
                if (
                    entry is None
                    and len(dirty) + len(self._inflight) >= self.max_pending
                    and not self._has_room(key)
                ):
                    if self.when_full == "block":
                        if not deadline:
                            deadline = time.monotonic() + self.block_timeout
                        self._wait_for_room(key, deadline)
                        continue
                else:
                    journal = self._journal
                    if journal is not None and record is not None:
                        journal.append(record)
                    counts = self._counts
                    counts["writes"] += 1
                    self._unflushed += 1
                    if entry is not None:
                        entry.value = value
                        entry.record = record
                        entry.n += 1
                        counts["coalesced"] += 1
                    else:
                        self._seq += 1
                        dirty[key] = _Entry(value, record, time.monotonic(), self._seq)
                        n = len(dirty)
                        if n == 1 or n == self.batch_size:
                            self._wake.notify()
                    if self._thread is None:
                        self._start_flusher()
                    if journal is not None:
                        if journal.size > journal.rotate_at:
                            self._rotate()
                        end = journal.appended
                    break
            if self._write_through(key, value, record):
                return
        if record is not None and self.fsync == "always":
            self._sync(end)

    def _has_room(self, key: str) -> bool:
        """Whether a key not yet dirty may be added (called with the lock held)."""
        dirty = self._dirty
        if len(dirty) + len(self._inflight) < self.max_pending or key in self._inflight:
            return True  # a key being written already counts as pending
        pending = len(dirty) + sum(1 for k in self._inflight if k not in dirty)
        return pending < self.max_pending

    def _wait_for_room(self, key: str, deadline: float) -> None:
        """Block (lock held) until there may be room; raise at the deadline."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise QueueFullError(
                f"write-back queue full: {self.max_pending} keys pending and no room "
                f"within {self.block_timeout} s for {key!r} (is the store keeping up? "
                "see stats())"
            )
        self._room_waiters += 1
        try:
            self._wake.notify()  # a full queue is ripe: flush now
            self._room.wait(left)
        finally:
            self._room_waiters -= 1

    def _write_through(self, key: str, value: Any, record: bytes | None) -> bool:
        """Write one item to the store from this thread (queue full). False: retry the
        queued path (room appeared, or the key became pending meanwhile)."""
        if not self._mutex.acquire(timeout=self.block_timeout):
            raise QueueFullError(
                f"write-back queue full and the store busy with a batch for over "
                f"{self.block_timeout} s; {key!r} was not written"
            )
        try:
            with self._lock:
                if self._closed:
                    raise QueueClosedError(f"cannot write {key!r}: {self._closed_why}")
                if key in self._dirty or self._has_room(key):
                    return False
                self._seq += 1
                # Readers see it, newer writes queue after it; no record, so that a
                # journal rotation meanwhile does not keep a write that may yet fail.
                entry = _Entry(value, None, time.monotonic(), self._seq)
                self._inflight[key] = entry
            try:
                if value is TOMBSTONE:
                    self._store.delete(key)
                else:
                    self._store.put(key, value)
            except BaseException:
                with self._lock:
                    if self._inflight.get(key) is entry:
                        del self._inflight[key]
                    self._room.notify_all()
                raise
            with self._lock:
                if self._inflight.get(key) is entry:
                    del self._inflight[key]
                counts = self._counts
                counts["writes"] += 1
                counts["write_through"] += 1
                if value is TOMBSTONE:
                    counts["deletes_written"] += 1
                else:
                    counts["rows_written"] += 1
                journal = self._journal
                end = 0
                if record is not None and journal is not None:
                    # Journal it now that the store has it, so that an older record of
                    # the key is not replayed over it; a newer pending write of the key
                    # (journaled before this line) goes after it again.
                    newer = self._dirty.get(key)
                    if newer is not None and newer.record is not None:
                        record = newer.record
                    journal.append(record)
                    if journal.size > journal.rotate_at:
                        self._rotate()
                    end = journal.appended
            if end and self.fsync == "always":
                self._sync(end)
            return True
        finally:
            self._mutex.release()

    # --- reads -------------------------------------------------------------------------

    def pending(self, key: str) -> Any:
        """The newest pending write of ``key``.

        Args:
            key: The key.

        Returns:
            The value, :data:`TOMBSTONE` for a pending delete, or :data:`NOT_PENDING`
            when the store (or the cache) is up to date for this key. A write being
            written to the store right now counts as pending until the store has it.
        """
        with self._lock:
            entry = self._dirty.get(key) or self._inflight.get(key)
        return NOT_PENDING if entry is None else entry.value

    def pending_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """:meth:`pending` for many keys under one lock: ``{key: value or TOMBSTONE}``
        for the keys with a pending write (the others are left out)."""
        out: dict[str, Any] = {}
        with self._lock:
            dirty, inflight = self._dirty, self._inflight
            for key in keys:
                entry = dirty.get(key) or inflight.get(key)
                if entry is not None:
                    out[key] = entry.value
        return out

    def __len__(self) -> int:
        """How many distinct keys are pending."""
        with self._lock:
            return self._pending_count()

    def _pending_count(self) -> int:
        dirty = self._dirty
        return len(dirty) + sum(1 for k in self._inflight if k not in dirty)

    def _pending_keys(self) -> list[str]:
        dirty = self._dirty
        return [k for k in self._inflight if k not in dirty] + list(dirty)

    # --- the flusher -------------------------------------------------------------------

    def _start_flusher(self) -> None:
        """Start the flusher thread (lock held)."""
        thread = threading.Thread(target=self._run, name="cachelib-writeback", daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:  # interpreter shutdown: close() drains from its thread
            log.debug("write-back flusher not started: %s", exc)
            return
        self._thread = thread

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._stop.is_set():
                        wait = self._next_event_in(time.monotonic())
                        if wait is not None and wait <= 0:
                            break
                        self._wake.wait(wait)
                    if self._stop.is_set():
                        return
                self._sync_if_due()
                self._flush_ripe()
        except BaseException:  # pragma: no cover - a bug; never die silently
            log.exception("write-back flusher stopped by an unexpected error")
            raise

    def _next_event_in(self, now: float) -> float | None:
        """Seconds until the flusher has something to do (lock held); None: nothing."""
        wait: float | None = None
        if self._dirty:
            wait = self._ripe_in(now)
        journal = self._journal
        if self.fsync == "interval" and journal is not None and journal.synced < journal.appended:
            due = journal.last_sync + self.max_delay - now
            wait = due if wait is None else min(wait, due)
        return wait

    def _ripe_in(self, now: float) -> float:
        """Seconds until a batch is due (lock held, something dirty); <= 0: now."""
        if self._stop.is_set():
            return 0.0
        if now < self._retry_at:
            return self._retry_at - now
        n = len(self._dirty)
        if n >= self.batch_size or n >= self.max_pending or self._room_waiters:
            return 0.0
        first = next(iter(self._dirty.values()))
        return first.t + self.max_delay - now

    def _flush_ripe(self) -> None:
        """Write batches while one is due (flusher thread)."""
        letters: list[tuple[_Batch, BaseException]] = []
        with self._mutex:
            while not self._stop.is_set():
                with self._lock:
                    if not self._dirty or self._ripe_in(time.monotonic()) > 0:
                        break
                    batch = self._take()
                self._sync_if_due()
                failed = self._write_batch(batch, None, letters, in_flusher=True)
                if failed:
                    break
        self._deliver(letters)

    def _take(self) -> _Batch:
        """Move the first ``batch_size`` dirty keys to the in-flight set (lock held)."""
        dirty, inflight = self._dirty, self._inflight
        batch: _Batch = []
        for key in list(itertools.islice(dirty, self.batch_size)):
            entry = dirty.pop(key)
            inflight[key] = entry
            batch.append((key, entry))
        return batch

    def _write_batch(
        self,
        batch: _Batch,
        deadline: float | None,
        letters: list[tuple[_Batch, BaseException]],
        *,
        in_flusher: bool,
    ) -> bool:
        """Write one batch with retries (mutex held) and settle it; True if it failed.

        Every way out settles the batch: what the store took is forgotten, the rest
        goes back to the pending set (also on KeyboardInterrupt and the like).
        """
        puts = {k: e.value for k, e in batch if e.value is not TOMBSTONE}
        dels = [k for k, e in batch if e.value is TOMBSTONE]
        puts_done, dels_done = not puts, not dels
        delay = self.backoff
        attempt = 0
        counts = self._counts
        error: BaseException | None = None
        gave_up: BaseException | None = None
        try:
            while True:
                try:
                    if not puts_done:
                        self._store.put_many(puts)
                        puts_done = True
                    if not dels_done:
                        self._store.delete_many(dels)
                        dels_done = True
                    return False
                except Exception as exc:
                    counts["failures"] += 1
                    log.debug("write-back batch of %d keys failed: %r", len(batch), exc)
                    error = exc
                if attempt >= self.retries:
                    gave_up = error
                    letters.append(
                        ([kv for kv in batch if not self._done(kv, puts_done, dels_done)], error)
                    )
                    self._cycle_delay = min(
                        max(self._cycle_delay * 2, delay, 0.001), max(self.max_backoff, 0.001)
                    )
                    with self._lock:
                        self._retry_at = time.monotonic() + self._cycle_delay
                    return True
                if deadline is not None and time.monotonic() + delay > deadline:
                    return True  # out of time: back to the pending set, no dead letter
                if in_flusher:
                    self._pause(delay)
                    if self._stop.is_set():  # close() takes over, with its deadline
                        return True
                else:
                    time.sleep(delay)
                attempt += 1
                counts["retries"] += 1
                delay = min(delay * 2, self.max_backoff)
        finally:
            self._settle(batch, puts_done, dels_done, gave_up=gave_up)

    @staticmethod
    def _done(item: tuple[str, _Entry], puts_done: bool, dels_done: bool) -> bool:
        return dels_done if item[1].value is TOMBSTONE else puts_done

    def _settle(
        self,
        batch: _Batch,
        puts_done: bool,
        dels_done: bool,
        *,
        gave_up: BaseException | None,
    ) -> None:
        """Forget the written part of a batch; hand the rest back to the front of the
        pending set, merged with any newer write of the same key (mutex held)."""
        written = [kv for kv in batch if self._done(kv, puts_done, dels_done)]
        back = [kv for kv in batch if not self._done(kv, puts_done, dels_done)]
        counts = self._counts
        with self._lock:
            inflight, dirty = self._inflight, self._dirty
            for key, entry in batch:
                if inflight.get(key) is entry:
                    del inflight[key]
            for _key, entry in written:
                self._unflushed -= entry.n
                if entry.value is TOMBSTONE:
                    counts["deletes_written"] += 1
                else:
                    counts["rows_written"] += 1
            if back:
                front: dict[str, _Entry] = {}
                for key, entry in back:
                    if key in self._discarded:
                        self._unflushed -= entry.n
                        continue
                    newer = dirty.pop(key, None)
                    if newer is not None:  # keep the newer value at the older place
                        newer.t, newer.seq = entry.t, entry.seq
                        newer.n += entry.n
                        entry = newer
                    front[key] = entry
                front.update(dirty)
                self._dirty = front
                if gave_up is not None:
                    counts["dead_lettered"] += 1
            else:
                counts["flushes"] += 1
                self._cycle_delay = self.backoff
                self._retry_at = 0.0
            if not inflight:
                self._discarded.clear()
            if not dirty and not inflight and not back and self._journal is not None:
                self._journal.truncate()
            if self._room_waiters:
                self._room.notify_all()
        if gave_up is not None:
            log.warning(
                "write-back: a batch of %d keys failed %d times (%r); it stays pending "
                "and is retried later",
                len(back),
                self.retries + 1,
                gave_up,
            )

    def _pause(self, seconds: float) -> None:
        """Sleep in the flusher, waking for close() and for interval fsyncs."""
        end = time.monotonic() + seconds
        while not self._stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return
            step = left
            if self.fsync == "interval" and self._journal is not None:
                step = min(step, max(self.max_delay, 0.001))
            self._stop.wait(step)
            self._sync_if_due()

    def _deliver(self, letters: list[tuple[_Batch, BaseException]]) -> None:
        """Call the dead-letter hook (no lock held, so it may call discard())."""
        hook = self.dead_letter
        if hook is None:
            return
        for batch, exc in letters:
            items = [(key, entry.value) for key, entry in batch]
            try:
                hook(items, exc)
            except Exception:
                log.exception("write-back dead_letter hook raised (ignored)")

    # --- flush, discard, close ---------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Write every write made before this call to the store, from this thread.

        Args:
            timeout: Seconds to keep trying (failed batches are retried with backoff
                until then). None: give each batch its ``retries`` and stop at the first
                one that still fails.

        Returns:
            True when every write made before the call has reached the store (writes
            made meanwhile by other threads may still be pending).
        """
        if timeout is not None:
            _check_number("timeout", timeout, 0)
        if self._in_store_call():
            return False
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._seq
        return self._drain(deadline, target)

    def _in_store_call(self) -> bool:
        # The flusher thread calling flush()/close() (from the dead-letter hook after
        # the mutex was released is fine; during a store call it would deadlock).
        return threading.current_thread() is self._thread and self._mutex.locked()

    def _drain(self, deadline: float | None, target: int | None) -> bool:
        """Write batches from this thread until nothing up to ``target`` (a sequence
        number; None: everything) is pending, or the deadline passes."""
        letters: list[tuple[_Batch, BaseException]] = []
        wait = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._mutex.acquire(timeout=wait):
            return False
        try:
            while True:
                with self._lock:
                    dirty = self._dirty
                    if not dirty or (
                        target is not None and next(iter(dirty.values())).seq > target
                    ):
                        return True
                    if deadline is not None and time.monotonic() >= deadline:
                        return False
                    batch = self._take()
                if self._write_batch(batch, deadline, letters, in_flusher=False):
                    if deadline is None:
                        return False
                    pause = min(self._cycle_delay, deadline - time.monotonic())
                    if pause <= 0:
                        return False
                    time.sleep(pause)
        finally:
            self._mutex.release()
            self._deliver(letters)

    def discard(self, keys: Iterable[str] | None = None) -> list[str]:
        """Forget pending writes: they will not reach the store (the one way a write can
        be lost). A write being written at this moment may still land.

        Args:
            keys: The keys to forget; None forgets every pending write.

        Returns:
            The keys that had a pending write and were discarded.
        """
        with self._lock:
            dirty, inflight = self._dirty, self._inflight
            wanted = self._pending_keys() if keys is None else list(dict.fromkeys(keys))
            gone: list[str] = []
            for key in wanted:
                entry = dirty.pop(key, None)
                busy = inflight.get(key)
                if entry is None and busy is None:
                    continue
                if entry is not None:
                    self._unflushed -= entry.n
                if busy is not None:
                    self._discarded.add(key)
                gone.append(key)
            if gone and self._journal is not None:
                self._rotate()
            if self._room_waiters:
                self._room.notify_all()
        if gone:
            log.warning("write-back: %d pending writes discarded: %s", len(gone), gone[:20])
        return gone

    def close(self, timeout: float = 10.0) -> list[str]:
        """Stop accepting writes, drain within ``timeout`` seconds, stop the flusher.

        Idempotent: a second call returns the first one's result. With a journal, the
        writes not drained stay in it and a queue opened on it later replays them.

        Args:
            timeout: Deadline for the drain, in seconds (a store call in progress at
                the deadline cannot be interrupted; it is not waited for).

        Returns:
            The keys whose pending writes did not reach the store (also logged).
        """
        _check_number("timeout", timeout, 0)
        with self._close_lock:
            if self._close_result is not None:
                return list(self._close_result)
            deadline = time.monotonic() + timeout
            with self._lock:
                self._closed = True
                self._stop.set()
                self._wake.notify_all()
                self._room.notify_all()
                thread = self._thread
            own = thread is threading.current_thread()
            if not own:
                self._drain(deadline, None)
                if thread is not None:
                    thread.join(max(0.0, deadline - time.monotonic()))
            with self._lock:
                left = self._pending_keys()
                journal, self._journal = self._journal, None
                if journal is not None:
                    try:
                        if left:
                            self._sync(journal.appended, journal)
                        else:
                            journal.truncate()
                    except OSError:
                        log.exception("write-back journal: fsync at close failed")
                    journal.close()
            self._close_result = left
            _OPEN.discard(self)
        if left:
            log.warning(
                "write-back queue closed with %d writes not in the store%s: %s",
                len(left),
                " (kept in the journal)" if self.journal else " (lost)",
                left[:50],
            )
        return list(left)

    def __enter__(self) -> WriteBackQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<WriteBackQueue {state} pending={len(self)} batch_size={self.batch_size} "
            f"max_delay={self.max_delay} journal={self.journal!r}>"
        )

    # --- stats -------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters and the current state.

        Returns:
            ``pending`` (distinct keys), ``writes`` (acknowledged puts and deletes),
            ``coalesced`` (writes that replaced a pending one), ``flushes`` (batches
            written whole), ``rows_written`` / ``deletes_written`` (keys the store
            took), ``write_through`` (writes sent straight to the store because the
            queue was full), ``retries``, ``failures`` (store calls that raised),
            ``dead_lettered`` (batches that failed all retries and went back to the
            pending set), ``replayed`` (journal records replayed at start),
            ``journal_bytes``, ``oldest_pending_age_s`` and ``loss_window_writes``:
            acknowledged writes a crash would lose right now. Without a journal, every
            write not yet in the store; with one, a process crash loses none and the
            figure is what a machine crash would lose (writes not in the store and not
            yet fsynced; 0 with ``fsync="always"``).
        """
        now = time.monotonic()
        with self._lock:
            out: dict[str, Any] = dict(self._counts)
            out["pending"] = self._pending_count()
            journal = self._journal
            out["journal_bytes"] = 0 if journal is None else journal.size
            oldest = [e.t for e in self._inflight.values()]
            if self._dirty:
                oldest.append(next(iter(self._dirty.values())).t)
            out["oldest_pending_age_s"] = max(0.0, now - min(oldest)) if oldest else 0.0
            loss = self._unflushed
            if journal is not None and self.fsync != "never":
                loss = min(loss, journal.records - journal.records_synced)
            out["loss_window_writes"] = max(0, loss)
        return out

    # --- the journal -------------------------------------------------------------------

    def _sync(self, upto: int, journal: _Journal | None = None) -> None:
        """fsync the journal up to position ``upto``; an error reaches the caller."""
        journal = journal or self._journal
        if journal is not None:
            journal.sync(upto)

    def _sync_if_due(self) -> None:
        """The ``"interval"`` fsync, from the flusher thread."""
        journal = self._journal
        if (
            journal is None
            or self.fsync != "interval"
            or journal.synced >= journal.appended
            or time.monotonic() - journal.last_sync < self.max_delay
        ):
            return
        try:
            journal.sync(journal.appended)
        except OSError:
            journal.last_sync = time.monotonic()  # try again next interval, do not spin
            log.exception("write-back journal: fsync failed")

    def _rotate(self) -> None:
        """Rewrite the journal as a snapshot of the pending writes (lock held)."""
        journal = self._journal
        if journal is None:
            return
        dirty = self._dirty
        records = [
            e.record
            for k, e in self._inflight.items()
            if k not in dirty and k not in self._discarded and e.record is not None
        ]
        records += [e.record for e in dirty.values() if e.record is not None]
        journal.rewrite(records)

    def _replay(self, records: list[_JournalRecord]) -> None:
        """Queue the journal's records, in order, coalescing (construction)."""
        now = time.monotonic()
        dirty = self._dirty
        for key, value, record in records:
            entry = dirty.get(key)
            if entry is None:
                self._seq += 1
                dirty[key] = _Entry(value, record, now - self.max_delay, self._seq)
            else:
                entry.value, entry.record = value, record
                entry.n += 1
        self._counts["replayed"] = len(records)
        self._unflushed = len(records)
        if records:
            log.info(
                "write-back journal %s: replayed %d records, %d keys pending",
                self.journal,
                len(records),
                len(dirty),
            )

    # --- fork and exit -----------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        journal, was_closed = self._journal, self._closed
        self._init_state()
        self._journal = None
        if was_closed:
            self._closed = True
            self._close_result = []
        if journal is not None:
            journal.abandon()
            self._closed = True
            self._closed_why = (
                "this process is a fork of the queue's owner, whose journal it cannot "
                "share; create a new WriteBackQueue with its own journal"
            )
            self._close_result = []
            _OPEN.discard(self)


class _Journal:
    """The append-only file behind a queue: encoding, appends, fsync, compaction, replay.

    The queue calls every method but :meth:`sync` with its own lock held, so that the
    file and the pending set change together; :meth:`sync` runs outside that lock
    (concurrent writers share one fsync) and shares a lock of its own with the calls
    that swap or close the descriptor.
    """

    def __init__(self, path: str, fsync: str, serializer: Serializer) -> None:
        self.path = path
        self.fsync = fsync
        self.serializer = serializer
        self.fd: int | None = None
        self.rotate_bytes = JOURNAL_ROTATE_BYTES  # tests lower it
        self.rotate_at = JOURNAL_ROTATE_BYTES
        self.size = 0  # bytes in the file
        self.appended = 0  # bytes ever appended: a position truncation does not reset
        self.synced = 0  # ... of which durable (or no longer needed)
        self.records = 0  # records ever appended
        self.records_synced = 0
        self.last_sync = time.monotonic()
        self._sync_lock = threading.Lock()

    def encode(self, op: bytes, key: str, value: Any) -> bytes:
        """One record (header and body) for a put or a delete."""
        kb = key.encode("utf-8", "surrogatepass")
        if op is _OP_DELETE:
            payload, flags = b"", 0
        else:
            payload, flags = self.serializer.dumps(value)
        body = b"%b%b%b%b%b" % (op, _U32.pack(len(kb)), kb, _U32.pack(flags), payload)
        if len(body) > _MAX_RECORD:
            raise ConfigError(f"the journal record of {key!r} is over 4 GiB")
        return _HEADER.pack(len(body), zlib.crc32(body)) + body

    def open(self) -> list[_JournalRecord]:
        """Lock the file, read its records, cut a torn tail; the decoded records."""
        path = self.path
        for _ in range(100):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise JournalLockedError(
                    f"the write-back journal {path} is in use by another queue (in this "
                    "or another process): one queue at a time may use a journal file"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not replaced by a rotation between open and flock
                break
            os.close(fd)
        else:  # pragma: no cover - a rotation storm
            raise JournalLockedError(f"the write-back journal {path} keeps being replaced")
        try:
            records = self._read(fd)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + ".rotate")  # left by a crash during a rotation
        return records

    def _read(self, fd: int) -> list[_JournalRecord]:
        size = os.fstat(fd).st_size
        chunks = []
        offset = 0
        while offset < size:
            chunk = os.pread(fd, min(size - offset, 1 << 24), offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
        data = b"".join(chunks)
        raw, end = _parse_journal(data, self.path)
        if end < len(data):
            log.warning(
                "write-back journal %s: dropped a torn last record (%d bytes at offset %d, "
                "a write cut short by a crash; it was never acknowledged)",
                self.path,
                len(data) - end,
                end,
            )
            os.ftruncate(fd, end)
        records: list[_JournalRecord] = []
        loads = self.serializer.loads
        for op, key, flags, payload, record in raw:
            value: Any = TOMBSTONE
            if op == _OP_PUT:
                try:
                    value = loads(payload, flags)
                except SerializationError as exc:
                    raise SerializationError(
                        f"write-back journal {self.path}: the value of {key!r} cannot be "
                        f"decoded ({exc}); was it written with another serializer?"
                    ) from exc
            records.append((key, value, record))
        if raw and self.fsync != "never":
            os.fsync(fd)  # what is replayed stays durable until it is in the store
        self.size = self.appended = self.synced = end
        self.rotate_at = max(self.rotate_bytes, 2 * end)
        return records

    def append(self, data: bytes) -> None:
        """Append one record; a partial write is undone before the error is raised."""
        fd = self.fd
        if fd is None:
            return
        size = len(data)
        try:
            written = os.write(fd, data)
            while written < size:  # a short write (a full disk says so on the next call)
                written += os.write(fd, memoryview(data)[written:])
        except BaseException:
            try:
                os.ftruncate(fd, self.size)  # never leave half a record before the next
            except OSError:  # pragma: no cover - the disk is failing
                log.exception("write-back journal: cannot undo a partial record")
            raise
        self.size += size
        self.appended += size
        self.records += 1

    def sync(self, upto: int) -> None:
        """fsync until position ``upto`` is durable (one fsync serves every writer
        waiting for it)."""
        with self._sync_lock:
            if self.synced >= upto or self.fd is None:
                return
            appended, records = self.appended, self.records
            os.fsync(self.fd)
            self.synced = max(self.synced, appended)
            self.records_synced = max(self.records_synced, records)
            self.last_sync = time.monotonic()

    def truncate(self) -> None:
        """Empty the file: nothing is pending, every record is in the store."""
        if self.fd is None or not self.size:
            return
        try:
            os.ftruncate(self.fd, 0)
        except OSError:  # pragma: no cover - stale records only cost a replay
            log.exception("write-back journal: truncation failed")
            return
        self.size = 0
        self.rotate_at = self.rotate_bytes
        self.synced, self.records_synced = self.appended, self.records  # nothing to protect

    def rewrite(self, records: list[bytes]) -> None:
        """Replace the file by these records: written to a new file, locked, fsynced
        and renamed over the old one (which a crash at any point leaves intact)."""
        if self.fd is None:
            return
        data = b"".join(records)
        tmp = self.path + ".rotate"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600)
        durable = self.fsync != "never"
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            view = memoryview(data)
            written = 0
            while written < len(data):
                written += os.write(fd, view[written:])
            if durable:
                os.fsync(fd)
            with self._sync_lock:
                os.replace(tmp, self.path)
                if durable:
                    _fsync_dir(self.path)
                old, self.fd = self.fd, fd
                os.close(old)
                if durable:
                    self.synced, self.records_synced = self.appended, self.records
                    self.last_sync = time.monotonic()
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            self.rotate_at = max(self.rotate_bytes, 2 * self.size)
            log.exception("write-back journal: rewriting %s failed; kept appending", tmp)
            return
        self.size = len(data)
        self.rotate_at = max(self.rotate_bytes, 2 * len(data))

    def close(self) -> None:
        """Close the file, releasing its lock."""
        with self._sync_lock:
            fd, self.fd = self.fd, None
            if fd is not None:
                os.close(fd)

    def abandon(self) -> None:
        """In a forked child: close our copy of the parent's descriptor. The parent's
        lock stays (flock locks belong to the open file description, still open there)."""
        fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


# op, key, flags, payload, the whole record
_RawRecord = tuple[bytes, str, int, bytes, bytes]
# key, value (TOMBSTONE for a delete), the whole record
_JournalRecord = tuple[str, Any, bytes]


def _parse_journal(data: bytes, path: str) -> tuple[list[_RawRecord], int]:
    """The journal's records and where the intact part ends (a torn tail after it).

    Raises:
        JournalCorruptError: A damaged record is followed by an intact one.
    """
    records: list[_RawRecord] = []
    pos = 0
    end = len(data)
    unpack = _HEADER.unpack_from
    while pos < end:
        body = _check_record(data, pos, end, unpack)
        if body is None:
            later = _find_record(data, pos + 1, end, unpack)
            if later is not None:
                raise JournalCorruptError(
                    f"write-back journal {path} is corrupt at byte {pos}: the record there "
                    f"is damaged but an intact record follows at byte {later}. Nothing "
                    f"was replayed. Keep a copy, then truncate the file to {pos} bytes to "
                    "replay what precedes the damage (the records after it are lost)."
                )
            return records, pos
        length = len(body)
        op = body[:1]
        (klen,) = _U32.unpack_from(body, 1)
        if op not in (_OP_PUT, _OP_DELETE) or 5 + klen + 4 > length:
            raise JournalCorruptError(
                f"write-back journal {path}: the record at byte {pos} has a valid checksum "
                f"but an unknown layout (op {op!r}); was it written by another program?"
            )
        try:
            key = body[5 : 5 + klen].decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise JournalCorruptError(
                f"write-back journal {path}: the key of the record at byte {pos} is not UTF-8"
            ) from None
        (flags,) = _U32.unpack_from(body, 5 + klen)
        payload = body[9 + klen :]
        records.append((op, key, flags, payload, data[pos : pos + 8 + length]))
        pos += 8 + length
    return records, pos


def _check_record(
    data: bytes, pos: int, end: int, unpack: Callable[[bytes, int], tuple[Any, ...]]
) -> bytes | None:
    """The body of an intact record at ``pos``, or None."""
    if end - pos < 8:
        return None
    length, crc = unpack(data, pos)
    if length < _MIN_BODY or pos + 8 + length > end:
        return None
    body = data[pos + 8 : pos + 8 + length]
    if zlib.crc32(body) != crc:
        return None
    return body


def _find_record(
    data: bytes, start: int, end: int, unpack: Callable[[bytes, int], tuple[Any, ...]]
) -> int | None:
    """The offset of an intact record at or after ``start`` (a record's op byte sits 8
    bytes after its start), or None."""
    for op in (_OP_PUT, _OP_DELETE):
        at = data.find(op, start + 8)
        while at != -1:
            if _check_record(data, at - 8, end, unpack) is not None:
                return at - 8
            at = data.find(op, at + 1)
    return None


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _after_fork_in_child() -> None:
    _OPEN.clear()
    for queue in list(_ALL):
        queue._after_fork_in_child()
        if not queue._closed:
            _OPEN.add(queue)


def _close_open_queues() -> None:
    """The atexit safety net: drain the queues nobody closed, briefly."""
    for queue in list(_OPEN):
        try:
            left = queue.close(ATEXIT_TIMEOUT)
        except Exception:  # pragma: no cover - never break the interpreter's exit
            log.exception("write-back: draining %r at exit failed", queue)
            continue
        if left:
            log.error("write-back: %d writes not in the store at exit: %s", len(left), left[:50])


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_open_queues)
