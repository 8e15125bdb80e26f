"""HashRing on both implementations: placement, mutation, errors, concurrency."""

from __future__ import annotations

import bisect
import pickle
import statistics
import sys
import threading
from collections import Counter

import pytest
import xxhash
from conftest import Impl

import fastcore
from fastcore import (
    ArgumentTypeError,
    EmptyRingError,
    FastcoreError,
    InvalidArgumentError,
    UnknownNodeError,
)

NODES10 = [f"127.0.0.{i}:11211" for i in range(1, 11)]
KEYS = [f"user:{i}" for i in range(100_000, 120_000)]


def reference_xxh3(nodes: dict[str, int], vnodes: int, key: bytes) -> str:
    """Placement re-derived from the README's wording, independent of both impls."""
    pts = sorted(
        (xxhash.xxh3_64_intdigest(f"{n}#{i}".encode()), n.encode(), n)
        for n, w in nodes.items()
        for i in range(vnodes * w)
    )
    h = xxhash.xxh3_64_intdigest(key)
    i = bisect.bisect_left([p[0] for p in pts], h)
    return pts[i % len(pts)][2]


# --- placement ------------------------------------------------------------------------


def test_native_loaded() -> None:
    """A native build is expected unless SHARDKIT_PURE_PYTHON=1: no silent fallback."""
    from fastcore._impl import PURE_PYTHON_REQUESTED

    if PURE_PYTHON_REQUESTED:
        assert fastcore.NATIVE is False
        assert fastcore.HashRing.__module__ == "fastcore._ring_py"
    else:
        assert fastcore.NATIVE is True
        assert fastcore.HashRing.__module__ == "fastcore._ring"


def test_xxh3_placement_matches_the_documented_algorithm(impl: Impl) -> None:
    nodes = {"a": 1, "b": 2, "cache-3": 1, "ünï": 1}
    ring = impl.ring.HashRing(nodes, vnodes=20)
    for i in range(300):
        key = f"k{i}".encode()
        assert ring.get_node(key) == reference_xxh3(nodes, 20, key)


def test_str_hashes_as_utf8(impl: Impl) -> None:
    ring = impl.ring.HashRing(NODES10)
    for key in ["é", "日本語キー", "emoji🙂", "plain", ""]:
        assert ring.get_node(key) == ring.get_node(key.encode())
        assert ring.key_hash(key) == xxhash.xxh3_64_intdigest(key.encode())


def test_introspection(impl: Impl) -> None:
    ring = impl.ring.HashRing({"a": 1, "b": 3}, vnodes=10)
    assert ring.nodes == ("a", "b")
    assert ring.weights == {"a": 1, "b": 3}
    assert len(ring) == 2 and "a" in ring and "c" not in ring and 5 not in ring
    assert ring.num_points == 40
    assert ring.mode == "xxh3" and ring.vnodes == 10 and ring.hash_tags is False
    assert "2 nodes" in repr(ring) and "40 points" in repr(ring)
    pts = ring.points()
    assert len(pts) == 40 and [p for p, _ in pts] == sorted(p for p, _ in pts)
    assert Counter(n for _, n in pts) == {"a": 10, "b": 30}
    ring.weights["a"] = 99  # a copy
    assert ring.weights["a"] == 1


def test_weights_scale_ownership(impl: Impl) -> None:
    ring = impl.ring.HashRing({"light": 1, "heavy": 3})
    counts = Counter(ring.get_node_many(KEYS))
    assert 2.4 < counts["heavy"] / counts["light"] < 3.6


def test_balance_at_160_vnodes(impl: Impl) -> None:
    ring = impl.ring.HashRing(NODES10)
    counts = Counter(ring.get_node_many(f"key:{i}" for i in range(100_000)))
    values = [counts[n] for n in NODES10]
    assert statistics.pstdev(values) / statistics.fmean(values) <= 0.08


def test_get_nodes_preference_list(impl: Impl) -> None:
    ring = impl.ring.HashRing(NODES10)
    for key in KEYS[:500]:
        prefs = ring.get_nodes(key, 3)
        assert len(set(prefs)) == 3 and prefs[0] == ring.get_node(key)
        everything = ring.get_nodes(key, 10)
        assert sorted(everything) == sorted(NODES10) and everything[:3] == prefs
        assert list(ring.successors(key)) == everything
    big = impl.ring.HashRing([f"n{i}" for i in range(40)], vnodes=8)
    prefs = big.get_nodes("x", 40)  # > 16 uses the native bitmap path
    assert sorted(prefs) == sorted(big.nodes)
    assert prefs[:20] == big.get_nodes("x", 20)


def test_bulk_matches_single(impl: Impl) -> None:
    ring = impl.ring.HashRing(NODES10, hash_tags=True)
    keys: list[str | bytes] = [*KEYS[:3000], b"bytes-key", "{tag}a", "é"]
    expected = [ring.get_node(k) for k in keys]
    assert ring.get_node_many(keys) == expected
    assert ring.get_node_many(tuple(keys)) == expected
    assert ring.get_node_many(k for k in keys) == expected
    assert ring.get_node_many(keys[:10]) == expected[:10]  # below the no-GIL threshold
    assert ring.get_node_many([]) == []
    groups = ring.group_by_node(keys)
    assert sum(len(v) for v in groups.values()) == len(keys)
    for node, members in groups.items():
        assert all(ring.get_node(k) == node for k in members)
    assert groups[expected[0]][0] == keys[0]  # order kept within a node


def test_hash_tags(impl: Impl) -> None:
    ring = impl.ring.HashRing(NODES10, hash_tags=True)
    assert ring.key_hash("{user:42}:profile") == ring.key_hash("user:42")
    assert ring.get_node("{user:42}:profile") == ring.get_node("{user:42}:feed")
    assert ring.key_hash(b"x{a}y{b}") == ring.key_hash("a")  # first tag only
    assert ring.key_hash("{}x") == xxhash.xxh3_64_intdigest(b"{}x")  # empty tag: whole key
    assert ring.key_hash("{abc") == xxhash.xxh3_64_intdigest(b"{abc")  # unclosed
    assert ring.key_hash("a}b{c}") == ring.key_hash("c")
    assert ring.key_hash("{é}") == ring.key_hash("é")
    plain = impl.ring.HashRing(NODES10)
    assert plain.key_hash("{user:42}:profile") != plain.key_hash("user:42")
    tagged = [f"{{user:{i}}}:{field}" for i in range(200) for field in ("a", "b", "c")]
    for (_, members) in ring.group_by_node(tagged).items():
        for key in members:
            assert ring.get_node(key) == ring.get_node(key.split("}")[0] + "}")


# --- mutation -------------------------------------------------------------------------


def test_add_remove_move_only_the_minimum(impl: Impl) -> None:
    ring = impl.ring.HashRing(NODES10)
    before = ring.get_node_many(KEYS)
    ring.add_node("127.0.0.11:11211")
    after = ring.get_node_many(KEYS)
    moved = [(a, b) for a, b in zip(before, after) if a != b]
    assert moved and all(b == "127.0.0.11:11211" for _, b in moved)
    assert 0.06 < len(moved) / len(KEYS) < 0.12
    ring.remove_node("127.0.0.11:11211")
    assert ring.get_node_many(KEYS) == before
    ring.remove_node("127.0.0.3:11211")
    after = ring.get_node_many(KEYS)
    assert all(a == "127.0.0.3:11211" for a, b in zip(before, after) if a != b)
    assert all(b != "127.0.0.3:11211" for b in after)


def test_reweight_moves_keys_only_to_or_from_that_node(impl: Impl) -> None:
    ring = impl.ring.HashRing(NODES10)
    before = ring.get_node_many(KEYS)
    ring.set_weight("127.0.0.5:11211", 3)
    after = ring.get_node_many(KEYS)
    assert any(a != b for a, b in zip(before, after))
    assert all(b == "127.0.0.5:11211" for a, b in zip(before, after) if a != b)
    ring.set_weight("127.0.0.5:11211", 1)
    assert ring.get_node_many(KEYS) == before


def test_incremental_equals_fresh_build(impl: Impl) -> None:
    ring = impl.ring.HashRing(["a", "b"], vnodes=50)
    ring.add_node("c", 2)
    ring.add_node("d")
    ring.remove_node("a")
    fresh = impl.ring.HashRing({"b": 1, "c": 2, "d": 1}, vnodes=50)
    assert ring.points() == fresh.points()
    assert ring.nodes == ("b", "c", "d")
    ring.remove_node("b")
    ring.remove_node("c")
    ring.remove_node("d")
    assert len(ring) == 0 and ring.num_points == 0
    with pytest.raises(EmptyRingError):
        ring.get_node("x")
    ring.add_node("z")
    assert ring.get_node("x") == "z"


def test_pickle_roundtrip(impl: Impl) -> None:
    ring = impl.ring.HashRing({"a": 2, "b": 1}, vnodes=40, mode="ketama", hash_tags=True)
    clone = pickle.loads(pickle.dumps(ring))
    assert type(clone) is type(ring)
    assert clone.points() == ring.points() and clone.hash_tags and clone.mode == "ketama"


# --- errors ---------------------------------------------------------------------------


def test_errors(impl: Impl) -> None:
    HashRing = impl.ring.HashRing
    empty = HashRing()
    with pytest.raises(EmptyRingError, match="no nodes"):
        empty.get_node("k")
    with pytest.raises(EmptyRingError):
        empty.get_nodes("k", 1)
    with pytest.raises(EmptyRingError):
        empty.get_node_many(["k"])
    assert empty.get_node_many([]) == []
    with pytest.raises(InvalidArgumentError, match="duplicate node name 'a'"):
        HashRing(["a", "a"])
    with pytest.raises(InvalidArgumentError, match="must not be empty"):
        HashRing([""])
    with pytest.raises(ArgumentTypeError, match="node name must be str, not int"):
        HashRing([1])
    with pytest.raises(ArgumentTypeError, match="not a single str"):
        HashRing("abc")
    with pytest.raises(ArgumentTypeError):
        HashRing(5)
    with pytest.raises(InvalidArgumentError, match="lone surrogate"):
        HashRing(["\ud800"])
    bad_weight = r"weight of node 'a' must be in \[1, 65536\], got 0"
    with pytest.raises(InvalidArgumentError, match=bad_weight):
        HashRing({"a": 0})
    with pytest.raises(ArgumentTypeError, match="must be an int, not float"):
        HashRing({"a": 1.5})
    with pytest.raises(ArgumentTypeError):
        HashRing({"a": True})
    with pytest.raises(InvalidArgumentError, match="vnodes must be in"):
        HashRing(["a"], vnodes=0)
    with pytest.raises(InvalidArgumentError, match="vnodes must be in"):
        HashRing(["a"], vnodes=10**9)
    with pytest.raises(InvalidArgumentError, match="multiple of 4"):
        HashRing(["a"], vnodes=10, mode="ketama")
    with pytest.raises(InvalidArgumentError, match="at most"):
        HashRing({"a": 65536, "b": 65536}, vnodes=1000)
    with pytest.raises(InvalidArgumentError, match="mode must be one of"):
        HashRing(["a"], mode="md5")
    with pytest.raises(ArgumentTypeError, match="hash_tags must be a bool"):
        HashRing(["a"], hash_tags=1)
    ring = HashRing(["a", "b", "c"])
    for bad in (1, None, 1.5, ["k"], bytearray(b"k"), memoryview(b"k")):
        with pytest.raises(ArgumentTypeError, match="key must be str or bytes"):
            ring.get_node(bad)
    with pytest.raises(ArgumentTypeError):
        ring.get_node_many(["ok", 5])
    with pytest.raises(ArgumentTypeError, match="not a single str"):
        ring.get_node_many("abc")
    with pytest.raises(ArgumentTypeError, match="iterable"):
        ring.group_by_node(7)
    with pytest.raises(UnicodeEncodeError):
        ring.get_node("\udcff")
    with pytest.raises(InvalidArgumentError, match="n=4 exceeds the 3 nodes"):
        ring.get_nodes("k", 4)
    with pytest.raises(InvalidArgumentError, match="n must be in"):
        ring.get_nodes("k", 0)
    with pytest.raises(ArgumentTypeError):
        ring.get_nodes("k", "2")
    with pytest.raises(UnknownNodeError, match="node 'zz' is not on the ring") as info:
        ring.remove_node("zz")
    assert str(info.value) == "node 'zz' is not on the ring"
    with pytest.raises(UnknownNodeError):
        ring.set_weight("zz", 2)
    with pytest.raises(InvalidArgumentError, match="duplicate"):
        ring.add_node("a")
    with pytest.raises(InvalidArgumentError):
        ring.add_node("d", 0)
    assert ring.nodes == ("a", "b", "c")  # failed mutations leave the ring as it was
    for cls in (ArgumentTypeError, EmptyRingError, InvalidArgumentError, UnknownNodeError):
        assert issubclass(cls, FastcoreError)
    assert issubclass(ArgumentTypeError, TypeError)
    assert issubclass(InvalidArgumentError, ValueError)
    assert issubclass(EmptyRingError, LookupError)
    assert issubclass(UnknownNodeError, KeyError)


def test_huge_and_odd_keys(impl: Impl) -> None:
    ring = impl.ring.HashRing(NODES10)
    huge = "x" * 5_000_000
    assert ring.get_node(huge) == ring.get_node(huge.encode()) == reference_xxh3(
        dict.fromkeys(NODES10, 1), 160, huge.encode()
    )
    assert ring.get_node("") in NODES10
    assert ring.get_node(b"\x00\xff" * 10) in NODES10
    # no truncation at NUL bytes:
    assert ring.key_hash("a\x00b") == xxhash.xxh3_64_intdigest(b"a\x00b")


# --- concurrency ----------------------------------------------------------------------


def test_lookups_while_nodes_change(impl: Impl) -> None:
    ring = impl.ring.HashRing(["base-0", "base-1", "base-2"], vnodes=64)
    allowed = {"base-0", "base-1", "base-2"} | {f"extra-{i}" for i in range(20)}
    errors: list[BaseException] = []
    stop = threading.Event()
    keys = [f"k{i}" for i in range(2000)]
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)

    def reader() -> None:
        try:
            while not stop.is_set():
                for node in ring.get_node_many(keys):
                    assert node in allowed
                assert ring.get_node("k1") in allowed
                prefs = ring.get_nodes("k2", 3)
                assert len(set(prefs)) == 3
        except BaseException as exc:  # reported below
            errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for t in readers:
        t.start()
    try:
        for round_ in range(30):
            name = f"extra-{round_ % 20}"
            if name in ring:
                ring.remove_node(name)
            else:
                ring.add_node(name, 1 + round_ % 3)
    finally:
        stop.set()
        for t in readers:
            t.join()
        sys.setswitchinterval(old)
    assert not errors, errors[0]


def test_concurrent_writers_keep_every_node(impl: Impl) -> None:
    ring = impl.ring.HashRing(vnodes=8)

    def add(prefix: str) -> None:
        for i in range(50):
            ring.add_node(f"{prefix}-{i}")

    threads = [threading.Thread(target=add, args=(p,)) for p in "abcd"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ring) == 200 and ring.num_points == 1600
    assert ring.points() == impl.ring.HashRing(sorted(ring.nodes), vnodes=8).points()
