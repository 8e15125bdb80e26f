"""Time-ordered ID generators over the fastcore ID core."""

from __future__ import annotations

import datetime as _dt
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from fastcore import SNOWFLAKE, TRUETIME, IdCore, IdLayout, InvalidArgumentError, eps_bound_ms

from ._errors import ConfigError, ForkedGeneratorError
from ._lease import FileLease, WorkerLease

__all__ = (
    "TWITTER_EPOCH_MS",
    "DecodedId",
    "SnowflakeGenerator",
    "TrueTimeGenerator",
    "UUIDGenerator",
    "decode",
)

#: Twitter's Snowflake epoch, 2010-11-04T01:42:54.657Z: a 41-bit ms field lasts to 2080.
TWITTER_EPOCH_MS = 1288834974657
_YEAR_MS = 365 * 86_400_000
_G = TypeVar("_G", bound="_TimeOrderedGenerator")
_PERSIST_INTERVAL_S = 0.2
#: Added to the last issued time a lease restores: the previous holder of the worker id
#: may have issued IDs for up to two background beats after its last save.
_RESTART_MARGIN_MS = int(_PERSIST_INTERVAL_S * 1000) * 2


def _utc(unix_ms: int) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(unix_ms / 1000, tz=_dt.timezone.utc)


@dataclass(frozen=True)
class DecodedId:
    """The fields of a time-ordered ID.

    Attributes:
        id: the ID.
        kind: ``"snowflake"`` or ``"truetime"``.
        unix_ms: the time the ID was minted, ms since the Unix epoch.
        timestamp: the same as a timezone-aware UTC ``datetime``.
        worker: the worker id.
        sequence: the sequence number within its tick.
        uncertainty_ms: TrueTime IDs: the clock-error bound in ms when minted
            (``None`` when the clock was unsynchronised); ``None`` for Snowflake IDs.
        synchronised: TrueTime IDs: whether the kernel's clock was synchronised.
    """

    id: int
    kind: str
    unix_ms: int
    timestamp: _dt.datetime
    worker: int
    sequence: int
    uncertainty_ms: int | None = None
    synchronised: bool | None = None


def _decode(value: int, kind: str, layout: IdLayout, epoch_ms: int, tick_ms: int) -> DecodedId:
    try:
        ticks, eps, worker, seq = layout.unpack(value)
    except InvalidArgumentError as exc:
        raise ConfigError(str(exc)) from None
    unix_ms = epoch_ms + ticks * tick_ms
    if layout.eps_bits:
        bound = eps_bound_ms(eps, layout.max_eps)
        return DecodedId(value, kind, unix_ms, _utc(unix_ms), worker, seq, bound, bound is not None)
    return DecodedId(value, kind, unix_ms, _utc(unix_ms), worker, seq)


def decode(value: int, kind: str = "snowflake", *, epoch_ms: int = TWITTER_EPOCH_MS,
           layout: IdLayout | None = None, tick_ms: int = 1) -> DecodedId:
    """Decode an ID minted with the default (or the given) layout and epoch.

    Args:
        value: the ID.
        kind: ``"snowflake"`` or ``"truetime"`` (chooses the default layout).
        epoch_ms: the epoch the generator used.
        layout: a custom layout instead of the kind's default.
        tick_ms: the tick length the generator used.

    Raises:
        ConfigError: an unknown kind, or an ID out of the 63-bit range.
    """
    if kind not in ("snowflake", "truetime"):
        raise ConfigError(f"kind must be 'snowflake' or 'truetime', got {kind!r}")
    if layout is None:
        layout = TRUETIME if kind == "truetime" else SNOWFLAKE
    return _decode(value, kind, layout, epoch_ms, tick_ms)


# --- generators that survive fork() ---------------------------------------------------

_LIVE: weakref.WeakSet[_TimeOrderedGenerator] = weakref.WeakSet()
_PERSISTER: threading.Thread | None = None
_PERSISTER_LOCK = threading.Lock()


def _persist_loop() -> None:
    while True:
        time.sleep(_PERSIST_INTERVAL_S)
        for gen in list(_LIVE):
            gen._persist()


def _start_persister() -> None:
    global _PERSISTER
    with _PERSISTER_LOCK:
        if _PERSISTER is None or not _PERSISTER.is_alive():
            _PERSISTER = threading.Thread(target=_persist_loop, name="idgen-lease-persist",
                                          daemon=True)
            _PERSISTER.start()


def _after_fork_in_child() -> None:
    global _PERSISTER
    _PERSISTER = None  # threads do not survive fork()
    for gen in list(_LIVE):
        gen._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _TimeOrderedGenerator:
    kind = ""
    _default_layout = SNOWFLAKE

    def __init__(
        self,
        worker: int | WorkerLease | None = None,
        *,
        epoch_ms: int = TWITTER_EPOCH_MS,
        layout: IdLayout | None = None,
        tick_ms: int = 1,
        backward_wait_ms: int = 5,
        continue_ahead_ms: int = 0,
        clock: Callable[[], int] | None = None,
        lease_dir: str | None = None,
        **core_options: object,
    ) -> None:
        self._layout = layout or self._default_layout
        self._epoch_ms = epoch_ms
        self._tick_ms = tick_ms
        self._backward_wait_ms = backward_wait_ms
        self._continue_ahead_ms = continue_ahead_ms
        self._options: dict[str, object] = dict(
            tick_ms=tick_ms, backward_wait_ms=backward_wait_ms,
            continue_ahead_ms=continue_ahead_ms, clock=clock, **core_options,
        )
        self._check_epoch(clock)
        self._lease: WorkerLease | None
        if worker is None:
            self._lease = FileLease(lease_dir, max_worker=self._layout.max_worker)
        elif isinstance(worker, int) and not isinstance(worker, bool):
            if not 0 <= worker <= self._layout.max_worker:
                raise ConfigError(
                    f"worker id must be in [0, {self._layout.max_worker}] for this layout, "
                    f"got {worker}"
                )
            self._lease = None
            self._worker = worker
        else:
            self._lease = worker  # type: ignore[assignment]
        self._pid = os.getpid()
        self._start_core()
        _LIVE.add(self)
        if self._lease is not None:
            _start_persister()

    def _check_epoch(self, clock: Callable[[], int] | None) -> None:
        if isinstance(self._epoch_ms, bool) or not isinstance(self._epoch_ms, int):
            raise ConfigError(f"epoch_ms must be an int, not {type(self._epoch_ms).__name__}")
        now = clock() if clock is not None else time.time_ns() // 1_000_000
        if self._epoch_ms > now:
            raise ConfigError(f"epoch {_utc(self._epoch_ms).isoformat()} is in the future")
        if isinstance(self._tick_ms, bool) or not isinstance(self._tick_ms, int) or \
                self._tick_ms < 1:
            raise ConfigError(f"tick_ms must be an int >= 1, got {self._tick_ms!r}")
        end_ms = self._epoch_ms + (self._layout.max_ticks + 1) * self._tick_ms
        if end_ms < now + _YEAR_MS:
            raise ConfigError(
                f"this layout's {self._layout.time_bits}-bit time field ends on "
                f"{_utc(min(end_ms, 253402300799000)).date().isoformat()}, within a year: "
                "use a later epoch, a longer tick or more time bits"
            )

    def _start_core(self) -> None:
        if self._lease is not None:
            self._worker = self._lease.worker_id
        try:
            core = IdCore(self._layout, self._worker, epoch_ms=self._epoch_ms,
                          **self._options)  # type: ignore[arg-type]
        except InvalidArgumentError as exc:
            raise ConfigError(str(exc)) from None
        self._core = core
        self.next_id: Callable[[], int] = core.next_id
        self.next_ids: Callable[[int], list[int]] = core.next_ids
        if self._lease is not None and self._lease.last_ms is not None:
            self._restore(self._lease.last_ms)

    def _restore(self, stored_ms: int) -> None:
        # The previous holder of the worker id may have issued IDs for up to two beats
        # after its last save, so the core never issues a tick up to the stored time
        # plus the margin again. That margin is not a clock step back: when the stored
        # time itself is within what the core tolerates (the larger of backward_wait_ms
        # and continue_ahead_ms), the rest is waited out once, on the first call (less
        # than the margin plus a tick); the core then decides as always, and raises
        # ClockMovedBackwards when the stored time is further ahead of the clock.
        core, epoch, tick = self._core, self._epoch_ms, self._tick_ms
        core.restore_last(max(0, (stored_ms + _RESTART_MARGIN_MS - epoch) // tick))
        clock = self._options["clock"]
        now_ms = clock() if callable(clock) else time.time_ns() // 1_000_000
        if not isinstance(now_ms, int):
            return  # the core reports a bad clock reading on the first call
        tolerated = max(self._backward_wait_ms, self._continue_ahead_ms) // tick
        if (stored_ms - epoch) // tick - (now_ms - epoch) // tick > tolerated:
            return  # a genuine step back: the first call raises (or the clock recovers)
        wait_ms = epoch + (core.last_ticks - tolerated) * tick - now_ms
        if wait_ms > 0:
            self._resume_ns = time.monotonic_ns() + wait_ms * 1_000_000
            self.next_id = self._first_call_after_restart
            self.next_ids = self._first_batch_after_restart

    def _wait_out_restart_margin(self) -> None:
        left_ns = self._resume_ns - time.monotonic_ns()
        if left_ns > 0 and self._core.disabled is None:
            time.sleep(left_ns / 1e9)
        # from now on straight into the core (it re-checks the clock itself)
        self.next_id = self._core.next_id
        self.next_ids = self._core.next_ids

    def _first_call_after_restart(self) -> int:
        self._wait_out_restart_margin()
        return self._core.next_id()

    def _first_batch_after_restart(self, n: int) -> list[int]:
        self._wait_out_restart_margin()
        return self._core.next_ids(n)

    def _persist(self) -> None:
        # The background beat: renew the lease (when it needs renewing) and store the
        # last issued time with it. A lost lease stops generation at once.
        lease, core = self._lease, self._core
        if lease is None or os.getpid() != self._pid or core.disabled is not None:
            return
        try:
            if core.issued:  # not a restored tick alone: that would add margin on margin
                lease.save_last(self._epoch_ms + core.last_ticks * self._tick_ms)
            lease.check()
        except Exception as exc:
            core.disable(f"worker lease lost: {exc}")

    def _forked(self) -> None:
        # Runs in the child right after fork(): no I/O here, only swap the entry points
        # so that the first call re-leases (or refuses).
        self._core.disable("generator inherited from the parent process by fork()")
        self.next_id = self._first_call_in_child
        self.next_ids = self._first_batch_in_child

    def _renew_after_fork(self) -> None:
        if self._lease is None:
            raise ForkedGeneratorError(
                f"this generator has the fixed worker id {self._worker}, which the parent "
                "process keeps using: give the child its own generator with another worker "
                "id, or use a lease (worker=None) so the child leases a new id"
            )
        self._lease = self._lease.renew_in_child()
        self._pid = os.getpid()
        self._start_core()
        _start_persister()

    def _first_call_in_child(self) -> int:
        self._renew_after_fork()
        return self.next_id()

    def _first_batch_in_child(self, n: int) -> list[int]:
        self._renew_after_fork()
        return self.next_ids(n)

    # --- public surface -----------------------------------------------------------------

    @property
    def worker(self) -> int:
        """The worker id in use."""
        return self._worker

    @property
    def layout(self) -> IdLayout:
        """The bit layout of the IDs."""
        return self._layout

    @property
    def epoch_ms(self) -> int:
        """The epoch of the time field, ms since the Unix epoch."""
        return self._epoch_ms

    def decode(self, value: int) -> DecodedId:
        """Decode an ID minted with this generator's layout, epoch and tick."""
        return _decode(value, self.kind, self._layout, self._epoch_ms, self._tick_ms)

    def close(self) -> None:
        """Store the last issued time and release the worker lease."""
        self._persist()
        if self._core.disabled is None:
            self._core.disable("the generator was closed")
        _LIVE.discard(self)
        if self._lease is not None:
            self._lease.release()

    def __enter__(self: _G) -> _G:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(worker={self._worker}, epoch_ms={self._epoch_ms}, "
                f"layout={self._layout!r})")


class SnowflakeGenerator(_TimeOrderedGenerator):
    """Snowflake IDs: ``0 | 41-bit ms since epoch | 10-bit worker | 12-bit sequence``.

    ``next_id()`` and ``next_ids(n)`` run in C (thread safe, clock read inside the
    critical section); a sequence exhausted within a tick waits for the next tick.

    A leased worker id comes with the last time its previous holder issued (see
    :class:`~idgen.FileLease`), and no ID is ever issued at or below that time plus a
    400 ms margin (the previous holder may have issued for up to two background saves
    after its last one). The margin is not a clock step back: a generator leased right
    after another one released the id sleeps, once, on its first call, until its clock
    is within ``max(backward_wait_ms, continue_ahead_ms)`` of that point (less than the
    margin plus one tick), and from there the step-back rules below apply as always.
    With the defaults the first ID thus comes about 0.4 s after the previous holder's
    last one; with ``continue_ahead_ms`` of 400 or more it comes at once, ahead of the
    clock. A stored time itself further ahead of the clock than that bound is a clock
    step back: the first call raises :class:`~idgen.ClockMovedBackwards`.

    Args:
        worker: a worker id, a :class:`~idgen.WorkerLease`, or None to lease a free id
            on this host through a :class:`~idgen.FileLease`.
        epoch_ms: start of the time field (default Twitter's, which lasts to 2080).
        layout: another :class:`fastcore.IdLayout` (bits summing to 63).
        tick_ms: tick length in ms.
        backward_wait_ms: a clock step back up to this is waited out; a larger one
            raises :class:`~idgen.ClockMovedBackwards`.
        continue_ahead_ms: when > 0, keep issuing on the last tick after a step back
            of up to this many ms instead of waiting (bounded running ahead).
        clock: a zero-argument callable returning Unix ms (tests inject one).
        lease_dir: folder of the file leases (with ``worker=None``).

    Raises:
        ConfigError: worker id out of range, epoch in the future, a time field that
            ends within a year, or another bad option.
        NoFreeWorkerId: no worker id is free on this host.
    """

    kind = "snowflake"
    _default_layout = SNOWFLAKE


class TrueTimeGenerator(_TimeOrderedGenerator):
    """TrueTime-style IDs: ``0 | 41-bit ms | 4-bit clock uncertainty | 10-bit worker |
    8-bit sequence``.

    The uncertainty is the kernel's clock-error bound when the ID was minted, as a log2
    bucket: code ``c`` means the error was at most ``2**c`` ms; code 15 means the
    kernel reported the clock unsynchronised (or pass ``unsynced_bound_ms`` to record
    that bound instead). Options are those of :class:`SnowflakeGenerator`, plus
    ``eps_source`` (a callable returning ``(maxerror_us, unsynced)``, for tests) and
    ``unsynced_bound_ms``.
    """

    kind = "truetime"
    _default_layout = TRUETIME

    def interval(self, value: int) -> tuple[int, int] | None:
        """``(earliest, latest)`` Unix ms of an ID's true mint time; None if unsynchronised."""
        d = self.decode(value)
        if d.uncertainty_ms is None:
            return None
        return d.unix_ms - d.uncertainty_ms, d.unix_ms + d.uncertainty_ms

    def definitely_before(self, a: int, b: int) -> bool:
        """True only when ID ``a`` was surely minted before ID ``b`` (their intervals do not
        overlap); False when they may be concurrent or either clock was unsynchronised."""
        ia, ib = self.interval(a), self.interval(b)
        return ia is not None and ib is not None and ia[1] < ib[0]

    def commit_wait(self, value: int, *, timeout_s: float = 20.0) -> None:
        """Sleep until the ID's time is surely past on this clock (Spanner's commit wait):
        until now minus the ID's uncertainty is beyond its latest possible time.

        Raises:
            ConfigError: the ID was minted on an unsynchronised clock (no bound to wait).
        """
        bounds = self.interval(value)
        if bounds is None:
            raise ConfigError("the ID was minted on an unsynchronised clock: no bound to wait")
        wait_s = (bounds[1] + (bounds[1] - bounds[0]) // 2 + 1) / 1000 - time.time()
        if wait_s > timeout_s:
            raise ConfigError(f"commit wait of {wait_s:.3f} s exceeds timeout_s={timeout_s}")
        if wait_s > 0:
            time.sleep(wait_s)


class UUIDGenerator:
    """Random UUID v4 from the standard library, with the same method names."""

    kind = "uuid4"

    def next_id(self) -> uuid.UUID:
        """A new random UUID."""
        return uuid.uuid4()

    def next_ids(self, n: int) -> list[uuid.UUID]:
        """``n`` new random UUIDs."""
        return [uuid.uuid4() for _ in range(n)]
