# librdkafka's C API as eventstream uses it, declared once, all nogil.
#
# The types come from rdkafka_abi.h (our own header, written from librdkafka's documented stable
# ABI). Every function has the C name "ESK_RDK(name)": a call through the pointer table that
# _core.pyx fills with dlsym() from the librdkafka confluent-kafka already loaded. No librdkafka
# header or library is needed at build time. The C compiler checks each call against the
# prototype in rdkafka_abi.h, so a mistake here fails the build rather than the process.

from libc.stdint cimport int32_t, int64_t


cdef extern from "rdkafka_abi.h" nogil:
    ctypedef struct rd_kafka_t:
        pass
    ctypedef struct rd_kafka_topic_t:
        pass
    ctypedef struct rd_kafka_conf_t:
        pass
    ctypedef struct rd_kafka_topic_conf_t:
        pass
    ctypedef struct rd_kafka_queue_t:
        pass
    ctypedef struct rd_kafka_error_t:
        pass
    ctypedef struct rd_kafka_headers_t:
        pass
    ctypedef struct rd_kafka_mock_cluster_t:
        pass

    ctypedef int rd_kafka_resp_err_t
    ctypedef int rd_kafka_type_t
    ctypedef int rd_kafka_conf_res_t
    ctypedef int rd_kafka_timestamp_type_t
    ctypedef long ssize_t

    enum:
        RD_KAFKA_PRODUCER
        RD_KAFKA_CONSUMER
        RD_KAFKA_CONF_UNKNOWN
        RD_KAFKA_CONF_INVALID
        RD_KAFKA_CONF_OK
        RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
        RD_KAFKA_RESP_ERR__DESTROY
        RD_KAFKA_RESP_ERR__TRANSPORT
        RD_KAFKA_RESP_ERR__RESOLVE
        RD_KAFKA_RESP_ERR__MSG_TIMED_OUT
        RD_KAFKA_RESP_ERR__PARTITION_EOF
        RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN
        RD_KAFKA_RESP_ERR__TIMED_OUT
        RD_KAFKA_RESP_ERR__QUEUE_FULL
        RD_KAFKA_RESP_ERR__SSL
        RD_KAFKA_RESP_ERR__AUTHENTICATION
        RD_KAFKA_RESP_ERR__MAX_POLL_EXCEEDED
        RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS
        RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS
        RD_KAFKA_RESP_ERR__NOENT
        RD_KAFKA_RESP_ERR__PURGE_QUEUE
        RD_KAFKA_RESP_ERR__PURGE_INFLIGHT
        RD_KAFKA_RESP_ERR__FATAL
        RD_KAFKA_RESP_ERR_NO_ERROR
        RD_KAFKA_PARTITION_UA
        RD_KAFKA_OFFSET_INVALID
        RD_KAFKA_MSG_F_COPY
        RD_KAFKA_PURGE_F_QUEUE
        RD_KAFKA_PURGE_F_INFLIGHT
        RD_KAFKA_PURGE_F_NON_BLOCKING
        RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE
        RD_KAFKA_OFFSET_BEGINNING
        RD_KAFKA_OFFSET_END
        RD_KAFKA_MSG_STATUS_NOT_PERSISTED
        RD_KAFKA_MSG_STATUS_POSSIBLY_PERSISTED
        RD_KAFKA_MSG_STATUS_PERSISTED

    ctypedef int rd_kafka_msg_status_t

    ctypedef struct rd_kafka_message_t:
        rd_kafka_resp_err_t err
        rd_kafka_topic_t *rkt
        int32_t partition
        void *payload
        size_t len
        void *key
        size_t key_len
        int64_t offset
        void *_private

    ctypedef struct rd_kafka_topic_partition_t:
        char *topic
        int32_t partition
        int64_t offset
        void *metadata
        size_t metadata_size
        void *opaque
        rd_kafka_resp_err_t err
        void *_private

    ctypedef struct rd_kafka_topic_partition_list_t:
        int cnt
        int size
        rd_kafka_topic_partition_t *elems

    ctypedef enum rd_kafka_vtype_t:
        RD_KAFKA_VTYPE_END
        RD_KAFKA_VTYPE_TOPIC
        RD_KAFKA_VTYPE_RKT
        RD_KAFKA_VTYPE_PARTITION
        RD_KAFKA_VTYPE_VALUE
        RD_KAFKA_VTYPE_KEY
        RD_KAFKA_VTYPE_OPAQUE
        RD_KAFKA_VTYPE_MSGFLAGS
        RD_KAFKA_VTYPE_TIMESTAMP
        RD_KAFKA_VTYPE_HEADER
        RD_KAFKA_VTYPE_HEADERS

    ctypedef struct esk_vu_mem_t:
        void *ptr
        size_t size

    ctypedef union esk_vu_union_t:
        const char *cstr
        rd_kafka_topic_t *rkt
        int i
        int32_t i32
        int64_t i64
        esk_vu_mem_t mem
        rd_kafka_headers_t *headers
        void *ptr

    ctypedef struct rd_kafka_vu_t:
        rd_kafka_vtype_t vtype
        esk_vu_union_t u

    ctypedef void (*esk_dr_msg_cb_t)(rd_kafka_t *rk, const rd_kafka_message_t *rkmessage,
                                     void *opaque) noexcept
    ctypedef void (*esk_error_cb_t)(rd_kafka_t *rk, int err, const char *reason,
                                    void *opaque) noexcept
    # The log callback runs on the thread that serves the queue given to rd_kafka_set_log_queue
    # (with "log.queue=true"); without a log queue, on librdkafka's internal threads.
    ctypedef void (*esk_rebalance_cb_t)(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                        rd_kafka_topic_partition_list_t *partitions,
                                        void *opaque) noexcept
    ctypedef void (*esk_log_cb_t)(const rd_kafka_t *rk, int level, const char *fac,
                                  const char *buf) noexcept
    # Returns 0: librdkafka frees json after the call.
    ctypedef int (*esk_stats_cb_t)(rd_kafka_t *rk, char *json, size_t json_len,
                                   void *opaque) noexcept

    # Loader (see rdkafka_abi.h).
    const char *esk_rdk_load(void *handle)
    const char *esk_rdk_missing_mock()

    # ---- general ----
    int rd_kafka_version "ESK_RDK(rd_kafka_version)" ()
    const char *rd_kafka_version_str "ESK_RDK(rd_kafka_version_str)" ()
    const char *rd_kafka_err2str "ESK_RDK(rd_kafka_err2str)" (rd_kafka_resp_err_t err)
    const char *rd_kafka_err2name "ESK_RDK(rd_kafka_err2name)" (rd_kafka_resp_err_t err)
    rd_kafka_resp_err_t rd_kafka_fatal_error "ESK_RDK(rd_kafka_fatal_error)" (
        rd_kafka_t *rk, char *errstr, size_t size)
    rd_kafka_resp_err_t rd_kafka_error_code "ESK_RDK(rd_kafka_error_code)" (
        const rd_kafka_error_t *error)
    const char *rd_kafka_error_string "ESK_RDK(rd_kafka_error_string)" (
        const rd_kafka_error_t *error)
    void rd_kafka_error_destroy "ESK_RDK(rd_kafka_error_destroy)" (rd_kafka_error_t *error)
    int rd_kafka_error_is_fatal "ESK_RDK(rd_kafka_error_is_fatal)" (const rd_kafka_error_t *error)

    # ---- configuration and handles ----
    rd_kafka_conf_t *rd_kafka_conf_new "ESK_RDK(rd_kafka_conf_new)" ()
    void rd_kafka_conf_destroy "ESK_RDK(rd_kafka_conf_destroy)" (rd_kafka_conf_t *conf)
    rd_kafka_conf_res_t rd_kafka_conf_set "ESK_RDK(rd_kafka_conf_set)" (
        rd_kafka_conf_t *conf, const char *name, const char *value, char *errstr,
        size_t errstr_size)
    void rd_kafka_conf_set_dr_msg_cb "ESK_RDK(rd_kafka_conf_set_dr_msg_cb)" (
        rd_kafka_conf_t *conf, esk_dr_msg_cb_t cb)
    void rd_kafka_conf_set_error_cb "ESK_RDK(rd_kafka_conf_set_error_cb)" (
        rd_kafka_conf_t *conf, esk_error_cb_t cb)
    void rd_kafka_conf_set_opaque "ESK_RDK(rd_kafka_conf_set_opaque)" (
        rd_kafka_conf_t *conf, void *opaque)
    void rd_kafka_conf_set_log_cb "ESK_RDK(rd_kafka_conf_set_log_cb)" (
        rd_kafka_conf_t *conf, esk_log_cb_t cb)
    # Served where the main queue is (rd_kafka_poll/flush) or the consumer queue, every
    # statistics.interval.ms.
    void rd_kafka_conf_set_stats_cb "ESK_RDK(rd_kafka_conf_set_stats_cb)" (
        rd_kafka_conf_t *conf, esk_stats_cb_t cb)
    void *rd_kafka_opaque "ESK_RDK(rd_kafka_opaque)" (const rd_kafka_t *rk)
    # NULL: forward log lines to the main queue (served by rd_kafka_poll / the consumer queue).
    rd_kafka_resp_err_t rd_kafka_set_log_queue "ESK_RDK(rd_kafka_set_log_queue)" (
        rd_kafka_t *rk, rd_kafka_queue_t *rkqu)
    # Takes ownership of conf on success only.
    rd_kafka_t *rd_kafka_new "ESK_RDK(rd_kafka_new)" (
        rd_kafka_type_t type, rd_kafka_conf_t *conf, char *errstr, size_t errstr_size)
    void rd_kafka_destroy "ESK_RDK(rd_kafka_destroy)" (rd_kafka_t *rk)
    # RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE: no commit, no LeaveGroup (a close given up on).
    void rd_kafka_destroy_flags "ESK_RDK(rd_kafka_destroy_flags)" (rd_kafka_t *rk, int flags)
    rd_kafka_topic_t *rd_kafka_topic_new "ESK_RDK(rd_kafka_topic_new)" (
        rd_kafka_t *rk, const char *topic, rd_kafka_topic_conf_t *conf)
    void rd_kafka_topic_destroy "ESK_RDK(rd_kafka_topic_destroy)" (rd_kafka_topic_t *rkt)
    const char *rd_kafka_topic_name "ESK_RDK(rd_kafka_topic_name)" (const rd_kafka_topic_t *rkt)

    # ---- producing ----
    int rd_kafka_poll "ESK_RDK(rd_kafka_poll)" (rd_kafka_t *rk, int timeout_ms)
    void rd_kafka_yield "ESK_RDK(rd_kafka_yield)" (rd_kafka_t *rk)
    rd_kafka_resp_err_t rd_kafka_flush "ESK_RDK(rd_kafka_flush)" (rd_kafka_t *rk, int timeout_ms)
    rd_kafka_resp_err_t rd_kafka_purge "ESK_RDK(rd_kafka_purge)" (rd_kafka_t *rk, int purge_flags)
    int rd_kafka_outq_len "ESK_RDK(rd_kafka_outq_len)" (rd_kafka_t *rk)
    # On success the message owns the RD_KAFKA_VTYPE_HEADERS list; on error it stays ours.
    rd_kafka_error_t *rd_kafka_produceva "ESK_RDK(rd_kafka_produceva)" (
        rd_kafka_t *rk, const rd_kafka_vu_t *vus, size_t cnt)
    rd_kafka_headers_t *rd_kafka_headers_new "ESK_RDK(rd_kafka_headers_new)" (size_t initial_count)
    void rd_kafka_headers_destroy "ESK_RDK(rd_kafka_headers_destroy)" (rd_kafka_headers_t *hdrs)
    rd_kafka_resp_err_t rd_kafka_header_add "ESK_RDK(rd_kafka_header_add)" (
        rd_kafka_headers_t *hdrs, const char *name, ssize_t name_size, const void *value,
        ssize_t value_size)
    # Removes (and frees) every header called `name` (NUL-terminated); _NOENT if there was none.
    rd_kafka_resp_err_t rd_kafka_header_remove "ESK_RDK(rd_kafka_header_remove)" (
        rd_kafka_headers_t *hdrs, const char *name)
    size_t rd_kafka_header_cnt "ESK_RDK(rd_kafka_header_cnt)" (const rd_kafka_headers_t *hdrs)

    # ---- consuming ----
    # The returned pointers point into the message: valid until rd_kafka_message_destroy().
    rd_kafka_resp_err_t rd_kafka_header_get_last "ESK_RDK(rd_kafka_header_get_last)" (
        const rd_kafka_headers_t *hdrs, const char *name, const void **valuep, size_t *sizep)
    # The idx'th header (in order); _NOENT past the last.
    rd_kafka_resp_err_t rd_kafka_header_get_all "ESK_RDK(rd_kafka_header_get_all)" (
        const rd_kafka_headers_t *hdrs, size_t idx, const char **namep, const void **valuep,
        size_t *sizep)
    rd_kafka_resp_err_t rd_kafka_message_headers "ESK_RDK(rd_kafka_message_headers)" (
        const rd_kafka_message_t *rkmessage, rd_kafka_headers_t **hdrsp)
    # The message's headers (parsed now if they were not yet) become the caller's, who destroys
    # them; asked again, the message parses its headers anew.
    rd_kafka_resp_err_t rd_kafka_message_detach_headers "ESK_RDK(rd_kafka_message_detach_headers)" (
        rd_kafka_message_t *rkmessage, rd_kafka_headers_t **hdrsp)
    int64_t rd_kafka_message_timestamp "ESK_RDK(rd_kafka_message_timestamp)" (
        const rd_kafka_message_t *rkmessage, rd_kafka_timestamp_type_t *tstype)
    const char *rd_kafka_message_errstr "ESK_RDK(rd_kafka_message_errstr)" (
        const rd_kafka_message_t *rkmessage)
    void rd_kafka_message_destroy "ESK_RDK(rd_kafka_message_destroy)" (
        rd_kafka_message_t *rkmessage)
    rd_kafka_resp_err_t rd_kafka_poll_set_consumer "ESK_RDK(rd_kafka_poll_set_consumer)" (
        rd_kafka_t *rk)
    rd_kafka_queue_t *rd_kafka_queue_get_consumer "ESK_RDK(rd_kafka_queue_get_consumer)" (
        rd_kafka_t *rk)
    void rd_kafka_queue_destroy "ESK_RDK(rd_kafka_queue_destroy)" (rd_kafka_queue_t *rkqu)
    # The main queue (delivery reports, errors, logs: what rd_kafka_poll/rd_kafka_flush serve).
    rd_kafka_queue_t *rd_kafka_queue_get_main "ESK_RDK(rd_kafka_queue_get_main)" (rd_kafka_t *rk)
    # Wakes a thread blocked serving the queue (rd_kafka_poll included); from any thread.
    void rd_kafka_queue_yield "ESK_RDK(rd_kafka_queue_yield)" (rd_kafka_queue_t *rkqu)
    ssize_t rd_kafka_consume_batch_queue "ESK_RDK(rd_kafka_consume_batch_queue)" (
        rd_kafka_queue_t *rkqu, int timeout_ms, rd_kafka_message_t **rkmessages, size_t size)
    rd_kafka_topic_partition_list_t *rd_kafka_topic_partition_list_new \
        "ESK_RDK(rd_kafka_topic_partition_list_new)" (int size)
    rd_kafka_topic_partition_t *rd_kafka_topic_partition_list_add "ESK_RDK(rd_kafka_topic_partition_list_add)" (
        rd_kafka_topic_partition_list_t *rktparlist, const char *topic, int32_t partition)
    void rd_kafka_topic_partition_list_destroy "ESK_RDK(rd_kafka_topic_partition_list_destroy)" (
        rd_kafka_topic_partition_list_t *rktparlist)
    rd_kafka_resp_err_t rd_kafka_subscribe "ESK_RDK(rd_kafka_subscribe)" (
        rd_kafka_t *rk, const rd_kafka_topic_partition_list_t *topics)
    # Stores offset+1 of the message for the next (auto) commit.
    rd_kafka_error_t *rd_kafka_offset_store_message "ESK_RDK(rd_kafka_offset_store_message)" (
        rd_kafka_message_t *rkmessage)
    rd_kafka_resp_err_t rd_kafka_consumer_close "ESK_RDK(rd_kafka_consumer_close)" (rd_kafka_t *rk)
    # Starts the close; serve rkqu (rebalance callbacks run there) until consumer_closed().
    rd_kafka_error_t *rd_kafka_consumer_close_queue "ESK_RDK(rd_kafka_consumer_close_queue)" (
        rd_kafka_t *rk, rd_kafka_queue_t *rkqu)
    int rd_kafka_consumer_closed "ESK_RDK(rd_kafka_consumer_closed)" (rd_kafka_t *rk)
    # Whether the current assignment was lost (session timeout, max.poll.interval.ms exceeded);
    # read in the rebalance callback.
    int rd_kafka_assignment_lost "ESK_RDK(rd_kafka_assignment_lost)" (rd_kafka_t *rk)
    # Served where the consumer queue is served (our poll thread, rd_kafka_consumer_close).
    void rd_kafka_conf_set_rebalance_cb "ESK_RDK(rd_kafka_conf_set_rebalance_cb)" (
        rd_kafka_conf_t *conf, esk_rebalance_cb_t cb)
    rd_kafka_error_t *rd_kafka_incremental_assign "ESK_RDK(rd_kafka_incremental_assign)" (
        rd_kafka_t *rk, const rd_kafka_topic_partition_list_t *partitions)
    rd_kafka_error_t *rd_kafka_incremental_unassign "ESK_RDK(rd_kafka_incremental_unassign)" (
        rd_kafka_t *rk, const rd_kafka_topic_partition_list_t *partitions)
    rd_kafka_resp_err_t rd_kafka_assign "ESK_RDK(rd_kafka_assign)" (
        rd_kafka_t *rk, const rd_kafka_topic_partition_list_t *partitions)
    # Fills each element's offset with the group's committed offset (RD_KAFKA_OFFSET_INVALID if
    # none) and its err field; blocks up to timeout_ms (its own queue: callable in a rebalance
    # callback).
    rd_kafka_resp_err_t rd_kafka_committed "ESK_RDK(rd_kafka_committed)" (
        rd_kafka_t *rk, rd_kafka_topic_partition_list_t *partitions, int timeout_ms)
    # Asks the partition's leader for its low and high watermarks (no cache); blocks up to
    # timeout_ms.
    rd_kafka_resp_err_t rd_kafka_query_watermark_offsets \
        "ESK_RDK(rd_kafka_query_watermark_offsets)" (
        rd_kafka_t *rk, const char *topic, int32_t partition, int64_t *low, int64_t *high,
        int timeout_ms)
    # Each element's offset is a ListOffsets timestamp on input (RD_KAFKA_OFFSET_BEGINNING: the
    # low watermark, RD_KAFKA_OFFSET_END: the high one) and the offset found on output, one
    # request per leader; blocks up to timeout_ms (own queue: callable in a rebalance callback).
    rd_kafka_resp_err_t rd_kafka_offsets_for_times "ESK_RDK(rd_kafka_offsets_for_times)" (
        rd_kafka_t *rk, rd_kafka_topic_partition_list_t *offsets, int timeout_ms)
    # "COOPERATIVE", "EAGER", or NULL/"NONE" when not (yet) known.
    const char *rd_kafka_rebalance_protocol "ESK_RDK(rd_kafka_rebalance_protocol)" (
        rd_kafka_t *rk)
    # Commits `offsets` (NULL: the stored ones); async: returns at once, the result is served
    # on the consumer queue (offset_commit_cb, which we do not set).
    rd_kafka_resp_err_t rd_kafka_commit "ESK_RDK(rd_kafka_commit)" (
        rd_kafka_t *rk, const rd_kafka_topic_partition_list_t *offsets, int async)
    # Stores each element's offset (assigned partitions only) for the next commit.
    rd_kafka_resp_err_t rd_kafka_offsets_store "ESK_RDK(rd_kafka_offsets_store)" (
        rd_kafka_t *rk, rd_kafka_topic_partition_list_t *offsets)
    # Moves each (assigned) partition's fetch position to its element's offset.
    rd_kafka_error_t *rd_kafka_seek_partitions "ESK_RDK(rd_kafka_seek_partitions)" (
        rd_kafka_t *rk, rd_kafka_topic_partition_list_t *partitions, int timeout_ms)
    # In a delivery report: whether the message is known not written, may be, or was.
    rd_kafka_msg_status_t rd_kafka_message_status "ESK_RDK(rd_kafka_message_status)" (
        const rd_kafka_message_t *rkmessage)

    # ---- mock cluster (optional symbols; check esk_rdk_missing_mock() first) ----
    rd_kafka_mock_cluster_t *rd_kafka_mock_cluster_new "ESK_RDK(rd_kafka_mock_cluster_new)" (
        rd_kafka_t *rk, int broker_cnt)
    void rd_kafka_mock_cluster_destroy "ESK_RDK(rd_kafka_mock_cluster_destroy)" (
        rd_kafka_mock_cluster_t *mcluster)
    const char *rd_kafka_mock_cluster_bootstraps "ESK_RDK(rd_kafka_mock_cluster_bootstraps)" (
        const rd_kafka_mock_cluster_t *mcluster)
    rd_kafka_resp_err_t rd_kafka_mock_topic_create "ESK_RDK(rd_kafka_mock_topic_create)" (
        rd_kafka_mock_cluster_t *mcluster, const char *topic, int partition_cnt,
        int replication_factor)
    void rd_kafka_mock_group_initial_rebalance_delay_ms \
        "ESK_RDK(rd_kafka_mock_group_initial_rebalance_delay_ms)" (
        rd_kafka_mock_cluster_t *mcluster, int32_t delay_ms)
