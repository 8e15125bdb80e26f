"""Range IDs: blocks ``[start, end)`` leased from a central store, issued locally in C,
with the next block fetched in the background before the current one runs out."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from fastcore import RangeCounter, RangeExhaustedError
from fastcore._errors import check_int

from ._errors import ConfigError, GeneratorDisabled, IdGenError
from ._lease import default_lease_dir
from ._stores import RangeStore, SQLiteStore, StoreError

__all__ = ("ADAPT_FAST_S", "ADAPT_SLOW_S", "MAX_LOOKAHEAD", "RangeBlock", "RangeGenerator")

#: Adaptive block size: a block used up in less than this many seconds doubles the next.
ADAPT_FAST_S = 15.0
#: Adaptive block size: a block that lasted longer than this halves the next.
ADAPT_SLOW_S = 600.0
#: The most blocks an automatic lookahead holds ready (see :class:`RangeGenerator`).
MAX_LOOKAHEAD = 256
_MAX_BLOCK = 1 << 32
_MAX_FETCH = 1 << 40  # the most IDs one store call may ask for
# Automatic lookahead: hold enough blocks ready to cover the rate of use over this many
# times the time a background fetch takes (request to arrival, GIL waits included),
# and over at least _MIN_HORIZON_SWITCHES GIL switch intervals.
_HORIZON_FETCHES = 3.0
_MIN_HORIZON_SWITCHES = 4.0
_BACKOFF_MIN_S = 0.05
_BACKOFF_MAX_S = 2.0
_IDLE_EXIT_S = 10.0  # the prefetch thread ends after this long without work
_CLOSE_JOIN_S = 1.0
_MAX_BATCH = 10_000_000
_INHERITED = "range block inherited from the parent process by fork()"
_monotonic = time.monotonic  # tests replace it to drive the adaptive block size
_G = TypeVar("_G", bound="RangeGenerator")


@dataclass(frozen=True)
class RangeBlock:
    """A snapshot of the block a :class:`RangeGenerator` is issuing from.

    Range IDs carry no fields to decode: an ID is just a number of its sequence. This
    says which leased block the generator holds and how far into it it is. With a
    lookahead of several blocks, contiguous blocks leased in one store call are issued
    as one run, and the snapshot covers the run.

    Attributes:
        name: the sequence.
        start: the first ID of the block.
        end: one past the last ID of the block.
        next_value: the ID the block issues next (``end`` when used up).
    """

    name: str
    start: int
    end: int
    next_value: int

    @property
    def size(self) -> int:
        """How many IDs the block holds."""
        return self.end - self.start

    @property
    def remaining(self) -> int:
        """How many IDs of the block are not issued yet."""
        return self.end - self.next_value

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int) and self.start <= value < self.end


_LIVE: weakref.WeakSet[RangeGenerator] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for gen in list(_LIVE):
        gen._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _check_int(value: object, what: str, low: int, high: int, hint: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{what} must be an int in [{low}, {high}]{hint}, got {value!r}")
    return value


class RangeGenerator:
    """IDs from blocks ``[start, end)`` leased from a central range store.

    ``next_id()`` takes the next number of the current block from a native
    :class:`fastcore.RangeCounter` (no Python-level lock, no store round trip). When only
    ``prefetch_at`` of the block is left, a background thread leases the next block
    (double buffer), so in steady state no call waits for the store. If the next block
    is not there when the current one is used up, the call waits for the fetch under
    way, or fetches synchronously when none is. IDs are unique across threads,
    processes and hosts sharing the store and sequence name; they increase within a
    process between blocks but interleave across processes. Blocks are never given
    back: IDs left when a process stops or crashes are skipped (gaps), never reissued.

    Adaptive block size (``adaptive=True``, after Meituan Leaf's segment mode): when a
    block was used up in less than :data:`ADAPT_FAST_S` (15 s) the next fetch asks for
    twice as many IDs, up to ``max_block_size``; when it lasted more than
    :data:`ADAPT_SLOW_S` (10 min) it asks for half as many, down to ``block_size``.

    Lookahead: a process that uses blocks faster than one store round trip (plus the
    wait for the GIL, up to a few switch intervals of 5 ms while a busy thread holds
    it) needs more than one block ready, or its calls wait for the store once per
    block. With ``lookahead=None`` (the default) the generator measures its rate of
    use and how long a background fetch takes, and keeps ready as many blocks as cover
    three fetches (at least 4 switch intervals) of use, from 1 (a plain double buffer,
    the usual case) up to :data:`MAX_LOOKAHEAD` (256); the blocks are leased in one store
    call (one ``INCRBY`` or one transaction of ``k x block_size`` IDs, split into blocks
    of ``block_size``), and up to half of them are issued as one run, so a fast caller
    takes the slow path (a few microseconds) once per run, not once per block. An int
    fixes the number of blocks held ready. Blocks ready but
    unused when a process stops become a gap, like the rest of its current block.

    Store failures while prefetching are retried in the background (backoff 50 ms
    doubling to 2 s); a caller sees :class:`~idgen.StoreError` only when it needs an ID,
    the block is used up and no new block can be had.

    Fork safety: in a forked child the inherited blocks are disabled and dropped (the
    parent goes on issuing them); the child leases its own block on its first call.

    Args:
        store: a :class:`~idgen.RangeStore`; None opens an :class:`~idgen.SQLiteStore`
            at ``ranges.sqlite3`` in :func:`~idgen.default_lease_dir` (and closes it
            with the generator; a store passed in is left open).
        name: the sequence; generators sharing a store and name never share an ID.
        block_size: IDs per block (the smallest block when adaptive).
        prefetch_at: the fraction of a block left when the next one is fetched, in
            [0, 1]; 0 disables prefetching (every block is fetched when needed).
        adaptive: adapt the block size to the rate of use (see above).
        max_block_size: the largest block when adaptive.
        lookahead: how many blocks to hold ready, in ``[1, 256]``; None adapts it to
            the rate of use (see above).

    Raises:
        ConfigError: a bad option.
        StoreError: the default store cannot be opened.
    """

    def __init__(self, store: RangeStore | None = None, name: str = "default", *,
                 block_size: int = 1000, prefetch_at: float = 0.1, adaptive: bool = False,
                 max_block_size: int = 1_000_000, lookahead: int | None = None) -> None:
        if not isinstance(name, str) or not 0 < len(name) <= 255:
            raise ConfigError(
                f"name must be a non-empty str of at most 255 characters, got {name!r}"
            )
        self._block_size = _check_int(block_size, "block_size", 1, _MAX_BLOCK)
        if isinstance(prefetch_at, bool) or not isinstance(prefetch_at, (int, float)) or \
                not 0 <= prefetch_at <= 1:
            raise ConfigError(
                "prefetch_at must be a number in [0, 1] (the fraction of a block left "
                f"when the next one is fetched; 0 = no prefetch), got {prefetch_at!r}"
            )
        if not isinstance(adaptive, bool):
            raise ConfigError(f"adaptive must be a bool, got {adaptive!r}")
        if adaptive:
            _check_int(max_block_size, "max_block_size", self._block_size, _MAX_BLOCK,
                       " (from block_size to 2**32)")
        if lookahead is not None:
            _check_int(lookahead, "lookahead", 1, MAX_LOOKAHEAD, " or None (automatic)")
        if store is not None and not (callable(getattr(store, "allocate", None))
                                      and callable(getattr(store, "close", None))):
            raise ConfigError(
                "store must be a RangeStore (with allocate(name, size) and close()), "
                f"got {type(store).__name__}"
            )
        self._name = name
        self._prefetch_at = float(prefetch_at)
        self._adaptive = adaptive
        self._max_block_size = max_block_size if adaptive else self._block_size
        self._size = self._block_size
        self._lookahead = lookahead
        self._owns_store = store is None
        self._store: RangeStore = store if store is not None else SQLiteStore(
            os.path.join(default_lease_dir(), "ranges.sqlite3"))
        self._closed = False
        self._stats = {"blocks": 0, "prefetched": 0, "prefetch_calls": 0,
                       "sync_fetches": 0, "waits": 0, "store_failures": 0}
        self._reset_state()
        _LIVE.add(self)

    def _reset_state(self) -> None:
        # Also the whole of the fork handler: a fresh counter, fresh locks (a thread of
        # the parent may have held the old ones), no block, nothing ready, no thread.
        # ``next_id`` is the counter's own method (one call into C); the counter calls
        # ``_at_mark`` when it reaches its mark: the prefetch point or the end.
        self._counter = RangeCounter(0, 0, self._at_mark)  # empty: the first call leases
        self.next_id = self._counter.next
        self._block: tuple[int, int] | None = None
        self._ready: deque[tuple[int, int]] = deque()  # prefetched blocks, in order
        self._installed_at: float | None = None
        self._rate = 0.0  # IDs per second while issuing (waits excluded)
        self._fetch_s = 0.0  # how long a background fetch takes, request to arrival
        self._requested_at = 0.0
        self._depth = 1 if self._lookahead is None else self._lookahead
        self._refill_lock = threading.Lock()  # one thread at a time switches blocks
        self._lock = threading.Lock()  # the state shared with the prefetch thread
        self._cond = threading.Condition(self._lock)
        self._want = False
        self._in_flight = False
        self._error: BaseException | None = None
        self._worker: threading.Thread | None = None

    # --- issuing --------------------------------------------------------------------------

    #: ``next_id() -> int``: the next ID. It is the native counter's own method (one
    #: call into C; the generator's Python code runs only at a block's prefetch point
    #: and end). Raises :class:`~idgen.StoreError` (the block is used up and no new one
    #: could be leased), :class:`~idgen.GeneratorDisabled` (closed) or
    #: :class:`~idgen.IdSpaceExhausted` (the sequence reached ``2**63 - 1``).
    next_id: Callable[[], int]

    def next_ids(self, n: int) -> list[int]:
        """``n`` new IDs: consecutive within a block; a request for more IDs than a
        block holds leases a block of its own (one store round trip).

        Args:
            n: how many, in ``[0, 10_000_000]``.

        Raises:
            fastcore.ArgumentTypeError, fastcore.InvalidArgumentError: a bad ``n``.
            StoreError, GeneratorDisabled, IdSpaceExhausted: as :meth:`next_id`.
        """
        check_int(n, "n", 0, _MAX_BATCH)
        counter = self._counter
        out: list[int] = []
        while len(out) < n:
            need = n - len(out)
            have = counter.mark - counter.next_value
            if have > 0:
                with contextlib.suppress(RangeExhaustedError):  # others took them meanwhile
                    out += counter.take(min(have, need))
                continue
            if need > self._size and counter.next_value >= counter.end and not self._closed:
                with self._lock:  # more than a block, none left: a block of its own
                    self._stats["sync_fetches"] += 1
                start, end = self._allocate(need)
                out += range(start, end)
                break
            self._at_mark(counter)
        return out

    # --- switching blocks -----------------------------------------------------------------

    def _at_mark(self, counter: RangeCounter) -> None:
        """The counter reached its mark: ask for more blocks, or install the next run."""
        with self._refill_lock:
            if self._closed:
                raise GeneratorDisabled("the generator was closed")
            if counter is not self._counter:  # a counter used across fork()
                raise GeneratorDisabled(_INHERITED)
            value, end = counter.next_value, counter.end
            if value < counter.mark:
                return  # another thread moved on already
            if value < end:  # the prefetch point: fetch now, issue the rest meanwhile
                counter.set_mark(end)
                with self._lock:
                    if len(self._ready) < self._depth:
                        self._request_prefetch()
                return
            if self._block is not None:
                self._measure_rate(_monotonic())
            self._install(self._next_block())

    def _measure_rate(self, now: float) -> None:
        # with self._refill_lock held, when the block in use has just run out (before
        # any wait for the next one, so that waiting does not read as a slow rate)
        if self._installed_at is None or self._block is None:
            return
        used = self._block[1] - self._block[0]
        lasted = max(now - self._installed_at, 1e-7)
        sample = used / lasted
        # quick to rise (a burst must not wait a block per fetch), slow to fall
        self._rate = sample if sample > self._rate else 0.75 * self._rate + 0.25 * sample
        if self._lookahead is None:
            horizon = max(_HORIZON_FETCHES * self._fetch_s,
                          _MIN_HORIZON_SWITCHES * sys.getswitchinterval())
            want = math.ceil(self._rate * horizon / self._size)
            with self._lock:
                self._depth = min(max(want, 1), MAX_LOOKAHEAD)

    def _next_block(self) -> tuple[int, int, int]:
        waited = False
        with self._lock:
            # wait for a fetch under way, or requested and not failed yet (a failed one
            # is being retried after a backoff: fetch here rather than wait that out)
            while not self._ready and not self._closed and \
                    (self._in_flight or (self._want and self._error is None)):
                waited = True
                self._cond.wait()
            if self._closed:
                raise GeneratorDisabled("the generator was closed")
            block = self._pop_run() if self._ready else None
            error = self._error if waited else None
            self._stats["waits"] += waited
            if block is not None and self._prefetch_at and self._depth > 1 and \
                    len(self._ready) < self._depth:
                self._request_prefetch()  # keep the lookahead full (the tail asks too)
        if block is not None:
            return block
        if isinstance(error, StoreError):  # the fetch we waited for failed: do not retry
            raise StoreError(
                f"no block of IDs for sequence {self._name!r}: the store failed: {error}"
            ) from (error.__cause__ or error)  # the store's own exception, as when direct
        with self._lock:
            self._stats["sync_fetches"] += 1
        return (*self._allocate(self._size), 1)

    def _pop_run(self) -> tuple[int, int, int]:
        # with self._lock held and self._ready not empty: the first ready block and the
        # ones right after it, up to half the lookahead, joined into one run (blocks
        # leased in one store call are contiguous), so that a fast caller takes the
        # slow path once per run rather than once per block
        ready = self._ready
        start, end = ready.popleft()
        count = 1
        most = (self._depth + 1) // 2
        while count < most and ready and ready[0][0] == end:
            end = ready.popleft()[1]
            count += 1
        return start, end, count

    def _install(self, block: tuple[int, int, int]) -> None:
        # with self._refill_lock held
        start, end, blocks = block
        now = _monotonic()
        if self._adaptive and self._installed_at is not None:
            lasted = now - self._installed_at
            if lasted < ADAPT_FAST_S:
                self._size = min(self._size * 2, self._max_block_size)
            elif lasted > ADAPT_SLOW_S:
                self._size = max(self._size // 2, self._block_size)
        self._installed_at = now
        with self._lock:
            self._stats["blocks"] += blocks
        tail_size = math.ceil((end - start) * self._prefetch_at) if self._prefetch_at else 0
        split = end - tail_size
        self._block = (start, end)
        if tail_size and split > start:
            self._counter.set_range(start, end, split)
        else:
            self._counter.set_range(start, end)
            if tail_size:  # prefetch_at=1: fetch the next block right away
                with self._lock:
                    if len(self._ready) < self._depth:
                        self._request_prefetch()

    def _allocate(self, size: int) -> tuple[int, int]:
        store = self._store
        try:
            start, end = store.allocate(self._name, size)
        except IdGenError:
            raise
        except Exception as exc:  # a custom store raising its own errors
            raise StoreError(
                f"{type(store).__name__}.allocate({self._name!r}, {size}) failed: {exc}"
            ) from exc
        if isinstance(start, bool) or not isinstance(start, int) or \
                not isinstance(end, int) or start < 0 or end - start != size or end > 1 << 63:
            raise StoreError(
                f"{type(store).__name__}.allocate({self._name!r}, {size}) returned "
                f"{(start, end)!r}, not a block of {size} IDs within [0, 2**63)"
            )
        return start, end

    # --- the prefetch thread ------------------------------------------------------------

    def _request_prefetch(self) -> None:
        # with self._lock held
        if self._closed or self._want:
            return
        self._want = True
        self._requested_at = _monotonic()
        if self._worker is None:
            self._worker = threading.Thread(
                target=self._prefetch_loop, name=f"idgen-range-prefetch-{self._name}",
                daemon=True,
            )
            self._worker.start()
        else:
            self._cond.notify_all()

    def _prefetch_loop(self) -> None:
        cond = self._cond
        delay = 0.0
        while True:
            with cond:
                while not self._want and not self._closed:
                    if not cond.wait(_IDLE_EXIT_S) and not self._want:
                        self._worker = None
                        return
                if self._closed:
                    self._worker = None
                    return
                self._in_flight = True
                size = self._size
                count = min(max(self._depth - len(self._ready), 1), _MAX_FETCH // size)
            try:
                start, end = self._allocate(size * count)
            except BaseException as exc:  # retried; surfaced when an ID is needed
                with cond:
                    self._in_flight = False
                    self._error = exc
                    self._stats["store_failures"] += 1
                    cond.notify_all()
                    delay = min(max(delay * 2, _BACKOFF_MIN_S), _BACKOFF_MAX_S)
                    cond.wait(delay)  # close() cuts it short
                continue
            arrived = _monotonic()
            with cond:
                self._in_flight = False
                self._error = None
                self._want = False
                delay = 0.0
                took = max(arrived - self._requested_at, 0.0)
                self._fetch_s = took if took > self._fetch_s else \
                    0.75 * self._fetch_s + 0.25 * took
                if not self._closed:
                    self._ready.extend((s, s + size) for s in range(start, end, size))
                    self._stats["prefetched"] += count
                    self._stats["prefetch_calls"] += 1
                cond.notify_all()

    # --- fork, close, introspection -----------------------------------------------------

    def _forked(self) -> None:
        # In the child right after fork(): no I/O. The parent keeps issuing from the
        # inherited blocks, so the child must never touch them.
        self._counter.disable(_INHERITED)  # for a next_id a caller kept from before
        self._reset_state()

    @property
    def name(self) -> str:
        """The sequence name."""
        return self._name

    @property
    def store(self) -> RangeStore:
        """The range store."""
        return self._store

    @property
    def block_size(self) -> int:
        """The number of IDs the next block fetch asks for."""
        return self._size

    @property
    def current_block(self) -> RangeBlock | None:
        """The block being issued from (a snapshot), or None before the first ID."""
        counter = self._counter
        if self._block is None:
            return None
        return RangeBlock(self._name, counter.start, counter.end, counter.next_value)

    def stats(self) -> dict[str, int]:
        """Counters since construction: ``blocks`` installed, ``prefetched`` (blocks
        leased by the background thread) in ``prefetch_calls`` store calls,
        ``sync_fetches`` (leased by a caller: the first block, a large ``next_ids``, or
        after a failed prefetch), ``waits`` (a caller waited for a prefetch under way),
        ``store_failures`` (failed background fetches); and now: ``lookahead`` (blocks
        it aims to hold ready) and ``ready`` (blocks held ready)."""
        with self._lock:
            return {**self._stats, "lookahead": self._depth, "ready": len(self._ready)}

    def close(self) -> None:
        """Stop issuing (later calls raise :class:`~idgen.GeneratorDisabled`) and close
        the store if the generator opened it. Idempotent; unused IDs become a gap."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._ready.clear()
            worker = self._worker
            self._cond.notify_all()
        self._counter.disable("the generator was closed")
        if worker is not None and worker is not threading.current_thread():
            worker.join(_CLOSE_JOIN_S)
        _LIVE.discard(self)
        if self._owns_store:
            self._store.close()

    def __enter__(self: _G) -> _G:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"RangeGenerator({self._store!r}, name={self._name!r}, "
                f"block_size={self._size}, current_block={self._block!r})")
