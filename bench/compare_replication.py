"""What replication costs the client: ``CacheClient(urls, replicas=3)`` (write and read
quorum 2) against the unreplicated ``CacheClient(urls)`` on the same 4 local memcached
and 4 local redis-server processes started here (loopback only).

Commands (from the repository root)::

    python bench/compare_replication.py --quick      # under 30 s
    python bench/compare_replication.py              # about 2 minutes
    python bench/compare_replication.py --json /tmp/replication.json

Cases, 100-byte values, each client on its own key prefix of the same length (the same
key names): ``get`` and ``set`` of one key, ``get_many`` of 100 keys. A replicated get or
set sends one request to each of the key's 3 replicas and reads the 3 replies (one round
trip); a replicated get_many asks every server for the keys it replicates (3x the keys
per server, the same number of requests).

Method: the clients of a case take turns, round-robin, the order reversed on alternate
rounds, so load from other processes hits them alike; in its turn each runs passes of
``CHUNK`` calls and records the wall time and the thread's CPU time
(``time.thread_time_ns``: the client's own work, system calls included, not the
servers'). Figures are medians over passes. A second unreplicated client (the A/A
control) runs the same code as the first: the gap between the two is the method's noise
on this machine. Every client is checked to return the right values first.

Targets (issue 7): a replicated get, set and get_many cost the client at most 4x the
unreplicated call's CPU (N = 3 requests and replies are the floor of 3x; the versions,
the fan-out and the comparison of the replies get one more).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from _report import interleaved, num, per_op, ratio, run_info, sampler, say
from _report import versions as package_versions

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from servers import MemcachedServer, RedisServer  # noqa: E402

import cachelib  # noqa: E402

KEYS = 2000
VALUE = b"v" * 100
BATCH = 100
CHUNK = 100  # calls per pass (get / set); get_many: CHUNK // 10 calls of BATCH keys
REPLICATED = "replicated (N=3, W=R=2)"
PLAIN = "unreplicated"
CONTROL = "unreplicated, A/A control"
class Setup:
    def __init__(self, folder: Path) -> None:
        self.mc = [MemcachedServer() for _ in range(4)]
        self.rd = []
        for i in range(4):
            (folder / f"r{i}").mkdir()
            self.rd.append(RedisServer(folder / f"r{i}", "--save", "", "--appendonly", "no"))

    def stop(self) -> None:
        for s in (*self.mc, *self.rd):
            s.stop()


def clients(urls: list[str]) -> dict[str, Any]:
    return {PLAIN: cachelib.CacheClient(urls, key_prefix="bench:u:"),
            REPLICATED: cachelib.CacheClient(urls, replicas=3, key_prefix="bench:r:"),
            CONTROL: cachelib.CacheClient(urls, key_prefix="bench:c:")}


def check(name: str, client: Any, keys: list[str]) -> None:
    assert client.set_many(dict.fromkeys(keys, VALUE)) == [], name
    assert all(client.get(k) == VALUE for k in keys[:100]), name
    assert client.get_many(keys[:BATCH]) == dict.fromkeys(keys[:BATCH], VALUE), name


def case(clients: dict[str, Any], keys: list[str], op: str, rounds: int,
         turn_s: float) -> dict[str, dict[str, float]]:
    samplers = {}
    for name, c in clients.items():
        state = {"i": 0}
        if op == "get":
            def run(f: Any = c.get, state: dict[str, int] = state) -> int:
                i = state["i"]
                for k in keys[i:i + CHUNK]:
                    f(k)
                state["i"] = (i + CHUNK) % len(keys)
                return CHUNK
        elif op == "set":
            def run(f: Any = c.set, state: dict[str, int] = state) -> int:
                i = state["i"]
                for k in keys[i:i + CHUNK]:
                    f(k, VALUE)
                state["i"] = (i + CHUNK) % len(keys)
                return CHUNK
        else:
            batches = [keys[i:i + BATCH] for i in range(0, len(keys), BATCH)]

            def run(f: Any = c.get_many, state: dict[str, int] = state,
                    batches: list[list[str]] = batches) -> int:
                i = state["i"]
                calls = CHUNK // 10
                for j in range(calls):
                    found = f(batches[(i + j) % len(batches)])
                    assert len(found) == BATCH
                state["i"] = (i + calls) % len(batches)
                return calls
        samplers[name] = sampler(run)
    samples = interleaved(samplers, rounds, turn_s)
    return {n: {"cpu_us": per_op(s, 2) / 1000, "wall_us": per_op(s, 1) / 1000,
                "ops_per_s": 1e9 / per_op(s, 1), "passes": len(s)}
            for n, s in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short run (under 30 s)")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = ap.parse_args()
    rounds, turn_s = (3, 0.25) if args.quick else (7, 1.0)
    env: dict[str, Any] = {
        **run_info(("cachelib", "fastcore", "idgen", "bench/compare_replication.py")),
        "versions": package_versions(("pymemcache", "redis", "hiredis")),
    }
    results: dict[str, Any] = {"env": env, "rounds": rounds, "turn_s": turn_s}
    keys = [f"user:{i:05d}" for i in range(KEYS)]
    with tempfile.TemporaryDirectory() as folder:
        st = Setup(Path(folder))
        try:
            for kind, servers in (("memcached", st.mc), ("redis", st.rd)):
                cs = clients([s.url for s in servers])
                for name, c in cs.items():
                    check(name, c, keys)
                for op in ("get", "set", "get_many"):
                    say(f"{kind} {op}")
                    results[f"{kind} {op}"] = case(cs, keys, op, rounds, turn_s)
                for c in cs.values():
                    c.close()
        finally:
            st.stop()
    env["loadavg_end"] = os.getloadavg()
    print(markdown(results, args.quick))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def targets(r: dict[str, Any]) -> list[tuple[str, str, bool]]:
    out = []
    for kind in ("memcached", "redis"):
        for op in ("get", "set", "get_many"):
            res = r[f"{kind} {op}"]
            x = res[REPLICATED]["cpu_us"] / res[PLAIN]["cpu_us"]
            what = "get_many of 100 keys" if op == "get_many" else op
            out.append((f"{kind} {what}: replicated client CPU <= 4x unreplicated",
                        f"{x:.2f}x ({num(res[REPLICATED]['cpu_us'])} vs "
                        f"{num(res[PLAIN]['cpu_us'])} µs)", x <= 4.0))
    return out


def markdown(r: dict[str, Any], quick: bool) -> str:
    e = r["env"]
    lines = [
        f"- Run: `python bench/compare_replication.py{' --quick' if quick else ''}` on "
        f"{e['date']}; {e['python']}, {e['platform']}",
        f"- CPU: {e['cpu']}, {e['cores']} cores; load average at start "
        f"{', '.join(f'{x:.2f}' for x in e['loadavg_start'])}, at end "
        f"{', '.join(f'{x:.2f}' for x in e['loadavg_end'])}",
        f"- shardkit {e['shardkit']}, fastcore.NATIVE={e['fastcore.NATIVE']}; "
        + ", ".join(f"{k} {v}" for k, v in e["versions"].items()),
        f"- 4 memcached and 4 redis-server processes on loopback; {r['rounds']} rounds of "
        f"{r['turn_s'] * 1000:.0f} ms turns per client; medians over passes of {CHUNK} "
        f"calls ({CHUNK // 10} for get_many).",
        "",
        "### Targets (issue 7)",
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
        *(f"| {t} | {v} | {'met' if ok else 'NOT met'} |" for t, v, ok in targets(r)),
    ]
    for kind in ("memcached", "redis"):
        lines += ["", f"### {kind.capitalize()}, 100-byte values", "",
                  "| call | client | client CPU µs/call | CPU vs unreplicated | wall µs/call "
                  "| calls/s | calls/s vs unreplicated |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for op in ("get", "set", "get_many"):
            res = r[f"{kind} {op}"]
            base = res[PLAIN]
            label = "get_many (100 keys)" if op == "get_many" else op
            for name in (PLAIN, REPLICATED, CONTROL):
                x = res[name]
                cpu = "1.00x" if name == PLAIN else f"{x['cpu_us'] / base['cpu_us']:.2f}x"
                rate = "" if name == PLAIN else ratio(base["ops_per_s"], x["ops_per_s"]) \
                    .replace("slower", "fewer").replace("faster", "more")
                lines.append(f"| {label} | {name} | {num(x['cpu_us'])} | {cpu} | "
                             f"{num(x['wall_us'])} | {x['ops_per_s']:,.0f} | {rate} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
