"""Side-by-side table: fastcore's HashRing and hashes vs the twin and the peer libraries.

Commands (run from the repository root, after ``python setup.py build_ext --inplace``)::

    python bench/compare.py --quick                  # about 1 minute
    python bench/compare.py                          # a few minutes (the RESULTS.md run)
    python bench/compare.py --json /tmp/bench.json   # also dump the raw numbers

    # the pytest-benchmark suites of the same cases (bench/pytest.ini collects bench_*.py)
    python -m pytest -c bench/pytest.ini bench/ --benchmark-disable   # smoke, each case once
    python -m pytest -c bench/pytest.ini bench/                       # timed tables

Method: a case's implementations take turns, round-robin, the order reversed on
alternate rounds, so load from other processes on a shared machine hits all of them
alike. In its turn an implementation is timed again and again for ``turn_s``; the
table gives the median sample and the best one, per key (call, build). Lookup and
hash samples are short (a chunk of calls lasting ~1 ms) so that on a busy 2-core
machine most samples see no preemption; successive chunks cycle through the same
100k distinct keys ``user:100000``... for every implementation (50k with
``--quick``), so the measured working set is theirs, except for the few whose
per-key cost grows with the node count, which cycle through a prefix (the "of N"
column). The garbage collector is off inside a sample (as in ``timeit``); long-lived
rings are ``gc.freeze()``-d so the collection before each turn stays cheap. Balance,
memory and remap figures are deterministic and measured once; memory is the RSS
growth of a fresh interpreter building several 1000-node rings.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import _impls as im
from _report import find, fingerprint, num, ratio, run_info, say
from _report import versions as package_versions

# --- plan ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    rounds: int  # rounds of every timed lookup / hash case
    slow_rounds: int  # rounds of 1000-node builds and add / remove (pure Python: ~0.5 s)
    lookup_keys: int  # distinct keys per lookup sample, the same for every implementation
    max_round_s: float  # ...but for the O(nodes)-per-key ones: a prefix lasting this long
    turn_s: float  # a function's turn repeats it (one sample each) for at least this long
    sample_s: float  # lookups and hashes: a sample is a chunk of keys lasting about this
    bulk_keys: int
    balance_keys: int
    move_keys: int
    mem_rings: dict[str, int]  # rings built per memory child process


QUICK = Plan(rounds=3, slow_rounds=3, lookup_keys=50_000, max_round_s=0.5, turn_s=0.03,
             sample_s=0.001,
             bulk_keys=im.BULK_KEYS, balance_keys=1_000_000, move_keys=100_000,
             mem_rings={"native": 20, "native-ketama": 20, "python": 1, "uhashring": 1,
                        "pylibmc": 5})
FULL = Plan(rounds=9, slow_rounds=7, lookup_keys=100_000, max_round_s=1.0, turn_s=0.1,
            sample_s=0.001,
            bulk_keys=im.BULK_KEYS, balance_keys=1_000_000, move_keys=200_000,
            mem_rings={"native": 20, "native-ketama": 20, "python": 3, "uhashring": 3,
                       "pylibmc": 10})


# --- timing --------------------------------------------------------------------------


def _time_once(fn: Callable[[], Any]) -> float:
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        result = fn()
        t1 = time.perf_counter_ns()
        del result  # freeing the result (a ring, a list of 100k names) is not timed
    finally:
        gc.enable()
    return (t1 - t0) / 1e9


Runner = Callable[[], Any]


def interleaved(fns: dict[str, Runner | list[Runner]], rounds: int, turn_s: float = 0.0,
                setups: dict[str, Runner] | None = None) -> dict[str, list[float]]:
    """Seconds of each timed call of each function, run round-robin (order reversed on
    alternate rounds). In its turn a function runs again until ``turn_s`` has passed
    (at most 1000 samples): short calls get many samples, so that on a busy machine
    most of them see no preemption and the median does not either. A list of functions
    (the chunks of one case) is cycled through, one per sample. ``setups[name]`` runs
    untimed before each call of that one (then once a turn)."""
    names = list(fns)
    runs = {n: f if isinstance(f, list) else [f] for n, f in fns.items()}
    nxt = dict.fromkeys(names, 0)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            gc.collect()
            spent = 0.0
            for _ in range(1000):
                if setups and name in setups:
                    setups[name]()
                fn = runs[name][nxt[name] % len(runs[name])]
                nxt[name] += 1
                t = _time_once(fn)
                out[name].append(t)
                spent += t
                if spent >= turn_s or setups:
                    break
    return out


def chunked(f: Callable[..., Any], pool: Sequence[Any], plan: Plan, n: int = 0,
            least: int = 100) -> tuple[int, list[Runner]]:
    """Split ``pool`` into chunks that take about ``plan.sample_s`` each (at least
    ``least`` calls); returns the chunk length and one loop per chunk. Successive
    samples walk the whole pool, so its working set is what is measured."""
    probe = list(pool[: min(len(pool), 200)])
    run = im.loop2(f, probe, n) if n else im.loop1(f, probe)
    run()  # warm up
    t = min(_time_once(run) for _ in range(3)) / len(probe)
    size = max(least, min(len(pool), int(plan.sample_s / max(t, 1e-9))))
    starts = range(0, len(pool) - size + 1, size)
    loops = [im.loop2(f, pool[i:i + size], n) if n else im.loop1(f, pool[i:i + size])
             for i in starts]
    return size, loops


@dataclass
class Row:
    case_id: str
    case: str
    impl: str
    unit: str  # ns/key, ns/call, ms, M keys/s, GB/s
    per: float  # work units per sample: keys, calls or bytes
    samples: list[float]  # seconds per sample
    ref: str = "native"
    pool: int = 0  # distinct inputs the samples cycle through (0: one input)

    def per_unit(self, stat: str = "median") -> float:
        s = statistics.median(self.samples) if stat == "median" else min(self.samples)
        return s / self.per

    def shown(self, stat: str = "median") -> str:
        t = self.per_unit(stat)
        if self.unit in ("ns/key", "ns/call"):
            return f"{num(t * 1e9)} ns"
        if self.unit == "ms":
            return f"{num(t * 1e3)} ms"
        if self.unit == "M keys/s":
            return f"{num(1 / t / 1e6)} M keys/s ({num(t * 1e9)} ns/key)"
        if self.unit == "GB/s":
            return f"{num(1 / t / 1e9)} GB/s"
        raise ValueError(self.unit)


# --- rings, built once ---------------------------------------------------------------

_RINGS: dict[tuple[object, int], Any] = {}


def ring(impl: im.Impl, nodes: Sequence[str]) -> Any:
    key = (impl.build, len(nodes))
    if key not in _RINGS:
        _RINGS[key] = impl.build(nodes)
        gc.freeze()  # long-lived: keep the collections between turns cheap
    return _RINGS[key]


def verify(impl: im.Impl, nodes: list[str], keys: Sequence[str], n: int = 0) -> None:
    """Ours must agree with the twin (pylibmc with our ketama twin), peers name a node."""
    r = ring(impl, nodes)
    f = impl.lookup(r)
    spec = ring(im.BY_NAME[impl.spec], nodes) if impl.spec else None
    for k in keys[: 20 if impl.pure_python else 200]:
        if n:
            got = f(k, n)
            assert len(set(got)) == n and set(got) <= set(nodes), (impl.name, k, got)
            if spec is not None:
                assert got == spec.get_nodes(k, n), (impl.name, k)
        else:
            name = im.node_of(impl, f(k), nodes)
            if spec is not None:
                assert name == spec.get_node(k), (impl.name, k, name)


def _keys_for(f: Callable[[], Any], probe: int, plan: Plan) -> int:
    f()  # warm up
    t = min(_time_once(f) for _ in range(2)) / probe
    return max(5, min(plan.lookup_keys, int(plan.max_round_s / max(t, 1e-9))))


def lookup_case(case_id: str, case: str, impls: Sequence[im.Impl], nodes: list[str],
                keys: list[str], plan: Plan, n: int = 0,
                extra: dict[str, Callable[[str], Any]] | None = None,
                hot: int = 0, few: Sequence[str] = ("rendezvous",)) -> list[Row]:
    """Single-key calls, ns/key. Every implementation cycles through the same
    ``plan.lookup_keys`` distinct keys in chunks of about ``plan.sample_s``, except
    those in ``few`` (per-key cost grows with the node count): they cycle through a
    prefix of the keys that lasts about ``plan.max_round_s``. ``hot``: the pool is the
    first 1000 keys only (a cache-warm working set). ``n``: time ``f(key, n)``."""
    fns: dict[str, Runner | list[Runner]] = {}
    per: dict[str, int] = {}
    pools: dict[str, int] = {}
    calls: dict[str, Callable[..., Any]] = {}
    for impl in impls:
        verify(impl, nodes, keys, n)
        calls[impl.name] = impl.lookup(ring(impl, nodes))
    calls.update(extra or {})
    for name, f in calls.items():
        if hot:
            pool = keys[:1000] * 20  # 1000 distinct keys, repeated: cache-warm
        elif name not in few:
            pool = keys[: plan.lookup_keys]
        else:
            probe = keys[:3] if name == "rendezvous" and len(nodes) > 100 else keys[:200]
            fp = im.loop2(f, probe, n) if n else im.loop1(f, probe)
            pool = keys[: _keys_for(fp, len(probe), plan)]
        if name in few:  # the whole prefix a sample: per-key cost varies a lot by key
            per[name] = len(pool)
            fns[name] = im.loop2(f, pool, n) if n else im.loop1(f, pool)
        else:
            per[name], fns[name] = chunked(f, pool, plan, n)
        pools[name] = 1000 if hot else len(pool)
    ref = impls[0].name
    samples = interleaved(fns, plan.rounds, plan.turn_s)
    return [Row(case_id, case, name, "ns/key", per[name], samples[name], ref, pools[name])
            for name in fns]


def bulk_case(case_id: str, case: str, nodes: list[str], keys: list[str],
              plan: Plan) -> list[Row]:
    fns: dict[str, Callable[[], Any]] = {}
    for impl in im.MANY:
        call = im.bulk_call(impl, ring(impl, nodes))
        out = call(keys[:1000])
        names = [im.node_of(impl, r, nodes) for r in out]
        if impl.spec:
            assert names == ring(im.BY_NAME[impl.spec], nodes).get_node_many(keys[:1000])
        fns[impl.name] = lambda call=call: call(keys)
        if impl is im.NATIVE:
            one = ring(impl, nodes).get_node
            fns["native get_node loop"] = lambda one=one: [one(k) for k in keys]
    samples = interleaved(fns, plan.rounds, plan.turn_s)
    return [Row(case_id, case, name, "M keys/s", len(keys), samples[name]) for name in fns]


def build_case(case_id: str, case: str, nodes: list[str], plan: Plan) -> list[Row]:
    fns = {impl.name: (lambda b=impl.build: b(nodes)) for impl in im.BUILD}
    rounds = plan.slow_rounds if len(nodes) > 100 else plan.rounds
    samples = interleaved(fns, rounds, plan.turn_s)
    return [Row(case_id, case, name, "ms", 1, samples[name]) for name in fns]


def mutate_case(case_id: str, case: str, nodes: list[str], plan: Plan,
                add: bool) -> list[Row]:
    fns: dict[str, Callable[[], Any]] = {}
    setups: dict[str, Callable[[], Any]] = {}
    for impl in im.MUTATE:
        r = impl.build(nodes)  # private ring: mutated

        def has(r: Any = r, ours: bool = impl.ours) -> bool:
            return im.NEW_NODE in (r.nodes if ours else r.get_nodes())

        def setup(r: Any = r, has: Callable[[], bool] = has) -> None:
            if add and has():
                r.remove_node(im.NEW_NODE)
            elif not add and not has():
                r.add_node(im.NEW_NODE)

        op = r.add_node if add else r.remove_node
        fns[impl.name] = lambda op=op: op(im.NEW_NODE)
        setups[impl.name] = setup
    samples = interleaved(fns, plan.slow_rounds, setups=setups)
    return [Row(case_id, case, name, "ms", 1, samples[name]) for name in fns]


def hash_cases(plan: Plan, keys: list[str]) -> list[Row]:
    rows: list[Row] = []
    str_keys = keys[:20_000]
    encoded = [k.encode() for k in str_keys]
    v100 = im.bytes_values(20_000, 100)
    mib = im.bytes_values(1, 1 << 20)[0]
    for func in im.HASH_FUNCS:
        for label, tag, unit, impls in (
            ("11-byte str key", "str", "ns/call", ("native", "python", "xxhash-encode", "xxhash")),
            ("100-byte bytes", "100", "ns/call", ("native", "python", "xxhash")),
            ("1 MiB bytes", "1MiB", "GB/s", ("native", "python", "xxhash")),
        ):
            fns: dict[str, Runner | list[Runner]] = {}
            per: dict[str, int] = {}
            pools: dict[str, int] = {}
            for name in impls:
                pool: list[Any]
                if tag == "str":
                    pool = encoded if name == "xxhash" else str_keys
                else:
                    pool = v100 if tag == "100" else [mib] * 50
                f = im.hash_call(name, func)
                assert f(pool[-1]) == im.expected_hash(func, pool[-1]), (func, name)
                per[name], fns[name] = chunked(f, pool, plan, least=1)
                pools[name] = len(pool) if tag != "1MiB" else 1
            s = interleaved(fns, plan.rounds, plan.turn_s)
            for name in fns:
                size = per[name] * (len(mib) if tag == "1MiB" else 1)
                rows.append(Row(f"hash/{func}/{tag}", f"{func}, {label}", name, unit, size,
                                s[name], pool=pools[name]))
    return rows


# --- balance, remap and memory (deterministic) ---------------------------------------

BALANCE_IMPLS = (im.NATIVE, im.NATIVE_KETAMA, im.UHASHRING, im.UHASHRING_KETAMA,
                 im.PYLIBMC, im.JUMP)


def owners(impl: im.Impl, r: Any, nodes: Sequence[str], keys: list[str]) -> list[str]:
    if impl.ours:
        return r.get_node_many(keys)  # type: ignore[no-any-return]
    f = impl.lookup(r)
    if impl.index:
        return [nodes[i] for i in map(f, keys)]
    return list(map(f, keys))


def _spread(counts: list[int]) -> dict[str, float]:
    mean = statistics.fmean(counts)
    return {"cv": statistics.pstdev(counts) / mean, "max_mean": max(counts) / mean,
            "min_mean": min(counts) / mean}


def balance(plan: Plan) -> dict[str, Any]:
    nodes = im.node_names(im.SMALL)
    keys = im.str_keys(plan.balance_keys)
    out: dict[str, Any] = {"keys": len(keys), "nodes": len(nodes), "impls": {}, "vnodes": {}}
    for impl in BALANCE_IMPLS:
        c = collections.Counter(owners(impl, ring(impl, nodes), nodes, keys))
        out["impls"][impl.name] = _spread([c[n] for n in nodes])
    sample = keys[:20_000]
    assert ring(im.NATIVE, nodes).get_node_many(sample) == ring(im.PYTHON, nodes).get_node_many(
        sample)
    for v in (40, 100, 160, 320, 1000):
        r = im._ring.HashRing(nodes, vnodes=v)
        c = collections.Counter(r.get_node_many(keys))
        out["vnodes"][v] = _spread([c[n] for n in nodes])
    return out


MOVE_IMPLS = (im.NATIVE, im.NATIVE_KETAMA, im.UHASHRING, im.UHASHRING_KETAMA,
              im.PYLIBMC, im.JUMP)


def _changed(impl: im.Impl, nodes: list[str], after_nodes: list[str], add: str | None,
             remove: str | None) -> Any:
    """The ring after the change: incremental where the library can, else rebuilt."""
    if impl.ours or impl in (im.UHASHRING, im.UHASHRING_KETAMA):
        r = impl.build(nodes)
        if add:
            r.add_node(add)
        if remove:
            r.remove_node(remove)
        if impl.ours:  # incremental must equal a fresh build
            assert r.points() == impl.build(after_nodes).points(), impl.name
        return r
    return impl.build(after_nodes)


def moves(plan: Plan) -> dict[str, Any]:
    """Keys that moved, and the non-minimal ones: moved between two unchanged nodes."""
    keys = im.str_keys(plan.move_keys, start=500_000)
    out: dict[str, Any] = {"keys": len(keys), "transitions": {}}
    for before_n, change in ((10, "add"), (10, "remove"), (99, "add")):
        nodes = im.node_names(before_n)
        if change == "add":
            new, gone = f"127.0.0.{before_n + 1}:11211", None
            after_nodes = [*nodes, new]
        else:
            # jump can only drop its last bucket; the rings drop that node too
            new, gone = None, nodes[-1]
            after_nodes = nodes[:-1]
        label = f"{before_n} -> {len(after_nodes)} ({change})"
        res: dict[str, Any] = {}
        for impl in MOVE_IMPLS:
            before = owners(impl, impl.build(nodes), nodes, keys)
            after = owners(impl, _changed(impl, nodes, after_nodes, new, gone), after_nodes,
                           keys)
            moved = sum(a != b for a, b in zip(before, after, strict=True))
            if change == "add":
                bad = sum(a != b and b != new for a, b in zip(before, after, strict=True))
                ideal = 1 / len(after_nodes)
            else:
                bad = sum(a != b and a != gone for a, b in zip(before, after, strict=True))
                ideal = before.count(gone) / len(keys)
            res[impl.name] = {"moved": moved / len(keys), "ideal": ideal, "non_minimal": bad}
        out["transitions"][label] = res
    return out


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def mem_child(name: str, count: int) -> None:
    """In a fresh interpreter: RSS growth of ``count`` rings of 1000 nodes x 160."""
    impl = im.BY_NAME[name]
    nodes = im.node_names(im.LARGE)
    impl.build(im.node_names(im.SMALL))  # load lazily imported code first
    gc.collect()
    before = _rss()
    rings = [impl.build(nodes) for _ in range(count)]
    gc.collect()
    grown = _rss() - before
    if impl.ours:
        points = rings[0].num_points
    elif impl is im.UHASHRING:
        points = len(rings[0].runtime._keys)
    else:  # libmemcached's continuum has exactly our ketama mode's point count
        points = im.build_native_ketama(nodes).num_points
    print(json.dumps({"rings": count, "rss_growth": grown, "points": points}))


def memory(plan: Plan) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, count in plan.mem_rings.items():
        proc = subprocess.run([sys.executable, __file__, "--mem-child", name, str(count)],
                              capture_output=True, text=True, check=True)
        d = json.loads(proc.stdout)
        d["bytes_per_point"] = d["rss_growth"] / d["rings"] / d["points"]
        d["mib_per_ring"] = d["rss_growth"] / d["rings"] / 2**20
        out[name] = d
    p = im.LARGE * im.VNODES
    # fastcore/_ring.pyx: 12-byte (point, owner) entries and 2**(floor(log2 P) - 2) + 1
    # uint32 table offsets
    table = 4 * (2 ** max(1, p.bit_length() - 3) + 1)
    out["native layout"] = {"points": p, "bytes_per_point": (8 * p + 4 * p + table) / p,
                            "mib_per_ring": (12 * p + table) / 2**20}
    return out


# --- environment ---------------------------------------------------------------------

PACKAGES = ("xxhash", "uhashring", "pylibmc", "pymemcache", "jump-consistent-hash",
            "pytest-benchmark", "Cython")


def environment() -> dict[str, Any]:
    import pylibmc


    versions = package_versions(PACKAGES)
    versions["libmemcached (in pylibmc)"] = pylibmc.libmemcached_version
    return {
        **run_info(("fastcore", "setup.py")),
        "native modules": [fingerprint(m.__file__) for m in (im._ring, im._hash)],
        "versions": versions,
    }


# --- report --------------------------------------------------------------------------


def rows_table(rows: list[Row]) -> str:
    lines = ["| case | implementation | calls per sample (of distinct inputs) | median | best "
             "| median vs native |",
             "| --- | --- | --- | --- | --- | --- |"]
    by_case: dict[str, list[Row]] = {}
    for r in rows:
        by_case.setdefault(r.case_id, []).append(r)
    for case_rows in by_case.values():
        ref = next(r for r in case_rows if r.impl == case_rows[0].ref)
        first = True
        for r in case_rows:
            lines.append(
                f"| {case_rows[0].case if first else ''} | {r.impl} | {_calls(r)} | {r.shown()} | "
                f"{r.shown('best')} | {ratio(r.per_unit(), ref.per_unit())} |")
            first = False
    return "\n".join(lines)


def _calls(r: Row) -> str:
    if r.unit == "ms":
        return "1"
    if r.unit == "GB/s":
        return f"{r.per / 2**20:.0f} x 1 MiB"
    return f"{r.per:,.0f}" + (f" (of {r.pool:,})" if r.pool > 1 else "")


def _pct(x: float) -> str:
    return f"{x * 100:.2f}%"


def balance_table(b: dict[str, Any]) -> str:
    lines = [f"{b['keys']:,} keys over {b['nodes']} nodes, 160 points per node "
             "(jump: none); CV = population std / mean of keys per node.", "",
             "| implementation | CV | max/mean | min/mean |", "| --- | --- | --- | --- |"]
    for name, d in b["impls"].items():
        lines.append(f"| {name} | {_pct(d['cv'])} | {d['max_mean']:.3f} | {d['min_mean']:.3f} |")
    lines += ["", "native (xxh3 mode) vs vnodes, same keys:", "",
              "| vnodes | " + " | ".join(str(v) for v in b["vnodes"]) + " |",
              "| --- |" + " --- |" * len(b["vnodes"]),
              "| CV | " + " | ".join(_pct(d["cv"]) for d in b["vnodes"].values()) + " |",
              "| max/mean | " + " | ".join(f"{d['max_mean']:.3f}" for d in b["vnodes"].values())
              + " |"]
    return "\n".join(lines)


def moves_table(m: dict[str, Any]) -> str:
    trans = list(m["transitions"])
    lines = [f"{m['keys']:,} keys; moved share (ideal) / non-minimal moves (keys that moved "
             "between two nodes that did not change). Ours and uhashring change the ring "
             "with add_node / remove_node; pylibmc gets a new Client; jump changes its "
             "bucket count (so the removed node is the last one, for every library). Ketama "
             "mode reproduces libmemcached, whose points per server depend on the server "
             "count, so it moves keys between unchanged servers as pylibmc does.", "",
             "| implementation | " + " | ".join(trans) + " |", "| --- |" + " --- |" * len(trans)]
    impls = list(next(iter(m["transitions"].values())))
    for name in impls:
        cells = []
        for t in trans:
            d = m["transitions"][t][name]
            cells.append(f"{_pct(d['moved'])} ({_pct(d['ideal'])}) / {d['non_minimal']:,}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def memory_table(mem: dict[str, Any]) -> str:
    lines = ["RSS growth (`/proc/self/statm`) of a fresh interpreter building N rings of "
             "1000 nodes x 160 vnodes, kept alive; divided by rings and points.", "",
             "| implementation | rings | points per ring | MiB per ring | bytes per point |",
             "| --- | --- | --- | --- | --- |"]
    for name, d in mem.items():
        lines.append(f"| {name} | {d.get('rings', '-')} | {d['points']:,} | "
                     f"{d['mib_per_ring']:.2f} | {d['bytes_per_point']:.1f} |")
    return "\n".join(lines)


def targets(rows: list[Row], b: dict[str, Any], mem: dict[str, Any],
            m: dict[str, Any]) -> list[tuple[str, str, bool]]:
    def ns(case_id: str, impl: str = "native") -> float:
        return find(rows, case_id, impl).per_unit() * 1e9

    out: list[tuple[str, str, bool]] = []
    for n, limit in ((10, 150), (1000, 200)):
        t = ns(f"get_node/{n}")
        out.append((f"get_node(str) <= {limit} ns, {n} nodes x 160", f"{t:.0f} ns", t <= limit))
    for n in (10, 1000):
        for peer, factor in (("pylibmc", 3), ("uhashring", 15)):
            x = ns(f"get_node/{n}", peer) / ns(f"get_node/{n}")
            out.append((f">= {factor}x faster than {peer}, {n} nodes", f"{x:.1f}x",
                        x >= factor))
    for n in (10, 1000):
        rate = 1e3 / ns(f"many/{n}")
        out.append((f"get_node_many >= 20 M keys/s, {n} nodes", f"{rate:.1f} M keys/s",
                    rate >= 20))
    for n in (10, 1000):
        t = ns(f"get_nodes3/{n}")
        out.append((f"get_nodes(key, 3) <= 300 ns, {n} nodes", f"{t:.0f} ns", t <= 300))
    for n in (10, 1000):
        x = ns(f"ketama/{n}", "pylibmc") / ns(f"ketama/{n}", "native-ketama")
        out.append((f"ketama get_node faster than pylibmc, {n} nodes", f"{x:.2f}x", x > 1))
    ms = find(rows, "build/1000", "native").per_unit() * 1e3
    out.append(("build 1000 x 160 <= 20 ms (xxh3 mode)", f"{ms:.1f} ms", ms <= 20))
    bpp = mem["native"]["bytes_per_point"]
    out.append(("<= 16 bytes per point (RSS, xxh3 mode)",
                f"{bpp:.1f} B (layout {mem['native layout']['bytes_per_point']:.1f} B)",
                bpp <= 16))
    cv = b["impls"]["native"]["cv"]
    out.append(("CV <= 8% at 160 vnodes (10 nodes, xxh3 mode)", _pct(cv), cv <= 0.08))
    bad = sum(t["native"]["non_minimal"] for t in m["transitions"].values())
    out.append(("zero non-minimal moves (xxh3 mode, all transitions)", f"{bad}", bad == 0))
    return out


# --- main ----------------------------------------------------------------------------


@dataclass
class Report:
    env: dict[str, Any]
    plan: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    balance: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    moves: dict[str, Any] = field(default_factory=dict)


def run(plan: Plan) -> Report:
    rep = Report(environment(), asdict(plan))
    keys = im.str_keys(plan.bulk_keys)
    gc.freeze()
    small, large = im.node_names(im.SMALL), im.node_names(im.LARGE)
    floors: dict[str, Callable[[str], Any]] = {
        "floor: loop + len(key)": len,
        "floor: fastcore xxh3_64(key)": im._hash.xxh3_64,
    }
    for n, nodes in ((10, small), (1000, large)):
        say(f"get_node, {n} nodes")
        rep.rows += lookup_case(f"get_node/{n}", f"get_node(str), {n} nodes x 160 (ns/key)",
                                im.GET_NODE, nodes, keys, plan,
                                extra=floors if n == 10 else None)
    say("get_node, 1000 nodes, hot keys")
    rep.rows += lookup_case("get_node/1000/hot", "get_node(str), 1000 nodes x 160, "
                            "1000 distinct keys only: cache-warm (ns/key)",
                            [i for i in im.GET_NODE if i is not im.RENDEZVOUS], large, keys,
                            plan, hot=20)
    for n, nodes in ((10, small), (1000, large)):
        say(f"ketama get_node, {n} nodes")
        rep.rows += lookup_case(f"ketama/{n}", f"ketama get_node, {n} nodes x 160 (ns/key)",
                                im.KETAMA, nodes, keys, plan)
    for n, nodes in ((10, small), (1000, large)):
        say(f"get_nodes(key, 3), {n} nodes")
        # uhashring's range() slices its whole key list per call: ~2 ms at 1000 nodes
        rep.rows += lookup_case(f"get_nodes3/{n}", f"get_nodes(key, 3), {n} nodes x 160 "
                                "(ns/key)", im.GET_NODES, nodes, keys, plan, n=3,
                                few=("uhashring",) if n == 1000 else ())
    for n, nodes in ((10, small), (1000, large)):
        say(f"get_node_many, {n} nodes")
        rep.rows += bulk_case(f"many/{n}", f"get_node_many, {len(keys):,} keys, {n} nodes "
                              "x 160 (peers: list comprehension)", nodes, keys, plan)
    for n, nodes in ((10, small), (1000, large)):
        say(f"build, {n} nodes")
        rep.rows += build_case(f"build/{n}", f"build {n} nodes x 160", nodes, plan)
    for add in (True, False):
        what = "add_node" if add else "remove_node"
        say(what)
        rep.rows += mutate_case(f"{what}/1000", f"{what} on a 1000 x 160 ring", large, plan,
                                add)
    say("hashes")
    rep.rows += hash_cases(plan, keys)
    gc.unfreeze()
    _RINGS.clear()
    say("balance")
    rep.balance = balance(plan)
    say("memory")
    rep.memory = memory(plan)
    say("moves")
    rep.moves = moves(plan)
    rep.env["loadavg_end"] = os.getloadavg()
    return rep


def markdown(rep: Report, quick: bool) -> str:
    e = rep.env
    head = [
        f"Run: `python bench/compare.py{' --quick' if quick else ''}` on {e['date']}; "
        f"{e['python']}, {e['platform']}",
        f"CPU: {e['cpu']}, {e['cores']} cores; load average at start "
        f"{', '.join(f'{x:.2f}' for x in e['loadavg_start'])}, at end "
        f"{', '.join(f'{x:.2f}' for x in e['loadavg_end'])}",
        f"shardkit {e['shardkit']}, fastcore.NATIVE={e['fastcore.NATIVE']}; measured "
        + "; ".join(e["native modules"]),
        "Versions: " + ", ".join(f"{k} {v}" for k, v in e["versions"].items()),
        f"Rounds: {rep.plan['rounds']} per lookup/hash case, {rep.plan['slow_rounds']} per "
        f"1000-node build/add/remove; in its turn of a round an implementation repeats "
        f"samples for >= {rep.plan['turn_s'] * 1000:.0f} ms. A lookup or hash sample is a "
        f"chunk of ~{rep.plan['sample_s'] * 1000:.0f} ms of calls; successive samples "
        f"cycle through {rep.plan['lookup_keys']:,} distinct keys (rendezvous, and "
        "uhashring's get_nodes at 1000 nodes: through a prefix of them lasting "
        f"~{rep.plan['max_round_s']} s).",
    ]
    ring_rows = [r for r in rep.rows if not r.case_id.startswith("hash/")]
    hash_rows = [r for r in rep.rows if r.case_id.startswith("hash/")]
    tgt = targets(rep.rows, rep.balance, rep.memory, rep.moves)
    parts = [
        "\n".join(f"- {h}" for h in head),
        "### Targets (hashing.md section 7), on the medians\n\n| target | measured | met |\n"
        "| --- | --- | --- |\n"
        + "\n".join(f"| {t} | {v} | {'met' if ok else 'NOT met'} |" for t, v, ok in tgt),
        "### Ring\n\npylibmc and jump return a server index (no name lookup); the "
        "others a node name. jump = `jump.hash(xxh3_64_intdigest(key.encode()), n)`; "
        "rendezvous = pymemcache's RendezvousHash.\n\n" + rows_table(ring_rows),
        "### Hashes\n\n`xxhash` is the package on bytes (for the str case: on keys "
        "encoded beforehand, a floor); `xxhash-encode` on `key.encode()`.\n\n"
        + rows_table(hash_rows),
        "### Balance\n\n" + balance_table(rep.balance),
        "### Memory\n\n" + memory_table(rep.memory),
        "### Remapping on add / remove\n\n" + moves_table(rep.moves),
    ]
    return "\n\n".join(parts) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run, about a minute")
    ap.add_argument("--rounds", type=int, help="override the rounds of the timed cases")
    ap.add_argument("--json", metavar="PATH", help="also write the raw numbers as JSON")
    ap.add_argument("--mem-child", nargs=2, metavar=("IMPL", "COUNT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mem_child:
        mem_child(args.mem_child[0], int(args.mem_child[1]))
        return
    plan = QUICK if args.quick else FULL
    if args.rounds:
        plan = Plan(**{**asdict(plan), "rounds": args.rounds})
    started = time.perf_counter()
    rep = run(plan)
    say(f"done in {time.perf_counter() - started:.0f} s")
    print(markdown(rep, args.quick))
    if args.json:
        data = {"env": rep.env, "plan": rep.plan, "balance": rep.balance,
                "memory": rep.memory, "moves": rep.moves,
                "rows": [asdict(r) for r in rep.rows],
                "targets": targets(rep.rows, rep.balance, rep.memory, rep.moves)}
        Path(args.json).write_text(json.dumps(data, indent=1, default=str))


if __name__ == "__main__":
    main()
