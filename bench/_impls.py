"""Inputs and implementations shared by the pytest-benchmark suites and compare.py.

Every implementation of a case is a :class:`Impl`: how to build its ring from a list
of node names and how to get the call that is timed. Ours are ``native``
(``fastcore._ring``) and ``python`` (the twin ``fastcore._ring_py``); the peers are
uhashring, pylibmc (libmemcached's ketama through ``Client.hash``, which sends no
traffic), jump-consistent-hash (over ``xxh3_64`` of the UTF-8 key) and pymemcache's
``RendezvousHash``. Node names are only names: nothing connects to them.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jump
import pylibmc
import uhashring
import xxhash
from pymemcache.client.rendezvous import RendezvousHash

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout, not an installed shardkit
    sys.path.insert(0, str(REPO))

from fastcore import _hash, _hash_py, _ring, _ring_py  # noqa: E402

VNODES = 160
SMALL = 10
LARGE = 1000
BULK_KEYS = 100_000
NEW_NODE = "10.9.9.9:11211"  # the node added / removed by the add_node cases


@dataclass(frozen=True)
class Sizes:
    """Input sizes of the pytest-benchmark cases."""

    batch: int  # keys per round of the single-key lookup cases
    bulk: int  # keys per get_node_many call
    large: int  # nodes of the "1000 nodes" cases
    slow_rounds: int  # rounds of build / add_node for the pure-Python implementations
    fast_rounds: int


def sizes_for(*, smoke: bool) -> Sizes:
    """The timed sizes, or the shrunk ones of the smoke run (every case runs once)."""
    if smoke:
        return Sizes(batch=200, bulk=2000, large=250, slow_rounds=1, fast_rounds=1)
    return Sizes(batch=1000, bulk=BULK_KEYS, large=LARGE, slow_rounds=3, fast_rounds=20)


def node_names(n: int) -> list[str]:
    """``n`` memcached-style names: 127.0.0.1..n up to 254 nodes, else 10.0.x.y."""
    if n <= 254:
        return [f"127.0.0.{i}:11211" for i in range(1, n + 1)]
    return [f"10.0.{i // 256}.{i % 256}:11211" for i in range(n)]


def str_keys(n: int, start: int = 100_000) -> list[str]:
    """``n`` distinct keys ``user:100000``, ``user:100001``, ... (11 bytes up to 900k)."""
    return [f"user:{i}" for i in range(start, start + n)]


def bytes_values(count: int, size: int) -> list[bytes]:
    """``count`` distinct deterministic ``size``-byte values."""
    rnd = random.Random(size)
    return [rnd.randbytes(size) for _ in range(count)]


# --- ring builders: list of node names -> ring object -----------------------------


def build_native(nodes: Sequence[str]) -> Any:
    return _ring.HashRing(list(nodes), vnodes=VNODES)


def build_native_ketama(nodes: Sequence[str]) -> Any:
    return _ring.HashRing(list(nodes), vnodes=VNODES, mode="ketama")


def build_python(nodes: Sequence[str]) -> Any:
    return _ring_py.HashRing(list(nodes), vnodes=VNODES)


def build_python_ketama(nodes: Sequence[str]) -> Any:
    return _ring_py.HashRing(list(nodes), vnodes=VNODES, mode="ketama")


def build_uhashring(nodes: Sequence[str]) -> Any:
    return uhashring.HashRing(list(nodes))  # md5, 160 vnodes by default


def build_uhashring_ketama(nodes: Sequence[str]) -> Any:
    return uhashring.HashRing(list(nodes), hash_fn="ketama")  # 160 points per node


def build_pylibmc(nodes: Sequence[str]) -> Any:
    # Setting behaviors after the constructor builds the continuum once; passing
    # behaviors= to Client() rebuilds it per server (tens of seconds at 1000 servers).
    client = pylibmc.Client(list(nodes))
    client.behaviors = {"ketama_weighted": True}  # md5 ketama, 160 points per server
    return client


def build_jump(nodes: Sequence[str]) -> Any:
    return len(nodes)  # jump has no state: the bucket count is the "ring"


def build_rendezvous(nodes: Sequence[str]) -> Any:
    return RendezvousHash(list(nodes))


def jump_lookup(n: int) -> Callable[[str], int]:
    h = xxhash.xxh3_64_intdigest
    jh = jump.hash
    return lambda key: jh(h(key.encode()), n)


def uhashring_range(ring: Any) -> Callable[[str, int], list[str]]:
    rng = ring.range
    return lambda key, n: [d["nodename"] for d in rng(key, n, unique=True)]


@dataclass(frozen=True)
class Impl:
    """One implementation of one kind of case."""

    name: str
    build: Callable[[Sequence[str]], Any]
    # ring -> the timed call: key -> node (get_node), (key, n) -> nodes (get_nodes)
    lookup: Callable[[Any], Callable[..., Any]] = lambda ring: ring.get_node
    index: bool = False  # the lookup returns a server index, not a node name
    ours: bool = False
    spec: str = ""  # name of our twin that defines the expected answer, if any
    pure_python: bool = False  # slow: give it fewer keys / rounds


NATIVE = Impl("native", build_native, ours=True, spec="python")
PYTHON = Impl("python", build_python, ours=True, spec="python", pure_python=True)
NATIVE_KETAMA = Impl("native-ketama", build_native_ketama, ours=True, spec="python-ketama")
PYTHON_KETAMA = Impl(
    "python-ketama", build_python_ketama, ours=True, spec="python-ketama", pure_python=True
)
UHASHRING = Impl("uhashring", build_uhashring, pure_python=True)
UHASHRING_KETAMA = Impl("uhashring-ketama", build_uhashring_ketama, pure_python=True)
PYLIBMC = Impl("pylibmc", build_pylibmc, lambda c: c.hash, index=True)
# pylibmc's ketama_weighted is exactly what our ketama mode reproduces
PYLIBMC_KETAMA = Impl("pylibmc", build_pylibmc, lambda c: c.hash, index=True,
                      spec="python-ketama")
JUMP = Impl("jump", build_jump, jump_lookup, index=True)
RENDEZVOUS = Impl("rendezvous", build_rendezvous, pure_python=True)

BY_NAME = {i.name: i for i in (NATIVE, PYTHON, NATIVE_KETAMA, PYTHON_KETAMA, UHASHRING,
                               UHASHRING_KETAMA, PYLIBMC, JUMP, RENDEZVOUS)}

GET_NODE = (NATIVE, PYTHON, UHASHRING, PYLIBMC, JUMP, RENDEZVOUS)
KETAMA = (NATIVE_KETAMA, PYTHON_KETAMA, PYLIBMC_KETAMA, UHASHRING_KETAMA)
GET_NODES = (
    Impl("native", build_native, lambda r: r.get_nodes, ours=True, spec="python"),
    Impl("python", build_python, lambda r: r.get_nodes, ours=True, spec="python",
         pure_python=True),
    Impl("uhashring", build_uhashring, uhashring_range, pure_python=True),
)
# bulk: ours have get_node_many; the peers are a list comprehension over their call
MANY = (NATIVE, PYTHON, UHASHRING, PYLIBMC, JUMP)
BUILD = (NATIVE, NATIVE_KETAMA, PYTHON, PYTHON_KETAMA, UHASHRING, PYLIBMC)
MUTATE = (NATIVE, PYTHON, UHASHRING)  # the ones with an add_node / remove_node API


def bulk_call(impl: Impl, ring: Any) -> Callable[[list[str]], list[Any]]:
    """list of keys -> list of results: ``get_node_many`` for ours, a loop for peers."""
    if impl.ours:
        return ring.get_node_many  # type: ignore[no-any-return]
    one = impl.lookup(ring)
    return lambda keys: [one(k) for k in keys]


def loop1(f: Callable[[str], Any], keys: Sequence[str]) -> Callable[[], Any]:
    """A round: call ``f(key)`` for every key; returns the last result."""

    def run() -> Any:
        r = None
        for k in keys:
            r = f(k)
        return r

    return run


def loop2(f: Callable[[str, int], Any], keys: Sequence[str], n: int) -> Callable[[], Any]:
    """A round: call ``f(key, n)`` for every key; returns the last result."""

    def run() -> Any:
        r = None
        for k in keys:
            r = f(k, n)
        return r

    return run


def node_of(impl: Impl, result: Any, nodes: Sequence[str]) -> str:
    """The node name a lookup result stands for (indexes are mapped to names)."""
    if impl.index:
        assert isinstance(result, int) and 0 <= result < len(nodes), result
        return nodes[result]
    assert result in nodes, result
    return str(result)


# --- hashes ------------------------------------------------------------------------

HASH_FUNCS = ("xxh3_64", "xxh64")
_XXHASH = {"xxh3_64": xxhash.xxh3_64_intdigest, "xxh64": xxhash.xxh64_intdigest}


def hash_call(impl: str, func: str) -> Callable[[Any], int]:
    """``native``, ``python`` (twin), ``xxhash`` (the package, on bytes) or
    ``xxhash-encode`` (the package on ``key.encode()``, i.e. given a str key)."""
    if impl == "native":
        return getattr(_hash, func)  # type: ignore[no-any-return]
    if impl == "python":
        return getattr(_hash_py, func)  # type: ignore[no-any-return]
    f = _XXHASH[func]
    if impl == "xxhash":
        return f
    if impl == "xxhash-encode":
        return lambda s: f(s.encode())
    raise ValueError(f"unknown hash implementation {impl!r}")


def expected_hash(func: str, data: str | bytes) -> int:
    raw = data.encode() if isinstance(data, str) else data
    return _XXHASH[func](raw)
