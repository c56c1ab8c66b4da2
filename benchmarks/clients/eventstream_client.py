"""The eventstream contenders: the public API only, on whichever backend this process loaded
(compiled by default, pure with EVENTSTREAM_NO_EXTENSIONS=1; the runner sets it per process)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from benchmarks import common, payload, scenarios


def _topic(spec: dict[str, Any], instance_id: str, **fields: Any) -> Any:
    from eventstream import TopicConfig, new_topic

    variant = spec.get("contender", "compiled")
    if variant == "compiled-metrics":
        fields["metrics"] = True  # handler and end-to-end timing, the lag
    elif variant == "compiled-otel":
        fields["telemetry"] = _open_telemetry()
    config = TopicConfig(
        brokers=spec["brokers"], topic=spec["topic"], instance_id=instance_id, **fields
    )
    return new_topic(payload.event_class(), config)


def _open_telemetry() -> Any:
    """eventstream.otel with OpenTelemetry's SDK as an application would set it up: spans go
    through a BatchSpanProcessor (to an exporter that drops them: exporting is not eventstream's
    cost), metrics to a reader."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from eventstream.otel import OpenTelemetry

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Drop()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return OpenTelemetry(tracer_provider, meter_provider)


def describe(spec: dict[str, Any]) -> dict[str, Any]:
    import eventstream

    topic = _topic(spec, common.SOURCE)
    producer = dict(topic.config.producer_settings())
    consumer = dict(topic.config.consumer_settings())
    for conf in (producer, consumer):
        for key in ("bootstrap.servers", "client.id", "group.id"):
            conf.pop(key, None)
    return {
        "client": f"eventstream {eventstream.__version__} ({eventstream.backend()} backend)",
        "backend": eventstream.backend(),
        "producer": producer | {"(librdkafka defaults)": common.RDK_BATCH_DEFAULTS},
        "consumer": consumer,
        "produce call": "producer.produce(*batch): blocks until the whole batch is acknowledged",
        "consume": "consumer.consume(handler): handler(event) per event on the poll thread; "
        "offset stored after it returns",
        "async call": "await producer.produce_async(*batch), several calls in flight on one "
        "event loop",
        "cold start": "topic = new_topic(...); producer = topic.new_producer(); then the first "
        "producer.produce(event)",
    }


class _Sender:
    """``send(events)`` is one blocking ``producer.produce(*events)``: the call users make."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.topic = _topic(spec, common.SOURCE)
        self.producer = self.topic.new_producer()

    def send(self, events: Any) -> None:
        self.producer.produce(*events)

    def close(self) -> None:
        self.topic.close()


def _consume_loop(spec: dict[str, Any], handler: Any, done: threading.Event) -> None:
    topic = _topic(spec, spec["group"])
    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(handler)
    try:
        if not done.wait(spec["timeout"]):
            raise TimeoutError(f"the consumer did not get all {spec['count']} events in time")
    finally:
        topic.close()


def produce(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    return scenarios.produce(_Sender(spec), spec, progress)


def produce_async(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    """Pipelined ``await producer.produce_async(*batch)`` calls on one event loop, up to
    ``spec["in_flight"]`` of them awaiting their acknowledgements at a time."""
    sender = _Sender(spec)

    async def main() -> dict[str, Any]:
        return await scenarios.produce_pipelined(
            lambda events: sender.producer.produce_async(*events), spec, progress
        )

    try:
        return asyncio.run(main())
    finally:
        sender.close()


def cold_start(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    """The first produce() of a producer made just before (delay 0) or some time before."""
    return scenarios.cold_start(lambda: _Sender(spec), spec, progress)


def latency(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    return scenarios.latency(_Sender(spec), spec, progress)


def e2e_produce(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    return scenarios.e2e_produce(_Sender(spec), spec, progress)


def consume(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    return scenarios.consume(_consume_loop, spec, progress)


def e2e_consume(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    return scenarios.e2e_consume(_consume_loop, spec, progress)


def restart_produce(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    """The paced stream of the restart scenario (the runner kills this process when done)."""
    return scenarios.e2e_produce(_Sender(spec), spec, progress)


def restart_consume(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    """One consumer process of the restart scenario, as instance ``spec["group"]``
    (``shared`` and ``consumer_properties`` from the variant). The first process
    (``until_killed``) reports progress up to ``spec["count"]`` events and runs until the runner
    SIGKILLs it; the restarted one reports, after ``spec["count"]`` events, when it called
    ``consume()``, got partitions and handled its first event (CLOCK_MONOTONIC ns)."""
    topic = _topic(spec, spec["group"], consumer_properties=spec["consumer_properties"])
    consumer = topic.new_consumer(start_from_beginning=True, shared=spec["shared"])
    target = spec["count"]
    clock = time.monotonic_ns
    marks = {"assigned_ns": 0, "first_event_ns": 0, "first_event_sent_ns": 0}
    handled = 0
    done = threading.Event()

    def handler(event: Any) -> None:
        nonlocal handled
        handled += 1
        if handled == 1:
            marks["first_event_ns"] = clock()
            marks["first_event_sent_ns"] = event.sent_ns
        if handled <= target:
            progress.update(handled)
            if handled == target and not spec.get("until_killed"):
                done.set()

    def on_rebalance(change: Any) -> None:
        if change.kind == "assigned" and not marks["assigned_ns"]:
            marks["assigned_ns"] = clock()

    consume_ns = clock()
    consumer.consume(handler, on_rebalance=on_rebalance)
    try:
        if not done.wait(spec["timeout"]):
            raise TimeoutError(f"handled {handled} of {target} events in {spec['timeout']} s")
    finally:
        topic.close()
    return {"events": target, "consume_ns": consume_ns, **marks}
