"""Side-by-side table: cachelib's CacheClient vs the clients it wraps and its peers, on
4 local memcached and 4 local redis-server processes started here (loopback only).

Commands (from the repository root)::

    python bench/compare_cache.py --quick        # about 40 s
    python bench/compare_cache.py                # about 2 minutes (the RESULTS.md run)
    python bench/compare_cache.py --json /tmp/cache.json

Method: the implementations of a case take turns, round-robin, the order reversed on
alternate rounds, so load from other processes hits them alike; in its turn each runs
a sample of calls and records wall time and the thread's CPU time
(``time.thread_time_ns``: the client's own work, not the servers'). Tables give the
median over samples. Every client is checked to return the right values first.

Cases (research/cache.md section 8):

- ``get`` / ``set`` of one key (100-byte values): ours over 4 servers vs the
  single-server client it wraps (pymemcache ``Client``, redis-py ``Redis``), pymemcache
  ``HashClient``, pylibmc (ketama, 4 servers) and a naive ``crc32 % 4`` over redis-py;
- ``get_many`` of 100 keys spread over 4 servers: keys per second;
- routing alone: ``CacheClient.server_for`` (key encoding + ring lookup), no I/O.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _report import cpu_model, git, interleaved, num, per_op, ratio, sampler, say
from _report import versions as package_versions

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import pylibmc  # noqa: E402
import redis  # noqa: E402
from pymemcache.client.base import Client as PmClient  # noqa: E402
from pymemcache.client.hash import HashClient  # noqa: E402
from servers import MemcachedServer, RedisServer  # noqa: E402

import cachelib  # noqa: E402
import fastcore  # noqa: E402

KEYS = 2000
VALUE = b"v" * 100
BATCH = 100


# --- the clients --------------------------------------------------------------------------


class Setup:
    def __init__(self, folder: Path) -> None:
        self.mc = [MemcachedServer() for _ in range(4)]
        self.rd = []
        for i in range(4):
            (folder / f"r{i}").mkdir()
            self.rd.append(RedisServer(folder / f"r{i}", "--save", "", "--appendonly", "no"))
        self.mc_hosts = [u.split("//")[1] for u in (s.url for s in self.mc)]
        self.keys = [f"bench:user:{i}" for i in range(KEYS)]

    def stop(self) -> None:
        for s in (*self.mc, *self.rd):
            s.stop()


class NaiveShards:
    """``crc32(key) % 4`` over 4 single-server clients, get_many one shard after
    another: what 4 servers cost a client that adds nothing (no checks, no stats, no
    failure handling) - the research's naive baseline."""

    def __init__(self, shards: list[Any], shard_get_many: Callable[[Any, list[str]], Any]
                 ) -> None:
        self.shards = shards
        self._get_many = shard_get_many

    def _shard(self, key: str) -> Any:
        return self.shards[zlib.crc32(key.encode()) % len(self.shards)]

    def get(self, key: str) -> Any:
        return self._shard(key).get(key)

    def set(self, key: str, value: bytes) -> Any:
        return self._shard(key).set(key, value)

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        groups: dict[int, list[str]] = {}
        for k in keys:
            groups.setdefault(zlib.crc32(k.encode()) % len(self.shards), []).append(k)
        out: dict[str, Any] = {}
        for i, ks in groups.items():
            out.update(self._get_many(self.shards[i], ks))
        return out


def _redis_mget(shard: Any, keys: list[str]) -> dict[str, Any]:
    return {k: v for k, v in zip(keys, shard.mget(keys)) if v is not None}


def memcached_clients(st: Setup) -> dict[str, Any]:
    host, port = st.mc_hosts[0].split(":")
    return {
        "cachelib, 4 memcached": cachelib.CacheClient([s.url for s in st.mc]),
        "cachelib, 1 memcached": cachelib.CacheClient([st.mc[0].url]),
        "naive crc32 % 4 over 4 pymemcache Clients": NaiveShards(
            [PmClient((h.split(":")[0], int(h.split(":")[1])), default_noreply=False)
             for h in st.mc_hosts], lambda shard, keys: shard.get_many(keys)),
        "pymemcache Client, 1 memcached (wrapped)": PmClient((host, int(port)),
                                                             default_noreply=False),
        "pymemcache HashClient, 4 memcached": HashClient(
            [(h.split(":")[0], int(h.split(":")[1])) for h in st.mc_hosts],
            default_noreply=False),
        "pylibmc ketama, 4 memcached": pylibmc.Client(
            st.mc_hosts, binary=False, behaviors={"ketama_weighted": True, "tcp_nodelay": True}),
    }


def redis_clients(st: Setup) -> dict[str, Any]:
    urls = [s.url for s in st.rd]
    return {
        "cachelib, 4 redis": cachelib.CacheClient(urls),
        "cachelib, 1 redis": cachelib.CacheClient(urls[:1]),
        "redis-py Redis, 1 redis (wrapped)": redis.Redis.from_url(urls[0]),
        "naive crc32 % 4 over redis-py, 4 redis": NaiveShards(
            [redis.Redis.from_url(u) for u in urls], _redis_mget),
    }


def op_get(client: Any) -> Callable[[str], Any]:
    return client.get


def op_set(client: Any) -> Callable[[str, bytes], Any]:
    return client.set


def op_get_many(name: str, client: Any) -> Callable[[list[str]], Any]:
    if isinstance(client, (PmClient, HashClient, NaiveShards)):
        return client.get_many
    if isinstance(client, pylibmc.Client):
        return client.get_multi
    if isinstance(client, redis.Redis):  # one server: a single MGET (reference)
        return lambda ks: client.mget(ks)
    return client.get_many


def check(name: str, client: Any, keys: list[str]) -> None:
    for k in keys[:50]:
        op_set(client)(k, VALUE)
    for k in keys[:50]:
        got = op_get(client)(k)
        assert got == VALUE, (name, k, got)
    found = op_get_many(name, client)(keys[:50])
    if isinstance(found, list):
        assert all(v == VALUE for v in found), name
    else:
        assert len(found) == 50 and all(v == VALUE for v in found.values()), name


# --- cases ----------------------------------------------------------------------------------


def single_case(clients: dict[str, Any], all_keys: list[str], op: str, rounds: int,
                turn_s: float, chunk: int) -> dict[str, dict[str, float]]:
    samplers = {}
    for j, (name, c) in enumerate(clients.items()):
        keys = [f"c{j}:{k}" for k in all_keys]  # each client its own keys and format
        check(name, c, keys)
        if op == "get":
            f = op_get(c)

            def run(f: Any = f, keys: list[str] = keys) -> int:
                for k in keys[:chunk]:
                    f(k)
                return chunk
        else:
            g = op_set(c)

            def run(f: Any = g, keys: list[str] = keys) -> int:
                for k in keys[:chunk]:
                    f(k, VALUE)
                return chunk
        samplers[name] = sampler(run)
    samples = interleaved(samplers, rounds, turn_s)
    return {n: {"wall_us": per_op(s, 1) / 1000, "cpu_us": per_op(s, 2) / 1000,
                "samples": len(s)} for n, s in samples.items()}


def many_case(clients: dict[str, Any], all_keys: list[str], rounds: int,
              turn_s: float) -> dict[str, dict[str, float]]:
    samplers = {}
    for j, (name, c) in enumerate(clients.items()):
        keys = [f"c{j}:{k}" for k in all_keys]
        batches = [keys[i:i + BATCH] for i in range(0, 1000, BATCH)]
        for k in keys[:1000]:
            op_set(c)(k, VALUE)
        f = op_get_many(name, c)

        def run(f: Any = f, batches: list[list[str]] = batches) -> int:
            n = 0
            for b in batches:
                n += len(f(b))
            assert n == len(batches) * BATCH
            return n
        samplers[name] = sampler(run)
    samples = interleaved(samplers, rounds, turn_s)
    return {n: {"keys_per_s": 1e9 / per_op(s, 1), "cpu_us_per_key": per_op(s, 2) / 1000,
                "samples": len(s)} for n, s in samples.items()}


def routing_case(st: Setup, rounds: int, turn_s: float) -> dict[str, dict[str, float]]:
    ours = cachelib.CacheClient([s.url for s in st.mc])
    keys = st.keys

    def ring_only() -> int:
        f = ours.ring.get_node
        for k in keys:
            f(k)
        return len(keys)

    def server_for() -> int:
        f = ours.server_for
        for k in keys:
            f(k)
        return len(keys)

    def crc_mod() -> int:
        for k in keys:
            zlib.crc32(k.encode()) % 4
        return len(keys)

    samples = interleaved({"cachelib server_for (key check + encode + ring)":
                           sampler(server_for),
                           "fastcore HashRing.get_node alone": sampler(ring_only),
                           "zlib.crc32(key) % 4 (reference)": sampler(crc_mod)},
                          rounds, turn_s)
    ours.close()
    return {n: {"cpu_us": per_op(s, 2) / 1000} for n, s in samples.items()}


# --- report -------------------------------------------------------------------------------


def table_single(res: dict[str, dict[str, float]], ref: str) -> str:
    lines = ["| client | wall µs/op | client CPU µs/op | CPU vs the wrapped client |",
             "| --- | --- | --- | --- |"]
    base = res[ref]["cpu_us"]
    for name, r in res.items():
        lines.append(f"| {name} | {num(r['wall_us'])} | {num(r['cpu_us'])} | "
                     f"{r['cpu_us'] / base:.2f}x |")
    return "\n".join(lines)


def table_many(res: dict[str, dict[str, float]], ours: str) -> str:
    lines = ["| client | keys/s | client CPU µs/key | vs cachelib |", "| --- | --- | --- | --- |"]
    for name, r in res.items():
        lines.append(f"| {name} | {r['keys_per_s']:,.0f} | {num(r['cpu_us_per_key'])} | "
                     f"{ratio(1 / r['keys_per_s'], 1 / res[ours]['keys_per_s'])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    rounds, turn_s = (3, 0.3) if args.quick else (7, 0.8)
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpu": cpu_model(), "cores": os.cpu_count(), "loadavg_start": os.getloadavg(),
        "git": git("rev-parse", "--short", "HEAD").strip(), "native": fastcore.NATIVE,
        "versions": package_versions(("pymemcache", "redis", "pylibmc", "hiredis")),
    }
    results: dict[str, Any] = {"env": env}
    with tempfile.TemporaryDirectory() as folder:
        st = Setup(Path(folder))
        try:
            mc, rd = memcached_clients(st), redis_clients(st)
            for op in ("get", "set"):
                say(f"memcached {op}")
                results[f"mc_{op}"] = single_case(mc, st.keys, op, rounds, turn_s, 200)
                say(f"redis {op}")
                results[f"rd_{op}"] = single_case(rd, st.keys, op, rounds, turn_s, 200)
            say("memcached get_many")
            results["mc_many"] = many_case(mc, st.keys, rounds, turn_s)
            say("redis get_many")
            results["rd_many"] = many_case(rd, st.keys, rounds, turn_s)
            say("routing")
            results["routing"] = routing_case(st, rounds, turn_s)
        finally:
            st.stop()
    env["loadavg_end"] = os.getloadavg()
    print(markdown(results, args.quick))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def markdown(r: dict[str, Any], quick: bool) -> str:
    e = r["env"]
    mc_ref, rd_ref = "pymemcache Client, 1 memcached (wrapped)", "redis-py Redis, 1 redis (wrapped)"
    ours_mc, ours_rd = "cachelib, 4 memcached", "cachelib, 4 redis"
    t = []
    for key, ref, ours in (("mc_get", mc_ref, ours_mc), ("mc_set", mc_ref, ours_mc),
                           ("rd_get", rd_ref, ours_rd), ("rd_set", rd_ref, ours_rd)):
        x = r[key][ours]["cpu_us"] / r[key][ref]["cpu_us"]
        t.append((f"{key.replace('mc_', 'memcached ').replace('rd_', 'redis ')}: sharded "
                  "client CPU <= 1.10x the wrapped single-server client",
                  f"{x:.2f}x ({num(r[key][ours]['cpu_us'])} vs {num(r[key][ref]['cpu_us'])} µs)",
                  x <= 1.10))
    for key, ours in (("mc_many", ours_mc), ("rd_many", ours_rd)):
        k = r[key][ours]["keys_per_s"]
        t.append((f"{'memcached' if key == 'mc_many' else 'redis'} get_many of 100 keys over "
                  "4 servers >= 200,000 keys/s", f"{k:,.0f} keys/s", k >= 200_000))
    route = r["routing"]["cachelib server_for (key check + encode + ring)"]["cpu_us"]
    t.append(("routing <= 0.5 µs per key", f"{route:.3f} µs", route <= 0.5))
    out = [
        f"- Run: `python bench/compare_cache.py{' --quick' if quick else ''}` on {e['date']}; "
        f"{e['python']}; CPU {e['cpu']}, {e['cores']} cores; load "
        f"{', '.join(f'{x:.2f}' for x in e['loadavg_start'])} -> "
        f"{', '.join(f'{x:.2f}' for x in e['loadavg_end'])}; git {e['git']}; fastcore "
        f"native={e['native']}; " + ", ".join(f"{k} {v}" for k, v in e["versions"].items()),
        "",
        "### Targets (research/cache.md section 8)",
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
        *(f"| {a} | {b} | {'met' if ok else 'NOT met'} |" for a, b, ok in t),
        "",
        "### get, 100-byte values", "", "Memcached:", "", table_single(r["mc_get"], mc_ref), "",
        "Redis:", "", table_single(r["rd_get"], rd_ref), "",
        "### set, 100-byte values", "", "Memcached:", "", table_single(r["mc_set"], mc_ref),
        "", "Redis:", "", table_single(r["rd_set"], rd_ref), "",
        "### get_many of 100 keys (1 server for the wrapped clients: a reference)", "",
        "Memcached:", "", table_many(r["mc_many"], ours_mc), "", "Redis:", "",
        table_many(r["rd_many"], ours_rd), "",
        "### Routing alone (2,000 keys, no I/O)", "",
        "| router | client CPU µs/key |", "| --- | --- |",
        *(f"| {n} | {v['cpu_us']:.3f} |" for n, v in r["routing"].items()),
    ]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
