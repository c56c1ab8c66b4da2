"""The topic's shape changing under running clients: partitions added, the topic deleted and
recreated; and topics never created behind the application's back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic
from support import ErrorLog
from testevents_pb2 import Invalidate

import eventstream
from eventstream import GapError, PartitionChange

pytestmark = pytest.mark.timeout(180)


class Handled:
    """Every event an instance handled (its seq), and the rebalance changes it heard."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.seqs: list[int] = []
        self.changes: list[PartitionChange] = []

    def __call__(self, event: Invalidate) -> None:
        with self._cond:
            self.seqs.append(event.seq)
            self._cond.notify_all()

    def changed(self, change: PartitionChange) -> None:
        with self._cond:
            self.changes.append(change)
            self._cond.notify_all()

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float = 60) -> None:
        with self._cond:
            assert self._cond.wait_for(predicate, timeout), (
                f"timed out after {timeout:g} s waiting for {what}; handled {sorted(self.seqs)}, "
                f"changes {self.changes}"
            )

    def has_all(self, seqs: range) -> bool:
        return set(seqs) <= set(self.seqs)


def admin_for(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})


def test_partitions_added_under_running_consumers_are_read_from_their_first_event(
    make_config: Callable[..., eventstream.TopicConfig], kafka_bootstrap: str, topic_name: str
) -> None:
    """Three instances consume a topic of 2 partitions (each group's first start: at the end).
    The topic gets 6 partitions and events are produced into all of them at once, before any
    consumer has learned of the new ones: every instance handles every event, the ones in the
    new partitions included (a partition new to a group starts at its first event)."""
    topics = [
        eventstream.new_topic(Invalidate, make_config(instance_id=f"node-{i}")) for i in range(3)
    ]
    try:
        topics[0].ensure_exists(partitions=2)
        instances = [Handled() for _ in topics]
        consumers = []
        for topic, handled in zip(topics, instances, strict=True):
            consumer = topic.new_consumer()
            consumer.consume(handled, on_rebalance=handled.changed)
            consumers.append(consumer)
        for consumer in consumers:
            consumer.wait_until_assigned(60)
        admin = admin_for(kafka_bootstrap)
        admin.create_partitions([NewPartitions(topic_name, 6)])[topic_name].result(30)
        writer = eventstream.new_topic(Invalidate, make_config(instance_id="writer"))
        try:
            with writer.new_producer(key=lambda e: e.key) as producer:
                deliveries = producer.produce(
                    *(Invalidate(key=f"k{i}", seq=i) for i in range(120)), timeout=30
                )
        finally:
            writer.close()
        written_to = {d.partition for d in deliveries}
        assert written_to - {0, 1}, f"no event went to a new partition: {written_to}"
        for handled in instances:
            handled.wait_for(
                "every event, in the new partitions too", lambda h=handled: h.has_all(range(120))
            )
            assert any(
                c.kind == "assigned" and set(c.partitions) & {2, 3, 4, 5} for c in handled.changes
            ), handled.changes
    finally:
        for topic in topics:
            topic.close()


def _recreate(admin: AdminClient, name: str, partitions: int) -> None:
    """Delete topic ``name`` and create it again (the broker may take a moment to finish the
    delete: creating is retried while it says the topic still exists)."""
    admin.delete_topics([name])[name].result(30)
    deadline = time.monotonic() + 60
    while True:
        try:
            admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)
            return
        except Exception as exc:
            if "already exists" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.parametrize("refill", [5, 40], ids=["fewer-than-read", "more-than-read"])
def test_a_topic_recreated_under_a_consumer_is_a_gap_and_the_new_topic_is_read_whole(
    make_config: Callable[..., eventstream.TopicConfig],
    kafka_bootstrap: str,
    topic_name: str,
    refill: int,
) -> None:
    """A consumer has read 20 events of a topic of 2 partitions; the topic is deleted and created
    again and ``refill`` events per partition are produced into the new one at once: fewer than
    the consumer's old positions, or more (librdkafka would go on at the old offsets and skip
    the new topic's first events). Either way every event of the new topic is handled, the
    consumer reports a GapError (recreated) for each partition, and on_rebalance hears the old
    partitions lost and the new ones assigned."""
    errors = ErrorLog()
    gaps: list[GapError] = []
    config = make_config(instance_id="cache-1", on_error=errors)
    topic = eventstream.new_topic(Invalidate, config)
    writer = eventstream.new_topic(Invalidate, make_config(instance_id="writer"))
    try:
        topic.ensure_exists(partitions=2)
        handled = Handled()
        consumer = topic.new_consumer(start_from_beginning=True)
        consumer.consume(handled, on_rebalance=handled.changed, on_gap=gaps.append)
        consumer.wait_until_assigned(60)
        with writer.new_producer() as producer:
            producer.produce(*(Invalidate(seq=s) for s in range(20)))
        handled.wait_for("the old topic's events", lambda: handled.has_all(range(20)))
        _recreate(admin_for(kafka_bootstrap), topic_name, 2)
        new = range(1000, 1000 + 2 * refill)
        with writer.new_producer() as producer:
            producer.produce(*(Invalidate(seq=s) for s in new), timeout=60)
        handled.wait_for("every event of the new topic", lambda: handled.has_all(new), 90)
        handled.wait_for(
            "the old partitions lost and the new ones assigned",
            lambda: (
                any(c.kind == "lost" for c in handled.changes)
                and handled.changes[-1].kind == "assigned"
            ),
        )
    finally:
        topic.close()
        writer.close()
    recreated = [g for g in gaps if g.recreated]
    assert {g.partition for g in recreated} == {0, 1}, gaps
    assert all(g.skipped is None and g.resume_offset == 0 for g in recreated), recreated
    reported = [e for e in errors.errors if isinstance(e, GapError) and e.recreated]
    assert len(reported) == 2, errors.errors


def test_a_producer_never_creates_its_topic(
    make_config: Callable[..., eventstream.TopicConfig], kafka_bootstrap: str, topic_name: str
) -> None:
    with eventstream.new_topic(Invalidate, make_config()) as topic:
        producer = topic.new_producer()
        with pytest.raises(eventstream.ProduceError) as info:
            producer.produce(Invalidate(seq=1), timeout=30)
    error = info.value
    assert (error.failed, error.in_doubt) == (1, 0), error
    assert "ensure_exists" in str(error), error
    assert topic_name not in admin_for(kafka_bootstrap).list_topics(timeout=10).topics
