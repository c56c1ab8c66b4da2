"""Producing: concurrent callers, misuse that sends nothing, and a broker that cannot be reached."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest
from support import Collector, closed_port, raw_consume_all, wait_until
from testevents_pb2 import Invalidate, Unrelated

import eventstream
from eventstream import EventTypeError, ProduceError, ProduceTimeoutError, SerializationError

THREADS = 8
CALLS = 10
PER_CALL = 25


@pytest.mark.timeout(120)
def test_threads_producing_at_once(make_topic, collector: Collector) -> None:
    topic = make_topic(partitions=3)
    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(collector)
    producer = topic.new_producer(key=lambda e: e.key)
    start = threading.Barrier(THREADS)
    acknowledged: list[list[int]] = [[] for _ in range(THREADS)]
    failures: list[BaseException] = []

    def work(thread: int) -> None:
        try:
            start.wait()
            for call in range(CALLS):
                base = (thread * CALLS + call) * PER_CALL
                seqs = list(range(base, base + PER_CALL))
                producer.produce(*(Invalidate(key=f"t{thread}", seq=s) for s in seqs))
                acknowledged[thread].extend(seqs)  # produce returned: all of them acknowledged
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert not any(t.is_alive() for t in threads), "a produce call never returned"
    assert not failures, failures
    total = THREADS * CALLS * PER_CALL
    assert sorted(s for seqs in acknowledged for s in seqs) == list(range(total))
    assert producer.flush(10) == 0

    received = collector.wait_for_count(total, timeout=60)
    seqs = [r.event.seq for r in received]
    assert sorted(seqs) == list(range(total)), "lost or duplicated events"
    for thread in range(THREADS):  # one key per thread: its calls arrive in call order
        mine = [r.event.seq for r in received if r.event.key == f"t{thread}"]
        assert mine == sorted(mine)


@pytest.mark.timeout(60)
def test_wrong_event_type_raises_and_sends_nothing(make_topic, collector: Collector) -> None:
    topic = make_topic()
    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(collector, with_metadata=True)
    with topic.new_producer() as producer:
        with pytest.raises(EventTypeError) as info:
            producer.produce(Unrelated(note="x"))
        assert isinstance(info.value, TypeError)
        with pytest.raises(EventTypeError):  # a good event in the same call is not sent either
            producer.produce(Invalidate(seq=100), Unrelated(note="x"), Invalidate(seq=101))
        with pytest.raises(TypeError):
            producer.produce("not an event")  # type: ignore[arg-type]

        async def async_misuse() -> None:
            with pytest.raises(EventTypeError):
                await producer.produce_async(Invalidate(seq=102), Unrelated(note="x"))

        asyncio.run(async_misuse())

    with topic.new_producer(key=lambda e: 42) as bad_key:  # type: ignore[arg-type,return-value]
        with pytest.raises(SerializationError) as key_info:
            bad_key.produce(Invalidate(seq=103))
        assert isinstance(key_info.value, ValueError)

    with topic.new_producer() as producer:
        producer.produce(Invalidate(seq=1))
    [first] = collector.wait_for_seq(1)
    assert first.metadata.offset == 0, "something was written before the good event"
    assert collector.seqs == [1]


def unreachable_topic(**fields) -> eventstream.Topic[Invalidate]:
    config = eventstream.TopicConfig(
        brokers=f"127.0.0.1:{closed_port()}", topic="nowhere", instance_id="svc-a", **fields
    )
    return eventstream.new_topic(Invalidate, config)


def check_timeout_error(error: ProduceTimeoutError, events: int, *, never_sent: int = 0) -> None:
    assert isinstance(error, ProduceError) and isinstance(error, TimeoutError)
    assert error.retriable is True
    assert error.fatal is False
    # Events handed to librdkafka are in doubt (a request may have reached a broker); events
    # that never left the call are known not to be written.
    assert (error.failed, error.in_doubt, error.total) == (never_sent, events - never_sent, events)
    message = str(error)
    assert "in doubt" in message, message
    # The message says why: the connection to the configured broker failed.
    assert "Connection refused" in message or "_TRANSPORT" in message, message


@pytest.mark.timeout(60)
def test_unreachable_broker_raises_produce_timeout_error() -> None:
    with unreachable_topic() as topic:
        producer = topic.new_producer()
        try:
            with pytest.raises(ProduceTimeoutError) as info:
                producer.produce(Invalidate(seq=1), Invalidate(seq=2), timeout=2)
            check_timeout_error(info.value, 2)
        finally:
            producer.close(timeout=0.5)  # the events are in doubt: do not wait for them


@pytest.mark.timeout(60)
def test_unreachable_broker_produce_async_timeout_reports_like_produce() -> None:
    with unreachable_topic() as topic:
        producer = topic.new_producer()

        async def main() -> ProduceTimeoutError:
            with pytest.raises(ProduceTimeoutError) as info:
                await producer.produce_async(Invalidate(seq=1), timeout=2)
            return info.value

        try:
            check_timeout_error(asyncio.run(main()), 1)
        finally:
            producer.close(timeout=0.5)


@pytest.mark.timeout(20)  # the call must end at its timeout, not when librdkafka gives up
def test_timeout_also_bounds_waiting_for_room_in_a_full_queue() -> None:
    # librdkafka's queue holds 10 events and the broker never takes any: 40 of the 50 events
    # never even reach the queue before the deadline: they failed; the 10 queued are in doubt.
    with unreachable_topic(producer_properties={"queue.buffering.max.messages": 10}) as topic:
        producer = topic.new_producer()
        try:
            with pytest.raises(ProduceTimeoutError) as info:
                producer.produce(*(Invalidate(seq=i) for i in range(50)), timeout=1)
            check_timeout_error(info.value, 50, never_sent=40)
            assert "never sent" in str(info.value)
        finally:
            producer.close(timeout=0.5)


def _unconnected_producer(key: Any) -> eventstream.Producer[Invalidate]:
    return unreachable_topic().new_producer(key=key)


def _boom(event: Invalidate) -> str:
    if event.seq == 3:
        raise LookupError("no key for 3")
    return str(event.seq)


@pytest.mark.parametrize(
    ("key", "words"),
    [
        (_boom, "the key function raised LookupError: no key for 3 for event 3"),
        (lambda e: "\udcff" if e.seq == 3 else "ok", "not encodable as UTF-8"),
        (lambda e: 3.5 if e.seq == 3 else "ok", "returned float"),
    ],
)
def test_a_bad_key_is_a_serialization_error_naming_the_event_and_nothing_is_sent(
    key: Any, words: str
) -> None:
    producer = _unconnected_producer(key)
    with pytest.raises(SerializationError) as info:
        producer.produce(*(Invalidate(seq=i) for i in range(5)))
    assert words in str(info.value), str(info.value)
    assert "event 3 of the call" in str(info.value) and "nothing was sent" in str(info.value)
    assert producer.status.state == "connecting"  # no client was even made
    producer.close()


def test_keys_land_where_the_java_client_puts_them_and_an_empty_key_is_a_key(
    make_topic, collector: Collector
) -> None:
    """murmur2 (Kafka's Java partitioner): the same key always lands on the same partition,
    including the empty key (librdkafka's default partitioner would scatter it)."""
    topic = make_topic(partitions=3)
    keys = [""] * 12 + ["k0"] * 4 + ["k1"] * 4
    with topic.new_producer(key=lambda e: e.key) as producer:
        deliveries = producer.produce(*(Invalidate(key=k, seq=i) for i, k in enumerate(keys)))
    by_key: dict[str, set[int]] = {}
    for delivery, key in zip(deliveries, keys, strict=True):
        by_key.setdefault(key, set()).add(delivery.partition)
    assert all(len(partitions) == 1 for partitions in by_key.values()), by_key
    # Kafka's murmur2 of b"k0" and b"k1" on 3 partitions (the Java client's placement).
    assert by_key["k0"] == {_java_partition(b"k0", 3)}
    assert by_key["k1"] == {_java_partition(b"k1", 3)}


def _java_partition(key: bytes, partitions: int) -> int:
    """org.apache.kafka.common.utils.Utils.murmur2, then toPositive(...) % partitions."""
    m, r = 0x5BD1E995, 24
    h = (0x9747B28C ^ len(key)) & 0xFFFFFFFF
    for i in range(0, len(key) - len(key) % 4, 4):
        k = int.from_bytes(key[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = key[len(key) - len(key) % 4 :]
    if len(tail) >= 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


@pytest.mark.parametrize("call", ["produce", "produce_async"])
def test_an_event_over_the_size_limit_fails_its_call_at_once_and_sends_nothing(
    make_topic, kafka_bootstrap: str, call: str
) -> None:
    topic = make_topic()
    small = Invalidate(key="small", seq=1)
    big = Invalidate(key="big", seq=2, padding=b"x" * 1_000_001)  # over message.max.bytes
    with topic.new_producer() as producer:
        with pytest.raises(ProduceError) as info:
            if call == "produce":
                producer.produce(small, big, small, timeout=60)
            else:
                asyncio.run(producer.produce_async(small, big, small, timeout=60))
        error = info.value
        assert (error.name, error.failed, error.in_doubt, error.total) == (
            "MSG_SIZE_TOO_LARGE",
            3,
            0,
            3,
        )
        assert "event 1 of the call" in str(error) and "message.max.bytes" in str(error)
        producer.produce(Invalidate(key="after", seq=3))  # the producer goes on
    records = raw_consume_all(kafka_bootstrap, topic.name)
    assert [Invalidate.FromString(r.value()).seq for r in records] == [3]


@pytest.mark.timeout(60)
def test_close_counts_exactly_the_events_of_the_calls_it_failed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="eventstream")
    with unreachable_topic() as topic:
        producer = topic.new_producer()
        errors: list[BaseException] = []

        def waiting_call() -> None:
            try:
                producer.produce(*(Invalidate(seq=i) for i in range(5)))
            except BaseException as exc:
                errors.append(exc)

        caller = threading.Thread(target=waiting_call)
        caller.start()
        # The call has handed its events over once the queue holds them.
        wait_until(lambda: producer.flush(0) == 5, "5 events queued")
        producer.close(timeout=0.5)
        caller.join(30)
    assert len(errors) == 1 and isinstance(errors[0], ProduceError), errors
    assert (errors[0].failed, errors[0].in_doubt) == (5, 0)  # never reached a broker
    lines = [r.getMessage() for r in caplog.records if "close()" in r.getMessage()]
    counted = [line for line in lines if "close() waited" in line]
    if counted:
        assert len(counted) == 1 and "5 events" in counted[0] and "5 failed" in counted[0], lines
    else:  # the owner had not finished within close's grace (a loaded machine): it says so
        assert len(lines) == 1 and "stopped waiting" in lines[0], lines
