"""Worker-id leases: which worker id this process may use, and where its last issued
time is kept so that a restart after a clock step back cannot reuse timestamps."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from typing import Protocol

from ._errors import ConfigError, LeaseLost, NoFreeWorkerId

__all__ = ("FileLease", "WorkerLease", "default_lease_dir")


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
        if self._fd is None:
            return
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
