"""Side-by-side table: idgen's ID generators vs the pure-Python twin and the peer libraries.

Commands (run from the repository root, after ``python setup.py build_ext --inplace``)::

    python bench/compare_ids.py --quick                  # about 1 minute
    python bench/compare_ids.py                          # a few minutes (the RESULTS.md run)
    python bench/compare_ids.py --json /tmp/ids.json     # also dump the raw numbers

    # the pytest-benchmark suite of the same calls (bench/pytest.ini collects bench_*.py)
    python -m pytest -c bench/pytest.ini bench/bench_ids.py --benchmark-disable   # smoke

Method (that of ``bench/compare.py``): a case's implementations take turns, round-robin,
the order reversed on alternate rounds, so load from other processes on a shared machine
hits all of them alike; in its turn an implementation is sampled again and again for
``turn_s``; the table gives the median sample and the best one.

- ``next_id()``: a sample is a chunk of single calls in a Python ``for`` loop lasting
  about 1 ms, timed on the thread's CPU clock (``time.thread_time_ns``) and on the wall
  clock; the loop is included (its floor is a row of the table). Generators with a
  per-worker ceiling are called round-robin over 8 workers (64 for TrueTime) so that
  the call, not the ceiling, is timed; the "1 generator" row shows what the ceiling does
  to a tight loop. Latency percentiles come from calls timed one by one with a
  ``perf_counter_ns`` pair (the pair's own cost is the floor row).
- ``next_ids(10_000)`` (peers: a list comprehension): a sample is as many back-to-back
  calls as last about ``batch_sample_s`` on one generator, started on a millisecond
  boundary; IDs per wall second, and the share of the format ceiling (4.096 M/s for
  41/10/12, 256 k/s for the TrueTime layout). The sample's end may fall early in a
  tick, which overstates a ceiling-bound rate by at most one tick per sample
  (0.4 % at 250 ms, 1 % at --quick's 100 ms).
- Correctness (research/idgen.md section 1): each test runs in a fresh interpreter per
  implementation: 4 threads sharing one generator with ``sys.setswitchinterval(1e-6)``;
  ``fork()`` after the parent used the generator, parent and child minting at once;
  a sequence overflow on a frozen clock (a watchdog moves it +100 ms after 0.5 s); a
  clock step back of 50 ms (T: 100 IDs, T+50 ms: 10, back to T: 100). Ours get the
  clock through ``clock=``; the peers through their own argument or a monkeypatch of
  the clock function their module calls, as the research script did; "n/a" where a
  generator reads no clock.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import gc
import itertools
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import _ids_impls as im
from _report import find, fingerprint, num, ratio, run_info, say
from _report import versions as package_versions

# --- plan ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    rounds: int  # rounds of every timed case
    turn_s: float  # an implementation's turn repeats samples for at least this long
    sample_s: float  # next_id(): a sample is a chunk of calls lasting about this
    batch_sample_s: float  # next_ids(n): a sample is back-to-back calls lasting about this
    latency_calls: int  # calls timed one by one, per implementation
    thread_calls: int  # per thread, 4 threads
    fork_calls: int  # parent and child each
    slow_calls: int  # thread / fork calls of sonyflake (25.6k IDs/s)
    range_calls: int  # range IDs on Redis: next_id() calls timed one by one, per variant


QUICK = Plan(rounds=3, turn_s=0.03, sample_s=0.001, batch_sample_s=0.1, latency_calls=30_000,
             thread_calls=25_000, fork_calls=50_000, slow_calls=2_500, range_calls=200_000)
FULL = Plan(rounds=9, turn_s=0.1, sample_s=0.001, batch_sample_s=0.25, latency_calls=200_000,
            thread_calls=100_000, fork_calls=200_000, slow_calls=10_000,
            range_calls=1_000_000)

THREADS = 4
WATCHDOG_S = 0.5  # the overflow test's watchdog moves the frozen clock after this
OVERFLOW_EXTRA = 64  # calls beyond a tick's capacity
UNBOUNDED_CAPACITY = 4096  # "capacity" of the generators without a per-tick limit

# --- timing --------------------------------------------------------------------------

Sample = tuple[int, int, int]  # (IDs, wall ns, thread CPU ns)
Sampler = Callable[[], Sample]


def interleaved(samplers: dict[str, Sampler], rounds: int,
                turn_s: float) -> dict[str, list[Sample]]:
    """Samples of each sampler, run round-robin (order reversed on alternate rounds); in
    its turn a sampler runs again until ``turn_s`` of wall time has passed (at most 1000
    samples)."""
    names = list(samplers)
    out: dict[str, list[Sample]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            gc.collect()
            spent = 0
            for _ in range(1000):
                s = samplers[name]()
                out[name].append(s)
                spent += s[1]
                if spent >= turn_s * 1e9:
                    break
    return out


def chunk_sampler(calls: list[Callable[[], Any]]) -> Sampler:
    run = im.loop(calls)

    def sample() -> Sample:
        gc.disable()
        try:
            c0 = time.thread_time_ns()
            t0 = time.perf_counter_ns()
            run()
            t1 = time.perf_counter_ns()
            c1 = time.thread_time_ns()
        finally:
            gc.enable()
        return len(calls), t1 - t0, c1 - c0

    return sample


def chunk_of(make_calls: Callable[[int], list[Callable[[], Any]]], plan: Plan) -> list[Any]:
    """Calls lasting about ``plan.sample_s`` (probed on 200 calls, after a warm-up)."""
    probe = make_calls(200)
    run = im.loop(probe)
    run()
    best = min(_wall(run) for _ in range(3)) / len(probe)
    return make_calls(max(100, int(plan.sample_s / max(best, 1e-9))))


def _wall(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / 1e9


def _next_ms_boundary() -> None:
    ms = time.time_ns() // 1_000_000
    while time.time_ns() // 1_000_000 == ms:
        pass


def batch_sampler(call: Callable[[int], list[Any]], n: int, reps: int) -> Sampler:
    def sample() -> Sample:
        gc.disable()
        try:
            _next_ms_boundary()  # a ceiling-bound generator starts on a fresh tick
            c0 = time.thread_time_ns()
            t0 = time.perf_counter_ns()
            outs = [call(n) for _ in range(reps)]
            t1 = time.perf_counter_ns()
            c1 = time.thread_time_ns()
            del outs  # freeing the IDs is not timed
        finally:
            gc.enable()
        return n * reps, t1 - t0, c1 - c0

    return sample


def latencies(calls: list[Callable[[], Any]]) -> list[int]:
    """ns of each call, timed one by one with a perf_counter_ns pair."""
    pc = time.perf_counter_ns
    out = []
    gc.disable()
    try:
        for f in calls:
            t0 = pc()
            f()
            out.append(pc() - t0)
    finally:
        gc.enable()
    return out


def _pct(xs: list[int], q: float) -> float:
    s = sorted(xs)
    return float(s[min(len(s) - 1, int(q * len(s)))])


# --- timed cases ---------------------------------------------------------------------


@dataclass
class Row:
    case_id: str
    impl: str
    per_sample: int  # IDs per sample (median)
    generators: int
    samples: list[Sample]
    ceiling: int = 0  # IDs/s the format allows per generator (0: none)
    latency: dict[str, float] = field(default_factory=dict)

    def wall_ns(self, stat: str = "median") -> float:
        xs = [w / n for n, w, _ in self.samples]
        return statistics.median(xs) if stat == "median" else min(xs)

    def cpu_ns(self, stat: str = "median") -> float:
        xs = [c / n for n, _, c in self.samples]
        return statistics.median(xs) if stat == "median" else min(xs)

    def rate(self, stat: str = "median") -> float:
        return 1e9 / self.wall_ns(stat)


FLOORS: dict[str, Callable[[], Any]] = {
    "floor: loop + C no-op call": (0).bit_length,
    "floor: loop + time.time_ns()": time.time_ns,
}


def single_case(case_id: str, impls: tuple[im.IdImpl, ...], plan: Plan,
                one_gen: bool = False, floors: bool = False) -> list[Row]:
    """next_id(): CPU and wall ns per call, and latency percentiles."""
    samplers: dict[str, Sampler] = {}
    chunks: dict[str, list[Callable[[], Any]]] = {}
    gens: dict[str, int] = {}
    for impl in impls:
        calls = chunk_of(lambda n, impl=impl: im.single_calls(impl, n), plan)
        im.check_ids(impl, [f() for f in calls[:4 * impl.spread]], per_gen=impl.spread)
        chunks[impl.name], gens[impl.name] = calls, impl.spread
        if one_gen and impl is impls[0]:
            g = im.generators(impl, 1)[0]
            one = [impl.one(g)] * len(calls)
            chunks[f"{impl.name}, 1 generator (ceiling-bound)"] = one
            gens[f"{impl.name}, 1 generator (ceiling-bound)"] = 1
    if floors:
        for name, f in FLOORS.items():
            chunks[name] = chunk_of(lambda n, f=f: [f] * n, plan)
            gens[name] = 0
    samplers = {name: chunk_sampler(c) for name, c in chunks.items()}
    samples = interleaved(samplers, plan.rounds, plan.turn_s)
    # latency: each implementation's calls timed one by one, interleaved by round
    lat: dict[str, list[int]] = {n: [] for n in chunks}
    floor_pair = "floor: perf_counter_ns pair"
    lat[floor_pair] = []
    per_round = max(1000, plan.latency_calls // plan.rounds)
    for r in range(plan.rounds):
        for name in (list(chunks) if r % 2 == 0 else list(chunks)[::-1]):
            c = chunks[name]
            lat[name] += latencies([c[i % len(c)] for i in range(per_round)])
        lat[floor_pair] += latencies([int] * per_round)
    rows = []
    by_name = {i.name: i for i in impls}
    for name in chunks:
        impl = by_name.get(name.split(",")[0])
        rows.append(Row(case_id, name, len(chunks[name]), gens[name], samples[name],
                        impl.ceiling if impl else 0,
                        {q: _pct(lat[name], v) for q, v in
                         (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999))}))
    pair = lat[floor_pair]
    rows.append(Row(case_id, floor_pair, 0, 0, [], 0,
                    {q: _pct(pair, v) for q, v in (("p50", 0.5), ("p99", 0.99),
                                                   ("p99.9", 0.999))}))
    return rows


def batch_case(case_id: str, impls: tuple[im.IdImpl, ...], plan: Plan) -> list[Row]:
    """next_ids(n) on one generator, sustained: IDs per second and share of the ceiling."""
    samplers: dict[str, Sampler] = {}
    per: dict[str, int] = {}
    for impl in impls:
        call = im.batch_call(impl, im.generators(impl, 1)[0])
        im.check_ids(impl, call(1000))
        t = _wall(lambda call=call: call(im.BATCH))
        reps = max(1, round(plan.batch_sample_s / t))
        samplers[impl.name] = batch_sampler(call, im.BATCH, reps)
        per[impl.name] = im.BATCH * reps
    samples = interleaved(samplers, plan.rounds, plan.turn_s)
    by_name = {i.name: i for i in impls}
    return [Row(case_id, name, per[name], 1, samples[name], by_name[name].ceiling)
            for name in samplers]


# --- range IDs on Redis: the tail of next_id() -------------------------------------------

RANGE_REDIS_BLOCK = 1000
RANGE_VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("lookahead=1 (a plain double buffer)", {"lookahead": 1}),
    ("lookahead automatic (the default)", {}),
    ("adaptive=True (block grows to 1M)", {"adaptive": True}),
)
RANGE_QS = (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999), ("p99.99", 0.9999))


def range_latency(plan: Plan) -> dict[str, Any]:
    """``RangeGenerator.next_id()`` over a RedisStore (own redis-server on loopback),
    blocks of 1,000: every call timed, the variants interleaved by round."""
    import redis

    sys.path.insert(0, str(im.REPO / "tests"))
    from servers import RedisServer

    out: dict[str, Any] = {"calls": plan.range_calls, "block": RANGE_REDIS_BLOCK}
    with tempfile.TemporaryDirectory() as folder:
        server = RedisServer(Path(folder), "--save", "", "--appendonly", "no")
        try:
            client = redis.Redis.from_url(server.url)
            rtt = latencies([lambda: client.incrby("bench:rtt", RANGE_REDIS_BLOCK)] * 5000)
            client.close()
            out["store round trip"] = {q: _pct(rtt, v) for q, v in RANGE_QS}
            gens = {}
            for i, (label, opts) in enumerate(RANGE_VARIANTS):
                gen = im.idgen.RangeGenerator(im.idgen.RedisStore(server.url), f"lat-{i}",
                                              block_size=RANGE_REDIS_BLOCK, **opts)
                gen.next_id()  # the first block is leased by the caller: not timed
                gens[label] = gen
            lat: dict[str, list[int]] = {label: [] for label in gens}
            per_round = plan.range_calls // plan.rounds
            for r in range(plan.rounds):
                for label in (list(gens) if r % 2 == 0 else list(gens)[::-1]):
                    lat[label] += latencies([gens[label].next_id] * per_round)
            for label, gen in gens.items():
                xs = lat[label]
                out[label] = {**{q: _pct(xs, v) for q, v in RANGE_QS}, "max": max(xs),
                              "calls": len(xs), "stats": gen.stats()}
                gen.close()
                gen.store.close()
        finally:
            server.stop()
    return out


def range_table(d: dict[str, Any]) -> str:
    lines = ["| variant | calls timed | p50 ns | p99 ns | p99.9 ns | p99.99 ns | max ns | "
             "p99.9 / p50 | blocks | store calls | waits |", "| --- |" + " --- |" * 10]
    rt = d["store round trip"]
    lines.append(f"| the store round trip itself (redis-py `INCRBY`) | 5,000 | "
                 f"{num(rt['p50'])} | {num(rt['p99'])} | {num(rt['p99.9'])} | "
                 f"{num(rt['p99.99'])} | - | - | - | - | - |")
    for label, _ in RANGE_VARIANTS:
        v = d[label]
        st = v["stats"]
        lines.append(
            f"| {label} | {v['calls']:,} | {num(v['p50'])} | {num(v['p99'])} | "
            f"{num(v['p99.9'])} | {num(v['p99.99'])} | {num(v['max'])} | "
            f"{v['p99.9'] / v['p50']:.1f}x | {st['blocks']:,} | "
            f"{st['sync_fetches'] + st['prefetch_calls']:,} | {st['waits']:,} |")
    return "\n".join(lines)


# --- correctness (each test in a fresh interpreter) --------------------------------------


class Clock:
    """An injected clock: Unix ms, moved by the test."""

    def __init__(self) -> None:
        self.ms = time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Subject:
    """What a child process tests: a generator, the call, and how to read an ID's time."""

    call: Callable[[], Any]
    ts_ms: Callable[[Any], int] | None
    injected: str  # how the clock was injected ("" when no clock was)


def _ours(label: str, clock: Clock | None, lease_dir: str | None = None,
          **opts: Any) -> Subject:
    import idgen

    cls = idgen.TrueTimeGenerator if "truetime" in label else idgen.SnowflakeGenerator
    if clock is not None:
        opts["clock"] = lambda: clock.ms
    g = cls(None if lease_dir else 1, lease_dir=lease_dir, **opts)
    # `g.next_id()` looks the method up per call (a child after fork() gets a new one);
    # "bound" labels keep the bound method taken before the fork, as a caller may
    call = g.next_id if "bound" in label else lambda: g.next_id()
    return Subject(call, lambda v: g.decode(v).unix_ms,
                   "constructor `clock=`" if clock else "")


def subject(label: str, clock: Clock | None = None, **opts: Any) -> Subject | None:
    """The generator under test; None when the test does not apply (no clock read)."""
    name = label.split(",")[0]
    if name in ("native", "python", "native-truetime", "python-truetime"):
        return _ours(label, clock, **opts)
    if name == "snowflake-id":
        import snowflake.snowflake as sfmod

        if clock is not None:  # the module did `from time import time`
            sfmod.time = lambda: (clock.ms + 0.5) / 1000  # type: ignore[assignment]
        g = sfmod.SnowflakeGenerator(1, epoch=im.EPOCH_MS)
        return Subject(g.__next__, lambda v: im.EPOCH_MS + (v >> 22),
                       "monkeypatch `snowflake.snowflake.time`" if clock else "")
    if name == "sonyflake":
        import sonyflake.sonyflake as symod

        if clock is not None:
            symod._utcnow = lambda: datetime.datetime.fromtimestamp(  # type: ignore[assignment]
                (clock.ms + 0.5) / 1000, datetime.timezone.utc)
        g = symod.Sonyflake(start_time=im.SONYFLAKE_START, machine_id=1)
        return Subject(g.next_id, lambda v: round(g.to_time(v).timestamp() * 1000),
                       "monkeypatch `sonyflake.sonyflake._utcnow`" if clock else "")
    if name == "python-ulid":
        import ulid

        if clock is None:
            return Subject(ulid.ULID, lambda v: int(v) >> 80, "")
        u = ulid.ULIDGenerator(clock=lambda: clock.ms)
        return Subject(u.generate, lambda v: int(v) >> 80, "`ULIDGenerator(clock=)`")
    if name == "uuid6.uuid7":
        import uuid6

        if clock is not None:
            uuid6.time = types.SimpleNamespace(  # type: ignore[assignment]
                time_ns=lambda: clock.ms * 1_000_000)
        return Subject(uuid6.uuid7, lambda v: int(v) >> 80,
                       "monkeypatch `uuid6.time`" if clock else "")
    if name == "uuid-utils.uuid7":
        import uuid_utils

        if clock is None:
            return Subject(uuid_utils.uuid7, lambda v: int(v) >> 80, "")
        return Subject(lambda: uuid_utils.uuid7(nanoseconds=clock.ms * 1_000_000),
                       lambda v: int(v) >> 80, "`uuid7(nanoseconds=)` argument (a different "
                       "code path: the default one takes no time)")
    if name in ("uuid-utils.uuid4", "uuid.uuid4"):
        if clock is not None:
            return None
        import uuid

        import uuid_utils

        return Subject(uuid_utils.uuid4 if name == "uuid-utils.uuid4" else uuid.uuid4, None, "")
    raise ValueError(f"unknown implementation {label!r}")


def _err(exc: BaseException) -> str:
    return type(exc).__name__


def _order_violations(ints: list[int]) -> int:
    return sum(b <= a for a, b in itertools.pairwise(ints))


def test_threads(label: str, n: int) -> dict[str, Any]:
    s = subject(label)
    assert s is not None
    sys.setswitchinterval(1e-6)
    barrier = threading.Barrier(THREADS)
    results: list[Any] = [None] * THREADS

    def work(i: int) -> None:
        out: list[Any] = []
        nones = 0
        errors: collections.Counter[str] = collections.Counter()
        call = s.call
        barrier.wait()
        for _ in range(n):
            try:
                v = call()
            except Exception as exc:
                errors[_err(exc)] += 1
                continue
            if v is None:
                nones += 1
            else:
                out.append(v)
        results[i] = (out, nones, errors)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    sys.setswitchinterval(0.005)
    now_ms = time.time_ns() // 1_000_000
    all_ints: list[int] = []
    order = 0
    errors: collections.Counter[str] = collections.Counter()
    for out, _, errs in results:
        ints = [int(v) for v in out]
        order += _order_violations(ints)
        all_ints += ints
        errors.update(errs)
    ahead = None
    if s.ts_ms is not None and all_ints:
        ahead = s.ts_ms(max(all_ints)) - now_ms
    return {"calls": n * THREADS, "ids": len(all_ints), "dups": len(all_ints) - len(set(all_ints)),
            "nones": sum(r[1] for r in results), "errors": dict(errors),
            "order_violations": order, "ahead_ms": ahead}


def test_fork(label: str, n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        opts = {"lease_dir": tmp} if "lease" in label else {}
        s = subject(label, **opts)
        assert s is not None
        s.call()  # the parent used the generator before the fork
        path = Path(tmp) / "child.pickle"

        def mint() -> dict[str, Any]:
            out: list[int] = []
            nones = 0
            error = None
            for _ in range(n):
                try:
                    v = s.call()
                except Exception as exc:
                    error = _err(exc)
                    break
                if v is None:
                    nones += 1
                else:
                    out.append(int(v))
            return {"ids": out, "nones": nones, "error": error}

        pid = os.fork()
        if pid == 0:  # child
            try:
                path.write_bytes(pickle.dumps(mint()))
            finally:
                os._exit(0)
        parent = mint()
        os.waitpid(pid, 0)
        child = pickle.loads(path.read_bytes())
    both = set(parent["ids"]) & set(child["ids"])
    return {"calls": n, "parent_ids": len(parent["ids"]), "child_ids": len(child["ids"]),
            "cross_dups": len(both), "child_error": child["error"],
            "parent_error": parent["error"], "nones": parent["nones"] + child["nones"]}


def _run_calls(s: Subject, count: int, prev: list[int]) -> dict[str, Any]:
    """``count`` calls; IDs below the previous maximum and duplicates against ``prev``
    and each other; the slowest call."""
    ints: list[int] = []
    nones = 0
    errors: collections.Counter[str] = collections.Counter()
    slowest = 0
    for _ in range(count):
        t0 = time.perf_counter_ns()
        try:
            v = s.call()
        except Exception as exc:
            errors[_err(exc)] += 1
            v = False
        slowest = max(slowest, time.perf_counter_ns() - t0)
        if v is None:
            nones += 1
        elif v is not False:
            ints.append(int(v))
    top = max(prev) if prev else -1
    below = 0
    for v in ints:
        if v <= top:
            below += 1
        top = max(top, v)
    seen = set(prev)
    dups = sum(1 for v in ints if v in seen) + len(ints) - len(set(ints))
    return {"calls": count, "ids": len(ints), "nones": nones, "errors": dict(errors),
            "below_prev_max": below, "dups": dups, "slowest_ms": slowest / 1e6,
            "ints": ints, "newest": max(ints) if ints else None}


_CAPACITY = {"native": 4096, "python": 4096, "snowflake-id": 4096, "native-truetime": 256,
             "python-truetime": 256, "sonyflake": 256}


def _capacity(label: str) -> int:
    return _CAPACITY.get(label.split(",")[0], UNBOUNDED_CAPACITY)


def test_overflow(label: str) -> dict[str, Any]:
    clock = Clock()
    frozen = clock.ms
    s = subject(label, clock)
    if s is None:
        return {"na": True}
    fired = threading.Event()

    def move() -> None:
        clock.ms = frozen + 100
        fired.set()

    timer = threading.Timer(WATCHDOG_S, move)
    timer.start()
    r = _run_calls(s, _capacity(label) + OVERFLOW_EXTRA, [])
    timer.cancel()
    ahead = s.ts_ms(r["newest"]) - clock.ms if s.ts_ms and r["newest"] is not None else None
    del r["ints"], r["newest"]
    return {**r, "capacity": _capacity(label), "watchdog_fired": fired.is_set(),
            "ahead_of_clock_ms": ahead, "injected": s.injected}


def test_clockback(label: str, step_ms: int = 50, **opts: Any) -> dict[str, Any]:
    clock = Clock()
    t = clock.ms
    s = subject(label, clock, **opts)
    if s is None:
        return {"na": True}
    first = _run_calls(s, 100, [])
    clock.ms = t + step_ms
    second = _run_calls(s, 10, first["ints"])
    clock.ms = t
    timer = None
    if step_ms <= 5:  # within backward_wait_ms: the clock recovers after 0.2 s
        timer = threading.Timer(0.2, lambda: setattr(clock, "ms", t + step_ms + 5))
        timer.start()
    third = _run_calls(s, 100, first["ints"] + second["ints"])
    if timer is not None:
        timer.cancel()
    ahead = s.ts_ms(third["newest"]) - t if s.ts_ms and third["newest"] is not None else None
    for r in (first, second, third):
        del r["ints"], r["newest"]
    return {"before": {"ids": first["ids"] + second["ids"],
                       "errors": {**first["errors"], **second["errors"]},
                       "nones": first["nones"] + second["nones"]},
            **third, "ahead_of_T_ms": ahead, "step_ms": step_ms, "injected": s.injected}


CLOCKBACK_VARIANTS: dict[str, dict[str, Any]] = {
    "native, continue_ahead_ms=100": {"continue_ahead_ms": 100},
    "native, 3 ms step (<= backward_wait_ms=5; clock recovers after 0.2 s)": {"step_ms": 3},
}


def child(test: str, label: str, n: int) -> dict[str, Any]:
    import fastcore

    info: dict[str, Any] = {"fastcore.NATIVE": fastcore.NATIVE}
    if test == "threads":
        return {**info, **test_threads(label, n)}
    if test == "fork":
        return {**info, **test_fork(label, n)}
    if test == "overflow":
        return {**info, **test_overflow(label)}
    if test == "clockback":
        opts = dict(CLOCKBACK_VARIANTS.get(label, {}))
        step = opts.pop("step_ms", 50)
        return {**info, **test_clockback(label, step, **opts)}
    raise ValueError(test)


OURS = ("native", "python", "native-truetime", "python-truetime")
CORRECTNESS = ("native", "python", "native-truetime", "python-truetime", "snowflake-id",
               "sonyflake", "python-ulid", "uuid6.uuid7", "uuid-utils.uuid7",
               "uuid-utils.uuid4", "uuid.uuid4")
FORK_EXTRA = ("native, lease (worker=None)", "python, lease (worker=None)",
              "native, lease, next_id bound before the fork")


def _spawn(test: str, label: str, n: int = 0) -> dict[str, Any]:
    name = label.split(",")[0]
    env = dict(os.environ)
    env.pop("SHARDKIT_PURE_PYTHON", None)
    pure = name in ("python", "python-truetime")
    if pure:
        env["SHARDKIT_PURE_PYTHON"] = "1"  # idgen over the twin core
    proc = subprocess.run([sys.executable, __file__, "--child", test, label, str(n)],
                          capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode != 0:
        return {"crashed": proc.stderr.strip().splitlines()[-1:]}
    d: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if name in ("native", "python", "native-truetime", "python-truetime"):
        assert d["fastcore.NATIVE"] == (not pure), (label, d)
    return d


def correctness(plan: Plan) -> dict[str, Any]:
    out: dict[str, Any] = {"threads": {}, "fork": {}, "overflow": {}, "clockback": {}}
    for label in CORRECTNESS:
        n = plan.slow_calls if label == "sonyflake" else plan.thread_calls
        say(f"correctness: {label}")
        out["threads"][label] = _spawn("threads", label, n)
        out["overflow"][label] = _spawn("overflow", label)
        out["clockback"][label] = _spawn("clockback", label)
    for label in (*FORK_EXTRA, *CORRECTNESS):
        n = plan.slow_calls * 2 if label == "sonyflake" else plan.fork_calls
        if "truetime" in label:
            n = min(n, 50_000)  # 256 IDs per ms: 0.2 s
        shown = f"{label}, worker=1 (fixed)" if label in OURS else label
        out["fork"][shown] = _spawn("fork", label, n)
    for label in CLOCKBACK_VARIANTS:
        out["clockback"][label] = _spawn("clockback", label)
    return out


# --- environment ---------------------------------------------------------------------


def environment() -> dict[str, Any]:
    from fastcore import _ids

    versions = package_versions((*im.PEER_PACKAGES, "pytest-benchmark", "Cython"))
    import sonyflake

    assert sonyflake.__version__ == versions["sonyflake"], "another package owns sonyflake/"
    return {
        **run_info(("fastcore", "idgen", "setup.py")),
        "native module": fingerprint(_ids.__file__),
        "versions": versions,
    }


# --- report --------------------------------------------------------------------------


def _rate(r: float) -> str:
    return f"{r / 1e6:.2f} M/s" if r >= 1e6 else f"{r / 1e3:.1f} k/s"


def single_table(rows: list[Row]) -> str:
    lines = ["| implementation | generators | calls per sample | CPU ns/call: median | best "
             "| wall ns/call: median | latency p50 / p99 / p99.9 ns | CPU vs native | "
             "wall vs native |", "| --- |" + " --- |" * 8]
    ref = rows[0]
    for r in rows:
        lat = " / ".join(num(r.latency[q]) for q in ("p50", "p99", "p99.9")) \
            if r.latency else "-"
        if not r.samples:
            lines.append(f"| {r.impl} | - | - | - | - | - | {lat} | - | - |")
            continue
        lines.append(
            f"| {r.impl} | {r.generators or '-'} | {r.per_sample:,} | {num(r.cpu_ns())} | "
            f"{num(r.cpu_ns('best'))} | {num(r.wall_ns())} | {lat} | "
            f"{ratio(r.cpu_ns(), ref.cpu_ns())} | {ratio(r.wall_ns(), ref.wall_ns())} |")
    return "\n".join(lines)


def batch_table(rows: list[Row]) -> str:
    lines = ["| implementation | IDs per sample | IDs/s: median | best | share of its format "
             "ceiling (median) | CPU ns/ID | IDs/s vs native |", "| --- |" + " --- |" * 6]
    ref = rows[0]
    for r in rows:
        share = f"{r.rate() / r.ceiling * 100:.1f} % of {_rate(r.ceiling)}" if r.ceiling \
            else "no ceiling"
        lines.append(f"| {r.impl} | {r.per_sample:,} | {_rate(r.rate())} | "
                     f"{_rate(r.rate('best'))} | {share} | {num(r.cpu_ns())} | "
                     f"{ratio(r.wall_ns(), ref.wall_ns())} |")
    return "\n".join(lines)


def _errors(d: dict[str, int]) -> str:
    return ", ".join(f"{k} x{v:,}" for k, v in d.items()) or "0"


def _crash(d: dict[str, Any]) -> str | None:
    return f"crashed: {d['crashed']}" if "crashed" in d else None


def threads_fork_table(c: dict[str, Any]) -> str:
    lines = ["4 threads share one generator, `sys.setswitchinterval(1e-6)`; calls: the "
             "total over the 4 threads. Order violations: IDs not above the same thread's "
             "previous one (uuid4s promise no order).", "",
             "| implementation | calls | duplicates | None | errors | per-thread order "
             "violations | newest ID's time minus wall clock |", "| --- |" + " --- |" * 6]
    for label, d in c["threads"].items():
        if _crash(d):
            lines.append(f"| {label} | {_crash(d)} |" + " |" * 5)
            continue
        ahead = "n/a" if d["ahead_ms"] is None else f"{d['ahead_ms']:+,} ms"
        lines.append(f"| {label} | {d['calls']:,} | {d['dups']:,} | {d['nones']:,} | "
                     f"{_errors(d['errors'])} | {d['order_violations']:,} | {ahead} |")
    lines += ["", "fork(): the parent makes a generator, uses it once, forks; parent and child "
              "then mint at once (ours call `gen.next_id()`). Ours with a fixed worker id refuse "
              "in the child (`ForkedGeneratorError`); with a lease (`worker=None`, a "
              "`FileLease` in a temporary folder) the child leases another worker id; a "
              "`next_id` bound method taken before the fork belongs to the inherited core, "
              "which the fork disabled (`GeneratorDisabledError`).", "",
              "| implementation | calls each | parent IDs | child IDs | cross duplicates | "
              "child outcome |", "| --- |" + " --- |" * 5]
    for label, d in c["fork"].items():
        if _crash(d):
            lines.append(f"| {label} | {_crash(d)} |" + " |" * 4)
            continue
        outcome = d["child_error"] or "minted"
        if d["nones"]:
            outcome += f"; {d['nones']:,} None"
        lines.append(f"| {label} | {d['calls']:,} | {d['parent_ids']:,} | {d['child_ids']:,} | "
                     f"{d['cross_dups']:,} | {outcome} |")
    return "\n".join(lines)


def overflow_table(c: dict[str, Any]) -> str:
    lines = [f"Clock frozen at T; `capacity + {OVERFLOW_EXTRA}` calls (capacity = IDs per tick; "
             f"{UNBOUNDED_CAPACITY:,} for generators without a per-tick limit); a watchdog "
             f"moves the clock to T+100 ms after {WATCHDOG_S} s.", "",
             "| implementation | clock injected by | calls | IDs | None | errors | slowest call "
             "| duplicates | order violations | newest ID's time minus the clock |",
             "| --- |" + " --- |" * 9]
    for label, d in c["overflow"].items():
        if _crash(d):
            lines.append(f"| {label} | {_crash(d)} |" + " |" * 8)
            continue
        if d.get("na"):
            lines.append(f"| {label} | n/a: reads no clock |" + " |" * 8)
            continue
        ahead = "n/a" if d["ahead_of_clock_ms"] is None else f"{d['ahead_of_clock_ms']:+,} ms"
        slow = f"{d['slowest_ms']:,.1f} ms" + (" (watchdog)" if d["watchdog_fired"] else "")
        lines.append(f"| {label} | {d['injected']} | {d['calls']:,} | {d['ids']:,} | "
                     f"{d['nones']:,} | {_errors(d['errors'])} | {slow} | {d['dups']:,} | "
                     f"{d['below_prev_max']:,} | {ahead} |")
    return "\n".join(lines)


def clockback_table(c: dict[str, Any]) -> str:
    lines = ["Clock at T: 100 calls, T+50 ms: 10 calls, back to T: 100 calls (the columns "
             "describe these last 100). Below previous max: IDs not above every ID issued "
             "before.", "",
             "| implementation | clock injected by | IDs | None | errors | below previous max "
             "| duplicates | slowest call | newest ID's time minus T |",
             "| --- |" + " --- |" * 8]
    for label, d in c["clockback"].items():
        if _crash(d):
            lines.append(f"| {label} | {_crash(d)} |" + " |" * 7)
            continue
        if d.get("na"):
            lines.append(f"| {label} | n/a: reads no clock |" + " |" * 7)
            continue
        ahead = "n/a" if d["ahead_of_T_ms"] is None else f"{d['ahead_of_T_ms']:+,} ms"
        lines.append(f"| {label} | {d['injected']} | {d['ids']:,} | {d['nones']:,} | "
                     f"{_errors(d['errors'])} | {d['below_prev_max']:,} | {d['dups']:,} | "
                     f"{d['slowest_ms']:,.1f} ms | {ahead} |")
    return "\n".join(lines)


def range_targets(d: dict[str, Any]) -> list[tuple[str, str, bool]]:
    v = d["lookahead automatic (the default)"]
    rtt = d["store round trip"]["p50"]
    ok = v["p99.9"] <= 2000 and v["p99.9"] < rtt / 10
    return [(f"range next_id() on Redis, blocks of {d['block']:,}, {v['calls']:,} calls: "
             "p99.9 near p50, no store round trip in the tail (<= 2 us and < 1/10 of the "
             "round trip)", f"p50 {num(v['p50'])} ns, p99.9 {num(v['p99.9'])} ns "
             f"({v['p99.9'] / v['p50']:.1f}x); round trip p50 {num(rtt)} ns", ok)]


def targets(rows: list[Row], c: dict[str, Any]) -> list[tuple[str, str, bool]]:
    out: list[tuple[str, str, bool]] = []
    nat = find(rows, "next_id", "native")
    cpu = nat.cpu_ns()
    out.append(("next_id() <= 150 CPU ns per call (Snowflake, thread safe, clock checked; "
                "loop included)", f"{cpu:.0f} ns", cpu <= 150))
    p50 = nat.latency["p50"]
    out.append(("next_id() p50 <= 300 ns including the perf_counter_ns pair",
                f"{p50:.0f} ns", p50 <= 300))
    x = find(rows, "next_id", "snowflake-id").cpu_ns() / cpu
    out.append((">= 4x faster than snowflake-id (CPU ns, same run)", f"{x:.2f}x", x >= 4))
    x = find(rows, "next_id", "uuid-utils.uuid7").cpu_ns() / cpu
    out.append(("faster than uuid-utils' uuid7 (CPU ns, same run)", f"{x:.2f}x", x > 1))
    rng = find(rows, "next_id", "native-range").cpu_ns()
    out.append(("range next_id() <= 100 CPU ns per ID (SQLite store, blocks of 1M; loop "
                "included)", f"{rng:.0f} ns", rng <= 100))
    for case_id, ceiling in (("next_ids", im.SNOWFLAKE_CEILING),
                             ("truetime_next_ids", im.TRUETIME_CEILING)):
        name = "native" if case_id == "next_ids" else "native-truetime"
        rate = find(rows, case_id, name).rate()
        out.append((f"{name} next_ids(n) >= 97 % of {_rate(ceiling)}",
                    f"{_rate(rate)} = {rate / ceiling * 100:.1f} %", rate >= 0.97 * ceiling))
    for label in ("native", "python", "native-truetime", "python-truetime"):
        t = c["threads"][label]
        ok = not _crash(t) and t["dups"] == 0 and t["nones"] == 0 and not t["errors"] \
            and t["order_violations"] == 0
        out.append((f"{label}: 4 threads at 1 us: 0 duplicates, 0 None/errors, 0 order "
                    "violations", "crashed" if _crash(t) else
                    f"{t['dups']} / {t['nones']} / {sum(t['errors'].values())} / "
                    f"{t['order_violations']}", ok))
    for label in ("native, lease (worker=None)", "python, lease (worker=None)",
                  "native, worker=1 (fixed)", "python, worker=1 (fixed)"):
        f = c["fork"][label]
        ok = not _crash(f) and f["cross_dups"] == 0
        out.append((f"{label}: 0 duplicates after fork()", "crashed" if _crash(f) else
                    f"{f['cross_dups']} ({f['child_error'] or 'child minted'})", ok))
    for label in ("native", "python", "native-truetime", "python-truetime"):
        o = c["overflow"][label]
        ok = not _crash(o) and o["nones"] == 0 and not o["errors"] and o["dups"] == 0 \
            and o["below_prev_max"] == 0 and o["ids"] == o["calls"] \
            and (o["ahead_of_clock_ms"] or 0) <= 0
        out.append((f"{label}: sequence overflow waits for the next tick (no None, no error, "
                    "no duplicate, not ahead of the clock)",
                    "crashed" if _crash(o) else f"{o['ids']:,}/{o['calls']:,} IDs, slowest "
                    f"call {o['slowest_ms']:.0f} ms, {o['ahead_of_clock_ms']:+} ms", ok))
    for label in ("native", "python", "native-truetime", "python-truetime"):
        b = c["clockback"][label]
        ok = not _crash(b) and b["ids"] == 0 and b["errors"].get(
            "ClockMovedBackwardsError", 0) == b["calls"] and b["below_prev_max"] == 0
        out.append((f"{label}: a 50 ms step back raises ClockMovedBackwards, never an ID "
                    "below the previous one", "crashed" if _crash(b) else
                    f"{_errors(b['errors'])}; {b['below_prev_max']} below", ok))
    return out


@dataclass
class Report:
    env: dict[str, Any]
    plan: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    correctness: dict[str, Any] = field(default_factory=dict)
    ranges: dict[str, Any] = field(default_factory=dict)


def run(plan: Plan, skip_correctness: bool = False) -> Report:
    rep = Report(environment(), asdict(plan))
    assert im.native_loaded(), "idgen runs on the pure-Python twin: build the extension"
    say("next_id()")
    rep.rows += single_case("next_id", im.SINGLE, plan, one_gen=True, floors=True)
    say("TrueTime next_id()")
    rep.rows += single_case("truetime_next_id", im.TRUETIME, plan)
    say("next_ids(10_000)")
    rep.rows += batch_case("next_ids", im.BATCHED, plan)
    say("TrueTime next_ids(10_000)")
    rep.rows += batch_case("truetime_next_ids", im.TRUETIME, plan)
    say(f"range next_id() on Redis, {plan.range_calls:,} calls per variant")
    rep.ranges = range_latency(plan)
    if not skip_correctness:
        rep.correctness = correctness(plan)
    rep.env["loadavg_end"] = os.getloadavg()
    return rep


def markdown(rep: Report, quick: bool) -> str:
    e, p = rep.env, rep.plan
    head = [
        f"Run: `python bench/compare_ids.py{' --quick' if quick else ''}` on {e['date']}; "
        f"{e['python']}, {e['platform']}",
        f"CPU: {e['cpu']}, {e['cores']} cores; load average at start "
        f"{', '.join(f'{x:.2f}' for x in e['loadavg_start'])}, at end "
        f"{', '.join(f'{x:.2f}' for x in e['loadavg_end'])}",
        f"shardkit {e['shardkit']}, fastcore.NATIVE={e['fastcore.NATIVE']}; measured "
        f"{e['native module']}",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in e["versions"].items()),
        f"Rounds: {p['rounds']}; in its turn of a round an implementation repeats samples "
        f"for >= {p['turn_s'] * 1000:.0f} ms; a next_id() sample is a chunk of "
        f"~{p['sample_s'] * 1000:.0f} ms of calls, a next_ids sample ~"
        f"{p['batch_sample_s'] * 1000:.0f} ms of back-to-back next_ids({im.BATCH:,}) calls; "
        f"latency: {max(1000, p['latency_calls'] // p['rounds']) * p['rounds']:,} calls "
        "timed one by one per implementation.",
    ]
    rows = rep.rows
    parts = ["\n".join(f"- {h}" for h in head)]
    tgt = (targets(rows, rep.correctness) if rep.correctness else []) \
        + range_targets(rep.ranges)
    if tgt:
        parts.append("### Targets (research/idgen.md section 4), on the medians\n\n"
                     "| target | measured | met |\n| --- | --- | --- |\n"
                     + "\n".join(f"| {t} | {v} | {'met' if ok else 'NOT met'} |"
                                 for t, v, ok in tgt))
    parts += [
        "### next_id(), one call (Snowflake layout 41/10/12)\n\nOurs, snowflake-id and "
        "sonyflake are called round-robin over 8 generators (workers 1-8), so that none "
        "reaches its per-worker ceiling; the `1 generator` row is a tight loop on one, which "
        "the 4,096-per-ms ceiling holds to 244 ns per ID on average (it waits for the next "
        "ms; the median of ~1 ms samples that straddle ticks can read lower). "
        "CPU = `time.thread_time_ns` of the sample; the Python `for` loop is included "
        "(floor rows).\n\n" + single_table([r for r in rows if r.case_id == "next_id"]),
        "### TrueTime next_id(), one call (41/4/10/8)\n\nRound-robin over 64 generators "
        "(256 IDs per ms each); each reads the kernel's clock error (`adjtimex`) at most "
        "once per ms when it opens a tick.\n\n"
        + single_table([r for r in rows if r.case_id == "truetime_next_id"]),
        f"### next_ids({im.BATCH:,}) on one generator (peers: list comprehension)\n\n"
        + batch_table([r for r in rows if r.case_id == "next_ids"]),
        f"### TrueTime next_ids({im.BATCH:,}) on one generator\n\n"
        + batch_table([r for r in rows if r.case_id == "truetime_next_ids"]),
        f"### Range IDs on Redis: latency of next_id(), blocks of {RANGE_REDIS_BLOCK:,}\n\n"
        "`idgen.RangeGenerator` over `idgen.RedisStore` (a redis-server of our own on "
        "loopback, no persistence), every call timed with a `perf_counter_ns` pair, the "
        "variants interleaved by round; the first block (leased by the caller) is not "
        "timed. `store calls` = blocks leased by the caller + background fetches; `waits` "
        "= calls that found no block ready and waited for the fetch under way.\n\n"
        + range_table(rep.ranges),
    ]
    if rep.correctness:
        c = rep.correctness
        parts += [
            "### Correctness: threads and fork()\n\n"
            "`python` rows run idgen's generators over the pure-Python core "
            "(`SHARDKIT_PURE_PYTHON=1`).\n\n" + threads_fork_table(c),
            "### Sequence overflow within one tick\n\n" + overflow_table(c),
            "### Clock step back\n\n" + clockback_table(c),
        ]
    return "\n\n".join(parts) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run, about a minute")
    ap.add_argument("--rounds", type=int, help="override the rounds of the timed cases")
    ap.add_argument("--json", metavar="PATH", help="also write the raw numbers as JSON")
    ap.add_argument("--no-correctness", action="store_true", help="timed cases only")
    ap.add_argument("--child", nargs=3, metavar=("TEST", "IMPL", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        test, label, n = args.child
        print(json.dumps(child(test, label, int(n)), default=str))
        return
    plan = QUICK if args.quick else FULL
    if args.rounds:
        plan = Plan(**{**asdict(plan), "rounds": args.rounds})
    started = time.perf_counter()
    rep = run(plan, args.no_correctness)
    say(f"done in {time.perf_counter() - started:.0f} s")
    print(markdown(rep, args.quick))
    if args.json:
        data = {"env": rep.env, "plan": rep.plan, "rows": [asdict(r) for r in rep.rows],
                "correctness": rep.correctness, "ranges": rep.ranges,
                "targets": (targets(rep.rows, rep.correctness) if rep.correctness else [])
                + range_targets(rep.ranges)}
        Path(args.json).write_text(json.dumps(data, indent=1, default=str))


if __name__ == "__main__":
    main()
