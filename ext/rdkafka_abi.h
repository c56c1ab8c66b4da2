/*
 * The part of librdkafka's C ABI that eventstream uses, written for eventstream from librdkafka's
 * documented public API (rdkafka.h, rdkafka_mock.h). librdkafka promises a stable C ABI for
 * librdkafka.so.1: opaque handles, the rd_kafka_message_t and rd_kafka_vu_t layouts, enum and
 * error-code values below do not change between releases (the mock-cluster API is excluded from
 * that promise, so it is loaded as optional).
 *
 * Nothing here needs librdkafka's own headers or links against librdkafka: every function is
 * reached through the pointer table `esk_rdk`, filled once by esk_rdk_load() with dlsym() on the
 * librdkafka that confluent-kafka already loaded (one librdkafka per process; see _core.pyx).
 * Cython code calls the functions under their real names; rdkafka.pxd maps each name to
 * ESK_RDK(name), i.e. a call through this table. The C compiler checks every call made from
 * Cython against the prototypes listed in ESK_RDK_REQUIRED / ESK_RDK_OPTIONAL.
 */
#ifndef ESK_RDKAFKA_ABI_H
#define ESK_RDKAFKA_ABI_H

#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h> /* ssize_t */

/* ---- opaque handles ---------------------------------------------------------------------- */
typedef struct rd_kafka_s rd_kafka_t;
typedef struct rd_kafka_topic_s rd_kafka_topic_t;
typedef struct rd_kafka_conf_s rd_kafka_conf_t;
typedef struct rd_kafka_topic_conf_s rd_kafka_topic_conf_t;
typedef struct rd_kafka_queue_s rd_kafka_queue_t;
typedef struct rd_kafka_error_s rd_kafka_error_t;
typedef struct rd_kafka_headers_s rd_kafka_headers_t;
typedef struct rd_kafka_mock_cluster_s rd_kafka_mock_cluster_t;

/* ---- enums (C enums are int-sized on every ABI we build for) ------------------------------ */
typedef int rd_kafka_resp_err_t;
typedef int rd_kafka_type_t;
typedef int rd_kafka_conf_res_t;
typedef int rd_kafka_timestamp_type_t;

enum {
    RD_KAFKA_PRODUCER = 0,
    RD_KAFKA_CONSUMER = 1,
};

enum {
    RD_KAFKA_CONF_UNKNOWN = -2,
    RD_KAFKA_CONF_INVALID = -1,
    RD_KAFKA_CONF_OK = 0,
};

enum {
    RD_KAFKA_TIMESTAMP_NOT_AVAILABLE = 0,
    RD_KAFKA_TIMESTAMP_CREATE_TIME = 1,
    RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME = 2,
};

/* Error codes we act on (values from rdkafka.h's rd_kafka_resp_err_t). */
enum {
    RD_KAFKA_RESP_ERR__DESTROY = -197,
    RD_KAFKA_RESP_ERR__TRANSPORT = -195,
    RD_KAFKA_RESP_ERR__RESOLVE = -193,
    RD_KAFKA_RESP_ERR__MSG_TIMED_OUT = -192,
    RD_KAFKA_RESP_ERR__PARTITION_EOF = -191,
    RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN = -187,
    RD_KAFKA_RESP_ERR__TIMED_OUT = -185,
    RD_KAFKA_RESP_ERR__QUEUE_FULL = -184,
    RD_KAFKA_RESP_ERR__SSL = -181,
    RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS = -175,
    RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS = -174,
    RD_KAFKA_RESP_ERR__AUTHENTICATION = -169,
    RD_KAFKA_RESP_ERR__NOENT = -156,
    RD_KAFKA_RESP_ERR__PURGE_QUEUE = -152,
    RD_KAFKA_RESP_ERR__PURGE_INFLIGHT = -151,
    RD_KAFKA_RESP_ERR__FATAL = -150,
    RD_KAFKA_RESP_ERR__MAX_POLL_EXCEEDED = -147,
    RD_KAFKA_RESP_ERR_NO_ERROR = 0,
};

#define RD_KAFKA_PARTITION_UA ((int32_t)-1)
#define RD_KAFKA_OFFSET_INVALID (-1001) /* no offset: committed none, or not known yet */
#define RD_KAFKA_MSG_F_COPY 0x2
#define RD_KAFKA_PURGE_F_QUEUE 0x1
#define RD_KAFKA_PURGE_F_INFLIGHT 0x2
#define RD_KAFKA_PURGE_F_NON_BLOCKING 0x4
#define RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE 0x8
#define RD_KAFKA_OFFSET_BEGINNING (-2) /* as a ListOffsets timestamp: the low watermark */
#define RD_KAFKA_OFFSET_END (-1)       /* as a ListOffsets timestamp: the high watermark */

/* ---- rd_kafka_message_t: field order and types are part of the ABI ------------------------ */
typedef struct rd_kafka_message_s {
    rd_kafka_resp_err_t err;
    rd_kafka_topic_t *rkt;
    int32_t partition;
    void *payload;   /* consumer, err == 0: value; err != 0: error string */
    size_t len;
    void *key;
    size_t key_len;
    int64_t offset;
    void *_private;  /* producer delivery report: the per-message opaque */
} rd_kafka_message_t;

/* ---- topic+partition lists (layout is part of the ABI) ----------------------------------- */
typedef struct rd_kafka_topic_partition_s {
    char *topic;
    int32_t partition;
    int64_t offset;
    void *metadata;
    size_t metadata_size;
    void *opaque;
    rd_kafka_resp_err_t err;
    void *_private;
} rd_kafka_topic_partition_t;

typedef struct rd_kafka_topic_partition_list_s {
    int cnt;
    int size;
    rd_kafka_topic_partition_t *elems;
} rd_kafka_topic_partition_list_t;

/* rd_kafka_message_status(): whether a produced message reached the log. */
typedef enum {
    RD_KAFKA_MSG_STATUS_NOT_PERSISTED = 0,
    RD_KAFKA_MSG_STATUS_POSSIBLY_PERSISTED = 1,
    RD_KAFKA_MSG_STATUS_PERSISTED = 2,
} rd_kafka_msg_status_t;

/* ---- rd_kafka_vu_t for rd_kafka_produceva() ----------------------------------------------- */
typedef enum {
    RD_KAFKA_VTYPE_END = 0,
    RD_KAFKA_VTYPE_TOPIC = 1,
    RD_KAFKA_VTYPE_RKT = 2,
    RD_KAFKA_VTYPE_PARTITION = 3,
    RD_KAFKA_VTYPE_VALUE = 4,
    RD_KAFKA_VTYPE_KEY = 5,
    RD_KAFKA_VTYPE_OPAQUE = 6,
    RD_KAFKA_VTYPE_MSGFLAGS = 7,
    RD_KAFKA_VTYPE_TIMESTAMP = 8,
    RD_KAFKA_VTYPE_HEADER = 9,
    RD_KAFKA_VTYPE_HEADERS = 10,
} rd_kafka_vtype_t;

/* rdkafka.h declares the union members anonymously; they are named here (same layout) so that
 * Cython can refer to them. The 64-byte pad fixes the union's size. */
typedef struct {
    void *ptr;
    size_t size;
} esk_vu_mem_t;

typedef struct {
    const char *name;
    const void *val;
    ssize_t size;
} esk_vu_header_t;

typedef union {
    const char *cstr;
    rd_kafka_topic_t *rkt;
    int i;
    int32_t i32;
    int64_t i64;
    esk_vu_mem_t mem;
    esk_vu_header_t header;
    rd_kafka_headers_t *headers;
    void *ptr;
    char _pad[64];
} esk_vu_union_t;

typedef struct rd_kafka_vu_s {
    rd_kafka_vtype_t vtype;
    esk_vu_union_t u;
} rd_kafka_vu_t;

/* ---- callback types ------------------------------------------------------------------------ */
typedef void (*esk_dr_msg_cb_t)(rd_kafka_t *rk, const rd_kafka_message_t *rkmessage, void *opaque);
typedef void (*esk_error_cb_t)(rd_kafka_t *rk, int err, const char *reason, void *opaque);
typedef void (*esk_rebalance_cb_t)(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                   rd_kafka_topic_partition_list_t *partitions, void *opaque);
typedef void (*esk_log_cb_t)(const rd_kafka_t *rk, int level, const char *fac, const char *buf);
typedef int (*esk_stats_cb_t)(rd_kafka_t *rk, char *json, size_t json_len, void *opaque);

/* ---- the function table ------------------------------------------------------------------- */
/* X(return type, name, parameter list). Required: the import fails naming the first missing one. */
#define ESK_RDK_REQUIRED(X)                                                                        \
    X(int, rd_kafka_version, (void))                                                               \
    X(const char *, rd_kafka_version_str, (void))                                                  \
    X(const char *, rd_kafka_err2str, (rd_kafka_resp_err_t err))                                   \
    X(const char *, rd_kafka_err2name, (rd_kafka_resp_err_t err))                                  \
    X(rd_kafka_resp_err_t, rd_kafka_fatal_error, (rd_kafka_t * rk, char *errstr, size_t size))     \
    X(rd_kafka_resp_err_t, rd_kafka_error_code, (const rd_kafka_error_t *error))                   \
    X(const char *, rd_kafka_error_string, (const rd_kafka_error_t *error))                        \
    X(void, rd_kafka_error_destroy, (rd_kafka_error_t * error))                                    \
    X(int, rd_kafka_error_is_fatal, (const rd_kafka_error_t *error))                               \
    X(rd_kafka_conf_t *, rd_kafka_conf_new, (void))                                                \
    X(void, rd_kafka_conf_destroy, (rd_kafka_conf_t * conf))                                       \
    X(rd_kafka_conf_res_t, rd_kafka_conf_set,                                                      \
      (rd_kafka_conf_t * conf, const char *name, const char *value, char *errstr,                  \
       size_t errstr_size))                                                                        \
    X(void, rd_kafka_conf_set_dr_msg_cb, (rd_kafka_conf_t * conf, esk_dr_msg_cb_t cb))             \
    X(void, rd_kafka_conf_set_error_cb, (rd_kafka_conf_t * conf, esk_error_cb_t cb))               \
    X(void, rd_kafka_conf_set_opaque, (rd_kafka_conf_t * conf, void *opaque))                      \
    X(void, rd_kafka_conf_set_log_cb, (rd_kafka_conf_t * conf, esk_log_cb_t cb))                   \
    X(void, rd_kafka_conf_set_stats_cb, (rd_kafka_conf_t * conf, esk_stats_cb_t cb))               \
    X(void *, rd_kafka_opaque, (const rd_kafka_t *rk))                                             \
    X(rd_kafka_resp_err_t, rd_kafka_set_log_queue, (rd_kafka_t * rk, rd_kafka_queue_t *rkqu))      \
    X(rd_kafka_t *, rd_kafka_new,                                                                  \
      (rd_kafka_type_t type, rd_kafka_conf_t *conf, char *errstr, size_t errstr_size))             \
    X(void, rd_kafka_destroy, (rd_kafka_t * rk))                                                   \
    X(void, rd_kafka_destroy_flags, (rd_kafka_t * rk, int flags))                                  \
    X(rd_kafka_topic_t *, rd_kafka_topic_new,                                                      \
      (rd_kafka_t * rk, const char *topic, rd_kafka_topic_conf_t *conf))                           \
    X(void, rd_kafka_topic_destroy, (rd_kafka_topic_t * rkt))                                      \
    X(const char *, rd_kafka_topic_name, (const rd_kafka_topic_t *rkt))                            \
    X(int, rd_kafka_poll, (rd_kafka_t * rk, int timeout_ms))                                       \
    X(void, rd_kafka_yield, (rd_kafka_t * rk))                                                     \
    X(rd_kafka_resp_err_t, rd_kafka_flush, (rd_kafka_t * rk, int timeout_ms))                      \
    X(rd_kafka_resp_err_t, rd_kafka_purge, (rd_kafka_t * rk, int purge_flags))                     \
    X(int, rd_kafka_outq_len, (rd_kafka_t * rk))                                                   \
    X(rd_kafka_error_t *, rd_kafka_produceva,                                                      \
      (rd_kafka_t * rk, const rd_kafka_vu_t *vus, size_t cnt))                                     \
    X(rd_kafka_headers_t *, rd_kafka_headers_new, (size_t initial_count))                          \
    X(void, rd_kafka_headers_destroy, (rd_kafka_headers_t * hdrs))                                 \
    X(rd_kafka_resp_err_t, rd_kafka_header_add,                                                    \
      (rd_kafka_headers_t * hdrs, const char *name, ssize_t name_size, const void *value,          \
       ssize_t value_size))                                                                        \
    X(rd_kafka_resp_err_t, rd_kafka_header_remove, (rd_kafka_headers_t * hdrs, const char *name))  \
    X(size_t, rd_kafka_header_cnt, (const rd_kafka_headers_t *hdrs))                               \
    X(rd_kafka_resp_err_t, rd_kafka_header_get_all,                                                \
      (const rd_kafka_headers_t *hdrs, size_t idx, const char **namep, const void **valuep,        \
       size_t *sizep))                                                                             \
    X(rd_kafka_resp_err_t, rd_kafka_header_get_last,                                               \
      (const rd_kafka_headers_t *hdrs, const char *name, const void **valuep, size_t *sizep))      \
    X(rd_kafka_resp_err_t, rd_kafka_message_headers,                                               \
      (const rd_kafka_message_t *rkmessage, rd_kafka_headers_t **hdrsp))                           \
    X(rd_kafka_resp_err_t, rd_kafka_message_detach_headers,                                        \
      (rd_kafka_message_t * rkmessage, rd_kafka_headers_t **hdrsp))                                \
    X(int64_t, rd_kafka_message_timestamp,                                                         \
      (const rd_kafka_message_t *rkmessage, rd_kafka_timestamp_type_t *tstype))                    \
    X(const char *, rd_kafka_message_errstr, (const rd_kafka_message_t *rkmessage))                \
    X(void, rd_kafka_message_destroy, (rd_kafka_message_t * rkmessage))                            \
    X(rd_kafka_resp_err_t, rd_kafka_poll_set_consumer, (rd_kafka_t * rk))                          \
    X(rd_kafka_queue_t *, rd_kafka_queue_get_consumer, (rd_kafka_t * rk))                          \
    X(void, rd_kafka_queue_destroy, (rd_kafka_queue_t * rkqu))                                     \
    X(rd_kafka_queue_t *, rd_kafka_queue_get_main, (rd_kafka_t * rk))                              \
    X(void, rd_kafka_queue_yield, (rd_kafka_queue_t * rkqu))                                       \
    X(ssize_t, rd_kafka_consume_batch_queue,                                                       \
      (rd_kafka_queue_t * rkqu, int timeout_ms, rd_kafka_message_t **rkmessages, size_t size))     \
    X(rd_kafka_topic_partition_list_t *, rd_kafka_topic_partition_list_new, (int size))            \
    X(rd_kafka_topic_partition_t *, rd_kafka_topic_partition_list_add,                                                   \
      (rd_kafka_topic_partition_list_t * rktparlist, const char *topic, int32_t partition))        \
    X(void, rd_kafka_topic_partition_list_destroy, (rd_kafka_topic_partition_list_t * rktparlist)) \
    X(rd_kafka_resp_err_t, rd_kafka_subscribe,                                                     \
      (rd_kafka_t * rk, const rd_kafka_topic_partition_list_t *topics))                            \
    X(rd_kafka_error_t *, rd_kafka_offset_store_message, (rd_kafka_message_t * rkmessage))         \
    X(rd_kafka_resp_err_t, rd_kafka_consumer_close, (rd_kafka_t * rk))                             \
    X(rd_kafka_error_t *, rd_kafka_consumer_close_queue, (rd_kafka_t * rk, rd_kafka_queue_t *rkqu))\
    X(int, rd_kafka_consumer_closed, (rd_kafka_t * rk))                                            \
    X(int, rd_kafka_assignment_lost, (rd_kafka_t * rk))                                            \
    X(void, rd_kafka_conf_set_rebalance_cb, (rd_kafka_conf_t * conf, esk_rebalance_cb_t cb))       \
    X(rd_kafka_error_t *, rd_kafka_incremental_assign,                                             \
      (rd_kafka_t * rk, const rd_kafka_topic_partition_list_t *partitions))                        \
    X(rd_kafka_error_t *, rd_kafka_incremental_unassign,                                           \
      (rd_kafka_t * rk, const rd_kafka_topic_partition_list_t *partitions))                        \
    X(rd_kafka_resp_err_t, rd_kafka_assign,                                                        \
      (rd_kafka_t * rk, const rd_kafka_topic_partition_list_t *partitions))                        \
    X(rd_kafka_resp_err_t, rd_kafka_committed,                                                     \
      (rd_kafka_t * rk, rd_kafka_topic_partition_list_t *partitions, int timeout_ms))              \
    X(rd_kafka_resp_err_t, rd_kafka_query_watermark_offsets,                                       \
      (rd_kafka_t * rk, const char *topic, int32_t partition, int64_t *low, int64_t *high,         \
       int timeout_ms))                                                                            \
    X(rd_kafka_resp_err_t, rd_kafka_offsets_for_times,                                             \
      (rd_kafka_t * rk, rd_kafka_topic_partition_list_t *offsets, int timeout_ms))                 \
    X(const char *, rd_kafka_rebalance_protocol, (rd_kafka_t * rk))                              \
    X(rd_kafka_resp_err_t, rd_kafka_commit,                                                        \
      (rd_kafka_t * rk, const rd_kafka_topic_partition_list_t *offsets, int async))                \
    X(rd_kafka_resp_err_t, rd_kafka_offsets_store,                                                 \
      (rd_kafka_t * rk, rd_kafka_topic_partition_list_t *offsets))                                 \
    X(rd_kafka_error_t *, rd_kafka_seek_partitions,                                                \
      (rd_kafka_t * rk, rd_kafka_topic_partition_list_t *partitions, int timeout_ms))              \
    X(rd_kafka_msg_status_t, rd_kafka_message_status, (const rd_kafka_message_t *rkmessage))

/* The mock cluster (outside librdkafka's ABI promise): MockCluster is unavailable without them. */
#define ESK_RDK_OPTIONAL(X)                                                                        \
    X(rd_kafka_mock_cluster_t *, rd_kafka_mock_cluster_new, (rd_kafka_t * rk, int broker_cnt))     \
    X(void, rd_kafka_mock_cluster_destroy, (rd_kafka_mock_cluster_t * mcluster))                   \
    X(const char *, rd_kafka_mock_cluster_bootstraps, (const rd_kafka_mock_cluster_t *mcluster))   \
    X(rd_kafka_resp_err_t, rd_kafka_mock_topic_create,                                             \
      (rd_kafka_mock_cluster_t * mcluster, const char *topic, int partition_cnt,                   \
       int replication_factor))                                                                    \
    X(void, rd_kafka_mock_group_initial_rebalance_delay_ms,                                        \
      (rd_kafka_mock_cluster_t * mcluster, int32_t delay_ms))

#define ESK_RDK_FIELD(ret, name, params) ret(*p_##name) params;
typedef struct {
    ESK_RDK_REQUIRED(ESK_RDK_FIELD)
    ESK_RDK_OPTIONAL(ESK_RDK_FIELD)
} esk_rdk_api_t;
#undef ESK_RDK_FIELD

/* Filled once at import (under the import lock), read-only afterwards: safe from any thread. */
static esk_rdk_api_t esk_rdk;

/* A call through the table; rdkafka.pxd gives every declared function this C name. */
#define ESK_RDK(name) (*esk_rdk.p_##name)

/* Fill the table from `handle`. Returns NULL, or the name of the first missing required symbol
 * (the table must not be used then). */
static const char *esk_rdk_load(void *handle) {
#define ESK_RDK_LOAD_REQUIRED(ret, name, params)                                                  \
    *(void **)(&esk_rdk.p_##name) = dlsym(handle, #name);                                          \
    if (esk_rdk.p_##name == NULL)                                                                  \
        return #name;
#define ESK_RDK_LOAD_OPTIONAL(ret, name, params)                                                  \
    *(void **)(&esk_rdk.p_##name) = dlsym(handle, #name);
    ESK_RDK_REQUIRED(ESK_RDK_LOAD_REQUIRED)
    ESK_RDK_OPTIONAL(ESK_RDK_LOAD_OPTIONAL)
#undef ESK_RDK_LOAD_REQUIRED
#undef ESK_RDK_LOAD_OPTIONAL
    return NULL;
}

/* NULL when the whole mock API was found, else the name of the first missing symbol. */
static const char *esk_rdk_missing_mock(void) {
#define ESK_RDK_CHECK(ret, name, params)                                                          \
    if (esk_rdk.p_##name == NULL)                                                                  \
        return #name;
    ESK_RDK_OPTIONAL(ESK_RDK_CHECK)
#undef ESK_RDK_CHECK
    return NULL;
}

#endif /* ESK_RDKAFKA_ABI_H */
