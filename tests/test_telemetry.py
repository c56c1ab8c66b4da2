"""OpenTelemetry: the producer's trace context travels in W3C headers and the consumer continues
it around the handler, with the messaging semantic conventions' span names and attributes; events
without a context are fine; without telemetry nothing is added."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support import Collector, raw_consume, raw_produce

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode
from testevents_pb2 import Invalidate

import eventstream
from eventstream.otel import OpenTelemetry

pytestmark = pytest.mark.timeout(60)


class Otel:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.metrics = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.metrics])
        self.telemetry = OpenTelemetry(self.tracer_provider, self.meter_provider)

    def finished(self, name: str) -> list[Any]:
        return [s for s in self.spans.get_finished_spans() if s.name == name]

    def metric_points(self) -> dict[str, int | float]:
        data = self.metrics.get_metrics_data()
        found: dict[str, int | float] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        value = getattr(point, "count", None)
                        if value is None:
                            value = point.value
                        found[metric.name] = found.get(metric.name, 0) + value
        return found


@pytest.fixture
def otel() -> Iterator[Otel]:
    setup = Otel()
    yield setup
    setup.tracer_provider.shutdown()


def test_a_trace_crosses_from_produce_to_the_handler(
    make_topic: Callable[..., eventstream.Topic[Any]],
    otel: Otel,
    kafka_bootstrap: str,
) -> None:
    topic = make_topic(instance_id="svc-otel", telemetry=otel.telemetry)
    collector = Collector()
    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(collector)  # without metadata: the wrapper hides it again
    consumer.wait_until_assigned(30)
    tracer = otel.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("request"):
        deliveries = topic.new_producer(key=lambda e: e.key).produce(
            Invalidate(key="k", seq=1), Invalidate(key="k", seq=2)
        )
    collector.wait_for_seqs([1, 2])
    assert collector.received[0].metadata is None
    consumer.close()

    [request] = otel.finished("request")
    [send] = otel.finished(f"send {topic.name}")
    processes = otel.finished(f"process {topic.name}")
    assert len(processes) == 2
    assert send.kind == SpanKind.PRODUCER and send.parent.span_id == request.context.span_id
    assert dict(send.attributes) == {
        "messaging.system": "kafka",
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.destination.name": topic.name,
        "messaging.batch.message_count": 2,
    }
    for process, delivery in zip(processes, deliveries, strict=True):
        assert process.kind == SpanKind.CONSUMER
        assert process.context.trace_id == request.context.trace_id
        assert process.parent.span_id == send.context.span_id
        attributes = dict(process.attributes)
        assert attributes["messaging.consumer.group.name"] == topic.config.group_id
        assert attributes["messaging.destination.partition.id"] == str(delivery.partition)
        assert attributes["messaging.kafka.offset"] == delivery.offset
        assert attributes["messaging.message.id"] == delivery.event_id
        assert attributes["messaging.kafka.message.key"] == "k"
    # On the wire: W3C trace context headers another language's instrumentation reads.
    records = raw_consume(kafka_bootstrap, topic.name, 2)
    headers = dict(records[0].headers() or [])
    version, trace_id, span_id, _flags = headers["traceparent"].decode().split("-")
    assert (version, int(trace_id, 16), int(span_id, 16)) == (
        "00",
        request.context.trace_id,
        send.context.span_id,
    )
    points = otel.metric_points()
    assert points["messaging.client.sent.messages"] == 2
    assert points["messaging.client.operation.duration"] == 1  # one call
    assert points["messaging.process.duration"] == 2
    assert points["messaging.client.consumed.messages"] == 2


def test_events_without_a_trace_context_start_their_own_trace_and_failures_are_recorded(
    make_topic: Callable[..., eventstream.Topic[Any]], otel: Otel, kafka_bootstrap: str
) -> None:
    topic = make_topic(telemetry=otel.telemetry)
    raw_produce(kafka_bootstrap, topic.name, [(Invalidate(seq=1).SerializeToString(), None, None)])
    seen: list[Any] = []

    def handler(event: Invalidate, meta: eventstream.EventMetadata) -> None:
        seen.append(meta)
        raise RuntimeError("cannot")

    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(handler, with_metadata=True)
    from support import wait_until

    wait_until(lambda: len(otel.finished(f"process {topic.name}")) == 1, "the process span")
    consumer.close()
    [process] = otel.finished(f"process {topic.name}")
    assert process.parent is None  # a new trace
    assert process.status.status_code == StatusCode.ERROR
    assert any(e.name == "exception" for e in process.events)
    assert seen[0].traceparent is None


def test_async_handlers_are_traced_too(
    make_topic: Callable[..., eventstream.Topic[Any]], otel: Otel
) -> None:
    topic = make_topic(telemetry=otel.telemetry)
    got: list[int] = []

    async def handler(event: Invalidate, meta: eventstream.EventMetadata) -> None:
        got.append(event.seq)

    async def main() -> None:
        consumer = topic.new_consumer(start_from_beginning=True)
        consumer.consume(handler, with_metadata=True)
        await topic.new_producer().produce_async(Invalidate(seq=5))
        while not got:
            await asyncio.sleep(0.02)
        await consumer.aclose()

    asyncio.run(main())
    [send] = otel.finished(f"send {topic.name}")
    [process] = otel.finished(f"process {topic.name}")
    assert process.parent.span_id == send.context.span_id


def test_without_telemetry_nothing_is_added(
    make_topic: Callable[..., eventstream.Topic[Any]], kafka_bootstrap: str
) -> None:
    topic = make_topic()
    topic.new_producer().produce(Invalidate(seq=1))
    [record] = raw_consume(kafka_bootstrap, topic.name, 1)
    names = {name for name, _ in record.headers() or []}
    assert "traceparent" not in names and "tracestate" not in names


def test_telemetry_must_look_like_one() -> None:
    with pytest.raises(eventstream.ConfigError) as info:
        eventstream.TopicConfig(
            brokers="127.0.0.1:9",
            topic="t",
            instance_id="a",
            telemetry=object(),  # type: ignore[arg-type]
        )
    assert info.value.field == "telemetry"
