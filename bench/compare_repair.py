"""Anti-entropy (``cachelib._repair.repair``) against the full key-by-key comparison it
avoids, on 4 local redis-server and 4 local memcached processes started here (loopback).

Commands (from the repository root)::

    python bench/compare_repair.py --quick       # 10,000 keys, about 3 s
    python bench/compare_repair.py               # 100,000 keys, about 15 s (RESULTS.md)
    python bench/compare_repair.py --json /tmp/repair.json
    SHARDKIT_PURE_PYTHON=1 python bench/compare_repair.py --quick   # the Merkle twin

Method, per kind of server: 100,000 keys (10,000 with ``--quick``) with 3 replicas
each, written directly to the replicas' servers as versioned records
(``_versions.wrap``; 100-byte values), placed by the client's ring. Then 100 keys
diverge, each on one replica chosen at random: 25 copies deleted, 25 overwritten with an
older version, 25 with a newer version and 25 with a newer tombstone (a newer copy must
reach the 2 other replicas: 150 writes in all). One :func:`~cachelib._repair.repair`
round, timed; a check that every replica of the 100 keys holds the newest record; a
second round, which must find nothing.

Bytes: *listing* is what the servers sent to list their keys and digests (Redis hashes
on the server: keys and digests only; memcached cannot, so its values cross too). The
exchange is tree + key compare + repair bytes; the *full comparison* ships every key
with its 8-byte digest from the smaller side of each pair to the other. Target (issue 7): the
exchange >= 50x fewer bytes than the full comparison at 100,000 keys.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _report import num, run_info, say
from _report import versions as package_versions

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from servers import MemcachedServer, RedisServer  # noqa: E402

from cachelib import CacheClient  # noqa: E402
from cachelib._repair import repair  # noqa: E402
from cachelib._versions import tombstone, wrap  # noqa: E402

N = 3
DIVERGED = 100
VALUE = 100


def raw(client: CacheClient, name: str) -> Any:
    backend = client.servers[name]
    return getattr(backend, "backend", backend)


def seed(client: CacheClient, keys: list[str]) -> dict[bytes, tuple[bytes, int]]:
    """Every key's record on its N replicas; returns {encoded key: record}."""
    records: dict[bytes, tuple[bytes, int]] = {}
    per_server: dict[str, list[tuple[bytes, bytes, int]]] = {}
    for i, key in enumerate(keys):
        k = client._encode(key)
        rec = wrap(1_000_000 + i, *client._dumps(f"{i:09d}".encode() * (VALUE // 9 + 1)))
        records[k] = rec
        for name in client.ring.get_nodes(k, N):
            per_server.setdefault(name, []).append((k, *rec))
    for name, items in per_server.items():
        backend = raw(client, name)
        for i in range(0, len(items), 2000):
            assert backend.recv_set_many(backend.send_set_many(items[i:i + 2000], 0)) == []
    return records


def diverge(client: CacheClient, records: dict[bytes, tuple[bytes, int]],
            rnd: random.Random) -> tuple[dict[bytes, tuple[bytes, int] | None], int]:
    """Diverges DIVERGED keys on one replica each; the newest record of each and the
    replica writes a repair needs."""
    newest: dict[bytes, tuple[bytes, int] | None] = {}
    writes = 0
    for i, k in enumerate(rnd.sample(sorted(records), DIVERGED)):
        name = rnd.choice(client.ring.get_nodes(k, N))
        backend = raw(client, name)
        kind = i % 4
        if kind == 0:
            backend.delete(k)
            newest[k], writes = records[k], writes + 1
        elif kind == 1:
            backend.set(k, *wrap(1, *client._dumps(b"older")), 0)
            newest[k], writes = records[k], writes + 1
        else:
            rec = wrap(10**12 + i, *client._dumps(b"newer")) if kind == 2 \
                else tombstone(10**12 + i)
            backend.set(k, *rec, 0)
            newest[k], writes = rec, writes + N - 1
    return newest, writes


def converged(client: CacheClient, newest: dict[bytes, tuple[bytes, int] | None]) -> bool:
    return all(raw(client, name).get(k) == rec
               for k, rec in newest.items() for name in client.ring.get_nodes(k, N))


def run_case(kind: str, urls: list[str], keys: int, seed_value: int) -> dict[str, Any]:
    client = CacheClient(urls, timeout=5.0, connect_timeout=2.0, key_prefix="bench:")
    try:
        client.flush_all()
        say(f"{kind}: writing {keys:,} keys x {N} replicas")
        t0 = time.perf_counter()
        records = seed(client, [f"user:{i:07d}" for i in range(keys)])
        seed_s = time.perf_counter() - t0
        newest, writes = diverge(client, records, random.Random(seed_value))
        say(f"{kind}: repair round")
        first = repair(client, replicas=N)
        ok = converged(client, newest)
        say(f"{kind}: second round")
        second = repair(client, replicas=N)
        return {"kind": kind, "keys": keys, "seed_s": seed_s, "expected_writes": writes,
                "converged": ok, "first": first.as_dict(), "second": second.as_dict(),
                "summary": first.summary()}
    finally:
        client.close()


def markdown(results: dict[str, Any], quick: bool) -> str:
    e = results["env"]
    cases = results["cases"]
    head = [
        f"Run: `python bench/compare_repair.py{' --quick' if quick else ''}` on {e['date']}; "
        f"{e['python']}, {e['platform']}",
        f"CPU: {e['cpu']}, {e['cores']} cores; load average at start "
        f"{', '.join(f'{x:.2f}' for x in e['loadavg_start'])}, at end "
        f"{', '.join(f'{x:.2f}' for x in e['loadavg_end'])}",
        f"shardkit {e['shardkit']}, fastcore.NATIVE={e['fastcore.NATIVE']}",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in e["versions"].items()),
        f"Setup: 4 servers of each kind, {cases[0]['keys']:,} keys x {N} replicas, "
        f"{VALUE}-byte values, {DIVERGED} keys diverged on one replica each (deleted / "
        "older / newer / newer tombstone).",
    ]
    target = []
    for c in cases:
        f = c["first"]
        ratio = f["full_comparison_bytes"] / max(f["exchange_bytes"], 1)
        at_size = c["keys"] >= 100_000
        target.append((f"{c['kind']}: exchange >= 50x fewer bytes than the full comparison "
                       "(at 100,000 keys)", f"{ratio:,.1f}x",
                       ("met" if ratio >= 50 else "NOT met") if at_size
                       else "n/a (--quick: 10,000 keys)"))
        second = c["second"]
        target.append((f"{c['kind']}: every replica newest after one round; a second round "
                       "finds 0", f"converged={c['converged']}, second round "
                       f"{second['keys_differing']} differing / {second['keys_repaired']} "
                       "written", "met" if c["converged"] and second["keys_differing"] == 0
                       and second["keys_repaired"] == 0 else "NOT met"))
    rows = ["| servers | keys listed | listing s | round s | listing bytes | tree B | "
            "key-compare B | repair B | exchange B | full comparison B | fewer bytes | "
            "keys differing | writes (expected) | 2nd round: differing, s |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | "
            "--- |"]
    for c in cases:
        f, s = c["first"], c["second"]
        listing = sum(f["listing_bytes"].values())
        rows.append(
            f"| 4 {c['kind']} | {sum(f['keys_listed'].values()):,} | "
            f"{num(f['listing_seconds'])} | {num(f['seconds'])} | {listing:,} | "
            f"{f['tree_bytes']:,} | {f['key_compare_bytes']:,} | {f['repair_bytes']:,} | "
            f"{f['exchange_bytes']:,} | {f['full_comparison_bytes']:,} | "
            f"{f['full_comparison_bytes'] / max(f['exchange_bytes'], 1):,.1f}x | "
            f"{f['keys_differing']:,} | {f['keys_repaired']:,} ({c['expected_writes']}) | "
            f"{s['keys_differing']}, {num(s['seconds'])} |")
    parts = [
        "\n".join(f"- {h}" for h in head),
        "### Targets (issue 7)\n\n| target | measured | met |\n| --- | --- | --- |\n"
        + "\n".join(f"| {t} | {v} | {ok} |" for t, v, ok in target),
        "### One repair round\n\n" + "\n".join(rows),
        "The exchange counts what a two-party exchange ships: a 16-byte handshake per "
        "pair, 4-byte node id + two 8-byte child digests per expanded node, 4 bytes per "
        "differing leaf and (2-byte length + key + 8-byte digest) per key of those leaves "
        "on one side, then the key and payload bytes of the records read and written. "
        "Listing bytes are apart: Redis digests on the server (keys and 16 hex digits "
        "cross), memcached sends its keys (`lru_crawler metadump`) and values.",
    ]
    for c in cases:
        parts.append(f"<details><summary>{c['kind']}: report</summary>\n\n```\n"
                     f"{c['summary']}\n```\n</details>")
    return "\n\n".join(parts) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="10,000 keys instead of 100,000")
    ap.add_argument("--keys", type=int, help="keys (overrides --quick)")
    ap.add_argument("--only", choices=("redis", "memcached"), help="one kind of server")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    keys = args.keys or (10_000 if args.quick else 100_000)
    env: dict[str, Any] = {**run_info(("cachelib", "fastcore", "bench")),
                           "versions": package_versions(("redis", "pymemcache", "hiredis",
                                                         "xxhash"))}
    results: dict[str, Any] = {"env": env, "cases": []}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        servers: list[Any] = []
        try:
            kinds = [args.only] if args.only else ["redis", "memcached"]
            for kind in kinds:
                if kind == "redis":
                    group = []
                    for i in range(4):
                        (Path(folder) / f"r{i}").mkdir()
                        group.append(RedisServer(Path(folder) / f"r{i}", "--save", "",
                                                 "--appendonly", "no"))
                else:
                    group = [MemcachedServer() for _ in range(4)]
                servers += group
                results["cases"].append(run_case(kind, [s.url for s in group], keys, 7))
        finally:
            for s in servers:  # by PID, all at once (memcached takes ~1 s to exit)
                if s.proc is not None and s.proc.poll() is None:
                    s.proc.terminate()
            for s in servers:
                s.stop()
    env["loadavg_end"] = os.getloadavg()
    env["total_s"] = time.perf_counter() - started
    say(f"done in {env['total_s']:.1f} s")
    print(markdown(results, args.quick and not args.keys))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
