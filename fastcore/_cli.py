"""``python -m fastcore ring ...``: plan a cache pool from the shell.

Subcommands:
    locate KEY...   which node holds each key (and its preference list)
    balance         how evenly the nodes share the key space and a key sample
    moves           what fraction of keys moves when a node is added or removed
    demo            all three on a built-in 10-node loopback pool (the default)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from . import NATIVE, HashRing, __version__
from ._errors import FastcoreError

__all__ = ("main",)

_DEMO_POOL = [f"127.0.0.{i}:11211" for i in range(1, 11)]


def _parse_nodes(spec: str | None, pool: int | None) -> dict[str, int]:
    if spec is None and pool is None:
        return dict.fromkeys(_DEMO_POOL, 1)
    if pool is not None:
        if pool < 1:
            raise SystemExit("--pool must be >= 1")
        return {f"127.0.0.{i}:11211" if i < 255 else f"node-{i:04d}": 1 for i in range(1, pool + 1)}
    nodes: dict[str, int] = {}
    assert spec is not None
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, weight = item.partition("=")
        if sep and not weight.strip().isdigit():
            raise SystemExit(f"bad weight in {item!r}: use name=INTEGER")
        if name in nodes:
            raise SystemExit(f"node {name!r} is listed twice")
        nodes[name] = int(weight) if sep else 1
    if not nodes:
        raise SystemExit("--nodes is empty")
    return nodes


def _ring(args: argparse.Namespace, nodes: dict[str, int]) -> HashRing:
    return HashRing(nodes, vnodes=args.vnodes, mode=args.mode, hash_tags=args.hash_tags)


def _sample_keys(args: argparse.Namespace) -> list[str]:
    if args.keys_file:
        with open(args.keys_file, encoding="utf-8") as fh:
            keys = [line.rstrip("\n") for line in fh if line.strip()]
        if not keys:
            raise SystemExit(f"{args.keys_file}: no keys")
        return keys
    return [f"key:{i}" for i in range(args.keys)]


def _space_share(ring: HashRing) -> dict[str, float]:
    """Exact fraction of the hash space each node owns (from the ring's points)."""
    points = ring.points()
    space = float(1 << (32 if ring.mode == "ketama" else 64))
    share: dict[str, float] = dict.fromkeys(ring.nodes, 0.0)
    previous = points[-1][0] - space
    for point, node in points:
        share[node] += (point - previous) / space
        previous = point
    return share


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], *,
           numbers: bool = True) -> str:
    """A plain-text table; with ``numbers`` the columns after the first are right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if n and i and numbers else c.ljust(w)
                               for i, (c, w) in enumerate(zip(row, widths))).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _locate(args: argparse.Namespace, ring: HashRing) -> dict[str, Any]:
    keys = args.key or ["user:42", "user:1000", "session:abc", "{user:42}:feed", "cart:7"]
    replicas = min(args.replicas, len(ring))
    rows = []
    for key in keys:
        rows.append({"key": key, "hash": ring.key_hash(key),
                     "nodes": ring.get_nodes(key, replicas)})
    return {"locate": rows}


def _balance(args: argparse.Namespace, ring: HashRing) -> dict[str, Any]:
    keys = _sample_keys(args)
    counts = Counter(ring.get_node_many(keys))
    share = _space_share(ring)
    weights = ring.weights
    total_w = sum(weights.values())
    point_counts = Counter(node for _, node in ring.points())
    per_node = []
    ratios = []
    for node in ring.nodes:
        expected = len(keys) * weights[node] / total_w
        ratio = counts.get(node, 0) / expected if expected else 0.0
        ratios.append(ratio)
        per_node.append({"node": node, "weight": weights[node],
                         "points": point_counts.get(node, 0),
                         "space_share": share[node], "keys": counts.get(node, 0),
                         "keys_vs_fair": ratio})
    mean = statistics.fmean(ratios)
    cv = statistics.pstdev(ratios) / mean if mean else 0.0
    return {"balance": {"keys": len(keys), "nodes": per_node,
                        "max_over_mean": max(ratios) / mean if mean else 0.0, "cv": cv}}


def _moves(args: argparse.Namespace, ring: HashRing) -> dict[str, Any]:
    keys = _sample_keys(args)
    before = ring.get_node_many(keys)
    results = []
    changes: list[tuple[str, str]] = []
    if args.add:
        changes.append(("add", args.add))
    if args.remove:
        changes.append(("remove", args.remove))
    if not changes:  # default: add one node, and remove the first one
        changes = [("add", "127.0.0.254:11211"), ("remove", ring.nodes[0])]
    for action, node in changes:
        trial = HashRing(ring.weights, vnodes=ring.vnodes, mode=ring.mode,
                         hash_tags=ring.hash_tags)
        if action == "add":
            trial.add_node(node, args.weight)
        else:
            trial.remove_node(node)
        after = trial.get_node_many(keys)
        moved = sum(1 for a, b in zip(before, after) if a != b)
        needed = sum(1 for a, b in zip(before, after)
                     if (b == node if action == "add" else a == node))
        results.append({"change": f"{action} {node}", "moved": moved / len(keys),
                        "minimum": needed / len(keys),
                        "extra": (moved - needed) / len(keys)})
    return {"moves": {"keys": len(keys), "changes": results}}


def _print_text(report: dict[str, Any], ring: HashRing, elapsed: float) -> None:
    print(f"fastcore {__version__} ({'native' if NATIVE else 'pure Python'}): {ring!r}")
    if "locate" in report:
        print("\nwhere keys land (first node holds the key; the rest are its replicas):")
        print(_table(["key", "ring hash", "nodes"],
                     [[r["key"], r["hash"], ", ".join(r["nodes"])] for r in report["locate"]]))
    if "balance" in report:
        b = report["balance"]
        print(f"\nbalance over {b['keys']:,} sample keys:")
        print(_table(["node", "weight", "points", "space %", "keys", "keys/fair"],
                     [[r["node"], r["weight"], r["points"], f"{100 * r['space_share']:.2f}",
                       f"{r['keys']:,}", f"{r['keys_vs_fair']:.3f}"] for r in b["nodes"]]))
        print(f"max/mean {b['max_over_mean']:.3f}   CV {100 * b['cv']:.2f}%"
              f"   (CV ~ 1/sqrt(vnodes) = {100 / math.sqrt(ring.vnodes):.1f}% expected)")
    if "moves" in report:
        m = report["moves"]
        print(f"\nkeys that move when the pool changes ({m['keys']:,} sample keys):")
        print(_table(["change", "moved %", "minimum %", "extra %"],
                     [[r["change"], f"{100 * r['moved']:.2f}", f"{100 * r['minimum']:.2f}",
                       f"{100 * r['extra']:.2f}"] for r in m["changes"]]))
        print("extra = keys moved between two unchanged nodes (0 in xxh3 mode)")
    print(f"\ndone in {elapsed:.2f} s")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fastcore",
                                     description="shardkit fastcore tools")
    sub = parser.add_subparsers(dest="tool")
    ring = sub.add_parser("ring", help="consistent-hash ring planning")
    ring.add_argument("command", nargs="?", default="demo",
                      choices=["demo", "locate", "balance", "moves"])
    ring.add_argument("key", nargs="*", help="keys for 'locate'")
    ring.add_argument("--nodes", help="comma-separated node names, name=WEIGHT for weights")
    ring.add_argument("--pool", type=int, help="generate a pool of N loopback node names")
    ring.add_argument("--mode", choices=["xxh3", "ketama"], default="xxh3")
    ring.add_argument("--vnodes", type=int, default=160)
    ring.add_argument("--hash-tags", action="store_true", help="hash only the {...} part")
    ring.add_argument("--replicas", type=int, default=3, help="preference-list length")
    ring.add_argument("--keys", type=int, default=100_000, help="sample size")
    ring.add_argument("--keys-file", help="file with one key per line instead of a sample")
    ring.add_argument("--add", help="'moves': node to add")
    ring.add_argument("--remove", help="'moves': node to remove")
    ring.add_argument("--weight", type=int, default=1, help="'moves': weight of --add")
    ring.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.tool != "ring":
        parser.print_help()
        return 2
    if args.command != "locate" and args.key:
        parser.error(f"keys are only taken by 'locate', not {args.command!r}")
    if args.keys < 1:
        parser.error("--keys must be >= 1")
    start = time.perf_counter()
    try:
        ring = _ring(args, _parse_nodes(args.nodes, args.pool))
        report: dict[str, Any] = {}
        if args.command in ("demo", "locate"):
            report.update(_locate(args, ring))
        if args.command in ("demo", "balance"):
            report.update(_balance(args, ring))
        if args.command in ("demo", "moves"):
            report.update(_moves(args, ring))
    except (FastcoreError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        _print_text(report, ring, time.perf_counter() - start)
    return 0
