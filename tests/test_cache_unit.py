"""The cache over a fake feed, a fake probe and a fake clock: hits and misses, single-flight,
fills that never outlive an invalidation (G0), LRU and TTL, states and flushes, read-your-writes,
asyncio, metrics, status and the verifier."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from typing import Any

import pytest
from cache_fakes import WAIT, Background, FakeFeed, FakeProbe, Gate, Source, running, serve

from eventstream import (
    ArgumentTypeError,
    BrokerError,
    ClosedError,
    ConfigError,
    EventStreamError,
    GapError,
    Token,
    WaitTimeoutError,
)
from eventstream.cache import Cache

# -- hits, misses, single-flight ------------------------------------------------------------


def test_a_miss_loads_and_stores_then_hits_take_no_load() -> None:
    source = Source()
    source.write("a")
    with running(source.load) as (cache, feed, probe, _):
        serve(feed, probe)
        assert cache.get("a") == 1
        assert cache.get("a") == 1
        assert source.loads == ["a"]
        metrics = cache.metrics()
        assert (metrics.hits, metrics.misses, metrics.entries) == (1, 1, 1)


def test_while_not_ready_every_get_loads_and_nothing_is_stored() -> None:
    source = Source()
    with running(source.load) as (cache, _, _, _):
        assert cache.status.state == "not_ready"
        cache.get("a")
        cache.get("a")
        assert source.loads == ["a", "a"]
        metrics = cache.metrics()
        assert (metrics.bypassed, metrics.hits, metrics.entries) == (2, 0, 0)


def test_concurrent_misses_of_a_key_share_one_load() -> None:
    source = Source()
    source.write("a")
    gate = Gate(source)
    with running(gate) as (cache, feed, probe, clock):
        serve(feed, probe)
        first = Background(lambda: cache.get("a"), "first")
        assert gate.entered.wait(WAIT)
        decided = clock.read_by("second")  # read under the lock as the get decides to wait
        second = Background(lambda: cache.get("a"), "second")
        assert decided.wait(WAIT)
        gate.opened.set()  # storing the fill needs the lock, so it comes after that decision
        assert first.outcome() == second.outcome() == 1
        assert gate.calls == 1
        metrics = cache.metrics()
        assert (metrics.misses, metrics.coalesced, metrics.entries) == (1, 1, 1)


def test_a_failing_load_raises_to_every_waiter_and_stores_nothing() -> None:
    source = Source()
    gate = Gate(source, error=LookupError("the database is down"))
    with running(gate) as (cache, feed, probe, clock):
        serve(feed, probe)
        first = Background(lambda: cache.get("a"), "first")
        assert gate.entered.wait(WAIT)
        decided = clock.read_by("second")
        second = Background(lambda: cache.get("a"), "second")
        assert decided.wait(WAIT)
        gate.opened.set()
        for waiter in (first, second):
            with pytest.raises(LookupError, match="the database is down"):
                waiter.outcome()
        metrics = cache.metrics()
        assert (metrics.load_errors, metrics.entries, metrics.coalesced) == (1, 0, 1)
        gate.error = None
        assert cache.get("a") == 0  # nothing was stored: the next get loads again
        assert gate.calls == 2


# -- G0: a fill never outlives an invalidation -----------------------------------------------


@pytest.mark.parametrize("event", ["a", ["b", "a"], None], ids=["key", "keys", "flush"])
def test_a_value_loaded_before_an_invalidation_is_never_stored_after_it(event: Any) -> None:
    source = Source()
    source.write("a")
    gate = Gate(source)
    with running(gate) as (cache, feed, probe, _):
        serve(feed, probe)
        reader = Background(lambda: cache.get("a"), "reader")
        assert gate.entered.wait(WAIT)  # it read version 1
        source.write("a")  # the writer commits version 2, then publishes
        feed.deliver(event)  # ...and this cache applies the invalidation
        gate.opened.set()
        assert reader.outcome() == 1  # its read began before the write: fine to return
        assert cache.get("a") == 2  # but version 1 was not stored
        assert cache.metrics().fills_voided == 1


def test_a_value_loaded_before_a_flush_that_resets_is_never_stored() -> None:
    source = Source()
    gate = Gate(source)
    with running(gate) as (cache, feed, probe, _):
        serve(feed, probe, {0: 0, 1: 0})
        reader = Background(lambda: cache.get("a"), "reader")
        assert gate.entered.wait(WAIT)
        feed.take("lost", 1)
        gate.opened.set()
        reader.outcome()
        metrics = cache.metrics()
        assert (metrics.entries, metrics.fills_voided) == (0, 1)


# -- LRU and TTL -------------------------------------------------------------------------------


def test_max_entries_drops_the_least_recently_used() -> None:
    source = Source()
    with running(source.load, max_entries=2) as (cache, feed, probe, _):
        serve(feed, probe)
        for key in ("a", "b", "a", "c"):  # "b" is the least recently used when "c" comes
            cache.get(key)
        assert source.loads == ["a", "b", "c"]
        cache.get("a")
        cache.get("b")
        assert source.loads == ["a", "b", "c", "b"]
        assert cache.metrics().evictions == 2  # "b", then "c" to make room for "b"
        assert cache.metrics().entries == 2


def test_an_entry_older_than_the_ttl_is_loaded_again() -> None:
    source = Source()
    with running(source.load, ttl=5.0, max_staleness=100.0) as (cache, feed, probe, clock):
        serve(feed, probe)
        cache.get("a")
        clock.advance(4.9)
        cache.get("a")
        clock.advance(0.1)
        cache.get("a")
        assert source.loads == ["a", "a"]
        assert cache.metrics().expirations == 1


# -- states and transitions --------------------------------------------------------------------


def test_ready_only_once_a_probe_asked_after_the_flush_is_reached() -> None:
    with running(Source().load) as (cache, feed, probe, _):
        feed.ends = {0: 0}
        probe.wait_asked()  # this ask is stamped before the flush
        feed.assign({0: 0})
        probe.answer({0: 0})
        assert cache.status.state == "not_ready"
        probe.answer({0: 0})
        assert cache.status.state == "serving"
        cache.wait_ready(timeout=WAIT)


def test_not_ready_until_the_feed_moved_to_the_end() -> None:
    with running(Source().load, feed=FakeFeed(auto_skip=False)) as (cache, feed, probe, _):
        feed.ends = {0: 7}
        probe.wait_asked()
        feed.assign({0: 0})
        probe.answer({0: 7})
        probe.answer({0: 7})
        status = cache.status
        assert status.state == "not_ready" and "moving to the end" in status.reason
        assert feed.finish_skips() == 2  # the start's and the assignment's
        assert feed.positions() == {0: 7}
        probe.answer({0: 7})
        assert cache.status.state == "serving"


def test_not_ready_while_a_partition_of_the_topic_is_not_assigned_to_it() -> None:
    source = Source()
    with running(source.load) as (cache, feed, probe, _):
        serve(feed, probe, {0: 0})
        probe.answer({0: 0, 1: 0})  # the topic has two partitions: a flush, then...
        probe.answer({0: 0, 1: 0})
        status = cache.status
        assert status.state == "not_ready"
        assert "partitions 1 of the topic are not assigned" in status.reason
        cache.get("a")
        cache.get("a")
        assert source.loads == ["a", "a"]
        feed.assign({1: 0})
        probe.answer({0: 0, 1: 0})
        probe.answer({0: 0, 1: 0})
        assert cache.status.state == "serving"


def test_not_ready_while_behind_the_probe_then_serving_once_caught_up() -> None:
    with running(Source().load) as (cache, feed, probe, _):
        serve(feed, probe, {0: 0})
        feed.take("revoked", 0)
        feed.assign({0: 0})  # back at 0, and the skip moves it to ends[0] = 0
        probe.answer({0: 3})
        probe.answer({0: 3})
        status = cache.status
        assert status.state == "not_ready" and "3 events behind" in status.reason
        for offset in range(3):
            feed.deliver("k", offset=offset)
        probe.answer({0: 3})
        assert cache.status.state == "serving"


def test_degraded_when_the_bound_exceeds_max_staleness_then_serving_again() -> None:
    source = Source()
    with running(source.load, max_staleness=1.0) as (cache, feed, probe, clock):
        serve(feed, probe)
        cache.get("a")
        clock.advance(1.5)  # no answer since: the bound is 1.5 s
        status = cache.status
        assert status.state == "degraded" and status.staleness == pytest.approx(1.5)
        cache.get("a")  # no hit while degraded: the loader, and nothing stored
        assert source.loads == ["a", "a"]
        assert cache.metrics().entries == 1  # the entry is kept for later
        probe.answer({0: 0})  # asked before the clock moved: bound still 1.5 s
        assert cache.status.state == "degraded"
        probe.answer({0: 0})
        assert cache.status.state == "serving"
        cache.get("a")
        assert source.loads == ["a", "a"]  # a hit on the kept entry


def test_degraded_longer_than_the_ttl_flushes() -> None:
    with running(Source().load, max_staleness=1.0, ttl=10.0) as (cache, feed, probe, clock):
        serve(feed, probe)
        cache.get("a")
        clock.advance(11.5)  # degraded since 1 s after the last answer: 10.5 s > ttl
        probe.answer(TimeoutError("no broker"))
        status = cache.status
        assert status.state == "not_ready" and "longer than the TTL" in status.reason
        metrics = cache.metrics()
        assert (metrics.entries, metrics.flushes.get("degraded")) == (0, 1)


def _revoke(feed: FakeFeed, probe: FakeProbe) -> None:
    feed.take("revoked", 0)


def _lose(feed: FakeFeed, probe: FakeProbe) -> None:
    feed.take("lost", 0)


def _gap(feed: FakeFeed, probe: FakeProbe) -> None:
    assert feed.sink is not None
    feed.sink.gap(GapError("skipped", topic="t", partition=0, first_offset=0, resume_offset=9))


def _grow(feed: FakeFeed, probe: FakeProbe) -> None:
    probe.answer({0: 2, 1: 0})


def _truncate(feed: FakeFeed, probe: FakeProbe) -> None:
    probe.answer({0: 2})  # the ask that was waiting read the positions before the events
    probe.answer({0: 1})  # this one read position 2 before it asked


@pytest.mark.parametrize(
    ("trigger", "reason"),
    [
        (_revoke, "revoked"),
        (_lose, "lost"),
        (_gap, "gap"),
        (_grow, "topic_changed"),
        (_truncate, "topic_changed"),
    ],
    ids=["revoked", "lost", "gap", "partitions-added", "end-below-position"],
)
def test_a_possible_gap_flushes_and_makes_it_not_ready(trigger: Any, reason: str) -> None:
    source = Source()
    with running(source.load) as (cache, feed, probe, _):
        serve(feed, probe)
        for offset in range(2):
            feed.deliver("x", offset=offset)
        cache.get("a")
        trigger(feed, probe)
        status = cache.status
        assert status.state == "not_ready" and status.reason.startswith("flushed")
        metrics = cache.metrics()
        assert (metrics.entries, metrics.flushes.get(reason)) == (0, 1)
        cache.get("a")
        assert source.loads == ["a", "a"]


def test_a_failed_consumer_flushes_for_good_and_wait_ready_raises_it() -> None:
    error = BrokerError("fenced", code=82, name="FENCED_INSTANCE_ID", retriable=False, fatal=True)
    with running(Source().load) as (cache, feed, probe, _):
        serve(feed, probe)
        cache.get("a")
        assert feed.sink is not None
        feed.sink.failed(error)
        probe.answer({0: 0})
        probe.answer({0: 0})
        status = cache.status
        assert (status.state, status.error) == ("not_ready", error)
        assert cache.metrics().flushes.get("failure") == 1
        with pytest.raises(BrokerError, match="fenced"):
            cache.wait_ready(timeout=WAIT)


def test_an_event_without_keys_flushes_but_keeps_serving() -> None:
    with running(Source().load) as (cache, feed, probe, _):
        serve(feed, probe)
        cache.get("a")
        feed.deliver(None)
        assert cache.status.state == "serving"
        metrics = cache.metrics()
        assert (metrics.entries, metrics.flushes.get("event")) == (0, 1)


def test_keys_that_raise_flush_and_are_logged() -> None:
    def keys(event: Any) -> str:
        raise ValueError(f"no key in {event!r}")

    with running(Source().load, keys=keys) as (cache, feed, probe, _):
        serve(feed, probe)
        cache.get("a")
        feed.deliver("x")
        metrics = cache.metrics()
        assert (metrics.entries, metrics.flushes.get("keys_error")) == (0, 1)


def test_the_user_handler_runs_after_the_invalidation() -> None:
    seen: list[tuple[Any, int]] = []
    holder: list[Cache[str, Any]] = []

    def on_event(event: Any) -> None:
        seen.append((event, holder[0].metrics().invalidations))

    with running(Source().load, on_event=on_event) as (cache, feed, probe, _):
        holder.append(cache)
        serve(feed, probe)
        feed.deliver("a")
        assert seen == [("a", 1)]


def test_wait_ready_times_out_saying_what_it_waits_for() -> None:
    with (
        running(Source().load) as (cache, _, _, _),
        pytest.raises(WaitTimeoutError, match=r"not serving .*waiting for a probe answer"),
    ):
        cache.wait_ready(timeout=0.05)


# -- read-your-writes --------------------------------------------------------------------------


def test_get_after_a_token_waits_until_it_is_applied() -> None:
    source = Source()
    source.write("a")
    with running(source.load) as (cache, feed, probe, clock):
        serve(feed, probe)
        assert cache.get("a") == 1
        source.write("a")  # the writer's produce returned {0: 1}
        decided = clock.read_by("reader")
        reader = Background(lambda: cache.get("a", after=Token({0: 1})), "reader")
        assert decided.wait(WAIT)  # it looked, and the cache had not applied offset 0
        feed.deliver("a", offset=0)
        assert reader.outcome() == 2


def test_get_after_a_token_times_out_when_it_is_not_applied() -> None:
    with running(Source().load) as (cache, feed, probe, _):
        serve(feed, probe)
        with pytest.raises(WaitTimeoutError, match=r"has not applied Token\(\{0: 5\}\)"):
            cache.get("a", after=Token({0: 5}), timeout=0.05)


def test_get_after_a_token_loads_at_once_when_not_serving() -> None:
    source = Source()
    with running(source.load) as (cache, _, _, _):
        assert cache.get("a", after=Token({0: 5}), timeout=WAIT) == 0
        assert source.loads == ["a"]


def test_a_record_the_cache_never_sees_still_advances_its_token() -> None:
    with running(Source().load) as (cache, feed, probe, _):
        serve(feed, probe)
        feed.move(0, 1)  # the feed skipped a record that does not decode
        probe.answer({0: 1})  # the probe round reads the feed's positions
        assert cache.get("a", after=Token({0: 1}), timeout=WAIT) == 0


# -- asyncio -----------------------------------------------------------------------------------


def test_aget_with_a_sync_loader() -> None:
    source = Source()
    source.write("a")
    with running(source.load) as (cache, feed, probe, _):
        serve(feed, probe)

        async def main() -> list[int]:
            return [await cache.aget("a"), await cache.aget("a")]

        assert asyncio.run(main()) == [1, 1]
        assert source.loads == ["a"]


def test_aget_with_an_async_loader_shares_one_load_between_tasks() -> None:
    source = Source()
    source.write("a")
    entered, opened = asyncio.Event(), asyncio.Event()  # bound to the loop at first use

    async def load(key: str) -> int:
        entered.set()
        await opened.wait()
        return source.load(key)

    async def main(cache: Cache[str, Any]) -> list[int]:
        first = asyncio.create_task(cache.aget("a"))
        await entered.wait()
        second = asyncio.create_task(cache.aget("a"))
        await asyncio.sleep(0)  # it runs up to its first await: it joined the load under way
        opened.set()
        return [await first, await second]

    with running(load) as (cache, feed, probe, _):
        serve(feed, probe)
        assert asyncio.run(main(cache)) == [1, 1]
        assert source.loads == ["a"]
        assert cache.metrics().coalesced == 1


def test_aget_after_a_token_waits_without_blocking_the_loop() -> None:
    source = Source()
    with running(source.load) as (cache, feed, probe, clock):
        serve(feed, probe)

        async def main() -> int:
            decided = clock.read_by("MainThread")
            task = asyncio.create_task(cache.aget("a", after=Token({0: 1})))
            await asyncio.sleep(0)
            assert decided.is_set() and not task.done()
            source.write("a")
            await asyncio.to_thread(feed.deliver, "a", 0, 0)  # the poll thread applies it
            return await task

        assert asyncio.run(main()) == 1


def test_get_with_an_async_loader_runs_it_on_the_loop_of_aget() -> None:
    source = Source()

    async def load(key: str) -> int:
        return source.load(key)

    with running(load) as (cache, feed, probe, _):
        serve(feed, probe)

        async def on_the_loop() -> int:
            await cache.aget("a")
            return cache.get("b")  # would block the loop it needs

        with pytest.raises(ArgumentTypeError, match="call aget"):
            asyncio.run(on_the_loop())

        async def from_a_thread() -> int:
            await cache.aget("a")
            return await asyncio.to_thread(cache.get, "c")

        assert asyncio.run(from_a_thread()) == 0
        assert source.loads == ["a", "c"]  # "a" was stored by the first aget


# -- metrics, status, verifier, close ----------------------------------------------------------


def test_status_and_metrics_say_what_happened() -> None:
    source = Source()
    with running(source.load, max_staleness=2.0) as (cache, feed, probe, clock):
        assert cache.status.staleness is None
        serve(feed, probe)
        cache.get("a")
        cache.get("a")
        feed.deliver("a")
        clock.advance(0.5)
        status = cache.status
        assert (status.state, status.max_staleness) == ("serving", 2.0)
        assert status.staleness == pytest.approx(0.5)
        assert "within max_staleness 2 s" in status.reason
        metrics = cache.metrics()
        assert (metrics.hits, metrics.misses, metrics.invalidations, metrics.events) == (
            1,
            1,
            1,
            1,
        )
        assert metrics.flushes == {"assigned": 1}
        assert metrics.staleness == pytest.approx(0.5)


def test_the_probe_failing_shows_in_the_status() -> None:
    with running(Source().load) as (cache, feed, probe, clock):
        serve(feed, probe)
        clock.advance(2.0)
        error = EventStreamError("no broker answers")
        probe.answer(error)
        status = cache.status
        assert status.state == "degraded" and status.error is error
        assert "the probe has no answer: no broker answers" in status.reason


class _Records(logging.Handler):
    def __init__(self, needle: str) -> None:
        super().__init__()
        self.needle = needle
        self.found = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.found.set()


def test_the_verifier_counts_a_hit_the_source_still_disagrees_with() -> None:
    source = Source()
    source.write("a")
    logger = logging.getLogger(f"test.cache.{uuid.uuid4().hex}")
    records = _Records("stale hit")
    logger.addHandler(records)
    settings: dict[str, Any] = {"verify_fraction": 1.0, "max_staleness": 1.0, "logger": logger}
    with running(source.load, **settings) as (cache, feed, probe, clock):
        serve(feed, probe)
        cache.get("a")
        source.write("a")  # ... and its invalidation is lost
        stamped = clock.read_by("eventstream-cache-verifier")  # its first read: the stamp
        assert cache.get("a") == 1  # a sampled hit
        probe.answer({0: 0})  # the round wakes the verifier: it sees the difference
        assert stamped.wait(WAIT)
        clock.advance(5.0)
        probe.answer({0: 0})
        probe.answer({0: 0})  # asked 5 s later and reached: still cached, still different
        assert records.found.wait(WAIT)
        metrics = cache.metrics()
        assert (metrics.verified, metrics.stale_hits) == (1, 1)


def test_the_verifier_does_not_count_a_hit_whose_invalidation_came() -> None:
    source = Source()
    source.write("a")
    with running(source.load, verify_fraction=1.0) as (cache, feed, probe, clock):
        serve(feed, probe)
        cache.get("a")
        source.write("a")
        stamped = clock.read_by("eventstream-cache-verifier")
        cache.get("a")  # a sampled hit, about to be invalidated
        probe.answer({0: 0})
        assert stamped.wait(WAIT)
        feed.deliver("a")
        clock.advance(5.0)
        probe.answer({0: 1})
        probe.answer({0: 1})
        probe.release()
        cache.close(timeout=WAIT)  # joins the verifier: its counts are final
        metrics = cache.metrics()
        assert (metrics.verified, metrics.stale_hits) == (1, 0)


def test_close_ends_gets_and_voids_the_loads_under_way() -> None:
    source = Source()
    gate = Gate(source)
    with running(gate) as (cache, feed, probe, _):
        serve(feed, probe)
        reader = Background(lambda: cache.get("a"), "reader")
        assert gate.entered.wait(WAIT)
        probe.release()
        cache.close(timeout=WAIT)
        gate.opened.set()
        assert reader.outcome() == 0
        assert feed.closed and cache.status.state == "closed"
        assert cache.metrics().entries == 0
        with pytest.raises(ClosedError):
            cache.get("a")


def test_settings_are_checked() -> None:
    feed, probe = FakeFeed(), FakeProbe()
    with pytest.raises(ConfigError, match="max_staleness: must exceed probe_interval"):
        Cache(feed, probe, Source().load, keys=str, max_staleness=0.2, probe_interval=0.25)
    with pytest.raises(ConfigError, match="max_entries"):
        Cache(feed, probe, Source().load, keys=str, max_entries=0)
    with pytest.raises(ArgumentTypeError, match="loader must be a function"):
        Cache(feed, probe, "not a loader", keys=str)  # type: ignore[call-overload]
    assert feed.sink is None  # nothing was started


# -- the end-offsets probe ------------------------------------------------------------------


class _Answer:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class _ListOffsetsCalls:
    """AdminCalls as the probe uses them, answering each ListOffsets from ``answers`` in turn
    (one {partition: offset} per request), as librdkafka did while a leader was killed: no
    error, and no offset (-1001) for the partition between leaders."""

    def __init__(self, answers: list[dict[int, int]]) -> None:
        self.answers = answers
        self.asked = 0

    def partitions(self, topic: str, deadline: float) -> list[int]:
        return sorted(self.answers[0])

    def list_offsets(self, partitions: Any, spec: Any, deadline: float) -> dict[Any, int]:
        answer = self.answers[min(self.asked, len(self.answers) - 1)]
        self.asked += 1
        return {tp: answer[tp.partition] for tp in partitions}

    def result(self, future: int, deadline: float, what: str, error: type) -> _Answer:
        return _Answer(future)


def _probe(answers: list[dict[int, int]], timeout: float) -> tuple[Any, _ListOffsetsCalls]:
    from eventstream import TopicConfig
    from eventstream.cache import AdminProbe

    probe = AdminProbe(
        TopicConfig(brokers="127.0.0.1:9", topic="t", instance_id="p"), timeout=timeout
    )
    calls = _ListOffsetsCalls(answers)
    probe._calls = calls  # type: ignore[assignment]
    return probe, calls


def test_the_probe_never_takes_a_partition_without_an_offset_for_an_end() -> None:
    # Taken as an end, -1001 read as a truncated topic: every cache flushed itself and a
    # read-your-writes get answered from before the write (seen with a killed leader).
    probe, calls = _probe([{0: -1001, 1: 7}, {0: -1001, 1: 7}, {0: 41, 1: 7}], WAIT)
    assert probe.end_offsets() == {0: 41, 1: 7}
    assert calls.asked == 3
    probe, _ = _probe([{0: -1001, 1: 7}], 0.2)
    with pytest.raises(BrokerError, match="partition 0 has no end offset") as info:
        probe.end_offsets()
    assert info.value.retriable


class _Native:
    def __init__(self, highs: list[int]) -> None:
        self.highs = highs
        self.seeks: list[dict[int, int]] = []
        self.commits: list[dict[int, int]] = []

    def positions(self) -> dict[int, int]:
        return {0: 5}

    def watermarks(self, partitions: list[int], timeout_ms: int) -> tuple[list[int], list[int]]:
        return [0], [self.highs.pop(0) if len(self.highs) > 1 else self.highs[0]]

    def seek(self, offsets: dict[int, int]) -> None:
        self.seeks.append(dict(offsets))

    def store(self, offsets: dict[int, int]) -> None:
        pass

    def commit(self, offsets: dict[int, int]) -> None:
        self.commits.append(dict(offsets))


class _Runtime:
    def __init__(self, native: _Native) -> None:
        self.native = native

    def call_soon(self, fn: Any) -> None:
        fn()


def test_moving_to_the_end_waits_for_partitions_that_have_an_end() -> None:
    from eventstream.cache.consumer_feed import ConsumerFeed

    native = _Native([-1001, -1001, 50])
    feed = ConsumerFeed(_Runtime(native), "t", "T", logging.getLogger("test"))  # type: ignore[arg-type]
    done = threading.Event()
    feed._skip(done.set)
    assert done.wait(WAIT)
    assert native.seeks == native.commits == [{0: 50}]
