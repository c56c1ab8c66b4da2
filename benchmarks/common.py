"""What every contender shares: the wire headers, the settings they are held to, progress lines,
the counting handler and latency statistics. Imports nothing heavy (no Kafka client)."""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import threads

# The wire format of eventstream (README "Wire format"): every contender sends these 6 headers.
CONTENT_TYPE = b"application/protobuf"
SPECVERSION = b"1.0"
TYPE_NAME = "eventstream.bench.BenchEvent"
SOURCE = "bench"

# librdkafka settings of eventstream's producer and consumer (TopicConfig defaults), used as is by
# the librdkafka-based peers (confluent-kafka typed loop, C program) so that one librdkafka does
# the same work. The eventstream contenders report their own effective settings in the results.
RDK_PRODUCER = {
    "acks": "all",
    "enable.idempotence": "true",
    "linger.ms": "5",
    "message.timeout.ms": "30000",
}
RDK_CONSUMER = {
    "enable.auto.offset.store": "false",
    "enable.auto.commit": "true",
    "auto.commit.interval.ms": "1000",
    "auto.offset.reset": "earliest",
    "partition.assignment.strategy": "cooperative-sticky",
    "enable.partition.eof": "false",
    "fetch.wait.max.ms": "100",
    "fetch.queue.backoff.ms": "10",
}
# librdkafka defaults that bound a producer batch (not set, recorded for comparison).
RDK_BATCH_DEFAULTS = {"batch.size": "1000000", "batch.num.messages": "10000"}

# eventstream keeps librdkafka's default linger.ms=5 and, once a blocking call has enqueued its
# batch, makes librdkafka send at once (its poll thread flushes while a call waits): the same
# batching as the flush-per-batch peers (the confluent-kafka typed loop, the C program), which
# therefore run with these exact settings.

# The pure-Python peers get the nearest equivalents: same acks, idempotence, linger, fetch wait
# and a batch limit of librdkafka's size (their default, 16 KiB, would cap a batch at 16 events of
# 1 KB; see the README of benchmarks/ for the measured effect).
PEER_BATCH_BYTES = 1_000_000
PEER_FETCH_WAIT_MS = 100
PEER_COMMIT_INTERVAL_MS = 1000

# The contenders no target compares run once, on this fraction of N (a rate does not depend on N),
# so that the default run stays near 25 minutes. kafka-python checks and computes CRC32C of every
# record batch in pure Python unless the optional `crc32c` package is installed (it is not in
# eventstream's bench extra): ~150 µs per 100 B event, ~400 µs per 1 KB event on this class of
# machine.
SLOW_CONTENDER_FRACTION = {
    "kafka-python": 0.05,
    "aiokafka": 0.25,
    "pure": 0.25,
    "compiled-metrics": 0.25,
    "compiled-otel": 0.25,
}


def now_ns() -> int:
    """CLOCK_MONOTONIC in ns: one clock for every process of the machine (C uses the same)."""
    return time.monotonic_ns()


class Progress:
    """Writes ``@progress <done> <total>`` lines to stderr (at most 5 a second) for the runner,
    which draws the bar. Cheap to call once per batch."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._last = 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if done >= self.total or now - self._last >= 0.2:
            self._last = now
            sys.stderr.write(f"@progress {done} {self.total}\n")
            sys.stderr.flush()


def watch(progress: Progress, count: Callable[[], int], done: threading.Event) -> None:
    """Report a counter from a background thread until ``done`` (for consumers, whose handlers
    run on threads the benchmark does not own)."""

    def run() -> None:
        while not done.wait(0.2):
            progress.update(count())
        progress.update(count())

    threading.Thread(target=run, name="bench-progress", daemon=True).start()


class Timer:
    """Wall and process CPU time (all threads: librdkafka's too) of the measured section."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def result(self, events: int, **extra: Any) -> dict[str, Any]:
        return {
            "events": events,
            "seconds": time.perf_counter() - self.wall,
            "cpu_seconds": time.process_time() - self.cpu,
            **extra,
        }


class Counting:
    """The no-op handler of the consume scenario, the same for every Python contender: count,
    remember when the first and the target-th event were handled (time, process CPU, and CPU
    and page faults of every thread: benchmarks/threads.py), signal when done."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.done = threading.Event()
        self.first = 0.0
        self.last = 0.0
        self.count = 0
        target_ = target
        perf = time.perf_counter
        state = self

        cpu = time.process_time

        def handler(event: Any, meta: Any = None) -> None:
            n = state.count + 1
            state.count = n
            if n == 1:
                state.tid = threading.get_native_id()
                state.before = threads.snapshot(last=state.tid)
                state.first = perf()
                state.first_cpu = cpu()
            if n == target_:
                state.last = perf()
                state.last_cpu = cpu()
                state.after = threads.snapshot(first=state.tid)
                state.names = threads.python_names()
                state.done.set()

        self.first_cpu = self.last_cpu = 0.0
        self.tid = 0
        self.before: dict[int, dict[str, Any]] = {}
        self.after: dict[int, dict[str, Any]] = {}
        self.names: dict[int, str] = {}
        self.handler = handler

    def result(self) -> dict[str, Any]:
        per_thread = threads.delta(self.before, self.after, (self.tid, "consuming"), self.names)
        return {
            "events": self.count,
            "seconds": self.last - self.first,
            "cpu_seconds": self.last_cpu - self.first_cpu,
        } | per_thread


class Latencies:
    """End-to-end latency handler: ``now - event.sent_ns`` for events past the warm-up."""

    def __init__(self, total: int, warmup: int) -> None:
        self.total = total
        self.warmup = warmup
        self.samples: list[int] = []
        self.count = 0
        self.done = threading.Event()
        clock = time.monotonic_ns
        append = self.samples.append
        state = self

        def handler(event: Any, meta: Any = None) -> None:
            t = clock()
            if event.seq >= warmup:
                append(t - event.sent_ns)
            n = state.count + 1
            state.count = n
            if n >= total:
                state.done.set()

        self.handler = handler


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def latency_stats(samples_ns: Sequence[int]) -> dict[str, Any]:
    """Summary in milliseconds."""
    values = sorted(s / 1e6 for s in samples_ns)
    if not values:
        return {"samples": 0}
    return {
        "samples": len(values),
        "p50_ms": percentile(values, 50),
        "p90_ms": percentile(values, 90),
        "p99_ms": percentile(values, 99),
        "p999_ms": percentile(values, 99.9),
        "max_ms": values[-1],
        "mean_ms": sum(values) / len(values),
    }


def pace(rate: float, total: int, send: Callable[[int, int], None], progress: Progress) -> int:
    """Call ``send(first_seq, count)`` so that events go out at ``rate`` per second: each call
    sends every event due by now (normally one; more when the previous call took longer than
    the interval, which keeps the rate instead of falling behind). Returns the number of calls."""
    period = 1.0 / rate
    start = time.monotonic()
    sent = calls = 0
    while sent < total:
        due_at = start + sent * period
        delay = due_at - time.monotonic()
        if delay > 0.0002:
            time.sleep(delay - 0.0001)  # sleeps overshoot: spin the last 0.1 ms
        while time.monotonic() < due_at:
            pass
        due = min(total, int((time.monotonic() - start) / period) + 1)
        send(sent, due - sent)
        sent = due
        calls += 1
        progress.update(sent)
    return calls


def event_time() -> bytes:
    """``ce_time`` as eventstream writes it (RFC 3339, UTC, milliseconds), made once per call."""
    now = time.time()
    whole = int(now)
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        + f".{int((now - whole) * 1000):03d}Z"
    ).encode()


def producer_id() -> str:
    """16 hex digits naming one producer: its events get ce_id ``<id>-<n>`` (as eventstream)."""
    return os.urandom(8).hex()
