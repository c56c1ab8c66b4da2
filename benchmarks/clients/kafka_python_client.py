"""kafka-python: ``send`` each event with the six headers, ``flush()``, then check every future.
Consume: ``poll(max_records=1000)`` + ``ce_type`` lookup + ``FromString`` + handler (offsets
auto-committed, kafka-python's default discipline)."""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any

import kafka

from benchmarks import common, payload, scenarios

PRODUCER = {
    "acks": "all",
    "enable_idempotence": True,
    "linger_ms": 0,
    "batch_size": common.PEER_BATCH_BYTES,
}
CONSUMER = {
    "auto_offset_reset": "earliest",
    "enable_auto_commit": True,
    "auto_commit_interval_ms": common.PEER_COMMIT_INTERVAL_MS,
    "fetch_max_wait_ms": common.PEER_FETCH_WAIT_MS,
}

logging.getLogger("kafka").setLevel(logging.ERROR)


def _crc32c() -> str:
    try:
        import crc32c  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        return "pure Python (the optional crc32c package is not installed)"
    return "crc32c package (C)"


def describe(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "client": f"kafka-python {kafka.__version__}, CRC32C: {_crc32c()}",
        "producer": PRODUCER,
        "consumer": CONSUMER,
        "produce call": "per event: SerializeToString + send(headers=5); then flush() and "
        "future.get() for the batch",
        "consume": "poll(max_records=1000) + ce_type lookup + FromString + handler; "
        "offsets auto-committed every second",
    }


class _Sender:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.topic = spec["topic"]
        self.client = kafka.KafkaProducer(bootstrap_servers=spec["brokers"], **PRODUCER)
        self.prefix = common.producer_id() + "-"
        self.ids = itertools.count(1)
        self.source = common.SOURCE.encode()
        self.type_name = common.TYPE_NAME.encode()

    def send(self, events: Any) -> None:
        send = self.client.send
        topic, prefix, ids = self.topic, self.prefix, self.ids
        source, type_name = self.source, self.type_name
        event_time = common.event_time()
        futures = []
        for event in events:
            headers = [
                ("content-type", common.CONTENT_TYPE),
                ("ce_specversion", common.SPECVERSION),
                ("ce_id", f"{prefix}{next(ids)}".encode()),
                ("ce_source", source),
                ("ce_type", type_name),
                ("ce_time", event_time),
            ]
            futures.append(send(topic, value=event.SerializeToString(), headers=headers))
        self.client.flush()
        for future in futures:
            future.get()  # raises if the event was not acknowledged

    def close(self) -> None:
        self.client.close()


def _consume_loop(spec: dict[str, Any], handler: Any, done: Any) -> None:
    from_string = payload.event_class().FromString
    type_name = common.TYPE_NAME.encode()
    consumer = kafka.KafkaConsumer(
        spec["topic"], bootstrap_servers=spec["brokers"], group_id=spec["group"], **CONSUMER
    )
    deadline = time.monotonic() + spec["timeout"]
    try:
        while not done.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError("the consumer did not finish in time")
            batches = consumer.poll(timeout_ms=100, max_records=1000)
            for records in batches.values():
                for record in records:
                    ce_type = None
                    for name, value in record.headers:
                        if name == "ce_type":
                            ce_type = value
                    if ce_type is not None and ce_type != type_name:
                        continue
                    handler(from_string(record.value))
    finally:
        consumer.close()


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
