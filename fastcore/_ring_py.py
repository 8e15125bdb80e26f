"""Consistent-hash ring, pure-Python twin (the specification of ``_ring.pyx``).

Placement, ``mode="xxh3"`` (the default):
    node ``n`` with weight ``w`` owns the 64-bit points
    ``xxh3_64(f"{n}#{i}".encode())`` for ``i in range(vnodes * w)``; a key maps to the
    first point ``>= xxh3_64(key)``, wrapping to the smallest point. Equal points are
    ordered by node name (UTF-8 byte order), so the smallest name wins a tie.

Placement, ``mode="ketama"`` (libmemcached's weighted ketama, as pylibmc, twemproxy and
PHP/Java clients use it):
    with ``live`` nodes and total weight ``W``, node ``n`` gets
    ``floor(float32(w/W) * vnodes / 4 * live) * 4`` points computed in float32 as
    libmemcached does; its point string is ``f"{host}-{i}"`` when its port is 11211
    (or absent) and ``f"{host}:{port}-{i}"`` otherwise, for ``i`` in
    ``range(points // 4)``; each md5 digest of a point string gives four
    little-endian 32-bit points. A key hashes to the first little-endian 32-bit word
    of ``md5(key)`` and maps to the first point ``>=`` it, wrapping; ties are ordered
    by the node's position in the node list.
"""

from __future__ import annotations

import hashlib
import math
import struct
import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from typing import Union

import xxhash

from ._errors import (
    MAX_NODES,
    MAX_POINTS,
    MAX_VNODES,
    MAX_WEIGHT,
    ArgumentTypeError,
    EmptyRingError,
    InvalidArgumentError,
    UnknownNodeError,
)
from ._errors import check_int as _check_int

__all__ = ("MODES", "HashRing", "Key")

Key = Union[str, bytes]  # noqa: UP007 (a runtime alias; "|" needs 3.10 objects)
MODES = ("xxh3", "ketama")
_KETAMA_DEFAULT_PORT = 11211
_F32 = struct.Struct("<f")


# --- validation shared by both modes -------------------------------------------------


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise ArgumentTypeError(f"node name must be str, not {type(name).__name__}")
    if not name:
        raise InvalidArgumentError("node name must not be empty")
    try:
        name.encode()
    except UnicodeEncodeError:
        raise InvalidArgumentError(
            f"node name {name!r} is not encodable as UTF-8 (lone surrogate)"
        ) from None
    return name


def _normalise_nodes(nodes: Iterable[str] | Mapping[str, int]) -> dict[str, int]:
    if isinstance(nodes, (str, bytes)):
        raise ArgumentTypeError(
            "nodes must be an iterable of names or a mapping name -> weight, "
            f"not a single {type(nodes).__name__}"
        )
    result: dict[str, int] = {}
    if isinstance(nodes, Mapping):
        items: Iterable[tuple[object, object]] = nodes.items()
    else:
        try:
            items = ((name, 1) for name in nodes)
        except TypeError:
            raise ArgumentTypeError(
                "nodes must be an iterable of names or a mapping name -> weight, "
                f"not {type(nodes).__name__}"
            ) from None
    for raw_name, raw_weight in items:
        name = _check_name(raw_name)
        if name in result:
            raise InvalidArgumentError(f"duplicate node name {name!r}")
        result[name] = _check_int(raw_weight, f"weight of node {name!r}", 1, MAX_WEIGHT)
        if len(result) > MAX_NODES:
            raise InvalidArgumentError(f"a ring holds at most {MAX_NODES} nodes")
    return result


def _key_bytes(key: object, hash_tags: bool) -> bytes:
    if isinstance(key, str):
        data = key.encode()
    elif isinstance(key, bytes):
        data = key
    else:
        raise ArgumentTypeError(f"key must be str or bytes, not {type(key).__name__}")
    if hash_tags:
        start = data.find(b"{")
        if start >= 0:
            end = data.find(b"}", start + 1)
            if end > start + 1:  # an empty tag "{}" hashes the whole key (Redis rule)
                return data[start + 1 : end]
    return data


def _too_many(n: int, holders: int, nodes: int) -> str:
    if holders == nodes:
        return f"n={n} exceeds the {nodes} nodes on the ring"
    return (
        f"n={n} exceeds the {holders} nodes that hold points ({nodes - holders} of the "
        f"{nodes} nodes got no ketama point: their weight share is too small)"
    )


def _as_list(keys: Iterable[Key]) -> list[Key]:
    if isinstance(keys, (str, bytes)):
        raise ArgumentTypeError(
            f"keys must be an iterable of str or bytes keys, not a single {type(keys).__name__}"
        )
    try:
        return list(keys)
    except TypeError:
        raise ArgumentTypeError(
            f"keys must be an iterable of str or bytes keys, not {type(keys).__name__}"
        ) from None


# --- point generation ----------------------------------------------------------------


def _f32(x: float) -> float:
    return float(_F32.unpack(_F32.pack(x))[0])


def ketama_point_count(weight: int, total_weight: int, live: int, vnodes: int) -> int:
    """Points libmemcached's weighted ketama gives one server (its float32 arithmetic).

    Args:
        weight: the server's weight.
        total_weight: the sum of all live servers' weights.
        live: the number of live servers.
        vnodes: points per server at equal weight (libmemcached: 160).

    Returns:
        The number of points, a multiple of 4.
    """
    pct = _f32(_f32(float(weight)) / _f32(float(total_weight)))
    per_hash = _f32(_f32(pct * float(vnodes)) / 4.0)
    scaled = _f32(per_hash * _f32(float(live)))
    return math.floor(scaled + 0.0000000001) * 4


def ketama_host_label(name: str) -> bytes:
    """The prefix of a server's ketama point strings: host, plus ``:port`` unless 11211.

    Args:
        name: ``host``, ``host:port`` or ``[v6addr]:port``.

    Returns:
        The UTF-8 prefix that ``-{i}`` is appended to.
    """
    host, port = name, _KETAMA_DEFAULT_PORT
    head, sep, tail = name.rpartition(":")
    if sep and tail.isdigit() and tail.isascii() and head and (
        ":" not in head or (head.startswith("[") and head.endswith("]"))
    ):
        host, port = head, int(tail)
    if port == _KETAMA_DEFAULT_PORT:
        return host.encode()
    return f"{host}:{port}".encode()


def _ketama_points(label: bytes, count: int) -> list[int]:
    points: list[int] = []
    for i in range(count // 4):
        digest = hashlib.md5(label + b"-" + str(i).encode()).digest()
        points.extend(struct.unpack("<4I", digest))
    return points


def _xxh3_points(name: str, count: int) -> list[int]:
    prefix = name.encode() + b"#"
    return [xxhash.xxh3_64_intdigest(prefix + str(i).encode()) for i in range(count)]


class _State:
    """An immutable snapshot of the ring; mutations build a new one and swap it in."""

    __slots__ = ("holders", "names", "owners", "points", "weights")

    def __init__(
        self, weights: dict[str, int], points: list[int], owners: list[int]
    ) -> None:
        self.weights = weights
        self.names: tuple[str, ...] = tuple(weights)
        self.points = points
        self.owners = owners
        # ketama can give a node of tiny weight share no point: it then owns no key
        self.holders = len(set(owners))


class HashRing:
    """Consistent-hash ring with virtual nodes and integer weights.

    Args:
        nodes: node names, or a mapping of node name to integer weight (>= 1).
        vnodes: points per unit of weight (``"ketama"``: per server at equal weight,
            a multiple of 4; libmemcached uses 160).
        mode: ``"xxh3"`` (64-bit xxh3 points, the default) or ``"ketama"``
            (placement identical to libmemcached's weighted ketama).
        hash_tags: hash only the part of a key inside its first ``{...}`` (Redis
            Cluster's rule), so related keys land on the same node.

    Raises:
        ArgumentTypeError: a node name, weight or option has the wrong type.
        InvalidArgumentError: a duplicate or empty name, or a value out of range.

    Lookups are safe while other threads add or remove nodes: every mutation builds a
    new snapshot and replaces the old one in a single assignment.
    """

    __slots__ = ("_hash_tags", "_lock", "_mode", "_state", "_vnodes")

    def __init__(
        self,
        nodes: Iterable[str] | Mapping[str, int] = (),
        *,
        vnodes: int = 160,
        mode: str = "xxh3",
        hash_tags: bool = False,
    ) -> None:
        if mode not in MODES:
            raise InvalidArgumentError(f"mode must be one of {MODES}, got {mode!r}")
        self._vnodes = _check_int(vnodes, "vnodes", 1, MAX_VNODES)
        if mode == "ketama" and vnodes % 4:
            raise InvalidArgumentError(
                f"vnodes must be a multiple of 4 in ketama mode, got {vnodes}"
            )
        if not isinstance(hash_tags, bool):
            raise ArgumentTypeError(
                f"hash_tags must be a bool, not {type(hash_tags).__name__}"
            )
        self._mode = mode
        self._hash_tags = hash_tags
        self._lock = threading.Lock()
        self._state = self._build(_normalise_nodes(nodes))

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (_rebuild, (self.weights, self._vnodes, self._mode, self._hash_tags))

    # --- building ---------------------------------------------------------------------

    def _point_counts(self, weights: dict[str, int]) -> list[int]:
        if self._mode == "ketama":
            total, live = sum(weights.values()), len(weights)
            counts = [ketama_point_count(w, total, live, self._vnodes) for w in weights.values()]
        else:
            counts = [self._vnodes * w for w in weights.values()]
        if sum(counts) > MAX_POINTS:
            raise InvalidArgumentError(
                f"the ring would hold {sum(counts)} points; at most {MAX_POINTS} "
                "are allowed (lower vnodes or the weights)"
            )
        return counts

    def _build(self, weights: dict[str, int]) -> _State:
        counts = self._point_counts(weights)
        entries: list[tuple[int, object, int]] = []
        for index, (name, count) in enumerate(zip(weights, counts)):
            if self._mode == "ketama":
                pts = _ketama_points(ketama_host_label(name), count)
                tie: object = index
            else:
                pts = _xxh3_points(name, count)
                tie = name.encode()
            entries.extend((p, tie, index) for p in pts)
        entries.sort(key=lambda e: (e[0], e[1]))
        points = [e[0] for e in entries]
        owners = [e[2] for e in entries]
        return _State(weights, points, owners)

    # --- introspection ----------------------------------------------------------------

    @property
    def mode(self) -> str:
        """The placement mode, ``"xxh3"`` or ``"ketama"``."""
        return self._mode

    @property
    def vnodes(self) -> int:
        """Points per unit of weight."""
        return self._vnodes

    @property
    def hash_tags(self) -> bool:
        """Whether only the ``{...}`` part of a key is hashed."""
        return self._hash_tags

    @property
    def nodes(self) -> tuple[str, ...]:
        """Node names in the order they were added."""
        return self._state.names

    @property
    def weights(self) -> dict[str, int]:
        """A copy of the mapping node name -> weight."""
        return dict(self._state.weights)

    @property
    def num_points(self) -> int:
        """The number of points on the ring."""
        return len(self._state.points)

    def __len__(self) -> int:
        return len(self._state.names)

    def __contains__(self, name: object) -> bool:
        return name in self._state.weights

    def __repr__(self) -> str:
        state = self._state
        return (
            f"HashRing({len(state.names)} nodes, {len(state.points)} points, "
            f"mode={self._mode!r}, vnodes={self._vnodes}, hash_tags={self._hash_tags})"
        )

    def points(self) -> list[tuple[int, str]]:
        """All ring points in ring order as ``(point, node)`` pairs.

        Returns:
            Sorted pairs; in ketama mode the points are 32-bit values.
        """
        state = self._state
        return [(p, state.names[o]) for p, o in zip(state.points, state.owners)]

    def key_hash(self, key: Key) -> int:
        """The ring position of a key (64-bit xxh3, or 32-bit in ketama mode).

        Raises:
            ArgumentTypeError: the key is neither str nor bytes.
        """
        data = _key_bytes(key, self._hash_tags)
        if self._mode == "ketama":
            return int.from_bytes(hashlib.md5(data).digest()[:4], "little")
        return xxhash.xxh3_64_intdigest(data)

    # --- lookups ----------------------------------------------------------------------

    def _start(self, state: _State, key: Key) -> int:
        if not state.points:
            _key_bytes(key, self._hash_tags)  # a bad key is reported before emptiness
            raise EmptyRingError("the ring has no nodes; add one before looking up keys")
        i = bisect_left(state.points, self.key_hash(key))
        return 0 if i == len(state.points) else i

    def get_node(self, key: Key) -> str:
        """The node that holds ``key``.

        Args:
            key: a str (hashed as UTF-8) or bytes.

        Returns:
            The node's name.

        Raises:
            ArgumentTypeError: the key is neither str nor bytes.
            EmptyRingError: the ring has no nodes.
        """
        state = self._state
        return state.names[state.owners[self._start(state, key)]]

    def get_nodes(self, key: Key, n: int) -> list[str]:
        """The first ``n`` distinct nodes clockwise from ``key``: its preference list.

        Args:
            key: a str or bytes key.
            n: how many distinct nodes, 1 <= n <= len(ring).

        Returns:
            Node names; the first is ``get_node(key)``.

        Raises:
            InvalidArgumentError: n < 1 or n exceeds the number of nodes.
        """
        state = self._state
        _check_int(n, "n", 1, MAX_NODES)
        if n > state.holders and state.names:
            raise InvalidArgumentError(_too_many(n, state.holders, len(state.names)))
        i = self._start(state, key)
        result: list[str] = []
        seen: set[int] = set()
        owners, total = state.owners, len(state.owners)
        while len(result) < n:
            owner = owners[i]
            if owner not in seen:
                seen.add(owner)
                result.append(state.names[owner])
            i += 1
            if i == total:
                i = 0
        return result

    def successors(self, key: Key) -> Iterator[str]:
        """Iterate over all distinct nodes clockwise from ``key`` (lazy preference list).

        The iterator walks the snapshot taken when it was created.
        """
        state = self._state
        return self._walk(state, self._start(state, key))

    @staticmethod
    def _walk(state: _State, i: int) -> Iterator[str]:
        seen: set[int] = set()
        owners, total, count = state.owners, len(state.owners), state.holders
        while len(seen) < count:
            owner = owners[i]
            if owner not in seen:
                seen.add(owner)
                yield state.names[owner]
            i += 1
            if i == total:
                i = 0

    def get_node_many(self, keys: Iterable[Key]) -> list[str]:
        """The node of each key, in order.

        Raises:
            ArgumentTypeError: a key is neither str nor bytes (nothing is returned).
            EmptyRingError: the ring has no nodes and ``keys`` is not empty.
        """
        state = self._state
        names, owners, points = state.names, state.owners, state.points
        keys = _as_list(keys)
        total = len(points)
        if not total:
            for key in keys:  # report a bad key before the empty ring, as native does
                _key_bytes(key, self._hash_tags)
            if keys:
                raise EmptyRingError("the ring has no nodes; add one before looking up keys")
        result = []
        key_hash = self.key_hash
        for key in keys:
            i = bisect_left(points, key_hash(key))
            result.append(names[owners[0 if i == total else i]])
        return result

    def group_by_node(self, keys: Iterable[Key]) -> dict[str, list[Key]]:
        """Group keys by the node that holds them, keeping their order within a node.

        Returns:
            A dict node name -> list of its keys (only nodes that got a key).
        """
        keys = _as_list(keys)
        groups: dict[str, list[Key]] = {}
        for key, node in zip(keys, self.get_node_many(keys)):
            groups.setdefault(node, []).append(key)
        return groups

    # --- mutation ---------------------------------------------------------------------

    def add_node(self, name: str, weight: int = 1) -> None:
        """Add a node; in xxh3 mode only keys moving to it change owner.

        Raises:
            InvalidArgumentError: the name is already on the ring, empty, or the
                weight is out of range.
        """
        name = _check_name(name)
        weight = _check_int(weight, f"weight of node {name!r}", 1, MAX_WEIGHT)
        with self._lock:
            weights = dict(self._state.weights)
            if name in weights:
                raise InvalidArgumentError(f"duplicate node name {name!r}")
            if len(weights) >= MAX_NODES:
                raise InvalidArgumentError(f"a ring holds at most {MAX_NODES} nodes")
            weights[name] = weight
            self._state = self._build(weights)

    def remove_node(self, name: str) -> None:
        """Remove a node; in xxh3 mode only its keys change owner.

        Raises:
            UnknownNodeError: no node has that name.
        """
        with self._lock:
            weights = dict(self._state.weights)
            if name not in weights:
                raise UnknownNodeError(f"node {name!r} is not on the ring")
            del weights[name]
            self._state = self._build(weights)

    def set_weight(self, name: str, weight: int) -> None:
        """Change a node's weight; in xxh3 mode keys move only to or from that node.

        Raises:
            UnknownNodeError: no node has that name.
            InvalidArgumentError: the weight is out of range.
        """
        weight = _check_int(weight, f"weight of node {name!r}", 1, MAX_WEIGHT)
        with self._lock:
            weights = dict(self._state.weights)
            if name not in weights:
                raise UnknownNodeError(f"node {name!r} is not on the ring")
            weights[name] = weight
            self._state = self._build(weights)


def _rebuild(weights: dict[str, int], vnodes: int, mode: str, hash_tags: bool) -> HashRing:
    return HashRing(weights, vnodes=vnodes, mode=mode, hash_tags=hash_tags)
