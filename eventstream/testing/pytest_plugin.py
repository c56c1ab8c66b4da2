"""pytest fixtures for code that uses eventstream (loaded automatically once eventstream is
installed, through the ``pytest11`` entry point).

- ``eventstream_brokers`` (session): bootstrap servers: the cluster named by
  ``--eventstream-brokers`` / ``EVENTSTREAM_BROKERS``, or an :class:`EmbeddedCluster` started for
  the session (fast, but not Apache Kafka: see its limits).
- ``eventstream_topic``: a factory ``eventstream_topic(EventClass, partitions=1,
  instance_id="test")`` returning a ``Topic[EventClass]`` on a new, uniquely named topic that
  exists; every topic it made is closed after the test.
- ``eventstream_recorder``: a new :class:`EventRecorder`, a handler a test can wait on.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Protocol, TypeVar

import pytest
from google.protobuf.message import Message

from eventstream.config import TopicConfig
from eventstream.testing.embedded import EmbeddedCluster
from eventstream.testing.recorder import EventRecorder
from eventstream.topic import Topic, new_topic

__all__ = ["TopicFactory"]

E = TypeVar("E", bound=Message)


class TopicFactory(Protocol):
    def __call__(
        self, event_type: type[E], *, partitions: int = 1, instance_id: str = "test"
    ) -> Topic[E]: ...


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--eventstream-brokers",
        default=os.environ.get("EVENTSTREAM_BROKERS"),
        help="bootstrap servers for eventstream fixtures (default: an embedded cluster)",
    )


@pytest.fixture(scope="session")
def eventstream_brokers(request: pytest.FixtureRequest) -> Iterator[str]:
    brokers: str | None = request.config.getoption("--eventstream-brokers")
    if brokers:
        yield brokers
        return
    with EmbeddedCluster() as cluster:
        yield cluster.bootstrap_servers


@pytest.fixture
def eventstream_topic(eventstream_brokers: str) -> Iterator[TopicFactory]:
    made: list[Topic[Message]] = []

    def make(event_type: type[E], *, partitions: int = 1, instance_id: str = "test") -> Topic[E]:
        config = TopicConfig(
            brokers=eventstream_brokers,
            topic=f"test-{uuid.uuid4().hex[:12]}",
            instance_id=instance_id,
        )
        topic = new_topic(event_type, config)
        made.append(topic)  # type: ignore[arg-type]
        topic.ensure_exists(partitions=partitions)
        return topic

    yield make
    for topic in made:
        topic.close()


@pytest.fixture
def eventstream_recorder() -> EventRecorder[Message]:
    return EventRecorder()
