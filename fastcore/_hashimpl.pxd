# cython: language_level=3, embedsignature=True
# Hash primitives in plain C (no Python objects), inlined into every .pyx that
# cimports them: XXH64, XXH3-64 (bit-exact with the xxhash package) and MD5
# (RFC 1321, for libmemcached's ketama). Written from the published algorithms.

cimport cython
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

cdef extern from *:
    """
    #if !defined(__SIZEOF_INT128__) || !defined(__BYTE_ORDER__) \\
        || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    #error "fastcore._hashimpl needs a little-endian target with unsigned __int128"
    #endif
    """
    # Wrong hashes would be silent, so other targets fail at compile time
    # (SHARDKIT_PURE_PYTHON=1 installs the twins there).
    ctypedef unsigned long long sk_u128 "unsigned __int128"

    # Named C literals keep the constants exact and folded by the compiler.
    const uint64_t _P64_1 "0x9E3779B185EBCA87ULL"
    const uint64_t _P64_2 "0xC2B2AE3D27D4EB4FULL"
    const uint64_t _P64_3 "0x165667B19E3779F9ULL"
    const uint64_t _P64_4 "0x85EBCA77C2B2AE63ULL"
    const uint64_t _P64_5 "0x27D4EB2F165667C5ULL"
    const uint64_t _P32_1 "0x9E3779B1ULL"
    const uint64_t _P32_2 "0x85EBCA77ULL"
    const uint64_t _P32_3 "0xC2B2AE3DULL"
    const uint64_t _PMX_1 "0x165667919E3779F9ULL"
    const uint64_t _PMX_2 "0x9FB21C651E98DF25ULL"


# --- little-endian loads (memcpy compiles to one unaligned mov) ---------------------

cdef inline uint64_t _r64(const uint8_t* p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v


cdef inline uint32_t _r32(const uint8_t* p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v


cdef inline uint64_t _rotl64(uint64_t x, int r) noexcept nogil:
    return (x << r) | (x >> (64 - r))


cdef inline uint32_t _rotl32(uint32_t x, int r) noexcept nogil:
    return (x << r) | (x >> (32 - r))


cdef inline uint64_t _bswap64(uint64_t x) noexcept nogil:
    x = ((x & 0x00FF00FF00FF00FFULL) << 8) | ((x >> 8) & 0x00FF00FF00FF00FFULL)
    x = ((x & 0x0000FFFF0000FFFFULL) << 16) | ((x >> 16) & 0x0000FFFF0000FFFFULL)
    return (x << 32) | (x >> 32)


cdef inline uint32_t _bswap32(uint32_t x) noexcept nogil:
    return ((x << 24) | ((x << 8) & 0x00FF0000U)
            | ((x >> 8) & 0x0000FF00U) | (x >> 24))


# --- XXH64 --------------------------------------------------------------------------

cdef inline uint64_t _xxh64_round(uint64_t acc, uint64_t lane) noexcept nogil:
    acc += lane * _P64_2
    return _rotl64(acc, 31) * _P64_1


cdef inline uint64_t _xxh64_merge(uint64_t h, uint64_t v) noexcept nogil:
    h ^= _xxh64_round(0, v)
    return h * _P64_1 + _P64_4


cdef inline uint64_t _xxh64_avalanche(uint64_t h) noexcept nogil:
    h ^= h >> 33
    h *= _P64_2
    h ^= h >> 29
    h *= _P64_3
    return h ^ (h >> 32)


cdef inline uint64_t sk_xxh64(const uint8_t* p, size_t n, uint64_t seed) noexcept nogil:
    cdef const uint8_t* end = p + n
    cdef const uint8_t* limit
    cdef uint64_t h, v1, v2, v3, v4
    if n >= 32:
        limit = end - 32
        v1 = seed + _P64_1 + _P64_2
        v2 = seed + _P64_2
        v3 = seed
        v4 = seed - _P64_1
        while p <= limit:
            v1 = _xxh64_round(v1, _r64(p))
            v2 = _xxh64_round(v2, _r64(p + 8))
            v3 = _xxh64_round(v3, _r64(p + 16))
            v4 = _xxh64_round(v4, _r64(p + 24))
            p += 32
        h = _rotl64(v1, 1) + _rotl64(v2, 7) + _rotl64(v3, 12) + _rotl64(v4, 18)
        h = _xxh64_merge(h, v1)
        h = _xxh64_merge(h, v2)
        h = _xxh64_merge(h, v3)
        h = _xxh64_merge(h, v4)
    else:
        h = seed + _P64_5
    h += <uint64_t>n
    # The tail: 8-byte lanes, then one 4-byte lane, then single bytes.
    while end - p >= 8:
        h ^= _xxh64_round(0, _r64(p))
        h = _rotl64(h, 27) * _P64_1 + _P64_4
        p += 8
    if end - p >= 4:
        h ^= <uint64_t>_r32(p) * _P64_1
        h = _rotl64(h, 23) * _P64_2 + _P64_3
        p += 4
    while p < end:
        h ^= <uint64_t>p[0] * _P64_5
        h = _rotl64(h, 11) * _P64_1
        p += 1
    return _xxh64_avalanche(h)


# --- XXH3-64 ------------------------------------------------------------------------

cdef inline const uint8_t* _xxh3_ksecret() noexcept nogil:
    # XXH3's default 192-byte secret (kSecret); a C string literal, so no table setup.
    return <const uint8_t*><const char*>(
        b"\xb8\xfe\x6c\x39\x23\xa4\x4b\xbe\x7c\x01\x81\x2c\xf7\x21\xad\x1c"
        b"\xde\xd4\x6d\xe9\x83\x90\x97\xdb\x72\x40\xa4\xa4\xb7\xb3\x67\x1f"
        b"\xcb\x79\xe6\x4e\xcc\xc0\xe5\x78\x82\x5a\xd0\x7d\xcc\xff\x72\x21"
        b"\xb8\x08\x46\x74\xf7\x43\x24\x8e\xe0\x35\x90\xe6\x81\x3a\x26\x4c"
        b"\x3c\x28\x52\xbb\x91\xc3\x00\xcb\x88\xd0\x65\x8b\x1b\x53\x2e\xa3"
        b"\x71\x64\x48\x97\xa2\x0d\xf9\x4e\x38\x19\xef\x46\xa9\xde\xac\xd8"
        b"\xa8\xfa\x76\x3f\xe3\x9c\x34\x3f\xf9\xdc\xbb\xc7\xc7\x0b\x4f\x1d"
        b"\x8a\x51\xe0\x4b\xcd\xb4\x59\x31\xc8\x9f\x7e\xc9\xd9\x78\x73\x64"
        b"\xea\xc5\xac\x83\x34\xd3\xeb\xc3\xc5\x81\xa0\xff\xfa\x13\x63\xeb"
        b"\x17\x0d\xdd\x51\xb7\xf0\xda\x49\xd3\x16\x55\x26\x29\xd4\x68\x9e"
        b"\x2b\x16\xbe\x58\x7d\x47\xa1\xfc\x8f\xf8\xb8\xd1\x7a\xd0\x31\xce"
        b"\x45\xcb\x3a\x8f\x95\x16\x04\x28\xaf\xd7\xfb\xca\xbb\x4b\x40\x7e"
    )


cdef inline uint64_t _mul128_fold64(uint64_t a, uint64_t b) noexcept nogil:
    cdef sk_u128 prod = <sk_u128>a * b
    return <uint64_t>prod ^ <uint64_t>(prod >> 64)


cdef inline uint64_t _xxh3_avalanche(uint64_t h) noexcept nogil:
    h ^= h >> 37
    h *= _PMX_1
    return h ^ (h >> 32)


cdef inline uint64_t _xxh3_rrmxmx(uint64_t h, uint64_t n) noexcept nogil:
    h ^= _rotl64(h, 49) ^ _rotl64(h, 24)
    h *= _PMX_2
    h ^= (h >> 35) + n
    h *= _PMX_2
    return h ^ (h >> 28)


cdef inline uint64_t _xxh3_mix16(const uint8_t* p, const uint8_t* s,
                                 uint64_t seed) noexcept nogil:
    return _mul128_fold64(_r64(p) ^ (_r64(s) + seed), _r64(p + 8) ^ (_r64(s + 8) - seed))


cdef inline uint64_t _xxh3_0to16(const uint8_t* p, size_t n, const uint8_t* s,
                                 uint64_t seed) noexcept nogil:
    cdef uint64_t lo, hi, x
    cdef uint32_t combined
    if n > 8:
        lo = _r64(p) ^ ((_r64(s + 24) ^ _r64(s + 32)) + seed)
        hi = _r64(p + n - 8) ^ ((_r64(s + 40) ^ _r64(s + 48)) - seed)
        return _xxh3_avalanche(<uint64_t>n + _bswap64(lo) + hi + _mul128_fold64(lo, hi))
    if n >= 4:
        seed ^= <uint64_t>_bswap32(<uint32_t>seed) << 32
        x = <uint64_t>_r32(p + n - 4) + (<uint64_t>_r32(p) << 32)
        return _xxh3_rrmxmx(x ^ ((_r64(s + 8) ^ _r64(s + 16)) - seed), n)
    if n > 0:
        combined = ((<uint32_t>p[0] << 16) | (<uint32_t>p[n >> 1] << 24)
                    | <uint32_t>p[n - 1] | (<uint32_t>n << 8))
        return _xxh64_avalanche(
            <uint64_t>combined ^ (<uint64_t>(_r32(s) ^ _r32(s + 4)) + seed))
    return _xxh64_avalanche(seed ^ _r64(s + 56) ^ _r64(s + 64))


cdef inline uint64_t _xxh3_17to128(const uint8_t* p, size_t n, const uint8_t* s,
                                   uint64_t seed) noexcept nogil:
    # Pairs from both ends, so every byte is read once or twice, branches nest.
    cdef uint64_t acc = <uint64_t>n * _P64_1
    if n > 32:
        if n > 64:
            if n > 96:
                acc += _xxh3_mix16(p + 48, s + 96, seed)
                acc += _xxh3_mix16(p + n - 64, s + 112, seed)
            acc += _xxh3_mix16(p + 32, s + 64, seed)
            acc += _xxh3_mix16(p + n - 48, s + 80, seed)
        acc += _xxh3_mix16(p + 16, s + 32, seed)
        acc += _xxh3_mix16(p + n - 32, s + 48, seed)
    acc += _xxh3_mix16(p, s, seed)
    acc += _xxh3_mix16(p + n - 16, s + 16, seed)
    return _xxh3_avalanche(acc)


@cython.cdivision(True)
cdef inline uint64_t _xxh3_129to240(const uint8_t* p, size_t n, const uint8_t* s,
                                    uint64_t seed) noexcept nogil:
    cdef uint64_t acc = <uint64_t>n * _P64_1
    cdef uint64_t acc_end
    cdef size_t i
    cdef size_t rounds = n // 16
    for i in range(8):
        acc += _xxh3_mix16(p + 16 * i, s + 16 * i, seed)
    acc = _xxh3_avalanche(acc)
    # Rounds past the 8th reuse the secret from offset 3; the last 16 bytes use 119.
    acc_end = _xxh3_mix16(p + n - 16, s + 136 - 17, seed)
    for i in range(8, rounds):
        acc_end += _xxh3_mix16(p + 16 * i, s + 16 * (i - 8) + 3, seed)
    return _xxh3_avalanche(acc + acc_end)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void _xxh3_stripe(uint64_t* acc, const uint8_t* p,
                              const uint8_t* s) noexcept nogil:
    # One 64-byte stripe into the 8 lanes, scalar on purpose: at the x86-64 baseline
    # (SSE2) gcc's vectorised form of the 32x32->64 multiply (three pmuludq per
    # pair of lanes) measured slower than this (~9 GB/s).
    cdef size_t i
    cdef uint64_t v, k
    for i in range(8):
        v = _r64(p + 8 * i)
        k = v ^ _r64(s + 8 * i)
        acc[i ^ 1] += v
        acc[i] += (k & 0xFFFFFFFFULL) * (k >> 32)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void _xxh3_scramble(uint64_t* acc, const uint8_t* s) noexcept nogil:
    cdef size_t i
    cdef uint64_t a
    for i in range(8):
        a = acc[i]
        a ^= a >> 47
        a ^= _r64(s + 8 * i)
        acc[i] = a * _P32_1


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
cdef inline uint64_t _xxh3_long(const uint8_t* p, size_t n,
                                const uint8_t* s) noexcept nogil:
    # s is a 192-byte secret: blocks of 16 stripes (1 KiB), each stripe keyed 8 bytes
    # further into the secret, a scramble after each block, then the final stripe.
    cdef uint64_t acc[8]
    cdef size_t b, st, i
    cdef size_t nb_blocks = (n - 1) // 1024
    cdef size_t nb_stripes = ((n - 1) - 1024 * nb_blocks) // 64
    cdef uint64_t result = <uint64_t>n * _P64_1
    acc[0] = _P32_3
    acc[1] = _P64_1
    acc[2] = _P64_2
    acc[3] = _P64_3
    acc[4] = _P64_4
    acc[5] = _P32_2
    acc[6] = _P64_5
    acc[7] = _P32_1
    for b in range(nb_blocks):
        for st in range(16):
            _xxh3_stripe(acc, p + 1024 * b + 64 * st, s + 8 * st)
        _xxh3_scramble(acc, s + 192 - 64)
    for st in range(nb_stripes):
        _xxh3_stripe(acc, p + 1024 * nb_blocks + 64 * st, s + 8 * st)
    _xxh3_stripe(acc, p + n - 64, s + 192 - 64 - 7)
    for i in range(4):
        result += _mul128_fold64(acc[2 * i] ^ _r64(s + 11 + 16 * i),
                                 acc[2 * i + 1] ^ _r64(s + 11 + 16 * i + 8))
    return _xxh3_avalanche(result)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline uint64_t _xxh3_long_seeded(const uint8_t* p, size_t n,
                                       uint64_t seed) noexcept nogil:
    # A seeded long input uses a secret derived from kSecret: +seed on the low
    # word of each 16-byte pair, -seed on the high word.
    cdef const uint8_t* ks = _xxh3_ksecret()
    cdef uint8_t custom[192]
    cdef uint64_t lo, hi
    cdef size_t i
    for i in range(12):
        lo = _r64(ks + 16 * i) + seed
        hi = _r64(ks + 16 * i + 8) - seed
        memcpy(custom + 16 * i, &lo, 8)
        memcpy(custom + 16 * i + 8, &hi, 8)
    return _xxh3_long(p, n, custom)


cdef inline uint64_t sk_xxh3_64(const uint8_t* p, size_t n, uint64_t seed) noexcept nogil:
    if n <= 16:
        return _xxh3_0to16(p, n, _xxh3_ksecret(), seed)
    if n <= 128:
        return _xxh3_17to128(p, n, _xxh3_ksecret(), seed)
    if n <= 240:
        return _xxh3_129to240(p, n, _xxh3_ksecret(), seed)
    if seed == 0:
        return _xxh3_long(p, n, _xxh3_ksecret())
    return _xxh3_long_seeded(p, n, seed)


# --- MD5 (RFC 1321) -----------------------------------------------------------------

cdef inline uint32_t _md5_f(uint32_t a, uint32_t b, uint32_t c, uint32_t d,
                            uint32_t x, int r, uint32_t t) noexcept nogil:
    return b + _rotl32(a + (d ^ (b & (c ^ d))) + x + t, r)


cdef inline uint32_t _md5_g(uint32_t a, uint32_t b, uint32_t c, uint32_t d,
                            uint32_t x, int r, uint32_t t) noexcept nogil:
    return b + _rotl32(a + (c ^ (d & (b ^ c))) + x + t, r)


cdef inline uint32_t _md5_h(uint32_t a, uint32_t b, uint32_t c, uint32_t d,
                            uint32_t x, int r, uint32_t t) noexcept nogil:
    return b + _rotl32(a + (b ^ c ^ d) + x + t, r)


cdef inline uint32_t _md5_i(uint32_t a, uint32_t b, uint32_t c, uint32_t d,
                            uint32_t x, int r, uint32_t t) noexcept nogil:
    return b + _rotl32(a + (c ^ (b | ~d)) + x + t, r)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void _md5_block(uint32_t* st, const uint8_t* blk) noexcept nogil:
    # The 64 steps written out: constant shifts and sines let gcc schedule freely.
    cdef uint32_t x[16]
    cdef uint32_t a = st[0]
    cdef uint32_t b = st[1]
    cdef uint32_t c = st[2]
    cdef uint32_t d = st[3]
    cdef size_t i
    for i in range(16):
        x[i] = _r32(blk + 4 * i)

    a = _md5_f(a, b, c, d, x[0], 7, 0xd76aa478U)
    d = _md5_f(d, a, b, c, x[1], 12, 0xe8c7b756U)
    c = _md5_f(c, d, a, b, x[2], 17, 0x242070dbU)
    b = _md5_f(b, c, d, a, x[3], 22, 0xc1bdceeeU)
    a = _md5_f(a, b, c, d, x[4], 7, 0xf57c0fafU)
    d = _md5_f(d, a, b, c, x[5], 12, 0x4787c62aU)
    c = _md5_f(c, d, a, b, x[6], 17, 0xa8304613U)
    b = _md5_f(b, c, d, a, x[7], 22, 0xfd469501U)
    a = _md5_f(a, b, c, d, x[8], 7, 0x698098d8U)
    d = _md5_f(d, a, b, c, x[9], 12, 0x8b44f7afU)
    c = _md5_f(c, d, a, b, x[10], 17, 0xffff5bb1U)
    b = _md5_f(b, c, d, a, x[11], 22, 0x895cd7beU)
    a = _md5_f(a, b, c, d, x[12], 7, 0x6b901122U)
    d = _md5_f(d, a, b, c, x[13], 12, 0xfd987193U)
    c = _md5_f(c, d, a, b, x[14], 17, 0xa679438eU)
    b = _md5_f(b, c, d, a, x[15], 22, 0x49b40821U)

    a = _md5_g(a, b, c, d, x[1], 5, 0xf61e2562U)
    d = _md5_g(d, a, b, c, x[6], 9, 0xc040b340U)
    c = _md5_g(c, d, a, b, x[11], 14, 0x265e5a51U)
    b = _md5_g(b, c, d, a, x[0], 20, 0xe9b6c7aaU)
    a = _md5_g(a, b, c, d, x[5], 5, 0xd62f105dU)
    d = _md5_g(d, a, b, c, x[10], 9, 0x02441453U)
    c = _md5_g(c, d, a, b, x[15], 14, 0xd8a1e681U)
    b = _md5_g(b, c, d, a, x[4], 20, 0xe7d3fbc8U)
    a = _md5_g(a, b, c, d, x[9], 5, 0x21e1cde6U)
    d = _md5_g(d, a, b, c, x[14], 9, 0xc33707d6U)
    c = _md5_g(c, d, a, b, x[3], 14, 0xf4d50d87U)
    b = _md5_g(b, c, d, a, x[8], 20, 0x455a14edU)
    a = _md5_g(a, b, c, d, x[13], 5, 0xa9e3e905U)
    d = _md5_g(d, a, b, c, x[2], 9, 0xfcefa3f8U)
    c = _md5_g(c, d, a, b, x[7], 14, 0x676f02d9U)
    b = _md5_g(b, c, d, a, x[12], 20, 0x8d2a4c8aU)

    a = _md5_h(a, b, c, d, x[5], 4, 0xfffa3942U)
    d = _md5_h(d, a, b, c, x[8], 11, 0x8771f681U)
    c = _md5_h(c, d, a, b, x[11], 16, 0x6d9d6122U)
    b = _md5_h(b, c, d, a, x[14], 23, 0xfde5380cU)
    a = _md5_h(a, b, c, d, x[1], 4, 0xa4beea44U)
    d = _md5_h(d, a, b, c, x[4], 11, 0x4bdecfa9U)
    c = _md5_h(c, d, a, b, x[7], 16, 0xf6bb4b60U)
    b = _md5_h(b, c, d, a, x[10], 23, 0xbebfbc70U)
    a = _md5_h(a, b, c, d, x[13], 4, 0x289b7ec6U)
    d = _md5_h(d, a, b, c, x[0], 11, 0xeaa127faU)
    c = _md5_h(c, d, a, b, x[3], 16, 0xd4ef3085U)
    b = _md5_h(b, c, d, a, x[6], 23, 0x04881d05U)
    a = _md5_h(a, b, c, d, x[9], 4, 0xd9d4d039U)
    d = _md5_h(d, a, b, c, x[12], 11, 0xe6db99e5U)
    c = _md5_h(c, d, a, b, x[15], 16, 0x1fa27cf8U)
    b = _md5_h(b, c, d, a, x[2], 23, 0xc4ac5665U)

    a = _md5_i(a, b, c, d, x[0], 6, 0xf4292244U)
    d = _md5_i(d, a, b, c, x[7], 10, 0x432aff97U)
    c = _md5_i(c, d, a, b, x[14], 15, 0xab9423a7U)
    b = _md5_i(b, c, d, a, x[5], 21, 0xfc93a039U)
    a = _md5_i(a, b, c, d, x[12], 6, 0x655b59c3U)
    d = _md5_i(d, a, b, c, x[3], 10, 0x8f0ccc92U)
    c = _md5_i(c, d, a, b, x[10], 15, 0xffeff47dU)
    b = _md5_i(b, c, d, a, x[1], 21, 0x85845dd1U)
    a = _md5_i(a, b, c, d, x[8], 6, 0x6fa87e4fU)
    d = _md5_i(d, a, b, c, x[15], 10, 0xfe2ce6e0U)
    c = _md5_i(c, d, a, b, x[6], 15, 0xa3014314U)
    b = _md5_i(b, c, d, a, x[13], 21, 0x4e0811a1U)
    a = _md5_i(a, b, c, d, x[4], 6, 0xf7537e82U)
    d = _md5_i(d, a, b, c, x[11], 10, 0xbd3af235U)
    c = _md5_i(c, d, a, b, x[2], 15, 0x2ad7d2bbU)
    b = _md5_i(b, c, d, a, x[9], 21, 0xeb86d391U)

    st[0] += a
    st[1] += b
    st[2] += c
    st[3] += d


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void sk_md5(const uint8_t* p, size_t n, uint8_t* out16) noexcept nogil:
    cdef uint32_t st[4]
    cdef uint8_t tail[128]
    cdef size_t full = n & ~(<size_t>63)
    cdef size_t rem = n - full
    cdef size_t padded = 64 if rem < 56 else 128
    cdef uint64_t bits = <uint64_t>n << 3
    cdef size_t off
    st[0] = 0x67452301U
    st[1] = 0xefcdab89U
    st[2] = 0x98badcfeU
    st[3] = 0x10325476U
    for off in range(0, full, 64):
        _md5_block(st, p + off)
    # Padding: 0x80, zeros, then the bit length (mod 2**64) little-endian.
    memcpy(tail, p + full, rem)
    tail[rem] = 0x80
    memset(tail + rem + 1, 0, padded - 8 - rem - 1)
    memcpy(tail + padded - 8, &bits, 8)
    _md5_block(st, tail)
    if padded == 128:
        _md5_block(st, tail + 64)
    memcpy(out16, st, 16)
