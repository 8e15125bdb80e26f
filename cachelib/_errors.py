"""cachelib's exceptions: every one subclasses :class:`CacheError`.

Each also subclasses the fitting builtin (``ValueError``, ``TypeError``,
``ConnectionError``), so code that catches the builtin keeps working.
"""

from __future__ import annotations

__all__ = (
    "CacheError",
    "ConfigError",
    "InvalidKeyError",
    "KeyTypeError",
    "QuorumError",
    "SerializationError",
    "ServerRefusedError",
    "ServerUnavailable",
    "SignatureError",
    "ValueTooLargeError",
    "ValueTypeError",
)


class CacheError(Exception):
    """The root of every error cachelib raises."""


class ConfigError(CacheError, ValueError):
    """An option or argument is invalid (negative TTL, short HMAC key, ...)."""


class InvalidKeyError(CacheError, ValueError):
    """A key's content or length breaks the rules (empty, too long, whitespace, ...)."""


class KeyTypeError(CacheError, TypeError):
    """A key is of a type that cannot be a key (only str and bytes-like are)."""


class ValueTypeError(CacheError, TypeError):
    """A value cannot be stored without pickle (enable it with ``pickle=True``)."""


class ValueTooLargeError(CacheError, ValueError):
    """A value (after compression) is larger than the configured limit.

    Attributes:
        size: The value's size in bytes.
        limit: The largest size allowed, in bytes.
    """

    def __init__(self, size: int, limit: int, what: str = "value") -> None:
        super().__init__(f"{what} is {size} bytes, larger than the limit of {limit} bytes")
        self.size = size
        self.limit = limit
        self._what = what

    def __reduce__(self) -> tuple[type[ValueTooLargeError], tuple[int, int, str]]:
        return (type(self), (self.size, self.limit, self._what))


class SerializationError(CacheError, ValueError):
    """A stored value cannot be decoded (unknown flags, corrupt data, pickle not enabled)."""


class SignatureError(SerializationError):
    """A pickled value failed its HMAC check: it was rejected, never unpickled."""


class ServerUnavailable(CacheError, ConnectionError):  # noqa: N818 (the name says what happened)
    """A server could not be reached or failed mid-request; the cause is chained.

    Attributes:
        server: The server's name, e.g. ``"10.0.0.5:11211"``.
    """

    def __init__(self, server: str, message: str | None = None) -> None:
        super().__init__(message if message is not None else f"server {server} is unavailable")
        self.server = server

    def __reduce__(self) -> tuple[type[ServerUnavailable], tuple[str, str]]:
        return (type(self), (self.server, str(self)))


class ServerRefusedError(CacheError):
    """The server answered but refused the request (memcached ``SERVER_ERROR`` /
    ``CLIENT_ERROR``, e.g. out of memory): the server is up and stays in use."""


class QuorumError(ServerUnavailable):
    """Fewer replicas than the quorum acknowledged a write or answered a read
    (``CacheClient(..., replicas=N)`` with N > 1).

    A :class:`ServerUnavailable` (so a :class:`ConnectionError`): code that handles a
    failed server, such as the write policies, handles a missed quorum the same way. A
    write that missed its quorum may still have reached some replicas.

    Attributes:
        server: The first server that failed ("" if none failed outright).
        acked: Replicas that acknowledged (writes) or answered (reads), for the first
            key short of its quorum.
        needed: The quorum (``write_quorum`` or ``read_quorum``).
        failed: Server name -> why it failed, for that key.
        keys: Every key short of its quorum, as the caller gave it.
    """

    def __init__(self, message: str, *, acked: int = 0, needed: int = 0,
                 failed: dict[str, str] | None = None,
                 keys: list[object] | None = None) -> None:
        failed = dict(failed or {})
        super().__init__(next(iter(failed), ""), message)
        self.acked = acked
        self.needed = needed
        self.failed = failed
        self.keys = list(keys or [])

    def __reduce__(self) -> tuple[type[QuorumError], tuple[str], dict[str, object]]:  # type: ignore[override]
        return (type(self), (str(self),), {"acked": self.acked, "needed": self.needed,
                                           "failed": self.failed, "keys": self.keys,
                                           "server": self.server})
