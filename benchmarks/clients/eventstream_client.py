"""The eventstream contenders: the public API only, on whichever backend this process loaded
(compiled by default, pure with EVENTSTREAM_NO_EXTENSIONS=1; the runner sets it per process)."""

from __future__ import annotations

import time
from typing import Any

from benchmarks import common, payload


def _topic(spec: dict[str, Any], instance_id: str) -> Any:
    from eventstream import TopicConfig, new_topic

    config = TopicConfig(brokers=spec["brokers"], topic=spec["topic"], instance_id=instance_id)
    return new_topic(payload.event_class(), config)


def describe(spec: dict[str, Any]) -> dict[str, Any]:
    import eventstream

    topic = _topic(spec, common.SOURCE)
    producer = dict(topic.config.producer_settings())
    consumer = dict(topic.config.consumer_settings(start_from_beginning=True))
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


def produce(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    cls = payload.event_class()
    body = payload.make_body(spec["size"])
    size, total = spec["batch"], spec["count"]
    batch = [payload.make_event(cls, body, seq=i + 1) for i in range(size)]
    topic = _topic(spec, common.SOURCE)
    producer = topic.new_producer()
    for start in range(0, spec["warmup"], size):  # connect, producer id, metadata: not timed
        producer.produce(*batch[: min(size, spec["warmup"] - start)])
    done = 0
    timer = common.Timer()
    while done < total:
        n = min(size, total - done)
        producer.produce(*(batch if n == size else batch[:n]))
        done += n
        progress.update(done)
    result = timer.result(total)
    topic.close()
    return result


def latency(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    cls = payload.event_class()
    event = payload.make_event(cls, payload.make_body(spec["size"]), seq=1)
    topic = _topic(spec, common.SOURCE)
    producer = topic.new_producer()
    for _ in range(spec["warmup"]):
        producer.produce(event)
    samples = []
    clock = time.perf_counter_ns
    for i in range(spec["count"]):
        t0 = clock()
        producer.produce(event)
        samples.append(clock() - t0)
        progress.update(i + 1)
    topic.close()
    return {"samples_ns": samples}


def consume(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    counting = common.Counting(spec["count"])
    topic = _topic(spec, spec["group"])
    consumer = topic.new_consumer(start_from_beginning=True)
    common.watch(progress, lambda: counting.count, counting.done)
    consumer.consume(counting.handler)
    if not counting.done.wait(spec["timeout"]):
        raise TimeoutError(f"consumed {counting.count} of {spec['count']} events")
    topic.close()
    return counting.result()


def e2e_consume(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    lat = common.Latencies(spec["count"], spec["warmup"])
    topic = _topic(spec, spec["group"])
    consumer = topic.new_consumer(start_from_beginning=True)
    common.watch(progress, lambda: lat.count, lat.done)
    consumer.consume(lat.handler)
    if not lat.done.wait(spec["timeout"]):
        raise TimeoutError(f"received {lat.count} of {spec['count']} events")
    topic.close()
    return {"samples_ns": lat.samples}


def e2e_produce(spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    cls = payload.event_class()
    body = payload.make_body(spec["size"])
    topic = _topic(spec, common.SOURCE)
    producer = topic.new_producer()
    clock = time.monotonic_ns

    def send(first: int, count: int) -> None:
        t = clock()
        producer.produce(*[cls(sent_ns=t, seq=first + i, body=body) for i in range(count)])

    t0 = time.monotonic()
    calls = common.pace(spec["rate"], spec["count"], send, progress)
    seconds = time.monotonic() - t0
    topic.close()
    return {"events": spec["count"], "calls": calls, "seconds": seconds}
