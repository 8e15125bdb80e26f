"""Write policies side by side: write-through, write-around, write-back (with and
without a journal) vs a plain cache-aside loop as users write it today, on one Zipf
workload over local servers started here, with an SQLite file as the system of record.

Commands (from the repository root)::

    python bench/compare_policies.py --quick     # about 30 s
    python bench/compare_policies.py             # the RESULTS.md run

Workload: ``OPS`` writes of Zipf-distributed keys (s = 1.1 over ``KEYS`` keys, the same
sequence for every row), 100-byte values, each row against its own key prefix. Rows:
writes per second (wall), client CPU per write, store rows written (after the final
flush), and for write-back the share of store writes saved by coalescing. The
write-back buffering cost is the write-back row's CPU per write minus the plain cache
``set`` row's; the journal's cost is the journal row's minus the write-back row's.
Targets (issue 6): buffering <= 5 µs per write on top of the cache write; coalescing
>= 50 % fewer store writes at a 50 ms flush interval; a journal <= 10 µs per write.
"""

from __future__ import annotations

import argparse
import bisect
import datetime
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _report import cpu_model, git, num, say

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import redis  # noqa: E402
from pymemcache.client.base import Client as PmClient  # noqa: E402
from servers import MemcachedServer, RedisServer  # noqa: E402

import cachelib  # noqa: E402
from cachelib._policies import CachedStore  # noqa: E402
from cachelib._stores import SQLiteStore  # noqa: E402

KEYS = 10_000
VALUE = b"v" * 100


def zipf_keys(n: int, ops: int, s: float = 1.1, seed: int = 7) -> list[str]:
    rnd = random.Random(seed)
    weights = [1 / (i ** s) for i in range(1, n + 1)]
    cum = []
    total = 0.0
    for w in weights:
        total += w
        cum.append(total)
    return [f"user:{bisect.bisect_left(cum, rnd.random() * total)}" for _ in range(ops)]


def timed(fn: Callable[[], None]) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - t0, time.thread_time() - c0


def run(kind: str, url: str, folder: Path, ops: int) -> list[dict[str, Any]]:
    keys = zipf_keys(KEYS, ops)
    rows = []

    def row(name: str, wall: float, cpu: float, store_rows: int | None,
            extra: dict[str, Any] | None = None) -> None:
        rows.append({"cache": kind, "row": name, "writes_per_s": ops / wall,
                     "cpu_us": cpu / ops * 1e6, "store_rows": store_rows, **(extra or {})})

    # the cache write alone (what the buffering is measured against)
    client = cachelib.CacheClient([url], key_prefix="bench:set:")
    wall, cpu = timed(lambda: [client.set(k, VALUE) for k in keys])
    row("cachelib set only (no store)", wall, cpu, None)
    # cache-aside as users write it: store write, then delete the cache key
    store = SQLiteStore(folder / f"{kind}-aside.db")
    if kind == "memcached":
        host, port = url.split("//")[1].split(":")
        raw: Any = PmClient((host, int(port)), default_noreply=False)
    else:
        raw = redis.Redis.from_url(url)

    def aside() -> None:
        for k in keys:
            store.put(k, VALUE)
            raw.delete("bench:aside:" + k)
    wall, cpu = timed(aside)
    row(f"cache-aside loop ({'pymemcache' if kind == 'memcached' else 'redis-py'})", wall,
        cpu, store.stats()["rows_written"])
    store.close()
    for policy, opts, label in (
            ("write-through", None, "write-through"),
            ("write-around", None, "write-around"),
            ("write-back", {"max_delay": 0.05}, "write-back, 50 ms"),
            ("write-back", {"max_delay": 0.5}, "write-back, 500 ms"),
            ("write-back", {"max_delay": 0.05, "journal": str(folder / f"{kind}.journal"),
                            "fsync": "interval"}, "write-back, 50 ms, journal")):
        store = SQLiteStore(folder / f"{kind}-{label.replace(' ', '_')}.db")
        prefix = f"bench:{label.replace(' ', '_')}:"
        cs = CachedStore(cachelib.CacheClient([url], key_prefix=prefix), store,
                         policy=policy, writeback=opts)

        def writes(cs: CachedStore = cs) -> None:
            put = cs.put
            for k in keys:
                put(k, VALUE)

        def sets() -> None:
            for k in keys:
                client.set(k, VALUE)
        # paired with a plain cache-set pass right before it, so that the difference is
        # not a drift of this shared machine between rows
        _, set_cpu = timed(sets)
        wall, cpu = timed(writes)
        cs.close()
        written = store.stats()["rows_written"]
        extra: dict[str, Any] = {"over_set_us": (cpu - set_cpu) / ops * 1e6}
        if policy == "write-back":
            extra["saved"] = 1 - written / ops
        row(label, wall, cpu, written, extra)
        store.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    ops = 10_000 if args.quick else 50_000
    env = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "python": f"{platform.python_implementation()} {platform.python_version()}",
           "cpu": cpu_model(), "cores": os.cpu_count(), "load": os.getloadavg(),
           "git": git("rev-parse", "--short", "HEAD").strip()}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        mc = MemcachedServer()
        (folder / "r").mkdir()
        rd = RedisServer(folder / "r", "--save", "", "--appendonly", "no")
        try:
            for kind, url in (("memcached", mc.url), ("redis", rd.url)):
                say(f"{kind}: {ops:,} Zipf writes per row")
                rows += run(kind, url, folder, ops)
        finally:
            mc.stop()
            rd.stop()
    print(markdown(rows, env, ops, args.quick))
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "rows": rows}, indent=1))


def markdown(rows: list[dict[str, Any]], env: dict[str, Any], ops: int, quick: bool) -> str:
    out = [f"- Run: `python bench/compare_policies.py{' --quick' if quick else ''}` on "
           f"{env['date']}; {env['python']}; CPU {env['cpu']}, {env['cores']} cores; load "
           f"{', '.join(f'{x:.2f}' for x in env['load'])}; git {env['git']}; {ops:,} writes "
           f"per row, Zipf s=1.1 over {KEYS:,} keys, 100-byte values, SQLite store", ""]
    targets = []
    for kind in ("memcached", "redis"):
        r = {x["row"]: x for x in rows if x["cache"] == kind}
        wb = r["write-back, 50 ms"]
        jr = r["write-back, 50 ms, journal"]
        targets += [
            (f"{kind}: write-back buffering <= 5 µs per write over the cache write "
             "(paired pass)", f"{wb['over_set_us']:.1f} µs", wb["over_set_us"] <= 5),
            (f"{kind}: coalescing saves >= 50 % of store writes at 50 ms",
             f"{wb['saved'] * 100:.1f} %", wb["saved"] >= 0.5),
            (f"{kind}: journal <= 10 µs per write (paired passes)",
             f"{jr['over_set_us'] - wb['over_set_us']:.1f} µs",
             jr["over_set_us"] - wb["over_set_us"] <= 10),
        ]
    out += ["### Targets (issue 6)", "", "| target | measured | met |", "| --- | --- | --- |",
            *(f"| {a} | {b} | {'met' if ok else 'NOT met'} |" for a, b, ok in targets), ""]
    for kind in ("memcached", "redis"):
        out += [f"### {kind}", "", "| row | writes/s | client CPU µs/write | over a paired "
                "cache-set pass | store rows written | store writes saved |",
                "| --- | --- | --- | --- | --- | --- |"]
        for x in rows:
            if x["cache"] != kind:
                continue
            saved = f"{x['saved'] * 100:.1f} %" if "saved" in x else "-"
            sr = f"{x['store_rows']:,}" if x["store_rows"] is not None else "-"
            over = f"{x['over_set_us']:+.1f} µs" if "over_set_us" in x else "-"
            out.append(f"| {x['row']} | {x['writes_per_s']:,.0f} | {num(x['cpu_us'])} | "
                       f"{over} | {sr} | {saved} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    main()
