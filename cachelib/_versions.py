"""Versioned records: how a replicated cache stores a value (or a delete) with the
version stamp that decides which replica is newest.

A record is what a backend stores, ``(payload, flags)``:

* a value: ``payload = version (8 bytes, big-endian) | the Serializer's payload`` and
  ``flags = VERSIONED | the Serializer's flags``;
* a delete (a tombstone, kept for a while so that a replica that missed the delete
  cannot bring the value back through read repair or anti-entropy):
  ``payload = version (8 bytes)`` and ``flags = VERSIONED | DELETED``.

The version is a TrueTime-style ID (:class:`idgen.TrueTimeGenerator`): its time, clock
uncertainty and worker. ``VERSIONED`` is bit 7 of the flags and ``DELETED`` bit 2, both
unused by :class:`~cachelib.Serializer` and both inside the one flags byte the Redis
backend stores.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from ._errors import SerializationError

__all__ = ("DELETED", "VERSIONED", "Record", "tombstone", "unwrap", "wrap")

VERSIONED: Final = 0x80
DELETED: Final = 0x04
_VERSION = struct.Struct(">Q")
_MAX_VERSION: Final = (1 << 64) - 1


class Record(NamedTuple):
    """A decoded versioned record."""

    version: int
    payload: bytes  # the Serializer's payload (b"" for a tombstone)
    flags: int  # the Serializer's flags (0 for a tombstone)
    deleted: bool


def wrap(version: int, payload: bytes, flags: int) -> tuple[bytes, int]:
    """The record of a value: ``(payload, flags)`` to store."""
    if not 0 <= version <= _MAX_VERSION:
        raise SerializationError(f"a version must fit in 64 bits, got {version!r}")
    if flags & (VERSIONED | DELETED):
        raise SerializationError(f"flags {flags:#x} overlap the record bits")
    return _VERSION.pack(version) + payload, flags | VERSIONED


def tombstone(version: int) -> tuple[bytes, int]:
    """The record of a delete."""
    if not 0 <= version <= _MAX_VERSION:
        raise SerializationError(f"a version must fit in 64 bits, got {version!r}")
    return _VERSION.pack(version), VERSIONED | DELETED


def unwrap(payload: bytes, flags: int) -> Record | None:
    """The record stored as ``(payload, flags)``; None for a value that is not a
    versioned record (written by an unreplicated client).

    Raises:
        SerializationError: a versioned record too short to hold its version.
    """
    if not flags & VERSIONED:
        return None
    if len(payload) < 8:
        raise SerializationError(
            f"a versioned record of {len(payload)} bytes cannot hold its 8-byte version")
    version = _VERSION.unpack_from(payload)[0]
    if flags & DELETED:
        return Record(version, b"", 0, True)
    return Record(version, bytes(payload[8:]), flags & ~VERSIONED, False)
