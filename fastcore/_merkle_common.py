"""Parts of the Merkle module shared by the native tree and its twin: result types, the
wire header, the level-by-level exchange with a remote replica and the key-level diff.

None of this is a hot loop: it runs once per exchange or on a few hundred keys.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from ._errors import ArgumentTypeError, CorruptTreeError, InvalidArgumentError

__all__ = (
    "FLAG_INNER_HASH",
    "FLAG_LEAVES_ONLY",
    "HASH_XXH3_64",
    "HEADER",
    "MAGIC",
    "VERSION",
    "KeyDiff",
    "MerkleDiff",
    "compare_keys",
    "diff_levels",
)

#: The wire header, 32 bytes little-endian: magic, version, depth, hash id, flags,
#: ``lo``, ``hi - 1`` (so that ``hi = 2**64`` fits), item count.
HEADER = struct.Struct("<4sBBBBQQQ")
MAGIC = b"SKMT"
VERSION = 1
HASH_XXH3_64 = 1  # item digest xxh3_64(value, seed=xxh3_64(key)); inner hash xxh3_64(l || r)
FLAG_INNER_HASH = 1  # inner node = xxh3_64(le64(left) || le64(right)) instead of left ^ right
FLAG_LEAVES_ONLY = 2  # the body holds the leaves only; inner nodes are recomputed
_KNOWN_FLAGS = FLAG_INNER_HASH | FLAG_LEAVES_ONLY


class MerkleDiff(NamedTuple):
    """Where two trees over the same range differ.

    Attributes:
        leaves: indexes of the differing leaves, ascending.
        ranges: the differing leaves' hash ranges, adjacent ones coalesced:
            half-open ``(start, end)`` pairs, ascending (``end`` may be ``2**64``).
        compared: how many pairs of node digests the walk compared.
    """

    leaves: list[int]
    ranges: list[tuple[int, int]]
    compared: int


class KeyDiff(NamedTuple):
    """Keys that differ between two replicas' ``(key, digest)`` listings.

    Attributes:
        missing_local: keys only the remote side has.
        missing_remote: keys only the local side has.
        different: keys both sides have, with different digests.
    """

    missing_local: list[Any]
    missing_remote: list[Any]
    different: list[Any]


class _Tree(Protocol):
    # read-only: a MerkleTree's depth is a property (a plain attribute here would be
    # writable, and mypy would reject every real tree)
    @property
    def depth(self) -> int: ...

    def node(self, i: int) -> int: ...
    def expand(self, node_ids: Sequence[int]) -> list[tuple[int, int]]: ...
    def _ranges_of(self, leaves: list[int]) -> list[tuple[int, int]]: ...


def parse_header(data: bytes | bytearray | memoryview) -> tuple[int, int, int, int, int, int]:
    """Checks the header of serialised tree bytes.

    Returns:
        ``(depth, flags, lo, hi, count, body_offset)``.

    Raises:
        CorruptTreeError: anything wrong with the header or the body's length.
    """
    if len(data) < HEADER.size:
        raise CorruptTreeError(
            f"truncated Merkle tree: {len(data)} bytes, shorter than the {HEADER.size}-byte "
            "header")
    magic, version, depth, hash_id, flags, lo, hi_last, count = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptTreeError(f"not a shardkit Merkle tree: magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise CorruptTreeError(
            f"unsupported Merkle tree format version {version} (this build reads {VERSION})")
    if hash_id != HASH_XXH3_64:
        raise CorruptTreeError(f"unknown hash id {hash_id} (1 = xxh3_64)")
    if flags & ~_KNOWN_FLAGS:
        raise CorruptTreeError(f"unknown flags 0x{flags:02x}")
    from ._errors import MAX_MERKLE_DEPTH

    if depth > MAX_MERKLE_DEPTH:
        raise CorruptTreeError(f"depth {depth} is above the maximum {MAX_MERKLE_DEPTH}")
    hi = hi_last + 1
    if lo >= hi or hi - lo < 1 << depth:
        raise CorruptTreeError(
            f"bad range [{lo}, {hi}) for depth {depth}: it must hold at least 2**depth tokens")
    words = (1 << depth) if flags & FLAG_LEAVES_ONLY else (2 << depth) - 1
    expected = HEADER.size + 8 * words
    if len(data) != expected:
        raise CorruptTreeError(
            f"{'truncated' if len(data) < expected else 'trailing bytes after'} Merkle tree: "
            f"{len(data)} bytes, expected {expected} for depth {depth}"
            f"{' (leaves only)' if flags & FLAG_LEAVES_ONLY else ''}")
    return depth, flags, lo, hi, count, HEADER.size


def check_shape(depth: object, lo: object, hi: object, inner: object) -> tuple[int, int, int, bool]:
    """Validates the constructor's arguments; returns ``(depth, lo, hi, inner_hash)``."""
    from ._errors import MAX_MERKLE_DEPTH, check_int

    check_int(depth, "depth", 0, MAX_MERKLE_DEPTH)
    check_int(lo, "lo", 0, (1 << 64) - 1)
    check_int(hi, "hi", 1, 1 << 64)
    assert isinstance(depth, int) and isinstance(lo, int) and isinstance(hi, int)
    if hi <= lo:
        raise InvalidArgumentError(f"lo must be below hi, got lo={lo}, hi={hi}")
    if hi - lo < 1 << depth:
        raise InvalidArgumentError(
            f"the range [{lo}, {hi}) holds {hi - lo} tokens, fewer than the 2**{depth} "
            "leaves of the tree")
    if inner not in ("xor", "hash"):
        raise InvalidArgumentError(f"inner must be 'xor' or 'hash', got {inner!r}")
    return depth, lo, hi, inner == "hash"


def diff_levels(local: _Tree, remote_root: int,
                remote_expand: Callable[[list[int]], Sequence[tuple[int, int]]]) -> MerkleDiff:
    """Compares ``local`` with a remote replica's tree of the same shape, level by level,
    asking the remote only for the children of nodes that differ.

    Args:
        local: the local tree.
        remote_root: the remote tree's root digest.
        remote_expand: ``node_ids -> [(left, right), ...]``: the remote tree's
            :meth:`MerkleTree.expand` (over the network: one round trip per level).

    Returns:
        The differing leaves and ranges; ``compared`` counts the digests received.

    Raises:
        InvalidArgumentError: the remote answered with the wrong number of pairs.
    """
    depth = local.depth
    compared = 1
    if local.node(1) == remote_root:
        return MerkleDiff([], [], compared)
    frontier = [1]
    for _ in range(depth):
        theirs = list(remote_expand(frontier))
        if len(theirs) != len(frontier):
            raise InvalidArgumentError(
                f"the remote expanded {len(frontier)} nodes into {len(theirs)} pairs")
        ours = local.expand(frontier)
        nxt: list[int] = []
        for node, (lo_a, hi_a), (lo_b, hi_b) in zip(frontier, ours, theirs):
            compared += 2
            if lo_a != lo_b:
                nxt.append(2 * node)
            if hi_a != hi_b:
                nxt.append(2 * node + 1)
        frontier = nxt
    leaves = [n - (1 << depth) for n in frontier]
    return MerkleDiff(leaves, local._ranges_of(leaves), compared)


def _listing(side: object, what: str) -> dict[Any, int]:
    if isinstance(side, Mapping):
        return dict(side)
    if isinstance(side, Iterable) and not isinstance(side, (str, bytes)):
        out: dict[Any, int] = {}
        for pair in side:
            try:
                key, digest = pair
            except (TypeError, ValueError):
                raise ArgumentTypeError(
                    f"{what} must hold (key, digest) pairs, got {pair!r}") from None
            out[key] = digest
        return out
    raise ArgumentTypeError(
        f"{what} must be a mapping or an iterable of (key, digest) pairs, not "
        f"{type(side).__name__}")


def compare_keys(local: Mapping[Any, int] | Iterable[tuple[Any, int]],
                 remote: Mapping[Any, int] | Iterable[tuple[Any, int]]) -> KeyDiff:
    """Which keys differ, given both sides' ``(key, digest)`` listings of the same leaves
    (Riak's segment comparison): missing on either side, or present with other digests.

    Lists keep the order of ``local`` (``missing_remote``, ``different``) and of
    ``remote`` (``missing_local``).

    Raises:
        ArgumentTypeError: a side is not a mapping or an iterable of pairs.
    """
    mine = _listing(local, "local")
    theirs = _listing(remote, "remote")
    missing_remote: list[Any] = []
    different: list[Any] = []
    for key, digest in mine.items():
        other = theirs.get(key)
        if other is None and key not in theirs:
            missing_remote.append(key)
        elif other != digest:
            different.append(key)
    missing_local = [key for key in theirs if key not in mine]
    return KeyDiff(missing_local, missing_remote, different)
