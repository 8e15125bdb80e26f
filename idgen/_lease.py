"""Worker-id leases: which worker id this process may use, and where its last issued
time is kept so that a restart after a clock step back cannot reuse timestamps."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from typing import Protocol

from ._errors import ConfigError, LeaseError, LeaseLost, NoFreeWorkerId

__all__ = ("FileLease", "RedisLease", "WorkerLease", "default_lease_dir")


class WorkerLease(Protocol):
    """What a generator needs from a lease (see :class:`FileLease`)."""

    @property
    def worker_id(self) -> int: ...
    @property
    def last_ms(self) -> int | None: ...
    def save_last(self, unix_ms: int) -> None: ...
    def check(self) -> None: ...
    def release(self) -> None: ...
    def renew_in_child(self) -> WorkerLease: ...


def default_lease_dir() -> str:
    """``$SHARDKIT_IDGEN_DIR``, else a per-user folder in the system temp directory."""
    return os.environ.get("SHARDKIT_IDGEN_DIR") or os.path.join(
        tempfile.gettempdir(), f"shardkit-idgen-{os.getuid()}"
    )


class FileLease:
    """Single-host lease: an exclusive ``flock`` on one of ``max_worker + 1`` files.

    The lock lives as long as this process holds the file open, and the kernel drops it
    when the process dies, so a crashed process never strands its worker id. The file
    also stores the last issued time (Unix ms).

    Args:
        directory: where the lock files live (default :func:`default_lease_dir`);
            processes that must not share worker ids use the same directory.
        max_worker: the largest worker id the layout allows.
        prefer: the worker id to try first (default: derived from the process id).

    Raises:
        NoFreeWorkerId: every id in ``[0, max_worker]`` is held by a live process.
    """

    def __init__(self, directory: str | None = None, *, max_worker: int = 1023,
                 prefer: int | None = None) -> None:
        if isinstance(max_worker, bool) or not isinstance(max_worker, int) or max_worker < 0:
            raise ConfigError(f"max_worker must be an int >= 0, got {max_worker!r}")
        self._dir = directory or default_lease_dir()
        self._max = max_worker
        os.makedirs(self._dir, mode=0o700, exist_ok=True)
        start = (os.getpid() if prefer is None else prefer) % (max_worker + 1)
        for offset in range(max_worker + 1):
            candidate = (start + offset) % (max_worker + 1)
            fd = os.open(os.path.join(self._dir, f"worker-{candidate}.lock"),
                         os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._fd: int | None = fd
            self._worker = candidate
            self._last = self._read_last(fd)
            return
        raise NoFreeWorkerId(
            f"all {max_worker + 1} worker ids in {self._dir} are leased by live processes"
        )

    @staticmethod
    def _read_last(fd: int) -> int | None:
        raw = os.pread(fd, 32, 0).split(b"\n", 1)[0].strip()
        return int(raw) if raw.isdigit() else None

    @property
    def worker_id(self) -> int:
        """The leased worker id."""
        return self._worker

    @property
    def directory(self) -> str:
        """The folder holding the lock files."""
        return self._dir

    @property
    def last_ms(self) -> int | None:
        """The last issued time (Unix ms) stored by the previous holder, if any."""
        return self._last

    def save_last(self, unix_ms: int) -> None:
        """Store the last issued time (called in the background, a few times a second)."""
        if self._fd is None or unix_ms == self._last:
            return  # nothing new: no write on an idle beat
        data = f"{unix_ms}\n".encode().ljust(21)
        os.pwrite(self._fd, data, 0)
        self._last = unix_ms

    def check(self) -> None:
        """Raise :class:`LeaseLost` if the lease was released."""
        if self._fd is None:
            raise LeaseLost(f"the lease of worker {self._worker} was released")

    def release(self) -> None:
        """Give the worker id back (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def renew_in_child(self) -> FileLease:
        """In a forked child: drop the inherited lock file and lease a new worker id.

        The parent keeps its lock (the kernel holds it while any process has the file
        open), so the child cannot get the parent's id back.
        """
        self.release()  # only closes the child's copy of the descriptor
        return FileLease(self._dir, max_worker=self._max,
                         prefer=(self._worker + 1) % (self._max + 1))

    def __repr__(self) -> str:
        return f"FileLease(worker_id={self._worker}, directory={self._dir!r})"


# Renew the lease if we still own it; returns 1 when renewed, 0 when lost.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  local last = tonumber(ARGV[3])
  if last >= 0 then
    local cur = tonumber(redis.call('GET', KEYS[2]) or '-1')
    if last > cur then redis.call('SET', KEYS[2], ARGV[3]) end
  end
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisLease:
    """Worker-id lease in Redis, for generators on many hosts.

    The worker id is a key taken with ``SET NX PX ttl`` and holding a random owner
    token; the generator renews it in the background (every ``ttl/6``) together with
    the last issued time (kept without a TTL, so a restart after a clock step back
    cannot reuse timestamps). If the lease cannot be renewed before it would expire,
    or another owner holds the key, generation stops with :class:`LeaseLost`.

    Args:
        client: a ``redis.Redis`` client or a ``redis://`` URL.
        max_worker: the largest worker id the layout allows.
        ttl_s: lease time to live in seconds (>= 1).
        prefix: key prefix; ``{prefix}{id}`` is the lease, ``{prefix}{id}:last`` the time.
        prefer: the worker id to try first (default: derived from the process id).

    Raises:
        NoFreeWorkerId: every id is leased by a live owner.
        LeaseError: Redis could not be reached.
    """

    def __init__(self, client: object, *, max_worker: int = 1023, ttl_s: float = 30.0,
                 prefix: str = "shardkit:idgen:worker:", prefer: int | None = None) -> None:
        import uuid

        import redis

        if isinstance(client, str):
            client = redis.Redis.from_url(client, socket_timeout=2.0,
                                          socket_connect_timeout=2.0)
        if not isinstance(client, redis.Redis):
            raise ConfigError(f"client must be a redis.Redis or a URL, not {type(client).__name__}")
        if isinstance(max_worker, bool) or not isinstance(max_worker, int) or max_worker < 0:
            raise ConfigError(f"max_worker must be an int >= 0, got {max_worker!r}")
        if not ttl_s >= 1:
            raise ConfigError(f"ttl_s must be >= 1, got {ttl_s!r}")
        self._redis = client
        self._max = max_worker
        self._ttl_ms = int(ttl_s * 1000)
        self._prefix = prefix
        self._token = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex}"
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._released = False
        start = (os.getpid() if prefer is None else prefer) % (max_worker + 1)
        try:
            for offset in range(max_worker + 1):
                candidate = (start + offset) % (max_worker + 1)
                if client.set(self._key(candidate), self._token, nx=True, px=self._ttl_ms):
                    self._worker = candidate
                    break
            else:
                raise NoFreeWorkerId(
                    f"all {max_worker + 1} worker ids under {prefix!r} are leased by live owners"
                )
            raw = client.get(self._key(self._worker) + ":last")
        except redis.RedisError as exc:
            raise LeaseError(f"cannot lease a worker id from Redis: {exc}") from exc
        self._last: int | None = int(raw) if raw is not None else None
        self._valid_until = time.monotonic() + self._ttl_ms / 1000
        self._renewed_at = time.monotonic()
        self._pending_last = -1

    def _key(self, worker: int) -> str:
        return f"{self._prefix}{worker}"

    @property
    def worker_id(self) -> int:
        """The leased worker id."""
        return self._worker

    @property
    def last_ms(self) -> int | None:
        """The last issued time (Unix ms) stored under this worker id, if any."""
        return self._last

    def save_last(self, unix_ms: int) -> None:
        """Remember the last issued time; it is written with the next renewal."""
        self._pending_last = max(self._pending_last, unix_ms)

    def check(self) -> None:
        """Renew the lease when due; raise :class:`LeaseLost` if it is gone or expiring."""
        import redis

        if self._released:
            raise LeaseLost(f"the lease of worker {self._worker} was released")
        now = time.monotonic()
        if now - self._renewed_at < self._ttl_ms / 6000:
            return
        key = self._key(self._worker)
        try:
            ok = self._renew(keys=[key, key + ":last"],
                             args=[self._token, self._ttl_ms, self._pending_last])
        except redis.RedisError as exc:
            if time.monotonic() > self._valid_until - self._ttl_ms / 6000:
                raise LeaseLost(f"worker {self._worker}: lease could not be renewed before "
                                f"it expires ({exc})") from exc
            return  # try again on the next beat
        if not ok:
            raise LeaseLost(f"worker {self._worker}: the lease is held by another owner")
        self._renewed_at = now
        self._valid_until = now + self._ttl_ms / 1000
        if self._pending_last >= 0:
            self._last = self._pending_last

    def release(self) -> None:
        """Give the worker id back (idempotent; never deletes another owner's lease)."""
        if self._released:
            return
        self._released = True
        import redis

        key = self._key(self._worker)
        with contextlib.suppress(redis.RedisError):
            if self._pending_last >= 0:
                self._renew(keys=[key, key + ":last"],
                            args=[self._token, self._ttl_ms, self._pending_last])
            self._release(keys=[key], args=[self._token])

    def renew_in_child(self) -> RedisLease:
        """In a forked child: leave the parent's lease alone and lease a new worker id."""
        self._released = True  # the parent still owns and renews it
        return RedisLease(self._redis, max_worker=self._max, ttl_s=self._ttl_ms / 1000,
                          prefix=self._prefix, prefer=(self._worker + 1) % (self._max + 1))

    def __repr__(self) -> str:
        return f"RedisLease(worker_id={self._worker}, prefix={self._prefix!r})"
