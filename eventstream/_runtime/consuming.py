"""What every consumer does the same way, whichever backend runs its hot loop:
:class:`ConsumerRuntime`.

It owns the consumer's poll thread and everything that happens per call or per change rather than
per event: where assigned partitions start, the ``on_rebalance`` and ``on_gap`` hooks, errors and
gaps reported through the consumer's :class:`~eventstream._runtime.health.Health`, closing (how
long it waits, what it says when it gives up) and leaving the group. The backend's
:class:`~eventstream._runtime.backend.NativeConsumer` holds the librdkafka handle and the hot loop;
it calls back here (as a :class:`~eventstream._runtime.backend.ConsumerListener`) from inside
``poll()``, on the poll thread.

Lifetime: the native consumer is created, polled, closed and destroyed by the poll thread only
(``assignment()`` and ``stop()`` may be called from any thread: they read and set plain values).
Nothing here is freed by a finalizer: a consumer dropped without ``close()`` is asked to stop
(:meth:`ConsumerRuntime.abandon`), and its poll thread leaves the group and destroys the handle.

A fenced static member (FENCED_INSTANCE_ID, fatal in librdkafka) is not always a second process
with the same instance id: when a broker fails and the group's coordinator moves while the member
rejoins, a request carrying its old member id is fenced by its own new one. So the poll thread
replaces a fenced client once by a new one with the same ``group.instance.id`` (its partitions
are reported lost, and what it handled since its last commit is handled again); fenced again
within :data:`REFENCED_WITHIN` seconds of that, two live processes share the id, and the
consumer fails.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from eventstream._runtime.backend import (
    Backend,
    ConsumerSpec,
    Dispatch,
    DispatchAbandoned,
    NativeConsumer,
)
from eventstream._runtime.failures import gaps
from eventstream._runtime.failures.recreation import Change, TopicWatch
from eventstream._runtime.health import Health
from eventstream._runtime.membership import Membership
from eventstream._runtime.records import PartitionChange
from eventstream._runtime.telemetry.metrics import Histogram
from eventstream._runtime.telemetry.reporting import statistics_tick
from eventstream.errors import (
    FENCED_INSTANCE_ID,
    UNRELEASED_INSTANCE_ID,
    BrokerError,
    EventStreamError,
    GapError,
    error_name,
    fatal_cause,
    fenced_rejoining,
    instance_id_conflict,
    max_poll_exceeded,
)

__all__ = ["REFENCED_WITHIN", "ConsumerRuntime"]

#: Seconds after a fenced member rejoined within which a second fencing means another live
#: process holds its instance id (two such processes fence each other within a few heartbeats).
REFENCED_WITHIN = 60.0

_FIRST_WAIT_MS = 100  # the longest a poll round blocks for a first record: stop seen promptly
_RESOLVE_TIMEOUT = 10.0  # the longest an assignment waits for committed offsets and watermarks
_RESOLVE_RETRY = 0.1  # the pause before asking again after a transient error
_LEAVE_SLICE_MS = 100  # leaving the group: the longest wait between deadline checks
_DEFAULT_CLOSE_TIMEOUT = 30.0  # closing after a failure, when close() gave no deadline yet

_PARTITION_EOF = -191
_UNKNOWN_TOPIC_OR_PART = 3
_MAX_POLL_EXCEEDED = -147
_UNKNOWN_PARTITION = -190
# Signs that the topic may have been deleted or recreated: ask for its id at once.
_TOPIC_TROUBLE = frozenset({_UNKNOWN_TOPIC_OR_PART, _UNKNOWN_PARTITION})
_FENCED = frozenset({FENCED_INSTANCE_ID, UNRELEASED_INSTANCE_ID})


class ConsumerRuntime:
    """The shared half of one consumer (see the module docstring). Thread-safe where it says so."""

    def __init__(
        self, spec: ConsumerSpec, backend: Backend, membership: Membership | None = None
    ) -> None:
        self._spec = spec
        self._topic = spec.topic
        self._logger = spec.logger
        self._health: Health = spec.health
        self._membership = membership
        self._backend = backend
        self._native: NativeConsumer = backend.new_consumer(spec, self)
        self._inert = backend.inert
        self._dispatch: Dispatch | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._opened = threading.Event()  # open() returned or failed
        self._left = threading.Event()  # the poll thread is done with the group
        self._open_error: BaseException | None = None
        self._failure: BaseException | None = None
        self._closing = False
        self._deadline: float | None = None  # set by close(): when leaving must give up
        self._resets = gaps.OffsetResets(spec.topic)
        self._topic_missing_reported = False
        self._max_poll = int(spec.properties.get("max.poll.interval.ms", "300000")) / 1000
        # Start offsets resolved by assign() that are not the group's committed ones: stored by
        # assigned() once the partitions are assigned.
        self._pinned: dict[int, int] = {}
        # The topic's id, asked every few seconds: a deleted and recreated topic (poll thread).
        self._watch: TopicWatch | None = None
        # Work for the poll thread between two rounds (never while a handler runs).
        self._requests: collections.deque[Callable[[], None]] = collections.deque()
        self._held: set[int] = set()  # assigned, as the on_rebalance hook was told (poll thread)
        # A fenced client is to be replaced (set by a callback on the poll thread, cleared there
        # by the swap); when the last one was; what the replaced clients had counted (_lock).
        self._rejoining = False
        self._rejoined_at: float | None = None
        self._retired: tuple[int, Histogram | None, Histogram | None] = (0, None, None)

    # -- any thread --------

    @property
    def native(self) -> NativeConsumer:
        return self._native

    @property
    def membership(self) -> Membership | None:
        return self._membership

    @property
    def type_name(self) -> str:
        return self._spec.type_name

    def start(self, dispatch: Dispatch) -> None:
        """Start the poll thread; return once the client is made and subscribed. Raises what
        making it raised (the consumer is then not started)."""
        if self._inert:
            self._dispatch = dispatch
            return
        with self._lock:
            self._dispatch = dispatch
            self._opened.clear()
            self._open_error = None
            thread = threading.Thread(
                target=self._run, name=f"eventstream-consumer-{self._topic}", daemon=True
            )
            self._thread = thread
            thread.start()
        self._opened.wait()
        if self._open_error is not None:
            thread.join()
            with self._lock:
                self._thread = None
            raise self._open_error

    def assignment(self) -> dict[int, int]:
        """The assigned partitions with their positions; empty once a handler has run longer than
        max.poll.interval.ms (the group took the partitions away meanwhile). No network."""
        since = self._native.dispatching_since()
        if since and time.monotonic() - since > self._max_poll:
            return {}
        return self._native.positions()

    def stopping(self) -> bool:
        return self._native.stopping()

    def counts(self) -> tuple[int, Histogram | None, Histogram | None]:
        """The native consumer's counts, with those of the clients it replaced. Any thread."""
        with self._lock:
            handled, handler_time, e2e = self._native.counts()
            return _merged((handled, handler_time, e2e), self._retired)

    def call_soon(self, work: Callable[[], None]) -> None:
        """Run ``work()`` on the poll thread between two rounds, never while a handler runs (its
        exceptions are logged). Any thread."""
        self._requests.append(work)

    def fail(self, error: BaseException) -> None:
        """Consumption cannot go on (``error`` says why, and close() raises it): the poll thread
        stops after the running handler. Any thread."""
        self._stopped_by(error)

    def abandon(self) -> None:
        """The consumer was dropped without close(): ask the poll thread to stop; it leaves the
        group and destroys the handle by itself. Never blocks, never frees."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        self._native.stop()
        if self._thread is None:
            self._release()

    def close(self, timeout: float | None) -> None:
        """Stop after the running handler returns, then commit, leave and destroy (on the poll
        thread). Waits for that up to ``timeout`` seconds (``None``: as long as it takes), or not
        at all when called from a handler. Idempotent; raises what stopped the poll thread."""
        with self._lock:
            first = not self._closing
            self._closing = True
            if first:
                self._deadline = None if timeout is None else time.monotonic() + timeout
        self._native.stop()
        thread = self._thread
        if thread is None:
            self._release()
        elif thread is not threading.current_thread() and not self._left.wait(
            # The poll thread keeps to the deadline itself once the handler has returned; the
            # extra second covers leaving's last slice.
            None if timeout is None else timeout + 1.0
        ):
            self._log_still_running(timeout)
        self._health.closed()
        failure = self._failure
        if failure is not None and not isinstance(failure, DispatchAbandoned):
            raise failure

    def _log_still_running(self, timeout: float | None) -> None:
        handling = self._native.handling()
        if handling is not None:
            partition, offset = handling
            self._logger.error(
                "consumer of %r: close() stopped waiting after %g s: the handler is still "
                "running for the event at %s[%d]@%d. The consumer leaves its group once it "
                "returns, committing that event and the ones handled before it; if the process "
                "exits first, that event and those after it are handled again by the group's "
                "next consumer.",
                self._topic,
                timeout,
                self._topic,
                partition,
                offset,
            )
        else:
            self._logger.error(
                "consumer of %r: close() stopped waiting after %g s for the consumer to commit "
                "its offsets and leave the group (last client error: %s); events handled since "
                "the last commit will be handled again by the group's next consumer.",
                self._topic,
                timeout,
                self._health.last_error or "none",
            )

    def _release(self) -> None:
        if self._membership is not None:
            self._membership.release()

    # -- the poll thread --------

    def _run(self) -> None:
        native = self._native
        dispatch = self._dispatch
        assert dispatch is not None
        try:
            native.open(dispatch)
        except BaseException as exc:
            self._open_error = exc
            self._opened.set()
            return
        self._opened.set()
        try:
            requests = self._requests
            watch = self._watch = TopicWatch(self._spec.properties, self._topic, self._logger)
            while True:
                while not native.stopping():
                    native.poll(_FIRST_WAIT_MS)
                    while requests and not native.stopping():
                        self._run_request(requests.popleft())
                    change = watch.poll()
                    if change is not None:
                        self._topic_changed(change)
                if not self._rejoining:
                    break
                rejoined = self._rejoin(dispatch)
                if rejoined is None:
                    break
                native = rejoined
        except BaseException as exc:
            # A failure the Health already reported, KeyboardInterrupt/SystemExit/
            # DispatchAbandoned from a handler, or a bug: never lost; close() re-raises it.
            if not isinstance(exc, EventStreamError | DispatchAbandoned):
                self._health.stopped(exc)
            self._stopped_by(exc)
        finally:
            self._report_failure()
            if self._watch is not None:
                self._watch.close()
            self._leave()

    def _report_failure(self) -> None:
        """Tell the dispatch's ``on_failure`` hook what stopped consumption, if anything did."""
        failure, dispatch = self._failure, self._dispatch
        hook = None if dispatch is None else dispatch.on_failure
        if failure is None or hook is None or isinstance(failure, DispatchAbandoned):
            return
        try:
            hook(failure)
        except Exception as exc:
            self._logger.error(
                "consumer of %r: the on_failure hook raised", self._topic, exc_info=exc
            )

    def _topic_changed(self, change: Change) -> None:
        """The topic was deleted, or deleted and recreated (a new id), under the consumer."""
        if change == "deleted":
            self._health.warn(
                BrokerError(
                    f"consumer of {self._topic!r}: the topic was deleted; the consumer waits for "
                    "it to be created again (eventstream never creates topics implicitly: "
                    "Topic.ensure_exists()) and then reads the new topic from its first event",
                    code=_UNKNOWN_TOPIC_OR_PART,
                    name="UNKNOWN_TOPIC_OR_PART",
                    retriable=True,
                )
            )
            return
        native = self._native
        old = native.positions()
        starts: dict[int, int] = {}
        for partition in sorted(old):  # one at a time: the new topic may have fewer
            try:
                lows, _highs = native.watermarks([partition], int(_RESOLVE_TIMEOUT * 1000))
            except BrokerError:
                continue  # gone with the old topic: the coming rebalance takes it away
            starts[partition] = lows[0]
        for partition in sorted(starts):  # one at a time: one that fails leaves the others be
            try:
                native.seek({partition: starts[partition]})
            except BrokerError:
                del starts[partition]  # revoked meanwhile: its next owner reads the new topic
        if starts:
            # The group's committed offsets went with the old topic, and librdkafka's
            # auto-commit does not go below the offsets it committed before.
            native.commit(starts)
        for partition in sorted(old):
            self._gap(
                GapError(
                    f"consumer of {self._topic!r}: the topic was deleted and recreated (its id "
                    f"changed): events of the old topic's partition {partition} from offset "
                    f"{old[partition]} on are lost if this consumer had not handled them, and "
                    f"the new topic is read from its first event"
                    + (f" (offset {starts[partition]})" if partition in starts else "")
                    + "; events read again are duplicates. A cache fed by this stream may be "
                    "stale.",
                    topic=self._topic,
                    partition=partition,
                    first_offset=old[partition],
                    resume_offset=starts.get(partition, 0),
                    recreated=True,
                )
            )
        self._changed("lost", sorted(old))
        if starts:
            self._changed("assigned", sorted(starts))

    def _rejoin(self, dispatch: Dispatch) -> NativeConsumer | None:
        """Replace the fenced client by a new one with the same static member id, reporting its
        partitions lost. ``None`` when close() came first: the fenced client is then only
        destroyed, by :meth:`_leave`."""
        old = self._native
        new = self._backend.new_consumer(self._spec, self)
        with self._lock:
            if self._closing:
                return None
            self._retired = _merged(old.counts(), self._retired)
            self._native = new
            self._rejoining = False
        old.destroy(False)
        self._changed("lost", sorted(self._held))
        self._rejoined_at = time.monotonic()
        new.open(dispatch)
        return new

    def _run_request(self, work: Callable[[], None]) -> None:
        try:
            work()
        except Exception as exc:
            self._logger.error(
                "consumer of %r: work for the poll thread failed", self._topic, exc_info=exc
            )

    def _stopped_by(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        self._native.stop()

    def _hopeless(self) -> bool:
        """A client that failed (authentication, fatal, fenced) or reaches no broker cannot
        commit or leave: nobody waits for it. (A handler's BaseException also fails the
        consumer, but the client is fine: it commits what was handled and leaves.)"""
        if isinstance(self._failure, BrokerError) or self._rejoining:
            return True
        return self._health.status.state == "disconnected"

    def _leave(self) -> None:
        native = self._native
        left = False
        try:
            deadline = self._deadline
            if deadline is None and not self._closing:
                deadline = time.monotonic() + _DEFAULT_CLOSE_TIMEOUT  # stopped by a failure
            while not self._hopeless():
                left = native.leave(_LEAVE_SLICE_MS)
                if left or (deadline is not None and time.monotonic() >= deadline):
                    break
            if not left and not isinstance(self._failure, BrokerError) and not self._rejoining:
                why = "no broker answers" if self._hopeless() else "the close deadline passed"
                self._logger.warning(
                    "consumer of %r left without committing its last offsets or leaving the "
                    "group (%s; last client error: %s): events handled since the last commit "
                    "(at most auto.commit.interval.ms worth) will be handled again by the "
                    "group's next consumer, which gets the partitions after the session times "
                    "out.",
                    self._topic,
                    why,
                    self._health.last_error or "none",
                )
        except BaseException as exc:
            self._stopped_by(exc)
        finally:
            self._release()
            # close() waits until here, not for the destroy: without a broker librdkafka's
            # destroy waits out the group session even when not leaving.
            self._left.set()
            native.destroy(left)

    # -- ConsumerListener: called by the native consumer inside poll() --------

    def assign(self, partitions: Sequence[int]) -> Mapping[int, int] | None:
        try:
            return self._starts(partitions)
        except BrokerError as exc:
            self._health.warn(
                BrokerError(
                    f"consumer of {self._topic!r}: rebalance: start offsets of partitions "
                    f"{list(partitions)} could not be resolved: {exc}; librdkafka resolves them "
                    "itself",
                    code=exc.code,
                    name=exc.name,
                    retriable=exc.retriable,
                )
            )
            return None

    def _starts(self, partitions: Sequence[int]) -> dict[int, int]:
        """Where each newly assigned partition starts. The group's committed offset if the log
        still has it; a committed offset outside the log is a gap, read from the oldest retained
        event. Without one: a group that never committed an offset of this topic starts where
        ``start_from_beginning`` says; otherwise the partition is new to the group (added to the
        topic) and starts at its first event, so nothing produced into it is missed. A cache
        (``from_end``) starts every partition at its end. Asked of the brokers with retries of
        what is transient (a topic just created may lack leaders for a moment)."""
        native = self._native
        deadline = time.monotonic() + _RESOLVE_TIMEOUT
        while True:
            left_ms = max(100, int((deadline - time.monotonic()) * 1000))
            try:
                lows, highs = native.watermarks(partitions, left_ms)
                if self._spec.from_end:
                    # Stored (committed with the next auto-commit) like any pinned start: the
                    # group's committed offsets then say where this member reads.
                    self._pinned = dict(zip(partitions, highs, strict=True))
                    return dict(self._pinned)
                # Partitions are numbered densely: asking for every one up to the highest
                # assigned tells a group that never committed (its first start) from a
                # partition new to the group, whichever members hold the others.
                every = list(range(max(partitions) + 1))
                committed = dict(zip(every, native.committed(every, left_ms), strict=True))
                break
            except BrokerError as exc:
                if not exc.retriable or time.monotonic() + _RESOLVE_RETRY >= deadline:
                    raise
                time.sleep(_RESOLVE_RETRY)
        first_start = all(offset < 0 for offset in committed.values())
        starts: dict[int, int] = {}
        for partition, low, high in zip(partitions, lows, highs, strict=True):
            offset = committed[partition]
            if offset < 0:
                if first_start:
                    offset = low if self._spec.start_from_beginning else high
                else:
                    offset = low
                    self._logger.info(
                        "consumer of %r: partition %d is new to group %r (no committed offset): "
                        "reading it from its first event, offset %d",
                        self._topic,
                        partition,
                        self._spec.properties.get("group.id"),
                        low,
                    )
            elif offset < low or offset > high:
                self._gap(gaps.start_outside_log(self._topic, partition, offset, low, high))
                offset = low
            starts[partition] = offset
        self._pinned = {p: o for p, o in starts.items() if committed.get(p, -1) != o}
        return starts

    def assigned(self, partitions: Sequence[int], starts: Mapping[int, int] | None) -> None:
        pinned, self._pinned = self._pinned, {}
        if pinned and starts is not None:
            # Committed with the next auto-commit: from then on the group has seen these
            # partitions, whatever happens to this process.
            self._native.store(pinned)
        self._health.up()
        self._changed("assigned", partitions)

    def unassigned(self, partitions: Sequence[int], lost: bool) -> None:
        self._changed("lost" if lost else "revoked", partitions)

    def _changed(self, kind: str, partitions: Sequence[int]) -> None:
        if kind == "assigned":
            self._held.update(partitions)
        else:
            self._held.difference_update(partitions)
        dispatch = self._dispatch
        hook = None if dispatch is None else dispatch.on_rebalance
        if hook is None or not partitions:
            return
        change = PartitionChange(kind, self._topic, tuple(sorted(partitions)))  # type: ignore[arg-type]
        try:
            hook(change)
        except Exception as exc:
            self._logger.error(
                "consumer of %r: the on_rebalance hook raised for %s %s",
                self._topic,
                kind,
                change.partitions,
                exc_info=exc,
            )

    def _gap(self, error: EventStreamError) -> None:
        self._health.report(error)
        dispatch = self._dispatch
        hook = None if dispatch is None else dispatch.on_gap
        if hook is None or not isinstance(error, GapError):
            return
        try:
            hook(error)
        except Exception as exc:
            self._logger.error("consumer of %r: the on_gap hook raised", self._topic, exc_info=exc)

    def client_error(self, code: int, name: str, reason: str, fatal: bool) -> None:
        if self._rejoining:
            return  # a fenced client about to be replaced: the rest of what it says is moot
        if code in _TOPIC_TROUBLE and self._watch is not None:
            self._watch.soon()
        cause = fatal_cause(code, reason)
        if cause != code:
            code, name = cause, error_name(cause)
        if code in _FENCED and self._may_rejoin():
            self._rejoining = True
            self._health.report(
                fenced_rejoining(
                    code,
                    name,
                    reason,
                    self._spec.properties,
                    what=self._health.what,
                    within=REFENCED_WITHIN,
                )
            )
            self._native.stop()
            return
        again = ""
        if self._rejoined_at is not None:
            again = f"again, {time.monotonic() - self._rejoined_at:.0f} s after it rejoined"
        hint = instance_id_conflict(code, self._spec.properties, again=again)
        if hint:
            reason = f"{reason}. {hint}"
        failure = self._health.client_error(code, name, reason, fatal=fatal)
        if failure is not None:
            self._stopped_by(failure)

    def _may_rejoin(self) -> bool:
        """A fenced static member rejoins unless closing or fenced again soon after rejoining."""
        if self._closing or not self._spec.properties.get("group.instance.id"):
            return False
        last = self._rejoined_at
        return last is None or time.monotonic() - last >= REFENCED_WITHIN

    def record_error(self, code: int, name: str, reason: str, fatal: bool) -> None:
        if code == _PARTITION_EOF or self._rejoining:
            return
        if code in _TOPIC_TROUBLE and self._watch is not None:
            self._watch.soon()
        if code == _UNKNOWN_TOPIC_OR_PART:
            if not self._topic_missing_reported:
                self._topic_missing_reported = True
                self._health.warn(
                    BrokerError(
                        f"consumer of {self._topic!r}: the topic does not exist; eventstream never "
                        "creates topics implicitly: create it with Topic.ensure_exists() (the "
                        "consumer starts reading once it exists)",
                        code=code,
                        name=name,
                        retriable=True,
                    )
                )
            return
        if code == _MAX_POLL_EXCEEDED:
            self._health.warn(max_poll_exceeded(self._topic, round(self._max_poll * 1000)))
            return
        self.client_error(code, name, reason, fatal)
        if self._failure is not None:
            raise self._failure

    def statistics(self, raw: str) -> None:
        statistics_tick(raw, self._health, self._spec.statistics, self._logger)

    def log_warning(self, facility: str, text: str) -> None:
        """A fetch position out of the log is a gap (librdkafka resets it and says so); a
        partition count that changed or a reset may mean a recreated topic."""
        if facility in ("OFFSET", "PARTCNT") and self._watch is not None:
            self._watch.soon()
        if facility == "OFFSET":
            gap = self._resets.warned(text)
            if gap is not None:
                self._gap(gap)
            if self._resets.pending:
                self._native.watch_resumes(True)

    def resumed(self, partition: int, offset: int) -> None:
        gap = self._resets.resumed(partition, offset)
        if gap is not None:
            self._gap(gap)
        if not self._resets.pending:
            self._native.watch_resumes(False)


def _merged(
    a: tuple[int, Histogram | None, Histogram | None],
    b: tuple[int, Histogram | None, Histogram | None],
) -> tuple[int, Histogram | None, Histogram | None]:
    def both(x: Histogram | None, y: Histogram | None) -> Histogram | None:
        return y if x is None else x if y is None else x.merge(y)

    return a[0] + b[0], both(a[1], b[1]), both(a[2], b[2])
