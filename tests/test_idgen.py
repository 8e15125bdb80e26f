"""idgen: generators, leases, fork safety, decoding, string forms, command line."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import subprocess
import sys
import time

import pytest
from conftest import run_threads
from hypothesis import given
from hypothesis import strategies as st

import idgen
from fastcore import InvalidArgumentError
from idgen import (
    ClockMovedBackwards,
    ConfigError,
    FileLease,
    ForkedGeneratorError,
    IdGenError,
    NoFreeWorkerId,
    SnowflakeGenerator,
    TrueTimeGenerator,
    decode,
    format_id,
    parse_id,
)
from idgen._cli import main as cli


@pytest.fixture()
def lease_dir(tmp_path: os.PathLike[str]) -> str:
    return str(tmp_path)


def test_snowflake_ids_increase_and_decode(lease_dir: str) -> None:
    with SnowflakeGenerator(lease_dir=lease_dir) as gen:
        before = time.time_ns() // 1_000_000
        ids = [gen.next_id() for _ in range(5000)] + gen.next_ids(5000)
        after = time.time_ns() // 1_000_000
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        d = gen.decode(ids[-1])
        assert d.kind == "snowflake" and d.worker == gen.worker
        assert before <= d.unix_ms <= after
        assert d.timestamp.tzinfo is dt.timezone.utc
        assert d.timestamp == dt.datetime.fromtimestamp(d.unix_ms / 1000, dt.timezone.utc)
        assert decode(ids[-1]) == d
        assert 0 <= d.sequence < 4096 and d.uncertainty_ms is None


def test_fixed_worker_and_bad_options() -> None:
    gen = SnowflakeGenerator(7)
    assert gen.worker == 7 and gen.decode(gen.next_id()).worker == 7
    with pytest.raises(ConfigError, match=r"worker id must be in \[0, 1023\]"):
        SnowflakeGenerator(1024)
    with pytest.raises(ConfigError, match="in the future"):
        SnowflakeGenerator(1, epoch_ms=time.time_ns() // 1_000_000 + 86_400_000)
    with pytest.raises(ConfigError, match=r"time field ends on .* within a year"):
        SnowflakeGenerator(1, layout=idgen.IdLayout(time_bits=36, worker_bits=10, seq_bits=17),
                           epoch_ms=time.time_ns() // 1_000_000 - 2**36 + 86_400_000)
    with pytest.raises(ConfigError):
        SnowflakeGenerator(1, tick_ms=0)
    assert issubclass(ConfigError, IdGenError) and issubclass(ConfigError, ValueError)
    assert issubclass(ClockMovedBackwards, IdGenError)
    assert issubclass(ClockMovedBackwards, RuntimeError)


def test_file_leases_are_exclusive_and_persist_last_time(lease_dir: str) -> None:
    a = FileLease(lease_dir, max_worker=1)
    b = FileLease(lease_dir, max_worker=1)
    assert {a.worker_id, b.worker_id} == {0, 1}
    with pytest.raises(NoFreeWorkerId, match="all 2 worker ids"):
        FileLease(lease_dir, max_worker=1)
    a.save_last(1_700_000_000_123)
    worker = a.worker_id
    a.release()
    c = FileLease(lease_dir, max_worker=1)
    assert c.worker_id == worker and c.last_ms == 1_700_000_000_123
    b.release()
    c.release()


def test_restart_after_clock_step_back_refuses_to_reuse_time(lease_dir: str) -> None:
    lease = FileLease(lease_dir)
    lease.save_last(time.time_ns() // 1_000_000 + 60_000)  # last ID was "in the future"
    lease.release()
    gen = SnowflakeGenerator(FileLease(lease_dir, prefer=lease.worker_id))
    assert gen.worker == lease.worker_id
    with pytest.raises(ClockMovedBackwards) as info:
        gen.next_id()
    assert info.value.step_ms > 59_000
    gen.close()


GENERATORS = [SnowflakeGenerator, TrueTimeGenerator]
MARGIN_MS = 400  # what a lease adds to its previous holder's last issued time


def _stored_last(lease_dir: str, worker: int) -> int | None:
    lease = FileLease(lease_dir, prefer=worker)
    assert lease.worker_id == worker
    lease.release()
    return lease.last_ms


@pytest.mark.parametrize("cls", GENERATORS)
def test_generators_made_one_after_another_both_mint(
        lease_dir: str, cls: type[SnowflakeGenerator]) -> None:
    # the reported bug: the second default generator on one lease dir raised
    # ClockMovedBackwards (400 ms, then 800 ms on the next cycle)
    first = cls(lease_dir=lease_dir)
    ids1 = first.next_ids(1000)
    first.close()
    last1 = _stored_last(lease_dir, first.worker)
    assert last1 == first.decode(ids1[-1]).unix_ms

    second = cls(lease_dir=lease_dir)
    assert second.worker == first.worker  # the same worker id, taken straight back
    start = time.monotonic()
    ids2 = [second.next_id(), *second.next_ids(1000)]
    assert time.monotonic() - start < 2.0  # waits out the margin once (about 0.4 s)
    assert ids2 == sorted(set(ids2)) and ids2[0] > ids1[-1]
    # never at or below the previous holder's last time plus the margin
    assert second.decode(ids2[0]).unix_ms > last1 + MARGIN_MS
    start = time.monotonic()
    second.next_ids(1000)
    assert time.monotonic() - start < 0.5  # no wait after the first call
    second.close()
    last2 = _stored_last(lease_dir, first.worker)
    assert last2 is not None and last2 > last1 + MARGIN_MS

    # a generator closed without minting keeps the stored time as it was: the margin
    # is not added again on every cycle
    idle = cls(lease_dir=lease_dir)
    idle.close()
    assert _stored_last(lease_dir, first.worker) == last2
    third = cls(lease_dir=lease_dir)
    start = time.monotonic()
    third_id = third.next_id()
    assert time.monotonic() - start < 2.0
    assert third_id > ids2[-1] and third.decode(third_id).unix_ms > last2 + MARGIN_MS
    third.close()


@pytest.mark.parametrize("cls", GENERATORS)
def test_restart_waits_only_within_the_bound(lease_dir: str,
                                             cls: type[SnowflakeGenerator]) -> None:
    # A stored time 200 ms ahead of the clock: the clock stepped back 200 ms, beyond the
    # 5 ms waited out, so the restart is refused at once, though 200 ms is inside the
    # margin; the margin itself is never counted as a step back.
    lease = FileLease(lease_dir)
    worker = lease.worker_id
    lease.save_last(time.time_ns() // 1_000_000 + 200)
    lease.release()
    gen = cls(lease_dir=lease_dir)
    assert gen.worker == worker
    start = time.monotonic()
    with pytest.raises(ClockMovedBackwards) as info:
        gen.next_id()
    assert time.monotonic() - start < 0.3  # not after waiting out the margin (~0.4 s)
    assert 200 < info.value.step_ms <= 200 + MARGIN_MS
    with pytest.raises(ClockMovedBackwards):
        gen.next_ids(10)
    gen.close()
    assert _stored_last(lease_dir, worker) == lease.last_ms  # nothing issued, nothing stored

    # the same stored time with backward_wait_ms=300: waited out, then IDs follow it
    with cls(lease_dir=lease_dir, backward_wait_ms=300) as waiting:
        d = waiting.decode(waiting.next_id())
        assert lease.last_ms is not None and d.unix_ms > lease.last_ms + MARGIN_MS


@pytest.mark.parametrize("cls", GENERATORS)
def test_restart_continues_ahead_within_continue_ahead_ms(
        lease_dir: str, cls: type[SnowflakeGenerator]) -> None:
    with cls(lease_dir=lease_dir) as first:
        last_id = first.next_id()
    with cls(lease_dir=lease_dir, continue_ahead_ms=1000) as second:
        new_id = second.next_id()
        clock_ms = time.time_ns() // 1_000_000
        d = second.decode(new_id)
        assert new_id > last_id and d.unix_ms > first.decode(last_id).unix_ms + MARGIN_MS
        assert d.unix_ms > clock_ms  # issued ahead of the clock: no wait


def test_restart_in_a_new_process_on_the_same_worker_id(lease_dir: str) -> None:
    script = (
        "import sys, idgen\n"
        "g = idgen.TrueTimeGenerator(idgen.FileLease(sys.argv[1], prefer=7))\n"
        "print(g.worker, g.next_id())\n"
        "g.close()\n"
    )
    out = [subprocess.run([sys.executable, "-c", script, lease_dir], check=True,
                          capture_output=True, text=True, timeout=60).stdout.split()
           for _ in range(3)]
    assert [int(w) for w, _ in out] == [7, 7, 7]
    ids = [int(i) for _, i in out]
    assert ids == sorted(set(ids))


def test_generator_persists_last_time_in_background(lease_dir: str) -> None:
    gen = SnowflakeGenerator(lease_dir=lease_dir)
    last = gen.decode(gen.next_id()).unix_ms
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        stored = FileLease._read_last(gen._lease._fd)  # type: ignore[union-attr]
        if stored is not None and stored >= last:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the last issued time was not persisted within 5 s")
    gen.close()


def test_threads_get_unique_increasing_ids() -> None:
    gen = SnowflakeGenerator(3)
    results: list[list[int]] = [[] for _ in range(8)]

    def work(i: int) -> None:
        out = results[i]
        for _ in range(5000):
            out.append(gen.next_id())

    run_threads(work, 8)
    everything = [x for r in results for x in r]
    assert len(set(everything)) == len(everything) == 40_000
    assert all(r == sorted(r) and len(set(r)) == len(r) for r in results)
    assert None not in everything


# --- processes --------------------------------------------------------------------------


def _mint(lease_dir: str, count: int, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    with SnowflakeGenerator(lease_dir=lease_dir) as gen:
        queue.put((gen.worker, gen.next_ids(count)))


@pytest.mark.slow
def test_unique_across_spawned_processes(lease_dir: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_mint, args=(lease_dir, 50_000, queue)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    workers = [w for w, _ in results]
    ids = [i for _, batch in results for i in batch]
    assert len(set(workers)) == 3
    assert len(ids) == 150_000 and len(set(ids)) == 150_000


def test_forked_child_leases_a_new_worker(lease_dir: str) -> None:
    gen = SnowflakeGenerator(lease_dir=lease_dir)
    parent_first = gen.next_ids(1000)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            ids = [gen.next_id() for _ in range(20_000)]
            payload = json.dumps({"worker": gen.worker, "ids": ids}).encode()
            os.write(write_fd, payload)
        finally:
            os._exit(0)
    os.close(write_fd)
    parent_ids = [gen.next_id() for _ in range(20_000)]
    chunks = []
    while chunk := os.read(read_fd, 1 << 20):
        chunks.append(chunk)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    child = json.loads(b"".join(chunks))
    assert child["worker"] != gen.worker
    everything = parent_first + parent_ids + child["ids"]
    assert len(set(everything)) == len(everything) == 41_000
    gen.close()


def test_forked_child_refuses_a_fixed_worker() -> None:
    gen = SnowflakeGenerator(11)
    gen.next_id()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            try:
                gen.next_id()
                os.write(write_fd, b"issued")
            except ForkedGeneratorError as exc:
                os.write(write_fd, f"refused: {exc}".encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    message = os.read(read_fd, 4096).decode()
    os.close(read_fd)
    os.waitpid(pid, 0)
    assert message.startswith("refused: ") and "fixed worker id 11" in message
    assert gen.next_id() > 0  # the parent goes on


# --- TrueTime ---------------------------------------------------------------------------


def test_truetime_uncertainty_and_ordering() -> None:
    gen = TrueTimeGenerator(2, eps_source=lambda: (3_000, False))
    a = gen.next_id()
    d = gen.decode(a)
    assert d.kind == "truetime" and d.uncertainty_ms == 4 and d.synchronised is True
    assert gen.interval(a) == (d.unix_ms - 4, d.unix_ms + 4)
    time.sleep(0.02)
    b = gen.next_id()
    assert gen.definitely_before(a, b) and not gen.definitely_before(b, a)
    c = gen.next_id()
    if gen.decode(c).unix_ms - gen.decode(b).unix_ms <= 8:  # overlapping intervals
        assert not gen.definitely_before(b, c)
    start = time.monotonic()
    gen.commit_wait(c)
    assert time.time() * 1000 > gen.decode(c).unix_ms + 8
    assert time.monotonic() - start < 1


def test_truetime_unsynchronised_clock() -> None:
    gen = TrueTimeGenerator(2, eps_source=lambda: (16_000_000, True))
    a, b = gen.next_id(), gen.next_id()
    d = gen.decode(a)
    assert d.uncertainty_ms is None and d.synchronised is False
    assert gen.interval(a) is None and not gen.definitely_before(a, b)
    with pytest.raises(ConfigError, match="unsynchronised"):
        gen.commit_wait(a)
    # an assumed bound for an unsynchronised clock, never below the kernel's own figure
    bounded = TrueTimeGenerator(3, eps_source=lambda: (100_000, True), unsynced_bound_ms=500)
    assert bounded.decode(bounded.next_id()).uncertainty_ms == 512
    capped = TrueTimeGenerator(5, eps_source=lambda: (16_000_000, True), unsynced_bound_ms=500)
    assert capped.decode(capped.next_id()).uncertainty_ms == 16_384


def test_truetime_kernel_clock_gives_an_honest_code() -> None:
    gen = TrueTimeGenerator(4)
    d = gen.decode(gen.next_id())
    # either a real bound of at most 16.4 s, or the unsynchronised code: never invented
    assert d.uncertainty_ms is None or 1 <= d.uncertainty_ms <= 16_384


# --- string forms -------------------------------------------------------------------------


@given(st.lists(st.integers(0, 2**63 - 1), min_size=2, max_size=30))
def test_fixed_width_forms_sort_like_the_ids(values: list[int]) -> None:
    for style in ("base32", "decimal", "hex"):
        texts = [format_id(v, style) for v in values]
        assert len({len(t) for t in texts}) == 1
        assert sorted(texts) == [format_id(v, style) for v in sorted(values)]
        assert [parse_id(t, style) for t in texts] == values
    for v in values:
        assert parse_id(format_id(v, "json")) == v
        assert json.loads(format_id(v, "json")) == str(v)
        assert parse_id(format_id(v, "int")) == v


def test_format_errors() -> None:
    assert format_id(2**63 - 1, "base32") == "7ZZZZZZZZZZZZ"
    assert parse_id("7zzzzzzzzzzzz") == 2**63 - 1  # case-insensitive
    with pytest.raises(InvalidArgumentError, match=r"\[0, 2\*\*63\)"):
        format_id(-1)
    with pytest.raises(TypeError):
        format_id("12")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="is not an ID"):
        parse_id("hello")
    with pytest.raises(ValueError, match="63-bit"):
        parse_id(str(2**63))
    with pytest.raises(ValueError, match="style must be"):
        format_id(1, "roman")


# --- command line -------------------------------------------------------------------------


def test_cli_demo_and_mint(capsys: pytest.CaptureFixture[str], lease_dir: str,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARDKIT_IDGEN_DIR", lease_dir)
    assert cli([]) == 0
    out = capsys.readouterr().out
    assert "Snowflake" in out and "TrueTime" in out and "UUID v4" in out
    assert cli(["snowflake", "--count", "4", "--worker", "9", "--format", "base32"]) == 0
    lines = capsys.readouterr().out.split()
    assert len(lines) == 4 and all(decode(parse_id(x, "base32")).worker == 9 for x in lines)


def test_cli_decode(capsys: pytest.CaptureFixture[str]) -> None:
    gen = SnowflakeGenerator(5)
    value = gen.next_id()
    assert cli(["decode", str(value), format_id(value, "base32"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0] == rows[1] and rows[0]["worker"] == 5 and rows[0]["id"] == str(value)
    assert cli(["decode", "not-an-id"]) == 1
    assert "not an ID" in capsys.readouterr().err


def test_cli_as_module(lease_dir: str) -> None:
    env = dict(os.environ, SHARDKIT_IDGEN_DIR=lease_dir)
    proc = subprocess.run([sys.executable, "-m", "idgen", "truetime", "--count", "2"],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.split()) == 2


def test_cli_range_never_repeats(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    store = str(tmp_path / "ranges.sqlite")
    assert cli(["range", "--count", "3", "--store", store, "--block-size", "10"]) == 0
    first = [int(x) for x in capsys.readouterr().out.split()]
    assert cli(["range", "--count", "3", "--store", store, "--block-size", "10"]) == 0
    second = [int(x) for x in capsys.readouterr().out.split()]
    assert first == [1, 2, 3] and min(second) > max(first)  # a new block, gaps allowed
