# The producer's hot path over librdkafka (eventstream._runtime.backend.NativeProducer):
# serialize a whole call in one compiled loop, enqueue with rd_kafka_produceva(), and wait for
# this call's delivery reports only.
#
# Ownership: the librdkafka handle belongs to one native thread, the owner, started with the
# producer. It serves delivery reports and callbacks (rd_kafka_poll, rd_kafka_flush; except while
# a blocking produce() serves them, see "Serving") and, once asked to stop, fails what is left,
# waits for the calls still inside the handle and destroys the handle. Nobody else destroys it
# (but the starting thread, if the owner could not be started): close() and abandon() only ask,
# and the Producer's finalizer (never joining) asks too. The C state (ProducerState) is shared:
# it is freed by whichever of the owner, the Producer object and the trackers in use lets go of
# it last (refs).
#
# Python objects the owner uses (the Health, the logger, the statistics callback) are attributes
# of the Producer, where the garbage collector sees them; the state points at them (borrowed)
# while `detached` is 0. The Producer sets `detached` in its finalizer, under the GIL; the owner
# reads it under the GIL and takes its own references before calling anything, so a collection
# that runs inside such a call (on the owner thread) cannot pull them away.
#
# Threads:
#   * callers of produce()/produce_async()/flush(): any Python thread, GIL released while
#     enqueueing and while waiting; each counts itself in `active` while it may use the handle;
#     flush() and one waiting produce() at a time (see "Serving") also serve the main queue;
#   * the owner thread (pthread, detached): rd_kafka_poll()/rd_kafka_flush() run _on_delivery()
#     without the GIL; _on_error(), _on_stats() and _on_log() take it (so do these callbacks on
#     a caller's thread while it serves the main queue);
#   * event loops with produce_async() calls outstanding settle their futures themselves (see
#     "Futures").
#
# Memory: a call's serialized values and keys are copied, once, into its tracker's `data`
# buffer (so no Python object has to outlive the call that enqueued it); librdkafka copies the
# keys and headers, and points at the values in `data` (no RD_KAFKA_MSG_F_COPY) until it has
# reported each message. A tracker, `data` included, is freed or reused only once its last
# reference is gone, and the completion's reference goes only after every message of the call
# was reported: a signal, an exception or a timeout can leave a call early at any point without
# librdkafka pointing into freed memory.
#
# Reuse: each producer keeps a few released trackers (with their slots, OutMsg arrays and `data`
# buffers) as spares, sized by its largest recent call, and the arrays of the Deliveries it
# returned once nobody else holds them. In steady state a call allocates no per-call buffer, so
# glibc has nothing of ours to trim from the heap and fault back in on the next call (ce_time is
# formatted in C for the same reason: time.strftime() allocates and frees 1 KiB per call).
#
# Spent headers: each message's header list (allocated by the thread that enqueues it) is taken
# from the message in its delivery report (detached, so librdkafka does not free it) and kept in
# the message's slot. The tracker's next call gives it to that slot's new message: the four
# headers that are the same for every message of the producer (content-type, ce_specversion,
# ce_source, ce_type, in that order) stay, and ce_id and ce_time are removed and added anew at
# the end (_enqueue). So a message allocates two small blocks instead of eight, and frees two,
# on the same thread, which glibc's per-thread cache hands straight back. A list with a
# Telemetry's headers (more than six), and every list of a call that has them, is freed and
# built anew. The slots a call does not use are freed by _tracker_arm, and _tracker_free frees
# what is left. Freed by librdkafka instead, a call's thousands of blocks would sit in glibc's
# fastbins until the caller's next large allocation (the next call's own argument tuple, a 1 KiB
# value) consolidates them all, and every header of the next call would then take malloc's slow
# path. The owner, serving produce_async's reports, never frees what the event loop's thread
# allocated. A spare thus holds its last call's headers until it is used again or freed: no more
# than that call had in flight.
#
# Sending: linger.ms (5 ms) lets librdkafka gather a call's events into few requests while the
# caller enqueues them; once a call has enqueued everything, nothing is gained by lingering. So
# every call, once enqueued, counts in `flushing` and wakes the owner (rd_kafka_queue_yield on the
# main queue), and while that count is > 0 the owner serves with rd_kafka_flush() instead of
# rd_kafka_poll(): librdkafka then sends whatever lingers at once. The callers still wait on
# their own tracker only: flush() waits for every message of the handle. Delivery reports are
# served by the owner (and by callers of flush(), which call rd_kafka_flush() themselves, and by
# a serving produce()); the callbacks touch trackers only through atomics and their locks, so
# more than one serving thread is safe.
#
# Futures: a produce_async() call's tracker, once complete, waits in the state's `completed`
# list; settling its future needs the GIL and the future's loop. Taking the GIL on the owner,
# while the loop's thread holds it to prepare its next call, stalls both threads, so the loop
# settles its own futures: its first outstanding call adds a reader on the state's eventfd
# (_LoopReaders), which the owner writes (no GIL) when calls completed; the reader settles them
# (_resolve_completed, call_soon on its own loop), and the last settled call removes the reader.
# The owner still settles them itself (call_soon_threadsafe) when one of them belongs to a loop
# that cannot watch a file (`completed_direct`), or when nobody read the eventfd within
# POLL_SLICE_MS (a loop that stopped or closed), and when it stops; so does any thread that
# serves the main queue and finds calls completed.
#
# Serving: a blocking produce() serves the main queue itself from the moment its events are
# prepared until it returns, as a C client's loop does: at most one call at a time (`serving`),
# and the owner stands down meanwhile (woken when the call takes `serving`, it waits on
# `serve_cond`; it serves again once that call returns, and goes on when asked to stop). The
# call polls while librdkafka's queue is full, and once enqueued waits in rd_kafka_flush()
# slices (which also send what lingers) until a report on its thread completes its call
# (_tracker_serve). Other calls wait on their trackers as before. So the call's messages are
# freed on the thread that allocated them: freed by the owner, interleaved with the caller's
# next call, they let glibc consolidate and trim the heap top after most calls (measured:
# ~100-140 page faults per 1,000 events of 100 B on the calling thread in about half of the
# runs; none this way). Taking `serving` before enqueueing (not after) leaves the owner time to
# stand down before the first report arrives, so that it does not serve the call's reports.

from cpython.ref cimport Py_XDECREF, Py_REFCNT
from cpython.object cimport Py_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.tuple cimport PyTuple_GET_ITEM
from libc.errno cimport errno
from _weakref import getweakrefcount as _getweakrefcount

cdef extern from "<string.h>" nogil:
    char *strdup(const char *s)

cdef extern from "<unistd.h>" nogil:
    ssize_t read(int fd, void *buf, size_t count)
    ssize_t write(int fd, const void *buf, size_t count)
    int close(int fd)

cdef extern from "<sys/eventfd.h>" nogil:
    int eventfd(unsigned int initval, int flags)
    enum:
        EFD_NONBLOCK
        EFD_CLOEXEC

cdef enum:
    POLL_SLICE_MS = 100                 # owner: longest sleep in rd_kafka_poll()
    WAIT_SLICE_NS = 100_000_000         # callers: longest GIL-free wait between signal checks
    QUEUE_FULL_BACKOFF_NS = 1_000_000   # enqueue: pause while librdkafka's queue is full
    CLOSE_GRACE_NS = 100_000_000        # close(): how long past its deadline it waits for the end
    REASON_SIZE = 256
    ID_PREFIX_SIZE = 64
    N_HEADERS = 6
    MAX_CALL_HEADERS = 4                # headers a Telemetry adds to every event of a call
    STOP_NONE = 0
    STOP_CLOSE = 1                      # flush until close_deadline_ns, then fail the rest
    STOP_ABANDON = 2                    # fail what is left at once
    N_SPARES = 4                        # released trackers a producer keeps for reuse
    SPARE_WINDOW = 64                   # calls per window of "the largest recent call"
    SPARE_SLACK_EVENTS = 256            # a spare may exceed twice the largest recent call
    SPARE_SLACK_BYTES = 65536           #   by this much before it is freed instead
    DATA_MIN = 4096                     # the smallest `data` buffer

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
cdef struct OutMsg


# Per-call delivery tracker: the msg_opaque of every message of one produce()/produce_async().
#
# Counts:  `remaining` = messages of the call not yet reported + events never enqueued + 1
#          "guard" held by the enqueuing caller until it is done enqueueing (`enqueued`, written
#          by whoever enqueues). _tracker_hand_over drops the never-enqueued events and the guard
#          at once; whoever takes `remaining` to 0 (a delivery report, or the hand-over) completes
#          the tracker, exactly once.
# Lifetime (`refs`, atomic; whoever drops the last reference frees it or keeps it as one of the
# producer's spares (_tracker_release), no GIL needed; a tracker with references also holds one
# on the state, so the state outlives it):
#   1. the caller's, dropped when produce()/produce_async() returns or raises, on every path
#      (or, when produce_async() leaves the rest to a _Pending, when that one is done);
#   2. the completion's: dropped by whoever completes a synchronous call's tracker, or, for
#      produce_async(), by _resolve_completed() once the future was settled (GIL: it also
#      releases the future and the loop, the tracker's only Python objects);
#   3. produce_async() with a timeout only: its _AsyncDeadline's, dropped when the future is done.
# So a caller that gives up (timeout, Ctrl+C) leaves a tracker (and its `data`, which librdkafka's
# messages point into) that stays valid until librdkafka has reported every message that points
# at it. A spare is not a tracker of any call: nothing points at it (under AddressSanitizer it is
# poisoned, so a use after the last release is still reported).
# One per message of a call, inside the tracker's allocation: the message's opaque. The delivery
# report writes where the message went.
cdef struct Slot:
    Tracker *t
    int32_t partition
    int64_t offset              # RD_KAFKA_OFFSET_INVALID until reported (and after a failure)
    rd_kafka_headers_t *spent   # NULL, or the reported message's headers, ours (see "Spent")


cdef struct Tracker:
    int64_t remaining           # atomic
    int64_t failed              # atomic: known not written (refused, purged from the queue)
    int64_t in_doubt            # atomic: may have been written (librdkafka's message status)
    int64_t enqueued            # the enqueuer's: messages handed to librdkafka so far
    int handed_over             # atomic: the enqueuer is done (_tracker_hand_over)
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
    PyObject *readers           # the producer's _LoopReaders
    int via_reader              # the loop has a reader on efd for this call (see "Futures")
    Tracker *next               # link in ProducerState.completed
    ProducerState *state
    uint64_t id_base            # the call's first ce_id sequence number, minus one
    int64_t started_ns          # when the call began (ProducerMetrics.call_seconds)
    int64_t cap                 # room for events: slots and msgs have `cap` entries
    Slot *slots                 # right after the struct (one allocation) ...
    OutMsg *msgs                # ... then these: the call's events as _prepare wrote them
    char *data                  # the call's values and keys, back to back (malloc'd, data_cap)
    size_t data_len
    size_t data_cap


# A released tracker kept for reuse (its sizes are kept here: the tracker itself is poisoned).
cdef struct Spare:
    Tracker *t
    int64_t cap
    size_t data_cap


cdef struct ProducerState:
    LogSink sink                # first member: rd_kafka_opaque(rk) is read as a LogSink too
    rd_kafka_t *rk              # the owner destroys it, then sets it NULL
    rd_kafka_topic_t *rkt
    rd_kafka_queue_t *mainq     # rk's main queue: yielded to wake the owner (under `lock`)
    int refs                    # atomic: the owner's + the Producer object's + a tracker's
    int stop                    # atomic: STOP_NONE, STOP_CLOSE or STOP_ABANDON
    int64_t close_deadline_ns   # written before `stop` becomes STOP_CLOSE
    int finished                # atomic: the owner destroyed the handle (under `lock`: finish_cond)
    int flushing                # atomic: calls enqueued and not yet complete (see "Sending")
    int refuse                  # atomic: 0, or the error code new enqueues fail with
    int active                  # atomic: calls that may use rk (the owner destroys it at 0)
    int counting_purges         # atomic: the close's purge is on: count its reports below
    int64_t purged_failed       # atomic: events the close failed, known not written
    int64_t purged_in_doubt     # atomic: ... and those that may have been
    pthread_mutex_t lock        # guards `completed`, `mainq` for yielding, `finish_cond`
    pthread_cond_t finish_cond
    Tracker *completed          # async trackers fully reported, waiting to be resolved
    int completed_direct        # (under `lock`) how many of them have no reader (see "Futures")
    int has_completed           # atomic hint for the owner
    int efd                     # eventfd: written by the owner for the loops' readers, or -1
    int64_t signalled_ns        # atomic: when the owner wrote efd and nobody resolved since, or 0
    int serving                 # atomic: 1 while a blocking produce() serves the main queue
    pthread_cond_t serve_cond   # (with `lock`) the owner waits on it while `serving` is 1
    pthread_t thread
    uint64_t counter            # atomic: ce_id sequence number of the last reserved event
    char id_prefix[ID_PREFIX_SIZE]  # "<producer id>-"
    size_t id_prefix_len
    char *topic_name            # malloc'd: for errors built when detached
    int detached                # GIL: the Producer is gone; the PyObject pointers are stale
    PyObject *topic             # borrowed from the Producer (see "Ownership")
    PyObject *logger
    PyObject *health
    PyObject *statistics        # or NULL
    ProducerState *live_next    # the registry of running owners (_live, under _live_lock)
    ProducerState *live_prev
    # ProducerMetrics (atomics: callers and the owner count):
    int64_t calls, events, acked, failed_events, in_doubt_events
    Hist call_hist
    # Reuse (see "Memory"), under spare_lock: spare trackers, and the largest call (events,
    # bytes of values and keys) of this window of SPARE_WINDOW calls ([0]) and of the last ([1]).
    pthread_mutex_t spare_lock
    Spare spares[N_SPARES]
    int nspares
    int64_t window_calls
    int64_t recent_events[2]
    int64_t recent_bytes[2]
    PyObject *arrays            # borrowed from the Producer: its list of Deliveries arrays


# Owners still running, for the interpreter's exit: it asks each to stop and waits for them
# (a native thread must not take the GIL while the interpreter finalizes).
cdef pthread_mutex_t _live_lock
cdef pthread_cond_t _live_cond
cdef ProducerState *_live = NULL
cdef int _exiting = 0           # atomic: the interpreter is exiting: owners leave Python alone
pthread_mutex_init(&_live_lock, NULL)
esk_cond_init(&_live_cond)


def _forget_owners():
    """In a child after fork(): the parent's owners do not exist here (their states belong to
    the parent, and so may the lock)."""
    global _live
    _live = NULL
    pthread_mutex_init(&_live_lock, NULL)
    esk_cond_init(&_live_cond)


_os.register_at_fork(after_in_child=_forget_owners)


cdef void _state_release(ProducerState *st) noexcept nogil:
    """Drop one reference to the state; the last frees it (its handle is destroyed by then)."""
    cdef int i
    if esk_add_int(&st.refs, -1) == 0:
        for i in range(st.nspares):
            _tracker_free(st.spares[i].t, st.spares[i].cap, st.spares[i].data_cap, True)
        st.nspares = 0
        pthread_mutex_destroy(&st.spare_lock)
        pthread_mutex_destroy(&st.lock)
        pthread_cond_destroy(&st.finish_cond)
        pthread_cond_destroy(&st.serve_cond)
        if st.efd >= 0:
            close(st.efd)
        free(st.topic_name)
        free(st)


cdef void _wake(ProducerState *st) noexcept nogil:
    """Make the owner look at its state now instead of after its poll slice."""
    pthread_mutex_lock(&st.lock)
    if st.mainq != NULL:
        rd_kafka_queue_yield(st.mainq)
    pthread_mutex_unlock(&st.lock)


cdef void _ask_stop(ProducerState *st, int how, int64_t deadline) noexcept nogil:
    """Ask the owner to stop (a close asks once; abandoning overrides a close's flush)."""
    if how == STOP_CLOSE:
        st.close_deadline_ns = deadline
        esk_fence()
        esk_cas_int(&st.stop, STOP_NONE, STOP_CLOSE)
    else:
        esk_store_int(&st.stop, STOP_ABANDON)
    _wake(st)


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


# One event of a call, as _prepare wrote it into the tracker's `data`.
cdef struct OutMsg:
    size_t value_off
    size_t value_len
    size_t key_off
    ssize_t key_len             # -1: no key


@cython.final
cdef class _Batch:
    """What one call's events share: `call` (its ce_time, formatted once per call, and extra
    headers) points into the bytes objects in `keep`, which this object holds; valid while it
    lives (the call's frame, or its _Pending). The events themselves are in the tracker."""

    cdef list keep
    cdef CallHeaders call           # ce_time and extra headers of every event of the call


# ---- tracker -------------------------------------------------------------------------------


# ---- tracker -------------------------------------------------------------------------------

cdef inline size_t _tracker_size(int64_t cap) noexcept nogil:
    return sizeof(Tracker) + <size_t>cap * (sizeof(Slot) + sizeof(OutMsg))


cdef void _tracker_free_spent(Tracker *t, int64_t start) noexcept nogil:
    """Free the spent headers in t's slots from `start` on (see "Spent headers"); only while no
    message of a call points at those slots (and t is not poisoned)."""
    cdef int64_t i
    for i in range(start, t.cap):
        if t.slots[i].spent != NULL:
            rd_kafka_headers_destroy(t.slots[i].spent)
            t.slots[i].spent = NULL


cdef void _tracker_free(Tracker *t, int64_t cap, size_t data_cap, bint spare) noexcept nogil:
    """Free a tracker nobody references (a spare's sizes come from its Spare entry)."""
    if spare:
        esk_unpoison(t, _tracker_size(cap))
    _tracker_free_spent(t, 0)
    if t.data != NULL:
        if spare:
            esk_unpoison(t.data, data_cap)
        free(t.data)
    pthread_mutex_destroy(&t.lock)
    pthread_cond_destroy(&t.cond)
    free(t)


cdef Tracker *_tracker_acquire(ProducerState *st, int64_t n) except NULL:
    """A tracker for a call of n events, a spare or a new one, with only the caller's
    reference (refs 1; a reference on the state too) until _tracker_arm. Its slots, msgs and
    `data` (data_len 0) are the caller's to fill."""
    cdef Tracker *t = NULL
    cdef int64_t i, cap = 0
    cdef size_t data_cap = 0
    cdef int k, best = -1
    cdef Spare old
    old.t = NULL
    with nogil:
        pthread_mutex_lock(&st.spare_lock)
        st.window_calls += 1
        if st.window_calls > SPARE_WINDOW:
            # A spare much larger than the calls of the last two windows needed goes (one per
            # window: also the spares that no call picks, because smaller ones fit).
            for k in range(st.nspares):
                if _oversized(st, st.spares[k].cap, st.spares[k].data_cap):
                    old = st.spares[k]
                    st.nspares -= 1
                    st.spares[k] = st.spares[st.nspares]
                    break
            st.window_calls = 1
            st.recent_events[1] = st.recent_events[0]
            st.recent_bytes[1] = st.recent_bytes[0]
            st.recent_events[0] = 0
            st.recent_bytes[0] = 0
        if n > st.recent_events[0]:
            st.recent_events[0] = n
        for k in range(st.nspares):      # the smallest spare with room for the call
            if st.spares[k].cap >= n and (best < 0 or st.spares[k].cap < st.spares[best].cap):
                best = k
        if best >= 0:
            t = st.spares[best].t
            cap = st.spares[best].cap
            data_cap = st.spares[best].data_cap
            st.nspares -= 1
            st.spares[best] = st.spares[st.nspares]
        pthread_mutex_unlock(&st.spare_lock)
        if old.t != NULL:
            _tracker_free(old.t, old.cap, old.data_cap, True)
    if t != NULL:
        esk_unpoison(t, _tracker_size(cap))
        if t.data != NULL:
            esk_unpoison(t.data, data_cap)
    else:
        t = <Tracker *>malloc(_tracker_size(n))
        if t == NULL:
            raise MemoryError()
        memset(t, 0, sizeof(Tracker))
        if pthread_mutex_init(&t.lock, NULL) != 0:
            free(t)
            raise MemoryError()
        if esk_cond_init(&t.cond) != 0:
            pthread_mutex_destroy(&t.lock)
            free(t)
            raise MemoryError()
        t.cap = n
        t.slots = <Slot *>(<char *>t + sizeof(Tracker))
        t.msgs = <OutMsg *>(<char *>t.slots + <size_t>n * sizeof(Slot))
        for i in range(n):
            t.slots[i].t = t
            t.slots[i].spent = NULL
    for i in range(n):
        t.slots[i].partition = -1
        t.slots[i].offset = RD_KAFKA_OFFSET_INVALID
    t.remaining = 0
    t.failed = 0
    t.in_doubt = 0
    t.enqueued = 0
    t.handed_over = 0
    t.total = n
    t.refs = 1
    t.done = 0
    t.first_err = 0
    t.first_reason[0] = 0
    t.is_async = 0
    t.future = NULL
    t.loop = NULL
    t.readers = NULL
    t.via_reader = 0
    t.next = NULL
    t.state = st
    t.id_base = 0
    t.started_ns = 0
    t.data_len = 0
    esk_add_int(&st.refs, 1)
    return t


cdef void _tracker_arm(Tracker *t, bint is_async) noexcept nogil:
    """The call's events are prepared: from here on its messages may point at the tracker. Frees
    the spent headers of the slots this call does not use (see "Spent headers")."""
    _tracker_free_spent(t, t.total)
    t.started_ns = esk_now_ns()
    t.remaining = t.total + 1   # + the enqueuing caller's guard
    t.refs = 2                  # the caller's + the completion's
    t.is_async = is_async


cdef char *_tracker_room(Tracker *t, size_t size) except NULL:
    """Where the next `size` bytes of the call's values and keys go in `data` (grown if needed;
    only before the first enqueue: librdkafka points into it after)."""
    cdef size_t want = t.data_len + size
    cdef size_t cap
    cdef char *grown
    if want > t.data_cap or t.data == NULL:   # (never NULL: an empty value is not a tombstone)
        cap = max(max(want, 2 * t.data_cap), <size_t>DATA_MIN)
        grown = <char *>realloc(t.data, cap)
        if grown == NULL:
            raise MemoryError()
        t.data = grown
        t.data_cap = cap
    return t.data + t.data_len


cdef inline bint _oversized(ProducerState *st, int64_t cap, size_t data_cap) noexcept nogil:
    """Whether a tracker of this size is more than twice what the producer's largest call of
    the last two windows needed (plus some slack): then it is freed rather than kept. Under
    spare_lock."""
    return (cap > 2 * max(st.recent_events[0], st.recent_events[1]) + SPARE_SLACK_EVENTS
            or <int64_t>data_cap > 2 * max(st.recent_bytes[0], st.recent_bytes[1])
            + SPARE_SLACK_BYTES)


cdef inline void _tracker_poison(Tracker *t, int64_t cap, char *data,
                                 size_t data_cap) noexcept nogil:
    """A spare is unusable until _tracker_acquire takes it (AddressSanitizer builds only)."""
    esk_poison(t, _tracker_size(cap))
    if data != NULL:
        esk_poison(data, data_cap)


cdef void _tracker_release(Tracker *t) noexcept nogil:
    """Drop one reference; the last keeps the tracker as a spare of its producer (unless it is
    larger than the producer's recent calls need, or the spares are full of larger ones) or
    frees it, then drops the tracker's reference on the state."""
    cdef ProducerState *st
    cdef Tracker *drop = NULL
    cdef int64_t cap, drop_cap = 0
    cdef size_t drop_data = 0, data_cap
    cdef char *data
    cdef int k, smallest
    if esk_add_int(&t.refs, -1) != 0:
        return
    st = t.state
    cap = t.cap
    data = t.data                       # (read before t may be poisoned)
    data_cap = t.data_cap
    pthread_mutex_lock(&st.spare_lock)
    if <int64_t>t.data_len > st.recent_bytes[0]:
        st.recent_bytes[0] = <int64_t>t.data_len
    if _oversized(st, cap, data_cap):
        drop = t                        # larger than what the producer's calls need now
    elif st.nspares < N_SPARES:
        st.spares[st.nspares].t = t
        st.spares[st.nspares].cap = cap
        st.spares[st.nspares].data_cap = data_cap
        st.nspares += 1
        _tracker_poison(t, cap, data, data_cap)
    else:
        smallest = 0
        for k in range(1, N_SPARES):
            if st.spares[k].cap < st.spares[smallest].cap:
                smallest = k
        if st.spares[smallest].cap < cap:
            drop = st.spares[smallest].t
            drop_cap = st.spares[smallest].cap
            drop_data = st.spares[smallest].data_cap
            st.spares[smallest].t = t
            st.spares[smallest].cap = cap
            st.spares[smallest].data_cap = data_cap
            _tracker_poison(t, cap, data, data_cap)
        else:
            drop = t
    pthread_mutex_unlock(&st.spare_lock)
    if drop == t:
        _tracker_free(t, cap, 0, False)
    elif drop != NULL:
        _tracker_free(drop, drop_cap, drop_data, True)
    _state_release(st)


cdef void _tracker_fail(Tracker *t, int err, const char *reason, int64_t count,
                        bint in_doubt) noexcept nogil:
    """Count `count` undelivered events (failed, or in doubt); the first error recorded is the
    one reported."""
    if in_doubt:
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
        # In a delivery report inside the serving call's rd_kafka_flush() (see "Serving"), make
        # that flush return now. (Thread-local; harmless anywhere else.)
        rd_kafka_yield(st.rk)
        return
    # Settling the future needs the GIL: hand the tracker (and its completion reference) to
    # whoever next runs _resolve_completed() (see "Futures").
    pthread_mutex_lock(&st.lock)
    t.next = st.completed
    st.completed = t
    if not t.via_reader:
        st.completed_direct += 1
    esk_store_int(&st.has_completed, 1)
    pthread_mutex_unlock(&st.lock)
    # If this runs in a delivery report inside rd_kafka_flush() (owner), make that flush return
    # now rather than when every other call's messages are reported too, so the future is settled
    # without delay. (Thread-local; harmless anywhere else.)
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


cdef bint _tracker_serve(Tracker *t, int64_t until) noexcept nogil:
    """Serve the main queue (delivery reports, callbacks) until the tracker completes or `until`
    passes (see "Serving"); whether it completed. The caller holds `serving` and is active."""
    cdef ProducerState *st = t.state
    cdef int64_t left_ms = (until - esk_now_ns()) // 1_000_000
    if not _tracker_done(t):
        # Returns when this thread's report completes a call (rd_kafka_yield), when every
        # message of the handle is reported, or after the slice (10 ms polls inside).
        rd_kafka_flush(st.rk, <int>max(min(left_ms, <int64_t>POLL_SLICE_MS), 0))
    return _tracker_done(t)


cdef inline bint _tracker_done(Tracker *t) noexcept nogil:
    cdef bint done
    pthread_mutex_lock(&t.lock)
    done = t.done
    pthread_mutex_unlock(&t.lock)
    return done


cdef void _stop_serving(ProducerState *st) noexcept nogil:
    """The serving caller is done: the owner serves again."""
    pthread_mutex_lock(&st.lock)
    esk_store_int(&st.serving, 0)
    pthread_cond_broadcast(&st.serve_cond)
    pthread_mutex_unlock(&st.lock)


cdef void _tracker_hand_over(Tracker *t) noexcept nogil:
    """The enqueuer is done (normally, or leaving early): events never enqueued leave the count
    and the guard goes. If that accounts for everything, the tracker completes here; else the
    owner is asked to send what lingers (see "Sending"). Counted in `flushing` before the guard
    goes, so that the completion (which uncounts it) comes after."""
    cdef ProducerState *st = t.state
    esk_store_int(&t.handed_over, 1)
    esk_add_int(&st.flushing, 1)
    if esk_add_i64(&t.remaining, -(t.total - t.enqueued + 1)) == 0:
        _tracker_complete(t)
    else:
        _wake(st)


# ---- librdkafka callbacks (run on whichever thread calls rd_kafka_poll/flush) -----------------
# (_on_log, shared with the consumer, is in _core.pyx.)

cdef void _on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) noexcept nogil:
    cdef Slot *slot = <Slot *>msg._private
    cdef ProducerState *st = <ProducerState *>opaque
    cdef Tracker *t
    cdef bint in_doubt
    cdef rd_kafka_headers_t *spent = NULL
    if slot == NULL:
        return
    t = slot.t
    slot.partition = msg.partition
    # Keep the headers for the tracker's next call to free (see "Spent headers"); librdkafka
    # destroys the message, without them, when this returns.
    if rd_kafka_message_detach_headers(<rd_kafka_message_t *>msg, &spent) \
            == RD_KAFKA_RESP_ERR_NO_ERROR:
        slot.spent = spent
    if msg.err != RD_KAFKA_RESP_ERR_NO_ERROR:
        # librdkafka knows whether the message can have reached the log: never sent (or
        # refused by the broker) is failed; possibly persisted is in doubt.
        in_doubt = rd_kafka_message_status(msg) != RD_KAFKA_MSG_STATUS_NOT_PERSISTED
        # For a producer, msg.payload is the value we sent, not an error string.
        _tracker_fail(t, msg.err, rd_kafka_err2str(msg.err), 1, in_doubt)
        if esk_load_int(&st.counting_purges) and (
                msg.err == RD_KAFKA_RESP_ERR__PURGE_QUEUE
                or msg.err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT):
            esk_add_i64(&st.purged_in_doubt if in_doubt else &st.purged_failed, 1)
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


cdef inline bint _python_ok(ProducerState *st) noexcept nogil:
    """Whether the owner may call into Python for this producer (read again under the GIL)."""
    return not esk_load_int(&_exiting)


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
    if st.detached or esk_load_int(&_exiting):
        if fatal:
            _refuse(st, rk, code)
        return
    health = <object>st.health      # our own reference (see "Ownership")
    try:
        failure = health.client_error(
            code, _err_name(code), reason.decode("utf-8", "replace"), fatal=fatal
        )
        if failure is not None:
            _refuse(st, rk, code)
    except BaseException as exc:
        _hold(exc)              # never let an exception into C; Ctrl+C must not vanish


cdef int _on_stats(rd_kafka_t *rk, char *json, size_t json_len, void *opaque) noexcept with gil:
    # statistics.interval.ms: the spec's statistics tick (the shared layer's: the Health reads
    # the brokers' state from them, the reporting whatever it was asked for).
    cdef ProducerState *st = <ProducerState *>opaque
    if st.detached or esk_load_int(&_exiting):
        return 0
    tick = <object>st.statistics    # our own reference (see "Ownership")
    try:
        tick(json[:json_len].decode("utf-8", "replace"))
    except BaseException as exc:
        _hold(exc)
    return 0


# ---- work that needs the GIL ------------------------------------------------------------------

cdef class _LoopReaders:
    """The event loops that settle a producer's produce_async() futures (see "Futures"): a loop
    with calls outstanding has a reader on the state's eventfd, added by its first call and
    removed once its last one is settled. Used on the loops' threads, and for a closed loop
    anywhere (under the GIL). Holds a reference to the state (so efd stays open while a reader
    may be on it); each async tracker holds one to this object until its future is settled."""

    cdef ProducerState *st
    cdef dict counts            # loop -> its calls not yet settled
    cdef int _fork_generation

    def __cinit__(self):
        self.st = NULL
        self.counts = {}

    def __dealloc__(self):
        if self.st != NULL and self._fork_generation == _fork_generation:
            _state_release(self.st)

    cdef bint add(self, loop) except -1:
        """A produce_async() call on `loop` (its thread) is armed: whether the loop reads efd
        until the call is settled (False: the loop cannot watch a file)."""
        n = self.counts.get(loop, 0)
        if n == 0:
            try:
                loop.add_reader(self.st.efd, self._readable, loop)
            except NotImplementedError:
                return False
        self.counts[loop] = n + 1
        return True

    def _forget(self, loop):
        """One of `loop`'s calls is settled (or its loop closed); the last one removes the
        reader."""
        n = self.counts.get(loop)
        if n is None:
            return
        if n > 1:
            self.counts[loop] = n - 1
            return
        del self.counts[loop]
        if not loop.is_closed():
            loop.remove_reader(self.st.efd)

    def _settled(self, loop, fut, exc, result):
        """On `loop`: a call completed."""
        self._forget(loop)
        if fut.done():              # cancelled or timed out meanwhile
            return
        if exc is None:
            fut.set_result(result)
        else:
            fut.set_exception(exc)

    def _readable(self, loop):
        """On `loop`: the owner found calls completed."""
        cdef uint64_t count
        read(self.st.efd, &count, sizeof(count))    # EAGAIN: another loop read it first
        if esk_load_int(&self.st.has_completed):
            _resolve_completed(self.st, <PyObject *>loop)
            _raise_held()


cdef void _hand_completed(ProducerState *st) noexcept nogil:
    """The owner found async calls completed: their loops settle them (a write on efd, no GIL),
    unless one of them has no reader or the last write went unanswered (see "Futures")."""
    cdef uint64_t one = 1
    cdef int direct
    cdef int64_t now = esk_now_ns()
    cdef int64_t since = esk_load_i64(&st.signalled_ns)
    pthread_mutex_lock(&st.lock)
    direct = st.completed_direct
    pthread_mutex_unlock(&st.lock)
    if direct or (since != 0 and now - since > POLL_SLICE_MS * 1_000_000):
        _resolve_completed(st)
        return
    if since == 0:
        esk_store_i64(&st.signalled_ns, now)
    write(st.efd, &one, sizeof(one))    # EAGAIN (counter full) still leaves it readable


cdef inline bint _idle(PyObject *pair, Py_ssize_t n):
    """Whether a (partitions, offsets) pair of a producer's `_arrays` is held by nothing else
    any more (the Deliveries that had it is gone) and has length n (n < 0: any). Borrowed
    pointers only: no reference of ours counts."""
    cdef PyObject *p = PyTuple_GET_ITEM(<object>pair, 0)
    cdef PyObject *o = PyTuple_GET_ITEM(<object>pair, 1)
    return (Py_REFCNT(<object>pair) == 1 and Py_REFCNT(<object>p) == 1
            and Py_REFCNT(<object>o) == 1 and (n < 0 or Py_SIZE(<object>p) == n)
            and _getweakrefcount(<object>p) == 0 and _getweakrefcount(<object>o) == 0)


cdef object _deliveries(ProducerState *st, Tracker *t, list arrays):
    """Where each event of a completed call went (Deliveries, in call order). Its arrays are
    reused from `arrays` (the producer's, or None) once the Deliveries that had them is gone, so
    that a steady stream of calls allocates none (see "Memory")."""
    cdef Py_ssize_t i, k, n = t.total
    cdef array.array partitions = None
    cdef array.array offsets = None
    cdef int32_t *p
    cdef int64_t *o
    cdef PyObject *pair
    if arrays is not None:
        for k in range(PyList_GET_SIZE(arrays)):
            pair = PyList_GET_ITEM(arrays, k)
            if _idle(pair, n):
                partitions = <array.array>PyTuple_GET_ITEM(<object>pair, 0)
                offsets = <array.array>PyTuple_GET_ITEM(<object>pair, 1)
                break
    if partitions is None:
        partitions = array.clone(_INT32_ARRAY, n, zero=False)
        offsets = array.clone(_INT64_ARRAY, n, zero=False)
        if arrays is not None:
            if PyList_GET_SIZE(arrays) < N_SPARES:
                arrays.append((partitions, offsets))
            else:
                for k in range(N_SPARES):   # in place of an idle pair of another length
                    if _idle(PyList_GET_ITEM(arrays, k), -1):
                        arrays[k] = (partitions, offsets)
                        break
    p = <int32_t *>partitions.data.as_voidptr
    o = <int64_t *>offsets.data.as_voidptr
    for i in range(n):
        p[i] = t.slots[i].partition
        o[i] = t.slots[i].offset
    prefix = st.id_prefix[:st.id_prefix_len].decode()
    return _Deliveries(partitions, offsets, prefix, t.id_base + 1)


cdef void _count_call(ProducerState *st, Tracker *t, int64_t failed, int64_t in_doubt) noexcept nogil:
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
    (a delivery report or produceva can see it first); None if it has not failed (or the
    Producer is gone: then nobody is told). GIL held; the handle is alive (a call is active, or
    the owner asks)."""
    if st.detached:
        return None
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
        failed=failed, in_doubt=in_doubt, total=t.total,
        topic=st.topic_name.decode("utf-8", "replace"), cause=_producer_failure(st),
    )


cdef void _resolve_completed(ProducerState *st, PyObject *here=NULL) noexcept with gil:
    """Settle the futures of the async trackers handed over by _tracker_complete (one GIL
    acquisition for all of them) and drop their completion references. `here`: the event loop
    running on this thread, if any (its futures are settled without a wake-up). Never
    raises."""
    cdef Tracker *t
    cdef Tracker *nxt
    cdef bint any_ok = False
    if esk_load_int(&_exiting):
        return                  # the futures' loops are gone with the interpreter
    pthread_mutex_lock(&st.lock)
    t = st.completed
    st.completed = NULL
    st.completed_direct = 0
    esk_store_int(&st.has_completed, 0)
    pthread_mutex_unlock(&st.lock)
    esk_store_i64(&st.signalled_ns, 0)
    while t != NULL:
        nxt = t.next
        try:
            exc = _tracker_error(st, t)
            any_ok = any_ok or exc is None
            if exc is None:
                _count_call(st, t, 0, 0)
            else:
                _count_call(st, t, exc.failed, exc.in_doubt)
            loop = <object>t.loop
            readers = <_LoopReaders>t.readers
            result = (_deliveries(st, t, None if st.detached else <list>st.arrays)
                      if exc is None else None)
            try:
                # Through the loop's queue even here: a _Pending's timeout, scheduled before
                # the completion, must come first.
                if t.loop == here:
                    loop.call_soon(readers._settled, loop, <object>t.future, exc, result)
                else:
                    loop.call_soon_threadsafe(
                        readers._settled, loop, <object>t.future, exc, result
                    )
            except RuntimeError:
                readers._forget(loop)   # closed: nobody can await the future any more
        except BaseException as e:
            _hold(e)            # a KeyboardInterrupt & co.: raised by the caller, not logged
            if not st.detached and isinstance(e, Exception):
                try:
                    (<object>st.logger).error("could not resolve a produce_async future",
                                              exc_info=e)
                except BaseException as e2:
                    _hold(e2)
        finally:
            exc = result = loop = readers = None
            Py_XDECREF(t.future)
            Py_XDECREF(t.loop)
            Py_XDECREF(t.readers)
            t.future = NULL
            t.loop = NULL
            t.readers = NULL
            _tracker_release(t)     # the completion reference
        t = nxt
    if any_ok and not st.detached:
        health = <object>st.health
        try:
            health.up()
        except BaseException as exc:
            _hold(exc)


# ---- the owner thread -------------------------------------------------------------------------

cdef void *_owner_main(void *arg) noexcept nogil:
    """Serves delivery reports and callbacks until asked to stop; then gives what is outstanding
    until the close deadline, fails the rest, waits for the calls still using the handle,
    destroys it and lets go of the state."""
    global _live
    cdef ProducerState *st = <ProducerState *>arg
    cdef rd_kafka_t *rk = st.rk
    cdef int64_t deadline, left
    esk_name_thread("es-producer")
    while not esk_load_int(&st.stop):
        if esk_load_int(&st.serving):
            # A blocking produce() serves the main queue while it waits (see "Serving").
            pthread_mutex_lock(&st.lock)
            while esk_load_int(&st.serving) and not esk_load_int(&st.stop):
                if esk_cond_wait_until(&st.serve_cond, &st.lock,
                                       esk_now_ns() + POLL_SLICE_MS * 1_000_000) != 0:
                    break
            pthread_mutex_unlock(&st.lock)
            if esk_load_int(&st.has_completed):
                _hand_completed(st)
            _drop_held()                    # nobody to raise it to on this thread
            continue
        if esk_load_int(&st.flushing) > 0 and rd_kafka_outq_len(rk) > 0:
            # Calls are waiting: send what lingers now. Returns when every message of the
            # handle is reported, when a callback yields (an async call completed), or after
            # the slice.
            rd_kafka_flush(rk, POLL_SLICE_MS)
        else:
            # Woken early by rd_kafka_queue_yield() when a call has enqueued its events.
            rd_kafka_poll(rk, POLL_SLICE_MS)
        if esk_load_int(&st.has_completed):
            _hand_completed(st)
        _drop_held()
    # Stopping. New calls are refused from here on, and calls entering after the fence see it.
    esk_store_int(&st.refuse, RD_KAFKA_RESP_ERR__DESTROY)
    esk_fence()
    if esk_load_int(&st.stop) == STOP_CLOSE:
        deadline = st.close_deadline_ns
        while rd_kafka_outq_len(rk) > 0 and esk_load_int(&st.stop) == STOP_CLOSE:
            left = deadline - esk_now_ns()
            if left <= 0:
                break
            rd_kafka_flush(rk, <int>min(left // 1_000_000 + 1, <int64_t>POLL_SLICE_MS))
            if esk_load_int(&st.has_completed):
                _resolve_completed(st)
    esk_store_int(&st.counting_purges, 1)
    while True:
        if rd_kafka_outq_len(rk) > 0:
            rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT
                           | RD_KAFKA_PURGE_F_NON_BLOCKING)
        rd_kafka_poll(rk, 10)               # serves the purge reports
        if esk_load_int(&st.has_completed):
            _resolve_completed(st)
        if esk_load_int(&st.active) == 0 and rd_kafka_outq_len(rk) == 0:
            break
    if esk_load_int(&st.has_completed):
        _resolve_completed(st)
    _drop_held()
    pthread_mutex_lock(&st.lock)
    rd_kafka_queue_destroy(st.mainq)
    st.mainq = NULL
    pthread_mutex_unlock(&st.lock)
    rd_kafka_topic_destroy(st.rkt)
    st.rkt = NULL
    rd_kafka_destroy(rk)
    st.rk = NULL
    pthread_mutex_lock(&st.lock)
    esk_store_int(&st.finished, 1)
    pthread_cond_broadcast(&st.finish_cond)
    pthread_mutex_unlock(&st.lock)
    pthread_mutex_lock(&_live_lock)
    if st.live_prev != NULL:
        st.live_prev.live_next = st.live_next
    else:
        _live = st.live_next
    if st.live_next != NULL:
        st.live_next.live_prev = st.live_prev
    pthread_cond_broadcast(&_live_cond)
    pthread_mutex_unlock(&_live_lock)
    _state_release(st)          # the owner's reference
    return NULL


@_atexit.register
def _stop_owners():
    """At the interpreter's exit: owners fail what is left and end without touching Python
    (an unclosed producer's events are not waited for)."""
    cdef ProducerState *st
    cdef int64_t deadline = esk_now_ns() + 5_000_000_000
    esk_store_int(&_exiting, 1)
    with nogil:
        pthread_mutex_lock(&_live_lock)
        st = _live
        while st != NULL:
            _ask_stop(st, STOP_ABANDON, 0)
            st = st.live_next
        while _live != NULL:
            if esk_cond_wait_until(&_live_cond, &_live_lock, deadline) != 0:
                break
        pthread_mutex_unlock(&_live_lock)


@cython.final
cdef class _AsyncDeadline:
    """The `timeout` of one produce_async() call. produce_async() runs on the future's loop
    thread, and so do the timer and the future's done callback: no lock is needed here.

    Owns one reference to the call's tracker (taken by produce_async(), dropped by _release(),
    at the latest in __dealloc__), so that the timer can read how many events of the call are
    still unacknowledged; `_owner` (the Producer) keeps the state alive."""

    cdef Tracker *_t
    cdef object _owner
    cdef object _future
    cdef object _timer
    cdef object _timeout

    def __cinit__(self):
        self._t = NULL

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
        if not esk_load_int(&self._t.handed_over):
            return      # a _Pending still enqueues: it reports the timeout, knowing what it sent
        pending = esk_load_i64(&self._t.remaining)
        if pending == 0:
            return      # every event was reported: the result is already on its way to the loop
        producer = <Producer>self._owner
        fut.set_exception(_errors.produce_timeout_error(
            pending=pending, total=self._t.total, topic=producer.topic,
            timeout=self._timeout, last_error=producer._health.last_error,
        ))

    def _on_done(self, fut):
        """The future's done callback (resolved, failed, timed out or cancelled)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self._future = None
        self._release()


@cython.final
cdef class _Pending:
    """The rest of a produce_async() call that did not fit into librdkafka's queue
    (eventstream._runtime.backend.PendingEnqueue): finish() enqueues it off the event loop. Holds
    the call's tracker (the caller's reference) and the call's `active` count until then."""

    cdef Tracker *_t
    cdef Producer _producer
    cdef _Batch _batch
    cdef int64_t _deadline
    cdef object _future
    cdef object _loop
    cdef object _timeout
    cdef bint _done

    def __cinit__(self):
        self._t = NULL

    def __dealloc__(self):
        # finish() never ran (its executor task was cancelled before it started): the rest is
        # not sent, and the call's future says so when its tracker completes.
        self._hand_over(True)

    def finish(self):
        cdef int outcome = 1
        cdef int64_t not_sent, total
        if self._done:
            return
        total = self._t.total
        try:
            outcome = self._producer._enqueue_all(self._batch, self._t, self._deadline)
        finally:
            if outcome == 1:
                # Still full at the deadline: the future fails with the timeout now, before the
                # tracker's completion can settle it with anything else (the loop runs its
                # callbacks in order).
                not_sent = self._t.total - self._t.enqueued
                exc = _errors.produce_timeout_error(
                    pending=max(esk_load_i64(&self._t.remaining) - 1 - not_sent, 0),
                    not_sent=not_sent, total=total, topic=self._producer.topic,
                    timeout=self._timeout, last_error=self._producer._health.last_error,
                )
                try:
                    self._loop.call_soon_threadsafe(_fail_future, self._future, exc)
                except RuntimeError:
                    pass
            self._hand_over(outcome == 1)

    cdef void _hand_over(self, bint count_unsent) noexcept:
        cdef Tracker *t = self._t
        if self._done or t == NULL:
            return
        self._done = True
        if count_unsent and t.enqueued < t.total:
            _tracker_fail(t, RD_KAFKA_RESP_ERR__QUEUE_FULL,
                          "librdkafka's queue stayed full: these events were never sent",
                          t.total - t.enqueued, False)
        _tracker_hand_over(t)
        self._t = NULL
        _tracker_release(t)         # the caller's reference
        self._batch = None
        self._producer._exit()


def _fail_future(fut, exc):
    if not fut.done():
        fut.set_exception(exc)


# ---- the Producer --------------------------------------------------------------------------

# no_gc_clear: the collector never empties this object's attributes before its finalizer ran
# (the state points at them while `detached` is 0); cycles through it are broken elsewhere.
@cython.final
@cython.no_gc_clear
cdef class Producer:
    """eventstream._runtime.backend.NativeProducer over librdkafka (see the comments above)."""

    cdef ProducerState *_st
    cdef readonly str topic
    cdef object _event_type
    cdef object _type_name
    cdef object _serialize          # the event class's unbound SerializeToString
    cdef esk_kwmethod _serialize_c  # ... its C function (upb), or NULL: see esk_kwmethod_of
    cdef object _key
    # What the owner uses through the state's borrowed pointers (see "Ownership"):
    cdef object _logger
    cdef object _client_logger      # <logger>.librdkafka: librdkafka's own lines, at DEBUG
    cdef object _health
    cdef object _statistics
    cdef int64_t _budget            # spec.payload_budget: the largest key + value of an event
    cdef int64_t _max_bytes         # spec.max_message_bytes
    cdef int _fork_generation       # _fork_generation when made: another value = a forked child
    # Header names and constant values, kept alive here; the C pointers below point into them.
    cdef bytes _h_ct, _h_spec, _h_id, _h_source, _h_type, _h_time
    cdef bytes _v_ct, _v_spec, _v_source, _v_type
    cdef HeaderSpec _hs
    cdef list _arrays               # (partitions, offsets) of Deliveries, reused (_deliveries)
    cdef _LoopReaders _readers      # the event loops settling produce_async() futures
    cdef object __weakref__

    def __cinit__(self):
        self._st = NULL

    def __init__(self, spec):
        global _live
        cdef ProducerState *st
        cdef bytes prefix
        cdef bytes btopic = spec.topic.encode()
        cdef char errstr[ERRSTR_SIZE]
        cdef rd_kafka_conf_t *conf
        cdef rd_kafka_t *rk
        self.topic = spec.topic
        self._event_type = spec.event_type
        self._type_name = spec.type_name
        self._serialize = spec.event_type.SerializeToString
        self._serialize_c = esk_kwmethod_of(self._serialize, spec.event_type)
        self._key = spec.key
        self._logger = spec.logger
        self._client_logger = spec.logger.getChild("librdkafka")
        self._health = spec.health
        self._statistics = spec.statistics
        self._budget = spec.payload_budget
        self._max_bytes = spec.max_message_bytes
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
        st.efd = -1
        if pthread_mutex_init(&st.lock, NULL) != 0:
            free(st)
            raise MemoryError()
        if pthread_mutex_init(&st.spare_lock, NULL) != 0:
            pthread_mutex_destroy(&st.lock)
            free(st)
            raise MemoryError()
        if esk_cond_init(&st.finish_cond) != 0:
            pthread_mutex_destroy(&st.spare_lock)
            pthread_mutex_destroy(&st.lock)
            free(st)
            raise MemoryError()
        if esk_cond_init(&st.serve_cond) != 0:
            pthread_cond_destroy(&st.finish_cond)
            pthread_mutex_destroy(&st.spare_lock)
            pthread_mutex_destroy(&st.lock)
            free(st)
            raise MemoryError()
        st.refs = 1                 # ours; the owner's is added once it runs
        st.topic_name = strdup(btopic)
        memcpy(st.id_prefix, <const char *>prefix, len(prefix))
        st.id_prefix_len = len(prefix)
        st.topic = <PyObject *>self.topic
        st.logger = <PyObject *>self._logger
        st.health = <PyObject *>self._health
        st.statistics = <PyObject *>self._statistics if self._statistics is not None else NULL
        self._arrays = []
        st.arrays = <PyObject *>self._arrays
        st.sink.logger = <PyObject *>self._client_logger
        self._st = st               # from here on __dealloc__ lets go of it
        if st.topic_name == NULL:
            raise MemoryError()
        st.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if st.efd < 0:
            raise OSError(errno, f"eventfd: {_os.strerror(errno)}")
        self._readers = _LoopReaders.__new__(_LoopReaders)
        esk_add_int(&st.refs, 1)    # the readers'
        self._readers.st = st
        self._readers._fork_generation = _fork_generation
        # The client starts now: it connects and obtains its producer id in the background, so
        # that a first call made a moment later finds it ready.
        conf = _make_conf(spec.properties, "producer")
        rd_kafka_conf_set_dr_msg_cb(conf, _on_delivery)
        rd_kafka_conf_set_error_cb(conf, _on_error)
        rd_kafka_conf_set_stats_cb(conf, _on_stats)
        _route_logs(conf)
        rd_kafka_conf_set_opaque(conf, st)
        rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr))
        if rk == NULL:
            rd_kafka_conf_destroy(conf)     # rd_kafka_new owns conf only on success
            raise _errors.ConfigError("properties", errstr.decode("utf-8", "replace"))
        rd_kafka_set_log_queue(rk, NULL)    # log lines are served by the owner
        st.rkt = rd_kafka_topic_new(rk, btopic, NULL)
        if st.rkt == NULL:
            with nogil:
                rd_kafka_destroy(rk)
            raise _errors.ConfigError("topic", f"librdkafka rejected topic {self.topic!r}")
        st.mainq = rd_kafka_queue_get_main(rk)
        st.rk = rk
        esk_add_int(&st.refs, 1)    # + the owner's
        pthread_mutex_lock(&_live_lock)
        st.live_next = _live
        if _live != NULL:
            _live.live_prev = st
        _live = st
        pthread_mutex_unlock(&_live_lock)
        if pthread_create(&st.thread, NULL, _owner_main, st) != 0:
            pthread_mutex_lock(&_live_lock)
            _live = st.live_next
            if _live != NULL:
                _live.live_prev = NULL
            pthread_mutex_unlock(&_live_lock)
            esk_add_int(&st.refs, -1)   # the owner's, never taken up
            st.rk = NULL
            with nogil:
                rd_kafka_queue_destroy(st.mainq)
                rd_kafka_topic_destroy(st.rkt)
                rd_kafka_destroy(rk)
            st.mainq = NULL
            st.rkt = NULL
            raise RuntimeError("could not start the producer's owner thread")
        pthread_detach(st.thread)   # nobody joins it: it ends by itself once asked to stop

    def __dealloc__(self):
        # Never joins or frees what the owner uses: it asks the owner to stop and lets go of the
        # state (see "Ownership"). In a forked child the owner does not exist and the handle
        # belongs to the parent: the state is left alone.
        cdef ProducerState *st = self._st
        if st == NULL:
            return
        self._st = NULL
        if self._fork_generation != _fork_generation:
            return
        st.detached = 1             # the GIL is held: the owner's next look sees it
        if st.rk != NULL and not esk_load_int(&st.finished):
            _ask_stop(st, STOP_ABANDON, 0)
        _state_release(st)

    # -- internals --

    cdef int _enter(self, Py_ssize_t n) except -1:
        """Count a call that may use the handle (the owner destroys it only when none is in).
        Raises ClosedError once the producer was asked to stop or in a forked child, and (n > 0)
        the producer's failure as this call's ProduceError."""
        cdef ProducerState *st = self._st
        if self._fork_generation != _fork_generation:
            raise _errors.ClosedError(
                f"the producer of {self.topic!r} was created in the parent of this forked "
                "process; librdkafka clients cannot cross fork(): create a new Topic here"
            )
        esk_add_int(&st.active, 1)
        esk_fence()
        if esk_load_int(&st.stop) != STOP_NONE:
            self._exit()
            raise _errors.ClosedError(f"the producer of {self.topic!r} is closed")
        try:
            failure = self._health.failure if n > 0 else None
            if failure is not None:
                raise _errors.produce_error(
                    failure.code, failure.name, str(failure), failed=n, in_doubt=0, total=n,
                    topic=self.topic, cause=failure,
                )
        except BaseException:
            self._exit()
            raise
        return 0

    cdef void _exit(self) noexcept:
        cdef ProducerState *st = self._st
        if esk_add_int(&st.active, -1) == 0 and esk_load_int(&st.stop) != STOP_NONE:
            _wake(st)               # the owner may be waiting for the last call to leave

    cdef _Batch _prepare(self, tuple evs, Py_ssize_t n, object headers, Tracker *t):
        """Type-check, then serialize values and keys of the whole call into t (msgs, data) and
        check their sizes, before anything is enqueued."""
        cdef Py_ssize_t i, size
        cdef const char *kp
        cdef _Batch batch
        cdef OutMsg *msgs = t.msgs
        cdef int64_t budget = self._budget, key_len
        cdef char *dst
        cdef char tbuf[32]
        etype = self._event_type
        for i in range(n):
            if type(evs[i]) is not etype:
                raise _errors.event_type_error(i, type(evs[i]), etype, self._type_name)
        batch = _Batch.__new__(_Batch)
        size = <Py_ssize_t>esk_format_time(tbuf)       # ce_time, as _wire.timestamp() writes it
        stamp = PyBytes_FromStringAndSize(tbuf, size) if size else _wire.timestamp()
        batch.keep = [stamp]
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
        if batch.call.n_extra:
            budget -= _wire.headers_size([(name, len(value)) for name, value in headers])
        ser = self._serialize
        cdef esk_kwmethod ser_c = self._serialize_c
        keyfn = self._key
        for i in range(n):
            ev = evs[i]
            try:
                # type(ev) is the event type (checked above), which ser_c takes as self.
                data = ser_c(ev, (), NULL) if ser_c != NULL else ser(ev)
            except Exception as exc:
                raise _errors.serialize_error(i, self._type_name, exc) from exc
            if type(data) is not bytes:
                raise _errors.serialize_error(
                    i, self._type_name, TypeError(f"SerializeToString returned {type(data)}")
                )
            size = PyBytes_GET_SIZE(data)
            dst = _tracker_room(t, <size_t>size)
            memcpy(dst, PyBytes_AS_STRING(data), <size_t>size)
            msgs[i].value_off = t.data_len
            msgs[i].value_len = <size_t>size
            msgs[i].key_off = 0
            msgs[i].key_len = -1
            t.data_len += <size_t>size
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
                    kp = PyUnicode_AsUTF8AndSize(k, &size)
                except UnicodeError as exc:
                    raise _errors.key_function_error(i, self._type_name, exc) from exc
            elif isinstance(k, bytes):
                kp = PyBytes_AS_STRING(k)
                size = PyBytes_GET_SIZE(k)
            else:
                raise _errors.key_type_error(i, self._type_name, k)
            dst = _tracker_room(t, <size_t>size)
            memcpy(dst, kp, <size_t>size)
            msgs[i].key_off = t.data_len
            msgs[i].key_len = size
            t.data_len += <size_t>size
        for i in range(n):
            key_len = max(msgs[i].key_len, 0)
            if <int64_t>msgs[i].value_len + key_len > budget:
                raise _errors.event_too_large_error(
                    i, key_len, msgs[i].value_len, budget, max_message_bytes=self._max_bytes,
                    total=n, topic=self.topic,
                )
        return batch

    cdef Py_ssize_t _enqueue(self, const CallHeaders *call, Tracker *t, uint64_t id_base,
                             int64_t slice_end, bint serving, int *err_out) noexcept nogil:
        """Enqueue events t.enqueued..total-1, counting each in t.enqueued. Returns t.enqueued;
        *err_out is then 0 (all enqueued), QUEUE_FULL (still full at slice_end: retry after a
        signal check) or the hard error code. Runs without the GIL: `call` is kept alive by the
        caller, the header values by self; librdkafka copies the keys and headers and points at
        the values in t.data until it reports them (see "Memory")."""
        cdef ProducerState *st = self._st
        cdef rd_kafka_vu_t vus[6]
        cdef size_t nvus
        cdef rd_kafka_headers_t *hdrs
        cdef rd_kafka_error_t *error
        cdef int code
        cdef char idbuf[ID_PREFIX_SIZE + 24]
        cdef size_t idlen = 0
        cdef Py_ssize_t i
        cdef int x
        cdef HeaderSpec *hs = &self._hs
        cdef const OutMsg *msgs = t.msgs
        cdef char *data = t.data

        err_out[0] = 0
        vus[0].vtype = RD_KAFKA_VTYPE_RKT
        vus[0].u.rkt = st.rkt
        vus[1].vtype = RD_KAFKA_VTYPE_OPAQUE
        vus[2].vtype = RD_KAFKA_VTYPE_MSGFLAGS
        vus[2].u.i = 0                  # the value is not copied: it stays in t.data
        vus[3].vtype = RD_KAFKA_VTYPE_VALUE
        vus[4].vtype = RD_KAFKA_VTYPE_HEADERS
        vus[5].vtype = RD_KAFKA_VTYPE_KEY
        while t.enqueued < t.total:
            i = t.enqueued
            code = esk_load_int(&st.refuse)
            if code != 0:
                err_out[0] = code
                return i
            hdrs = t.slots[i].spent     # the slot's last message's headers (see "Spent headers")
            t.slots[i].spent = NULL
            if hdrs != NULL and (call.n_extra != 0 or rd_kafka_header_cnt(hdrs) != N_HEADERS):
                rd_kafka_headers_destroy(hdrs)  # a Telemetry's headers: not reused
                hdrs = NULL
            if hdrs != NULL:
                # This producer's six: the four constant ones stay, ce_id and ce_time go.
                rd_kafka_header_remove(hdrs, hs.n_id)
                rd_kafka_header_remove(hdrs, hs.n_time)
            else:
                hdrs = rd_kafka_headers_new(N_HEADERS + call.n_extra)
                rd_kafka_header_add(hdrs, hs.n_ct, hs.nlen_ct, hs.v_ct, hs.vlen_ct)
                rd_kafka_header_add(hdrs, hs.n_spec, hs.nlen_spec, hs.v_spec, hs.vlen_spec)
                rd_kafka_header_add(hdrs, hs.n_source, hs.nlen_source, hs.v_source,
                                    hs.vlen_source)
                rd_kafka_header_add(hdrs, hs.n_type, hs.nlen_type, hs.v_type, hs.vlen_type)
            if idlen == 0:          # the first id of this slice; the next ones count up
                idlen = esk_format_id(idbuf, st.id_prefix, st.id_prefix_len,
                                      id_base + <uint64_t>i + 1)
            else:
                idlen = esk_next_id(idbuf, st.id_prefix_len, idlen)
            rd_kafka_header_add(hdrs, hs.n_id, hs.nlen_id, idbuf, <ssize_t>idlen)
            rd_kafka_header_add(hdrs, hs.n_time, hs.nlen_time, call.time, call.time_len)
            for x in range(call.n_extra):
                rd_kafka_header_add(hdrs, call.names[x], call.name_lens[x], call.values[x],
                                    call.value_lens[x])
            vus[1].u.ptr = &t.slots[i]
            vus[3].u.mem.ptr = <void *>(data + msgs[i].value_off)
            vus[3].u.mem.size = msgs[i].value_len
            vus[4].u.headers = hdrs
            nvus = 5
            if msgs[i].key_len >= 0:
                vus[5].u.mem.ptr = <void *>(data + msgs[i].key_off)
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
                    # Serving delivery reports frees room: the owner does, or this call when it
                    # holds `serving` (see "Serving").
                    if serving:
                        rd_kafka_poll(st.rk, QUEUE_FULL_BACKOFF_NS // 1_000_000)
                    else:
                        esk_sleep_ns(QUEUE_FULL_BACKOFF_NS)
                    continue
                rd_kafka_headers_destroy(hdrs)      # still ours after a failed produceva
                err_out[0] = code
                return i
            t.enqueued = i + 1
        return t.enqueued

    cdef int _enqueue_all(self, _Batch batch, Tracker *t, int64_t deadline,
                          bint serving=False) except -1:
        """Enqueue the call's events from t.enqueued on. Returns 0 once all are enqueued; 1 if
        `deadline` passed with librdkafka's queue still full (the rest is neither enqueued nor
        counted); 2 after a hard error, the rest counted as failed (never sent). Raises
        KeyboardInterrupt & co. from signal checks; t.enqueued is right on every path, so the
        caller can hand over."""
        cdef int err = 0
        cdef int64_t slice_end
        cdef Py_ssize_t refused
        if t.id_base == 0 and t.enqueued == 0:
            t.id_base = <uint64_t>esk_fetch_add_u64(&self._st.counter, <uint64_t>t.total)
        while True:
            slice_end = min(esk_now_ns() + WAIT_SLICE_NS, deadline)
            with nogil:
                self._enqueue(&batch.call, t, t.id_base, slice_end, serving, &err)
            _raise_held()           # from a callback served while the queue was full
            if err == 0:
                return 0
            if err == RD_KAFKA_RESP_ERR__QUEUE_FULL:
                if esk_now_ns() >= deadline:
                    return 1
                PyErr_CheckSignals()
                continue
            # A hard error (the producer failed or is closing, ...): the rest is not sent.
            if err == RD_KAFKA_RESP_ERR__FATAL:
                _producer_failure(self._st)
            refused = t.enqueued
            reason = _errors.refused_at_enqueue(_err_str(err), refused, t.total).encode()
            _tracker_fail(t, err, reason, t.total - t.enqueued, False)
            return 2

    # -- the NativeProducer protocol --

    def produce(self, events, timeout, headers=()):
        """Serialize, enqueue and wait for every event of this call to be acknowledged;
        `headers` go on every event of the call."""
        cdef tuple evs = events if type(events) is tuple else tuple(events)
        cdef Py_ssize_t n = len(evs)
        cdef Tracker *t = NULL
        cdef int64_t deadline, now, not_sent = 0
        cdef bint done = False
        cdef bint serving = False
        cdef int outcome = 0
        if n == 0:
            return _Deliveries.empty()
        self._enter(n)
        try:
            t = _tracker_acquire(self._st, n)
            batch = self._prepare(evs, n, headers, t)
            deadline = _deadline_after(timeout)
            _tracker_arm(t, False)
            # Serve the main queue from here until the call returns, unless another call does
            # (see "Serving"). Taken once the events are prepared (the key function and the
            # serialization may take long) and before enqueueing, so that the owner, woken
            # now, has stood down before the first report arrives.
            serving = esk_cas_int(&self._st.serving, 0, 1)
            try:
                if serving:
                    _wake(self._st)
                try:
                    outcome = self._enqueue_all(batch, t, deadline, serving)
                finally:
                    not_sent = t.total - t.enqueued if outcome == 1 else 0
                    _tracker_hand_over(t)
                batch = None
                # Events never enqueued because the deadline passed first must not let the call
                # succeed once the enqueued ones are acknowledged: a timeout, reported now.
                while outcome != 1:
                    now = esk_now_ns()
                    with nogil:
                        if serving:
                            done = _tracker_serve(t, min(now + WAIT_SLICE_NS, deadline))
                        else:
                            done = _tracker_wait(t, min(now + WAIT_SLICE_NS, deadline))
                    if esk_load_int(&self._st.has_completed):
                        _resolve_completed(self._st)
                    _raise_held()   # from a callback this thread served
                    if done or esk_now_ns() >= deadline:
                        break
                    PyErr_CheckSignals()
            finally:
                if serving:
                    _stop_serving(self._st)
            if done:
                exc = _tracker_error(self._st, t)
                if exc is not None:
                    _count_call(self._st, t, exc.failed, exc.in_doubt)
                    raise exc
                _count_call(self._st, t, 0, 0)
                self._health.up()
                return _deliveries(self._st, t, self._arrays)
            # Timed out: the call's unreported events are in doubt; those never enqueued failed.
            exc = _errors.produce_timeout_error(
                pending=esk_load_i64(&t.remaining), not_sent=not_sent,
                total=n, topic=self.topic, timeout=timeout, last_error=self._health.last_error,
            )
            _count_call(self._st, t, exc.failed, exc.in_doubt)
            raise exc
        finally:
            if t != NULL:
                _tracker_release(t)     # the caller's reference
            self._exit()

    def produce_async(self, events, loop, timeout=None, headers=()):
        """Enqueue what fits now and return (future of `loop`, None or a _Pending with the
        rest): the future is resolved on `loop` when every event of the call is acknowledged,
        or failed with the same errors as produce(), a timeout included. Called on `loop`'s
        thread; never blocks it."""
        cdef tuple evs = events if type(events) is tuple else tuple(events)
        cdef Py_ssize_t n = len(evs)
        cdef Tracker *t = NULL
        cdef int64_t deadline
        cdef int outcome = 0
        cdef _AsyncDeadline expiry
        cdef _Pending pending = None
        fut = loop.create_future()
        if n == 0:
            fut.set_result(_Deliveries.empty())
            return fut, None
        self._enter(n)
        try:
            t = _tracker_acquire(self._st, n)
            batch = self._prepare(evs, n, headers, t)
            deadline = _deadline_after(timeout)
            _tracker_arm(t, True)
            t.future = <PyObject *>fut
            Py_INCREF(fut)
            t.loop = <PyObject *>loop
            Py_INCREF(loop)
            t.readers = <PyObject *>self._readers
            Py_INCREF(self._readers)
            try:
                t.via_reader = self._readers.add(loop)  # the loop settles the future
                # Never waits for room: what does not fit now is _Pending.finish()'s.
                outcome = self._enqueue_all(batch, t, esk_now_ns())
            except BaseException:
                _tracker_hand_over(t)
                raise
            if outcome == 1:
                pending = _Pending.__new__(_Pending)
                pending._t = t              # takes over the caller's reference and `active`
                pending._producer = self
                pending._batch = batch
                pending._deadline = deadline
                pending._future = fut
                pending._loop = loop
                pending._timeout = timeout
            else:
                _tracker_hand_over(t)
            if deadline != _NO_DEADLINE:
                expiry = _AsyncDeadline.__new__(_AsyncDeadline)
                esk_add_int(&t.refs, 1)         # expiry's own, dropped by expiry._release()
                expiry._t = t
                expiry._owner = self
                expiry._future = fut
                expiry._timeout = timeout
                expiry._timer = loop.call_later(
                    max(0.0, (deadline - esk_now_ns()) / 1e9), expiry._expire
                )
                fut.add_done_callback(expiry._on_done)
            if esk_load_int(&self._st.has_completed):
                _resolve_completed(self._st)    # completed here (e.g. enqueue failed)
                _raise_held()
            return fut, pending
        finally:
            if pending is None:
                if t != NULL:
                    _tracker_release(t)     # the caller's reference
                self._exit()

    def flush(self, timeout):
        """Wait up to `timeout` seconds for every outstanding message of this producer; return
        how many are still in flight."""
        cdef rd_kafka_t *rk
        cdef int64_t deadline = _deadline_after(timeout)
        cdef int64_t now
        cdef int slice_ms
        cdef int left
        self._enter(0)
        try:
            rk = self._st.rk
            while True:
                now = esk_now_ns()
                slice_ms = <int>(min(deadline - now, <int64_t>WAIT_SLICE_NS) // 1_000_000)
                if slice_ms < 0:
                    slice_ms = 0
                with nogil:
                    # Also serves delivery reports on this thread (alongside the owner).
                    rd_kafka_flush(rk, slice_ms)
                    left = rd_kafka_outq_len(rk)
                if esk_load_int(&self._st.has_completed):
                    _resolve_completed(self._st)
                _raise_held()               # from a callback this thread served
                if left == 0 or esk_now_ns() >= deadline:
                    return left
                PyErr_CheckSignals()
        finally:
            self._exit()

    def close(self, timeout):
        """Ask the owner to stop (NativeProducer.close) and wait for it, in slices so that
        signals are handled. Returns (failed, in doubt, finished)."""
        cdef ProducerState *st = self._st
        cdef int64_t deadline = _deadline_after(timeout)
        cdef int64_t until, slice_end
        cdef bint finished = False
        if self._fork_generation != _fork_generation:
            return 0, 0, True       # the owner and the handle belong to the parent
        _ask_stop(st, STOP_CLOSE, deadline)
        until = _NO_DEADLINE if deadline == _NO_DEADLINE else deadline + CLOSE_GRACE_NS
        while True:
            slice_end = min(esk_now_ns() + WAIT_SLICE_NS, until)
            with nogil:
                pthread_mutex_lock(&st.lock)
                while not esk_load_int(&st.finished):
                    if esk_cond_wait_until(&st.finish_cond, &st.lock, slice_end) != 0:
                        break
                finished = esk_load_int(&st.finished)
                pthread_mutex_unlock(&st.lock)
            if finished or esk_now_ns() >= until:
                break
            PyErr_CheckSignals()
        return esk_load_i64(&st.purged_failed), esk_load_i64(&st.purged_in_doubt), finished

    def abandon(self):
        """Ask the owner to fail what is outstanding at once and stop. Never blocks."""
        if self._st != NULL and self._fork_generation == _fork_generation:
            _ask_stop(self._st, STOP_ABANDON, 0)

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
        return f"<eventstream._core.Producer topic={self.topic!r}>"
