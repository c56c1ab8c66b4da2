"""Per-instance groups: every instance id gets every event; consumers of one instance id share the
topic's partitions, so each event is handled once by that instance."""

from __future__ import annotations

import pytest
from support import Collector, wait_until
from testevents_pb2 import Invalidate

pytestmark = pytest.mark.timeout(60)


def test_each_instance_id_receives_every_event(make_topic, collector: Collector) -> None:
    topic_a = make_topic(partitions=3, instance_id="svc-a")
    topic_b = make_topic(create=False, instance_id="svc-b")
    # From the beginning, so that this checks the fan-out only, not when a latest position is
    # resolved (test_offsets.py does that).
    consumer_a = topic_a.new_consumer(start_from_beginning=True)
    consumer_b = topic_b.new_consumer(start_from_beginning=True)
    consumer_a.consume(collector.handler("a"))
    consumer_b.consume(collector.handler("b"))
    # Each instance id is a group of its own: each consumer owns every partition.
    assert set(consumer_a.wait_until_assigned()) == {0, 1, 2}
    assert set(consumer_b.wait_until_assigned()) == {0, 1, 2}

    events = [Invalidate(key=f"k{i % 9}", seq=i) for i in range(90)]
    with topic_a.new_producer(key=lambda e: e.key) as producer:
        producer.produce(*events)

    received = collector.wait_for_count(2 * len(events))
    for tag in ("a", "b"):
        seqs = sorted(r.event.seq for r in received if r.tag == tag)
        assert seqs == list(range(len(events))), f"instance {tag} got {len(seqs)} events"


def test_consumers_of_one_instance_id_share_partitions(make_topic, collector: Collector) -> None:
    topic = make_topic(partitions=4, instance_id="svc-shared")
    first = topic.new_consumer(start_from_beginning=True)
    second = topic.new_consumer(start_from_beginning=True)
    first.consume(collector.handler("first"), with_metadata=True)
    first.wait_until_assigned()
    second.consume(collector.handler("second"), with_metadata=True)
    second.wait_until_assigned()

    def split() -> bool:  # the rebalance that gives the second consumer its share has finished
        a, b = set(first.assignment()), set(second.assignment())
        return bool(a) and bool(b) and not a & b and a | b == {0, 1, 2, 3}

    # Produce only once the split is done: no rebalance (and no redelivery) while consuming.
    wait_until(split, "the partitions to be split between the two consumers")
    owned = {"first": set(first.assignment()), "second": set(second.assignment())}

    events = [Invalidate(key=f"k{i % 40}", seq=i) for i in range(200)]
    with topic.new_producer(key=lambda e: e.key) as producer:
        producer.produce(*events)

    received = collector.wait_for_count(len(events))
    seqs = [r.event.seq for r in received]
    assert sorted(seqs) == list(range(len(events))), "every event exactly once across the two"
    for tag in ("first", "second"):
        partitions = {r.metadata.partition for r in received if r.tag == tag}
        assert partitions, f"the {tag} consumer got no events"
        assert partitions <= owned[tag]
