"""Side-by-side table: cachelib's CacheClient over a Redis Cluster vs redis-py's own
``RedisCluster`` used directly, on a 6-node cluster (3 primaries, 3 replicas) started
here on loopback ports.

Commands (from the repository root)::

    python bench/compare_cluster.py --quick      # under 40 s
    python bench/compare_cluster.py              # about 90 s
    python bench/compare_cluster.py --json /tmp/cluster.json

Method (as bench/compare_cache.py): the clients of a case take turns, round-robin, the
order reversed on alternate rounds, so load from other processes hits them alike; in
its turn each runs a sample of calls and records wall time and the thread's CPU time
(``time.thread_time_ns``: the client's own work, not the servers'). Tables give the
median over samples. Every client is checked to return the right values first.

Cases:

- ``get`` / ``set`` of one key (100-byte values);
- ``get_many`` of 100 keys spread over the 3 primaries (redis-py: ``mget_nonatomic``);
- an A/A control: a second, identical CacheClient; its ratio to the first shows the
  noise of the run (it should read 1.00x).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _report import interleaved, num, per_op, run_info, sampler, say
from _report import versions as package_versions

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from redis.cluster import ClusterNode, RedisCluster  # noqa: E402
from servers import RedisClusterServers  # noqa: E402

import cachelib  # noqa: E402

KEYS = 2000
VALUE = b"v" * 100
BATCH = 100
OURS = "cachelib CacheClient, cluster"
CONTROL = "cachelib CacheClient, cluster (A/A control)"
REF = "redis-py RedisCluster"


def clients(servers: RedisClusterServers) -> dict[str, Any]:
    return {
        OURS: cachelib.CacheClient([servers.url]),
        REF: RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", n.port)
                                         for n in servers.nodes]),
        CONTROL: cachelib.CacheClient([servers.url]),
    }


def op_get_many(client: Any) -> Callable[[list[str]], Any]:
    if isinstance(client, RedisCluster):
        return client.mget_nonatomic
    return client.get_many  # type: ignore[no-any-return]


def check(name: str, client: Any, keys: list[str]) -> None:
    for k in keys[:50]:
        assert client.set(k, VALUE), name
    for k in keys[:50]:
        got = client.get(k)
        assert got == VALUE, (name, k, got)
    found = op_get_many(client)(keys[:50])
    values = found if isinstance(found, list) else list(found.values())
    assert len(values) == 50 and all(v == VALUE for v in values), name


def single_case(cs: dict[str, Any], all_keys: list[str], op: str, rounds: int,
                turn_s: float, chunk: int) -> dict[str, dict[str, float]]:
    samplers = {}
    for j, (name, c) in enumerate(cs.items()):
        keys = [f"c{j}:{k}" for k in all_keys]  # each client its own keys and format
        check(name, c, keys)
        if op == "get":
            def run(f: Any = c.get, keys: list[str] = keys) -> int:
                for k in keys[:chunk]:
                    f(k)
                return chunk
        else:
            def run(f: Any = c.set, keys: list[str] = keys) -> int:
                for k in keys[:chunk]:
                    f(k, VALUE)
                return chunk
        samplers[name] = sampler(run)
    samples = interleaved(samplers, rounds, turn_s)
    return {n: {"wall_us": per_op(s, 1) / 1000, "cpu_us": per_op(s, 2) / 1000,
                "samples": len(s)} for n, s in samples.items()}


def many_case(cs: dict[str, Any], all_keys: list[str], rounds: int,
              turn_s: float) -> dict[str, dict[str, float]]:
    samplers = {}
    for j, (name, c) in enumerate(cs.items()):
        keys = [f"c{j}:{k}" for k in all_keys]
        batches = [keys[i:i + BATCH] for i in range(0, 1000, BATCH)]
        for k in keys[:1000]:
            c.set(k, VALUE)
        f = op_get_many(c)

        def run(f: Any = f, batches: list[list[str]] = batches) -> int:
            for b in batches:
                found = f(b)
                assert len(found) == BATCH and None not in found
            return len(batches)
        samplers[name] = sampler(run)
    samples = interleaved(samplers, rounds, turn_s)
    return {n: {"wall_us": per_op(s, 1) / 1000, "cpu_us": per_op(s, 2) / 1000,
                "samples": len(s)} for n, s in samples.items()}


def table(res: dict[str, dict[str, float]], unit: str) -> str:
    lines = [f"| client | wall µs/{unit} | client CPU µs/{unit} | CPU vs redis-py "
             "RedisCluster | wall vs redis-py RedisCluster |",
             "| --- | --- | --- | --- | --- |"]
    ref = res[REF]
    for name, r in res.items():
        lines.append(f"| {name} | {num(r['wall_us'])} | {num(r['cpu_us'])} | "
                     f"{r['cpu_us'] / ref['cpu_us']:.2f}x | {r['wall_us'] / ref['wall_us']:.2f}x |")
    return "\n".join(lines)


def markdown(r: dict[str, Any], quick: bool) -> str:
    e = r["env"]
    t = []
    for key, what in (("get", "get"), ("set", "set"), ("many", "get_many of 100 keys")):
        ours, ref = r[key][OURS]["cpu_us"], r[key][REF]["cpu_us"]
        t.append((f"{what}: client CPU <= 1.00x redis-py RedisCluster",
                  f"{ours / ref:.2f}x ({num(ours)} vs {num(ref)} µs)", ours <= ref))
    aa = [r[k][CONTROL]["cpu_us"] / r[k][OURS]["cpu_us"] for k in ("get", "set", "many")]
    out = [
        f"- Run: `python bench/compare_cluster.py{' --quick' if quick else ''}` on "
        f"{e['date']}; {e['python']}; CPU {e['cpu']}, {e['cores']} cores; load "
        f"{', '.join(f'{x:.2f}' for x in e['loadavg_start'])} -> "
        f"{', '.join(f'{x:.2f}' for x in e['loadavg_end'])}; shardkit {e['shardkit']}; "
        f"fastcore native={e['fastcore.NATIVE']}; "
        + ", ".join(f"{k} {v}" for k, v in e["versions"].items()),
        "- Cluster: 6 local redis-server processes (3 primaries, 3 replicas), loopback.",
        f"- A/A control (a second, identical CacheClient; CPU vs the first): "
        f"{', '.join(f'{x:.2f}x' for x in aa)} for get, set, get_many.",
        "",
        "### Targets",
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
        *(f"| {a} | {b} | {'met' if ok else 'NOT met'} |" for a, b, ok in t),
        "",
        "### get, 100-byte values", "", table(r["get"], "op"), "",
        "### set, 100-byte values", "", table(r["set"], "op"), "",
        "### get_many of 100 keys over 3 primaries (redis-py: mget_nonatomic)", "",
        table(r["many"], "call"),
    ]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    rounds, turn_s = (3, 0.3) if args.quick else (7, 0.8)
    env: dict[str, Any] = dict(run_info(["cachelib", "bench"]))
    env["versions"] = package_versions(("redis", "hiredis"))
    results: dict[str, Any] = {"env": env}
    all_keys = [f"bench:user:{i}" for i in range(KEYS)]
    with tempfile.TemporaryDirectory() as folder:
        say("starting a 6-node cluster")
        servers = RedisClusterServers(Path(folder))
        try:
            cs = clients(servers)
            for op in ("get", "set"):
                say(f"cluster {op}")
                results[op] = single_case(cs, all_keys, op, rounds, turn_s, 200)
            say("cluster get_many")
            results["many"] = many_case(cs, all_keys, rounds, turn_s)
            for c in cs.values():
                c.close()
        finally:
            servers.stop()
    env["loadavg_end"] = os.getloadavg()
    print(markdown(results, args.quick))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
