"""Typed events travel through a real broker with the metadata a handler needs."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime

import pytest
from support import Collector
from testevents_pb2 import Invalidate

from eventstream import EventMetadata

pytestmark = pytest.mark.timeout(90)


def test_typed_round_trip_with_metadata(make_topic, collector: Collector) -> None:
    topic = make_topic(partitions=3, instance_id="svc-roundtrip")
    sent = [
        Invalidate(key=f"user:{i % 4}", seq=i, producer="p1", padding=bytes(range(i)))
        for i in range(12)
    ]
    before_ms = int(time.time() * 1000)
    with topic.new_producer(key=lambda e: e.key) as producer:
        producer.produce(*sent[:6])
        producer.produce(*sent[6:])
    after_ms = int(time.time() * 1000)

    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(collector, with_metadata=True)
    received = collector.wait_for_count(len(sent))

    assert all(type(r.event) is Invalidate for r in received)
    assert sorted((r.event for r in received), key=lambda e: e.seq) == sent

    by_partition: dict[int, list[tuple[int, int]]] = defaultdict(list)
    partition_of_key: dict[str, int] = {}
    for r in received:
        meta = r.metadata
        assert isinstance(meta, EventMetadata)
        assert meta.topic == topic.name
        assert 0 <= meta.partition < 3
        assert meta.key == r.event.key.encode()
        assert meta.source == "svc-roundtrip"
        # The record's timestamp is its create time: a wall clock time around the produce call
        # (seconds of slack for clock granularity; this is not a speed check).
        assert before_ms - 5000 <= meta.timestamp_ms <= after_ms + 5000
        assert meta.timestamp == datetime.fromtimestamp(meta.timestamp_ms / 1000, tz=UTC)
        assert partition_of_key.setdefault(r.event.key, meta.partition) == meta.partition
        by_partition[meta.partition].append((meta.offset, r.event.seq))
    for partition, entries in by_partition.items():
        offsets = [offset for offset, _ in entries]
        assert offsets == list(range(len(entries))), f"partition {partition}: {offsets}"
        seqs = [seq for _, seq in entries]
        assert seqs == sorted(seqs), f"partition {partition} out of order: {seqs}"

    event_ids = [r.metadata.event_id for r in received]
    assert all(isinstance(i, str) and i for i in event_ids)
    assert len(set(event_ids)) == len(sent)


def test_handler_without_metadata_gets_only_the_event(make_topic, collector: Collector) -> None:
    topic = make_topic()
    with topic.new_producer() as producer:
        producer.produce(Invalidate(key="a", seq=1), Invalidate(key="b", seq=2))
    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(collector)
    received = collector.wait_for_count(2)
    assert [(r.event.key, r.event.seq) for r in received] == [("a", 1), ("b", 2)]
    assert all(r.metadata is None for r in received)
