"""Turning user keys into the bytes sent to a server, under memcached's key rules.

memcached's text protocol takes keys of at most 250 bytes with no whitespace or
control characters (``protocol.txt``, "Keys"). :class:`KeyCodec` checks that in the
client, before a bad key can reach a server (where it would break the request, or the
whole connection), and with ``hash_unsafe=True`` replaces such keys by a fixed-length
digest instead of rejecting them.
"""

from __future__ import annotations

from collections.abc import Iterable
from hashlib import blake2b

from ._errors import ConfigError, InvalidKeyError, KeyTypeError

__all__ = ("HASHED_KEY_MARK", "MAX_KEY_LENGTH", "KeyCodec")

#: memcached's longest key, in bytes (``KEY_MAX_LENGTH`` in memcached).
MAX_KEY_LENGTH = 250
#: Hashed keys start with this mark (after the prefix).
HASHED_KEY_MARK = b"sk:h:"
_DIGEST_SIZE = 20
#: Length of a hashed key without the prefix: the mark and 40 hex digits.
_HASHED_KEY_LENGTH = len(HASHED_KEY_MARK) + 2 * _DIGEST_SIZE

# The bytes memcached refuses in a key: space, the C0 controls and DEL. Bytes from
# 0x80 up are allowed, so UTF-8 keys are fine byte for byte.
_BAD_BYTES = bytes([*range(0x21), 0x7F])
# A translation table that maps each refused byte to a space and leaves the rest.
# (``0x20 in data`` is a memchr; ``bytes.translate(None, delete)`` builds its table on
# every call and a regex match costs several times more.)
_FLAG_BAD = bytes(0x20 if b in _BAD_BYTES else b for b in range(256))
_BYTE_NAMES = {0x20: "space", 0x09: "tab", 0x0A: "newline", 0x0D: "carriage return", 0x7F: "DEL"}


def _describe_byte(byte: int) -> str:
    name = _BYTE_NAMES.get(byte, "control character")
    return f"0x{byte:02x} ({name})"


def _short_repr(raw: bytes) -> str:
    return repr(raw) if len(raw) <= 40 else f"{raw[:40]!r}..."


class KeyCodec:
    """Encodes keys to bytes, prepends a prefix and enforces memcached's key rules.

    A ``str`` key is encoded as UTF-8; ``bytes``, ``bytearray`` and ``memoryview`` are
    taken as they are. With memcached rules on (the default), the key *with its
    prefix* must be 1 to 250 bytes long with no byte at or below 0x20 (space and the
    control characters) and no 0x7f (DEL); bytes from 0x80 up (UTF-8) are allowed.
    An empty key is always an error.

    With ``hash_unsafe=True`` a key that breaks the rules is not rejected but
    replaced by ``prefix + b"sk:h:" + blake2b(key, digest_size=20).hexdigest()``
    (45 bytes plus the prefix; the same key always gives the same digest, in every
    process). So that such a digest can never collide with a key a caller wrote
    verbatim, a valid key that itself starts with ``b"sk:h:"`` is hashed as well.

    Args:
        prefix: Prepended to every key (a namespace such as ``"app1:"``); a str is
            encoded as UTF-8. It counts toward the 250-byte limit.
        hash_unsafe: Hash keys that break the rules instead of raising. Needs
            ``memcached_rules``.
        memcached_rules: Enforce memcached's length and byte rules. Turn off for
            backends without them (Redis keys may hold any byte).

    Raises:
        ConfigError: The prefix breaks the rules itself, leaves no room for a key,
            or ``hash_unsafe`` is asked for without ``memcached_rules``.
        KeyTypeError: The prefix is neither str nor bytes.
    """

    __slots__ = ("_fast_max", "_hash_unsafe", "_max_key_length", "_prefix", "_rules")

    def __init__(
        self,
        prefix: str | bytes = b"",
        *,
        hash_unsafe: bool = False,
        memcached_rules: bool = True,
    ) -> None:
        if isinstance(prefix, str):
            try:
                prefix = prefix.encode()
            except UnicodeEncodeError as exc:
                raise ConfigError(f"key prefix {prefix!r} is not valid Unicode: {exc}") from None
        elif isinstance(prefix, (bytes, bytearray, memoryview)):
            prefix = bytes(prefix)
        else:
            raise KeyTypeError(f"key prefix must be str or bytes, not {type(prefix).__name__}")
        if hash_unsafe and not memcached_rules:
            raise ConfigError("hash_unsafe=True needs memcached_rules=True (nothing to hash)")
        if memcached_rules:
            if len(prefix.translate(None, _BAD_BYTES)) != len(prefix):
                raise ConfigError(
                    f"key prefix {prefix!r} contains whitespace or control characters, "
                    "which memcached keys cannot hold"
                )
            room = MAX_KEY_LENGTH - len(prefix)
            needed = _HASHED_KEY_LENGTH if hash_unsafe else 1
            if room < needed:
                raise ConfigError(
                    f"key prefix is {len(prefix)} bytes; memcached keys are at most "
                    f"{MAX_KEY_LENGTH} bytes, leaving no room for "
                    + ("a hashed key (45 bytes)" if hash_unsafe else "a key")
                )
        self._prefix: bytes = prefix
        self._hash_unsafe = hash_unsafe
        self._rules = memcached_rules
        # Longest key the caller may pass, the prefix having taken its share.
        self._max_key_length = MAX_KEY_LENGTH - len(prefix)
        # Without the rules the fast path's checks do not apply: go the slow way.
        self._fast_max = self._max_key_length if memcached_rules else -1

    @property
    def prefix(self) -> bytes:
        """The prefix prepended to every key, as bytes."""
        return self._prefix

    @property
    def hash_unsafe(self) -> bool:
        """Whether keys that break the rules are hashed instead of rejected."""
        return self._hash_unsafe

    @property
    def memcached_rules(self) -> bool:
        """Whether memcached's length and byte rules are enforced."""
        return self._rules

    def __repr__(self) -> str:
        return (
            f"KeyCodec(prefix={self._prefix!r}, hash_unsafe={self._hash_unsafe}, "
            f"memcached_rules={self._rules})"
        )

    def encode(self, key: str | bytes | bytearray | memoryview) -> bytes:
        """Return the bytes to send for ``key``: the prefix, then the encoded key.

        Args:
            key: A str (sent as UTF-8) or a bytes-like object.

        Returns:
            The full key, prefix included (or its hashed form, see the class).

        Raises:
            KeyTypeError: ``key`` is not a str or bytes-like (e.g. an int or None).
            InvalidKeyError: ``key`` is empty, holds a lone surrogate, or breaks
                memcached's rules (and ``hash_unsafe`` is off).
        """
        # Fast path: a str or bytes key that obeys the rules as it is. _FLAG_BAD maps
        # every refused byte to a space, so one C-level scan finds any of them.
        if type(key) is str:
            try:
                raw = key.encode()
            except UnicodeEncodeError:
                return self._encode_slow(key)
        elif type(key) is bytes:
            raw = key
        else:
            return self._encode_slow(key)
        if (
            0 < len(raw) <= self._fast_max
            and 0x20 not in raw.translate(_FLAG_BAD)
            and (not self._hash_unsafe or raw[0] != 0x73 or raw[:5] != HASHED_KEY_MARK)
        ):
            return self._prefix + raw
        return self._encode_slow(key)

    def encode_many(self, keys: Iterable[str | bytes | bytearray | memoryview]) -> list[bytes]:
        """Return ``[self.encode(key) for key in keys]``.

        Raises:
            KeyTypeError: On the first key of a wrong type.
            InvalidKeyError: On the first invalid key.
        """
        encode = self.encode
        return [encode(key) for key in keys]

    def _encode_slow(self, key: object) -> bytes:
        if isinstance(key, str):
            try:
                raw = key.encode()
            except UnicodeEncodeError as exc:
                raise InvalidKeyError(
                    f"key {key[:40]!r} cannot be encoded as UTF-8 "
                    f"(lone surrogate at index {exc.start})"
                ) from None
        elif isinstance(key, (bytes, bytearray, memoryview)):
            raw = bytes(key)
        else:
            raise KeyTypeError(
                f"a key must be str or bytes (or bytearray, memoryview), "
                f"not {type(key).__name__}: {key!r:.60}"
            )
        if not raw:
            raise InvalidKeyError("a key cannot be empty")
        if not self._rules:
            return self._prefix + raw
        problem = self._rule_problem(raw)
        if problem is None and not (self._hash_unsafe and raw.startswith(HASHED_KEY_MARK)):
            return self._prefix + raw
        if self._hash_unsafe:
            digest = blake2b(raw, digest_size=_DIGEST_SIZE).hexdigest().encode()
            return self._prefix + HASHED_KEY_MARK + digest
        assert problem is not None
        raise InvalidKeyError(problem)

    def _rule_problem(self, raw: bytes) -> str | None:
        """Say what is wrong with ``raw`` under memcached's rules, or None if nothing."""
        if 0x20 in raw.translate(_FLAG_BAD):
            offset, byte = next((i, b) for i, b in enumerate(raw) if b <= 0x20 or b == 0x7F)
            return (
                f"key {_short_repr(raw)} has byte {_describe_byte(byte)} at offset {offset}; "
                "memcached keys cannot contain whitespace or control characters "
                "(pass hash_unsafe=True to hash such keys)"
            )
        if len(raw) > self._max_key_length:
            total = len(raw) + len(self._prefix)
            with_prefix = f" with the {len(self._prefix)}-byte prefix" if self._prefix else ""
            return (
                f"key {_short_repr(raw)} is {total} bytes{with_prefix}; memcached keys are "
                f"at most {MAX_KEY_LENGTH} bytes (pass hash_unsafe=True to hash long keys)"
            )
        return None
