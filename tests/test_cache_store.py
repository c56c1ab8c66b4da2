"""The cache's building blocks on their own: the slot store (fill tokens, LRU, TTL) and the
staleness bound from probe answers."""

from __future__ import annotations

from eventstream.cache.staleness import Staleness
from eventstream.cache.store import SlotStore


def test_a_fill_is_stored_only_while_its_token_holds_the_slot() -> None:
    store: SlotStore[str, int] = SlotStore(max_entries=10, ttl=60.0)
    fill = store.begin("a")
    assert store.filling("a") is fill
    assert store.finish("a", fill, 1, now=0.0)
    entry = store.hit("a", now=1.0)
    assert entry is not None and entry.value == 1
    assert store.filling("a") is None


def test_an_invalidation_voids_the_fill_under_way() -> None:
    store: SlotStore[str, int] = SlotStore(max_entries=10, ttl=60.0)
    old = store.begin("a")
    store.invalidate("a")
    new = store.begin("a")  # a miss after the invalidation starts its own load
    assert not store.finish("a", old, 1, now=0.0)  # the old value never lands
    assert store.filling("a") is new
    assert store.finish("a", new, 2, now=0.0)
    entry = store.hit("a", now=0.0)
    assert entry is not None and entry.value == 2


def test_a_clear_voids_every_fill_and_drops_every_entry() -> None:
    store: SlotStore[str, int] = SlotStore(max_entries=10, ttl=60.0)
    done = store.begin("a")
    store.finish("a", done, 1, now=0.0)
    pending = store.begin("b")
    store.clear()
    assert len(store) == 0
    assert not store.finish("b", pending, 2, now=0.0)
    assert store.hit("a", now=0.0) is None and store.hit("b", now=0.0) is None


def test_an_abandoned_fill_empties_only_its_own_slot() -> None:
    store: SlotStore[str, int] = SlotStore(max_entries=10, ttl=60.0)
    old = store.begin("a")
    store.invalidate("a")
    new = store.begin("a")
    store.abandon("a", old)  # the old load failed late: the new one keeps the slot
    assert store.filling("a") is new
    store.abandon("a", new)
    assert store.filling("a") is None


def test_the_least_recently_used_entry_goes_first() -> None:
    store: SlotStore[str, int] = SlotStore(max_entries=2, ttl=60.0)
    for key in ("a", "b"):
        store.finish(key, store.begin(key), 0, now=0.0)
    assert store.hit("a", now=0.0) is not None  # "b" is now the least recently used
    store.finish("c", store.begin("c"), 0, now=0.0)
    assert len(store) == 2 and store.evictions == 1
    assert store.peek("b") is None
    assert store.peek("a") is not None and store.peek("c") is not None


def test_an_entry_expires_at_its_ttl_whether_or_not_it_is_read() -> None:
    store: SlotStore[str, int] = SlotStore(max_entries=10, ttl=5.0)
    store.finish("a", store.begin("a"), 1, now=100.0)
    assert store.hit("a", now=104.9) is not None  # a hit does not extend the TTL
    assert store.hit("a", now=105.0) is None
    assert store.expirations == 1 and len(store) == 0


def test_the_bound_is_the_ask_time_of_the_newest_answer_reached() -> None:
    staleness = Staleness(window=8)
    staleness.add(10.0, {0: 5, 1: 3})
    staleness.add(11.0, {0: 7, 1: 3})
    staleness.advance({0: 6, 1: 3})  # past the first answer, not the second
    assert staleness.reached_at == 10.0
    assert staleness.bound(12.5) == 2.5
    staleness.advance({0: 7, 1: 3})
    assert staleness.reached_at == 11.0


def test_an_answer_is_reached_only_with_every_partition_of_the_topic() -> None:
    staleness = Staleness(window=8)
    staleness.add(10.0, {0: 0, 1: 0})
    staleness.advance({0: 100})  # partition 1 is not this cache's
    assert staleness.reached_at is None
    assert staleness.behind({0: 100}) == ([1], 0)


def test_a_reset_forgets_the_answers() -> None:
    staleness = Staleness(window=8)
    staleness.add(10.0, {0: 0})
    staleness.advance({0: 0})
    staleness.add(11.0, {0: 5})
    staleness.reset()
    staleness.advance({0: 5})
    assert staleness.reached_at is None and staleness.bound(20.0) is None


def test_a_full_window_drops_the_oldest_answers_only() -> None:
    staleness = Staleness(window=2)
    for asked_at, end in ((1.0, 1), (2.0, 2), (3.0, 3)):
        staleness.add(asked_at, {0: end})
    staleness.advance({0: 1})  # the answer it reached was dropped: nothing claimed
    assert staleness.reached_at is None
    staleness.advance({0: 3})
    assert staleness.reached_at == 3.0


def test_a_topic_change_is_a_new_partition_count_or_an_end_below_a_position() -> None:
    staleness = Staleness(window=8)
    assert staleness.topic_changed({0: 5, 1: 5}, before={0: 5, 1: 2}) is None
    assert staleness.topic_changed({0: 9, 1: 9}, before={0: 5}) is None
    grown = staleness.topic_changed({0: 9, 1: 9, 2: 0}, before={})
    assert grown is not None and "from 2 to 3" in grown
    truncated = staleness.topic_changed({0: 1, 1: 9, 2: 0}, before={0: 5})
    assert truncated is not None and "partition 0 ends at offset 1" in truncated
