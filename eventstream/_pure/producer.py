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
    """Thread-safe. The confluent-kafka client and its poll thread start at the first produce."""

    def __init__(self, spec: ProducerSpec) -> None:
        self._spec = spec
        self._lock = threading.Lock()
        self._client: confluent_kafka.Producer | None = None
        self._poller: threading.Thread | None = None
        self._stopping = threading.Event()
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
        while not self._stopping.is_set():
            client.poll(0.1)

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
        if deadline is None:
            tracker.done.wait()
        elif not tracker.done.wait(max(0.0, deadline - time.monotonic())):
            raise self._timeout_error(tracker, timeout or 0.0)
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
            # A closed loop raises RuntimeError: nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle)

        def expire() -> None:
            if not future.done():
                future.set_exception(self._timeout_error(tracker, timeout or 0.0))

        tracker.on_done = on_done
        self._enqueue(events, tracker, None if timeout is None else time.monotonic() + timeout)
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
