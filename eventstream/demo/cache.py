"""``eventstream demo``: cache invalidation across the instances of a service.

A writer updates a source of truth and publishes a ``CacheInvalidated`` event per change, at a
chosen rate. Several service instances each keep the library's coherent read-through cache
(``Topic.new_cache``), which consumes in the instance's own group (``"{topic}::{instance_id}"``),
so each of them drops every stale entry. Live progress
shows the event rate, end-to-end latency (from ``produce`` in the writer to the handler in an
instance) and invalidations per instance; the summary checks that every instance's cache agrees
with the source of truth, and that a read after the last write's token returns that write.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from eventstream.cache import Cache
from eventstream.config import TopicConfig
from eventstream.demo.events import CacheInvalidated
from eventstream.topic import Topic, new_topic

__all__ = ["DemoSettings", "run"]


@dataclass(frozen=True)
class DemoSettings:
    brokers: str
    topic: str
    instances: int = 3
    rate: int = 2000  # events per second the writer publishes
    duration: float = 10.0  # seconds of writing
    keys: int = 500  # distinct cache keys
    partitions: int = 4
    batch_interval: float = 0.01  # the writer publishes one batch this often
    consumer_properties: Mapping[str, str] = field(default_factory=dict[str, str])


class SourceOfTruth:
    """Stands in for the database: key -> version. Thread-safe."""

    def __init__(self) -> None:
        self._rows: dict[str, int] = {}
        self._lock = threading.Lock()

    def write(self, key: str) -> int:
        with self._lock:
            version = self._rows.get(key, 0) + 1
            self._rows[key] = version
            return version

    def read(self, key: str) -> int:
        with self._lock:
            return self._rows.get(key, 0)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._rows)


class Latencies:
    """End-to-end latencies in microseconds, shared by every instance. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._all: list[int] = []
        self._recent: list[int] = []

    def add(self, micros: int) -> None:
        with self._lock:
            self._all.append(micros)
            self._recent.append(micros)

    def take_recent(self) -> list[int]:
        with self._lock:
            recent, self._recent = self._recent, []
            return recent

    def everything(self) -> list[int]:
        with self._lock:
            return list(self._all)


def percentile(values: list[int], q: float) -> float:
    """The q-quantile (0..1) of ``values`` in milliseconds, nearest-rank; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000


class ServiceInstance:
    """A node of the service: the library's coherent cache of the source of truth
    (:meth:`Topic.new_cache`), which the topic's invalidations keep fresh. Its ``on_event``
    handler, run after each event's invalidation, measures latency and tracks progress."""

    def __init__(self, topic: Topic[Any], source: SourceOfTruth, latencies: Latencies) -> None:
        self.name = topic.config.instance_id
        self._latencies = latencies
        self._lock = threading.Lock()
        self._seen: dict[str, int] = {}  # highest version invalidated, per key
        self._caught_up = threading.Condition(self._lock)
        # The cache owns the instance's consumer group; it reads from the end of the topic
        # (an empty cache needs nothing older) and serves hits once it has caught up.
        self.cache: Cache[str, int] = topic.new_cache(
            source.read, keys=_key, on_event=self._on_event, max_staleness=1.0, name=self.name
        )

    def _on_event(self, event: Any) -> None:
        now_us = time.time_ns() // 1000
        with self._lock:
            if event.version > self._seen.get(event.key, 0):
                self._seen[event.key] = event.version
            self._caught_up.notify_all()
        self._latencies.add(now_us - event.written_at_us)

    @property
    def invalidations(self) -> int:
        return self.cache.metrics().invalidations

    def get(self, key: str) -> int:
        # A hit, or one load shared by concurrent misses; a load that an invalidation of its
        # key overtook is returned to its caller but never stored (the fill race).
        return self.cache.get(key)

    def wait_caught_up(self, written: dict[str, int], timeout: float) -> bool:
        with self._lock:
            return self._caught_up.wait_for(
                lambda: all(self._seen.get(k, 0) >= v for k, v in written.items()), timeout
            )

    def stale_entries(self, truth: dict[str, int]) -> list[str]:
        """The keys whose value read through the cache differs from the source of truth (once
        caught up, a hit must be the newest version)."""
        return [k for k, v in truth.items() if self.cache.get(k) != v]


def run(settings: DemoSettings, *, out: TextIO = sys.stdout) -> int:
    """Run the demo; returns 0 when every instance converged, 1 otherwise."""
    source = SourceOfTruth()
    latencies = Latencies()
    rng = random.Random(7)
    keys = [f"user:{i}" for i in range(settings.keys)]
    topics: list[Topic[Any]] = []

    def topic_for(instance_id: str) -> Topic[Any]:
        config = TopicConfig(
            brokers=settings.brokers,
            topic=settings.topic,
            instance_id=instance_id,
            consumer_properties=settings.consumer_properties,
        )
        topic = new_topic(CacheInvalidated, config)
        topics.append(topic)
        return topic

    try:
        writer_topic = topic_for("writer")
        created = writer_topic.ensure_exists(partitions=settings.partitions)
        print(
            f"topic {settings.topic!r}: {'created' if created else 'exists'}, "
            f"{settings.partitions} partitions; {settings.instances} instances; writer at "
            f"{settings.rate} events/s for {settings.duration:g} s over {settings.keys} keys",
            file=out,
        )
        nodes = [
            ServiceInstance(topic_for(f"node-{i + 1}"), source, latencies)
            for i in range(settings.instances)
        ]
        for node in nodes:
            node.cache.wait_ready(timeout=60)
            for key in keys:  # warm every cache
                node.get(key)

        producer = writer_topic.new_producer(key=_key)
        written: dict[str, int] = {}
        stop_readers = threading.Event()
        readers = [
            threading.Thread(target=_read_randomly, args=(node, keys, stop_readers), daemon=True)
            for node in nodes
        ]
        for reader in readers:
            reader.start()

        sent = _write(settings, producer.produce, source, keys, rng, written, nodes, latencies, out)
        stop_readers.set()
        for reader in readers:
            reader.join()

        caught_up = {node.name: node.wait_caught_up(written, timeout=60) for node in nodes}
        # Read-your-writes: one more write, read back through every cache after its token.
        last = keys[0]
        written[last] = source.write(last)
        token = producer.produce(
            CacheInvalidated(key=last, version=written[last], written_at_us=time.time_ns() // 1000)
        ).token
        sent += 1
        read_back = {node.name: node.cache.get(last, after=token, timeout=60) for node in nodes}
        truth = source.snapshot()
        print("", file=out)
        print(f"summary: {sent} events published and acknowledged", file=out)
        all_ok = True
        for node in nodes:
            stale = node.stale_entries(truth)
            ok = caught_up[node.name] and not stale and read_back[node.name] == written[last]
            all_ok &= ok
            metrics = node.cache.metrics()
            print(
                f"  {node.name:8} {metrics.invalidations:7d} invalidations, {metrics.hits} hits, "
                f"{metrics.misses} misses, {metrics.fills_voided} fills voided, {len(stale)} "
                f"stale entries, {node.cache.status.state}: "
                f"{'converged' if ok else 'NOT CONVERGED'}",
                file=out,
            )
        everything = latencies.everything()
        print(
            f"  end-to-end latency p50 {percentile(everything, 0.5):.2f} ms, "
            f"p99 {percentile(everything, 0.99):.2f} ms over {len(everything)} deliveries",
            file=out,
        )
        print(
            "every instance converged to the source of truth"
            if all_ok
            else "FAILED: some instance did not converge",
            file=out,
        )
        return 0 if all_ok else 1
    finally:
        for topic in topics:
            topic.close()


def _key(event: Any) -> str:
    return str(event.key)


def _read_randomly(node: ServiceInstance, keys: list[str], stop: threading.Event) -> None:
    """Serve reads (cache fills) while the writer runs, as a real service would."""
    rng = random.Random(node.name)
    while not stop.wait(0.001):
        for _ in range(20):
            node.get(rng.choice(keys))


def _write(
    settings: DemoSettings,
    produce: Callable[..., object],
    source: SourceOfTruth,
    keys: list[str],
    rng: random.Random,
    written: dict[str, int],
    nodes: list[ServiceInstance],
    latencies: Latencies,
    out: TextIO,
) -> int:
    """Publish at ``settings.rate`` for ``settings.duration``; print a progress line a second."""
    started = time.monotonic()
    next_report = started + 1.0
    sent = sent_at_report = 0
    while (now := time.monotonic()) - started < settings.duration:
        due = int((now - started) * settings.rate) - sent
        if due > 0:
            batch: list[Any] = []
            for _ in range(due):
                key = rng.choice(keys)
                version = source.write(key)
                written[key] = version
                batch.append(
                    CacheInvalidated(key=key, version=version, written_at_us=time.time_ns() // 1000)
                )
            produce(*batch)
            sent += due
        if now >= next_report:
            recent = latencies.take_recent()
            per_node = " ".join(f"{n.name}={n.invalidations}" for n in nodes)
            print(
                f"t={now - started:4.1f}s sent {sent:7d} ({sent - sent_at_report:5d}/s)  "
                f"e2e p50 {percentile(recent, 0.5):6.2f} ms p99 {percentile(recent, 0.99):6.2f} ms"
                f"  invalidations: {per_node}",
                file=out,
                flush=True,
            )
            sent_at_report = sent
            next_report += 1.0
        time.sleep(max(0.0, settings.batch_interval - (time.monotonic() - now)))
    return sent
