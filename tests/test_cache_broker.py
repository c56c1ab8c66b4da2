"""The cache's broker-facing helpers against the real broker: the end-offsets probe, the
``wait_applied`` barrier over the consumer groups ``"{topic}::*"``, and two caches kept
coherent end to end over a plain confluent-kafka feed."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import confluent_kafka
import pytest
from cache_fakes import Background, Source
from confluent_kafka.admin import AdminClient
from support import WAIT
from testevents_pb2 import Invalidate

from eventstream import BrokerError, PartitionChange, Token, TopicConfig, WaitTimeoutError
from eventstream.cache import AdminProbe, AppliedBarrier, Cache, FeedSink


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


def _not_applied(barrier: AppliedBarrier, token: Token) -> str:
    """The WaitTimeoutError of a wait that cannot succeed, once the barrier got as far as
    naming the instances behind. A short wait is enough for that on an idle machine; under load
    one second may not be, and then the error names nobody ("could not be confirmed"): wait
    again, twice as long each time, so the failing case is checked without a tight deadline."""
    text = ""
    for timeout in (1.0, 2.0, 4.0, 8.0, 16.0):
        with pytest.raises(WaitTimeoutError) as caught:
            barrier.wait(token, timeout=timeout)
        text = str(caught.value)
        if "not applied by every live instance" in text:
            break
    return text


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
    text = _not_applied(barrier, token)
    assert re.search(r"instance 'b' \(group '[^']+::b'\)", text), text
    assert "'a'" not in text
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
    text = _not_applied(barrier, token)
    assert "instance 'live'" in text, text
    # Not named as an instance behind (a failed request about its group may still be quoted).
    assert "instance 'gone'" not in text, text
    live.commit(dict(token))
    barrier.wait(token, timeout=WAIT)


def test_wait_applied_with_an_empty_token_returns_at_once(
    make_config: Callable[..., TopicConfig],
) -> None:
    AppliedBarrier(make_config()).wait(Token(), timeout=0.0)


class RawFeed:
    """A :class:`~eventstream.cache.Feed` over a plain confluent-kafka consumer in the group
    ``"{topic}::{instance}"``: what ``Topic.new_cache`` does over eventstream's consumer, in
    a few lines, to run the cache end to end on the broker. Offsets are stored after each
    event is applied and committed asynchronously after each batch."""

    def __init__(self, bootstrap: str, topic: str, instance: str) -> None:
        self._topic = topic
        self._consumer = confluent_kafka.Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"{topic}::{instance}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "latest",
                "fetch.wait.max.ms": 50,
            }
        )
        self._lock = threading.Lock()
        self._positions: dict[int, int] = {}
        self._skips: list[Callable[[], None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"raw-feed-{instance}", daemon=True)
        self._sink: FeedSink | None = None

    def start(self, sink: FeedSink) -> None:
        self._sink = sink
        self._consumer.subscribe(
            [self._topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
        )
        self._thread.start()

    def positions(self) -> Mapping[int, int]:
        with self._lock:
            return dict(self._positions)

    def skip_to_end(self, done: Callable[[], None]) -> None:
        with self._lock:
            self._skips.append(done)

    def close(self, timeout: float) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self._consumer.close()

    def _end(self, partition: int) -> int:
        tp = confluent_kafka.TopicPartition(self._topic, partition)
        return int(self._consumer.get_watermark_offsets(tp, timeout=WAIT, cached=False)[1])

    def _assigned(self, consumer: Any, partitions: list[Any]) -> None:
        committed = consumer.committed(partitions, timeout=WAIT)
        starts = {
            tp.partition: tp.offset if tp.offset >= 0 else self._end(tp.partition)
            for tp in committed
        }
        consumer.assign(
            [confluent_kafka.TopicPartition(self._topic, p, o) for p, o in starts.items()]
        )
        with self._lock:
            self._positions.update(starts)
        assert self._sink is not None
        self._sink.partitions_changed(PartitionChange("assigned", self._topic, tuple(starts)))

    def _revoked(self, consumer: Any, partitions: list[Any]) -> None:
        self._taken("revoked", partitions)

    def _lost(self, consumer: Any, partitions: list[Any]) -> None:
        self._taken("lost", partitions)

    def _taken(self, kind: Any, partitions: list[Any]) -> None:
        with self._lock:
            for tp in partitions:
                self._positions.pop(tp.partition, None)
        assert self._sink is not None
        self._sink.partitions_changed(
            PartitionChange(kind, self._topic, tuple(tp.partition for tp in partitions))
        )

    def _run(self) -> None:
        assert self._sink is not None
        while not self._stop.is_set():
            with self._lock:
                skips, self._skips = self._skips, []
            if skips:
                for tp in self._consumer.assignment():
                    end = self._end(tp.partition)
                    moved = confluent_kafka.TopicPartition(self._topic, tp.partition, end)
                    self._consumer.seek(moved)
                    self._consumer.store_offsets(offsets=[moved])
                    with self._lock:
                        self._positions[tp.partition] = end
                for done in skips:
                    done()
            batch = self._consumer.consume(100, 0.05)
            for message in batch:
                if message.error() is not None:
                    continue
                partition, offset = message.partition(), message.offset()
                self._sink.apply(Invalidate.FromString(message.value()), partition, offset)
                self._consumer.store_offsets(message)
                with self._lock:
                    self._positions[partition] = offset + 1
            if batch:
                with contextlib.suppress(confluent_kafka.KafkaException):  # nothing stored yet
                    self._consumer.commit(asynchronous=True)


def test_two_instances_stay_coherent_with_a_writer_end_to_end(
    kafka_bootstrap: str, make_topic: Callable[..., Any], make_config: Callable[..., TopicConfig]
) -> None:
    topic = make_topic(partitions=2)
    source = Source()
    caches: list[Cache[str, int]] = []
    try:
        for name in ("a", "b"):
            feed = RawFeed(kafka_bootstrap, topic.name, name)
            probe = AdminProbe(make_config(instance_id=name))
            caches.append(
                Cache(feed, probe, source.load, keys=lambda e: e.key, max_staleness=2.0, name=name)
            )
        for cache in caches:
            cache.wait_ready(timeout=WAIT)
            assert cache.get("user:1") == 0  # stored
            assert cache.get("user:1") == 0  # a hit
        producer = topic.new_producer(key=lambda event: event.key)
        source.write("user:1")  # the writer commits, then publishes
        deliveries = producer.produce(Invalidate(key="user:1", seq=1))
        assert caches[0].get("user:1", after=deliveries.token, timeout=WAIT) == 1
        AppliedBarrier(make_config()).wait(deliveries.token, timeout=WAIT)
        for cache in caches:
            assert cache.get("user:1") == 1  # every live instance applied it: no stale hit
            assert cache.metrics().invalidations == 1
        assert len(source.loads) == 4  # one per instance before the write, one per instance after
    finally:
        for cache in caches:
            cache.close(timeout=WAIT)
