"""Shared fixtures: ``impl`` runs a test once per implementation (native, python)."""

from __future__ import annotations

import importlib
import sys
import threading
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from servers import MemcachedServer, RedisServer

import fastcore
from fastcore._impl import PURE_PYTHON_REQUESTED


@dataclass(frozen=True)
class Impl:
    """One implementation of the fastcore modules."""

    name: str
    hash: types.ModuleType
    ring: types.ModuleType
    ids: types.ModuleType
    merkle: types.ModuleType


def _load(name: str) -> Impl:
    suffix = "" if name == "native" else "_py"
    return Impl(
        name=name,
        hash=importlib.import_module(f"fastcore._hash{suffix}"),
        ring=importlib.import_module(f"fastcore._ring{suffix}"),
        ids=importlib.import_module(f"fastcore._ids{suffix}"),
        merkle=importlib.import_module(f"fastcore._merkle{suffix}"),
    )


# In a pure-Python run (SHARDKIT_PURE_PYTHON=1) only the twins are exercised;
# otherwise both, and test_native_loaded fails if the extension did not load.
IMPL_NAMES = ["python"] if PURE_PYTHON_REQUESTED else ["native", "python"]


@pytest.fixture(scope="session", params=IMPL_NAMES)
def impl(request: pytest.FixtureRequest) -> Impl:
    return _load(request.param)


@pytest.fixture(scope="session")
def native() -> Impl:
    try:
        return _load("native")
    except ImportError:
        if PURE_PYTHON_REQUESTED:  # installed without a compiler on purpose
            pytest.skip("SHARDKIT_PURE_PYTHON=1 and no native build present")
        raise


@pytest.fixture(scope="session")
def python_impl() -> Impl:
    return _load("python")


@pytest.fixture()
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A throwaway redis-server (no persistence) of our own."""
    server = RedisServer(tmp_path, "--save", "", "--appendonly", "no")
    try:
        yield server.url
    finally:
        server.stop()


def run_threads(work: Callable[[int], None], n: int) -> None:
    """Run ``work(0) .. work(n-1)`` in n threads with a 1 us switch interval (restored)."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)


__all__ = ("Impl", "fastcore", "run_threads")


@pytest.fixture(scope="session")
def memcached_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Four memcached processes of our own, shared by the session (never killed)."""
    servers = [MemcachedServer() for _ in range(4)]
    try:
        yield [s.url for s in servers]
    finally:
        for s in servers:
            s.stop()


@pytest.fixture(scope="session")
def redis_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Four redis-server processes of our own, shared by the session (never killed)."""
    servers = [RedisServer(tmp_path_factory.mktemp(f"redis{i}"), "--save", "",
                           "--appendonly", "no") for i in range(4)]
    try:
        yield [s.url for s in servers]
    finally:
        for s in servers:
            s.stop()
