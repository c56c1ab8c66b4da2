"""Producer of the pure-Python backend: confluent_kafka.Producer plus per-call delivery tracking."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Sequence

import confluent_kafka
from google.protobuf.message import Message

from eventstream import wire
from eventstream.backend import ProducerSpec
from eventstream.errors import (
    ClosedError,
    EventTypeError,
    ProduceError,
    SerializationError,
    produce_error,
    produce_timeout_error,
)
from eventstream.librdkafka_log import ClientLog

__all__ = ["PureProducer", "prepare_records"]

# A blocking produce() serves delivery reports itself with client.flush() in slices this long (s),
# until its own events are reported: flush ignores linger.ms while it runs, so the call's events
# are sent at once, and the slices bound the wait for other threads' events.
_FLUSH_SLICE = 0.002
# The poll thread's longest wait between two rounds (s).
_POLL_SLICE = 0.1

Record = tuple[bytes, bytes | None]


def prepare_records(spec: ProducerSpec, events: Sequence[Message]) -> list[Record]:
    """Type-check every event, then serialize values and keys; raises before anything is sent."""
    event_type = spec.event_type
    for index, event in enumerate(events):
        if type(event) is not event_type:
            raise EventTypeError(
                f"event {index} of the call is a {type(event).__qualname__}, expected "
                f"{spec.type_name} ({event_type.__qualname__}); nothing was sent"
            )
    key_of = spec.key
    records: list[Record] = []
    for index, event in enumerate(events):
        try:
            value = event.SerializeToString()
        except Exception as exc:
            raise SerializationError(
                f"event {index} of the call could not be serialized: {exc}; nothing was sent"
            ) from exc
        key: bytes | None = None
        if key_of is not None:
            raw = key_of(event)
            if isinstance(raw, str):
                key = raw.encode()
            elif isinstance(raw, bytes) or raw is None:
                key = raw
            else:
                raise SerializationError(
                    f"the key function returned {type(raw).__qualname__} for event {index}; "
                    "it must return str, bytes or None; nothing was sent"
                )
        records.append((value, key))
    return records


class _Tracker:
    """Delivery state of one produce call. Delivery callbacks run on the poll thread."""

    __slots__ = ("_lock", "done", "failed", "first_error", "on_done", "remaining", "total")

    def __init__(self, total: int) -> None:
        self.total = total
        self.remaining = total
        self.failed = 0
        self.first_error: confluent_kafka.KafkaError | None = None
        self.done = threading.Event()
        self._lock = threading.Lock()
        self.on_done: Callable[[], None] | None = None

    def report(self, err: confluent_kafka.KafkaError | None, _msg: object = None) -> None:
        with self._lock:
            if err is not None:
                self.failed += 1
                if self.first_error is None:
                    self.first_error = err
            self.remaining -= 1
            finished = self.remaining == 0
        if finished:
            self.done.set()
            if self.on_done is not None:
                self.on_done()

    def fail_unsent(self, count: int, err: confluent_kafka.KafkaError) -> None:
        """Account for ``count`` events that never reached librdkafka's queue."""
        for _ in range(count):
            self.report(err)

    def error(self, topic: str) -> ProduceError | None:
        err = self.first_error
        if err is None:
            return None
        return produce_error(
            err.code(),
            err.name(),
            err.str(),
            failed=self.failed,
            total=self.total,
            topic=topic,
            fatal=err.fatal(),
        )


class PureProducer:
    """Thread-safe. The confluent-kafka client and its poll thread start at the first produce.

    linger.ms (5 ms by default) lets librdkafka gather a call's events while they are enqueued;
    after that nobody should wait it out. A blocking produce() therefore serves with
    client.flush() in short slices until its own tracker is done (flush() sends whatever
    lingers), and the poll thread stays out of librdkafka meanwhile, so that it cannot take a
    delivery report a flushing caller is waiting for. While produce_async() calls are pending and
    no blocking caller flushes, the poll thread flushes for them; otherwise it polls without
    blocking every _POLL_SLICE (errors, logs, reports of abandoned calls)."""

    def __init__(self, spec: ProducerSpec) -> None:
        self._spec = spec
        self._lock = threading.Lock()
        self._client: confluent_kafka.Producer | None = None
        self._poller: threading.Thread | None = None
        self._stopping = threading.Event()
        # Guards the two counts; notified when the poll thread has work (see the class doc).
        self._state = threading.Condition(threading.Lock())
        self._flushers = 0  # blocking produce() calls flushing right now
        self._async_pending = 0  # produce_async() calls enqueued and not yet complete
        self._closed = False
        self._last_error: str | None = None
        self._ids = itertools.count(1)
        self._id_prefix = wire.new_producer_id() + "-"
        self._static_headers: list[tuple[str, str | bytes | None]] = [
            (wire.HEADER_CONTENT_TYPE, wire.CONTENT_TYPE),
            (wire.HEADER_SPECVERSION, wire.SPECVERSION),
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
                raise ClosedError("the producer is closed")
            if self._client is None:
                conf: dict[str, object] = dict(self._spec.properties)
                conf["error_cb"] = self._on_client_error
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
                client.flush(_POLL_SLICE)
            elif serve:
                client.poll(0)

    def _should_flush(self, client: confluent_kafka.Producer) -> bool:
        """Called with _state held: async calls wait, no blocking caller serves, and there is
        something to send or report (so the poll thread never spins on an empty flush)."""
        return not self._flushers and self._async_pending > 0 and len(client) > 0

    def _async_done(self) -> None:
        with self._state:
            self._async_pending -= 1

    def _on_client_error(self, err: confluent_kafka.KafkaError) -> None:
        # Connection trouble is remembered for the timeout message rather than logged each retry.
        self._last_error = f"{err.name()}: {err.str()}"
        if err.fatal():
            self._spec.logger.error("producer fatal error: %s", self._last_error)

    def flush(self, timeout: float) -> int:
        client = self._client
        if client is None:
            return 0
        return int(client.flush(timeout))

    def close(self, timeout: float) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        client = self._client
        if client is None:
            return
        remaining = client.flush(timeout)
        self._stopping.set()
        with self._state:
            self._state.notify_all()
        if self._poller is not None:
            self._poller.join()
        client.poll(0)
        if remaining:
            self._spec.logger.warning(
                "producer of %r closed with %d events unacknowledged after %g s",
                self._spec.topic,
                remaining,
                timeout,
            )

    # -- producing -----------------------------------------------------------------------------

    def _enqueue(
        self, events: Sequence[Message], tracker: _Tracker, deadline: float | None
    ) -> None:
        """Hand every event to librdkafka. If its queue stays full until ``deadline``, the rest
        are never sent and stay pending in ``tracker``, so the caller's wait times out."""
        records = prepare_records(self._spec, events)
        client = self._started()
        topic = self._spec.topic
        static = self._static_headers
        prefix = self._id_prefix
        ids = self._ids
        report = tracker.report
        for sent, (value, key) in enumerate(records):
            headers: list[tuple[str, str | bytes | None]] = [
                *static,
                (wire.HEADER_ID, f"{prefix}{next(ids)}".encode()),
            ]
            while True:
                try:
                    client.produce(topic, value, key, headers=headers, on_delivery=report)
                    break
                except BufferError:
                    # librdkafka's queue is full: wait for delivery reports to make room.
                    if deadline is not None and time.monotonic() >= deadline:
                        return
                    client.poll(0.05)
                except confluent_kafka.KafkaException as exc:
                    tracker.fail_unsent(len(records) - sent, exc.args[0])
                    return

    def produce(self, events: Sequence[Message], timeout: float | None) -> None:
        if not events:
            return
        tracker = _Tracker(len(events))
        deadline = None if timeout is None else time.monotonic() + timeout
        self._enqueue(events, tracker, deadline)
        client = self._client
        assert client is not None
        state = self._state
        with state:
            self._flushers += 1
        try:
            # Serve delivery reports here (see the class doc) until this call's are all in.
            while not tracker.done.is_set():
                if deadline is None:
                    client.flush(_FLUSH_SLICE)
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    if tracker.done.is_set():
                        break
                    raise self._timeout_error(tracker, timeout or 0.0)
                client.flush(min(_FLUSH_SLICE, left))
        finally:
            with state:
                self._flushers -= 1
                if not self._flushers:
                    state.notify_all()
        error = tracker.error(self._spec.topic)
        if error is not None:
            raise error

    def produce_async(
        self, events: Sequence[Message], loop: asyncio.AbstractEventLoop, timeout: float | None
    ) -> asyncio.Future[None]:
        future: asyncio.Future[None] = loop.create_future()
        if not events:
            future.set_result(None)
            return future
        tracker = _Tracker(len(events))
        topic = self._spec.topic

        def settle() -> None:
            if future.done():
                return
            error = tracker.error(topic)
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

        def on_done() -> None:
            self._async_done()
            # A closed loop raises RuntimeError: nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle)

        def expire() -> None:
            if not future.done():
                future.set_exception(self._timeout_error(tracker, timeout or 0.0))

        tracker.on_done = on_done
        tracker.remaining += 1  # guard: on_done cannot run before the hand-over below
        try:
            self._enqueue(events, tracker, None if timeout is None else time.monotonic() + timeout)
        except BaseException:
            tracker.on_done = None  # no future is returned: nothing to settle or count
            raise
        else:
            # Counted once every event is enqueued (the poll thread would flush earlier events
            # before the rest are gathered), before the guard goes (on_done uncounts it).
            with self._state:
                self._async_pending += 1
                self._state.notify_all()
        finally:
            tracker.report(None)  # drop the guard (not a delivery: counts no failure)
        if timeout is not None and not future.done():
            timer = loop.call_later(timeout, expire)
            future.add_done_callback(lambda _: timer.cancel())
        return future

    def _timeout_error(self, tracker: _Tracker, timeout: float) -> ProduceError:
        return produce_timeout_error(
            pending=tracker.remaining,
            total=tracker.total,
            topic=self._spec.topic,
            timeout=timeout,
            last_error=self._last_error,
        )
