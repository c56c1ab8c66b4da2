"""What a produce call sends and returns is its own, although the compiled backend reuses a
call's buffers for later calls (its tracker with the serialized values that librdkafka points
at until each is acknowledged, and the arrays of a Deliveries nobody holds any more): every
event arrives as it was given, where its Delivery says, with its own ce_id and a well-formed
ce_time, whatever the sizes, keys, threads and asyncio calls in flight around it."""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from support import Collector, raw_consume
from testevents_pb2 import Invalidate

from eventstream import Delivery

pytestmark = pytest.mark.timeout(120)

CE_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def _events(first: int, count: int, producer: str = "p") -> list[Invalidate]:
    # Values of different lengths (0 to ~1.5 KB): a reused buffer that kept a longer value of
    # an earlier call must not show through.
    return [
        Invalidate(
            key=f"k{(first + i) % 7}",
            seq=first + i,
            producer=producer,
            padding=bytes([(first + i) % 251]) * ((first + i) * 37 % 1500),
        )
        for i in range(count)
    ]


def _check_arrived(
    received: Sequence[object], sent: dict[int, Invalidate], where: dict[int, Delivery]
) -> None:
    """Every sent event arrived once, as sent, at the partition, offset and ce_id its Delivery
    names."""
    seen: dict[int, object] = {}
    for r in received:
        event, meta = r.event, r.metadata  # type: ignore[attr-defined]
        assert event.seq not in seen, f"event {event.seq} arrived twice"
        seen[event.seq] = event
        assert event == sent[event.seq], f"event {event.seq} arrived changed"
        d = where[event.seq]
        assert (meta.partition, meta.offset, meta.event_id) == (d.partition, d.offset, d.event_id)
    assert sorted(seen) == sorted(sent)


def test_calls_of_changing_sizes_each_send_and_return_their_own(
    make_topic, collector: Collector
) -> None:
    topic = make_topic(partitions=3)
    sizes = [1, 300, 7, 300, 1200, 5, 300, 300, 2, 1200]
    sent: dict[int, Invalidate] = {}
    where: dict[int, Delivery] = {}
    kept = []  # some Deliveries are kept (their arrays may not be reused), the others dropped
    seq = 0
    with topic.new_producer(key=lambda e: e.key) as producer:
        for call, n in enumerate(sizes):
            events = _events(seq, n)
            seq += n
            deliveries = producer.produce(*events)
            assert len(deliveries) == n
            snapshot = list(deliveries)
            for event, d in zip(events, snapshot, strict=True):
                sent[event.seq] = event
                where[event.seq] = d
            if call % 2 == 0:
                kept.append((deliveries, snapshot))
        for deliveries, snapshot in kept:
            assert list(deliveries) == snapshot, "a later call changed a kept Deliveries"
    ids = [where[s].event_id for s in sorted(where)]
    assert len(set(ids)) == len(ids)
    # The ids of one producer count up by one per event (across 9 -> 10, 99 -> 100, ...).
    numbers = [int(i.rsplit("-", 1)[1]) for i in ids]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))

    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(collector, with_metadata=True)
    _check_arrived(collector.wait_for_count(len(sent)), sent, where)


def test_threads_producing_at_once_each_send_their_own(make_topic, collector: Collector) -> None:
    topic = make_topic(partitions=2)
    sent: dict[int, Invalidate] = {}
    where: dict[int, Delivery] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []

    with topic.new_producer() as producer:

        def run(base: int) -> None:
            try:
                seq = base
                for n in (50, 400, 3, 400, 120):
                    events = _events(seq, n, producer=f"t{base}")
                    seq += n
                    deliveries = producer.produce(*events)
                    with lock:
                        for event, d in zip(events, deliveries, strict=True):
                            sent[event.seq] = event
                            where[event.seq] = d
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(k * 100_000,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors

    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(collector, with_metadata=True)
    _check_arrived(collector.wait_for_count(len(sent)), sent, where)


def test_async_calls_in_flight_together_each_send_their_own(
    make_topic, collector: Collector
) -> None:
    topic = make_topic(partitions=2)
    sent: dict[int, Invalidate] = {}
    where: dict[int, Delivery] = {}

    producer = topic.new_producer()

    async def main() -> None:
        calls = []
        seq = 0
        for n in (200, 1, 500, 30, 200, 800, 2, 200):
            events = _events(seq, n)
            seq += n
            calls.append((events, asyncio.ensure_future(producer.produce_async(*events))))
        for events, call in calls:
            for event, d in zip(events, await call, strict=True):
                sent[event.seq] = event
                where[event.seq] = d

    try:
        asyncio.run(main())
    finally:
        producer.close()
    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(collector, with_metadata=True)
    _check_arrived(collector.wait_for_count(len(sent)), sent, where)


def test_ce_time_is_rfc3339_utc_milliseconds_of_the_call(kafka_bootstrap: str, make_topic) -> None:
    topic = make_topic()
    with topic.new_producer() as producer:
        before = time.time()
        producer.produce(*_events(0, 3))
        after = time.time()
    records = raw_consume(kafka_bootstrap, topic.name, 3)
    stamps = {dict(r.headers() or [])["ce_time"].decode() for r in records}
    assert len(stamps) == 1, f"one ce_time per call: {stamps}"
    stamp = stamps.pop()
    assert CE_TIME.fullmatch(stamp), stamp
    at = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    assert before - 0.002 <= at <= after + 0.002, (before, stamp, after)
    assert datetime.fromtimestamp(at, tz=UTC).year == datetime.now(tz=UTC).year


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads /proc/self/statm")
def test_many_calls_hold_no_more_memory_than_a_few_of_them(make_topic) -> None:
    # A call's buffers, and (compiled) its messages' headers until the next call, are reused
    # or freed: 200 more calls of 1,000 events (~130 MB of headers and values) leave the process
    # about as large as it was after the first 20.
    topic = make_topic()
    events = [Invalidate(key=f"k{i % 7}", seq=i, padding=b"x" * 100) for i in range(1000)]
    with topic.new_producer() as producer:
        for _ in range(20):
            producer.produce(*events)
        before = _rss_bytes()
        for _ in range(200):
            producer.produce(*events)
        grown = _rss_bytes() - before
    assert grown < 32 * 2**20, f"the process grew by {grown / 2**20:.0f} MiB in 200 calls"
