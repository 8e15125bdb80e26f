"""ID core, pure-Python twin (the specification of ``_ids.pyx``).

Layout: 63-bit IDs, from the top bit down ``0 | time | eps | worker | seq``; the sign
bit is always 0, ``eps`` (TrueTime-style clock uncertainty) is absent when
``eps_bits == 0``.

Issuing (:class:`IdCore`), per ID, with the clock read inside the critical section;
``now`` is the current tick ``(now_ms - epoch_ms) // tick_ms`` and ``last`` the last
issued tick (``-1`` at first, with that tick counted as used up):

1. ``now > last``: a new tick, ``seq = 0``.
2. ``now == last``: ``seq += 1``; past ``max_seq`` wait until the clock shows a later
   tick.
3. ``now < last`` (the clock moved back by ``step_ms = (last - now) * tick_ms``):
   with ``continue_ahead_ms > 0`` and ``step_ms <= continue_ahead_ms`` keep issuing on
   ``last`` (past ``max_seq`` on ``last + 1``, only while
   ``(last + 1 - now) * tick_ms <= continue_ahead_ms``, else wait); otherwise wait for
   the clock when ``step_ms <= backward_wait_ms``; otherwise raise
   :class:`ClockMovedBackwardsError` and change nothing.
4. A tick beyond the time field raises :class:`IdSpaceExhaustedError`.
5. ``eps`` is computed once per tick, when the tick is opened, so that IDs of one tick
   share it and stay increasing.

A wait re-reads the clock and applies the rules again; when the clock does not move
for ``max(backward_wait_ms, tick_ms) + 1000`` ms of monotonic time it ends with
:class:`ClockStalledError`. An injected clock is called exactly once per attempt (and
once by the constructor), so both implementations consume the same readings.
"""

from __future__ import annotations

import ctypes
import datetime
import sys
import threading
import time
from collections.abc import Callable
from typing import NoReturn

from ._errors import (
    ArgumentTypeError,
    ClockMovedBackwardsError,
    ClockStalledError,
    GeneratorDisabledError,
    IdSpaceExhaustedError,
    InvalidArgumentError,
    RangeExhaustedError,
)
from ._errors import check_int as _check_int

__all__ = (
    "MAX_BATCH",
    "SNOWFLAKE",
    "TRUETIME",
    "IdCore",
    "IdLayout",
    "RangeCounter",
    "eps_bound_ms",
    "eps_code",
)

#: Largest ID (63 bits).
MAX_ID = (1 << 63) - 1
#: Largest ``n`` of one ``next_ids(n)`` / ``take(n)`` call.
MAX_BATCH = 10_000_000
#: Largest clock reading (and epoch) in ms; keeps every tick difference in 64 bits.
MAX_CLOCK_MS = (1 << 62) - 1
MAX_TICK_MS = 86_400_000
MAX_BACKWARD_WAIT_MS = 10_000
MAX_CONTINUE_AHEAD_MS = 60_000
#: Largest ``max_eps`` (an 8-bit eps field).
MAX_EPS_CODE = 255
#: What an unsynchronised kernel reports as its error (NTP_PHASE_LIMIT): also used
#: where the kernel's estimate cannot be read.
UNKNOWN_MAXERROR_US = 16_000_000
#: Real time a wait may take beyond ``max(backward_wait_ms, tick_ms)``.
STALL_GRACE_MS = 1000

_BIT_TOTAL = 63
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


# --- validation and messages shared with _ids.pyx ----------------------------------------


def _check_layout(
    time_bits: object, worker_bits: object, seq_bits: object, eps_bits: object
) -> tuple[int, int, int, int]:
    t = _check_int(time_bits, "time_bits", 20, _BIT_TOTAL - 1)
    w = _check_int(worker_bits, "worker_bits", 0, _BIT_TOTAL - 21)
    s = _check_int(seq_bits, "seq_bits", 1, _BIT_TOTAL - 20)
    if isinstance(eps_bits, bool) or not isinstance(eps_bits, int):
        raise ArgumentTypeError(f"eps_bits must be an int, not {type(eps_bits).__name__}")
    e = eps_bits
    if e != 0 and not 2 <= e <= 8:
        raise InvalidArgumentError(f"eps_bits must be 0 or in [2, 8], got {e}")
    if t + w + s + e != _BIT_TOTAL:
        raise InvalidArgumentError(f"bits must sum to {_BIT_TOTAL}, got {t + w + s + e}")
    return t, w, s, e


def _layout_arg(layout: object) -> tuple[int, int, int, int]:
    fields = _layout_fields(layout)
    if fields is None:
        raise ArgumentTypeError(f"layout must be an IdLayout, not {type(layout).__name__}")
    return fields


def _layout_fields(obj: object) -> tuple[int, int, int, int] | None:
    # (time_bits, worker_bits, seq_bits, eps_bits) of an IdLayout of either
    # implementation, so that native and twin layouts compare equal and interchange.
    cls = type(obj)
    if isinstance(obj, IdLayout) or (
        cls.__name__ == "IdLayout" and cls.__module__ in ("fastcore._ids", "fastcore._ids_py")
    ):
        t, w, s, e = (getattr(obj, f) for f in ("time_bits", "worker_bits", "seq_bits", "eps_bits"))
        return int(t), int(w), int(s), int(e)
    return None


def _check_optional_ms(value: object, what: str) -> int | None:
    return None if value is None else _check_int(value, what, 0, MAX_ID)


def _check_callable(value: object, what: str, returns: str) -> None:
    if value is not None and not callable(value):
        raise ArgumentTypeError(
            f"{what} must be None or a callable returning {returns}, not {type(value).__name__}"
        )


def _check_core_options(
    worker: object,
    max_worker: int,
    epoch_ms: object,
    tick_ms: object,
    backward_wait_ms: object,
    continue_ahead_ms: object,
    clock: object,
    eps_source: object,
    unsynced_bound_ms: object,
) -> None:
    _check_int(worker, "worker", 0, max_worker)
    _check_int(epoch_ms, "epoch_ms", 0, MAX_CLOCK_MS)
    _check_int(tick_ms, "tick_ms", 1, MAX_TICK_MS)
    _check_int(backward_wait_ms, "backward_wait_ms", 0, MAX_BACKWARD_WAIT_MS)
    _check_int(continue_ahead_ms, "continue_ahead_ms", 0, MAX_CONTINUE_AHEAD_MS)
    _check_callable(clock, "clock", "int ms since the Unix epoch")
    _check_callable(eps_source, "eps_source", "(maxerror_us, unsynced)")
    _check_optional_ms(unsynced_bound_ms, "unsynced_bound_ms")


def _check_clock_ms(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(
            f"clock must return an int (ms since the Unix epoch), not {type(value).__name__}"
        )
    if not 0 <= value <= MAX_CLOCK_MS:
        raise InvalidArgumentError(
            f"clock returned {value}; ms since the Unix epoch must be in [0, {MAX_CLOCK_MS}]"
        )
    return value


def _check_epoch(epoch_ms: int, now_ms: int) -> None:
    if epoch_ms > now_ms:
        raise InvalidArgumentError(
            f"epoch_ms {epoch_ms} is in the future (the clock reads {now_ms})"
        )


def _check_eps_result(result: object) -> tuple[int, bool]:
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], bool)):
        raise ArgumentTypeError(
            f"eps_source must return a tuple (maxerror_us: int, unsynced: bool), got {result!r}"
        )
    return _check_int(result[0], "maxerror_us", 0, MAX_ID), result[1]


def _check_eps_args(
    maxerror_us: object, unsynced: object, max_eps: object, unsynced_bound_ms: object
) -> None:
    _check_int(maxerror_us, "maxerror_us", 0, MAX_ID)
    if not isinstance(unsynced, bool):
        raise ArgumentTypeError(f"unsynced must be a bool, not {type(unsynced).__name__}")
    _check_int(max_eps, "max_eps", 1, MAX_EPS_CODE)
    _check_optional_ms(unsynced_bound_ms, "unsynced_bound_ms")


def _check_reason(reason: object) -> str:
    if not isinstance(reason, str):
        raise ArgumentTypeError(f"reason must be a str, not {type(reason).__name__}")
    if not reason:
        raise InvalidArgumentError("reason must not be empty")
    return reason


def _utc_iso(unix_ms: int) -> str:
    try:
        when = _EPOCH + datetime.timedelta(milliseconds=unix_ms)
    except OverflowError:
        return "a date after 9999-12-31"
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _exhausted_message(time_bits: int, max_ticks: int, epoch_ms: int, tick_ms: int) -> str:
    end_ms = epoch_ms + (max_ticks + 1) * tick_ms
    return (
        f"the {time_bits}-bit time field ran out on {_utc_iso(end_ms)} "
        f"(epoch_ms={epoch_ms}, tick_ms={tick_ms}): no more IDs with this layout and epoch"
    )


def _stalled_message(guard_ms: int, now: int, last: int) -> str:
    return (
        f"the clock did not advance for {guard_ms} ms while the generator waited "
        f"(clock at tick {now}, last issued tick {last})"
    )


def _range_used_up_message(start: int, end: int) -> str:
    return f"the range [{start}, {end}) is used up"


def _range_short_message(n: int, remaining: int, start: int, end: int) -> str:
    return f"take({n}) needs {n} IDs but only {remaining} remain in [{start}, {end})"


def _raise_disabled(reason: str) -> NoReturn:
    raise GeneratorDisabledError(reason)


# --- layout ----------------------------------------------------------------------------------


class IdLayout:
    """The bit layout of 63-bit IDs: ``0 | time | eps | worker | seq`` from the top bit.

    Args:
        time_bits: bits of the tick count since the epoch (>= 20).
        worker_bits: bits of the worker id (>= 0).
        seq_bits: bits of the sequence within one tick (>= 1).
        eps_bits: bits of the clock-uncertainty code: 0 (none) or 2..8.

    Raises:
        ArgumentTypeError: a field width is not an int.
        InvalidArgumentError: a width is out of range, or the widths do not sum to 63.

    Layouts are immutable, hashable, and compare equal to a layout of the other
    implementation with the same widths.
    """

    __slots__ = ("_eps_bits", "_eps_shift", "_seq_bits", "_time_bits", "_time_shift",
                 "_worker_bits")

    def __init__(
        self, time_bits: int = 41, worker_bits: int = 10, seq_bits: int = 12, eps_bits: int = 0
    ) -> None:
        t, w, s, e = _check_layout(time_bits, worker_bits, seq_bits, eps_bits)
        self._time_bits, self._worker_bits, self._seq_bits, self._eps_bits = t, w, s, e
        self._eps_shift = s + w
        self._time_shift = s + w + e

    @property
    def time_bits(self) -> int:
        """Bits of the tick count."""
        return self._time_bits

    @property
    def eps_bits(self) -> int:
        """Bits of the clock-uncertainty code (0: none)."""
        return self._eps_bits

    @property
    def worker_bits(self) -> int:
        """Bits of the worker id."""
        return self._worker_bits

    @property
    def seq_bits(self) -> int:
        """Bits of the sequence number."""
        return self._seq_bits

    @property
    def max_ticks(self) -> int:
        """The largest tick count, ``2**time_bits - 1``."""
        return (1 << self._time_bits) - 1

    @property
    def max_eps(self) -> int:
        """The largest eps code (the "unsynchronised" code), 0 without eps bits."""
        return (1 << self._eps_bits) - 1

    @property
    def max_worker(self) -> int:
        """The largest worker id."""
        return (1 << self._worker_bits) - 1

    @property
    def max_seq(self) -> int:
        """The largest sequence number within one tick."""
        return (1 << self._seq_bits) - 1

    def _fields(self) -> tuple[int, int, int, int]:
        return self._time_bits, self._worker_bits, self._seq_bits, self._eps_bits

    def __eq__(self, other: object) -> bool:
        fields = _layout_fields(other)
        if fields is None:
            return NotImplemented
        return fields == self._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (
            f"IdLayout(time_bits={self._time_bits}, worker_bits={self._worker_bits}, "
            f"seq_bits={self._seq_bits}, eps_bits={self._eps_bits})"
        )

    def __reduce__(self) -> tuple[object, tuple[int, int, int, int]]:
        return (IdLayout, self._fields())

    def pack(self, ticks: int, worker: int, seq: int, eps: int = 0) -> int:
        """Compose an ID from its fields.

        Args:
            ticks: ticks since the epoch, in ``[0, max_ticks]``.
            worker: the worker id, in ``[0, max_worker]``.
            seq: the sequence number, in ``[0, max_seq]``.
            eps: the clock-uncertainty code, in ``[0, max_eps]``.

        Returns:
            The ID, an int in ``[0, 2**63)``.

        Raises:
            ArgumentTypeError: a field is not an int.
            InvalidArgumentError: a field is out of its range (the message names it).
        """
        _check_int(ticks, "ticks", 0, self.max_ticks)
        _check_int(worker, "worker", 0, self.max_worker)
        _check_int(seq, "seq", 0, self.max_seq)
        _check_int(eps, "eps", 0, self.max_eps)
        return (
            (ticks << self._time_shift) | (eps << self._eps_shift)
            | (worker << self._seq_bits) | seq
        )

    def unpack(self, id: int) -> tuple[int, int, int, int]:
        """Split an ID into its fields.

        Args:
            id: an ID, an int in ``[0, 2**63)``.

        Returns:
            ``(ticks, eps, worker, seq)``, in bit order.

        Raises:
            ArgumentTypeError: ``id`` is not an int.
            InvalidArgumentError: ``id`` is negative or wider than 63 bits.
        """
        _check_int(id, "id", 0, MAX_ID)
        return (
            id >> self._time_shift,
            (id >> self._eps_shift) & self.max_eps,
            (id >> self._seq_bits) & self.max_worker,
            id & self.max_seq,
        )


#: Twitter's layout: 41-bit ms, 10-bit worker, 12-bit sequence.
SNOWFLAKE = IdLayout(41, 10, 12)
#: TrueTime-style layout: 41-bit ms, 4-bit uncertainty code, 10-bit worker, 8-bit sequence.
TRUETIME = IdLayout(41, 10, 8, eps_bits=4)


# --- clock uncertainty ---------------------------------------------------------------------


def _bucket(value: int, unit: int, max_eps: int) -> int:
    # smallest c in [0, max_eps - 1] with value <= unit * 2**c, else max_eps
    c = 0
    while c < max_eps and value > unit << c:
        c += 1
    return c


def _eps_code(maxerror_us: int, unsynced: bool, max_eps: int, bound_ms: int | None) -> int:
    code = _bucket(maxerror_us, 1000, max_eps)
    if not unsynced:
        return code
    if bound_ms is None:
        return max_eps
    return max(code, _bucket(bound_ms, 1, max_eps))


def eps_code(
    maxerror_us: int, unsynced: bool, max_eps: int = 15, unsynced_bound_ms: int | None = None
) -> int:
    """Encode a clock-error bound as a log2 bucket of milliseconds.

    Args:
        maxerror_us: the clock's maximum error in microseconds.
        unsynced: whether the clock is unsynchronised.
        max_eps: the largest code, reserved for "unsynchronised" (15 for 4 bits).
        unsynced_bound_ms: a bound to record for an unsynchronised clock instead of the
            reserved code.

    Returns:
        The smallest ``c`` in ``[0, max_eps - 1]`` with ``maxerror_us <= 1000 * 2**c``,
        or ``max_eps`` for a larger error. An unsynchronised clock gets ``max_eps``, or
        with ``unsynced_bound_ms`` the code of that bound, never smaller than the code of
        ``maxerror_us``.

    Raises:
        ArgumentTypeError: an argument has the wrong type.
        InvalidArgumentError: an argument is out of range.
    """
    _check_eps_args(maxerror_us, unsynced, max_eps, unsynced_bound_ms)
    return _eps_code(maxerror_us, unsynced, max_eps, unsynced_bound_ms)


def eps_bound_ms(code: int, max_eps: int = 15) -> int | None:
    """The clock-error bound an eps code stands for.

    Args:
        code: an eps code, in ``[0, max_eps]``.
        max_eps: the largest code, the "unsynchronised" one.

    Returns:
        ``2**code`` ms, or None for the unsynchronised code.

    Raises:
        ArgumentTypeError: an argument is not an int.
        InvalidArgumentError: an argument is out of range.
    """
    _check_int(max_eps, "max_eps", 1, MAX_EPS_CODE)
    _check_int(code, "code", 0, max_eps)
    return None if code == max_eps else 1 << code


class _Timex(ctypes.Structure):
    # the head of Linux's struct timex; the tail is room for the rest of it
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_char * 256),
    ]


_TIME_ERROR = 5
_STA_UNSYNC = 0x40
_ADJTIMEX: Callable[[ctypes._Pointer[_Timex]], int] | None = None
_ADJTIMEX_LOADED = False


def _adjtimex() -> Callable[[ctypes._Pointer[_Timex]], int] | None:
    global _ADJTIMEX, _ADJTIMEX_LOADED
    if not _ADJTIMEX_LOADED:
        _ADJTIMEX_LOADED = True
        if sys.platform.startswith("linux"):
            try:
                func = ctypes.CDLL(None).adjtimex
            except (OSError, AttributeError):
                func = None
            if func is not None:
                func.argtypes = [ctypes.POINTER(_Timex)]
                func.restype = ctypes.c_int
                _ADJTIMEX = func
    return _ADJTIMEX


def _kernel_clock_error() -> tuple[int, bool]:
    """``(maxerror_us, unsynced)`` from ``adjtimex(modes=0)``; unsynchronised elsewhere."""
    func = _adjtimex()
    if func is None:
        return UNKNOWN_MAXERROR_US, True
    tx = _Timex()
    state = func(ctypes.pointer(tx))
    if state == -1:
        return UNKNOWN_MAXERROR_US, True
    return max(int(tx.maxerror), 0), state == _TIME_ERROR or bool(tx.status & _STA_UNSYNC)


class _KernelClockError:
    # Reads the kernel's estimate at most once per ms and extrapolates it upward in
    # between by 500 us per second, the rate at which the kernel itself grows it.
    __slots__ = ("_at_ns", "_maxerror_us", "_unsynced")

    def __init__(self) -> None:
        self._at_ns = -1
        self._maxerror_us = UNKNOWN_MAXERROR_US
        self._unsynced = True

    def read(self) -> tuple[int, bool]:
        now = time.monotonic_ns()
        if self._at_ns < 0 or now - self._at_ns >= 1_000_000:
            self._maxerror_us, self._unsynced = _kernel_clock_error()
            self._at_ns = now
            return self._maxerror_us, self._unsynced
        return self._maxerror_us + (now - self._at_ns + 1_999_999) // 2_000_000, self._unsynced


# --- the state machine -----------------------------------------------------------------------


class IdCore:
    """One generator's state: issues strictly increasing IDs of one layout and worker.

    Args:
        layout: the bit layout (an :class:`IdLayout` of either implementation).
        worker: the worker id, in ``[0, layout.max_worker]``.
        epoch_ms: the epoch, ms since the Unix epoch; not in the future.
        tick_ms: the length of one tick in ms, in ``[1, 86_400_000]``.
        backward_wait_ms: a clock step back up to this many ms is waited out, in
            ``[0, 10_000]``; a larger one raises :class:`ClockMovedBackwardsError`.
        continue_ahead_ms: when > 0, after a step back of up to this many ms keep
            issuing on the last tick (and the following ones, never more than this far
            ahead of the clock) instead of waiting; in ``[0, 60_000]``.
        clock: None for the wall clock, or a zero-argument callable returning int ms
            since the Unix epoch (called once here to check the epoch).
        eps_source: for layouts with eps bits: None for the kernel's clock-error
            estimate (``adjtimex``), or a callable returning ``(maxerror_us, unsynced)``;
            called once per tick.
        unsynced_bound_ms: the bound to record while the clock is unsynchronised
            instead of the reserved code (see :func:`eps_code`).

    Raises:
        ArgumentTypeError: an argument has the wrong type.
        InvalidArgumentError: an argument is out of range, or the epoch is in the future.

    Thread safe: each ID is decided in a critical section that also reads the clock.
    A copy would issue the same IDs as the original, so cores cannot be pickled.
    """

    __slots__ = (
        "_ahead_ticks",
        "_backward_wait_ms",
        "_base",
        "_clock",
        "_disabled",
        "_epoch_ms",
        "_eps_shift",
        "_eps_source",
        "_guard_ns",
        "_issued",
        "_kernel",
        "_last",
        "_layout",
        "_lock",
        "_max_eps",
        "_max_seq",
        "_max_ticks",
        "_seq",
        "_tick_ms",
        "_time_shift",
        "_unsynced_bound_ms",
        "_wait_ticks",
        "_worker",
        "_worker_bits_value",
    )

    def __init__(
        self,
        layout: IdLayout,
        worker: int,
        *,
        epoch_ms: int,
        tick_ms: int = 1,
        backward_wait_ms: int = 5,
        continue_ahead_ms: int = 0,
        clock: Callable[[], int] | None = None,
        eps_source: Callable[[], tuple[int, bool]] | None = None,
        unsynced_bound_ms: int | None = None,
    ) -> None:
        fields = _layout_arg(layout)
        if not isinstance(layout, IdLayout):
            layout = IdLayout(*fields)
        _check_core_options(worker, layout.max_worker, epoch_ms, tick_ms, backward_wait_ms,
                            continue_ahead_ms, clock, eps_source, unsynced_bound_ms)
        now_ms = time.time_ns() // 1_000_000 if clock is None else _check_clock_ms(clock())
        _check_epoch(epoch_ms, now_ms)
        self._layout = layout
        self._worker = worker
        self._epoch_ms = epoch_ms
        self._tick_ms = tick_ms
        self._backward_wait_ms = backward_wait_ms
        self._wait_ticks = backward_wait_ms // tick_ms
        self._ahead_ticks = continue_ahead_ms // tick_ms
        self._guard_ns = (max(backward_wait_ms, tick_ms) + STALL_GRACE_MS) * 1_000_000
        self._clock = clock
        self._eps_source = eps_source
        self._unsynced_bound_ms = unsynced_bound_ms
        self._kernel = _KernelClockError()
        self._max_ticks = layout.max_ticks
        self._max_seq = layout.max_seq
        self._max_eps = layout.max_eps
        self._time_shift = layout.seq_bits + layout.worker_bits + layout.eps_bits
        self._eps_shift = layout.seq_bits + layout.worker_bits
        self._worker_bits_value = worker << layout.seq_bits
        # tick -1 counts as used up, so the first ID needs a tick >= 0
        self._last = -1
        self._seq = self._max_seq
        self._base = 0
        self._issued = 0
        self._disabled: str | None = None
        self._lock = threading.Lock()

    def __reduce__(self) -> NoReturn:
        raise TypeError("an IdCore cannot be pickled or copied: a copy would repeat its IDs")

    def __repr__(self) -> str:
        return (
            f"IdCore({self._layout!r}, worker={self._worker}, epoch_ms={self._epoch_ms}, "
            f"tick_ms={self._tick_ms}, last_ticks={self._last}, issued={self._issued})"
        )

    # --- properties -------------------------------------------------------------------------

    @property
    def layout(self) -> IdLayout:
        """The bit layout of the IDs."""
        return self._layout

    @property
    def worker(self) -> int:
        """The worker id in every ID."""
        return self._worker

    @property
    def epoch_ms(self) -> int:
        """The epoch, ms since the Unix epoch."""
        return self._epoch_ms

    @property
    def tick_ms(self) -> int:
        """The length of one tick in ms."""
        return self._tick_ms

    @property
    def last_ticks(self) -> int:
        """The tick of the last ID issued (or restored), -1 before the first."""
        return self._last

    @property
    def issued(self) -> int:
        """How many IDs this core has issued."""
        return self._issued

    @property
    def disabled(self) -> str | None:
        """The reason given to :meth:`disable`, or None while the core works."""
        return self._disabled

    # --- issuing ----------------------------------------------------------------------------

    def _ticks(self) -> int:
        clock = self._clock
        ms = time.time_ns() // 1_000_000 if clock is None else _check_clock_ms(clock())
        return (ms - self._epoch_ms) // self._tick_ms

    def _open(self, tick: int) -> int:
        # Start issuing on a new tick; nothing changes when it cannot be issued.
        if tick > self._max_ticks:
            raise IdSpaceExhaustedError(_exhausted_message(
                self._layout.time_bits, self._max_ticks, self._epoch_ms, self._tick_ms))
        eps = 0
        if self._max_eps:
            if self._eps_source is None:
                maxerror_us, unsynced = self._kernel.read()
            else:
                maxerror_us, unsynced = _check_eps_result(self._eps_source())
            eps = _eps_code(maxerror_us, unsynced, self._max_eps, self._unsynced_bound_ms)
        self._base = (tick << self._time_shift) | (eps << self._eps_shift) | self._worker_bits_value
        self._last = tick
        self._seq = 0
        self._issued += 1
        return self._base

    def _pause(self, target: int) -> None:
        # Between two clock readings of a wait for tick `target`: a long wait on the wall
        # clock sleeps most of it; an injected clock is re-read at once.
        if self._clock is None:
            left_ns = (self._epoch_ms + target * self._tick_ms) * 1_000_000 - time.time_ns()
            if left_ns > 2_000_000:
                time.sleep(min(left_ns - 1_000_000, 50_000_000) / 1e9)

    def _next(self) -> int:
        # One ID; the caller holds the lock.
        wait_start = -1
        while True:
            if self._disabled is not None:
                _raise_disabled(self._disabled)
            now = self._ticks()
            last = self._last
            if now > last:
                return self._open(now)
            behind = last - now
            if behind == 0 or behind <= self._ahead_ticks:
                if self._seq < self._max_seq:
                    self._seq += 1
                    self._issued += 1
                    return self._base | self._seq
                if behind and behind + 1 <= self._ahead_ticks:
                    return self._open(last + 1)
                target = last + 1 - self._ahead_ticks if behind else last + 1
            elif behind <= self._wait_ticks:
                target = last
            else:
                raise ClockMovedBackwardsError(behind * self._tick_ms, self._backward_wait_ms)
            mono = time.monotonic_ns()
            if wait_start < 0:
                wait_start = mono
            elif mono - wait_start > self._guard_ns:
                raise ClockStalledError(
                    _stalled_message(self._guard_ns // 1_000_000, now, last))
            self._pause(target)

    def next_id(self) -> int:
        """Issue one ID.

        Returns:
            An ID greater than every ID this core issued before.

        Raises:
            ClockMovedBackwardsError: the clock moved back further than the core waits
                out (nothing changed; a later call with a recovered clock works).
            ClockStalledError: the clock did not move while the core waited for it.
            IdSpaceExhaustedError: the layout's time field ran out.
            GeneratorDisabledError: :meth:`disable` was called.
        """
        with self._lock:
            return self._next()

    def next_ids(self, n: int) -> list[int]:
        """Issue ``n`` IDs, as ``n`` calls of :meth:`next_id` would.

        Args:
            n: how many, in ``[0, 10_000_000]``.

        Returns:
            Strictly increasing IDs.

        Raises:
            ArgumentTypeError: ``n`` is not an int.
            InvalidArgumentError: ``n`` is out of range.
            ClockMovedBackwardsError: see :meth:`next_id` (the IDs issued before are
                dropped, never reissued).
            ClockStalledError: see :meth:`next_id`.
            IdSpaceExhaustedError: see :meth:`next_id`.
            GeneratorDisabledError: see :meth:`next_id`.
        """
        _check_int(n, "n", 0, MAX_BATCH)
        if self._disabled is not None:  # even for n = 0
            _raise_disabled(self._disabled)
        with self._lock:
            issue = self._next
            return [issue() for _ in range(n)]

    def disable(self, reason: str) -> None:
        """Make every later :meth:`next_id` / :meth:`next_ids` raise.

        Args:
            reason: the message of the :class:`GeneratorDisabledError` they raise.

        Raises:
            ArgumentTypeError: ``reason`` is not a str.
            InvalidArgumentError: ``reason`` is empty.
        """
        self._disabled = _check_reason(reason)

    def restore_last(self, ticks: int) -> None:
        """Never issue ``ticks`` or an earlier tick again (continue after a restart).

        Call it before the first ID with the last tick persisted with the worker lease;
        ``last_ticks`` becomes ``max(last_ticks, ticks)``. The core then treats the
        clock being behind that tick like any clock step back: it waits for a later
        tick up to ``backward_wait_ms`` (or, within ``continue_ahead_ms``, borrows
        one), and raises ClockMovedBackwards beyond that. A caller restoring a tick
        ahead of the clock on purpose (a safety margin) waits out the rest first, as
        idgen's generators do.

        Args:
            ticks: the last tick a previous holder may have issued, in
                ``[0, layout.max_ticks]``. An earlier tick than ``last_ticks`` changes
                nothing; ``last_ticks`` itself ends the current tick.

        Raises:
            ArgumentTypeError: ``ticks`` is not an int.
            InvalidArgumentError: ``ticks`` is out of range.
        """
        _check_int(ticks, "ticks", 0, self._max_ticks)
        with self._lock:
            if ticks >= self._last:
                self._last = ticks
                self._seq = self._max_seq  # the tick counts as used up


# --- leased ranges ----------------------------------------------------------------------------


class RangeCounter:
    """Issues the IDs of a leased block ``[start, end)`` in order.

    A counter can be reused for block after block: with a ``refill`` hook, :meth:`next`
    calls ``refill(counter)`` when it reaches the *mark* (by default the end of the
    block), and the hook moves the mark (:meth:`set_mark`, e.g. after asking for the
    next block in the background) or installs a new block (:meth:`set_range`), or
    raises; :meth:`next` then tries again. So the hot path stays one call into the
    counter, and the owner's Python code runs only at the mark.

    Args:
        start: the first ID of the block.
        end: one past the last ID; ``0 <= start <= end <= 2**63``.
        refill: called as ``refill(counter)`` by :meth:`next` at the mark (None: no
            hook; :meth:`next` raises :class:`RangeExhaustedError` at the end).

    Raises:
        ArgumentTypeError: ``start`` or ``end`` is not an int, ``refill`` not callable.
        InvalidArgumentError: they are out of range or ``start > end``.

    Thread safe; cannot be pickled (a copy would repeat its IDs).
    """

    __slots__ = ("_disabled", "_end", "_lock", "_mark", "_next", "_refill", "_start")

    def __init__(self, start: int, end: int,
                 refill: Callable[[RangeCounter], object] | None = None) -> None:
        if refill is not None and not callable(refill):
            raise ArgumentTypeError(f"refill must be callable or None, got {refill!r}")
        self._lock = threading.Lock()
        self._refill = refill
        self._disabled: str | None = None
        self._set(start, end, None)

    def _set(self, start: int, end: int, mark: int | None) -> None:
        _check_int(start, "start", 0, 1 << 63)
        _check_int(end, "end", 0, 1 << 63)
        if start > end:
            raise InvalidArgumentError(f"start must be <= end, got start={start}, end={end}")
        if mark is None:
            mark = end
        else:
            _check_int(mark, "mark", 0, 1 << 63)
            if not start <= mark <= end:
                raise InvalidArgumentError(
                    f"mark must be within [start, end] = [{start}, {end}], got {mark}")
        with self._lock:
            self._start = start
            self._end = end
            self._next = start
            self._mark = mark

    def set_range(self, start: int, end: int, mark: int | None = None) -> None:
        """Issue from a new block ``[start, end)``, with the ``refill`` hook called when
        :meth:`next` reaches ``mark`` (default ``end``).

        Raises:
            ArgumentTypeError, InvalidArgumentError: as the constructor, or a ``mark``
                outside ``[start, end]``.
        """
        self._set(start, end, mark)

    def set_mark(self, mark: int) -> None:
        """Move the mark within the current block (``start <= mark <= end``).

        Raises:
            ArgumentTypeError: ``mark`` is not an int.
            InvalidArgumentError: ``mark`` is outside ``[start, end]``.
        """
        _check_int(mark, "mark", 0, 1 << 63)
        with self._lock:
            if not self._start <= mark <= self._end:
                raise InvalidArgumentError(
                    f"mark must be within [start, end] = [{self._start}, {self._end}], "
                    f"got {mark}")
            self._mark = mark

    def __reduce__(self) -> NoReturn:
        raise TypeError("a RangeCounter cannot be pickled or copied: a copy would repeat its IDs")

    def __repr__(self) -> str:
        return f"RangeCounter(start={self._start}, end={self._end}, next_value={self._next})"

    @property
    def start(self) -> int:
        """The first ID of the block."""
        return self._start

    @property
    def end(self) -> int:
        """One past the last ID of the block."""
        return self._end

    @property
    def next_value(self) -> int:
        """The ID :meth:`next` returns next (``end`` once the block is used up)."""
        return self._next

    @property
    def remaining(self) -> int:
        """How many IDs are left."""
        return self._end - self._next

    @property
    def mark(self) -> int:
        """Where :meth:`next` calls the ``refill`` hook (the end unless moved)."""
        return self._mark

    @property
    def disabled(self) -> str | None:
        """The reason given to :meth:`disable`, or None while the counter works."""
        return self._disabled

    def next(self) -> int:
        """Issue the next ID of the block (calling ``refill`` at the mark, see above).

        Raises:
            RangeExhaustedError: the block is used up and there is no ``refill`` hook.
            GeneratorDisabledError: :meth:`disable` was called.
            Exception: whatever the ``refill`` hook raises.
        """
        while True:
            with self._lock:
                if self._disabled is not None:
                    _raise_disabled(self._disabled)
                value = self._next
                refill = self._refill
                if value < (self._end if refill is None else self._mark):
                    self._next = value + 1
                    return value
                if refill is None:
                    raise RangeExhaustedError(_range_used_up_message(self._start, self._end))
            refill(self)  # outside the lock: it moves the mark or installs a block

    def take(self, n: int) -> list[int]:
        """Issue the next ``n`` IDs of the block, all or none.

        Args:
            n: how many, in ``[0, 10_000_000]``.

        Returns:
            ``n`` consecutive IDs.

        Raises:
            ArgumentTypeError: ``n`` is not an int.
            InvalidArgumentError: ``n`` is out of range.
            RangeExhaustedError: fewer than ``n`` IDs remain (none is taken).
            GeneratorDisabledError: :meth:`disable` was called.
        """
        _check_int(n, "n", 0, MAX_BATCH)
        with self._lock:
            if self._disabled is not None:
                _raise_disabled(self._disabled)
            value = self._next
            if n > self._end - value:
                raise RangeExhaustedError(
                    _range_short_message(n, self._end - value, self._start, self._end))
            self._next = value + n
            return list(range(value, value + n))

    def disable(self, reason: str) -> None:
        """Make every later :meth:`next` / :meth:`take` raise.

        Args:
            reason: the message of the :class:`GeneratorDisabledError` they raise.

        Raises:
            ArgumentTypeError: ``reason`` is not a str.
            InvalidArgumentError: ``reason`` is empty.
        """
        self._disabled = _check_reason(reason)
