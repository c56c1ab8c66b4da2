"""A failing handler or a record the consumer cannot use is logged and skipped; it never stalls
its partition, and its offset is committed like any other."""

from __future__ import annotations

import logging

import pytest
from support import Collector, raw_produce
from testevents_pb2 import Invalidate, Unrelated

pytestmark = pytest.mark.timeout(60)


def records_about(caplog: pytest.LogCaptureFixture, topic: str, partition: int, offset: int):
    where = f"{topic}[{partition}]@{offset}"
    return [r for r in caplog.records if where in r.getMessage() and r.levelno >= logging.WARNING]


def test_handler_exception_is_logged_with_coordinates(
    make_topic, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    topic = make_topic()
    with topic.new_producer() as producer:
        producer.produce(*(Invalidate(key="k", seq=i) for i in range(6)))

    def handler(event: Invalidate) -> None:
        collector(event)
        if event.seq in (1, 3):
            raise RuntimeError(f"boom {event.seq}")

    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(handler)
    collector.wait_for_seq(5)
    assert collector.seqs == [0, 1, 2, 3, 4, 5]

    for offset in (1, 3):
        [record] = records_about(caplog, topic.name, 0, offset)
        assert record.levelno == logging.ERROR
        assert record.exc_info is not None
        assert isinstance(record.exc_info[1], RuntimeError)
        assert str(record.exc_info[1]) == f"boom {offset}"
    assert not records_about(caplog, topic.name, 0, 0)
    assert not records_about(caplog, topic.name, 0, 2)

    consumer.close()  # a failed handler is not a failure of the consumer
    later = Collector()
    again = topic.new_consumer(start_from_beginning=True)
    again.consume(later)
    with topic.new_producer() as producer:
        producer.produce(Invalidate(key="k", seq=6))
    later.wait_for_seq(6)
    assert later.seqs == [6], "the offsets of failed events were not committed"


GARBAGE = [
    b"\xff\xff\xff\xff",  # a truncated varint
    b"\x0a\xff",  # a length beyond the end
    b"\x0a\x02\xff\xfe",  # a string field that is not UTF-8
]


def test_undecodable_payloads_are_skipped(
    make_topic, kafka_bootstrap: str, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    topic = make_topic(instance_id="svc-poison")
    raw_produce(kafka_bootstrap, topic.name, [(value, None, None) for value in GARBAGE])
    with topic.new_producer() as producer:
        producer.produce(Invalidate(key="good", seq=1))

    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(collector, with_metadata=True)
    [good] = collector.wait_for_seq(1)
    assert good.metadata.offset == len(GARBAGE)
    for offset in range(len(GARBAGE)):
        assert records_about(caplog, topic.name, 0, offset), f"no log record for offset {offset}"

    # The skipped records' offsets are committed: a restarted instance does not meet them again.
    consumer.close()
    with topic.new_producer() as producer:
        producer.produce(Invalidate(key="good", seq=2))
    later = Collector()
    topic.new_consumer(start_from_beginning=True).consume(later)
    later.wait_for_seq(2)
    assert later.seqs == [2]


def test_events_of_another_type_are_skipped(
    make_topic, kafka_bootstrap: str, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    topic = make_topic()
    unrelated = make_topic(Unrelated, create=False, instance_id="svc-other")
    decodable = Invalidate(key="looks fine", seq=99).SerializeToString()
    # offset 0: produced by eventstream as another type (its bytes also decode as Invalidate)
    with unrelated.new_producer() as producer:
        producer.produce(Unrelated(note="not an invalidation"))
    # offsets 1-2: bytes that decode, but whose headers say they are something else
    raw_produce(
        kafka_bootstrap,
        topic.name,
        [
            (decodable, None, [("ce_type", b"eventstream.tests.Unrelated")]),
            (decodable, None, [("content-type", b"application/json")]),
        ],
    )
    with topic.new_producer() as producer:
        producer.produce(Invalidate(key="good", seq=1))  # offset 3

    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(collector, with_metadata=True)
    collector.wait_for_seq(1)
    assert collector.seqs == [1]
    assert collector.received[0].metadata.offset == 3
    for offset in range(3):
        assert records_about(caplog, topic.name, 0, offset), f"no log record for offset {offset}"


def test_events_without_headers_are_accepted(
    make_topic, kafka_bootstrap: str, collector: Collector
) -> None:
    topic = make_topic()
    raw_produce(
        kafka_bootstrap,
        topic.name,
        [
            (Invalidate(key="bare", seq=1).SerializeToString(), b"kb", None),
            (
                Invalidate(key="alias", seq=2).SerializeToString(),
                None,
                [("content-type", b"application/x-protobuf")],
            ),
            (b"", None, None),  # the empty message is a valid Invalidate: all defaults
        ],
    )
    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(collector, with_metadata=True)
    received = collector.wait_for_count(3)
    assert [r.event for r in received] == [
        Invalidate(key="bare", seq=1),
        Invalidate(key="alias", seq=2),
        Invalidate(),
    ]
    first = received[0].metadata
    assert (first.key, first.source, first.event_id, first.offset) == (b"kb", None, None, 0)


def test_a_tombstone_is_skipped_never_handed_over_as_an_empty_event(
    make_topic, kafka_bootstrap: str, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="eventstream")
    topic = make_topic()
    raw_produce(
        kafka_bootstrap,
        topic.name,
        [(None, b"gone", [("ce_type", topic.type_name.encode())])],  # offset 0: no value
    )
    with topic.new_producer() as producer:
        producer.produce(Invalidate(key="good", seq=1))  # offset 1
    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(collector, with_metadata=True)
    collector.wait_for_seq(1)
    assert collector.seqs == [1]
    assert collector.received[0].metadata.offset == 1
    about = records_about(caplog, topic.name, 0, 0)
    assert about and any("without a value" in r.getMessage() for r in about), about
