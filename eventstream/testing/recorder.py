"""A handler that records what a consumer received, and lets a test wait for it."""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

from google.protobuf.message import Message

from eventstream._runtime.records import EventMetadata
from eventstream.errors import WaitTimeoutError

__all__ = ["EventRecorder"]

E = TypeVar("E", bound=Message)


class EventRecorder(Generic[E]):
    """Pass it as the handler: ``consumer.consume(recorder, with_metadata=True)`` (or without
    metadata), then ``recorder.wait_for(100)`` blocks until 100 events arrived. Thread-safe.
    """

    def __init__(self) -> None:
        self._events: list[E] = []
        self._metadata: list[EventMetadata | None] = []
        self._arrived = threading.Condition()

    def __call__(self, event: E, metadata: EventMetadata | None = None) -> None:
        with self._arrived:
            self._events.append(event)
            self._metadata.append(metadata)
            self._arrived.notify_all()

    @property
    def events(self) -> list[E]:
        """A copy of the events received so far, in arrival order."""
        with self._arrived:
            return list(self._events)

    @property
    def metadata(self) -> list[EventMetadata | None]:
        """The metadata of each received event (``None`` when consumed without metadata)."""
        with self._arrived:
            return list(self._metadata)

    def wait_for(self, count: int, timeout: float = 30.0) -> list[E]:
        """Block until at least ``count`` events arrived; return the first ``count``.
        Raises :class:`~eventstream.WaitTimeoutError` (also a ``TimeoutError``) saying how many
        did arrive."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self._events) >= count, timeout):
                raise WaitTimeoutError(
                    f"expected {count} events within {timeout:g} s, got {len(self._events)}"
                )
            return self._events[:count]
