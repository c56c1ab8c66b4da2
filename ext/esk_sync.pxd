# pthreads and the small C helpers of esk_sync.h (atomics, monotonic clock, id formatting,
# a direct call of a built-in method, AddressSanitizer poisoning).

from libc.stdint cimport int64_t, uint64_t
from cpython.ref cimport PyObject


cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_t:
        pass
    ctypedef struct pthread_attr_t:
        pass
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_mutexattr_t:
        pass
    ctypedef struct pthread_cond_t:
        pass
    int pthread_create(pthread_t *thread, const pthread_attr_t *attr,
                       void *(*start_routine)(void *) noexcept nogil, void *arg)
    int pthread_join(pthread_t thread, void **retval)
    int pthread_detach(pthread_t thread)
    int pthread_mutex_init(pthread_mutex_t *mutex, const pthread_mutexattr_t *attr)
    int pthread_mutex_destroy(pthread_mutex_t *mutex)
    int pthread_mutex_lock(pthread_mutex_t *mutex)
    int pthread_mutex_unlock(pthread_mutex_t *mutex)
    int pthread_cond_destroy(pthread_cond_t *cond)
    int pthread_cond_signal(pthread_cond_t *cond)
    int pthread_cond_broadcast(pthread_cond_t *cond)
    int pthread_cond_wait(pthread_cond_t *cond, pthread_mutex_t *mutex)


cdef extern from "esk_sync.h" nogil:
    int64_t esk_add_i64(int64_t *p, int64_t v)
    int64_t esk_fetch_add_u64(uint64_t *p, uint64_t v)
    int64_t esk_load_i64(const int64_t *p)
    void esk_store_i64(int64_t *p, int64_t v)
    int esk_add_int(int *p, int v)
    int esk_load_int(const int *p)
    void esk_store_int(int *p, int v)
    void *esk_load_ptr(void **p)
    void esk_fence()
    int esk_cas_int(int *p, int expected, int desired)
    void esk_name_thread(const char *name)
    int64_t esk_now_ns()
    int64_t esk_realtime_ms()
    enum:
        ESK_BUCKETS
    int esk_bucket(int64_t ns)
    void esk_sleep_ns(int64_t ns)
    int esk_cond_init(pthread_cond_t *cond)
    int esk_cond_wait_until(pthread_cond_t *cond, pthread_mutex_t *mutex, int64_t deadline_ns)
    size_t esk_format_id(char *out, const char *prefix, size_t prefix_len, uint64_t n)
    size_t esk_next_id(char *out, size_t prefix_len, size_t len)
    size_t esk_format_time(char *out)
    void esk_poison(const void *p, size_t n)
    void esk_unpoison(const void *p, size_t n)


cdef extern from "esk_sync.h":
    ctypedef object (*esk_kwmethod)(object self, object args, PyObject *kwargs)
    esk_kwmethod esk_kwmethod_of(object descr, object type)
    ctypedef struct esk_parser:
        pass
    bint esk_parser_init(esk_parser *p, object cls, object bound, object from_string,
                         object merge)
    # A new reference, or NULL with an exception set (raise it with esk_raise_pending()).
    PyObject *esk_parse(const esk_parser *p, object no_args, object data)
    # Returns -1 alone: the caller raises the exception that is already set (PyErr_Occurred),
    # where it can catch it, after a C call that reported it with NULL.
    int esk_raise_pending() except -1
    # Takes over a new reference (not NULL) as an object.
    object esk_steal(PyObject *o)
