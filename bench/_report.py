"""Helpers shared by compare.py and compare_ids.py: number and ratio formatting, and
which code (git revision, built extension) a run measured."""

from __future__ import annotations

import datetime
import hashlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

_R = TypeVar("_R")

REPO = Path(__file__).resolve().parent.parent


def git(*args: str) -> str:
    """Output of a git command in the repository, or "?" without git."""
    try:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True,
                              text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "?"


def fingerprint(path: str) -> str:
    """sha256 prefix and mtime of a built extension: which build was measured."""
    data = Path(path).read_bytes()
    mtime = datetime.datetime.fromtimestamp(os.stat(path).st_mtime, datetime.timezone.utc)
    return (f"{Path(path).name} sha256 {hashlib.sha256(data).hexdigest()[:12]}, "
            f"built {mtime:%Y-%m-%d %H:%M UTC}")


def num(x: float) -> str:
    """A figure with 3-4 significant digits."""
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def ratio(t: float, ref: float) -> str:
    """``t`` against the reference time ``ref``, as "2.41x slower" / "1.30x faster"."""
    r = t / ref
    if 0.995 <= r <= 1.005:
        return "1.00x"
    if r > 1:
        return f"{r:.1f}x slower" if r >= 10 else f"{r:.2f}x slower"
    return f"{1 / r:.2f}x faster"


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, or "?"."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        return "?"


def find(rows: Iterable[_R], case_id: str, impl: str) -> _R:
    """The row of one implementation in one case."""
    return next(r for r in rows if getattr(r, "case_id", None) == case_id
                and getattr(r, "impl", None) == impl)


def say(msg: str) -> None:
    """Progress on stderr, time-stamped."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def versions(packages: Iterable[str]) -> dict[str, str]:
    """Installed versions; a build-only package (Cython) may be absent at run time."""
    import importlib.metadata

    out = {}
    for p in packages:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


def run_info(watched: Iterable[str]) -> dict[str, object]:
    """What every RESULTS.md run states: date, interpreter, platform, CPU, load at the
    start, the commit (and uncommitted files under ``watched``) and fastcore.NATIVE."""
    import datetime
    import platform

    import fastcore

    dirty = git("status", "--porcelain", "--", *watched).splitlines()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "shardkit": f"{fastcore.__version__} (git {git('rev-parse', '--short', 'HEAD').strip()}"
        + (f", uncommitted: {' '.join(ln[3:] for ln in dirty)})" if dirty else ")"),
        "fastcore.NATIVE": fastcore.NATIVE,
    }


# --- interleaved timing: clients take turns, so the machine's drift hits them alike -----------

Sample = tuple[int, int, int]  # (operations, wall ns, CPU ns)


def sampler(fn: Callable[[], int]) -> Callable[[], Sample]:
    """A pass of ``fn`` (which returns how many operations it made), timed."""
    def run() -> Sample:
        t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        n = fn()
        return n, time.perf_counter_ns() - t0, time.thread_time_ns() - c0
    return run


def interleaved(samplers: dict[str, Callable[[], Sample]], rounds: int,
                turn_s: float) -> dict[str, list[Sample]]:
    """Every sampler in turn for ``turn_s`` s per round (the order reversed on odd
    rounds); the passes of each."""
    out: dict[str, list[Sample]] = {name: [] for name in samplers}
    names = list(samplers)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            end = time.perf_counter() + turn_s
            while time.perf_counter() < end:
                out[name].append(samplers[name]())
    return out


def per_op(samples: list[Sample], which: int) -> float:
    """Median over passes of ns per operation (``which``: 1 wall, 2 CPU)."""
    return statistics.median(s[which] / s[0] for s in samples)
