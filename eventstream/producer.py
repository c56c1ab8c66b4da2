"""Publishing typed events: :class:`Producer`."""

from __future__ import annotations

import asyncio
import threading
from typing import Generic, TypeVar

from google.protobuf.message import Message

from eventstream.backend import ProducerBackend
from eventstream.closing import Closeable
from eventstream.errors import ClosedError

__all__ = ["Producer"]

E = TypeVar("E", bound=Message)


class Producer(Closeable, Generic[E]):
    """Publishes events of one type to one topic. Create it with :meth:`Topic.new_producer`.

    Thread-safe: many threads may call :meth:`produce` at once; each waits for its own events only.
    Nothing connects until the first event is produced.
    """

    def __init__(self, backend: ProducerBackend, topic: str) -> None:
        self._backend = backend
        self._topic = topic
        self._closed = False
        self._lock = threading.Lock()

    @property
    def closed(self) -> bool:
        return self._closed

    def produce(self, *events: E, timeout: float | None = None) -> None:
        """Publish ``events`` and block until the broker acknowledged every one (acks=all).

        ``timeout`` (seconds) bounds the wait; ``None`` waits as long as librdkafka retries
        (``TopicConfig.delivery_timeout``). The GIL is released while waiting; Ctrl+C interrupts.

        Raises :class:`EventTypeError` if any event is not of the topic's type (nothing is sent),
        :class:`SerializationError` for an event or key that cannot be serialized (nothing is
        sent), :class:`ProduceError` if an event was rejected (``.retriable`` says whether to try
        again), :class:`ProduceTimeoutError` when ``timeout`` passed first, :class:`ClosedError`
        after :meth:`close`.
        """
        if self._closed:
            raise ClosedError(f"the producer of {self._topic!r} is closed")
        self._backend.produce(events, timeout)

    async def produce_async(self, *events: E, timeout: float | None = None) -> None:
        """Like :meth:`produce`, but awaits the acknowledgements without blocking the event loop.

        Type and serialization errors are raised before anything is sent. On ``timeout`` raises
        :class:`ProduceTimeoutError` (the events are in doubt); cancelling the await does not
        recall events already handed to librdkafka.
        """
        if self._closed:
            raise ClosedError(f"the producer of {self._topic!r} is closed")
        await self._backend.produce_async(events, asyncio.get_running_loop(), timeout)

    def flush(self, timeout: float = 30.0) -> int:
        """Block until everything produced so far is acknowledged or ``timeout`` passed; returns
        how many events are still unacknowledged."""
        return self._backend.flush(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Flush (up to ``timeout`` seconds) and release the client. Idempotent; blocks."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._backend.close(timeout)
