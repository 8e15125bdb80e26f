"""``python -m idgen``: mint IDs, and decode the ones found in logs.

    python -m idgen                         demo: a few IDs of each kind, decoded
    python -m idgen snowflake --count 5     mint (also: truetime, range, uuid4)
    python -m idgen decode 7325863021862912001 [--kind truetime]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import (
    ID_STYLES,
    TWITTER_EPOCH_MS,
    DecodedId,
    IdGenError,
    RangeGenerator,
    SnowflakeGenerator,
    SQLiteStore,
    TrueTimeGenerator,
    UUIDGenerator,
    decode,
    format_id,
    parse_id,
)

__all__ = ("main",)


def _fields(d: DecodedId) -> dict[str, object]:
    out: dict[str, object] = {
        "id": str(d.id), "kind": d.kind, "time": d.timestamp.isoformat(timespec="milliseconds"),
        "unix_ms": d.unix_ms, "worker": d.worker, "sequence": d.sequence,
        "base32": format_id(d.id, "base32"),
    }
    if d.kind == "truetime":
        out["uncertainty_ms"] = d.uncertainty_ms
        out["synchronised"] = d.synchronised
    return out


def _print_decoded(d: DecodedId) -> None:
    for key, value in _fields(d).items():
        shown = "unsynchronised (no bound)" if key == "uncertainty_ms" and value is None else value
        print(f"  {key:<15} {shown}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m idgen", description="shardkit ID tools")
    sub = parser.add_subparsers(dest="command")
    for kind in ("snowflake", "truetime", "uuid4"):
        p = sub.add_parser(kind, help=f"mint {kind} IDs")
        p.add_argument("--count", type=int, default=1)
        if kind != "uuid4":
            p.add_argument("--worker", type=int, help="worker id (default: lease a free one)")
            p.add_argument("--epoch-ms", type=int, default=TWITTER_EPOCH_MS)
            p.add_argument("--format", choices=ID_STYLES, default="int")
    r = sub.add_parser("range", help="mint range IDs from a leased block (SQLite store)")
    r.add_argument("--count", type=int, default=1)
    r.add_argument("--name", default="default", help="sequence name")
    r.add_argument("--store", help="SQLite file (default: in the idgen lease folder)")
    r.add_argument("--block-size", type=int, default=1000)
    d = sub.add_parser("decode", help="decode IDs into time, worker, sequence, uncertainty")
    d.add_argument("ids", nargs="+")
    d.add_argument("--kind", choices=["snowflake", "truetime"], default="snowflake")
    d.add_argument("--epoch-ms", type=int, default=TWITTER_EPOCH_MS)
    d.add_argument("--style", choices=["auto", *ID_STYLES], default="auto",
                   help="text form of the IDs given")
    d.add_argument("--json", action="store_true")
    return parser


def _demo() -> None:
    with SnowflakeGenerator() as snow, TrueTimeGenerator() as tt:
        print(f"Snowflake (worker {snow.worker}, leased):")
        ids = snow.next_ids(3)
        for i in ids:
            print(f"  {i}  {format_id(i, 'base32')}")
        print("decoded:")
        _print_decoded(snow.decode(ids[-1]))
        print(f"\nTrueTime-style (worker {tt.worker}):")
        tids = tt.next_ids(3)
        for i in tids:
            print(f"  {i}  {format_id(i, 'base32')}")
        print("decoded:")
        _print_decoded(tt.decode(tids[-1]))
        print("  definitely before the next ID:", tt.definitely_before(tids[-1], tt.next_id()))
    print("\nUUID v4:", UUIDGenerator().next_id())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command is None:
            _demo()
        elif args.command == "decode":
            decoded = [decode(parse_id(text, args.style), args.kind, epoch_ms=args.epoch_ms)
                       for text in args.ids]
            if args.json:
                json.dump([_fields(d) for d in decoded], sys.stdout, indent=2)
                print()
            else:
                for d in decoded:
                    print(d.id)
                    _print_decoded(d)
        else:
            if args.count < 0:
                raise SystemExit("--count must be >= 0")
            if args.command == "range":
                store = SQLiteStore(args.store) if args.store else None
                with RangeGenerator(store, args.name, block_size=args.block_size) as rgen:
                    for i in rgen.next_ids(args.count):
                        print(i)
                if store is not None:
                    store.close()
                return 0
            if args.command == "uuid4":
                for u in UUIDGenerator().next_ids(args.count):
                    print(u)
                return 0
            cls = SnowflakeGenerator if args.command == "snowflake" else TrueTimeGenerator
            with cls(args.worker, epoch_ms=args.epoch_ms) as gen:
                for i in gen.next_ids(args.count):
                    print(format_id(i, args.format))
    except (IdGenError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
