"""Retries and dead letters: a failing handler is retried as the policy says; what still fails,
and records that cannot reach the handler, go to the dead-letter topic with their original value,
key and headers plus headers saying why, where from and when; the partition goes on, and skipped
records are logged summarized, never one line per record."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
from support import Collector, raw_consume, raw_produce, wait_until
from testevents_pb2 import Invalidate, Unrelated

import eventstream
from eventstream import RetryPolicy
from eventstream._runtime.wire import DEAD_LETTER_HEADERS

pytestmark = pytest.mark.timeout(90)

RETRY_FAST = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.05)


def create_dead_letter_topic(topic: eventstream.Topic[Any], name: str) -> None:
    """The dead-letter topic is the application's, made like any other (nothing is created
    implicitly)."""
    config = eventstream.TopicConfig(
        brokers=topic.config.brokers, topic=name, instance_id=topic.config.instance_id
    )
    with eventstream.new_topic(Invalidate, config) as dead:
        dead.ensure_exists(partitions=1)


def dead_letters(bootstrap: str, topic: str, count: int) -> list[Any]:
    return raw_consume(bootstrap, topic, count)


def test_a_handler_that_fails_twice_is_retried_and_handled(
    make_topic: Callable[..., eventstream.Topic[Any]],
) -> None:
    topic = make_topic()
    calls: dict[int, int] = {}

    def flaky(event: Invalidate) -> None:
        calls[event.seq] = calls.get(event.seq, 0) + 1
        if event.seq == 2 and calls[2] < 3:
            raise ConnectionError("the cache is busy")

    with topic.new_producer() as producer:
        producer.produce(*(Invalidate(seq=i) for i in range(5)))
    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(flaky, retry=RETRY_FAST)
    wait_until(lambda: consumer.metrics().handled == 5, "every event handled")
    assert calls == {0: 1, 1: 1, 2: 3, 3: 1, 4: 1}
    metrics = consumer.metrics()
    assert (metrics.retried, metrics.failed, metrics.dead_lettered) == (2, 0, 0)
    consumer.close()


def test_what_still_fails_goes_to_the_dead_letter_topic_and_the_partition_goes_on(
    make_topic: Callable[..., eventstream.Topic[Any]],
    kafka_bootstrap: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = make_topic(instance_id="svc-dlq")
    dlq = f"{topic.name}.dlq"
    create_dead_letter_topic(topic, dlq)
    collector = Collector()

    def handler(event: Invalidate) -> None:
        if event.seq == 1:
            raise ValueError("cannot invalidate key 1")
        collector(event)

    with topic.new_producer(key=lambda e: e.key) as producer:
        producer.produce(*(Invalidate(key=f"k{i}", seq=i) for i in range(3)))
    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(handler, retry=RETRY_FAST, dead_letter_topic=dlq)
    collector.wait_for_seqs([0, 2])
    wait_until(lambda: consumer.metrics().dead_lettered == 1, "the dead letter")
    consumer.close()

    [record] = dead_letters(kafka_bootstrap, dlq, 1)
    original = raw_consume(kafka_bootstrap, topic.name, 3)[1]
    assert record.value() == original.value() == Invalidate(key="k1", seq=1).SerializeToString()
    assert record.key() == b"k1"
    headers = record.headers() or []
    names = [name for name, _ in headers]
    # The original's headers first, as they were, then eventstream's.
    assert headers[: len(original.headers() or [])] == original.headers()
    assert names[-len(DEAD_LETTER_HEADERS) :] == list(DEAD_LETTER_HEADERS)
    values = dict(headers)
    assert values["eventstream-dlq-reason"] == b"handler"
    assert b"ValueError: cannot invalidate key 1" in values["eventstream-dlq-error"]
    assert values["eventstream-dlq-topic"] == topic.name.encode()
    assert values["eventstream-dlq-partition"] == b"0"
    assert values["eventstream-dlq-offset"] == b"1"
    assert values["eventstream-dlq-group"] == f"{topic.name}::svc-dlq".encode()
    assert values["eventstream-dlq-attempts"] == b"3"
    assert values["eventstream-dlq-time"].endswith(b"Z")
    metrics = consumer.metrics()
    assert (metrics.handled, metrics.failed, metrics.dead_lettered, metrics.retried) == (2, 1, 1, 2)
    errors = [r for r in caplog.records if r.name == "eventstream" and r.levelno == logging.ERROR]
    assert len(errors) == 1 and "dead-lettered to" in errors[0].getMessage()
    assert errors[0].exc_info is not None  # the traceback of the last attempt

    # The dead-lettered event's offset was stored: the instance does not meet it again.
    later = Collector()
    again = topic.new_consumer(start_from_beginning=True)
    again.consume(later)
    with topic.new_producer() as producer:
        producer.produce(Invalidate(seq=9))
    later.wait_for_seq(9)
    assert later.seqs == [9]


def test_records_that_cannot_reach_the_handler_are_dead_lettered_with_the_reason(
    make_topic: Callable[..., eventstream.Topic[Any]], kafka_bootstrap: str, collector: Collector
) -> None:
    topic = make_topic(instance_id="svc-poison")
    dlq = f"{topic.name}.dlq"
    create_dead_letter_topic(topic, dlq)
    raw_produce(
        kafka_bootstrap,
        topic.name,
        [
            (b"\xff\xff\xff", b"bad", None),
            (Unrelated(note="x").SerializeToString(), None, [("ce_type", b"other.Type")]),
            (Invalidate(seq=3).SerializeToString(), None, [("content-type", b"application/json")]),
            (Invalidate(seq=4).SerializeToString(), None, None),
        ],
    )
    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(collector, dead_letter_topic=dlq)
    collector.wait_for_seq(4)
    wait_until(lambda: consumer.metrics().dead_lettered == 3, "three dead letters")
    consumer.close()
    records = dead_letters(kafka_bootstrap, dlq, 3)
    reasons = [dict(r.headers() or [])["eventstream-dlq-reason"] for r in records]
    assert reasons == [b"decode", b"type", b"content-type"]
    assert [dict(r.headers() or [])["eventstream-dlq-offset"] for r in records] == [
        b"0",
        b"1",
        b"2",
    ]
    assert records[0].value() == b"\xff\xff\xff" and records[0].key() == b"bad"
    assert all(dict(r.headers() or [])["eventstream-dlq-attempts"] == b"0" for r in records)
    assert consumer.metrics().skipped == 3


def test_skipped_records_are_logged_summarized(
    make_topic: Callable[..., eventstream.Topic[Any]],
    kafka_bootstrap: str,
    collector: Collector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = make_topic()
    foreign = [(Unrelated(note="x").SerializeToString(), None, [("ce_type", b"other.T")])] * 200
    raw_produce(
        kafka_bootstrap, topic.name, [*foreign, (Invalidate(seq=1).SerializeToString(), None, None)]
    )
    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(collector)
    collector.wait_for_seq(1)
    consumer.close()
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.name == "eventstream" and r.levelno >= logging.WARNING
    ]
    individual = [x for x in lines if x.startswith("skipping event at")]
    summaries = [x for x in lines if x.startswith("skipped ")]
    assert len(individual) == 3, lines
    assert "summarized" in individual[-1]
    assert len(summaries) == 1 and "skipped 197 more records" in summaries[0], lines
    assert "197 of another ce_type" in summaries[0]
    assert consumer.metrics().skipped == 200


def test_close_during_a_retry_wait_leaves_the_event_for_the_next_consumer(
    make_topic: Callable[..., eventstream.Topic[Any]],
) -> None:
    topic = make_topic()
    failed = threading.Event()

    def always(event: Invalidate) -> None:
        failed.set()
        raise RuntimeError("down")

    with topic.new_producer() as producer:
        producer.produce(Invalidate(seq=1))
    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(always, retry=RetryPolicy(attempts=5, backoff=60, max_backoff=60))
    assert failed.wait(30)
    consumer.close(timeout=30)  # interrupts the 60 s wait
    later = Collector()
    topic.new_consumer(start_from_beginning=True).consume(later)
    later.wait_for_seq(1)


def test_close_during_an_async_retry_wait_leaves_the_event_for_the_next_consumer(
    make_topic: Callable[..., eventstream.Topic[Any]],
) -> None:
    """The async handler's retries are the sync ones' (one policy): a close() during a pause
    gives the event up to the group's next consumer, neither waiting the pause out nor
    counting it failed."""
    import asyncio

    topic = make_topic()

    async def always(event: Invalidate) -> None:
        raise RuntimeError("down")

    async def main() -> Any:
        with topic.new_producer() as producer:
            producer.produce(Invalidate(seq=1))
        consumer = topic.new_consumer(start_from_beginning=True)
        consumer.consume(always, retry=RetryPolicy(attempts=5, backoff=60, max_backoff=60))
        while consumer.metrics().retried < 1:
            await asyncio.sleep(0.05)
        await asyncio.wait_for(consumer.aclose(), 20)  # interrupts the 60 s pause
        return consumer.metrics()

    metrics = asyncio.run(main())
    assert (metrics.handled, metrics.failed, metrics.retried) == (0, 0, 1)
    later = Collector()
    topic.new_consumer(start_from_beginning=True).consume(later)
    later.wait_for_seq(1)


def test_async_handlers_are_retried_and_dead_lettered_too(
    make_topic: Callable[..., eventstream.Topic[Any]], kafka_bootstrap: str
) -> None:
    import asyncio

    topic = make_topic(instance_id="svc-async-dlq")
    dlq = f"{topic.name}.dlq"
    create_dead_letter_topic(topic, dlq)
    attempts: dict[int, int] = {}

    async def handler(event: Invalidate) -> None:
        attempts[event.seq] = attempts.get(event.seq, 0) + 1
        if event.seq == 1 or (event.seq == 2 and attempts[2] == 1):
            raise LookupError(f"no {event.seq}")

    async def main() -> Any:
        with topic.new_producer() as producer:
            producer.produce(*(Invalidate(seq=i) for i in range(4)))
        consumer = topic.new_consumer(start_from_beginning=True)
        consumer.consume(handler, retry=RETRY_FAST, dead_letter_topic=dlq)
        while consumer.metrics().handled + consumer.metrics().failed < 4:
            await asyncio.sleep(0.05)
        await consumer.aclose()
        return consumer.metrics()

    metrics = asyncio.run(main())
    assert (metrics.handled, metrics.failed, metrics.dead_lettered) == (3, 1, 1)
    assert attempts == {0: 1, 1: 3, 2: 2, 3: 1}
    [record] = dead_letters(kafka_bootstrap, dlq, 1)
    assert dict(record.headers() or [])["eventstream-dlq-attempts"] == b"3"
    # The original's headers come first, as they were: the compiled consumer has freed a batch
    # handler's parsed headers by the time it gives up, and must read them again.
    [original] = [
        r
        for r in raw_consume(kafka_bootstrap, topic.name, 4)
        if r.value() == Invalidate(seq=1).SerializeToString()
    ]
    assert original.headers()
    assert (record.headers() or [])[: len(original.headers() or [])] == original.headers()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"attempts": 0}, "retry.attempts"),
        ({"attempts": 1.5}, "retry.attempts"),
        ({"backoff": -1}, "retry.backoff"),
        ({"max_backoff": float("inf")}, "retry.max_backoff"),
    ],
)
def test_bad_retry_policies(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(eventstream.ConfigError) as info:
        RetryPolicy(**fields)
    assert info.value.field == field


def test_the_dead_letter_topic_must_be_another_legal_topic() -> None:
    config = eventstream.TopicConfig(brokers="127.0.0.1:9", topic="t", instance_id="a")
    with eventstream.new_topic(Invalidate, config) as topic:
        for bad in ("t", "has space", ""):
            with pytest.raises(eventstream.ConfigError) as info:
                topic.new_consumer().consume(print, dead_letter_topic=bad)
            assert info.value.field == "dead_letter_topic"
