"""Turning Python values into ``(payload, flags)`` pairs a cache server can store, and back.

The flags are a 32-bit int: memcached keeps them beside each item, the Redis backend
stores them in a byte before the payload. They hold exactly one type code, laid out as
pymemcache and pylibmc lay out theirs wherever the two meet (so that those clients,
sharing a pool with this one, never unpickle a value that is not a pickle):

====  ==========  ===========================================================
code  type        payload
====  ==========  ===========================================================
0     bytes       the bytes themselves
1     pickle      protocol 5, only with ``pickle=True``; with an HMAC key the
                  payload is a 32-byte HMAC-SHA256 tag and then the pickle
                  (pymemcache's and pylibmc's pickle flag)
2     int         ASCII decimal, so memcached ``incr``/``decr`` and Redis
                  ``INCRBY`` work on it (``bool`` is not an int here: JSON;
                  pymemcache's and pylibmc's ``FLAG_INTEGER``)
16    str         UTF-8 (pymemcache's ``FLAG_TEXT``)
32    float       ``repr()``, so ``nan`` and the infinities round-trip
64    JSON        ``None``, ``bool``, ``list``, ``tuple``, ``dict`` (compact
                  UTF-8 JSON; tuples come back as lists)
====  ==========  ===========================================================

Flag 0x08 says the payload is zlib-compressed (pymemcache's ``FLAG_COMPRESSED``, pylibmc's
``FLAG_ZLIB``); ints are never compressed. Every other bit must be clear.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import pickle as _pickle
import zlib
from collections.abc import Callable
from typing import Any, Final

from ._errors import (
    ConfigError,
    SerializationError,
    SignatureError,
    ValueTooLargeError,
    ValueTypeError,
)

try:
    import orjson
except ImportError:  # pragma: no cover - exercised by the tests through _STDLIB_JSON
    orjson = None  # type: ignore[assignment]

__all__ = (
    "FLAG_COMPRESSED",
    "JSON_IMPL",
    "TYPE_BYTES",
    "TYPE_FLOAT",
    "TYPE_INT",
    "TYPE_JSON",
    "TYPE_PICKLE",
    "TYPE_STR",
    "Serializer",
)

TYPE_BYTES: Final = 0
TYPE_PICKLE: Final = 1
TYPE_INT: Final = 2
TYPE_STR: Final = 16
TYPE_FLOAT: Final = 32
TYPE_JSON: Final = 64
_TYPE_MASK: Final = TYPE_PICKLE | TYPE_INT | TYPE_STR | TYPE_FLOAT | TYPE_JSON
#: Flag bit: the payload is zlib-compressed.
FLAG_COMPRESSED: Final = 8
_KNOWN_FLAGS: Final = _TYPE_MASK | FLAG_COMPRESSED
_PICKLE_PROTOCOL: Final = 5
_TAG_SIZE: Final = 32  # HMAC-SHA256
_MIN_HMAC_KEY: Final = 16
_NO_LIMIT: Final = 1 << 62
# JSON numbers other implementations (orjson among them) read back exactly.
_JSON_INT_MIN: Final = -(1 << 63)
_JSON_INT_MAX: Final = (1 << 64) - 1
_JSON_TYPES: Final = (type(None), bool, list, dict, tuple)

_Codec = tuple[Callable[[Any], bytes], Callable[[bytes], Any], bool]


def _json_problem(value: Any, depth: int = 0) -> str | None:
    """Say why ``value`` would not come back from JSON as it went in, or None.

    Allowed: None, bool, str, int in the 64-bit range, finite float, and lists,
    tuples and dicts with str keys of those (subclasses count as their base type).
    """
    if depth > 250:
        return "it is nested more than 250 levels deep"
    if value is None or isinstance(value, (bool, str)):
        return None
    if isinstance(value, int):
        if _JSON_INT_MIN <= value <= _JSON_INT_MAX:
            return None
        return (
            f"an int of {value.bit_length()} bits is outside the 64-bit range "
            "JSON readers keep exactly"
        )
    if isinstance(value, float):
        return None if math.isfinite(value) else f"the float {value!r} has no JSON form"
    if isinstance(value, (list, tuple)):
        for item in value:
            problem = _json_problem(item, depth + 1)
            if problem is not None:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"the dict key {key!r} is not a str"
            problem = _json_problem(item, depth + 1)
            if problem is not None:
                return problem
        return None
    return f"it holds a value of type {type(value).__name__} ({value!r:.60})"


def _stdlib_dumps(value: Any) -> bytes:
    problem = _json_problem(value)
    if problem is not None:
        raise TypeError(problem)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _stdlib_loads(payload: bytes) -> Any:
    return json.loads(payload)


_STDLIB_JSON: _Codec = (_stdlib_dumps, _stdlib_loads, False)

if orjson is not None:
    _ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS

    def _orjson_dumps(value: Any) -> bytes:
        return orjson.dumps(value, option=_ORJSON_OPTIONS)

    # orjson also writes UUIDs and enums as strings and nan as null, silently; each
    # encoding is therefore read back and compared (in C; the Python walk runs only
    # when they differ, e.g. because a tuple came back as a list).
    _JSON: _Codec = (_orjson_dumps, orjson.loads, True)
    #: Which JSON implementation the serializer uses: "orjson" or "json".
    JSON_IMPL = "orjson"
else:  # pragma: no cover
    _JSON = _STDLIB_JSON
    JSON_IMPL = "json"


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum} or None, got {value!r}")


class Serializer:
    """Encodes values as ``(payload, flags)`` and decodes them back.

    bytes, str, int and float are stored natively (other clients and the servers'
    own ``incr``/``decr`` can read them); None, bool, lists, tuples and dicts as JSON
    (tuples come back as lists; subclasses of str, int, float, list and dict inside
    them come back as their base type). ``bytearray`` and ``memoryview`` are stored as
    bytes and come back as bytes. Anything else, or JSON contents that would not come
    back unchanged (non-str dict keys, nan, ints beyond 64 bits, UUIDs, ...), raises
    :class:`ValueTypeError` unless ``pickle=True``, in which case it is pickled; with
    pickle on, a top-level subclass (an ``IntEnum``, an ``OrderedDict``) is pickled
    too so that it keeps its type, without pickle it is stored as its base type.

    Pickles run code when they are loaded: enable ``pickle`` only when every writer
    of the cache is trusted, and give an ``hmac_key`` (shared by all readers and
    writers) so that a pickle that was not written with the key is rejected with
    :class:`SignatureError` before it is unpickled. The tag covers the flags and the
    stored (possibly compressed) bytes, so nothing is decompressed or unpickled
    before it is verified.

    Args:
        pickle: Allow pickling values that have no native or JSON form, and reading
            pickled values.
        hmac_key: Sign pickles with HMAC-SHA256 and verify them before loading; at
            least 16 bytes. Needs ``pickle=True``.
        compress_threshold: Compress payloads of at least this many bytes with zlib,
            keeping the result only when it is smaller. None never compresses. Ints
            are never compressed (the servers' counters must be able to read them).
        compress_level: zlib level, 0 to 9 (or -1 for zlib's default).
        max_size: Refuse payloads (after compression) longer than this many bytes.
            None means no limit.

    Raises:
        ConfigError: An option is invalid.
    """

    __slots__ = (
        "_hmac_key",
        "_json_dumps",
        "_json_loads",
        "_json_verify",
        "_level",
        "_max_size",
        "_pickle",
        "_threshold",
        "compress_level",
        "compress_threshold",
        "max_size",
    )

    def __init__(
        self,
        *,
        pickle: bool = False,
        hmac_key: bytes | None = None,
        compress_threshold: int | None = 1024,
        compress_level: int = 1,
        max_size: int | None = None,
    ) -> None:
        if hmac_key is not None:
            if not pickle:
                raise ConfigError("hmac_key signs pickles: it needs pickle=True")
            if not isinstance(hmac_key, (bytes, bytearray)):
                raise ConfigError(f"hmac_key must be bytes, not {type(hmac_key).__name__}")
            if len(hmac_key) < _MIN_HMAC_KEY:
                raise ConfigError(
                    f"hmac_key must be at least {_MIN_HMAC_KEY} bytes, got {len(hmac_key)}"
                )
            hmac_key = bytes(hmac_key)
        if compress_threshold is not None:
            _check_int("compress_threshold", compress_threshold, 0)
        if (
            isinstance(compress_level, bool)
            or not isinstance(compress_level, int)
            or not -1 <= compress_level <= 9
        ):
            raise ConfigError(f"compress_level must be an int from -1 to 9, got {compress_level!r}")
        if max_size is not None:
            _check_int("max_size", max_size, 1)
        self._pickle = bool(pickle)
        self._hmac_key = hmac_key
        self.compress_threshold = compress_threshold
        self.compress_level = compress_level
        self.max_size = max_size
        self._threshold = _NO_LIMIT if compress_threshold is None else compress_threshold
        self._level = compress_level
        self._max_size = _NO_LIMIT if max_size is None else max_size
        self._json_dumps, self._json_loads, self._json_verify = _JSON

    @property
    def pickle(self) -> bool:
        """Whether pickled values may be written and read."""
        return self._pickle

    @property
    def signed(self) -> bool:
        """Whether pickles are signed and verified with an HMAC key."""
        return self._hmac_key is not None

    def __repr__(self) -> str:
        return (
            f"Serializer(pickle={self._pickle}, signed={self.signed}, "
            f"compress_threshold={self.compress_threshold}, "
            f"compress_level={self.compress_level}, max_size={self.max_size})"
        )

    def dumps(self, value: Any) -> tuple[bytes, int]:
        """Encode ``value`` for storage.

        Args:
            value: The value to store.

        Returns:
            ``(payload, flags)``.

        Raises:
            ValueTypeError: ``value`` has no native or JSON form and pickle is off.
            ValueTooLargeError: The payload is longer than ``max_size``.
        """
        cls = type(value)
        if cls is bytes:
            payload: bytes = value
            flags = TYPE_BYTES
        elif cls is str:
            try:
                payload = value.encode()
            except UnicodeEncodeError:
                return self._dumps_other(value)
            flags = TYPE_STR
        else:
            return self._dumps_other(value)
        if len(payload) >= self._threshold:
            payload, flags = self._compress(payload, flags)
        if len(payload) > self._max_size:
            raise ValueTooLargeError(len(payload), self._max_size)
        return payload, flags

    def loads(self, payload: bytes | bytearray | memoryview, flags: int) -> Any:
        """Decode a value stored by :meth:`dumps`.

        Args:
            payload: The stored bytes.
            flags: The stored flags.

        Returns:
            The value.

        Raises:
            SerializationError: Unknown flags, corrupt data, or a pickle while pickle
                is off (it is never unpickled).
            SignatureError: A pickle whose HMAC tag is missing or wrong (it is never
                unpickled).
        """
        if flags == TYPE_BYTES:
            return payload if type(payload) is bytes else bytes(payload)
        if flags == TYPE_STR:
            try:
                return payload.decode() if type(payload) is bytes else bytes(payload).decode()
            except UnicodeDecodeError as exc:
                raise SerializationError(f"stored str is not valid UTF-8: {exc}") from None
        return self._loads_other(bytes(payload), flags)

    # -- the less common types -------------------------------------------------------

    def _dumps_other(self, value: Any) -> tuple[bytes, int]:
        cls = type(value)
        if cls is int:
            try:
                payload = b"%d" % value
            except ValueError:  # more digits than sys.get_int_max_str_digits() allows
                return self._dumps_pickle(value, "the int has too many digits for decimal")
            if len(payload) > self._max_size:
                raise ValueTooLargeError(len(payload), self._max_size)
            return payload, TYPE_INT  # never compressed: the servers' counters read it
        if cls is float:
            return self._finish(repr(value).encode(), TYPE_FLOAT)
        if cls in _JSON_TYPES:
            try:
                payload = self._dumps_json(value)
            except _NoJsonForm as exc:
                return self._dumps_pickle(value, f"it has no exact JSON form: {exc}")
            return self._finish(payload, TYPE_JSON)
        if cls is bytearray or cls is memoryview:
            return self._finish(bytes(value), TYPE_BYTES)
        if cls is str:  # dumps found a lone surrogate
            return self._dumps_pickle(value, "the str holds a lone surrogate (not UTF-8)")
        if self._pickle:
            return self._dumps_pickle(value, "")
        base = _base_value(value)
        if base is not None:
            return self.dumps(base)
        return self._dumps_pickle(value, f"{cls.__name__} has no native or JSON form")

    def _finish(self, payload: bytes, flags: int) -> tuple[bytes, int]:
        if len(payload) >= self._threshold:
            payload, flags = self._compress(payload, flags)
        if len(payload) > self._max_size:
            raise ValueTooLargeError(len(payload), self._max_size)
        return payload, flags

    def _compress(self, payload: bytes, flags: int) -> tuple[bytes, int]:
        packed = zlib.compress(payload, self._level)
        if len(packed) < len(payload):
            return packed, flags | FLAG_COMPRESSED
        return payload, flags

    def _dumps_json(self, value: Any) -> bytes:
        try:
            payload = self._json_dumps(value)
        except (TypeError, ValueError, RecursionError) as exc:
            # orjson refuses some values the stdlib writes exactly (namedtuples):
            # the walk decides, so both implementations accept the same values.
            problem = _json_problem(value)
            if problem is not None:
                raise _NoJsonForm(problem) from None
            if self._json_dumps is _stdlib_dumps:  # pragma: no cover - walk and json agree
                raise _NoJsonForm(str(exc)) from None
            return _stdlib_dumps(value)
        if self._json_verify:
            try:
                same = self._json_loads(payload) == value
            except (ValueError, RecursionError):  # pragma: no cover - orjson reads its own
                same = False
            if not same:  # a tuple that came back as a list, or a real difference
                problem = _json_problem(value)
                if problem is not None:
                    raise _NoJsonForm(problem)
        return payload

    def _dumps_pickle(self, value: Any, why: str) -> tuple[bytes, int]:
        if not self._pickle:
            raise ValueTypeError(
                f"cannot store a {type(value).__name__} without pickle: {why}; store "
                "bytes, str, int, float, None, bool, or lists, tuples and dicts of them, "
                "or enable pickle (pickle=True)"
            )
        try:
            data = _pickle.dumps(value, protocol=_PICKLE_PROTOCOL)
        except Exception as exc:
            raise ValueTypeError(f"cannot pickle a {type(value).__name__}: {exc}") from exc
        flags = TYPE_PICKLE
        if len(data) >= self._threshold:
            data, flags = self._compress(data, flags)
        if self._hmac_key is not None:
            data = self._tag(data, flags) + data
        if len(data) > self._max_size:
            raise ValueTooLargeError(len(data), self._max_size)
        return data, flags

    def _tag(self, data: bytes | memoryview, flags: int) -> bytes:
        assert self._hmac_key is not None
        mac = hmac.new(self._hmac_key, flags.to_bytes(4, "big"), hashlib.sha256)
        mac.update(data)
        return mac.digest()

    def _loads_other(self, payload: bytes, flags: int) -> Any:
        if flags < 0 or flags & ~_KNOWN_FLAGS:
            raise SerializationError(f"unknown flags 0x{flags:x} on a stored value")
        kind = flags & _TYPE_MASK
        if kind & (kind - 1):  # more than one type bit
            raise SerializationError(f"unknown type code {kind} in the flags 0x{flags:x}")
        if kind == TYPE_PICKLE:
            return self._loads_pickle(payload, flags)
        if flags & FLAG_COMPRESSED:
            payload = self._decompress(payload)
        try:
            if kind == TYPE_INT:
                return int(payload)
            if kind == TYPE_FLOAT:
                return float(payload)
            if kind == TYPE_JSON:
                return self._json_loads(payload)
            if kind == TYPE_STR:
                return payload.decode()
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            names = {TYPE_INT: "int", TYPE_FLOAT: "float", TYPE_JSON: "JSON", TYPE_STR: "str"}
            raise SerializationError(
                f"stored {names[kind]} value is corrupt ({payload[:40]!r}): {exc}"
            ) from None
        return payload  # TYPE_BYTES, compressed

    def _decompress(self, payload: bytes | memoryview) -> bytes:
        try:
            return zlib.decompress(payload)
        except zlib.error as exc:
            raise SerializationError(f"stored value is not valid zlib data: {exc}") from None

    def _loads_pickle(self, payload: bytes, flags: int) -> Any:
        if not self._pickle:
            raise SerializationError(
                "stored value is a pickle, but this serializer does not read pickles "
                "(it was not unpickled; create the client with pickle=True to read it)"
            )
        data: bytes | memoryview = payload
        if self._hmac_key is not None:
            if len(payload) < _TAG_SIZE:
                raise SignatureError("stored pickle has no HMAC tag; it was not unpickled")
            view = memoryview(payload)
            data = view[_TAG_SIZE:]
            if not hmac.compare_digest(view[:_TAG_SIZE], self._tag(data, flags)):
                raise SignatureError(
                    "stored pickle failed its HMAC check (written without this key, "
                    "or altered); it was not unpickled"
                )
        if flags & FLAG_COMPRESSED:
            data = self._decompress(data)
        try:
            return _pickle.loads(data)
        except Exception as exc:
            raise SerializationError(f"stored pickle cannot be loaded: {exc!r}") from exc


class _NoJsonForm(Exception):  # noqa: N818 (control flow, never escapes this module)
    """A value would not come back from JSON unchanged; the message says why."""


def _base_value(value: Any) -> Any:
    """The value of a subclass of a stored type as its base type, or None."""
    # The base types' own conversions, so an overridden __str__ or __int__ is not used.
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, bytes):
        return bytes(memoryview(value))
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    return None
