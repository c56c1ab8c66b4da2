"""The cache of a no-op topic (``new_noop_topic``): :class:`NoopCache` over a feed that never
reaches the end of the topic, so it never serves a hit and every get calls the loader."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

from eventstream.cache.cache import Cache
from eventstream.errors import ClosedError

__all__ = ["NoopCache", "NoopFeed", "NoopProbe"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class NoopFeed:
    """A no-op topic's cache feed: no events, and never at the end of the topic, so the cache
    never serves a hit (a no-op producer publishes nothing either)."""

    def start(self, sink: object) -> None:
        pass

    def positions(self) -> Mapping[int, int]:
        return {}

    def skip_to_end(self, done: Callable[[], None]) -> None:
        pass

    def close(self, timeout: float | None) -> None:
        pass


class NoopProbe:
    def end_offsets(self) -> Mapping[int, int]:
        return {}


class NoopCache(Cache[K, V]):
    """A no-op topic's cache: every get calls the loader (see :meth:`Topic.new_cache`)."""

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Returns at once: there is nothing to wait for (the cache never serves a hit)."""
        if self.closed:
            raise ClosedError(f"cache of {self!r} is closed")
