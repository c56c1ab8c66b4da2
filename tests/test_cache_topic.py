"""``Topic.new_cache`` and ``Topic.wait_applied`` on the real broker, over the library's own
consumer runtime (both backends): serving soon after start, invalidations applied, read-your-
writes, the barrier across instances, one member per topic and instance, and the fill race."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from cache_fakes import Background, Source
from confluent_kafka.admin import AdminClient, NewTopic
from support import WAIT, ErrorLog, impersonate_static_member, wait_until
from testevents_pb2 import Invalidate

import eventstream
from eventstream import GroupConflictError, Topic, TopicConfig, WaitTimeoutError


def _cache(topic: Topic[Any], source: Source, **settings: Any) -> eventstream.Cache[str, int]:
    settings.setdefault("max_staleness", 2.0)
    cache: eventstream.Cache[str, int] = topic.new_cache(
        source.load, keys=lambda event: event.key, **settings
    )
    return cache


def test_a_cache_over_its_topic_serves_applies_invalidations_and_reads_its_writes(
    make_topic: Callable[..., Topic[Any]],
) -> None:
    topic = make_topic(partitions=2)
    source = Source()
    cache = _cache(topic, source)
    cache.wait_ready(timeout=WAIT)
    assert cache.status.state == "serving"
    assert cache.get("user:1") == 0  # a miss, stored
    assert cache.get("user:1") == 0  # a hit
    assert source.loads == ["user:1"]
    producer = topic.new_producer(key=lambda event: event.key)
    source.write("user:1")  # the writer commits, then publishes
    deliveries = producer.produce(Invalidate(key="user:1", seq=1))
    assert cache.get("user:1", after=deliveries.token, timeout=WAIT) == 1
    assert cache.get("user:1") == 1  # stored again: a hit
    metrics = cache.metrics()
    assert metrics.invalidations == 1
    assert metrics.hits == 2
    topic.close()
    assert cache.closed


def test_wait_applied_covers_every_live_instance_and_names_the_one_behind(
    make_topic: Callable[..., Topic[Any]],
) -> None:
    a = make_topic(partitions=2, instance_id="inst-a")
    b = make_topic(create=False, instance_id="inst-b")
    held = threading.Event()
    release = threading.Event()

    def slow(event: Invalidate) -> None:  # instance b applies nothing while held
        if event.key == "hold":
            held.set()
            release.wait(WAIT)

    caches = [_cache(a, Source()), _cache(b, Source(), on_event=slow)]
    for cache in caches:
        cache.wait_ready(timeout=WAIT)
    producer = a.new_producer(key=lambda event: event.key)
    token = producer.produce(Invalidate(key="user:1", seq=1)).token
    a.wait_applied(token, timeout=WAIT)
    b.wait_applied(token, timeout=WAIT)  # any Topic of the same topic name asks the same
    stuck = producer.produce(Invalidate(key="hold", seq=2)).token
    assert held.wait(WAIT)
    try:
        with pytest.raises(WaitTimeoutError, match="instance 'inst-b'") as caught:
            a.wait_applied(stuck, timeout=1.0)
        assert "'inst-a'" not in str(caught.value)
    finally:
        release.set()
    a.wait_applied(stuck, timeout=WAIT)


def test_one_member_per_topic_and_instance(
    make_topic: Callable[..., Topic[Any]], make_config: Callable[..., TopicConfig]
) -> None:
    topic = make_topic()
    consumer = topic.new_consumer()
    with pytest.raises(GroupConflictError, match="on_event=") as caught:
        topic.new_cache(Source().load, keys=lambda event: event.key)
    assert isinstance(caught.value, ValueError)
    consumer.close()
    cache = _cache(topic, Source())  # the consumer is closed: the group is free
    with pytest.raises(GroupConflictError, match="on_event="):
        topic.new_consumer()
    with pytest.raises(GroupConflictError):
        topic.new_cache(Source().load, keys=lambda event: event.key)
    other = eventstream.new_topic(Invalidate, make_config())  # same instance, another Topic
    try:
        with pytest.raises(GroupConflictError):
            other.new_consumer()
        with pytest.raises(GroupConflictError):
            other.new_cache(Source().load, keys=lambda event: event.key)
    finally:
        other.close()
    cache.close()
    topic.new_consumer().close()  # the cache is closed: the group is free again


def test_a_fill_loaded_before_its_invalidation_is_never_served_after_it(
    make_topic: Callable[..., Topic[Any]],
) -> None:
    """The loader reads the old value and is held; the write and its invalidation land and are
    applied; the held load then returns the old value to its caller, but stores nothing: every
    later get sees the new value."""
    topic = make_topic()
    source = Source()
    loading = threading.Event()
    go_on = threading.Event()

    def held_load(key: str) -> int:
        value = source.load(key)
        if not go_on.is_set():
            loading.set()
            assert go_on.wait(WAIT)
        return value

    cache: eventstream.Cache[str, int] = topic.new_cache(
        held_load, keys=lambda event: event.key, max_staleness=2.0
    )
    cache.wait_ready(timeout=WAIT)
    first = Background(lambda: cache.get("user:1"), "held-get")
    assert loading.wait(WAIT)  # the old value (0) is loaded, not yet stored
    source.write("user:1")
    token = topic.new_producer(key=lambda e: e.key).produce(Invalidate(key="user:1")).token
    topic.wait_applied(token, timeout=WAIT)  # the invalidation is applied while the load is held
    go_on.set()
    assert first.outcome() == 0  # its caller began before the write
    assert cache.metrics().fills_voided == 1
    for _ in range(3):
        assert cache.get("user:1") == 1


def test_a_noop_topic_gives_a_cache_that_always_loads() -> None:
    topic = eventstream.new_noop_topic(Invalidate)
    source = Source()
    cache: eventstream.Cache[str, int] = topic.new_cache(source.load, keys=lambda e: e.key)
    cache.wait_ready(timeout=0.0)
    assert cache.get("a") == 0
    source.write("a")
    assert cache.get("a") == 1
    assert source.loads == ["a", "a"]
    topic.wait_applied(topic.new_producer().produce(Invalidate(key="a")).token, timeout=0.0)
    topic.close()
    with pytest.raises(eventstream.ClosedError):
        cache.get("a")


def test_a_consumer_that_stops_for_good_leaves_a_cache_that_only_loads(
    make_topic: Callable[..., Topic[Any]],
) -> None:
    """A BaseException from ``on_event`` stops the cache's consumer (as it stops any consumer):
    the runtime's on_failure hook tells the cache, which serves no hit from then on, says why,
    and whose close raises what stopped it."""
    topic = make_topic()
    source = Source()

    def on_event(event: Invalidate) -> None:
        if event.key == "stop":
            raise SystemExit("stopped by a handler")

    cache = _cache(topic, source, on_event=on_event)
    cache.wait_ready(timeout=WAIT)
    assert cache.get("user:1") == 0
    topic.new_producer(key=lambda e: e.key).produce(Invalidate(key="stop"))
    wait_until(lambda: cache.status.error is not None, "the cache to see its consumer stop")
    status = cache.status
    assert status.state == "not_ready"
    assert "stopped by a handler" in status.reason
    with pytest.raises(eventstream.EventStreamError, match="stopped by a handler"):
        cache.wait_ready(timeout=WAIT)
    source.write("user:1")
    assert cache.get("user:1") == 1  # the loader, not the entry stored before
    with pytest.raises(SystemExit):
        cache.close(WAIT)


def test_an_async_loader_serves_aget_with_read_your_writes(
    make_topic: Callable[..., Topic[Any]],
) -> None:
    topic = make_topic(partitions=2)
    source = Source()

    async def load(key: str) -> int:
        await asyncio.sleep(0)
        return source.load(key)

    cache: eventstream.Cache[str, int] = topic.new_cache(
        load, keys=lambda event: event.key, max_staleness=2.0
    )
    cache.wait_ready(timeout=WAIT)
    producer = topic.new_producer(key=lambda event: event.key)

    async def scenario() -> None:
        assert await cache.aget("user:1") == 0
        assert await cache.aget("user:1") == 0  # a hit
        source.write("user:1")
        deliveries = await producer.produce_async(Invalidate(key="user:1", seq=1))
        assert await cache.aget("user:1", after=deliveries.token, timeout=WAIT) == 1

    asyncio.run(scenario())
    assert source.loads == ["user:1", "user:1"]


def test_a_topic_recreated_under_the_cache_is_a_gap_that_flushes_it(
    make_topic: Callable[..., Topic[Any]], kafka_bootstrap: str
) -> None:
    """The consumer runtime's report of a recreated topic (a GapError per partition, then the
    old partitions lost and the new ones assigned) reaches the cache through the feed: it
    flushes, reads the new topic from its end, and serves again with the new topic's
    invalidations applied."""
    topic = make_topic(partitions=2)
    source = Source()
    cache = _cache(topic, source)
    cache.wait_ready(timeout=WAIT)
    producer = topic.new_producer(key=lambda event: event.key)
    producer.produce(*(Invalidate(key=f"other:{n}") for n in range(20)))
    assert cache.get("user:1") == 0
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.delete_topics([topic.name])[topic.name].result(WAIT)  # pyright: ignore[reportUnknownMemberType]
    deadline = time.monotonic() + WAIT
    while True:  # the broker may take a moment to finish the delete
        try:
            admin.create_topics([NewTopic(topic.name, 2, 1)])[topic.name].result(WAIT)  # pyright: ignore[reportUnknownMemberType]
            break
        except Exception as exc:
            if "already exists" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    wait_until(lambda: cache.metrics().flushes.get("gap", 0) > 0, "the recreated topic's gap")
    # The lost partitions flush it too, unless its probe saw the ends go back first
    # ("topic_changed"): which comes first depends on timing.
    flushes = cache.metrics().flushes
    assert flushes.get("lost", 0) + flushes.get("topic_changed", 0) > 0, flushes
    cache.wait_ready(timeout=WAIT)
    source.write("user:1")
    deliveries = producer.produce(Invalidate(key="user:1"), timeout=WAIT)
    assert cache.get("user:1", after=deliveries.token, timeout=WAIT) == 1
    assert cache.get("user:1") == 1


def test_a_cache_whose_member_is_fenced_once_flushes_rejoins_and_serves(
    make_topic: Callable[..., Topic[Any]],
) -> None:
    """A broker failure can fence a cache's static member by its own new member id; here a
    client that joins as the same member and goes away does the same. The cache flushes (its
    partitions are lost while the consumer rejoins with a new client), serves again, and applies
    the invalidations sent after the fencing."""
    errors = ErrorLog()
    topic = make_topic(partitions=2, instance_id="fenced-cache", on_error=errors)
    source = Source()
    cache = _cache(topic, source)
    cache.wait_ready(timeout=WAIT)
    assert cache.get("user:1") == 0
    impersonate_static_member(topic, "fenced-cache-0", WAIT)
    fenced = errors.wait_for(eventstream.BrokerError, WAIT)
    assert fenced.code == 82 and not fenced.fatal and "rejoins" in str(fenced), fenced
    wait_until(lambda: cache.metrics().flushes.get("lost", 0) > 0, "the cache to flush")
    cache.wait_ready(timeout=WAIT)
    source.write("user:1")
    deliveries = topic.new_producer(key=lambda e: e.key).produce(Invalidate(key="user:1"))
    assert cache.get("user:1", after=deliveries.token, timeout=WAIT) == 1
    assert cache.status.state == "serving"
    cache.close(WAIT)
