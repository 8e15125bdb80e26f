"""Replication for :class:`~cachelib.CacheClient`, in the way of Dynamo: every key on
``N`` servers, writes and reads that need ``W`` and ``R`` of them, versioned records,
read repair and hinted handoff.

``CacheClient(servers, replicas=N)`` with N > 1 builds a :class:`ReplicatedCacheClient`
(chosen once, in ``CacheClient.__new__``); the unreplicated client's code is untouched.

Placement
    A key lives on the first N distinct servers of its preference list
    (``ring.get_nodes(encoded_key, N)``, :meth:`ReplicatedCacheClient.preference_list`).
    :func:`replica_ranges` lists the ring's hash ranges with their replica sets, for
    anti-entropy.

Records
    Every value is stored as a versioned record (:mod:`cachelib._versions`): an 8-byte
    version then the serialised value; a delete writes a tombstone (the version alone)
    that lives ``tombstone_ttl`` seconds. A version is a TrueTime-style ID
    (:class:`idgen.TrueTimeGenerator`): ``time | clock uncertainty | worker | sequence``.

Writes (``set``, ``set_many``, ``delete``, ``delete_many``)
    One request to every replica at once (every server's request half, then every
    reply half, as the unreplicated multi-key calls do: one round trip, not N), success
    when ``W`` acknowledged. A replica that is marked down, or fails, is replaced by the
    next server of the preference list beyond the first N (sloppy quorum; a stand-in's
    acknowledgement counts); the replica keeps a hint: the key is deleted on it, and the
    stand-in's copy afterwards, before it serves again. A single key whose replicas are
    all up takes a short path; on any failure it is sent again (the same record) the
    general way.

Reads (``get``, ``get_many``)
    Every replica at once (and the stand-ins of down replicas); at least ``R`` must
    answer (a miss is an answer). The newest version wins; a tombstone is an absent key;
    a value that is not a record (written by an unreplicated client) is version 0,
    older than any record.

Conflicts
    The larger version wins: the one minted later, then (same millisecond) the one with
    the larger clock uncertainty, then the larger worker id, then the larger sequence:
    the order of the ID's bits, the same answer on every client. Two versions from
    different workers whose TrueTime intervals overlap
    (:meth:`idgen.TrueTimeGenerator.interval`: neither was surely minted before the other)
    are *concurrent*: counted, and passed to ``on_conflict(key, versions)``. A version
    minted on an unsynchronised clock has no interval of its own: it is given the widest
    bound the ID records, 2**14 ms (Linux caps an unsynchronised clock's error estimate
    at 16 s). Versions from one worker are never concurrent: a generator's IDs strictly
    increase.

Read repair
    After a read, the newest record is written back (one fan-out, failures counted and
    hinted) to the replicas that answered with an older record, a value without a
    version, or a miss. The server cannot say how long the value has left to live, so a
    repaired copy expires ``repair_ttl`` seconds after the record's version time (its
    write), and a record older than that is not repaired. ``repair_ttl`` is at most
    ``tombstone_ttl``: a repaired copy always expires before any tombstone that
    supersedes it could, so read repair never brings a deleted key back.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from fastcore import HashRing, eps_bound_ms
from idgen import TrueTimeGenerator

from ._client import _MAX_TTL, CacheClient, _check_ttl
from ._errors import (
    ConfigError,
    QuorumError,
    ServerRefusedError,
    ServerUnavailable,
    ValueTooLargeError,
)
from ._versions import VERSIONED, tombstone, unwrap, wrap

__all__ = ("ReplicaRange", "ReplicatedCacheClient", "default_versions", "replica_ranges")

log = logging.getLogger("cachelib")
_Hit = tuple[bytes, int]
_Item = tuple[bytes, bytes, int]
_VERSION_BYTES = 8
_CONTINUE_AHEAD_MS = 1000


class ReplicaRange(NamedTuple):
    """A range of ring positions and the servers that replicate its keys.

    A key as the servers store it (``key_prefix`` included, hashed if it had to be)
    with ``lo <= ring.key_hash(key) < hi`` lives on ``replicas``, first replica first.
    """

    lo: int
    hi: int
    replicas: tuple[str, ...]


def replica_ranges(ring: HashRing, replicas: int) -> list[ReplicaRange]:
    """The ring's hash space cut into ranges that share a replica set.

    The ranges are sorted, disjoint and cover ``[0, 2**64)`` (``[0, 2**32)`` for a
    ketama ring); neighbours with the same replica set are merged. In ``xxh3`` mode
    without hash tags a key's ring position is :func:`fastcore.key_token` of the key,
    the token :class:`fastcore.MerkleTree` files it under, so one tree per range (or per
    range and replica) can be compared between the replicas.

    Args:
        ring: the placement ring.
        replicas: servers per key, 1 <= replicas <= the ring's node count.

    Raises:
        ConfigError: ``replicas`` out of range.
    """
    points = ring.points()
    owners = [name for _, name in points]
    distinct = len(set(owners))
    if isinstance(replicas, bool) or not isinstance(replicas, int) \
            or not 1 <= replicas <= max(distinct, 1):
        raise ConfigError(f"replicas must be an int in [1, {distinct}] (the ring's nodes), "
                          f"got {replicas!r}")
    if not points:
        return []
    total = len(owners)
    sets: list[tuple[str, ...]] = []
    for i in range(total):  # the first `replicas` distinct owners clockwise from point i
        found: list[str] = []
        j = i
        while len(found) < replicas:
            if owners[j] not in found:
                found.append(owners[j])
            j = j + 1 if j + 1 < total else 0
        sets.append(tuple(found))
    out: list[ReplicaRange] = []

    def add(lo: int, hi: int, reps: tuple[str, ...]) -> None:
        if lo >= hi:
            return  # points at the same position: the first one owns it
        if out and out[-1].hi == lo and out[-1].replicas == reps:
            out[-1] = out[-1]._replace(hi=hi)
        else:
            out.append(ReplicaRange(lo, hi, reps))

    # a key maps to the first point >= its hash, wrapping past the last point
    add(0, points[0][0] + 1, sets[0])
    for i in range(1, total):
        add(points[i - 1][0] + 1, points[i][0] + 1, sets[i])
    add(points[-1][0] + 1, 1 << 32 if ring.mode == "ketama" else 1 << 64, sets[0])
    return out


_DEFAULT_VERSIONS: TrueTimeGenerator | None = None
_DEFAULT_LOCK = threading.Lock()


def _reset_lock_in_child() -> None:
    global _DEFAULT_LOCK
    _DEFAULT_LOCK = threading.Lock()  # another thread may have held it at fork()


os.register_at_fork(after_in_child=_reset_lock_in_child)


def default_versions() -> TrueTimeGenerator:
    """The process's version generator, made on first use and shared by the replicated
    clients not given one.

    One lease per process, not per client: worker ids on a host are few (1,024), and a
    generator leased right after another released the id waits about 0.4 s before its
    first ID (the previous holder's safety margin). ``continue_ahead_ms=1000`` borrows
    ticks ahead of the clock instead (IDs stay strictly increasing), after such a
    restart or a clock step back of up to 1 s, so writes neither wait nor fail.
    A forked child leases its own worker id on its first write.

    Raises:
        ConfigError: no worker id is free on this host.
    """
    global _DEFAULT_VERSIONS
    with _DEFAULT_LOCK:
        if _DEFAULT_VERSIONS is None:
            try:
                _DEFAULT_VERSIONS = TrueTimeGenerator(continue_ahead_ms=_CONTINUE_AHEAD_MS)
            except Exception as exc:
                raise ConfigError(f"cannot lease a worker id for the version generator "
                                  f"({exc}); pass versions=TrueTimeGenerator(...)") from exc
        return _DEFAULT_VERSIONS


class _Counters:
    """The replication counters (read through ``replication_stats()``). Plain
    increments, as ``ServerStats``: under the GIL none is lost."""

    __slots__ = ("concurrent", "fallback_answers", "hinted_writes", "quorum_failures",
                 "read_repair_failures", "read_repairs", "reads", "stale_answers", "writes")

    def __init__(self) -> None:
        self.reads = self.writes = self.quorum_failures = self.read_repairs = 0
        self.read_repair_failures = self.concurrent = self.hinted_writes = 0
        self.stale_answers = self.fallback_answers = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


def unreplicated_stats() -> dict[str, int]:
    """``replication_stats()`` of a client with one replica per key: all zero."""
    return {"replicas": 1, "write_quorum": 1, "read_quorum": 1, **_Counters().as_dict()}


def _one_key_setter(backend: Any) -> tuple[Callable[[bytes, bytes, int, int], Any],
                                           Callable[[Any], Any]]:
    """``(send, recv)`` that store one key on ``backend`` in two halves; ``recv``
    returns something false when it was stored: the backend's own single-key halves
    (the Redis backend's raw-RESP ``send_set``) or its multi-key ones."""
    send, recv = getattr(backend, "send_set", None), getattr(backend, "recv_set", None)
    if send is not None and recv is not None:
        return send, recv
    send_many = backend.send_set_many

    def send_one(k: bytes, payload: bytes, flags: int, ttl: int) -> Any:
        return send_many([(k, payload, flags)], ttl)

    return send_one, backend.recv_set_many


class _Plan:
    """Where one call's keys go: each key's replicas, the servers asked, the stand-ins
    for replicas that are down or failed, and why each server failed."""

    __slots__ = ("failed", "groups", "prefs", "spares", "standin")

    def __init__(self) -> None:
        self.prefs: dict[bytes, list[str]] = {}  # key -> its N replicas
        self.groups: dict[str, list[bytes]] = {}  # server -> keys asked there (this round)
        self.standin: dict[tuple[str, bytes], str] = {}  # (stand-in, key) -> replica
        self.spares: dict[bytes, list[str]] = {}  # key -> its stand-ins so far
        self.failed: dict[bytes, dict[str, str]] = {}  # key -> server -> why

    def fail(self, k: bytes, name: str, reason: str) -> None:
        reasons = self.failed.get(k)
        if reasons is None:
            self.failed[k] = {name: reason}
        else:
            reasons[name] = reason


class ReplicatedCacheClient(CacheClient):
    """A :class:`~cachelib.CacheClient` that keeps every key on ``replicas`` servers.

    Built by ``CacheClient(servers, replicas=N, ...)`` with N > 1 (or directly). See the
    module documentation for the protocol. The options of :class:`~cachelib.CacheClient`
    apply, except ``failover``: with replicas, a down replica's keys always go to the
    next servers of the preference list (sloppy quorum).

    Args:
        servers: as :class:`~cachelib.CacheClient`; at least ``replicas`` of them.
        replicas: servers per key (N), 1 <= N <= the number of servers.
        write_quorum: acknowledgements a write needs (W), 1 <= W <= N; default N//2 + 1.
        read_quorum: answers a read needs (R), 1 <= R <= N; default N//2 + 1. With
            W + R > N every read sees the latest acknowledged write.
        on_conflict: ``on_conflict(key, versions)`` when a read finds concurrent
            versions (``versions``: sorted, the winner last); an exception it raises is
            logged, not raised.
        versions: the :class:`idgen.TrueTimeGenerator` that stamps writes (the caller
            closes it). By default :func:`default_versions`: one per process, with a
            worker id leased on this host (:class:`idgen.FileLease`: no server needed;
            a forked child leases its own on its first write). Clients on several
            hosts need distinct worker ids: pass generators leased with
            :class:`idgen.RedisLease`.
        tombstone_ttl: seconds a delete's tombstone lives, 1 <= tombstone_ttl <= 30
            days: how long a replica that missed the delete (and its hint) may return
            before the delete is forgotten.
        repair_ttl: read repair writes a record back only while it is younger than this
            many seconds, with a TTL that ends then; 0 repairs no values (tombstones
            still are), at most ``tombstone_ttl`` (default: ``tombstone_ttl``). It bounds
            how long a repaired copy can outlive a value written with a shorter TTL.
        **options: the options of :class:`~cachelib.CacheClient`.

    Raises:
        ConfigError: a bad option, or quorums out of range.

    ``add``, ``incr``, ``decr`` and ``touch`` raise :class:`~cachelib.ConfigError`:
    they read and modify a value in one server-side step, which N replicas cannot do
    together. ``delete`` returns True when the tombstone reached the write quorum (the
    replicas are not asked whether the key existed: that would cost a read first).
    """

    def __init__(self, servers: Any = None, *, replicas: int,
                 write_quorum: int | None = None, read_quorum: int | None = None,
                 on_conflict: Callable[[Any, list[int]], None] | None = None,
                 versions: TrueTimeGenerator | None = None, tombstone_ttl: int = 60,
                 repair_ttl: int | None = None, **options: Any) -> None:
        super().__init__(servers, **options)
        try:
            self._configure(replicas, write_quorum, read_quorum, on_conflict, versions,
                            tombstone_ttl, repair_ttl)
        except BaseException:
            super().close()
            raise

    def _configure(self, replicas: Any, write_quorum: Any, read_quorum: Any,
                   on_conflict: Any, versions: Any, tombstone_ttl: Any,
                   repair_ttl: Any) -> None:
        servers = len(self._backends)
        if isinstance(replicas, bool) or not isinstance(replicas, int) \
                or not 1 <= replicas <= servers:
            raise ConfigError(f"replicas must be an int in [1, {servers}] (the number of "
                              f"servers), got {replicas!r}")
        quorums = []
        for what, value in (("write_quorum", write_quorum), ("read_quorum", read_quorum)):
            if value is None:
                value = replicas // 2 + 1
            if isinstance(value, bool) or not isinstance(value, int) \
                    or not 1 <= value <= replicas:
                raise ConfigError(f"{what} must be an int in [1, replicas={replicas}], "
                                  f"got {value!r}")
            quorums.append(value)
        if on_conflict is not None and not callable(on_conflict):
            raise ConfigError(f"on_conflict must be callable, got {on_conflict!r}")
        if versions is not None and not isinstance(versions, TrueTimeGenerator):
            raise ConfigError("versions must be an idgen.TrueTimeGenerator, got "
                              f"{type(versions).__name__}")
        if isinstance(tombstone_ttl, bool) or not isinstance(tombstone_ttl, int) \
                or not 1 <= tombstone_ttl <= _MAX_TTL:
            raise ConfigError(f"tombstone_ttl must be an int number of seconds in "
                              f"[1, {_MAX_TTL}], got {tombstone_ttl!r}")
        if repair_ttl is None:
            repair_ttl = tombstone_ttl
        if isinstance(repair_ttl, bool) or not isinstance(repair_ttl, int) \
                or not 0 <= repair_ttl <= tombstone_ttl:
            raise ConfigError(f"repair_ttl must be an int number of seconds in "
                              f"[0, tombstone_ttl={tombstone_ttl}], got {repair_ttl!r}")
        self._replicas = replicas
        self._w, self._r = quorums
        self._on_conflict = on_conflict
        self._tombstone_ttl = tombstone_ttl
        self._repair_ttl = repair_ttl
        self._counters = _Counters()
        self._breakers = [(name, b.breaker) for name, b in self._backends.items()
                          if getattr(b, "breaker", None) is not None]
        self._setters = {name: _one_key_setter(b) for name, b in self._backends.items()}
        self._versions: TrueTimeGenerator = versions or default_versions()

    # --- introspection ------------------------------------------------------------------

    @property
    def versions(self) -> TrueTimeGenerator:
        """The generator that stamps this client's writes."""
        return self._versions

    def replication_stats(self) -> dict[str, int]:
        """Counters since the client was made: ``replicas``, ``write_quorum``,
        ``read_quorum``; ``reads`` and ``writes`` (keys; deletes are writes);
        ``quorum_failures`` (keys short of their quorum); ``read_repairs`` (replica
        copies written back) and ``read_repair_failures``; ``concurrent`` (reads that
        found concurrent versions); ``hinted_writes`` (copies written to a stand-in for
        a down replica); ``stale_answers`` (replica answers older than the newest);
        ``fallback_answers`` (read answers from stand-ins)."""
        return {"replicas": self._replicas, "write_quorum": self._w,
                "read_quorum": self._r, **self._counters.as_dict()}

    # --- placement -----------------------------------------------------------------------

    def _unavailable(self) -> dict[str, str]:
        """Servers whose breaker is open now (not those due for a probe): name -> why."""
        down: dict[str, str] = {}
        now = 0.0
        for name, breaker in self._breakers:
            until = breaker.down_until
            if until:
                now = now or time.monotonic()
                if now < until:
                    down[name] = f"{name} is marked down ({breaker.last_error})"
        return down

    def _all_up(self, k: bytes) -> list[str] | None:
        """``k``'s replicas when no server is marked down (the fast path), else None."""
        for _, breaker in self._breakers:
            if breaker.down_until:
                return None
        return self._ring.get_nodes(k, self._replicas)

    def _spare(self, k: bytes, exclude: Iterable[str]) -> str | None:
        """The next server of ``k``'s preference list beyond its replicas not in
        ``exclude`` (which holds the replicas), or None."""
        for name in self._ring.successors(k):
            if name not in exclude:
                return name
        return None

    def _plan(self, keys: Iterable[bytes], down: dict[str, str]) -> _Plan:
        plan = _Plan()
        n, nodes_of = self._replicas, self._ring.get_nodes
        prefs, groups = plan.prefs, plan.groups
        for k in keys:
            targets = prefs[k] = nodes_of(k, n)
            if down and not down.keys().isdisjoint(targets):
                targets = self._stand_ins(plan, k, targets, down)
            for name in targets:
                group = groups.get(name)
                if group is None:
                    groups[name] = [k]
                else:
                    group.append(k)
        return plan

    def _stand_ins(self, plan: _Plan, k: bytes, pl: list[str],
                   down: Mapping[str, str]) -> list[str]:
        """``k``'s targets with every replica in ``down`` replaced by a stand-in."""
        targets = []
        exclude = {*pl, *down, *plan.spares.get(k, ())}
        for name in pl:
            if name not in down:
                targets.append(name)
                continue
            plan.fail(k, name, down[name])
            spare = self._spare(k, exclude)
            if spare is not None:
                exclude.add(spare)
                targets.append(spare)
                plan.standin[spare, k] = plan.standin.get((name, k), name)
                plan.spares.setdefault(k, []).append(spare)
        return targets

    def _retry_plan(self, plan: _Plan, errors: dict[str, str],
                    down: dict[str, str]) -> dict[str, list[bytes]]:
        """Round two: the keys of the servers that failed, sent to further stand-ins."""
        gone = {**down, **errors}
        retry: dict[str, list[bytes]] = {}
        for name in errors:
            for k in plan.groups[name]:
                exclude = {*plan.prefs[k], *gone, *plan.spares.get(k, ())}
                spare = self._spare(k, exclude)
                if spare is None:
                    continue
                plan.standin[spare, k] = plan.standin.get((name, k), name)
                plan.spares.setdefault(k, []).append(spare)
                retry.setdefault(spare, []).append(k)
        return retry

    def _run_plan(self, plan: _Plan, down: dict[str, str], send: str, recv: str,
                  on_reply: Callable[[str, list[bytes], Any], None],
                  request: Callable[[list[bytes]], Any] | None, *args: Any) -> None:
        """Send the plan's requests to every server at once (``request(keys)`` builds a
        server's part; None: the keys themselves), pass each reply to ``on_reply(server,
        keys, reply)``, mark the keys of failed servers failed there, and send those
        again once to their stand-ins: two rounds at most."""
        groups = plan.groups
        while groups:
            parts = groups if request is None else \
                {name: request(ks) for name, ks in groups.items()}
            results, errors = self._fan_out(parts, send, recv, *args)
            for name, reply in results:
                on_reply(name, groups[name], reply)
            failed = {name: str(exc) for name, exc in errors}
            for name, reason in failed.items():
                for k in groups[name]:
                    plan.fail(k, name, reason)
            if not failed or groups is not plan.groups:
                break
            groups = self._retry_plan(plan, failed, down)

    # --- writes ----------------------------------------------------------------------------

    def _record(self, payload: bytes, flags: int, version: int) -> _Hit:
        if len(payload) + _VERSION_BYTES > self._max_value:
            raise ValueTooLargeError(len(payload) + _VERSION_BYTES, self._max_value,
                                     "versioned record (8-byte version and value)")
        return wrap(version, payload, flags)

    def _write(self, op: str, records: dict[bytes, _Hit], ttl: int,
               originals: Mapping[bytes, Any]) -> list[bytes]:
        """Store the records on their replicas; the keys short of the write quorum
        (after raising :class:`QuorumError` for them unless ``ignore_errors``)."""
        down = self._unavailable()
        plan = self._plan(records, down)
        acked: dict[bytes, list[str]] = {k: [] for k in records}

        def stored(name: str, keys: list[bytes], not_stored: list[bytes]) -> None:
            refused = set(not_stored)
            for k in keys:
                if k in refused:
                    plan.fail(k, name, f"{name} refused the value")
                else:
                    acked[k].append(name)

        self._run_plan(plan, down, "send_set_many", "recv_set_many", stored,
                       lambda ks: [(k, *records[k]) for k in ks], ttl)
        self._hint_writes(plan, acked)
        counters = self._counters
        counters.writes += len(records)
        short = {k: len(names) for k, names in acked.items() if len(names) < self._w}
        if short:
            counters.quorum_failures += len(short)
            self._quorum_failed(op, "acknowledged", self._w, "write_quorum", short, plan,
                                originals, len(records))
        return list(short)

    def _hint_writes(self, plan: _Plan, acked: dict[bytes, list[str]]) -> None:
        """Hints for the replicas that missed a write, and the stand-ins' copies to
        delete once they are back; hints for stand-ins that failed too."""
        if not plan.failed:
            return
        keys: dict[str, list[bytes]] = {}
        cleanup: dict[str, list[tuple[Any, bytes]]] = {}
        backends = self._backends
        hinted = 0
        for k in plan.failed:
            stored = acked[k]
            for name in plan.prefs[k]:
                if name not in stored:
                    keys.setdefault(name, []).append(k)
            for spare in plan.spares.get(k, ()):
                if spare in stored:
                    hinted += 1
                    cleanup.setdefault(plan.standin[spare, k], []).append(
                        (backends[spare], k))
                else:
                    keys.setdefault(spare, []).append(k)
        for name in keys.keys() | cleanup.keys():
            self._hint(backends[name], keys.get(name, ()), cleanup.get(name))
        self._counters.hinted_writes += hinted

    def _quorum_failed(self, op: str, did: str, needed: int, option: str,
                       counts: dict[bytes, int], plan: _Plan,
                       originals: Mapping[bytes, Any], total: int) -> None:
        """Log, and raise :class:`QuorumError` unless ``ignore_errors``; ``counts``:
        the keys short of the quorum -> how many servers acknowledged / answered."""
        short = list(counts)
        k = short[0]
        failed = plan.failed.get(k, {})
        head = f"{op} of {originals[k]!r}" if total == 1 else \
            f"{op}: {len(short)} of {total} keys short of the quorum; the first, " \
            f"{originals[k]!r}"
        message = (f"{head}: {counts[k]} server{'s' if counts[k] != 1 else ''} {did}, "
                   f"{option}={needed} needed (replicas={self._replicas}); failed: "
                   + ("; ".join(failed.values()) or "none"))
        log.warning("cache quorum missed: %s", message)
        if not self._ignore:
            raise QuorumError(message, acked=counts[k], needed=needed, failed=failed,
                              keys=[originals[s] for s in short])

    def set(self, key: str | bytes, value: Any, ttl: int = 0) -> bool:
        """Store ``value`` under ``key`` on its replicas for ``ttl`` seconds (0: no
        expiry), all at once.

        Returns True when ``write_quorum`` replicas acknowledged (False only with
        ``ignore_errors``).

        Raises:
            QuorumError: fewer than ``write_quorum`` acknowledged (the others may
                still hold the new value).
            KeyTypeError, InvalidKeyError, ValueTypeError, ValueTooLargeError,
            ConfigError (a bad ttl).
        """
        payload, flags = self._dumps(value)
        _check_ttl(ttl)
        k = self._encode(key)
        record = self._record(payload, flags, self._versions.next_id())
        return self._write_one("set", k, record, ttl, key)

    def _write_one(self, op: str, k: bytes, record: _Hit, ttl: int, key: Any) -> bool:
        """One key's record to its replicas: the fast path when all are up and all
        acknowledge; else (or when one fails meanwhile) the general path, which sends it
        again (the same record: harmless) with stand-ins and hints."""
        replicas = self._all_up(k)
        if replicas is not None:
            payload, flags = record
            setters = self._setters
            pending = []
            ok = True
            for name in replicas:  # every request on the wire, then every reply read
                send, recv = setters[name]
                try:
                    pending.append((recv, send(k, payload, flags, ttl)))
                except ServerUnavailable:
                    ok = False
            for recv, sent in pending:
                try:
                    if recv(sent):  # the keys not stored: a refusal
                        ok = False
                except (ServerUnavailable, ServerRefusedError):
                    ok = False
            if ok:
                self._counters.writes += 1
                return True
        return not self._write(op, {k: record}, ttl, {k: key})

    def set_many(self, mapping: Mapping[str | bytes, Any], ttl: int = 0) -> list[Any]:
        """Store every item on its replicas, one request per server, all at once.

        Returns the keys short of the write quorum (empty unless ``ignore_errors``).

        Raises:
            QuorumError: some keys are short of the write quorum (the others are
                stored); and as :meth:`set` for bad keys or values, before sending.
        """
        _check_ttl(ttl)
        originals, encoded = self._encode_items(mapping)
        if not encoded:
            return []
        versions = self._versions.next_ids(len(encoded))
        records = {k: self._record(p, f, v)
                   for (k, (p, f)), v in zip(encoded.items(), versions)}
        return [originals[k] for k in self._write("set_many", records, ttl, originals)]

    def delete(self, key: str | bytes) -> bool:
        """Replace ``key`` by a tombstone on its replicas (it lives ``tombstone_ttl``).

        Returns True when ``write_quorum`` replicas acknowledged (whether the key
        existed is not asked).

        Raises:
            QuorumError: fewer than ``write_quorum`` acknowledged (unless
                ``ignore_errors``: False).
        """
        k = self._encode(key)
        return self._write_one("delete", k, tombstone(self._versions.next_id()),
                               self._tombstone_ttl, key)

    def delete_many(self, keys: Iterable[str | bytes]) -> int:
        """Tombstones for every key, one request per server; how many reached the
        write quorum.

        Raises:
            QuorumError: some keys are short of the write quorum (unless
                ``ignore_errors``).
        """
        keys = keys if isinstance(keys, list) else list(keys)
        originals = dict(zip(self._keys.encode_many(keys), keys))
        if not originals:
            return 0
        records = {k: tombstone(v)
                   for k, v in zip(originals, self._versions.next_ids(len(originals)))}
        return len(records) - len(self._write("delete_many", records, self._tombstone_ttl,
                                               originals))

    def _unsupported(self, op: str) -> ConfigError:
        return ConfigError(
            f"{op}() is not supported with replicas={self._replicas}: it reads and changes "
            "a value in one step on one server, which the replicas cannot do together; use "
            "set() / get(), or a client with replicas=1")

    def add(self, key: str | bytes, value: Any, ttl: int = 0) -> bool:
        """Not supported with replicas: raises :class:`~cachelib.ConfigError`."""
        raise self._unsupported("add")

    def touch(self, key: str | bytes, ttl: int = 0) -> bool:
        """Not supported with replicas: raises :class:`~cachelib.ConfigError`."""
        raise self._unsupported("touch")

    def incr(self, key: str | bytes, delta: int = 1) -> int | None:
        """Not supported with replicas: raises :class:`~cachelib.ConfigError`."""
        raise self._unsupported("incr")

    def decr(self, key: str | bytes, delta: int = 1) -> int | None:
        """Not supported with replicas: raises :class:`~cachelib.ConfigError`."""
        raise self._unsupported("decr")

    # --- reads -----------------------------------------------------------------------------

    def _read(self, keys: Iterable[bytes], originals: Mapping[bytes, Any]
              ) -> tuple[dict[bytes, _Hit | None], dict[bytes, int], _Plan]:
        """Every replica's answer for the keys, settled: ``{key: (payload, flags) or
        None (absent)}`` for the keys with a read quorum; for the keys without, how
        many servers answered; the plan."""
        down = self._unavailable()
        plan = self._plan(keys, down)
        answers: dict[bytes, list[tuple[str, _Hit | None]]] = {k: [] for k in plan.prefs}

        def answered(name: str, keys: list[bytes], found: dict[bytes, _Hit]) -> None:
            for k in keys:
                answers[k].append((name, found.get(k)))

        self._run_plan(plan, down, "send_get_many", "recv_get_many", answered, None)
        return *self._settle(answers, plan, originals), plan

    def _settle(self, answers: dict[bytes, list[tuple[str, _Hit | None]]], plan: _Plan,
                originals: Mapping[bytes, Any]
                ) -> tuple[dict[bytes, _Hit | None], dict[bytes, int]]:
        quorum = self._r
        out: dict[bytes, _Hit | None] = {}
        short: dict[bytes, int] = {}
        repairs: dict[int, dict[str, list[_Item]]] = {}  # ttl -> server -> records
        for k, got in answers.items():
            if len(got) < quorum:
                short[k] = len(got)
                continue
            first = got[0][1]
            for _, hit in got:
                if hit != first:
                    out[k] = self._reconcile(k, got, plan, originals, repairs)
                    break
            else:  # every replica agrees: the common case
                if first is None:
                    out[k] = None
                elif first[1] & VERSIONED:
                    rec = unwrap(*first)
                    out[k] = None if rec is None or rec.deleted else (rec.payload, rec.flags)
                else:
                    out[k] = first
        counters = self._counters
        counters.reads += len(answers)
        if plan.spares:
            counters.fallback_answers += sum(
                1 for k, spares in plan.spares.items() for name, _ in answers[k]
                if name in spares)
        if repairs:
            self._repair(repairs)
        if short:
            counters.quorum_failures += len(short)
        return out, short

    def _reconcile(self, k: bytes, got: list[tuple[str, _Hit | None]], plan: _Plan,
                   originals: Mapping[bytes, Any],
                   repairs: dict[int, dict[str, list[_Item]]]) -> _Hit | None:
        """The newest of answers that differ; schedules the read repair."""
        best = -1
        best_hit: _Hit | None = None
        best_rec = None
        seen: list[tuple[str, int]] = []  # (server, version): -1 a miss, 0 no record
        for name, hit in got:
            version = -1
            if hit is not None:
                rec = unwrap(*hit)
                version = 0 if rec is None else rec.version
                if version > best:
                    best, best_hit, best_rec = version, hit, rec
            seen.append((name, version))
        self._counters.stale_answers += sum(1 for _, v in seen if v < best)
        if best_rec is None:  # misses and values without a version: nothing to repair
            return best_hit
        older = {v for _, v in seen if 0 < v < best}
        if older:
            self._check_concurrent(originals[k], older, best)
        ttl = self._repair_ttl_of(best, best_rec.deleted)
        if ttl and best_hit is not None:
            replicas = plan.prefs[k]
            per_server = repairs.setdefault(ttl, {})
            for name, version in seen:
                if version < best and name in replicas:
                    per_server.setdefault(name, []).append((k, *best_hit))
        return None if best_rec.deleted else (best_rec.payload, best_rec.flags)

    def _check_concurrent(self, key: Any, older: Iterable[int], best: int) -> None:
        concurrent = sorted(v for v in older if self._concurrent(v, best))
        if not concurrent:
            return
        self._counters.concurrent += 1
        if self._on_conflict is not None:
            try:
                self._on_conflict(key, [*concurrent, best])
            except Exception:  # a hook must never break the read
                log.exception("cachelib on_conflict hook failed")

    def _concurrent(self, a: int, b: int) -> bool:
        """Whether versions ``a`` and ``b`` may have been minted at the same time: from
        different workers, with overlapping TrueTime intervals."""
        try:
            worker_a, (lo_a, hi_a) = self._interval(a)
            worker_b, (lo_b, hi_b) = self._interval(b)
        except Exception:  # not an ID of this layout: no order can be proven
            return True
        return worker_a != worker_b and lo_a <= hi_b and lo_b <= hi_a

    def _interval(self, version: int) -> tuple[int, tuple[int, int]]:
        """A version's worker and ``(earliest, latest)`` Unix ms. An unsynchronised
        clock records no bound: it is taken as the largest bound the layout records
        (2**14 ms, about Linux's 16 s limit of an unsynchronised clock's error)."""
        gen = self._versions
        interval = gen.interval(version)
        decoded = gen.decode(version)
        if interval is None:
            bound = eps_bound_ms(gen.layout.max_eps - 1, gen.layout.max_eps) or 0
            interval = decoded.unix_ms - bound, decoded.unix_ms + bound
        return decoded.worker, interval

    def _repair_ttl_of(self, version: int, deleted: bool) -> int:
        """The TTL of a repaired copy: what is left of the repair window (tombstones:
        of ``tombstone_ttl``) since the version's time; 0 when it is over."""
        window = self._tombstone_ttl if deleted else self._repair_ttl
        age_s = self._age_s(version) if window else None
        if age_s is None:
            return 0
        left = window - age_s
        return math.ceil(left) if left > 0 else 0

    def _age_s(self, version: int) -> float | None:
        """Seconds since ``version`` was minted; None for an ID of another layout."""
        try:
            return max(0.0, time.time() - self._versions.decode(version).unix_ms / 1000)
        except Exception:
            return None

    def _repair(self, repairs: dict[int, dict[str, list[_Item]]]) -> None:
        counters = self._counters
        for ttl, parts in repairs.items():
            results, errors = self._fan_out(parts, "send_set_many", "recv_set_many", ttl)
            for name, not_stored in results:
                counters.read_repairs += len(parts[name]) - len(not_stored)
                counters.read_repair_failures += len(not_stored)
                if not_stored:
                    self._hint(self._backends[name], not_stored)
            for name, exc in errors:
                log.info("cache read repair failed: %s", exc)
                counters.read_repair_failures += len(parts[name])
                self._hint(self._backends[name], [k for k, _, _ in parts[name]])

    def get(self, key: str | bytes, default: Any = None) -> Any:
        """The newest value of ``key`` among its replicas, or ``default`` when it is
        absent (or deleted; or, with ``ignore_errors``, when too few replicas answered).

        Raises:
            QuorumError: fewer than ``read_quorum`` replicas answered.
            KeyTypeError, InvalidKeyError, SerializationError.
        """
        k = self._encode(key)
        replicas = self._all_up(k)
        if replicas is not None:  # the fast path: all up, all answer, all agree
            results, errors = self._fan_out({name: [k] for name in replicas},
                                            "send_get_many", "recv_get_many")
            if not errors:
                got = [(name, found.get(k)) for name, found in results]
                first = got[0][1]
                if all(hit == first for _, hit in got):
                    self._counters.reads += 1
                    if first is None:
                        return default
                    if first[1] & VERSIONED:
                        rec = unwrap(*first)
                        if rec is None or rec.deleted:
                            return default
                        return self._loads(rec.payload, rec.flags)
                    return self._loads(first[0], first[1])
                plan = _Plan()
                plan.prefs[k] = replicas
                hit = self._settle({k: got}, plan, {k: key})[0][k]
                return default if hit is None else self._loads(hit[0], hit[1])
        found, short, plan = self._read((k,), {k: key})
        if short:
            self._quorum_failed("get", "answered", self._r, "read_quorum", short, plan,
                                {k: key}, 1)
            return default
        hit = found[k]
        return default if hit is None else self._loads(hit[0], hit[1])

    def get_many(self, keys: Iterable[str | bytes]) -> dict[Any, Any]:
        """The newest values of the ``keys`` that are present, as ``{key: value}``:
        one multi-key request per server, all servers at once.

        Raises:
            QuorumError: some keys had fewer than ``read_quorum`` answers (with
                ``ignore_errors`` they are missing from the result instead).
        """
        keys = keys if isinstance(keys, list) else list(keys)
        originals = dict(zip(self._keys.encode_many(keys), keys))
        if not originals:
            return {}
        found, short, plan = self._read(originals, originals)
        if short:
            self._quorum_failed("get_many", "answered", self._r, "read_quorum", short, plan,
                                originals, len(originals))
        loads = self._loads
        return {originals[k]: loads(hit[0], hit[1]) for k, hit in found.items()
                if hit is not None}

    # --- the rest --------------------------------------------------------------------------

    def __repr__(self) -> str:
        return (f"ReplicatedCacheClient({list(self._backends)!r}, ring={self._ring.mode!r}, "
                f"replicas={self._replicas}, write_quorum={self._w}, "
                f"read_quorum={self._r})")
