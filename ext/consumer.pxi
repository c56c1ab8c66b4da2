# The consumer: one Python poll thread per consumer that releases the GIL around librdkafka's
# batch consume, checks headers in C, decodes, calls the handler and stores each offset only
# after the handler returned for it (at-least-once: enable.auto.offset.store=false; the
# auto-commit, and rd_kafka_consumer_close() at close, commit what was stored).
#
# Rebalancing: no rebalance callback is set, so librdkafka assigns and revokes by itself; for
# the cooperative protocol it does the incremental assign/unassign internally (rdkafka_cgrp.c,
# "No application rebalance callback ... do the assign/unassign ourselves"), and on revoke it
# commits the stored offsets of the partitions being removed.

cdef enum:
    FIRST_WAIT_MS = 100         # longest block for the first message: stop requests seen promptly
    BATCH_MAX = 1000            # messages handled per round (first one + drained with timeout 0)


cdef struct ParsedHeaders:
    const void *ce_type
    size_t ce_type_len
    const void *content_type
    size_t content_type_len
    const void *source
    size_t source_len
    const void *event_id
    size_t event_id_len


cdef void _parse_headers(const rd_kafka_message_t *m, ParsedHeaders *h,
                         const char *n_type, const char *n_ct, const char *n_src,
                         const char *n_id) noexcept nogil:
    """Point h's fields into the message's headers (valid until the message is destroyed);
    NULL where a header is absent."""
    cdef rd_kafka_headers_t *hdrs = NULL
    memset_parsed(h)
    if rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR or hdrs == NULL:
        return
    if rd_kafka_header_get_last(hdrs, n_type, &h.ce_type, &h.ce_type_len) != 0:
        h.ce_type = NULL
    if rd_kafka_header_get_last(hdrs, n_ct, &h.content_type, &h.content_type_len) != 0:
        h.content_type = NULL
    if rd_kafka_header_get_last(hdrs, n_src, &h.source, &h.source_len) != 0:
        h.source = NULL
    if rd_kafka_header_get_last(hdrs, n_id, &h.event_id, &h.event_id_len) != 0:
        h.event_id = NULL


cdef inline void memset_parsed(ParsedHeaders *h) noexcept nogil:
    h.ce_type = NULL
    h.ce_type_len = 0
    h.content_type = NULL
    h.content_type_len = 0
    h.source = NULL
    h.source_len = 0
    h.event_id = NULL
    h.event_id_len = 0


cdef inline bint _bytes_eq(const void *p, size_t n, bytes b):
    return <Py_ssize_t>n == len(b) and memcmp(p, <const char *>b, n) == 0


cdef class Consumer:
    """eventstream.backend.ConsumerBackend over librdkafka (see the module docstring)."""

    cdef rd_kafka_t *_rk
    cdef rd_kafka_queue_t *_queue       # the consumer queue (a reference we destroy)
    cdef readonly str topic
    cdef bytes _btopic
    cdef object _event_type
    cdef object _from_string
    cdef bytes _type_name
    cdef str _type_name_str
    cdef object _logger
    cdef object _metadata_factory
    cdef tuple _accepted_ct
    cdef bytes _n_type, _n_ct, _n_src, _n_id
    cdef object _thread                 # threading.Thread running _run()
    cdef object _handler
    cdef int _mode_batch
    cdef bint _with_metadata
    cdef int _stop                      # set by close(); read by the poll thread between batches
    cdef bint _started
    cdef bint _closed                   # close() was called
    cdef bint _torn_down                # consumer_close + destroy done
    cdef bint _close_in_thread          # close() was called from the poll thread itself
    cdef object _error                  # BaseException recorded by the poll thread
    cdef object _lock                   # serializes teardown

    def __cinit__(self):
        self._rk = NULL
        self._queue = NULL

    def __init__(self, spec):
        cdef char errstr[ERRSTR_SIZE]
        cdef rd_kafka_conf_t *conf
        self.topic = spec.topic
        self._btopic = spec.topic.encode()
        self._event_type = spec.event_type
        self._from_string = spec.event_type.FromString
        self._type_name_str = spec.type_name
        self._type_name = spec.type_name.encode()
        self._logger = spec.logger
        self._metadata_factory = spec.metadata_factory
        self._accepted_ct = tuple(bytes(ct) for ct in _wire.ACCEPTED_CONTENT_TYPES)
        self._n_type = _wire.HEADER_TYPE.encode()
        self._n_ct = _wire.HEADER_CONTENT_TYPE.encode()
        self._n_src = _wire.HEADER_SOURCE.encode()
        self._n_id = _wire.HEADER_ID.encode()
        self._lock = _threading.Lock()
        conf = _make_conf(spec.properties, "consumer")
        # No error_cb: client errors arrive as error messages on the consumer queue and are
        # logged by the poll thread. No rebalance_cb: see the top of this file.
        self._rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr))
        if self._rk == NULL:
            rd_kafka_conf_destroy(conf)
            raise _errors.ConfigError("properties", errstr.decode("utf-8", "replace"))
        # Route the main queue (errors, ...) to the consumer queue that we poll.
        rd_kafka_poll_set_consumer(self._rk)
        self._queue = rd_kafka_queue_get_consumer(self._rk)

    def __dealloc__(self):
        # Only reached without close(), or after a failed __init__; the poll thread holds a
        # reference to self while it runs, so it has ended by now.
        if self._queue != NULL:
            rd_kafka_queue_destroy(self._queue)
            self._queue = NULL
        if self._rk != NULL:
            with nogil:
                rd_kafka_destroy(self._rk)      # also leaves the group
            self._rk = NULL

    def start(self, dispatch):
        """Subscribe and start the poll thread (daemon). Returns at once."""
        cdef rd_kafka_topic_partition_list_t *topics
        cdef int err
        if self._closed or self._rk == NULL:
            raise _errors.ClosedError(f"consumer of topic {self.topic!r} is closed")
        if self._started:
            raise _errors.ConsumerAlreadyStartedError(
                f"consumer of topic {self.topic!r} was already started"
            )
        if dispatch.mode not in ("event", "batch"):
            raise ValueError(f"unknown dispatch mode {dispatch.mode!r}")
        topics = rd_kafka_topic_partition_list_new(1)
        rd_kafka_topic_partition_list_add(topics, self._btopic, RD_KAFKA_PARTITION_UA)
        err = rd_kafka_subscribe(self._rk, topics)
        rd_kafka_topic_partition_list_destroy(topics)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR:
            raise _errors.BrokerError(
                f"could not subscribe to topic {self.topic!r}: {_err_name(err)}: {_err_str(err)}",
                code=err, name=_err_name(err), retriable=_errors.is_retriable(err),
            )
        self._handler = dispatch.handler
        self._mode_batch = dispatch.mode == "batch"
        self._with_metadata = bool(dispatch.with_metadata)
        self._started = True
        self._thread = _threading.Thread(
            target=self._run, name=f"eventstream-consumer-{self.topic}", daemon=True
        )
        self._thread.start()

    def close(self, timeout):
        """Stop after the running handler returns, commit stored offsets, leave the group.
        Idempotent. Raises what the poll thread failed with (once)."""
        thread = self._thread
        esk_store_int(&self._stop, 1)
        self._closed = True
        if thread is not None and thread is _threading.current_thread():
            # Called from a handler: the poll thread tears down when the handler returns.
            self._close_in_thread = True
            return
        if thread is not None and thread.is_alive():
            thread.join(timeout if timeout is not None and timeout > 0 else None)
            if thread.is_alive():
                self._logger.warning(
                    "consumer of topic %r: a handler is still running after %s s; waiting for "
                    "it before closing", self.topic, timeout,
                )
                thread.join()
        self._teardown()
        err = self._error
        if err is not None:
            self._error = None
            raise err

    cdef void _teardown(self) noexcept:
        """rd_kafka_consumer_close() (commits stored offsets, leaves the group), destroy.
        Only once the poll thread has stopped using the handle."""
        cdef rd_kafka_t *rk
        cdef int err = 0
        with self._lock:
            if self._torn_down:
                return
            self._torn_down = True
            rk = self._rk
            if rk == NULL:
                return
            with nogil:
                if self._queue != NULL:
                    rd_kafka_queue_destroy(self._queue)
                err = rd_kafka_consumer_close(rk)
                rd_kafka_destroy(rk)
            self._queue = NULL
            self._rk = NULL
            if err != RD_KAFKA_RESP_ERR_NO_ERROR:
                try:
                    self._logger.warning("consumer close: %s: %s", _err_name(err), _err_str(err))
                except BaseException:
                    pass

    # -- the poll thread --

    def _run(self):
        cdef rd_kafka_message_t **msgs = <rd_kafka_message_t **>calloc(BATCH_MAX, sizeof(void *))
        cdef ssize_t n, more, i
        if msgs == NULL:
            self._error = MemoryError()
            return
        try:
            while not esk_load_int(&self._stop):
                n = 0
                with nogil:
                    n = rd_kafka_consume_batch_queue(self._queue, FIRST_WAIT_MS, msgs, 1)
                    if n == 1:
                        more = rd_kafka_consume_batch_queue(self._queue, 0, msgs + 1,
                                                            BATCH_MAX - 1)
                        if more > 0:
                            n += more
                if n <= 0:
                    continue
                try:
                    if self._mode_batch:
                        self._handle_batch(msgs, n)
                    else:
                        self._handle_events(msgs, n)
                finally:
                    with nogil:
                        for i in range(n):
                            rd_kafka_message_destroy(msgs[i])
        except BaseException as exc:
            # KeyboardInterrupt/SystemExit from a handler, or a bug of ours: never lose it;
            # close() re-raises it.
            if self._error is None:
                self._error = exc
            esk_store_int(&self._stop, 1)
        finally:
            free(msgs)
            if self._close_in_thread:
                self._teardown()

    cdef bint _check_error(self, rd_kafka_message_t *m) except -1:
        """Handle an error message; True if m is one (the caller skips it)."""
        cdef int code
        if m.err == RD_KAFKA_RESP_ERR_NO_ERROR:
            return False
        if m.err == RD_KAFKA_RESP_ERR__PARTITION_EOF:
            return True
        if m.err == RD_KAFKA_RESP_ERR__FATAL:
            info = _fatal_info(self._rk)
            code, reason = info if info is not None else (m.err, _err_str(m.err))
            self._error = _errors.BrokerError(
                f"fatal consumer error on topic {self.topic!r}: {_err_name(code)}: {reason}",
                code=code, name=_err_name(code), retriable=False, fatal=True,
            )
            esk_store_int(&self._stop, 1)
            return True
        self._logger.warning(
            "consumer error: %s",
            f"{_err_name(m.err)}: {rd_kafka_message_errstr(m).decode('utf-8', 'replace')}",
        )
        return True

    cdef object _decode(self, rd_kafka_message_t *m, ParsedHeaders *h, str topic):
        """The event, or None if the message is skipped (logged)."""
        cdef const void *ct
        if h.ce_type != NULL and not _bytes_eq(h.ce_type, h.ce_type_len, self._type_name):
            self._logger.warning(
                "skipping event at %s[%d]@%d: ce_type %r is not %r",
                topic, m.partition, m.offset, _text(h.ce_type, h.ce_type_len),
                self._type_name_str,
            )
            return None
        if h.content_type != NULL:
            for accepted in self._accepted_ct:
                if _bytes_eq(h.content_type, h.content_type_len, accepted):
                    break
            else:
                self._logger.warning(
                    "skipping event at %s[%d]@%d: content-type %r is not protobuf",
                    topic, m.partition, m.offset, _text(h.content_type, h.content_type_len),
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
            _text(h.source, h.source_len) if h.source != NULL else None,
            _text(h.event_id, h.event_id_len) if h.event_id != NULL else None,
        )

    cdef str _topic_of(self, rd_kafka_message_t *m):
        cdef const char *name
        if m.rkt == NULL:
            return self.topic
        name = rd_kafka_topic_name(m.rkt)
        if strcmp(name, <const char *>self._btopic) == 0:
            return self.topic
        return name.decode("utf-8", "replace")

    cdef inline void _store(self, rd_kafka_message_t *m) noexcept:
        # Stores offset+1 for the next commit. Fails (harmlessly) if the partition was revoked
        # meanwhile: its new owner re-reads from the last committed offset.
        cdef rd_kafka_error_t *error = rd_kafka_offset_store_message(m)
        if error != NULL:
            rd_kafka_error_destroy(error)

    cdef int _handle_events(self, rd_kafka_message_t **msgs, ssize_t n) except -1:
        cdef ssize_t i
        cdef rd_kafka_message_t *m
        cdef ParsedHeaders h
        handler = self._handler
        with_metadata = self._with_metadata
        for i in range(n):
            if esk_load_int(&self._stop) and self._error is not None:
                return 0        # a fatal error: leave the rest for the next owner
            m = msgs[i]
            if self._check_error(m):
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
                # BaseException (KeyboardInterrupt, SystemExit) propagates to _run: recorded,
                # the poll thread stops, this offset is not stored (redelivered later).
            self._store(m)
        return 0

    cdef int _handle_batch(self, rd_kafka_message_t **msgs, ssize_t n) except -1:
        cdef ssize_t i
        cdef rd_kafka_message_t *m
        cdef ParsedHeaders h
        events = []
        metadatas = []
        for i in range(n):
            m = msgs[i]
            if self._check_error(m):
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
                    "batch handler failed for %d events of topic %s", len(events), self.topic,
                    exc_info=exc,
                )
        if esk_load_int(&self._stop) and self._error is not None:
            return 0
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
