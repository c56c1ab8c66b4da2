"""A short round trip: one writer publishes typed events, two instances each receive all of them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from eventstream.config import TopicConfig
from eventstream.demo.events import CacheInvalidated
from eventstream.metadata import EventMetadata
from eventstream.topic import new_topic


class _Seen:
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.keys: list[str] = []
        self.partitions: set[int] = set()
        self._done = threading.Condition()

    def handler(self, event: Any, meta: EventMetadata) -> None:  # event: CacheInvalidated
        with self._done:
            self.keys.append(event.key)
            self.partitions.add(meta.partition)
            if len(self.keys) >= self.expected:
                self._done.notify_all()

    def wait(self, timeout: float) -> bool:
        with self._done:
            return self._done.wait_for(lambda: len(self.keys) >= self.expected, timeout)


def _key(event: Any) -> str:
    return str(event.key)


def run(brokers: str, *, events: int, topic: str, out: Callable[[str], None] = print) -> int:
    """Produce ``events`` events and wait until two instances each saw all; exit status."""
    instances = ("node-a", "node-b")
    seen = {name: _Seen(events) for name in instances}
    topics = [
        new_topic(CacheInvalidated, TopicConfig(brokers=brokers, topic=topic, instance_id=name))
        for name in (*instances, "writer")
    ]
    try:
        for name, t in zip(instances, topics, strict=False):
            consumer = t.new_consumer(start_from_beginning=True)
            consumer.consume(seen[name].handler, with_metadata=True)
        producer = topics[-1].new_producer(key=_key)
        started = time.monotonic()
        batch = [
            CacheInvalidated(key=f"user:{i % 50}", version=i, written_at_us=time.time_ns() // 1000)
            for i in range(events)
        ]
        producer.produce(*batch)
        out(f"writer   published {events} events to {topic!r} (all acknowledged)")
        ok = True
        for name in instances:
            got = seen[name].wait(60)
            s = seen[name]
            out(
                f"{name:8} received {len(s.keys):5d} events from partitions "
                f"{sorted(s.partitions)}{'' if got else '  <-- MISSING EVENTS'}"
            )
            ok &= got
        out(f"round trip took {time.monotonic() - started:.2f} s; {'OK' if ok else 'FAILED'}")
        return 0 if ok else 1
    finally:
        for t in topics:
            t.close()
