# The producer: serialize a whole call in one compiled loop, enqueue with rd_kafka_produceva(),
# and wait for this call's delivery reports only.
#
# Threads:
#   * callers of produce()/produce_async()/flush()/close(): any Python thread, GIL released while
#     enqueueing and while waiting;
#   * one native poll thread per producer (pthread, started with the client at the first call):
#     calls rd_kafka_poll(), which runs _on_delivery() WITHOUT the GIL; _on_error() and
#     _on_stats() take the GIL (rare: errors, and one statistics tick a second) to feed the
#     producer's Health. The poll thread takes the GIL otherwise only to resolve asyncio futures
#     (once per poll round, not per event).
# The poll thread never touches the Python Producer object: everything it needs is in the C
# struct ProducerState, which the Producer owns and frees only after joining the thread.
#
# Memory: payloads, keys and headers are copied into librdkafka (RD_KAFKA_MSG_F_COPY), so no
# Python object has to outlive the call that enqueued it. A signal, an exception or a timeout can
# leave a call early at any point without librdkafka pointing into freed memory.
#
# Sending: linger.ms (config.py, 5 ms) lets librdkafka gather a call's events into few requests
# while the caller enqueues them; once a call has enqueued everything, nothing is gained by
# lingering. So every call, once enqueued, counts in ProducerState.flushing and wakes the poll
# thread (rd_kafka_queue_yield on the main queue), and while that count is > 0 the poll thread
# serves with rd_kafka_flush() instead of rd_kafka_poll(): librdkafka then sends whatever lingers
# at once (flush ignores linger.ms while it runs). The callers still wait on their own tracker
# only: flush() waits for every message of the handle, and its return is not what ends a call.
# Delivery reports are thus served by the poll thread (and by callers of flush()/close(), which
# call rd_kafka_flush() themselves); the callbacks touch trackers only through atomics and their
# locks, so more than one serving thread is safe.

from cpython.ref cimport Py_XDECREF

cdef extern from "<string.h>" nogil:
    void *memmem(const void *haystack, size_t haystacklen, const void *needle, size_t needlelen)

cdef enum:
    POLL_SLICE_MS = 100                 # poll thread: longest sleep in rd_kafka_poll()
    WAIT_SLICE_NS = 100_000_000         # callers: longest GIL-free wait between signal checks
    QUEUE_FULL_BACKOFF_NS = 1_000_000   # enqueue: pause while librdkafka's queue is full
    REASON_SIZE = 256
    ID_PREFIX_SIZE = 64
    N_HEADERS = 6
    MAX_CALL_HEADERS = 4                # headers a Telemetry adds to every event of a call

cdef int64_t _NO_DEADLINE = 0x7FFFFFFFFFFFFFFF

cdef CodeSet _in_doubt_codes = _code_set(_errors.IN_DOUBT_CODES)


cdef inline bint _is_in_doubt(int code) noexcept nogil:
    return _in_code_set(&_in_doubt_codes, code)


cdef int64_t _deadline_after(object timeout) except? -1:
    """The esk_now_ns() time `timeout` seconds from now; _NO_DEADLINE for None, and for a
    timeout too large for the clock (float('inf') included) rather than an overflow."""
    cdef double ns
    if timeout is None:
        return _NO_DEADLINE
    ns = max(<double>timeout, 0.0) * 1e9
    if not ns < 1e18:           # ~31 years; also catches inf and nan
        return _NO_DEADLINE
    return esk_now_ns() + <int64_t>ns


cdef struct ProducerState
cdef struct Tracker


# Per-call delivery tracker: the msg_opaque of every message of one produce()/produce_async().
#
# Counts:  `remaining` = messages of the call not yet reported + 1 "guard" held by the enqueuing
#          caller until it has enqueued everything it will enqueue (`enqueued`, written by the
#          caller only). It cannot reach 0 while the call is still enqueueing; whoever takes it
#          to 0 (a delivery report, or the caller dropping the guard in _tracker_hand_over)
#          completes the tracker, exactly once.
# Lifetime (`refs`, atomic; whoever drops the last reference frees it, no GIL needed):
#   1. the caller's, dropped when produce()/produce_async() returns or raises, on every path;
#   2. the completion's: dropped by whoever completes a synchronous call's tracker, or, for
#      produce_async(), by _resolve_completed() once the future was settled (GIL: it also
#      releases the future and the loop, the tracker's only Python objects);
#   3. produce_async() with a timeout only: its _AsyncDeadline's, dropped when the future is done.
# So a caller that gives up (timeout, Ctrl+C) leaves a tracker that stays valid until librdkafka
# has reported every message that points at it.
# One per message of a call, inside the tracker's allocation: the message's opaque. The delivery
# report writes where the message went.
cdef struct Slot:
    Tracker *t
    int32_t partition
    int64_t offset              # RD_KAFKA_OFFSET_INVALID until reported (and after a failure)


cdef struct Tracker:
    int64_t remaining           # atomic
    int64_t failed              # atomic: known not written (rejected, purged, never enqueued)
    int64_t in_doubt            # atomic: may have been written (see errors.IN_DOUBT_CODES)
    int64_t enqueued            # the caller's: messages handed to librdkafka so far
    int64_t total
    int refs                    # atomic
    pthread_mutex_t lock        # guards: done, first_err, first_reason
    pthread_cond_t cond
    int done
    int first_err
    char first_reason[REASON_SIZE]
    # produce_async() only: owned references, released under the GIL by _resolve_completed.
    int is_async
    PyObject *future
    PyObject *loop
    Tracker *next               # link in ProducerState.completed
    ProducerState *state
    uint64_t id_base            # the call's first ce_id sequence number, minus one
    int64_t started_ns          # when the call began (ProducerMetrics.call_seconds)
    Slot *slots                 # `total` of them, right after the struct (one allocation)


cdef struct ProducerState:
    LogSink sink                # first member: rd_kafka_opaque(rk) is read as a LogSink too
    rd_kafka_t *rk              # NULL until the first call (created lazily), and after close
    rd_kafka_topic_t *rkt
    rd_kafka_queue_t *mainq     # rk's main queue: yielded to wake the poll thread
    int flushing                # atomic: calls enqueued and not yet complete (see "Sending")
    int refuse                  # atomic: 0, or the error code new enqueues fail with (closing,
                                # or the producer failed)
    pthread_mutex_t lock        # guards `completed`; never held while taking the GIL
    Tracker *completed          # async trackers fully reported, waiting to be resolved
    int has_completed           # atomic hint for the poll thread
    int stop                    # atomic: the poll thread exits its loop when set
    int thread_started
    pthread_t thread
    int active                  # atomic: calls using rk right now (close() waits for them)
    uint64_t counter            # atomic: ce_id sequence number of the last reserved event
    char id_prefix[ID_PREFIX_SIZE]  # "<producer id>-"
    size_t id_prefix_len
    PyObject *topic             # owned: str, for errors built on the poll thread
    PyObject *logger            # owned: logging.Logger
    PyObject *health            # owned: eventstream._runtime.health.Health
    PyObject *statistics        # owned or NULL: spec.statistics, the raw statistics' consumer
    # ProducerMetrics (atomics: callers and the poll thread count):
    int64_t calls, events, acked, failed_events, in_doubt_events
    Hist call_hist


# Header names and constant values of every message of a producer. The pointers point into
# bytes objects held by the Producer (valid for its lifetime), so the enqueue loop can read them
# without the GIL.
cdef struct HeaderSpec:
    const char *n_ct
    const char *n_spec
    const char *n_id
    const char *n_source
    const char *n_type
    const char *n_time
    ssize_t nlen_ct, nlen_spec, nlen_id, nlen_source, nlen_type, nlen_time
    const char *v_ct
    const char *v_spec
    const char *v_source
    const char *v_type
    ssize_t vlen_ct, vlen_spec, vlen_source, vlen_type


# Headers whose values change per call: ce_time, and what a Telemetry adds (a trace context).
# The pointers point into bytes objects held by the call's _Batch.
cdef struct CallHeaders:
    const char *time
    ssize_t time_len
    int n_extra
    const char *names[MAX_CALL_HEADERS]
    ssize_t name_lens[MAX_CALL_HEADERS]
    const char *values[MAX_CALL_HEADERS]
    ssize_t value_lens[MAX_CALL_HEADERS]


cdef struct OutMsg:
    const char *value
    size_t value_len
    const char *key
    ssize_t key_len             # -1: no key


@cython.final
cdef class _Batch:
    """One call's serialized events: `msgs` points into the bytes objects in `keep`, which this
    object holds; valid while it lives (the call's frame). librdkafka copies what it keeps.
    `call` holds the call's ce_time (formatted once per call) and extra headers."""

    cdef OutMsg *msgs
    cdef Py_ssize_t n
    cdef list keep
    cdef CallHeaders call           # ce_time and extra headers of every event of the call

    def __dealloc__(self):
        free(self.msgs)


# ---- tracker -------------------------------------------------------------------------------

cdef Tracker *_tracker_new(ProducerState *st, int64_t n, bint is_async) except NULL:
    cdef int64_t i
    cdef Tracker *t = <Tracker *>calloc(1, sizeof(Tracker) + n * sizeof(Slot))
    if t == NULL:
        raise MemoryError()
    t.slots = <Slot *>(<char *>t + sizeof(Tracker))
    for i in range(n):
        t.slots[i].t = t
        t.slots[i].offset = RD_KAFKA_OFFSET_INVALID
    t.started_ns = esk_now_ns()
    if pthread_mutex_init(&t.lock, NULL) != 0:
        free(t)
        raise MemoryError()
    if esk_cond_init(&t.cond) != 0:
        pthread_mutex_destroy(&t.lock)
        free(t)
        raise MemoryError()
    t.remaining = n + 1         # + the enqueuing caller's guard
    t.refs = 2                  # the caller's + the completion's
    t.is_async = is_async
    t.total = n
    t.state = st
    return t


cdef void _tracker_release(Tracker *t) noexcept nogil:
    if esk_add_int(&t.refs, -1) == 0:
        pthread_mutex_destroy(&t.lock)
        pthread_cond_destroy(&t.cond)
        free(t)


cdef void _tracker_fail(Tracker *t, int err, const char *reason, int64_t count) noexcept nogil:
    """Count `count` undelivered events (failed or in doubt by `err`); the first error recorded
    is the one reported."""
    if _is_in_doubt(err):
        esk_add_i64(&t.in_doubt, count)
    else:
        esk_add_i64(&t.failed, count)
    pthread_mutex_lock(&t.lock)
    if t.first_err == 0:
        t.first_err = err
        snprintf(t.first_reason, REASON_SIZE, "%s", reason)
    pthread_mutex_unlock(&t.lock)


cdef void _tracker_complete(Tracker *t) noexcept nogil:
    """Every message of the call is accounted for. Consumes the completion reference."""
    cdef ProducerState *st = t.state
    esk_add_int(&st.flushing, -1)       # taken by _tracker_hand_over, before any completion
    if not t.is_async:
        pthread_mutex_lock(&t.lock)
        t.done = 1
        pthread_cond_broadcast(&t.cond)
        pthread_mutex_unlock(&t.lock)
        _tracker_release(t)
        return
    # Settling the future needs the GIL: hand the tracker (and its completion reference) to
    # whoever next runs _resolve_completed(), normally the poll thread right after the
    # rd_kafka_poll() call that got us here.
    pthread_mutex_lock(&st.lock)
    t.next = st.completed
    st.completed = t
    esk_store_int(&st.has_completed, 1)
    pthread_mutex_unlock(&st.lock)
    # If this runs in a delivery report inside rd_kafka_flush() (poll thread), make that flush
    # return now rather than when every other call's messages are reported too, so the future is
    # settled without delay. (Thread-local; harmless anywhere else.)
    rd_kafka_yield(st.rk)


cdef bint _tracker_wait(Tracker *t, int64_t until) noexcept nogil:
    """Wait (GIL released by the caller) until the tracker completes or `until` passes."""
    cdef bint done
    pthread_mutex_lock(&t.lock)
    while not t.done:
        if esk_cond_wait_until(&t.cond, &t.lock, until) != 0:
            break
    done = t.done
    pthread_mutex_unlock(&t.lock)
    return done


cdef void _tracker_hand_over(Tracker *t) noexcept nogil:
    """The caller is done enqueueing (normally, or leaving early): events never enqueued leave the
    count and the guard goes. If that accounts for everything, the caller completes the tracker
    itself; else the poll thread is asked to send what lingers (see "Sending"). Counted in
    `flushing` before the guard goes, so that the completion (which uncounts it) comes after."""
    cdef ProducerState *st = t.state
    esk_add_int(&st.flushing, 1)
    if esk_add_i64(&t.remaining, -(t.total - t.enqueued + 1)) == 0:
        _tracker_complete(t)
    else:
        rd_kafka_queue_yield(st.mainq)


# ---- librdkafka callbacks (run on whichever thread calls rd_kafka_poll/flush) -----------------
# (_on_log, shared with the consumer, is in _core.pyx.)

cdef void _on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) noexcept nogil:
    cdef Slot *slot = <Slot *>msg._private
    cdef Tracker *t
    if slot == NULL:
        return
    t = slot.t
    slot.partition = msg.partition
    if msg.err != RD_KAFKA_RESP_ERR_NO_ERROR:
        # For a producer, msg.payload is the value we sent, not an error string.
        _tracker_fail(t, msg.err, rd_kafka_err2str(msg.err), 1)
    else:
        slot.offset = msg.offset
    if esk_add_i64(&t.remaining, -1) == 0:
        _tracker_complete(t)


cdef void _refuse(ProducerState *st, rd_kafka_t *rk, int code) noexcept nogil:
    """From now on new enqueues fail with `code`, and what is queued fails at once (the purge's
    delivery reports complete the waiting calls)."""
    esk_store_int(&st.refuse, code)
    rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT
                   | RD_KAFKA_PURGE_F_NON_BLOCKING)


cdef void _on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) noexcept with gil:
    # error_cb: served inside rd_kafka_poll/flush. The Health decides (state, log once,
    # on_error); a failure (authentication, fatal) makes the producer refuse and purge.
    cdef ProducerState *st = <ProducerState *>opaque
    cdef char fatal_reason[ERRSTR_SIZE]
    cdef int code = err
    cdef bint fatal = err == RD_KAFKA_RESP_ERR__FATAL
    if fatal:
        fatal_reason[0] = 0
        code = rd_kafka_fatal_error(rk, fatal_reason, sizeof(fatal_reason))
        reason = fatal_reason
    try:
        failure = (<object>st.health).client_error(
            code, _err_name(code), reason.decode("utf-8", "replace"), fatal=fatal
        )
        if failure is not None:
            _refuse(st, rk, code)
    except BaseException:
        pass                    # never let an exception vanish into C


cdef int _on_stats(rd_kafka_t *rk, char *json, size_t json_len, void *opaque) noexcept nogil:
    # statistics.interval.ms: is any broker connection up? ("state":"UP" is how librdkafka's
    # statistics JSON spells a broker that is up; the group's state is lower-case "up".)
    cdef bint up = memmem(json, json_len, b'"state":"UP"', 12) != NULL
    _health_tick(<ProducerState *>opaque, up, json, json_len)
    return 0


cdef void _health_tick(ProducerState *st, bint up, const char *json,
                       size_t json_len) noexcept with gil:
    try:
        (<object>st.health).tick(up)
        if st.statistics != NULL:      # someone wants the statistics themselves
            (<object>st.statistics)(json[:json_len].decode("utf-8", "replace"))
    except BaseException as exc:
        try:
            (<object>st.logger).error("could not use librdkafka's statistics", exc_info=exc)
        except BaseException:
            pass


# ---- work that needs the GIL ------------------------------------------------------------------

def _settle_future(fut, exc, result):
    """Runs on the future's loop (via call_soon_threadsafe)."""
    if fut.done():              # cancelled by the application meanwhile
        return
    if exc is None:
        fut.set_result(result)
    else:
        fut.set_exception(exc)


cdef object _deliveries(ProducerState *st, Tracker *t):
    """Where each event of a completed call went (Deliveries, in call order)."""
    cdef Py_ssize_t i, n = t.total
    cdef array.array partitions = array.clone(_INT32_ARRAY, n, zero=False)
    cdef array.array offsets = array.clone(_INT64_ARRAY, n, zero=False)
    cdef int32_t *p = <int32_t *>partitions.data.as_voidptr
    cdef int64_t *o = <int64_t *>offsets.data.as_voidptr
    for i in range(n):
        p[i] = t.slots[i].partition
        o[i] = t.slots[i].offset
    prefix = st.id_prefix[:st.id_prefix_len].decode()
    return _Deliveries(partitions, offsets, prefix, t.id_base + 1)


cdef void _count_call(ProducerState *st, Tracker *t, int64_t failed, int64_t in_doubt) noexcept:
    """ProducerMetrics: one call of t.total events ended (any thread; atomics)."""
    cdef int64_t ns = esk_now_ns() - t.started_ns
    esk_add_i64(&st.calls, 1)
    esk_add_i64(&st.events, t.total)
    esk_add_i64(&st.acked, t.total - failed - in_doubt)
    esk_add_i64(&st.failed_events, failed)
    esk_add_i64(&st.in_doubt_events, in_doubt)
    esk_add_i64(&st.call_hist.counts[esk_bucket(ns)], 1)
    esk_add_i64(&st.call_hist.sum_ns, ns)


cdef object _fatal_info(rd_kafka_t *rk):
    """(code, reason) of the client's fatal error, or None."""
    cdef char buf[ERRSTR_SIZE]
    cdef int code
    if rk == NULL:
        return None
    buf[0] = 0
    code = rd_kafka_fatal_error(rk, buf, sizeof(buf))
    if code == RD_KAFKA_RESP_ERR_NO_ERROR:
        return None
    return code, buf.decode("utf-8", "replace")


cdef object _producer_failure(ProducerState *st):
    """The producer's failure (Health), learning of a fatal error not yet reported by error_cb
    (a delivery report or produceva can see it first); None if it has not failed."""
    health = <object>st.health
    failure = health.failure
    if failure is None:
        info = _fatal_info(st.rk)
        if info is not None:
            failure = health.client_error(info[0], _err_name(info[0]), info[1], fatal=True)
            _refuse(st, st.rk, info[0])
    return failure


cdef object _tracker_error(ProducerState *st, Tracker *t):
    """The ProduceError for a completed tracker, or None if every event was acknowledged.
    Read only after completion (its fields are final then)."""
    cdef int64_t failed = esk_load_i64(&t.failed)
    cdef int64_t in_doubt = esk_load_i64(&t.in_doubt)
    cdef int code = t.first_err
    if failed + in_doubt == 0:
        return None
    return _errors.produce_error(
        code, _err_name(code), t.first_reason.decode("utf-8", "replace"),
        failed=failed, in_doubt=in_doubt, total=t.total, topic=<object>st.topic,
        cause=_producer_failure(st),
    )


cdef void _resolve_completed(ProducerState *st) noexcept with gil:
    """Settle the futures of the async trackers handed over by _tracker_complete (one GIL
    acquisition for all of them) and drop their completion references. Never raises."""
    cdef Tracker *t
    cdef Tracker *nxt
    cdef bint any_ok = False
    logger = <object>st.logger
    pthread_mutex_lock(&st.lock)
    t = st.completed
    st.completed = NULL
    esk_store_int(&st.has_completed, 0)
    pthread_mutex_unlock(&st.lock)
    while t != NULL:
        nxt = t.next
        try:
            exc = _tracker_error(st, t)
            any_ok = any_ok or exc is None
            if exc is None:
                _count_call(st, t, 0, 0)
            else:
                _count_call(st, t, exc.failed, exc.in_doubt)
            try:
                (<object>t.loop).call_soon_threadsafe(
                    _settle_future, <object>t.future, exc,
                    _deliveries(st, t) if exc is None else None,
                )
            except RuntimeError:
                pass            # the loop is closed: nobody can await the future any more
        except BaseException as e:
            try:
                logger.error("could not resolve a produce_async future", exc_info=e)
            except BaseException:
                pass
        finally:
            exc = None
            Py_XDECREF(t.future)
            Py_XDECREF(t.loop)
            t.future = NULL
            t.loop = NULL
            _tracker_release(t)     # the completion reference
        t = nxt
    if any_ok:
        try:
            (<object>st.health).up()
        except BaseException:
            pass


cdef void *_poll_main(void *arg) noexcept nogil:
    """The native poll thread: serves delivery reports and callbacks until told to stop."""
    cdef ProducerState *st = <ProducerState *>arg
    while not esk_load_int(&st.stop):
        if esk_load_int(&st.flushing) > 0 and rd_kafka_outq_len(st.rk) > 0:
            # Calls are waiting: send what lingers now. Returns when every message of the
            # handle is reported, when a callback yields (an async call completed), or after
            # the slice.
            rd_kafka_flush(st.rk, POLL_SLICE_MS)
        else:
            # Woken early by rd_kafka_queue_yield() when a call has enqueued its events.
            rd_kafka_poll(st.rk, POLL_SLICE_MS)
        if esk_load_int(&st.has_completed):
            _resolve_completed(st)
    return NULL


_live_producers = _weakref.WeakSet()


@_atexit.register
def _stop_poll_threads():
    # A native thread must not try to take the GIL while the interpreter finalizes.
    for p in list(_live_producers):
        (<Producer>p)._stop_thread()


@cython.final
cdef class _AsyncDeadline:
    """The `timeout` of one produce_async() call. produce_async() runs on the future's loop
    thread, and so do the timer and the future's done callback: no lock is needed here.

    Owns one reference to the call's tracker (taken by produce_async(), dropped by _release(),
    at the latest in __dealloc__), so that the timer can read how many events of the call are
    still unacknowledged; `_owner` (the Producer) keeps `_st` alive."""

    cdef Tracker *_t
    cdef ProducerState *_st
    cdef object _owner
    cdef object _future
    cdef object _timer
    cdef object _timeout

    def __cinit__(self):
        self._t = NULL
        self._st = NULL

    def __dealloc__(self):
        self._release()

    cdef void _release(self) noexcept:
        if self._t != NULL:
            _tracker_release(self._t)
            self._t = NULL

    def _expire(self):
        """The timer: fail the future with the same error a blocking produce() raises."""
        cdef int64_t pending
        self._timer = None
        fut = self._future
        if fut is None or fut.done() or self._t == NULL:
            return
        pending = esk_load_i64(&self._t.remaining)
        if pending == 0:
            return      # every event was reported: the result is already on its way to the loop
        fut.set_exception(_errors.produce_timeout_error(
            pending=pending, total=self._t.total, topic=<object>self._st.topic,
            timeout=self._timeout, last_error=(<object>self._st.health).last_error,
        ))

    def _on_done(self, fut):
        """The future's done callback (resolved, failed, timed out or cancelled)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self._future = None
        self._release()


# ---- the Producer --------------------------------------------------------------------------

@cython.final
cdef class Producer:
    """eventstream._runtime.backend.ProducerBackend over librdkafka (see the comments above)."""

    cdef ProducerState *_st
    cdef readonly str topic
    cdef object _event_type
    cdef object _type_name
    cdef object _serialize          # the event class's unbound SerializeToString
    cdef object _key
    cdef object _logger
    cdef object _client_logger      # <logger>.librdkafka: librdkafka's own lines, at DEBUG
    cdef object _health
    cdef object _lifecycle          # threading.Lock: creating the client vs. close()
    cdef dict _properties
    cdef bint _closed
    cdef int _fork_generation       # _fork_generation when made: another value = a forked child
    # Header names and constant values, kept alive here; the C pointers below point into them.
    cdef bytes _h_ct, _h_spec, _h_id, _h_source, _h_type, _h_time
    cdef bytes _v_ct, _v_spec, _v_source, _v_type
    cdef HeaderSpec _hs
    cdef object __weakref__

    def __cinit__(self):
        self._st = NULL

    def __init__(self, spec):
        cdef ProducerState *st
        cdef bytes prefix
        self.topic = spec.topic
        self._event_type = spec.event_type
        self._type_name = spec.type_name
        self._serialize = spec.event_type.SerializeToString
        self._key = spec.key
        self._logger = spec.logger
        self._health = spec.health
        self._lifecycle = _threading.Lock()
        self._fork_generation = _fork_generation
        self._h_ct = _wire.HEADER_CONTENT_TYPE.encode()
        self._h_spec = _wire.HEADER_SPECVERSION.encode()
        self._h_id = _wire.HEADER_ID.encode()
        self._h_source = _wire.HEADER_SOURCE.encode()
        self._h_type = _wire.HEADER_TYPE.encode()
        self._h_time = _wire.HEADER_TIME.encode()
        self._v_ct = bytes(_wire.CONTENT_TYPE)
        self._v_spec = bytes(_wire.SPECVERSION)
        self._v_source = spec.source.encode()
        self._v_type = spec.type_name.encode()
        self._hs.n_ct = self._h_ct
        self._hs.nlen_ct = len(self._h_ct)
        self._hs.n_spec = self._h_spec
        self._hs.nlen_spec = len(self._h_spec)
        self._hs.n_id = self._h_id
        self._hs.nlen_id = len(self._h_id)
        self._hs.n_source = self._h_source
        self._hs.nlen_source = len(self._h_source)
        self._hs.n_type = self._h_type
        self._hs.nlen_type = len(self._h_type)
        self._hs.n_time = self._h_time
        self._hs.nlen_time = len(self._h_time)
        self._hs.v_ct = self._v_ct
        self._hs.vlen_ct = len(self._v_ct)
        self._hs.v_spec = self._v_spec
        self._hs.vlen_spec = len(self._v_spec)
        self._hs.v_source = self._v_source
        self._hs.vlen_source = len(self._v_source)
        self._hs.v_type = self._v_type
        self._hs.vlen_type = len(self._v_type)
        prefix = (_wire.new_producer_id() + "-").encode()
        if len(prefix) >= ID_PREFIX_SIZE:
            raise ValueError("producer id too long")
        st = <ProducerState *>calloc(1, sizeof(ProducerState))
        if st == NULL:
            raise MemoryError()
        if pthread_mutex_init(&st.lock, NULL) != 0:
            free(st)
            raise MemoryError()
        memcpy(st.id_prefix, <const char *>prefix, len(prefix))
        st.id_prefix_len = len(prefix)
        st.topic = <PyObject *>self.topic
        Py_INCREF(self.topic)
        st.logger = <PyObject *>self._logger
        Py_INCREF(self._logger)
        st.health = <PyObject *>self._health
        Py_INCREF(self._health)
        if spec.statistics is not None:
            st.statistics = <PyObject *>spec.statistics
            Py_INCREF(spec.statistics)
        self._client_logger = self._logger.getChild("librdkafka")
        st.sink.logger = <PyObject *>self._client_logger     # borrowed: self outlives rk
        self._properties = dict(spec.properties)
        self._st = st               # from here on __dealloc__ frees it
        # The librdkafka client (threads, connections) is created at the first call.

    cdef int _create_client(self) except -1:
        """Make the handle and start the poll thread. Called under _lifecycle."""
        cdef char errstr[ERRSTR_SIZE]
        cdef rd_kafka_conf_t *conf
        cdef ProducerState *st = self._st
        cdef bytes btopic = self.topic.encode()
        conf = _make_conf(self._properties, "producer")
        rd_kafka_conf_set_dr_msg_cb(conf, _on_delivery)
        rd_kafka_conf_set_error_cb(conf, _on_error)
        rd_kafka_conf_set_stats_cb(conf, _on_stats)
        _route_logs(conf)
        rd_kafka_conf_set_opaque(conf, st)
        rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr))
        if rk == NULL:
            rd_kafka_conf_destroy(conf)     # rd_kafka_new owns conf only on success
            raise _errors.ConfigError("properties", errstr.decode("utf-8", "replace"))
        rd_kafka_set_log_queue(rk, NULL)  # log lines are served by the poll thread
        rkt = rd_kafka_topic_new(rk, btopic, NULL)
        if rkt == NULL:
            with nogil:
                rd_kafka_destroy(rk)
            raise _errors.ConfigError("topic", f"librdkafka rejected topic {self.topic!r}")
        st.mainq = rd_kafka_queue_get_main(rk)
        st.rkt = rkt
        esk_store_int(&st.stop, 0)
        st.rk = rk
        if pthread_create(&st.thread, NULL, _poll_main, st) != 0:
            st.rk = NULL
            st.rkt = NULL
            with nogil:
                rd_kafka_queue_destroy(st.mainq)
                rd_kafka_topic_destroy(rkt)
                rd_kafka_destroy(rk)
            st.mainq = NULL
            raise RuntimeError("could not start the producer poll thread")
        st.thread_started = 1
        _live_producers.add(self)
        return 0

    def __dealloc__(self):
        cdef ProducerState *st = self._st
        cdef Tracker *t
        cdef Tracker *nxt
        cdef int rounds
        if st == NULL:
            return
        if self._fork_generation == _fork_generation and st.rk != NULL:
            # Never closed (calls cannot be in progress: they hold a reference to self). Stop
            # the thread, fail what is queued so that pending produce_async() futures are
            # settled, then destroy.
            self._stop_thread()     # reads self._st: still set
            esk_store_int(&st.refuse, RD_KAFKA_RESP_ERR__DESTROY)
            with nogil:
                rd_kafka_purge(st.rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT)
                rounds = 0
                while rd_kafka_outq_len(st.rk) > 0 and rounds < 50:
                    rd_kafka_poll(st.rk, 10)    # serves the purge reports
                    rounds += 1
            if esk_load_int(&st.has_completed):
                _resolve_completed(st)
            with nogil:
                rd_kafka_queue_destroy(st.mainq)
                rd_kafka_topic_destroy(st.rkt)
                rd_kafka_destroy(st.rk)
        # In a forked child the handle is left alone: destroying it would join threads that
        # exist only in the parent.
        self._st = NULL
        t = st.completed
        while t != NULL:
            nxt = t.next
            Py_XDECREF(t.future)
            Py_XDECREF(t.loop)
            _tracker_release(t)
            t = nxt
        Py_XDECREF(st.topic)
        Py_XDECREF(st.logger)
        Py_XDECREF(st.health)
        Py_XDECREF(st.statistics)
        pthread_mutex_destroy(&st.lock)
        free(st)

    # -- internals --

    cdef int _ensure_alive(self) except -1:
        """The guard before every use of the handle."""
        if self._fork_generation != _fork_generation:
            raise _errors.ClosedError(
                f"the producer of {self.topic!r} was created in the parent of this forked "
                "process; librdkafka clients cannot cross fork(): create a new Topic here"
            )
        if self._closed:
            raise _errors.ClosedError(f"the producer of {self.topic!r} is closed")
        return 0

    cdef int _enter(self, Py_ssize_t n) except -1:
        """Mark a call of `n` events as using rk (close() waits for it), creating the client at
        the first call. Raises ClosedError, or (n > 0) the producer's failure as this call's
        ProduceError."""
        cdef ProducerState *st = self._st
        self._ensure_alive()
        esk_add_int(&st.active, 1)
        try:
            if self._closed:
                raise _errors.ClosedError(f"the producer of {self.topic!r} is closed")
            if st.rk == NULL:
                with self._lifecycle:
                    if self._closed:
                        raise _errors.ClosedError(f"the producer of {self.topic!r} is closed")
                    if st.rk == NULL:
                        self._create_client()
            failure = self._health.failure if n > 0 else None
            if failure is not None:
                raise _errors.produce_error(
                    failure.code, failure.name, str(failure), failed=n, in_doubt=0, total=n,
                    topic=self.topic, cause=failure,
                )
        except BaseException:
            esk_add_int(&st.active, -1)
            raise
        return 0

    cdef void _exit(self) noexcept:
        esk_add_int(&self._st.active, -1)

    cdef void _stop_thread(self) noexcept:
        cdef ProducerState *st = self._st
        if st == NULL or not st.thread_started or self._fork_generation != _fork_generation:
            return
        esk_store_int(&st.stop, 1)
        with nogil:
            pthread_join(st.thread, NULL)
        st.thread_started = 0

    cdef _Batch _prepare(self, list evs, Py_ssize_t n, object headers):
        """Type-check, then serialize values and keys of the whole call, before anything is
        enqueued."""
        cdef Py_ssize_t i, size
        cdef const char *kp
        cdef _Batch batch
        cdef OutMsg *msgs
        etype = self._event_type
        for i in range(n):
            if type(evs[i]) is not etype:
                raise _errors.event_type_error(i, type(evs[i]), etype, self._type_name)
        batch = _Batch.__new__(_Batch)
        batch.keep = []
        stamp = _wire.timestamp()
        batch.keep.append(stamp)
        batch.call.time = stamp
        batch.call.time_len = len(stamp)
        batch.call.n_extra = 0
        for name, value in headers:
            if batch.call.n_extra == MAX_CALL_HEADERS:
                raise ValueError(f"at most {MAX_CALL_HEADERS} telemetry headers per call")
            bname = name.encode()
            bvalue = bytes(value)
            batch.keep.append(bname)
            batch.keep.append(bvalue)
            batch.call.names[batch.call.n_extra] = bname
            batch.call.name_lens[batch.call.n_extra] = len(bname)
            batch.call.values[batch.call.n_extra] = bvalue
            batch.call.value_lens[batch.call.n_extra] = len(bvalue)
            batch.call.n_extra += 1
        batch.msgs = msgs = <OutMsg *>malloc(n * sizeof(OutMsg))
        if msgs == NULL:
            raise MemoryError()
        batch.n = n
        keep = batch.keep
        ser = self._serialize
        keyfn = self._key
        for i in range(n):
            ev = evs[i]
            try:
                data = ser(ev)
            except Exception as exc:
                raise _errors.serialize_error(i, self._type_name, exc) from exc
            if type(data) is not bytes:
                raise _errors.serialize_error(
                    i, self._type_name, TypeError(f"SerializeToString returned {type(data)}")
                )
            keep.append(data)
            msgs[i].value = PyBytes_AS_STRING(data)
            msgs[i].value_len = PyBytes_GET_SIZE(data)
            msgs[i].key = NULL
            msgs[i].key_len = -1
            if keyfn is None:
                continue
            try:
                k = keyfn(ev)
            except Exception as exc:
                raise _errors.key_function_error(i, self._type_name, exc) from exc
            if k is None:
                continue
            if isinstance(k, str):
                try:
                    # UTF-8 cached inside the str object: valid while `keep` holds it.
                    kp = PyUnicode_AsUTF8AndSize(k, &size)
                except UnicodeError as exc:
                    raise _errors.key_function_error(i, self._type_name, exc) from exc
                keep.append(k)
                msgs[i].key = kp
                msgs[i].key_len = size
            elif isinstance(k, bytes):
                keep.append(k)
                msgs[i].key = PyBytes_AS_STRING(k)
                msgs[i].key_len = PyBytes_GET_SIZE(k)
            else:
                raise _errors.key_type_error(i, self._type_name, k)
        return batch

    cdef Py_ssize_t _enqueue(self, OutMsg *msgs, const CallHeaders *call, Tracker *t,
                             uint64_t id_base, int64_t slice_end, int *err_out) noexcept nogil:
        """Enqueue events t.enqueued..total-1, counting each in t.enqueued. Returns t.enqueued;
        *err_out is then 0 (all enqueued), QUEUE_FULL (still full at slice_end: retry after a
        signal check) or the hard error code. Runs without the GIL: `msgs` is kept alive by the
        caller, the header values by self; librdkafka copies what it keeps."""
        cdef ProducerState *st = self._st
        cdef rd_kafka_vu_t vus[6]
        cdef size_t nvus
        cdef rd_kafka_headers_t *hdrs
        cdef rd_kafka_error_t *error
        cdef int code
        cdef char idbuf[ID_PREFIX_SIZE + 24]
        cdef size_t idlen
        cdef Py_ssize_t i
        cdef int x
        cdef HeaderSpec *hs = &self._hs

        err_out[0] = 0
        vus[0].vtype = RD_KAFKA_VTYPE_RKT
        vus[0].u.rkt = st.rkt
        vus[1].vtype = RD_KAFKA_VTYPE_OPAQUE
        vus[2].vtype = RD_KAFKA_VTYPE_MSGFLAGS
        vus[2].u.i = RD_KAFKA_MSG_F_COPY
        vus[3].vtype = RD_KAFKA_VTYPE_VALUE
        vus[4].vtype = RD_KAFKA_VTYPE_HEADERS
        vus[5].vtype = RD_KAFKA_VTYPE_KEY
        while t.enqueued < t.total:
            i = t.enqueued
            code = esk_load_int(&st.refuse)
            if code != 0:
                err_out[0] = code
                return i
            hdrs = rd_kafka_headers_new(N_HEADERS + call.n_extra)
            rd_kafka_header_add(hdrs, hs.n_ct, hs.nlen_ct, hs.v_ct, hs.vlen_ct)
            rd_kafka_header_add(hdrs, hs.n_spec, hs.nlen_spec, hs.v_spec, hs.vlen_spec)
            idlen = esk_format_id(idbuf, st.id_prefix, st.id_prefix_len, id_base + <uint64_t>i + 1)
            rd_kafka_header_add(hdrs, hs.n_id, hs.nlen_id, idbuf, <ssize_t>idlen)
            rd_kafka_header_add(hdrs, hs.n_source, hs.nlen_source, hs.v_source, hs.vlen_source)
            rd_kafka_header_add(hdrs, hs.n_type, hs.nlen_type, hs.v_type, hs.vlen_type)
            rd_kafka_header_add(hdrs, hs.n_time, hs.nlen_time, call.time, call.time_len)
            for x in range(call.n_extra):
                rd_kafka_header_add(hdrs, call.names[x], call.name_lens[x], call.values[x],
                                    call.value_lens[x])
            vus[1].u.ptr = &t.slots[i]
            vus[3].u.mem.ptr = <void *>msgs[i].value
            vus[3].u.mem.size = msgs[i].value_len
            vus[4].u.headers = hdrs
            nvus = 5
            if msgs[i].key_len >= 0:
                vus[5].u.mem.ptr = <void *>msgs[i].key
                vus[5].u.mem.size = <size_t>msgs[i].key_len
                nvus = 6
            while True:
                error = rd_kafka_produceva(st.rk, vus, nvus)
                if error == NULL:
                    break           # the message owns hdrs now
                code = rd_kafka_error_code(error)
                if rd_kafka_error_is_fatal(error):
                    code = RD_KAFKA_RESP_ERR__FATAL
                rd_kafka_error_destroy(error)
                if (code == RD_KAFKA_RESP_ERR__QUEUE_FULL and esk_now_ns() < slice_end
                        and esk_load_int(&st.refuse) == 0):
                    # The poll thread serves delivery reports, which frees room.
                    esk_sleep_ns(QUEUE_FULL_BACKOFF_NS)
                    continue
                rd_kafka_headers_destroy(hdrs)      # still ours after a failed produceva
                err_out[0] = code
                return i
            t.enqueued = i + 1
        return t.enqueued

    cdef int _enqueue_all(self, _Batch batch, Tracker *t, int64_t deadline) except -1:
        """Enqueue the whole call; on a hard error count the rest as failed. Returns 1 if
        `deadline` passed with librdkafka's queue still full (the rest is then neither enqueued
        nor counted: the caller reports a timeout), else 0. Raises KeyboardInterrupt & co. from
        signal checks; t.enqueued is right on every path, so the caller can hand over."""
        cdef int err = 0
        cdef int64_t slice_end
        cdef uint64_t id_base = <uint64_t>esk_fetch_add_u64(&self._st.counter, <uint64_t>t.total)
        t.id_base = id_base
        while True:
            slice_end = min(esk_now_ns() + WAIT_SLICE_NS, deadline)
            with nogil:
                self._enqueue(batch.msgs, &batch.call, t, id_base, slice_end, &err)
            if err == 0:
                return 0
            if err == RD_KAFKA_RESP_ERR__QUEUE_FULL:
                if esk_now_ns() >= deadline:
                    return 1
                PyErr_CheckSignals()
                continue
            # A hard error (message too large, the producer failed or is closing, ...): the
            # rest is not sent.
            if err == RD_KAFKA_RESP_ERR__FATAL:
                _producer_failure(self._st)
            _tracker_fail(t, err, rd_kafka_err2str(err), t.total - t.enqueued)
            t.enqueued = t.total    # accounted for (as failed)
            return 0

    # -- the Backend protocol --

    def produce(self, events, timeout, headers=()):
        """Serialize, enqueue and wait for every event of this call to be acknowledged;
        `headers` go on every event of the call."""
        cdef list evs = events if type(events) is list else list(events)
        cdef Py_ssize_t n = len(evs)
        cdef Tracker *t
        cdef int64_t deadline, now, not_sent
        cdef bint done = False
        cdef int timed_out = 0
        if n == 0:
            return _Deliveries.empty()
        self._ensure_alive()
        batch = self._prepare(evs, n, headers)
        deadline = _deadline_after(timeout)
        self._enter(n)
        t = NULL
        try:
            t = _tracker_new(self._st, n, False)
            try:
                timed_out = self._enqueue_all(batch, t, deadline)
            finally:
                not_sent = t.total - t.enqueued
                _tracker_hand_over(t)
            batch = None
            # Events never enqueued because the deadline passed first must not let the call
            # succeed once the enqueued ones are acknowledged: that is a timeout, reported now.
            while not timed_out:
                now = esk_now_ns()
                with nogil:
                    done = _tracker_wait(t, min(now + WAIT_SLICE_NS, deadline))
                if done or esk_now_ns() >= deadline:
                    break
                PyErr_CheckSignals()
            if done:
                exc = _tracker_error(self._st, t)
                if exc is not None:
                    _count_call(self._st, t, exc.failed, exc.in_doubt)
                    raise exc
                _count_call(self._st, t, 0, 0)
                self._health.up()
                return _deliveries(self._st, t)
            # Timed out: the call's unreported events are in doubt; those never enqueued failed.
            exc = _errors.produce_timeout_error(
                pending=esk_load_i64(&t.remaining), not_sent=not_sent if timed_out else 0,
                total=n, topic=self.topic, timeout=timeout, last_error=self._health.last_error,
            )
            _count_call(self._st, t, exc.failed, exc.in_doubt)
            raise exc
        finally:
            if t != NULL:
                _tracker_release(t)     # the caller's reference
            self._exit()

    def produce_async(self, events, loop, timeout=None, headers=()):
        """Enqueue like produce() and return a future of `loop`, resolved on `loop` when every
        event of the call is acknowledged, or failed with the same errors, including
        produce_timeout_error() when `timeout` passes first. Called on `loop`'s thread."""
        cdef list evs = events if type(events) is list else list(events)
        cdef Py_ssize_t n = len(evs)
        cdef Tracker *t
        cdef int64_t deadline, not_sent
        cdef int timed_out = 0
        cdef _AsyncDeadline expiry
        self._ensure_alive()
        fut = loop.create_future()
        if n == 0:
            fut.set_result(_Deliveries.empty())
            return fut
        batch = self._prepare(evs, n, headers)
        deadline = _deadline_after(timeout)
        self._enter(n)
        t = NULL
        try:
            t = _tracker_new(self._st, n, True)
            t.future = <PyObject *>fut
            Py_INCREF(fut)
            t.loop = <PyObject *>loop
            Py_INCREF(loop)
            try:
                # Without a timeout a full queue empties as messages are delivered or time out
                # (message.timeout.ms); signals are still checked between slices. With one, the
                # loop is blocked here at most until the deadline.
                timed_out = self._enqueue_all(batch, t, deadline)
            finally:
                not_sent = t.total - t.enqueued
                _tracker_hand_over(t)
            if timed_out:
                # As in produce(): the events never enqueued make this a timeout, reported now.
                exc = _errors.produce_timeout_error(
                    pending=esk_load_i64(&t.remaining), not_sent=not_sent, total=n,
                    topic=self.topic, timeout=timeout, last_error=self._health.last_error,
                )
                fut.set_exception(exc)
                exc = None
            elif deadline != _NO_DEADLINE:
                expiry = _AsyncDeadline.__new__(_AsyncDeadline)
                esk_add_int(&t.refs, 1)         # expiry's own, dropped by expiry._release()
                expiry._t = t
                expiry._st = self._st
                expiry._owner = self
                expiry._future = fut
                expiry._timeout = timeout
                expiry._timer = loop.call_later(
                    max(0.0, (deadline - esk_now_ns()) / 1e9), expiry._expire
                )
                fut.add_done_callback(expiry._on_done)
            if esk_load_int(&self._st.has_completed):
                _resolve_completed(self._st)    # completed here (e.g. enqueue failed)
            return fut
        finally:
            if t != NULL:
                _tracker_release(t)     # the caller's reference
            self._exit()

    def flush(self, timeout):
        """Wait up to `timeout` seconds for every outstanding message of this producer; return
        how many are still in flight."""
        self._ensure_alive()
        if self._st.rk == NULL:
            return 0                # nothing was ever produced
        self._enter(0)
        try:
            return self._flush(timeout)
        finally:
            self._exit()

    cdef int _flush(self, object timeout) except -1:
        cdef rd_kafka_t *rk = self._st.rk
        cdef int64_t deadline = _deadline_after(timeout)
        cdef int64_t now
        cdef int slice_ms
        cdef int left
        while True:
            now = esk_now_ns()
            slice_ms = <int>(min(deadline - now, <int64_t>WAIT_SLICE_NS) // 1_000_000)
            if slice_ms < 0:
                slice_ms = 0
            with nogil:
                # Also serves delivery reports on this thread (alongside the poll thread).
                rd_kafka_flush(rk, slice_ms)
                left = rd_kafka_outq_len(rk)
            if esk_load_int(&self._st.has_completed):
                _resolve_completed(self._st)
            if left == 0 or esk_now_ns() >= deadline:
                return left
            PyErr_CheckSignals()

    def close(self, timeout):
        """Flush up to `timeout`, fail what is still outstanding, stop the poll thread and
        destroy the client. Idempotent; safe if nothing was ever produced. In a forked child it
        only marks the producer closed (the handle belongs to the parent)."""
        with self._lifecycle:
            if self._closed:
                return
            self._closed = True     # new calls fail from here on; no client is created now
        if self._fork_generation != _fork_generation or self._st.rk == NULL:
            self._health.closed()
            return
        left = 0
        try:
            left = self._flush(timeout)
        finally:
            self._teardown()
            self._health.closed()
        if left:
            self._logger.warning(
                "producer of %r: close() waited %g s and %d events were still unacknowledged; "
                "they were abandoned: the produce calls waiting for them raised ProduceError "
                "(in doubt: they may have been written)", self.topic, timeout, left,
            )

    cdef void _teardown(self) noexcept:
        cdef ProducerState *st = self._st
        cdef rd_kafka_t *rk = st.rk
        cdef rd_kafka_topic_t *rkt = st.rkt
        # 1. New enqueues fail, what was not delivered within the timeout fails now
        #    (_PURGE_QUEUE/_PURGE_INFLIGHT), so that every waiting produce() returns and every
        #    future is settled.
        # 2. Calls still inside (they hold `active`) finish: their trackers complete as the
        #    purged messages are reported. Purge again in the loop for late enqueues.
        esk_store_int(&st.refuse, RD_KAFKA_RESP_ERR__DESTROY)
        with nogil:
            while True:
                if rd_kafka_outq_len(rk) > 0:
                    rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT)
                    rd_kafka_flush(rk, 100)     # serve the purge reports
                if esk_load_int(&st.active) == 0 and rd_kafka_outq_len(rk) == 0:
                    break
                esk_sleep_ns(5_000_000)
        # 3. Stop the poll thread, settle the last futures, destroy.
        self._stop_thread()
        if esk_load_int(&st.has_completed):
            _resolve_completed(st)
        st.rk = NULL
        st.rkt = NULL
        with nogil:
            rd_kafka_queue_destroy(st.mainq)
            st.mainq = NULL
            rd_kafka_topic_destroy(rkt)
            rd_kafka_destroy(rk)

    @property
    def closed(self):
        return self._closed

    def metrics(self):
        """ProducerMetrics since the producer was made. Any thread; no lock."""
        st = self._st
        return _ProducerMetrics(
            topic=self.topic, calls=esk_load_i64(&st.calls), events=esk_load_i64(&st.events),
            acknowledged=esk_load_i64(&st.acked), failed=esk_load_i64(&st.failed_events),
            in_doubt=esk_load_i64(&st.in_doubt_events), call_seconds=_hist_snapshot(&st.call_hist),
        )

    @property
    def producer_id(self):
        """The "<producer id>" part of this producer's ce_id headers."""
        return self._st.id_prefix[:self._st.id_prefix_len - 1].decode() if self._st else None

    def __repr__(self):
        return f"<eventstream._core.Producer topic={self.topic!r} closed={self._closed}>"
