"""Paths where a call meets close(), garbage collection or another thread early: none may crash,
hang or leave a caller waiting forever."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref

import pytest
from support import closed_port
from testevents_pb2 import Invalidate

import eventstream
from eventstream import ClosedError, ProduceError

pytestmark = pytest.mark.timeout(120)


def _produce_one(
    producer: eventstream.Producer[Invalidate], start: threading.Barrier, result: list[str]
) -> None:
    start.wait()
    try:
        producer.produce(Invalidate(seq=1), timeout=30)
        result.append("sent")
    except ClosedError:
        result.append("closed")
    except ProduceError as exc:
        result.append(f"failed {exc.name}")


def test_close_racing_the_first_produce(kafka_bootstrap: str, topic_name: str) -> None:
    """The first produce() creates the client; a close() on another thread at that moment must
    either stop the call (ClosedError, or ProduceError for events it failed) or let it finish,
    and never destroy the client under it."""
    config = eventstream.TopicConfig(brokers=kafka_bootstrap, topic=topic_name, instance_id="race")
    outcomes: dict[str, int] = {}
    for _ in range(40):
        topic = eventstream.new_topic(Invalidate, config)
        producer = topic.new_producer()
        start = threading.Barrier(2)
        result: list[str] = []
        thread = threading.Thread(target=_produce_one, args=(producer, start, result))
        thread.start()
        start.wait()
        producer.close(timeout=5)
        thread.join(60)
        assert not thread.is_alive(), "produce() hangs after close()"
        assert producer.status.state == "closed"
        outcomes[result[0]] = outcomes.get(result[0], 0) + 1
        topic.close()
    assert set(outcomes) <= {"sent", "closed", "failed _DESTROY", "failed _PURGE_QUEUE"}, outcomes


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_pending_async_calls_of_a_backend_producer_dropped_unclosed_are_settled() -> None:
    """Through the public API an awaiting coroutine keeps its producer alive; a backend producer
    garbage-collected with produce_async() futures in flight (its events never reached a broker)
    fails them instead of leaving their awaiters hanging."""
    config = eventstream.TopicConfig(
        brokers=f"127.0.0.1:{closed_port()}", topic="nowhere", instance_id="svc-gc"
    )

    async def main() -> BaseException | None:
        topic = eventstream.new_topic(Invalidate, config)
        backend = topic.new_producer()._backend  # the test peeks: no public way to get one
        future, rest = backend.produce_async([Invalidate(seq=1)], asyncio.get_running_loop(), None)
        assert rest is None
        gone = weakref.ref(backend)
        topic._children.clear()
        del backend, topic
        gc.collect()
        assert gone() is None, "the backend producer is still alive"
        try:
            await asyncio.wait_for(future, 30)
        except ProduceError as exc:
            return exc
        return None

    error = asyncio.run(main())
    assert isinstance(error, ProduceError), error
    assert error.total == 1 and error.failed + error.in_doubt == 1
