"""Producer of the pure-Python backend: confluent_kafka.Producer plus per-call delivery tracking."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from functools import partial

import confluent_kafka
from google.protobuf.message import Message

from eventstream._runtime import wire
from eventstream._runtime.backend import ProducerSpec
from eventstream._runtime.librdkafka import ClientLog
from eventstream._runtime.records import Deliveries
from eventstream._runtime.telemetry.metrics import LatencyRecorder, ProducerMetrics
from eventstream._runtime.telemetry.reporting import statistics_tick
from eventstream.errors import (
    IN_DOUBT_CODES,
    BrokerError,
    ClosedError,
    ProduceError,
    event_type_error,
    key_function_error,
    key_type_error,
    produce_error,
    produce_timeout_error,
    serialize_error,
)

__all__ = ["PureProducer", "prepare_records"]

# A blocking produce() serves delivery reports itself with client.flush() in slices this long (s),
# until its own events are reported: flush ignores linger.ms while it runs, so the call's events
# are sent at once, and the slices bound the wait for other threads' events.
_FLUSH_SLICE = 0.002
# The poll thread's longest wait between two rounds (s).
_POLL_SLICE = 0.1
_DESTROY = -197  # librdkafka's _DESTROY: what events enqueued after close fail with

Record = tuple[bytes, bytes | None]
_UNREPORTED = -2  # a partition number no delivery report gives


def prepare_records(spec: ProducerSpec, events: Sequence[Message]) -> list[Record]:
    """Type-check every event, then serialize values and keys; raises before anything is sent."""
    event_type = spec.event_type
    for index, event in enumerate(events):
        if type(event) is not event_type:
            raise event_type_error(index, type(event), event_type, spec.type_name)
    key_of = spec.key
    records: list[Record] = []
    for index, event in enumerate(events):
        try:
            value = event.SerializeToString()
        except Exception as exc:
            raise serialize_error(index, spec.type_name, exc) from exc
        key: bytes | None = None
        if key_of is not None:
            try:
                raw = key_of(event)
                key = raw.encode() if isinstance(raw, str) else raw
            except Exception as exc:
                raise key_function_error(index, spec.type_name, exc) from exc
            if key is not None and not isinstance(key, bytes):
                raise key_type_error(index, spec.type_name, key)
        records.append((value, key))
    return records


class _Tracker:
    """Delivery state of one produce call. Delivery callbacks run on whichever thread serves
    librdkafka (the poll thread, or callers flushing), possibly on several at once. The call is
    finished by whoever draws number ``total + 1`` from ``_settled``: each delivery report draws
    one, :meth:`hand_over` draws the rest at once (one per event never enqueued, one for the
    enqueuing caller's guard). Drawing is one C call, atomic under the GIL, so exactly one
    drawer finishes the call, and no lock is taken per event."""

    __slots__ = (
        "_lock",
        "_settled",
        "done",
        "enqueued",
        "failed",
        "fatal",
        "first_error",
        "first_id",
        "in_doubt",
        "offsets",
        "on_done",
        "partitions",
        "started",
        "total",
    )

    def __init__(self, total: int) -> None:
        self.total = total
        self.started = time.monotonic_ns()
        self.partitions = array("i", [_UNREPORTED]) * total
        self.offsets = array("q", [-1001]) * total  # RD_KAFKA_OFFSET_INVALID until reported
        self.first_id = 0
        self._settled = itertools.count(1)
        self.enqueued = 0
        self.failed = 0
        self.in_doubt = 0
        self.first_error: tuple[int, str, str] | None = None
        self.fatal: confluent_kafka.KafkaError | None = None  # a fatal delivery error, if any
        self.done = threading.Event()
        self._lock = threading.Lock()  # failures only
        self.on_done: Callable[[], None] | None = None

    def report(
        self, index: int, err: confluent_kafka.KafkaError | None, msg: confluent_kafka.Message
    ) -> None:
        if err is None:
            partition, offset = msg.partition(), msg.offset()
            self.partitions[index] = -1 if partition is None else partition
            self.offsets[index] = -1001 if offset is None else offset
        else:
            self.partitions[index] = -1
            if err.fatal():
                self.fatal = err
            self.fail(err.code(), err.name(), err.str(), 1)
        if next(self._settled) == self.total + 1:
            self._finish()

    def deliveries(self, prefix: str) -> Deliveries:
        return Deliveries(self.partitions, self.offsets, prefix, self.first_id)

    def fail(self, code: int, name: str, reason: str, count: int) -> None:
        with self._lock:
            if code in IN_DOUBT_CODES:
                self.in_doubt += count
            else:
                self.failed += count
            if self.first_error is None:
                self.first_error = (code, name, reason)

    def hand_over(self) -> None:
        """The caller is done enqueueing: never-enqueued events leave the count, the guard goes."""
        count = self.total - self.enqueued + 1
        # Draws ``count`` consecutive numbers in one C call (islice over the count).
        drawn_last = next(itertools.islice(self._settled, count - 1, count))
        if drawn_last - count < self.total + 1 <= drawn_last:
            self._finish()

    def pending(self) -> int:
        """Events enqueued and not yet reported (for a timeout's message)."""
        return max(0, self.partitions.count(_UNREPORTED) - (self.total - self.enqueued))

    def _finish(self) -> None:
        self.done.set()
        if self.on_done is not None:
            self.on_done()

    def error(self, topic: str, cause: BrokerError | None) -> ProduceError | None:
        first = self.first_error
        if first is None:
            return None
        code, name, reason = first
        return produce_error(
            code,
            name,
            reason,
            failed=self.failed,
            in_doubt=self.in_doubt,
            total=self.total,
            topic=topic,
            cause=cause,
        )


class PureProducer:
    """Thread-safe. The confluent-kafka client and its poll thread start at the first produce.

    linger.ms (5 ms by default) lets librdkafka gather a call's events while they are enqueued;
    after that nobody should wait it out. A blocking produce() therefore serves with
    client.flush() in short slices until its own tracker is done (flush() sends whatever
    lingers), and the poll thread stays out of librdkafka meanwhile, so that it cannot take a
    delivery report a flushing caller is waiting for. While produce_async() calls are pending and
    no blocking caller flushes, the poll thread flushes for them; otherwise it polls without
    blocking every _POLL_SLICE (errors, statistics, logs, reports of abandoned calls)."""

    def __init__(self, spec: ProducerSpec) -> None:
        self._spec = spec
        self._health = spec.health
        self._lock = threading.Lock()
        self._client: confluent_kafka.Producer | None = None
        self._poller: threading.Thread | None = None
        self._stopping = threading.Event()
        # Guards the two counts; notified when the poll thread has work (see the class doc).
        self._state = threading.Condition(threading.Lock())
        self._flushers = 0  # blocking produce() calls flushing right now
        self._async_pending = 0  # produce_async() calls enqueued and not yet complete
        self._closed = False
        # 0, or the error code new enqueues fail with (closing, or the producer failed).
        self._refuse: tuple[int, str] | None = None
        self._ids = itertools.count(1)
        # ProducerMetrics, under _metrics_lock:
        self._metrics_lock = threading.Lock()
        self._calls = self._events = self._acked = self._failed = self._in_doubt = 0
        self._call_time = LatencyRecorder()
        self._id_prefix = wire.new_producer_id() + "-"
        # In the compiled backend's order: content-type, ce_specversion, ce_id, ce_source,
        # ce_type, ce_time (then a Telemetry's headers).
        self._leading_headers: list[tuple[str, str | bytes | None]] = [
            (wire.HEADER_CONTENT_TYPE, wire.CONTENT_TYPE),
            (wire.HEADER_SPECVERSION, wire.SPECVERSION),
        ]
        self._trailing_headers: list[tuple[str, str | bytes | None]] = [
            (wire.HEADER_SOURCE, spec.source.encode()),
            (wire.HEADER_TYPE, spec.type_name.encode()),
        ]

    # -- lifecycle -----------------------------------------------------------------------------

    def _started(self) -> confluent_kafka.Producer:
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._closed:
                raise ClosedError(f"the producer of {self._spec.topic!r} is closed")
            if self._client is None:
                conf: dict[str, object] = dict(self._spec.properties)
                conf["error_cb"] = self._on_client_error
                conf["stats_cb"] = self._on_stats
                conf["logger"] = ClientLog(self._spec.logger)
                self._client = confluent_kafka.Producer(conf)
                self._poller = threading.Thread(
                    target=self._poll_loop,
                    name=f"eventstream-producer-{self._spec.topic}",
                    daemon=True,
                )
                self._poller.start()
            return self._client

    def _poll_loop(self) -> None:
        client = self._client
        assert client is not None
        state = self._state
        while not self._stopping.is_set():
            with state:
                if not self._should_flush(client):
                    state.wait(_POLL_SLICE)
                flush = self._should_flush(client)
                serve = not self._flushers
            if flush:
                self._serve(client, _POLL_SLICE)
            elif serve:
                self._serve(client, 0, flush=False)

    def _serve(
        self, client: confluent_kafka.Producer, timeout: float, *, flush: bool = True
    ) -> int:
        """client.flush(timeout) (or poll): serve delivery reports and callbacks. confluent-kafka
        raises the client's fatal error from there; it goes to the Health like error_cb's.
        Returns how many messages are still in flight."""
        try:
            if flush:
                return int(client.flush(timeout))
            client.poll(timeout)
        except confluent_kafka.KafkaException as exc:
            self._on_client_error(exc.args[0])
        return len(client)

    def _should_flush(self, client: confluent_kafka.Producer) -> bool:
        """Called with _state held: async calls wait, no blocking caller serves, and there is
        something to send or report (so the poll thread never spins on an empty flush)."""
        return not self._flushers and self._async_pending > 0 and len(client) > 0

    def _async_done(self) -> None:
        with self._state:
            self._async_pending -= 1

    def _on_client_error(self, err: confluent_kafka.KafkaError) -> None:
        failure = self._health.client_error(err.code(), err.name(), err.str(), fatal=err.fatal())
        if failure is not None:
            self._fail_queued(failure.code, failure.name)

    def _on_stats(self, stats: str) -> None:
        statistics_tick(stats, self._health, self._spec.statistics, self._spec.logger)

    def _fail_queued(self, code: int, name: str) -> None:
        """New enqueues fail with ``code``, and what is queued fails now (its delivery reports
        complete the waiting calls)."""
        self._refuse = (code, name)
        client = self._client
        if client is not None:
            client.purge(in_queue=True, in_flight=True, blocking=False)

    def _failure(self, tracker: _Tracker | None = None) -> BrokerError | None:
        """The producer's failure, learning of a fatal error that a delivery report saw before
        error_cb did."""
        failure = self._health.failure
        if failure is None and tracker is not None and tracker.fatal is not None:
            self._on_client_error(tracker.fatal)
            failure = self._health.failure
        return failure

    def flush(self, timeout: float) -> int:
        client = self._client
        if client is None:
            return 0
        return self._serve(client, timeout)

    def close(self, timeout: float) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        client = self._client
        try:
            if client is None:
                return
            remaining = self._serve(client, timeout)
            self._fail_queued(_DESTROY, "_DESTROY")
            self._serve(client, 1.0)  # serve the purge reports
            self._stopping.set()
            with self._state:
                self._state.notify_all()
            if self._poller is not None:
                self._poller.join()
            self._serve(client, 0, flush=False)
            if remaining:
                self._spec.logger.warning(
                    "producer of %r: close() waited %g s and %d events were still "
                    "unacknowledged; they were abandoned: the produce calls waiting for them "
                    "raised ProduceError (in doubt: they may have been written)",
                    self._spec.topic,
                    timeout,
                    remaining,
                )
        finally:
            self._health.closed()

    # -- producing -----------------------------------------------------------------------------

    def _refuse_call(self, count: int) -> None:
        failure = self._failure()
        if failure is not None:
            raise produce_error(
                failure.code,
                failure.name,
                str(failure),
                failed=count,
                in_doubt=0,
                total=count,
                topic=self._spec.topic,
                cause=failure,
            )

    def _enqueue(
        self,
        records: list[Record],
        tracker: _Tracker,
        deadline: float | None,
        extra: Sequence[tuple[str, bytes]] = (),
    ) -> bool:
        """Hand every record to librdkafka, counting each in ``tracker.enqueued``. Returns True if
        librdkafka's queue stayed full until ``deadline`` (the rest is then not sent: the caller
        reports a timeout); a hard error counts the rest as failed."""
        client = self._started()
        topic = self._spec.topic
        leading, trailing = self._leading_headers, self._trailing_headers
        prefix = self._id_prefix
        with self._lock:  # one block of ce_id sequence numbers per call, as the compiled backend
            tracker.first_id = next(self._ids)
            self._ids = itertools.count(tracker.first_id + len(records))
        report = tracker.report
        # The call's headers with a hole at 2 for each event's ce_id (one list copy an event).
        template: list[tuple[str, str | bytes | None]] = [
            *leading,
            (wire.HEADER_ID, None),
            *trailing,
            (wire.HEADER_TIME, wire.timestamp()),
            *extra,
        ]
        for index, (value, key) in enumerate(records):
            refuse = self._refuse
            if refuse is not None:
                tracker.fail(
                    *refuse, "the producer refuses new events", len(records) - tracker.enqueued
                )
                tracker.enqueued = tracker.total
                return False
            headers = template.copy()
            headers[2] = (wire.HEADER_ID, f"{prefix}{tracker.first_id + index}".encode())
            while True:
                try:
                    client.produce(
                        topic, value, key, headers=headers, on_delivery=partial(report, index)
                    )
                    break
                except BufferError:
                    # librdkafka's queue is full: wait for delivery reports to make room.
                    if deadline is not None and time.monotonic() >= deadline:
                        return True
                    self._serve(client, 0.05, flush=False)
                except confluent_kafka.KafkaException as exc:
                    err = exc.args[0]
                    if err.fatal():
                        self._on_client_error(err)
                    tracker.fail(err.code(), err.name(), err.str(), len(records) - tracker.enqueued)
                    tracker.enqueued = tracker.total
                    return False
            tracker.enqueued += 1
        return False

    def produce(
        self,
        events: Sequence[Message],
        timeout: float | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> Deliveries:
        if not events:
            return Deliveries.empty()
        records = prepare_records(self._spec, events)
        self._refuse_call(len(records))
        tracker = _Tracker(len(records))
        deadline = None if timeout is None else time.monotonic() + timeout
        timed_out = False
        try:
            timed_out = self._enqueue(records, tracker, deadline, headers)
        finally:
            not_sent = tracker.total - tracker.enqueued
            tracker.hand_over()
        client = self._client
        assert client is not None
        state = self._state
        with state:
            self._flushers += 1
        try:
            # Serve delivery reports here (see the class doc) until this call's are all in.
            while not timed_out and not tracker.done.is_set():
                if deadline is None:
                    self._serve(client, _FLUSH_SLICE)
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = not tracker.done.is_set()
                    break
                self._serve(client, min(_FLUSH_SLICE, left))
        finally:
            with state:
                self._flushers -= 1
                if not self._flushers:
                    state.notify_all()
        if timed_out:
            timeout_error = self._timeout_error(tracker, timeout, not_sent)
            self._count(tracker, timeout_error)
            raise timeout_error
        error = tracker.error(self._spec.topic, self._failure(tracker))
        self._count(tracker, error)
        if error is not None:
            raise error
        self._health.up()
        return tracker.deliveries(self._id_prefix)

    def _count(self, tracker: _Tracker, error: ProduceError | None) -> None:
        """ProducerMetrics: one call ended (any thread)."""
        failed, in_doubt = (0, 0) if error is None else (error.failed, error.in_doubt)
        with self._metrics_lock:
            self._calls += 1
            self._events += tracker.total
            self._acked += tracker.total - failed - in_doubt
            self._failed += failed
            self._in_doubt += in_doubt
            self._call_time.add(time.monotonic_ns() - tracker.started)

    def metrics(self) -> ProducerMetrics:
        with self._metrics_lock:
            return ProducerMetrics(
                topic=self._spec.topic,
                calls=self._calls,
                events=self._events,
                acknowledged=self._acked,
                failed=self._failed,
                in_doubt=self._in_doubt,
                call_seconds=self._call_time.snapshot(),
            )

    def produce_async(
        self,
        events: Sequence[Message],
        loop: asyncio.AbstractEventLoop,
        timeout: float | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> asyncio.Future[Deliveries]:
        future: asyncio.Future[Deliveries] = loop.create_future()
        if not events:
            future.set_result(Deliveries.empty())
            return future
        records = prepare_records(self._spec, events)
        self._refuse_call(len(records))
        tracker = _Tracker(len(records))
        topic = self._spec.topic
        health = self._health

        def settle(error: ProduceError | None) -> None:
            if future.done():
                return
            if error is None:
                future.set_result(tracker.deliveries(self._id_prefix))
                health.up()
            else:
                future.set_exception(error)

        def on_done() -> None:
            self._async_done()
            error = tracker.error(topic, self._failure(tracker))
            self._count(tracker, error)
            # A closed loop raises RuntimeError: nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, error)

        def expire() -> None:
            if not future.done():
                future.set_exception(self._timeout_error(tracker, timeout, 0))

        tracker.on_done = on_done
        deadline = None if timeout is None else time.monotonic() + timeout
        timed_out = False
        # Counted before the guard goes (on_done uncounts it), once every event is enqueued (the
        # poll thread would flush earlier events before the rest are gathered).
        try:
            timed_out = self._enqueue(records, tracker, deadline, headers)
        except BaseException:
            tracker.on_done = None  # no future is returned: nothing to settle or count
            tracker.hand_over()
            raise
        not_sent = tracker.total - tracker.enqueued
        with self._state:
            self._async_pending += 1
            self._state.notify_all()
        tracker.hand_over()
        if timed_out:
            future.set_exception(self._timeout_error(tracker, timeout, not_sent))
        elif deadline is not None and not future.done():
            timer = loop.call_later(max(0.0, deadline - time.monotonic()), expire)
            future.add_done_callback(lambda _: timer.cancel())
        return future

    def _timeout_error(
        self, tracker: _Tracker, timeout: float | None, not_sent: int
    ) -> ProduceError:
        return produce_timeout_error(
            pending=tracker.pending(),
            not_sent=not_sent,
            total=tracker.total,
            topic=self._spec.topic,
            timeout=timeout,
            last_error=self._health.last_error,
        )
