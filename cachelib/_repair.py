"""Anti-entropy for a replicated cache: find and repair the keys on which the replicas
of a key disagree, with Merkle trees, so that only the differences cross the network.

A key lives on the first ``N`` distinct servers of its ring preference list
(``client.ring.get_nodes(encoded_key, N)``, the same list as the first ``N`` of
``ring.successors``). One round of :func:`repair`:

1. **Listing.** Every server lists its keys (those with the client's key prefix), each
   with the 64-bit :func:`record_digest` of its stored record: Redis computes it on the
   server (a Lua script per ``SCAN`` batch: values never cross the network); memcached
   lists its keys with ``lru_crawler metadump`` and the values are fetched and digested
   here; a :class:`~cachelib.MemoryBackend` digests in-process. The bytes read are
   reported as *listing bytes*, apart from the exchange below.
2. **Trees.** For every pair of servers (A, B) that both hold replicas of some keys,
   each side builds a :class:`fastcore.MerkleTree` over the whole 64-bit key-token
   range from the keys whose replica set holds both A and B (item = the key and its
   record digest; depth from the key count, about 2 keys per leaf, at most
   :data:`MAX_DEPTH`).
3. **Exchange.** A compares its tree with B's level by level
   (:func:`fastcore.diff_levels` over B's :meth:`~fastcore.MerkleTree.expand`), then the
   keys of the differing leaves (:func:`fastcore.compare_keys` on B's per-leaf
   ``(key, digest)`` listing). Both run in this process, but the bytes a real
   two-party exchange would ship are counted: a 16-byte handshake (key count and root),
   per expanded node a 4-byte id and the two 8-byte child digests, then 4 bytes per
   differing leaf and, per key of those leaves on B, a 2-byte length, the key and its
   8-byte digest.
4. **Repair.** Both sides' records of the differing keys are read; the newest is
   written to the other side with :meth:`set` (exact payload and flags) and the
   remaining TTL of the copy it came from (Redis ``PTTL``, memcached's meta-get ``t``
   flag, the in-process deadline). *Newest* is decided by
   :func:`cachelib._versions.unwrap`: the larger version wins; a tombstone is a record
   like any other, so a newer delete is copied over an older value and never undone
   by an older one; a value that is not a versioned record counts as version 0 (and a
   corrupt record below that); at equal versions a tombstone beats a value, then the
   larger digest wins, so that every pair decides alike. A key missing on one side is
   copied from the side that has it. Repair bytes count the key and payload bytes of
   every record read and written.

Pairs are handled in a fixed order (by the servers' order in the client) and every
repair updates the listings in memory, so one round leaves every replica of a key with
the newest record even when all ``N`` disagree; a second round finds nothing.

The *full comparison* of the report is the baseline the trees avoid: per pair, every
key with its 8-byte digest (and 2-byte length) shipped from the smaller side to the
other.

Tombstones must outlive the interval between rounds (Cassandra's ``gc_grace_seconds``
rule): a replica that missed a delete keeps the old value, and once the tombstones on
the other replicas have expired that value is the only record left. A round does not
copy a value older than the client's ``tombstone_ttl`` to a replica that lacks the key
(``kept_old`` in the report; read repair follows the same rule), but a read that meets
it still returns it until it expires. Run rounds (:class:`BackgroundRepair`'s ``interval``
plus a round's duration) well within the replicated client's ``tombstone_ttl``.

Concurrency: a round runs beside the live traffic. A client write that lands between
the read and the repair write of the same key can be overwritten by the older record
on that one replica; the write reached its other replicas, so the next round restores
it. Run rounds periodically (:class:`BackgroundRepair`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fastcore import MAX_MERKLE_DEPTH, MerkleTree, compare_keys, diff_levels, key_token

from ._backends import MemcachedBackend, _pack
from ._errors import CacheError, ConfigError, SerializationError, ServerUnavailable
from ._versions import unwrap

__all__ = ("MAX_DEPTH", "BackgroundRepair", "PairResult", "RepairReport", "record_digest",
           "repair")

log = logging.getLogger("cachelib")

#: Deepest tree chosen from the key count (2**20 leaves, 16 MiB per tree); Cassandra's cap.
MAX_DEPTH = 20
#: Keys per leaf the automatic depth aims at: one more level costs ~20 bytes per differing
#: leaf in the tree exchange and saves half its keys (~20 bytes each) in the key compare,
#: so the total is flat from 1 to 2 keys per leaf and grows beyond (measured: 8 keys per
#: leaf exchange ~25% more bytes than 2).
KEYS_PER_LEAF = 2
_NODE_ID = 4  # bytes of a node or leaf id in the exchange
_DIGEST = 8
_KEY_LENGTH = 2  # a key in a listing: 2-byte length, then the key
_HANDSHAKE = 16  # key count (both sides pick the same depth) and the root digest
_MEMCACHED_MAX_TTL = 30 * 24 * 3600  # memcached reads a larger expiry as a Unix time
_UNKNOWN_TTL = -1.0


def record_digest(payload: bytes, flags: int) -> int:
    """The 64-bit digest of a stored record ``(payload, flags)``: the first 8 bytes
    (big-endian) of the SHA-1 of the record as the Redis backend stores it (the flags
    byte, then the payload). Redis computes the same on the server
    (``redis.sha1hex``), so the listings of every backend kind compare."""
    data = _pack(payload, flags) if 0 <= flags <= 0xFF else \
        b"\xff\xff" + flags.to_bytes(8, "big", signed=True) + payload  # not a cachelib flag
    return int.from_bytes(hashlib.sha1(data).digest()[:8], "big")


@dataclass(frozen=True)
class PairResult:
    """What one pair of servers exchanged.

    Attributes:
        servers: the two servers, in the client's order.
        keys: keys whose replica set holds both servers, listed on either.
        depth: the depth of the pair's trees.
        leaves_differing: leaves whose digests differed.
        keys_differing: keys present on one side only or with different records.
        repaired: records written (in a dry run: that would have been written).
        failed_writes: records a server refused (too large for it, out of memory).
        tree_bytes, key_compare_bytes, repair_bytes: bytes of each stage (see the module).
        full_comparison_bytes: every key and its digest, shipped from the smaller side.
        error: why the pair was not (fully) compared and repaired, else None.
    """

    servers: tuple[str, str]
    keys: int = 0
    depth: int = 0
    leaves_differing: int = 0
    keys_differing: int = 0
    repaired: int = 0
    failed_writes: int = 0
    tree_bytes: int = 0
    key_compare_bytes: int = 0
    repair_bytes: int = 0
    full_comparison_bytes: int = 0
    error: str | None = None


@dataclass(frozen=True)
class RepairReport:
    """The outcome of one anti-entropy round (:func:`repair`).

    Attributes:
        servers: every server of the client.
        replicas: N, the copies of each key.
        dry_run: nothing was written; the counts say what would have been.
        pairs: one :class:`PairResult` per pair of servers that share keys.
        keys_listed: keys listed per server.
        listing_bytes: bytes read from each server to list it.
        repaired_by_direction: ``{(from, to): records copied}``.
        errors: ``{server or "a <-> b": message}``: servers that could not be listed
            and pairs that failed; the other pairs were still repaired.
        seconds: wall time of the round.
        note: why nothing was done (one replica), or that the round was stopped.
        listing_seconds: wall time of the listing stage (all servers at once).
        kept_old: values older than the client's ``tombstone_ttl`` not copied to a
            replica that lacks the key (the absence may be an expired delete).
    """

    servers: tuple[str, ...]
    replicas: int
    dry_run: bool
    pairs: tuple[PairResult, ...]
    keys_listed: Mapping[str, int]
    listing_bytes: Mapping[str, int]
    repaired_by_direction: Mapping[tuple[str, str], int]
    errors: Mapping[str, str]
    seconds: float
    note: str = ""
    listing_seconds: float = 0.0
    kept_old: int = 0

    @property
    def pairs_compared(self) -> int:
        """Pairs whose comparison and repair finished."""
        return sum(p.error is None for p in self.pairs)

    @property
    def total_listing_bytes(self) -> int:
        return sum(self.listing_bytes.values())

    @property
    def tree_bytes(self) -> int:
        return sum(p.tree_bytes for p in self.pairs)

    @property
    def key_compare_bytes(self) -> int:
        return sum(p.key_compare_bytes for p in self.pairs)

    @property
    def repair_bytes(self) -> int:
        return sum(p.repair_bytes for p in self.pairs)

    @property
    def exchange_bytes(self) -> int:
        """Tree exchange + key compare + repair bytes."""
        return self.tree_bytes + self.key_compare_bytes + self.repair_bytes

    @property
    def full_comparison_bytes(self) -> int:
        return sum(p.full_comparison_bytes for p in self.pairs)

    @property
    def savings(self) -> float:
        """Full comparison bytes / exchange bytes (inf when nothing was exchanged)."""
        return self.full_comparison_bytes / self.exchange_bytes if self.exchange_bytes \
            else math.inf

    @property
    def keys_differing(self) -> int:
        return sum(p.keys_differing for p in self.pairs)

    @property
    def keys_repaired(self) -> int:
        return sum(p.repaired for p in self.pairs)

    @property
    def failed_writes(self) -> int:
        return sum(p.failed_writes for p in self.pairs)

    @property
    def ok(self) -> bool:
        """No server or pair failed and no write was refused."""
        return not self.errors and not self.failed_writes

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for JSON): every field and total."""
        return {
            "servers": list(self.servers), "replicas": self.replicas, "dry_run": self.dry_run,
            "pairs_compared": self.pairs_compared, "keys_listed": dict(self.keys_listed),
            "listing_bytes": dict(self.listing_bytes), "tree_bytes": self.tree_bytes,
            "key_compare_bytes": self.key_compare_bytes, "repair_bytes": self.repair_bytes,
            "exchange_bytes": self.exchange_bytes,
            "full_comparison_bytes": self.full_comparison_bytes,
            "keys_differing": self.keys_differing, "keys_repaired": self.keys_repaired,
            "repaired_by_direction": {f"{a} -> {b}": n
                                      for (a, b), n in self.repaired_by_direction.items()},
            "failed_writes": self.failed_writes, "errors": dict(self.errors),
            "seconds": self.seconds, "listing_seconds": self.listing_seconds,
            "note": self.note, "kept_old": self.kept_old,
            "pairs": [dataclasses.asdict(p) for p in self.pairs],
        }

    def summary(self) -> str:
        """A text table of the round."""
        head = (f"anti-entropy over {len(self.servers)} servers, replicas={self.replicas}"
                f"{' (dry run: nothing written)' if self.dry_run else ''}, "
                f"{self.seconds:.2f} s (listing {self.listing_seconds:.2f} s)")
        lines = [head]
        if self.note:
            lines.append(self.note)
        if self.replicas < 2:
            return "\n".join(lines)
        width = max([len(s) for s in self.servers] + [6])
        lines += ["", f"{'server':<{width}}  {'keys listed':>11}  {'listing bytes':>13}"]
        for s in self.servers:
            listed = f"{self.keys_listed[s]:,}" if s in self.keys_listed else "-"
            read = f"{self.listing_bytes[s]:,}" if s in self.listing_bytes else "-"
            lines.append(f"{s:<{width}}  {listed:>11}  {read:>13}")
        pw = max([len(f"{a} <-> {b}") for a, b in (p.servers for p in self.pairs)] + [4])
        lines += ["", f"{'pair':<{pw}}  {'keys':>8}  {'depth':>5}  {'leaves':>6}  "
                  f"{'differ':>6}  {'repaired':>8}  {'tree B':>9}  {'keys B':>9}  "
                  f"{'repair B':>9}  {'full B':>11}"]
        for p in self.pairs:
            name = f"{p.servers[0]} <-> {p.servers[1]}"
            lines.append(f"{name:<{pw}}  {p.keys:>8,}  {p.depth:>5}  {p.leaves_differing:>6,}  "
                         f"{p.keys_differing:>6,}  {p.repaired:>8,}  {p.tree_bytes:>9,}  "
                         f"{p.key_compare_bytes:>9,}  {p.repair_bytes:>9,}  "
                         f"{p.full_comparison_bytes:>11,}"
                         + (f"  ERROR {p.error}" if p.error else ""))
        ratio = "no bytes exchanged" if not self.exchange_bytes else \
            f"{self.savings:,.1f}x fewer"
        lines += [
            "",
            f"pairs compared {self.pairs_compared} of {len(self.pairs)}; keys differing "
            f"{self.keys_differing:,}; keys {'to repair' if self.dry_run else 'repaired'} "
            f"{self.keys_repaired:,}" + (f"; writes refused {self.failed_writes:,}"
                                         if self.failed_writes else ""),
            f"bytes: listing {self.total_listing_bytes:,}; exchange {self.exchange_bytes:,} "
            f"(tree {self.tree_bytes:,} + key compare {self.key_compare_bytes:,} + repair "
            f"{self.repair_bytes:,}) vs full key-by-key comparison "
            f"{self.full_comparison_bytes:,}: {ratio}",
        ]
        if self.repaired_by_direction:
            lines.append("copied: " + ", ".join(
                f"{a} -> {b}: {n:,}" for (a, b), n in self.repaired_by_direction.items()))
        for where, message in self.errors.items():
            lines.append(f"error {where}: {message}")
        return "\n".join(lines)


class _StoppedError(Exception):
    """The round was asked to stop (:meth:`BackgroundRepair.stop`)."""


# A record as read for repair: (payload, flags, remaining seconds | None | _UNKNOWN_TTL).
_Rec = tuple[bytes, int, float | None]


def _rank(rec: _Rec) -> tuple[int, int, int]:
    """Orders the records of one key: version, tombstone over value, digest."""
    payload, flags = rec[0], rec[1]
    digest = record_digest(payload, flags)
    try:
        record = unwrap(payload, flags)
    except SerializationError:
        return (-1, 0, digest)  # a corrupt record loses to anything readable
    if record is None:
        return (0, 0, digest)  # a value written without a version
    return (record.version, int(record.deleted), digest)


def _raw(backend: Any, name: str) -> Any:
    """The backend that lists its contents (the client wraps in-process backends)."""
    for candidate in (backend, getattr(backend, "backend", None)):
        if candidate is not None and hasattr(candidate, "scan_digests"):
            return candidate
    raise ConfigError(
        f"server {name!r} ({type(backend).__name__}) cannot list its contents: "
        "anti-entropy needs scan_digests() (MemcachedBackend, RedisBackend, MemoryBackend)")


def _depth_for(keys: int) -> int:
    if keys <= KEYS_PER_LEAF:
        return 0
    return min(MAX_DEPTH, math.ceil(math.log2(keys / KEYS_PER_LEAF)))


def _check_number(value: object, what: str, positive: bool = True) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            value > 0 if positive else value >= 0) or math.isinf(value):
        raise ConfigError(f"{what} must be a {'positive' if positive else 'non-negative'} "
                          f"finite number or None, got {value!r}")
    return float(value)


class _Pacer:
    """At most ``rate`` writes per second: a sleep after each batch."""

    def __init__(self, rate: float | None, stop: threading.Event | None) -> None:
        self.rate = rate
        self.stop = stop
        self.started = 0.0
        self.done = 0

    def batch_size(self, default: int) -> int:
        return default if self.rate is None else max(1, min(default, int(self.rate / 10)))

    def after(self, writes: int) -> None:
        if self.stop is not None and self.stop.is_set():
            raise _StoppedError
        if self.rate is None or not writes:
            return
        now = time.monotonic()
        if not self.done:
            self.started = now
        self.done += writes
        delay = self.started + self.done / self.rate - now
        if delay > 0:
            if self.stop is not None:
                if self.stop.wait(delay):
                    raise _StoppedError
            else:
                time.sleep(delay)


class _Round:
    """One anti-entropy round over a client's servers."""

    def __init__(self, client: Any, replicas: int | None, depth: int | None, dry_run: bool,
                 max_keys_per_second: float | None, default_ttl: float, batch: int,
                 stop: threading.Event | None) -> None:
        n = getattr(client, "replicas", 1) if replicas is None else replicas
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"replicas must be an int >= 1, got {n!r}")
        servers = client.servers
        if n > len(servers):
            raise ConfigError(
                f"replicas={n} but the client has {len(servers)} server(s): a key cannot "
                "have more replicas than there are servers")
        if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int)
                                  or not 0 <= depth <= MAX_MERKLE_DEPTH):
            raise ConfigError(
                f"depth must be an int in [0, {MAX_MERKLE_DEPTH}] or None (chosen from the "
                f"key count), got {depth!r}")
        if not isinstance(dry_run, bool):
            raise ConfigError(f"dry_run must be a bool, got {dry_run!r}")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ConfigError(f"batch must be an int >= 1, got {batch!r}")
        if _check_number(default_ttl, "default_ttl", positive=False) is None:
            raise ConfigError("default_ttl must be a number of seconds >= 0 (0: no expiry), "
                              "got None")
        self.pacer = _Pacer(_check_number(max_keys_per_second, "max_keys_per_second"), stop)
        self.client = client
        self.replicas = n
        self.depth = depth
        self.dry_run = dry_run
        self.default_ttl = default_ttl
        self.batch = batch
        self.names = list(servers)
        self.backends = {name: _raw(b, name) for name, b in servers.items()} if n > 1 else {}
        codec = getattr(client, "_keys", None)
        self.prefix: bytes = getattr(codec, "prefix", b"") or b""
        self.listings: dict[str, dict[bytes, int]] = {}
        self.listing_bytes: dict[str, int] = {}
        self.keys_listed: dict[str, int] = {}
        self.listing_seconds = 0.0
        self.errors: dict[str, str] = {}
        self.directions: dict[tuple[str, str], int] = {}
        self.stopped_pair: PairResult | None = None
        # A value older than the client's tombstone lifetime is not copied to a replica
        # that lacks the key: that absence may be an expired tombstone (a delete), and
        # copying would bring the deleted value back. Read repair follows the same rule.
        self.window: float | None = getattr(client, "_tombstone_ttl", None)
        self.age_s: Callable[[int], float | None] | None = getattr(client, "_age_s", None)
        self.kept_old = 0

    # --- 1. listing ------------------------------------------------------------------------

    def _list_one(self, name: str) -> tuple[str, dict[bytes, int] | None, int, str]:
        read = [0]

        def count(n: int) -> None:
            read[0] += n

        try:
            listing = dict(self.backends[name].scan_digests(self.prefix, 1000, count))
        except CacheError as exc:  # unavailable, or refusing to list (memcached -X)
            log.warning("anti-entropy: cannot list %s: %s", name, exc)
            return name, None, read[0], f"{type(exc).__name__}: {exc}"
        return name, listing, read[0], ""

    def _list(self) -> None:
        with ThreadPoolExecutor(max_workers=min(16, len(self.names)),
                                thread_name_prefix="cachelib-list") as pool:
            for name, listing, read, error in pool.map(self._list_one, self.names):
                self.listing_bytes[name] = read
                if listing is None:
                    self.errors[name] = f"not listed: {error}"
                else:
                    self.listings[name] = listing
                    self.keys_listed[name] = len(listing)

    # --- 2.-4. pairs -------------------------------------------------------------------------

    def _pairs(self) -> dict[tuple[int, int], list[bytes]]:
        """The keys of every pair of servers (by index), in the pairs' order."""
        index = {name: i for i, name in enumerate(self.names)}
        keys: set[bytes] = set()
        for listing in self.listings.values():
            keys.update(listing)
        get_nodes, n = self.client.ring.get_nodes, self.replicas
        out: dict[tuple[int, int], list[bytes]] = {}
        buckets_of: dict[tuple[str, ...], list[list[bytes]]] = {}  # replica set -> buckets
        for key in keys:
            replica_set = tuple(get_nodes(key, n))
            buckets = buckets_of.get(replica_set)
            if buckets is None:
                holders = sorted(index[name] for name in replica_set)
                buckets = buckets_of[replica_set] = [
                    out.setdefault(pair, []) for pair in itertools.combinations(holders, 2)]
            for bucket in buckets:
                bucket.append(key)
        self.tokens = {k: key_token(k) for k in keys}
        return dict(sorted(out.items()))

    def _fetch(self, name: str, keys: list[bytes]) -> dict[bytes, _Rec]:
        backend = self.backends[name]
        if hasattr(backend, "get_many_with_ttl"):
            found: dict[bytes, _Rec] = backend.get_many_with_ttl(keys)
            return found
        if hasattr(backend, "send_get_many"):
            plain = backend.recv_get_many(backend.send_get_many(keys))
        else:
            plain = backend.get_many(keys)
        return {k: (p, f, _UNKNOWN_TTL) for k, (p, f) in plain.items()}

    def _ttl(self, backend: Any, remaining: float | None) -> float:
        if remaining is None:
            return 0
        if remaining == _UNKNOWN_TTL:
            return self.default_ttl
        if isinstance(backend, MemcachedBackend):  # whole seconds; past 30 days a timestamp
            seconds = max(1, math.ceil(remaining))
            return seconds if seconds <= _MEMCACHED_MAX_TTL else int(time.time()) + seconds
        return max(remaining, 0.001)

    def _too_old_to_copy(self, rec: _Rec) -> bool:
        """Whether ``rec`` is a value older than the tombstone lifetime (see __init__)."""
        if self.window is None or self.age_s is None:
            return False
        try:
            record = unwrap(rec[0], rec[1])
        except SerializationError:
            return False
        if record is None or record.deleted:
            return False
        age = self.age_s(record.version)  # None: not an ID of the client's layout
        return age is not None and age > self.window

    def _repair_keys(self, a: str, b: str, keys: list[bytes], tally: list[int]) -> None:
        """Reads both sides' records of ``keys`` and copies the newest over, counting in
        ``tally``: records written, writes refused, bytes read and written (kept when a
        server fails midway)."""
        la, lb = self.listings[a], self.listings[b]
        step = self.pacer.batch_size(self.batch)
        for i in range(0, len(keys), step):
            chunk = keys[i:i + step]
            ra, rb = self._fetch(a, chunk), self._fetch(b, chunk)
            tally[2] += sum(len(k) + len(r[0])
                            for k, r in itertools.chain(ra.items(), rb.items()))
            batch_writes = 0
            for key in chunk:
                x, y = ra.get(key), rb.get(key)
                for listing, rec in ((la, x), (lb, y)):  # what the sides hold now
                    if rec is None:
                        listing.pop(key, None)
                    else:
                        listing[key] = record_digest(rec[0], rec[1])
                if x is None and y is None:
                    continue
                if y is None or (x is not None and _rank(x) > _rank(y)):
                    source, target, rec = a, b, x
                elif x is None or _rank(y) > _rank(x):
                    source, target, rec = b, a, y
                else:
                    continue  # equal now (written meanwhile)
                assert rec is not None
                if (y is None or x is None) and self._too_old_to_copy(rec):
                    self.kept_old += 1
                    continue
                if not self.dry_run:
                    backend = self.backends[target]
                    try:
                        backend.set(key, rec[0], rec[1], self._ttl(backend, rec[2]))
                    except ServerUnavailable:
                        raise
                    except CacheError as exc:  # refused: too large for it, out of memory
                        log.warning("anti-entropy: %s refused the repair of %r: %s",
                                    target, key, exc)
                        tally[1] += 1
                        continue
                self.listings[target][key] = self.listings[source][key]
                self.directions[source, target] = self.directions.get((source, target), 0) + 1
                tally[0] += 1
                tally[2] += len(key) + len(rec[0])
                batch_writes += 1
            self.pacer.after(batch_writes)

    def _pair(self, i: int, j: int, keys: list[bytes]) -> PairResult:
        a, b = self.names[i], self.names[j]
        for name in (a, b):
            if name not in self.listings:
                return PairResult((a, b), len(keys),
                                  error=f"not compared: {name} could not be listed")
        la, lb = self.listings[a], self.listings[b]
        wanted = set(keys)
        on_a, on_b = wanted.intersection(la), wanted.intersection(lb)
        present = len(on_a | on_b)
        full = min(sum(map(len, on_a)) + len(on_a) * (_KEY_LENGTH + _DIGEST),
                   sum(map(len, on_b)) + len(on_b) * (_KEY_LENGTH + _DIGEST))
        depth = self.depth if self.depth is not None else _depth_for(max(len(on_a), len(on_b)))
        # item = (key, its record digest): the tree digests that pair, in any order
        tree_a = MerkleTree.build([(k, la[k].to_bytes(8, "little")) for k in on_a], depth)
        tree_b = MerkleTree.build([(k, lb[k].to_bytes(8, "little")) for k in on_b], depth)
        tree_bytes = [_HANDSHAKE]

        def remote_expand(node_ids: list[int]) -> list[tuple[int, int]]:
            tree_bytes[0] += len(node_ids) * (_NODE_ID + 2 * _DIGEST)
            return tree_b.expand(node_ids)

        # (cast: fastcore's _Tree protocol declares ``depth`` settable, the tree's is a
        # read-only property)
        diff = diff_levels(tree_a, tree_b.root, remote_expand)
        result = PairResult((a, b), present, depth, len(diff.leaves), tree_bytes=tree_bytes[0],
                            full_comparison_bytes=full)
        if not diff.leaves:
            return result
        leaves, shift, tokens = set(diff.leaves), 64 - depth, self.tokens
        in_leaves = [k for k in keys if tokens[k] >> shift in leaves]
        local = {k: la[k] for k in in_leaves if k in la}
        remote = {k: lb[k] for k in in_leaves if k in lb}
        key_bytes = len(leaves) * _NODE_ID + sum(_KEY_LENGTH + len(k) + _DIGEST for k in remote)
        kd = compare_keys(local, remote)
        differing = [*kd.missing_local, *kd.missing_remote, *kd.different]
        result = PairResult((a, b), present, depth, len(diff.leaves), len(differing),
                            tree_bytes=tree_bytes[0], key_compare_bytes=key_bytes,
                            full_comparison_bytes=full)
        tally = [0, 0, 0]
        error = None
        try:
            self._repair_keys(a, b, differing, tally)
        except CacheError as exc:  # a server failed (or refused a read) mid-pair
            log.warning("anti-entropy: repair of %s <-> %s failed: %s", a, b, exc)
            error = f"{type(exc).__name__}: {exc}"
        except _StoppedError:
            self.stopped_pair = dataclasses.replace(
                result, repaired=tally[0], failed_writes=tally[1], repair_bytes=tally[2],
                error="stopped before the end of this pair")
            raise
        return dataclasses.replace(result, repaired=tally[0], failed_writes=tally[1],
                                   repair_bytes=tally[2], error=error)

    # --- the round ---------------------------------------------------------------------------

    def run(self) -> RepairReport:
        started = time.perf_counter()
        if self.replicas == 1:
            note = ("replicas=1: every key has a single copy, so there is nothing to compare "
                    "or repair (anti-entropy needs replicas >= 2)")
            log.info("anti-entropy: %s", note)
            return self._report(started, (), note)
        self._list()
        self.listing_seconds = time.perf_counter() - started
        pairs: list[PairResult] = []
        note = ""
        try:
            for (i, j), keys in self._pairs().items():
                result = self._pair(i, j, keys)
                if result.error is not None and result.servers[0] in self.listings \
                        and result.servers[1] in self.listings:
                    self.errors[f"{result.servers[0]} <-> {result.servers[1]}"] = result.error
                pairs.append(result)
        except _StoppedError:
            note = "stopped before the end of the round"
            if self.stopped_pair is not None:
                pairs.append(self.stopped_pair)
        return self._report(started, tuple(pairs), note)

    def _report(self, started: float, pairs: tuple[PairResult, ...], note: str
                ) -> RepairReport:
        return RepairReport(
            servers=tuple(self.names), replicas=self.replicas, dry_run=self.dry_run,
            pairs=pairs, keys_listed=dict(self.keys_listed),
            listing_bytes=dict(self.listing_bytes),
            repaired_by_direction=dict(self.directions), errors=dict(self.errors),
            seconds=time.perf_counter() - started, note=note,
            listing_seconds=self.listing_seconds, kept_old=self.kept_old)


def repair(client: Any, *, replicas: int | None = None, depth: int | None = None,
           dry_run: bool = False, max_keys_per_second: float | None = None,
           default_ttl: float = 0, batch: int = 500) -> RepairReport:
    """One anti-entropy round over the servers of ``client`` (see the module).

    Args:
        client: a :class:`~cachelib.CacheClient` whose keys are replicated: every key's
            record on the first ``replicas`` servers of its preference list.
        replicas: N; default ``client.replicas`` when the client has it, else 1 (and with
            one copy per key there is nothing to repair: the report says so).
        depth: the trees' depth for every pair; default from each pair's key count
            (about 2 keys per leaf, at most :data:`MAX_DEPTH`).
        dry_run: compare and decide, but write nothing; the report counts what a real
            round would copy.
        max_keys_per_second: at most this many repair writes per second (a sleep after
            each batch); None: no limit.
        default_ttl: TTL in seconds of a copy whose source's remaining TTL is unknown
            (a backend without ``get_many_with_ttl``; the three of cachelib report it).
            0: no expiry.
        batch: keys read (and written) per request in the repair stage.

    Returns:
        The :class:`RepairReport`. A server that cannot be listed (down, or memcached
        started with ``-X``) or fails during its pairs' repair does not stop the round:
        its pairs are reported with their error (``report.errors``, ``report.ok``) and
        the other pairs are compared and repaired.

    Raises:
        ConfigError: a bad argument, ``replicas`` above the number of servers, or a
            server whose backend cannot list its contents.
    """
    return _Round(client, replicas, depth, dry_run, max_keys_per_second, default_ttl, batch,
                  None).run()


class BackgroundRepair:
    """Runs :func:`repair` every ``interval`` seconds in a daemon thread (started here).

    Args:
        client: as :func:`repair`.
        interval: seconds between the end of a round and the start of the next; the
            first round starts at once.
        replicas, depth, max_keys_per_second, default_ttl: passed to :func:`repair`.
        on_report: called with each :class:`RepairReport` (in the thread; an exception
            it raises is logged).

    The interval should stay well below the client's ``tombstone_ttl`` (see the
    module: a delete must reach every replica before its tombstones expire); a longer
    one is logged as a warning.

    A round that raises is logged (``logging.getLogger("cachelib")``) and kept in
    :attr:`last_error`; a round with failed servers or pairs is logged as a warning.
    The thread keeps going either way. :meth:`stop` interrupts a rate-limited round
    between batches.

    Raises:
        ConfigError: a bad argument (checked here, before the thread starts).
    """

    def __init__(self, client: Any, interval: float, *, replicas: int | None = None,
                 depth: int | None = None, max_keys_per_second: float | None = None,
                 default_ttl: float = 0,
                 on_report: Callable[[RepairReport], None] | None = None) -> None:
        checked = _check_number(interval, "interval")
        if checked is None:
            raise ConfigError("interval must be a positive finite number of seconds, got None")
        self.interval: float = checked
        if on_report is not None and not callable(on_report):
            raise ConfigError(f"on_report must be callable, got {on_report!r}")
        self._stop = threading.Event()
        self._args = (client, replicas, depth, False, max_keys_per_second, default_ttl, 500,
                      self._stop)
        self._round()  # checks the arguments now
        tombstone_ttl = getattr(client, "tombstone_ttl", None) or \
            getattr(client, "_tombstone_ttl", None)
        if isinstance(tombstone_ttl, (int, float)) and self.interval >= tombstone_ttl:
            log.warning("anti-entropy every %g s, but tombstones live %g s: a delete that "
                        "missed a replica can come back; repair more often or keep "
                        "tombstones longer", self.interval, tombstone_ttl)
        self._on_report = on_report
        #: the report of the last finished round, or None
        self.last_report: RepairReport | None = None
        #: the exception of the last round that raised, or None
        self.last_error: BaseException | None = None
        #: rounds run (finished or raised)
        self.rounds = 0
        self._thread = threading.Thread(target=self._run, name="cachelib-repair", daemon=True)
        self._thread.start()

    def _round(self) -> _Round:
        return _Round(*self._args)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                report = self._round().run()
            except Exception as exc:
                log.exception("anti-entropy round failed")
                self.last_error = exc
            else:
                self.last_report = report
                if not report.ok:
                    log.warning("anti-entropy round with errors: %s", "; ".join(
                        f"{k}: {v}" for k, v in report.errors.items()) or
                        f"{report.failed_writes} writes refused")
                if self._on_report is not None:
                    try:
                        self._on_report(report)
                    except Exception:
                        log.exception("anti-entropy on_report hook failed")
            self.rounds += 1
            self._stop.wait(self.interval)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float | None = None) -> None:
        """Stop after the current round (a rate-limited round stops between batches)
        and wait for the thread, at most ``timeout`` seconds (None: until it ends)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> BackgroundRepair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (f"BackgroundRepair(interval={self.interval}, rounds={self.rounds}, "
                f"running={self.running})")
