"""One registry of objects that must act around ``fork()``: connections, locks and
pools that a child process must never share with its parent.

An object subclasses :class:`ForkAware`, calls :meth:`ForkAware._register_fork_hook`
once, and overrides the hooks it needs. The registry holds weak references; the hooks
run in the forking thread, the ``before`` / ``after_in_parent`` pair around fork() in
the parent (e.g. to hold a lock across it) and ``after_in_child`` in the child.
"""

from __future__ import annotations

import os
import weakref

__all__ = ("ForkAware",)


class ForkAware:
    """Base of objects with fork hooks (each a no-op unless overridden)."""

    def _register_fork_hook(self) -> None:
        _REGISTERED.add(self)

    def _before_fork(self) -> None:
        """Called in the parent just before fork()."""

    def _after_fork_in_parent(self) -> None:
        """Called in the parent just after fork()."""

    def _after_fork_in_child(self) -> None:
        """Called in the child just after fork()."""


_REGISTERED: weakref.WeakSet[ForkAware] = weakref.WeakSet()
_FORKING: list[ForkAware] = []  # the objects told before fork(): told again after it


def _before_fork() -> None:
    _FORKING[:] = list(_REGISTERED)
    for obj in _FORKING:
        obj._before_fork()


def _after_fork_in_parent() -> None:
    for obj in _FORKING:
        obj._after_fork_in_parent()
    _FORKING.clear()


def _after_fork_in_child() -> None:
    _FORKING.clear()
    for obj in list(_REGISTERED):
        obj._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)
