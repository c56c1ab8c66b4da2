"""aiokafka: ``send`` each event with the six headers, then await the batch's futures.
Consume: ``getmany`` + ``ce_type`` lookup + ``FromString`` + handler (offsets auto-committed,
aiokafka's default discipline)."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import aiokafka

from benchmarks import common, payload, threads

PRODUCER = {
    "acks": "all",
    "enable_idempotence": True,
    "linger_ms": 0,
    "max_batch_size": common.PEER_BATCH_BYTES,
}
CONSUMER = {
    "auto_offset_reset": "earliest",
    "enable_auto_commit": True,
    "auto_commit_interval_ms": common.PEER_COMMIT_INTERVAL_MS,
    "fetch_max_wait_ms": common.PEER_FETCH_WAIT_MS,
}


def describe(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "client": f"aiokafka {aiokafka.__version__}",
        "producer": PRODUCER,
        "consumer": CONSUMER,
        "produce call": "per event: SerializeToString + await send(headers=5); "
        "then await gather(futures) for the batch",
        "consume": "getmany(max_records=1000) + ce_type lookup + FromString + handler; "
        "offsets auto-committed every second",
    }


class _Sender:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.topic = spec["topic"]
        self.client = aiokafka.AIOKafkaProducer(bootstrap_servers=spec["brokers"], **PRODUCER)
        self.prefix = common.producer_id() + "-"
        self.ids = itertools.count(1)
        self.source = common.SOURCE.encode()
        self.type_name = common.TYPE_NAME.encode()

    async def send(self, events: Any) -> None:
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
            futures.append(await send(topic, event.SerializeToString(), headers=headers))
        await asyncio.gather(*futures)


async def _produce(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    cls = payload.event_class()
    body = payload.make_body(spec["size"])
    size, total = spec["batch"], spec["count"]
    batch = [payload.make_event(cls, body, seq=i + 1) for i in range(size)]
    sender = _Sender(spec)
    await sender.client.start()
    try:
        for start in range(0, spec["warmup"], size):
            await sender.send(batch[: min(size, spec["warmup"] - start)])
        done = 0
        section = threads.Section("calling")
        timer = common.Timer()
        while done < total:
            n = min(size, total - done)
            await sender.send(batch if n == size else batch[:n])
            done += n
            progress.update(done)
        result = timer.result(total)
        result |= section.result()
    finally:
        await sender.client.stop()
    return result


def produce(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    return asyncio.run(_produce(spec, progress))


async def _latency(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    cls = payload.event_class()
    one = [payload.make_event(cls, payload.make_body(spec["size"]), seq=1)]
    sender = _Sender(spec)
    await sender.client.start()
    samples = []
    clock = time.perf_counter_ns
    try:
        for _ in range(spec["warmup"]):
            await sender.send(one)
        for i in range(spec["count"]):
            t0 = clock()
            await sender.send(one)
            samples.append(clock() - t0)
            progress.update(i + 1)
    finally:
        await sender.client.stop()
    return {"samples_ns": samples}


def latency(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    return asyncio.run(_latency(spec, progress))


async def _consume_loop(spec: dict[str, Any], handler: Any, done: Any) -> None:
    from_string = payload.event_class().FromString
    type_name = common.TYPE_NAME.encode()
    consumer = aiokafka.AIOKafkaConsumer(
        spec["topic"], bootstrap_servers=spec["brokers"], group_id=spec["group"], **CONSUMER
    )
    await consumer.start()
    deadline = time.monotonic() + spec["timeout"]
    try:
        while not done.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError("the consumer did not finish in time")
            batches = await consumer.getmany(timeout_ms=100, max_records=1000)
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
        await consumer.stop()


def consume(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    counting = common.Counting(spec["count"])
    common.watch(progress, lambda: counting.count, counting.done)
    asyncio.run(_consume_loop(spec, counting.handler, counting.done))
    return counting.result()


def e2e_consume(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    lat = common.Latencies(spec["count"], spec["warmup"])
    common.watch(progress, lambda: lat.count, lat.done)
    asyncio.run(_consume_loop(spec, lat.handler, lat.done))
    return {"samples_ns": lat.samples}


async def _e2e_produce(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    cls = payload.event_class()
    body = payload.make_body(spec["size"])
    sender = _Sender(spec)
    await sender.client.start()
    clock = time.monotonic_ns
    period = 1.0 / spec["rate"]
    total = spec["count"]
    sent = calls = 0
    t0 = time.monotonic()
    try:
        while sent < total:  # common.pace, with an awaitable send
            due_at = t0 + sent * period
            delay = due_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            due = min(total, int((time.monotonic() - t0) / period) + 1)
            t = clock()
            await sender.send([cls(sent_ns=t, seq=s, body=body) for s in range(sent, due)])
            sent = due
            calls += 1
            progress.update(sent)
    finally:
        await sender.client.stop()
    return {"events": total, "calls": calls, "seconds": time.monotonic() - t0}


def e2e_produce(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    return asyncio.run(_e2e_produce(spec, progress))
