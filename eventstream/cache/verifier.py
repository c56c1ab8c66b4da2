"""Measuring consistency: :class:`Verifier` re-reads sampled hits from the source.

A sampled hit whose value differs from what the loader returns now is not stale yet: the write
may be newer than the hit, its invalidation on its way. It is a *stale hit* when, once the cache
has applied every invalidation produced up to ``max_staleness`` after the difference was seen
(a probe answer asked that late has been reached), the entry that served it is still cached and
the source still disagrees with it. A cache that stops serving meanwhile only delays the
verdict: its entries get their invalidations when it catches up.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from eventstream.cache.core import CacheCore
from eventstream.cache.store import Entry
from eventstream.cache.summary import SummaryLog

__all__ = ["Verifier"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Verifier(Generic[K, V]):
    """Checks the hits :class:`CacheCore` sampled, on a daemon thread of its own, when woken
    (:meth:`wake`, after each probe round). ``load`` reads the source (the cache's loader);
    ``lock`` is the lock the core is used under. Thread-safe."""

    def __init__(
        self,
        core: CacheCore[K, V],
        lock: threading.Lock | threading.RLock,
        load: Callable[[K], V],
        clock: Callable[[], float],
        logger: logging.Logger,
        name: str,
    ) -> None:
        self._core = core
        self._lock = lock
        self._load = load
        self._clock = clock
        self._logger = logger
        self._name = name
        self._doubts: list[tuple[K, Entry[V], float]] = []  # key, entry, settled once reached
        self._wake = threading.Event()
        self._stopping = False
        self._stale = SummaryLog(logger, f"%d more stale hits in cache of {name!r}")
        self._thread = threading.Thread(
            target=self._run, name=f"eventstream-cache-verifier-{name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float | None) -> None:
        """Stop after the check under way (which may wait up to ``timeout`` for a load)."""
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._stale.flush()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            with self._lock:
                samples = list(self._core.samples)
                self._core.samples.clear()
            for key, entry in samples:
                if self._stopping:
                    return
                self._first_look(key, entry)
            self._doubts = [d for d in self._doubts if not self._settle(*d)]

    def _source(self, key: K) -> tuple[V] | None:
        try:
            return (self._load(key),)
        except Exception as exc:
            self._logger.debug("verifier of cache %r could not load %r: %s", self._name, key, exc)
            return None

    def _first_look(self, key: K, entry: Entry[V]) -> None:
        source = self._source(key)
        seen_at = self._clock()
        if source is None:
            return
        with self._lock:
            self._core.verified += 1
        if source[0] != entry.value:
            self._doubts.append((key, entry, seen_at + self._core.max_staleness))

    def _settle(self, key: K, entry: Entry[V], due: float) -> bool:
        """Whether the doubt about ``entry`` is settled now (counted if stale)."""
        if not self._still_cached(key, entry):
            return True  # its invalidation came (or it expired, was evicted, flushed)
        with self._lock:
            reached_at = self._core.staleness.reached_at
        if reached_at is None or reached_at < due:
            return False
        source = self._source(key)
        if source is None or source[0] == entry.value or not self._still_cached(key, entry):
            return True
        with self._lock:
            self._core.stale_hits += 1
        self._stale.occurred(
            "stale hit in cache of %r: key %.100r is still cached with a value the source no "
            "longer has, although every invalidation produced up to max_staleness (%g s) after "
            "the difference was seen has been applied",
            self._name,
            key,
            self._core.max_staleness,
        )
        return True

    def _still_cached(self, key: K, entry: Entry[V]) -> bool:
        with self._lock:
            return self._core.store.peek(key) is entry and self._clock() < entry.expires
