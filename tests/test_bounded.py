"""Consistent hashing with bounded loads."""

from __future__ import annotations

import math
import threading
from collections import Counter

import pytest
from conftest import Impl

from fastcore import ArgumentTypeError, BoundedLoadBalancer, InvalidArgumentError, pick_bounded


@pytest.mark.parametrize("eps", [0.05, 0.25, 1.0])
def test_no_node_exceeds_its_bound(impl: Impl, eps: float) -> None:
    ring = impl.ring.HashRing([f"n{i}" for i in range(7)], vnodes=40)
    balancer = BoundedLoadBalancer(ring, eps=eps)
    for i in range(5000):
        balancer.assign(f"session:{i}")
        if i % 97 == 0:
            loads = balancer.loads
            bound = math.ceil((1 + eps) * (i + 1) / 7)
            assert max(loads.values()) <= bound
    loads = balancer.loads
    assert sum(loads.values()) == 5000 == len(balancer)
    assert max(loads.values()) <= math.ceil((1 + eps) * 5000 / 7)
    # plain placement of the same keys is more skewed than a tight bound allows
    plain = Counter(ring.get_node_many(f"session:{i}" for i in range(5000)))
    if eps <= 0.25:
        assert max(plain.values()) > max(loads.values())


def test_weighted_bounds(impl: Impl) -> None:
    ring = impl.ring.HashRing({"big": 3, "small": 1}, vnodes=20)
    balancer = BoundedLoadBalancer(ring, eps=0.1)
    for i in range(4000):
        balancer.assign(i.to_bytes(4, "big"))
    loads = balancer.loads
    assert loads["big"] <= math.ceil(1.1 * 4000 * 3 / 4)
    assert loads["small"] <= math.ceil(1.1 * 4000 / 4)


def test_sticky_release_and_node_loss(impl: Impl) -> None:
    ring = impl.ring.HashRing(["a", "b", "c"])
    balancer = BoundedLoadBalancer(ring)
    node = balancer.assign("k")
    assert balancer.assign("k") == node and len(balancer) == 1
    assert balancer.node_of("k") == node
    assert balancer.release("k") == node and balancer.node_of("k") is None
    assert sum(balancer.loads.values()) == 0
    with pytest.raises(InvalidArgumentError, match="not assigned"):
        balancer.release("k")
    node = balancer.assign("k")
    ring.remove_node(node)
    moved = balancer.assign("k")
    assert moved != node and moved in ring and sum(balancer.loads.values()) == 1


def test_pick_bounded_is_stateless(impl: Impl) -> None:
    ring = impl.ring.HashRing(["a", "b", "c"])
    first = ring.get_node("key")
    assert pick_bounded(ring, "key", {}) == first
    # the natural owner is full: the next node clockwise takes the key
    assert pick_bounded(ring, "key", {first: 10, "ghost": 99}) == ring.get_nodes("key", 2)[1]
    with pytest.raises(InvalidArgumentError, match="eps"):
        pick_bounded(ring, "key", {}, eps=0)
    with pytest.raises(InvalidArgumentError, match=">= 0"):
        pick_bounded(ring, "key", {"a": -1})
    with pytest.raises(ArgumentTypeError):
        pick_bounded(ring, "key", {"a": 1.5})
    with pytest.raises(ArgumentTypeError):
        BoundedLoadBalancer(ring, eps="x")
    with pytest.raises(InvalidArgumentError):
        BoundedLoadBalancer(ring, eps=float("nan"))


def test_threads_share_a_balancer(impl: Impl) -> None:
    ring = impl.ring.HashRing([f"n{i}" for i in range(5)])
    balancer = BoundedLoadBalancer(ring, eps=0.2)

    def work(prefix: str) -> None:
        for i in range(1000):
            balancer.assign(f"{prefix}{i}")
        for i in range(0, 1000, 2):
            balancer.release(f"{prefix}{i}")

    threads = [threading.Thread(target=work, args=(p,)) for p in "wxyz"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    loads = balancer.loads
    assert sum(loads.values()) == 2000 == len(balancer)


def test_nodes_without_points_do_not_stall_assignment(impl: Impl) -> None:
    # ketama gives each light node 0 points here; only "a" can take keys
    weights = {"a:1": 5, **{f"t{i}:1": 1 for i in range(5)}}
    ring = impl.ring.HashRing(weights, mode="ketama", vnodes=4)
    balancer = BoundedLoadBalancer(ring, eps=0.25)
    assert {balancer.assign(f"k{i}") for i in range(50)} == {"a:1"}
