/*
 * Small C helpers for _core.pyx that Cython cannot express directly: atomics (GCC/Clang
 * __atomic builtins), CLOCK_MONOTONIC deadlines and condition variables that wait on it, the
 * decimal formatting of event ids and ce_time on the produce hot path, a direct call of a built-in
 * method (SerializeToString), and AddressSanitizer poisoning of memory kept for reuse.
 */
#ifndef ESK_SYNC_H
#define ESK_SYNC_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* pthread_setname_np */
#endif
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static inline int64_t esk_add_i64(int64_t *p, int64_t v) {
    return __atomic_add_fetch(p, v, __ATOMIC_ACQ_REL);
}
static inline int64_t esk_fetch_add_u64(uint64_t *p, uint64_t v) {
    return (int64_t)__atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
static inline int64_t esk_load_i64(const int64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void esk_store_i64(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline int esk_add_int(int *p, int v) { return __atomic_add_fetch(p, v, __ATOMIC_ACQ_REL); }
static inline int esk_load_int(const int *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void esk_store_int(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void *esk_load_ptr(void *const *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
/* A full barrier: a store before it is visible to any thread before a load after it is made
 * (the store-then-load handshakes between callers and an owner thread need it). */
static inline void esk_fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
/* Swap *p from `expected` to `desired`; true if it held `expected`. */
static inline int esk_cas_int(int *p, int expected, int desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

/* Name the calling thread (what `top -H` and /proc show; at most 15 characters). */
static inline void esk_name_thread(const char *name) {
    char buf[16];
    strncpy(buf, name, sizeof(buf) - 1);
    buf[sizeof(buf) - 1] = 0;
    pthread_setname_np(pthread_self(), buf);
}

/* Monotonic time in nanoseconds. */
static inline int64_t esk_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Wall-clock time in milliseconds since the epoch (for Kafka record timestamps). */
static inline int64_t esk_realtime_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* The bucket of a latency histogram that `ns` falls in: its bit length (0 for 0; bucket b holds
 * durations below 2**b ns), capped at ESK_BUCKETS - 1. */
#define ESK_BUCKETS 41
static inline int esk_bucket(int64_t ns) {
    int b;
    if (ns <= 0)
        return 0;
    b = 64 - __builtin_clzll((unsigned long long)ns);
    return b < ESK_BUCKETS ? b : ESK_BUCKETS - 1;
}

static inline void esk_sleep_ns(int64_t ns) {
    struct timespec ts;
    ts.tv_sec = (time_t)(ns / 1000000000LL);
    ts.tv_nsec = (long)(ns % 1000000000LL);
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

/* A condition variable whose timed waits use CLOCK_MONOTONIC (immune to wall-clock jumps). */
static inline int esk_cond_init(pthread_cond_t *cond) {
    pthread_condattr_t attr;
    int rc;
    if ((rc = pthread_condattr_init(&attr)) != 0)
        return rc;
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    rc = pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
    return rc;
}

/* Wait on `cond` (with `mutex` held) until `deadline_ns` (esk_now_ns() clock). */
static inline int esk_cond_wait_until(pthread_cond_t *cond, pthread_mutex_t *mutex,
                                      int64_t deadline_ns) {
    struct timespec ts;
    ts.tv_sec = (time_t)(deadline_ns / 1000000000LL);
    ts.tv_nsec = (long)(deadline_ns % 1000000000LL);
    return pthread_cond_timedwait(cond, mutex, &ts);
}

/* Write `prefix` then the decimal digits of `n` into `out` (room for prefix_len + 20 bytes).
 * Returns the length written (no terminating NUL). */
static inline size_t esk_format_id(char *out, const char *prefix, size_t prefix_len, uint64_t n) {
    char digits[20];
    size_t k = 0, i;
    memcpy(out, prefix, prefix_len);
    do {
        digits[k++] = (char)('0' + (n % 10));
        n /= 10;
    } while (n != 0);
    for (i = 0; i < k; i++)
        out[prefix_len + i] = digits[k - 1 - i];
    return prefix_len + k;
}

/* ce_time: RFC 3339 in UTC with milliseconds, e.g. "2026-12-01T09:30:00.123Z" (what
 * eventstream._runtime.wire.timestamp() writes), of the wall clock now, into `out` (room for 32
 * bytes). Returns the length, or 0 if the time cannot be formatted. (Python's time.strftime()
 * allocates and frees a 1 KiB buffer per call: on the produce path that made glibc consolidate
 * its fastbins and trim the heap, which the next call then faulted back in.) */
static inline size_t esk_format_time(char *out) {
    struct timespec ts;
    struct tm tm;
    time_t seconds;
    int n;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return 0;
    seconds = ts.tv_sec;
    if (gmtime_r(&seconds, &tm) == NULL || tm.tm_year + 1900 < 1000 || tm.tm_year + 1900 > 9999)
        return 0;
    n = snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ts.tv_nsec / 1000000));
    return n > 0 && n < 32 ? (size_t)n : 0;
}

/* The id esk_format_id() wrote into out[0..len) plus one, in place (the digits are the part
 * after prefix_len): cheaper than formatting each of a call's consecutive ids anew. Returns the
 * new length (one more when 99...9 became 100...0). */
static inline size_t esk_next_id(char *out, size_t prefix_len, size_t len) {
    size_t i = len;
    while (i > prefix_len) {
        i--;
        if (out[i] != '9') {
            out[i]++;
            return len;
        }
        out[i] = '0';
    }
    /* all nines: 1 followed by zeros, one digit longer (room: prefix_len + 20) */
    out[prefix_len] = '1';
    out[len] = '0';
    return len + 1;
}

#ifdef Py_PYTHON_H
/* The C function behind `descr` if it is the method descriptor of a built-in type's method taking
 * (self, args, kwargs) (METH_VARARGS | METH_KEYWORDS, as upb's Message.SerializeToString) and
 * instances of `type` may be its self; NULL otherwise (then call it as a Python object). Calling
 * the function itself skips the descriptor's vectorcall wrapper, which would check self's type
 * again and build an argument tuple on every call. */
typedef PyObject *(*esk_kwmethod)(PyObject *self, PyObject *args, PyObject *kwargs);
static inline esk_kwmethod esk_kwmethod_of(PyObject *descr, PyObject *type) {
    PyMethodDescrObject *d;
    if (!PyType_Check(type) || Py_TYPE(descr) != &PyMethodDescr_Type)
        return NULL;
    d = (PyMethodDescrObject *)descr;
    if ((d->d_method->ml_flags & ~METH_COEXIST) != (METH_VARARGS | METH_KEYWORDS))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)type, PyDescr_TYPE(d)))
        return NULL;
    return (esk_kwmethod)(void (*)(void))d->d_method->ml_meth;
}

/* A protobuf class's FromString(data) done as upb's does it, through C pointers found once:
 * cls() (what type.__call__ does: tp_new, then tp_init when it made an instance of cls, unless
 * that is upb's own, a no-op without arguments), then upb's MergeFromString(message, data).
 * Calling FromString as a Python object costs a METH_O call, an argument-less call of the class
 * through the generic call machinery and the method lookups inside them, on every record. */
typedef struct {
    PyTypeObject *cls;          /* borrowed: the consumer keeps the class alive */
    PyCFunction merge;          /* upb's MergeFromString (METH_O); this and noop_init are
                                   functions of upb's extension module, never unloaded */
    initproc noop_init;         /* upb Message's tp_init: without arguments it does nothing
                                   (it only sets fields from keyword arguments), so skipped */
} esk_parser;

/* 1 and `p` filled if `bound` (cls.FromString) is the C function of the classmethod descriptor
 * `from_string`, `merge` a METH_O method descriptor of the same class that cls derives from
 * (the caller found both in upb's Message), and cls is called as type.__call__ calls it; else 0:
 * then call `bound` as a Python object. */
static inline int esk_parser_init(esk_parser *p, PyObject *cls, PyObject *bound,
                                  PyObject *from_string, PyObject *merge) {
    PyMethodDescrObject *fs, *mf;
    p->cls = NULL;
    p->merge = NULL;
    p->noop_init = NULL;
    if (!PyType_Check(cls) || Py_TYPE(cls)->tp_call != PyType_Type.tp_call
        || ((PyTypeObject *)cls)->tp_new == NULL)
        return 0;
    if (Py_TYPE(from_string) != &PyClassMethodDescr_Type || Py_TYPE(merge) != &PyMethodDescr_Type)
        return 0;
    fs = (PyMethodDescrObject *)from_string;
    mf = (PyMethodDescrObject *)merge;
    if (!PyCFunction_Check(bound) || PyCFunction_GET_SELF(bound) != cls
        || ((PyCFunctionObject *)bound)->m_ml != fs->d_method)
        return 0;
    if ((mf->d_method->ml_flags & ~METH_COEXIST) != METH_O || PyDescr_TYPE(mf) != PyDescr_TYPE(fs)
        || !PyType_IsSubtype((PyTypeObject *)cls, PyDescr_TYPE(mf)))
        return 0;
    p->cls = (PyTypeObject *)cls;
    p->merge = mf->d_method->ml_meth;
    p->noop_init = PyDescr_TYPE(mf)->tp_init;
    return 1;
}

/* p->cls.FromString(data) (see esk_parser): a new reference, or NULL with an exception set.
 * `no_args` is an empty tuple. */
static inline PyObject *esk_parse(const esk_parser *p, PyObject *no_args, PyObject *data) {
    PyTypeObject *cls = p->cls;
    PyObject *msg = cls->tp_new(cls, no_args, NULL), *length;
    if (msg == NULL)
        return NULL;
    initproc init = Py_TYPE(msg)->tp_init;
    if (init != NULL && init != p->noop_init && PyObject_TypeCheck(msg, cls)
        && init(msg, no_args, NULL) < 0) {
        Py_DECREF(msg);
        return NULL;
    }
    length = p->merge(msg, data);
    if (length == NULL) {
        Py_DECREF(msg);
        return NULL;
    }
    Py_DECREF(length);
    return msg;
}

static inline int esk_raise_pending(void) { return -1; }
static inline PyObject *esk_steal(PyObject *o) { return o; }
#endif

/* Memory kept for reuse (a producer's spare trackers) is poisoned while nobody may use it, so that
 * under AddressSanitizer a use after release is reported as it would be after free(); no-ops in
 * a normal build. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define esk_poison(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define esk_unpoison(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define esk_poison(p, n) ((void)(p), (void)(n))
#define esk_unpoison(p, n) ((void)(p), (void)(n))
#endif

#endif /* ESK_SYNC_H */
