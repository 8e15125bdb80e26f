"""Fixtures of the benchmark suites: node lists, keys, sizes and a cache of built rings.

Under ``--benchmark-disable`` (the smoke run: every case runs once) the inputs shrink
so that the whole run, pure-Python twin and slow peers included, stays well under a
minute; the timed run uses the sizes the case names state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from _impls import SMALL, Impl, Sizes, node_names, sizes_for, str_keys


@pytest.fixture(scope="session")
def smoke(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("benchmark_disable"))


@pytest.fixture(scope="session")
def sizes(smoke: bool) -> Sizes:
    return sizes_for(smoke=smoke)


@pytest.fixture(scope="session")
def nodes_small() -> list[str]:
    return node_names(SMALL)


@pytest.fixture(scope="session")
def nodes_large(sizes: Sizes) -> list[str]:
    return node_names(sizes.large)


@pytest.fixture(scope="session")
def keys(sizes: Sizes) -> list[str]:
    """``user:100000`` ... : ``sizes.bulk`` distinct 11-byte str keys."""
    return str_keys(sizes.bulk)


@pytest.fixture(scope="session")
def batch(keys: list[str], sizes: Sizes) -> list[str]:
    return keys[: sizes.batch]


@pytest.fixture(scope="session")
def ring_of() -> Callable[[Impl, Sequence[str]], Any]:
    """Builds each (implementation, node list) ring once per session; do not mutate."""
    cache: dict[tuple[object, tuple[str, ...]], Any] = {}

    def get(impl: Impl, nodes: Sequence[str]) -> Any:
        key = (impl.build, tuple(nodes))
        if key not in cache:
            cache[key] = impl.build(nodes)
        return cache[key]

    return get
