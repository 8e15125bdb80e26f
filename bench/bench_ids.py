"""ID generators side by side: native, the pure-Python twin and the peer libraries.

Each case is parametrised over the implementations and sets ``benchmark.group``, so
pytest-benchmark prints one comparison table per case:

- ``next_id()``: a round of ``calls`` single calls in a Python ``for`` loop (µs per
  round of 1000 calls = ns/call). Generators with a per-worker ceiling (ours,
  snowflake-id, sonyflake) are called round-robin over 8 workers (64 for TrueTime), so
  that the round times the call rather than the format ceiling (see ``_ids_impls``).
- ``next_ids(n)``: one call of ours; the peers, which have no batch API, a list
  comprehension of ``n`` calls. One generator: this is where the ceiling shows.

Every case checks the IDs it minted: never None, all distinct, and increasing where
the generator promises it. ``bench/compare_ids.py`` prints CPU ns per call, the share
of the format ceiling, the correctness table and the ratios; RESULTS.md judges the
targets on it.

Run from the repository root::

    python -m pytest -c bench/pytest.ini bench/ --benchmark-disable   # smoke
    python -m pytest -c bench/pytest.ini bench/                       # timed
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from _ids_impls import (
    BATCH,
    BATCHED,
    SINGLE,
    TRUETIME,
    IdImpl,
    batch_call,
    check_ids,
    generators,
    loop,
    native_loaded,
    single_calls,
)


@dataclass(frozen=True)
class IdSizes:
    calls: int  # single calls per round
    batch: int  # IDs per next_ids(n) call
    slow_batch: int  # ... for the ceiling-bound sonyflake (25.6k IDs/s)


@pytest.fixture(scope="session")
def id_sizes(smoke: bool) -> IdSizes:
    if smoke:
        return IdSizes(calls=256, batch=2_000, slow_batch=512)
    return IdSizes(calls=1_000, batch=BATCH, slow_batch=BATCH)


def _params(impls: Sequence[IdImpl]) -> list[Any]:
    return [pytest.param(i, id=i.name) for i in impls]


def _check_native(impl: IdImpl) -> None:
    if impl.ours and not impl.pure_python:
        assert native_loaded(), "idgen runs on the pure-Python twin: build the extension"


def _single(benchmark: Any, impl: IdImpl, n: int, what: str) -> None:
    _check_native(impl)
    calls = single_calls(impl, n)
    benchmark.group = f"{what}: {n} calls/round"
    benchmark.extra_info["calls_per_round"] = n
    benchmark.extra_info["generators"] = impl.spread
    last = benchmark(loop(calls))
    assert last is not None, impl.name
    check_ids(impl, [f() for f in calls], per_gen=impl.spread)


def _batch(benchmark: Any, impl: IdImpl, n: int, what: str) -> None:
    _check_native(impl)
    call = batch_call(impl, generators(impl, 1)[0])
    benchmark.group = f"{what}: {n} IDs/call (peers: list comprehension)"
    benchmark.extra_info["ids_per_call"] = n
    out = benchmark(call, n)
    assert len(out) == n
    check_ids(impl, out)


@pytest.mark.parametrize("impl", _params(SINGLE))
def test_next_id(benchmark: Any, impl: IdImpl, id_sizes: IdSizes) -> None:
    _single(benchmark, impl, id_sizes.calls, "next_id(), Snowflake-layout ones over 8 workers")


@pytest.mark.parametrize("impl", _params(BATCHED))
def test_next_ids(benchmark: Any, impl: IdImpl, id_sizes: IdSizes) -> None:
    n = id_sizes.slow_batch if impl.name == "sonyflake" else id_sizes.batch
    _batch(benchmark, impl, n, "next_ids(n), one generator")


@pytest.mark.parametrize("impl", _params(TRUETIME))
def test_truetime_next_id(benchmark: Any, impl: IdImpl, id_sizes: IdSizes) -> None:
    _single(benchmark, impl, id_sizes.calls, "TrueTime next_id(), over 64 workers")


@pytest.mark.parametrize("impl", _params(TRUETIME))
def test_truetime_next_ids(benchmark: Any, impl: IdImpl, id_sizes: IdSizes) -> None:
    _batch(benchmark, impl, id_sizes.batch, "TrueTime next_ids(n), one generator")
