"""The pure-Python backend's producer: a confluent_kafka.Producer, its owner thread, and per-call
delivery tracking.

Ownership: the client belongs to an owner thread (``_Client`` and its loop), which alone serves
it (delivery reports and callbacks run there, in Python) and, when asked to stop, fails what is
outstanding and destroys the client. The owner references only ``_Client``, never the
:class:`PureProducer`, so a producer dropped without ``close()`` is garbage-collected like any
object: it then asks the owner to stop. Callers only enqueue (confluent-kafka's produce() runs
no callback) and wait for their own call's events; they never serve the client. So a signal
(Python runs its handlers in the main thread only) never interrupts a delivery report that
another call waits for, and a close() from a signal handler never re-enters a call of the
client on the same thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING

import confluent_kafka
from google.protobuf.message import Message

from eventstream._runtime import forks, wire
from eventstream._runtime.librdkafka import ClientLog
from eventstream._runtime.records import Deliveries
from eventstream._runtime.telemetry.metrics import LatencyRecorder, ProducerMetrics
from eventstream.errors import (
    IN_DOUBT_CODES,
    BrokerError,
    ClosedError,
    ConfigError,
    ProduceError,
    event_too_large_error,
    event_type_error,
    key_function_error,
    key_type_error,
    produce_error,
    produce_timeout_error,
    refused_at_enqueue,
    serialize_error,
)

if TYPE_CHECKING:  # a backend imports only leaf modules at run time (tests/test_layers.py)
    from eventstream._runtime.backend import ProducerSpec
    from eventstream._runtime.health import Health

__all__ = ["PureProducer", "prepare_records"]

# The owner thread's longest wait between two rounds (s).
_POLL_SLICE = 0.1
# Callers: the longest wait between two looks at their deadline (s), and the pause while
# librdkafka's queue is full (the owner flushes meanwhile).
_WAIT_SLICE = 0.1
_ROOM_SLICE = 0.001
_DESTROY = -197  # librdkafka's _DESTROY: what events enqueued after close fail with
_PURGE_QUEUE = -152
_PURGE_INFLIGHT = -151

Record = tuple[bytes, bytes | None]
_UNREPORTED = -2  # a partition number no delivery report gives


def prepare_records(
    spec: ProducerSpec, events: Sequence[Message], extra: Sequence[tuple[str, bytes]] = ()
) -> list[Record]:
    """Type-check every event, then serialize values and keys and check their size; raises
    before anything is sent."""
    event_type = spec.event_type
    for index, event in enumerate(events):
        if type(event) is not event_type:
            raise event_type_error(index, type(event), event_type, spec.type_name)
    budget = spec.payload_budget
    if extra:
        budget -= wire.headers_size((name, len(value)) for name, value in extra)
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
    for index, (value, key) in enumerate(records):
        key_len = 0 if key is None else len(key)
        if key_len + len(value) > budget:
            raise event_too_large_error(
                index,
                key_len,
                len(value),
                budget,
                max_message_bytes=spec.max_message_bytes,
                total=len(records),
                topic=spec.topic,
            )
    return records


class _Tracker:
    """Delivery state of one produce call. Delivery callbacks run on whichever thread serves
    librdkafka (the owner thread, or callers flushing), possibly on several at once. The call is
    finished by whoever draws number ``total + 1`` from ``_settled``: each delivery report draws
    one, :meth:`hand_over` draws the rest at once (one per event never enqueued, one for the
    enqueuing caller's guard). Drawing is one C call, atomic under the GIL, so exactly one
    drawer finishes the call, and no lock is taken per event."""

    __slots__ = (
        "_client",
        "_lock",
        "_settled",
        "done",
        "enqueued",
        "failed",
        "fatal",
        "first_error",
        "first_id",
        "handed_over",
        "in_doubt",
        "offsets",
        "on_done",
        "partitions",
        "started",
        "total",
    )

    def __init__(self, client: _Client, total: int) -> None:
        self._client = client
        self.total = total
        self.started = time.monotonic_ns()
        self.partitions = array("i", [_UNREPORTED]) * total
        self.offsets = array("q", [-1001]) * total  # RD_KAFKA_OFFSET_INVALID until reported
        self.first_id = 0
        self._settled = itertools.count(1)
        self.enqueued = 0
        self.handed_over = False  # the enqueuer is done (see hand_over)
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
            code = err.code()
            self.fail(code, err.name(), err.str(), 1, in_doubt=self._client.in_doubt(code))
        if next(self._settled) == self.total + 1:
            self._finish()

    def deliveries(self, prefix: str) -> Deliveries:
        return Deliveries(self.partitions, self.offsets, prefix, self.first_id)

    def fail(self, code: int, name: str, reason: str, count: int, *, in_doubt: bool) -> None:
        with self._lock:
            if in_doubt:
                self.in_doubt += count
            else:
                self.failed += count
            if self.first_error is None:
                self.first_error = (code, name, reason)

    def hand_over(self) -> None:
        """The caller is done enqueueing: never-enqueued events leave the count, the guard goes."""
        self.handed_over = True
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


class _Client:
    """The confluent-kafka client and what its owner thread shares with the callers. The owner
    thread runs :meth:`own`; see the module docstring."""

    def __init__(self, spec: ProducerSpec) -> None:
        # Not the spec itself: its key function may hold the application's objects, and this
        # object lives as long as the owner thread (see the module docstring).
        self.topic = spec.topic
        self.health: Health = spec.health
        self._statistics = spec.statistics
        conf: dict[str, object] = dict(spec.properties)
        conf["error_cb"] = self._on_client_error
        conf["stats_cb"] = self._on_stats
        conf["logger"] = ClientLog(spec.logger)
        try:
            self.client = confluent_kafka.Producer(conf)
            forks.keep_in_children(self)
        except confluent_kafka.KafkaException as exc:
            raise ConfigError("properties", exc.args[0].str()) from None
        # Guards the counts below; notified when the owner has work (see PureProducer).
        self.state = threading.Condition(threading.Lock())
        # Calls that have enqueued their events and wait for them, and callers waiting for room
        # in the queue or for flush(): the owner flushes while there are any. Both are sets of
        # one token per call, not counts: a call adds its token inside the ``try`` whose
        # ``finally`` discards it, as the first call there, so a KeyboardInterrupt landing
        # anywhere (even in a lock's acquire) can neither leak a token nor take one twice.
        self.waiting: set[object] = set()
        self.active: set[object] = set()  # calls that may use the client; destroyed when empty
        self.stop: str | None = None  # "close" or "abandon": asks the owner to stop
        self.close_deadline: float | None = None
        self.purged_failed = self.purged_in_doubt = 0  # events a close failed
        # None, or the (code, name) new enqueues fail with (closing, or the producer failed).
        self.refuse: tuple[int, str] | None = None
        self.finished = threading.Event()  # the owner destroyed the client and ended
        # ProducerMetrics, under metrics_lock (calls end on any thread):
        self.metrics_lock = threading.Lock()
        self.calls = self.events = self.acked = self.failed = self.in_doubt_events = 0
        self.call_time = LatencyRecorder()

    def failure(self, tracker: _Tracker | None = None) -> BrokerError | None:
        """The producer's failure, learning of a fatal error that a delivery report saw before
        error_cb did."""
        failure = self.health.failure
        if failure is None and tracker is not None and tracker.fatal is not None:
            fatal = tracker.fatal
            failure = self.health.client_error(fatal.code(), fatal.name(), fatal.str(), fatal=True)
            if failure is not None:
                self.fail_queued(failure.code, failure.name)
        return failure

    def count(self, tracker: _Tracker, error: ProduceError | None) -> None:
        """ProducerMetrics: one call ended (any thread)."""
        failed, in_doubt = (0, 0) if error is None else (error.failed, error.in_doubt)
        with self.metrics_lock:
            self.calls += 1
            self.events += tracker.total
            self.acked += tracker.total - failed - in_doubt
            self.failed += failed
            self.in_doubt_events += in_doubt
            self.call_time.add(time.monotonic_ns() - tracker.started)

    # -- callbacks (whoever serves the client) --------

    def _on_client_error(self, err: confluent_kafka.KafkaError) -> None:
        failure = self.health.client_error(err.code(), err.name(), err.str(), fatal=err.fatal())
        if failure is not None:
            self.fail_queued(failure.code, failure.name)

    def _on_stats(self, stats: str) -> None:
        if self._statistics is not None:
            self._statistics(stats)

    def in_doubt(self, code: int) -> bool:
        """Whether an event whose delivery failed with ``code`` may have been written. Nothing
        was, while no broker has ever answered this client."""
        if code in (_PURGE_QUEUE, _PURGE_INFLIGHT) and self.stop is not None:
            with self.state:
                if code == _PURGE_QUEUE:
                    self.purged_failed += 1
                else:
                    self.purged_in_doubt += 1
        return code in IN_DOUBT_CODES and self.health.answered

    def fail_queued(self, code: int, name: str) -> None:
        """New enqueues fail with ``code``, and what is queued fails now (its delivery reports
        complete the waiting calls)."""
        self.refuse = (code, name)
        self.client.purge(in_queue=True, in_flight=True, blocking=False)

    def serve(self, timeout: float, *, flush: bool = True) -> int:
        """client.flush(timeout) (or poll): serve delivery reports and callbacks. confluent-kafka
        raises the client's fatal error from there; it goes to the Health like error_cb's.
        Returns how many messages are still in flight. A timeout that is already over serves
        without blocking (confluent-kafka reads a negative one as "forever")."""
        timeout = max(0.0, timeout)
        try:
            if flush:
                return int(self.client.flush(timeout))
            self.client.poll(timeout)
        except confluent_kafka.KafkaException as exc:
            self._on_client_error(exc.args[0])
        except SystemError as exc:
            # confluent-kafka drops an exception raised as a bare type inside one of its
            # callbacks (flush/poll then "returned NULL without setting an exception"); Python's
            # default SIGINT handler raises KeyboardInterrupt that way, in our delivery callback.
            if "without setting an exception" in str(exc):
                raise KeyboardInterrupt from None
            raise
        return len(self.client)

    def _should_flush(self) -> bool:
        """Called with ``state`` held: someone waits for deliveries and there is something to
        send or report (so the owner never spins on an empty flush)."""
        return bool(self.waiting) and len(self.client) > 0

    def wait_for_owner(self, token: object) -> None:
        """The call of ``token`` waits for the owner to flush (see ``waiting``); it discards
        ``token`` from ``waiting`` when it stops waiting."""
        self.waiting.add(token)
        with self.state:
            self.state.notify_all()

    # -- the owner thread --------

    def own(self) -> None:
        state = self.state
        while True:
            with state:
                if self.stop is None and not self._should_flush():
                    state.wait(_POLL_SLICE)
                if self.stop is not None:
                    break
                flush = self._should_flush()
            # flush() ignores linger.ms while it runs: waiting calls' events are sent at once.
            self.serve(_POLL_SLICE if flush else 0, flush=flush)
        self._finish()

    def _finish(self) -> None:
        """Give what is outstanding until the close deadline, fail the rest, wait for the calls
        still using the client, destroy it."""
        self.refuse = (_DESTROY, "_DESTROY")
        deadline = self.close_deadline if self.stop == "close" else time.monotonic()
        while len(self.client) and (deadline is None or time.monotonic() < deadline):
            self.serve(
                _POLL_SLICE if deadline is None else min(_POLL_SLICE, deadline - time.monotonic())
            )
        while True:
            if len(self.client):
                self.client.purge(in_queue=True, in_flight=True, blocking=False)
            self.serve(0.01)
            with self.state:
                if not self.active and not len(self.client):
                    break
        with contextlib.suppress(Exception):
            self.client.close()
        self.health.closed()
        self.finished.set()

    def ask_stop(self, how: str, deadline: float | None) -> None:
        with self.state:
            if self.stop is None:
                self.stop = how
                self.close_deadline = deadline
                self.purged_failed = self.purged_in_doubt = 0
            elif how == "abandon":
                self.stop = how
            self.state.notify_all()


class PureProducer:
    """eventstream._runtime.backend.NativeProducer over confluent-kafka.

    linger.ms (5 ms by default) lets librdkafka gather a call's events while they are enqueued;
    after that nobody should wait it out. A blocking produce() therefore serves with
    client.flush() in short slices until its own tracker is done (flush() sends whatever
    lingers), and the owner thread stays out of librdkafka meanwhile, so that it cannot take a
    delivery report a flushing caller is waiting for. While produce_async() calls are pending and
    no blocking caller flushes, the owner flushes for them; otherwise it polls without blocking
    every _POLL_SLICE (errors, statistics, logs, reports of abandoned calls)."""

    def __init__(self, spec: ProducerSpec) -> None:
        self._spec = spec
        self._health = spec.health
        self._core = _Client(spec)
        self._owner = threading.Thread(
            target=self._core.own, name=f"eventstream-producer-{spec.topic}", daemon=True
        )
        self._owner.start()
        self._ids_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._id_prefix = wire.new_producer_id() + "-"
        # In the compiled backend's order: the four constant headers, then ce_id and ce_time
        # (then a Telemetry's headers).
        self._constant_headers: list[tuple[str, str | bytes | None]] = [
            (wire.HEADER_CONTENT_TYPE, wire.CONTENT_TYPE),
            (wire.HEADER_SPECVERSION, wire.SPECVERSION),
            (wire.HEADER_SOURCE, spec.source.encode()),
            (wire.HEADER_TYPE, spec.type_name.encode()),
        ]

    def __del__(self) -> None:
        core = getattr(self, "_core", None)
        if core is not None:
            core.ask_stop("abandon", None)

    # -- lifecycle -----------------------------------------------------------------------------

    def _enter(self, token: object, count: int) -> _Client:
        """Count the call of ``token`` as one that may use the client (the caller discards
        ``token`` from ``active`` in a ``finally``, also when this raises); raises ClosedError
        after close, or the producer's failure as this call's ProduceError."""
        core = self._core
        core.active.add(token)  # before looking at stop: the owner sees it or this call sees stop
        if core.stop is not None:
            raise ClosedError(f"the producer of {self._spec.topic!r} is closed")
        failure = core.failure()
        if failure is not None and count:
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
        return core

    def flush(self, timeout: float) -> int:
        token = object()
        try:
            core = self._enter(token, 0)
            deadline = time.monotonic() + timeout
            core.wait_for_owner(token)
            while True:  # the owner flushes; this caller looks at the queue
                left = len(core.client)
                if not left or time.monotonic() >= deadline:
                    return left
                time.sleep(min(_ROOM_SLICE * 10, max(0.0, deadline - time.monotonic())))
        finally:
            self._core.waiting.discard(token)
            self._core.active.discard(token)

    def close(self, timeout: float | None) -> tuple[int, int, bool]:
        core = self._core
        deadline = None if timeout is None else time.monotonic() + timeout
        core.ask_stop("close", deadline)
        finished = core.finished.wait(None if timeout is None else timeout + 1.0)
        with core.state:
            return core.purged_failed, core.purged_in_doubt, finished

    def abandon(self) -> None:
        self._core.ask_stop("abandon", None)

    # -- producing -----------------------------------------------------------------------------

    def _enqueue(
        self,
        records: list[Record],
        tracker: _Tracker,
        deadline: float | None,
        extra: Sequence[tuple[str, bytes]] = (),
    ) -> bool:
        """Hand records from ``tracker.enqueued`` on to librdkafka, counting each. Returns True if
        librdkafka's queue stayed full until ``deadline`` (the rest is then not handed over); a
        hard error counts the rest as failed (never sent)."""
        core = self._core
        client = core.client
        topic = self._spec.topic
        prefix = self._id_prefix
        report = tracker.report
        # The call's headers with a hole at 4 for each event's ce_id (one list copy an event).
        template: list[tuple[str, str | bytes | None]] = [
            *self._constant_headers,
            (wire.HEADER_ID, None),
            (wire.HEADER_TIME, wire.timestamp()),
            *extra,
        ]
        for index in range(tracker.enqueued, tracker.total):
            value, key = records[index]
            refuse = core.refuse
            if refuse is not None:
                tracker.fail(
                    *refuse,
                    "the producer refuses new events",
                    tracker.total - tracker.enqueued,
                    in_doubt=False,
                )
                return False
            headers = template.copy()
            headers[4] = (wire.HEADER_ID, f"{prefix}{tracker.first_id + index}".encode())
            while True:
                try:
                    client.produce(
                        topic, value, key, headers=headers, on_delivery=partial(report, index)
                    )
                    break
                except BufferError:
                    # librdkafka's queue is full: delivery reports (served by the owner)
                    # make room, as linger.ms lets them; so on the compiled backend.
                    if deadline is not None and time.monotonic() >= deadline:
                        return True
                    time.sleep(_ROOM_SLICE)
                except TypeError as exc:
                    # Our arguments always have the right types: confluent-kafka raises this when
                    # a SIGINT handler ran while it converted the headers, and replaces the
                    # handler's KeyboardInterrupt with it (seen in tests/test_interrupts.py).
                    if "header" in str(exc):
                        raise KeyboardInterrupt from None
                    raise
                except confluent_kafka.KafkaException as exc:
                    err = exc.args[0]
                    if err.fatal():
                        core.health.client_error(err.code(), err.name(), err.str(), fatal=True)
                        core.fail_queued(err.code(), err.name())
                    tracker.fail(
                        err.code(),
                        err.name(),
                        refused_at_enqueue(err.str(), index, tracker.total),
                        tracker.total - tracker.enqueued,
                        in_doubt=False,
                    )
                    return False
            tracker.enqueued += 1
        return False

    def _new_tracker(self, count: int) -> _Tracker:
        tracker = _Tracker(self._core, count)
        with self._ids_lock:  # one block of ce_id sequence numbers per call
            tracker.first_id = next(self._ids)
            self._ids = itertools.count(tracker.first_id + count)
        return tracker

    def produce(
        self,
        events: Sequence[Message],
        timeout: float | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> Deliveries:
        if not events:
            return Deliveries.empty()
        records = prepare_records(self._spec, events, headers)
        token = object()
        try:
            return self._produce(self._enter(token, len(records)), token, records, timeout, headers)
        finally:
            self._core.active.discard(token)

    def _produce(
        self,
        core: _Client,
        token: object,
        records: list[Record],
        timeout: float | None,
        headers: Sequence[tuple[str, bytes]],
    ) -> Deliveries:
        tracker = self._new_tracker(len(records))
        deadline = None if timeout is None else time.monotonic() + timeout
        timed_out = False
        try:
            timed_out = self._enqueue(records, tracker, deadline, headers)
        finally:
            not_sent = tracker.total - tracker.enqueued
            tracker.hand_over()
        try:
            core.wait_for_owner(token)
            # The owner serves the deliveries (see the module docstring); this call waits.
            while not timed_out and not tracker.done.is_set():
                if deadline is None:
                    tracker.done.wait(_WAIT_SLICE)
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = not tracker.done.is_set()
                    break
                tracker.done.wait(min(_WAIT_SLICE, left))
        finally:
            core.waiting.discard(token)
        if timed_out:
            timeout_error = _timeout_error(
                tracker, timeout, not_sent, self._spec.topic, self._health.last_error
            )
            self._core.count(tracker, timeout_error)
            raise timeout_error
        error = tracker.error(self._spec.topic, self._core.failure(tracker))
        self._core.count(tracker, error)
        if error is not None:
            raise error
        self._health.up()
        return tracker.deliveries(self._id_prefix)

    def metrics(self) -> ProducerMetrics:
        core = self._core
        with core.metrics_lock:
            return ProducerMetrics(
                topic=self._spec.topic,
                calls=core.calls,
                events=core.events,
                acknowledged=core.acked,
                failed=core.failed,
                in_doubt=core.in_doubt_events,
                call_seconds=core.call_time.snapshot(),
            )

    def produce_async(
        self,
        events: Sequence[Message],
        loop: asyncio.AbstractEventLoop,
        timeout: float | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> tuple[asyncio.Future[Deliveries], _Pending | None]:
        future: asyncio.Future[Deliveries] = loop.create_future()
        if not events:
            future.set_result(Deliveries.empty())
            return future, None
        records = prepare_records(self._spec, events, headers)
        token = object()  # in ``active`` until _Pending.hand_over(), in ``waiting`` until on_done
        try:
            core = self._enter(token, len(records))
        except BaseException:
            self._core.active.discard(token)
            raise
        tracker = self._new_tracker(len(records))
        topic = self._spec.topic
        health = self._health
        prefix = self._id_prefix

        # What the delivery reports reach (through the tracker) must not hold this producer:
        # a producer dropped with calls in flight is collected, and asks its owner to stop.
        def settle(error: ProduceError | None) -> None:
            if future.done():
                return
            if error is None:
                future.set_result(tracker.deliveries(prefix))
                health.up()
            else:
                future.set_exception(error)

        def on_done() -> None:
            core.waiting.discard(token)
            error = tracker.error(topic, core.failure(tracker))
            core.count(tracker, error)
            # A closed loop raises RuntimeError: nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, error)

        tracker.on_done = on_done
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            # Never blocks the loop: what does not fit now is enqueued by _Pending.finish().
            full = self._enqueue(records, tracker, time.monotonic(), headers)
        except BaseException:
            tracker.on_done = None  # no future is returned: nothing to settle or count
            tracker.hand_over()
            core.active.discard(token)
            raise
        if deadline is not None:
            last_error = partial(getattr, health, "last_error")

            def expire() -> None:
                # While a _Pending still enqueues, it reports the timeout itself, knowing
                # exactly which events it never handed over.
                if not future.done() and tracker.handed_over:
                    future.set_exception(_timeout_error(tracker, timeout, 0, topic, last_error()))

            timer = loop.call_later(max(0.0, deadline - time.monotonic()), expire)
            future.add_done_callback(lambda _: timer.cancel())
        pending = _Pending(self, token, records, tracker, deadline, headers, future, loop, timeout)
        if full:
            return future, pending
        pending.hand_over()
        return future, None


def _timeout_error(
    tracker: _Tracker, timeout: float | None, not_sent: int, topic: str, last_error: str | None
) -> ProduceError:
    return produce_timeout_error(
        pending=tracker.pending(),
        not_sent=not_sent,
        total=tracker.total,
        topic=topic,
        timeout=timeout,
        last_error=last_error,
    )


class _Pending:
    """The rest of a produce_async() call (eventstream._runtime.backend.PendingEnqueue)."""

    def __init__(
        self,
        producer: PureProducer,
        token: object,
        records: list[Record],
        tracker: _Tracker,
        deadline: float | None,
        headers: Sequence[tuple[str, bytes]],
        future: asyncio.Future[Deliveries],
        loop: asyncio.AbstractEventLoop,
        timeout: float | None,
    ) -> None:
        self._producer = producer
        self._token = token
        self._records = records
        self._tracker = tracker
        self._deadline = deadline
        self._headers = headers
        self._future = future
        self._loop = loop
        self._timeout = timeout
        self._handed_over = False

    def __del__(self) -> None:
        # finish() never ran (its executor task was cancelled before it started): the rest is
        # not sent, and the call's future says so when its tracker completes.
        if not self._handed_over:
            self.hand_over()

    def finish(self) -> None:
        timed_out = False
        try:
            timed_out = self._producer._enqueue(  # pyright: ignore[reportPrivateUsage]
                self._records, self._tracker, self._deadline, self._headers
            )
            if timed_out:
                # Still full at the deadline: the future fails with the timeout now, before the
                # tracker's completion can settle it with anything else (the loop runs its
                # callbacks in order).
                producer = self._producer
                error = _timeout_error(
                    self._tracker,
                    self._timeout,
                    self._tracker.total - self._tracker.enqueued,
                    producer._spec.topic,  # pyright: ignore[reportPrivateUsage]
                    producer._health.last_error,  # pyright: ignore[reportPrivateUsage]
                )
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(_fail_future, self._future, error)
        finally:
            self.hand_over()

    def hand_over(self) -> None:
        if self._handed_over:
            return
        self._handed_over = True
        tracker = self._tracker
        if tracker.enqueued < tracker.total and tracker.first_error is None:
            tracker.fail(
                -184,  # _QUEUE_FULL
                "_QUEUE_FULL",
                "librdkafka's queue stayed full; these events were never sent",
                tracker.total - tracker.enqueued,
                in_doubt=False,
            )
        # Once the call has enqueued everything the owner flushes for it (as the compiled
        # backend's owner does); counted before the guard goes (on_done uncounts it).
        core = self._producer._core  # pyright: ignore[reportPrivateUsage]
        core.wait_for_owner(self._token)
        tracker.hand_over()
        core.active.discard(self._token)


def _fail_future(future: asyncio.Future[Deliveries], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
