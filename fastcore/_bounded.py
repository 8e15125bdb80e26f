"""Consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam, 2017).

A key goes to the first node clockwise from it whose load is below its capacity,
``ceil((1 + eps) * (total + 1) * weight / total_weight)``, where ``total`` counts the
items already placed. No node then exceeds ``(1 + eps)`` times its fair share (rounded
up), while keys still move little when nodes come and go. Useful for sessions, hot
keys or jobs, where the load of a node matters more than the key space it owns.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Protocol

from ._errors import ArgumentTypeError, InvalidArgumentError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ("BoundedLoadBalancer", "pick_bounded")


class _Ring(Protocol):  # what both HashRing implementations offer
    @property
    def nodes(self) -> tuple[str, ...]: ...
    @property
    def weights(self) -> dict[str, int]: ...
    def successors(self, key: str | bytes) -> Iterator[str]: ...


def _check_eps(eps: object) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise ArgumentTypeError(f"eps must be a number, not {type(eps).__name__}")
    if not (0 < eps <= 1e6) or math.isnan(eps):
        raise InvalidArgumentError(f"eps must be in (0, 1e6], got {eps!r}")
    return float(eps)


def _capacity(eps: float, total: int, weight: int, total_weight: int) -> int:
    return math.ceil((1.0 + eps) * (total + 1) * weight / total_weight)


def pick_bounded(
    ring: _Ring, key: str | bytes, loads: Mapping[str, int], eps: float = 0.25
) -> str:
    """The node for ``key`` under bounded loads, given the current ``loads``.

    Args:
        ring: a :class:`~fastcore.HashRing`.
        key: the key (str or bytes) to place.
        loads: current load per node name; nodes missing from it count as 0 and
            names not on the ring are ignored.
        eps: allowed excess over the average load (0.25: at most 1.25x).

    Returns:
        The first node clockwise from the key whose load is below its capacity.

    Raises:
        InvalidArgumentError: eps out of range or a negative load.
        EmptyRingError: the ring has no nodes.
    """
    eps = _check_eps(eps)
    weights = ring.weights
    total = 0
    for name, load in loads.items():
        if isinstance(load, bool) or not isinstance(load, int):
            raise ArgumentTypeError(f"load of {name!r} must be an int, not {type(load).__name__}")
        if load < 0:
            raise InvalidArgumentError(f"load of {name!r} must be >= 0, got {load}")
        if name in weights:
            total += load
    total_weight = sum(weights.values())
    fallback, fallback_fill = "", math.inf
    for node in ring.successors(key):
        load = loads.get(node, 0)
        if load < _capacity(eps, total, weights[node], total_weight):
            return node
        if load / weights[node] < fallback_fill:
            fallback, fallback_fill = node, load / weights[node]
    # Only reachable when nodes without points (ketama, tiny weight share) hold part
    # of the capacity: the least filled node that can take keys gets it.
    return fallback


class BoundedLoadBalancer:
    """Assigns keys to ring nodes so that no node exceeds ``(1 + eps)`` x its share.

    Thread safe. An assigned key stays on its node until released (or until its node
    leaves the ring, when the next ``assign`` places it again).

    Args:
        ring: the :class:`~fastcore.HashRing` to place keys on; it may change later.
        eps: allowed excess over the average load, > 0 (default 0.25).

    Raises:
        InvalidArgumentError: eps out of range.
    """

    def __init__(self, ring: _Ring, eps: float = 0.25) -> None:
        self._ring = ring
        self._eps = _check_eps(eps)
        self._lock = threading.Lock()
        self._owner: dict[Hashable, str] = {}
        self._loads: dict[str, int] = {}

    @property
    def eps(self) -> float:
        """The allowed excess over the average load."""
        return self._eps

    @property
    def loads(self) -> dict[str, int]:
        """Current load of every node on the ring (0 for idle nodes)."""
        with self._lock:
            return {node: self._loads.get(node, 0) for node in self._ring.nodes}

    def __len__(self) -> int:
        return len(self._owner)

    def node_of(self, key: str | bytes) -> str | None:
        """The node ``key`` is assigned to, or None."""
        return self._owner.get(key)

    def assign(self, key: str | bytes) -> str:
        """Place ``key`` (or return where it already is) and count it as load.

        Raises:
            ArgumentTypeError: the key is neither str nor bytes.
            EmptyRingError: the ring has no nodes.
        """
        with self._lock:
            current = self._owner.get(key)
            if current is not None:
                if current in self._ring.weights:
                    return current
                self._drop(key, current)
            node = pick_bounded(self._ring, key, self._loads, self._eps)
            self._owner[key] = node
            self._loads[node] = self._loads.get(node, 0) + 1
            return node

    def release(self, key: str | bytes) -> str:
        """Remove ``key``'s load from its node and return that node.

        Raises:
            InvalidArgumentError: the key is not assigned.
        """
        with self._lock:
            node = self._owner.get(key)
            if node is None:
                raise InvalidArgumentError(f"key {key!r} is not assigned")
            self._drop(key, node)
            return node

    def _drop(self, key: Hashable, node: str) -> None:
        del self._owner[key]
        left = self._loads[node] - 1
        if left:
            self._loads[node] = left
        else:
            del self._loads[node]
