"""The hook instrumentation plugs into: :class:`Telemetry` (``TopicConfig(telemetry=...)``).

eventstream itself depends on no instrumentation library. ``eventstream.otel.OpenTelemetry`` is
the OpenTelemetry implementation (the ``otel`` extra); anything with these two methods works.
Without one, producers add no header and consumers look up no header and wrap no handler: the
hot paths do no extra work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

__all__ = ["Telemetry", "TelemetryHandler"]

#: A handler as Telemetry.process returns it: always called as ``handler(event, metadata)``
#: (a coroutine function for an async handler).
TelemetryHandler = Callable[[Any, Any], Any]


class Telemetry(Protocol):
    """What ``TopicConfig(telemetry=...)`` takes: a tracer for produce calls and handlers
    (``eventstream.otel.OpenTelemetry`` is one). Its methods are called on the application's
    threads, the wrappers :meth:`process` returns on the consumers' poll threads (or an async
    handler's loop): an implementation must be thread-safe."""

    def send(self, topic: str, count: int) -> AbstractContextManager[Sequence[tuple[str, bytes]]]:
        """Entered around one ``produce()`` / ``produce_async()`` call of ``count`` events (on
        the caller's thread or task); yields the headers every event of the call carries (e.g.
        W3C ``traceparent``/``tracestate``). Leaving it with an exception means the call
        failed."""
        ...

    def process(
        self,
        handler: Callable[..., Any],
        *,
        with_metadata: bool,
        topic: str,
        group: str,
        asynchronous: bool,
    ) -> TelemetryHandler:
        """Wrap a consumer's handler (called as ``handler(event, metadata)`` or
        ``handler(event)`` by ``with_metadata``) in one that takes ``(event, metadata)`` and
        continues the event's trace around it: ``metadata.traceparent`` / ``tracestate`` carry
        the producer's context. ``asynchronous``: the handler is a coroutine function, and so
        must the wrapper be."""
        ...
