# cython: language_level=3, embedsignature=True
# Native HashRing. The specification (placement rules, messages, docstrings) is
# fastcore/_ring_py.py; this file must place every key exactly as the twin does.

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_New, PyList_SET_ITEM
from cpython.tuple cimport PyTuple_GET_ITEM
from cpython.ref cimport Py_INCREF
from cpython.unicode cimport PyUnicode_Check
from libc.math cimport floor
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memchr, memcpy, memset

from fastcore._hashimpl cimport sk_md5, sk_xxh3_64

import threading

from fastcore._errors import (
    MAX_NODES,
    MAX_POINTS,
    MAX_VNODES,
    MAX_WEIGHT,
    ArgumentTypeError,
    EmptyRingError,
    InvalidArgumentError,
    UnknownNodeError,
)
from fastcore._ring_py import (
    MODES,
    _check_int,
    _check_name,
    _normalise_nodes,
    _too_many,
    ketama_host_label,
)

cdef extern from *:
    void __builtin_prefetch(const void* addr) noexcept nogil

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object, Py_ssize_t*) except NULL
    Py_ssize_t PyLong_AsSsize_t(object) except? -1

cdef Py_ssize_t MAX_NODES_C = MAX_NODES

cdef enum:
    # Above this many keys the bulk calls hash and search with the GIL released.
    NOGIL_BULK = 512


cdef packed struct _Pt:
    # 12 bytes: a point and its owner (index into names) share a cache line, so a
    # lookup on a big ring pays one memory access for both.
    uint64_t p
    uint32_t o


cdef class _Snapshot:
    # Immutable once built: sorted points with their owners, and a table of
    # 2**bits + 1 offsets so that a lookup only binary-searches the few points that
    # share the hash's top bits (bits = floor(log2(points)) - 2).
    cdef _Pt* e
    cdef uint32_t* table
    cdef Py_ssize_t npts
    cdef Py_ssize_t holders  # nodes that own at least one point
    cdef int shift
    cdef tuple names
    cdef dict weights

    def __cinit__(self):
        self.e = NULL
        self.table = NULL
        self.npts = 0

    def __dealloc__(self):
        free(self.e)
        free(self.table)


cdef inline int _key_buf(object key, const uint8_t** p, Py_ssize_t* n) except -1:
    if PyUnicode_Check(key):
        p[0] = <const uint8_t*>PyUnicode_AsUTF8AndSize(key, n)
    elif PyBytes_Check(key):
        p[0] = <const uint8_t*>PyBytes_AS_STRING(key)
        n[0] = PyBytes_GET_SIZE(key)
    else:
        raise ArgumentTypeError(f"key must be str or bytes, not {type(key).__name__}")
    return 0


cdef inline uint64_t _position(const uint8_t* p, Py_ssize_t n, bint tags,
                               bint ketama) noexcept nogil:
    cdef const uint8_t* start
    cdef const uint8_t* end
    cdef uint8_t digest[16]
    if tags:
        start = <const uint8_t*>memchr(p, c'{', n)
        if start != NULL:
            end = <const uint8_t*>memchr(start + 1, c'}', n - (start + 1 - p))
            if end != NULL and end > start + 1:
                p = start + 1
                n = end - p
    if ketama:
        # libmemcached's md5 key hash is the first little-endian 32-bit word; it is
        # kept in the top half so both modes share one 64-bit search.
        sk_md5(p, <size_t>n, digest)
        return (<uint64_t>digest[0] | (<uint64_t>digest[1] << 8)
                | (<uint64_t>digest[2] << 16) | (<uint64_t>digest[3] << 24)) << 32
    return sk_xxh3_64(p, <size_t>n, 0)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline Py_ssize_t _lower(_Snapshot s, uint64_t h) noexcept nogil:
    # First point >= h within the bucket of h's top bits, wrapping past the end.
    # Branch-free halving: the comparison becomes a conditional move, so the few
    # steps inside a bucket cost no mispredicted branches.
    cdef uint64_t b = h >> s.shift
    cdef Py_ssize_t base = s.table[b]
    cdef Py_ssize_t n = s.table[b + 1] - base
    cdef Py_ssize_t half
    cdef const _Pt* e = s.e
    if n > 0:
        while n > 1:
            half = n >> 1
            base = base + half if e[base + half - 1].p < h else base
            n -= half
        base += e[base].p < h
    if base == s.npts:
        return 0
    return base


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _search_all(_Snapshot s, uint64_t* pos, Py_ssize_t n) noexcept nogil:
    # Replaces each ring position by the index of the node that owns it. On a big
    # ring every search misses the cache, so the table slot of the key 16 ahead and
    # the points of the key 8 ahead are prefetched while this one is searched.
    cdef Py_ssize_t i
    for i in range(n):
        if i + 16 < n:
            __builtin_prefetch(&s.table[pos[i + 16] >> s.shift])
        if i + 8 < n:
            __builtin_prefetch(&s.e[s.table[pos[i + 8] >> s.shift]])
        pos[i] = s.e[_lower(s, pos[i])].o


@cython.boundscheck(False)
@cython.wraparound(False)
cdef int _finish(_Snapshot s) except -1:
    # Build the offset table: table[b] = first index whose point >= b << shift.
    cdef int bits = 1
    cdef Py_ssize_t i = 0, b, size
    # 2**bits ~ points/4..points/8: the table (<= 1 byte per point) stays in L2 on
    # big rings, and the few points of a bucket share one or two cache lines.
    while bits < 24 and (<Py_ssize_t>1 << (bits + 3)) <= s.npts:
        bits += 1
    size = (<Py_ssize_t>1) << bits
    s.shift = 64 - bits
    s.table = <uint32_t*>malloc((size + 1) * sizeof(uint32_t))
    if s.table == NULL:
        raise MemoryError()
    for b in range(size):
        while i < s.npts and (s.e[i].p >> s.shift) < <uint64_t>b:
            i += 1
        s.table[b] = <uint32_t>i
    s.table[size] = <uint32_t>s.npts
    return 0


@cython.boundscheck(False)
@cython.wraparound(False)
cdef int _radix_sort(_Pt* a, _Pt* tmp, Py_ssize_t n) noexcept nogil:
    # Stable LSD radix sort by point (8 passes of 8 bits); equal points keep their
    # input order, which is the tie order the caller arranged.
    cdef Py_ssize_t counts[256]
    cdef Py_ssize_t i, total, c
    cdef int shift, d
    cdef _Pt* swap
    cdef int passes = 0
    for shift in range(0, 64, 8):
        memset(counts, 0, sizeof(counts))
        for i in range(n):
            counts[(a[i].p >> shift) & 0xFF] += 1
        if counts[(a[0].p >> shift) & 0xFF] == n:
            continue  # every point has this digit: the pass would not move anything
        total = 0
        for d in range(256):
            c = counts[d]
            counts[d] = total
            total += c
        for i in range(n):
            d = (a[i].p >> shift) & 0xFF
            tmp[counts[d]] = a[i]
            counts[d] += 1
        swap = a; a = tmp; tmp = swap
        passes += 1
    # after an odd number of passes the result sits in the caller's scratch array
    return passes


cdef int _sort_into(_Pt* a, Py_ssize_t n) except -1:
    cdef _Pt* tmp = <_Pt*>malloc(max(n, 1) * sizeof(_Pt))
    cdef int passes
    if tmp == NULL:
        raise MemoryError()
    if n > 0:
        with nogil:
            passes = _radix_sort(a, tmp, n)
        if passes & 1:
            memcpy(a, tmp, n * sizeof(_Pt))
    free(tmp)
    return 0


cdef inline Py_ssize_t _write_uint(uint8_t* out, uint64_t v) noexcept nogil:
    cdef uint8_t tmp[24]
    cdef Py_ssize_t k = 0, j
    if v == 0:
        out[0] = c'0'
        return 1
    while v:
        tmp[k] = <uint8_t>(c'0' + v % 10)
        v //= 10
        k += 1
    for j in range(k):
        out[j] = tmp[k - 1 - j]
    return k


cdef void _xxh3_points(const uint8_t* name, Py_ssize_t nlen, uint64_t count,
                       uint8_t* buf, _Pt* out, uint32_t owner) noexcept nogil:
    # points of one node: xxh3_64(b"<name>#<i>") for i in range(count)
    cdef uint64_t i
    cdef Py_ssize_t k
    memcpy(buf, name, nlen)
    buf[nlen] = c'#'
    for i in range(count):
        k = _write_uint(buf + nlen + 1, i)
        out[i].p = sk_xxh3_64(buf, <size_t>(nlen + 1 + k), 0)
        out[i].o = owner


cdef void _ketama_points(const uint8_t* label, Py_ssize_t llen, uint64_t count,
                         uint8_t* buf, _Pt* out, uint32_t owner) noexcept nogil:
    # four little-endian 32-bit points per md5(b"<label>-<i>"), kept in the top half
    cdef uint64_t i
    cdef Py_ssize_t k
    cdef int a
    cdef uint8_t digest[16]
    memcpy(buf, label, llen)
    buf[llen] = c'-'
    for i in range(count // 4):
        k = _write_uint(buf + llen + 1, i)
        sk_md5(buf, <size_t>(llen + 1 + k), digest)
        for a in range(4):
            out[i * 4 + a].p = (<uint64_t>digest[a * 4] | (<uint64_t>digest[a * 4 + 1] << 8)
                                | (<uint64_t>digest[a * 4 + 2] << 16)
                                | (<uint64_t>digest[a * 4 + 3] << 24)) << 32
            out[i * 4 + a].o = owner


cdef inline uint64_t _ketama_count(uint64_t weight, uint64_t total, uint64_t live,
                                   uint64_t vnodes) noexcept nogil:
    # libmemcached's weighted-ketama arithmetic, in float on purpose: it yields 156
    # instead of 160 points at some server counts, and compatibility means the same.
    cdef float pct = <float>weight / <float>total
    cdef float scaled = pct * <float>vnodes / <float>4 * <float>live
    return (<uint64_t>floor(<double>scaled + 0.0000000001)) * 4


cdef void _order_ties_by_name(_Snapshot s):
    # Equal 64-bit points are practically nonexistent, but the order must still be
    # the documented one (node name) so every process builds the same ring.
    cdef Py_ssize_t i = 0, j, k
    while i + 1 < s.npts:
        if s.e[i].p != s.e[i + 1].p:
            i += 1
            continue
        j = i + 1
        while j + 1 < s.npts and s.e[j + 1].p == s.e[i].p:
            j += 1
        run = sorted([(s.names[s.e[k].o].encode(), s.e[k].o) for k in range(i, j + 1)])
        for k in range(i, j + 1):
            s.e[k].o = run[k - i][1]
        i = j + 1


cdef class HashRing:
    """Consistent-hash ring with virtual nodes and integer weights (native).

    See ``fastcore._ring_py.HashRing`` for the full documentation; both behave
    identically.
    """

    cdef _Snapshot _snap
    cdef readonly str mode
    cdef readonly int vnodes
    cdef readonly bint hash_tags
    cdef bint _ketama
    cdef object _lock

    def __init__(self, nodes=(), *, vnodes=160, mode="xxh3", hash_tags=False):
        if mode not in MODES:
            raise InvalidArgumentError(f"mode must be one of {MODES}, got {mode!r}")
        _check_int(vnodes, "vnodes", 1, MAX_VNODES)
        if mode == "ketama" and vnodes % 4:
            raise InvalidArgumentError(
                f"vnodes must be a multiple of 4 in ketama mode, got {vnodes}"
            )
        if not isinstance(hash_tags, bool):
            raise ArgumentTypeError(
                f"hash_tags must be a bool, not {type(hash_tags).__name__}"
            )
        self.mode = mode
        self.vnodes = vnodes
        self.hash_tags = hash_tags
        self._ketama = mode == "ketama"
        self._lock = threading.Lock()
        self._snap = self._build(_normalise_nodes(nodes))

    def __reduce__(self):
        return (_rebuild, (self.weights, self.vnodes, self.mode, self.hash_tags))

    # --- building ---------------------------------------------------------------------

    cdef list _counts(self, dict weights):
        cdef uint64_t total = 0, live = len(weights), c, summed = 0
        cdef list counts = []
        for w in weights.values():
            total += <uint64_t>w
        for w in weights.values():
            if self._ketama:
                c = _ketama_count(<uint64_t>w, total, live, <uint64_t>self.vnodes)
            else:
                c = <uint64_t>self.vnodes * <uint64_t>w
            summed += c
            counts.append(c)
        if summed > <uint64_t>MAX_POINTS:
            raise InvalidArgumentError(
                f"the ring would hold {summed} points; at most {MAX_POINTS} "
                "are allowed (lower vnodes or the weights)"
            )
        return counts

    cdef _Snapshot _new_snapshot(self, dict weights, Py_ssize_t npts):
        cdef _Snapshot s = _Snapshot()
        s.weights = weights
        s.names = tuple(weights)
        s.holders = len(s.names)
        s.npts = npts
        s.e = <_Pt*>malloc(max(npts, 1) * sizeof(_Pt))
        if s.e == NULL:
            raise MemoryError()
        return s

    cdef _Snapshot _build(self, dict weights):
        cdef list counts = self._counts(weights)
        cdef Py_ssize_t npts = sum(counts), at = 0
        cdef _Snapshot s = self._new_snapshot(weights, npts)
        s.holders = sum(1 for c in counts if c)
        cdef uint32_t index = 0
        cdef uint64_t count
        cdef bytes label
        cdef uint8_t* buf
        cdef const uint8_t* lp
        cdef Py_ssize_t llen
        cdef bint ketama = self._ketama
        for name in s.names:
            count = counts[index]
            label = ketama_host_label(name) if ketama else name.encode()
            lp = <const uint8_t*>PyBytes_AS_STRING(label)
            llen = len(label)
            buf = <uint8_t*>malloc(llen + 24)
            if buf == NULL:
                raise MemoryError()
            with nogil:
                if ketama:
                    _ketama_points(lp, llen, count, buf, s.e + at, index)
                else:
                    _xxh3_points(lp, llen, count, buf, s.e + at, index)
            free(buf)
            at += count
            index += 1
        _sort_into(s.e, npts)
        if not self._ketama:
            _order_ties_by_name(s)
        _finish(s)
        return s

    cdef _Snapshot _with_node(self, _Snapshot old, str name, int weight):
        # xxh3 mode: merge the new node's sorted points into the old arrays, O(points).
        cdef dict weights = dict(old.weights)
        weights[name] = weight
        self._counts(weights)  # enforces MAX_POINTS
        cdef uint64_t count = <uint64_t>self.vnodes * <uint64_t>weight
        cdef _Snapshot s = self._new_snapshot(weights, old.npts + <Py_ssize_t>count)
        cdef bytes label = name.encode()
        cdef uint32_t new_index = <uint32_t>len(old.names)
        cdef _Pt* nw = <_Pt*>malloc(max(count, 1) * sizeof(_Pt))
        cdef const uint8_t* lp = <const uint8_t*>PyBytes_AS_STRING(label)
        cdef Py_ssize_t llen = len(label)
        cdef uint8_t* buf = <uint8_t*>malloc(llen + 24)
        cdef Py_ssize_t i = 0, j = 0, k = 0, m = <Py_ssize_t>count
        cdef bint take_old
        try:
            if nw == NULL or buf == NULL:
                raise MemoryError()
            with nogil:
                _xxh3_points(lp, llen, count, buf, nw, new_index)
            _sort_into(nw, m)
            while i < old.npts or j < m:
                if j == m:
                    take_old = True
                elif i == old.npts:
                    take_old = False
                elif old.e[i].p != nw[j].p:
                    take_old = old.e[i].p < nw[j].p
                else:
                    take_old = old.names[old.e[i].o].encode() < label
                if take_old:
                    s.e[k] = old.e[i]
                    i += 1
                else:
                    s.e[k] = nw[j]
                    j += 1
                k += 1
        finally:
            free(nw)
            free(buf)
        _finish(s)
        return s

    cdef _Snapshot _without_node(self, _Snapshot old, str name):
        # xxh3 mode: drop one node's points and renumber the owners after it.
        cdef dict weights = dict(old.weights)
        del weights[name]
        cdef uint32_t gone = <uint32_t>old.names.index(name)
        cdef uint64_t count = <uint64_t>self.vnodes * <uint64_t>old.weights[name]
        cdef _Snapshot s = self._new_snapshot(weights, old.npts - <Py_ssize_t>count)
        cdef Py_ssize_t i, k = 0
        cdef uint32_t o
        with nogil:
            for i in range(old.npts):
                o = old.e[i].o
                if o == gone:
                    continue
                s.e[k].p = old.e[i].p
                s.e[k].o = o - 1 if o > gone else o
                k += 1
        _finish(s)
        return s

    # --- introspection ----------------------------------------------------------------

    @property
    def nodes(self):
        """Node names in the order they were added."""
        return self._snap.names

    @property
    def weights(self):
        """A copy of the mapping node name -> weight."""
        return dict(self._snap.weights)

    @property
    def num_points(self):
        """The number of points on the ring."""
        return self._snap.npts

    def __len__(self):
        return len(self._snap.names)

    def __contains__(self, name):
        return name in self._snap.weights

    def __repr__(self):
        s = self._snap
        return (
            f"HashRing({len(s.names)} nodes, {s.npts} points, "
            f"mode={self.mode!r}, vnodes={self.vnodes}, hash_tags={self.hash_tags})"
        )

    def points(self):
        """All ring points in ring order as ``(point, node)`` pairs."""
        cdef _Snapshot s = self._snap
        cdef Py_ssize_t i
        cdef int down = 32 if self._ketama else 0
        return [(s.e[i].p >> down, s.names[s.e[i].o]) for i in range(s.npts)]

    def key_hash(self, key):
        """The ring position of a key (64-bit xxh3, or 32-bit in ketama mode)."""
        cdef const uint8_t* p
        cdef Py_ssize_t n
        _key_buf(key, &p, &n)
        cdef uint64_t h = _position(p, n, self.hash_tags, self._ketama)
        return h >> 32 if self._ketama else h

    # --- lookups ----------------------------------------------------------------------

    cdef inline Py_ssize_t _start(self, _Snapshot s, object key) except -1:
        cdef const uint8_t* p
        cdef Py_ssize_t n
        _key_buf(key, &p, &n)
        if s.npts == 0:
            raise EmptyRingError("the ring has no nodes; add one before looking up keys")
        return _lower(s, _position(p, n, self.hash_tags, self._ketama))

    def get_node(self, key):
        """The node that holds ``key`` (str hashed as UTF-8, or bytes)."""
        cdef _Snapshot s = self._snap
        return <object>PyTuple_GET_ITEM(s.names, s.e[self._start(s, key)].o)

    def get_nodes(self, key, n):
        """The first ``n`` distinct nodes clockwise from ``key``: its preference list."""
        cdef _Snapshot s = self._snap
        cdef Py_ssize_t want = 0, nnodes = len(s.names)
        if type(n) is int:
            try:
                want = PyLong_AsSsize_t(n)
            except OverflowError:
                want = 0
        if want < 1 or want > MAX_NODES_C:
            _check_int(n, "n", 1, MAX_NODES)
        if want > s.holders and nnodes:
            raise InvalidArgumentError(_too_many(n, s.holders, nnodes))
        cdef Py_ssize_t i = self._start(s, key), got = 0, k
        cdef uint32_t o
        cdef uint32_t small[16]
        cdef uint8_t* seen = NULL
        cdef bint dup
        cdef list result = PyList_New(want)
        if want > 16:
            seen = <uint8_t*>malloc(nnodes)
            if seen == NULL:
                raise MemoryError()
            memset(seen, 0, nnodes)
        try:
            while got < want:
                o = s.e[i].o
                if seen != NULL:
                    dup = seen[o]
                    seen[o] = 1
                else:
                    dup = False
                    for k in range(got):
                        if small[k] == o:
                            dup = True
                            break
                    if not dup:
                        small[got] = o
                if not dup:
                    name = <object>PyTuple_GET_ITEM(s.names, o)
                    Py_INCREF(name)
                    PyList_SET_ITEM(result, got, name)
                    got += 1
                i += 1
                if i == s.npts:
                    i = 0
        finally:
            free(seen)
        return result

    def successors(self, key):
        """Iterate over all distinct nodes clockwise from ``key`` (lazy preference list)."""
        cdef _Snapshot s = self._snap
        return _Successors(s, self._start(s, key))

    cdef uint64_t* _owners_of(self, _Snapshot s, object keys) except NULL:
        # keys is a list or tuple. Each key is hashed with the GIL held, right after
        # its bytes were read (one pass over the key objects); the ring searches of a
        # big batch then run without the GIL. Returns the owner index of every key.
        cdef Py_ssize_t n = len(keys), i
        cdef uint64_t* out = <uint64_t*>malloc(max(n, 1) * sizeof(uint64_t))
        cdef const uint8_t* p
        cdef Py_ssize_t ln
        cdef bint tags = self.hash_tags, ketama = self._ketama
        cdef bint is_list = type(keys) is list
        if out == NULL:
            raise MemoryError()
        try:
            for i in range(n):
                if is_list:
                    _key_buf(<object>PyList_GET_ITEM(keys, i), &p, &ln)
                else:
                    _key_buf(<object>PyTuple_GET_ITEM(keys, i), &p, &ln)
                out[i] = _position(p, ln, tags, ketama)
            if n and s.npts == 0:
                raise EmptyRingError("the ring has no nodes; add one before looking up keys")
        except BaseException:
            free(out)
            raise
        if n >= NOGIL_BULK:
            with nogil:
                _search_all(s, out, n)
        else:
            _search_all(s, out, n)
        return out

    def get_node_many(self, keys):
        """The node of each key, in order (the loop runs in C)."""
        cdef _Snapshot s = self._snap
        cdef object ks = keys if type(keys) is list or type(keys) is tuple else _as_list(keys)
        cdef Py_ssize_t n = len(ks), i
        cdef uint64_t* owners = self._owners_of(s, ks)
        cdef list result
        try:
            result = PyList_New(n)
            for i in range(n):
                name = <object>PyTuple_GET_ITEM(s.names, owners[i])
                Py_INCREF(name)
                PyList_SET_ITEM(result, i, name)
        finally:
            free(owners)
        return result

    def group_by_node(self, keys):
        """Group keys by the node that holds them, keeping their order within a node."""
        cdef _Snapshot s = self._snap
        # a private tuple: the keys are read again after the GIL was released
        cdef tuple ks = keys if type(keys) is tuple else tuple(_as_list(keys))
        cdef Py_ssize_t n = len(ks), i
        cdef uint64_t* owners = self._owners_of(s, ks)
        cdef list buckets = [None] * len(s.names)
        cdef dict groups = {}
        try:
            for i in range(n):
                bucket = buckets[owners[i]]
                if bucket is None:
                    bucket = []
                    buckets[owners[i]] = bucket
                    groups[s.names[owners[i]]] = bucket
                (<list>bucket).append(ks[i])
        finally:
            free(owners)
        return groups

    # --- mutation ---------------------------------------------------------------------

    def add_node(self, name, weight=1):
        """Add a node; in xxh3 mode only keys moving to it change owner."""
        name = _check_name(name)
        _check_int(weight, f"weight of node {name!r}", 1, MAX_WEIGHT)
        with self._lock:
            old = self._snap
            if name in old.weights:
                raise InvalidArgumentError(f"duplicate node name {name!r}")
            if len(old.names) >= MAX_NODES:
                raise InvalidArgumentError(f"a ring holds at most {MAX_NODES} nodes")
            if self._ketama:
                weights = dict(old.weights)
                weights[name] = weight
                self._snap = self._build(weights)
            else:
                self._snap = self._with_node(old, name, weight)

    def remove_node(self, name):
        """Remove a node; in xxh3 mode only its keys change owner."""
        with self._lock:
            old = self._snap
            if name not in old.weights:
                raise UnknownNodeError(f"node {name!r} is not on the ring")
            if self._ketama:
                weights = dict(old.weights)
                del weights[name]
                self._snap = self._build(weights)
            else:
                self._snap = self._without_node(old, name)

    def set_weight(self, name, weight):
        """Change a node's weight; in xxh3 mode keys move only to or from that node."""
        _check_int(weight, f"weight of node {name!r}", 1, MAX_WEIGHT)
        with self._lock:
            old = self._snap
            if name not in old.weights:
                raise UnknownNodeError(f"node {name!r} is not on the ring")
            weights = dict(old.weights)
            weights[name] = weight
            # rebuilding keeps every other node's points as they were
            self._snap = self._build(weights)


cdef class _Successors:
    cdef _Snapshot s
    cdef Py_ssize_t i
    cdef Py_ssize_t left
    cdef bytearray seen

    def __cinit__(self, _Snapshot s, Py_ssize_t start):
        self.s = s
        self.i = start
        self.left = s.holders
        self.seen = bytearray(len(s.names))

    def __iter__(self):
        return self

    def __next__(self):
        cdef uint32_t o
        while self.left:
            o = self.s.e[self.i].o
            self.i += 1
            if self.i == self.s.npts:
                self.i = 0
            if not self.seen[o]:
                self.seen[o] = 1
                self.left -= 1
                return self.s.names[o]
        raise StopIteration


cdef list _as_list(object keys):
    if isinstance(keys, (str, bytes)):
        raise ArgumentTypeError(
            f"keys must be an iterable of str or bytes keys, not a single {type(keys).__name__}"
        )
    try:
        return list(keys)
    except TypeError:
        raise ArgumentTypeError(
            f"keys must be an iterable of str or bytes keys, not {type(keys).__name__}"
        ) from None


def _rebuild(weights, vnodes, mode, hash_tags):
    return HashRing(weights, vnodes=vnodes, mode=mode, hash_tags=hash_tags)
