"""The eventstream contenders: the public API only, on whichever backend this process loaded
(compiled by default, pure with EVENTSTREAM_NO_EXTENSIONS=1; the runner sets it per process)."""

from __future__ import annotations

import threading
from typing import Any

from benchmarks import common, payload, scenarios


def _topic(spec: dict[str, Any], instance_id: str) -> Any:
    from eventstream import TopicConfig, new_topic

    config = TopicConfig(brokers=spec["brokers"], topic=spec["topic"], instance_id=instance_id)
    return new_topic(payload.event_class(), config)


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


def latency(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    return scenarios.latency(_Sender(spec), spec, progress)


def e2e_produce(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    return scenarios.e2e_produce(_Sender(spec), spec, progress)


def consume(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    return scenarios.consume(_consume_loop, spec, progress)


def e2e_consume(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    return scenarios.e2e_consume(_consume_loop, spec, progress)
