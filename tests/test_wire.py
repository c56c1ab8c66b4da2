"""The bytes on the wire: CloudEvents binary-mode headers and the protobuf value, read back with a
plain confluent-kafka consumer (the contract other languages' consumers rely on)."""

from __future__ import annotations

import pytest
from support import raw_consume
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
        assert len(names) == len(set(names)), f"duplicate headers: {names}"
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
