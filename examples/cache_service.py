"""Cache invalidation across the instances of a service, with eventstream.

Two instances (``node-a``, ``node-b``) each keep a local read-through cache of a shared source of
truth. A writer updates the source and publishes ``UserChanged``; every instance consumes in its own
group, so every instance drops the stale entry. At the end each cache is checked against the source.

    python examples/cache_service.py                    # on an embedded cluster
    python examples/cache_service.py --brokers HOST:PORT
"""

from __future__ import annotations

import argparse
import sys
import threading
import uuid

from events_pb2 import UserChanged

from eventstream import EventMetadata, Topic, TopicConfig, new_topic
from eventstream.testing import EmbeddedCluster


class SourceOfTruth:
    """Stands in for the database: user id -> version. Thread-safe."""

    def __init__(self) -> None:
        self._rows: dict[str, int] = {}
        self._lock = threading.Lock()

    def write(self, user_id: str) -> int:
        with self._lock:
            self._rows[user_id] = self._rows.get(user_id, 0) + 1
            return self._rows[user_id]

    def read(self, user_id: str) -> int:
        with self._lock:
            return self._rows.get(user_id, 0)

    def users(self) -> list[str]:
        with self._lock:
            return sorted(self._rows)


class ServiceInstance:
    """One node of the service: a local cache kept fresh by invalidation events."""

    def __init__(self, topic: Topic[UserChanged], source: SourceOfTruth) -> None:
        self.name = topic.config.instance_id
        self._source = source
        self._cache: dict[str, int] = {}
        self._lock = threading.Lock()
        self.invalidations = 0
        self._highest: dict[str, int] = {}
        self._caught_up = threading.Condition(self._lock)
        self._consumer = topic.new_consumer(start_from_beginning=True)

    def start(self) -> None:
        self._consumer.consume(self._on_change, with_metadata=True)

    def _on_change(self, event: UserChanged, meta: EventMetadata) -> None:
        with self._lock:
            self._cache.pop(event.user_id, None)
            self.invalidations += 1
            self._highest[event.user_id] = max(self._highest.get(event.user_id, 0), event.version)
            self._caught_up.notify_all()

    def get(self, user_id: str) -> int:
        with self._lock:
            if user_id not in self._cache:
                self._cache[user_id] = self._source.read(user_id)
            return self._cache[user_id]

    def wait_for(self, versions: dict[str, int], timeout: float) -> bool:
        """Wait until this instance has seen the invalidation of every given version."""
        with self._lock:
            return self._caught_up.wait_for(
                lambda: all(self._highest.get(u, 0) >= v for u, v in versions.items()), timeout
            )


def run(brokers: str, *, writes: int = 300) -> int:
    source = SourceOfTruth()
    topic_name = f"example-users-{uuid.uuid4().hex[:8]}"

    def topic_for(instance: str) -> Topic[UserChanged]:
        return new_topic(
            UserChanged, TopicConfig(brokers=brokers, topic=topic_name, instance_id=instance)
        )

    topics = [topic_for("node-a"), topic_for("node-b"), topic_for("writer")]
    try:
        topics[2].ensure_exists(partitions=3)  # eventstream never creates topics implicitly
        nodes = [ServiceInstance(t, source) for t in topics[:2]]
        for node in nodes:
            node.start()
        producer = topics[2].new_producer(key=lambda event: event.user_id)
        users = [f"user-{i}" for i in range(20)]
        for node in nodes:  # warm the caches with version 0 of every user
            for user in users:
                node.get(user)
        written: dict[str, int] = {}
        for i in range(writes):
            user = users[i % len(users)]
            written[user] = source.write(user)
            producer.produce(UserChanged(user_id=user, version=written[user]))
        converged = True
        for node in nodes:
            caught_up = node.wait_for(written, timeout=60)
            stale = [u for u in users if node.get(u) != source.read(u)]
            print(f"{node.name}: {node.invalidations} invalidations, {len(stale)} stale entries")
            converged &= caught_up and not stale
        print("converged" if converged else "NOT converged")
        return 0 if converged else 1
    finally:
        for topic in topics:
            topic.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--brokers", help="bootstrap servers; default: an embedded cluster")
    parser.add_argument("--writes", type=int, default=300)
    args = parser.parse_args()
    if args.brokers:
        return run(args.brokers, writes=args.writes)
    with EmbeddedCluster() as cluster:
        return run(cluster.bootstrap_servers, writes=args.writes)


if __name__ == "__main__":
    sys.exit(main())
