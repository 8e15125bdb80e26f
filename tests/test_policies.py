"""Write policies and read-through over real cache servers and stores."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import run_threads
from servers import MemcachedServer, RedisServer

from cachelib import CacheClient, ConfigError, WriteAround, WriteBack, WriteThrough
from cachelib._policies import CachedStore, cached
from cachelib._stores import ABSENT, SQLiteStore, StoreError


class DictStore:
    """A store in memory that counts its calls and can be told to fail."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.reads = self.writes = 0
        self.failing = False
        self.delay = 0.0

    def _check(self) -> None:
        if self.failing:
            raise StoreError("the store is down")
        if self.delay:
            time.sleep(self.delay)

    def get(self, key: str) -> Any:
        self._check()
        with self.lock:
            self.reads += 1
            return self.data.get(key, ABSENT)

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        self._check()
        with self.lock:
            self.reads += 1
            return {k: self.data[k] for k in keys if k in self.data}

    def put(self, key: str, value: Any) -> None:
        self._check()
        with self.lock:
            self.writes += 1
            self.data[key] = value

    def put_many(self, items: Mapping[str, Any]) -> None:
        self._check()
        with self.lock:
            self.writes += len(items)
            self.data.update(items)

    def delete(self, key: str) -> bool:
        self._check()
        with self.lock:
            self.writes += 1
            return self.data.pop(key, ABSENT) is not ABSENT

    def delete_many(self, keys: Iterable[str]) -> int:
        return sum(self.delete(k) for k in keys)

    def close(self) -> None:
        pass


@pytest.fixture(params=["memory", "memcached", "redis"])
def cache(request: pytest.FixtureRequest, memcached_urls: list[str],
          redis_urls: list[str]) -> Iterator[CacheClient]:
    prefix = f"p{uuid.uuid4().hex[:8]}:"
    urls = {"memory": None, "memcached": memcached_urls, "redis": redis_urls}[request.param]
    with CacheClient(urls, key_prefix=prefix) as c:
        yield c


@pytest.mark.parametrize("policy", ["write-through", "write-around", "write-back"])
def test_policies_read_and_write(cache: CacheClient, policy: str) -> None:
    store = DictStore()
    opts = {"max_delay": 0.01} if policy == "write-back" else None
    with CachedStore(cache, store, policy=policy, writeback=opts) as cs:
        cs.put("a", {"v": 1})
        assert cs.get("a") == {"v": 1}  # read-your-writes in every policy
        cs.put("a", {"v": 2})
        assert cs.get("a") == {"v": 2}
        cs.delete("a")
        assert cs.get("a", "gone") == "gone"
        cs.put("b", [1, 2])
        assert cs.flush()
        assert store.data == {"b": [1, 2]}
        store.data["c"] = "from the store"  # written behind the cache's back
        assert cs.get("c") == "from the store"  # read-through
        reads = store.reads
        assert cs.get("c") == "from the store" and store.reads == reads  # now cached
        assert cs.get_many(["b", "c", "absent"]) == {"b": [1, 2], "c": "from the store"}


@pytest.mark.parametrize("cls", [WriteThrough, WriteAround, WriteBack])
def test_batches_per_call_ttl_and_the_policy_classes(cache: CacheClient, cls: Any,
                                                     tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    opts: dict[str, Any] = {"max_delay": 0.01} if cls is WriteBack else {}
    with cls(cache, store, ttl_jitter=0, **opts) as cs:
        items = {f"k{i}": {"i": i, "text": "ключ" * (i % 3)} for i in range(250)}
        cs.set_many(items, ttl=60)
        assert cs.get_many(list(items)) == items  # read-your-writes for every policy
        assert cs.flush()
        assert store.get_many(list(items)) == items
        cs.set("one", 1, ttl=2)  # the cache-like name, with a per-call TTL
        assert cs.get("one") == 1
        cs.delete_many([f"k{i}" for i in range(0, 250, 2)] + ["one", "never-there"])
        assert cs.flush()
        left = cs.get_many([*items, "one"])
        assert left == {k: v for k, v in items.items() if int(k[1:]) % 2}
        assert store.get_many([*items, "one"]) == left
        cs.put_many({})  # nothing to do
        with pytest.raises(ConfigError, match="ttl must be"):
            cs.set("x", 1, ttl=0)
        with pytest.raises(ConfigError, match="ttl must be"):
            cs.put_many({"x": 1}, ttl=-5)
    store.close()


def test_per_call_ttl_reaches_the_cache(redis_url: str) -> None:
    with CacheClient([redis_url], key_prefix="ttl:") as c:
        cs = WriteThrough(c, DictStore(), ttl_jitter=0)
        cs.set("short", "v", ttl=5)
        cs.set_many({"long": "w"}, ttl=500)
        cs.set("default", "x")
        import redis as redis_py

        raw = redis_py.Redis.from_url(redis_url)
        try:
            assert 0 < raw.pttl("ttl:short") <= 5000
            assert 490_000 < raw.pttl("ttl:long") <= 500_000
            assert 290_000 < raw.pttl("ttl:default") <= 300_000  # the store's ttl (300)
        finally:
            raw.close()


def test_write_through_batch_store_failure_leaves_the_cache_alone() -> None:
    store = DictStore()
    cs = WriteThrough(CacheClient(), store)
    cs.set_many({"a": 1, "b": 2})
    store.failing = True
    with pytest.raises(StoreError):
        cs.set_many({"a": 10, "c": 30})
    store.failing = False
    assert cs.get_many(["a", "b", "c"]) == {"a": 1, "b": 2}  # the old values, no "c"


def test_policy_classes_refuse_conflicting_options() -> None:
    with pytest.raises(ConfigError, match="takes no 'policy'"):
        WriteThrough(CacheClient(), DictStore(), policy="write-back")
    with pytest.raises(ConfigError, match="unknown write-back option"):
        WriteBack(CacheClient(), DictStore(), max_dealy=0.1)
    with pytest.raises(ConfigError, match="directly"):
        WriteBack(CacheClient(), DictStore(), writeback={"max_delay": 0.1})
    wb = WriteBack(CacheClient(), DictStore(), batch_size=7, max_delay=0.2)
    assert wb.policy == "write-back" and wb.stats()["writeback"]["pending"] == 0
    wb.close()
    assert WriteAround(CacheClient(), DictStore()).policy == "write-around"


def test_write_through_store_failure_leaves_the_cache_alone() -> None:
    store = DictStore()
    cs = CachedStore(CacheClient(), store)
    cs.put("k", "old")
    store.failing = True
    with pytest.raises(StoreError):
        cs.put("k", "new")
    store.failing = False
    assert cs.get("k") == "old" and store.data["k"] == "old"


def test_read_through_single_flight_and_negative_caching() -> None:
    store = DictStore()
    store.data["hot"] = "value"
    store.delay = 0.05
    cs = CachedStore(CacheClient(), store, negative_ttl=30)
    results: list[Any] = []

    def reader(i: int) -> None:
        results.append(cs.get("hot"))

    run_threads(reader, 20)
    assert results == ["value"] * 20 and store.reads == 1  # one store read for 20 misses
    store.delay = 0
    assert cs.get("nope", "dflt") == "dflt" and cs.get("nope", "dflt") == "dflt"
    assert store.reads == 2  # the absence was cached
    store.data["none"] = None  # a stored None is a value, not an absence
    assert cs.get("none", "dflt") is None
    assert cs.stats()["negative_hits"] == 1


def test_xfetch_recomputes_early_and_ttl_jitter() -> None:
    store = DictStore()
    store.data["k"] = 1
    cs = CachedStore(CacheClient(), store, ttl=2, xfetch_beta=1e6, ttl_jitter=0.1)
    store.delay = 0.01  # a 10 ms load x beta 1e6: the next read surely recomputes early
    cs.get("k")
    store.delay = 0.0
    for _ in range(5):
        cs.get("k")
    assert cs.stats()["early_recomputes"] >= 1
    from cachelib._policies import _Entries
    from cachelib._values import Serializer

    entries = _Entries(Serializer(), 1000, 0.1, 30, 1.0)
    ttls = {entries.value(1, 0.0)[1] for _ in range(200)}
    assert min(ttls) >= 900 and max(ttls) <= 1100 and len(ttls) > 20


def test_cached_decorator() -> None:
    calls: list[tuple[Any, ...]] = []

    @cached(CacheClient(), ttl=60)
    def slow(a: int, b: str = "x") -> dict[str, Any]:
        calls.append((a, b))
        return {"a": a, "b": b}

    assert slow(1) == {"a": 1, "b": "x"} and slow(1) == {"a": 1, "b": "x"}
    assert slow(1, b="y") == {"a": 1, "b": "y"} and len(calls) == 2
    assert slow.invalidate(1) is True  # type: ignore[attr-defined]
    slow(1)
    assert len(calls) == 3
    assert slow.key_for(1).startswith("test_policies.")  # type: ignore[attr-defined]

    none_calls = []

    @cached(CacheClient(), ttl=60)
    def maybe(x: int) -> None:
        none_calls.append(x)

    maybe(1)
    maybe(1)
    assert len(none_calls) == 2  # None is not cached without negative=True


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="policy must be one of"):
        CachedStore(CacheClient(), DictStore(), policy="write-sometimes")
    with pytest.raises(ConfigError, match="ttl must be > 0"):
        CachedStore(CacheClient(), DictStore(), ttl=0)
    with pytest.raises(ConfigError, match="writeback options need"):
        CachedStore(CacheClient(), DictStore(), writeback={"batch_size": 5})


@pytest.mark.parametrize("kind", ["memcached", "redis"])
@pytest.mark.parametrize("policy", ["write-through", "write-around", "write-back"])
def test_no_stale_reads_after_cache_servers_return(kind: str, policy: str, tmp_path: Path,
                                                   memcached_urls: list[str],
                                                   redis_urls: list[str]) -> None:
    with contextlib.ExitStack() as stack:
        victim: MemcachedServer | RedisServer = MemcachedServer() if kind == "memcached" \
            else RedisServer(tmp_path, "--save", "", "--appendonly", "no")
        stack.callback(victim.stop)
        healthy = memcached_urls[:2] if kind == "memcached" else redis_urls[:2]
        cache = stack.enter_context(CacheClient(
            [*healthy, victim.url], key_prefix=f"s{uuid.uuid4().hex[:8]}:", timeout=0.2,
            dead_timeout=0.4))
        store = SQLiteStore(tmp_path / "sor.db")
        stack.callback(store.close)
        opts = {"max_delay": 0.01} if policy == "write-back" else None
        cs = stack.enter_context(CachedStore(cache, store, policy=policy, writeback=opts))
        keys = [f"k{i}" for i in range(120)]
        for k in keys:
            cs.put(k, f"v0:{k}")
            assert cs.get(k) == f"v0:{k}"  # cached
        victim_name = list(cache.servers)[-1]
        on_victim = [k for k in keys if cache.server_for(k) == victim_name]
        assert on_victim
        victim.freeze()
        try:
            for k in keys:  # updates while the server is hung: the cache part fails
                cs.put(k, f"v1:{k}")
        finally:
            victim.thaw()
        assert cs.flush()
        time.sleep(0.5)  # the dead_timeout window passes
        stale = [k for k in keys if cs.get(k) != f"v1:{k}"]
        assert stale == []
        assert all(store.get(k) == f"v1:{k}" for k in keys)


def test_write_back_loses_nothing_through_a_postgres_outage() -> None:
    # our own PostgreSQL server (never the shared one), killed while writes keep coming
    from servers import PostgresServer

    from cachelib._stores import SQLAlchemyStore

    server = PostgresServer()
    try:
        store = SQLAlchemyStore(server.url, table="wb_outage")
        cs = CachedStore(CacheClient(), store, policy="write-back",
                         writeback={"max_delay": 0.01, "backoff": 0.02, "max_backoff": 0.1})
        latest: dict[str, int] = {}
        for i in range(300):
            cs.put(f"k{i % 50}", i)
            latest[f"k{i % 50}"] = i
        assert cs.flush(5.0)
        server.kill()  # the store goes away: writes are acknowledged and kept queued
        for i in range(300, 600):
            cs.put(f"k{i % 80}", i)
            latest[f"k{i % 80}"] = i
        assert all(cs.get(k) == v for k, v in latest.items())  # reads stay consistent
        time.sleep(0.3)
        assert cs.stats()["writeback"]["failures"] >= 1
        server.start()
        assert cs.flush(20.0)
        assert cs.close(10.0) == []
        assert store.get_many(list(latest)) == latest  # every acknowledged write
        store.close()
    finally:
        server.close()
