"""ID generators shared by ``bench_ids.py`` and ``compare_ids.py``: ours and the peers.

Ours are ``native`` (``idgen.SnowflakeGenerator`` over the Cython core) and ``python``
(the pure-Python twin ``fastcore._ids_py.IdCore``, forced by importing it directly), in
the Snowflake layout 41/10/12 and the TrueTime layout 41/4/10/8. The peers are the ones
of research/idgen.md: snowflake-id, sonyflake (default 39/8/16, 10 ms tick),
python-ulid (``ULID()``), uuid6's ``uuid7``, uuid-utils' ``uuid7`` / ``uuid4`` (Rust) and
the standard library's ``uuid4``.

A generator of the Snowflake kind allows at most so many IDs per tick and worker (its
*format ceiling*: 4,096 per ms for 41/10/12, 256 per ms for TrueTime, 256 per 10 ms for
sonyflake), and a fast enough caller hits it: ours needs less time per call (about
170 ns) than the ceiling allows per ID (244 ns), so a tight loop on one generator times
the ceiling, not the call. The single-call cases therefore call ``SPREAD`` generators
of such a kind round-robin (workers 1..8; 64 for TrueTime, whose ceiling is 16 times
lower), so no generator reaches its ceiling and the per-call cost is what is measured.
``native-range`` is ``idgen.RangeGenerator`` over an SQLite file (the embedded default
store) with blocks of 1M IDs: no ceiling, no clock.
"""

from __future__ import annotations

import datetime
import itertools
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import snowflake
import sonyflake
import ulid
import uuid6
import uuid_utils

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout, not an installed shardkit
    sys.path.insert(0, str(REPO))

import idgen  # noqa: E402
from fastcore import _ids, _ids_py  # noqa: E402

EPOCH_MS = idgen.TWITTER_EPOCH_MS
SNOWFLAKE_CEILING = 4_096_000  # IDs/s per worker, 41/10/12: 4,096 per ms
TRUETIME_CEILING = 256_000  # IDs/s per worker, 41/4/10/8: 256 per ms
SONYFLAKE_CEILING = 25_600  # 256 per 10 ms
SONYFLAKE_START = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
SPREAD = 8  # Snowflake-layout generators called round-robin by the single-call cases
TT_SPREAD = 64  # the same for TrueTime (256 IDs per ms each)
BATCH = 10_000  # IDs per next_ids(n) call (peers: a list comprehension)
PEER_PACKAGES = ("snowflake-id", "sonyflake", "python-ulid", "uuid6", "uuid-utils")

Gen = Any  # a generator object, or a module for the stateless peers


@dataclass(frozen=True)
class IdImpl:
    """One ID generator: how to make one for a worker id and what call is timed."""

    name: str
    make: Callable[[int], Gen]  # worker id -> generator (modules ignore it)
    one: Callable[[Gen], Callable[[], Any]]  # generator -> the zero-argument call timed
    many: Callable[[Gen], Callable[[int], list[Any]]] | None = None  # ours: next_ids
    ts_ms: Callable[[Gen, Any], int] | None = None  # (generator, ID) -> Unix ms minted
    ordered: bool = True  # promises increasing IDs from one generator in one thread
    ours: bool = False
    ceiling: int = 0  # IDs/s per generator allowed by the format, 0: none that binds
    spread: int = 1  # generators the single-call cases cycle through
    pure_python: bool = False  # slow: fewer calls in the smoke run
    layout: str = ""  # "snowflake" / "truetime": ours, for decoding


def _snowflake_ms(layout: Any) -> Callable[[Gen, int], int]:
    return lambda g, v: EPOCH_MS + layout.unpack(v)[0]


def _uuid7_ms(g: Gen, v: Any) -> int:
    return int(v) >> 80  # UUIDv7 and ULID: 48-bit Unix ms on top of 128 bits


NATIVE = IdImpl("native", lambda w: idgen.SnowflakeGenerator(worker=w), lambda g: g.next_id,
                lambda g: g.next_ids, lambda g, v: g.decode(v).unix_ms, ours=True,
                ceiling=SNOWFLAKE_CEILING, spread=SPREAD, layout="snowflake")
PYTHON = IdImpl("python", lambda w: _ids_py.IdCore(_ids_py.SNOWFLAKE, w, epoch_ms=EPOCH_MS),
                lambda g: g.next_id, lambda g: g.next_ids, _snowflake_ms(_ids_py.SNOWFLAKE),
                ours=True, ceiling=SNOWFLAKE_CEILING, spread=SPREAD, pure_python=True,
                layout="snowflake")
NATIVE_TT = IdImpl("native-truetime", lambda w: idgen.TrueTimeGenerator(worker=w),
                   lambda g: g.next_id, lambda g: g.next_ids, lambda g, v: g.decode(v).unix_ms,
                   ours=True, ceiling=TRUETIME_CEILING, spread=TT_SPREAD, layout="truetime")
PYTHON_TT = IdImpl("python-truetime",
                   lambda w: _ids_py.IdCore(_ids_py.TRUETIME, w, epoch_ms=EPOCH_MS),
                   lambda g: g.next_id, lambda g: g.next_ids, _snowflake_ms(_ids_py.TRUETIME),
                   ours=True, ceiling=TRUETIME_CEILING, spread=TT_SPREAD, pure_python=True,
                   layout="truetime")
SNOWFLAKE_ID = IdImpl("snowflake-id",
                      lambda w: snowflake.SnowflakeGenerator(w, epoch=EPOCH_MS),
                      lambda g: g.__next__, ts_ms=lambda g, v: EPOCH_MS + (v >> 22),
                      ceiling=SNOWFLAKE_CEILING, spread=SPREAD, pure_python=True)
SONYFLAKE = IdImpl("sonyflake",
                   lambda w: sonyflake.Sonyflake(start_time=SONYFLAKE_START, machine_id=w),
                   lambda g: g.next_id,
                   ts_ms=lambda g, v: round(g.to_time(v).timestamp() * 1000),
                   ceiling=SONYFLAKE_CEILING, spread=SPREAD, pure_python=True)
PYTHON_ULID = IdImpl("python-ulid", lambda w: ulid, lambda g: ulid.ULID, ts_ms=_uuid7_ms,
                     pure_python=True)
UUID6_UUID7 = IdImpl("uuid6.uuid7", lambda w: uuid6, lambda g: uuid6.uuid7, ts_ms=_uuid7_ms,
                     pure_python=True)
UU_UUID7 = IdImpl("uuid-utils.uuid7", lambda w: uuid_utils, lambda g: uuid_utils.uuid7,
                  ts_ms=_uuid7_ms)
UU_UUID4 = IdImpl("uuid-utils.uuid4", lambda w: uuid_utils, lambda g: uuid_utils.uuid4,
                  ordered=False)
UUID4 = IdImpl("uuid.uuid4", lambda w: uuid, lambda g: uuid.uuid4, ordered=False,
               pure_python=True)

def _range_generator(w: int) -> Gen:
    # range IDs from the embedded default store (an SQLite file), blocks of 1M: the
    # steady state issues from the native counter without a store round trip
    import tempfile

    folder = tempfile.mkdtemp(prefix="shardkit-bench-range-")
    return idgen.RangeGenerator(idgen.SQLiteStore(Path(folder) / "ranges.sqlite3"),
                                f"bench-{w}", block_size=RANGE_BLOCK)


RANGE_BLOCK = 1_000_000
NATIVE_RANGE = IdImpl("native-range", _range_generator, lambda g: g.next_id,
                      lambda g: g.next_ids, ours=True)

PEERS = (SNOWFLAKE_ID, SONYFLAKE, PYTHON_ULID, UUID6_UUID7, UU_UUID7, UU_UUID4, UUID4)
SINGLE = (NATIVE, PYTHON, NATIVE_RANGE, *PEERS)  # the next_id() case
BATCHED = (NATIVE, PYTHON, NATIVE_RANGE, *PEERS)  # next_ids(n) (peers: list comprehension)
TRUETIME = (NATIVE_TT, PYTHON_TT)
BY_NAME = {i.name: i for i in (*SINGLE, *TRUETIME)}

# --- generators, made once per process --------------------------------------------------

_GENS: dict[str, list[Gen]] = {}


def generators(impl: IdImpl, k: int) -> list[Gen]:
    """The first ``k`` generators of ``impl`` (workers 1..k), made once per process: two
    generators with one worker id in one process would mint the same IDs."""
    have = _GENS.setdefault(impl.name, [])
    while len(have) < k:
        have.append(impl.make(len(have) + 1))
    return have[:k]


def single_calls(impl: IdImpl, n: int) -> list[Callable[[], Any]]:
    """``n`` zero-argument calls, cycling through ``impl.spread`` generators."""
    fs = [impl.one(g) for g in generators(impl, impl.spread)]
    return [fs[i % len(fs)] for i in range(n)]


def batch_call(impl: IdImpl, gen: Gen) -> Callable[[int], list[Any]]:
    """``n -> n IDs``: ``next_ids`` for ours, a list comprehension for a peer."""
    if impl.many is not None:
        return impl.many(gen)
    one = impl.one(gen)
    return lambda n: [one() for _ in range(n)]


def loop(calls: Sequence[Callable[[], Any]]) -> Callable[[], Any]:
    """A round: every call once, in order; returns the last result."""

    def run() -> Any:
        r = None
        for f in calls:
            r = f()
        return r

    return run


def check_ids(impl: IdImpl, values: Sequence[Any], *, per_gen: int = 1) -> list[int]:
    """Sanity of IDs minted in one thread: none is None, all distinct and, where the
    generator promises it, increasing. ``per_gen``: the values cycle through that many
    generators (order is checked within each). Returns them as ints."""
    assert None not in values, (impl.name, "returned None")
    ints = [int(v) for v in values]
    assert len(set(ints)) == len(ints), (impl.name, "duplicate IDs")
    if impl.ordered:
        for j in range(per_gen):
            sub = ints[j::per_gen]
            bad = sum(b <= a for a, b in itertools.pairwise(sub))
            assert bad == 0, (impl.name, f"{bad} IDs not above the previous one")
    return ints


def native_loaded() -> bool:
    """Whether our native ID core is the one ``idgen`` uses."""
    import fastcore

    return bool(fastcore.NATIVE) and fastcore.IdCore is _ids.IdCore
