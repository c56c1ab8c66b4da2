"""kafka-python: ``send`` each event with the five headers, ``flush()``, then check every future.
Consume: ``poll(max_records=1000)`` + ``ce_type`` lookup + ``FromString`` + handler (offsets
auto-committed, kafka-python's default discipline)."""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any

import kafka

from benchmarks import common, payload

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
        futures = []
        for event in events:
            headers = [
                ("content-type", common.CONTENT_TYPE),
                ("ce_specversion", common.SPECVERSION),
                ("ce_id", f"{prefix}{next(ids)}".encode()),
                ("ce_source", source),
                ("ce_type", type_name),
            ]
            futures.append(send(topic, value=event.SerializeToString(), headers=headers))
        self.client.flush()
        for future in futures:
            future.get()  # raises if the event was not acknowledged

    def close(self) -> None:
        self.client.close()


def produce(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    cls = payload.event_class()
    body = payload.make_body(spec["size"])
    size, total = spec["batch"], spec["count"]
    batch = [payload.make_event(cls, body, seq=i + 1) for i in range(size)]
    sender = _Sender(spec)
    for start in range(0, spec["warmup"], size):
        sender.send(batch[: min(size, spec["warmup"] - start)])
    done = 0
    timer = common.Timer()
    while done < total:
        n = min(size, total - done)
        sender.send(batch if n == size else batch[:n])
        done += n
        progress.update(done)
    result = timer.result(total)
    sender.close()
    return result


def latency(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    cls = payload.event_class()
    one = [payload.make_event(cls, payload.make_body(spec["size"]), seq=1)]
    sender = _Sender(spec)
    for _ in range(spec["warmup"]):
        sender.send(one)
    samples = []
    clock = time.perf_counter_ns
    for i in range(spec["count"]):
        t0 = clock()
        sender.send(one)
        samples.append(clock() - t0)
        progress.update(i + 1)
    sender.close()
    return {"samples_ns": samples}


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


def consume(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    counting = common.Counting(spec["count"])
    common.watch(progress, lambda: counting.count, counting.done)
    _consume_loop(spec, counting.handler, counting.done)
    return counting.result()


def e2e_consume(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    lat = common.Latencies(spec["count"], spec["warmup"])
    common.watch(progress, lambda: lat.count, lat.done)
    _consume_loop(spec, lat.handler, lat.done)
    return {"samples_ns": lat.samples}


def e2e_produce(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    cls = payload.event_class()
    body = payload.make_body(spec["size"])
    sender = _Sender(spec)
    clock = time.monotonic_ns

    def send(first: int, count: int) -> None:
        t = clock()
        sender.send([cls(sent_ns=t, seq=first + i, body=body) for i in range(count)])

    t0 = time.monotonic()
    calls = common.pace(spec["rate"], spec["count"], send, progress)
    seconds = time.monotonic() - t0
    sender.close()
    return {"events": spec["count"], "calls": calls, "seconds": seconds}
