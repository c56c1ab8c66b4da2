"""The hand-written typed loop over confluent-kafka: what a careful user writes without eventstream.

Produce: ``SerializeToString``, ``produce`` with eventstream's six CloudEvents headers and an
``on_delivery`` callback per event, then ``flush()`` to confirm the batch. Consume: drain
``consume()`` (block for one event, then take what is buffered), look up ``ce_type``,
``FromString``, call the handler, store the offsets of the batch after it was handled (the same
at-least-once discipline as eventstream). The same librdkafka properties as eventstream.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import confluent_kafka

from benchmarks import common, payload, scenarios


def describe(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "client": f"confluent-kafka {confluent_kafka.version()[0]} "
        f"(librdkafka {confluent_kafka.libversion()[0]})",
        "producer": dict(common.RDK_PRODUCER)
        | {"(librdkafka defaults)": common.RDK_BATCH_DEFAULTS},
        "consumer": dict(common.RDK_CONSUMER),
        "produce call": "per event: SerializeToString + produce(headers=5, on_delivery=cb); "
        "then flush() for the batch",
        "consume": "consume(1000, 0) drain (consume(1, 0.1) when empty) + ce_type lookup + "
        "FromString + handler; store_offsets per batch",
        "cold start": "producer = Producer(conf); then the first send: produce(event) + flush()",
    }


class _Sender:
    """One producer with per-event headers; ``send(events)`` blocks until all are acknowledged."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.topic = spec["topic"]
        self.client = confluent_kafka.Producer(
            {"bootstrap.servers": spec["brokers"], **common.RDK_PRODUCER}
        )
        self.prefix = common.producer_id() + "-"
        self.ids = itertools.count(1)
        self.failed: list[Any] = []
        self.source = common.SOURCE.encode()
        self.type_name = common.TYPE_NAME.encode()

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.failed.append(err)

    def send(self, events: Any) -> None:
        produce = self.client.produce
        topic, prefix, ids, cb = self.topic, self.prefix, self.ids, self._on_delivery
        source, type_name = self.source, self.type_name
        event_time = common.event_time()
        for event in events:
            headers = [
                ("content-type", common.CONTENT_TYPE),
                ("ce_specversion", common.SPECVERSION),
                ("ce_id", f"{prefix}{next(ids)}".encode()),
                ("ce_source", source),
                ("ce_type", type_name),
                ("ce_time", event_time),
            ]
            value = event.SerializeToString()
            while True:
                try:
                    produce(topic, value, headers=headers, on_delivery=cb)
                    break
                except BufferError:
                    self.client.poll(0.01)
        self.client.flush()
        if self.failed:
            raise RuntimeError(f"{len(self.failed)} events failed: {self.failed[0]}")

    def close(self) -> None:
        self.client.flush()


def _consume_loop(spec: dict[str, Any], handler: Any, done: Any) -> None:
    cls = payload.event_class()
    from_string = cls.FromString
    type_name = common.TYPE_NAME.encode()
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": spec["brokers"], "group.id": spec["group"], **common.RDK_CONSUMER}
    )
    consumer.subscribe([spec["topic"]])
    topic_partition = confluent_kafka.TopicPartition
    topic = spec["topic"]
    deadline = time.monotonic() + spec["timeout"]
    try:
        while not done.is_set():
            msgs = consumer.consume(1000, 0)
            if not msgs:
                if time.monotonic() > deadline:
                    raise TimeoutError("the consumer did not finish in time")
                msgs = consumer.consume(1, 0.1)
            last: dict[int, int] = {}
            for msg in msgs:
                if msg.error() is not None:
                    continue
                last[msg.partition()] = msg.offset()
                headers = msg.headers()
                if headers:
                    ce_type = None
                    for name, value in headers:
                        if name == "ce_type":
                            ce_type = value
                    if ce_type is not None and ce_type != type_name:
                        continue
                handler(from_string(msg.value()))
            if last:
                consumer.store_offsets(
                    offsets=[topic_partition(topic, p, o + 1) for p, o in last.items()]
                )
    finally:
        consumer.close()


def produce(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    return scenarios.produce(_Sender(spec), spec, progress)


def cold_start(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    """The first send (produce + flush) of a Producer made just before or some time before."""
    return scenarios.cold_start(lambda: _Sender(spec), spec, progress)


def latency(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    return scenarios.latency(_Sender(spec), spec, progress)


def e2e_produce(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    return scenarios.e2e_produce(_Sender(spec), spec, progress)


def consume(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    return scenarios.consume(_consume_loop, spec, progress)


def e2e_consume(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    return scenarios.e2e_consume(_consume_loop, spec, progress)
