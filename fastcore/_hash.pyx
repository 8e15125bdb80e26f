# cython: language_level=3, embedsignature=True
# cython: embedsignature.format=clinic
"""Native xxh3_64, xxh64 and md5_digest; the twin and specification is _hash_py."""

cimport cython
from cpython.buffer cimport (
    PyBUF_SIMPLE,
    PyBuffer_Release,
    PyObject_CheckBuffer,
    PyObject_GetBuffer,
)
from cpython.bool cimport PyBool_Check
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_Check,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.exc cimport PyErr_Clear, PyErr_Occurred
from cpython.long cimport PyLong_Check, PyLong_CheckExact
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_Check
from libc.stdint cimport uint8_t, uint64_t

from fastcore._hashimpl cimport sk_md5, sk_xxh3_64, sk_xxh64

cdef extern from "Python.h":
    # Declared without Cython's error check, so _get_seed turns overflow into our error.
    unsigned long long _as_u64 "PyLong_AsUnsignedLongLong"(object) noexcept

from fastcore._errors import ArgumentTypeError, InvalidArgumentError

__all__ = ("md5_digest", "xxh3_64", "xxh64")

# Below these sizes the hash costs less than dropping and retaking the GIL
# (hashlib's cut-off for md5 is 2 KiB; xxh3 and xxh64 are over 10x faster per byte).
cdef enum:
    _NOGIL_MIN_XXH = 16384
    _NOGIL_MIN_MD5 = 2048


cdef inline int _get_data(object data, Py_buffer* view) except -1:
    # Points view.buf / view.len at the bytes to hash. Returns 1 when a buffer was
    # acquired (the caller releases it), 0 for str / bytes (borrowed from data).
    cdef Py_ssize_t n
    if PyUnicode_Check(data):
        # Cached UTF-8 of the str (no copy for ASCII); lone surrogates raise
        # UnicodeEncodeError, as str.encode does.
        view.buf = <void*>PyUnicode_AsUTF8AndSize(data, &n)
        view.len = n
        return 0
    if PyBytes_Check(data):
        view.buf = <void*>PyBytes_AS_STRING(data)
        view.len = PyBytes_GET_SIZE(data)
        return 0
    if not PyObject_CheckBuffer(data):
        raise ArgumentTypeError(
            f"data must be str or a bytes-like object, not {type(data).__name__}")
    try:
        PyObject_GetBuffer(data, view, PyBUF_SIMPLE)
    except BufferError:
        raise ArgumentTypeError(
            f"data must be a C-contiguous buffer, got a non-contiguous "
            f"{type(data).__name__}") from None
    return 1


cdef inline int _get_seed(object seed, uint64_t* out) except -1:
    if PyLong_CheckExact(seed) or (PyLong_Check(seed) and not PyBool_Check(seed)):
        # Checked by hand: a try/except would save the exception state on every call.
        out[0] = _as_u64(seed)
        if out[0] != <uint64_t>-1 or not PyErr_Occurred():
            return 0
        PyErr_Clear()  # an OverflowError, the only error an int raises here
        raise InvalidArgumentError(_seed_range_message(seed))
    raise ArgumentTypeError(f"seed must be an int, not {type(seed).__name__}")


cdef str _seed_range_message(object seed):
    # Same text as _hash_py; huge ints are described, not printed (int -> str has
    # a digit limit and would raise ValueError instead).
    cdef Py_ssize_t bits = seed.bit_length()
    if bits <= 128:
        shown = int.__repr__(seed)
    else:
        shown = f"{'a negative' if seed < 0 else 'an'} int of {bits} bits"
    return f"seed must be in [0, 2**64), got {shown}"


# binding=False: plain builtin functions, ~10 ns cheaper per call than cyfunctions on
# CPython 3.11; the clinic-format signature keeps inspect.signature() working.
@cython.binding(False)
def xxh3_64(data, seed=0):
    cdef Py_buffer view
    cdef uint64_t s, h
    cdef int acquired = _get_data(data, &view)
    try:
        _get_seed(seed, &s)
        if view.len < _NOGIL_MIN_XXH:
            h = sk_xxh3_64(<const uint8_t*>view.buf, <size_t>view.len, s)
        else:
            with nogil:
                h = sk_xxh3_64(<const uint8_t*>view.buf, <size_t>view.len, s)
    finally:
        if acquired:
            PyBuffer_Release(&view)
    return h


@cython.binding(False)
def xxh64(data, seed=0):
    cdef Py_buffer view
    cdef uint64_t s, h
    cdef int acquired = _get_data(data, &view)
    try:
        _get_seed(seed, &s)
        if view.len < _NOGIL_MIN_XXH:
            h = sk_xxh64(<const uint8_t*>view.buf, <size_t>view.len, s)
        else:
            with nogil:
                h = sk_xxh64(<const uint8_t*>view.buf, <size_t>view.len, s)
    finally:
        if acquired:
            PyBuffer_Release(&view)
    return h


@cython.binding(False)
def md5_digest(data):
    cdef Py_buffer view
    cdef uint8_t out[16]
    cdef int acquired = _get_data(data, &view)
    try:
        if view.len < _NOGIL_MIN_MD5:
            sk_md5(<const uint8_t*>view.buf, <size_t>view.len, out)
        else:
            with nogil:
                sk_md5(<const uint8_t*>view.buf, <size_t>view.len, out)
    finally:
        if acquired:
            PyBuffer_Release(&view)
    return PyBytes_FromStringAndSize(<char*>out, 16)
