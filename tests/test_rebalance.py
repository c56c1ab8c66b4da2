"""What a consumer learns about its share of the topic: the on_rebalance hook (assigned, revoked,
lost), gaps left by retention, and a handler that runs past max.poll.interval.ms."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient
from support import Collector, ErrorLog, wait_until
from testevents_pb2 import Invalidate

import eventstream
from eventstream import BrokerError, GapError, PartitionChange

pytestmark = pytest.mark.timeout(120)


class Changes:
    """An on_rebalance hook that records, with the thread it ran on."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.changes: list[PartitionChange] = []
        self.threads: set[str] = set()

    def __call__(self, change: PartitionChange) -> None:
        with self._cond:
            self.changes.append(change)
            self.threads.add(threading.current_thread().name)
            self._cond.notify_all()

    def wait_for(self, kind: str, timeout: float = 60) -> PartitionChange:
        with self._cond:
            if not self._cond.wait_for(lambda: any(c.kind == kind for c in self.changes), timeout):
                raise AssertionError(f"no {kind!r} change within {timeout} s: {self.changes}")
            return next(c for c in self.changes if c.kind == kind)


def test_the_hook_hears_assignments_before_events_and_revocations_at_close(
    make_topic: Callable[..., eventstream.Topic[Any]],
) -> None:
    topic = make_topic(partitions=2)
    changes = Changes()
    order: list[str] = []

    def handler(event: Invalidate) -> None:
        order.append(f"event {event.seq}")

    def hook(change: PartitionChange) -> None:
        order.append(change.kind)
        changes(change)

    with topic.new_producer() as producer:
        producer.produce(Invalidate(seq=1))
    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(handler, on_rebalance=hook)
    assigned = changes.wait_for("assigned")
    assert assigned == PartitionChange("assigned", topic.name, (0, 1))
    wait_until(lambda: "event 1" in order, "the event")
    consumer.close()
    assert changes.wait_for("revoked").partitions == (0, 1)
    assert order == ["assigned", "event 1", "revoked"], order
    assert changes.threads == {f"eventstream-consumer-{topic.name}"}


def test_a_hook_that_raises_is_logged_and_consumption_goes_on(
    make_topic: Callable[..., eventstream.Topic[Any]],
    collector: Collector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = make_topic()

    def hook(change: PartitionChange) -> None:
        raise RuntimeError(f"the application's bug ({change.kind})")

    consumer = topic.new_consumer()
    consumer.consume(collector, on_rebalance=hook)
    consumer.wait_until_assigned(60)
    with topic.new_producer() as producer:
        producer.produce(Invalidate(seq=7))
    collector.wait_for_seq(7)
    consumer.close()
    assert any("on_rebalance hook raised" in r.getMessage() for r in caplog.records)


def _delete_records(bootstrap: str, topic: str, before: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.delete_records([confluent_kafka.TopicPartition(topic, 0, before)])
    for future in futures.values():
        future.result(30)


def test_a_committed_offset_deleted_by_retention_is_a_reported_gap(
    make_topic: Callable[..., eventstream.Topic[Any]], kafka_bootstrap: str
) -> None:
    """The instance handled (and committed) offsets 0..4; retention then deleted 0..11 while it
    was away. It resumes at the oldest retained event, 12, and says that 5..11 were skipped."""
    errors = ErrorLog()
    topic = make_topic(on_error=errors)
    with topic.new_producer() as producer:
        producer.produce(*(Invalidate(seq=i) for i in range(5)))
    first = Collector()
    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(first)
    first.wait_for_count(5)
    consumer.close()  # commits offset 5
    with topic.new_producer() as producer:
        producer.produce(*(Invalidate(seq=i) for i in range(5, 15)))
    _delete_records(kafka_bootstrap, topic.name, 12)  # as retention would

    again = Collector()
    resumed = topic.new_consumer(start_from_beginning=True)
    resumed.consume(again)
    assert resumed.wait_until_assigned(60).keys() == {0}
    again.wait_for_seqs([12, 13, 14])
    gap = errors.wait_for(GapError)
    assert isinstance(gap, GapError)
    assert (gap.topic, gap.partition, gap.first_offset, gap.resume_offset, gap.skipped) == (
        topic.name,
        0,
        5,
        12,
        7,
    )
    assert "deleted by retention" in str(gap) and f"{topic.name}[0]@5..11" in str(gap)
    assert resumed.status.error is gap
    assert [e for e in errors.errors if isinstance(e, GapError)] == [gap]  # once
    assert again.seqs == [12, 13, 14]


def test_a_handler_past_max_poll_interval_loses_the_partitions_and_hears_so(
    make_topic: Callable[..., eventstream.Topic[Any]], kafka_bootstrap: str
) -> None:
    """librdkafka leaves the group when the application does not poll for
    max.poll.interval.ms: the consumer reports no assignment as soon as that time has passed,
    warns once (retriable), hears "lost", rejoins, and the event is handled again."""
    errors = ErrorLog()
    changes = Changes()
    topic = make_topic(
        on_error=errors,
        consumer_properties={"max.poll.interval.ms": 6000, "session.timeout.ms": 6000},
    )
    release = threading.Event()
    seen: list[int] = []

    def handler(event: Invalidate) -> None:
        seen.append(event.seq)
        if len(seen) == 1:
            release.wait(60)  # blocks the poll thread past max.poll.interval.ms

    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(handler, on_rebalance=changes)
    consumer.wait_until_assigned(60)
    with topic.new_producer() as producer:
        producer.produce(Invalidate(seq=1))
    wait_until(lambda: seen == [1], "the first delivery")
    wait_until(lambda: consumer.assignment() == {}, "the partitions to count as lost", 30)
    # librdkafka checks the interval on its own timer: wait until it has really left the group.
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    group = topic.config.group_id

    def group_empty() -> bool:
        [described] = admin.describe_consumer_groups([group]).values()
        return not described.result(30).members

    wait_until(group_empty, "the consumer to leave its group", 30)
    release.set()
    warning = errors.wait_for(BrokerError)
    assert isinstance(warning, BrokerError)
    assert (warning.name, warning.retriable) == ("_MAX_POLL_EXCEEDED", True)
    assert "max.poll.interval.ms" in str(warning)
    assert changes.wait_for("lost").partitions == (0,)
    wait_until(lambda: seen.count(1) == 2, "the event to be handled again after the rejoin", 60)
    assert consumer.status.state == "ready"
    consumer.close()


def test_a_consumer_that_falls_behind_retention_reports_the_gap_and_goes_on(
    make_topic: Callable[..., eventstream.Topic[Any]], kafka_bootstrap: str
) -> None:
    """While the handler is busy, retention deletes what the consumer has not fetched yet: its
    next fetch is out of range, librdkafka resets to the oldest retained event, and the consumer
    reports the skipped offsets once and goes on from there."""
    errors = ErrorLog()
    topic = make_topic(
        on_error=errors,
        # Fetch little ahead, so most of the backlog is still on the broker when it is deleted.
        consumer_properties={
            "queued.max.messages.kbytes": 1,
            "queued.min.messages": 1,
            "fetch.message.max.bytes": 1024,
        },
    )
    with topic.new_producer() as producer:
        for seq in range(100):  # one record batch each
            producer.produce(Invalidate(seq=seq, key="x" * 2000))
    release = threading.Event()
    handled: list[int] = []

    def handler(event: Invalidate, meta: eventstream.EventMetadata) -> None:
        handled.append(meta.offset)
        if len(handled) == 1:
            release.wait(60)

    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(handler, with_metadata=True)
    wait_until(lambda: len(handled) == 1, "the first event")
    _delete_records(kafka_bootstrap, topic.name, 90)  # as retention would
    release.set()
    gap = errors.wait_for(GapError)
    assert isinstance(gap, GapError)
    wait_until(lambda: handled[-1:] == [99], "the events after the gap")
    before = [o for o in handled if o < 90]
    assert before == list(range(len(before))), handled  # in order up to the gap
    assert (gap.partition, gap.first_offset, gap.resume_offset) == (0, len(before), 90)
    assert [o for o in handled if o >= 90] == list(range(90, 100))
    assert [e for e in errors.errors if isinstance(e, GapError)] == [gap]
    consumer.close()
