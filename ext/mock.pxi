# An in-process Kafka cluster: librdkafka's mock cluster (real TCP brokers on 127.0.0.1 that any
# client, in any process, can use). Supports produce, fetch, idempotence, consumer groups and
# commits; not CreateTopics/DeleteTopics/configs. The mock API is outside librdkafka's ABI
# promise, so its symbols are optional: MockCluster raises if this librdkafka lacks them.

@cython.final
cdef class MockCluster:
    """A librdkafka mock cluster with `num_brokers` brokers, hosted by a throwaway producer
    handle. Group joins are not delayed (initial rebalance delay 0)."""

    cdef rd_kafka_t *_rk
    cdef rd_kafka_mock_cluster_t *_mc
    cdef readonly str bootstrap_servers
    cdef readonly int num_brokers

    def __cinit__(self):
        self._rk = NULL
        self._mc = NULL

    def __init__(self, int num_brokers=1):
        cdef char errstr[ERRSTR_SIZE]
        cdef rd_kafka_conf_t *conf
        cdef const char *missing = esk_rdk_missing_mock()
        if missing != NULL:
            raise RuntimeError(
                f"librdkafka {LIBRDKAFKA_VERSION} has no mock cluster API ({missing.decode()})"
            )
        if num_brokers < 1:
            raise ValueError("num_brokers must be >= 1")
        # The host handle never connects anywhere: drop its log lines ("no bootstrap.servers",
        # mock broker chatter).
        conf = rd_kafka_conf_new()
        rd_kafka_conf_set_log_cb(conf, NULL)
        self._rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr))
        if self._rk == NULL:
            rd_kafka_conf_destroy(conf)
            raise RuntimeError(f"mock cluster host: {errstr.decode('utf-8', 'replace')}")
        self._mc = rd_kafka_mock_cluster_new(self._rk, num_brokers)
        if self._mc == NULL:
            with nogil:
                rd_kafka_destroy(self._rk)
            self._rk = NULL
            raise RuntimeError("rd_kafka_mock_cluster_new failed")
        rd_kafka_mock_group_initial_rebalance_delay_ms(self._mc, 0)
        self.num_brokers = num_brokers
        self.bootstrap_servers = rd_kafka_mock_cluster_bootstraps(self._mc).decode()

    def create_topic(self, str name, int partitions=1, int replication_factor=1):
        """Create `name` (the mock cluster also auto-creates topics with 4 partitions)."""
        cdef int err
        cdef bytes bname = name.encode()
        if self._mc == NULL:
            raise _errors.ClosedError("mock cluster is closed")
        err = rd_kafka_mock_topic_create(self._mc, bname, partitions, replication_factor)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR:
            raise _errors.TopicError(
                f"mock cluster could not create topic {name!r}: {_err_name(err)}: {_err_str(err)}",
                code=err, name=_err_name(err), retriable=False,
            )

    def close(self):
        """Stop the brokers. Idempotent."""
        cdef rd_kafka_mock_cluster_t *mc = self._mc
        cdef rd_kafka_t *rk = self._rk
        self._mc = NULL
        self._rk = NULL
        with nogil:
            if mc != NULL:
                rd_kafka_mock_cluster_destroy(mc)
            if rk != NULL:
                rd_kafka_destroy(rk)

    @property
    def closed(self):
        return self._mc == NULL

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __dealloc__(self):
        self.close()

    def __repr__(self):
        return f"<eventstream._core.MockCluster {self.bootstrap_servers!r}>"
