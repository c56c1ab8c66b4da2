"""The asyncio API: produce_async from a coroutine, async handlers on the application's loop,
aclose."""

from __future__ import annotations

import asyncio
import logging
import threading

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
