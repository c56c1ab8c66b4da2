"""Testing your own code with eventstream's pytest plugin: the README's example, typed.

mypy --strict and pyright check this file (pyproject.toml), and tests/test_pytest_plugin.py runs
it with pytest, on the embedded cluster and on a real broker:

    pytest examples/test_with_the_pytest_plugin.py                      # embedded cluster
    pytest examples/test_with_the_pytest_plugin.py --eventstream-brokers HOST:PORT
"""

from __future__ import annotations

from events_pb2 import UserChanged

from eventstream import EventMetadata
from eventstream.testing import EventRecorder, TopicFactory


def test_cache_is_invalidated(
    eventstream_topic: TopicFactory, eventstream_recorder: EventRecorder[UserChanged]
) -> None:
    topic = eventstream_topic(UserChanged, partitions=2, instance_id="api-1")  # Topic[UserChanged]
    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(eventstream_recorder)
    topic.new_producer().produce(UserChanged(user_id="42", version=1))
    [event] = eventstream_recorder.wait_for(1)  # waits (up to 30 s), no sleep
    assert event.user_id == "42"


def test_with_metadata(
    eventstream_topic: TopicFactory, eventstream_recorder: EventRecorder[UserChanged]
) -> None:
    topic = eventstream_topic(UserChanged, instance_id="api-2")
    consumer = topic.new_consumer()  # starts at the end: wait until it has its partitions
    consumer.consume(eventstream_recorder, with_metadata=True)
    consumer.wait_until_assigned()
    topic.new_producer(key=lambda e: e.user_id).produce(UserChanged(user_id="7", version=2))
    [event] = eventstream_recorder.wait_for(1)
    [meta] = eventstream_recorder.metadata
    assert isinstance(meta, EventMetadata)
    assert (event.version, meta.key, meta.topic) == (2, b"7", topic.name)
