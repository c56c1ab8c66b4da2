# The consumer: one Python poll thread per consumer that releases the GIL around librdkafka's
# batch consume, checks headers in C, decodes, calls the handler and stores each offset only
# after the handler returned for it (at-least-once: enable.auto.offset.store=false; the
# auto-commit, and rd_kafka_consumer_close() when the poll thread ends, commit what was stored).
#
# Rebalancing: librdkafka would assign and revoke by itself without a rebalance callback (for the
# cooperative protocol too), but on that path rd_kafka_consumer_close() ends the group membership
# without a LeaveGroup (seen with 2.16: "terminating, initiating full unassign" -> "term"), so the
# next consumer of the group waits for the old session to time out. _on_rebalance therefore does
# the (incremental, for COOPERATIVE) assign/unassign itself, as confluent-kafka does; librdkafka
# commits the stored offsets of revoked partitions on unassign.
#
# Start offsets are pinned at assignment (as in the pure backend): before assigning, the callback
# resolves where each new partition starts (the group's committed offset, else the low or high
# watermark as auto.offset.reset says) and assigns at exactly that offset. The consumer reports
# that offset as the partition's position until it handles a record of it (then the next offset
# to handle), so once every position is known (>= 0), an event produced afterwards cannot fall
# before it. rd_kafka_position() is no use for this: it stays invalid until a record is read.
# If resolution fails, a warning is logged and librdkafka resolves the start itself (position
# RD_KAFKA_OFFSET_INVALID until a record is handled).
#
# Lifetime of the librdkafka handle: created by start(), used by the poll thread only, closed and
# destroyed by the poll thread itself when its loop ends (so close() never destroys it under a
# running handler). assignment() may run on any thread: it never touches the handle, it reads
# the position table (ConsumerState) under its lock.

cdef enum:
    FIRST_WAIT_MS = 100         # longest block for the first message: stop requests seen promptly
    BATCH_MAX = 500             # messages per round: the first one + drained with timeout 0
    ERR_UNKNOWN_TOPIC_OR_PART = 3
    RESOLVE_TIMEOUT_MS = 10000  # longest the rebalance callback blocks resolving start offsets

# A position-table entry of a partition not assigned to this consumer.
cdef int64_t _NOT_ASSIGNED = INT64_MIN


# What librdkafka's callbacks of one consumer reach through rd_kafka_opaque(): embedded in the
# Consumer object (which outlives its handle).
cdef struct ConsumerState:
    LogSink sink                # first member: rd_kafka_opaque(rk) is read as a LogSink too
    # Guards positions and npositions, nothing else. Held only around plain C reads and writes
    # of the table: never while calling librdkafka or taking the GIL, so any thread may take it
    # (with or without the GIL).
    pthread_mutex_t lock
    # Indexed by partition: the next offset to handle (the pinned start offset until a record of
    # the partition was handled; RD_KAFKA_OFFSET_INVALID if it could not be resolved), or
    # _NOT_ASSIGNED. Written by the rebalance callback and the poll thread (both on the poll
    # thread), read by assignment() on any thread.
    int64_t *positions
    int32_t npositions          # length of positions (malloc'd; freed by Consumer.__dealloc__)
    int from_beginning          # auto.offset.reset is earliest: unresolved starts at the low end
    int resolve_warning_set     # atomic: resolve_warning holds an unlogged warning
    char resolve_warning[ERRSTR_SIZE]


cdef struct ParsedHeaders:
    # has_*: the header is present; its value may still be NULL (a null header value).
    bint has_type, has_ct, has_source, has_id
    const void *ce_type
    size_t ce_type_len
    const void *content_type
    size_t content_type_len
    const void *source
    size_t source_len
    const void *event_id
    size_t event_id_len


cdef void _parse_headers(const rd_kafka_message_t *m, ParsedHeaders *h, const char *n_type,
                         const char *n_ct, const char *n_src, const char *n_id) noexcept nogil:
    """Point h's fields into the message's headers (valid until the message is destroyed)."""
    cdef rd_kafka_headers_t *hdrs = NULL
    h.has_type = h.has_ct = h.has_source = h.has_id = False
    if rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR or hdrs == NULL:
        return
    h.has_type = rd_kafka_header_get_last(hdrs, n_type, &h.ce_type, &h.ce_type_len) == 0
    h.has_ct = rd_kafka_header_get_last(hdrs, n_ct, &h.content_type, &h.content_type_len) == 0
    h.has_source = rd_kafka_header_get_last(hdrs, n_src, &h.source, &h.source_len) == 0
    h.has_id = rd_kafka_header_get_last(hdrs, n_id, &h.event_id, &h.event_id_len) == 0


cdef inline bint _value_is(const void *p, size_t n, bytes b):
    return p != NULL and <Py_ssize_t>n == len(b) and memcmp(p, <const char *>b, n) == 0


cdef inline object _header_text(bint present, const void *p, size_t n):
    if not present or p == NULL:
        return None
    return _text(p, n)


cdef void _on_consumer_error(rd_kafka_t *rk, int err, const char *reason,
                             void *opaque) noexcept with gil:
    # Served inside rd_kafka_consume_batch_queue()/rd_kafka_consumer_close() on the poll thread.
    cdef LogSink *sink = <LogSink *>opaque
    if sink == NULL or sink.owner == NULL:
        return
    try:
        (<Consumer>sink.owner)._client_error(err, reason.decode("utf-8", "replace"))
    except BaseException:
        pass                    # never let an exception vanish into C: _client_error records


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


cdef void _positions_assign(ConsumerState *st, const rd_kafka_topic_partition_list_t *parts,
                            bint replace) noexcept nogil:
    """Record `parts` (at their offsets) as assigned; `replace`: they are the whole assignment."""
    cdef int i
    cdef int32_t p
    pthread_mutex_lock(&st.lock)
    if replace:
        for i in range(st.npositions):
            st.positions[i] = _NOT_ASSIGNED
    for i in range(parts.cnt):
        p = parts.elems[i].partition
        if p >= 0 and _positions_reserve(st, p) == 0:
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


cdef inline void _positions_handled(ConsumerState *st, int32_t partition,
                                    int64_t next_offset) noexcept nogil:
    """A record of `partition` was handled: `next_offset` is the next one to handle."""
    pthread_mutex_lock(&st.lock)
    if 0 <= partition < st.npositions and st.positions[partition] != _NOT_ASSIGNED:
        st.positions[partition] = next_offset
    pthread_mutex_unlock(&st.lock)


# ---- rebalancing ---------------------------------------------------------------------------

cdef void _resolve_failed(ConsumerState *st, const char *what,
                          const rd_kafka_topic_partition_t *tp, rd_kafka_resp_err_t code
                          ) noexcept nogil:
    if tp != NULL:
        snprintf(st.resolve_warning, ERRSTR_SIZE, "%s of %s[%d]: %s: %s", what, tp.topic,
                 <int>tp.partition, rd_kafka_err2name(code), rd_kafka_err2str(code))
    else:
        snprintf(st.resolve_warning, ERRSTR_SIZE, "%s: %s: %s", what, rd_kafka_err2name(code),
                 rd_kafka_err2str(code))
    esk_store_int(&st.resolve_warning_set, 1)      # logged by the poll thread


cdef rd_kafka_topic_partition_list_t *_resolve_starts(
        rd_kafka_t *rk, ConsumerState *st,
        const rd_kafka_topic_partition_list_t *partitions) noexcept nogil:
    """A new list (ours to destroy) of `partitions`, each at the offset it starts from: the
    group's committed offset, else the low or high watermark (auto.offset.reset earliest or
    latest, asked of the leader, not the cache). NULL if that is not known for every one within
    RESOLVE_TIMEOUT_MS (a warning is recorded): librdkafka then resolves the starts itself."""
    cdef int64_t deadline = esk_now_ns() + <int64_t>RESOLVE_TIMEOUT_MS * 1_000_000
    cdef int64_t low, high
    cdef int64_t left_ms
    cdef int i
    cdef rd_kafka_resp_err_t code
    cdef rd_kafka_topic_partition_t *tp
    cdef rd_kafka_topic_partition_list_t *resolved
    resolved = rd_kafka_topic_partition_list_new(partitions.cnt)
    if resolved == NULL:
        return NULL
    for i in range(partitions.cnt):
        rd_kafka_topic_partition_list_add(resolved, partitions.elems[i].topic,
                                          partitions.elems[i].partition)
    code = rd_kafka_committed(rk, resolved, RESOLVE_TIMEOUT_MS)
    if code != RD_KAFKA_RESP_ERR_NO_ERROR:
        _resolve_failed(st, "committed offsets", NULL, code)
        rd_kafka_topic_partition_list_destroy(resolved)
        return NULL
    for i in range(resolved.cnt):
        tp = &resolved.elems[i]
        if tp.err != RD_KAFKA_RESP_ERR_NO_ERROR:
            _resolve_failed(st, "committed offset", tp, tp.err)
            rd_kafka_topic_partition_list_destroy(resolved)
            return NULL
        if tp.offset >= 0:
            continue            # the group's committed offset wins
        left_ms = (deadline - esk_now_ns()) // 1_000_000
        low = high = RD_KAFKA_OFFSET_INVALID
        code = rd_kafka_query_watermark_offsets(rk, tp.topic, tp.partition, &low, &high,
                                                <int>max(left_ms, 1))
        if code != RD_KAFKA_RESP_ERR_NO_ERROR:
            _resolve_failed(st, "watermark offsets", tp, code)
            rd_kafka_topic_partition_list_destroy(resolved)
            return NULL
        tp.offset = low if st.from_beginning else high
    return resolved


@cython.final
cdef void _on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                        rd_kafka_topic_partition_list_t *partitions,
                        void *opaque) noexcept nogil:
    # Served inside rd_kafka_consume_batch_queue()/rd_kafka_consumer_close() on the poll thread,
    # GIL released. May block up to RESOLVE_TIMEOUT_MS resolving start offsets.
    cdef ConsumerState *st = <ConsumerState *>opaque
    cdef LogSink *sink = &st.sink
    cdef rd_kafka_error_t *error = NULL
    cdef rd_kafka_resp_err_t code = RD_KAFKA_RESP_ERR_NO_ERROR
    cdef rd_kafka_topic_partition_list_t *resolved = NULL
    cdef const rd_kafka_topic_partition_list_t *target = partitions
    cdef const char *what
    cdef bint cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0
    if err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
        # `partitions`: the new ones (COOPERATIVE; possibly none) or the whole assignment.
        if partitions.cnt > 0:
            resolved = _resolve_starts(rk, st, partitions)
        if resolved != NULL:
            target = resolved
        if cooperative:
            what = "incremental assign"
            error = rd_kafka_incremental_assign(rk, target)
        else:
            what = "assign"
            code = rd_kafka_assign(rk, target)
        if error == NULL and code == RD_KAFKA_RESP_ERR_NO_ERROR:
            _positions_assign(st, target, not cooperative)
        if resolved != NULL:
            rd_kafka_topic_partition_list_destroy(resolved)
    else:
        # Revoked or lost: the listed partitions (COOPERATIVE) or all of them (EAGER) go, even
        # if the unassign call fails.
        if cooperative:
            what = "incremental unassign"
            error = rd_kafka_incremental_unassign(rk, partitions)
            _positions_revoke(st, partitions)
        else:
            what = "unassign"
            code = rd_kafka_assign(rk, NULL)
            _positions_revoke(st, NULL)
    if error != NULL:
        code = rd_kafka_error_code(error)
        snprintf(sink.rebalance_error, ERRSTR_SIZE, "%s failed: %s: %s", what,
                 rd_kafka_err2name(code), rd_kafka_error_string(error))
        rd_kafka_error_destroy(error)
    elif code != RD_KAFKA_RESP_ERR_NO_ERROR:
        snprintf(sink.rebalance_error, ERRSTR_SIZE, "%s failed: %s: %s", what,
                 rd_kafka_err2name(code), rd_kafka_err2str(code))
    if code != RD_KAFKA_RESP_ERR_NO_ERROR:
        esk_store_int(&sink.rebalance_error_set, 1)    # logged by the poll thread


cdef class Consumer:
    """eventstream.backend.ConsumerBackend over librdkafka (see the module docstring)."""

    cdef rd_kafka_t *_rk                # see "Lifetime" above
    cdef rd_kafka_queue_t *_queue       # the consumer queue (a reference, destroyed with _rk)
    cdef ConsumerState _st              # rd_kafka_opaque(_rk); its lock guards the positions
    cdef readonly str topic
    cdef bytes _btopic
    cdef object _spec
    cdef object _from_string
    cdef bytes _type_name
    cdef str _type_name_str
    cdef object _logger
    cdef object _client_logger
    cdef object _metadata_factory
    cdef tuple _accepted_ct
    cdef bytes _n_type, _n_ct, _n_src, _n_id
    cdef object _thread                 # threading.Thread running _run()
    cdef object _handler
    cdef bint _mode_batch
    cdef bint _with_metadata
    cdef int _stop                      # atomic: set by close() or a failure; read per event
    cdef bint _started
    cdef bint _closed
    cdef object _failure                # BaseException recorded by the poll thread
    cdef object _lock                   # start()/close() state changes

    def __cinit__(self):
        self._rk = NULL
        self._queue = NULL
        self._st.positions = NULL
        self._st.npositions = 0
        if pthread_mutex_init(&self._st.lock, NULL) != 0:
            raise MemoryError()

    def __init__(self, spec):
        self._spec = spec
        self.topic = spec.topic
        self._btopic = spec.topic.encode()
        self._from_string = spec.event_type.FromString
        self._type_name_str = spec.type_name
        self._type_name = spec.type_name.encode()
        self._logger = spec.logger
        self._client_logger = spec.logger.getChild("librdkafka")
        self._metadata_factory = spec.metadata_factory
        self._accepted_ct = tuple(bytes(ct) for ct in _wire.ACCEPTED_CONTENT_TYPES)
        self._n_type = _wire.HEADER_TYPE.encode()
        self._n_ct = _wire.HEADER_CONTENT_TYPE.encode()
        self._n_src = _wire.HEADER_SOURCE.encode()
        self._n_id = _wire.HEADER_ID.encode()
        self._lock = _threading.Lock()
        self._st.from_beginning = spec.properties.get("auto.offset.reset") in (
            "earliest", "smallest", "beginning",
        )
        # Borrowed: the handle never outlives self (the poll thread holds a reference to self
        # and destroys the handle before it ends).
        self._st.sink.logger = <PyObject *>self._client_logger
        self._st.sink.owner = <PyObject *>self

    def __dealloc__(self):
        # The poll thread references self while it runs, so it has ended by now and destroyed
        # the handle; this only covers a start() that failed half-way.
        if self._queue != NULL:
            rd_kafka_queue_destroy(self._queue)
            self._queue = NULL
        if self._rk != NULL:
            self._st.sink.owner = NULL
            self._st.sink.logger = NULL
            with nogil:
                rd_kafka_destroy(self._rk)
            self._rk = NULL
        free(self._st.positions)
        self._st.positions = NULL
        self._st.npositions = 0
        pthread_mutex_destroy(&self._st.lock)

    def start(self, dispatch):
        """Subscribe and start the poll thread (daemon). Returns at once."""
        with self._lock:
            if self._closed:
                raise _errors.ClosedError(f"consumer of topic {self.topic!r} is closed")
            if self._started:
                raise _errors.ConsumerAlreadyStartedError(
                    f"consumer of topic {self.topic!r} was already started"
                )
            if dispatch.mode not in ("event", "batch"):
                raise ValueError(f"unknown dispatch mode {dispatch.mode!r}")
            self._create_client()
            self._handler = dispatch.handler
            self._mode_batch = dispatch.mode == "batch"
            self._with_metadata = bool(dispatch.with_metadata)
            self._started = True
            self._thread = _threading.Thread(
                target=self._run, name=f"eventstream-consumer-{self.topic}", daemon=True
            )
            self._thread.start()

    cdef int _create_client(self) except -1:
        cdef char errstr[ERRSTR_SIZE]
        cdef rd_kafka_conf_t *conf
        cdef rd_kafka_t *rk
        cdef rd_kafka_topic_partition_list_t *topics
        cdef int err
        conf = _make_conf(self._spec.properties, "consumer")
        rd_kafka_conf_set_error_cb(conf, _on_consumer_error)
        rd_kafka_conf_set_rebalance_cb(conf, _on_rebalance)
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
            self._destroy_client()
            raise _errors.BrokerError(
                f"could not subscribe to topic {self.topic!r}: {_err_name(err)}: {_err_str(err)}",
                code=err, name=_err_name(err), retriable=_errors.is_retriable(err),
            )
        return 0

    cdef int _destroy_client(self) except -1:
        """Commit stored offsets, leave the group, destroy the handle. Called by the poll thread
        when its loop ends (or by start() if subscribing failed)."""
        cdef rd_kafka_t *rk
        cdef rd_kafka_queue_t *queue
        cdef int err = 0
        rk = self._rk
        queue = self._queue
        self._rk = NULL
        self._queue = NULL
        with nogil:
            if rk != NULL:
                if queue != NULL:
                    rd_kafka_queue_destroy(queue)
                err = rd_kafka_consumer_close(rk)   # serves the revoke: positions forgotten
                rd_kafka_destroy(rk)
            _positions_revoke(&self._st, NULL)      # also when close could not revoke
        if err != RD_KAFKA_RESP_ERR_NO_ERROR:
            self._logger.warning("consumer close failed: %s: %s", _err_name(err), _err_str(err))
        return 0

    def assignment(self):
        """{partition: position} of the partitions assigned now: the offset pinned at assignment
        until a record of the partition was handled, then the next offset to handle (negative
        while not known). Thread-safe; answered from the position table, no network."""
        cdef int64_t *copy = NULL
        cdef int32_t n = 0
        cdef int32_t i
        if self._closed:
            return {}
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

    def close(self, timeout):
        """Stop after the running handler returns; the poll thread then commits stored offsets
        and leaves the group. Waits up to `timeout` for that. Idempotent. Raises what the poll
        thread failed with (except DispatchAbandoned, a deliberate give-up)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            esk_store_int(&self._stop, 1)
        thread = self._thread
        if thread is not None and thread is not _threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                self._logger.error(
                    "consumer of %r: the handler did not return within %g s of close(); "
                    "its partitions will be read again by the next consumer of the group",
                    self.topic, timeout,
                )
        # Called from a handler (the poll thread itself): the loop ends when it returns.
        failure = self._failure
        if failure is not None and not isinstance(failure, _DispatchAbandoned):
            raise failure

    # -- the poll thread --

    cdef void _record(self, object exc) noexcept:
        if self._failure is None:
            self._failure = exc
        esk_store_int(&self._stop, 1)

    def _client_error(self, int err, str reason):
        """error_cb: fatal errors stop the consumer (close() raises them); connection trouble
        is routine and not logged; anything else is a warning."""
        cdef int code = err
        if err == RD_KAFKA_RESP_ERR__FATAL:
            info = _fatal_info(self._rk)
            if info is not None:
                code, reason = info
            self._record(_errors.BrokerError(
                f"consumer fatal error: {_err_name(code)}: {reason}",
                code=code, name=_err_name(code), retriable=False, fatal=True,
            ))
        elif err != RD_KAFKA_RESP_ERR__TRANSPORT and err != RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
            self._logger.warning("consumer error: %s: %s", _err_name(err), reason)

    def _run(self):
        cdef rd_kafka_message_t **msgs = <rd_kafka_message_t **>calloc(BATCH_MAX, sizeof(void *))
        cdef ssize_t n, more, i
        cdef rd_kafka_queue_t *queue = self._queue
        try:
            if msgs == NULL:
                raise MemoryError()
            while not esk_load_int(&self._stop):
                n = 0
                with nogil:
                    n = rd_kafka_consume_batch_queue(queue, FIRST_WAIT_MS, msgs, 1)
                    if n == 1 and not esk_load_int(&self._stop):
                        more = rd_kafka_consume_batch_queue(queue, 0, msgs + 1, BATCH_MAX - 1)
                        if more > 0:
                            n += more
                if (esk_load_int(&self._st.sink.rebalance_error_set)
                        or esk_load_int(&self._st.resolve_warning_set)):
                    self._log_rebalance_problems()
                if n <= 0:
                    continue
                try:
                    if self._mode_batch:
                        self._dispatch_batch(msgs, n)
                    else:
                        self._dispatch_events(msgs, n)
                finally:
                    with nogil:
                        for i in range(n):
                            rd_kafka_message_destroy(msgs[i])
        except BaseException as exc:
            # KeyboardInterrupt/SystemExit/DispatchAbandoned from a handler, a fatal client
            # error, or a bug of ours: never lost; close() re-raises it.
            self._record(exc)
        finally:
            free(msgs)
            try:
                self._destroy_client()
                self._log_rebalance_problems()
            except BaseException as exc:
                self._record(exc)

    cdef int _log_rebalance_problems(self) except -1:
        """Log what the rebalance callback recorded (it runs without the GIL). The poll thread
        reads the buffers only after the callback returned: both run on it."""
        if esk_load_int(&self._st.resolve_warning_set):
            esk_store_int(&self._st.resolve_warning_set, 0)
            self._logger.warning(
                "consumer of %r: could not resolve start offsets, librdkafka will: %s",
                self.topic, self._st.resolve_warning.decode("utf-8", "replace"),
            )
        if esk_load_int(&self._st.sink.rebalance_error_set):
            esk_store_int(&self._st.sink.rebalance_error_set, 0)
            self._logger.warning(
                "consumer of %r: rebalance %s", self.topic,
                self._st.sink.rebalance_error.decode("utf-8", "replace"),
            )
        return 0

    cdef int _message_error(self, rd_kafka_message_t *m) except -1:
        """An error delivered as a message: fatal ones raise (ending the loop), others log."""
        cdef int code = m.err
        if code == RD_KAFKA_RESP_ERR__PARTITION_EOF:
            return 0
        reason = rd_kafka_message_errstr(m).decode("utf-8", "replace")
        if code == RD_KAFKA_RESP_ERR__FATAL:
            info = _fatal_info(self._rk)
            if info is not None:
                code, reason = info
            raise _errors.BrokerError(
                f"consumer fatal error: {_err_name(code)}: {reason}",
                code=code, name=_err_name(code), retriable=False, fatal=True,
            )
        if code == ERR_UNKNOWN_TOPIC_OR_PART:
            # Normal until the topic is created (or auto-created by its first producer).
            self._logger.info("topic %r does not exist yet; waiting for it", self.topic)
            return 0
        self._logger.warning(
            "consumer error: %s: %s%s", _err_name(code), reason,
            "" if _errors.is_retriable(code) else " (permanent)",
        )
        return 0

    cdef str _topic_of(self, rd_kafka_message_t *m):
        cdef const char *name
        if m.rkt == NULL:
            return self.topic
        name = rd_kafka_topic_name(m.rkt)
        if strcmp(name, <const char *>self._btopic) == 0:
            return self.topic
        return name.decode("utf-8", "replace")

    cdef object _decode(self, rd_kafka_message_t *m, ParsedHeaders *h, str topic):
        """The event, or None if the record is skipped (logged). Checked in the order the
        headers are written: content-type, then ce_type."""
        if h.has_ct:
            for accepted in self._accepted_ct:
                if _value_is(h.content_type, h.content_type_len, accepted):
                    break
            else:
                self._logger.warning(
                    "skipping event at %s[%d]@%d: content-type %r is not protobuf",
                    topic, m.partition, m.offset,
                    _header_text(True, h.content_type, h.content_type_len),
                )
                return None
        if h.has_type and not _value_is(h.ce_type, h.ce_type_len, self._type_name):
            self._logger.warning(
                "skipping event at %s[%d]@%d: ce_type %r is not %r",
                topic, m.partition, m.offset, _header_text(True, h.ce_type, h.ce_type_len),
                self._type_name_str,
            )
            return None
        value = (PyBytes_FromStringAndSize(<const char *>m.payload, m.len)
                 if m.payload != NULL else b"")
        try:
            return self._from_string(value)
        except Exception as exc:
            self._logger.error(
                "skipping event at %s[%d]@%d: value does not decode as %s: %s",
                topic, m.partition, m.offset, self._type_name_str, exc,
            )
            return None

    cdef object _metadata(self, rd_kafka_message_t *m, ParsedHeaders *h, str topic):
        cdef rd_kafka_timestamp_type_t tstype
        cdef int64_t ts = rd_kafka_message_timestamp(m, &tstype)
        key = (PyBytes_FromStringAndSize(<const char *>m.key, m.key_len)
               if m.key != NULL else None)
        return self._metadata_factory(
            topic, m.partition, m.offset, key, ts,
            _header_text(h.has_source, h.source, h.source_len),
            _header_text(h.has_id, h.event_id, h.event_id_len),
        )

    cdef inline void _store(self, rd_kafka_message_t *m) noexcept:
        # Stores offset+1 for the next commit. Fails (harmlessly) if the partition was revoked
        # meanwhile: its new owner reads the event again from the last committed offset.
        cdef rd_kafka_error_t *error = rd_kafka_offset_store_message(m)
        if error != NULL:
            rd_kafka_error_destroy(error)
        _positions_handled(&self._st, m.partition, m.offset + 1)

    cdef int _dispatch_events(self, rd_kafka_message_t **msgs, ssize_t n) except -1:
        cdef ssize_t i
        cdef rd_kafka_message_t *m
        cdef ParsedHeaders h
        handler = self._handler
        with_metadata = self._with_metadata
        for i in range(n):
            if esk_load_int(&self._stop):
                return 0        # close(): the rest is read again by the next owner
            m = msgs[i]
            if m.err != RD_KAFKA_RESP_ERR_NO_ERROR:
                self._message_error(m)
                continue
            topic = self._topic_of(m)
            _parse_headers(m, &h, self._n_type, self._n_ct, self._n_src, self._n_id)
            event = self._decode(m, &h, topic)
            if event is not None:
                try:
                    if with_metadata:
                        handler(event, self._metadata(m, &h, topic))
                    else:
                        handler(event)
                except Exception as exc:
                    self._logger.error(
                        "handler failed for event at %s[%d]@%d",
                        topic, m.partition, m.offset, exc_info=exc,
                    )
                # A BaseException that is not an Exception propagates to _run: recorded, the
                # loop stops, and this event's offset is not stored (it is read again).
            self._store(m)      # only after the handler returned (or the record was skipped)
        return 0

    cdef int _dispatch_batch(self, rd_kafka_message_t **msgs, ssize_t n) except -1:
        cdef ssize_t i
        cdef rd_kafka_message_t *m
        cdef ParsedHeaders h
        events = []
        metadatas = []
        for i in range(n):
            m = msgs[i]
            if m.err != RD_KAFKA_RESP_ERR_NO_ERROR:
                self._message_error(m)
                continue
            topic = self._topic_of(m)
            _parse_headers(m, &h, self._n_type, self._n_ct, self._n_src, self._n_id)
            event = self._decode(m, &h, topic)
            if event is not None:
                events.append(event)
                metadatas.append(self._metadata(m, &h, topic))
        if events:
            try:
                self._handler(events, metadatas)
            except Exception as exc:
                self._logger.error(
                    "batch handler failed for %d events of %r", len(events), self.topic,
                    exc_info=exc,
                )
            # A BaseException propagates to _run: nothing of this batch is stored.
        for i in range(n):
            if msgs[i].err == RD_KAFKA_RESP_ERR_NO_ERROR:
                self._store(msgs[i])
        return 0

    @property
    def closed(self):
        return self._closed

    def __repr__(self):
        return (f"<eventstream._core.Consumer topic={self.topic!r} started={self._started} "
                f"closed={self._closed}>")
