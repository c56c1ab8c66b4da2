# cython: language_level=3
"""eventstream's compiled backend: producer and consumer over librdkafka's C API.

One librdkafka per process: this module does not link against librdkafka. At import it asks
eventstream._runtime.librdkafka.candidate_paths() where the librdkafka that confluent-kafka
loaded is (the one its wheel bundles), dlopen()s that very file, and resolves every function it
uses into a pointer table (rdkafka_abi.h). librdkafka older than 2.1.0 is refused.

Layout: this file is the loader and the Backend object; producer.pxi, consumer.pxi and mock.pxi
hold the clients.
"""

cimport cython
from libc.stdint cimport int32_t, int64_t, uint64_t, INT64_MIN
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memcpy, memcmp, memset, strlen, strcmp
from libc.stdio cimport snprintf
from posix.dlfcn cimport dlopen, dlerror, RTLD_NOW, RTLD_LOCAL
from cpython.ref cimport PyObject, Py_INCREF, Py_DECREF, Py_XDECREF
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from cpython cimport array

from rdkafka cimport *
from esk_sync cimport *

import array as _array
import atexit as _atexit
import os as _os
import threading as _threading

from eventstream import errors as _errors
from eventstream._runtime import librdkafka as _librdkafka
from eventstream._runtime import wire as _wire
from eventstream._runtime.records import RawRecord as _RawRecord
from eventstream._runtime.records import Deliveries as _Deliveries
from eventstream._runtime.telemetry.metrics import Histogram as _Histogram
from eventstream._runtime.telemetry.metrics import ProducerMetrics as _ProducerMetrics

cdef extern from "<dlfcn.h>" nogil:
    int RTLD_NOLOAD

cdef extern from "Python.h":
    int PyErr_CheckSignals() except -1
    # args[-1] may be overwritten by the callee (PY_VECTORCALL_ARGUMENTS_OFFSET): pass args + 1.
    # A new reference, or NULL with an exception set.
    PyObject *PyObject_Vectorcall(object callable, PyObject **args, size_t nargsf,
                                  PyObject *kwnames)
    void _decref "Py_DECREF"(PyObject *o)
    size_t PY_VECTORCALL_ARGUMENTS_OFFSET

__all__ = [
    "BACKEND",
    "CompiledBackend",
    "Consumer",
    "LIBRDKAFKA_PATH",
    "LIBRDKAFKA_VERSION",
    "MIN_LIBRDKAFKA_VERSION",
    "MockCluster",
    "Producer",
]

#: The oldest librdkafka accepted: 2.1.0 brought rd_kafka_offset_store_message() and the fix for
#: messages lost by rd_kafka_consume_batch_queue() across rebalances.
MIN_LIBRDKAFKA_VERSION = "2.1.0"

cdef enum:
    ERRSTR_SIZE = 512
    _MIN_VERSION_INT = 0x020100ff     # 2.1.0 final, as rd_kafka_version() encodes it


# --------------------------------------------------------------------------------------------
# Loader
# --------------------------------------------------------------------------------------------

cdef void *_open_librdkafka(list paths) except NULL:
    cdef void *handle = NULL
    cdef bytes p
    # Already loaded by confluent_kafka.cimpl: RTLD_NOLOAD hands back that very instance.
    for path in paths:
        p = _os.fsencode(path)
        handle = dlopen(p, RTLD_NOW | RTLD_NOLOAD)
        if handle != NULL:
            return handle
    # Not loaded under that name (unusual): load it privately, still the same file.
    errors = []
    for path in paths:
        p = _os.fsencode(path)
        handle = dlopen(p, RTLD_NOW | RTLD_LOCAL)
        if handle != NULL:
            return handle
        err = dlerror()
        errors.append(f"{path}: {err.decode() if err != NULL else 'unknown error'}")
    raise ImportError(
        "eventstream._core: cannot load librdkafka: "
        + ("; ".join(errors) if errors else
           "no librdkafka-*.so.1 found next to confluent_kafka (confluent_kafka.libs/) and none "
           "loaded in this process; install the confluent-kafka wheel")
    )


def _load():
    # Where to look is decided once, in Python, for this module and the pure backend alike.
    paths = _librdkafka.candidate_paths()
    cdef void *handle = _open_librdkafka(paths)
    cdef const char *missing = esk_rdk_load(handle)
    if missing != NULL:
        raise ImportError(
            f"eventstream._core: librdkafka at {paths[0]!r} lacks the symbol "
            f"{missing.decode()!r}; librdkafka >= {MIN_LIBRDKAFKA_VERSION} is required"
        )
    cdef int version = rd_kafka_version()
    version_str = rd_kafka_version_str().decode()
    if version < _MIN_VERSION_INT:
        raise ImportError(
            f"eventstream._core: librdkafka {version_str} (0x{version:08x}) is too old; "
            f"{MIN_LIBRDKAFKA_VERSION} or newer is required (offset_store_message, batch "
            "consume fixes). Upgrade confluent-kafka."
        )
    # The path actually in use: the first one dlopen accepted.
    used = paths[0]
    for path in paths:
        if dlopen(_os.fsencode(path), RTLD_NOW | RTLD_NOLOAD) == handle:
            used = path
            break
    return used, version_str


#: Path of the librdkafka shared library in use (the one confluent-kafka loaded).
#: Its version string, e.g. "2.16.0".
LIBRDKAFKA_PATH, LIBRDKAFKA_VERSION = _load()


# Bumped in a child process after fork(): clients made before it belong to the parent, whose
# librdkafka threads do not exist in the child. Every client records it; the guard before each
# call and __dealloc__ compare (see eventstream._runtime.forks for the pure-Python side).
cdef int _fork_generation = 0


def _after_fork_in_child():
    global _fork_generation
    _fork_generation += 1


_os.register_at_fork(after_in_child=_after_fork_in_child)


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------

cdef str _err_name(int code):
    return rd_kafka_err2name(code).decode("utf-8", "replace")


cdef str _err_str(int code):
    return rd_kafka_err2str(code).decode("utf-8", "replace")


cdef str _text(const void *p, size_t n):
    return (<const char *>p)[:n].decode("utf-8", "replace")


# A latency histogram in metrics.Histogram's buckets (bucket b: durations below 2**b ns). Written
# by one thread; read by others without a lock (each counter is exact on its own).
cdef struct Hist:
    int64_t counts[ESK_BUCKETS]
    int64_t sum_ns


cdef inline void _hist_add(Hist *h, int64_t ns) noexcept nogil:
    h.counts[esk_bucket(ns)] += 1
    h.sum_ns += ns if ns > 0 else 0


cdef array.array _INT32_ARRAY = _array.array("i")
cdef array.array _INT64_ARRAY = _array.array("q")


cdef object _hist_snapshot(const Hist *h):
    return _Histogram.of([h.counts[i] for i in range(ESK_BUCKETS)], h.sum_ns)


cdef rd_kafka_conf_t *_make_conf(object properties, str what) except NULL:
    """A new conf with every property set; raises ValueError(f"{name}: {errstr}") on the first
    rejected one (the conf is destroyed then)."""
    cdef rd_kafka_conf_t *conf = rd_kafka_conf_new()
    cdef char errstr[ERRSTR_SIZE]
    cdef bytes bname, bvalue
    if conf == NULL:
        raise MemoryError()
    try:
        for name, value in properties.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError(
                    f"{what} properties must map str to str, got {name!r}: {value!r}"
                )
            bname = name.encode()
            bvalue = value.encode()
            errstr[0] = 0
            if rd_kafka_conf_set(conf, bname, bvalue, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK:
                raise ValueError(f"{name}: {errstr.decode('utf-8', 'replace')}")
    except BaseException:
        rd_kafka_conf_destroy(conf)
        raise
    return conf


# ---- BaseExceptions raised inside librdkafka's callbacks ----------------------------------------
# A callback (error, statistics, log, rebalance, the settling of produce_async futures) runs
# inside whichever rd_kafka_poll()/flush()/consume_batch_queue() served it: the owner or poll
# thread, or a caller's thread (a serving produce(), flush()). It must not let an exception into
# C, so it catches everything; ordinary exceptions are dealt with there (logged, reported). A
# KeyboardInterrupt (Ctrl+C on the main thread lands in whatever Python code runs next: often
# such a callback), a SystemExit or another BaseException that is not an Exception must not
# vanish: _hold() keeps it (the first one, per thread) and the code that called librdkafka on that
# thread raises it with _raise_held() once the call returned, as the pure backend's
# confluent-kafka does. Threads with nobody to raise it to (the producer's owner) _drop_held().

cdef extern from *:
    """
    static __thread PyObject *esk_held_ = NULL;  /* owned; touched with the GIL held only */
    static inline PyObject *esk_held(void) { return esk_held_; }
    static inline void esk_set_held(PyObject *exc) { esk_held_ = exc; }
    """
    PyObject *esk_held() noexcept nogil
    void esk_set_held(PyObject *exc) noexcept nogil


cdef inline void _hold(BaseException exc) noexcept:
    """Called (GIL held) from a callback's `except BaseException`: keep what must not vanish."""
    if esk_held() == NULL and not isinstance(exc, Exception):
        Py_INCREF(exc)
        esk_set_held(<PyObject *>exc)


cdef int _raise_held() except -1:
    """Raise what a callback served by this thread's last librdkafka call kept, if anything."""
    cdef PyObject *held = esk_held()
    if held == NULL:
        return 0
    esk_set_held(NULL)
    exc = <object>held
    Py_DECREF(exc)              # the reference esk_held owned; `exc` holds its own
    raise exc


cdef void _drop_held() noexcept nogil:
    """For a thread that has nobody to raise to (the producer's owner): forget it."""
    cdef PyObject *held = esk_held()
    if held != NULL:
        esk_set_held(NULL)
        with gil:
            Py_XDECREF(held)


# Where librdkafka's own log lines go: "<logger>.librdkafka" at DEBUG (like the pure backend).
# Broker outages would otherwise print a line per reconnect; the errors that matter reach the
# application through the client's Health (state, one log line, on_error) or as exceptions.
cdef struct LogSink:
    PyObject *logger            # borrowed from the client object, which outlives its rk
    PyObject *on_warning        # borrowed, or NULL: called as on_warning(facility, text) for
                                # librdkafka's WARNING-and-worse lines (consumers: offset resets)


cdef void _on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf) noexcept with gil:
    # Runs only where the log queue is served (log.queue=true + rd_kafka_set_log_queue(rk, NULL)):
    # on our poll threads, never spontaneously on librdkafka's internal threads.
    cdef LogSink *sink = <LogSink *>rd_kafka_opaque(rk)
    if sink == NULL or sink.logger == NULL:
        return
    try:
        facility = fac.decode("utf-8", "replace")
        text = buf.decode("utf-8", "replace")
        (<object>sink.logger).debug("%s: %s", facility, text)
        if level <= 4 and sink.on_warning != NULL:     # syslog LOG_WARNING and worse
            (<object>sink.on_warning)(facility, text)
    except BaseException as exc:
        _hold(exc)              # logging must never break the client; Ctrl+C must not vanish


cdef int _route_logs(rd_kafka_conf_t *conf) except -1:
    cdef char errstr[ERRSTR_SIZE]
    if rd_kafka_conf_set(conf, b"log.queue", b"true", errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK:
        raise RuntimeError(f"log.queue: {errstr.decode('utf-8', 'replace')}")
    rd_kafka_conf_set_log_cb(conf, _on_log)
    return 0


include "producer.pxi"
include "consumer.pxi"
include "mock.pxi"


# --------------------------------------------------------------------------------------------
# The Backend
# --------------------------------------------------------------------------------------------

class CompiledBackend:
    """eventstream._runtime.backend.Backend over librdkafka's C API."""

    name = "compiled"
    inert = False

    def new_producer(self, spec):
        return Producer(spec)

    def new_consumer(self, spec, listener):
        return Consumer(spec, listener)

    def __repr__(self):
        return f"<eventstream._core backend, librdkafka {LIBRDKAFKA_VERSION}>"


BACKEND = CompiledBackend()
