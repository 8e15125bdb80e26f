"""``python -m cachelib``: the cache library end to end, from a shell.

Subcommands:
    demo            (the default) a replicated write-back cache over a pool of
                    in-process servers (or ``--servers``), one server failing and
                    coming back, a repair pass, and a summary table
    where KEY...    which servers hold each key (its replicas, in order)
    repair          one anti-entropy pass over ``--servers``
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from fastcore._cli import _table

from ._client import CacheClient
from ._errors import CacheError, ServerUnavailable
from ._memory import MemoryBackend

__all__ = ("main",)

_PASSTHROUGH = frozenset({"add_hints", "pending_hints", "name", "stats", "breaker",
                          "max_value", "ketama_name", "on_op"})


class Switchable:
    """A server that can be switched off and on: while off, every call raises
    :class:`ServerUnavailable` (as a dead server would), and the server keeps what it
    held, so it comes back with old values, the case a replicated cache must handle.

    It keeps hinted invalidations itself (the network backends do too): keys written
    elsewhere while it was off are deleted on it before it serves again.
    """

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self.name: str = backend.name
        self.down = False
        self._hints: set[bytes] = set()
        self._cleanup: list[tuple[Any, bytes]] = []
        self._lock = threading.Lock()
        self.delivered = 0

    def add_hints(self, keys: Iterable[bytes],
                  cleanup: list[tuple[Any, bytes]] | None = None) -> None:
        inner = getattr(self._backend, "add_hints", None)
        if inner is not None:  # a network backend keeps its own
            inner(keys, cleanup)
            return
        with self._lock:
            self._hints.update(keys)
            self._cleanup += cleanup or []

    @property
    def pending_hints(self) -> int:
        inner = getattr(self._backend, "pending_hints", None)
        return inner if inner is not None else len(self._hints)

    def _deliver(self) -> None:
        with self._lock:
            keys, self._hints = list(self._hints), set()
            cleanup, self._cleanup = self._cleanup, []
        if keys:
            self._backend.delete_many(keys)
            self.delivered += len(keys)
        for other, key in cleanup:
            with contextlib.suppress(ServerUnavailable):
                other.delete(key)

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._backend, attr)
        if attr in _PASSTHROUGH or not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise ServerUnavailable(self.name, f"{self.name} is switched off (demo)")
            if self._hints:
                self._deliver()
            return value(*args, **kwargs)

        return call


# --- output ---------------------------------------------------------------------------------


class _Progress:
    """A one-line progress bar on stderr (plain lines when it is not a terminal)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()

    def run(self, label: str, items: Sequence[Any], fn: Callable[[Any], None]) -> float:
        """Call ``fn`` on every item, drawing the bar; the seconds it took."""
        n = len(items)
        step = max(1, n // 50)
        started = time.perf_counter()
        for i, item in enumerate(items):
            fn(item)
            if self.tty and not self.quiet and i % step == 0:
                done = (i + 1) / n
                bar = "#" * int(done * 30)
                sys.stderr.write(f"\r  {label:<28} [{bar:<30}] {done * 100:5.1f} %")
                sys.stderr.flush()
        took = time.perf_counter() - started
        if not self.quiet:
            rate = n / took if took else float("inf")
            end = f"{n:,} ops in {took:.2f} s ({rate:,.0f}/s)"
            if self.tty:
                sys.stderr.write(f"\r  {label:<28} [{'#' * 30}] {end}\n")
            else:
                sys.stderr.write(f"  {label:<28} {end}\n")
            sys.stderr.flush()
        return took

    def say(self, text: str) -> None:
        if not self.quiet:
            sys.stderr.write(f"{text}\n")
            sys.stderr.flush()


# --- the demo --------------------------------------------------------------------------------


def _zipf(n: int, count: int, rnd: random.Random, s: float = 1.1) -> list[int]:
    cum: list[float] = []
    total = 0.0
    for i in range(1, n + 1):
        total += 1 / i ** s
        cum.append(total)
    return [bisect.bisect_left(cum, rnd.random() * total) for _ in range(count)]


def _servers(args: argparse.Namespace) -> list[Switchable]:
    if args.servers:
        urls = [u.strip() for u in args.servers.split(",") if u.strip()]
        probe = CacheClient(urls)  # builds and checks the backends
        return [Switchable(b) for b in probe.servers.values()]
    return [Switchable(MemoryBackend(name=f"cache-{i}")) for i in range(1, args.pool + 1)]


def demo(args: argparse.Namespace) -> dict[str, Any]:
    """The end-to-end scenario; the figures of its summary."""
    from idgen import SnowflakeGenerator

    from ._policies import CachedStore
    from ._stores import SQLiteStore

    out = _Progress(args.quiet or args.json)
    rnd = random.Random(args.seed)
    servers = _servers(args)
    if len(servers) < args.replicas:
        raise SystemExit(f"--replicas {args.replicas} needs at least that many servers")
    prefix = f"{args.key_prefix}demo:{os.getpid()}:{int(time.time())}:"
    client = CacheClient(servers, replicas=args.replicas, key_prefix=prefix)
    folder = Path(args.store).parent if args.store else Path(tempfile.mkdtemp(prefix="cachelib-"))
    store_path = Path(args.store) if args.store else folder / "demo-store.db"
    store = SQLiteStore(store_path)
    cs = CachedStore(client, store, policy="write-back",
                     writeback={"max_delay": 0.05, "batch_size": 500})
    ids = SnowflakeGenerator(worker=7)
    keys = [f"account:{i}" for i in range(args.keys)]
    truth: dict[str, Any] = {}
    last_order = [0]
    phases: list[tuple[str, int, float]] = []
    where = "servers " + ", ".join(s.name for s in servers) if args.servers else \
        f"{len(servers)} in-process servers"
    out.say(f"cachelib demo: {where}, {args.replicas} replicas of each key "
            f"(write and read quorum {args.replicas // 2 + 1}), write-back to {store_path}")

    def write(i: int) -> None:
        key = keys[i]
        order = last_order[0] = ids.next_id()
        value = {"account": i, "last_order": order, "balance": rnd.randrange(10**6)}
        cs.put(key, value)
        truth[key] = value

    def read(i: int) -> None:
        cs.get(keys[i])

    def mixed(i: int) -> None:
        (write if rnd.random() < 0.3 else read)(i)

    # 1. load, 2. reads
    ops = _zipf(args.keys, args.ops, rnd)
    phases.append(("write-back writes", len(ops), out.run("write-back writes", ops, write)))
    cs.flush()
    reads = _zipf(args.keys, args.ops, rnd)
    phases.append(("reads", len(reads), out.run("reads (read-through)", reads, read)))
    # 3. a server fails while traffic goes on
    victim = servers[len(servers) // 2]
    victim.down = True
    out.say(f"  -> {victim.name} fails")
    errors = 0

    def guarded(i: int) -> None:
        nonlocal errors
        try:
            mixed(i)
        except CacheError:
            errors += 1

    during = _zipf(args.keys, args.ops, rnd)
    phases.append((f"mixed, {victim.name} down", len(during),
                   out.run(f"mixed, {victim.name} down", during, guarded)))
    # 4. it comes back (holding old values); every key is read and checked
    victim.down = False
    hinted = max(0, victim.pending_hints)  # delivered before it serves again
    out.say(f"  -> {victim.name} is back, with the values it held before "
            f"({hinted:,} hinted invalidations to deliver first)")
    cs.flush()
    stale = 0

    def check(key: str) -> None:
        nonlocal stale
        if key in truth and cs.get(key) != truth[key]:
            stale += 1

    phases.append(("check every key", len(keys), out.run("check every key", keys, check)))
    # 5. anti-entropy
    first = client.repair()
    second = client.repair()
    out.say(f"  repair: {first.keys_repaired} keys repaired, then {second.keys_differing} "
            "differing on a second pass")
    # 6. close: drain the write-back queue, check the store against what was written
    undrained = cs.close()
    stored = store.get_many(list(truth))
    lost = sum(1 for k, v in truth.items() if stored.get(k) != v)
    wb = cs.stats()["writeback"]
    rt = cs.stats()
    rep = client.replication_stats()
    last = ids.decode(last_order[0]) if last_order[0] else None
    summary = {
        "servers": len(servers), "replicas": args.replicas, "keys": args.keys,
        "phases": [{"phase": p, "ops": n, "seconds": t, "ops_per_s": n / t if t else 0.0}
                   for p, n, t in phases],
        "hit_rate": rt["hits"] / max(1, rt["hits"] + rt["misses"]),
        "writes": wb["writes"], "store_rows_written": wb["rows_written"],
        "store_writes_saved": 1 - wb["rows_written"] / max(1, wb["writes"]),
        "errors_during_outage": errors, "stale_reads": stale,
        "hints_delivered": hinted - max(0, victim.pending_hints),
        "read_repairs": rep.get("read_repairs", 0),
        "keys_repaired": first.keys_repaired, "differing_after_repair": second.keys_differing,
        "repair_bytes": first.exchange_bytes, "full_comparison_bytes":
            first.full_comparison_bytes,
        "undrained": len(undrained), "lost_writes": lost,
        "last_id": None if last is None else {"id": last.id, "minted_utc":
                                               last.timestamp.isoformat(),
                                               "worker": last.worker},
        "store": str(store_path),
    }
    store.close()
    client.close()
    return summary


def _print_summary(s: dict[str, Any]) -> None:
    print(_table(["phase", "ops", "seconds", "ops/s"],
                 [(p["phase"], f"{p['ops']:,}", f"{p['seconds']:.2f}", f"{p['ops_per_s']:,.0f}")
                  for p in s["phases"]]))
    print()
    rows = [
        ("servers x replicas", f"{s['servers']} x {s['replicas']}"),
        ("read-through hit rate", f"{s['hit_rate'] * 100:.1f} %"),
        ("writes acknowledged", f"{s['writes']:,}"),
        ("store rows written", f"{s['store_rows_written']:,}"),
        ("store writes saved by coalescing", f"{s['store_writes_saved'] * 100:.1f} %"),
        ("errors while a server was down", f"{s['errors_during_outage']:,}"),
        ("stale reads after it came back", f"{s['stale_reads']:,}"),
        ("hinted invalidations delivered", f"{s['hints_delivered']:,}"),
        ("read repairs", f"{s['read_repairs']:,}"),
        ("keys repaired by anti-entropy", f"{s['keys_repaired']:,}"),
        ("differing after repair", f"{s['differing_after_repair']:,}"),
        ("repair bytes vs full comparison",
         f"{s['repair_bytes']:,} vs {s['full_comparison_bytes']:,}"),
        ("writes lost (store vs acknowledged)", f"{s['lost_writes']:,}"),
    ]
    if s["last_id"]:
        rows.append(("last order ID", f"{s['last_id']['id']} (minted "
                     f"{s['last_id']['minted_utc']} by worker {s['last_id']['worker']})"))
    print(_table(["result", ""], rows, numbers=False))


# --- the other subcommands ---------------------------------------------------------------------


def _where(args: argparse.Namespace) -> int:
    urls = [u.strip() for u in args.servers.split(",") if u.strip()] if args.servers else None
    servers: Any = urls or [MemoryBackend(name=f"cache-{i}") for i in range(1, args.pool + 1)]
    if args.replicas > len(servers):
        raise SystemExit(f"--replicas {args.replicas} needs at least that many servers")
    client = CacheClient(servers, replicas=args.replicas, key_prefix=args.key_prefix)
    rows = [(key, ", ".join(client.preference_list(key))) for key in args.key]
    if args.json:
        print(json.dumps({k: v.split(", ") for k, v in rows}))
    else:
        print(_table(["key", "replicas (first = primary)"], rows, numbers=False))
    return 0


def _repair_cmd(args: argparse.Namespace) -> int:
    if not args.servers:
        raise SystemExit("repair needs --servers URL,URL,...")
    urls = [u.strip() for u in args.servers.split(",") if u.strip()]
    client = CacheClient(urls, replicas=args.replicas, key_prefix=args.key_prefix)
    report = client.repair(dry_run=args.dry_run)
    print(json.dumps(report.as_dict()) if args.json else report.summary())
    return 0


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m cachelib",
        description="The cache library end to end, from a shell: a demo of a replicated "
                    "write-back cache, where a key lives, and anti-entropy repair.")
    sub = ap.add_subparsers(dest="command")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--servers", help="comma-separated server URLs (default: in-process)")
    common.add_argument("--pool", type=int, default=5, help="in-process servers (default 5)")
    common.add_argument("--replicas", type=int, default=3, help="copies of each key (default 3)")
    common.add_argument("--json", action="store_true", help="print JSON")
    common.add_argument("--key-prefix", default="",
                        help="the clients' key prefix (it is part of what is placed)")
    d = sub.add_parser("demo", parents=[common], help="the end-to-end scenario (default)")
    d.add_argument("--keys", type=int, default=2_000, help="distinct keys (default 2,000)")
    d.add_argument("--ops", type=int, default=20_000, help="operations per phase (20,000)")
    d.add_argument("--store", help="the SQLite store file (default: a temporary one)")
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--quiet", action="store_true", help="no progress lines")
    w = sub.add_parser("where", parents=[common], help="which servers hold each key")
    w.add_argument("key", nargs="+")
    r = sub.add_parser("repair", parents=[common], help="one anti-entropy pass")
    r.add_argument("--dry-run", action="store_true", help="compare only, change nothing")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv.insert(0, "demo")
    args = _parser().parse_args(argv)
    try:
        if args.command == "where":
            return _where(args)
        if args.command == "repair":
            return _repair_cmd(args)
        for what in ("keys", "ops", "pool", "replicas"):
            if getattr(args, what) < 1:
                raise SystemExit(f"--{what} must be >= 1")
        summary = demo(args)
    except CacheError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        _print_summary(summary)
    ok = summary["stale_reads"] == 0 and summary["lost_writes"] == 0 and \
        summary["differing_after_repair"] == 0
    return 0 if ok else 1
