"""A producer process for test_signals.py (run as a script; not collected by pytest).

It leaves one produce call early while librdkafka's queue is full, then keeps using the process,
so that a crash or a corrupted heap is a non-zero exit of this child, not a dead pytest run:

1. A Topic on ``--brokers``/``--topic`` (created with ``ensure_exists``) whose producers have
   room for 5 messages and linger 1.5 s (``PROPERTIES``): a call of ``EVENTS`` events spends
   seconds blocked on the full queue.
2. One call of those events, left by ``--mode``:

   - ``interrupt``: ``produce()``, ``_thread.interrupt_main()`` from a timer thread after 0.4 s
     (Ctrl+C): must raise exactly ``KeyboardInterrupt``;
   - ``alarm``: ``produce_async()`` inside ``asyncio.run``, ``setitimer(ITIMER_REAL, 0.4)`` with a
     SIGALRM handler that raises ``Alarm``: must raise exactly ``Alarm``;
   - ``timeout`` / ``timeout-async``: ``produce(..., timeout=0.4)`` / ``produce_async``: must
     raise ``ProduceTimeoutError`` with the events never enqueued counted as failed;
   - ``key-error`` / ``key-error-async``: a key function that raises on event ``KEY_ERROR_AT``:
     must raise ``SerializationError`` (caused by ``KeyFailure``) before anything is sent.

3. Churns the heap with allocations of the payloads' size (memory a payload would have been
   freed into, if librdkafka still pointed at it, now holds ``JUNK``), ``gc.collect()``.
4. Produces ``marker()`` on a new producer (must succeed), flushes the first producer (what it
   enqueued is delivered; nothing is stuck), ``gc.collect()`` again and closes the topic.

The last line of the output is a JSON object: the backend, the eventstream package imported,
what the call raised and the error's counts. Exit code 0 only if every step above did what it
must. The parent reads the topic back (test_signals.py) and checks that every record is one of
``events()``, or the marker, byte for byte.
"""

from __future__ import annotations

import _thread
import argparse
import asyncio
import gc
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "protos"))

from testevents_pb2 import Invalidate

import eventstream

EVENTS = 20
SIGNAL_AFTER = 0.4  # seconds: well inside the first linger (1.5 s) with the queue full
KEY_ERROR_AT = 9  # the 10th event
INSTANCE = "svc-signals"
PROPERTIES = {"queue.buffering.max.messages": "5", "linger.ms": "1500"}
MODES = ("interrupt", "alarm", "timeout", "timeout-async", "key-error", "key-error-async")


def events(mode: str) -> list[Invalidate]:
    """The call's events: distinct and recognisable (a stray byte on the wire is noticed)."""
    return [
        Invalidate(
            key=f"{mode}-event-{seq:02d}",
            seq=seq,
            producer="signal_producer",
            padding=f"<payload {seq:02d} of {mode}>".encode() * 6,
        )
        for seq in range(EVENTS)
    ]


def marker(mode: str) -> Invalidate:
    return Invalidate(key=f"{mode}-marker", seq=1000, producer="signal_producer")


class Alarm(Exception):
    """What the SIGALRM handler raises: an Exception, so no ``except Exception`` may eat it."""


class KeyFailure(Exception):
    """What the key function raises on event KEY_ERROR_AT."""


def failing_key(event: Invalidate) -> str:
    if event.seq == KEY_ERROR_AT:
        raise KeyFailure(f"no key for event {event.seq}")
    return event.key


def error_counts(exc: BaseException) -> dict[str, Any]:
    return {name: getattr(exc, name, None) for name in ("failed", "in_doubt", "total")}


def call_interrupted(topic: eventstream.Topic[Invalidate], batch: list[Invalidate]) -> Any:
    producer = topic.new_producer()
    timer = threading.Timer(SIGNAL_AFTER, _thread.interrupt_main)
    timer.start()
    try:
        producer.produce(*batch)
    except KeyboardInterrupt as exc:
        return producer, exc
    finally:
        timer.cancel()
    raise SystemExit("produce() returned although Ctrl+C came while it was blocked")


def on_alarm(signum: int, frame: object) -> None:
    raise Alarm(f"signal {signum}")


def call_alarmed(topic: eventstream.Topic[Invalidate], batch: list[Invalidate]) -> Any:
    """A raising SIGALRM handler while produce_async() is awaited: the loop is not blocked (the
    rest of the call waits for room on a worker thread), so the handler runs in the loop and
    its exception leaves asyncio.run(), whose shutdown waits for that worker."""
    producer = topic.new_producer()
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, SIGNAL_AFTER)
    try:
        asyncio.run(producer.produce_async(*batch))
    except Alarm as exc:
        return producer, exc
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    raise SystemExit("produce_async() returned although SIGALRM came while it was awaited")


async def call_async(
    producer: eventstream.Producer[Invalidate], batch: list[Invalidate], timeout: float | None
) -> BaseException | None:
    try:
        await producer.produce_async(*batch, timeout=timeout)
    except Exception as exc:
        return exc
    return None


def call(mode: str, topic: eventstream.Topic[Invalidate], batch: list[Invalidate]) -> Any:
    """Run the call of ``mode``; returns (its producer, what it raised)."""
    if mode == "interrupt":
        return call_interrupted(topic, batch)
    if mode == "alarm":
        return call_alarmed(topic, batch)
    producer = topic.new_producer(key=failing_key if mode.startswith("key-error") else None)
    timeout = SIGNAL_AFTER if mode.startswith("timeout") else None
    if mode.endswith("-async"):
        return producer, asyncio.run(call_async(producer, batch, timeout))
    try:
        producer.produce(*batch, timeout=timeout)
    except Exception as exc:
        return producer, exc
    return producer, None


EXPECTED: dict[str, type[BaseException]] = {
    "interrupt": KeyboardInterrupt,
    "alarm": Alarm,
    "timeout": eventstream.ProduceTimeoutError,
    "timeout-async": eventstream.ProduceTimeoutError,
    "key-error": eventstream.SerializationError,
    "key-error-async": eventstream.SerializationError,
}


def check_raised(mode: str, exc: BaseException | None) -> None:
    expected = EXPECTED[mode]
    if type(exc) is not expected:
        raise SystemExit(f"{mode}: expected exactly {expected.__name__}, got {exc!r}")
    if mode.startswith("timeout"):
        assert isinstance(exc, eventstream.ProduceTimeoutError)
        # Ended while the queue was full: some events never reached librdkafka.
        if not (0 < exc.failed < EVENTS and exc.total == EVENTS):
            raise SystemExit(f"{mode}: counts {error_counts(exc)} of {exc}")
    if mode.startswith("key-error") and (
        type(exc.__cause__) is not KeyFailure or f"event {KEY_ERROR_AT} " not in str(exc)
    ):
        raise SystemExit(f"{mode}: {exc!r} does not name event {KEY_ERROR_AT} or its cause")


def churn() -> None:
    """Reuse freed memory of the payloads' sizes with bytes nobody produced."""
    size = len(events("x")[0].SerializeToString())
    junk = [b"JUNK" * (size // 4 + n % 3) for n in range(20_000)]
    del junk
    gc.collect()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--mode", required=True, choices=MODES)
    args = parser.parse_args()
    mode = args.mode

    config = eventstream.TopicConfig(
        brokers=args.brokers, topic=args.topic, instance_id=INSTANCE, producer_properties=PROPERTIES
    )
    topic = eventstream.new_topic(Invalidate, config)
    topic.ensure_exists(partitions=1, timeout=30)

    producer, exc = call(mode, topic, events(mode))
    check_raised(mode, exc)
    report = {
        "backend": eventstream.backend(),
        "package": eventstream.__file__,
        "raised": type(exc).__name__,
        **error_counts(exc),
    }
    del exc
    churn()

    with topic.new_producer() as second:
        second.produce(marker(mode), timeout=60)
    left = producer.flush(60)
    if left:
        raise SystemExit(f"{left} events of the interrupted call were still not delivered")
    del producer
    gc.collect()
    topic.close()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
