# cython: language_level=3, embedsignature=True
# cython: embedsignature.format=clinic
# Native MerkleTree. The specification (rules, messages, docstrings) is
# fastcore/_merkle_py.py; digests, roots, diffs and bytes must be bit-identical to it.

cimport cython
from cpython.bool cimport PyBool_Check
from cpython.buffer cimport (
    PyBUF_FULL_RO,
    PyBUF_SIMPLE,
    PyBuffer_IsContiguous,
    PyBuffer_Release,
    PyObject_CheckBuffer,
    PyObject_GetBuffer,
)
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_Check,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.list cimport PyList_CheckExact, PyList_GET_ITEM, PyList_GET_SIZE
from cpython.long cimport PyLong_CheckExact
from cpython.number cimport PyNumber_AsSsize_t
from cpython.tuple cimport PyTuple_Check, PyTuple_CheckExact, PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.unicode cimport PyUnicode_Check
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport qsort
from libc.string cimport memcmp, memcpy, memset

from fastcore._hashimpl cimport sk_xxh3_64

from fastcore._errors import (
    ArgumentTypeError,
    CorruptTreeError,
    InvalidArgumentError,
    KeyRangeError,
    TreeMismatchError,
    check_int,
)
from fastcore._merkle_common import (
    FLAG_INNER_HASH,
    FLAG_LEAVES_ONLY,
    HASH_XXH3_64,
    HEADER,
    MAGIC,
    VERSION,
    MerkleDiff,
    check_shape,
    parse_header,
)
from fastcore._merkle_py import _data as _data_py

__all__ = ("MerkleTree", "item_digest", "key_token")

cdef extern from *:
    """
    /* Leaf and range arithmetic needs (token - lo) * 2**depth and i * (hi - lo) exactly,
       with hi - lo up to 2**64 (kept as hi - lo - 1). Written in C so that no 128-bit
       value passes through Cython, which has no such type. */
    typedef unsigned __int128 sk_mt_u128;

    static inline int sk_mt_fits(uint64_t width, int depth) {
        return (((sk_mt_u128)width << depth) >> 64) == 0;
    }
    static inline uint64_t sk_mt_leaf(uint64_t off, int depth, uint64_t width) {
        return (uint64_t)(((sk_mt_u128)off << depth) / width);
    }
    /* lo + ceil(i * (hi - lo) / 2**depth), <= 2**64: the low 64 bits; *top the rest */
    static inline uint64_t sk_mt_start(uint64_t lo, uint64_t width_m1, int depth,
                                       uint64_t i, uint64_t *top) {
        sk_mt_u128 w = (sk_mt_u128)width_m1 + 1;
        sk_mt_u128 v = (sk_mt_u128)lo
            + (((sk_mt_u128)i * w + (((sk_mt_u128)1 << depth) - 1)) >> depth);
        *top = (uint64_t)(v >> 64);
        return (uint64_t)v;
    }
    """
    bint sk_mt_fits(uint64_t width, int depth) noexcept nogil
    uint64_t sk_mt_leaf(uint64_t off, int depth, uint64_t width) noexcept nogil
    uint64_t sk_mt_start(uint64_t lo, uint64_t width_m1, int depth, uint64_t i,
                         uint64_t* top) noexcept nogil
    void __builtin_prefetch(const void* addr) noexcept nogil

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object, Py_ssize_t*) except NULL
    # Declared without Cython's error check: only called on exact ints, which cannot fail.
    long long _as_ll "PyLong_AsLongLongAndOverflow"(object, int*) noexcept
    void* PyMem_Calloc(size_t, size_t)
    void* PyMem_Realloc(void*, size_t)
    void PyMem_Free(void*)
    # The walk of diff allocates without the GIL.
    void* PyMem_RawMalloc(size_t) nogil
    void* PyMem_RawRealloc(void*, size_t) nogil
    void PyMem_RawFree(void*) nogil

_M64 = (1 << 64) - 1
_TWO64 = 1 << 64

cdef enum:
    _AHEAD = 16  # prefetch distance of the diff walk, in nodes
    _PENDING = 16  # leaf XORs in flight while building


cdef struct _Pending:
    uint64_t* leaves
    size_t n
    uint64_t leaf[_PENDING]
    uint64_t digest[_PENDING]


# --- C helpers ------------------------------------------------------------------------------

cdef inline uint64_t _inner(uint64_t left, uint64_t right) noexcept nogil:
    # xxh3_64(le64(left) || le64(right)); the target is little-endian (_hashimpl checks).
    cdef uint64_t pair[2]
    pair[0] = left
    pair[1] = right
    return sk_xxh3_64(<const uint8_t*>pair, 16, 0)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _sweep(uint64_t* n, uint64_t base, bint hashed) noexcept nogil:
    cdef uint64_t i = base - 1
    if hashed:
        while i:
            n[i] = _inner(n[2 * i], n[2 * i + 1])
            i -= 1
    else:
        while i:
            n[i] = n[2 * i] ^ n[2 * i + 1]
            i -= 1


@cython.boundscheck(False)
@cython.wraparound(False)
cdef uint64_t _verify(uint64_t* n, uint64_t base, bint hashed) noexcept nogil:
    # The sweep, noting the smallest inner node whose stored digest differs from the
    # recomputed one (0: none), as the twin's compare after its sweep.
    cdef uint64_t i = base - 1
    cdef uint64_t v, bad = 0
    while i:
        v = _inner(n[2 * i], n[2 * i + 1]) if hashed else n[2 * i] ^ n[2 * i + 1]
        if v != n[i]:
            bad = i
            n[i] = v
        i -= 1
    return bad


cdef void _fill_empty(uint64_t* n, int depth) noexcept nogil:
    cdef uint64_t digest = 0, i
    cdef int level
    for level in range(depth, -1, -1):
        for i in range((<uint64_t>1) << level, (<uint64_t>2) << level):
            n[i] = digest
        digest = _inner(digest, digest)


cdef int _cmp_u64(const void* a, const void* b) noexcept nogil:
    cdef uint64_t x = (<const uint64_t*>a)[0]
    cdef uint64_t y = (<const uint64_t*>b)[0]
    return (x > y) - (x < y)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _rehash_paths(uint64_t* n, uint64_t* dirty, size_t k) noexcept nogil:
    # Recompute the ancestors of the changed leaves (dirty holds their parents), level by
    # level, each node once: sorted, the parents of a sorted level stay sorted.
    cdef size_t i, m
    qsort(dirty, k, sizeof(uint64_t), _cmp_u64)
    while k and dirty[0] >= 1:
        m = 0
        for i in range(k):
            if m == 0 or dirty[m - 1] != dirty[i]:
                dirty[m] = dirty[i]
                m += 1
        for i in range(m):
            n[dirty[i]] = _inner(n[2 * dirty[i]], n[2 * dirty[i] + 1])
        k = 0
        for i in range(m):
            if dirty[i] > 1:
                dirty[k] = dirty[i] >> 1
                k += 1


@cython.boundscheck(False)
@cython.wraparound(False)
cdef int _walk(const uint64_t* a, const uint64_t* b, uint64_t base, uint32_t** out,
               size_t* count, uint64_t* compared) noexcept nogil:
    # The nodes that differ, level by level: each level's node ids ascend, so the leaves
    # come out ascending, and the nodes compared are the twin's (every differing inner
    # node, both children). Children are prefetched _AHEAD nodes ahead in both trees:
    # on cold trees the misses of a level overlap instead of forming one chain per
    # differing leaf (a DFS with prefetching measured ~1.3x slower cold, ~2.5x warm).
    # Returns -1 when out of memory; else *out holds *count leaves, the caller frees it.
    cdef uint32_t* cur = <uint32_t*>PyMem_RawMalloc(256 * sizeof(uint32_t))
    cdef uint32_t* nxt = <uint32_t*>PyMem_RawMalloc(256 * sizeof(uint32_t))
    cdef uint32_t* grown
    cdef size_t n = 1, m, j, cap_cur = 256, cap_nxt = 256
    cdef uint64_t left, width = 1
    if cur == NULL or nxt == NULL:
        PyMem_RawFree(cur)
        PyMem_RawFree(nxt)
        return -1
    cur[0] = 1
    while width < base:
        if 2 * n > cap_nxt:
            grown = <uint32_t*>PyMem_RawRealloc(nxt, 4 * n * sizeof(uint32_t))
            if grown == NULL:
                PyMem_RawFree(cur)
                PyMem_RawFree(nxt)
                return -1
            nxt = grown
            cap_nxt = 4 * n
        for j in range(n if n < _AHEAD else _AHEAD):
            __builtin_prefetch(a + 2 * <uint64_t>cur[j])
            __builtin_prefetch(b + 2 * <uint64_t>cur[j])
        m = 0
        for j in range(n):
            if j + _AHEAD < n:
                __builtin_prefetch(a + 2 * <uint64_t>cur[j + _AHEAD])
                __builtin_prefetch(b + 2 * <uint64_t>cur[j + _AHEAD])
            left = 2 * <uint64_t>cur[j]
            if a[left] != b[left]:
                nxt[m] = <uint32_t>left
                m += 1
            if a[left + 1] != b[left + 1]:
                nxt[m] = <uint32_t>(left + 1)
                m += 1
        compared[0] += 2 * n
        cur, nxt = nxt, cur
        cap_cur, cap_nxt = cap_nxt, cap_cur
        n = m
        width *= 2
    PyMem_RawFree(nxt)
    for j in range(n):
        cur[j] -= <uint32_t>base
    out[0] = cur
    count[0] = n
    return 0


# --- keys and values ------------------------------------------------------------------------

cdef int _hash_buffer(object obj, str what, uint64_t seed, uint64_t* out) except -1:
    # Other bytes-like objects, with the twin's checks: memoryview(obj) is a PyBUF_FULL_RO
    # request; a C-contiguous 1-D byte buffer is hashed in place, any other shape goes
    # through the twin's cast("B") so that its errors are the twin's.
    cdef Py_buffer view
    if not PyObject_CheckBuffer(obj):
        raise ArgumentTypeError(
            f"{what} must be str or a bytes-like object, not {type(obj).__name__}")
    try:
        PyObject_GetBuffer(obj, &view, PyBUF_FULL_RO)
    except TypeError:
        raise ArgumentTypeError(
            f"{what} must be str or a bytes-like object, not {type(obj).__name__}") from None
    try:
        if not PyBuffer_IsContiguous(&view, c'C'):
            raise ArgumentTypeError(f"{what} must be a C-contiguous buffer")
        if view.ndim == 1 and (view.format == NULL
                               or (view.format[0] == c'B' and view.format[1] == 0)):
            out[0] = sk_xxh3_64(<const uint8_t*>view.buf, <size_t>view.len, seed)
            return 0
    finally:
        PyBuffer_Release(&view)
    cast = _data_py(obj, what)
    PyObject_GetBuffer(cast, &view, PyBUF_SIMPLE)
    out[0] = sk_xxh3_64(<const uint8_t*>view.buf, <size_t>view.len, seed)
    PyBuffer_Release(&view)
    return 0


cdef inline int _hash_of(object obj, str what, uint64_t seed, uint64_t* out) except -1:
    # str as UTF-8 (the str's cached UTF-8, no copy), bytes in place, else _hash_buffer.
    cdef Py_ssize_t n
    cdef const char* p
    if PyBytes_Check(obj):
        out[0] = sk_xxh3_64(<const uint8_t*>PyBytes_AS_STRING(obj),
                            <size_t>PyBytes_GET_SIZE(obj), seed)
        return 0
    if PyUnicode_Check(obj):
        p = PyUnicode_AsUTF8AndSize(obj, &n)
        out[0] = sk_xxh3_64(<const uint8_t*>p, <size_t>n, seed)
        return 0
    return _hash_buffer(obj, what, seed, out)


@cython.binding(False)
def key_token(key):
    cdef uint64_t h
    _hash_of(key, "key", 0, &h)
    return h


@cython.binding(False)
def item_digest(key, value):
    cdef uint64_t h, seed
    if not PyBytes_Check(value):
        _hash_of(value, "value", 0, &h)  # the twin checks the value before the key
    _hash_of(key, "key", 0, &seed)
    _hash_of(value, "value", seed, &h)
    return h


cdef inline int _index(object value, str what, int64_t lo, int64_t hi, uint64_t* out,
                       object hi_shown=None) except -1:
    # An int argument in [lo, hi]; anything else gets the shared check and its message
    # (naming hi_shown, when given, as the twin names its bound).
    cdef int overflow = 0
    cdef long long v
    if PyLong_CheckExact(value):
        v = _as_ll(value, &overflow)
        if not overflow and lo <= v <= hi:
            out[0] = <uint64_t>v
            return 0
    check_int(value, what, lo, hi if hi_shown is None else hi_shown)
    out[0] = <uint64_t>value
    return 0


cdef struct _Changes:
    uint64_t* leaves  # then, for the hash rule, their parents
    uint64_t* deltas
    size_t k
    size_t cap
    int64_t total


cdef int _reserve(_Changes* c, size_t cap) except -1:
    cdef uint64_t* grown
    if cap < 64:
        cap = 64
    grown = <uint64_t*>PyMem_Realloc(c.leaves, cap * sizeof(uint64_t))
    if grown == NULL:
        raise MemoryError()
    c.leaves = grown
    grown = <uint64_t*>PyMem_Realloc(c.deltas, cap * sizeof(uint64_t))
    if grown == NULL:
        raise MemoryError()
    c.deltas = grown
    c.cap = cap
    return 0


cdef str _pair_message(object pair):
    return f"expected a (key, value) pair, got {pair!r:.80}"


# --- the tree -------------------------------------------------------------------------------

@cython.final
@cython.auto_pickle(False)
cdef class MerkleTree:
    """A Merkle tree over ``[lo, hi)`` with ``2**depth`` leaves (native); see
    ``fastcore._merkle_py.MerkleTree``.

    Not thread safe: guard a tree shared by threads that write it.
    """

    cdef uint64_t* _nodes  # 2**(depth + 1) words, heap order, word 0 unused
    cdef int _depth
    cdef uint64_t _base  # 2**depth: node of leaf 0
    cdef uint64_t _lo
    cdef uint64_t _width  # hi - lo, unless _full
    cdef uint64_t _width_m1  # hi - lo - 1, always
    cdef bint _full  # hi - lo == 2**64
    cdef bint _narrow  # (hi - lo) << depth fits 64 bits
    cdef bint _hash
    cdef object _count  # an int, unbounded as in the twin (a header may say 2**64 - 1)
    cdef Py_ssize_t _busy  # > 0 while a call reads the nodes without the GIL
    # The arguments as given, for properties and messages (as the twin keeps them).
    cdef object _depth_obj
    cdef object _lo_obj
    cdef object _hi_obj

    def __cinit__(self):
        # A usable empty depth-0 tree until __init__ runs, so no path meets NULL.
        self._nodes = <uint64_t*>PyMem_Calloc(2, sizeof(uint64_t))
        if self._nodes == NULL:
            raise MemoryError()
        self._base = 1
        self._full = True
        self._width_m1 = <uint64_t>-1
        self._count = 0
        self._depth_obj = 0
        self._lo_obj = 0
        self._hi_obj = _TWO64

    def __dealloc__(self):
        PyMem_Free(self._nodes)

    def __init__(self, depth=16, lo=0, hi=1 << 64, *, inner="xor"):
        self._setup(depth, lo, hi, inner, True)

    cdef int _setup(self, object depth, object lo, object hi, object inner,
                    bint fill) except -1:
        cdef int d
        cdef uint64_t* nodes
        depth, lo, hi, hashed = check_shape(depth, lo, hi, inner)
        if self._busy:
            raise RuntimeError("cannot re-initialise a MerkleTree while it is in use")
        d = depth
        nodes = <uint64_t*>PyMem_Calloc((<size_t>2) << d, sizeof(uint64_t))
        if nodes == NULL:
            raise MemoryError()
        PyMem_Free(self._nodes)
        self._nodes = nodes
        self._depth = d
        self._base = (<uint64_t>1) << d
        self._lo = <uint64_t>lo
        self._width_m1 = <uint64_t>(hi - 1) - self._lo
        self._full = self._width_m1 == <uint64_t>-1
        self._width = self._width_m1 + 1
        self._narrow = not self._full and sk_mt_fits(self._width, d)
        self._hash = hashed
        self._count = 0
        self._depth_obj, self._lo_obj, self._hi_obj = depth, lo, hi
        if fill and self._hash:
            _fill_empty(self._nodes, d)
        return 0

    cdef MerkleTree _blank(self):
        # A tree of this shape; inner nodes and count left to the caller.
        cdef MerkleTree out = MerkleTree.__new__(MerkleTree)
        out._setup(self._depth_obj, self._lo_obj, self._hi_obj, self.inner, False)
        return out

    # --- construction -----------------------------------------------------------------------

    @classmethod
    def build(cls, pairs, depth=16, lo=0, hi=1 << 64, *, inner="xor"):
        cdef MerkleTree tree = MerkleTree.__new__(MerkleTree)
        tree._setup(depth, lo, hi, inner, False)  # leaves 0; the sweep sets the rest
        tree._count = tree._add_leaves(pairs, tree._nodes + tree._base)
        with nogil:
            _sweep(tree._nodes, tree._base, tree._hash)
        return tree

    @cython.cdivision(True)
    cdef inline bint _locate(self, uint64_t token, uint64_t* leaf) noexcept:
        cdef uint64_t off = token - self._lo
        if token < self._lo:
            return False
        if self._full:
            leaf[0] = (off >> 1) >> (63 - self._depth)  # depth 0: leaf 0
        elif off >= self._width:
            return False
        elif self._narrow:
            leaf[0] = (off << self._depth) / self._width
        else:
            leaf[0] = sk_mt_leaf(off, self._depth, self._width)
        return True

    cdef int _range_error(self, object token) except -1:
        raise KeyRangeError(
            f"token {token} is outside the tree's range [{self._lo_obj}, {self._hi_obj})")

    cdef inline int _add_pair(self, object pair, _Pending* q) except -1:
        cdef uint64_t seed, digest, leaf = 0
        cdef size_t slot
        if PyTuple_CheckExact(pair):
            if PyTuple_GET_SIZE(pair) != 2:
                raise ArgumentTypeError(_pair_message(pair))
            key = <object>PyTuple_GET_ITEM(pair, 0)
            value = <object>PyTuple_GET_ITEM(pair, 1)
        elif PyTuple_Check(pair) and len(pair) == 2:
            key = pair[0]
            value = pair[1]
        else:
            raise ArgumentTypeError(_pair_message(pair))
        _hash_of(key, "key", 0, &seed)
        _hash_of(value, "value", seed, &digest)
        if not self._locate(seed, &leaf):
            self._range_error(seed)
        # Applied _PENDING items later, its leaf prefetched meanwhile: past depth ~18 the
        # leaves outgrow the L2 cache and each XOR would otherwise wait on memory.
        slot = q.n % _PENDING
        if q.n >= _PENDING:
            q.leaves[q.leaf[slot]] ^= q.digest[slot]
        q.leaf[slot] = leaf
        q.digest[slot] = digest
        q.n += 1
        __builtin_prefetch(q.leaves + leaf)
        return 0

    cdef Py_ssize_t _add_leaves(self, object pairs, uint64_t* leaves) except -1:
        # XORs the pairs' digests into leaves; returns how many. The caller keeps the
        # tree's shape fixed meanwhile (_busy), as leaves is sized by it.
        cdef Py_ssize_t i = 0
        cdef size_t j
        cdef _Pending q
        q.leaves = leaves
        q.n = 0
        # Each item is held (a new reference) while used: a buffer export may run
        # Python code that changes the list.
        if PyList_CheckExact(pairs):
            while i < PyList_GET_SIZE(pairs):  # re-read, as the list iterator does
                pair = <object>PyList_GET_ITEM(pairs, i)
                self._add_pair(pair, &q)
                i += 1
        elif PyTuple_CheckExact(pairs):
            for i in range(PyTuple_GET_SIZE(pairs)):
                pair = <object>PyTuple_GET_ITEM(pairs, i)
                self._add_pair(pair, &q)
        else:
            for pair in pairs:
                self._add_pair(pair, &q)
        for j in range(q.n if q.n < _PENDING else _PENDING):
            leaves[q.leaf[j]] ^= q.digest[j]
        return <Py_ssize_t>q.n

    # --- addressing -------------------------------------------------------------------------

    def leaf_of(self, key):
        cdef uint64_t token, leaf = 0
        _hash_of(key, "key", 0, &token)
        if not self._locate(token, &leaf):
            self._range_error(token)
        return leaf

    def leaf_of_token(self, token):
        cdef uint64_t t, leaf = 0
        check_int(token, "token", 0, _M64)
        t = <uint64_t>token
        if not self._locate(t, &leaf):
            self._range_error(token)
        return leaf

    cdef object _start(self, uint64_t i):
        cdef uint64_t top
        cdef uint64_t low = sk_mt_start(self._lo, self._width_m1, self._depth, i, &top)
        if top == 0:
            return low
        return (<object>top << 64) | low  # only 2**64: the end of the last leaf

    def leaf_range(self, i):
        cdef uint64_t leaf
        _index(i, "leaf", 0, <int64_t>self._base - 1, &leaf)
        return self._start(leaf), self._start(leaf + 1)

    cdef list _ranges(self, const uint32_t* leaves, size_t n):
        cdef list out = []
        cdef size_t j = 0, k
        while j < n:
            k = j + 1
            while k < n and leaves[k] == leaves[k - 1] + 1:
                k += 1
            out.append((self._start(leaves[j]), self._start(<uint64_t>leaves[k - 1] + 1)))
            j = k
        return out

    def _ranges_of(self, leaves):
        # For diff_levels (shared); any ints, as the twin's.
        out = []
        prev = -2
        for i in leaves:
            if i == prev + 1:
                out[-1] = (out[-1][0], self._start_of(i + 1))
            else:
                out.append((self._start_of(i), self._start_of(i + 1)))
            prev = i
        return out

    cdef object _start_of(self, object i):
        if PyLong_CheckExact(i) and 0 <= i <= self._base:
            return self._start(<uint64_t>i)
        return self._lo_obj + ((i * (self._hi_obj - self._lo_obj) + self._base - 1)
                               >> self._depth)

    # --- reading ----------------------------------------------------------------------------

    @property
    def depth(self):
        return self._depth_obj

    @property
    def lo(self):
        return self._lo_obj

    @property
    def hi(self):
        return self._hi_obj

    @property
    def inner(self):
        return "hash" if self._hash else "xor"

    @property
    def count(self):
        return self._count

    @property
    def root(self):
        return self._nodes[1]

    @property
    def nbytes(self):
        return (<uint64_t>16) << self._depth

    def __len__(self):
        return PyNumber_AsSsize_t(self._count, OverflowError)  # the twin's error past maxsize

    def leaf(self, i):
        cdef uint64_t leaf
        _index(i, "leaf", 0, <int64_t>self._base - 1, &leaf)
        return self._nodes[self._base + leaf]

    cdef list _slice(self, uint64_t start, uint64_t stop):
        cdef list out = []
        cdef uint64_t i
        for i in range(start, stop):
            out.append(self._nodes[i])
        return out

    def leaves(self):
        return self._slice(self._base, 2 * self._base)

    def node(self, i):
        cdef uint64_t n
        _index(i, "node", 1, 2 * <int64_t>self._base - 1, &n)
        return self._nodes[n]

    def level(self, k):
        cdef uint64_t lv
        _index(k, "level", 0, self._depth, &lv, self._depth_obj)
        return self._slice((<uint64_t>1) << lv, (<uint64_t>2) << lv)

    def expand(self, node_ids):
        cdef list out = []
        cdef uint64_t n
        cdef int64_t top = <int64_t>self._base - 1
        for i in node_ids:
            _index(i, "node", 1, top, &n)
            out.append((self._nodes[2 * n], self._nodes[2 * n + 1]))
        return out

    # --- writing ----------------------------------------------------------------------------

    cdef inline void _apply(self, uint64_t leaf, uint64_t delta) noexcept:
        cdef uint64_t* n = self._nodes
        cdef uint64_t i = self._base + leaf
        if self._hash:
            n[i] ^= delta
            i >>= 1
            while i:
                n[i] = _inner(n[2 * i], n[2 * i + 1])
                i >>= 1
        else:
            while i:
                n[i] ^= delta
                i >>= 1

    cdef int _delta(self, object key, object old, object new, uint64_t* token,
                    uint64_t* delta, int* change) except -1:
        # Checks in the twin's order: key, its range, old value, new value.
        cdef uint64_t leaf = 0, h
        _hash_of(key, "key", 0, token)
        if not self._locate(token[0], &leaf):
            self._range_error(token[0])
        delta[0] = 0
        change[0] = 0
        if old is not None:
            _hash_of(old, "old value", token[0], &h)
            delta[0] = h
            change[0] = -1
        if new is not None:
            _hash_of(new, "new value", token[0], &h)
            delta[0] ^= h
            change[0] += 1
        return 0

    cdef int _check_count(self, int64_t change) except -1:
        if change < 0 and self._count + change < 0:
            raise InvalidArgumentError(
                f"removing {-change} item(s) from a tree of {self._count}: an item was "
                "removed that was never added")
        return 0

    def update(self, key, old_value, new_value):
        cdef uint64_t token, delta, leaf = 0
        cdef int change
        self._delta(key, old_value, new_value, &token, &delta, &change)
        self._check_count(change)
        # Located again: a buffer export (Python code on 3.12+) may have re-initialised
        # the tree since the check.
        if not self._locate(token, &leaf):
            self._range_error(token)
        self._count += change
        if delta:
            self._apply(leaf, delta)

    def add(self, key, value):
        if value is None:
            raise ArgumentTypeError("value must be str or a bytes-like object, not NoneType")
        self.update(key, None, value)

    def remove(self, key, value):
        if value is None:
            raise ArgumentTypeError("value must be str or a bytes-like object, not NoneType")
        self.update(key, value, None)

    cdef int _collect(self, object entry, _Changes* c) except -1:
        # Checks one entry as the twin does and keeps its leaf and delta.
        cdef uint64_t token, delta, leaf = 0
        cdef int change
        if PyTuple_CheckExact(entry) and PyTuple_GET_SIZE(entry) == 3:
            self._delta(<object>PyTuple_GET_ITEM(entry, 0), <object>PyTuple_GET_ITEM(entry, 1),
                        <object>PyTuple_GET_ITEM(entry, 2), &token, &delta, &change)
        elif not PyTuple_Check(entry) or len(entry) != 3:
            raise ArgumentTypeError(
                f"expected a (key, old_value, new_value) triple, got {entry!r:.80}")
        else:
            key, old, new = tuple(entry)  # the twin's _delta(*entry)
            self._delta(key, old, new, &token, &delta, &change)
        if not self._locate(token, &leaf):  # cannot fail: the shape is fixed (_busy)
            self._range_error(token)
        if c.k == c.cap:
            _reserve(c, 2 * c.cap)
        c.leaves[c.k] = leaf
        c.deltas[c.k] = delta
        c.k += 1
        c.total += change
        return 0

    def update_many(self, updates):
        # Every entry is checked and kept in C first; then the tree changes.
        cdef _Changes c
        cdef Py_ssize_t i = 0
        cdef size_t j
        cdef uint64_t* n
        cdef uint64_t base = self._base
        memset(&c, 0, sizeof(c))
        self._busy += 1
        try:
            if PyList_CheckExact(updates):
                _reserve(&c, <size_t>PyList_GET_SIZE(updates))
                while i < PyList_GET_SIZE(updates):  # items held, as in _add_leaves
                    entry = <object>PyList_GET_ITEM(updates, i)
                    self._collect(entry, &c)
                    i += 1
            elif PyTuple_CheckExact(updates):
                _reserve(&c, <size_t>PyTuple_GET_SIZE(updates))
                for i in range(PyTuple_GET_SIZE(updates)):
                    entry = <object>PyTuple_GET_ITEM(updates, i)
                    self._collect(entry, &c)
            else:
                _reserve(&c, 64)
                for entry in updates:
                    self._collect(entry, &c)
            self._check_count(c.total)
            self._count += c.total
            n = self._nodes
            if c.k * <size_t>(self._depth + 1) > 2 * base:
                # Many changes: XOR them into the leaves, then one sweep.
                for j in range(c.k):
                    n[base + c.leaves[j]] ^= c.deltas[j]
                with nogil:
                    _sweep(n, base, self._hash)
            elif self._hash:
                for j in range(c.k):
                    n[base + c.leaves[j]] ^= c.deltas[j]
                    c.leaves[j] = (base + c.leaves[j]) >> 1
                with nogil:
                    _rehash_paths(n, c.leaves, c.k)
            else:
                for j in range(c.k):
                    if c.deltas[j]:
                        self._apply(c.leaves[j], c.deltas[j])
        finally:
            self._busy -= 1
            PyMem_Free(c.leaves)
            PyMem_Free(c.deltas)
        return c.k

    def clear(self):
        memset(self._nodes, 0, 2 * self._base * sizeof(uint64_t))
        self._count = 0
        if self._hash:
            _fill_empty(self._nodes, self._depth)

    def rebuild(self, pairs):
        cdef uint64_t* fresh = <uint64_t*>PyMem_Calloc(self._base, sizeof(uint64_t))
        cdef uint64_t* leaves
        cdef uint64_t i
        cdef Py_ssize_t added
        cdef list drifted = []
        if fresh == NULL:
            raise MemoryError()
        self._busy += 1
        try:
            added = self._add_leaves(pairs, fresh)
            leaves = self._nodes + self._base
            for i in range(self._base):
                if leaves[i] != fresh[i]:
                    drifted.append(i)
            memcpy(leaves, fresh, self._base * sizeof(uint64_t))
            with nogil:
                _sweep(self._nodes, self._base, self._hash)
            self._count = added
        finally:
            self._busy -= 1
            PyMem_Free(fresh)
        return drifted

    # --- comparing and combining ------------------------------------------------------------

    cdef MerkleTree _same_shape(self, object other, str what):
        if not isinstance(other, MerkleTree):
            raise ArgumentTypeError(
                f"can only {what} a MerkleTree of the same implementation, not "
                f"{type(other).__module__}.{type(other).__name__}")
        cdef MerkleTree o = <MerkleTree>other
        mine = (self._depth_obj, self._lo_obj, self._hi_obj, self.inner)
        theirs = (o._depth_obj, o._lo_obj, o._hi_obj, o.inner)
        # The C fields decide too: the buffers are walked by them.
        if mine != theirs or (self._depth, self._lo, self._width_m1, self._hash) != (
                o._depth, o._lo, o._width_m1, o._hash):
            raise TreeMismatchError(
                f"cannot {what} trees of different shapes: (depth, lo, hi, inner) "
                f"{mine} vs {theirs}")
        return o

    def diff(self, other):
        cdef MerkleTree o = self._same_shape(other, "diff")
        cdef uint32_t* found = NULL
        cdef size_t count = 0, j
        cdef uint64_t compared = 1
        cdef int rc = 0
        cdef list leaves
        if self._nodes[1] == o._nodes[1]:
            return MerkleDiff([], [], 1)
        self._busy += 1
        o._busy += 1
        try:
            with nogil:
                rc = _walk(self._nodes, o._nodes, self._base, &found, &count, &compared)
            if rc < 0:
                raise MemoryError()
            leaves = [found[j] for j in range(count)]
            return MerkleDiff(leaves, self._ranges(found, count), compared)
        finally:
            self._busy -= 1
            o._busy -= 1
            PyMem_RawFree(found)

    def merge(self, other):
        cdef MerkleTree o = self._same_shape(other, "merge")
        cdef MerkleTree out = self._blank()
        cdef uint64_t* a = self._nodes
        cdef uint64_t* b = o._nodes
        cdef uint64_t* n = out._nodes
        cdef uint64_t i, base = self._base
        cdef bint hashed = self._hash
        self._busy += 1
        o._busy += 1
        try:
            with nogil:
                for i in range(base if hashed else 1, 2 * base):
                    n[i] = a[i] ^ b[i]
                if hashed:
                    _sweep(n, base, True)
        finally:
            self._busy -= 1
            o._busy -= 1
        out._count = self._count + o._count
        return out

    def copy(self):
        cdef MerkleTree out = self._blank()
        memcpy(out._nodes, self._nodes, 2 * self._base * sizeof(uint64_t))
        out._count = self._count
        return out

    def __eq__(self, other):
        if not isinstance(other, MerkleTree):
            return NotImplemented
        cdef MerkleTree o = <MerkleTree>other
        if (self._depth_obj, self._lo_obj, self._hi_obj, self._hash, self.count) != (
                o._depth_obj, o._lo_obj, o._hi_obj, o._hash, o.count):
            return False
        return self._depth == o._depth and memcmp(
            self._nodes, o._nodes, 2 * self._base * sizeof(uint64_t)) == 0

    __hash__ = None

    def __repr__(self):
        return (f"MerkleTree(depth={self._depth_obj}, lo={self._lo_obj}, hi={self._hi_obj}, "
                f"inner={self.inner!r}, count={self.count}, root=0x{self._nodes[1]:016x})")

    # --- bytes ------------------------------------------------------------------------------

    def to_bytes(self, leaves_only=False):
        cdef size_t words, first
        if not PyBool_Check(leaves_only):
            raise ArgumentTypeError(f"leaves_only must be a bool, not {type(leaves_only).__name__}")
        flags = (FLAG_INNER_HASH if self._hash else 0) | (FLAG_LEAVES_ONLY if leaves_only else 0)
        head = HEADER.pack(MAGIC, VERSION, self._depth_obj, HASH_XXH3_64, flags, self._lo_obj,
                           self._hi_obj - 1, self.count)
        if leaves_only:
            first, words = self._base, self._base
        else:
            first, words = 1, 2 * self._base - 1
        out = PyBytes_FromStringAndSize(NULL, PyBytes_GET_SIZE(head) + 8 * words)
        memcpy(PyBytes_AS_STRING(out), PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head))
        memcpy(PyBytes_AS_STRING(out) + PyBytes_GET_SIZE(head), self._nodes + first, 8 * words)
        return out

    @classmethod
    def from_bytes(cls, data):
        cdef MerkleTree tree
        cdef uint64_t bad = 0
        cdef const char* body
        if PyUnicode_Check(data) or not isinstance(data, (bytes, bytearray, memoryview)):
            raise ArgumentTypeError(f"data must be bytes-like, not {type(data).__name__}")
        data = bytes(data)
        depth, flags, lo, hi, count, offset = parse_header(data)
        tree = MerkleTree.__new__(MerkleTree)
        tree._setup(depth, lo, hi, "hash" if flags & FLAG_INNER_HASH else "xor", False)
        body = PyBytes_AS_STRING(data) + <Py_ssize_t>offset  # length checked by parse_header
        if flags & FLAG_LEAVES_ONLY:
            memcpy(tree._nodes + tree._base, body, 8 * tree._base)
            with nogil:
                _sweep(tree._nodes, tree._base, tree._hash)
        else:
            memcpy(tree._nodes + 1, body, 8 * (2 * tree._base - 1))
            with nogil:
                bad = _verify(tree._nodes, tree._base, tree._hash)
            if bad:
                raise CorruptTreeError(
                    f"corrupt Merkle tree: inner node {bad} does not match its children")
        tree._count = count
        return tree

    def __reduce__(self):
        return (MerkleTree.from_bytes, (self.to_bytes(),))
