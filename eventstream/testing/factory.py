"""The type of the ``eventstream_topic`` fixture, importable without pytest."""

from __future__ import annotations

from typing import Protocol, TypeVar

from google.protobuf.message import Message

from eventstream.topic import Topic

__all__ = ["TopicFactory"]

E = TypeVar("E", bound=Message)


class TopicFactory(Protocol):
    """What the ``eventstream_topic`` fixture is: annotate the fixture argument with it.

    ``eventstream_topic(EventClass, partitions=1, instance_id="test")`` returns a
    ``Topic[EventClass]`` on a new, uniquely named topic that exists. Every topic it made is
    closed after the test; on a real cluster the topic and its consumer group are then deleted.
    """

    def __call__(
        self, event_type: type[E], *, partitions: int = 1, instance_id: str = "test"
    ) -> Topic[E]: ...
