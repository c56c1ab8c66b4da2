"""The measured part of each scenario, shared by the synchronous Python clients.

A client supplies a sender (``send(events)`` blocks until every event is acknowledged; ``close()``)
and a consume loop (``loop(spec, handler, done)`` calls ``handler(event)`` per event until
``done`` is set); these drivers run warm-up, timing and progress the same way for every client.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from benchmarks import common, payload

__all__ = ["ConsumeLoop", "Sender", "consume", "e2e_consume", "e2e_produce", "latency", "produce"]

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
    timer = common.Timer()
    while done < total:
        n = min(size, total - done)
        sender.send(batch if n == size else batch[:n])
        done += n
        progress.update(done)
    result = timer.result(total)
    sender.close()
    return result


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
