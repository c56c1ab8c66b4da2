"""The state of a cache, without threads, locks or I/O: :class:`CacheCore`.

:class:`~eventstream.cache.Cache` calls it under one lock, so each call is atomic: the serving
check and the fill-token check of a get happen together. The property tests drive it directly,
one step at a time.

Its life is a series of *epochs*. A flush that may hide a gap in what was applied (a partition
change, a gap, a changed topic, degraded for longer than the TTL, a failure) empties the store,
starts a new epoch and asks the feed to move to the end of the topic. The epoch becomes ready once
that move is done and the applied positions have reached, on every partition of the topic, the
end offsets of a probe asked during the epoch; from then on the cache serves hits while the
staleness bound (now minus the ask time of the newest probe answer reached) is within
``max_staleness``. Fills are stored only while ready: a fill started before the move could
otherwise miss an invalidation the move skipped.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Hashable, Iterable, Mapping
from concurrent.futures import Future
from typing import Generic, TypeVar

from eventstream._runtime.records import Token
from eventstream.cache.staleness import Staleness
from eventstream.cache.status import CacheMetrics, CacheStatus, FlushReason
from eventstream.cache.store import Entry, SlotStore
from eventstream.errors import EventStreamError

__all__ = ["BYPASS", "WAIT", "CacheCore", "Join", "Miss", "Start"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: Extra answers kept beyond ``max_staleness`` worth of probes, for answers that come late.
_SPARE_ANSWERS = 16
#: Sampled hits waiting for the verifier; beyond this the oldest are dropped.
_MAX_SAMPLES = 1024


class Miss:
    """What :meth:`CacheCore.decide` returns when it has no value to give."""

    __slots__ = ()


class Start(Miss, Generic[V]):
    """Run the loader and finish ``fill`` with its result."""

    __slots__ = ("fill",)

    def __init__(self, fill: Future[V]) -> None:
        self.fill = fill


class Join(Miss, Generic[V]):
    """Wait for ``fill``, a load another caller started."""

    __slots__ = ("fill",)

    def __init__(self, fill: Future[V]) -> None:
        self.fill = fill


#: Not serving: run the loader and store nothing.
BYPASS = Miss()
#: Serving, but ``after`` is not applied yet: wait, then decide again.
WAIT = Miss()


class CacheCore(Generic[K, V]):
    """Entries, fill tokens, applied positions, probe answers and counters. Not thread-safe.

    ``clock`` times (``now``, ``asked_at``) are the caller's monotonic clock. A hit samples
    every ``sample_every``-th hit into :attr:`samples` for the verifier (0: none).
    """

    def __init__(
        self,
        *,
        max_staleness: float,
        ttl: float,
        max_entries: int,
        probe_interval: float,
        sample_every: int = 0,
    ) -> None:
        self.max_staleness = max_staleness
        self.ttl = ttl
        self.store: SlotStore[K, V] = SlotStore(max_entries, ttl)
        window = math.ceil(max_staleness / max(probe_interval, 0.001)) + _SPARE_ANSWERS
        self.staleness = Staleness(window)
        self.epoch = 0
        self.skipped = False  # the current epoch's move to the end is done
        self.positions: dict[int, int] = {}  # applied, {partition: next offset}, this epoch
        self.fresh_until = -math.inf  # hits are served while now <= this
        self.flushed = "starting"  # why the current epoch began, in words
        self.failure: EventStreamError | None = None
        self.probe_error: Exception | None = None  # while the probe has no answer
        self.closed = False
        self.samples: deque[tuple[K, Entry[V]]] = deque(maxlen=_MAX_SAMPLES)
        self._sample_every = sample_every
        self.hits = self.misses = self.coalesced = self.bypassed = 0
        self.load_errors = self.fills_voided = self.invalidations = self.events = 0
        self.verified = self.stale_hits = 0
        self.flushes: Counter[str] = Counter()

    # -- gets ------------------------------------------------------------------------------------

    def decide(self, key: K, after: Token | None, now: float) -> V | Miss:
        """What a get of ``key`` at ``now`` does: the value (a hit), :class:`Start` (this
        caller loads; its fill token is in the slot), :class:`Join` (another caller is loading
        it), :data:`BYPASS` (not serving) or :data:`WAIT` (``after`` not applied yet)."""
        if now > self.fresh_until:
            self.bypassed += 1
            return BYPASS
        if after is not None and not after.reached_by(self.positions):
            return WAIT
        entry = self.store.hit(key, now)
        if entry is not None:
            self.hits += 1
            if self._sample_every and self.hits % self._sample_every == 0:
                self.samples.append((key, entry))
            return entry.value
        fill = self.store.filling(key)
        if fill is not None:
            self.coalesced += 1
            return Join(fill)
        self.misses += 1
        return Start(self.store.begin(key))

    def finish(self, key: K, fill: Future[V], value: V, now: float) -> None:
        """The load of ``fill`` returned ``value``: store it unless it was voided."""
        if not self.store.finish(key, fill, value, now):
            self.fills_voided += 1

    def abandon(self, key: K, fill: Future[V]) -> None:
        """The load of ``fill`` failed: empty its slot (nothing is stored)."""
        self.store.abandon(key, fill)

    def serving(self, now: float) -> bool:
        return now <= self.fresh_until

    # -- what the feed reports -------------------------------------------------------------------

    def invalidate(self, keys: Iterable[K]) -> None:
        for key in keys:
            self.store.invalidate(key)
            self.invalidations += 1

    def clear(self, reason: FlushReason) -> None:
        """Drop every entry and void every fill, staying in the epoch (nothing was missed)."""
        self.store.clear()
        self.flushes[reason] += 1

    def applied(self, partition: int, offset: int) -> None:
        """The event at ``offset`` of ``partition`` was applied."""
        self.events += 1
        if self.positions.get(partition, -1) <= offset:
            self.positions[partition] = offset + 1

    def reset(self, reason: FlushReason, detail: str) -> int:
        """Flush and start a new epoch, not ready until the feed has moved to the end of the
        topic (the caller asks it to, then reports :meth:`skip_done`). Returns the epoch."""
        self.clear(reason)
        self.epoch += 1
        self.skipped = False
        self.positions = {}
        self.staleness.reset()
        self.fresh_until = -math.inf
        self.flushed = f"flushed: {detail}"
        return self.epoch

    def skip_done(self, epoch: int) -> None:
        """The feed moved to the end of the topic after epoch ``epoch`` began."""
        if epoch == self.epoch:
            self.skipped = True
            self._ready()

    def fail(self, error: EventStreamError) -> None:
        """The feed stopped for good: flush; not ready from now on."""
        self.failure = error
        self.reset("failure", f"the consumer stopped: {error}")

    def close(self) -> None:
        self.closed = True
        self.store.clear()
        self.fresh_until = -math.inf

    # -- probe rounds ----------------------------------------------------------------------------

    def merge(self, epoch: int, positions: Mapping[int, int]) -> None:
        """Positions the feed reported, read during ``epoch``."""
        if epoch != self.epoch:
            return
        for partition, offset in positions.items():
            if self.positions.get(partition, -1) < offset:
                self.positions[partition] = offset

    def record(
        self,
        epoch: int,
        asked_at: float,
        ends: Mapping[int, int],
        before: Mapping[int, int],
        after: Mapping[int, int],
        now: float,
    ) -> int | None:
        """A probe answer: ``ends`` asked at ``asked_at``, during ``epoch`` (read before
        ``before``, the feed's positions just before the ask); ``after`` the feed's positions
        read once it came. Returns the new epoch if the answer made the cache flush."""
        self.probe_error = None
        change = self.staleness.topic_changed(ends, before)
        if change is not None:
            return self.reset("topic_changed", change)
        if epoch == self.epoch:
            self.merge(epoch, after)
            self.staleness.add(asked_at, ends)
            self.staleness.advance(self.positions)
            self._ready()
        return self._check_degraded(now)

    def probe_failed(self, error: Exception, now: float) -> int | None:
        """A probe round got no answer. Returns the new epoch if the cache flushed."""
        self.probe_error = error
        return self._check_degraded(now)

    def _ready(self) -> None:
        reached_at = self.staleness.reached_at
        if self.skipped and reached_at is not None and self.failure is None and not self.closed:
            self.fresh_until = reached_at + self.max_staleness

    def _check_degraded(self, now: float) -> int | None:
        if self.fresh_until > -math.inf and now > self.fresh_until + self.ttl:
            return self.reset("degraded", f"degraded for longer than the TTL ({self.ttl:g} s)")
        return None

    # -- reports ---------------------------------------------------------------------------------

    def bound(self, now: float) -> float | None:
        """The staleness bound at ``now``, or ``None`` while not ready."""
        return None if self.fresh_until == -math.inf else self.staleness.bound(now)

    def status(self, now: float) -> CacheStatus:
        limit = self.max_staleness
        if self.closed:
            return CacheStatus("closed", "closed", None, limit)
        if self.failure is not None:
            return CacheStatus(
                "not_ready", f"the consumer stopped: {self.failure}", None, limit, self.failure
            )
        bound = self.bound(now)
        if bound is None:
            return CacheStatus("not_ready", self._waiting_for(), None, limit, self.probe_error)
        if bound <= limit:
            reason = f"staleness bound {bound:.3f} s is within max_staleness {limit:g} s"
            return CacheStatus("serving", reason, bound, limit)
        if self.probe_error is not None:
            why = f"the probe has no answer: {self.probe_error}"
        else:
            behind = self.staleness.behind(self.positions)
            if behind is None:
                why = "no newer probe answer"
            else:
                why = f"{behind[1]} events behind the newest probe answer"
        reason = f"staleness bound {bound:.3f} s exceeds max_staleness {limit:g} s: {why}"
        return CacheStatus("degraded", reason, bound, limit, self.probe_error)

    def _waiting_for(self) -> str:
        if not self.skipped:
            return f"{self.flushed}; moving to the end of the topic"
        if self.probe_error is not None:
            return f"{self.flushed}; the probe has no answer: {self.probe_error}"
        behind = self.staleness.behind(self.positions)
        if behind is None:
            return f"{self.flushed}; waiting for a probe answer"
        missing, events = behind
        if missing:
            shown = ", ".join(map(str, missing))
            return f"{self.flushed}; partitions {shown} of the topic are not assigned to it"
        return f"{self.flushed}; {events} events behind the newest probe answer"

    def metrics(self, now: float) -> CacheMetrics:
        return CacheMetrics(
            entries=len(self.store),
            hits=self.hits,
            misses=self.misses,
            coalesced=self.coalesced,
            bypassed=self.bypassed,
            load_errors=self.load_errors,
            fills_voided=self.fills_voided,
            invalidations=self.invalidations,
            evictions=self.store.evictions,
            expirations=self.store.expirations,
            events=self.events,
            flushes=dict(self.flushes),
            verified=self.verified,
            stale_hits=self.stale_hits,
            staleness=self.bound(now),
        )
