"""``python -m cachelib``: the end-to-end demo, ``where`` and ``repair``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cachelib import CacheClient, MemoryBackend, ServerUnavailable
from cachelib._cli import Switchable, main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def check_summary(s: dict[str, object], ops: int) -> None:
    assert s["stale_reads"] == 0
    assert s["lost_writes"] == 0
    assert s["undrained"] == 0
    assert s["differing_after_repair"] == 0
    assert s["errors_during_outage"] == 0  # a quorum of 2 of 3 survives one server
    assert s["hints_delivered"] > 0  # writes meant for the failed server, invalidated there
    assert s["writes"] >= ops  # the load phase plus the writes of the mixed phase
    assert 0.3 < s["store_writes_saved"] < 1  # type: ignore[operator]
    assert 0 < s["hit_rate"] <= 1  # type: ignore[operator]
    assert [p["ops"] for p in s["phases"]][:3] == [ops, ops, ops]  # type: ignore[index]


def test_demo_runs_as_a_module_with_no_server(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cachelib", "demo", "--keys", "300", "--ops", "3000",
         "--store", str(tmp_path / "store.db")],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    for text in ("stale reads after it came back", "keys repaired by anti-entropy",
                 "store writes saved by coalescing", "ops/s", "last order ID"):
        assert text in proc.stdout
    assert "cache-3 fails" in proc.stderr and "cache-3 is back" in proc.stderr
    assert "hinted invalidations to deliver first" in proc.stderr
    assert (tmp_path / "store.db").exists()


def test_demo_json_figures(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "demo", "--keys", "200", "--ops", "2000", "--json",
                       "--store", str(tmp_path / "s.db"))
    assert code == 0
    s = json.loads(out)
    check_summary(s, 2000)
    assert s["servers"] == 5 and s["replicas"] == 3
    # the failed server held old values when it came back: hints or repair dealt with them
    assert s["hints_delivered"] + s["keys_repaired"] + s["read_repairs"] > 0
    assert s["last_id"]["worker"] == 7


def test_demo_against_real_servers(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                   memcached_urls: list[str], redis_urls: list[str]) -> None:
    servers = ",".join(memcached_urls[:2] + redis_urls[:2])
    code, out, _ = run(capsys, "demo", "--servers", servers, "--keys", "200", "--ops", "1500",
                       "--json", "--store", str(tmp_path / "s.db"))
    assert code == 0
    s = json.loads(out)
    check_summary(s, 1500)
    assert s["servers"] == 4


def test_where_lists_distinct_replicas(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "where", "user:1", "user:2", "ключ", "--json")
    assert code == 0
    got = json.loads(out)
    client = CacheClient([MemoryBackend(name=f"cache-{i}") for i in range(1, 6)], replicas=3)
    for key in ("user:1", "user:2", "ключ"):
        assert got[key] == client.preference_list(key)
        assert len(set(got[key])) == 3
    code, out, _ = run(capsys, "where", "user:1", "--key-prefix", "app:", "--pool", "7",
                       "--replicas", "2", "--json")
    prefixed = CacheClient([MemoryBackend(name=f"cache-{i}") for i in range(1, 8)],
                           replicas=2, key_prefix="app:")
    assert code == 0 and json.loads(out)["user:1"] == prefixed.preference_list("user:1")


def test_repair_command_against_redis(capsys: pytest.CaptureFixture[str],
                                      redis_urls: list[str]) -> None:
    client = CacheClient(redis_urls, replicas=3, key_prefix="clirepair:")
    for i in range(50):
        client.set(f"k{i}", i)
    code, out, _ = run(capsys, "repair", "--servers", ",".join(redis_urls),
                       "--key-prefix", "clirepair:", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["keys_differing"] == 0
    client.close()


def test_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--keys", "0"])
    with pytest.raises(SystemExit):
        main(["demo", "--pool", "2", "--replicas", "3"])
    with pytest.raises(SystemExit):
        main(["repair"])
    with pytest.raises(SystemExit):
        main(["where", "k", "--pool", "2"])


def test_switchable_server_fails_and_returns_with_hints_delivered() -> None:
    a, b = MemoryBackend(name="a"), MemoryBackend(name="b")
    sa = Switchable(a)
    sa.set(b"k", b"old", 0, None)
    sa.down = True
    with pytest.raises(ServerUnavailable, match="switched off"):
        sa.get(b"k")
    b.set(b"k", b"copy", 0, None)
    sa.add_hints([b"k"], [(b, b"k")])
    assert sa.pending_hints == 1
    sa.down = False
    assert sa.get(b"k") is None  # the hint removed the old value before the read
    assert b.get(b"k") is None  # and the fallback copy went too
    assert sa.delivered == 1 and sa.pending_hints == 0
