"""Cache invalidation across the instances of a service, with eventstream.

Two instances (``node-a``, ``node-b``) each keep the library's coherent read-through cache of a
shared source of truth (``topic.new_cache``). A writer updates the source, then publishes
``UserChanged``; every instance's cache consumes in its own group, so every instance drops the
stale entry. The writer reads its own write back through a cache (``get(after=token)``), and at
the end each cache is checked against the source.

    python examples/cache_service.py                    # on an embedded cluster
    python examples/cache_service.py --brokers HOST:PORT
"""

from __future__ import annotations

import argparse
import sys
import threading
import uuid

from events_pb2 import UserChanged

from eventstream import Cache, Topic, TopicConfig, new_topic
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
    """One node of the service: a cache of the source that the topic's events keep coherent."""

    def __init__(self, topic: Topic[UserChanged], source: SourceOfTruth) -> None:
        self.name = topic.config.instance_id
        self._lock = threading.Lock()
        self._highest: dict[str, int] = {}
        self._caught_up = threading.Condition(self._lock)
        self.cache: Cache[str, int] = topic.new_cache(
            source.read,  # the loader: key -> value from the source of truth
            keys=lambda event: event.user_id,  # what an event invalidates
            on_event=self._on_change,  # runs after each event's invalidation
            max_staleness=1.0,
        )

    def _on_change(self, event: UserChanged) -> None:
        with self._lock:
            self._highest[event.user_id] = max(self._highest.get(event.user_id, 0), event.version)
            self._caught_up.notify_all()

    def get(self, user_id: str) -> int:
        return self.cache.get(user_id)

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
            node.cache.wait_ready(timeout=60)  # serving hits: about a second after it starts
        producer = topics[2].new_producer(key=lambda event: event.user_id)
        users = [f"user-{i}" for i in range(20)]
        for node in nodes:  # warm the caches with version 0 of every user
            for user in users:
                node.get(user)
        written: dict[str, int] = {}
        token = None
        for i in range(writes):
            user = users[i % len(users)]
            written[user] = source.write(user)  # commit to the source first, then publish
            token = producer.produce(UserChanged(user_id=user, version=written[user])).token
        converged = True
        if token is not None:  # read-your-writes: this instance has applied the last write
            last = users[(writes - 1) % len(users)]
            converged &= nodes[0].cache.get(last, after=token, timeout=60) == written[last]
        for node in nodes:
            caught_up = node.wait_for(written, timeout=60)
            stale = [u for u in users if node.get(u) != source.read(u)]
            invalidations = node.cache.metrics().invalidations
            print(f"{node.name}: {invalidations} invalidations, {len(stale)} stale entries")
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
