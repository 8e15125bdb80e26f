"""RedisLease against a real redis-server started on a free loopback port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import redis

from idgen import (
    ClockMovedBackwards,
    GeneratorDisabled,
    LeaseLost,
    NoFreeWorkerId,
    RedisLease,
    SnowflakeGenerator,
)


def test_leases_are_exclusive(redis_url: str) -> None:
    a = RedisLease(redis_url, max_worker=1)
    b = RedisLease(redis_url, max_worker=1)
    assert {a.worker_id, b.worker_id} == {0, 1}
    with pytest.raises(NoFreeWorkerId, match="all 2 worker ids"):
        RedisLease(redis_url, max_worker=1)
    a.release()
    c = RedisLease(redis_url, max_worker=1)
    assert c.worker_id == a.worker_id
    b.release()
    c.release()
    client = redis.Redis.from_url(redis_url)
    assert client.keys("shardkit:idgen:worker:?") == []  # released leases are gone


def test_generator_renews_and_stores_last_time(redis_url: str) -> None:
    lease = RedisLease(redis_url, ttl_s=1.2)
    gen = SnowflakeGenerator(lease)
    client = redis.Redis.from_url(redis_url)
    key = f"shardkit:idgen:worker:{lease.worker_id}"
    ids = gen.next_ids(1000)
    time.sleep(2.5)  # twice the TTL: only background renewals keep the lease alive
    assert client.get(key) is not None
    more = gen.next_ids(1000)
    assert len(set(ids + more)) == 2000
    last = int(client.get(key + ":last"))
    assert last >= gen.decode(ids[-1]).unix_ms
    gen.close()
    assert client.get(key) is None and int(client.get(key + ":last")) >= last


def test_stolen_lease_stops_generation(redis_url: str) -> None:
    lease = RedisLease(redis_url, ttl_s=1.2)
    gen = SnowflakeGenerator(lease)
    gen.next_id()
    client = redis.Redis.from_url(redis_url)
    client.set(f"shardkit:idgen:worker:{lease.worker_id}", "someone-else")
    deadline = time.monotonic() + 5
    with pytest.raises(GeneratorDisabled, match="another owner"):
        while time.monotonic() < deadline:
            gen.next_id()
            time.sleep(0.01)
    assert client.get(f"shardkit:idgen:worker:{lease.worker_id}") == b"someone-else"
    gen.close()  # must not delete the other owner's key
    assert client.get(f"shardkit:idgen:worker:{lease.worker_id}") == b"someone-else"


def test_unreachable_redis_stops_generation_before_the_lease_expires(redis_url: str) -> None:
    lease = RedisLease(redis_url, ttl_s=1.2)
    gen = SnowflakeGenerator(lease)
    gen.next_id()
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    pid = int(subprocess.check_output(["redis-cli", "-p", str(port), "info", "server"],
                                      text=True).split("process_id:")[1].split()[0])
    os.kill(pid, signal.SIGSTOP)  # a frozen server: renewals time out
    try:
        deadline = time.monotonic() + 8
        with pytest.raises(GeneratorDisabled, match="could not be renewed"):
            while time.monotonic() < deadline:
                gen.next_id()
                time.sleep(0.01)
    finally:
        os.kill(pid, signal.SIGCONT)
    with pytest.raises(LeaseLost):
        lease.check()


def test_restart_after_clock_step_back(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set("shardkit:idgen:worker:5:last", time.time_ns() // 1_000_000 + 30_000)
    gen = SnowflakeGenerator(RedisLease(redis_url, prefer=5))
    assert gen.worker == 5
    with pytest.raises(ClockMovedBackwards):
        gen.next_id()
    gen.close()


def test_forked_child_takes_its_own_redis_lease(redis_url: str) -> None:
    gen = SnowflakeGenerator(RedisLease(redis_url))
    first = gen.next_ids(100)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            ids = gen.next_ids(5000)  # the first call in the child takes a new lease
            payload = {"worker": gen.worker, "ids": ids}
            os.write(write_fd, json.dumps(payload).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    parent = gen.next_ids(5000)
    data = b""
    while chunk := os.read(read_fd, 1 << 20):
        data += chunk
    os.close(read_fd)
    os.waitpid(pid, 0)
    child = json.loads(data)
    assert child["worker"] != gen.worker
    everything = first + parent + child["ids"]
    assert len(set(everything)) == len(everything)
    time.sleep(0.3)
    client = redis.Redis.from_url(redis_url)
    assert client.get(f"shardkit:idgen:worker:{gen.worker}") is not None  # parent's intact
    gen.close()
