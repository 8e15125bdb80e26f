# cython: language_level=3, embedsignature=True
# Native ID core. The specification (rules, messages, docstrings) is fastcore/_ids_py.py;
# for the same clock readings this file must issue exactly the IDs the twin issues.

cimport cython
from cpython.exc cimport PyErr_Clear, PyErr_Occurred
from cpython.list cimport PyList_New
from cpython.long cimport PyLong_CheckExact
from cpython.ref cimport PyObject
from libc.stdint cimport int64_t, uint64_t
from posix.time cimport CLOCK_MONOTONIC, CLOCK_REALTIME, clock_gettime, nanosleep, timespec

import threading

from fastcore._errors import (
    ArgumentTypeError,
    ClockMovedBackwardsError,
    ClockStalledError,
    GeneratorDisabledError,
    IdSpaceExhaustedError,
    InvalidArgumentError,
    RangeExhaustedError,
)
from fastcore._ids_py import (
    MAX_BATCH,
    MAX_EPS_CODE,
    MAX_ID,
    STALL_GRACE_MS,
    _check_clock_ms,
    _check_core_options,
    _check_epoch,
    _check_eps_args,
    _check_eps_result,
    _check_int,
    _check_layout,
    _check_reason,
    _exhausted_message,
    _layout_arg,
    _layout_fields,
    _range_short_message,
    _range_used_up_message,
    _stalled_message,
)

__all__ = ("SNOWFLAKE", "TRUETIME", "IdCore", "IdLayout", "RangeCounter", "eps_bound_ms",
           "eps_code")

cdef extern from "Python.h":
    # Declared without Cython's error checks: the callers test for errors themselves.
    unsigned long long _as_u64 "PyLong_AsUnsignedLongLong"(object) noexcept
    PyObject* _new_u64 "PyLong_FromUnsignedLongLong"(unsigned long long) noexcept
    void _list_set "PyList_SET_ITEM"(object, Py_ssize_t, PyObject*) noexcept

cdef extern from *:
    """
    #ifdef __linux__
    #include <sys/timex.h>
    #endif
    /* The kernel's clock-error estimate, read-only (modes = 0). Returns 1 when the
       clock is unsynchronised; elsewhere than Linux always unsynchronised. */
    static int sk_kernel_clock_error(long long *maxerror_us) {
    #ifdef __linux__
        struct timex tx;
        int state;
        memset(&tx, 0, sizeof tx);
        state = adjtimex(&tx);
        if (state == -1) {
            *maxerror_us = 16000000;
            return 1;
        }
        *maxerror_us = tx.maxerror < 0 ? 0 : (long long)tx.maxerror;
        return state == TIME_ERROR || (tx.status & STA_UNSYNC) != 0;
    #else
        *maxerror_us = 16000000;
        return 1;
    #endif
    }
    """
    int sk_kernel_clock_error(long long* maxerror_us) noexcept nogil

cdef uint64_t MAX_ID_C = MAX_ID
cdef uint64_t MAX_BATCH_C = MAX_BATCH
cdef uint64_t RANGE_LIMIT = (<uint64_t>1) << 63


# --- C helpers ------------------------------------------------------------------------------

@cython.cdivision(True)
cdef inline int64_t _floordiv(int64_t a, int64_t b) noexcept nogil:
    # Python's // for b > 0
    cdef int64_t q = a / b
    if a % b != 0 and a < 0:
        q -= 1
    return q

cdef inline int64_t _realtime_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec

cdef inline int64_t _monotonic_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec

cdef inline int _bucket(uint64_t value, uint64_t unit, int max_eps) noexcept nogil:
    # smallest c in [0, max_eps - 1] with value <= unit * 2**c, else max_eps; value <
    # 2**63, so the doubling stops before it could overflow
    cdef int c = 0
    while c < max_eps and value > unit:
        unit <<= 1
        c += 1
    return c

cdef inline int _eps_code(uint64_t maxerror_us, bint unsynced, int max_eps,
                          int64_t bound_ms) noexcept nogil:
    # bound_ms < 0: no unsynced_bound_ms
    cdef int code = _bucket(maxerror_us, 1000, max_eps)
    cdef int bound_code
    if not unsynced:
        return code
    if bound_ms < 0:
        return max_eps
    bound_code = _bucket(<uint64_t>bound_ms, 1, max_eps)
    return bound_code if bound_code > code else code

cdef int _field(object value, str what, uint64_t hi, uint64_t* out) except -1:
    # An int argument in [0, hi]; anything else gets the twin's check and message.
    cdef unsigned long long v
    if PyLong_CheckExact(value):
        v = _as_u64(value)
        if v == <unsigned long long>-1 and PyErr_Occurred():
            PyErr_Clear()
        elif v <= hi:
            out[0] = v
            return 0
    out[0] = <uint64_t>_check_int(value, what, 0, hi)
    return 0


# --- layout ---------------------------------------------------------------------------------

@cython.final
cdef class IdLayout:
    """The bit layout of 63-bit IDs (native); see ``fastcore._ids_py.IdLayout``."""

    cdef readonly int time_bits
    cdef readonly int worker_bits
    cdef readonly int seq_bits
    cdef readonly int eps_bits
    cdef int _eps_shift
    cdef int _time_shift
    cdef uint64_t _max_ticks
    cdef uint64_t _max_eps
    cdef uint64_t _max_worker
    cdef uint64_t _max_seq

    def __init__(self, time_bits=41, worker_bits=10, seq_bits=12, eps_bits=0):
        t, w, s, e = _check_layout(time_bits, worker_bits, seq_bits, eps_bits)
        self.time_bits, self.worker_bits, self.seq_bits, self.eps_bits = t, w, s, e
        self._eps_shift = s + w
        self._time_shift = s + w + e
        self._max_ticks = ((<uint64_t>1) << t) - 1
        self._max_eps = ((<uint64_t>1) << e) - 1
        self._max_worker = ((<uint64_t>1) << w) - 1
        self._max_seq = ((<uint64_t>1) << s) - 1

    @property
    def max_ticks(self):
        return self._max_ticks

    @property
    def max_eps(self):
        return self._max_eps

    @property
    def max_worker(self):
        return self._max_worker

    @property
    def max_seq(self):
        return self._max_seq

    cdef tuple _fields(self):
        return (self.time_bits, self.worker_bits, self.seq_bits, self.eps_bits)

    def __eq__(self, other):
        fields = _layout_fields(other)
        if fields is None:
            return NotImplemented
        return fields == self._fields()

    def __hash__(self):
        return hash(self._fields())

    def __repr__(self):
        return (
            f"IdLayout(time_bits={self.time_bits}, worker_bits={self.worker_bits}, "
            f"seq_bits={self.seq_bits}, eps_bits={self.eps_bits})"
        )

    def __reduce__(self):
        return (IdLayout, self._fields())

    def pack(self, ticks, worker, seq, eps=0):
        cdef uint64_t t, w, s, e
        _field(ticks, "ticks", self._max_ticks, &t)
        _field(worker, "worker", self._max_worker, &w)
        _field(seq, "seq", self._max_seq, &s)
        _field(eps, "eps", self._max_eps, &e)
        return (t << self._time_shift) | (e << self._eps_shift) | (w << self.seq_bits) | s

    def unpack(self, id):
        cdef uint64_t v
        _field(id, "id", MAX_ID_C, &v)
        return (
            v >> self._time_shift,
            (v >> self._eps_shift) & self._max_eps,
            (v >> self.seq_bits) & self._max_worker,
            v & self._max_seq,
        )


SNOWFLAKE = IdLayout(41, 10, 12)
TRUETIME = IdLayout(41, 10, 8, eps_bits=4)


def eps_code(maxerror_us, unsynced, max_eps=15, unsynced_bound_ms=None):
    """Encode a clock-error bound as a log2 bucket of ms; see ``fastcore._ids_py.eps_code``."""
    _check_eps_args(maxerror_us, unsynced, max_eps, unsynced_bound_ms)
    return _eps_code(maxerror_us, unsynced, max_eps,
                     -1 if unsynced_bound_ms is None else unsynced_bound_ms)


def eps_bound_ms(code, max_eps=15):
    """``2**code`` ms, or None for the unsynchronised code ``max_eps``."""
    _check_int(max_eps, "max_eps", 1, MAX_EPS_CODE)
    _check_int(code, "code", 0, max_eps)
    return None if code == max_eps else (<object>1) << code


# --- the state machine ----------------------------------------------------------------------

@cython.final
@cython.auto_pickle(False)
cdef class IdCore:
    """One generator's state (native); see ``fastcore._ids_py.IdCore``.

    With the wall clock (and the kernel's eps) no lock is taken: the state is read and
    written only with the GIL held and no Python call in between, so each ID is decided
    atomically. A wait longer than 2 ms releases the GIL while it sleeps; the rules are
    applied afresh afterwards. An injected clock or eps source runs Python code, so
    those cores take a lock.
    """

    cdef readonly IdLayout layout
    cdef readonly int64_t worker
    cdef readonly int64_t epoch_ms
    cdef readonly int64_t tick_ms
    cdef readonly uint64_t issued
    cdef readonly object disabled
    cdef int64_t _backward_wait_ms
    cdef int64_t _wait_ticks
    cdef int64_t _ahead_ticks
    cdef int64_t _guard_ns
    cdef int64_t _max_ticks
    cdef int64_t _max_seq
    cdef int _max_eps
    cdef int _time_shift
    cdef int _eps_shift
    cdef uint64_t _worker_value
    cdef int64_t _unsynced_bound_ms  # -1: None
    cdef object _clock
    cdef object _eps_source
    cdef object _lock
    cdef bint _locked
    # state: the tick of the last ID, its sequence number, the ID with seq = 0
    cdef int64_t _last
    cdef int64_t _seq
    cdef uint64_t _base
    # the kernel's clock error at the last read (monotonic ns), -1: never read
    cdef int64_t _kernel_at_ns
    cdef int64_t _kernel_maxerror_us
    cdef bint _kernel_unsynced

    def __init__(self, layout, worker, *, epoch_ms, tick_ms=1, backward_wait_ms=5,
                 continue_ahead_ms=0, clock=None, eps_source=None, unsynced_bound_ms=None):
        fields = _layout_arg(layout)
        if not isinstance(layout, IdLayout):
            layout = IdLayout(*fields)
        cdef IdLayout lay = layout
        _check_core_options(worker, lay.max_worker, epoch_ms, tick_ms, backward_wait_ms,
                            continue_ahead_ms, clock, eps_source, unsynced_bound_ms)
        if clock is None:
            now_ms = _floordiv(_realtime_ns(), 1000000)
        else:
            now_ms = _check_clock_ms(clock())
        _check_epoch(epoch_ms, now_ms)
        self.layout = lay
        self.worker = worker
        self.epoch_ms = epoch_ms
        self.tick_ms = tick_ms
        self._backward_wait_ms = backward_wait_ms
        self._wait_ticks = backward_wait_ms // tick_ms
        self._ahead_ticks = continue_ahead_ms // tick_ms
        self._guard_ns = (max(backward_wait_ms, tick_ms) + STALL_GRACE_MS) * 1000000
        self._clock = clock
        self._eps_source = eps_source
        self._unsynced_bound_ms = -1 if unsynced_bound_ms is None else unsynced_bound_ms
        self._kernel_at_ns = -1
        self._kernel_maxerror_us = 16000000
        self._kernel_unsynced = True
        self._max_ticks = lay._max_ticks
        self._max_seq = lay._max_seq
        self._max_eps = lay._max_eps
        self._time_shift = lay._time_shift
        self._eps_shift = lay._eps_shift
        self._worker_value = (<uint64_t>self.worker) << lay.seq_bits
        self._last = -1  # tick -1 counts as used up: the first ID needs a tick >= 0
        self._seq = self._max_seq
        self._base = 0
        self.issued = 0
        self.disabled = None
        self._lock = threading.Lock()
        self._locked = clock is not None or (self._max_eps != 0 and eps_source is not None)

    def __reduce__(self):
        raise TypeError("an IdCore cannot be pickled or copied: a copy would repeat its IDs")

    def __repr__(self):
        return (
            f"IdCore({self.layout!r}, worker={self.worker}, epoch_ms={self.epoch_ms}, "
            f"tick_ms={self.tick_ms}, last_ticks={self._last}, issued={self.issued})"
        )

    @property
    def last_ticks(self):
        return self._last

    # --- issuing --------------------------------------------------------------------------

    cdef int64_t _py_ticks(self) except? -1:
        cdef int64_t ms = _check_clock_ms(self._clock())
        return _floordiv(ms - self.epoch_ms, self.tick_ms)

    cdef int _kernel_eps(self) noexcept nogil:
        cdef int64_t now = _monotonic_ns()
        cdef long long maxerror
        cdef int64_t at = self._kernel_at_ns
        if at < 0 or now - at >= 1000000:
            self._kernel_unsynced = sk_kernel_clock_error(&maxerror)
            self._kernel_maxerror_us = maxerror
            self._kernel_at_ns = now
        else:
            maxerror = self._kernel_maxerror_us + (now - at + 1999999) // 2000000
        return _eps_code(<uint64_t>maxerror, self._kernel_unsynced, self._max_eps,
                         self._unsynced_bound_ms)

    cdef int _open(self, int64_t tick, uint64_t* out) except -1:
        # Start issuing on a new tick; nothing changes when it cannot be issued.
        cdef int eps = 0
        if tick > self._max_ticks:
            raise IdSpaceExhaustedError(_exhausted_message(
                self.layout.time_bits, self._max_ticks, self.epoch_ms, self.tick_ms))
        if self._max_eps:
            if self._eps_source is None:
                eps = self._kernel_eps()
            else:
                maxerror_us, unsynced = _check_eps_result(self._eps_source())
                eps = _eps_code(maxerror_us, unsynced, self._max_eps, self._unsynced_bound_ms)
        self._base = ((<uint64_t>tick << self._time_shift) | (<uint64_t>eps << self._eps_shift)
                      | self._worker_value)
        self._last = tick
        self._seq = 0
        self.issued += 1
        out[0] = self._base
        return 0

    cdef void _pause(self, int64_t target):
        # Between two wall-clock readings of a wait for tick `target`: sleep most of a
        # long wait (without the GIL), a short one with it, and spin the last 150 us.
        cdef int64_t now_ns = _realtime_ns()
        cdef int64_t now_ms = _floordiv(now_ns, 1000000)
        cdef double left = ((<double>(self.epoch_ms - now_ms)
                             + <double>target * <double>self.tick_ms) * 1e6
                            - <double>(now_ns - now_ms * 1000000))
        cdef timespec ts
        ts.tv_sec = 0
        if left > 2e6:
            ts.tv_nsec = <long>min(left - 1e6, 50e6)
            with nogil:
                nanosleep(&ts, NULL)
        elif left > 250e3:
            ts.tv_nsec = <long>(left - 150e3)
            nanosleep(&ts, NULL)

    @cython.cdivision(True)
    cdef int _next(self, uint64_t* out) except -1:
        # One ID into out[0]: the rules of the twin's IdCore._next.
        cdef int64_t now, last, behind, target, mono
        cdef int64_t wait_start = -1
        while True:
            if self.disabled is not None:
                raise GeneratorDisabledError(self.disabled)
            if self._clock is None:
                now = _floordiv(_realtime_ns(), 1000000) - self.epoch_ms
                if self.tick_ms != 1:
                    now = _floordiv(now, self.tick_ms)
            else:
                now = self._py_ticks()
            last = self._last
            behind = last - now
            if behind == 0 and self._seq < self._max_seq:  # the common case
                self._seq += 1
                self.issued += 1
                out[0] = self._base | <uint64_t>self._seq
                return 0
            if behind < 0:
                return self._open(now, out)
            if behind == 0 or behind <= self._ahead_ticks:
                if self._seq < self._max_seq:
                    self._seq += 1
                    self.issued += 1
                    out[0] = self._base | <uint64_t>self._seq
                    return 0
                if behind != 0 and behind + 1 <= self._ahead_ticks:
                    return self._open(last + 1, out)
                target = last + 1 - self._ahead_ticks if behind != 0 else last + 1
            elif behind <= self._wait_ticks:
                target = last
            else:
                raise ClockMovedBackwardsError((<object>behind) * self.tick_ms,
                                               self._backward_wait_ms)
            mono = _monotonic_ns()
            if wait_start < 0:
                wait_start = mono
            elif mono - wait_start > self._guard_ns:
                raise ClockStalledError(_stalled_message(self._guard_ns // 1000000, now, last))
            if self._clock is None:
                self._pause(target)

    def next_id(self):
        cdef uint64_t v
        if self._locked:
            with self._lock:
                self._next(&v)
        else:
            self._next(&v)
        return v

    cdef int _fill(self, list result, Py_ssize_t n) except -1:
        cdef Py_ssize_t i
        cdef uint64_t v
        cdef PyObject* item
        for i in range(n):
            self._next(&v)
            item = _new_u64(v)
            if item == NULL:
                raise MemoryError()
            _list_set(result, i, item)  # steals the reference
        return 0

    def next_ids(self, n):
        cdef uint64_t count
        _field(n, "n", MAX_BATCH_C, &count)
        if self.disabled is not None:  # even for n = 0
            raise GeneratorDisabledError(self.disabled)
        cdef list result = PyList_New(<Py_ssize_t>count)  # slots NULL until filled
        if self._locked:
            with self._lock:
                self._fill(result, <Py_ssize_t>count)
        else:
            self._fill(result, <Py_ssize_t>count)
        return result

    def disable(self, reason):
        self.disabled = _check_reason(reason)

    def restore_last(self, ticks):
        cdef uint64_t t
        _field(ticks, "ticks", <uint64_t>self._max_ticks, &t)
        if self._locked:
            with self._lock:
                self._restore(<int64_t>t)
        else:
            self._restore(<int64_t>t)

    cdef void _restore(self, int64_t ticks) noexcept:
        if ticks >= self._last:
            self._last = ticks
            self._seq = self._max_seq  # the tick counts as used up


# --- leased ranges --------------------------------------------------------------------------

@cython.final
@cython.auto_pickle(False)
cdef class RangeCounter:
    """IDs of a leased block ``[start, end)`` (native); see ``fastcore._ids_py.RangeCounter``.

    Atomic under the GIL: next() and take() call no Python code while they change it.
    """

    cdef uint64_t _start
    cdef uint64_t _end
    cdef uint64_t _next
    cdef uint64_t _mark
    cdef object _refill
    cdef readonly object disabled

    def __init__(self, start, end, refill=None):
        if refill is not None and not callable(refill):
            raise ArgumentTypeError(f"refill must be callable or None, got {refill!r}")
        self._refill = refill
        self.disabled = None
        self._set(start, end, None)

    cdef int _set(self, object start, object end, object mark) except -1:
        cdef uint64_t s, e, m
        _field(start, "start", RANGE_LIMIT, &s)
        _field(end, "end", RANGE_LIMIT, &e)
        if s > e:
            raise InvalidArgumentError(f"start must be <= end, got start={start}, end={end}")
        if mark is None:
            m = e
        else:
            _field(mark, "mark", RANGE_LIMIT, &m)
            if m < s or m > e:
                raise InvalidArgumentError(
                    f"mark must be within [start, end] = [{s}, {e}], got {mark}")
        self._start = s
        self._end = e
        self._next = s
        self._mark = m
        return 0

    def set_range(self, start, end, mark=None):
        self._set(start, end, mark)

    def set_mark(self, mark):
        cdef uint64_t m
        _field(mark, "mark", RANGE_LIMIT, &m)
        if m < self._start or m > self._end:
            raise InvalidArgumentError(
                f"mark must be within [start, end] = [{self._start}, {self._end}], got {mark}")
        self._mark = m

    @property
    def mark(self):
        return self._mark

    def __reduce__(self):
        raise TypeError("a RangeCounter cannot be pickled or copied: a copy would repeat its IDs")

    def __repr__(self):
        return f"RangeCounter(start={self._start}, end={self._end}, next_value={self._next})"

    @property
    def start(self):
        return self._start

    @property
    def end(self):
        return self._end

    @property
    def next_value(self):
        return self._next

    @property
    def remaining(self):
        return self._end - self._next

    def next(self):
        cdef uint64_t value
        while True:
            if self.disabled is not None:
                raise GeneratorDisabledError(self.disabled)
            value = self._next
            if self._refill is None:
                if value >= self._end:
                    raise RangeExhaustedError(_range_used_up_message(self._start, self._end))
                self._next = value + 1
                return value
            if value < self._mark:
                self._next = value + 1
                return value
            self._refill(self)  # moves the mark or installs a block, or raises

    def take(self, n):
        cdef uint64_t count, value, i
        cdef PyObject* item
        _field(n, "n", MAX_BATCH_C, &count)
        if self.disabled is not None:
            raise GeneratorDisabledError(self.disabled)
        value = self._next
        if count > self._end - value:
            raise RangeExhaustedError(
                _range_short_message(count, self._end - value, self._start, self._end))
        # reserve first: an allocation may run the garbage collector, whose finalizers
        # may let another thread in
        self._next = value + count
        cdef list result = PyList_New(<Py_ssize_t>count)
        for i in range(count):
            item = _new_u64(value + i)
            if item == NULL:
                raise MemoryError()
            _list_set(result, <Py_ssize_t>i, item)
        return result

    def disable(self, reason):
        self.disabled = _check_reason(reason)
