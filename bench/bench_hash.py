"""xxh3_64 / xxh64: native vs the pure-Python twin vs the xxhash package.

Inputs: 11-byte str keys (``user:100000`` ...; a round hashes ``batch`` of them),
100-byte bytes values (``batch`` distinct ones a round) and one 1 MiB bytes value.
For str keys the package is timed on ``key.encode()`` (what a caller holding a str
must do) and, as a floor, on the already encoded bytes.

Run from the repository root::

    python -m pytest -c bench/pytest.ini bench/ --benchmark-disable   # smoke
    python -m pytest -c bench/pytest.ini bench/                       # timed
"""

from __future__ import annotations

from typing import Any

import pytest
from _impls import HASH_FUNCS, bytes_values, expected_hash, hash_call, loop1

STR_IMPLS = ("native", "python", "xxhash-encode", "xxhash")
BYTES_IMPLS = ("native", "python", "xxhash")
MIB = 1 << 20


@pytest.fixture(scope="session")
def values_100(batch: list[str]) -> list[bytes]:
    return bytes_values(len(batch), 100)


@pytest.fixture(scope="session")
def value_1mib() -> bytes:
    return bytes_values(1, MIB)[0]


@pytest.mark.parametrize("impl", STR_IMPLS)
@pytest.mark.parametrize("func", HASH_FUNCS)
def test_hash_str_key(benchmark: Any, func: str, impl: str, batch: list[str]) -> None:
    data: list[Any] = [k.encode() for k in batch] if impl == "xxhash" else batch
    benchmark.group = f"{func}: 11-byte str key, {len(batch)} keys/round"
    benchmark.extra_info["calls_per_round"] = len(batch)
    last = benchmark(loop1(hash_call(impl, func), data))
    assert last == expected_hash(func, batch[-1])


@pytest.mark.parametrize("impl", BYTES_IMPLS)
@pytest.mark.parametrize("func", HASH_FUNCS)
def test_hash_100_bytes(benchmark: Any, func: str, impl: str, values_100: list[bytes]) -> None:
    benchmark.group = f"{func}: 100-byte bytes, {len(values_100)} values/round"
    benchmark.extra_info["calls_per_round"] = len(values_100)
    last = benchmark(loop1(hash_call(impl, func), values_100))
    assert last == expected_hash(func, values_100[-1])


@pytest.mark.parametrize("impl", BYTES_IMPLS)
@pytest.mark.parametrize("func", HASH_FUNCS)
def test_hash_1mib(benchmark: Any, func: str, impl: str, value_1mib: bytes) -> None:
    benchmark.group = f"{func}: 1 MiB bytes, 1 call/round"
    result = benchmark(hash_call(impl, func), value_1mib)
    assert result == expected_hash(func, value_1mib)
