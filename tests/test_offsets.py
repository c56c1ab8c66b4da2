"""Where a consumer starts: the oldest event, the latest one, or after its group's committed
offsets."""

from __future__ import annotations

from concurrent.futures import Future

import pytest
from support import Collector
from testevents_pb2 import Invalidate

from eventstream import BrokerError

pytestmark = pytest.mark.timeout(60)


def produce(topic, *seqs: int) -> None:
    with topic.new_producer() as producer:
        producer.produce(*(Invalidate(key="k", seq=s) for s in seqs))


def test_start_from_beginning_sees_earlier_events(make_topic, collector: Collector) -> None:
    topic = make_topic()
    produce(topic, 0, 1, 2, 3, 4)
    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(collector)
    collector.wait_for_seq(4)
    produce(topic, 100)
    collector.wait_for_seq(100)
    assert collector.seqs == [0, 1, 2, 3, 4, 100]


def test_default_start_sees_only_events_produced_after_assignment(
    make_topic, collector: Collector
) -> None:
    topic = make_topic()
    produce(topic, 0, 1, 2, 3, 4)
    consumer = topic.new_consumer()
    consumer.consume(collector)
    assert set(consumer.wait_until_assigned()) == {0}
    produce(topic, 5, 6, 7)
    collector.wait_for_seq(7)
    # One partition: an earlier event would have arrived before these.
    assert collector.seqs == [5, 6, 7]


@pytest.mark.parametrize("start_from_beginning", [True, False], ids=["beginning", "latest"])
def test_committed_offsets_win(
    make_topic, collector: Collector, start_from_beginning: bool
) -> None:
    """A restarted instance resumes after what it handled, whatever start_from_beginning says:
    with True it would otherwise re-read old events, with False miss the new ones."""
    topic = make_topic(instance_id="svc-resume")
    first = topic.new_consumer(start_from_beginning=True)
    first.consume(collector.handler("first"))
    produce(topic, *range(10))
    collector.wait_for_seq(9)
    first.close()  # commits the offsets of the handled events

    produce(topic, *range(10, 15))
    second = topic.new_consumer(start_from_beginning=start_from_beginning)
    second.consume(collector.handler("second"))
    collector.wait_until(
        lambda rs: any(r.tag == "second" and r.event.seq == 14 for r in rs), "seq 14 at second"
    )
    assert [r.event.seq for r in collector.received if r.tag == "first"] == list(range(10))
    assert [r.event.seq for r in collector.received if r.tag == "second"] == list(range(10, 15))


def test_seeking_a_partition_the_consumer_does_not_own_raises(make_topic, collector) -> None:
    """Both backends report a partition that could not be moved (the compiled one used to ignore
    librdkafka's per-partition errors and record the new position anyway)."""
    topic = make_topic()
    consumer = topic.new_consumer()
    consumer.consume(collector)
    assert set(consumer.wait_until_assigned()) == {0}
    outcome: Future[BaseException | None] = Future()

    def seek() -> None:  # on the poll thread, where the runtime calls it
        try:
            consumer._runtime.native.seek({7: 0})
        except BaseException as exc:
            outcome.set_result(exc)
        else:
            outcome.set_result(None)

    consumer._runtime.call_soon(seek)
    error = outcome.result(30)
    assert isinstance(error, BrokerError), error
    assert "seek" in str(error)
    assert set(consumer.assignment()) == {0}
