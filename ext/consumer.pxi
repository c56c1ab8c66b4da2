# The consumer: one Python poll thread per consumer that releases the GIL around librdkafka's
# batch consume, checks headers in C, decodes, calls the handler and stores each offset only
# after the handler returned for it (at-least-once: enable.auto.offset.store=false; the
# auto-commit, and the close when the poll thread ends, commit what was stored).
#
# Rebalancing: librdkafka would assign and revoke by itself without a rebalance callback (for the
# cooperative protocol too), but on that path rd_kafka_consumer_close() ends the group membership
# without a LeaveGroup (seen with 2.16: "terminating, initiating full unassign" -> "term"), so the
# next consumer of the group waits for the old session to time out. _on_rebalance therefore does
# the (incremental, for COOPERATIVE and KIP-848) assign/unassign itself, as confluent-kafka does;
# librdkafka commits the stored offsets of revoked partitions on unassign.
#
# Start offsets are pinned at assignment (as in the pure backend): before assigning, the callback
# resolves where each new partition starts (the group's committed offset, else the low or high
# watermark as auto.offset.reset says) and assigns at exactly that offset. A committed offset
# that retention has deleted (below the low watermark) starts at the low watermark and is
# reported as a gap. The consumer reports the pinned offset as the partition's position until it
# handles a record of it (then the next offset to handle), so once every position is known
# (>= 0), an event produced afterwards cannot fall before it. If resolution fails, a warning is
# reported and librdkafka resolves the start itself (position RD_KAFKA_OFFSET_INVALID until a
# record is handled).
#
# The callbacks that librdkafka serves on the poll thread (rebalance, error, statistics, log)
# leave notes for the Python side (assignments, gaps, problems) in Consumer._notes, taking the
# GIL briefly; the poll thread acts on them between batches (on_rebalance hook, Health), never
# while a handler runs.
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
    RESOLVE_RETRY_NS = 100_000_000  # pause before asking again after a transient error
    CLOSE_SLICE_MS = 100        # leaving the group: longest wait between deadline checks
    NOTE_ASSIGNED = 0
    NOTE_REVOKED = 1
    NOTE_LOST = 2

# A position-table entry of a partition not assigned to this consumer.
cdef int64_t _NOT_ASSIGNED = INT64_MIN

_CHANGE_KINDS = ("assigned", "revoked", "lost")


# What librdkafka's callbacks of one consumer reach through rd_kafka_opaque(): embedded in the
# Consumer object (which outlives its handle).
cdef struct ConsumerState:
    LogSink sink                # first member: rd_kafka_opaque(rk) is read as a LogSink too
    PyObject *owner             # borrowed: the Consumer (it outlives its handle)
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
    int incremental             # group.protocol=consumer (KIP-848): always incremental assign
    # Written by the poll thread, read by other threads (assignment(), close()'s message):
    int64_t dispatch_since_ns   # atomic: when the poll thread last returned from librdkafka to
                                # handle a batch; 0 while it is inside librdkafka
    int in_handler              # atomic: a handler call is running for cur_partition/offset
    int32_t cur_partition
    int64_t cur_offset


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


cdef struct HeaderNames:
    const char *type
    const char *ct
    const char *source
    const char *legacy_source
    const char *id


cdef void _parse_headers(const rd_kafka_message_t *m, ParsedHeaders *h,
                         const HeaderNames *n) noexcept nogil:
    """Point h's fields into the message's headers (valid until the message is destroyed). A
    repeated header counts by its last occurrence (wire.py)."""
    cdef rd_kafka_headers_t *hdrs = NULL
    h.has_type = h.has_ct = h.has_source = h.has_id = False
    if rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR or hdrs == NULL:
        return
    h.has_type = rd_kafka_header_get_last(hdrs, n.type, &h.ce_type, &h.ce_type_len) == 0
    h.has_ct = rd_kafka_header_get_last(hdrs, n.ct, &h.content_type, &h.content_type_len) == 0
    h.has_source = rd_kafka_header_get_last(hdrs, n.source, &h.source, &h.source_len) == 0
    if not h.has_source:        # the original Go producer's header
        h.has_source = rd_kafka_header_get_last(
            hdrs, n.legacy_source, &h.source, &h.source_len) == 0
    h.has_id = rd_kafka_header_get_last(hdrs, n.id, &h.event_id, &h.event_id_len) == 0


cdef inline bint _value_is(const void *p, size_t n, bytes b):
    return p != NULL and <Py_ssize_t>n == len(b) and memcmp(p, <const char *>b, n) == 0


cdef inline object _header_text(bint present, const void *p, size_t n):
    if not present or p == NULL:
        return None
    return _text(p, n)


# ---- callbacks served on the poll thread --------------------------------------------------

cdef void _on_consumer_error(rd_kafka_t *rk, int err, const char *reason,
                             void *opaque) noexcept with gil:
    cdef ConsumerState *st = <ConsumerState *>opaque
    if st.owner == NULL:
        return
    try:
        (<Consumer>st.owner)._on_client_error(rk, err, reason.decode("utf-8", "replace"))
    except BaseException:
        pass                    # never let an exception vanish into C


cdef int _on_consumer_stats(rd_kafka_t *rk, char *json, size_t json_len, void *opaque) noexcept nogil:
    # Is any broker connection up? (see _on_stats in producer.pxi)
    cdef bint up = memmem(json, json_len, b'"state":"UP"', 12) != NULL
    _consumer_tick(<ConsumerState *>opaque, up, json, json_len)
    return 0


cdef void _consumer_tick(ConsumerState *st, bint up, const char *json,
                         size_t json_len) noexcept with gil:
    if st.owner == NULL:
        return
    consumer = <Consumer>st.owner
    try:
        consumer._health.tick(up)
        if consumer._statistics is not None:   # someone wants the statistics themselves
            consumer._statistics(json[:json_len].decode("utf-8", "replace"))
    except BaseException as exc:
        try:
            consumer._logger.error("could not use librdkafka's statistics", exc_info=exc)
        except BaseException:
            pass


cdef void _note(ConsumerState *st, object note) noexcept with gil:
    """Leave `note` for the poll thread's next _after_poll()."""
    if st.owner == NULL:
        return
    try:
        (<Consumer>st.owner)._notes.append(note)
    except BaseException:
        pass


cdef void _note_change(ConsumerState *st, int kind,
                       const rd_kafka_topic_partition_list_t *parts) noexcept with gil:
    cdef int i
    try:
        ids = []
        for i in range(parts.cnt):
            ids.append(parts.elems[i].partition)
        _note(st, ("change", _CHANGE_KINDS[kind], tuple(sorted(ids))))
        if kind == NOTE_ASSIGNED and st.owner != NULL:
            (<Consumer>st.owner)._health.up()   # before wait_until_assigned() can return
    except BaseException:
        pass


cdef void _note_problem(ConsumerState *st, const char *what, rd_kafka_resp_err_t code,
                        const char *detail) noexcept with gil:
    try:
        _note(st, ("problem", what.decode(), code, detail.decode("utf-8", "replace")))
    except BaseException:
        pass


cdef void _note_start(ConsumerState *st, int32_t partition, int64_t committed, int64_t low,
                      int64_t high) noexcept with gil:
    """A committed offset outside [low, high]: the partition starts at `low`."""
    _note(st, ("outside", partition, committed, low, high))


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

cdef rd_kafka_topic_partition_list_t *_partitions_at(
        const rd_kafka_topic_partition_list_t *parts, int64_t offset) noexcept nogil:
    """A new list of the same partitions, each at `offset` (NULL if out of memory)."""
    cdef int i
    cdef rd_kafka_topic_partition_t *tp
    cdef rd_kafka_topic_partition_list_t *out = rd_kafka_topic_partition_list_new(parts.cnt)
    if out == NULL:
        return NULL
    for i in range(parts.cnt):
        tp = rd_kafka_topic_partition_list_add(out, parts.elems[i].topic, parts.elems[i].partition)
        tp.offset = offset
    return out


cdef void _reset_offsets(rd_kafka_topic_partition_list_t *parts, int64_t offset) noexcept nogil:
    cdef int i
    for i in range(parts.cnt):
        parts.elems[i].offset = offset
        parts.elems[i].err = RD_KAFKA_RESP_ERR_NO_ERROR


cdef CodeSet _retriable_codes = _code_set(_errors.RETRIABLE_CODES)


cdef inline bint _transient(rd_kafka_resp_err_t code) noexcept nogil:
    return _in_code_set(&_retriable_codes, code)


cdef rd_kafka_resp_err_t _first_error(const rd_kafka_topic_partition_list_t *parts,
                                      rd_kafka_resp_err_t code) noexcept nogil:
    cdef int i
    if code != RD_KAFKA_RESP_ERR_NO_ERROR:
        return code
    for i in range(parts.cnt):
        if parts.elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR:
            return parts.elems[i].err
    return RD_KAFKA_RESP_ERR_NO_ERROR


cdef rd_kafka_topic_partition_list_t *_resolve_starts(
        rd_kafka_t *rk, ConsumerState *st,
        const rd_kafka_topic_partition_list_t *partitions) noexcept nogil:
    """A new list (ours to destroy) of `partitions`, each at the offset it starts from: the
    group's committed offset if it is still in the log, else the low watermark (a gap, noted), or
    for a partition without one the low or high watermark as auto.offset.reset says (asked of
    the leaders: one request per leader for each end). NULL if that is not known within
    RESOLVE_TIMEOUT_MS (a problem is noted): librdkafka then resolves the starts itself."""
    cdef int64_t deadline = esk_now_ns() + <int64_t>RESOLVE_TIMEOUT_MS * 1_000_000
    cdef int i
    cdef int64_t committed, low, high
    cdef rd_kafka_resp_err_t code
    cdef const char *what = "committed offsets"
    cdef rd_kafka_topic_partition_list_t *resolved = _partitions_at(partitions, RD_KAFKA_OFFSET_INVALID)
    cdef rd_kafka_topic_partition_list_t *lows = _partitions_at(partitions, RD_KAFKA_OFFSET_BEGINNING)
    cdef rd_kafka_topic_partition_list_t *highs = _partitions_at(partitions, RD_KAFKA_OFFSET_END)
    if resolved == NULL or lows == NULL or highs == NULL:
        code = RD_KAFKA_RESP_ERR__NOENT
        what = "start offsets (out of memory)"
    else:
        # A just-created topic may not have its leaders everywhere yet (NOT_LEADER_FOR_PARTITION,
        # LEADER_NOT_AVAILABLE): retry what is transient until the deadline.
        while True:
            code = _first_error(resolved, rd_kafka_committed(rk, resolved, RESOLVE_TIMEOUT_MS))
            what = "committed offsets"
            if code == RD_KAFKA_RESP_ERR_NO_ERROR:
                what = "low watermarks"
                code = _first_error(lows, rd_kafka_offsets_for_times(
                    rk, lows, <int>max((deadline - esk_now_ns()) // 1_000_000, 1)))
            if code == RD_KAFKA_RESP_ERR_NO_ERROR:
                what = "high watermarks"
                code = _first_error(highs, rd_kafka_offsets_for_times(
                    rk, highs, <int>max((deadline - esk_now_ns()) // 1_000_000, 1)))
            if (code == RD_KAFKA_RESP_ERR_NO_ERROR or not _transient(code)
                    or esk_now_ns() + RESOLVE_RETRY_NS >= deadline):
                break
            esk_sleep_ns(RESOLVE_RETRY_NS)
            _reset_offsets(resolved, RD_KAFKA_OFFSET_INVALID)
            _reset_offsets(lows, RD_KAFKA_OFFSET_BEGINNING)
            _reset_offsets(highs, RD_KAFKA_OFFSET_END)
    if code == RD_KAFKA_RESP_ERR_NO_ERROR:
        for i in range(resolved.cnt):
            committed = resolved.elems[i].offset
            low = lows.elems[i].offset
            high = highs.elems[i].offset
            if committed < 0:
                resolved.elems[i].offset = low if st.from_beginning else high
            elif committed < low or committed > high:
                resolved.elems[i].offset = low
                _note_start(st, resolved.elems[i].partition, committed, low, high)
    else:
        _note_problem(st, what, code, rd_kafka_err2str(code))
    if lows != NULL:
        rd_kafka_topic_partition_list_destroy(lows)
    if highs != NULL:
        rd_kafka_topic_partition_list_destroy(highs)
    if code != RD_KAFKA_RESP_ERR_NO_ERROR and resolved != NULL:
        rd_kafka_topic_partition_list_destroy(resolved)
        resolved = NULL
    return resolved


cdef void _on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                        rd_kafka_topic_partition_list_t *partitions,
                        void *opaque) noexcept nogil:
    # Served inside rd_kafka_consume_batch_queue() on the poll thread, GIL released. May block
    # up to RESOLVE_TIMEOUT_MS resolving start offsets.
    cdef ConsumerState *st = <ConsumerState *>opaque
    cdef rd_kafka_error_t *error = NULL
    cdef rd_kafka_resp_err_t code = RD_KAFKA_RESP_ERR_NO_ERROR
    cdef rd_kafka_topic_partition_list_t *resolved = NULL
    cdef const rd_kafka_topic_partition_list_t *target = partitions
    cdef const char *what
    cdef const char *protocol = rd_kafka_rebalance_protocol(rk)   # may be NULL
    cdef bint cooperative = st.incremental or (
        protocol != NULL and strcmp(protocol, "COOPERATIVE") == 0)
    cdef int kind
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
            if target.cnt > 0 or not cooperative:
                _note_change(st, NOTE_ASSIGNED, target)
        if resolved != NULL:
            rd_kafka_topic_partition_list_destroy(resolved)
    else:
        # Revoked or lost: the listed partitions (COOPERATIVE) or all of them (EAGER) go, even
        # if the unassign call fails.
        kind = NOTE_LOST if rd_kafka_assignment_lost(rk) else NOTE_REVOKED
        if cooperative:
            what = "incremental unassign"
            error = rd_kafka_incremental_unassign(rk, partitions)
            _positions_revoke(st, partitions)
        else:
            what = "unassign"
            code = rd_kafka_assign(rk, NULL)
            _positions_revoke(st, NULL)
        if partitions.cnt > 0:
            _note_change(st, kind, partitions)
    if error != NULL:
        code = rd_kafka_error_code(error)
        _note_problem(st, what, code, rd_kafka_error_string(error))
        rd_kafka_error_destroy(error)
    elif code != RD_KAFKA_RESP_ERR_NO_ERROR:
        _note_problem(st, what, code, rd_kafka_err2str(code))


cdef class Consumer:
    """eventstream._runtime.backend.ConsumerBackend over librdkafka (see the comments above)."""

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
    cdef object _health
    cdef readonly list _notes           # see "callbacks" above; only the poll thread touches it
    cdef object _resets                 # gaps.OffsetResets: positions librdkafka had to reset
    cdef object _failures               # failures.Failures: skips, retries, dead letters
    cdef int64_t _handled               # events whose handler returned (poll thread writes)
    cdef bint _timed                    # time handlers and end-to-end latency (metrics=True)
    cdef object _statistics             # spec.statistics: the raw JSON's consumer, or None
    cdef bint _trace_headers            # spec.trace_headers: metadata carries the trace context
    cdef Hist _handler_hist
    cdef Hist _e2e_hist
    cdef object _warning_hook           # self._on_librdkafka_warning (LogSink.on_warning)
    cdef bytes _ct                      # wire.CONTENT_TYPE: compared as bytes first
    cdef bytes _n_type, _n_ct, _n_src, _n_legacy_src, _n_id
    cdef HeaderNames _names             # points into the bytes above
    cdef object _thread                 # threading.Thread running _run()
    cdef object _handler
    cdef object _on_rebalance_hook
    cdef bint _mode_batch
    cdef bint _with_metadata
    cdef int _stop                      # atomic: set by close() or a failure; read per event
    cdef int64_t _close_deadline_ns     # set by close(): how long leaving the group may take
    cdef int64_t _max_poll_ns           # max.poll.interval.ms: a longer dispatch loses the group
    cdef bint _started
    cdef bint _closed
    cdef bint _topic_missing_logged
    cdef int _fork_generation
    cdef object _failure                # BaseException recorded by the poll thread
    cdef object _lock                   # start()/close() state changes
    cdef object _left                   # threading.Event: the poll thread is done with the group
    cdef bint _left_group               # ... and it left cleanly (committed, LeaveGroup sent)

    def __cinit__(self):
        self._rk = NULL
        self._queue = NULL
        self._st.positions = NULL
        self._st.npositions = 0
        self._st.owner = NULL
        self._st.sink.logger = NULL
        self._st.sink.on_warning = NULL
        if pthread_mutex_init(&self._st.lock, NULL) != 0:
            raise MemoryError()

    def __init__(self, spec):
        props = spec.properties
        self._spec = spec
        self.topic = spec.topic
        self._btopic = spec.topic.encode()
        self._from_string = spec.event_type.FromString
        self._type_name_str = spec.type_name
        self._type_name = spec.type_name.encode()
        self._logger = spec.logger
        self._client_logger = spec.logger.getChild("librdkafka")
        self._metadata_factory = spec.metadata_factory
        self._health = spec.health
        self._notes = []
        self._ct = bytes(_wire.CONTENT_TYPE)
        self._n_type = _wire.HEADER_TYPE.encode()
        self._n_ct = _wire.HEADER_CONTENT_TYPE.encode()
        self._n_src = _wire.HEADER_SOURCE.encode()
        self._n_legacy_src = _wire.HEADER_LEGACY_SOURCE.encode()
        self._n_id = _wire.HEADER_ID.encode()
        self._names.type = self._n_type
        self._names.ct = self._n_ct
        self._names.source = self._n_src
        self._names.legacy_source = self._n_legacy_src
        self._names.id = self._n_id
        self._lock = _threading.Lock()
        self._left = _threading.Event()
        self._fork_generation = _fork_generation
        self._max_poll_ns = int(props.get("max.poll.interval.ms", "300000")) * 1_000_000
        self._st.from_beginning = bool(spec.start_from_beginning)
        self._resets = _gaps.OffsetResets(spec.topic)
        self._warning_hook = self._on_librdkafka_warning
        self._timed = bool(spec.timed)
        self._statistics = spec.statistics
        self._trace_headers = bool(spec.trace_headers)
        self._st.incremental = props.get("group.protocol", "classic").lower() == "consumer"
        # Borrowed: the handle never outlives self (the poll thread holds a reference to self
        # and destroys the handle before it ends).
        self._st.sink.logger = <PyObject *>self._client_logger
        self._st.sink.on_warning = <PyObject *>self._warning_hook
        self._st.owner = <PyObject *>self

    def __dealloc__(self):
        # The poll thread references self while it runs, so it has ended by now and destroyed
        # the handle; this only covers a start() that failed half-way. In a forked child the
        # handle belongs to the parent and is left alone.
        self._st.owner = NULL
        self._st.sink.logger = NULL
        self._st.sink.on_warning = NULL
        if self._fork_generation == _fork_generation:
            if self._queue != NULL:
                rd_kafka_queue_destroy(self._queue)
            if self._rk != NULL:
                with nogil:
                    rd_kafka_destroy(self._rk)
        self._queue = NULL
        self._rk = NULL
        free(self._st.positions)
        self._st.positions = NULL
        self._st.npositions = 0
        pthread_mutex_destroy(&self._st.lock)

    cdef int _ensure_alive(self) except -1:
        if self._fork_generation != _fork_generation:
            raise _errors.ClosedError(
                f"the consumer of {self.topic!r} was created in the parent of this forked "
                "process; librdkafka clients cannot cross fork(): create a new Topic here"
            )
        return 0

    def start(self, dispatch):
        """Subscribe and start the poll thread (daemon). Returns at once."""
        self._ensure_alive()
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
            self._on_rebalance_hook = dispatch.on_rebalance
            self._failures = dispatch.failures
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
            rd_kafka_queue_destroy(self._queue)
            self._queue = NULL
            self._rk = NULL
            with nogil:
                rd_kafka_destroy(rk)
            raise _errors.client_error(
                err, _err_name(err), _err_str(err),
                what=f"consumer of topic {self.topic!r}: could not subscribe",
            )
        return 0

    def assignment(self):
        """{partition: position} of the partitions assigned now: the offset pinned at assignment
        until a record of the partition was handled, then the next offset to handle (negative
        while not known). Empty once a handler has run longer than max.poll.interval.ms (the
        group has taken the partitions away). Thread-safe; from the position table, no
        network."""
        cdef int64_t *copy = NULL
        cdef int32_t n = 0
        cdef int32_t i
        cdef int64_t since
        if self._closed:
            return {}
        since = esk_load_i64(&self._st.dispatch_since_ns)
        if since != 0 and esk_now_ns() - since > self._max_poll_ns:
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
        and leaves the group, giving up at `timeout` (or at once when no broker answers). Waits
        for that. Idempotent. Raises what the poll thread failed with (except
        DispatchAbandoned, a deliberate give-up)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._close_deadline_ns = _deadline_after(timeout)
            esk_store_int(&self._stop, 1)
        if self._fork_generation != _fork_generation:
            self._health.closed()       # the poll thread and the handle belong to the parent
            return
        thread = self._thread
        if thread is not None and thread is not _threading.current_thread():
            # The poll thread keeps to `timeout` itself once the handler has returned.
            if self._left.wait(timeout + 1.0):
                if self._left_group:
                    thread.join(5.0)    # destroying the handle: at once after a clean leave
            else:
                self._log_still_running(timeout)
        # Called from a handler (the poll thread itself): the loop ends when it returns.
        self._health.closed()
        failure = self._failure
        if failure is not None and not isinstance(failure, _DispatchAbandoned):
            raise failure

    cdef int _log_still_running(self, object timeout) except -1:
        if esk_load_int(&self._st.in_handler):
            self._logger.error(
                "consumer of %r: close() stopped waiting after %g s: the handler is still "
                "running for the event at %s[%d]@%d. The consumer leaves its group once it "
                "returns, committing that event and the ones handled before it; if the process "
                "exits first, that event and those after it are handled again by the group's "
                "next consumer.", self.topic, timeout, self.topic, self._st.cur_partition,
                self._st.cur_offset,
            )
        else:
            self._logger.error(
                "consumer of %r: close() stopped waiting after %g s for the consumer to commit "
                "its offsets and leave the group (last client error: %s); events handled since "
                "the last commit will be handled again by the group's next consumer.",
                self.topic, timeout, self._health.last_error or "none",
            )
        return 0

    # -- the poll thread --

    cdef void _record(self, object exc) noexcept:
        if self._failure is None:
            self._failure = exc
        esk_store_int(&self._stop, 1)

    cdef int _on_client_error(self, rd_kafka_t *rk, int err, str reason) except -1:
        """error_cb: the Health decides (state, log once, on_error); a failure (authentication,
        authorization, fatal) stops the consumer and close() raises it."""
        failure = self._report_client_error(rk, err, reason)
        if failure is not None:
            self._record(failure)
        return 0

    cdef object _report_client_error(self, rd_kafka_t *rk, int err, str reason):
        cdef int code = err
        fatal = err == RD_KAFKA_RESP_ERR__FATAL
        if fatal:
            info = _fatal_info(rk)
            if info is not None:
                code, reason = info
        hint = _errors.instance_id_conflict(code, self._spec.properties)
        if hint:
            reason = f"{reason}. {hint}"
        return self._health.client_error(code, _err_name(code), reason, fatal=fatal)

    def _run(self):
        cdef rd_kafka_message_t **msgs = <rd_kafka_message_t **>calloc(BATCH_MAX, sizeof(void *))
        cdef ssize_t n, more, i
        cdef rd_kafka_queue_t *queue = self._queue
        try:
            if msgs == NULL:
                raise MemoryError()
            while not esk_load_int(&self._stop):
                n = 0
                esk_store_i64(&self._st.dispatch_since_ns, 0)
                with nogil:
                    n = rd_kafka_consume_batch_queue(queue, FIRST_WAIT_MS, msgs, 1)
                    if n == 1 and not esk_load_int(&self._stop):
                        more = rd_kafka_consume_batch_queue(queue, 0, msgs + 1, BATCH_MAX - 1)
                        if more > 0:
                            n += more
                esk_store_i64(&self._st.dispatch_since_ns, esk_now_ns())
                try:
                    if self._notes:
                        self._after_poll()
                    if n > 0:
                        if self._resets.pending:
                            self._check_resumed(msgs, n)
                        if self._mode_batch:
                            self._dispatch_batch(msgs, n)
                        else:
                            self._dispatch_events(msgs, n)
                finally:
                    with nogil:
                        for i in range(max(n, 0)):
                            rd_kafka_message_destroy(msgs[i])
        except BaseException as exc:
            # A failure the Health already reported, KeyboardInterrupt/SystemExit/
            # DispatchAbandoned from a handler, or a bug of ours: never lost; close() re-raises.
            if not isinstance(exc, (_errors.EventStreamError, _DispatchAbandoned)):
                self._health.stopped(exc)
            self._record(exc)
        finally:
            esk_store_i64(&self._st.dispatch_since_ns, 0)
            try:
                self._leave(msgs)
            except BaseException as exc:
                self._record(exc)
            finally:
                self._left.set()
                free(msgs)

    def _on_librdkafka_warning(self, str facility, str text):
        """LogSink.on_warning (poll thread): a fetch position out of the log is a gap."""
        if facility == "OFFSET":
            gap = self._resets.warned(text)
            if gap is not None:
                self._health.report(gap)

    cdef int _check_resumed(self, rd_kafka_message_t **msgs, ssize_t n) except -1:
        """After an offset reset, the first record read of the partition says where it resumed."""
        cdef ssize_t i
        pending = self._resets.pending
        for i in range(n):
            if not pending:
                break
            if msgs[i].err == RD_KAFKA_RESP_ERR_NO_ERROR and msgs[i].partition in pending:
                gap = self._resets.resumed(msgs[i].partition, msgs[i].offset)
                if gap is not None:
                    self._health.report(gap)
        return 0

    cdef int _after_poll(self) except -1:
        """Act on what the callbacks noted (see above): the on_rebalance hook, gaps, problems."""
        notes, self._notes = self._notes, []
        health = self._health
        for note in notes:
            kind = note[0]
            if kind == "change":
                hook = self._on_rebalance_hook
                if hook is not None:
                    try:
                        hook(_PartitionChange(note[1], self.topic, note[2]))
                    except Exception as exc:
                        self._logger.error(
                            "consumer of %r: the on_rebalance hook raised for %s %s",
                            self.topic, note[1], note[2], exc_info=exc,
                        )
            elif kind == "outside":
                _, partition, committed, low, high = note
                health.report(_gaps.start_outside_log(self.topic, partition, committed, low, high))
            else:
                _, what, code, detail = note
                health.warn(_errors.BrokerError(
                    f"consumer of {self.topic!r}: rebalance: {what} failed: {_err_name(code)}: "
                    f"{detail}; librdkafka resolves the start offsets itself",
                    code=code, name=_err_name(code), retriable=_errors.is_retriable(code),
                ))
        return 0

    cdef int _leave(self, rd_kafka_message_t **msgs) except -1:
        """Commit stored offsets, leave the group and destroy the handle: the end of the poll
        thread. Gives up (no commit, no LeaveGroup) at close()'s deadline, or at once when the
        client failed or no broker answers; says so, and what it means for the events."""
        cdef rd_kafka_t *rk = self._rk
        cdef rd_kafka_queue_t *queue = self._queue
        cdef rd_kafka_error_t *error
        cdef bint closed = False
        cdef ssize_t n, i
        cdef int64_t deadline = self._close_deadline_ns
        if rk == NULL:
            self._left.set()
            return 0
        if deadline == 0:
            deadline = esk_now_ns() + 30 * 1_000_000_000     # stopped by a failure, not close()
        # A client that failed (authentication, fatal) or reaches no broker cannot commit or
        # leave: don't wait for it. (A handler's BaseException also fails the consumer, but the
        # client is fine: it commits what was handled and leaves.)
        hopeless = self._health.failure is not None or self._health.status.state == "disconnected"
        if not hopeless:
            with nogil:
                error = rd_kafka_consumer_close_queue(rk, queue)
            if error != NULL:
                self._health.warn(_errors.BrokerError(
                    f"consumer of {self.topic!r}: close: {rd_kafka_error_string(error).decode()}",
                    code=rd_kafka_error_code(error), name=_err_name(rd_kafka_error_code(error)),
                    retriable=False,
                ))
                rd_kafka_error_destroy(error)
            else:
                while True:
                    with nogil:
                        closed = rd_kafka_consumer_closed(rk)
                        if not closed:
                            # Serves the revoke (commit) and returns unhandled records, dropped.
                            n = rd_kafka_consume_batch_queue(queue, CLOSE_SLICE_MS, msgs,
                                                             BATCH_MAX)
                            for i in range(max(n, 0)):
                                rd_kafka_message_destroy(msgs[i])
                    if self._notes:
                        self._after_poll()
                    hopeless = (self._health.failure is not None
                                or self._health.status.state == "disconnected")
                    if closed or esk_now_ns() >= deadline or hopeless:
                        break
        if not closed and self._health.failure is None:
            why = ("no broker answers" if self._health.status.state == "disconnected"
                   else "the close deadline passed")
            self._logger.warning(
                "consumer of %r left without committing its last offsets or leaving the group "
                "(%s; last client error: %s): events handled since the last commit (at most "
                "auto.commit.interval.ms worth) will be handled again by the group's next "
                "consumer, which gets the partitions after the session times out.",
                self.topic, why, self._health.last_error or "none",
            )
        self._rk = NULL
        self._queue = NULL
        self._left_group = closed
        _positions_revoke(&self._st, NULL)
        # close() waits this long, not for the destroy: without a broker librdkafka's destroy
        # waits out the group session (~45 s) even when not leaving; the poll thread (a daemon)
        # finishes it in the background.
        self._left.set()
        with nogil:
            rd_kafka_queue_destroy(queue)
            if closed:
                rd_kafka_destroy(rk)
            else:
                rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE)
        return 0

    cdef int _message_error(self, rd_kafka_message_t *m) except -1:
        """An error delivered as a message: failures raise (ending the loop), others are
        reported through the Health (logged once per kind)."""
        cdef int code = m.err
        if code == RD_KAFKA_RESP_ERR__PARTITION_EOF:
            return 0
        reason = rd_kafka_message_errstr(m).decode("utf-8", "replace")
        if code == ERR_UNKNOWN_TOPIC_OR_PART:
            # Normal until the topic is created (or auto-created by its first producer).
            if not self._topic_missing_logged:
                self._topic_missing_logged = True
                self._logger.info("topic %r does not exist yet; waiting for it", self.topic)
            return 0
        if code == RD_KAFKA_RESP_ERR__MAX_POLL_EXCEEDED:
            self._health.warn(_errors.max_poll_exceeded(self.topic, self._max_poll_ns // 1_000_000))
            return 0
        failure = self._report_client_error(self._rk, code, reason)
        if failure is not None:
            raise failure
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
        """The event, or None if the record is skipped (reported through Failures: logged,
        summarized, dead-lettered). Checked in the order the headers are written:
        content-type, then ce_type."""
        if h.has_ct and not _value_is(h.content_type, h.content_type_len, self._ct):
            # Not the canonical spelling: compare as a media type (case, parameters).
            if h.content_type == NULL or not _wire.is_protobuf(
                    (<const char *>h.content_type)[:h.content_type_len]):
                self._skip(m, "content-type", f"content-type "
                           f"{_header_text(True, h.content_type, h.content_type_len)!r} is not "
                           "protobuf")
                return None
        if h.has_type and not _value_is(h.ce_type, h.ce_type_len, self._type_name):
            self._skip(m, "type", f"ce_type {_header_text(True, h.ce_type, h.ce_type_len)!r} "
                       f"is not {self._type_name_str!r}")
            return None
        value = (PyBytes_FromStringAndSize(<const char *>m.payload, m.len)
                 if m.payload != NULL else b"")
        try:
            return self._from_string(value)
        except Exception as exc:
            self._skip(m, "decode", f"value does not decode as {self._type_name_str}: {exc}")
            return None

    cdef int _skip(self, rd_kafka_message_t *m, str reason, str detail) except -1:
        failures = self._failures
        failures.skip(reason, m.partition, m.offset, detail,
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

    cdef object _handle(self, object handler, object event, object meta,
                        rd_kafka_message_t *m, bint timed):
        """Call the handler for one event, retrying as the policy says; True if it returned.
        A BaseException that is not an Exception propagates (the loop stops, the offset is not
        stored: the event is read again)."""
        cdef int attempt = 1
        cdef int64_t t0 = 0
        failures = self._failures
        while True:
            if timed:
                t0 = esk_now_ns()
                self._record_e2e(m)
            try:
                if meta is None:
                    handler(event)
                else:
                    handler(event, meta)
                return True
            except Exception as exc:
                if attempt < failures.attempts:
                    failures.wait(failures.delay(attempt))     # may raise DispatchAbandoned
                    attempt += 1
                    continue
                failures.gave_up(exc, m.partition, m.offset, attempt,
                                 self._raw(m) if failures.wants_raw else None)
                return False
            finally:
                if timed:
                    _hist_add(&self._handler_hist, esk_now_ns() - t0)

    cdef inline void _record_e2e(self, rd_kafka_message_t *m) noexcept:
        cdef rd_kafka_timestamp_type_t tstype
        cdef int64_t ts = rd_kafka_message_timestamp(m, &tstype)
        if ts > 0:
            _hist_add(&self._e2e_hist, (esk_realtime_ms() - ts) * 1_000_000)

    cdef object _metadata(self, rd_kafka_message_t *m, ParsedHeaders *h, str topic):
        cdef rd_kafka_timestamp_type_t tstype
        cdef int64_t ts = rd_kafka_message_timestamp(m, &tstype)
        cdef rd_kafka_headers_t *hdrs = NULL
        cdef const void *v
        cdef size_t n
        key = (PyBytes_FromStringAndSize(<const char *>m.key, m.key_len)
               if m.key != NULL else None)
        source = _header_text(h.has_source, h.source, h.source_len)
        event_id = _header_text(h.has_id, h.event_id, h.event_id_len)
        if not self._trace_headers:
            return self._metadata_factory(topic, m.partition, m.offset, key, ts, source, event_id)
        # TopicConfig.telemetry: the W3C trace context too (last occurrence, as every header).
        traceparent = tracestate = None
        if rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR and hdrs != NULL:
            if rd_kafka_header_get_last(hdrs, b"traceparent", &v, &n) == 0:
                traceparent = _header_text(True, v, n)
            if rd_kafka_header_get_last(hdrs, b"tracestate", &v, &n) == 0:
                tracestate = _header_text(True, v, n)
        return self._metadata_factory(
            topic, m.partition, m.offset, key, ts, source, event_id, traceparent, tracestate
        )

    cdef inline void _store(self, rd_kafka_message_t *m) noexcept:
        # Stores offset+1 for the next commit. Fails (harmlessly) if the partition was revoked
        # meanwhile: its new owner reads the event again from the last committed offset.
        cdef rd_kafka_error_t *error = rd_kafka_offset_store_message(m)
        if error != NULL:
            rd_kafka_error_destroy(error)
        _positions_handled(&self._st, m.partition, m.offset + 1)

    cdef inline void _handling(self, rd_kafka_message_t *m) noexcept:
        # For close()'s message only (plain stores, read racily by another thread).
        self._st.cur_partition = m.partition
        self._st.cur_offset = m.offset
        esk_store_int(&self._st.in_handler, 1)

    cdef int _dispatch_events(self, rd_kafka_message_t **msgs, ssize_t n) except -1:
        cdef ssize_t i
        cdef rd_kafka_message_t *m
        cdef ParsedHeaders h
        cdef bint timed = self._timed
        handler = self._handler
        with_metadata = self._with_metadata
        for i in range(n):
            if esk_load_int(&self._stop):
                return 0        # close(): the rest is read again by the next owner
            m = msgs[i]
            if m.err != RD_KAFKA_RESP_ERR_NO_ERROR:
                self._message_error(m)
                continue
            _parse_headers(m, &h, &self._names)
            event = self._decode(m, &h)
            if event is not None:
                self._handling(m)
                try:
                    meta = self._metadata(m, &h, self._topic_of(m)) if with_metadata else None
                    if self._handle(handler, event, meta, m, timed):
                        self._handled += 1
                finally:
                    esk_store_int(&self._st.in_handler, 0)
            self._store(m)      # only after the handler returned (or the record was skipped)
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
                self._message_error(m)
                continue
            _parse_headers(m, &h, &self._names)
            event = self._decode(m, &h)
            if event is not None:
                events.append(event)
                metadatas.append(self._metadata(m, &h, self._topic_of(m)))
                where.append(i)
        if events:
            self._handling(msgs[0])
            try:
                failed = self._handler(events, metadatas) or ()
            except Exception as exc:
                self._logger.error(
                    "batch handler failed for %d events of %r", len(events), self.topic,
                    exc_info=exc,
                )
                failed = ()
            # A BaseException propagates to _run: nothing of this batch is stored.
            finally:
                esk_store_int(&self._st.in_handler, 0)
            failures = self._failures
            for index, error, attempts in failed:
                m = msgs[<ssize_t>where[index]]
                failures.gave_up(error, m.partition, m.offset, attempts,
                                 self._raw(m) if failures.wants_raw else None)
            self._handled += len(events) - len(failed)
        for i in range(n):
            if msgs[i].err == RD_KAFKA_RESP_ERR_NO_ERROR:
                self._store(msgs[i])
        return 0

    def stopping(self):
        """Whether close() (or a failure) asked the poll thread to stop. Any thread."""
        return bool(esk_load_int(&self._stop))

    def metrics(self):
        """(handled, handler Histogram or None, end-to-end Histogram or None). Any thread; the
        counts are read without a lock (each is exact, they may be a few events apart)."""
        if not self._timed:
            return self._handled, None, None
        return self._handled, _hist_snapshot(&self._handler_hist), _hist_snapshot(&self._e2e_hist)

    @property
    def closed(self):
        return self._closed

    def __repr__(self):
        return (f"<eventstream._core.Consumer topic={self.topic!r} started={self._started} "
                f"closed={self._closed}>")
