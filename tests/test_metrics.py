"""What clients count and time: producer and consumer metrics, the lag, the periodic exporter
hook, and librdkafka's statistics delivered parsed."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from support import Collector, raw_produce, wait_until
from testevents_pb2 import Invalidate, Unrelated

import eventstream
from eventstream import ConsumerMetrics, Histogram, ProducerMetrics

pytestmark = pytest.mark.timeout(90)


def test_producer_metrics_count_calls_and_events(
    make_topic: Callable[..., eventstream.Topic[Any]],
) -> None:
    topic = make_topic()
    producer = topic.new_producer()
    assert producer.metrics() == ProducerMetrics(topic=topic.name)
    producer.produce(*(Invalidate(seq=i) for i in range(7)))
    producer.produce(Invalidate(seq=7))
    metrics = producer.metrics()
    assert (metrics.calls, metrics.events, metrics.acknowledged) == (2, 8, 8)
    assert (metrics.failed, metrics.in_doubt) == (0, 0)
    assert metrics.call_seconds.count == 2 and metrics.call_seconds.sum > 0
    median = metrics.call_seconds.quantile(0.5)
    assert median is not None and median <= 2 * 60
    producer.close()


def test_consumer_counts_without_metrics_and_times_with_them(
    make_topic: Callable[..., eventstream.Topic[Any]], kafka_bootstrap: str
) -> None:
    plain = make_topic()
    raw_produce(
        kafka_bootstrap,
        plain.name,
        [
            (Invalidate(seq=0).SerializeToString(), None, None),
            (Unrelated(note="x").SerializeToString(), None, [("ce_type", b"other.T")]),
            (Invalidate(seq=2).SerializeToString(), None, None),
        ],
    )
    collector = Collector()
    consumer = plain.new_consumer(start_from_beginning=True)
    consumer.consume(collector)
    collector.wait_for_seq(2)
    metrics = consumer.metrics()
    assert (metrics.handled, metrics.skipped) == (2, 1)
    assert metrics.handler_seconds is None and metrics.end_to_end_seconds is None
    assert metrics.lag == {}
    assert metrics.group == plain.config.group_id


def test_with_metrics_handlers_and_latency_are_timed_and_the_lag_is_known(
    make_topic: Callable[..., eventstream.Topic[Any]],
) -> None:
    topic = make_topic(partitions=2, metrics=True)
    collector = Collector()
    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(collector)
    with topic.new_producer(key=lambda e: str(e.seq)) as producer:
        producer.produce(*(Invalidate(seq=i) for i in range(50)))
    collector.wait_for_count(50)
    # The lag comes from librdkafka's statistics (about once a second, and as of the last
    # committed offsets): both partitions, caught up.
    wait_until(lambda: consumer.metrics().lag == {0: 0, 1: 0}, "no lag once every event is handled")
    metrics: ConsumerMetrics = consumer.metrics()
    assert metrics.handled == 50
    for histogram in (metrics.handler_seconds, metrics.end_to_end_seconds):
        assert isinstance(histogram, Histogram)
        assert histogram.count == 50 and sum(histogram.counts) == 50
    consumer.close()


def test_on_metrics_and_on_statistics_are_called_periodically(
    make_topic: Callable[..., eventstream.Topic[Any]], collector: Collector
) -> None:
    snapshots: list[Any] = []
    statistics: list[dict[str, Any]] = []
    done = threading.Event()

    def on_metrics(snapshot: Any) -> None:
        snapshots.append(snapshot)
        kinds = {type(s) for s in snapshots}
        if {ProducerMetrics, ConsumerMetrics} <= kinds and len(statistics) >= 2:
            done.set()

    topic = make_topic(on_metrics=on_metrics, metrics_interval=0.5, on_statistics=statistics.append)
    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(collector)
    producer = topic.new_producer()
    producer.produce(Invalidate(seq=1))
    collector.wait_for_seq(1)
    assert done.wait(30), (snapshots, len(statistics))
    assert {s.get("type") for s in statistics} >= {"producer", "consumer"}
    assert all(isinstance(s.get("brokers"), dict) for s in statistics)
    wait_until(
        lambda: any(isinstance(s, ConsumerMetrics) and s.handled == 1 for s in snapshots),
        "a consumer snapshot that counts the event",
    )
    topic.close()


def test_histogram_quantiles_are_upper_bounds_within_a_factor_of_two() -> None:
    from eventstream._runtime.telemetry.metrics import LatencyRecorder

    recorder = LatencyRecorder()
    for ns in (1_000, 2_000, 3_000, 1_000_000):
        recorder.add(ns)
    histogram = recorder.snapshot()
    assert histogram.count == 4 and histogram.sum == pytest.approx(0.001006)
    p50 = histogram.quantile(0.5)
    assert p50 is not None and 2e-6 <= p50 <= 4e-6
    p99 = histogram.quantile(0.99)
    assert p99 is not None and 1e-3 <= p99 <= 2e-3
    assert Histogram().quantile(0.5) is None and Histogram().mean is None
