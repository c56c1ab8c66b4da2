"""The measured part of each scenario, shared by the synchronous Python clients.

A client supplies a sender (``send(events)`` blocks until every event is acknowledged; ``close()``)
and a consume loop (``loop(spec, handler, done)`` calls ``handler(event)`` per event until
``done`` is set); these drivers run warm-up, timing and progress the same way for every client.
"""

from __future__ import annotations

import asyncio
import collections
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from benchmarks import common, payload, threads

__all__ = [
    "ConsumeLoop",
    "Sender",
    "cold_start",
    "consume",
    "e2e_consume",
    "e2e_produce",
    "latency",
    "produce",
    "produce_pipelined",
]

ConsumeLoop = Callable[[dict[str, Any], Callable[[Any], None], threading.Event], None]


class Sender(Protocol):
    def send(self, events: Any) -> None: ...

    def close(self) -> None: ...


def produce(sender: Sender, spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    """Blocking calls of ``spec["batch"]`` events after ``spec["warmup"]`` unmeasured ones."""
    cls = payload.event_class()
    body = payload.make_body(spec["size"])
    size, total = spec["batch"], spec["count"]
    batch = [payload.make_event(cls, body, seq=i + 1) for i in range(size)]
    for start in range(0, spec["warmup"], size):
        sender.send(batch[: min(size, spec["warmup"] - start)])
    done = 0
    section = threads.Section("calling")
    timer = common.Timer()
    while done < total:
        n = min(size, total - done)
        sender.send(batch if n == size else batch[:n])
        done += n
        progress.update(done)
    result = timer.result(total)
    result |= section.result()
    sender.close()
    return result


async def produce_pipelined(
    send: Callable[[list[Any]], Awaitable[Any]], spec: dict[str, Any], progress: common.Progress
) -> dict[str, Any]:
    """Calls of ``spec["batch"]`` events on one event loop with up to ``spec["in_flight"]``
    calls awaiting their acknowledgements at any time (a new call starts as soon as the oldest
    one completes); ``spec["warmup"]`` events the same way first, not measured."""
    cls = payload.event_class()
    body = payload.make_body(spec["size"])
    size, total, in_flight = spec["batch"], spec["count"], spec["in_flight"]
    batch = [payload.make_event(cls, body, seq=i + 1) for i in range(size)]

    async def run(events: int, report: bool) -> None:
        window: collections.deque[tuple[asyncio.Future[Any], int]] = collections.deque()
        started = completed = 0
        while started < events or window:
            if started < events and len(window) < in_flight:
                n = min(size, events - started)
                call = asyncio.ensure_future(send(batch if n == size else batch[:n]))
                window.append((call, n))
                started += n
                continue
            call, n = window.popleft()
            await call
            completed += n
            if report:
                progress.update(completed)

    await run(spec["warmup"], False)
    section = threads.Section("calling")
    timer = common.Timer()
    await run(total, True)
    result = timer.result(total, in_flight=in_flight)
    result |= section.result()
    return result


def cold_start(
    make: Callable[[], Sender], spec: dict[str, Any], progress: common.Progress
) -> dict[str, Any]:
    """The first call of a new producer, made ``spec["delay"]`` seconds before the call, then
    ``spec["later_calls"]`` more calls for comparison; one event each, waited for."""
    cls = payload.event_class()
    one = [payload.make_event(cls, payload.make_body(spec["size"]), seq=1)]
    clock = time.perf_counter
    t0 = clock()
    sender = make()
    made = clock() - t0
    if spec["delay"] > 0:
        time.sleep(spec["delay"])
    t0 = clock()
    sender.send(one)
    first = clock() - t0
    later = []
    for i in range(spec["later_calls"]):
        t0 = clock()
        sender.send(one)
        later.append(clock() - t0)
        progress.update(i + 1)
    sender.close()
    return {
        "delay_s": spec["delay"],
        "make_ms": made * 1e3,
        "first_ms": first * 1e3,
        "later_p50_ms": statistics.median(later) * 1e3 if later else None,
        "later_max_ms": max(later) * 1e3 if later else None,
    }


def latency(sender: Sender, spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    """Sequential single-event calls; one sample (ns) per call."""
    cls = payload.event_class()
    one = [payload.make_event(cls, payload.make_body(spec["size"]), seq=1)]
    for _ in range(spec["warmup"]):
        sender.send(one)
    samples = []
    clock = time.perf_counter_ns
    for i in range(spec["count"]):
        t0 = clock()
        sender.send(one)
        samples.append(clock() - t0)
        progress.update(i + 1)
    sender.close()
    return {"samples_ns": samples}


def e2e_produce(sender: Sender, spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    """Events stamped with their send time, paced at ``spec["rate"]`` per second."""
    cls = payload.event_class()
    body = payload.make_body(spec["size"])
    clock = time.monotonic_ns

    def send(first: int, count: int) -> None:
        t = clock()
        sender.send([cls(sent_ns=t, seq=first + i, body=body) for i in range(count)])

    t0 = time.monotonic()
    calls = common.pace(spec["rate"], spec["count"], send, progress)
    seconds = time.monotonic() - t0
    sender.close()
    return {"events": spec["count"], "calls": calls, "seconds": seconds}


def consume(loop: ConsumeLoop, spec: dict[str, Any], progress: common.Progress) -> dict[str, Any]:
    """Count events from the first to the last one handled."""
    counting = common.Counting(spec["count"])
    common.watch(progress, lambda: counting.count, counting.done)
    loop(spec, counting.handler, counting.done)
    return counting.result()


def e2e_consume(
    loop: ConsumeLoop, spec: dict[str, Any], progress: common.Progress
) -> dict[str, Any]:
    """Latency samples from each event's send stamp to its handler."""
    lat = common.Latencies(spec["count"], spec["warmup"])
    common.watch(progress, lambda: lat.count, lat.done)
    loop(spec, lat.handler, lat.done)
    return {"samples_ns": lat.samples}
