"""MerkleTree side by side: native, the pure-Python twin and, for the build, the audit-log
libraries pymerkle and merkletools.

Each case is parametrised over the implementations and sets ``benchmark.group``, so
pytest-benchmark prints one comparison table per case:

- build -> root from a list of ``(bytes, bytes)`` pairs (``b"user:%010d"``, 35 random
  bytes), depth 16, both inner rules; pymerkle ``InmemoryTree.append_entries`` and
  merkletools ``add_leaf`` + ``make_tree`` over ``key + value`` (sha256);
- ``update(key, old, new)``: a round of single calls in a Python ``for`` loop;
- ``update_many``: one call with a batch of triples (per key = round / batch);
- ``diff`` of two trees with 100 differing values, cold: ``gc.collect()`` and a read of
  a 64 MiB buffer before every round;
- ``to_bytes()`` / ``from_bytes()`` of the full tree.

Every case checks its answer: roots against the twin (the specification), diffs against
the leaves of the changed keys, bytes against the twin's. ``bench/compare_merkle.py``
times the same calls at N = 1M, interleaved, and prints the targets table.

Run from the repository root::

    python -m pytest -c bench/pytest.ini bench/bench_merkle.py --benchmark-disable  # smoke
    python -m pytest -c bench/pytest.ini bench/bench_merkle.py                      # timed
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from compare_merkle import (
    DIFFS,
    OURS,
    PEER_BUILD,
    changed_values,
    evict,
    evict_buffer,
    make_pairs,
    merkle_module,
    native_loaded,
    peer_entries,
    update_triples,
)

DEPTH = 16
INNERS = ("xor", "hash")


@dataclass(frozen=True)
class MerkleSizes:
    build_n: int  # pairs of the build cases
    tree_n: int  # pairs of the trees the other cases use
    update_calls: int  # update() calls per round
    batch: int  # triples per update_many call
    evict_bytes: int  # read before each cold diff
    slow_rounds: int  # builds of the twin and the peers
    fast_rounds: int  # native builds, cold diffs, from_bytes


@pytest.fixture(scope="session")
def msizes(smoke: bool) -> MerkleSizes:
    if smoke:
        return MerkleSizes(build_n=2_000, tree_n=5_000, update_calls=200, batch=500,
                           evict_bytes=1 << 20, slow_rounds=1, fast_rounds=1)
    return MerkleSizes(build_n=100_000, tree_n=1_000_000, update_calls=1_000, batch=10_000,
                       evict_bytes=64 << 20, slow_rounds=3, fast_rounds=20)


@pytest.fixture(scope="session")
def pairs(msizes: MerkleSizes) -> list[tuple[bytes, bytes]]:
    return make_pairs(max(msizes.build_n, msizes.tree_n))


TreeOf = Callable[[str, str], Any]


@pytest.fixture(scope="session")
def tree_of(pairs: list[tuple[bytes, bytes]], msizes: MerkleSizes) -> TreeOf:
    """``(impl, inner) -> `` the depth-16 tree of ``tree_n`` pairs, built once per
    session. Cases that change it restore it before they return."""
    cache: dict[tuple[str, str], Any] = {}

    def get(impl: str, inner: str) -> Any:
        if (impl, inner) not in cache:
            cls = merkle_module(impl).MerkleTree
            cache[impl, inner] = cls.build(pairs[:msizes.tree_n], DEPTH, inner=inner)
        return cache[impl, inner]

    return get


def _check_native(impl: str) -> None:
    if impl == "native":
        assert native_loaded(), "fastcore._merkle is not the compiled extension: build it"


def _spec_root(pairs: list[tuple[bytes, bytes]], inner: str) -> int:
    root: int = merkle_module("python").MerkleTree.build(pairs, DEPTH, inner=inner).root
    return root


BUILD_PARAMS = [pytest.param(i, inner, id=f"{i}-{inner}") for i in OURS for inner in INNERS] \
    + [pytest.param(p, "", id=p) for p in PEER_BUILD]


@pytest.mark.parametrize(("impl", "inner"), BUILD_PARAMS)
def test_build(benchmark: Any, impl: str, inner: str, pairs: list[tuple[bytes, bytes]],
               msizes: MerkleSizes) -> None:
    _check_native(impl)
    data = pairs[:msizes.build_n]
    benchmark.group = f"build -> root: {len(data):,} pairs, depth {DEPTH} (peers: sha256 log)"
    benchmark.extra_info["pairs"] = len(data)
    if impl in PEER_BUILD:
        entries = peer_entries(data)
        root = benchmark.pedantic(PEER_BUILD[impl], args=(entries,),
                                  rounds=msizes.slow_rounds, iterations=1)
        assert len(root) == (32 if impl == "pymerkle" else 64), (impl, root)
        return
    cls = merkle_module(impl).MerkleTree
    rounds = msizes.fast_rounds if impl == "native" else msizes.slow_rounds
    root = benchmark.pedantic(lambda: cls.build(data, DEPTH, inner=inner).root,
                              rounds=rounds, iterations=1)
    assert root == _spec_root(data, inner), (impl, inner)


OURS_PARAMS = [pytest.param(i, inner, id=f"{i}-{inner}") for i in OURS for inner in INNERS]


def _restore(tree: Any, root: int, again: Callable[[], Any]) -> None:
    """A round applied twice restores the tree: apply one more if the count was odd."""
    if tree.root != root:
        again()
    assert tree.root == root, "the updates did not cancel out"


@pytest.mark.parametrize(("impl", "inner"), OURS_PARAMS)
def test_update(benchmark: Any, impl: str, inner: str, pairs: list[tuple[bytes, bytes]],
                msizes: MerkleSizes, tree_of: TreeOf) -> None:
    _check_native(impl)
    tree = tree_of(impl, inner)
    root = tree.root
    triples = update_triples(pairs[:msizes.tree_n], msizes.update_calls)
    up = tree.update

    def run() -> None:
        for k, o, n in triples:
            up(k, o, n)

    benchmark.group = (f"update(key, old, new): {len(triples):,} calls/round, depth {DEPTH}, "
                       f"{msizes.tree_n:,} pairs")
    benchmark.extra_info["calls_per_round"] = len(triples)
    benchmark(run)
    _restore(tree, root, run)
    assert tree.root == tree_of("python" if impl == "native" else "native", inner).root


@pytest.mark.parametrize(("impl", "inner"), OURS_PARAMS)
def test_update_many(benchmark: Any, impl: str, inner: str, pairs: list[tuple[bytes, bytes]],
                     msizes: MerkleSizes, tree_of: TreeOf) -> None:
    _check_native(impl)
    tree = tree_of(impl, inner)
    root = tree.root
    batch = update_triples(pairs[:msizes.tree_n], msizes.batch, seed=5)
    benchmark.group = (f"update_many: {len(batch):,} triples/call, depth {DEPTH}, "
                       f"{msizes.tree_n:,} pairs")
    benchmark.extra_info["keys_per_call"] = len(batch)
    assert benchmark(tree.update_many, batch) == len(batch)
    _restore(tree, root, lambda: tree.update_many(batch))


@pytest.mark.parametrize("impl", OURS)
def test_diff_cold(benchmark: Any, impl: str, pairs: list[tuple[bytes, bytes]],
                   msizes: MerkleSizes, tree_of: TreeOf) -> None:
    _check_native(impl)
    a = tree_of(impl, "xor")
    b = a.copy()
    diffs = changed_values(pairs[:msizes.tree_n], DIFFS)
    b.update_many(diffs)
    buf = evict_buffer(msizes.evict_bytes)

    def cold() -> None:
        evict(buf)
        gc.collect()

    benchmark.group = (f"diff, cold: {msizes.tree_n:,} pairs, {DIFFS} values differ, depth "
                       f"{DEPTH}")
    d = benchmark.pedantic(a.diff, args=(b,), setup=cold, rounds=msizes.fast_rounds,
                           iterations=1)
    assert d.leaves == sorted({a.leaf_of(k) for k, _, _ in diffs})
    benchmark.extra_info["compared"] = d.compared
    benchmark.extra_info["exchange_bytes"] = 8 * d.compared


@pytest.mark.parametrize("impl", OURS)
def test_to_bytes(benchmark: Any, impl: str, tree_of: TreeOf) -> None:
    _check_native(impl)
    tree = tree_of(impl, "xor")
    benchmark.group = f"to_bytes(): full tree, depth {DEPTH} ({8 * (2 ** (DEPTH + 1) - 1):,} B)"
    data = benchmark(tree.to_bytes)
    assert len(data) == 32 + 8 * (2 ** (DEPTH + 1) - 1)
    assert data == tree_of("python", "xor").to_bytes()


@pytest.mark.parametrize("impl", OURS)
def test_from_bytes(benchmark: Any, impl: str, tree_of: TreeOf, msizes: MerkleSizes) -> None:
    _check_native(impl)
    cls = merkle_module(impl).MerkleTree
    spec = tree_of("python", "xor")
    data = spec.to_bytes()  # the twin's bytes: each loads what the other wrote
    benchmark.group = f"from_bytes(): full tree, depth {DEPTH} (every inner node checked)"
    rounds = msizes.fast_rounds if impl == "native" else msizes.slow_rounds
    tree = benchmark.pedantic(cls.from_bytes, args=(data,), rounds=rounds, iterations=1)
    assert tree.root == spec.root and tree.to_bytes() == data
