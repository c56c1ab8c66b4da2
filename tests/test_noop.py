"""The no-op topic: streaming disabled, every operation succeeds, types are still checked."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import confluent_kafka
import confluent_kafka.admin
import pytest
from support import Collector
from testevents_pb2 import Invalidate, Unrelated

import eventstream
from eventstream import ClosedError, EventTypeError

pytestmark = pytest.mark.timeout(30)


def test_every_operation_succeeds_and_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    topic = eventstream.new_noop_topic(Invalidate)
    threads_before = set(threading.enumerate())
    # Built: from now on no client may be created (config validation above may build one offline).
    refuse = _refuse_clients(monkeypatch)
    collector = Collector()

    assert topic.ensure_exists(partitions=3) is False
    topic.wait_until_ready(timeout=1)
    producer = topic.new_producer(key=lambda e: e.key)
    producer.produce(Invalidate(key="a", seq=1), Invalidate(key="b", seq=2))
    producer.produce(Invalidate(seq=3), timeout=0.1)
    assert producer.flush(1) == 0
    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(collector, with_metadata=True)

    async def use_async() -> None:
        await producer.produce_async(Invalidate(seq=4))
        await producer.produce_async(Invalidate(seq=5), timeout=0.1)
        with pytest.raises(EventTypeError):
            await producer.produce_async(Unrelated(note="x"))

    asyncio.run(use_async())
    with pytest.raises(EventTypeError):
        producer.produce(Invalidate(seq=6), Unrelated(note="x"))
    with pytest.raises(TypeError):
        producer.produce(b"raw bytes")  # type: ignore[arg-type]

    assert len(collector) == 0, "a no-op consumer received something"
    assert set(threading.enumerate()) <= threads_before, "the no-op topic started threads"
    assert refuse.calls == []

    topic.close()
    topic.close()
    assert producer.closed and consumer.closed
    with pytest.raises(ClosedError):
        producer.produce(Invalidate(seq=7))


def test_noop_context_managers() -> None:
    with eventstream.new_noop_topic(Invalidate) as topic:
        with topic.new_producer() as producer:
            producer.produce(Invalidate(seq=1))
        with topic.new_consumer() as consumer:
            consumer.consume(lambda event: None)
    assert topic.closed and producer.closed and consumer.closed


def test_noop_consumer_wait_until_assigned_returns() -> None:
    """A program that waits for its consumer's assignment must not hang or fail when streaming
    is disabled."""
    with eventstream.new_noop_topic(Invalidate) as topic:
        consumer = topic.new_consumer()
        consumer.consume(lambda event: None)
        assert isinstance(consumer.wait_until_assigned(timeout=2), dict)


class _Refuse:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, what: str):
        def refuse(*args: Any, **kwargs: Any) -> None:
            self.calls.append(what)
            raise AssertionError(f"the no-op topic created a {what}")

        return refuse


def _refuse_clients(monkeypatch: pytest.MonkeyPatch) -> _Refuse:
    refuse = _Refuse()
    for name in ("Producer", "Consumer"):
        monkeypatch.setattr(confluent_kafka, name, refuse(f"confluent_kafka.{name}"))
    # eventstream imports AdminClient from confluent_kafka.admin when it makes one.
    monkeypatch.setattr(confluent_kafka.admin, "AdminClient", refuse("AdminClient"))
    return refuse
