# The consumer's hot loop over librdkafka (eventstream._runtime.backend.NativeConsumer): poll a
# batch with the GIL released, check headers in C, decode, call the handler, store each offset
# only after its handler returned (at-least-once: enable.auto.offset.store=false; the
# auto-commit, and leaving the group, commit what was stored), move the positions once a batch.
#
# Everything per call or per change is the shared layer's (eventstream._runtime.consuming): it
# owns the poll thread, decides where assigned partitions start, runs the hooks, classifies
# errors and closes. librdkafka's callbacks (rebalance, error, statistics, log) are served on the
# poll thread inside rd_kafka_consume_batch_queue() and call its listener there, with the GIL.
#
# Rebalancing: librdkafka would assign and revoke by itself without a rebalance callback, but on
# that path rd_kafka_consumer_close() ends the membership without a LeaveGroup (seen with 2.16),
# so the callback assigns and unassigns itself (incrementally for COOPERATIVE and KIP-848), at
# the offsets the listener chose.
#
# Ownership: the handle is made, polled, closed and destroyed on the poll thread only (but by
# __dealloc__ after an open() that failed half-way). Other threads read the position table (under
# its lock), the stop flag and handler coordinates (atomics) and the counts (plain reads: a
# snapshot may be a few events behind); they never touch the handle.

cdef enum:
    BATCH_MAX = 500             # messages per round: the first one + drained with timeout 0

# A position-table entry of a partition not assigned to this consumer.
cdef int64_t _NOT_ASSIGNED = INT64_MIN


# What librdkafka's callbacks of one consumer reach through rd_kafka_opaque(): embedded in the
# Consumer object, which outlives its handle (the poll thread holds it while the handle lives).
cdef struct ConsumerState:
    LogSink sink                # first member: rd_kafka_opaque(rk) is read as a LogSink too
    PyObject *owner             # borrowed: the Consumer
    # Guards positions and npositions, nothing else. Held only around plain C reads and writes
    # of the table: never while calling librdkafka or taking the GIL.
    pthread_mutex_t lock
    # Indexed by partition: the next offset to handle (the start offset until a record of the
    # partition was handled), or _NOT_ASSIGNED. Written on the poll thread, read anywhere.
    int64_t *positions
    int32_t npositions          # length of positions (malloc'd; freed by Consumer.__dealloc__)
    int incremental             # group.protocol=consumer (KIP-848): always incremental assign
    # Written by the poll thread, read by other threads (assignment(), close()'s message):
    int64_t dispatch_since_ns   # atomic: when the poll thread last returned from librdkafka to
                                # dispatch a batch; 0 while it is inside librdkafka
    int in_handler              # atomic: a handler call is running for cur_partition/offset
    int32_t cur_partition
    int64_t cur_offset


cdef struct ParsedHeaders:
    # has_*: the header is present; its value may still be NULL (a null header value).
    bint has_type, has_ct, has_source, has_id
    bint type_ok                # no ce_type, or the consumer's type name (compared once, in C)
    bint ct_ok                  # no content-type, or exactly wire.CONTENT_TYPE
    const void *ce_type
    size_t ce_type_len
    const void *content_type
    size_t content_type_len
    const void *source
    size_t source_len
    const void *event_id
    size_t event_id_len


cdef struct HeaderNames:
    const char *type
    const char *ct
    const char *source
    const char *legacy_source
    const char *id
    const char *traceparent
    const char *tracestate
    # The values a record is checked against:
    const char *type_value      # the consumer's ce_type (the protobuf full name)
    size_t type_value_len
    const char *ct_value        # wire.CONTENT_TYPE, the canonical spelling
    size_t ct_value_len


cdef inline bint _is(const void *p, size_t n, const char *want, size_t want_len) noexcept nogil:
    return p != NULL and n == want_len and memcmp(p, want, n) == 0


cdef void _parse_headers(const rd_kafka_message_t *m, ParsedHeaders *h,
                         const HeaderNames *n, bint with_metadata) noexcept nogil:
    """Point h's fields into the message's headers (valid until the message is destroyed) and
    compare ce_type and content-type with what the consumer expects; the source and id only
    when the handler takes metadata. A repeated header counts by its last occurrence
    (wire.py)."""
    cdef rd_kafka_headers_t *hdrs = NULL
    h.has_type = h.has_ct = h.has_source = h.has_id = False
    h.type_ok = h.ct_ok = True
    if rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR or hdrs == NULL:
        return
    h.has_type = rd_kafka_header_get_last(hdrs, n.type, &h.ce_type, &h.ce_type_len) == 0
    if h.has_type:
        h.type_ok = _is(h.ce_type, h.ce_type_len, n.type_value, n.type_value_len)
    h.has_ct = rd_kafka_header_get_last(hdrs, n.ct, &h.content_type, &h.content_type_len) == 0
    if h.has_ct:
        h.ct_ok = _is(h.content_type, h.content_type_len, n.ct_value, n.ct_value_len)
    if not with_metadata:
        return
    h.has_source = rd_kafka_header_get_last(hdrs, n.source, &h.source, &h.source_len) == 0
    if not h.has_source:        # the original Go producer's header
        h.has_source = rd_kafka_header_get_last(
            hdrs, n.legacy_source, &h.source, &h.source_len) == 0
    h.has_id = rd_kafka_header_get_last(hdrs, n.id, &h.event_id, &h.event_id_len) == 0


cdef inline void _drop_headers(rd_kafka_message_t *m) noexcept nogil:
    """Free a handled record's parsed headers now (call only once _parse_headers parsed them).
    Freed on this thread right after use, the seven or so small blocks of one record's headers
    are the ones the next record's parse allocates again (glibc's per-thread cache); left to
    rd_kafka_message_destroy() at the end of the batch, a batch's headers (hundreds of blocks)
    overflow that cache and every allocation of the next batch takes glibc's slow path. Should a
    failure path ask for the headers later, librdkafka parses them again."""
    cdef rd_kafka_headers_t *hdrs = NULL
    if rd_kafka_message_detach_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR and hdrs != NULL:
        rd_kafka_headers_destroy(hdrs)


cdef inline object _header_text(bint present, const void *p, size_t n):
    if not present or p == NULL:
        return None
    return _text(p, n)


cdef inline object _header_bytes(const void *p, size_t n):
    return None if p == NULL else (<const char *>p)[:n]


cdef bint _upb_parser(esk_parser *p, object cls, object bound) except -1:
    """Fill p to call `bound` (cls.FromString) through C pointers, when it is upb's (see
    esk_parser); False: call it as a Python object."""
    for klass in getattr(cls, "__mro__", ()):
        if klass.__module__ == "google._upb._message" and klass.__name__ == "Message":
            return esk_parser_init(p, cls, bound, klass.__dict__.get("FromString"),
                                   klass.__dict__.get("MergeFromString"))
    return False


# ---- callbacks served on the poll thread --------------------------------------------------

cdef void _on_consumer_error(rd_kafka_t *rk, int err, const char *reason,
                             void *opaque) noexcept with gil:
    cdef ConsumerState *st = <ConsumerState *>opaque
    cdef char buf[ERRSTR_SIZE]
    cdef int code = err
    cdef bint fatal = err == RD_KAFKA_RESP_ERR__FATAL
    if st.owner == NULL:
        return
    if fatal:
        buf[0] = 0
        code = rd_kafka_fatal_error(rk, buf, sizeof(buf))
        reason = buf
    try:
        (<Consumer>st.owner)._listener.client_error(
            code, _err_name(code), reason.decode("utf-8", "replace"), fatal
        )
    except BaseException as exc:
        _hold(exc)              # never let an exception into C; poll() raises a SystemExit & co.


cdef int _on_consumer_stats(rd_kafka_t *rk, char *json, size_t json_len,
                            void *opaque) noexcept with gil:
    cdef ConsumerState *st = <ConsumerState *>opaque
    if st.owner != NULL:
        try:
            (<Consumer>st.owner)._listener.statistics(json[:json_len].decode("utf-8", "replace"))
        except BaseException as exc:
            _hold(exc)
    return 0


cdef void _on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                        rd_kafka_topic_partition_list_t *partitions,
                        void *opaque) noexcept with gil:
    # Served inside rd_kafka_consume_batch_queue() on the poll thread.
    cdef ConsumerState *st = <ConsumerState *>opaque
    if st.owner == NULL:
        return
    try:
        (<Consumer>st.owner)._rebalance(rk, err, partitions)
    except BaseException as exc:
        _hold(exc)              # _rebalance reports its own troubles; a hook's SystemExit & co.


# ---- the position table (see ConsumerState) -----------------------------------------------

cdef int _positions_reserve(ConsumerState *st, int32_t partition) noexcept nogil:
    """Make room for `partition` (st.lock held). 0, or -1 if out of memory."""
    cdef int32_t n, i
    cdef int64_t *grown
    if partition < st.npositions:
        return 0
    n = max(partition + 1, 2 * st.npositions, 16)
    grown = <int64_t *>realloc(st.positions, n * sizeof(int64_t))
    if grown == NULL:
        return -1
    for i in range(st.npositions, n):
        grown[i] = _NOT_ASSIGNED
    st.positions = grown
    st.npositions = n
    return 0


cdef void _positions_set(ConsumerState *st, const rd_kafka_topic_partition_list_t *parts,
                         bint replace, bint only_assigned) noexcept nogil:
    """Record `parts` at their offsets; `replace`: they are the whole assignment;
    `only_assigned`: leave partitions not assigned alone."""
    cdef int i
    cdef int32_t p
    pthread_mutex_lock(&st.lock)
    if replace:
        for i in range(st.npositions):
            st.positions[i] = _NOT_ASSIGNED
    for i in range(parts.cnt):
        p = parts.elems[i].partition
        if p < 0 or _positions_reserve(st, p) != 0:
            continue
        if not only_assigned or st.positions[p] != _NOT_ASSIGNED:
            st.positions[p] = parts.elems[i].offset
    pthread_mutex_unlock(&st.lock)


cdef void _positions_revoke(ConsumerState *st, const rd_kafka_topic_partition_list_t *parts
                            ) noexcept nogil:
    """Forget `parts`, or every partition if `parts` is NULL."""
    cdef int i
    cdef int32_t p
    pthread_mutex_lock(&st.lock)
    if parts == NULL:
        for i in range(st.npositions):
            st.positions[i] = _NOT_ASSIGNED
    else:
        for i in range(parts.cnt):
            p = parts.elems[i].partition
            if 0 <= p < st.npositions:
                st.positions[p] = _NOT_ASSIGNED
    pthread_mutex_unlock(&st.lock)


cdef void _finish_batch(ConsumerState *st, rd_kafka_message_t **msgs, ssize_t done) noexcept nogil:
    """The first `done` messages are finished (handled or skipped): store offset + 1 of the last
    of each run of one partition (with its leader epoch), and move those positions, under one
    lock. Storing fails (harmlessly) for a partition revoked meanwhile: its new owner reads the
    events again from the last committed offset."""
    cdef ssize_t i
    cdef rd_kafka_message_t *m
    cdef rd_kafka_error_t *error
    pthread_mutex_lock(&st.lock)
    for i in range(done):
        m = msgs[i]
        if m.err != RD_KAFKA_RESP_ERR_NO_ERROR:
            continue
        if i + 1 < done and msgs[i + 1].err == RD_KAFKA_RESP_ERR_NO_ERROR \
                and msgs[i + 1].partition == m.partition:
            continue            # not the last of its run
        if 0 <= m.partition < st.npositions and st.positions[m.partition] != _NOT_ASSIGNED:
            st.positions[m.partition] = m.offset + 1
    pthread_mutex_unlock(&st.lock)
    for i in range(done):
        m = msgs[i]
        if m.err != RD_KAFKA_RESP_ERR_NO_ERROR:
            continue
        if i + 1 < done and msgs[i + 1].err == RD_KAFKA_RESP_ERR_NO_ERROR \
                and msgs[i + 1].partition == m.partition:
            continue
        error = rd_kafka_offset_store_message(m)
        if error != NULL:
            rd_kafka_error_destroy(error)


cdef rd_kafka_topic_partition_list_t *_partition_list(bytes topic, object partitions,
                                                      object offsets) except NULL:
    """A new list (the caller destroys it) of `topic`'s `partitions`, at `offsets` (a sequence
    parallel to partitions, or one offset for all)."""
    cdef rd_kafka_topic_partition_list_t *out = rd_kafka_topic_partition_list_new(len(partitions))
    cdef rd_kafka_topic_partition_t *tp
    cdef Py_ssize_t i = 0
    if out == NULL:
        raise MemoryError()
    single = isinstance(offsets, int)
    for p in partitions:
        tp = rd_kafka_topic_partition_list_add(out, topic, p)
        tp.offset = offsets if single else offsets[i]
        i += 1
    return out


cdef object _list_error(const rd_kafka_topic_partition_list_t *parts, rd_kafka_resp_err_t code,
                        str what):
    """The BrokerError for a failed request on `parts` (`code`, or the first element's error), or
    None."""
    cdef int i
    if code == RD_KAFKA_RESP_ERR_NO_ERROR:
        for i in range(parts.cnt):
            if parts.elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR:
                code = parts.elems[i].err
                break
    if code == RD_KAFKA_RESP_ERR_NO_ERROR:
        return None
    return _errors.BrokerError(
        f"{what}: {_err_name(code)}: {_err_str(code)}", code=code, name=_err_name(code),
        retriable=_errors.is_retriable(code),
    )


@cython.final
cdef class Consumer:
    """eventstream._runtime.backend.NativeConsumer over librdkafka (see the comments above)."""

    cdef rd_kafka_t *_rk                # see "Ownership" above
    cdef rd_kafka_queue_t *_queue       # the consumer queue (a reference, destroyed with _rk)
    cdef rd_kafka_message_t **_msgs     # one round's messages (BATCH_MAX), poll thread only
    cdef ConsumerState _st              # rd_kafka_opaque(_rk); its lock guards the positions
    cdef readonly str topic
    cdef bytes _btopic
    cdef object _spec
    cdef object _listener
    cdef object _from_string            # the event class's FromString (bound to the class)
    cdef object _event_type             # the event class: _parser borrows it
    cdef esk_parser _parser             # FromString through C pointers (upb), if _parse_c
    cdef bint _parse_c
    cdef bytes _type_name
    cdef object _logger
    cdef object _client_logger
    cdef object _metadata_factory
    cdef object _failures               # failures.Failures: skips, retries, dead letters
    cdef int64_t _handled               # events whose handler returned (poll thread writes)
    cdef bint _timed                    # time handlers and end-to-end latency (metrics=True)
    cdef bint _trace_headers            # spec.trace_headers: metadata carries the trace context
    cdef bint _watch_resumes            # report each partition's first record to the listener
    cdef Hist _handler_hist
    cdef Hist _e2e_hist
    cdef object _warning_hook           # the listener's log_warning (LogSink.on_warning)
    cdef bytes _ct                      # wire.CONTENT_TYPE: compared as bytes first
    cdef bytes _n_type, _n_ct, _n_src, _n_legacy_src, _n_id, _n_tp, _n_ts
    cdef HeaderNames _names             # points into the bytes above
    cdef object _handler
    cdef bint _mode_batch
    cdef bint _with_metadata
    cdef int _stop                      # atomic: set by stop(); read per event
    cdef bint _closing                  # leave() started rd_kafka_consumer_close_queue()
    cdef int _fork_generation

    def __cinit__(self):
        self._rk = NULL
        self._queue = NULL
        self._msgs = NULL
        self._st.positions = NULL
        self._st.npositions = 0
        self._st.owner = NULL
        self._st.sink.logger = NULL
        self._st.sink.on_warning = NULL
        if pthread_mutex_init(&self._st.lock, NULL) != 0:
            raise MemoryError()

    def __init__(self, spec, listener):
        self._spec = spec
        self._listener = listener
        self.topic = spec.topic
        self._btopic = spec.topic.encode()
        self._from_string = spec.event_type.FromString
        self._event_type = spec.event_type
        self._parse_c = _upb_parser(&self._parser, self._event_type, self._from_string)
        self._type_name = spec.type_name.encode()
        self._logger = spec.logger
        self._client_logger = spec.logger.getChild("librdkafka")
        self._metadata_factory = spec.metadata_factory
        self._ct = bytes(_wire.CONTENT_TYPE)
        self._n_type = _wire.HEADER_TYPE.encode()
        self._n_ct = _wire.HEADER_CONTENT_TYPE.encode()
        self._n_src = _wire.HEADER_SOURCE.encode()
        self._n_legacy_src = _wire.HEADER_LEGACY_SOURCE.encode()
        self._n_id = _wire.HEADER_ID.encode()
        self._n_tp = _wire.HEADER_TRACEPARENT.encode()
        self._n_ts = _wire.HEADER_TRACESTATE.encode()
        self._names.type = self._n_type
        self._names.ct = self._n_ct
        self._names.source = self._n_src
        self._names.legacy_source = self._n_legacy_src
        self._names.id = self._n_id
        self._names.traceparent = self._n_tp
        self._names.tracestate = self._n_ts
        self._names.type_value = self._type_name
        self._names.type_value_len = len(self._type_name)
        self._names.ct_value = self._ct
        self._names.ct_value_len = len(self._ct)
        self._fork_generation = _fork_generation
        self._warning_hook = listener.log_warning
        self._timed = bool(spec.timed)
        self._trace_headers = bool(spec.trace_headers)
        self._st.incremental = spec.properties.get("group.protocol", "classic").lower() == "consumer"
        # Borrowed: the handle never outlives self (see "Ownership").
        self._st.sink.logger = <PyObject *>self._client_logger
        self._st.sink.on_warning = <PyObject *>self._warning_hook
        self._st.owner = <PyObject *>self

    def __dealloc__(self):
        # The poll thread destroys the handle before it ends, and holds self until then; this
        # only covers an open() that failed half-way. In a forked child the handle belongs to
        # the parent and is left alone.
        self._st.owner = NULL
        self._st.sink.logger = NULL
        self._st.sink.on_warning = NULL
        if self._fork_generation == _fork_generation:
            self._destroy_handle(False)
        free(self._msgs)
        self._msgs = NULL
        free(self._st.positions)
        self._st.positions = NULL
        self._st.npositions = 0
        pthread_mutex_destroy(&self._st.lock)

    # -- lifetime (poll thread) --

    def open(self, dispatch):
        """Create the client and subscribe (eventstream._runtime.backend.NativeConsumer)."""
        cdef char errstr[ERRSTR_SIZE]
        cdef rd_kafka_conf_t *conf
        cdef rd_kafka_t *rk
        cdef rd_kafka_topic_partition_list_t *topics
        cdef int err
        if dispatch.mode not in ("event", "batch"):
            raise ValueError(f"unknown dispatch mode {dispatch.mode!r}")
        self._handler = dispatch.handler
        self._failures = dispatch.failures
        self._mode_batch = dispatch.mode == "batch"
        self._with_metadata = bool(dispatch.with_metadata)
        self._msgs = <rd_kafka_message_t **>calloc(BATCH_MAX, sizeof(void *))
        if self._msgs == NULL:
            raise MemoryError()
        conf = _make_conf(self._spec.properties, "consumer")
        rd_kafka_conf_set_error_cb(conf, _on_consumer_error)
        rd_kafka_conf_set_rebalance_cb(conf, _on_rebalance)
        rd_kafka_conf_set_stats_cb(conf, _on_consumer_stats)
        _route_logs(conf)
        rd_kafka_conf_set_opaque(conf, &self._st)
        rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr))
        if rk == NULL:
            rd_kafka_conf_destroy(conf)
            raise _errors.ConfigError("properties", errstr.decode("utf-8", "replace"))
        # Errors, logs and rebalance events all arrive on the consumer queue that we poll.
        rd_kafka_poll_set_consumer(rk)
        rd_kafka_set_log_queue(rk, NULL)
        self._queue = rd_kafka_queue_get_consumer(rk)
        self._rk = rk
        topics = rd_kafka_topic_partition_list_new(1)
        rd_kafka_topic_partition_list_add(topics, self._btopic, RD_KAFKA_PARTITION_UA)
        err = rd_kafka_subscribe(rk, topics)
        rd_kafka_topic_partition_list_destroy(topics)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR:
            self._destroy_handle(False)
            raise _errors.client_error(
                err, _err_name(err), _err_str(err),
                what=f"consumer of topic {self.topic!r}: could not subscribe",
            )

    def leave(self, int slice_ms):
        """One step of closing: commit the stored offsets, revoke (the rebalance callback runs),
        leave the group. True once closed."""
        cdef rd_kafka_error_t *error
        cdef ssize_t n, i
        cdef bint closed = False
        if self._rk == NULL:
            return True
        if not self._closing:
            self._closing = True
            with nogil:
                error = rd_kafka_consumer_close_queue(self._rk, self._queue)
            if error != NULL:
                code = rd_kafka_error_code(error)
                reason = rd_kafka_error_string(error).decode("utf-8", "replace")
                rd_kafka_error_destroy(error)
                self._listener.client_error(code, _err_name(code), f"close: {reason}", False)
                return True
        with nogil:
            closed = rd_kafka_consumer_closed(self._rk)
            if not closed:
                # Serves the revoke (commit) and returns unhandled records: dropped.
                n = rd_kafka_consume_batch_queue(self._queue, slice_ms, self._msgs, BATCH_MAX)
                for i in range(max(n, 0)):
                    rd_kafka_message_destroy(self._msgs[i])
                closed = rd_kafka_consumer_closed(self._rk)
        # Leaving goes on whatever a callback raised (the loop that could stop has stopped).
        _drop_held()
        return closed

    def destroy(self, bint left):
        """Destroy the handle (without a LeaveGroup unless `left`). Without a broker librdkafka's
        destroy can wait out the group session: the caller is the poll thread, nobody waits."""
        self._destroy_handle(left)

    cdef void _destroy_handle(self, bint left) noexcept:
        cdef rd_kafka_t *rk = self._rk
        cdef rd_kafka_queue_t *queue = self._queue
        self._rk = NULL
        self._queue = NULL
        _positions_revoke(&self._st, NULL)
        if rk == NULL:
            return
        with nogil:
            if queue != NULL:
                rd_kafka_queue_destroy(queue)
            if left:
                rd_kafka_destroy(rk)
            else:
                rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE)

    # -- any thread --

    def positions(self):
        """{partition: next offset} of the assigned partitions (negative while not known)."""
        cdef int64_t *copy = NULL
        cdef int32_t n = 0
        cdef int32_t i
        with nogil:
            pthread_mutex_lock(&self._st.lock)
            n = self._st.npositions
            if n > 0:
                copy = <int64_t *>malloc(n * sizeof(int64_t))
                if copy != NULL:
                    memcpy(copy, self._st.positions, n * sizeof(int64_t))
            pthread_mutex_unlock(&self._st.lock)
        if n > 0 and copy == NULL:
            raise MemoryError()
        result = {}
        try:
            for i in range(n):
                if copy[i] != _NOT_ASSIGNED:
                    result[i] = copy[i]
        finally:
            free(copy)
        return result

    def stop(self):
        esk_store_int(&self._stop, 1)

    def stopping(self):
        return bool(esk_load_int(&self._stop))

    def handling(self):
        """(partition, offset) of the event whose handler runs now, or None (read racily)."""
        if not esk_load_int(&self._st.in_handler):
            return None
        return self._st.cur_partition, self._st.cur_offset

    def dispatching_since(self):
        cdef int64_t since = esk_load_i64(&self._st.dispatch_since_ns)
        return since / 1e9 if since else 0.0

    def counts(self):
        """(handled, handler Histogram or None, end-to-end Histogram or None), read without a
        lock (each count is exact; they may be a few events apart)."""
        if not self._timed:
            return self._handled, None, None
        return self._handled, _hist_snapshot(&self._handler_hist), _hist_snapshot(&self._e2e_hist)

    @property
    def closed(self):
        return self._rk == NULL

    # -- what the shared layer asks on the poll thread --

    def committed(self, partitions, int timeout_ms):
        cdef rd_kafka_topic_partition_list_t *parts = _partition_list(
            self._btopic, partitions, RD_KAFKA_OFFSET_INVALID)
        cdef rd_kafka_resp_err_t code
        cdef int i
        try:
            with nogil:
                code = rd_kafka_committed(self._rk, parts, timeout_ms)
            error = _list_error(parts, code, "committed offsets")
            if error is not None:
                raise error
            return [parts.elems[i].offset for i in range(parts.cnt)]
        finally:
            rd_kafka_topic_partition_list_destroy(parts)

    def watermarks(self, partitions, int timeout_ms):
        cdef rd_kafka_topic_partition_list_t *parts = NULL
        cdef rd_kafka_resp_err_t code
        cdef int64_t deadline = esk_now_ns() + <int64_t>timeout_ms * 1_000_000
        cdef int i, left_ms
        ends = []
        # A ListOffsets timestamp of -2/-1 asks for the low/high watermark: one request per
        # leader for all partitions.
        for which, what in ((RD_KAFKA_OFFSET_BEGINNING, "low watermarks"),
                            (RD_KAFKA_OFFSET_END, "high watermarks")):
            parts = _partition_list(self._btopic, partitions, which)
            try:
                left_ms = <int>max((deadline - esk_now_ns()) // 1_000_000, 1)
                with nogil:
                    code = rd_kafka_offsets_for_times(self._rk, parts, left_ms)
                error = _list_error(parts, code, what)
                if error is not None:
                    raise error
                ends.append([parts.elems[i].offset for i in range(parts.cnt)])
            finally:
                rd_kafka_topic_partition_list_destroy(parts)
        return ends[0], ends[1]

    def store(self, offsets):
        cdef rd_kafka_topic_partition_list_t *parts = _partition_list(
            self._btopic, list(offsets), list(offsets.values()))
        cdef rd_kafka_resp_err_t code
        try:
            code = rd_kafka_offsets_store(self._rk, parts)
            error = _list_error(parts, code, "offsets not stored")
            if error is not None:
                # _STATE: the partition was revoked meanwhile; its new owner starts where the
                # group's committed offset says.
                self._logger.info("consumer of %r: %s", self.topic, error)
        finally:
            rd_kafka_topic_partition_list_destroy(parts)

    def commit(self, offsets):
        """Commit ``{partition: next offset}`` now (asynchronously), whatever was committed
        before: after a move backwards, librdkafka's auto-commit skips offsets below the last
        one it committed."""
        cdef rd_kafka_topic_partition_list_t *parts = _partition_list(
            self._btopic, list(offsets), list(offsets.values()))
        cdef rd_kafka_resp_err_t code
        try:
            code = rd_kafka_commit(self._rk, parts, 1)
            if code != RD_KAFKA_RESP_ERR_NO_ERROR:
                self._logger.info("consumer of %r: commit: %s", self.topic, _err_str(code))
        finally:
            rd_kafka_topic_partition_list_destroy(parts)

    def seek(self, offsets):
        cdef rd_kafka_topic_partition_list_t *parts = _partition_list(
            self._btopic, list(offsets), list(offsets.values()))
        cdef rd_kafka_error_t *error
        try:
            with nogil:
                error = rd_kafka_seek_partitions(self._rk, parts, 10_000)
            code = RD_KAFKA_RESP_ERR_NO_ERROR
            if error != NULL:
                code = rd_kafka_error_code(error)
                rd_kafka_error_destroy(error)
            # A partition that could not be moved (not assigned, say) has its own error: raised,
            # and the positions table is left as it was (as on the pure backend).
            failure = _list_error(parts, code, "seek")
            if failure is not None:
                raise failure
            _positions_set(&self._st, parts, False, True)
        finally:
            rd_kafka_topic_partition_list_destroy(parts)

    def watch_resumes(self, bint on):
        self._watch_resumes = on

    # -- rebalancing (inside rd_kafka_consume_batch_queue, GIL held) --

    cdef int _rebalance(self, rd_kafka_t *rk, rd_kafka_resp_err_t err,
                        rd_kafka_topic_partition_list_t *partitions) except -1:
        cdef rd_kafka_topic_partition_list_t *target = partitions
        cdef rd_kafka_topic_partition_list_t *resolved = NULL
        cdef rd_kafka_error_t *error = NULL
        cdef rd_kafka_resp_err_t code = RD_KAFKA_RESP_ERR_NO_ERROR
        cdef const char *protocol = rd_kafka_rebalance_protocol(rk)   # may be NULL
        cdef bint cooperative = self._st.incremental or (
            protocol != NULL and strcmp(protocol, "COOPERATIVE") == 0)
        cdef bint lost
        cdef int i
        ids = [partitions.elems[i].partition for i in range(partitions.cnt)]
        listener = self._listener
        if err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
            # `partitions`: the new ones (COOPERATIVE; possibly none) or the whole assignment.
            starts = None
            try:
                if ids:
                    starts = listener.assign(ids)
                if starts is not None:
                    resolved = _partition_list(self._btopic, ids, [starts[p] for p in ids])
                    target = resolved
            except BaseException as exc:   # a bug of ours: still assign, librdkafka decides
                self._logger.error("consumer of %r: resolving start offsets failed", self.topic,
                                   exc_info=exc)
                starts = None
            try:
                with nogil:
                    if cooperative:
                        error = rd_kafka_incremental_assign(rk, target)
                    else:
                        code = rd_kafka_assign(rk, target)
                if error == NULL and code == RD_KAFKA_RESP_ERR_NO_ERROR:
                    _positions_set(&self._st, target, not cooperative, False)
            finally:
                if resolved != NULL:
                    rd_kafka_topic_partition_list_destroy(resolved)
            if error == NULL and code == RD_KAFKA_RESP_ERR_NO_ERROR:
                if ids or not cooperative:
                    listener.assigned(ids, starts)
            else:
                self._rebalance_failed("assign", error, code)
        else:
            # Revoked or lost: the listed partitions (COOPERATIVE) or all of them (EAGER) go,
            # even if the unassign call fails.
            lost = rd_kafka_assignment_lost(rk)
            with nogil:
                if cooperative:
                    error = rd_kafka_incremental_unassign(rk, partitions)
                    _positions_revoke(&self._st, partitions)
                else:
                    code = rd_kafka_assign(rk, NULL)
                    _positions_revoke(&self._st, NULL)
            if error != NULL or code != RD_KAFKA_RESP_ERR_NO_ERROR:
                self._rebalance_failed("unassign", error, code)
            if ids:
                listener.unassigned(ids, lost)
        return 0

    cdef void _rebalance_failed(self, str what, rd_kafka_error_t *error,
                                rd_kafka_resp_err_t code) noexcept:
        if error != NULL:
            code = rd_kafka_error_code(error)
            reason = rd_kafka_error_string(error).decode("utf-8", "replace")
            rd_kafka_error_destroy(error)
        else:
            reason = _err_str(code)
        try:
            self._listener.client_error(code, _err_name(code), f"rebalance: {what}: {reason}",
                                        False)
        except BaseException:
            pass

    # -- the hot loop --

    def poll(self, int wait_ms):
        """One round (eventstream._runtime.backend.NativeConsumer.poll)."""
        cdef rd_kafka_message_t **msgs = self._msgs
        cdef rd_kafka_queue_t *queue = self._queue
        cdef ssize_t n = 0, more, i
        esk_store_i64(&self._st.dispatch_since_ns, 0)
        with nogil:
            n = rd_kafka_consume_batch_queue(queue, wait_ms, msgs, 1)
            if n == 1 and not esk_load_int(&self._stop):
                more = rd_kafka_consume_batch_queue(queue, 0, msgs + 1, BATCH_MAX - 1)
                if more > 0:
                    n += more
        esk_store_i64(&self._st.dispatch_since_ns, esk_now_ns())
        if n <= 0:
            _raise_held()       # what a callback served above kept (a hook's SystemExit, ...)
            return
        try:
            if self._watch_resumes:
                self._report_resumes(msgs, n)
            if self._mode_batch:
                self._dispatch_batch(msgs, n)
            else:
                self._dispatch_events(msgs, n)
        finally:
            with nogil:
                for i in range(n):
                    rd_kafka_message_destroy(msgs[i])
        _raise_held()           # once the batch was handled: its offsets are stored

    cdef int _report_resumes(self, rd_kafka_message_t **msgs, ssize_t n) except -1:
        cdef ssize_t i
        seen = set()
        for i in range(n):
            if msgs[i].err == RD_KAFKA_RESP_ERR_NO_ERROR and msgs[i].partition not in seen:
                seen.add(msgs[i].partition)
                self._listener.resumed(msgs[i].partition, msgs[i].offset)
        return 0

    cdef int _record_error(self, rd_kafka_message_t *m) except -1:
        cdef int code = m.err
        if code == RD_KAFKA_RESP_ERR__PARTITION_EOF:
            return 0
        reason = rd_kafka_message_errstr(m).decode("utf-8", "replace")
        fatal = code == RD_KAFKA_RESP_ERR__FATAL
        if fatal:
            info = _fatal_info(self._rk)       # the cause
            if info is not None:
                code, reason = info
        self._listener.record_error(code, _err_name(code), reason, fatal)
        return 0

    cdef str _topic_of(self, rd_kafka_message_t *m):
        cdef const char *name
        if m.rkt == NULL:
            return self.topic
        name = rd_kafka_topic_name(m.rkt)
        if strcmp(name, <const char *>self._btopic) == 0:
            return self.topic
        return name.decode("utf-8", "replace")

    cdef object _decode(self, rd_kafka_message_t *m, ParsedHeaders *h):
        """The event, or None if the record is skipped (reported to Failures: logged,
        summarized, dead-lettered). Checked in the order the headers are written:
        content-type, then ce_type; then the value."""
        cdef PyObject *event
        if not h.ct_ok:
            # Not the canonical spelling: compare as a media type (case, parameters).
            if h.content_type == NULL or not _wire.is_protobuf(
                    (<const char *>h.content_type)[:h.content_type_len]):
                self._skip(m, "content-type", _header_bytes(h.content_type, h.content_type_len))
                return None
        if not h.type_ok:
            self._skip(m, "type", _header_bytes(h.ce_type, h.ce_type_len))
            return None
        if m.payload == NULL:
            self._skip(m, "tombstone", None)
            return None
        # (Copied: upb reads only bytes, memoryview and bytearray values; a memoryview made per
        # record costs more than the copy, up to at least 4 KB.)
        value = PyBytes_FromStringAndSize(<const char *>m.payload, m.len)
        if self._parse_c:
            event = esk_parse(&self._parser, (), value)
            if event != NULL:
                return esk_steal(event)     # (no try block entered on the way: cheaper)
        try:
            if self._parse_c:
                esk_raise_pending()         # what esk_parse failed with
            return self._from_string(value)
        except Exception as exc:    # any kind: a bad record never stalls a partition
            self._skip(m, "decode", exc)
            return None

    cdef int _skip(self, rd_kafka_message_t *m, str reason, object found) except -1:
        failures = self._failures
        failures.skip(reason, m.partition, m.offset, found,
                      self._raw(m) if failures.wants_raw else None)
        return 0

    cdef object _raw(self, rd_kafka_message_t *m):
        """The record as read, for a dead-letter copy (a failure path only)."""
        cdef rd_kafka_headers_t *hdrs = NULL
        cdef size_t idx = 0
        cdef const char *name
        cdef const void *val
        cdef size_t size
        headers = []
        if rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR and hdrs != NULL:
            while rd_kafka_header_get_all(hdrs, idx, &name, &val, &size) == 0:
                headers.append((name.decode("utf-8", "replace"),
                                None if val == NULL else (<const char *>val)[:size]))
                idx += 1
        return _RawRecord(
            (<const char *>m.payload)[:m.len] if m.payload != NULL else None,
            (<const char *>m.key)[:m.key_len] if m.key != NULL else None,
            headers, m.partition, m.offset,
        )

    cdef inline void _record_e2e(self, rd_kafka_message_t *m) noexcept:
        cdef rd_kafka_timestamp_type_t tstype
        cdef int64_t ts = rd_kafka_message_timestamp(m, &tstype)
        if ts > 0:
            _hist_add(&self._e2e_hist, (esk_realtime_ms() - ts) * 1_000_000)

    cdef object _metadata(self, rd_kafka_message_t *m, ParsedHeaders *h):
        cdef rd_kafka_timestamp_type_t tstype
        cdef int64_t ts = rd_kafka_message_timestamp(m, &tstype)
        cdef rd_kafka_headers_t *hdrs = NULL
        cdef const void *v
        cdef size_t n
        key = (PyBytes_FromStringAndSize(<const char *>m.key, m.key_len)
               if m.key != NULL else None)
        source = _header_text(h.has_source, h.source, h.source_len)
        event_id = _header_text(h.has_id, h.event_id, h.event_id_len)
        topic = self._topic_of(m)
        if not self._trace_headers:
            return self._metadata_factory(topic, m.partition, m.offset, key, ts, source, event_id)
        # TopicConfig.telemetry: the W3C trace context too (last occurrence, as every header).
        traceparent = tracestate = None
        if rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR and hdrs != NULL:
            if rd_kafka_header_get_last(hdrs, self._names.traceparent, &v, &n) == 0:
                traceparent = _header_text(True, v, n)
            if rd_kafka_header_get_last(hdrs, self._names.tracestate, &v, &n) == 0:
                tracestate = _header_text(True, v, n)
        return self._metadata_factory(
            topic, m.partition, m.offset, key, ts, source, event_id, traceparent, tracestate
        )

    cdef inline void _handling(self, rd_kafka_message_t *m) noexcept:
        # For close()'s message only (plain stores, read racily by another thread).
        self._st.cur_partition = m.partition
        self._st.cur_offset = m.offset
        esk_store_int(&self._st.in_handler, 1)

    cdef int _dispatch_events(self, rd_kafka_message_t **msgs, ssize_t n) except -1:
        cdef ssize_t i = 0
        cdef rd_kafka_message_t *m
        cdef ParsedHeaders h
        cdef bint timed = self._timed
        cdef bint with_metadata = self._with_metadata
        cdef int64_t t0 = 0
        # The handler's arguments, borrowed from `event` and `meta` for the call; slot 0 is
        # the callee's to use (PY_VECTORCALL_ARGUMENTS_OFFSET).
        cdef PyObject *args[3]
        cdef PyObject *result
        cdef size_t nargsf = (2 if with_metadata else 1) | PY_VECTORCALL_ARGUMENTS_OFFSET
        handler = self._handler
        failures = self._failures
        meta = None
        try:
            while i < n:
                if esk_load_int(&self._stop):
                    break       # close(): the rest is read again by the next owner
                m = msgs[i]
                if m.err != RD_KAFKA_RESP_ERR_NO_ERROR:
                    self._record_error(m)
                    i += 1
                    continue
                _parse_headers(m, &h, &self._names, with_metadata)
                event = self._decode(m, &h)
                if event is not None:
                    self._handling(m)
                    try:
                        if with_metadata:
                            meta = self._metadata(m, &h)
                        if timed:
                            t0 = esk_now_ns()
                            self._record_e2e(m)
                        error = None
                        # Called directly: an argument tuple is built only for a failure. A try
                        # block is entered only when the call failed (entering one costs).
                        args[1] = <PyObject *>event
                        args[2] = <PyObject *>meta
                        result = PyObject_Vectorcall(handler, &args[1], nargsf, NULL)
                        if result != NULL:
                            _decref(result)
                        else:
                            try:
                                esk_raise_pending()
                            except Exception as exc:
                                error = exc
                        if timed:
                            _hist_add(&self._handler_hist, esk_now_ns() - t0)
                        if error is None:
                            self._handled += 1
                        elif failures.failed(
                                handler, (event, meta) if with_metadata else (event,), error,
                                m.partition, m.offset,
                                self._raw(m) if failures.wants_raw else None):
                            self._handled += 1
                    finally:
                        esk_store_int(&self._st.in_handler, 0)
                _drop_headers(m)
                i += 1
        finally:
            # Only the records whose handler returned (or that were skipped) are finished,
            # even when a BaseException stops the loop half-way.
            _finish_batch(&self._st, msgs, i)
        return 0

    cdef int _dispatch_batch(self, rd_kafka_message_t **msgs, ssize_t n) except -1:
        """A batch handler (the async runner) gets every decoded event of the batch and returns
        the ones that failed after its retries, as (index, exception, attempts)."""
        cdef ssize_t i
        cdef rd_kafka_message_t *m
        cdef ParsedHeaders h
        events = []
        metadatas = []
        where = []                      # the msgs index of each event
        for i in range(n):
            m = msgs[i]
            if m.err != RD_KAFKA_RESP_ERR_NO_ERROR:
                self._record_error(m)
                continue
            _parse_headers(m, &h, &self._names, True)
            event = self._decode(m, &h)
            if event is not None:
                events.append(event)
                metadatas.append(self._metadata(m, &h))
                where.append(i)
            _drop_headers(m)
        if events:
            self._handling(msgs[<ssize_t>where[0]])
            try:
                failed = self._handler(events, metadatas) or ()
            except Exception as exc:
                self._logger.error(
                    "batch handler failed for %d events of %r", len(events), self.topic,
                    exc_info=exc,
                )
                failed = ()
            # A BaseException propagates to the shared loop: nothing of this batch is stored.
            finally:
                esk_store_int(&self._st.in_handler, 0)
            failures = self._failures
            for index, error, attempts in failed:
                m = msgs[<ssize_t>where[index]]
                failures.gave_up(error, m.partition, m.offset, attempts,
                                 self._raw(m) if failures.wants_raw else None)
            self._handled += len(events) - len(failed)
        _finish_batch(&self._st, msgs, n)
        return 0

    def __repr__(self):
        return f"<eventstream._core.Consumer topic={self.topic!r} closed={self._rk == NULL}>"
