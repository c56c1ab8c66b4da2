"""Closing, context managers, misuse after close, and creating/inspecting the topic."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest
from support import Collector, wait_until
from testevents_pb2 import Invalidate

import eventstream
from eventstream import (
    ClosedError,
    ConsumerAlreadyStartedError,
    EventStreamError,
    TopicConfig,
    TopicError,
)

pytestmark = pytest.mark.timeout(60)


class Stop(BaseException):
    """What a handler raises to stop its consumer (like KeyboardInterrupt, without the risk)."""


def test_close_is_idempotent_and_use_after_close_raises(make_topic, collector: Collector) -> None:
    topic = make_topic()
    producer = topic.new_producer()
    producer.produce(Invalidate(seq=1))
    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(collector)
    collector.wait_for_seq(1)
    idle_consumer = topic.new_consumer()  # never started

    for _ in range(2):
        producer.close()
        consumer.close()
        idle_consumer.close()
    assert producer.closed and consumer.closed and idle_consumer.closed
    with pytest.raises(ClosedError):
        producer.produce(Invalidate(seq=2))
    with pytest.raises(ClosedError):
        asyncio.run(producer.produce_async(Invalidate(seq=2)))
    with pytest.raises(ClosedError):
        idle_consumer.consume(collector)
    with pytest.raises(ClosedError):
        consumer.wait_until_assigned(timeout=1)
    assert consumer.assignment() == {}
    assert issubclass(ClosedError, RuntimeError)

    topic.close()
    topic.close()
    assert topic.closed
    for use in (
        topic.new_producer,
        topic.new_consumer,
        topic.ensure_exists,
        topic.wait_until_ready,
    ):
        with pytest.raises(ClosedError):
            use()


def test_context_managers_close(make_config, collector: Collector) -> None:
    with eventstream.new_topic(Invalidate, make_config()) as topic:
        topic.ensure_exists()
        with topic.new_consumer(start_from_beginning=True) as consumer:
            consumer.consume(collector)
            with topic.new_producer() as producer:
                producer.produce(Invalidate(seq=1))
            assert producer.closed
            collector.wait_for_seq(1)
        assert consumer.closed
        assert not topic.closed
    assert topic.closed


def test_topic_close_closes_its_children(make_topic, collector: Collector) -> None:
    topic = make_topic()
    producer = topic.new_producer()
    producer.produce(Invalidate(seq=1))
    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(collector)
    collector.wait_for_seq(1)
    idle = topic.new_consumer()
    topic.close()
    assert producer.closed and consumer.closed and idle.closed
    with pytest.raises(ClosedError):
        producer.produce(Invalidate(seq=2))


def test_topic_close_reports_failures_and_still_closes_the_rest(
    make_topic, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = make_topic()
    first = topic.new_producer()
    broken = topic.new_producer()
    last = topic.new_consumer()
    really_close = broken.close

    def failing_close(timeout: float = 30.0) -> None:
        really_close(timeout)
        raise RuntimeError("flush failed")

    monkeypatch.setattr(broken, "close", failing_close)
    with pytest.raises(EventStreamError) as info:
        topic.close()
    assert "flush failed" in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert [str(f) for f in info.value.failures] == ["flush failed"]  # type: ignore[attr-defined]
    assert first.closed and last.closed
    topic.close()  # closed: nothing is raised twice


def test_handler_base_exception_stops_the_consumer_and_close_reraises_it(
    make_topic, collector: Collector
) -> None:
    topic = make_topic(instance_id="svc-stop")
    with topic.new_producer() as producer:
        producer.produce(*(Invalidate(seq=i) for i in range(4)))

    def handler(event: Invalidate) -> None:
        collector(event)
        if event.seq == 2:
            raise Stop()

    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(handler)
    collector.wait_for_seq(2)
    with pytest.raises(Stop):
        consumer.close()
    assert collector.seqs == [0, 1, 2]
    consumer.close()  # idempotent: raised once

    # The interrupted event was not finished: the next consumer of the instance gets it again.
    again = Collector()
    topic.new_consumer(start_from_beginning=True).consume(again)
    again.wait_for_seq(3)
    assert again.seqs == [2, 3]


def test_topic_close_closes_every_child_when_one_reraises_a_base_exception(
    make_topic, collector: Collector
) -> None:
    topic = make_topic()
    with topic.new_producer() as producer:
        producer.produce(Invalidate(seq=1))

    def handler(event: Invalidate) -> None:
        collector(event)
        raise Stop()

    stopped = topic.new_consumer(start_from_beginning=True)
    stopped.consume(handler)
    collector.wait_for_seq(1)
    producer = topic.new_producer()
    other = topic.new_consumer()
    with pytest.raises(Stop):
        topic.close()
    assert producer.closed, "topic.close() gave up on the producer after the consumer's Stop"
    assert other.closed, "topic.close() gave up on a consumer after another consumer's Stop"


def test_consume_twice_raises(make_topic, collector: Collector) -> None:
    topic = make_topic()
    consumer = topic.new_consumer()
    with pytest.raises(EventStreamError):
        consumer.wait_until_assigned(timeout=1)  # not consuming yet
    consumer.consume(collector)
    with pytest.raises(ConsumerAlreadyStartedError) as info:
        consumer.consume(collector)
    assert isinstance(info.value, RuntimeError)
    with pytest.raises(TypeError):
        topic.new_consumer().consume("not callable")  # type: ignore[arg-type]


def test_ensure_exists(make_config) -> None:
    topic = eventstream.new_topic(Invalidate, make_config())
    try:
        assert topic.ensure_exists(partitions=3) is True
        assert topic.ensure_exists(partitions=3) is False
        assert topic.ensure_exists(partitions=2) is False  # more than asked for is fine
        with pytest.raises(TopicError) as info:
            topic.ensure_exists(partitions=4)
        assert info.value.retriable is False
        assert "3 partitions" in str(info.value)
        with pytest.raises(ValueError):
            topic.ensure_exists(partitions=0)
    finally:
        topic.close()


@pytest.mark.parametrize("broker", ["refused", "silent"])
def test_ensure_exists_reports_unreachable_brokers_within_disconnected_after(broker: str) -> None:
    """A port where nothing listens, or one that accepts connections and never answers: the
    call's own timeout is an hour, and the error names disconnected_after, its cause and what to
    check (it used to wait out the whole timeout, saying only that nothing answered)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        if broker == "silent":
            listener.listen(8)
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        if broker == "refused":
            listener.close()
        config = TopicConfig(
            brokers=address, topic="unreachable", instance_id="svc", disconnected_after=0.5
        )
        with eventstream.new_topic(Invalidate, config) as topic, pytest.raises(TopicError) as info:
            topic.ensure_exists(timeout=3600)
    text = str(info.value)
    assert f"no broker at {address} answered within 0.5 s" in text, text
    assert "TopicConfig.disconnected_after" in text and "Check TopicConfig.brokers" in text
    assert "'unreachable'" in text
    if broker == "refused":
        assert "Connection refused" in text, text
    assert info.value.retriable is True
    assert info.value.name == "_ALL_BROKERS_DOWN"


def test_wait_until_ready(make_config, topic_name: str) -> None:
    missing = eventstream.new_topic(Invalidate, make_config(topic=topic_name + "-missing"))
    topic = eventstream.new_topic(Invalidate, make_config())
    try:
        with pytest.raises(TopicError) as info:
            missing.wait_until_ready(timeout=1)
        assert info.value.retriable is True
        topic.ensure_exists(partitions=2)
        topic.wait_until_ready(timeout=30)
    finally:
        missing.close()
        topic.close()


def test_close_that_times_out_names_the_event_whose_handler_still_runs(
    make_topic, caplog: pytest.LogCaptureFixture
) -> None:
    topic = make_topic(instance_id="svc-slow")
    with topic.new_producer() as producer:
        producer.produce(Invalidate(seq=1), Invalidate(seq=2))
    entered, release = threading.Event(), threading.Event()
    handled: list[int] = []

    def handler(event: Invalidate) -> None:
        if event.seq == 2:
            entered.set()
            release.wait(30)
        handled.append(event.seq)

    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(handler)
    assert entered.wait(30), "the handler of the second event never ran"
    try:
        consumer.close(timeout=0.2)
    finally:
        release.set()
    still_running = [r for r in caplog.records if "the handler is still running" in r.message]
    assert len(still_running) == 1, caplog.text
    assert f"for the event at {topic.name}[0]@1." in still_running[0].message
    wait_until(lambda: handled == [1, 2], "the handler to finish after close() gave up")
    topic.close()


def test_close_none_waits_as_long_as_it_takes(make_topic, collector: Collector) -> None:
    topic = make_topic()
    producer = topic.new_producer()
    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(collector)
    producer.produce(Invalidate(key="k", seq=1))
    collector.wait_for_seq(1)
    consumer.close(None)
    producer.close(None)
    assert consumer.closed and producer.closed
    topic.close(None)
    assert topic.closed
