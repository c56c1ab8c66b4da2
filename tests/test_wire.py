"""The bytes on the wire: CloudEvents binary-mode headers and the protobuf value, read back with a
plain confluent-kafka consumer (the contract other languages' consumers rely on)."""

from __future__ import annotations

import pytest
from support import EVENT_HEADERS, raw_consume
from testevents_pb2 import Invalidate

pytestmark = pytest.mark.timeout(60)


def test_headers_and_value(make_topic, kafka_bootstrap: str) -> None:
    topic = make_topic(instance_id="svc-wire")
    keyed = [Invalidate(key=f"k{i}", seq=i, padding=b"\x00\xff" * i) for i in range(4)]
    unkeyed = [Invalidate(key="free", seq=10), Invalidate(seq=11)]  # the second one is b"" + seq
    again = [Invalidate(key="k0", seq=20)]
    with topic.new_producer(key=lambda e: e.key) as producer:
        producer.produce(*keyed)
    with topic.new_producer() as producer:
        producer.produce(*unkeyed)
    with topic.new_producer(key=lambda e: e.key.encode()) as producer:
        producer.produce(*again)
    sent = keyed + unkeyed + again

    records = raw_consume(kafka_bootstrap, topic.name, len(sent))

    ids = []
    for record, event in zip(records, sent, strict=True):
        headers = record.headers()
        assert headers is not None
        names = [name for name, _ in headers]
        assert names == list(EVENT_HEADERS), names  # the same order from both backends
        values = dict(headers)
        assert values["content-type"] == b"application/protobuf"
        assert values["ce_specversion"] == b"1.0"
        assert values["ce_source"] == b"svc-wire"
        assert values["ce_type"] == b"eventstream.tests.Invalidate"
        assert values["ce_id"]
        ids.append(values["ce_id"])
        assert record.value() == event.SerializeToString()
        assert Invalidate.FromString(record.value()) == event
    # ids are unique per source, across producers of that source too
    assert len(set(ids)) == len(sent)
    assert [r.key() for r in records] == [b"k0", b"k1", b"k2", b"k3", None, None, b"k0"]


def test_ce_time_is_the_calls_time_in_rfc3339(make_topic, kafka_bootstrap: str) -> None:
    from datetime import UTC, datetime, timedelta

    topic = make_topic(instance_id="svc-time")
    before = datetime.now(UTC)
    with topic.new_producer() as producer:
        producer.produce(Invalidate(seq=1), Invalidate(seq=2))
    after = datetime.now(UTC)
    records = raw_consume(kafka_bootstrap, topic.name, 2)
    stamps = {dict(r.headers() or [])["ce_time"] for r in records}
    assert len(stamps) == 1, stamps  # one time for the whole call
    [stamp] = stamps
    assert stamp.endswith(b"Z") and len(stamp) == len(b"2026-12-01T09:30:00.123Z"), stamp
    when = datetime.fromisoformat(stamp.decode().replace("Z", "+00:00"))
    assert before - timedelta(milliseconds=1) <= when <= after


def test_every_call_of_a_producer_writes_whole_headers(make_topic, kafka_bootstrap: str) -> None:
    """A producer's later calls write the same six headers, with their own ce_id and ce_time
    (the compiled backend reuses each message's spent header list for a later call's message)."""
    from datetime import UTC, datetime, timedelta

    topic = make_topic(instance_id="svc-again")
    sizes = [3, 5, 2, 6, 4]  # grows, shrinks and grows again: some slots have no spent list
    calls = []
    seq = 0
    with topic.new_producer() as producer:
        for size in sizes:
            events = [Invalidate(seq=seq + i) for i in range(size)]
            seq += size
            before = datetime.now(UTC)
            deliveries = producer.produce(*events)
            calls.append((events, deliveries, before, datetime.now(UTC)))
    records = raw_consume(kafka_bootstrap, topic.name, seq)
    by_seq = {Invalidate.FromString(r.value() or b"").seq: r for r in records}
    ids = set()
    for events, deliveries, before, after in calls:
        stamps = set()
        for event, delivery in zip(events, deliveries, strict=True):
            headers = by_seq[event.seq].headers() or []
            names = [name for name, _ in headers]
            assert names == list(EVENT_HEADERS), names
            values = dict(headers)
            assert values["content-type"] == b"application/protobuf"
            assert values["ce_specversion"] == b"1.0"
            assert values["ce_source"] == b"svc-again"
            assert values["ce_type"] == b"eventstream.tests.Invalidate"
            assert values["ce_id"] == delivery.event_id.encode()
            ids.add(values["ce_id"])
            stamps.add(values["ce_time"])
        assert len(stamps) == 1, stamps  # the call's own time, for each of its events
        when = datetime.fromisoformat(stamps.pop().decode().replace("Z", "+00:00"))
        assert before - timedelta(milliseconds=1) <= when <= after
    assert len(ids) == seq


def test_produce_returns_where_each_event_went(make_topic, kafka_bootstrap: str) -> None:
    topic = make_topic(partitions=3, instance_id="svc-where")
    events = [Invalidate(key=f"k{i}", seq=i) for i in range(30)]
    with topic.new_producer(key=lambda e: e.key) as producer:
        deliveries = producer.produce(*events)
        empty = producer.produce()
    assert len(deliveries) == 30 and len(empty) == 0
    records = raw_consume(kafka_bootstrap, topic.name, 30, partitions=3)
    by_place = {(r.partition(), r.offset()): r for r in records}
    for delivery, event in zip(deliveries, events, strict=True):
        record = by_place[(delivery.partition, delivery.offset)]
        assert Invalidate.FromString(record.value() or b"") == event
        assert dict(record.headers() or [])["ce_id"] == delivery.event_id.encode()
    assert deliveries[-1] == list(deliveries)[-1] and deliveries[:2] == list(deliveries)[:2]


MEDIA_TYPES = [
    (b"application/protobuf", True),
    (b"Application/Protobuf", True),
    (b"application/protobuf; proto=eventstream.tests.Invalidate", True),
    (b" application/x-protobuf ", True),
    (b"APPLICATION/X-PROTOBUF;charset=binary", True),
    (b"application/json", False),
    (b"application/protobufx", False),
    (b"text/plain; application/protobuf", False),
]


def test_media_types_compare_as_media_types(make_topic, kafka_bootstrap: str, collector) -> None:
    from support import raw_produce

    topic = make_topic(instance_id="svc-media")
    raw_produce(
        kafka_bootstrap,
        topic.name,
        [
            (Invalidate(seq=i).SerializeToString(), None, [("content-type", media)])
            for i, (media, _) in enumerate(MEDIA_TYPES)
        ]
        + [(Invalidate(seq=99).SerializeToString(), None, None)],
    )
    topic.new_consumer(start_from_beginning=True).consume(collector)
    collector.wait_for_seq(99)
    accepted = [i for i, (_, ok) in enumerate(MEDIA_TYPES) if ok]
    assert collector.seqs == [*accepted, 99]


def test_a_repeated_header_counts_by_its_last_occurrence(
    make_topic, kafka_bootstrap: str, collector
) -> None:
    """The same rule as Kafka's Headers.lastHeader and librdkafka's header_get_last, on both
    backends; also: the original Go producer's source-instance header is the source."""
    from support import raw_produce

    ours, other = b"eventstream.tests.Invalidate", b"other.Type"
    topic = make_topic(instance_id="svc-repeat")
    raw_produce(
        kafka_bootstrap,
        topic.name,
        [
            (Invalidate(seq=1).SerializeToString(), None, [("ce_type", other), ("ce_type", ours)]),
            (Invalidate(seq=2).SerializeToString(), None, [("ce_type", ours), ("ce_type", other)]),
            (
                Invalidate(seq=3).SerializeToString(),
                None,
                [("ce_source", b"first"), ("ce_source", b"last")],
            ),
            (
                Invalidate(seq=4).SerializeToString(),
                None,
                [("content-type", b"application/x-protobuf"), ("source-instance", b"go-7")],
            ),
            (
                Invalidate(seq=5).SerializeToString(),
                None,
                [("source-instance", b"go-7"), ("ce_source", b"svc-new")],
            ),
        ],
    )
    topic.new_consumer(start_from_beginning=True).consume(collector, with_metadata=True)
    received = collector.wait_for_seq(5)
    assert [r.event.seq for r in received] == [1, 3, 4, 5]
    sources = {r.event.seq: r.metadata.source for r in received}
    assert sources == {1: None, 3: "last", 4: "go-7", 5: "svc-new"}
