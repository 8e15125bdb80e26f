"""cachelib's parts without a server: errors, key rules, value encoding, the memory backend."""

from __future__ import annotations

import collections
import contextlib
import datetime
import enum
import hashlib
import math
import os
import pickle
import re
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import run_threads
from hypothesis import given, settings
from hypothesis import strategies as st

from cachelib import _values
from cachelib._errors import (
    CacheError,
    ConfigError,
    InvalidKeyError,
    KeyTypeError,
    SerializationError,
    ServerUnavailable,
    SignatureError,
    ValueTooLargeError,
    ValueTypeError,
)
from cachelib._keys import KeyCodec
from cachelib._memory import ENTRY_OVERHEAD, MemoryBackend
from cachelib._values import FLAG_COMPRESSED, Serializer

relaxed = settings(max_examples=300, deadline=None)
HMAC_KEY = b"0123456789abcdef-test-key"

# ---------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (ConfigError, ValueError),
        (InvalidKeyError, ValueError),
        (KeyTypeError, TypeError),
        (ValueTypeError, TypeError),
        (ValueTooLargeError, ValueError),
        (SerializationError, ValueError),
        (SignatureError, SerializationError),
        (ServerUnavailable, ConnectionError),
    ],
)
def test_error_hierarchy(cls: type[Exception], builtin: type[Exception]) -> None:
    assert issubclass(cls, CacheError)
    assert issubclass(cls, builtin)


def test_value_too_large_carries_size_and_limit() -> None:
    err = ValueTooLargeError(2000, 1024)
    assert (err.size, err.limit) == (2000, 1024)
    assert "2000" in str(err) and "1024" in str(err)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.size, copy.limit, str(copy)) == (2000, 1024, str(err))


def test_server_unavailable_names_server_and_chains_cause() -> None:
    cause = ConnectionRefusedError(111, "refused")
    with pytest.raises(ServerUnavailable) as info:
        try:
            raise cause
        except OSError as exc:
            raise ServerUnavailable("10.0.0.5:11211") from exc
    assert info.value.server == "10.0.0.5:11211"
    assert "10.0.0.5:11211" in str(info.value)
    assert info.value.__cause__ is cause
    copy = pickle.loads(pickle.dumps(ServerUnavailable("a:1", "timed out")))
    assert (copy.server, str(copy)) == ("a:1", "timed out")


# ---------------------------------------------------------------------------------------
# keys


def test_key_types_and_prefix() -> None:
    codec = KeyCodec()
    assert codec.encode("user:42") == b"user:42"
    assert codec.encode(b"user:42") == b"user:42"
    assert codec.encode(bytearray(b"user:42")) == b"user:42"
    assert codec.encode(memoryview(b"user:42")) == b"user:42"
    assert type(codec.encode(bytearray(b"k"))) is bytes
    assert KeyCodec("app:").encode("k") == b"app:k"
    assert KeyCodec(b"app:").encode(b"k") == b"app:k"
    assert KeyCodec("é:").prefix == "é:".encode()


def test_key_subclasses_are_accepted() -> None:
    class Name(str):
        def __str__(self) -> str:
            return "not this"

    class Raw(bytes):
        pass

    codec = KeyCodec("p:")
    assert codec.encode(Name("k1")) == b"p:k1"
    assert codec.encode(Raw(b"k2")) == b"p:k2"


@pytest.mark.parametrize("key", [42, None, 1.5, ["k"], ("k",), object(), True])
def test_key_of_wrong_type(key: Any) -> None:
    with pytest.raises(KeyTypeError, match=type(key).__name__):
        KeyCodec().encode(key)
    with pytest.raises(TypeError):
        KeyCodec(memcached_rules=False).encode(key)


@pytest.mark.parametrize("options", [{}, {"memcached_rules": False}, {"hash_unsafe": True}])
@pytest.mark.parametrize("key", ["", b"", bytearray(), memoryview(b"")])
def test_empty_key_is_always_invalid(options: dict[str, Any], key: Any) -> None:
    with pytest.raises(InvalidKeyError, match="empty"):
        KeyCodec("prefix:", **options).encode(key)


def test_key_length_limit() -> None:
    codec = KeyCodec()
    assert codec.encode("k" * 250) == b"k" * 250
    assert codec.encode(b"k" * 250) == b"k" * 250
    for key in ("k" * 251, b"k" * 251):
        with pytest.raises(InvalidKeyError, match=r"is 251 bytes.*at most 250"):
            codec.encode(key)
    with pytest.raises(InvalidKeyError, match="is 1000 bytes"):
        codec.encode("k" * 1000)


def test_prefix_counts_toward_the_limit() -> None:
    codec = KeyCodec("0123456789")
    assert codec.encode("k" * 240) == b"0123456789" + b"k" * 240
    with pytest.raises(InvalidKeyError, match="251 bytes with the 10-byte prefix"):
        codec.encode("k" * 241)


def test_unicode_keys_count_bytes() -> None:
    codec = KeyCodec()
    assert codec.encode("é" * 125) == "é".encode() * 125  # 250 bytes
    with pytest.raises(InvalidKeyError, match="251 bytes"):
        codec.encode("é" * 125 + "a")
    assert codec.encode("日本語キー") == "日本語キー".encode()
    assert codec.encode("€" * 83) == "€".encode() * 83  # 249 bytes
    with pytest.raises(InvalidKeyError, match="252 bytes"):
        codec.encode("€" * 84)
    # bytes from 0x80 up are fine, even when they are not UTF-8
    assert codec.encode(b"\x80\xff\xc3") == b"\x80\xff\xc3"
    # U+0085 and U+00A0 are whitespace to Python but bytes >= 0x80 in UTF-8
    assert codec.encode("a\u0085b\u00a0c") == "a\u0085b\u00a0c".encode()


@pytest.mark.parametrize(
    ("char", "name"),
    [
        (" ", "0x20 (space)"),
        ("\t", "0x09 (tab)"),
        ("\n", "0x0a (newline)"),
        ("\r", "0x0d (carriage return)"),
        ("\x00", "0x00 (control character)"),
        ("\x1f", "0x1f (control character)"),
        ("\x7f", "0x7f (DEL)"),
    ],
)
def test_whitespace_and_control_bytes_are_refused(char: str, name: str) -> None:
    codec = KeyCodec("p:")
    for key in (f"user{char}42", f"user{char}42".encode()):
        with pytest.raises(InvalidKeyError, match=re.escape(f"byte {name} at offset 4")):
            codec.encode(key)
    # after a multi-byte character, the offset counts bytes
    with pytest.raises(InvalidKeyError, match="at offset 2"):
        codec.encode(f"é{char}")
    assert KeyCodec(memcached_rules=False).encode(f"user{char}42") == f"user{char}42".encode()


def test_printable_ascii_edges_are_allowed() -> None:
    codec = KeyCodec()
    every = bytes(range(0x21, 0x7F))
    assert codec.encode(every) == every
    assert codec.encode(every.decode()) == every


def test_lone_surrogate_key() -> None:
    codecs = [KeyCodec(), KeyCodec(memcached_rules=False), KeyCodec(hash_unsafe=True)]
    for codec in codecs:
        with pytest.raises(InvalidKeyError, match="surrogate at index 1"):
            codec.encode("a\udc80b")


def test_without_memcached_rules_anything_nonempty_goes() -> None:
    codec = KeyCodec("p ", memcached_rules=False)
    assert codec.encode("k" * 10_000) == b"p " + b"k" * 10_000
    assert codec.encode("a b\nc") == b"p a b\nc"
    assert codec.encode(b"sk:h:x") == b"p sk:h:x"


def _hashed(raw: bytes, prefix: bytes = b"") -> bytes:
    return prefix + b"sk:h:" + hashlib.blake2b(raw, digest_size=20).hexdigest().encode()


def test_hash_unsafe_hashes_only_keys_that_break_the_rules() -> None:
    codec = KeyCodec("app:", hash_unsafe=True)
    assert codec.encode("fine") == b"app:fine"
    long = "x" * 300
    hashed = codec.encode(long)
    assert hashed == _hashed(long.encode(), b"app:")
    assert len(hashed) == 4 + 45
    assert codec.encode("with space") == _hashed(b"with space", b"app:")
    assert codec.encode("tab\there") == _hashed(b"tab\there", b"app:")
    # str and bytes of the same key, and another codec (process), agree
    assert codec.encode(long.encode()) == hashed
    assert KeyCodec("app:", hash_unsafe=True).encode(long) == hashed
    assert codec.encode("y" * 300) != hashed
    # 246 bytes + the 4-byte prefix fit; 247 do not
    assert codec.encode("z" * 246) == b"app:" + b"z" * 246
    assert codec.encode("z" * 247) == _hashed(b"z" * 247, b"app:")


def test_hash_unsafe_hashes_keys_that_look_hashed() -> None:
    codec = KeyCodec(hash_unsafe=True)
    hashed = codec.encode("k" * 300)
    # Someone stores a key spelled exactly like that digest: it must not alias it.
    assert codec.encode(hashed) != hashed
    assert codec.encode(hashed) == _hashed(hashed)
    assert codec.encode("sk:h:abc") == _hashed(b"sk:h:abc")
    assert codec.encode(b"sk:h:") == _hashed(b"sk:h:")
    # Only a leading mark matters; without hash_unsafe the key is taken as it is.
    assert codec.encode("a-sk:h:b") == b"a-sk:h:b"
    assert codec.encode("sk:hx") == b"sk:hx"
    assert KeyCodec().encode("sk:h:abc") == b"sk:h:abc"


def test_key_codec_config_errors() -> None:
    with pytest.raises(ConfigError, match="needs memcached_rules"):
        KeyCodec(hash_unsafe=True, memcached_rules=False)
    with pytest.raises(ConfigError, match="whitespace or control"):
        KeyCodec("my app:")
    with pytest.raises(ConfigError, match="no room for a key"):
        KeyCodec("p" * 250)
    assert KeyCodec("p" * 249).encode("k") == b"p" * 249 + b"k"
    assert KeyCodec("p" * 205, hash_unsafe=True).encode("k" * 300) == _hashed(
        b"k" * 300, b"p" * 205
    )
    with pytest.raises(ConfigError, match="hashed key"):
        KeyCodec("p" * 206, hash_unsafe=True)
    with pytest.raises(KeyTypeError, match="int"):
        KeyCodec(5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        KeyCodec("\udc80")


def test_encode_many() -> None:
    codec = KeyCodec("p:")
    assert codec.encode_many(["a", b"b", bytearray(b"c")]) == [b"p:a", b"p:b", b"p:c"]
    assert codec.encode_many(f"k{i}" for i in range(3)) == [b"p:k0", b"p:k1", b"p:k2"]
    assert codec.encode_many([]) == []
    with pytest.raises(InvalidKeyError, match="space"):
        codec.encode_many(["a", "b c"])
    with pytest.raises(KeyTypeError):
        codec.encode_many(["a", 1])  # type: ignore[list-item]


def _reference_rules(raw: bytes, room: int) -> bool:
    return 0 < len(raw) <= room and all(b > 0x20 and b != 0x7F for b in raw)


@relaxed
@given(
    key=st.one_of(
        st.binary(max_size=260),
        st.text(max_size=130),
        st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=260),
    ),
    prefix=st.sampled_from([b"", b"p:", b"x" * 200]),
)
def test_key_rules_match_a_plain_reference(key: str | bytes, prefix: bytes) -> None:
    """The fast path and the slow path agree with a byte-by-byte reading of the rules."""
    raw = key.encode() if isinstance(key, str) else key
    room = 250 - len(prefix)
    strict = KeyCodec(prefix)
    hashing = KeyCodec(prefix, hash_unsafe=True)
    if _reference_rules(raw, room):
        assert strict.encode(key) == prefix + raw
        expected = _hashed(raw, prefix) if raw.startswith(b"sk:h:") else prefix + raw
        assert hashing.encode(key) == expected
    elif not raw:
        with pytest.raises(InvalidKeyError):
            hashing.encode(key)
    else:
        with pytest.raises(InvalidKeyError):
            strict.encode(key)
        assert hashing.encode(key) == _hashed(raw, prefix)


# ---------------------------------------------------------------------------------------
# values


@pytest.fixture(params=["orjson", "json"])
def json_impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with orjson and with the stdlib fallback."""
    if request.param == "orjson":
        assert _values.orjson is not None, "orjson is a test dependency: it must be installed"
        monkeypatch.setattr(_values, "_JSON", _values._JSON)
    else:
        monkeypatch.setattr(_values, "_JSON", _values._STDLIB_JSON)
    return str(request.param)


class _Marker:
    """Unpickling this calls _mark(): a test can tell that something was unpickled."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_mark, ())


UNPICKLED: list[str] = []


def _mark() -> str:
    UNPICKLED.append("unpickled")
    return "unpickled"


@pytest.fixture()
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail if anything is unpickled while the test runs."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pickle.loads was called")

    UNPICKLED.clear()
    monkeypatch.setattr(pickle, "loads", refuse)
    yield
    assert UNPICKLED == []


class Color(enum.IntEnum):
    RED = 1


class Mood(str, enum.Enum):
    HAPPY = "happy"


class Shade(enum.Enum):
    DARK = "dark"


Point = collections.namedtuple("Point", "x y")

ROUND_TRIPS: list[tuple[Any, int]] = [
    (b"", 0),
    (b"\x00\xff" * 10, 0),
    ("", 16),
    ("hello", 16),
    ("héllo wörld ✓ 日本 🎉", 16),
    (0, 2),
    (42, 2),
    (-7, 2),
    (2**64 - 1, 2),
    (2**200, 2),
    (-(2**200), 2),
    (0.0, 32),
    (1.5, 32),
    (0.1 + 0.2, 32),
    (-1e-300, 32),
    (1.7976931348623157e308, 32),
    (math.inf, 32),
    (-math.inf, 32),
    (None, 64),
    (True, 64),
    (False, 64),
    ([], 64),
    ({}, 64),
    ([1, "two", 3.0, None, True, [False]], 64),
    ({"name": "Ada", "tags": ["a", "é"], "n": {"deep": [1, {"x": None}]}}, 64),
    ([2**64 - 1, -(2**63)], 64),
]


@pytest.mark.parametrize(("value", "kind"), ROUND_TRIPS)
def test_round_trip(json_impl: str, value: Any, kind: int) -> None:
    for serializer in (Serializer(), Serializer(pickle=True, hmac_key=HMAC_KEY)):
        payload, flags = serializer.dumps(value)
        assert type(payload) is bytes
        assert flags & ~FLAG_COMPRESSED == kind
        assert 0 <= flags < 256  # the Redis backend stores the flags in one byte
        assert not flags & 1  # pymemcache and pylibmc would unpickle it
        back = serializer.loads(payload, flags)
        assert back == value
        assert type(back) is type(value)


def test_flag_layout_matches_pymemcache_and_pylibmc() -> None:
    assert (_values.TYPE_BYTES, _values.TYPE_PICKLE, _values.TYPE_INT) == (0, 1, 2)
    assert (_values.TYPE_STR, _values.TYPE_FLOAT, _values.TYPE_JSON) == (16, 32, 64)
    assert FLAG_COMPRESSED == 8
    # Every flags value 0..255 is one type code, optionally compressed, or refused.
    valid = {kind | extra for kind in (0, 1, 2, 16, 32, 64) for extra in (0, FLAG_COMPRESSED)}
    s = Serializer(pickle=True)
    for flags in range(256):
        if flags in valid:
            continue
        with pytest.raises(SerializationError, match=f"0x{flags:x}"):
            s.loads(b"1", flags)


STR_SERIALIZERS = [
    Serializer(),
    Serializer(compress_threshold=0),
    Serializer(pickle=True, hmac_key=HMAC_KEY, compress_threshold=16),
]


@relaxed
@given(text=st.one_of(st.text(), st.text(alphabet="ab", min_size=16, max_size=2000)))
def test_str_flags_never_say_pickle(text: str) -> None:
    """pymemcache and pylibmc unpickle anything with flag bit 1: a str must never have it."""
    for s in STR_SERIALIZERS:
        payload, flags = s.dumps(text)
        assert flags & ~FLAG_COMPRESSED == 16
        assert not flags & 1
        assert s.loads(payload, flags) == text
    # a str subclass without pickle is stored as its str
    assert Serializer().dumps(Mood.HAPPY) == (b"happy", 16)


def test_pymemcache_reads_our_bytes_int_and_str() -> None:
    from pymemcache.serde import CompressedSerde
    from pymemcache.serde import python_memcache_deserializer as deserialize
    s = Serializer(compress_threshold=None)
    values: list[tuple[Any, int]] = [
        (b"", 0),
        (b"\x00\xff raw", 0),
        (0, 2),
        (-7, 2),
        (2**64 - 1, 2),
        (2**200, 2),
        ("", 16),
        ("héllo wörld ✓ 日本 🎉", 16),
    ]
    for value, expected_flags in values:
        payload, flags = s.dumps(value)
        assert flags == expected_flags
        back = deserialize(b"key", payload, flags)
        assert back == value and type(back) is type(value)
    # pymemcache's compressing serde reads our compressed bytes and str too
    squeezing = Serializer(compress_threshold=0)
    for value in (b"a" * 5000, "é" * 5000):
        payload, flags = squeezing.dumps(value)
        assert flags & FLAG_COMPRESSED
        assert CompressedSerde().deserialize(b"key", payload, flags) == value


def test_native_payloads_are_plain() -> None:
    s = Serializer()
    value = b"x" * 100
    assert s.dumps(value)[0] is value  # no copy
    assert s.dumps("é") == ("é".encode(), 16)
    assert s.dumps(42) == (b"42", 2)
    assert s.dumps(-42) == (b"-42", 2)
    assert s.dumps(1.5) == (b"1.5", 32)
    assert s.dumps(True) == (b"true", 64)
    assert s.dumps(None) == (b"null", 64)
    assert s.dumps({"é": [1]}) == ('{"é":[1]}'.encode(), 64)  # compact, UTF-8
    assert s.loads(b"123", 2) == 123  # what memcached incr leaves behind


def test_float_specials_round_trip() -> None:
    s = Serializer()
    assert s.dumps(math.nan) == (b"nan", 32)
    assert math.isnan(s.loads(*s.dumps(math.nan)))
    assert s.loads(*s.dumps(math.inf)) == math.inf
    negative_zero = s.loads(*s.dumps(-0.0))
    assert negative_zero == 0.0 and math.copysign(1.0, negative_zero) == -1.0


def test_bool_is_not_int() -> None:
    s = Serializer()
    for value in (True, False):
        payload, flags = s.dumps(value)
        assert flags == 64
        assert s.loads(payload, flags) is value
    assert s.dumps(1)[1] == 2


def test_tuples_come_back_as_lists(json_impl: str) -> None:
    s = Serializer()
    assert s.loads(*s.dumps((1, 2))) == [1, 2]
    assert s.loads(*s.dumps({"t": (1, (2, 3))})) == {"t": [1, [2, 3]]}
    assert s.loads(*s.dumps([Point(1, 2)])) == [[1, 2]]
    # with pickle on, tuples still go as JSON (readable by any client)
    assert Serializer(pickle=True).dumps((1, 2))[1] == 64


def test_bytes_likes_come_back_as_bytes() -> None:
    s = Serializer()
    assert s.loads(*s.dumps(bytearray(b"ab"))) == b"ab"
    assert s.loads(*s.dumps(memoryview(b"cd"))) == b"cd"
    assert s.loads(bytearray(b"ef"), 0) == b"ef"
    assert type(s.loads(memoryview(b"gh"), 0)) is bytes
    assert s.loads(memoryview(b"12"), 2) == 12


def test_subclasses_without_pickle_store_their_base_value(json_impl: str) -> None:
    s = Serializer()
    assert s.dumps(Color.RED) == (b"1", 2)
    assert type(s.loads(*s.dumps(Color.RED))) is int
    assert s.loads(*s.dumps(Mood.HAPPY)) == "happy"
    assert s.loads(*s.dumps(collections.OrderedDict(a=1))) == {"a": 1}
    assert s.loads(*s.dumps(Point(1, 2))) == [1, 2]
    assert s.loads(*s.dumps({"c": Color.RED, "m": Mood.HAPPY})) == {"c": 1, "m": "happy"}


def test_subclasses_with_pickle_keep_their_type() -> None:
    s = Serializer(pickle=True)
    for value in (Color.RED, Mood.HAPPY, collections.OrderedDict(a=1), Point(1, 2)):
        payload, flags = s.dumps(value)
        assert flags == 1
        back = s.loads(payload, flags)
        assert back == value and type(back) is type(value)


NOT_JSON: list[Any] = [
    {1, 2},
    frozenset(),
    object(),
    datetime.datetime(2024, 1, 1),
    [math.nan],
    {"x": math.inf},
    {1: "int key"},
    {None: 1},
    [uuid.UUID(int=7)],
    [Shade.DARK],
    [2**64],
    [-(2**63) - 1],
    {"big": 10**400},  # too big for a float, too
    [datetime.date(2024, 1, 1)],
    [b"bytes"],
    [{1, 2}],
    "\ud800",  # a lone surrogate is no UTF-8
    10**5000,  # more digits than int() converts
]


@pytest.mark.parametrize("value", NOT_JSON, ids=lambda v: type(v).__name__)
def test_values_without_an_exact_form_need_pickle(json_impl: str, value: Any) -> None:
    with pytest.raises(ValueTypeError, match="pickle=True"):
        Serializer().dumps(value)
    s = Serializer(pickle=True, hmac_key=HMAC_KEY)
    payload, flags = s.dumps(value)
    assert flags & ~FLAG_COMPRESSED == 1
    back = s.loads(payload, flags)
    assert type(back) is type(value)
    if type(value) is not object:  # [nan] != [nan] once the nan is a new object
        assert back == value or repr(back) == repr(value)


def test_recursive_value_is_refused(json_impl: str) -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueTypeError):
        Serializer().dumps(loop)
    s = Serializer(pickle=True)
    back = s.loads(*s.dumps(loop))
    assert back[0] is back


def test_json_implementations_read_each_other(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _values.orjson is not None, "orjson is a test dependency: it must be installed"
    value = {"a": [1, 2.5, "é", None, True], "b": {"c": [2**63]}}
    fast = Serializer()
    monkeypatch.setattr(_values, "_JSON", _values._STDLIB_JSON)
    slow = Serializer()
    assert slow.loads(*fast.dumps(value)) == value
    assert fast.loads(*slow.dumps(value)) == value


def test_pickle_is_opt_in(no_unpickling: None) -> None:
    payload, flags = Serializer(pickle=True).dumps(_Marker())
    assert flags == 1
    with pytest.raises(SerializationError, match="not unpickled") as info:
        Serializer().loads(payload, flags)
    assert not isinstance(info.value, SignatureError)
    with pytest.raises(ValueTypeError, match="_Marker"):
        Serializer().dumps(_Marker())


def test_pickle_round_trip_runs_reduce() -> None:
    UNPICKLED.clear()
    s = Serializer(pickle=True)
    assert s.loads(*s.dumps(_Marker())) == "unpickled"
    assert UNPICKLED == ["unpickled"]


def test_signed_pickle_layout() -> None:
    s = Serializer(pickle=True, hmac_key=HMAC_KEY)
    payload, flags = s.dumps({1, 2})
    assert flags == 1
    data = pickle.dumps({1, 2}, protocol=5)
    assert payload[32:] == data
    assert s.loads(payload, flags) == {1, 2}


def test_signature_checked_before_unpickling(no_unpickling: None) -> None:
    signer = Serializer(pickle=True, hmac_key=HMAC_KEY)
    payload, flags = signer.dumps(_Marker())
    reader = Serializer(pickle=True, hmac_key=HMAC_KEY)
    for i in (0, 31, 32, len(payload) - 1):  # in the tag, and in the pickle
        tampered = bytearray(payload)
        tampered[i] ^= 0x01
        with pytest.raises(SignatureError, match="not unpickled"):
            reader.loads(bytes(tampered), flags)
    with pytest.raises(SignatureError):  # the compression flag is signed too
        reader.loads(payload, flags | FLAG_COMPRESSED)
    with pytest.raises(SignatureError, match="no HMAC tag"):
        reader.loads(payload[:31], flags)
    with pytest.raises(SignatureError):
        reader.loads(b"", flags)
    other = Serializer(pickle=True, hmac_key=b"another key of 16+ bytes")
    with pytest.raises(SignatureError):
        other.loads(payload, flags)
    # a pickle written without a key is rejected by a reader with one
    unsigned = Serializer(pickle=True).dumps(_Marker())
    with pytest.raises(SignatureError):
        reader.loads(*unsigned)


def test_signed_compressed_pickle_is_verified_before_decompressing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = Serializer(pickle=True, hmac_key=HMAC_KEY, compress_threshold=100)
    value = {("k", i) for i in range(2000)}
    payload, flags = s.dumps(value)
    assert flags == 1 | FLAG_COMPRESSED
    assert s.loads(payload, flags) == value
    tampered = payload[:-1] + bytes([payload[-1] ^ 0xFF])

    def refuse(*args: Any, **kwargs: Any) -> bytes:
        raise AssertionError("decompressed before the HMAC check")

    monkeypatch.setattr(zlib, "decompress", refuse)
    with pytest.raises(SignatureError):
        s.loads(tampered, flags)


def test_large_values_are_compressed() -> None:
    s = Serializer()
    big = (b"0123456789abcdef" * 4096) * 80  # 5 MiB
    payload, flags = s.dumps(big)
    assert flags == FLAG_COMPRESSED
    assert len(payload) < len(big) // 50
    assert s.loads(payload, flags) == big
    text = "héllo wörld ✓ " * 400_000  # > 5 MiB of UTF-8
    payload, flags = s.dumps(text)
    assert flags == 16 | FLAG_COMPRESSED
    assert s.loads(payload, flags) == text
    doc = {"rows": [{"id": i, "name": f"row {i}"} for i in range(5000)]}
    payload, flags = s.dumps(doc)
    assert flags == 64 | FLAG_COMPRESSED
    assert s.loads(payload, flags) == doc


def test_compression_only_when_it_shrinks() -> None:
    s = Serializer(compress_threshold=1024)
    noise = os.urandom(4096)
    assert s.dumps(noise) == (noise, 0)
    assert s.dumps(b"a" * 1023) == (b"a" * 1023, 0)  # under the threshold
    payload, flags = s.dumps(b"a" * 1024)  # at the threshold
    assert flags == FLAG_COMPRESSED and zlib.decompress(payload) == b"a" * 1024
    assert Serializer(compress_threshold=None).dumps(b"a" * 100_000)[1] == 0
    assert Serializer(compress_threshold=0).dumps(b"") == (b"", 0)
    # ints stay plain decimal so the servers' incr/decr can read them
    assert Serializer(compress_threshold=1).dumps(10**1000)[1] == 2
    assert Serializer(compress_level=9).dumps(b"a" * 5000)[1] == FLAG_COMPRESSED


def test_max_size() -> None:
    s = Serializer(max_size=100)
    assert s.dumps(b"x" * 100) == (b"x" * 100, 0)
    with pytest.raises(ValueTooLargeError, match=r"101 bytes.*limit of 100") as info:
        s.dumps(b"x" * 101)
    assert (info.value.size, info.value.limit) == (101, 100)
    with pytest.raises(ValueTooLargeError):
        s.dumps(os.urandom(200))
    with pytest.raises(ValueTooLargeError):
        s.dumps(list(range(100)))
    with pytest.raises(ValueTooLargeError):
        s.dumps(10**200)
    with pytest.raises(ValueTooLargeError):
        Serializer(pickle=True, max_size=100).dumps(set(range(100)))
    # the limit applies after compression
    small = Serializer(max_size=100, compress_threshold=50)
    payload, flags = small.dumps(b"y" * 10_000)
    assert flags == FLAG_COMPRESSED and len(payload) <= 100


@pytest.mark.parametrize(
    ("payload", "flags", "match"),
    [
        (b"x", 4, "unknown flags 0x4 "),  # pymemcache's and pylibmc's FLAG_LONG
        (b"x", 4 | 16, "unknown flags 0x14 "),
        (b"x", 0x80, "unknown flags 0x80 "),
        (b"x", 0x100, "unknown flags 0x100 "),
        (b"x", 1 << 31, "unknown flags 0x80000000 "),
        (b"x", -1, "unknown flags"),
        (b"x", -16, "unknown flags"),
        (b"x", 1 | 2, "unknown type code 3 in the flags 0x3$"),
        (b"x", 1 | 16, "unknown type code 17 in the flags 0x11$"),
        (b"x", 16 | 32, "unknown type code 48 in the flags 0x30$"),
        (b"x", 2 | 64, "unknown type code 66 in the flags 0x42$"),
        (b"x", 0x73 | FLAG_COMPRESSED, "unknown type code 115 in the flags 0x7b$"),
        (b"\xff\xfe", 16, "not valid UTF-8"),
        (b"12a", 2, "stored int value is corrupt"),
        (b"", 2, "stored int value is corrupt"),
        (b"1.5.2", 32, "stored float value is corrupt"),
        (b'{"a":', 64, "stored JSON value is corrupt"),
        (b"not zlib", 0 | FLAG_COMPRESSED, "not valid zlib"),
        (b"not zlib", 64 | FLAG_COMPRESSED, "not valid zlib"),
        (b"not zlib", 1 | FLAG_COMPRESSED, "not valid zlib"),
        (zlib.compress(b"\xff"), 16 | FLAG_COMPRESSED, "corrupt"),
    ],
)
def test_bad_stored_values(json_impl: str, payload: bytes, flags: int, match: str) -> None:
    with pytest.raises(SerializationError, match=match):
        Serializer(pickle=True).loads(payload, flags)


def test_corrupt_pickle() -> None:
    with pytest.raises(SerializationError, match="cannot be loaded"):
        Serializer(pickle=True).loads(b"\x80\x05garbage", 1)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"hmac_key": HMAC_KEY}, "needs pickle=True"),
        ({"pickle": True, "hmac_key": b"short key"}, "at least 16 bytes, got 9"),
        ({"pickle": True, "hmac_key": "a str key of 16+ chars"}, "must be bytes"),
        ({"compress_threshold": -1}, "compress_threshold"),
        ({"compress_threshold": 1.5}, "compress_threshold"),
        ({"compress_threshold": True}, "compress_threshold"),
        ({"compress_level": 10}, "compress_level"),
        ({"compress_level": -2}, "compress_level"),
        ({"max_size": 0}, "max_size"),
        ({"max_size": "1MB"}, "max_size"),
    ],
)
def test_serializer_config_errors(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Serializer(**options)


# ---------------------------------------------------------------------------------------
# memory backend


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _size(key: bytes, payload: bytes) -> int:
    return len(key) + len(payload) + ENTRY_OVERHEAD


def test_memory_basic_operations() -> None:
    m = MemoryBackend()
    assert m.name == "memory"
    assert MemoryBackend(name="shard-2").name == "shard-2"
    assert m.get(b"a") is None
    m.set(b"a", b"1", 7, 0)
    assert m.get(b"a") == (b"1", 7)
    m.set(b"a", b"2", 8, None)
    assert m.get(b"a") == (b"2", 8)
    m.set_many({b"b": (b"bb", 0), b"c": (b"cc", 1)}, 0)
    assert m.get_many([b"a", b"b", b"c", b"zz"]) == {
        b"a": (b"2", 8),
        b"b": (b"bb", 0),
        b"c": (b"cc", 1),
    }
    assert m.get_many([]) == {}
    assert m.delete(b"a") is True
    assert m.delete(b"a") is False
    assert m.delete_many([b"b", b"c", b"nope"]) == 2
    assert m.stats()["items"] == 0
    assert m.stats()["bytes"] == 0


def test_memory_lru_by_item_count() -> None:
    m = MemoryBackend(max_items=3)
    for k in (b"a", b"b", b"c"):
        m.set(k, b"v", 0, 0)
    assert m.get(b"a") is not None  # a is now the most recently used
    m.set(b"d", b"v", 0, 0)
    assert m.get(b"b") is None  # b was the least recently used
    assert {k for k in (b"a", b"c", b"d") if m.get(k)} == {b"a", b"c", b"d"}
    m.get_many([b"a"])  # get_many counts as use too
    m.set(b"e", b"v", 0, 0)
    assert m.get(b"c") is None
    assert m.get(b"a") is not None
    st_ = m.stats()
    assert st_["items"] == 3 and st_["evictions"] == 2


def test_memory_lru_by_bytes() -> None:
    item = _size(b"k0", b"x" * 100)
    m = MemoryBackend(max_bytes=3 * item)
    for i in range(3):
        m.set(b"k%d" % i, b"x" * 100, 0, 0)
    assert m.stats()["bytes"] == 3 * item
    m.set(b"k3", b"x" * 100, 0, 0)
    assert m.get(b"k0") is None
    assert m.stats() | {"hits": 0, "misses": 0} == {
        "items": 3,
        "bytes": 3 * item,
        "hits": 0,
        "misses": 0,
        "evictions": 1,
        "expired": 0,
    }
    # a bigger value pushes out as many old entries as it needs
    m.set(b"k9", b"x" * (2 * item - ENTRY_OVERHEAD - 2), 0, 0)
    assert m.get(b"k1") is None and m.get(b"k2") is None and m.get(b"k3") is not None
    assert m.stats()["bytes"] == item + 2 * item
    # replacing a key's value adjusts the count, it does not add to it
    m.set(b"k3", b"", 0, 0)
    assert m.stats()["bytes"] == 2 * item + _size(b"k3", b"")


def test_memory_item_larger_than_the_cache() -> None:
    m = MemoryBackend(max_bytes=1000)
    m.set(b"small", b"x", 0, 0)
    with pytest.raises(ValueTooLargeError) as info:
        m.set(b"k", b"x" * 1000, 0, 0)
    assert (info.value.size, info.value.limit) == (1000 + 1 + ENTRY_OVERHEAD, 1000)
    with pytest.raises(ValueTooLargeError):
        m.add(b"k", b"x" * 1000, 0, 0)
    with pytest.raises(ValueTooLargeError):  # nothing of a bad batch is stored
        m.set_many({b"ok": (b"x", 0), b"k": (b"x" * 1000, 0)}, 0)
    assert m.get(b"ok") is None and m.get(b"small") == (b"x", 0)
    exact = b"x" * (1000 - ENTRY_OVERHEAD - 1)
    m.set(b"k", exact, 0, 0)  # exactly the limit: fits, alone
    assert m.get(b"k") == (exact, 0) and m.get(b"small") is None
    assert m.max_value == 1000 - ENTRY_OVERHEAD


def test_memory_ttl() -> None:
    clock = FakeClock()
    m = MemoryBackend(clock=clock)
    m.set(b"a", b"1", 0, 10)
    m.set(b"b", b"2", 0, 0.5)
    m.set(b"forever", b"3", 0, 0)
    m.set(b"none", b"4", 0, None)
    clock.now += 0.25
    assert m.get(b"b") == (b"2", 0)
    clock.now += 0.25
    assert m.get(b"b") is None  # expires at exactly ttl seconds
    clock.now += 9.25
    assert m.get_many([b"a", b"b"]) == {b"a": (b"1", 0)}
    clock.now += 0.25
    assert m.get_many([b"a", b"forever"]) == {b"forever": (b"3", 0)}
    clock.now += 1e9
    assert m.get(b"forever") == (b"3", 0) and m.get(b"none") == (b"4", 0)
    st_ = m.stats()
    assert st_["expired"] == 2 and st_["items"] == 2
    assert st_["bytes"] == _size(b"forever", b"3") + _size(b"none", b"4")


def test_memory_expired_entries_are_misses_everywhere() -> None:
    clock = FakeClock()
    m = MemoryBackend(clock=clock)
    for k in (b"a", b"b", b"c", b"d"):
        m.set(k, b"5", 0, 1)
    clock.now += 1
    assert m.delete(b"a") is False
    assert m.delete_many([b"b"]) == 0
    assert m.touch(b"c", 100) is False
    assert m.incr(b"d", 1) is None
    assert m.add(b"a", b"new", 0, 0) is True
    assert m.get(b"a") == (b"new", 0)
    assert m.stats()["expired"] == 4


def test_memory_eviction_counts_expired_entries_apart() -> None:
    clock = FakeClock()
    m = MemoryBackend(max_items=2, clock=clock)
    m.set(b"old", b"v", 0, 1)
    m.set(b"live", b"v", 0, 0)
    clock.now += 5
    m.set(b"new", b"v", 0, 0)  # pushes out the expired entry: not an eviction
    assert m.stats()["evictions"] == 0 and m.stats()["expired"] == 1
    m.set(b"newer", b"v", 0, 0)
    assert m.stats()["evictions"] == 1


def test_memory_touch() -> None:
    clock = FakeClock()
    m = MemoryBackend(clock=clock)
    m.set(b"k", b"v", 3, 10)
    clock.now += 9
    assert m.touch(b"k", 10) is True
    clock.now += 9
    assert m.get(b"k") == (b"v", 3)
    assert m.touch(b"k", 0) is True  # no expiry from now on
    clock.now += 1e6
    assert m.get(b"k") == (b"v", 3)
    assert m.touch(b"missing", 10) is False


def test_memory_add() -> None:
    m = MemoryBackend(max_items=2)
    assert m.add(b"a", b"1", 1, 0) is True
    assert m.add(b"a", b"2", 2, 0) is False
    assert m.get(b"a") == (b"1", 1)
    m.set(b"b", b"v", 0, 0)
    assert m.add(b"a", b"3", 0, 0) is False  # ...but a is now the most recently used
    m.set(b"c", b"v", 0, 0)
    assert m.get(b"b") is None and m.get(b"a") == (b"1", 1)


def test_memory_incr_decr() -> None:
    clock = FakeClock()
    m = MemoryBackend(clock=clock)
    assert m.incr(b"n", 1) is None and m.decr(b"n", 1) is None
    m.set(b"n", b"10", 2, 100)
    assert m.incr(b"n", 5) == 15
    assert m.get(b"n") == (b"15", 2)  # flags kept
    assert m.decr(b"n", 6) == 9
    assert m.get(b"n") == (b"9", 2)  # shorter, no padding
    assert m.decr(b"n", 100) == 0  # floors at 0
    assert m.incr(b"n", 0) == 0
    m.set(b"n", b"%d" % (2**64 - 1), 0, 0)
    assert m.incr(b"n", 1) == 0  # wraps at 2**64
    m.set(b"n", b"%d" % (2**64 - 2), 0, 0)
    assert m.incr(b"n", 5) == 3
    m.set(b"n", b"007", 0, 0)
    assert m.incr(b"n", 1) == 8
    assert m.stats()["bytes"] == _size(b"n", b"8")
    # the TTL is kept
    assert m.incr(b"n", 1) == 9
    m.set(b"t", b"1", 0, 10)
    clock.now += 5
    assert m.incr(b"t", 1) == 2
    clock.now += 5
    assert m.get(b"t") is None


@pytest.mark.parametrize(
    "payload", [b"abc", b"-5", b"", b" 5", b"5 ", b"1.5", b"1" * 21, b"%d" % 2**64, "٣".encode()]
)
def test_memory_incr_needs_a_decimal_counter(payload: bytes) -> None:
    m = MemoryBackend()
    m.set(b"n", payload, 0, 0)
    for op in (m.incr, m.decr):
        with pytest.raises(SerializationError, match=r"non-numeric|unsigned 64-bit") as info:
            op(b"n", 1)
        assert isinstance(info.value, ValueError)
    assert m.get(b"n") == (payload, 0)


@pytest.mark.parametrize("delta", [-1, 2**64, 1.0, True, "1"])
def test_memory_incr_bad_delta(delta: Any) -> None:
    m = MemoryBackend()
    m.set(b"n", b"1", 0, 0)
    with pytest.raises(ConfigError, match="delta"):
        m.incr(b"n", delta)
    with pytest.raises(ConfigError, match="delta"):
        m.decr(b"n", delta)


@pytest.mark.parametrize("ttl", [-1, -0.5, math.nan, "10", True, [1]])
def test_memory_bad_ttl(ttl: Any) -> None:
    m = MemoryBackend()
    with pytest.raises(ConfigError, match="ttl"):
        m.set(b"k", b"v", 0, ttl)
    with pytest.raises(ConfigError, match="ttl"):
        m.set_many({b"k": (b"v", 0)}, ttl)
    with pytest.raises(ConfigError, match="ttl"):
        m.add(b"k", b"v", 0, ttl)
    with pytest.raises(ConfigError, match="ttl"):
        m.touch(b"k", ttl)
    assert m.get(b"k") is None


@pytest.mark.parametrize(
    "options", [{"max_bytes": 0}, {"max_bytes": True}, {"max_items": 0}, {"max_items": 1.5}]
)
def test_memory_config_errors(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        MemoryBackend(**options)


def test_memory_stats_flush_close() -> None:
    m = MemoryBackend()
    m.set(b"a", b"1", 0, 0)
    m.get(b"a")
    m.get(b"b")
    m.get_many([b"a", b"b", b"c"])
    assert m.stats() == {
        "items": 1,
        "bytes": _size(b"a", b"1"),
        "hits": 2,
        "misses": 3,
        "evictions": 0,
        "expired": 0,
    }
    m.flush()
    assert m.get(b"a") is None
    assert m.stats()["items"] == 0 and m.stats()["bytes"] == 0 and m.stats()["hits"] == 2
    m.set(b"a", b"1", 0, 0)
    m.close()
    assert m.get(b"a") is None
    m.set(b"a", b"2", 0, 0)  # still usable after close
    assert m.get(b"a") == (b"2", 0)


def test_memory_accounting_stays_exact() -> None:
    """After a mix of every write, the byte count is the sum of what is held."""
    clock = FakeClock()
    m = MemoryBackend(max_bytes=5000, max_items=40, clock=clock)
    for i in range(3000):
        key = b"k%d" % (i % 97)
        op = i % 7
        if op == 0:
            m.set(key, b"x" * (i % 300), 0, (i % 5) * 0.5)
        elif op == 1:
            m.set_many({key: (b"%d" % i, 0), key + b"!": (b"y" * (i % 50), 0)}, 0)
        elif op == 2:
            m.add(key, b"%d" % i, 0, 1)
        elif op == 3:
            with contextlib.suppress(SerializationError):
                m.incr(key, i)
        elif op == 4:
            m.delete(key)
        elif op == 5:
            m.touch(key, 2)
        else:
            clock.now += 0.3
            m.get_many([key, key + b"!"])
        held = list(m._data.items())
        assert m.stats()["bytes"] == sum(_size(k, e[0]) for k, e in held) <= 5000
        assert len(held) <= 40


def test_memory_threads_see_their_own_values() -> None:
    m = MemoryBackend(max_bytes=64 * 2**20)
    errors: list[str] = []
    rounds = 2000

    def work(t: int) -> None:
        for i in range(rounds):
            key = b"t%d:%d" % (t, i % 50)
            value = b"%d:%d" % (t, i)
            m.set(key, value, t, 0)
            got = m.get(key)
            if got != (value, t):
                errors.append(f"thread {t} round {i}: {got!r}")
            if i % 10 == 0:
                many = m.get_many([key, b"t%d:%d" % (t, (i + 1) % 50)])
                if many[key] != (value, t):
                    errors.append(f"thread {t} get_many round {i}")

    run_threads(work, 8)
    assert errors == []
    assert m.stats()["items"] == 8 * 50


def test_memory_threads_incr_is_atomic() -> None:
    m = MemoryBackend(max_items=64)
    m.set(b"n", b"0", 0, 0)

    def work(t: int) -> None:
        for i in range(1000):
            m.incr(b"n", 1)
            # churn that forces evictions of other keys at the same time
            m.set(b"churn:%d:%d" % (t, i), b"x", 0, 0)
            m.get(b"n")

    run_threads(work, 8)
    assert m.get(b"n") == (b"8000", 0)
    stats = m.stats()
    assert stats["items"] <= 64
    assert stats["bytes"] == sum(_size(k, e[0]) for k, e in m._data.items())
