"""OpenTelemetry for eventstream: traces across producers and consumers, and messaging metrics,
following OpenTelemetry's semantic conventions for messaging (Kafka). Needs the ``otel`` extra
(``pip install 'eventstream[otel]'``: opentelemetry-api; an SDK to export what it records).

```python
from eventstream.otel import OpenTelemetry

config = TopicConfig(..., telemetry=OpenTelemetry())  # the global tracer and meter providers
```

- Each ``produce()`` call is a ``send <topic>`` span (kind PRODUCER); every event of the call
  carries its context in W3C ``traceparent`` / ``tracestate`` headers (through the configured
  propagator), which OpenTelemetry's Kafka instrumentations in other languages read too.
- Each handler call is a ``process <topic>`` span (kind CONSUMER), a child of the context the
  event carries (or a new trace for events without one), with ``messaging.system=kafka``,
  ``messaging.destination.name``, ``messaging.consumer.group.name``,
  ``messaging.destination.partition.id``, ``messaging.kafka.offset``, ``messaging.message.id``
  (the event's ``ce_id``) and ``messaging.kafka.message.key``. A handler's exception is recorded
  on its span.
- Metrics: ``messaging.client.operation.duration`` (produce calls, seconds),
  ``messaging.client.sent.messages``, ``messaging.process.duration`` (handler calls, seconds),
  ``messaging.client.consumed.messages``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import metrics, propagate, trace
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import SpanKind, Status, StatusCode

from eventstream._runtime import wire
from eventstream._runtime.telemetry.instrumentation import TelemetryHandler

__all__ = ["OpenTelemetry"]

_SYSTEM = {"messaging.system": "kafka"}


class OpenTelemetry:
    """:class:`~eventstream.Telemetry` over OpenTelemetry. Thread-safe. Without
    arguments it uses the global tracer provider, meter provider and propagator."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        from eventstream import __version__

        self._tracer = trace.get_tracer("eventstream", __version__, tracer_provider)
        meter = metrics.get_meter("eventstream", __version__, meter_provider)
        self._propagator = propagator
        self._send_duration = meter.create_histogram(
            "messaging.client.operation.duration",
            unit="s",
            description="Duration of produce calls, until every event was acknowledged",
        )
        self._sent = meter.create_counter(
            "messaging.client.sent.messages", unit="{message}", description="Events produced"
        )
        self._process_duration = meter.create_histogram(
            "messaging.process.duration", unit="s", description="Duration of handler calls"
        )
        self._consumed = meter.create_counter(
            "messaging.client.consumed.messages",
            unit="{message}",
            description="Events handed to a handler",
        )

    def _textmap(self) -> TextMapPropagator:
        return self._propagator if self._propagator is not None else propagate.get_global_textmap()

    @contextmanager
    def send(self, topic: str, count: int) -> Generator[Sequence[tuple[str, bytes]], None, None]:
        attributes: dict[str, Any] = {
            **_SYSTEM,
            "messaging.operation.name": "send",
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
        }
        if count > 1:
            attributes["messaging.batch.message_count"] = count
        started = time.perf_counter()
        error: str | None = None
        with self._tracer.start_as_current_span(
            f"send {topic}", kind=SpanKind.PRODUCER, attributes=attributes
        ) as span:
            carrier: dict[str, str] = {}
            self._textmap().inject(carrier)  # pyright: ignore[reportArgumentType]
            try:
                yield [(name, value.encode()) for name, value in carrier.items()]
            except BaseException as exc:
                error = type(exc).__qualname__
                span.set_attribute("error.type", error)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                raise
            finally:
                measured = dict(attributes)
                measured.pop("messaging.batch.message_count", None)
                if error is not None:
                    measured["error.type"] = error
                self._send_duration.record(time.perf_counter() - started, measured)
                self._sent.add(count, measured)

    def process(
        self,
        handler: Callable[..., Any],
        *,
        with_metadata: bool,
        topic: str,
        group: str,
        asynchronous: bool,
    ) -> TelemetryHandler:
        common = {
            **_SYSTEM,
            "messaging.operation.name": "process",
            "messaging.operation.type": "process",
            "messaging.destination.name": topic,
            "messaging.consumer.group.name": group,
        }
        name = f"process {topic}"
        tracer = self._tracer

        def span_arguments(meta: Any) -> dict[str, Any]:
            carrier = {
                k: v
                for k, v in (
                    (wire.HEADER_TRACEPARENT, meta.traceparent),
                    (wire.HEADER_TRACESTATE, meta.tracestate),
                )
                if v is not None
            }
            attributes: dict[str, Any] = {
                **common,
                "messaging.destination.partition.id": str(meta.partition),
                "messaging.kafka.offset": meta.offset,
            }
            if meta.event_id is not None:
                attributes["messaging.message.id"] = meta.event_id
            if meta.key is not None:
                attributes["messaging.kafka.message.key"] = meta.key.decode(errors="replace")
            return {
                "context": self._textmap().extract(carrier) if carrier else None,
                "kind": SpanKind.CONSUMER,
                "attributes": attributes,
            }

        def measure(meta: Any, started: float, error: BaseException | None) -> None:
            attributes = {**common, "messaging.destination.partition.id": str(meta.partition)}
            if error is not None:
                attributes["error.type"] = type(error).__qualname__
            self._process_duration.record(time.perf_counter() - started, attributes)
            self._consumed.add(1, attributes)

        if asynchronous:

            async def traced_async(event: Any, meta: Any) -> None:
                started = time.perf_counter()
                error: BaseException | None = None
                with tracer.start_as_current_span(name, **span_arguments(meta)):
                    try:
                        if with_metadata:
                            await handler(event, meta)
                        else:
                            await handler(event)
                    except BaseException as exc:
                        error = exc
                        raise
                    finally:
                        measure(meta, started, error)

            return traced_async

        def traced(event: Any, meta: Any) -> None:
            started = time.perf_counter()
            error: BaseException | None = None
            with tracer.start_as_current_span(name, **span_arguments(meta)):
                try:
                    if with_metadata:
                        handler(event, meta)
                    else:
                        handler(event)
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    measure(meta, started, error)

        return traced
