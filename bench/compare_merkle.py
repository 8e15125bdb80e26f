"""Side-by-side table: fastcore's Merkle tree (native), its pure-Python twin and the
audit-log Merkle libraries pymerkle and merkletools, with the targets of
research/merkle.md section 4 (T1-T7).

Commands (run from the repository root, with the extension built in place)::

    python bench/compare_merkle.py --quick                 # about 30 s
    python bench/compare_merkle.py                         # a few minutes (RESULTS.md run)
    python bench/compare_merkle.py --json /tmp/merkle.json # also dump the raw numbers

    # the pytest-benchmark suite of the same calls (bench/pytest.ini collects bench_*.py)
    python -m pytest -c bench/pytest.ini bench/bench_merkle.py --benchmark-disable  # smoke

Inputs (those of the research measurements): N = 1,000,000 pairs of a 15-byte key
``b"user:%010d"`` and a 35-byte random value; the second replica differs in the values
of 100 randomly chosen keys.

Method (that of ``bench/compare.py``): a case's implementations take turns, round-robin,
the order reversed on alternate rounds, so load from other processes on a shared machine
hits all of them alike; in its turn an implementation is sampled again and again for
``turn_s``; the tables give the median sample and the best one. The garbage collector
stays enabled (as in the research runs) and ``gc.collect()`` runs before every turn.

- build: ``MerkleTree.build(pairs, depth, inner=...)`` then ``.root``, from a list of
  ``(bytes, bytes)`` tuples. The twin and the peers are timed on a prefix of the pairs
  where 1M would take too long (``Plan.python_n``, ``Plan.peer_n``); the tables say
  which N was measured and give ns per pair. pymerkle: ``InmemoryTree(algorithm=
  "sha256").append_entries(key + value for each pair)`` then ``get_root()``.
  merkletools: ``add_leaf([sha256(key + value).hexdigest() ...])``, ``make_tree()``,
  ``get_merkle_root()``. The ``key + value`` concatenations are made before timing.
- update: a chunk of ``update(key, old, new)`` calls in a Python ``for`` loop (loop
  included; the floor row is the same loop around a C call of 3 arguments), over
  distinct random keys of the 1M-pair tree. update_many: one call with 10,000 triples.
- diff: two 1M-pair trees, 100 values different. Cold: before each sample
  ``gc.collect()`` and a read of a 64 MiB buffer of random bytes (evicts the caches);
  warm: the same diff again at once.
- bytes: ``to_bytes()`` / ``from_bytes()`` of the full tree (``from_bytes`` checks every
  inner node) and of the leaves only (``from_bytes`` recomputes the inner nodes).
- memory: RSS growth of a fresh interpreter building one tree (ours) or one log of the
  pairs (the peers), measured after the pairs were made; ``nbytes`` of our tree.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from _report import fingerprint, num, ratio, run_info, say
from _report import versions as package_versions

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout, not an installed shardkit
    sys.path.insert(0, str(REPO))

import pymerkle  # noqa: E402

with warnings.catch_warnings():  # merkletools warns that pysha3 is missing (hashlib has sha3)
    warnings.simplefilter("ignore", UserWarning)
    import merkletools

N = 1_000_000  # pairs of the research measurements
DIFFS = 100  # values that differ between the two replicas
VALUE_SIZE = 35
BATCH = 10_000  # triples per update_many call
UPDATE_KEYS = 10_000  # distinct keys the single-update chunks cycle through
EVICT_BYTES = 64 << 20
PEER_PACKAGES = ("xxhash", "pymerkle", "merkletools", "cachetools")
OURS = ("native", "python")
PEERS = ("pymerkle", "merkletools")
FLOOR = "floor: loop + C call of 3 arguments"

# --- inputs and implementations (shared with bench_merkle.py) -----------------------------


def make_pairs(n: int, seed: int = 1) -> list[tuple[bytes, bytes]]:
    """``n`` pairs ``(b"user:%010d" % i, 35 random bytes)``, deterministic."""
    blob = random.Random(seed).randbytes(VALUE_SIZE * n)
    return [(b"user:%010d" % i, blob[VALUE_SIZE * i:VALUE_SIZE * (i + 1)]) for i in range(n)]


def changed_values(pairs: Sequence[tuple[bytes, bytes]], k: int = DIFFS,
                   seed: int = 2) -> list[tuple[bytes, bytes, bytes]]:
    """``k`` ``(key, old, new)`` triples over randomly chosen pairs."""
    rnd = random.Random(seed)
    return [(pairs[i][0], pairs[i][1], rnd.randbytes(VALUE_SIZE))
            for i in sorted(rnd.sample(range(len(pairs)), k))]


def update_triples(pairs: Sequence[tuple[bytes, bytes]], k: int,
                   seed: int = 3) -> list[tuple[bytes, bytes, bytes]]:
    """``k`` ``(key, old, new)`` triples over distinct random keys; applying a list twice
    restores the tree (an update is a XOR of ``digest(old) ^ digest(new)``)."""
    rnd = random.Random(seed)
    return [(pairs[i][0], pairs[i][1], rnd.randbytes(VALUE_SIZE))
            for i in rnd.sample(range(len(pairs)), min(k, len(pairs)))]


def merkle_module(name: str) -> ModuleType:
    """``fastcore._merkle`` (native) or ``fastcore._merkle_py`` (python)."""
    return importlib.import_module("fastcore._merkle" if name == "native" else
                                   "fastcore._merkle_py")


def native_loaded() -> bool:
    """Whether ``fastcore._merkle`` is a compiled extension (not a Python file)."""
    try:
        mod = merkle_module("native")
    except ImportError:
        return False
    return not str(getattr(mod, "__file__", "")).endswith(".py")


def peer_entries(pairs: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
    """What the audit-log libraries append: one ``key + value`` entry per pair."""
    return [k + v for k, v in pairs]


def pymerkle_root(entries: Sequence[bytes]) -> bytes:
    tree = pymerkle.InmemoryTree(algorithm="sha256")
    tree.append_entries(entries)
    root: bytes = tree.get_root()
    return root


def merkletools_root(entries: Sequence[bytes]) -> str:
    mt = merkletools.MerkleTools(hash_type="sha256")
    sha = hashlib.sha256
    mt.add_leaf([sha(e).hexdigest() for e in entries])
    mt.make_tree()
    root: str = mt.get_merkle_root()
    return root


PEER_BUILD: dict[str, Callable[[Sequence[bytes]], Any]] = {
    "pymerkle": pymerkle_root, "merkletools": merkletools_root}


def evict(buf: bytearray) -> None:
    """Read every cache line of ``buf`` (64 MiB of random bytes): caches hold it after."""
    import xxhash

    xxhash.xxh3_64_intdigest(buf)


def evict_buffer(size: int = EVICT_BYTES) -> bytearray:
    # random bytes, not zeros: a zero-filled buffer may map to one shared zero page
    return bytearray(random.Random(4).randbytes(size))


# --- plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    rounds: int  # rounds of the fast cases
    build_rounds: int  # rounds of the builds
    turn_s: float  # in its turn an implementation repeats samples for at least this long
    n: int  # pairs of our native trees
    python_n: int  # pairs the twin builds (timed); ns/pair scaled to n in the table
    peer_n: int  # pairs the peers build (timed and memory)
    equiv_n: int  # pairs of the T7 check (both implementations build them)
    update_chunk: int  # update() calls per sample
    cold_samples: int  # cold diffs per turn


QUICK = Plan(rounds=3, build_rounds=2, turn_s=0.03, n=N, python_n=50_000, peer_n=20_000,
             equiv_n=20_000, update_chunk=1000, cold_samples=5)
FULL = Plan(rounds=7, build_rounds=3, turn_s=0.1, n=N, python_n=N, peer_n=100_000,
            equiv_n=100_000, update_chunk=2000, cold_samples=10)

# --- timing --------------------------------------------------------------------------------

Sample = tuple[int, int, int]  # (units, wall ns, thread CPU ns)
Sampler = Callable[[], Sample]


def interleaved(samplers: dict[str, Sampler], rounds: int, turn_s: float,
                max_per_turn: int = 1000) -> dict[str, list[Sample]]:
    """Samples of each sampler, round-robin, the order reversed on alternate rounds."""
    names = list(samplers)
    out: dict[str, list[Sample]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            gc.collect()
            spent = 0
            for _ in range(max_per_turn):
                s = samplers[name]()
                out[name].append(s)
                spent += s[1]
                if spent >= turn_s * 1e9:
                    break
    return out


def timed(fn: Callable[[], Any], units: int) -> Sample:
    c0 = time.thread_time_ns()
    t0 = time.perf_counter_ns()
    fn()
    t1 = time.perf_counter_ns()
    c1 = time.thread_time_ns()
    return units, t1 - t0, c1 - c0


@dataclass
class Row:
    case_id: str
    impl: str
    n: int  # pairs (build), calls / keys per sample (update), 1 (diff, bytes)
    samples: list[Sample]
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def ns(self, stat: str = "median") -> float:
        """Wall ns per unit."""
        xs = [w / u for u, w, _ in self.samples]
        return statistics.median(xs) if stat == "median" else min(xs)

    def total_ns(self, n: int, stat: str = "median") -> float:
        """Build time for ``n`` pairs: measured, or scaled from the N measured (the
        empty-tree build, where known, plus the per-pair part times ``n``)."""
        total = self.ns(stat) * self.n
        if self.n == n:
            return total
        fixed = min(float(self.extra.get("fixed_ns", 0)), total)
        return fixed + (total - fixed) * n / self.n

    def cpu_ns(self, stat: str = "median") -> float:
        xs = [c / u for u, _, c in self.samples]
        return statistics.median(xs) if stat == "median" else min(xs)


def row(rows: list[Row], case_id: str, impl: str) -> Row:
    return next(r for r in rows if r.case_id == case_id and r.impl == impl)


# --- cases ---------------------------------------------------------------------------------


class Bench:
    """Inputs and trees made once per run."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        say(f"making {plan.n:,} pairs")
        self.pairs = make_pairs(plan.n)
        self.entries = peer_entries(self.pairs[:plan.peer_n])
        self.diffs = changed_values(self.pairs)
        self.triples = update_triples(self.pairs, UPDATE_KEYS)
        self.T = {name: merkle_module(name).MerkleTree for name in OURS}
        self.trees: dict[tuple[str, int, str], Any] = {}

    def tree(self, impl: str, depth: int, inner: str) -> Any:
        """The tree of all pairs; the twin's is loaded from the native tree's bytes
        (bit-identical by T7, checked in ``equivalence``), which is faster than a build."""
        key = (impl, depth, inner)
        if key not in self.trees:
            if impl == "native":
                self.trees[key] = self.T["native"].build(self.pairs, depth, inner=inner)
            else:
                native = self.tree("native", depth, inner)
                self.trees[key] = self.T["python"].from_bytes(native.to_bytes())
        return self.trees[key]

    def pair_of_trees(self, impl: str, depth: int) -> tuple[Any, Any]:
        a = self.tree(impl, depth, "xor")
        b = a.copy()
        b.update_many(self.diffs)
        return a, b


def build_case(b: Bench, depth: int, inner: str, peers: bool) -> list[Row]:
    plan = b.plan
    case_id = f"build_d{depth}_{inner}"
    sizes = {"native": plan.n, "python": min(plan.python_n, plan.n)}
    samplers: dict[str, Sampler] = {}
    for name in OURS:
        cls, pairs = b.T[name], b.pairs[:sizes[name]]
        samplers[name] = lambda cls=cls, pairs=pairs: timed(
            lambda: cls.build(pairs, depth, inner=inner).root, len(pairs))
    if peers:
        for name, fn in PEER_BUILD.items():
            samplers[name] = lambda fn=fn: timed(lambda: fn(b.entries), len(b.entries))
            sizes[name] = len(b.entries)
    samples = interleaved(samplers, plan.build_rounds, 0.0, max_per_turn=1)
    # the answer: our root against the twin's over the same pairs
    expect = b.T["python"].build(b.pairs[:sizes["python"]], depth, inner=inner).root
    got = b.T["native"].build(b.pairs[:sizes["python"]], depth, inner=inner).root
    assert got == expect, (case_id, hex(got), hex(expect))
    rows = [Row(case_id, name, sizes[name], samples[name]) for name in samplers]
    for r in rows:
        if r.impl in OURS and r.n < plan.n:  # the part that does not grow with N
            cls = b.T[r.impl]
            r.extra["fixed_ns"] = min(timed(lambda cls=cls: cls.build([], depth, inner=inner)
                                            .root, 1)[1] for _ in range(2))
    return rows


def _update_loop(up: Callable[..., Any], triples: list[tuple[bytes, bytes, bytes]]) -> Sampler:
    def run() -> None:
        for k, o, n in triples:
            up(k, o, n)

    return lambda: timed(run, len(triples))


def update_case(b: Bench, depth: int, inner: str) -> list[Row]:
    plan = b.plan
    chunk = b.triples[:plan.update_chunk]
    samplers: dict[str, Sampler] = {}
    trees = {name: b.tree(name, depth, inner) for name in OURS}
    roots = {name: t.root for name, t in trees.items()}
    for name, t in trees.items():
        samplers[name] = _update_loop(t.update, chunk)
    samplers[FLOOR] = _update_loop(slice, chunk)
    samples = interleaved(samplers, plan.rounds, plan.turn_s)
    for name, t in trees.items():  # an even number of passes restores the tree
        if len(samples[name]) % 2:
            samplers[name]()
        assert t.root == roots[name], (name, "update chunk did not restore the root")
    return [Row(f"update_d{depth}_{inner}", name, len(chunk), samples[name])
            for name in samplers]


def update_many_case(b: Bench, depth: int, inner: str) -> list[Row]:
    plan = b.plan
    batch = b.triples[:BATCH]
    samplers: dict[str, Sampler] = {}
    trees = {name: b.tree(name, depth, inner) for name in OURS}
    roots = {name: t.root for name, t in trees.items()}
    for name, t in trees.items():
        samplers[name] = lambda t=t: timed(lambda: t.update_many(batch), len(batch))
    samples = interleaved(samplers, plan.rounds, plan.turn_s)
    for name, t in trees.items():
        if len(samples[name]) % 2:
            t.update_many(batch)
        assert t.root == roots[name], (name, "update_many did not restore the root")
    return [Row(f"update_many_d{depth}_{inner}", name, len(batch), samples[name])
            for name in samplers]


def diff_case(b: Bench, depth: int, buf: bytearray) -> list[Row]:
    plan = b.plan
    cold: dict[str, Sampler] = {}
    warm: dict[str, Sampler] = {}
    results: dict[str, Any] = {}
    for name in OURS:
        a, c = b.pair_of_trees(name, depth)
        d = a.diff(c)
        results[name] = d
        expect = sorted({a.leaf_of(k) for k, _, _ in b.diffs})
        assert d.leaves == expect, (name, "diff found other leaves")

        def cold_sample(a: Any = a, c: Any = c) -> Sample:
            evict(buf)
            gc.collect()
            return timed(lambda: a.diff(c), 1)

        cold[name] = cold_sample
        warm[name] = lambda a=a, c=c: timed(lambda: a.diff(c), 1)
    assert results["native"] == results["python"], "native and twin diffs differ"
    from fastcore import diff_levels

    a, c = b.pair_of_trees("native", depth)
    levels = diff_levels(a, c.root, c.expand)
    assert levels == results["native"], "level-by-level exchange found another diff"
    d = results["native"]
    extra = {"leaves": len(d.leaves), "ranges": len(d.ranges), "compared": d.compared,
             "exchange_bytes": 8 * levels.compared}
    cs = interleaved(cold, plan.rounds, 0.0, max_per_turn=plan.cold_samples)
    ws = interleaved(warm, plan.rounds, plan.turn_s)
    return [Row(f"diff_cold_d{depth}", name, 1, cs[name], extra=extra) for name in OURS] + \
        [Row(f"diff_warm_d{depth}", name, 1, ws[name], extra=extra) for name in OURS]


def bytes_case(b: Bench, depth: int) -> list[Row]:
    plan = b.plan
    rows = []
    for leaves_only in (False, True):
        tag = "leaves" if leaves_only else "full"
        to: dict[str, Sampler] = {}
        back: dict[str, Sampler] = {}
        sizes = {}
        for name in OURS:
            t, T = b.tree(name, depth, "xor"), b.T[name]
            data = t.to_bytes(leaves_only)
            sizes[name] = len(data)
            assert T.from_bytes(data) == t
            to[name] = lambda t=t, lo=leaves_only: timed(lambda: t.to_bytes(lo), 1)
            back[name] = lambda cls=T, data=data: timed(lambda: cls.from_bytes(data), 1)
        assert b.tree("native", depth, "xor").to_bytes(leaves_only) == \
            b.tree("python", depth, "xor").to_bytes(leaves_only), "native and twin bytes differ"
        ts = interleaved(to, plan.rounds, plan.turn_s)
        fs = interleaved(back, plan.rounds, plan.turn_s)
        rows += [Row(f"to_bytes_{tag}_d{depth}", n, 1, ts[n], extra={"bytes": sizes[n]})
                 for n in OURS]
        rows += [Row(f"from_bytes_{tag}_d{depth}", n, 1, fs[n], extra={"bytes": sizes[n]})
                 for n in OURS]
    return rows


def equivalence(b: Bench) -> dict[str, Any]:
    """T7 on the benchmark's own inputs: roots and bytes of both implementations."""
    out: dict[str, Any] = {}
    pairs = b.pairs[:b.plan.equiv_n]
    for inner in ("xor", "hash"):
        for depth in (16, 20):
            a = b.T["native"].build(pairs, depth, inner=inner)
            p = b.T["python"].build(pairs, depth, inner=inner)
            out[f"d{depth} {inner}"] = a.root == p.root and a.to_bytes() == p.to_bytes()
    return out


# --- memory (a fresh interpreter per measurement) ------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _kept(impl: str, pairs: list[tuple[bytes, bytes]], entries: list[bytes],
          depth: int) -> Any:
    """The build of the timed cases, keeping the tree (not only its root)."""
    if impl == "pymerkle":
        log = pymerkle.InmemoryTree(algorithm="sha256")
        log.append_entries(entries)
        return log
    if impl == "merkletools":
        mt = merkletools.MerkleTools(hash_type="sha256")
        mt.add_leaf([hashlib.sha256(e).hexdigest() for e in entries])
        mt.make_tree()
        return mt
    return merkle_module(impl).MerkleTree.build(pairs, depth)


def child_memory(impl: str, n: int, depth: int) -> dict[str, Any]:
    """RSS growth of a first build (what a process pays, allocator warm-up included) and
    of a second one kept beside it (the structure itself)."""
    pairs = make_pairs(n)
    entries = peer_entries(pairs) if impl in PEERS else []
    if impl in OURS:
        merkle_module(impl)  # imported before the first reading
    gc.collect()
    r0 = _rss()
    first = _kept(impl, pairs, entries, depth)
    gc.collect()
    r1 = _rss()
    second = _kept(impl, pairs, entries, depth)
    gc.collect()
    r2 = _rss()
    return {"impl": impl, "n": n, "depth": depth, "rss_first": r1 - r0,
            "rss_growth": r2 - r1, "nbytes": getattr(second, "nbytes", None),
            "sizeof": sys.getsizeof(second), "alive": first is not second}


def memory(plan: Plan) -> list[dict[str, Any]]:
    jobs = [("native", plan.n, 16), ("native", plan.n, 20),
            ("python", min(plan.python_n, 100_000), 16),
            ("pymerkle", plan.peer_n, 0), ("merkletools", plan.peer_n, 0)]
    out = []
    for impl, n, depth in jobs:
        say(f"memory: {impl}, {n:,} pairs" + (f", depth {depth}" if depth else ""))
        proc = subprocess.run([sys.executable, __file__, "--child-memory", impl, str(n),
                               str(depth)], capture_output=True, text=True, timeout=900)
        if proc.returncode:
            out.append({"impl": impl, "n": n, "depth": depth,
                        "crashed": proc.stderr.strip().splitlines()[-1:]})
        else:
            out.append(json.loads(proc.stdout))
    return out


# --- run -----------------------------------------------------------------------------------


@dataclass
class Report:
    env: dict[str, Any]
    plan: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    memory: list[dict[str, Any]] = field(default_factory=list)
    equivalence: dict[str, Any] = field(default_factory=dict)


def environment() -> dict[str, Any]:
    import fastcore

    mod = merkle_module("native")
    return {
        **run_info(("fastcore", "setup.py")),
        "fastcore.MerkleTree": fastcore.MerkleTree.__module__,
        "native module": fingerprint(str(mod.__file__)),
        "versions": package_versions((*PEER_PACKAGES, "pytest-benchmark", "Cython")),
    }


def run(plan: Plan) -> Report:
    assert native_loaded(), "fastcore._merkle is not built: run `pip install -e .` first"
    rep = Report(environment(), asdict(plan))
    b = Bench(plan)
    for depth in (16, 20):
        for inner in ("xor", "hash"):
            say(f"build, depth {depth}, {inner}")
            rep.rows += build_case(b, depth, inner, peers=depth == 16 and inner == "xor")
    for depth in (16, 20):
        for inner in ("xor", "hash"):
            say(f"update / update_many, depth {depth}, {inner}")
            rep.rows += update_case(b, depth, inner)
            rep.rows += update_many_case(b, depth, inner)
    buf = evict_buffer()
    for depth in (16, 20):
        say(f"diff, depth {depth}")
        rep.rows += diff_case(b, depth, buf)
    del buf
    for depth in (16, 20):
        say(f"to_bytes / from_bytes, depth {depth}")
        rep.rows += bytes_case(b, depth)
    say("equivalence")
    rep.equivalence = equivalence(b)
    del b
    gc.collect()
    rep.memory = memory(plan)
    rep.env["loadavg_end"] = os.getloadavg()
    return rep


# --- report --------------------------------------------------------------------------------


def _t(ns: float) -> str:
    """A duration given in ns, in the unit that suits it."""
    if ns >= 1e9:
        return f"{num(ns / 1e9)} s"
    if ns >= 1e6:
        return f"{num(ns / 1e6)} ms"
    if ns >= 1e3:
        return f"{num(ns / 1e3)} µs"
    return f"{num(ns)} ns"


def _mib(b: float) -> str:
    return f"{b / 2**20:,.2f} MiB" if b >= 2**20 else f"{b / 1024:,.1f} KiB"


def targets(rep: Report) -> list[tuple[str, str, str, bool]]:
    rows, n = rep.rows, rep.plan["n"]
    out: list[tuple[str, str, str, bool]] = []
    for depth, limit, tid in ((16, 100e6, "T1"), (20, 200e6, "T1b")):
        for inner in ("xor", "hash"):
            t = row(rows, f"build_d{depth}_{inner}", "native").total_ns(n)
            out.append((tid, f"build {n:,} pairs -> root, d={depth}, {inner}: <= "
                        f"{_t(limit)}", _t(t), t <= limit))
        nat = row(rows, f"build_d{depth}_xor", "native").total_ns(n)
        py = row(rows, f"build_d{depth}_xor", "python").total_ns(n)
        out.append((tid, f"build d={depth}, xor, >= 8x faster than the twin",
                    f"{py / nat:.1f}x", py / nat >= 8))
    for inner in ("xor", "hash"):
        t16 = row(rows, f"update_d16_{inner}", "native").ns()
        t20 = row(rows, f"update_d20_{inner}", "native").ns()
        out.append(("T3", f"single update() through Python, d=16, {inner}: <= 1.5 µs",
                    _t(t16), t16 <= 1500))
        f16, f20 = (row(rows, f"update_d{d}_{inner}", FLOOR).ns() for d in (16, 20))
        out.append(("T3", f"single update() d=20 / d=16, {inner}: <= 1.5",
                    f"{t20 / t16:.2f} (d20: {_t(t20)}; loop floor d16 {_t(f16)}, d20 "
                    f"{_t(f20)})", t20 / t16 <= 1.5))
    for depth in (16, 20):
        t = row(rows, f"update_many_d{depth}_xor", "native").ns()
        out.append(("T3b", f"update_many per key, d={depth}, xor: <= 0.75 µs", _t(t),
                    t <= 750))
    for case, limit, label in (("diff_warm_d16", 25e3, "warm, d=16"),
                               ("diff_cold_d16", 200e3, "cold, d=16"),
                               ("diff_cold_d20", 300e3, "cold, d=20")):
        t = row(rows, case, "native").ns()
        out.append(("T4", f"diff of two {n:,}-pair trees, {DIFFS} keys differ, {label}: "
                    f"<= {_t(limit)}", _t(t), t <= limit))
    for depth in (16, 20):
        full = row(rows, f"to_bytes_full_d{depth}", "native").extra["bytes"]
        leaves = row(rows, f"to_bytes_leaves_d{depth}", "native").extra["bytes"]
        want = (32 + 8 * (2 ** (depth + 1) - 1), 32 + 8 * 2**depth)
        out.append(("T5", f"serialised size d={depth}: full 32 + 8*(2^{depth + 1}-1) = "
                    f"{want[0]:,} B, leaves-only 32 + 8*2^{depth} = {want[1]:,} B",
                    f"{full:,} B / {leaves:,} B", (full, leaves) == want))
    ex = row(rows, "diff_cold_d16", "native").extra
    out.append(("T5", f"level-by-level exchange for {DIFFS} diffs, d=16: <= 16 KiB",
                f"{ex['compared']:,} digests = {_mib(ex['exchange_bytes'])}",
                ex["exchange_bytes"] <= 16 * 1024))
    for case, label in (("to_bytes_full_d16", "serialise"), ("from_bytes_full_d16",
                                                             "deserialise (checked)")):
        t = row(rows, case, "native").ns()
        out.append(("T5b", f"{label} d=16 tree: <= 1 ms", _t(t), t <= 1e6))
    t = row(rows, "from_bytes_leaves_d16", "native").ns()
    out.append(("T2", "leaves-only bytes -> tree (recomputes the root), d=16: <= 1 ms",
                _t(t), t <= 1e6))
    t = row(rows, "from_bytes_leaves_d20", "native").ns()
    out.append(("T2", "the same, d=20: <= 10 ms", _t(t), t <= 10e6))
    for m in rep.memory:
        if m["impl"] == "native" and "crashed" not in m:
            d = m["depth"]
            limit = 8 * 2 ** (d + 1) + 64
            ok = m["nbytes"] <= limit and m["rss_growth"] <= limit + 64 * 1024
            out.append(("T6", f"memory per tree, d={d}: <= 8*2^{d + 1} + 64 B = {limit:,} B "
                        "(RSS of a second tree: + 64 KiB of page slack)",
                        f"nbytes {m['nbytes']:,} B; RSS {m['rss_growth']:,} B (first build "
                        f"{m['rss_first']:,} B)", ok))
    eq = rep.equivalence
    out.append(("T7", f"bit-identical roots and bytes, native vs twin ({rep.plan['equiv_n']:,} "
                "pairs, d16/d20, xor/hash)", ", ".join(f"{k}: {'same' if v else 'DIFFERENT'}"
                                        for k, v in eq.items()), all(eq.values())))
    return out


def build_table(rows: list[Row], n: int) -> str:
    lines = ["| implementation | N measured | time for N: median | best | ns/pair | time for "
             f"{n:,} pairs | vs native |", "| --- |" + " --- |" * 6]
    ref = next(r for r in rows if r.impl == "native").total_ns(n)
    for r in rows:
        t = r.total_ns(n)
        scaled = "" if r.n == n else " (scaled)"
        lines.append(f"| {r.impl} | {r.n:,} | {_t(r.ns() * r.n)} | {_t(r.ns('best') * r.n)} | "
                     f"{num(r.ns())} | {_t(t)}{scaled} | {ratio(t, ref)} |")
    return "\n".join(lines)


def per_call_table(rows: list[Row], unit: str) -> str:
    lines = [f"| implementation | {unit} per sample | wall per {unit}: median | best | "
             f"CPU per {unit}: median | vs native |", "| --- |" + " --- |" * 5]
    ref = next(r for r in rows if r.impl == "native").ns()
    for r in rows:
        lines.append(f"| {r.impl} | {r.n:,} | {_t(r.ns())} | {_t(r.ns('best'))} | "
                     f"{_t(r.cpu_ns())} | {ratio(r.ns(), ref)} |")
    return "\n".join(lines)


def diff_table(rows: list[Row]) -> str:
    lines = ["| case | implementation | samples | median | best | vs native | leaves / "
             "ranges | digests compared | level-by-level exchange |",
             "| --- |" + " --- |" * 8]
    for case in ("diff_cold_d16", "diff_warm_d16", "diff_cold_d20", "diff_warm_d20"):
        ref = row(rows, case, "native").ns()
        for name in OURS:
            r = row(rows, case, name)
            e = r.extra
            lines.append(f"| {case[5:9]}, d={case[-2:]} | {name} | {len(r.samples)} | "
                         f"{_t(r.ns())} | {_t(r.ns('best'))} | {ratio(r.ns(), ref)} | "
                         f"{e['leaves']} / {e['ranges']} | {e['compared']:,} | "
                         f"{_mib(e['exchange_bytes'])} |")
    return "\n".join(lines)


def bytes_table(rows: list[Row]) -> str:
    lines = ["| operation | size | native: median | best | python: median | best | "
             "python vs native |", "| --- |" + " --- |" * 6]
    for depth in (16, 20):
        for tag in ("full", "leaves"):
            for op in ("to_bytes", "from_bytes"):
                a = row(rows, f"{op}_{tag}_d{depth}", "native")
                p = row(rows, f"{op}_{tag}_d{depth}", "python")
                what = f"{op}(), d={depth}, {'full tree' if tag == 'full' else 'leaves only'}"
                lines.append(f"| {what} | {_mib(a.extra['bytes'])} | {_t(a.ns())} | "
                             f"{_t(a.ns('best'))} | {_t(p.ns())} | {_t(p.ns('best'))} | "
                             f"{ratio(p.ns(), a.ns())} |")
    return "\n".join(lines)


def memory_table(mem: list[dict[str, Any]], n: int) -> str:
    lines = ["| implementation | pairs | tree | nbytes | RSS growth: first build | second "
             f"build | per pair | scaled to {n:,} pairs |", "| --- |" + " --- |" * 7]
    for m in mem:
        shape = f"depth {m['depth']}" if m["depth"] else "append-only log"
        if "crashed" in m:
            lines.append(f"| {m['impl']} | {m['n']:,} | {shape} | crashed: "
                         f"{' '.join(m['crashed'])} | | | | |")
            continue
        nb = f"{m['nbytes']:,} B" if m["nbytes"] is not None else "-"
        fixed = m["nbytes"] is not None
        per = "-" if fixed else f"{m['rss_growth'] / m['n']:,.1f} B"
        scaled = "(fixed size)" if fixed else _mib(m["rss_growth"] / m["n"] * n)
        lines.append(f"| {m['impl']} | {m['n']:,} | {shape} | {nb} | {_mib(m['rss_first'])} "
                     f"| {_mib(m['rss_growth'])} | {per} | {scaled} |")
    return "\n".join(lines)


def markdown(rep: Report, quick: bool) -> str:
    e, p, rows, n = rep.env, rep.plan, rep.rows, rep.plan["n"]
    head = [
        f"Run: `python bench/compare_merkle.py{' --quick' if quick else ''}` on {e['date']}; "
        f"{e['python']}, {e['platform']}",
        f"CPU: {e['cpu']}, {e['cores']} cores; load average at start "
        f"{', '.join(f'{x:.2f}' for x in e['loadavg_start'])}, at end "
        f"{', '.join(f'{x:.2f}' for x in e['loadavg_end'])}",
        f"shardkit {e['shardkit']}, fastcore.NATIVE={e['fastcore.NATIVE']}, "
        f"fastcore.MerkleTree from {e['fastcore.MerkleTree']}; measured {e['native module']}",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in e["versions"].items()),
        f"Inputs: {n:,} pairs of `b\"user:%010d\"` (15 B) and {VALUE_SIZE} random bytes; "
        f"{DIFFS} values differ between the replicas. Rounds: {p['rounds']} "
        f"({p['build_rounds']} for builds); turns of >= {p['turn_s'] * 1000:.0f} ms. "
        f"The twin builds {p['python_n']:,} pairs, the peers {p['peer_n']:,}.",
    ]
    parts = ["\n".join(f"- {h}" for h in head)]
    parts.append("### Targets (research/merkle.md section 4), on the medians\n\n"
                 "| # | target | measured | met |\n| --- | --- | --- | --- |\n"
                 + "\n".join(f"| {i} | {t} | {v} | {'met' if ok else 'NOT met'} |"
                             for i, t, v, ok in targets(rep)))
    for depth in (16, 20):
        for inner in ("xor", "hash"):
            case = [r for r in rows if r.case_id == f"build_d{depth}_{inner}"]
            peers = " pymerkle and merkletools build append-only logs (sha256, no key " \
                "addressing): no depth, no inner rule; they are timed in this table only." \
                if any(r.impl in PEERS for r in case) else ""
            parts.append(f"### Build -> root, depth {depth}, inner={inner}\n\n"
                         f"From a list of (bytes, bytes) pairs. Scaled: the twin's time for "
                         "an empty tree plus its per-pair cost times N; the peers' linearly."
                         f"{peers}\n\n"
                         + build_table(case, n))
    for depth in (16, 20):
        for inner in ("xor", "hash"):
            parts.append(
                f"### update(key, old, new), one call, depth {depth}, inner={inner}\n\n"
                "A chunk of calls in a Python `for` loop over distinct random keys of the "
                f"{n:,}-pair tree; the loop is included (floor row).\n\n"
                + per_call_table([r for r in rows if r.case_id ==
                                  f"update_d{depth}_{inner}"], "call"))
            parts.append(
                f"### update_many({BATCH:,} triples), depth {depth}, inner={inner}\n\n"
                + per_call_table([r for r in rows if r.case_id ==
                                  f"update_many_d{depth}_{inner}"], "key"))
    parts.append(f"### diff of two {n:,}-pair trees, {DIFFS} values differ\n\n"
                 f"Cold: `gc.collect()` and a read of a {EVICT_BYTES >> 20} MiB buffer before "
                 "each sample; warm: repeated at once. The exchange column is what a "
                 "level-by-level comparison with a remote sends: 8 B per digest compared "
                 "(`diff_levels`, checked to find the same leaves).\n\n" + diff_table(rows))
    parts.append("### Serialise / deserialise (inner=xor)\n\n`from_bytes` of a full tree "
                 "checks every inner node against its children; of leaves only, it "
                 "recomputes them.\n\n" + bytes_table(rows))
    parts.append("### Memory\n\nRSS growth of a fresh interpreter building a tree (ours) or "
                 "log (peers) after the pairs were made: the first build (with the "
                 "allocator's warm-up), then a second one kept beside it (the structure "
                 "itself; per pair and scaled from this one).\n\n"
                 + memory_table(rep.memory, n))
    return "\n\n".join(parts) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run, about 30 s")
    ap.add_argument("--rounds", type=int, help="override the rounds of the fast cases")
    ap.add_argument("--json", metavar="PATH", help="also write the raw numbers as JSON")
    ap.add_argument("--child-memory", nargs=3, metavar=("IMPL", "N", "DEPTH"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_memory:
        impl, n, depth = args.child_memory
        print(json.dumps(child_memory(impl, int(n), int(depth))))
        return
    plan = QUICK if args.quick else FULL
    if args.rounds:
        plan = Plan(**{**asdict(plan), "rounds": args.rounds})
    started = time.perf_counter()
    rep = run(plan)
    say(f"done in {time.perf_counter() - started:.0f} s")
    print(markdown(rep, args.quick))
    if args.json:
        data = {"env": rep.env, "plan": rep.plan, "rows": [asdict(r) for r in rep.rows],
                "memory": rep.memory, "equivalence": rep.equivalence,
                "targets": targets(rep)}
        Path(args.json).write_text(json.dumps(data, indent=1, default=str))


if __name__ == "__main__":
    main()
