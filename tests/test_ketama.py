"""Ketama mode: placement identical to libmemcached's weighted ketama (pylibmc oracle)."""

from __future__ import annotations

import hashlib

import pylibmc
import pytest
from conftest import Impl

from fastcore import InvalidArgumentError

ORACLE_KEYS = [f"user:{i}" for i in range(100_000, 200_000)]


def pylibmc_owner(servers: list[str], weights: list[int] | None):
    """A function key -> server name computed by libmemcached (no traffic is sent)."""
    spec = [f"{s}:{w}" for s, w in zip(servers, weights)] if weights else list(servers)
    client = pylibmc.Client(spec)
    client.behaviors = {"ketama_weighted": True}
    return lambda key: servers[client.hash(key)]


@pytest.mark.slow
@pytest.mark.parametrize("count", [3, 7, 10, 25, 50, 100])
@pytest.mark.parametrize("port", [11211, 11212])
@pytest.mark.parametrize("weighted", [False, True], ids=["equal", "weighted"])
def test_zero_differences_vs_libmemcached(
    impl: Impl, count: int, port: int, weighted: bool
) -> None:
    servers = [f"127.0.0.{i}:{port}" for i in range(1, count + 1)]
    weights = [1 + (i * 7) % 5 for i in range(count)] if weighted else None
    oracle = pylibmc_owner(servers, weights)
    ring = impl.ring.HashRing(dict(zip(servers, weights or [1] * count)), mode="ketama")
    keys = ORACLE_KEYS if impl.name == "native" else ORACLE_KEYS[:20_000]
    ours = ring.get_node_many(keys)
    differing = [k for k, node in zip(keys, ours) if node != oracle(k)]
    assert differing == []


@pytest.mark.parametrize("count", [24, 25, 47, 50, 99, 100])
def test_float_point_counts(impl: Impl, count: int) -> None:
    ring = impl.ring.HashRing([f"10.0.0.{i}:11212" for i in range(count)], mode="ketama")
    expected = 156 if count in (25, 47, 50, 100) else 160
    assert ring.num_points == expected * count


def test_vectors_set_a_and_points(impl: Impl) -> None:
    servers = ["127.0.0.1:11212", "127.0.0.2:11212", "127.0.0.3:11212"]
    ring = impl.ring.HashRing(servers, mode="ketama")
    vectors = {
        "user:1": (282964413, "127.0.0.3:11212"),
        "user:2": (3264788475, "127.0.0.3:11212"),
        "user:42": (417323606, "127.0.0.3:11212"),
        "user:1000": (781738503, "127.0.0.3:11212"),
        "user:123456": (1274301664, "127.0.0.1:11212"),
        "session:abc": (226189362, "127.0.0.2:11212"),
        "foo": (3675831724, "127.0.0.2:11212"),
        "bar": (421377335, "127.0.0.1:11212"),
        "hello": (708854109, "127.0.0.3:11212"),
        "ketama": (930073806, "127.0.0.3:11212"),
    }
    for key, (h, server) in vectors.items():
        assert ring.key_hash(key) == h
        assert ring.get_node(key) == server
    first = {p for p, n in ring.points() if n == "127.0.0.1:11212"}
    assert {647876633, 3420366637, 96110928, 4175585575} <= first
    assert ring.num_points == 480


def test_vectors_set_b_port_11211_drops_the_port(impl: Impl) -> None:
    ring = impl.ring.HashRing([f"127.0.0.{i}:11211" for i in (1, 2, 3)], mode="ketama")
    expected = {"user:1": 3, "user:2": 1, "user:42": 2, "foo": 1, "hello": 1}
    for key, host in expected.items():
        assert ring.get_node(key) == f"127.0.0.{host}:11211"
    bare = impl.ring.HashRing([f"127.0.0.{i}" for i in (1, 2, 3)], mode="ketama")
    assert bare.points() == [(p, n.split(":")[0]) for p, n in ring.points()]


def test_vectors_set_c_weights(impl: Impl) -> None:
    servers = {"127.0.0.1:11212": 1, "127.0.0.2:11212": 2, "127.0.0.3:11212": 3}
    ring = impl.ring.HashRing(servers, mode="ketama")
    for key in ["user:1", "user:2", "user:42", "user:1000", "bar", "hello", "ketama"]:
        assert ring.get_node(key) == "127.0.0.3:11212"
    assert ring.get_node("user:123456") == "127.0.0.1:11212"
    assert ring.get_node("session:abc") == ring.get_node("foo") == "127.0.0.2:11212"


def test_vectors_set_d_156_points(impl: Impl) -> None:
    ring = impl.ring.HashRing([f"127.0.0.{i}:11212" for i in range(1, 26)], mode="ketama")
    expected = {"user:100002": 18, "user:100028": 5, "user:100090": 18,
                "user:100104": 19, "user:100107": 15}
    for key, host in expected.items():
        assert ring.get_node(key) == f"127.0.0.{host}:11212"


def test_ties_go_to_the_earlier_server(impl: Impl) -> None:
    # "h" and "h:11211" have the same point strings, so every point is a tie.
    ring = impl.ring.HashRing(["h", "h:11211"], mode="ketama", vnodes=8)
    assert set(ring.get_node_many(ORACLE_KEYS[:500])) == {"h"}
    flipped = impl.ring.HashRing(["h:11211", "h"], mode="ketama", vnodes=8)
    assert set(flipped.get_node_many(ORACLE_KEYS[:500])) == {"h:11211"}


def test_key_hash_is_md5_first_word(impl: Impl) -> None:
    ring = impl.ring.HashRing(["a:1"], mode="ketama")
    for key in ["", "é", "x" * 1000]:
        digest = hashlib.md5(key.encode()).digest()
        assert ring.key_hash(key) == int.from_bytes(digest[:4], "little")


def test_mutation_rebuilds_like_libmemcached(impl: Impl) -> None:
    servers = [f"127.0.0.{i}:11212" for i in range(1, 25)]
    ring = impl.ring.HashRing(servers, mode="ketama")
    ring.add_node("127.0.0.25:11212")
    oracle = pylibmc_owner([*servers, "127.0.0.25:11212"], None)
    keys = ORACLE_KEYS[:5000]
    assert ring.get_node_many(keys) == [oracle(k) for k in keys]
    ring.remove_node("127.0.0.7:11212")
    rest = [s for s in [*servers, "127.0.0.25:11212"] if s != "127.0.0.7:11212"]
    oracle = pylibmc_owner(rest, None)
    assert ring.get_node_many(keys) == [oracle(k) for k in keys]
    ring.set_weight("127.0.0.1:11212", 3)
    oracle = pylibmc_owner(rest, [3] + [1] * (len(rest) - 1))
    assert ring.get_node_many(keys) == [oracle(k) for k in keys]


def test_node_without_points(impl: Impl) -> None:
    # 4 points at equal weight: a node with 1/10 of the weight gets floor(0.4)*4 = 0
    ring = impl.ring.HashRing({"a:1": 9, "b:1": 9, "tiny:1": 1}, mode="ketama", vnodes=4)
    assert {n for _, n in ring.points()} == {"a:1", "b:1"}
    assert set(ring.get_node_many(ORACLE_KEYS[:300])) == {"a:1", "b:1"}
    assert len(ring.get_nodes("k", 2)) == 2
    assert sorted(ring.successors("k")) == ["a:1", "b:1"]
    with pytest.raises(InvalidArgumentError, match="got no ketama point"):
        ring.get_nodes("k", 3)
