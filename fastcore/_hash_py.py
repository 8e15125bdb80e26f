"""Hash functions, pure-Python twin (the specification of ``_hash.pyx``).

``xxh3_64`` and ``xxh64`` return the same integers as the ``xxhash`` package (which
computes them here); ``md5_digest`` is :func:`hashlib.md5`. Data is a ``str``
(hashed as its UTF-8 bytes) or any C-contiguous bytes-like object.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, cast

import xxhash

from ._errors import ArgumentTypeError, InvalidArgumentError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ("md5_digest", "xxh3_64", "xxh64")

_SEED_LIMIT = 1 << 64


def _as_bytes(data: object) -> bytes | memoryview:
    """Returns the bytes to hash; a returned memoryview must be released."""
    if isinstance(data, str):
        # str.encode, not data.encode: a subclass cannot change what is hashed.
        return str.encode(data, "utf-8")
    if isinstance(data, bytes):
        return data
    try:
        view = memoryview(cast("ReadableBuffer", data))
    except TypeError:
        raise ArgumentTypeError(
            f"data must be str or a bytes-like object, not {type(data).__name__}"
        ) from None
    if not view.c_contiguous:
        view.release()
        raise ArgumentTypeError(
            f"data must be a C-contiguous buffer, got a non-contiguous {type(data).__name__}"
        )
    if view.ndim == 1 and view.format == "B":
        return view
    # Other formats and shapes hash as their raw bytes, as in the native module.
    with view:
        return view.cast("B")


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ArgumentTypeError(f"seed must be an int, not {type(seed).__name__}")
    if not 0 <= seed < _SEED_LIMIT:
        bits = seed.bit_length()
        if bits <= 128:
            shown = int.__repr__(seed)
        else:  # int -> str has a digit limit; describe a huge int instead
            shown = f"{'a negative' if seed < 0 else 'an'} int of {bits} bits"
        raise InvalidArgumentError(f"seed must be in [0, 2**64), got {shown}")
    return seed


def _release(buf: bytes | memoryview) -> None:
    if isinstance(buf, memoryview):
        buf.release()


def xxh3_64(data: str | ReadableBuffer, seed: int = 0) -> int:
    """Computes XXH3-64 of ``data``.

    Args:
        data: A ``str`` (hashed as UTF-8) or a C-contiguous bytes-like object
            (``bytes``, ``bytearray``, ``memoryview``, ``array.array``...).
        seed: The XXH3 seed, an ``int`` in ``[0, 2**64)``.

    Returns:
        The 64-bit hash as an ``int`` in ``[0, 2**64)``, equal to
        ``xxhash.xxh3_64_intdigest(data, seed)``.

    Raises:
        ArgumentTypeError: ``data`` is neither ``str`` nor bytes-like, is a
            non-contiguous buffer, or ``seed`` is not an ``int``.
        InvalidArgumentError: ``seed`` is outside ``[0, 2**64)``.
        UnicodeEncodeError: ``data`` is a ``str`` with lone surrogates.
    """
    buf = _as_bytes(data)
    try:
        return xxhash.xxh3_64_intdigest(buf, _check_seed(seed))
    finally:
        _release(buf)


def xxh64(data: str | ReadableBuffer, seed: int = 0) -> int:
    """Computes XXH64 of ``data``.

    Args:
        data: A ``str`` (hashed as UTF-8) or a C-contiguous bytes-like object.
        seed: The XXH64 seed, an ``int`` in ``[0, 2**64)``.

    Returns:
        The 64-bit hash as an ``int`` in ``[0, 2**64)``, equal to
        ``xxhash.xxh64_intdigest(data, seed)``.

    Raises:
        ArgumentTypeError: ``data`` is neither ``str`` nor bytes-like, is a
            non-contiguous buffer, or ``seed`` is not an ``int``.
        InvalidArgumentError: ``seed`` is outside ``[0, 2**64)``.
        UnicodeEncodeError: ``data`` is a ``str`` with lone surrogates.
    """
    buf = _as_bytes(data)
    try:
        return xxhash.xxh64_intdigest(buf, _check_seed(seed))
    finally:
        _release(buf)


def md5_digest(data: str | ReadableBuffer) -> bytes:
    """Computes the MD5 digest of ``data`` (as libmemcached's ketama uses it).

    Args:
        data: A ``str`` (hashed as UTF-8) or a C-contiguous bytes-like object.

    Returns:
        The 16-byte digest, equal to ``hashlib.md5(data).digest()``.

    Raises:
        ArgumentTypeError: ``data`` is neither ``str`` nor bytes-like, or is a
            non-contiguous buffer.
        UnicodeEncodeError: ``data`` is a ``str`` with lone surrogates.
    """
    buf = _as_bytes(data)
    try:
        # Not a security use: ketama placement must match other clients' md5.
        return hashlib.md5(buf, usedforsecurity=False).digest()
    finally:
        _release(buf)
