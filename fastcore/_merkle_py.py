"""Merkle trees for anti-entropy: pure-Python twin and specification of ``_merkle.pyx``.

A :class:`MerkleTree` covers the key-hash range ``[lo, hi)`` (so that one tree can cover
one vnode range of a :class:`~fastcore.HashRing`) with ``2**depth`` leaves, each a
contiguous sub-range. A key's token is ``xxh3_64(key)`` (the ring's key hash in
``xxh3`` mode, without hash tags); its leaf is ``((token - lo) * 2**depth) // (hi -
lo)``, arithmetic rather than a search. Leaf ``i`` covers ``[lo + ceil(i * w /
2**depth), lo + ceil((i + 1) * w / 2**depth))`` with ``w = hi - lo``.

Digests are 64-bit:

- item: ``xxh3_64(value, seed=xxh3_64(key))``: unambiguous for (key, value) pairs, with
  no concatenation (``b"ab" + b"c"`` and ``b"a" + b"bc"`` differ);
- leaf: the XOR of its items' digests, so an insert, update or delete is a XOR of
  ``digest(old) ^ digest(new)`` along one path, O(depth), in any order;
- inner node: ``left ^ right`` (``inner="xor"``, the default: an update is ``depth + 1``
  XORs and trees over disjoint data merge by XOR) or ``xxh3_64(le64(left) ||
  le64(right))`` (``inner="hash"``: proper mixing; an update rehashes its path).

XOR combining is for replicas that trust each other: anyone who can choose keys and
values can make differences cancel out. It detects accidental divergence, not an
adversary (Cassandra's trees carry the same warning).

Nodes are stored heap-ordered in one array of ``2**(depth + 1)`` uint64 words: node 1
is the root, node ``n`` has children ``2n`` and ``2n + 1``, and leaf ``i`` is node
``2**depth + i`` (word 0 is unused). The node ids of :meth:`MerkleTree.level`,
:meth:`MerkleTree.expand` and :meth:`MerkleTree.node` are these indexes.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterable, Sequence
from typing import Any, cast

import xxhash

from ._errors import (
    ArgumentTypeError,
    CorruptTreeError,
    InvalidArgumentError,
    KeyRangeError,
    TreeMismatchError,
    check_int,
)
from ._merkle_common import (
    FLAG_INNER_HASH,
    FLAG_LEAVES_ONLY,
    HASH_XXH3_64,
    HEADER,
    MAGIC,
    VERSION,
    MerkleDiff,
    check_shape,
    parse_header,
)

__all__ = ("MerkleTree", "item_digest", "key_token")

_M64 = (1 << 64) - 1
_PAIR = struct.Struct("<QQ")
_h = xxhash.xxh3_64_intdigest
_BIG_ENDIAN = sys.byteorder == "big"


def _data(obj: object, what: str) -> Any:
    """What is hashed for a key or value: str as UTF-8, or a bytes-like object."""
    if isinstance(obj, bytes):
        return obj
    if isinstance(obj, str):
        return str.encode(obj, "utf-8")
    try:
        view = memoryview(cast(bytes, obj))
    except TypeError:
        raise ArgumentTypeError(
            f"{what} must be str or a bytes-like object, not {type(obj).__name__}") from None
    if not view.c_contiguous:
        raise ArgumentTypeError(f"{what} must be a C-contiguous buffer")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def key_token(key: str | bytes) -> int:
    """The token of ``key`` on the hash ring: ``xxh3_64(key)``."""
    return _h(_data(key, "key"))


def item_digest(key: str | bytes, value: str | bytes) -> int:
    """The digest of one (key, value) item: ``xxh3_64(value, seed=xxh3_64(key))``."""
    return _h(_data(value, "value"), _h(_data(key, "key")))


def _inner(left: int, right: int) -> int:
    return _h(_PAIR.pack(left, right))


class MerkleTree:
    """A Merkle tree over the key-hash range ``[lo, hi)`` with ``2**depth`` leaves.

    Args:
        depth: leaves = ``2**depth``, depth in ``[0, 24]``.
        lo: first token covered, in ``[0, 2**64)``.
        hi: one past the last token covered, in ``(lo, 2**64]``; the range must hold
            at least ``2**depth`` tokens.
        inner: ``"xor"`` (default) or ``"hash"``: how inner nodes combine children.

    Raises:
        ArgumentTypeError, InvalidArgumentError: a bad argument.

    Not thread safe: guard a tree shared by threads that write it.
    """

    __slots__ = ("_count", "_depth", "_hash", "_hi", "_lo", "_nodes", "_width")

    def __init__(self, depth: int = 16, lo: int = 0, hi: int = 1 << 64, *,
                 inner: str = "xor") -> None:
        self._depth, self._lo, self._hi, self._hash = check_shape(depth, lo, hi, inner)
        self._width = self._hi - self._lo
        self._count = 0
        self._nodes = array("Q", bytes(16 << self._depth))
        if self._hash:
            self._fill_empty()

    # --- construction ----------------------------------------------------------------------

    @classmethod
    def build(cls, pairs: Iterable[tuple[Any, Any]], depth: int = 16, lo: int = 0,
              hi: int = 1 << 64, *, inner: str = "xor") -> MerkleTree:
        """A tree over the ``(key, value)`` pairs (order does not matter).

        Raises:
            KeyRangeError: a key's token is outside ``[lo, hi)``.
            ArgumentTypeError, InvalidArgumentError: as the constructor, or a bad pair.
        """
        tree = cls(depth, lo, hi, inner=inner)
        tree._add_leaves(pairs)
        tree._sweep()
        return tree

    def _fill_empty(self) -> None:
        nodes, depth = self._nodes, self._depth
        digest = 0
        for level in range(depth, -1, -1):
            for i in range(1 << level, 2 << level):
                nodes[i] = digest
            digest = _inner(digest, digest)

    def _add_leaves(self, pairs: Iterable[tuple[Any, Any]]) -> None:
        nodes, base, added = self._nodes, 1 << self._depth, 0
        for pair in pairs:
            key, value = self._pair(pair)
            seed = _h(key)
            nodes[base + self._leaf_of_token(seed)] ^= _h(value, seed)
            added += 1
        self._count += added

    @staticmethod
    def _pair(pair: object) -> tuple[Any, Any]:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise ArgumentTypeError(f"expected a (key, value) pair, got {pair!r:.80}")
        return _data(pair[0], "key"), _data(pair[1], "value")

    def _sweep(self) -> None:
        nodes = self._nodes
        if self._hash:
            for i in range((1 << self._depth) - 1, 0, -1):
                nodes[i] = _inner(nodes[2 * i], nodes[2 * i + 1])
        else:
            for i in range((1 << self._depth) - 1, 0, -1):
                nodes[i] = nodes[2 * i] ^ nodes[2 * i + 1]

    # --- addressing ------------------------------------------------------------------------

    def _leaf_of_token(self, token: int) -> int:
        off = token - self._lo
        if not 0 <= off < self._width:
            raise KeyRangeError(
                f"token {token} is outside the tree's range [{self._lo}, {self._hi})")
        return (off << self._depth) // self._width

    def leaf_of(self, key: str | bytes) -> int:
        """The leaf that holds ``key``.

        Raises:
            KeyRangeError: the key's token is outside ``[lo, hi)``.
        """
        return self._leaf_of_token(_h(_data(key, "key")))

    def leaf_of_token(self, token: int) -> int:
        """The leaf that holds ``token``.

        Raises:
            KeyRangeError: ``token`` is outside ``[lo, hi)``.
        """
        check_int(token, "token", 0, _M64)
        return self._leaf_of_token(token)

    def _start(self, i: int) -> int:
        return self._lo + ((i * self._width + (1 << self._depth) - 1) >> self._depth)

    def leaf_range(self, i: int) -> tuple[int, int]:
        """The half-open token range ``(start, end)`` of leaf ``i``."""
        check_int(i, "leaf", 0, (1 << self._depth) - 1)
        return self._start(i), self._start(i + 1)

    def _ranges_of(self, leaves: list[int]) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        prev = -2
        for i in leaves:
            if i == prev + 1:
                out[-1] = (out[-1][0], self._start(i + 1))
            else:
                out.append((self._start(i), self._start(i + 1)))
            prev = i
        return out

    # --- reading ---------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """log2 of the number of leaves."""
        return self._depth

    @property
    def lo(self) -> int:
        """First token covered."""
        return self._lo

    @property
    def hi(self) -> int:
        """One past the last token covered."""
        return self._hi

    @property
    def inner(self) -> str:
        """``"xor"`` or ``"hash"``."""
        return "hash" if self._hash else "xor"

    @property
    def count(self) -> int:
        """Items added minus items removed."""
        return self._count

    @property
    def root(self) -> int:
        """The root digest."""
        return self._nodes[1]

    @property
    def nbytes(self) -> int:
        """Bytes of digests held (``8 * 2**(depth + 1)``)."""
        return 16 << self._depth

    def __len__(self) -> int:
        return self._count

    def leaf(self, i: int) -> int:
        """The digest of leaf ``i``."""
        check_int(i, "leaf", 0, (1 << self._depth) - 1)
        return self._nodes[(1 << self._depth) + i]

    def leaves(self) -> list[int]:
        """Every leaf digest, in order."""
        return self._nodes[1 << self._depth:].tolist()

    def node(self, i: int) -> int:
        """The digest of node ``i`` (1 = root; children of ``n``: ``2n``, ``2n + 1``)."""
        check_int(i, "node", 1, (2 << self._depth) - 1)
        return self._nodes[i]

    def level(self, k: int) -> list[int]:
        """The ``2**k`` digests of level ``k`` (0 = the root, ``depth`` = the leaves)."""
        check_int(k, "level", 0, self._depth)
        return self._nodes[1 << k:2 << k].tolist()

    def expand(self, node_ids: Sequence[int]) -> list[tuple[int, int]]:
        """The ``(left, right)`` child digests of each inner node in ``node_ids``.

        Raises:
            InvalidArgumentError: an id is not an inner node (``1 <= id < 2**depth``).
        """
        nodes, top = self._nodes, (1 << self._depth) - 1
        out = []
        for n in node_ids:
            check_int(n, "node", 1, top)
            out.append((nodes[2 * n], nodes[2 * n + 1]))
        return out

    # --- writing ---------------------------------------------------------------------------

    def _apply(self, leaf: int, delta: int) -> None:
        nodes = self._nodes
        i = (1 << self._depth) + leaf
        if self._hash:
            nodes[i] ^= delta
            i >>= 1
            while i:
                nodes[i] = _inner(nodes[2 * i], nodes[2 * i + 1])
                i >>= 1
        else:
            while i:
                nodes[i] ^= delta
                i >>= 1

    def _delta(self, key: object, old: object, new: object) -> tuple[int, int, int]:
        """``(leaf, delta, count change)`` of one update; checks everything first."""
        seed = _h(_data(key, "key"))
        leaf = self._leaf_of_token(seed)
        delta, change = 0, 0
        if old is not None:
            delta = _h(_data(old, "old value"), seed)
            change -= 1
        if new is not None:
            delta ^= _h(_data(new, "new value"), seed)
            change += 1
        return leaf, delta, change

    def _check_count(self, change: int) -> None:
        if self._count + change < 0:
            raise InvalidArgumentError(
                f"removing {-change} item(s) from a tree of {self._count}: an item was "
                "removed that was never added")

    def update(self, key: str | bytes, old_value: str | bytes | None,
               new_value: str | bytes | None) -> None:
        """Replace ``key``'s value ``old_value`` by ``new_value`` (None: absent).

        Raises:
            KeyRangeError: the key is outside ``[lo, hi)``.
            ArgumentTypeError: a key or value of the wrong type.
            InvalidArgumentError: a removal from a tree holding no items.
        """
        leaf, delta, change = self._delta(key, old_value, new_value)
        self._check_count(change)
        self._count += change
        if delta:
            self._apply(leaf, delta)

    def add(self, key: str | bytes, value: str | bytes) -> None:
        """Add an item (``update(key, None, value)``)."""
        if value is None:
            raise ArgumentTypeError("value must be str or a bytes-like object, not NoneType")
        self.update(key, None, value)

    def remove(self, key: str | bytes, value: str | bytes) -> None:
        """Remove an item (``update(key, value, None)``)."""
        if value is None:
            raise ArgumentTypeError("value must be str or a bytes-like object, not NoneType")
        self.update(key, value, None)

    def update_many(self, updates: Iterable[tuple[Any, Any, Any]]) -> int:
        """Apply ``(key, old_value, new_value)`` updates; all or none (every update is
        checked before the tree changes). Returns how many were applied.

        Raises:
            as :meth:`update`; ``ArgumentTypeError`` for an entry that is not a triple.
        """
        changes = []
        total = 0
        for entry in updates:
            if not isinstance(entry, tuple) or len(entry) != 3:
                raise ArgumentTypeError(
                    f"expected a (key, old_value, new_value) triple, got {entry!r:.80}")
            leaf, delta, change = self._delta(*entry)
            changes.append((leaf, delta))
            total += change
        self._check_count(total)
        self._count += total
        if self._hash:
            nodes, base = self._nodes, 1 << self._depth
            dirty = set()
            for leaf, delta in changes:
                nodes[base + leaf] ^= delta
                dirty.add((base + leaf) >> 1)
            while dirty and min(dirty) >= 1:
                for i in sorted(dirty):
                    nodes[i] = _inner(nodes[2 * i], nodes[2 * i + 1])
                dirty = {i >> 1 for i in dirty if i > 1}
        else:
            for leaf, delta in changes:
                if delta:
                    self._apply(leaf, delta)
        return len(changes)

    def clear(self) -> None:
        """Remove every item."""
        self._nodes = array("Q", bytes(16 << self._depth))
        self._count = 0
        if self._hash:
            self._fill_empty()

    def rebuild(self, pairs: Iterable[tuple[Any, Any]]) -> list[int]:
        """Recompute the tree from scratch from the ``(key, value)`` pairs it should hold
        (the periodic full rebuild that guards against drift in incremental updates).

        Returns:
            The leaves whose maintained digest differed from the rebuilt one.
        """
        fresh = MerkleTree(self._depth, self._lo, self._hi, inner=self.inner)
        fresh._add_leaves(pairs)
        base = 1 << self._depth
        old, new = self._nodes, fresh._nodes
        drifted = [i for i in range(base) if old[base + i] != new[base + i]]
        fresh._sweep()
        self._nodes, self._count = fresh._nodes, fresh._count
        return drifted

    # --- comparing and combining -----------------------------------------------------------

    def _check_same_shape(self, other: object, what: str) -> MerkleTree:
        if not isinstance(other, MerkleTree):
            raise ArgumentTypeError(
                f"can only {what} a MerkleTree of the same implementation, not "
                f"{type(other).__module__}.{type(other).__name__}")
        mine = (self._depth, self._lo, self._hi, self.inner)
        theirs = (other._depth, other._lo, other._hi, other.inner)
        if mine != theirs:
            raise TreeMismatchError(
                f"cannot {what} trees of different shapes: (depth, lo, hi, inner) "
                f"{mine} vs {theirs}")
        return other

    def diff(self, other: MerkleTree) -> MerkleDiff:
        """Where this tree and ``other`` (same shape) differ, walking only the subtrees
        whose digests differ.

        Raises:
            TreeMismatchError: the trees differ in depth, range or inner rule.
        """
        other = self._check_same_shape(other, "diff")
        a, b = self._nodes, other._nodes
        base = 1 << self._depth
        leaves: list[int] = []
        compared = 1
        if a[1] == b[1]:
            return MerkleDiff([], [], compared)
        stack = [1]
        while stack:
            n = stack.pop()
            if n >= base:
                leaves.append(n - base)
                continue
            r, l_ = 2 * n + 1, 2 * n
            compared += 2
            if a[r] != b[r]:
                stack.append(r)
            if a[l_] != b[l_]:
                stack.append(l_)
        return MerkleDiff(leaves, self._ranges_of(leaves), compared)

    def merge(self, other: MerkleTree) -> MerkleTree:
        """A new tree holding the items of both (over disjoint data: an item in both
        cancels out).

        Raises:
            TreeMismatchError: the trees differ in depth, range or inner rule.
        """
        other = self._check_same_shape(other, "merge")
        out = MerkleTree(self._depth, self._lo, self._hi, inner=self.inner)
        a, b, nodes = self._nodes, other._nodes, out._nodes
        base = 1 << self._depth
        start = base if self._hash else 1
        for i in range(start, 2 * base):
            nodes[i] = a[i] ^ b[i]
        if self._hash:
            out._sweep()
        out._count = self._count + other._count
        return out

    def copy(self) -> MerkleTree:
        """An independent copy."""
        out = MerkleTree.__new__(MerkleTree)
        out._depth, out._lo, out._hi, out._hash = self._depth, self._lo, self._hi, self._hash
        out._width, out._count = self._width, self._count
        out._nodes = array("Q", self._nodes)
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MerkleTree):
            return NotImplemented
        return (self._depth, self._lo, self._hi, self._hash, self._count) == (
            other._depth, other._lo, other._hi, other._hash, other._count) and \
            self._nodes == other._nodes

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return (f"MerkleTree(depth={self._depth}, lo={self._lo}, hi={self._hi}, "
                f"inner={self.inner!r}, count={self._count}, root=0x{self._nodes[1]:016x})")

    # --- bytes -----------------------------------------------------------------------------

    def to_bytes(self, leaves_only: bool = False) -> bytes:
        """The tree as bytes: a 32-byte header (magic ``SKMT``, version, depth, hash id,
        flags, ``lo``, ``hi - 1``, item count) and the little-endian uint64 digests of
        every node from the root down (``8 * (2**(depth + 1) - 1)`` bytes) or, with
        ``leaves_only``, of the leaves (``8 * 2**depth`` bytes)."""
        if not isinstance(leaves_only, bool):
            raise ArgumentTypeError(f"leaves_only must be a bool, not {type(leaves_only).__name__}")
        flags = (FLAG_INNER_HASH if self._hash else 0) | (FLAG_LEAVES_ONLY if leaves_only else 0)
        head = HEADER.pack(MAGIC, VERSION, self._depth, HASH_XXH3_64, flags, self._lo,
                           self._hi - 1, self._count)
        body = self._nodes[1 << self._depth:] if leaves_only else self._nodes[1:]
        if _BIG_ENDIAN:  # pragma: no cover - no big-endian CI
            body = array("Q", body)
            body.byteswap()
        return head + body.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> MerkleTree:
        """The tree :meth:`to_bytes` wrote (by either implementation).

        Raises:
            ArgumentTypeError: ``data`` is not bytes-like.
            CorruptTreeError: bad magic, version, hash id, flags, range or length, or
                inner digests that do not match the leaves.
        """
        if isinstance(data, str) or not isinstance(data, (bytes, bytearray, memoryview)):
            raise ArgumentTypeError(f"data must be bytes-like, not {type(data).__name__}")
        data = bytes(data)
        depth, flags, lo, hi, count, offset = parse_header(data)
        tree = cls(depth, lo, hi, inner="hash" if flags & FLAG_INNER_HASH else "xor")
        body = array("Q")
        body.frombytes(data[offset:])
        if _BIG_ENDIAN:  # pragma: no cover
            body.byteswap()
        base = 1 << depth
        nodes = tree._nodes
        if flags & FLAG_LEAVES_ONLY:
            nodes[base:] = body
            tree._sweep()
        else:
            nodes[1:] = body
            stored = array("Q", nodes)
            tree._sweep()
            if nodes != stored:
                bad = next(i for i in range(1, base) if nodes[i] != stored[i])
                raise CorruptTreeError(
                    f"corrupt Merkle tree: inner node {bad} does not match its children")
        tree._count = count
        return tree

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self).from_bytes, (self.to_bytes(),))
