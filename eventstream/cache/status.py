"""What a cache reports about itself: :class:`CacheStatus` and :class:`CacheMetrics`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["CacheMetrics", "CacheState", "CacheStatus", "FlushReason"]

#: ``not_ready``: no hits and no fills stored: starting, just flushed, not every partition of the
#: topic assigned to this cache, or not yet caught up with a probe asked after the flush;
#: ``serving``: hits are served, the staleness bound is within ``max_staleness``; ``degraded``:
#: the bound exceeds ``max_staleness`` (broker outage, lag, a slow handler): entries are kept,
#: every get goes to the loader, back to ``serving`` by itself once caught up; ``closed``.
CacheState = Literal["not_ready", "serving", "degraded", "closed"]

#: Why a cache dropped its entries. Those that may hide a gap in what it applied also make it
#: ``not_ready`` and move it to the end of the topic: ``assigned``, ``revoked``, ``lost``
#: (partition changes), ``gap`` (events skipped, an offset reset), ``topic_changed`` (a partition
#: count that changed, an end offset below the applied position: the topic was recreated or
#: truncated), ``degraded`` (degraded for longer than the TTL), ``failure`` (the consumer
#: stopped). The others keep it serving: ``event`` (``keys(event)`` returned ``None``) and
#: ``keys_error`` (``keys(event)`` raised, so which keys it touched is unknown).
FlushReason = Literal[
    "assigned",
    "revoked",
    "lost",
    "gap",
    "topic_changed",
    "degraded",
    "failure",
    "event",
    "keys_error",
]


@dataclass(frozen=True, slots=True)
class CacheStatus:
    """A snapshot of a cache's state.

    ``reason`` says why it is in ``state``, in words. ``staleness`` is the staleness bound in
    seconds (``None`` while ``not_ready``): a hit now reflects every invalidation whose produce
    call returned more than that long ago; hits are served while it is at most
    ``max_staleness``. ``error`` is what stopped the consumer, else the probe's latest failure
    while it has no answer, else ``None``.
    """

    state: CacheState
    reason: str
    staleness: float | None
    max_staleness: float
    error: Exception | None = None


@dataclass(frozen=True, slots=True)
class CacheMetrics:
    """A cache's counts since it was made.

    ``hits``: gets served from an entry; ``misses``: gets that ran the loader to fill an entry;
    ``coalesced``: gets that waited for a load another caller had started (single-flight);
    ``bypassed``: gets while not serving, each of which ran the loader and stored nothing;
    ``load_errors``: loader calls that raised; ``fills_voided``: loads whose value was not stored
    because an invalidation or a flush came first; ``invalidations``: keys invalidated;
    ``evictions``: entries dropped for ``max_entries`` (least recently used first);
    ``expirations``: entries found older than the TTL; ``events``: events applied;
    ``flushes``: flushes by :data:`FlushReason`; ``verified``: hits the verifier re-read from the
    loader; ``stale_hits``: those whose value still differed from the source after
    ``max_staleness``; ``entries``: entries held now; ``staleness``: the staleness bound now
    (``None`` while ``not_ready``).
    """

    entries: int = 0
    hits: int = 0
    misses: int = 0
    coalesced: int = 0
    bypassed: int = 0
    load_errors: int = 0
    fills_voided: int = 0
    invalidations: int = 0
    evictions: int = 0
    expirations: int = 0
    events: int = 0
    flushes: Mapping[str, int] = field(default_factory=dict[str, int])
    verified: int = 0
    stale_hits: int = 0
    staleness: float | None = None
