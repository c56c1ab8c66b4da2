"""Thousands of keyed events over several partitions: nothing lost, nothing duplicated, and each
key's events arrive in the order they were produced."""

from __future__ import annotations

from collections import defaultdict

import pytest
from support import Collector
from testevents_pb2 import Invalidate

pytestmark = pytest.mark.timeout(180)

EVENTS = 5000
KEYS = 60
PARTITIONS = 6
PER_CALL = 500


def test_thousands_of_keyed_events_keep_per_key_order(make_topic, collector: Collector) -> None:
    topic = make_topic(partitions=PARTITIONS)
    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(collector, with_metadata=True)  # consumes while the producer produces

    events = [Invalidate(key=f"key-{i % KEYS}", seq=i) for i in range(EVENTS)]
    with topic.new_producer(key=lambda e: e.key) as producer:
        for start in range(0, EVENTS, PER_CALL):
            producer.produce(*events[start : start + PER_CALL])

    received = collector.wait_for_count(EVENTS, timeout=90)
    seqs = [r.event.seq for r in received]
    assert len(seqs) == EVENTS, f"{len(seqs) - EVENTS} duplicates"
    assert sorted(seqs) == list(range(EVENTS))

    per_key: dict[str, list[int]] = defaultdict(list)
    per_partition: dict[int, list[int]] = defaultdict(list)
    partition_of_key: dict[str, int] = {}
    for r in received:
        per_key[r.event.key].append(r.event.seq)
        per_partition[r.metadata.partition].append(r.metadata.offset)
        assert (
            partition_of_key.setdefault(r.event.key, r.metadata.partition) == r.metadata.partition
        )
    for key, key_seqs in per_key.items():
        assert key_seqs == sorted(key_seqs), f"{key} out of order"
    for partition, offsets in per_partition.items():
        assert offsets == list(range(len(offsets))), f"partition {partition} has gaps or repeats"
    assert set(per_partition) == set(range(PARTITIONS)), "the key function spread no events there"
