/*
 * esbench: the C contender of eventstream's benchmarks, the ceiling for what a client over
 * librdkafka can do on this machine and broker. It sends the same pre-serialized BenchEvent
 * payloads with the same six CloudEvents headers as eventstream, with the same librdkafka
 * properties (given with -X), and consumes them the way eventstream's consumer does: poll,
 * look up ce_type, store the offset after "handling" (counting). No protobuf decoding: the C
 * program is the floor of per-event cost, not a fair typed client.
 *
 * Built at benchmark time by benchmarks/native.py:
 *   gcc -O2 esbench.c -o ../bin/esbench -L<dir> -l:librdkafka-<hash>.so.1 -Wl,-rpath,<dir>
 * against the librdkafka bundled in the confluent-kafka wheel. No librdkafka headers are needed:
 * the few declarations below follow the documented public API of rdkafka.h, whose ABI
 * (librdkafka.so.1) is stable.
 *
 * Modes (stdout: one JSON object on the last line; stderr: "@progress <done> <total>" lines and
 * diagnostics; the runner learns that an e2e consumer is assigned from the broker's group state):
 *   produce      --count N --batch B            N events in blocking batches of B (flush per batch)
 *   produce-async --count N --batch B --inflight K   calls of B events, up to K of them awaiting
 *                                              their acknowledgements at a time (pipelined);
 *                --report-thread 1             ... with the reports served by a second thread
 *   latency      --count N                      N sequential single-event produce+flush, samples
 *   consume      --count N --group G            time from the first to the N-th event handled
 *   e2e-produce  --count N --rate R             events stamped with CLOCK_MONOTONIC at R per second
 *   e2e-consume  --count N --group G --warmup W latency samples of events with seq >= W
 * Common: --brokers B --topic T --payload FILE --source S --type T [--warmup W] [-X key=value]...
 *
 * produce, produce-async and consume also report, per thread of the process, the CPU time and the
 * page faults of the measured section ("threads"), read from /proc/self/task/<tid>/ as
 * benchmarks/threads.py does for the Python contenders.
 */
#define _GNU_SOURCE 1
#include <dirent.h>
#include <pthread.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* ---- the part of librdkafka's public API used here (rdkafka.h, ABI of librdkafka.so.1) ---- */
typedef struct rd_kafka_s rd_kafka_t;
typedef struct rd_kafka_conf_s rd_kafka_conf_t;
typedef struct rd_kafka_topic_s rd_kafka_topic_t;
typedef struct rd_kafka_topic_conf_s rd_kafka_topic_conf_t;
typedef struct rd_kafka_headers_s rd_kafka_headers_t;
typedef struct rd_kafka_error_s rd_kafka_error_t;
typedef int rd_kafka_resp_err_t;

typedef struct {
    rd_kafka_resp_err_t err;
    rd_kafka_topic_t *rkt;
    int32_t partition;
    void *payload;
    size_t len;
    void *key;
    size_t key_len;
    int64_t offset;
    void *_private;
} rd_kafka_message_t;

typedef struct rd_kafka_topic_partition_list_s rd_kafka_topic_partition_list_t; /* opaque here */

enum { VT_RKT = 2, VT_VALUE = 4, VT_OPAQUE = 6, VT_MSGFLAGS = 7, VT_HEADERS = 10 };

typedef struct {
    int vtype;
    union {
        rd_kafka_topic_t *rkt;
        int i;
        void *ptr;
        struct {
            void *ptr;
            size_t size;
        } mem;
        rd_kafka_headers_t *headers;
        char _pad[64];
    } u;
} rd_kafka_vu_t;

#define RD_KAFKA_PRODUCER 0
#define RD_KAFKA_CONSUMER 1
#define RD_KAFKA_CONF_OK 0
#define RD_KAFKA_MSG_F_COPY 0x2
#define ERR_QUEUE_FULL (-184)
#define ERR_PARTITION_EOF (-191)

extern const char *rd_kafka_version_str(void);
extern const char *rd_kafka_err2str(rd_kafka_resp_err_t err);
extern rd_kafka_conf_t *rd_kafka_conf_new(void);
extern int rd_kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value,
                             char *errstr, size_t errstr_size);
extern void rd_kafka_conf_set_dr_msg_cb(
    rd_kafka_conf_t *conf, void (*cb)(rd_kafka_t *, const rd_kafka_message_t *, void *));
extern void rd_kafka_conf_set_error_cb(rd_kafka_conf_t *conf,
                                       void (*cb)(rd_kafka_t *, int, const char *, void *));
extern rd_kafka_t *rd_kafka_new(int type, rd_kafka_conf_t *conf, char *errstr, size_t size);
extern void rd_kafka_destroy(rd_kafka_t *rk);
extern rd_kafka_topic_t *rd_kafka_topic_new(rd_kafka_t *rk, const char *topic,
                                            rd_kafka_topic_conf_t *conf);
extern void rd_kafka_topic_destroy(rd_kafka_topic_t *rkt);
extern int rd_kafka_poll(rd_kafka_t *rk, int timeout_ms);
extern void rd_kafka_yield(rd_kafka_t *rk);
extern int rd_kafka_outq_len(rd_kafka_t *rk);
extern rd_kafka_resp_err_t rd_kafka_flush(rd_kafka_t *rk, int timeout_ms);
extern rd_kafka_error_t *rd_kafka_produceva(rd_kafka_t *rk, const rd_kafka_vu_t *vus, size_t cnt);
extern rd_kafka_resp_err_t rd_kafka_error_code(const rd_kafka_error_t *error);
extern void rd_kafka_error_destroy(rd_kafka_error_t *error);
extern rd_kafka_headers_t *rd_kafka_headers_new(size_t initial_count);
extern void rd_kafka_headers_destroy(rd_kafka_headers_t *hdrs);
extern rd_kafka_resp_err_t rd_kafka_header_add(rd_kafka_headers_t *hdrs, const char *name,
                                               ssize_t name_size, const void *value,
                                               ssize_t value_size);
extern rd_kafka_resp_err_t rd_kafka_header_get_last(const rd_kafka_headers_t *hdrs,
                                                    const char *name, const void **valuep,
                                                    size_t *sizep);
extern rd_kafka_resp_err_t rd_kafka_message_headers(const rd_kafka_message_t *msg,
                                                    rd_kafka_headers_t **hdrsp);
extern void rd_kafka_message_destroy(rd_kafka_message_t *msg);
extern rd_kafka_resp_err_t rd_kafka_message_detach_headers(rd_kafka_message_t *msg,
                                                           rd_kafka_headers_t **hdrsp);
extern rd_kafka_resp_err_t rd_kafka_header_remove(rd_kafka_headers_t *hdrs, const char *name);
extern rd_kafka_resp_err_t rd_kafka_poll_set_consumer(rd_kafka_t *rk);
extern rd_kafka_message_t *rd_kafka_consumer_poll(rd_kafka_t *rk, int timeout_ms);
extern rd_kafka_topic_partition_list_t *rd_kafka_topic_partition_list_new(int size);
extern void *rd_kafka_topic_partition_list_add(rd_kafka_topic_partition_list_t *list,
                                               const char *topic, int32_t partition);
extern void rd_kafka_topic_partition_list_destroy(rd_kafka_topic_partition_list_t *list);
extern rd_kafka_resp_err_t rd_kafka_subscribe(rd_kafka_t *rk,
                                              const rd_kafka_topic_partition_list_t *topics);
extern rd_kafka_error_t *rd_kafka_offset_store_message(rd_kafka_message_t *msg);
extern rd_kafka_resp_err_t rd_kafka_consumer_close(rd_kafka_t *rk);

/* ---- options ------------------------------------------------------------------------------ */
#define MAX_PROPS 64
static struct {
    const char *mode, *brokers, *topic, *payload_path, *group, *source, *type;
    long count, batch, warmup, inflight, report_thread;
    double rate;
    const char *props[MAX_PROPS][2];
    int nprops;
} opt = {.batch = 1000, .inflight = 4, .rate = 1000.0, .source = "bench", .type = "eventstream.bench.BenchEvent"};

static unsigned char *payload;
static size_t payload_len;
static long delivered, failed;
static rd_kafka_resp_err_t first_error;

static void die(const char *what, const char *detail) {
    fprintf(stderr, "esbench: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(1);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double cpu_seconds(void) { /* all threads of the process, librdkafka's included */
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void progress(long done, long total) {
    static uint64_t last;
    uint64_t t = now_ns();
    if (done == total || t - last > 200000000u) {
        last = t;
        fprintf(stderr, "@progress %ld %ld\n", done, total);
        fflush(stderr);
    }
}

/* ---- CPU time and page faults per thread (as benchmarks/threads.py) ------------------------ */
#define MAX_TASKS 256
typedef struct {
    int tid;
    char comm[32];
    long long cpu_ns; /* schedstat: time on a CPU; -1 when the kernel has no schedstat */
    long long utime, stime, minflt, majflt;
} task_t;
typedef struct {
    int n;
    task_t t[MAX_TASKS];
} snap_t;
static snap_t snap_before, snap_after;

static int read_text(const char *path, char *buf, size_t size) {
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, size - 1, f);
    fclose(f);
    buf[n] = '\0';
    return n > 0;
}

static int read_task(int tid, task_t *t) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
    if (!read_text(path, buf, sizeof buf))
        return 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime
     * stime */
    long long v[13];
    char state;
    if (sscanf(p + 1, " %c %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld", &state,
               &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9], &v[10], &v[11],
               &v[12]) != 13)
        return 0;
    t->tid = tid;
    t->minflt = v[7];
    t->majflt = v[9];
    t->utime = v[11];
    t->stime = v[12];
    snprintf(path, sizeof path, "/proc/self/task/%d/schedstat", tid);
    t->cpu_ns = read_text(path, buf, sizeof buf) ? atoll(buf) : -1;
    snprintf(path, sizeof path, "/proc/self/task/%d/comm", tid);
    if (!read_text(path, t->comm, sizeof t->comm))
        t->comm[0] = '\0';
    t->comm[strcspn(t->comm, "\n")] = '\0';
    return 1;
}

/* The measured thread's own counters are read last before a section and first after it. */
static void snap_take(snap_t *s, int first, int last) {
    int tids[MAX_TASKS], n = 0;
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    while (d && (e = readdir(d)) && n < MAX_TASKS)
        if (e->d_name[0] != '.')
            tids[n++] = atoi(e->d_name);
    if (d)
        closedir(d);
    for (int i = 0; i < n; i++) { /* move `first` to the front, `last` to the back */
        if (tids[i] == first) {
            tids[i] = tids[0];
            tids[0] = first;
        }
    }
    for (int i = 0; i < n; i++) {
        if (tids[i] == last) {
            tids[i] = tids[n - 1];
            tids[n - 1] = last;
        }
    }
    s->n = 0;
    for (int i = 0; i < n; i++)
        if (read_task(tids[i], &s->t[s->n]))
            s->n++;
}

/* ", \"threads\": [...], \"ended\": N" of the section between two snapshots. */
static void print_threads(const snap_t *b, const snap_t *a, const char *role) {
    long tck = sysconf(_SC_CLK_TCK);
    int me = (int)getpid(), ended = 0;
    printf(", \"threads\": [");
    for (int i = 0; i < a->n; i++) {
        const task_t *x = &a->t[i], *y = NULL;
        task_t zero = {0};
        for (int j = 0; j < b->n; j++)
            if (b->t[j].tid == x->tid)
                y = &b->t[j];
        if (!y)
            y = &zero;
        const char *r = x->tid == me ? role : strncmp(x->comm, "rdk:", 4) == 0 ? "librdkafka"
                                                                                : "other";
        double user = (double)(x->utime - y->utime) / (double)tck;
        double sys = (double)(x->stime - y->stime) / (double)tck;
        double cpu = x->cpu_ns >= 0 && y->cpu_ns >= 0 ? (double)(x->cpu_ns - y->cpu_ns) / 1e9
                                                      : user + sys;
        printf("%s{\"tid\": %d, \"name\": \"%s\", \"role\": \"%s\", \"cpu_s\": %.9f, "
               "\"user_s\": %.2f, \"sys_s\": %.2f, \"minflt\": %lld, \"majflt\": %lld, "
               "\"started\": %s}",
               i ? ", " : "", x->tid, x->comm, r, cpu, user, sys, x->minflt - y->minflt,
               x->majflt - y->majflt, y == &zero ? "true" : "false");
    }
    for (int j = 0; j < b->n; j++) {
        int found = 0;
        for (int i = 0; i < a->n; i++)
            found |= a->t[i].tid == b->t[j].tid;
        ended += !found;
    }
    printf("], \"ended\": %d", ended);
}

/* produce-async --report-thread 1: the reports thread serves every delivery report (this
 * callback runs there) until `reports_stop`; the calling thread waits on `call_done`. Each
 * message's opaque is then a msg_ref_t: the report detaches the message's header list into
 * `spent`, and the next call in the same place reuses it (as eventstream does), so that the
 * reports thread frees no header the calling thread allocated. */
typedef struct {
    long *call_left;
    rd_kafka_headers_t *spent;
} msg_ref_t;
static pthread_mutex_t call_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t call_done = PTHREAD_COND_INITIALIZER;
static int reports_stop; /* atomic */

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
    (void)opaque;
    if (msg->err) {
        if (!failed)
            first_error = msg->err;
        if (opt.report_thread)
            __atomic_add_fetch(&failed, 1, __ATOMIC_RELEASE); /* the caller reads it meanwhile */
        else
            failed++;
    } else {
        delivered++; /* read by the caller once the reports thread is joined */
    }
    if (!msg->_private)
        return;
    if (!opt.report_thread) {
        long *call_left = msg->_private; /* produce-async: the call's unreported events */
        if (--*call_left == 0)
            rd_kafka_yield(rk); /* a call completed: let the waiting rd_kafka_flush() return */
        return;
    }
    msg_ref_t *ref = msg->_private;
    rd_kafka_message_detach_headers((rd_kafka_message_t *)msg, &ref->spent);
    if (__atomic_sub_fetch(ref->call_left, 1, __ATOMIC_ACQ_REL) == 0) {
        pthread_mutex_lock(&call_lock); /* the caller checks and waits under it: no lost wake-up */
        pthread_cond_broadcast(&call_done);
        pthread_mutex_unlock(&call_lock);
    }
}

/* Serves the main queue as eventstream's owner thread does for produce_async(): flush (which
 * sends what lingers at once) while events are outstanding, else poll. */
static void *serve_reports(void *arg) {
    rd_kafka_t *rk = arg;
    while (!__atomic_load_n(&reports_stop, __ATOMIC_ACQUIRE)) {
        if (rd_kafka_outq_len(rk) > 0)
            rd_kafka_flush(rk, 10);
        else
            rd_kafka_poll(rk, 10);
    }
    return NULL;
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    (void)rk, (void)opaque;
    fprintf(stderr, "esbench: librdkafka error %d: %s\n", err, reason);
}

static rd_kafka_t *new_client(int type) {
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", opt.brokers, errstr, sizeof errstr))
        die("bootstrap.servers", errstr);
    if (type == RD_KAFKA_CONSUMER &&
        rd_kafka_conf_set(conf, "group.id", opt.group, errstr, sizeof errstr))
        die("group.id", errstr);
    for (int i = 0; i < opt.nprops; i++)
        if (rd_kafka_conf_set(conf, opt.props[i][0], opt.props[i][1], errstr, sizeof errstr))
            die(opt.props[i][0], errstr);
    rd_kafka_conf_set_error_cb(conf, on_error);
    if (type == RD_KAFKA_PRODUCER)
        rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, sizeof errstr);
    if (!rk)
        die("rd_kafka_new", errstr);
    return rk;
}

/* ---- producing ------------------------------------------------------------------------------ */
static char id_prefix[17];
static unsigned long long next_id = 1;

/* ce_time of the current call: like eventstream, formatted once per call (set_event_time). */
static char event_time[32];
static int event_time_len;

static void set_event_time(void) {
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(event_time, sizeof event_time, "%Y-%m-%dT%H:%M:%S", &tm);
    event_time_len = (int)n + snprintf(event_time + n, sizeof event_time - n, ".%03ldZ",
                                       ts.tv_nsec / 1000000L);
}

/* Enqueue one event with eventstream's six headers; retries while librdkafka's queue is full.
 * `hdrs`: NULL, or a reported message's list to reuse (its ce_id and ce_time are replaced). */
static void produce_one(rd_kafka_t *rk, rd_kafka_topic_t *rkt, const unsigned char *value,
                        void *opaque, rd_kafka_headers_t *hdrs) {
    char id[48];
    int idlen = snprintf(id, sizeof id, "%s-%llu", id_prefix, next_id++);
    if (hdrs) {
        rd_kafka_header_remove(hdrs, "ce_id");
        rd_kafka_header_remove(hdrs, "ce_time");
        rd_kafka_header_add(hdrs, "ce_id", -1, id, idlen);
    } else {
        hdrs = rd_kafka_headers_new(6);
        rd_kafka_header_add(hdrs, "content-type", -1, "application/protobuf", 20);
        rd_kafka_header_add(hdrs, "ce_specversion", -1, "1.0", 3);
        rd_kafka_header_add(hdrs, "ce_id", -1, id, idlen);
        rd_kafka_header_add(hdrs, "ce_source", -1, opt.source, (ssize_t)strlen(opt.source));
        rd_kafka_header_add(hdrs, "ce_type", -1, opt.type, (ssize_t)strlen(opt.type));
    }
    rd_kafka_header_add(hdrs, "ce_time", -1, event_time, event_time_len);
    rd_kafka_vu_t vu[5];
    memset(vu, 0, sizeof vu);
    vu[0].vtype = VT_RKT;
    vu[0].u.rkt = rkt;
    vu[1].vtype = VT_VALUE;
    vu[1].u.mem.ptr = (void *)value;
    vu[1].u.mem.size = payload_len;
    vu[2].vtype = VT_MSGFLAGS;
    vu[2].u.i = RD_KAFKA_MSG_F_COPY;
    vu[3].vtype = VT_HEADERS;
    vu[3].u.headers = hdrs;
    vu[4].vtype = VT_OPAQUE;
    vu[4].u.ptr = opaque;
    for (;;) {
        rd_kafka_error_t *error = rd_kafka_produceva(rk, vu, 5);
        if (!error)
            return; /* the headers now belong to the message */
        rd_kafka_resp_err_t code = rd_kafka_error_code(error);
        rd_kafka_error_destroy(error);
        if (code != ERR_QUEUE_FULL) {
            rd_kafka_headers_destroy(hdrs);
            die("produce", rd_kafka_err2str(code));
        }
        rd_kafka_poll(rk, 10);
    }
}

static void wait_acks(rd_kafka_t *rk) {
    while (rd_kafka_flush(rk, 1000) != 0)
        ;
    if (failed)
        die("delivery failed", rd_kafka_err2str(first_error));
}

static void stamp(unsigned char *value, uint64_t sent_ns, uint64_t seq) {
    memcpy(value + 1, &sent_ns, 8); /* little-endian fixed64, as protobuf encodes it (x86-64) */
    memcpy(value + 10, &seq, 8);
}

static void print_samples(const char *head, const uint64_t *samples, long n) {
    printf("{%s\"samples_ns\": [", head);
    for (long i = 0; i < n; i++)
        printf(i ? ",%" PRIu64 : "%" PRIu64, samples[i]);
    printf("]}\n");
}

/* Blocking calls of up to --batch events, each flushed before the next (not timed). */
static void produce_calls(rd_kafka_t *rk, rd_kafka_topic_t *rkt, long events, int report) {
    for (long done = 0; done < events;) {
        long n = events - done < opt.batch ? events - done : opt.batch;
        set_event_time();
        for (long i = 0; i < n; i++)
            produce_one(rk, rkt, payload, NULL, NULL);
        wait_acks(rk);
        done += n;
        if (report)
            progress(done, opt.count);
    }
}

static int run_produce(void) {
    rd_kafka_t *rk = new_client(RD_KAFKA_PRODUCER);
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, opt.topic, NULL);
    /* Warm-up: connections, producer id, metadata, buffers; in calls like the measured ones. */
    produce_calls(rk, rkt, opt.warmup, 0);
    long base = delivered;
    int me = (int)getpid();
    snap_take(&snap_before, 0, me);
    double cpu0 = cpu_seconds();
    uint64_t t0 = now_ns();
    produce_calls(rk, rkt, opt.count, 1);
    double secs = (double)(now_ns() - t0) / 1e9;
    double cpu = cpu_seconds() - cpu0;
    snap_take(&snap_after, me, 0);
    printf("{\"events\": %ld, \"seconds\": %.6f, \"cpu_seconds\": %.6f, \"acknowledged\": %ld",
           opt.count, secs, cpu, delivered - base);
    print_threads(&snap_before, &snap_after, "calling");
    printf("}\n");
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    return 0;
}

/* Calls of up to --batch events with up to --inflight calls awaiting their acknowledgements:
 * a new call is enqueued as soon as the oldest one completes. Delivery reports are served by
 * rd_kafka_flush() (which sends what lingers at once, as eventstream's poll thread does while
 * calls wait); the report that completes a call yields, so that flush returns at once. With
 * --report-thread 1 a second thread serves them instead, and the calling thread waits for the
 * oldest call on a condition variable: the structure of a client whose calling thread is an
 * event loop, which must not block in rd_kafka_flush(). */
#define MAX_INFLIGHT 64
static void produce_pipelined(rd_kafka_t *rk, rd_kafka_topic_t *rkt, long events, int report) {
    static long left[MAX_INFLIGHT], size[MAX_INFLIGHT];
    /* --report-thread 1: the opaques of each slot's call (kept, with the header lists they hold,
     * for the measured calls after the warm-up; left to the process's exit) */
    static msg_ref_t *refs[MAX_INFLIGHT];
    long started = 0, completed = 0, head = 0, next = 0;
    while (started < events || head < next) {
        if (started < events && next - head < opt.inflight) {
            long n = events - started < opt.batch ? events - started : opt.batch;
            long slot = next % opt.inflight;
            left[slot] = size[slot] = n;
            set_event_time();
            if (opt.report_thread && !refs[slot] && !(refs[slot] = calloc(opt.batch, sizeof **refs)))
                die("out of memory", NULL);
            for (long i = 0; i < n; i++) {
                if (!opt.report_thread) {
                    produce_one(rk, rkt, payload, &left[slot], NULL);
                    continue;
                }
                msg_ref_t *ref = &refs[slot][i]; /* its last call in this slot completed */
                rd_kafka_headers_t *reuse = ref->spent;
                ref->spent = NULL;
                ref->call_left = &left[slot];
                produce_one(rk, rkt, payload, ref, reuse);
            }
            started += n;
            next++;
            continue;
        }
        long slot = head % opt.inflight;
        if (opt.report_thread) {
            pthread_mutex_lock(&call_lock);
            while (__atomic_load_n(&left[slot], __ATOMIC_ACQUIRE) > 0)
                pthread_cond_wait(&call_done, &call_lock);
            pthread_mutex_unlock(&call_lock);
        } else {
            while (left[slot] > 0)
                rd_kafka_flush(rk, 100);
        }
        if (__atomic_load_n(&failed, __ATOMIC_ACQUIRE))
            die("delivery failed", rd_kafka_err2str(first_error));
        completed += size[slot];
        head++;
        if (report)
            progress(completed, opt.count);
    }
}

static int run_produce_async(void) {
    if (opt.inflight < 1 || opt.inflight > MAX_INFLIGHT)
        die("--inflight must be 1..64", NULL);
    rd_kafka_t *rk = new_client(RD_KAFKA_PRODUCER);
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, opt.topic, NULL);
    pthread_t reports;
    if (opt.report_thread && pthread_create(&reports, NULL, serve_reports, rk) != 0)
        die("cannot start the reports thread", NULL);
    if (opt.report_thread)
        pthread_setname_np(reports, "esbench-reports");
    produce_pipelined(rk, rkt, opt.warmup, 0);
    long base = delivered;
    int me = (int)getpid();
    snap_take(&snap_before, 0, me);
    double cpu0 = cpu_seconds();
    uint64_t t0 = now_ns();
    produce_pipelined(rk, rkt, opt.count, 1);
    double secs = (double)(now_ns() - t0) / 1e9;
    double cpu = cpu_seconds() - cpu0;
    snap_take(&snap_after, me, 0);
    printf("{\"events\": %ld, \"seconds\": %.6f, \"cpu_seconds\": %.6f, \"acknowledged\": %ld, "
           "\"in_flight\": %ld",
           opt.count, secs, cpu, delivered - base, opt.inflight);
    print_threads(&snap_before, &snap_after, "calling");
    printf("}\n");
    if (opt.report_thread) {
        __atomic_store_n(&reports_stop, 1, __ATOMIC_RELEASE);
        pthread_join(reports, NULL);
    }
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    return 0;
}

static int run_latency(void) {
    rd_kafka_t *rk = new_client(RD_KAFKA_PRODUCER);
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, opt.topic, NULL);
    uint64_t *samples = calloc((size_t)opt.count, sizeof *samples);
    for (long i = 0; i < opt.warmup + opt.count; i++) {
        uint64_t t0 = now_ns();
        set_event_time();
        produce_one(rk, rkt, payload, NULL, NULL);
        wait_acks(rk);
        if (i >= opt.warmup) {
            samples[i - opt.warmup] = now_ns() - t0;
            progress(i - opt.warmup + 1, opt.count);
        }
    }
    print_samples("", samples, opt.count);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    return 0;
}

static void sleep_until(uint64_t due) {
    uint64_t t = now_ns();
    if (due > t + 100000u) { /* leave the last 0.1 ms to spinning: sleeps overshoot */
        struct timespec ts = {0, (long)(due - t - 100000u)};
        nanosleep(&ts, NULL);
    }
    while (now_ns() < due)
        ;
}

static int run_e2e_produce(void) {
    rd_kafka_t *rk = new_client(RD_KAFKA_PRODUCER);
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, opt.topic, NULL);
    unsigned char *value = malloc(payload_len);
    memcpy(value, payload, payload_len);
    long calls = 0, sent = 0;
    uint64_t start = now_ns();
    double period = 1e9 / opt.rate;
    while (sent < opt.count) {
        sleep_until(start + (uint64_t)(period * (double)sent));
        /* Everything due by now goes in this call (normally one event). */
        long due = (long)((double)(now_ns() - start) / period) + 1;
        if (due > opt.count)
            due = opt.count;
        uint64_t t = now_ns();
        set_event_time();
        for (; sent < due; sent++) {
            stamp(value, t, (uint64_t)sent);
            produce_one(rk, rkt, value, NULL, NULL);
        }
        wait_acks(rk);
        calls++;
        progress(sent, opt.count);
    }
    double secs = (double)(now_ns() - start) / 1e9;
    printf("{\"events\": %ld, \"calls\": %ld, \"seconds\": %.6f}\n", sent, calls, secs);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    return 0;
}

/* ---- consuming ------------------------------------------------------------------------------ */
static rd_kafka_t *new_consumer(void) {
    rd_kafka_t *rk = new_client(RD_KAFKA_CONSUMER);
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, opt.topic, -1);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (err)
        die("subscribe", rd_kafka_err2str(err));
    return rk;
}

/* What eventstream does per record before the handler: check ce_type. */
static int accept(const rd_kafka_message_t *msg) {
    rd_kafka_headers_t *hdrs;
    const void *val;
    size_t size;
    if (rd_kafka_message_headers(msg, &hdrs) == 0 &&
        rd_kafka_header_get_last(hdrs, "ce_type", &val, &size) == 0)
        return size == strlen(opt.type) && memcmp(val, opt.type, size) == 0;
    return 1;
}

static void store(rd_kafka_message_t *msg) {
    rd_kafka_error_t *error = rd_kafka_offset_store_message(msg);
    if (error)
        rd_kafka_error_destroy(error);
}

static int run_consume(void) {
    rd_kafka_t *rk = new_consumer();
    long handled = 0, skipped = 0;
    uint64_t first = 0, last = 0;
    double cpu_first = 0, cpu_last = 0;
    while (handled < opt.count) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 100);
        if (!msg)
            continue;
        if (msg->err) {
            if (msg->err != ERR_PARTITION_EOF)
                fprintf(stderr, "esbench: consume: %s\n", rd_kafka_err2str(msg->err));
        } else if (accept(msg)) {
            if (!handled)
                snap_take(&snap_before, 0, (int)getpid());
            last = now_ns();
            if (!handled) {
                first = last;
                cpu_first = cpu_seconds();
            }
            handled++;
            if (handled == opt.count) {
                cpu_last = cpu_seconds();
                snap_take(&snap_after, (int)getpid(), 0);
            }
            store(msg);
            if ((handled & 1023) == 0)
                progress(handled, opt.count);
        } else {
            skipped++;
            store(msg);
        }
        rd_kafka_message_destroy(msg);
    }
    progress(handled, opt.count);
    printf("{\"events\": %ld, \"seconds\": %.6f, \"cpu_seconds\": %.6f, \"skipped\": %ld",
           handled, (double)(last - first) / 1e9, cpu_last - cpu_first, skipped);
    print_threads(&snap_before, &snap_after, "consuming");
    printf("}\n");
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return 0;
}

static int run_e2e_consume(void) {
    rd_kafka_t *rk = new_consumer();
    long measured = opt.count - opt.warmup, got = 0;
    uint64_t *samples = calloc((size_t)(measured > 0 ? measured : 1), sizeof *samples);
    long n = 0;
    while (got < opt.count) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 100);
        if (!msg)
            continue;
        if (!msg->err && accept(msg) && msg->len >= 18) {
            uint64_t t = now_ns(), sent, seq;
            memcpy(&sent, (const char *)msg->payload + 1, 8);
            memcpy(&seq, (const char *)msg->payload + 10, 8);
            if ((long)seq >= opt.warmup && n < measured)
                samples[n++] = t - sent;
            got++;
            store(msg);
            progress(got, opt.count);
        }
        rd_kafka_message_destroy(msg);
    }
    print_samples("", samples, n);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return 0;
}

/* ---- main ---------------------------------------------------------------------------------- */
static void load_payload(void) {
    FILE *f = fopen(opt.payload_path, "rb");
    if (!f)
        die("cannot open payload", opt.payload_path);
    payload = malloc(1 << 20);
    payload_len = fread(payload, 1, 1 << 20, f);
    fclose(f);
    if (payload_len < 18 || payload[0] != 0x09 || payload[9] != 0x11)
        die("payload is not an encoded BenchEvent", opt.payload_path);
}

int main(int argc, char **argv) {
    if (argc < 2)
        die("usage: esbench MODE [options] (see the comment at the top of esbench.c)", NULL);
    opt.mode = argv[1];
    if (strcmp(opt.mode, "version") == 0) {
        printf("{\"librdkafka\": \"%s\"}\n", rd_kafka_version_str());
        return 0;
    }
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            die("missing value for", a);
        i++;
        if (!strcmp(a, "--brokers"))
            opt.brokers = v;
        else if (!strcmp(a, "--topic"))
            opt.topic = v;
        else if (!strcmp(a, "--payload"))
            opt.payload_path = v;
        else if (!strcmp(a, "--group"))
            opt.group = v;
        else if (!strcmp(a, "--source"))
            opt.source = v;
        else if (!strcmp(a, "--type"))
            opt.type = v;
        else if (!strcmp(a, "--count"))
            opt.count = atol(v);
        else if (!strcmp(a, "--batch"))
            opt.batch = atol(v);
        else if (!strcmp(a, "--warmup"))
            opt.warmup = atol(v);
        else if (!strcmp(a, "--inflight"))
            opt.inflight = atol(v);
        else if (!strcmp(a, "--report-thread"))
            opt.report_thread = atol(v);
        else if (!strcmp(a, "--rate"))
            opt.rate = atof(v);
        else if (!strcmp(a, "-X")) {
            char *eq = strchr(v, '=');
            if (!eq || opt.nprops == MAX_PROPS)
                die("bad -X (want key=value)", v);
            *eq = '\0';
            opt.props[opt.nprops][0] = v;
            opt.props[opt.nprops][1] = eq + 1;
            opt.nprops++;
        } else
            die("unknown option", a);
    }
    if (!opt.brokers || !opt.topic || !opt.payload_path || opt.count <= 0 || opt.batch <= 0)
        die("--brokers, --topic, --payload and a positive --count are required", NULL);
    load_payload();
    FILE *r = fopen("/dev/urandom", "rb");
    unsigned char raw[8] = {0};
    if (!r || fread(raw, 1, 8, r) != 8)
        die("cannot read /dev/urandom", strerror(errno));
    fclose(r);
    for (int i = 0; i < 8; i++)
        sprintf(id_prefix + 2 * i, "%02x", raw[i]);
    if (!strcmp(opt.mode, "produce"))
        return run_produce();
    if (!strcmp(opt.mode, "produce-async"))
        return run_produce_async();
    if (!strcmp(opt.mode, "latency"))
        return run_latency();
    if (!strcmp(opt.mode, "e2e-produce"))
        return run_e2e_produce();
    if (!opt.group)
        die("--group is required to consume", NULL);
    if (!strcmp(opt.mode, "consume"))
        return run_consume();
    if (!strcmp(opt.mode, "e2e-consume"))
        return run_e2e_consume();
    die("unknown mode", opt.mode);
    return 2;
}
