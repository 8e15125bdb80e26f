"""Merkle trees on both implementations and both inner rules, against independent oracles
(xxhash for the digests, Python ints for the leaf arithmetic, a dict-and-list tree for the
node layout), and native-vs-twin agreement (hypothesis)."""

from __future__ import annotations

import copy
import pickle
import random
import struct
from array import array
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pytest
import xxhash
from conftest import Impl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastcore
from fastcore import (
    ArgumentTypeError,
    CorruptTreeError,
    FastcoreError,
    InvalidArgumentError,
    KeyDiff,
    KeyRangeError,
    MerkleDiff,
    TreeMismatchError,
    compare_keys,
    diff_levels,
)
from fastcore._impl import PURE_PYTHON_REQUESTED

M64 = 1 << 64
INNERS = ("xor", "hash")
HEAD = struct.Struct("<4sBBBBQQQ")  # written out here, not imported: the layout is the spec
_h = xxhash.xxh3_64_intdigest

relaxed = settings(max_examples=100, deadline=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture])
differential = settings(max_examples=200, deadline=None,
                        suppress_health_check=[HealthCheck.function_scoped_fixture])


# --- oracles -------------------------------------------------------------------------------


def raw(x: Any) -> bytes:
    return x.encode("utf-8") if isinstance(x, str) else bytes(x)


def o_token(key: Any) -> int:
    return _h(raw(key))


def o_item(key: Any, value: Any) -> int:
    return _h(raw(value), seed=_h(raw(key)))


def o_leaf(token: int, depth: int, lo: int, hi: int) -> int:
    return ((token - lo) * 2**depth) // (hi - lo)


def o_start(i: int, depth: int, lo: int, hi: int) -> int:
    return lo + -(-(i * (hi - lo)) // 2**depth)  # lo + ceil(i * w / 2**depth)


def o_combine(inner: str, left: int, right: int) -> int:
    return left ^ right if inner == "xor" else _h(struct.pack("<QQ", left, right))


def o_levels(pairs: Iterable[tuple[Any, Any]], depth: int, lo: int = 0, hi: int = M64,
             inner: str = "xor") -> list[list[int]]:
    """Every level of the tree, root first, computed from the definition."""
    leaves = [0] * 2**depth
    for k, v in pairs:
        leaves[o_leaf(o_token(k), depth, lo, hi)] ^= o_item(k, v)
    levels = [leaves]
    while len(levels[0]) > 1:
        below = levels[0]
        levels.insert(0, [o_combine(inner, below[2 * j], below[2 * j + 1])
                          for j in range(len(below) // 2)])
    return levels


def o_ranges(leaves: Sequence[int], depth: int, lo: int, hi: int) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for i in leaves:
        if out and out[-1][1] == i:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return [(o_start(a, depth, lo, hi), o_start(b, depth, lo, hi)) for a, b in out]


# --- inputs --------------------------------------------------------------------------------


def make_pairs(n: int, seed: int = 0, start: int = 0) -> list[tuple[bytes, bytes]]:
    """``n`` pairs of the benchmark's shape: ``b"user:%010d"`` and 35 random bytes."""
    rnd = random.Random(seed)
    return [(b"user:%010d" % i, rnd.randbytes(35)) for i in range(start, start + n)]


def key_in_leaf(leaf: int, depth: int, lo: int = 0, hi: int = M64, avoid: Any = ()) -> bytes:
    for i in range(1_000_000):
        k = b"probe:%d" % i
        t = o_token(k)
        if lo <= t < hi and o_leaf(t, depth, lo, hi) == leaf and k not in avoid:
            return k
    raise AssertionError("no key found")  # pragma: no cover


def key_outside(lo: int, hi: int) -> bytes:
    return next(k for k in (b"out:%d" % i for i in range(10_000))
                if not lo <= o_token(k) < hi)


def tree_class(impl: Impl) -> Any:
    return impl.merkle.MerkleTree


def state(t: Any) -> tuple[Any, ...]:
    return (t.depth, t.lo, t.hi, t.inner, t.count, t.root, t.leaves())


# --- loading and errors --------------------------------------------------------------------


def test_native_merkle_loaded() -> None:
    """A native build is expected unless SHARDKIT_PURE_PYTHON=1: no silent fallback."""
    expected = "fastcore._merkle_py" if PURE_PYTHON_REQUESTED else "fastcore._merkle"
    assert fastcore.MerkleTree.__module__ == expected
    module = __import__(expected, fromlist=["item_digest"])
    assert fastcore.item_digest is module.item_digest
    assert fastcore.key_token is module.key_token


def test_error_hierarchy() -> None:
    assert issubclass(InvalidArgumentError, ValueError)
    assert issubclass(ArgumentTypeError, TypeError)
    for cls in (KeyRangeError, TreeMismatchError, CorruptTreeError):
        assert issubclass(cls, InvalidArgumentError) and issubclass(cls, ValueError)
    for cls in (InvalidArgumentError, ArgumentTypeError, KeyRangeError, TreeMismatchError,
                CorruptTreeError):
        assert issubclass(cls, FastcoreError)


def test_module_surface(impl: Impl) -> None:
    m = impl.merkle
    for name in ("MerkleTree", "item_digest", "key_token"):
        assert callable(getattr(m, name)), name
    t = m.MerkleTree()
    assert (t.depth, t.lo, t.hi, t.inner, t.count, len(t), t.root) == (16, 0, M64, "xor", 0, 0, 0)


# --- digests -------------------------------------------------------------------------------


ITEMS = [
    (b"user:0000000001", b"x" * 35),
    ("user:1", "value"),
    ("", ""),
    (b"", b""),
    ("\N{SNOWMAN}\N{PILE OF POO}", "\N{FACE WITH TEARS OF JOY}" * 3),
    ("é", b"\xff\x00"),
    (bytearray(b"abc"), memoryview(b"defgh")),
    (memoryview(b"key-in-a-view"), bytearray(b"")),
    (b"k", bytes(range(256)) * 4096),  # 1 MiB value
]


@pytest.mark.parametrize(("key", "value"), ITEMS, ids=range(len(ITEMS)))
def test_item_digest_matches_xxhash(impl: Impl, key: Any, value: Any) -> None:
    m = impl.merkle
    assert m.item_digest(key, value) == _h(raw(value), seed=_h(raw(key)))
    assert m.key_token(key) == _h(raw(key))


def test_str_is_hashed_as_utf8(impl: Impl) -> None:
    m = impl.merkle
    for s in ("", "a", "é", "\N{PILE OF POO}", "日本語" * 50):
        assert m.item_digest(s, s) == m.item_digest(s.encode(), s.encode())
        assert m.key_token(s) == m.key_token(s.encode())


def test_item_digest_is_unambiguous(impl: Impl) -> None:
    m = impl.merkle
    assert _h(b"ab" + b"c") == _h(b"a" + b"bc")  # what the concatenation rule cannot tell
    assert m.item_digest(b"ab", b"c") != m.item_digest(b"a", b"bc")
    assert m.item_digest(b"", b"abc") != m.item_digest(b"abc", b"")
    assert m.item_digest("ab", "c") != m.item_digest("a", "bc")


def test_buffer_kinds(impl: Impl) -> None:
    m = impl.merkle
    words = array("H", [1, 2, 3, 65535])
    assert m.item_digest(b"k", memoryview(words)) == o_item(b"k", words.tobytes())
    assert m.key_token(memoryview(words)) == _h(words.tobytes())
    view = memoryview(b"0123456789")[2:7]  # a slice: offset, not the object's start
    assert m.item_digest(view, view) == o_item(b"23456", b"23456")
    with pytest.raises(ArgumentTypeError, match="C-contiguous"):
        m.item_digest(memoryview(b"abcdef")[::2], b"v")
    with pytest.raises(ArgumentTypeError, match="C-contiguous"):
        m.item_digest(b"k", memoryview(b"abcdef")[::2])


def test_lone_surrogate_is_refused(impl: Impl) -> None:
    with pytest.raises(UnicodeEncodeError):
        impl.merkle.key_token("\ud800")
    with pytest.raises(UnicodeEncodeError):
        tree_class(impl)(4).add(b"k", "\udfff")


@pytest.mark.parametrize("bad", [1, 1.5, None, [b"k"], ("k",), object()])
def test_digest_argument_types(impl: Impl, bad: Any) -> None:
    m = impl.merkle
    with pytest.raises(ArgumentTypeError, match="key must be str or a bytes-like object"):
        m.key_token(bad)
    with pytest.raises(ArgumentTypeError, match="key must be str or a bytes-like object"):
        m.item_digest(bad, b"v")
    with pytest.raises(ArgumentTypeError, match="value must be str or a bytes-like object"):
        m.item_digest(b"k", bad)


# --- addressing ----------------------------------------------------------------------------


@st.composite
def shapes(draw: st.DrawFn, max_depth: int = 12) -> tuple[int, int, int]:
    depth = draw(st.integers(0, max_depth))
    kind = draw(st.sampled_from(["full", "low", "high", "any", "narrow"]))
    if kind == "full":
        return depth, 0, M64
    if kind == "narrow":  # exactly 2**depth tokens, or a few more
        lo = draw(st.integers(0, M64 - 2**depth - 3))
        return depth, lo, lo + 2**depth + draw(st.integers(0, 3))
    if kind == "low":
        return depth, 0, draw(st.integers(2**depth, M64 - 1))
    if kind == "high":
        return depth, draw(st.integers(1, M64 - 2**depth)), M64
    lo = draw(st.integers(0, M64 - 2**depth))
    return depth, lo, draw(st.integers(lo + 2**depth, M64))


@relaxed
@given(shape=shapes(), data=st.data())
def test_leaf_of_token_is_the_formula(impl: Impl, shape: tuple[int, int, int],
                                      data: st.DataObject) -> None:
    depth, lo, hi = shape
    t = tree_class(impl)(depth, lo, hi)
    tokens = [lo, hi - 1, *data.draw(st.lists(st.integers(lo, hi - 1), max_size=20))]
    for tok in tokens:
        leaf = t.leaf_of_token(tok)
        assert leaf == o_leaf(tok, depth, lo, hi), (tok, shape)
        start, end = t.leaf_range(leaf)
        assert start <= tok < end
    assert t.leaf_of_token(lo) == 0 and t.leaf_of_token(hi - 1) == 2**depth - 1
    for tok in [tok for tok in (lo - 1, hi) if 0 <= tok < M64]:
        with pytest.raises(KeyRangeError, match=f"token {tok} is outside"):
            t.leaf_of_token(tok)


@relaxed
@given(shape=shapes(), data=st.data())
def test_leaf_range_boundaries(impl: Impl, shape: tuple[int, int, int],
                               data: st.DataObject) -> None:
    depth, lo, hi = shape
    t = tree_class(impl)(depth, lo, hi)
    leaves = {0, 2**depth - 1, *data.draw(st.lists(st.integers(0, 2**depth - 1), max_size=10))}
    for i in sorted(leaves):
        start, end = t.leaf_range(i)
        assert (start, end) == (o_start(i, depth, lo, hi), o_start(i + 1, depth, lo, hi))
        assert start < end  # the range holds >= 2**depth tokens: no leaf is empty
        assert t.leaf_of_token(start) == i and t.leaf_of_token(end - 1) == i
        if i > 0:
            assert t.leaf_of_token(start - 1) == i - 1
            assert t.leaf_range(i - 1)[1] == start
        if i < 2**depth - 1:
            assert t.leaf_of_token(end) == i + 1
    assert t.leaf_range(0)[0] == lo and t.leaf_range(2**depth - 1)[1] == hi


def test_leaf_of_key(impl: Impl) -> None:
    T = tree_class(impl)
    keys = [b"user:%d" % i for i in range(300)] + [f"é{i}" for i in range(50)]
    for depth, lo, hi in ((0, 0, M64), (8, 0, M64), (12, 2**62, 3 * 2**62), (5, 1, M64 - 1)):
        t = T(depth, lo, hi)
        for k in keys:
            tok = o_token(k)
            if lo <= tok < hi:
                assert t.leaf_of(k) == o_leaf(tok, depth, lo, hi)
            else:
                with pytest.raises(KeyRangeError, match=f"token {tok} is outside the tree's "
                                   rf"range \[{lo}, {hi}\)"):
                    t.leaf_of(k)


def test_full_space_leaf_ranges(impl: Impl) -> None:
    t = tree_class(impl)(3)
    assert [t.leaf_range(i) for i in range(8)] == [(i * 2**61, (i + 1) * 2**61) for i in range(8)]
    assert t.leaf_of_token(M64 - 1) == 7 and t.leaf_of_token(2**61 - 1) == 0
    assert t.leaf_of_token(2**61) == 1


def test_keys_outside_the_range(impl: Impl) -> None:
    T = tree_class(impl)
    lo, hi = 2**63, 2**63 + 2**62
    out = key_outside(lo, hi)
    t = T(4, lo, hi)
    for call in (lambda: t.leaf_of(out), lambda: t.add(out, b"v"),
                 lambda: t.update(out, None, b"v"), lambda: t.remove(out, b"v"),
                 lambda: t.update_many([(out, None, b"v")]),
                 lambda: T.build([(out, b"v")], 4, lo, hi),
                 lambda: t.rebuild([(out, b"v")])):
        with pytest.raises(KeyRangeError, match="is outside the tree's range"):
            call()
    assert t.count == 0 and t.root == 0


def test_depth_zero(impl: Impl) -> None:
    T = tree_class(impl)
    pairs = make_pairs(20)
    for inner in INNERS:
        t = T.build(pairs, 0, inner=inner)
        x = 0
        for k, v in pairs:
            x ^= o_item(k, v)
        assert t.root == t.leaf(0) == t.node(1) == x and t.leaves() == [x] and t.level(0) == [x]
        assert t.leaf_range(0) == (0, M64) and t.nbytes == 16
        assert t.expand([]) == []
        with pytest.raises(InvalidArgumentError):
            t.expand([1])  # the root is a leaf: no inner node to expand
        u = t.copy()
        u.update(pairs[0][0], pairs[0][1], b"new")
        d = t.diff(u)
        assert d == MerkleDiff([0], [(0, M64)], 1)
        assert T.from_bytes(t.to_bytes()) == t == T.from_bytes(t.to_bytes(True))
        assert len(t.to_bytes()) == len(t.to_bytes(True)) == 32 + 8


def test_depth_limits(impl: Impl) -> None:
    T = tree_class(impl)
    with pytest.raises(InvalidArgumentError, match=r"depth must be in \[0, 24\], got 25"):
        T(25)
    with pytest.raises(InvalidArgumentError, match=r"depth must be in \[0, 24\], got -1"):
        T(-1)
    # 24 passes the depth check (the range check refuses it before 256 MiB is allocated)
    with pytest.raises(InvalidArgumentError, match=r"fewer than the 2\*\*24 leaves"):
        T(24, 0, 2**24 - 1)
    with pytest.raises(InvalidArgumentError, match=r"fewer than the 2\*\*20 leaves"):
        T(20, 5, 5 + 2**20 - 1)
    t = T(20, 5, 5 + 2**20)  # the narrowest range: one token per leaf
    assert t.leaf_range(7) == (12, 13) and t.leaf_of_token(5 + 2**20 - 1) == 2**20 - 1


def test_depth_20_tree(impl: Impl) -> None:
    """The deepest tree the suite builds (16 MiB of digests; 24 would be 256 MiB)."""
    T = tree_class(impl)
    pairs = make_pairs(200)
    t = T.build(pairs, 20)
    assert t.nbytes == 16 << 20 and len(t.to_bytes()) == 32 + 8 * (2**21 - 1)
    x = 0
    for k, v in pairs:
        leaf = o_leaf(o_token(k), 20, 0, M64)
        assert t.leaf_of(k) == leaf and t.leaf(leaf) == o_item(k, v)
        x ^= o_item(k, v)
    assert t.root == x
    u = t.copy()
    u.update(pairs[7][0], pairs[7][1], b"changed")
    d = t.diff(u)
    assert d.leaves == [t.leaf_of(pairs[7][0])] and d.compared == 2 * 20 + 1


# --- structure -----------------------------------------------------------------------------


@pytest.mark.parametrize("inner", INNERS)
def test_empty_tree(impl: Impl, inner: str) -> None:
    T = tree_class(impl)
    for depth in (0, 1, 5):
        t = T(depth, inner=inner)
        expected = o_levels([], depth, inner=inner)
        assert [t.level(k) for k in range(depth + 1)] == expected
        assert t.root == expected[0][0] and t.leaves() == [0] * 2**depth
        assert (t.count, len(t)) == (0, 0)
    assert T(0, inner=inner).root == 0
    if inner == "hash":
        assert T(1, inner="hash").root == _h(bytes(16))
        assert T(5, inner="hash").root != 0


@pytest.mark.parametrize("inner", INNERS)
@pytest.mark.parametrize(("depth", "lo", "hi"), [(6, 0, M64), (4, 2**62, 2**63 + 12345),
                                                 (9, 1, M64 - 1)])
def test_nodes_match_the_definition(impl: Impl, inner: str, depth: int, lo: int,
                                    hi: int) -> None:
    T = tree_class(impl)
    pairs = [p for p in make_pairs(600, seed=depth) if lo <= o_token(p[0]) < hi]
    assert len(pairs) > 50
    t = T.build(pairs, depth, lo, hi, inner=inner)
    levels = o_levels(pairs, depth, lo, hi, inner)
    assert [t.level(k) for k in range(depth + 1)] == levels
    assert t.leaves() == levels[-1] and t.root == levels[0][0]
    assert [t.leaf(i) for i in range(2**depth)] == levels[-1]
    flat = [x for level in levels for x in level]
    assert [t.node(n) for n in range(1, 2 ** (depth + 1))] == flat
    inner_ids = list(range(1, 2**depth))
    assert t.expand(inner_ids) == [(flat[2 * n - 1], flat[2 * n]) for n in inner_ids]
    assert (t.count, len(t), t.depth, t.lo, t.hi, t.inner) == (len(pairs), len(pairs), depth,
                                                               lo, hi, inner)
    assert t.nbytes == 8 * 2 ** (depth + 1)


@pytest.mark.parametrize("inner", INNERS)
def test_order_independence(impl: Impl, inner: str) -> None:
    T = tree_class(impl)
    pairs = make_pairs(1000)
    shuffled = pairs[:]
    random.Random(5).shuffle(shuffled)
    a = T.build(pairs, 8, inner=inner)
    b = T.build(iter(shuffled), 8, inner=inner)  # any iterable
    c = T(8, inner=inner)
    for k, v in reversed(pairs):
        c.add(k, v)
    d = T(8, inner=inner)
    assert d.update_many((k, None, v) for k, v in shuffled) == len(pairs)
    assert a.root == b.root == c.root == d.root
    assert a == b == c == d


@pytest.mark.parametrize("inner", INNERS)
def test_update_add_remove(impl: Impl, inner: str) -> None:
    T = tree_class(impl)
    pairs = make_pairs(300)
    t = T.build(pairs, 6, inner=inner)
    empty = T(6, inner=inner)
    k, v = pairs[10]
    t.update(k, v, b"new value")
    assert t.count == 300
    changed = [(kk, b"new value" if kk == k else vv) for kk, vv in pairs]
    assert t == T.build(changed, 6, inner=inner)
    assert t.leaf(t.leaf_of(k)) == o_levels(changed, 6, inner=inner)[-1][t.leaf_of(k)]
    t.update(k, b"new value", v)
    assert t == T.build(pairs, 6, inner=inner)
    t.remove(k, v)
    assert t.count == 299 and t == T.build(pairs[:10] + pairs[11:], 6, inner=inner)
    t.add(k, v)
    assert t.count == 300 and t == T.build(pairs, 6, inner=inner)
    before = state(t)
    t.update(k, None, None)  # absent before and after: nothing changes
    t.update(k, v, v)  # the same value: nothing changes
    assert state(t) == before
    for kk, vv in pairs:
        t.remove(kk, vv)
    assert t == empty and t.root == empty.root and t.count == 0
    s = T(6, inner=inner)
    s.add("ключ", "значение")
    s.update("ключ", "значение", "другое")
    assert s == T.build([("ключ".encode(), "другое".encode())], 6, inner=inner)


@pytest.mark.parametrize("inner", INNERS)
def test_update_many(impl: Impl, inner: str) -> None:
    T = tree_class(impl)
    pairs = make_pairs(400)
    rnd = random.Random(3)
    t = T.build(pairs, 7, inner=inner)
    one_by_one = t.copy()
    ops: list[tuple[Any, Any, Any]] = []
    for k, v in rnd.sample(pairs, 150):
        ops.append(rnd.choice([(k, v, rnd.randbytes(35)), (k, v, None)]))
    ops += [(b"new:%d" % i, None, b"x%d" % i) for i in range(40)]
    ops.append((ops[0][0], ops[0][2], b"twice"))  # the same key again within the batch
    for op in ops:
        one_by_one.update(*op)
    assert t.update_many(ops) == len(ops)
    assert t == one_by_one
    assert t.count == 400 - sum(1 for o in ops if o[2] is None) + 40
    assert t.update_many([]) == 0 and t == one_by_one


@pytest.mark.parametrize("inner", INNERS)
def test_update_many_is_all_or_none(impl: Impl, inner: str) -> None:
    T = tree_class(impl)
    pairs = make_pairs(50)
    t = T.build(pairs, 5, inner=inner)
    before = state(t)
    good = [(k, v, b"z") for k, v in pairs[:5]]
    bad_entries: list[tuple[Any, type[Exception], str]] = [
        ((b"k", None), ArgumentTypeError, "triple"),
        ([b"k", None, b"v"], ArgumentTypeError, "triple"),
        ((5, None, b"v"), ArgumentTypeError, "key must be"),
        ((b"k", 5, b"v"), ArgumentTypeError, "old value must be"),
        ((b"k", None, 5.0), ArgumentTypeError, "new value must be"),
    ]
    for entry, exc, match in bad_entries:
        with pytest.raises(exc, match=match):
            t.update_many([*good, entry, *good])
        assert state(t) == before
    # more removals than items: refused as a whole
    with pytest.raises(InvalidArgumentError, match="removing"):
        t.update_many([(k, v, None) for k, v in pairs] + [(b"extra", b"v", None)])
    assert state(t) == before
    narrow = T.build([], 5, 0, 2**63, inner=inner)
    out = key_outside(0, 2**63)
    inside = next(k for k in (b"in:%d" % i for i in range(1000)) if o_token(k) < 2**63)
    with pytest.raises(KeyRangeError):
        narrow.update_many([(inside, None, b"v"), (out, None, b"v")])
    assert narrow.count == 0 and narrow == T(5, 0, 2**63, inner=inner)


@pytest.mark.parametrize("inner", INNERS)
def test_revert_restores_the_root(impl: Impl, inner: str) -> None:
    T = tree_class(impl)
    pairs = make_pairs(500)
    t = T.build(pairs, 8, inner=inner)
    original = t.copy()
    rnd = random.Random(9)
    current = dict(pairs)
    done = []
    for _ in range(600):
        k = rnd.choice(list(current))
        new = rnd.choice([rnd.randbytes(rnd.randrange(0, 60)), None])
        t.update(k, current[k], new)
        done.append((k, current[k], new))
        if new is None:
            del current[k]
        else:
            current[k] = new
    assert t.root != original.root
    assert t == T.build(list(current.items()), 8, inner=inner)
    undo = [(k, new, old) for k, old, new in done]
    rnd.shuffle(undo)  # in any order: leaves are XORs, inner nodes follow from the leaves
    t.update_many(undo)
    assert t.root == original.root and t == original


@pytest.mark.parametrize("inner", INNERS)
def test_rebuild_reports_drift(impl: Impl, inner: str) -> None:
    T = tree_class(impl)
    pairs = make_pairs(400)
    t = T.build(pairs, 7, inner=inner)
    assert t.rebuild(pairs) == [] and t == T.build(pairs, 7, inner=inner)
    # behind its back: the tree is told of writes the data never saw, and misses one
    k1, v1 = pairs[3]
    k2, v2 = pairs[200]
    t.update(k1, v1, b"phantom")
    t.remove(k2, v2)
    t.add(b"ghost", b"boo")
    expected = sorted({t.leaf_of(k1), t.leaf_of(k2), t.leaf_of(b"ghost")})
    drifted = t.rebuild(iter(pairs))
    assert drifted == expected
    assert t == T.build(pairs, 7, inner=inner) and t.count == 400
    # drift that cancels within a leaf is invisible to it (the leaf digest is the same)
    t.update(k1, v1, b"x")
    t.update(k1, b"x", v1)
    assert t.rebuild(pairs) == []
    # a bad pair leaves the tree as it was
    before = state(t)
    with pytest.raises(ArgumentTypeError):
        t.rebuild([*pairs[:5], (b"k", 1)])
    assert state(t) == before


@pytest.mark.parametrize("inner", INNERS)
def test_clear(impl: Impl, inner: str) -> None:
    T = tree_class(impl)
    lo, hi = 2**62, M64 - 7
    t = T.build(_fits(make_pairs(100), lo, hi), 5, lo, hi, inner=inner)
    assert t.count > 0
    t.clear()
    empty = T(5, lo, hi, inner=inner)
    assert t == empty and t.count == 0 and t.root == empty.root and (t.lo, t.hi) == (lo, hi)


@pytest.mark.parametrize("inner", INNERS)
def test_merge_of_disjoint_halves(impl: Impl, inner: str) -> None:
    T = tree_class(impl)
    pairs = make_pairs(600)
    a = T.build(pairs[::2], 7, inner=inner)
    b = T.build(pairs[1::2], 7, inner=inner)
    a_before, b_before = state(a), state(b)
    m = a.merge(b)
    assert m == T.build(pairs, 7, inner=inner) and m.count == 600
    assert b.merge(a) == m
    assert state(a) == a_before and state(b) == b_before  # inputs untouched
    assert type(m) is T
    # an item in both cancels out (documented: merging is for disjoint data)
    both = a.merge(a)
    assert both.leaves() == [0] * 128 and both.root == T(7, inner=inner).root
    assert a.merge(T(7, inner=inner)) == a


def test_merge_and_diff_refuse_other_shapes(impl: Impl) -> None:
    T = tree_class(impl)
    t = T(5)
    others = [T(6), T(5, 1), T(5, 0, M64 - 1), T(5, inner="hash")]
    for other in others:
        with pytest.raises(TreeMismatchError, match="different shapes"):
            t.diff(other)
        with pytest.raises(TreeMismatchError, match="different shapes"):
            t.merge(other)
        with pytest.raises(TreeMismatchError):
            other.diff(t)
    for bad in (None, 5, b"tree", "tree"):
        with pytest.raises(ArgumentTypeError, match="MerkleTree"):
            t.diff(bad)
        with pytest.raises(ArgumentTypeError, match="MerkleTree"):
            t.merge(bad)


# --- diff ----------------------------------------------------------------------------------


def _changed(pairs: list[tuple[bytes, bytes]], n: int, seed: int) -> tuple[
        list[tuple[bytes, bytes]], list[bytes]]:
    rnd = random.Random(seed)
    idx = set(rnd.sample(range(len(pairs)), n))
    out = [(k, rnd.randbytes(35) if i in idx else v) for i, (k, v) in enumerate(pairs)]
    return out, [pairs[i][0] for i in sorted(idx)]


@pytest.mark.parametrize("inner", INNERS)
@pytest.mark.parametrize(("depth", "lo", "hi"), [(10, 0, M64), (8, 2**40, M64 - 2**40)])
def test_diff_finds_exactly_the_changed_leaves(impl: Impl, inner: str, depth: int, lo: int,
                                               hi: int) -> None:
    T = tree_class(impl)
    pairs = [p for p in make_pairs(3000) if lo <= o_token(p[0]) < hi]
    other, changed = _changed(pairs, 40, seed=depth)
    a = T.build(pairs, depth, lo, hi, inner=inner)
    b = T.build(other, depth, lo, hi, inner=inner)
    leaves = sorted({o_leaf(o_token(k), depth, lo, hi) for k in changed})
    d = a.diff(b)
    assert isinstance(d, MerkleDiff)
    assert d.leaves == leaves
    assert d.ranges == o_ranges(leaves, depth, lo, hi)
    assert b.diff(a) == d
    # only the subtrees that differ are walked
    paths = {(2**depth + i) >> s for i in leaves for s in range(depth + 1)}
    assert d.compared == 1 + 2 * len({p for p in paths if p < 2**depth})
    assert d.compared < 2 * len(leaves) * depth + 2
    assert a.diff(a.copy()) == MerkleDiff([], [], 1)


@pytest.mark.parametrize("inner", INNERS)
@pytest.mark.parametrize("depth", [0, 1, 4, 12])
def test_diff_of_one_key_compares_2d_plus_1(impl: Impl, inner: str, depth: int) -> None:
    T = tree_class(impl)
    pairs = make_pairs(300)
    a = T.build(pairs, depth, inner=inner)
    b = a.copy()
    b.update(pairs[42][0], pairs[42][1], b"other")
    d = a.diff(b)
    assert d.leaves == [a.leaf_of(pairs[42][0])]
    assert d.compared == 2 * depth + 1
    assert d.ranges == [a.leaf_range(d.leaves[0])]


def test_diff_coalesces_adjacent_leaves(impl: Impl) -> None:
    T = tree_class(impl)
    depth = 4
    a = T(depth)
    b = T(depth)
    picks = [2, 3, 4, 7, 9, 10, 15]
    for leaf in picks:
        b.add(key_in_leaf(leaf, depth), b"v")
    d = a.diff(b)
    assert d.leaves == picks
    r = a.leaf_range
    assert d.ranges == [(r(2)[0], r(4)[1]), (r(7)[0], r(7)[1]), (r(9)[0], r(10)[1]),
                        (r(15)[0], M64)]
    assert d.ranges[-1][1] == M64  # the end of the last leaf may be 2**64
    c = T(depth)
    for leaf in range(16):
        c.add(key_in_leaf(leaf, depth), b"v")
    assert a.diff(c).ranges == [(0, M64)] and a.diff(c).leaves == list(range(16))


@pytest.mark.parametrize("inner", INNERS)
def test_diff_levels_matches_diff(impl: Impl, inner: str) -> None:
    T = tree_class(impl)
    pairs = make_pairs(2000)
    other, _ = _changed(pairs, 25, seed=4)
    other.append((b"only-remote", b"1"))
    local = T.build(pairs, 9, inner=inner)
    remote = T.build(other, 9, inner=inner)
    calls: list[list[int]] = []

    def expand(ids: list[int]) -> list[tuple[int, int]]:
        calls.append(list(ids))
        return remote.expand(ids)

    got = diff_levels(local, remote.root, expand)
    want = local.diff(remote)
    assert got == want  # the same leaves, ranges and number of digests compared
    assert len(calls) == 9  # one round trip per level
    assert sum(len(c) for c in calls) * 2 + 1 == got.compared
    assert diff_levels(local, local.root, expand) == MerkleDiff([], [], 1)
    assert len(calls) == 9  # equal roots: no round trip
    with pytest.raises(InvalidArgumentError, match="expanded 1 nodes into 0 pairs"):
        diff_levels(local, remote.root, lambda ids: [])


@pytest.mark.parametrize("inner", INNERS)
def test_diff_then_compare_keys(impl: Impl, inner: str) -> None:
    """The whole exchange: tree diff, then per-leaf (key, digest) listings (Riak)."""
    m = impl.merkle
    T = m.MerkleTree
    pairs = make_pairs(3000)
    local_data = dict(pairs)
    remote_data = dict(pairs)
    rnd = random.Random(11)
    keys = list(local_data)
    changed, gone_remote, gone_local = keys[5:25], keys[100:105], keys[200:203]
    for k in changed:
        remote_data[k] = rnd.randbytes(35)
    for k in gone_remote:
        del remote_data[k]
    for k in gone_local:
        del local_data[k]
    local = T.build(local_data.items(), 10, inner=inner)
    remote = T.build(remote_data.items(), 10, inner=inner)
    d = local.diff(remote)
    leaves = set(d.leaves)

    def listing(data: dict[bytes, bytes]) -> dict[bytes, int]:
        return {k: m.item_digest(k, v) for k, v in data.items() if local.leaf_of(k) in leaves}

    kd = compare_keys(listing(local_data), listing(remote_data))
    assert isinstance(kd, KeyDiff)
    assert sorted(kd.different) == sorted(changed)
    assert sorted(kd.missing_remote) == sorted(gone_remote)
    assert sorted(kd.missing_local) == sorted(gone_local)


def test_compare_keys() -> None:
    local = {"a": 1, "b": 2, "c": 3, "d": 0}
    remote = [("b", 2), ("c", 4), ("e", 5), ("f", 0)]
    assert compare_keys(local, remote) == KeyDiff(["e", "f"], ["a", "d"], ["c"])
    assert compare_keys(remote, local) == KeyDiff(["a", "d"], ["e", "f"], ["c"])
    assert compare_keys({}, {}) == KeyDiff([], [], [])
    assert compare_keys(iter([(b"k", 1)]), {b"k": 1}) == KeyDiff([], [], [])
    assert compare_keys({"x": None}, {}) == KeyDiff([], ["x"], [])  # a None digest is a digest
    assert compare_keys({"x": 1}, {"x": None}) == KeyDiff([], [], ["x"])
    for bad in (5, "ab", b"ab", None):
        with pytest.raises(ArgumentTypeError, match="mapping or an iterable"):
            compare_keys(bad, {})  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError, match=r"remote must hold \(key, digest\) pairs"):
        compare_keys({}, [("k", 1, 2)])  # type: ignore[list-item]
    with pytest.raises(ArgumentTypeError, match=r"local must hold \(key, digest\) pairs"):
        compare_keys([5], {})  # type: ignore[list-item]


# --- bytes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("inner", INNERS)
@pytest.mark.parametrize(("depth", "lo", "hi"), [(0, 0, M64), (5, 0, M64), (10, 0, M64),
                                                 (8, 12345, M64), (6, 0, 2**63 + 1)])
def test_bytes_round_trip(impl: Impl, inner: str, depth: int, lo: int, hi: int) -> None:
    T = tree_class(impl)
    pairs = [p for p in make_pairs(800) if lo <= o_token(p[0]) < hi]
    t = T.build(pairs, depth, lo, hi, inner=inner)
    full = t.to_bytes()
    leaves = t.to_bytes(leaves_only=True)
    assert isinstance(full, bytes) and isinstance(leaves, bytes)
    assert len(full) == 32 + 8 * (2 ** (depth + 1) - 1)
    assert len(leaves) == 32 + 8 * 2**depth
    flags = (1 if inner == "hash" else 0)
    assert HEAD.unpack_from(full) == (b"SKMT", 1, depth, 1, flags, lo, hi - 1, len(pairs))
    assert HEAD.unpack_from(leaves) == (b"SKMT", 1, depth, 1, flags | 2, lo, hi - 1, len(pairs))
    nodes = [t.node(n) for n in range(1, 2 ** (depth + 1))]
    assert full[32:] == struct.pack(f"<{len(nodes)}Q", *nodes)
    assert leaves[32:] == struct.pack(f"<{2**depth}Q", *t.leaves())
    assert t.to_bytes(False) == full
    for data in (full, leaves, bytearray(full), memoryview(leaves), memoryview(b"xx" + full)[2:]):
        back = T.from_bytes(data)
        assert type(back) is T and back == t and state(back) == state(t)
    back = T.from_bytes(leaves)
    back.update(pairs[0][0], pairs[0][1], b"still a working tree") if pairs else None
    assert T.from_bytes(back.to_bytes()) == back


def _bytes_of(impl: Impl, inner: str = "xor", depth: int = 4) -> bytes:
    return bytes(tree_class(impl).build(make_pairs(100), depth, inner=inner).to_bytes())


def _with(data: bytes, **fields: int | bytes) -> bytes:
    names = ("magic", "version", "depth", "hash_id", "flags", "lo", "hi_last", "count")
    values = dict(zip(names, HEAD.unpack_from(data)))
    values.update(fields)
    return HEAD.pack(*values.values()) + data[32:]


def _flip(data: bytes, node: int, bit: int = 0) -> bytes:
    b = bytearray(data)
    b[32 + 8 * (node - 1) + bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


CORRUPT: list[tuple[str, Callable[[bytes], bytes], str]] = [
    ("empty", lambda d: b"", "truncated Merkle tree: 0 bytes, shorter than the 32-byte header"),
    ("short header", lambda d: d[:31], "31 bytes, shorter than the 32-byte header"),
    ("bad magic", lambda d: _with(d, magic=b"SKMX"), "not a shardkit Merkle tree: magic"),
    ("bad version", lambda d: _with(d, version=2), "unsupported Merkle tree format version 2"),
    ("version 0", lambda d: _with(d, version=0), "format version 0"),
    ("unknown hash id", lambda d: _with(d, hash_id=2), "unknown hash id 2"),
    ("hash id 0", lambda d: _with(d, hash_id=0), "unknown hash id 0"),
    ("unknown flags", lambda d: _with(d, flags=4), "unknown flags 0x04"),
    ("high flag", lambda d: _with(d, flags=0x81), "unknown flags 0x81"),
    ("depth 25", lambda d: _with(d, depth=25), "depth 25 is above the maximum 24"),
    ("depth 255", lambda d: _with(d, depth=255), "depth 255 is above the maximum 24"),
    ("lo above hi", lambda d: _with(d, lo=10, hi_last=5), r"bad range \[10, 6\)"),
    ("lo equals hi", lambda d: _with(d, lo=10, hi_last=9), r"bad range \[10, 10\)"),
    ("range too narrow", lambda d: _with(d, lo=0, hi_last=14), r"bad range \[0, 15\) for depth 4"),
    ("truncated body", lambda d: d[:-8], "truncated Merkle tree: 272 bytes, expected 280"),
    ("truncated by 1", lambda d: d[:-1], "truncated Merkle tree: 279 bytes"),
    ("header only", lambda d: d[:32], "truncated Merkle tree: 32 bytes"),
    ("trailing bytes", lambda d: d + b"\0" * 8, "trailing bytes after Merkle tree: 288 bytes"),
    ("trailing byte", lambda d: d + b"\0", "trailing bytes after"),
    ("full body flagged leaves-only", lambda d: _with(d, flags=d[8] | 2),
     r"expected 160 for depth 4 \(leaves only\)"),
    ("depth 24 header, small body", lambda d: _with(d, depth=24),
     f"truncated Merkle tree: 280 bytes, expected {32 + 8 * (2**25 - 1)} for depth 24"),
    ("flipped bit in the root", lambda d: _flip(d, 1, 5), "inner node 1 does not match"),
    ("flipped bit in an inner node", lambda d: _flip(d, 6, 63), "inner node 6 does not match"),
    ("flipped bit in a leaf", lambda d: _flip(d, 16 + 9, 17), r"inner node \d+ does not match"),
]


@pytest.mark.parametrize("inner", INNERS)
@pytest.mark.parametrize(("mutate", "message"), [c[1:] for c in CORRUPT],
                         ids=[c[0] for c in CORRUPT])
def test_corrupt_bytes(impl: Impl, inner: str, mutate: Callable[[bytes], bytes],
                       message: str) -> None:
    T = tree_class(impl)
    data = _bytes_of(impl, inner)
    assert len(data) == 280
    bad = mutate(data)
    for form in (bad, bytearray(bad), memoryview(bad)):
        with pytest.raises(CorruptTreeError, match=message):
            T.from_bytes(form)


def test_leaves_only_cannot_be_checked(impl: Impl) -> None:
    """A flipped bit in a leaves-only body is a different, valid tree: the receiver
    recomputes the inner nodes (that is what the root comparison is for)."""
    T = tree_class(impl)
    t = T.build(make_pairs(100), 4)
    back = T.from_bytes(_flip(t.to_bytes(True), 3))
    assert back.leaf(2) == t.leaf(2) ^ 1 and back.root == t.root ^ 1


@pytest.mark.parametrize("bad", ["SKMT", 5, None, [1, 2], array("Q", [1])],
                         ids=["str", "int", "None", "list", "array"])
def test_from_bytes_argument_type(impl: Impl, bad: Any) -> None:
    with pytest.raises(ArgumentTypeError, match="data must be bytes-like"):
        tree_class(impl).from_bytes(bad)


def test_to_bytes_argument_type(impl: Impl) -> None:
    t = tree_class(impl)(3)
    for bad in (1, "yes", None):
        with pytest.raises(ArgumentTypeError, match="leaves_only must be a bool"):
            t.to_bytes(bad)


# --- copies, pickles, equality -------------------------------------------------------------


@pytest.mark.parametrize("inner", INNERS)
def test_pickle_copy_equality(impl: Impl, inner: str) -> None:
    T = tree_class(impl)
    pairs = make_pairs(200)
    t = T.build(pairs, 6, inner=inner)
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(t, proto))
        assert type(back) is T and back == t and state(back) == state(t)
    narrow = T.build([], 3, 2**60, 2**61, inner=inner)
    assert state(pickle.loads(pickle.dumps(narrow))) == state(narrow)
    for c in (t.copy(), copy.copy(t), copy.deepcopy(t)):
        assert c == t and c is not t
        c.update(pairs[0][0], pairs[0][1], b"changed")
        assert c != t and t == T.build(pairs, 6, inner=inner)
    u = t.copy()
    t.add(b"only in t", b"1")
    assert u == T.build(pairs, 6, inner=inner) and u != t


def test_equality(impl: Impl) -> None:
    T = tree_class(impl)
    pairs = make_pairs(50)
    a = T.build(pairs, 5)
    assert a == T.build(pairs, 5)
    assert not a != T.build(pairs, 5)  # noqa: SIM202  (__ne__ too)
    assert a != T.build(pairs, 5, inner="hash")
    assert a != T.build(pairs, 6) and a != T.build(pairs, 5, 0, M64 - 1)
    assert a != T.build(pairs[1:], 5)
    # the same digests, another item count: not equal
    b = a.copy()
    b.add(b"k", b"v")
    b.add(b"k", b"v")
    assert b.root == a.root and b.leaves() == a.leaves() and b.count == a.count + 2
    assert a != b
    assert a != "tree" and a != None and a != a.to_bytes()  # noqa: E711
    with pytest.raises(TypeError):
        hash(a)


def test_repr(impl: Impl) -> None:
    t = tree_class(impl).build([(b"k", b"v")], 3, inner="hash")
    assert repr(t) == (f"MerkleTree(depth=3, lo=0, hi={M64}, inner='hash', count=1, "
                       f"root=0x{t.root:016x})")


# --- argument errors -----------------------------------------------------------------------


def _t(impl: Impl, *args: Any, **kw: Any) -> Any:
    return tree_class(impl)(*args, **kw)


BAD_CALLS: list[tuple[str, Callable[[Impl], Any], type[Exception], str]] = [
    ("depth -1", lambda i: _t(i, -1), InvalidArgumentError, r"depth must be in \[0, 24\]"),
    ("depth 25", lambda i: _t(i, 25), InvalidArgumentError, r"depth must be in \[0, 24\]"),
    ("depth float", lambda i: _t(i, 4.0), ArgumentTypeError, "depth must be an int, not float"),
    ("depth bool", lambda i: _t(i, True), ArgumentTypeError, "depth must be an int, not bool"),
    ("depth str", lambda i: _t(i, "4"), ArgumentTypeError, "depth must be an int, not str"),
    ("lo -1", lambda i: _t(i, 4, -1), InvalidArgumentError, r"lo must be in \[0, "),
    ("lo 2**64", lambda i: _t(i, 4, M64), InvalidArgumentError, r"lo must be in \[0, "),
    ("lo None", lambda i: _t(i, 4, None), ArgumentTypeError, "lo must be an int"),
    ("hi 0", lambda i: _t(i, 0, 0, 0), InvalidArgumentError, r"hi must be in \[1, "),
    ("hi 2**64+1", lambda i: _t(i, 4, 0, M64 + 1), InvalidArgumentError,
     r"hi must be in \[1, 18446744073709551616\], got 18446744073709551617"),
    ("hi float", lambda i: _t(i, 4, 0, 1e19), ArgumentTypeError, "hi must be an int"),
    ("lo == hi", lambda i: _t(i, 0, 5, 5), InvalidArgumentError, "lo must be below hi"),
    ("lo > hi", lambda i: _t(i, 0, 6, 5), InvalidArgumentError, "lo must be below hi"),
    ("range < leaves", lambda i: _t(i, 4, 0, 15), InvalidArgumentError,
     r"holds 15 tokens, fewer than the 2\*\*4 leaves"),
    ("inner sha", lambda i: _t(i, 4, inner="sha"), InvalidArgumentError,
     "inner must be 'xor' or 'hash', got 'sha'"),
    ("inner XOR", lambda i: _t(i, 4, inner="XOR"), InvalidArgumentError, "inner must be"),
    ("build int key", lambda i: tree_class(i).build([(1, b"v")], 4), ArgumentTypeError,
     "key must be str or a bytes-like object, not int"),
    ("build None value", lambda i: tree_class(i).build([(b"k", None)], 4), ArgumentTypeError,
     "value must be str or a bytes-like object, not NoneType"),
    ("build list value", lambda i: tree_class(i).build([(b"k", [1])], 4), ArgumentTypeError,
     "value must be str or a bytes-like object, not list"),
    ("build not a pair", lambda i: tree_class(i).build([b"kv"], 4), ArgumentTypeError,
     r"expected a \(key, value\) pair"),
    ("build triple", lambda i: tree_class(i).build([(b"k", b"v", b"w")], 4), ArgumentTypeError,
     r"expected a \(key, value\) pair"),
    ("build bad depth", lambda i: tree_class(i).build([], 30), InvalidArgumentError, "depth"),
    ("add None key", lambda i: _t(i, 4).add(None, b"v"), ArgumentTypeError,
     "key must be str or a bytes-like object, not NoneType"),
    ("add int key", lambda i: _t(i, 4).add(7, b"v"), ArgumentTypeError, "not int"),
    ("add list key", lambda i: _t(i, 4).add([b"k"], b"v"), ArgumentTypeError, "not list"),
    ("add None value", lambda i: _t(i, 4).add(b"k", None), ArgumentTypeError, "not NoneType"),
    ("add int value", lambda i: _t(i, 4).add(b"k", 1), ArgumentTypeError, "not int"),
    ("remove None value", lambda i: _t(i, 4).remove(b"k", None), ArgumentTypeError,
     "not NoneType"),
    ("update bad old", lambda i: _t(i, 4).update(b"k", 1, None), ArgumentTypeError,
     "old value must be str or a bytes-like object, not int"),
    ("update bad new", lambda i: _t(i, 4).update(b"k", None, [1]), ArgumentTypeError,
     "new value must be str or a bytes-like object, not list"),
    ("update bad key", lambda i: _t(i, 4).update(1.5, None, b"v"), ArgumentTypeError,
     "key must be"),
    ("remove from empty", lambda i: _t(i, 4).remove(b"k", b"v"), InvalidArgumentError,
     r"removing 1 item\(s\) from a tree of 0"),
    ("update to absent on empty", lambda i: _t(i, 4).update(b"k", b"v", None),
     InvalidArgumentError, "from a tree of 0"),
    ("update_many not a triple", lambda i: _t(i, 4).update_many([(b"k", b"v")]),
     ArgumentTypeError, r"expected a \(key, old_value, new_value\) triple"),
    ("leaf_of int", lambda i: _t(i, 4).leaf_of(5), ArgumentTypeError, "key must be"),
    ("leaf_of_token str", lambda i: _t(i, 4).leaf_of_token("5"), ArgumentTypeError,
     "token must be an int, not str"),
    ("leaf_of_token -1", lambda i: _t(i, 4).leaf_of_token(-1), InvalidArgumentError,
     r"token must be in \[0, 18446744073709551615\], got -1"),
    ("leaf_of_token 2**64", lambda i: _t(i, 4).leaf_of_token(M64), InvalidArgumentError,
     "token must be in"),
    ("leaf -1", lambda i: _t(i, 4).leaf(-1), InvalidArgumentError, r"leaf must be in \[0, 15\]"),
    ("leaf 16", lambda i: _t(i, 4).leaf(16), InvalidArgumentError, r"leaf must be in \[0, 15\]"),
    ("leaf_range 16", lambda i: _t(i, 4).leaf_range(16), InvalidArgumentError, "leaf must be"),
    ("leaf_range str", lambda i: _t(i, 4).leaf_range("1"), ArgumentTypeError, "leaf must be an"),
    ("node 0", lambda i: _t(i, 4).node(0), InvalidArgumentError, r"node must be in \[1, 31\]"),
    ("node 32", lambda i: _t(i, 4).node(32), InvalidArgumentError, r"node must be in \[1, 31\]"),
    ("level 5", lambda i: _t(i, 4).level(5), InvalidArgumentError, r"level must be in \[0, 4\]"),
    ("level -1", lambda i: _t(i, 4).level(-1), InvalidArgumentError, "level must be in"),
    ("expand a leaf", lambda i: _t(i, 4).expand([16]), InvalidArgumentError,
     r"node must be in \[1, 15\], got 16"),
    ("expand 0", lambda i: _t(i, 4).expand([1, 0]), InvalidArgumentError, "node must be in"),
    ("expand str", lambda i: _t(i, 4).expand(["1"]), ArgumentTypeError, "node must be an int"),
]


@pytest.mark.parametrize(("call", "exc", "message"), [c[1:] for c in BAD_CALLS],
                         ids=[c[0] for c in BAD_CALLS])
def test_argument_errors(impl: Impl, call: Callable[[Impl], Any], exc: type[Exception],
                         message: str) -> None:
    with pytest.raises(exc, match=message) as info:
        call(impl)
    assert isinstance(info.value, FastcoreError)


# --- big and unusual items -----------------------------------------------------------------


@pytest.mark.parametrize("inner", INNERS)
def test_big_unicode_and_empty_items(impl: Impl, inner: str) -> None:
    T = tree_class(impl)
    rnd = random.Random(1)
    items: list[tuple[Any, Any]] = [
        (b"big", rnd.randbytes(1 << 20)),
        (rnd.randbytes(1 << 20), b"big key"),
        ("\N{PILE OF POO}\N{SNOWMAN}", "\N{GRINNING FACE}" * 1000),
        ("ключ", "значение"),
        ("日本", "語"),
        (b"", b""),
        ("", "empty key"),
        ("empty value", ""),
        (b"\x00" * 7, b"\x00" * 9),
    ]
    t = T.build(items, 6, inner=inner)
    assert t.count == len(items)
    assert t.leaves() == o_levels(items, 6, inner=inner)[-1]
    as_bytes = [(raw(k), raw(v)) for k, v in items]
    assert t == T.build(as_bytes, 6, inner=inner)
    for k, v in items:
        t.remove(k, v)
    assert t == T(6, inner=inner)
    # the empty key and empty value are items like any other
    e = T(6, inner=inner)
    e.add(b"", b"")
    assert e.count == 1 and e.leaf(e.leaf_of(b"")) == o_item(b"", b"") != 0


# --- native and twin agree -----------------------------------------------------------------

anykey = st.one_of(st.binary(max_size=24), st.text(max_size=12))
anyvalue = st.one_of(st.binary(max_size=48), st.text(max_size=12))
pair_lists = st.lists(st.tuples(anykey, anyvalue), max_size=60)


@st.composite
def fitted_shapes(draw: st.DrawFn, pairs: list[tuple[Any, Any]],
                  max_depth: int = 9) -> tuple[int, int, int]:
    """A shape whose range holds some of the keys (or none, sometimes)."""
    depth = draw(st.integers(0, max_depth))
    if draw(st.booleans()) or not pairs:
        return draw(shapes(max_depth))
    toks = sorted(o_token(k) for k, _ in pairs)
    i = draw(st.integers(0, len(toks) - 1))
    j = draw(st.integers(i, len(toks) - 1))
    lo, hi = toks[i], toks[j] + 1
    if hi - lo < 2**depth:
        hi = min(M64, lo + 2**depth)
        lo = hi - 2**depth
    return depth, lo, hi


def _fits(pairs: list[tuple[Any, Any]], lo: int, hi: int) -> list[tuple[Any, Any]]:
    return [p for p in pairs if lo <= o_token(p[0]) < hi]


def _outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", call()
    except Exception as exc:  # the class and the message must be the same on both sides
        return type(exc).__name__, str(exc)


def _same_tree(a: Any, b: Any) -> None:
    assert (a.depth, a.lo, a.hi, a.inner, a.count, len(a), a.nbytes) == (
        b.depth, b.lo, b.hi, b.inner, b.count, len(b), b.nbytes)
    assert a.root == b.root and a.leaves() == b.leaves()
    assert [a.level(k) for k in range(a.depth + 1)] == [b.level(k) for k in range(b.depth + 1)]
    assert a.to_bytes() == b.to_bytes() and a.to_bytes(True) == b.to_bytes(True)
    assert repr(a) == repr(b)


@differential
@given(pairs=pair_lists, data=st.data(), inner=st.sampled_from(INNERS))
def test_same_trees(native: Impl, python_impl: Impl, pairs: list[tuple[Any, Any]],
                    data: st.DataObject, inner: str) -> None:
    depth, lo, hi = data.draw(fitted_shapes(pairs))
    fit = _fits(pairs, lo, hi)
    A, B = native.merkle.MerkleTree, python_impl.merkle.MerkleTree
    a, b = A.build(fit, depth, lo, hi, inner=inner), B.build(fit, depth, lo, hi, inner=inner)
    _same_tree(a, b)
    assert a.leaves() == o_levels(fit, depth, lo, hi, inner)[-1]
    for k, v in pairs[:10]:
        assert native.merkle.item_digest(k, v) == python_impl.merkle.item_digest(k, v)
        assert native.merkle.key_token(k) == python_impl.merkle.key_token(k)
        assert _outcome(lambda k=k: a.leaf_of(k)) == _outcome(lambda k=k: b.leaf_of(k))
    for i in {0, 2**depth - 1, 2**depth // 3}:
        assert a.leaf_range(i) == b.leaf_range(i)
    # the bytes of each load in the other, as the same tree
    for leaves_only in (False, True):
        _same_tree(A.from_bytes(b.to_bytes(leaves_only)), b)
        _same_tree(B.from_bytes(a.to_bytes(leaves_only)), a)
    assert pickle.loads(pickle.dumps(a)) == a and pickle.loads(pickle.dumps(b)) == b
    # out-of-range build: the same error
    if len(fit) < len(pairs):
        assert _outcome(lambda: A.build(pairs, depth, lo, hi, inner=inner)) == \
            _outcome(lambda: B.build(pairs, depth, lo, hi, inner=inner))


ops = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(0, 15), anyvalue),
    st.tuples(st.just("remove"), st.integers(0, 15), anyvalue),
    st.tuples(st.just("update"), st.integers(0, 15), st.none() | anyvalue,
              st.none() | anyvalue),
    st.tuples(st.just("many"), st.lists(st.tuples(st.integers(0, 15), st.none() | anyvalue,
                                                  st.none() | anyvalue), max_size=8)),
    st.tuples(st.just("rebuild"), st.lists(st.tuples(st.integers(0, 15), anyvalue),
                                           max_size=8)),
    st.tuples(st.just("clear")),
    st.tuples(st.just("bad"), st.sampled_from([1, None, 2.5, [b"x"]])),
), max_size=25)


def _apply(t: Any, op: tuple[Any, ...], keys: list[Any]) -> Any:
    kind = op[0]
    if kind == "add":
        return t.add(keys[op[1]], op[2])
    if kind == "remove":
        return t.remove(keys[op[1]], op[2])
    if kind == "update":
        return t.update(keys[op[1]], op[2], op[3])
    if kind == "many":
        return t.update_many([(keys[i], o, n) for i, o, n in op[1]])
    if kind == "rebuild":
        return t.rebuild([(keys[i], v) for i, v in op[1]])
    if kind == "clear":
        return t.clear()
    return t.add(op[1], b"v")


@differential
@given(keys=st.lists(anykey, min_size=16, max_size=16), data=st.data(), steps=ops,
       inner=st.sampled_from(INNERS))
def test_same_after_operations(native: Impl, python_impl: Impl, keys: list[Any],
                               data: st.DataObject, steps: list[tuple[Any, ...]],
                               inner: str) -> None:
    depth, lo, hi = data.draw(fitted_shapes([(k, b"") for k in keys], max_depth=6))
    a = native.merkle.MerkleTree(depth, lo, hi, inner=inner)
    b = python_impl.merkle.MerkleTree(depth, lo, hi, inner=inner)
    for op in steps:
        ra, rb = _outcome(lambda op=op: _apply(a, op, keys)), _outcome(
            lambda op=op: _apply(b, op, keys))
        assert ra == rb, op
        assert (a.root, a.count, a.leaves()) == (b.root, b.count, b.leaves()), op
    _same_tree(a, b)


@differential
@given(pairs=pair_lists, changes=st.lists(st.tuples(st.integers(0, 59), st.none() | anyvalue),
                                          max_size=12),
       extra=st.lists(st.tuples(anykey, anyvalue), max_size=5), depth=st.integers(0, 9),
       inner=st.sampled_from(INNERS))
def test_same_diffs(native: Impl, python_impl: Impl, pairs: list[tuple[Any, Any]],
                    changes: list[tuple[int, Any]], extra: list[tuple[Any, Any]], depth: int,
                    inner: str) -> None:
    other = dict(pairs)
    for i, v in changes:
        if i < len(pairs):
            if v is None:
                other.pop(pairs[i][0], None)
            else:
                other[pairs[i][0]] = v
    other_pairs = list(other.items()) + extra
    results = []
    for impl in (native, python_impl):
        T = impl.merkle.MerkleTree
        a = T.build(list(dict(pairs).items()), depth, inner=inner)
        b = T.build(other_pairs, depth, inner=inner)
        d = a.diff(b)
        assert diff_levels(a, b.root, b.expand) == d
        results.append((d, b.diff(a), a.merge(b).to_bytes()))
    assert results[0] == results[1]
    # level by level across implementations: native local, twin remote and back
    Na, Pb = (i.merkle.MerkleTree.build(p, depth, inner=inner) for i, p in
              ((native, list(dict(pairs).items())), (python_impl, other_pairs)))
    assert diff_levels(Na, Pb.root, Pb.expand) == results[0][0]
    assert diff_levels(Pb, Na.root, Na.expand) == results[0][1]


@pytest.mark.parametrize("inner", INNERS)
def test_same_errors(native: Impl, python_impl: Impl, inner: str) -> None:
    """Every bad call raises the same class with the same message on both sides."""
    for name, call, _, _ in BAD_CALLS:
        assert _outcome(lambda c=call: c(native)) == _outcome(lambda c=call: c(python_impl)), name
    extra: list[Callable[[Impl], Any]] = [
        lambda i: _t(i, 4, inner=None),
        lambda i: _t(i, 4, inner=1),
        lambda i: tree_class(i).build([[b"k", b"v"]], 4),
        lambda i: tree_class(i).build([(b"k",)], 4),
        lambda i: _t(i, 4).update_many([[b"k", None, b"v"]]),
        lambda i: _t(i, 4).to_bytes(1),
        lambda i: tree_class(i).from_bytes("x"),
        lambda i: _t(i, 4).diff(_t(i, 5)),
        lambda i: _t(i, 4).merge(_t(i, 4, inner="hash")),
        lambda i: _t(i, 4).diff(None),
        lambda i: i.merkle.key_token("\ud800"),
        lambda i: i.merkle.item_digest(b"k", memoryview(b"abcd")[::2]),
        lambda i: _t(i, 3, 0, 2**40).leaf_of(key_outside(0, 2**40)),
    ]
    for call in extra:
        assert _outcome(lambda c=call: c(native)) == _outcome(lambda c=call: c(python_impl))
    for name, mutate, _ in CORRUPT:
        bad = mutate(_bytes_of(python_impl, inner))
        assert _outcome(lambda b=bad: native.merkle.MerkleTree.from_bytes(b)) == _outcome(
            lambda b=bad: python_impl.merkle.MerkleTree.from_bytes(b)), name


def test_same_bytes_at_depth_16(native: Impl, python_impl: Impl) -> None:
    pairs = make_pairs(5000)
    for inner in INNERS:
        a = native.merkle.MerkleTree.build(pairs, 16, inner=inner)
        b = python_impl.merkle.MerkleTree.build(pairs, 16, inner=inner)
        assert a.root == b.root and a.to_bytes() == b.to_bytes()
        assert native.merkle.MerkleTree.from_bytes(b.to_bytes(True)) == a
