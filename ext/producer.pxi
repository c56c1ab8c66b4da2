# The producer: serialize a whole call in one compiled loop, enqueue with rd_kafka_produceva(),
# and wait for this call's delivery reports only.
#
# Threads:
#   * callers of produce()/produce_async()/flush()/close(): any Python thread, GIL released while
#     enqueueing and while waiting;
#   * one native poll thread per producer (pthread, started at the first produce): calls
#     rd_kafka_poll(), which runs _on_delivery() and _on_error() WITHOUT the GIL. It takes the GIL
#     only to resolve asyncio futures (once per poll round, not per event) and to log errors.
# The poll thread never touches the Python Producer object: everything it needs is in the C
# struct ProducerState, which the Producer owns and frees only after joining the thread.
#
# Sending: linger.ms (config.py, 5 ms) lets librdkafka gather a call's events into few requests
# while the caller enqueues them; once a call has enqueued everything, nothing is gained by
# lingering. So every call, once enqueued, counts in ProducerState.flushing and wakes the poll
# thread (rd_kafka_queue_yield on the main queue), and while that count is > 0 the poll thread
# serves with rd_kafka_flush() instead of rd_kafka_poll(): librdkafka then sends whatever lingers
# at once (flush ignores linger.ms while it runs). The callers still wait on their own tracker
# only: flush() waits for every message of the handle, and its return is not what ends a call.
# Delivery reports are thus still served by the poll thread alone (and by callers of
# flush()/close(), which call rd_kafka_flush() themselves); the callbacks touch trackers only
# through atomics and their locks, so more than one serving thread is safe.

from cpython.ref cimport Py_XDECREF

cdef enum:
    POLL_SLICE_MS = 100                 # poll thread: longest sleep in rd_kafka_poll()
    WAIT_SLICE_NS = 100_000_000         # callers: longest GIL-free wait between signal checks
    QUEUE_FULL_BACKOFF_NS = 1_000_000   # enqueue: pause while librdkafka's queue is full
    REASON_SIZE = 256
    ID_PREFIX_SIZE = 64
    N_HEADERS = 5

cdef int64_t _NO_DEADLINE = 0x7FFFFFFFFFFFFFFF


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
#          caller until it has enqueued everything it will enqueue. It therefore cannot reach 0
#          while the call is still enqueueing; whoever takes it to 0 (a delivery report, or the
#          caller dropping the guard) completes the tracker, exactly once.
# Ownership (`refs`, atomic; the last one to drop a reference frees the struct):
#   1. the caller's reference, dropped when produce()/produce_async() returns or raises, on
#      every path (KeyboardInterrupt and timeouts included);
#   2. the completion reference, owned by "the deliveries": dropped by whoever completes the
#      tracker (sync), or moved onto ProducerState.completed and dropped after the future was
#      resolved (async);
#   3. produce_async() with a timeout only: the _AsyncDeadline's reference, so that its timer
#      can read `remaining` after the call returned; dropped when the future is done (or when
#      the _AsyncDeadline is freed, whichever comes first).
# So a caller that gives up (timeout, Ctrl+C) leaves a tracker that stays valid until librdkafka
# has reported every message that points at it.
#
# Payloads are not copied (no RD_KAFKA_MSG_F_COPY): librdkafka points into the serialized bytes
# objects, which `keep` (a list, owned reference) holds until every message of the call has been
# reported. Releasing it needs the GIL, so:
#   * the caller releases it when it leaves after completion (it waited, it holds the GIL);
#   * a caller that leaves before completion marks the tracker `abandoned`; the completion then
#     goes through ProducerState.completed like an async one, and _resolve_completed() (GIL)
#     releases it;
#   * async: _resolve_completed() releases it with the future.
# `done` and `abandoned` are decided under `lock`, so exactly one side releases `keep`.
cdef struct Tracker:
    int64_t remaining           # atomic
    int64_t failed              # atomic: failed deliveries + events never enqueued after a hard error
    int refs                    # atomic
    pthread_mutex_t lock        # guards: done, first_err, first_reason
    pthread_cond_t cond
    int done
    int abandoned               # sync: the caller left before completion (see above)
    int first_err
    char first_reason[REASON_SIZE]
    PyObject *keep              # owned: list of the bytes objects librdkafka points into
    # async calls only (owned references, released under the GIL by _resolve_completed):
    int is_async
    PyObject *future
    PyObject *loop
    int64_t total
    Tracker *next               # link in ProducerState.completed
    ProducerState *state


cdef struct ProducerState:
    LogSink sink                # first member: rd_kafka_opaque(rk) is read as a LogSink too
    rd_kafka_t *rk              # NULL until the first produce (created lazily), and after close
    rd_kafka_topic_t *rkt
    rd_kafka_queue_t *mainq     # rk's main queue: yielded to wake the poll thread
    int flushing                # atomic: calls enqueued and not yet complete (see "Sending")
    pthread_mutex_t lock        # guards: completed, last_err/last_reason, log_msg; never held
                                # while taking the GIL
    Tracker *completed          # async trackers fully reported, waiting to be resolved
    int has_completed           # atomic hint for the poll thread
    int log_pending             # atomic hint: log_msg holds an error to log
    int stop                    # atomic: the poll thread exits its loop when set
    int thread_started
    pthread_t thread
    int active                  # atomic: produce/flush calls using rk right now
    uint64_t counter            # atomic: ce_id sequence number of the last reserved event
    char id_prefix[ID_PREFIX_SIZE]  # "<producer id>-"
    size_t id_prefix_len
    int last_err                # latest error_cb error, kept for ProduceTimeoutError
    char last_reason[ERRSTR_SIZE]
    int log_level_error
    char log_msg[ERRSTR_SIZE]
    PyObject *topic             # owned: str, for errors built on the poll thread
    PyObject *logger            # owned: logging.Logger


# Header names and constant values of every message of a producer. The pointers point into
# bytes objects held by the Producer (valid for its lifetime), so the enqueue loop can read them
# without the GIL.
cdef struct HeaderSpec:
    const char *n_ct
    const char *n_spec
    const char *n_id
    const char *n_source
    const char *n_type
    ssize_t nlen_ct, nlen_spec, nlen_id, nlen_source, nlen_type
    const char *v_ct
    const char *v_spec
    const char *v_source
    const char *v_type
    ssize_t vlen_ct, vlen_spec, vlen_source, vlen_type


cdef struct OutMsg:
    const char *value
    size_t value_len
    const char *key
    ssize_t key_len             # -1: no key


# ---- tracker -------------------------------------------------------------------------------

cdef Tracker *_tracker_new(int64_t n, bint is_async) except NULL:
    cdef Tracker *t = <Tracker *>calloc(1, sizeof(Tracker))
    if t == NULL:
        raise MemoryError()
    if pthread_mutex_init(&t.lock, NULL) != 0 or esk_cond_init(&t.cond) != 0:
        free(t)
        raise MemoryError()
    t.remaining = n + 1         # + the enqueuing caller's guard
    t.refs = 2                  # the caller's + the completion reference
    t.is_async = is_async
    t.total = n
    return t


cdef void _tracker_release(Tracker *t) noexcept nogil:
    if esk_add_int(&t.refs, -1) == 0:
        pthread_mutex_destroy(&t.lock)
        pthread_cond_destroy(&t.cond)
        free(t)


cdef void _tracker_fail(Tracker *t, int err, const char *reason, int64_t count) noexcept nogil:
    """Count `count` failed events; the first error recorded is the one reported."""
    esk_add_i64(&t.failed, count)
    pthread_mutex_lock(&t.lock)
    if t.first_err == 0:
        t.first_err = err
        snprintf(t.first_reason, REASON_SIZE, "%s", reason)
    pthread_mutex_unlock(&t.lock)


cdef void _tracker_complete(Tracker *t) noexcept nogil:
    """Every message of the call is accounted for. Consumes the completion reference."""
    cdef ProducerState *st = t.state
    cdef bint needs_gil = t.is_async
    esk_add_int(&st.flushing, -1)       # taken by _tracker_hand_over, before any completion
    if not t.is_async:
        pthread_mutex_lock(&t.lock)
        t.done = 1
        needs_gil = t.abandoned
        if not needs_gil:
            pthread_cond_broadcast(&t.cond)
        pthread_mutex_unlock(&t.lock)
    if needs_gil:
        # Resolving a future / releasing `keep` needs the GIL: hand the tracker (and its
        # completion reference) to whoever next runs _resolve_completed(), normally the poll
        # thread right after the rd_kafka_poll() call that got us here.
        pthread_mutex_lock(&st.lock)
        t.next = st.completed
        st.completed = t
        esk_store_int(&st.has_completed, 1)
        pthread_mutex_unlock(&st.lock)
        # If this runs in a delivery report inside rd_kafka_flush() (poll thread), make that
        # flush return now rather than when every other call's messages are reported too, so
        # the future is resolved without delay. (Thread-local; harmless anywhere else.)
        rd_kafka_yield(st.rk)
    else:
        _tracker_release(t)     # the waiting caller releases `keep`


cdef void _tracker_leave(Tracker *t) noexcept:
    """The synchronous caller leaves (GIL held): release `keep` if every message was reported,
    else leave that to the completion (abandoned). Drops the caller's reference."""
    cdef bint done
    pthread_mutex_lock(&t.lock)
    done = t.done
    if not done:
        t.abandoned = 1
    pthread_mutex_unlock(&t.lock)
    if done:
        Py_XDECREF(t.keep)
        t.keep = NULL
    _tracker_release(t)


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


cdef void _tracker_hand_over(Tracker *t, int64_t not_enqueued) noexcept nogil:
    """The caller is done enqueueing: events never enqueued leave the count and the guard goes.
    If that accounts for everything, the caller completes the tracker itself; else the poll
    thread is asked to send what lingers (see "Sending"). Counted in `flushing` before the
    guard goes, so that the completion (which uncounts it) comes after."""
    cdef ProducerState *st = t.state
    esk_add_int(&st.flushing, 1)
    if esk_add_i64(&t.remaining, -(not_enqueued + 1)) == 0:
        _tracker_complete(t)
    else:
        rd_kafka_queue_yield(st.mainq)


# ---- librdkafka callbacks (run on whichever thread calls rd_kafka_poll/flush; no GIL) --------
# (_on_log, shared with the consumer, is in _core.pyx.)

cdef void _on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) noexcept nogil:
    cdef Tracker *t = <Tracker *>msg._private
    if t == NULL:
        return
    if msg.err != RD_KAFKA_RESP_ERR_NO_ERROR:
        # For a producer, msg.payload is the value we sent, not an error string.
        _tracker_fail(t, msg.err, rd_kafka_err2str(msg.err), 1)
    if esk_add_i64(&t.remaining, -1) == 0:
        _tracker_complete(t)


cdef void _on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) noexcept nogil:
    cdef ProducerState *st = <ProducerState *>opaque
    cdef char fatal_reason[ERRSTR_SIZE]
    cdef int code = err
    cdef bint connectivity
    if err == RD_KAFKA_RESP_ERR__FATAL:
        fatal_reason[0] = 0
        code = rd_kafka_fatal_error(rk, fatal_reason, sizeof(fatal_reason))
        reason = fatal_reason
    # Brokers going down and coming back is routine: remember the latest such error for
    # ProduceTimeoutError instead of logging every occurrence.
    connectivity = (code == RD_KAFKA_RESP_ERR__TRANSPORT
                    or code == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN
                    or code == RD_KAFKA_RESP_ERR__RESOLVE)
    pthread_mutex_lock(&st.lock)
    st.last_err = code
    snprintf(st.last_reason, ERRSTR_SIZE, "%s: %s", rd_kafka_err2name(code), reason)
    if not connectivity:
        snprintf(st.log_msg, ERRSTR_SIZE, "%s%s: %s",
                 "fatal " if err == RD_KAFKA_RESP_ERR__FATAL else "",
                 rd_kafka_err2name(code), reason)
        st.log_level_error = err == RD_KAFKA_RESP_ERR__FATAL
        esk_store_int(&st.log_pending, 1)
    pthread_mutex_unlock(&st.lock)


# ---- work that needs the GIL ------------------------------------------------------------------

def _settle_future(fut, exc):
    """Runs on the future's loop (via call_soon_threadsafe)."""
    if fut.done():              # cancelled by the application meanwhile
        return
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)


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


cdef object _tracker_error(ProducerState *st, Tracker *t, int64_t total):
    """The ProduceError for a completed tracker, or None if every event was acknowledged.
    Read only after completion (its fields are final then)."""
    cdef int64_t failed = esk_load_i64(&t.failed)
    cdef int code
    if failed == 0:
        return None
    code = t.first_err
    reason = t.first_reason.decode("utf-8", "replace")
    fatal = False
    info = _fatal_info(st.rk) if code == RD_KAFKA_RESP_ERR__FATAL else None
    if info is not None:
        code, reason = info
        fatal = True
    return _errors.produce_error(
        code, _err_name(code), reason, failed=failed, total=total,
        topic=<object>st.topic, fatal=fatal,
    )


cdef void _resolve_completed(ProducerState *st) noexcept with gil:
    """Finish the trackers handed over by _tracker_complete (one GIL acquisition for all of
    them): resolve async futures, release `keep` of async and abandoned sync calls. Then log a
    pending client error. Never raises: failures are logged."""
    cdef Tracker *t
    cdef Tracker *nxt
    cdef char msg[ERRSTR_SIZE]
    cdef bint log_it = False
    cdef bint as_error = False
    logger = <object>st.logger
    pthread_mutex_lock(&st.lock)
    t = st.completed
    st.completed = NULL
    esk_store_int(&st.has_completed, 0)
    if esk_load_int(&st.log_pending):
        memcpy(msg, st.log_msg, ERRSTR_SIZE)
        as_error = st.log_level_error
        esk_store_int(&st.log_pending, 0)
        log_it = True
    pthread_mutex_unlock(&st.lock)
    while t != NULL:
        nxt = t.next
        try:
            if t.is_async:
                fut = <object>t.future
                loop = <object>t.loop
                exc = _tracker_error(st, t, t.total)
                try:
                    loop.call_soon_threadsafe(_settle_future, fut, exc)
                except RuntimeError:
                    pass        # the loop is closed: nobody can await the future any more
        except BaseException as e:
            try:
                logger.error("could not resolve a produce_async future", exc_info=e)
            except BaseException:
                pass
        finally:
            fut = None
            loop = None
            Py_XDECREF(t.future)
            Py_XDECREF(t.loop)
            Py_XDECREF(t.keep)      # every message is reported: nothing points into it now
            t.future = NULL
            t.loop = NULL
            t.keep = NULL
            _tracker_release(t)     # the completion reference
        t = nxt
    if log_it:
        try:
            text = msg.decode("utf-8", "replace")
            if as_error:
                logger.error("producer error: %s", text)
            else:
                logger.warning("producer error: %s", text)
        except BaseException:
            pass


cdef void *_poll_main(void *arg) noexcept nogil:
    """The native poll thread: serves delivery reports and error callbacks until told to stop."""
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
        if esk_load_int(&st.has_completed) or esk_load_int(&st.log_pending):
            _resolve_completed(st)
    return NULL


_live_producers = _weakref.WeakSet()


@_atexit.register
def _stop_poll_threads():
    # A native thread must not try to take the GIL while the interpreter finalizes.
    for p in list(_live_producers):
        (<Producer>p)._stop_thread()


cdef object _state_last_error(ProducerState *st):
    """The client's latest error_cb error ("NAME: reason"), or None."""
    cdef char buf[ERRSTR_SIZE]
    pthread_mutex_lock(&st.lock)
    memcpy(buf, st.last_reason, ERRSTR_SIZE)
    pthread_mutex_unlock(&st.lock)
    text = buf.decode("utf-8", "replace")
    return text or None


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
            timeout=self._timeout, last_error=_state_last_error(self._st),
        ))

    def _on_done(self, fut):
        """The future's done callback (resolved, failed, timed out or cancelled)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self._future = None
        self._release()


# ---- the Producer --------------------------------------------------------------------------

cdef inline str _type_label(object cls):
    return f"{cls.__module__}.{cls.__qualname__}"


@cython.final
cdef class Producer:
    """eventstream.backend.ProducerBackend over librdkafka (see the module docstring)."""

    cdef ProducerState *_st
    cdef readonly str topic
    cdef object _event_type
    cdef object _serialize          # the event class's unbound SerializeToString
    cdef object _key
    cdef object _logger
    cdef object _client_logger      # <logger>.librdkafka: librdkafka's own lines, at DEBUG
    cdef dict _properties
    cdef bint _closed
    # Header names and constant values, kept alive here; the C pointers below point into them.
    cdef bytes _h_ct, _h_spec, _h_id, _h_source, _h_type
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
        self._serialize = spec.event_type.SerializeToString
        self._key = spec.key
        self._logger = spec.logger
        self._h_ct = _wire.HEADER_CONTENT_TYPE.encode()
        self._h_spec = _wire.HEADER_SPECVERSION.encode()
        self._h_id = _wire.HEADER_ID.encode()
        self._h_source = _wire.HEADER_SOURCE.encode()
        self._h_type = _wire.HEADER_TYPE.encode()
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
        self._client_logger = self._logger.getChild("librdkafka")
        st.sink.logger = <PyObject *>self._client_logger     # borrowed: self outlives rk
        self._properties = dict(spec.properties)
        self._st = st               # from here on __dealloc__ frees it
        # The librdkafka client (threads, connections) is created at the first produce.

    cdef int _create_client(self) except -1:
        cdef char errstr[ERRSTR_SIZE]
        cdef rd_kafka_conf_t *conf
        cdef ProducerState *st = self._st
        cdef bytes btopic = self.topic.encode()
        conf = _make_conf(self._properties, "producer")
        rd_kafka_conf_set_dr_msg_cb(conf, _on_delivery)
        rd_kafka_conf_set_error_cb(conf, _on_error)
        _route_logs(conf)
        rd_kafka_conf_set_opaque(conf, st)
        st.rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr))
        if st.rk == NULL:
            rd_kafka_conf_destroy(conf)     # rd_kafka_new owns conf only on success
            raise _errors.ConfigError("properties", errstr.decode("utf-8", "replace"))
        rd_kafka_set_log_queue(st.rk, NULL)  # log lines are served by the poll thread
        st.mainq = rd_kafka_queue_get_main(st.rk)
        st.rkt = rd_kafka_topic_new(st.rk, btopic, NULL)
        if st.rkt == NULL:
            rd_kafka_queue_destroy(st.mainq)
            st.mainq = NULL
            with nogil:
                rd_kafka_destroy(st.rk)
            st.rk = NULL
            raise _errors.ConfigError("topic", f"librdkafka rejected topic {self.topic!r}")
        _live_producers.add(self)
        return 0

    def __dealloc__(self):
        cdef ProducerState *st = self._st
        cdef Tracker *t
        cdef Tracker *nxt
        if st == NULL:
            return
        self._st = NULL
        # Never closed: stop the thread and destroy without flushing (messages still queued
        # are dropped, as with any Kafka client that is not closed).
        if st.thread_started:
            esk_store_int(&st.stop, 1)
            with nogil:
                pthread_join(st.thread, NULL)
            st.thread_started = 0
        with nogil:
            if st.mainq != NULL:
                rd_kafka_queue_destroy(st.mainq)
            if st.rkt != NULL:
                rd_kafka_topic_destroy(st.rkt)
            if st.rk != NULL:
                rd_kafka_destroy(st.rk)
        t = st.completed
        while t != NULL:
            nxt = t.next
            Py_XDECREF(t.future)
            Py_XDECREF(t.loop)
            Py_XDECREF(t.keep)
            _tracker_release(t)
            t = nxt
        Py_XDECREF(st.topic)
        Py_XDECREF(st.logger)
        pthread_mutex_destroy(&st.lock)
        free(st)

    # -- internals --

    cdef int _enter(self, bint start_thread) except -1:
        """Mark a call as using rk (close() waits for it); start the poll thread if asked."""
        if self._closed or self._st == NULL:
            raise _errors.ClosedError(f"producer for topic {self.topic!r} is closed")
        if self._st.rk == NULL:
            self._create_client()
        if start_thread and not self._st.thread_started:
            # Runs with the GIL held and without Python calls: no other thread can race here.
            esk_store_int(&self._st.stop, 0)
            if pthread_create(&self._st.thread, NULL, _poll_main, self._st) != 0:
                raise RuntimeError("could not start the producer poll thread")
            self._st.thread_started = 1
        esk_add_int(&self._st.active, 1)
        return 0

    cdef void _exit(self) noexcept:
        esk_add_int(&self._st.active, -1)

    cdef void _stop_thread(self) noexcept:
        cdef ProducerState *st = self._st
        if st == NULL or not st.thread_started:
            return
        esk_store_int(&st.stop, 1)
        with nogil:
            pthread_join(st.thread, NULL)
        st.thread_started = 0

    cdef OutMsg *_prepare(self, list evs, Py_ssize_t n, list keep) except NULL:
        """Type-check, then serialize values and keys of the whole call, before anything is
        enqueued. `keep` receives the Python objects the returned pointers point into; it must
        outlive the returned array."""
        cdef Py_ssize_t i, size
        cdef OutMsg *msgs
        cdef const char *kp
        etype = self._event_type
        for i in range(n):
            if type(evs[i]) is not etype:
                raise _errors.EventTypeError(
                    f"event {i} is a {_type_label(type(evs[i]))}, expected "
                    f"{_type_label(etype)}; nothing was sent"
                )
        msgs = <OutMsg *>malloc(n * sizeof(OutMsg))
        if msgs == NULL:
            raise MemoryError()
        try:
            ser = self._serialize
            keyfn = self._key
            for i in range(n):
                ev = evs[i]
                try:
                    data = ser(ev)
                except Exception as exc:
                    raise _errors.SerializationError(
                        f"event {i} ({_type_label(etype)}) could not be serialized: {exc}; "
                        "nothing was sent"
                    ) from exc
                if type(data) is not bytes:
                    raise _errors.SerializationError(
                        f"event {i}: SerializeToString returned {type(data).__name__}, not bytes"
                    )
                keep.append(data)
                msgs[i].value = PyBytes_AS_STRING(data)
                msgs[i].value_len = PyBytes_GET_SIZE(data)
                msgs[i].key = NULL
                msgs[i].key_len = -1
                if keyfn is None:
                    continue
                k = keyfn(ev)
                if k is None:
                    continue
                if type(k) is str or isinstance(k, str):
                    try:
                        # UTF-8 cached inside the str object: valid while `keep` holds it.
                        kp = PyUnicode_AsUTF8AndSize(k, &size)
                    except UnicodeError as exc:
                        raise _errors.SerializationError(
                            f"event {i}: key {k!r} is not encodable as UTF-8; nothing was sent"
                        ) from exc
                    keep.append(k)
                    msgs[i].key = kp
                    msgs[i].key_len = size
                elif isinstance(k, bytes):
                    keep.append(k)
                    msgs[i].key = PyBytes_AS_STRING(k)
                    msgs[i].key_len = PyBytes_GET_SIZE(k)
                else:
                    raise _errors.SerializationError(
                        f"event {i}: the key function returned {type(k).__name__} "
                        f"({k!r}); expected str, bytes or None; nothing was sent"
                    )
        except BaseException:
            free(msgs)
            raise
        return msgs

    cdef Py_ssize_t _enqueue(self, OutMsg *msgs, Py_ssize_t start, Py_ssize_t n, Tracker *t,
                             uint64_t id_base, int64_t slice_end, int *err_out) noexcept nogil:
        """Enqueue events start..n-1. Returns the index of the first event not enqueued (n when
        all were); *err_out is then QUEUE_FULL (still full at slice_end: retry after a signal
        check) or the hard error code. Runs without the GIL: the pointers in msgs are kept
        alive by the caller, the header values by self."""
        cdef ProducerState *st = self._st
        cdef rd_kafka_vu_t vus[6]
        cdef size_t nvus
        cdef rd_kafka_headers_t *hdrs
        cdef rd_kafka_error_t *error
        cdef int code
        cdef char idbuf[ID_PREFIX_SIZE + 24]
        cdef size_t idlen
        cdef Py_ssize_t i
        cdef HeaderSpec *hs = &self._hs

        err_out[0] = 0
        vus[0].vtype = RD_KAFKA_VTYPE_RKT
        vus[0].u.rkt = st.rkt
        vus[1].vtype = RD_KAFKA_VTYPE_OPAQUE
        vus[1].u.ptr = t
        # No RD_KAFKA_MSG_F_COPY: librdkafka points into the serialized bytes objects, which
        # the tracker keeps alive until every message is reported (see Tracker). The key and
        # the headers are always copied by librdkafka.
        vus[2].vtype = RD_KAFKA_VTYPE_MSGFLAGS
        vus[2].u.i = 0
        vus[3].vtype = RD_KAFKA_VTYPE_VALUE
        vus[4].vtype = RD_KAFKA_VTYPE_HEADERS
        vus[5].vtype = RD_KAFKA_VTYPE_KEY
        for i in range(start, n):
            hdrs = rd_kafka_headers_new(N_HEADERS)
            rd_kafka_header_add(hdrs, hs.n_ct, hs.nlen_ct, hs.v_ct, hs.vlen_ct)
            rd_kafka_header_add(hdrs, hs.n_spec, hs.nlen_spec, hs.v_spec, hs.vlen_spec)
            idlen = esk_format_id(idbuf, st.id_prefix, st.id_prefix_len, id_base + <uint64_t>i + 1)
            rd_kafka_header_add(hdrs, hs.n_id, hs.nlen_id, idbuf, <ssize_t>idlen)
            rd_kafka_header_add(hdrs, hs.n_source, hs.nlen_source, hs.v_source, hs.vlen_source)
            rd_kafka_header_add(hdrs, hs.n_type, hs.nlen_type, hs.v_type, hs.vlen_type)
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
                rd_kafka_error_destroy(error)
                if code == RD_KAFKA_RESP_ERR__QUEUE_FULL and esk_now_ns() < slice_end:
                    # The poll thread serves delivery reports, which frees room.
                    esk_sleep_ns(QUEUE_FULL_BACKOFF_NS)
                    continue
                rd_kafka_headers_destroy(hdrs)      # still ours after a failed produceva
                err_out[0] = code
                return i
        return n

    cdef Py_ssize_t _enqueue_all(self, OutMsg *msgs, Py_ssize_t n, Tracker *t,
                                 int64_t deadline, bint *timed_out) except -1:
        """Enqueue the whole call; on a hard error count the rest as failed. Returns how many
        were enqueued; *timed_out is set if `deadline` passed with librdkafka's queue still full
        (the rest is then neither enqueued nor counted as failed: the caller reports a timeout).
        Raises KeyboardInterrupt & co. from signal checks; the caller hands the tracker over in
        every case."""
        cdef Py_ssize_t i = 0
        cdef int err = 0
        cdef int64_t slice_end
        cdef uint64_t id_base = <uint64_t>esk_fetch_add_u64(&self._st.counter, <uint64_t>n)
        timed_out[0] = False
        while i < n:
            slice_end = min(esk_now_ns() + WAIT_SLICE_NS, deadline)
            with nogil:
                i = self._enqueue(msgs, i, n, t, id_base, slice_end, &err)
            if i == n:
                break
            if err == RD_KAFKA_RESP_ERR__QUEUE_FULL:
                if esk_now_ns() >= deadline:
                    timed_out[0] = True
                    break
                PyErr_CheckSignals()
                continue
            # A hard error (message too large, fatal client error, ...): the rest is not sent.
            _tracker_fail(t, err, rd_kafka_err2str(err), n - i)
            break
        return i

    # -- the Backend protocol --

    def produce(self, events, timeout):
        """Serialize, enqueue and wait for every event of this call to be acknowledged."""
        cdef list evs = events if type(events) is list else list(events)
        cdef Py_ssize_t n = len(evs)
        cdef Py_ssize_t enqueued = 0
        cdef list keep = []
        cdef OutMsg *msgs
        cdef Tracker *t
        cdef int64_t deadline, now, pending
        cdef bint done = False
        cdef bint timed_out = False
        if n == 0:
            return
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be >= 0 or None")
        if self._closed:
            raise _errors.ClosedError(f"producer for topic {self.topic!r} is closed")
        msgs = self._prepare(evs, n, keep)
        deadline = _deadline_after(timeout)
        try:
            self._enter(True)
        except BaseException:
            free(msgs)
            raise
        t = NULL
        try:
            t = _tracker_new(n, False)
            t.state = self._st
            t.keep = <PyObject *>keep
            Py_INCREF(keep)
            try:
                enqueued = self._enqueue_all(msgs, n, t, deadline, &timed_out)
            finally:
                free(msgs)
                msgs = NULL
                _tracker_hand_over(t, n - enqueued)
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
                exc = _tracker_error(self._st, t, n)
                if exc is not None:
                    raise exc
                return
            # Timed out: the call's unreported events (and those never enqueued) are in doubt.
            pending = esk_load_i64(&t.remaining) + (n - enqueued if timed_out else 0)
            raise _errors.produce_timeout_error(
                pending=pending, total=n, topic=self.topic, timeout=timeout,
                last_error=self._last_error(),
            )
        finally:
            if t != NULL:
                _tracker_leave(t)       # `keep` and the caller's reference
            self._exit()

    def produce_async(self, events, loop, timeout=None):
        """Enqueue like produce() and return a future of `loop`, resolved on `loop` when every
        event of the call is acknowledged, or failed with the same errors, including
        produce_timeout_error() when `timeout` passes first. Called on `loop`'s thread."""
        cdef list evs = events if type(events) is list else list(events)
        cdef Py_ssize_t n = len(evs)
        cdef Py_ssize_t enqueued = 0
        cdef list keep = []
        cdef OutMsg *msgs
        cdef Tracker *t
        cdef int64_t deadline
        cdef bint timed_out = False
        cdef _AsyncDeadline expiry
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be >= 0 or None")
        if self._closed:
            raise _errors.ClosedError(f"producer for topic {self.topic!r} is closed")
        fut = loop.create_future()
        if n == 0:
            fut.set_result(None)
            return fut
        msgs = self._prepare(evs, n, keep)
        deadline = _deadline_after(timeout)
        try:
            self._enter(True)
        except BaseException:
            free(msgs)
            raise
        t = NULL
        try:
            t = _tracker_new(n, True)
            t.state = self._st
            t.future = <PyObject *>fut
            Py_INCREF(fut)
            t.loop = <PyObject *>loop
            Py_INCREF(loop)
            t.keep = <PyObject *>keep
            Py_INCREF(keep)
            try:
                # Without a timeout a full queue empties as messages are delivered or time out
                # (message.timeout.ms); signals are still checked between slices. With one, the
                # loop is blocked here at most until the deadline.
                enqueued = self._enqueue_all(msgs, n, t, deadline, &timed_out)
            finally:
                free(msgs)
                msgs = NULL
                _tracker_hand_over(t, n - enqueued)
            if timed_out:
                # As in produce(): the events never enqueued make this a timeout, reported now.
                fut.set_exception(_errors.produce_timeout_error(
                    pending=esk_load_i64(&t.remaining) + (n - enqueued), total=n,
                    topic=self.topic, timeout=timeout, last_error=self._last_error(),
                ))
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
        cdef int64_t deadline, now
        cdef int left = 0
        cdef int slice_ms
        if self._closed or self._st == NULL or self._st.rk == NULL:
            return 0                # nothing was ever produced (or closed)
        self._enter(False)
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
            if esk_load_int(&self._st.has_completed) or esk_load_int(&self._st.log_pending):
                _resolve_completed(self._st)
            if left == 0 or esk_now_ns() >= deadline:
                return left
            PyErr_CheckSignals()

    def close(self, timeout):
        """Flush up to `timeout`, fail what is still outstanding, stop the poll thread and
        destroy the client. Idempotent; safe if nothing was ever produced."""
        if self._closed:
            return
        self._closed = True         # new calls fail from here on
        if self._st == NULL or self._st.rk == NULL:
            return
        left = 0
        try:
            left = self._flush(timeout)
        finally:
            self._teardown()
        if left:
            self._logger.warning(
                "producer of %r closed with %d events unacknowledged after %g s",
                self.topic, left, timeout,
            )

    cdef void _teardown(self) noexcept:
        cdef ProducerState *st = self._st
        cdef rd_kafka_t *rk = st.rk
        cdef rd_kafka_topic_t *rkt = st.rkt
        # 1. What was not delivered within the timeout fails now (_PURGE_QUEUE/_PURGE_INFLIGHT)
        #    so that every waiting produce() returns and every future is resolved.
        # 2. Calls still inside (they hold `active`) finish: their trackers complete as the
        #    purged messages are reported. Purge again in the loop for late enqueues.
        with nogil:
            while True:
                if rd_kafka_outq_len(rk) > 0:
                    rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT)
                    rd_kafka_flush(rk, 100)     # serve the purge reports
                if esk_load_int(&st.active) == 0 and rd_kafka_outq_len(rk) == 0:
                    break
                esk_sleep_ns(5_000_000)
        # 3. Stop the poll thread, resolve the last futures, destroy.
        self._stop_thread()
        if esk_load_int(&st.has_completed) or esk_load_int(&st.log_pending):
            _resolve_completed(st)
        st.rk = NULL
        st.rkt = NULL
        with nogil:
            rd_kafka_queue_destroy(st.mainq)
            st.mainq = NULL
            rd_kafka_topic_destroy(rkt)
            rd_kafka_destroy(rk)

    cdef object _last_error(self):
        return _state_last_error(self._st)

    @property
    def closed(self):
        return self._closed

    @property
    def producer_id(self):
        """The "<producer id>" part of this producer's ce_id headers."""
        return self._st.id_prefix[:self._st.id_prefix_len - 1].decode() if self._st else None

    def __repr__(self):
        return f"<eventstream._core.Producer topic={self.topic!r} closed={self._closed}>"
