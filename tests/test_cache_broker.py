"""The cache's broker-facing helpers against the real broker: the end-offsets probe and the
``wait_applied`` barrier over the consumer groups ``"{topic}::*"``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import confluent_kafka
import pytest
from cache_fakes import Background
from confluent_kafka.admin import AdminClient
from support import WAIT
from testevents_pb2 import Invalidate

from eventstream import BrokerError, Token, TopicConfig, WaitTimeoutError
from eventstream.cache import AdminProbe, AppliedBarrier


def _produce(bootstrap: str, topic: str, counts: dict[int, int]) -> None:
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap})
    for partition, count in counts.items():
        for n in range(count):
            producer.produce(topic, f"{n}".encode(), partition=partition)
    assert producer.flush(WAIT) == 0


def _delete(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics([topic])[topic].result(WAIT)  # pyright: ignore[reportUnknownMemberType]


def test_the_probe_answers_the_end_of_every_partition(
    kafka_bootstrap: str, make_topic: Callable[..., Any], make_config: Callable[..., TopicConfig]
) -> None:
    topic = make_topic(partitions=3)
    probe = AdminProbe(make_config(), timeout=WAIT)
    assert probe.end_offsets() == {0: 0, 1: 0, 2: 0}
    _produce(kafka_bootstrap, topic.name, {0: 5, 2: 2})
    assert probe.end_offsets() == {0: 5, 1: 0, 2: 2}


def test_the_probe_raises_once_the_topic_is_deleted(
    kafka_bootstrap: str, make_topic: Callable[..., Any], make_config: Callable[..., TopicConfig]
) -> None:
    topic = make_topic(partitions=2)
    probe = AdminProbe(make_config(), timeout=5.0)
    assert probe.end_offsets() == {0: 0, 1: 0}
    _delete(kafka_bootstrap, topic.name)
    with pytest.raises(BrokerError, match="UNKNOWN_TOPIC"):
        probe.end_offsets()


class Instance:
    """A plain confluent-kafka consumer in the group ``"{topic}::{name}"``, joined (it has its
    partitions) and committing what the test says it applied."""

    def __init__(self, bootstrap: str, topic: str, name: str) -> None:
        self.topic = topic
        self.consumer = confluent_kafka.Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"{topic}::{name}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        self.consumer.subscribe([topic])
        while not self.consumer.assignment():  # drives the join; no sleep
            self.consumer.poll(0.1)

    def commit(self, offsets: dict[int, int]) -> None:
        self.consumer.commit(
            offsets=[confluent_kafka.TopicPartition(self.topic, p, o) for p, o in offsets.items()],
            asynchronous=False,
        )

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def instances(kafka_bootstrap: str) -> Iterator[Callable[[str, str], Instance]]:
    made: list[Instance] = []

    def make(topic: str, name: str) -> Instance:
        made.append(Instance(kafka_bootstrap, topic, name))
        return made[-1]

    yield make
    for instance in made:
        instance.close()


def _written(topic: Any) -> Token:
    """Events written to both partitions of ``topic``: the token of that call."""
    producer = topic.new_producer(key=lambda event: event.key)
    deliveries = producer.produce(*(Invalidate(key=f"user:{n}", seq=n) for n in range(20)))
    token: Token = deliveries.token
    assert set(token) == {0, 1}
    return token


def test_wait_applied_returns_once_every_live_instance_committed_past_the_token(
    make_topic: Callable[..., Any],
    make_config: Callable[..., TopicConfig],
    instances: Callable[[str, str], Instance],
) -> None:
    topic = make_topic(partitions=2)
    token = _written(topic)
    a, b = instances(topic.name, "a"), instances(topic.name, "b")
    barrier = AppliedBarrier(make_config())
    a.commit(dict(token))
    b.commit({p: o - 1 for p, o in token.items()})  # one event short on each partition
    with pytest.raises(WaitTimeoutError, match=r"instance 'b' \(group '[^']+::b'\)") as caught:
        barrier.wait(token, timeout=1.0)
    assert "'a'" not in str(caught.value)
    waiting = Background(lambda: barrier.wait(token, timeout=WAIT), "barrier")
    b.commit(dict(token))
    waiting.outcome()  # returns: both applied it


def test_wait_applied_ignores_groups_without_live_members(
    make_topic: Callable[..., Any],
    make_config: Callable[..., TopicConfig],
    instances: Callable[[str, str], Instance],
) -> None:
    topic = make_topic(partitions=2)
    token = _written(topic)
    gone = instances(topic.name, "gone")
    gone.commit(dict.fromkeys(token, 0))  # it applied nothing, then it stopped
    gone.close()
    live = instances(topic.name, "live")
    barrier = AppliedBarrier(make_config())
    with pytest.raises(WaitTimeoutError, match="instance 'live'") as caught:
        barrier.wait(token, timeout=1.0)
    assert "gone" not in str(caught.value)
    live.commit(dict(token))
    barrier.wait(token, timeout=WAIT)


def test_wait_applied_with_an_empty_token_returns_at_once(
    make_config: Callable[..., TopicConfig],
) -> None:
    AppliedBarrier(make_config()).wait(Token(), timeout=0.0)
