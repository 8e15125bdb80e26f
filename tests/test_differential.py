"""Native ring and its pure-Python twin agree bit for bit (hypothesis)."""

from __future__ import annotations

import pickle

from conftest import Impl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

names = st.text(min_size=1, max_size=12)  # hypothesis text() has no lone surrogates
node_sets = st.dictionaries(names, st.integers(1, 4), min_size=1, max_size=8)
keys = st.one_of(st.text(max_size=40), st.binary(max_size=40),
                 st.from_regex(r"\A[a-z]{0,3}\{[a-z]{0,3}\}[a-z{}]{0,4}\Z"))
key_lists = st.lists(keys, max_size=50)
modes = st.sampled_from(["xxh3", "ketama"])
vnodes = st.sampled_from([4, 8, 40, 160])
relaxed = settings(max_examples=150, deadline=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture])


@relaxed
@given(nodes=node_sets, mode=modes, vn=vnodes, tags=st.booleans(), ks=key_lists)
def test_same_placement(native: Impl, python_impl: Impl, nodes: dict[str, int], mode: str,
                        vn: int, tags: bool, ks: list[str | bytes]) -> None:
    a = native.ring.HashRing(nodes, vnodes=vn, mode=mode, hash_tags=tags)
    b = python_impl.ring.HashRing(nodes, vnodes=vn, mode=mode, hash_tags=tags)
    assert a.points() == b.points()
    assert a.num_points == b.num_points and a.nodes == b.nodes
    assert a.get_node_many(ks) == b.get_node_many(ks)
    assert a.group_by_node(ks) == b.group_by_node(ks)
    n = len({node for _, node in a.points()})  # ketama may leave a light node no point
    for key in ks[:10]:
        assert a.key_hash(key) == b.key_hash(key)
        assert a.get_nodes(key, n) == b.get_nodes(key, n)
        assert list(a.successors(key)) == list(b.successors(key))


@relaxed
@given(start=node_sets, ops=st.lists(st.tuples(st.booleans(), names, st.integers(1, 3)),
                                     max_size=8), mode=modes, ks=key_lists)
def test_same_after_mutations(native: Impl, python_impl: Impl, start: dict[str, int],
                              ops: list[tuple[bool, str, int]], mode: str,
                              ks: list[str | bytes]) -> None:
    a = native.ring.HashRing(start, vnodes=8, mode=mode)
    b = python_impl.ring.HashRing(start, vnodes=8, mode=mode)
    for add, name, weight in ops:
        if name in a:
            (a.set_weight if add else a.remove_node)(*((name, weight) if add else (name,)))
            (b.set_weight if add else b.remove_node)(*((name, weight) if add else (name,)))
        else:
            a.add_node(name, weight)
            b.add_node(name, weight)
        assert a.points() == b.points() and a.nodes == b.nodes and a.weights == b.weights
    if len(a):
        assert a.get_node_many(ks) == b.get_node_many(ks)


def test_pickles_cross_load(native: Impl, python_impl: Impl) -> None:
    a = native.ring.HashRing({"x": 1, "y": 2}, vnodes=12, hash_tags=True)
    b = python_impl.ring.HashRing({"x": 1, "y": 2}, vnodes=12, hash_tags=True)
    # a pickle names its class; each side restores as itself with identical placement
    assert pickle.loads(pickle.dumps(a)).points() == pickle.loads(pickle.dumps(b)).points()
