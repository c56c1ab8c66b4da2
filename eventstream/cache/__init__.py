"""The coherent near cache: a read-through cache that a topic's events keep coherent across the
instances of a service (:class:`Cache`, made by ``Topic.new_cache``), and what it is built
from.

- :mod:`~eventstream.cache.cache`: :class:`Cache`, the public face (gets, states, threads).
- :mod:`~eventstream.cache.core`: the state under one lock (epochs, the serving check, fills).
- :mod:`~eventstream.cache.store`: entries (LRU, TTL) and fill tokens.
- :mod:`~eventstream.cache.staleness`: the staleness bound from probe answers.
- :mod:`~eventstream.cache.feed`: what the cache needs from its consumer (:class:`Feed`).
- :mod:`~eventstream.cache.consumer_feed`: the :class:`Feed` of ``Topic.new_cache``, over the
  consumer runtime both backends share.
- :mod:`~eventstream.cache.probe`: the topic's end offsets, asked of the broker (:class:`Probe`).
- :mod:`~eventstream.cache.barrier`: waiting until every live instance applied a token.
- :mod:`~eventstream.cache.verifier`: re-reading sampled hits to count stale ones.
- :mod:`~eventstream.cache.status`: :class:`CacheStatus`, :class:`CacheMetrics`.
"""

from eventstream.cache.barrier import AppliedBarrier, wait_applied
from eventstream.cache.cache import Cache
from eventstream.cache.feed import Feed, FeedSink
from eventstream.cache.probe import AdminProbe, Probe
from eventstream.cache.status import CacheMetrics, CacheState, CacheStatus, FlushReason

__all__ = [
    "AdminProbe",
    "AppliedBarrier",
    "Cache",
    "CacheMetrics",
    "CacheState",
    "CacheStatus",
    "Feed",
    "FeedSink",
    "FlushReason",
    "Probe",
    "wait_applied",
]
