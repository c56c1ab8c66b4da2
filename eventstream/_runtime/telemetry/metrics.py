"""What producers and consumers count and time: :class:`ProducerMetrics`, :class:`ConsumerMetrics`.

Counters are always kept (an integer add on paths that already do far more). Durations that need
a clock read per event (handler time, end-to-end latency) and the consumer lag (parsed from
librdkafka's statistics) are kept only with ``TopicConfig(metrics=True)`` (or ``on_metrics``), so
a consumer that does not ask pays nothing for them.

Durations are kept as :class:`Histogram`s with power-of-two buckets (1 ns to ~18 minutes): exact
counts, quantiles to within a factor of two, cheap to record from compiled code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["BUCKETS", "ConsumerMetrics", "Histogram", "LatencyRecorder", "ProducerMetrics"]

#: Number of buckets: bucket ``b`` holds durations of at least ``2**(b-1)`` and below ``2**b`` ns.
BUCKETS = 41
_BOUNDS: tuple[float, ...] = tuple(float(1 << b) / 1e9 for b in range(BUCKETS))


@dataclass(frozen=True, slots=True)
class Histogram:
    """Durations, in seconds. ``counts[b]`` durations fell below ``bounds[b]`` (and at or above
    ``bounds[b - 1]``); ``count`` and ``sum`` are their number and total."""

    counts: tuple[int, ...] = (0,) * BUCKETS
    count: int = 0
    sum: float = 0.0

    @property
    def bounds(self) -> tuple[float, ...]:
        """Upper bounds of the buckets, seconds (powers of two nanoseconds)."""
        return _BOUNDS

    @property
    def mean(self) -> float | None:
        """The mean duration, seconds (exact: ``sum / count``); ``None`` without data."""
        return self.sum / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding quantile ``q`` (0..1): an estimate within a
        factor of two, never below the true value. ``None`` without data."""
        if not self.count:
            return None
        rank = max(1, round(q * self.count))
        seen = 0
        for bound, n in zip(_BOUNDS, self.counts, strict=True):
            seen += n
            if seen >= rank:
                return bound
        return _BOUNDS[-1]

    def merge(self, other: Histogram) -> Histogram:
        """Both histograms' durations in one."""
        counts = tuple(a + b for a, b in zip(self.counts, other.counts, strict=True))
        return Histogram(counts, self.count + other.count, self.sum + other.sum)

    @classmethod
    def of(cls, counts: Sequence[int], sum_ns: int) -> Histogram:
        """A histogram of ``counts`` per bucket (:data:`BUCKETS` of them) whose durations total
        ``sum_ns`` nanoseconds: how the backends report what they recorded."""
        return cls(tuple(counts), sum(counts), sum_ns / 1e9)


class LatencyRecorder:
    """The pure-Python backend's way to fill a :class:`Histogram` (the compiled one keeps the
    same buckets in C)."""

    __slots__ = ("counts", "sum_ns")

    def __init__(self) -> None:
        self.counts = [0] * BUCKETS
        self.sum_ns = 0

    def add(self, ns: int) -> None:
        self.counts[min(max(ns, 0).bit_length(), BUCKETS - 1)] += 1
        self.sum_ns += ns

    def snapshot(self) -> Histogram:
        return Histogram.of(self.counts, self.sum_ns)


@dataclass(frozen=True, slots=True)
class ProducerMetrics:
    """A producer's counts since it was made. ``call_seconds`` times each ``produce()`` /
    ``produce_async()`` call from its start to its last acknowledgement (or its error)."""

    topic: str
    calls: int = 0
    events: int = 0
    acknowledged: int = 0
    failed: int = 0
    in_doubt: int = 0
    call_seconds: Histogram = field(default_factory=Histogram)


@dataclass(frozen=True, slots=True)
class ConsumerMetrics:
    """A consumer's counts since ``consume()``.

    ``handled``: events whose handler returned; ``skipped``: records that could not reach the
    handler (another type, not protobuf, undecodable); ``failed``: events whose handler still
    raised after the retry policy; ``dead_lettered``: records written to the dead-letter topic;
    ``retried``: handler calls after the first. With ``TopicConfig(metrics=True)`` also:
    ``handler_seconds`` (each handler call), ``end_to_end_seconds`` (from the record's timestamp,
    normally its produce time, to the start of its handler: includes clock differences between
    hosts) and ``lag`` (partition -> records between the group's committed offset and the end of
    the partition, from librdkafka's statistics, served between batches about once a second:
    not updated while a handler runs; empty until the first).
    """

    topic: str
    group: str
    handled: int = 0
    skipped: int = 0
    failed: int = 0
    dead_lettered: int = 0
    retried: int = 0
    lag: Mapping[int, int] = field(default_factory=dict[int, int])
    handler_seconds: Histogram | None = None
    end_to_end_seconds: Histogram | None = None
