"""Publishing typed events: :class:`Producer`."""

from __future__ import annotations

import asyncio
import logging
import threading
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from eventstream._runtime import forks
from eventstream._runtime.backend import NativeProducer
from eventstream._runtime.closing import Closeable, check_timeout
from eventstream._runtime.health import ClientStatus, Health
from eventstream._runtime.records import Deliveries
from eventstream._runtime.telemetry.instrumentation import Telemetry
from eventstream._runtime.telemetry.metrics import ProducerMetrics

__all__ = ["Producer"]

E = TypeVar("E", bound=Message)


class Producer(Closeable, Generic[E]):
    """Publishes events of one type to one topic. Create it with :meth:`Topic.new_producer`.

    Thread-safe: many threads may call :meth:`produce` at once; each waits for its own events only.
    The client starts when the producer is made: it connects and obtains its producer id in the
    background, so a first call made a moment later does not wait for that. A producer made
    before ``os.fork()`` cannot be used in the child (:class:`ClosedError`); closing it there
    does nothing. A producer garbage-collected without :meth:`close` fails what it still had
    outstanding and stops, with a ``ResourceWarning``.
    """

    def __init__(
        self,
        backend: NativeProducer,
        topic: str,
        health: Health,
        logger: logging.Logger,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._backend = backend
        self._topic = topic
        self._telemetry = telemetry
        self._health = health
        self._logger = logger
        self._closed = False
        self._lock = threading.Lock()
        self._generation = forks.generation()

    def __del__(self) -> None:
        # Never joins or frees: the owner thread, asked to stop, releases the client itself.
        if getattr(self, "_closed", True) or self._generation != forks.generation():
            return
        warnings.warn(
            f"an unclosed producer of {self._topic!r} was garbage-collected: what it still had "
            "outstanding fails; close() it (or its Topic) to wait for its acknowledgements",
            ResourceWarning,
            source=self,
            stacklevel=1,
        )
        self._backend.abandon()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (it may still be finishing on another thread).
        Thread-safe; no network call."""
        return self._closed

    @property
    def status(self) -> ClientStatus:
        """The producer's state (``connecting``, ``ready``, ``disconnected``, ``failed``,
        ``closed``), its latest error and since when. Thread-safe; no network call."""
        return self._health.status

    def produce(self, *events: E, timeout: float | None = None) -> Deliveries:
        """Publish ``events`` and block until the broker acknowledged every one (acks=all);
        return where each went (:class:`Deliveries`: partition, offset and ``ce_id`` per event,
        in call order).

        ``timeout`` (seconds) bounds the wait; ``None`` waits as long as librdkafka retries
        (``TopicConfig.delivery_timeout``). The GIL is released while waiting; Ctrl+C interrupts
        (the events already handed to librdkafka may still be written).

        Raises :class:`EventTypeError` if any event is not of the topic's type and
        :class:`SerializationError` for an event or key that cannot be serialized (nothing is
        sent in both cases); :class:`ProduceError` when events were not acknowledged (``failed``
        counts those known not written, ``in_doubt`` those that may have been;
        ``.retriable`` says whether trying again can help), :class:`ProduceTimeoutError` (a
        ``ProduceError``) when a deadline passed, :class:`ProduceAuthenticationError` /
        :class:`ProduceAuthorizationError` for refused credentials or permissions;
        :class:`ClosedError` after :meth:`close`; :class:`ConfigError` for a bad ``timeout``.
        Once the producer has failed (``status.state == "failed"``) every call raises its error.
        """
        self._check_usable()
        check_timeout(timeout)
        telemetry = self._telemetry
        if telemetry is None:
            return self._backend.produce(events, timeout)
        with telemetry.send(self._topic, len(events)) as headers:
            return self._backend.produce(events, timeout, headers)

    async def produce_async(self, *events: E, timeout: float | None = None) -> Deliveries:
        """Like :meth:`produce`, but awaits the acknowledgements instead of blocking for them.

        The events are serialized and handed to librdkafka on the event loop's thread (CPU time
        that grows with the call, no network wait); when librdkafka's queue is full, the rest of
        the call waits for room on a worker thread. Type, serialization and size errors are
        raised before anything is sent. On ``timeout`` raises :class:`ProduceTimeoutError` (the
        events are in doubt); cancelling the await does not recall events already handed over.
        """
        self._check_usable()
        check_timeout(timeout)
        loop = asyncio.get_running_loop()
        telemetry = self._telemetry
        if telemetry is None:
            return await self._produce_async(events, loop, timeout, ())
        with telemetry.send(self._topic, len(events)) as headers:
            return await self._produce_async(events, loop, timeout, headers)

    async def _produce_async(
        self,
        events: tuple[E, ...],
        loop: asyncio.AbstractEventLoop,
        timeout: float | None,
        headers: Sequence[tuple[str, bytes]],
    ) -> Deliveries:
        future, pending = self._backend.produce_async(events, loop, timeout, headers)
        if pending is not None:
            await loop.run_in_executor(None, pending.finish)
        return await future

    def observe_statistics(self, stats: Mapping[str, Any]) -> None:
        """librdkafka's statistics, parsed (TopicConfig.metrics): nothing kept for a producer."""

    def metrics(self) -> ProducerMetrics:
        """Counts and call durations since the producer was made: a snapshot. Thread-safe; no
        network call."""
        return self._backend.metrics()

    def flush(self, timeout: float = 30.0) -> int:
        """Block until everything produced so far is acknowledged or ``timeout`` passed; returns
        how many events are still unacknowledged."""
        self._check_usable()
        return self._backend.flush(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Wait up to ``timeout`` seconds (``None``: as long as it takes) for what is outstanding
        to be acknowledged, fail the rest (the calls waiting for it raise
        :class:`ProduceError`) and release the client. Returns within ``timeout`` from any
        thread, a signal handler or a handler included; idempotent. Blocks."""
        check_timeout(timeout)
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._generation != forks.generation():
            self._health.closed()  # the client belongs to the parent process: leave it alone
            return
        try:
            failed, in_doubt, finished = self._backend.close(timeout)
        finally:
            self._health.closed()
        if failed or in_doubt:
            self._logger.warning(
                "producer of %r: close() waited %g s and %d events were still unacknowledged; "
                "the produce calls waiting for them raised ProduceError: %d failed (not "
                "written), %d in doubt (may have been written)",
                self._topic,
                timeout,
                failed + in_doubt,
                failed,
                in_doubt,
            )
        if not finished:
            self._logger.warning(
                "producer of %r: close() stopped waiting after %g s for its client to stop (a "
                "produce call is still returning); it is released in the background",
                self._topic,
                timeout,
            )
