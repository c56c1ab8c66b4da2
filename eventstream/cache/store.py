"""The slot map of a cache: :class:`SlotStore`.

A key's slot holds either an entry (a value, kept in least-recently-used order and dropped once
older than the TTL) or a fill token: the future of the one load in progress for that key. A miss
puts a new token in the slot; the load's value is stored only if the slot still holds *that*
token when it arrives. An invalidation empties the slot and a flush replaces the whole map, so a
value loaded before either can never be stored after it. Callers that miss while a token is in
the slot wait for its future instead of loading again (single-flight).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from concurrent.futures import Future
from typing import Generic, TypeVar

__all__ = ["Entry", "SlotStore"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Entry(Generic[V]):
    """A stored value and the clock time at which it expires."""

    __slots__ = ("expires", "value")

    def __init__(self, value: V, expires: float) -> None:
        self.value = value
        self.expires = expires


class SlotStore(Generic[K, V]):
    """Entries and fill tokens by key. Not thread-safe: the cache uses it under its lock.

    ``max_entries`` bounds the entries (fill tokens are not counted: there is at most one per
    load in progress); storing beyond it drops the least recently used entry.
    """

    __slots__ = ("_entries", "_fills", "evictions", "expirations", "max_entries", "ttl")

    def __init__(self, max_entries: int, ttl: float) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self._entries: OrderedDict[K, Entry[V]] = OrderedDict()
        self._fills: dict[K, Future[V]] = {}
        self.evictions = 0
        self.expirations = 0

    def __len__(self) -> int:
        return len(self._entries)

    def hit(self, key: K, now: float) -> Entry[V] | None:
        """The entry of ``key`` if it has not expired at ``now`` (it becomes the most recently
        used); an expired entry is dropped."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now >= entry.expires:
            del self._entries[key]
            self.expirations += 1
            return None
        self._entries.move_to_end(key)
        return entry

    def peek(self, key: K) -> Entry[V] | None:
        """The entry of ``key``, expired or not, without touching its LRU place."""
        return self._entries.get(key)

    def filling(self, key: K) -> Future[V] | None:
        """The token of the load in progress for ``key``, if any."""
        return self._fills.get(key)

    def begin(self, key: K) -> Future[V]:
        """Put a new fill token in the slot of ``key`` (which holds no entry) and return it. The
        token is a future that cannot be cancelled: the loader's result or error is set on it
        and reaches every caller waiting for it."""
        fill: Future[V] = Future()
        fill.set_running_or_notify_cancel()
        self._fills[key] = fill
        return fill

    def finish(self, key: K, fill: Future[V], value: V, now: float) -> bool:
        """Store ``value`` loaded by ``fill`` if the slot of ``key`` still holds that token;
        ``False`` if an invalidation or a flush voided it."""
        if self._fills.get(key) is not fill:
            return False
        del self._fills[key]
        self._entries[key] = Entry(value, now + self.ttl)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.evictions += 1
        return True

    def abandon(self, key: K, fill: Future[V]) -> None:
        """Empty the slot of ``key`` if it still holds ``fill`` (its load failed)."""
        if self._fills.get(key) is fill:
            del self._fills[key]

    def invalidate(self, key: K) -> None:
        """Empty the slot of ``key``: drop its entry, void its fill token."""
        self._entries.pop(key, None)
        self._fills.pop(key, None)

    def clear(self) -> None:
        """Drop every entry and void every fill token."""
        self._entries = OrderedDict()
        self._fills = {}
