"""The asyncio API: produce_async from a coroutine, async handlers on the application's loop,
aclose."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
from testevents_pb2 import Invalidate

import eventstream
from eventstream import EventMetadata

pytestmark = pytest.mark.timeout(60)

EVENTS = 30


def test_async_handler_runs_on_the_callers_loop_in_order(make_topic) -> None:
    topic = make_topic(instance_id="svc-async")

    async def main() -> tuple[list[int], list[EventMetadata], set[int], int, int, bool]:
        loop = asyncio.get_running_loop()
        seen: list[int] = []
        metas: list[EventMetadata] = []
        threads: set[int] = set()
        foreign_loops = 0
        running = 0
        overlapped = False
        done = asyncio.Event()

        async def handler(event: Invalidate, meta: EventMetadata) -> None:
            nonlocal foreign_loops, running, overlapped
            threads.add(threading.get_ident())
            foreign_loops += asyncio.get_running_loop() is not loop
            running += 1
            overlapped |= running > 1
            await asyncio.sleep(0)  # give a second handler call the chance to overlap
            seen.append(event.seq)
            metas.append(meta)
            running -= 1
            if len(seen) == EVENTS:
                done.set()

        async with topic.new_consumer(start_from_beginning=True) as consumer:
            consumer.consume(handler, with_metadata=True)
            async with topic.new_producer() as producer:
                for start in range(0, EVENTS, 10):
                    await producer.produce_async(
                        *(Invalidate(key="k", seq=s) for s in range(start, start + 10))
                    )
            await asyncio.wait_for(done.wait(), 30)
        assert consumer.closed and producer.closed
        return seen, metas, threads, threading.get_ident(), foreign_loops, overlapped

    seen, metas, threads, loop_thread, foreign_loops, overlapped = asyncio.run(main())
    assert seen == list(range(EVENTS))
    assert [m.offset for m in metas] == list(range(EVENTS))
    assert all(m.source == "svc-async" for m in metas)
    assert threads == {loop_thread}, "the handler ran off the application's loop thread"
    assert foreign_loops == 0
    assert not overlapped, "handler calls overlapped: events must be handled one at a time"


def test_async_handler_exception_is_logged_and_later_events_arrive(
    make_topic, caplog: pytest.LogCaptureFixture
) -> None:
    topic = make_topic()
    with topic.new_producer() as producer:
        producer.produce(*(Invalidate(seq=i) for i in range(3)))

    async def main() -> list[int]:
        seen: list[int] = []
        done = asyncio.Event()

        async def handler(event: Invalidate) -> None:
            seen.append(event.seq)
            if event.seq == 2:
                done.set()
            if event.seq == 1:
                raise ValueError("async boom")

        consumer = topic.new_consumer(start_from_beginning=True)
        consumer.consume(handler)
        await asyncio.wait_for(done.wait(), 30)
        await consumer.aclose()
        assert consumer.closed
        return seen

    assert asyncio.run(main()) == [0, 1, 2]
    where = f"{topic.name}[0]@1"
    [record] = [r for r in caplog.records if where in r.getMessage()]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None and str(record.exc_info[1]) == "async boom"


def test_async_handler_needs_a_loop() -> None:
    async def handler(event: Invalidate) -> None:
        pass

    with eventstream.new_noop_topic(Invalidate) as topic, pytest.raises(ValueError):
        topic.new_consumer().consume(handler)  # no running loop, none given


def test_an_async_consumer_whose_loop_is_closed_fails_and_says_so(make_topic) -> None:
    """The loop that runs the handler is closed while the consumer runs: the next event cannot
    be handled; the consumer fails (status, one on_error) with an error that names the loop,
    and close() raises it."""
    errors: list[eventstream.EventStreamError] = []
    topic = make_topic(on_error=errors.append)
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    seen: list[int] = []

    async def handler(event: Invalidate) -> None:
        seen.append(event.seq)

    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(handler, loop=loop)
    consumer.wait_until_assigned(30)
    loop.call_soon_threadsafe(loop.stop)
    runner.join(10)
    loop.close()
    with topic.new_producer() as producer:
        producer.produce(Invalidate(seq=1))
    deadline = time.monotonic() + 30
    while consumer.status.state != "failed":
        assert time.monotonic() < deadline, consumer.status
        time.sleep(0.05)
    assert "event loop" in str(consumer.status.error) and "closed" in str(consumer.status.error)
    with pytest.raises(eventstream.EventStreamError, match="event loop"):
        consumer.close()
    assert seen == []


def test_produce_async_never_blocks_the_loop_on_a_full_queue(make_topic) -> None:
    """librdkafka's queue has room for 5 events and holds them 0.5 s (linger): a call of 30
    waits seconds for room, on a worker thread; the loop goes on ticking meanwhile."""
    topic = make_topic(producer_properties={"queue.buffering.max.messages": 5, "linger.ms": 500})

    async def main() -> tuple[float, float]:
        longest = 0.0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal longest
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                longest = max(longest, now - last)
                last = now

        tick = asyncio.create_task(ticker())
        producer = topic.new_producer()
        started = time.monotonic()
        deliveries = await producer.produce_async(*(Invalidate(seq=i) for i in range(30)))
        took = time.monotonic() - started
        done.set()
        await tick
        await producer.aclose()
        assert len(deliveries) == 30
        return took, longest

    took, longest = asyncio.run(main())
    print(
        f"\nproduce_async of 30 through a queue of 5: {took:.2f} s; longest loop stall "
        f"{longest * 1000:.0f} ms"
    )
    assert took > 1.0, "the queue was never full: the test proves nothing"
    assert longest < took / 4, f"the loop stalled {longest:.2f} s of the call's {took:.2f} s"


def test_produce_async_on_two_loops_in_turn_leaves_no_reader_behind(make_topic) -> None:
    """One producer used from two loops, one after the other: each loop may watch the producer
    while its calls are outstanding, and keeps nothing of it once they are settled."""
    topic = make_topic()
    producer = topic.new_producer()

    async def main(first: int) -> tuple[int, set[int], set[int]]:
        loop = asyncio.get_running_loop()
        before = set(loop._selector.get_map())  # type: ignore[attr-defined]
        calls = [producer.produce_async(Invalidate(seq=first + i)) for i in range(5)]
        deliveries = await asyncio.gather(*calls)
        after = set(loop._selector.get_map())  # type: ignore[attr-defined]
        return sum(len(d) for d in deliveries), before, after

    try:
        for first in (0, 5):
            acked, before, after = asyncio.run(main(first))
            assert acked == 5
            assert after == before, f"left on the loop: {sorted(after - before)}"
    finally:
        producer.close()


def test_produce_async_on_two_loops_at_once_settles_each_on_its_own(make_topic) -> None:
    """One producer used from two event loops on two threads at the same time: every call is
    settled on the loop that made it, and neither loop keeps anything of the producer."""
    topic = make_topic()
    producer = topic.new_producer()
    results: dict[int, tuple[int, set[int], set[int], set[int]]] = {}
    errors: list[BaseException] = []

    async def main(first: int) -> tuple[int, set[int], set[int], set[int]]:
        loop = asyncio.get_running_loop()
        me = threading.get_ident()
        settled_on: set[int] = set()
        before = set(loop._selector.get_map())  # type: ignore[attr-defined]

        async def one(seq: int) -> int:
            deliveries = await producer.produce_async(Invalidate(seq=seq), Invalidate(seq=seq))
            settled_on.add(threading.get_ident())
            return len(deliveries)

        acked = sum(await asyncio.gather(*(one(first + i) for i in range(40))))
        after = set(loop._selector.get_map())  # type: ignore[attr-defined]
        assert settled_on == {me}
        return acked, before, after, settled_on

    def run(first: int) -> None:
        try:
            results[first] = asyncio.run(main(first))
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(first,)) for first in (0, 1000)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        producer.close()
    assert not errors, errors
    assert sorted(results) == [0, 1000]
    for acked, before, after, _ in results.values():
        assert acked == 80
        assert after == before, f"left on the loop: {sorted(after - before)}"
    assert producer.metrics().acknowledged == 160


def test_produce_async_on_a_loop_that_stops_and_runs_again(make_topic) -> None:
    """Calls whose events are acknowledged while their loop is not running: their futures are
    settled, on that loop, once it runs again, and the loop keeps nothing of the producer."""
    topic = make_topic()
    producer = topic.new_producer()
    loop = asyncio.new_event_loop()
    try:
        before = set(loop._selector.get_map())  # type: ignore[attr-defined]
        tasks = [
            loop.create_task(producer.produce_async(Invalidate(seq=i), Invalidate(seq=i)))
            for i in range(3)
        ]
        loop.run_until_complete(asyncio.sleep(0))  # each call has handed its events over
        assert producer.flush(30) == 0  # acknowledged while the loop does not run
        assert not any(task.done() for task in tasks)
        deliveries = loop.run_until_complete(asyncio.wait_for(asyncio.gather(*tasks), 30))
        assert [len(d) for d in deliveries] == [2, 2, 2]
        assert set(loop._selector.get_map()) == before  # type: ignore[attr-defined]
    finally:
        loop.close()
        producer.close()


def test_produce_async_on_a_loop_that_cannot_watch_files(make_topic) -> None:
    """A loop without add_reader (as on Windows' proactor): the calls still complete, their
    reports served off the loop."""

    class NoReaders(asyncio.SelectorEventLoop):
        def add_reader(self, *args: object) -> None:
            raise NotImplementedError

    topic = make_topic()

    async def main() -> list[int]:
        async with topic.new_producer() as producer:
            deliveries = await asyncio.gather(
                *(producer.produce_async(Invalidate(seq=i), Invalidate(seq=i)) for i in range(4))
            )
        return [len(d) for d in deliveries]

    loop = NoReaders()
    try:
        assert loop.run_until_complete(asyncio.wait_for(main(), 30)) == [2, 2, 2, 2]
    finally:
        loop.close()


def test_produce_async_whose_loop_is_closed_first_lets_the_producer_close(make_topic) -> None:
    """Calls given up on (cancelled) on a loop that is then closed while their events are in
    flight: the producer still closes, with every event acknowledged and counted."""
    topic = make_topic()
    producer = topic.new_producer()
    loop = asyncio.new_event_loop()
    try:
        tasks = [
            loop.create_task(producer.produce_async(Invalidate(seq=i), Invalidate(seq=i)))
            for i in range(3)
        ]
        loop.run_until_complete(asyncio.sleep(0))  # each call has handed its events over
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    finally:
        loop.close()
    assert producer.flush(30) == 0
    producer.close(timeout=30)
    metrics = producer.metrics()
    assert (metrics.calls, metrics.acknowledged) == (3, 6)
