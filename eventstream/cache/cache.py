"""The coherent near cache: :class:`Cache`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar, cast, overload

from eventstream._runtime.closing import Closeable
from eventstream._runtime.records import PartitionChange, Token
from eventstream.cache.core import BYPASS, WAIT, CacheCore, Join, Miss, Start
from eventstream.cache.feed import Feed
from eventstream.cache.probe import Probe
from eventstream.cache.status import CacheMetrics, CacheState, CacheStatus, FlushReason
from eventstream.cache.summary import SummaryLog
from eventstream.cache.verifier import Verifier
from eventstream.errors import (
    ArgumentTypeError,
    BrokerError,
    ClosedError,
    ConfigError,
    EventStreamError,
    fresh,
    wait_timeout_error,
)

__all__ = ["Cache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: The longest a waiter sleeps before it looks again at what time alone can change (a serving
#: cache whose bound grows past max_staleness stops making ``after`` waits wait).
_SLICE = 0.05


class _Abandoned(Exception):
    """The load a caller waited for was cancelled or interrupted: it loads by itself."""


class Cache(Closeable, Generic[K, V]):
    """A read-through cache of ``loader`` that the topic's events keep coherent.

    ``keys(event)`` names what an event invalidates: a key, an iterable of keys (``str``,
    ``bytes`` and ``tuple`` count as one key), or ``None`` for everything. ``loader(key)``
    reads the source of truth; it may be an ``async def`` (then :meth:`get` needs the loop of an
    earlier :meth:`aget` running in another thread). ``on_event(event)`` runs after each event's
    invalidation, on the consumer's poll thread.

    What it promises: a fill never outlives an invalidation (a value loaded before an
    invalidation of its key was applied is never stored after it); concurrent misses of a key
    share one load; a hit at time ``t`` reflects every invalidation whose produce call returned
    before ``t - max_staleness``, proven by probing the topic's end offsets every
    ``probe_interval``; when that cannot be shown, every get goes to the loader. Entries expire
    after ``ttl`` seconds and at most ``max_entries`` are kept (least recently used first out).
    Not promised: a write whose event was never published (the writer crashed between its
    commit and its produce) stays invisible to the cache until the TTL. Writers commit to the
    store first, then publish, then return.

    ``verify_fraction`` of the hits are re-read from the loader on a background thread to
    count stale hits (:class:`~eventstream.cache.verifier.Verifier`). ``clock`` is the
    monotonic clock of staleness, TTL and probe stamps (timeouts of blocking calls use real
    time). Made by ``Topic.new_cache``: it starts ``feed`` and a probe thread at once.
    Thread-safe; usable from threads and from asyncio.
    """

    @overload
    def __init__(
        self,
        feed: Feed,
        probe: Probe,
        loader: Callable[[K], Awaitable[V]],
        *,
        keys: Callable[[Any], K | Iterable[K] | None],
        max_staleness: float = 1.0,
        ttl: float = 300.0,
        max_entries: int = 100_000,
        on_event: Callable[[Any], object] | None = None,
        verify_fraction: float = 0.0,
        probe_interval: float = 0.25,
        name: str = "cache",
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None: ...

    @overload
    def __init__(
        self,
        feed: Feed,
        probe: Probe,
        loader: Callable[[K], V],
        *,
        keys: Callable[[Any], K | Iterable[K] | None],
        max_staleness: float = 1.0,
        ttl: float = 300.0,
        max_entries: int = 100_000,
        on_event: Callable[[Any], object] | None = None,
        verify_fraction: float = 0.0,
        probe_interval: float = 0.25,
        name: str = "cache",
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None: ...

    def __init__(
        self,
        feed: Feed,
        probe: Probe,
        loader: Callable[[K], Any],
        *,
        keys: Callable[[Any], K | Iterable[K] | None],
        max_staleness: float = 1.0,
        ttl: float = 300.0,
        max_entries: int = 100_000,
        on_event: Callable[[Any], object] | None = None,
        verify_fraction: float = 0.0,
        probe_interval: float = 0.25,
        name: str = "cache",
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for field, function in (("loader", loader), ("keys", keys), ("on_event", on_event)):
            if not callable(function) and (function is not None or field != "on_event"):
                raise ArgumentTypeError(f"{field} must be a function, got {function!r}")
        _check_range("probe_interval", probe_interval, 0.0, 3600.0)
        _check_range("max_staleness", max_staleness, 0.001, 86_400.0)
        if max_staleness <= probe_interval:
            raise ConfigError(
                "max_staleness",
                f"must exceed probe_interval ({probe_interval:g} s): the bound grows by that much "
                f"between two probe answers, got {max_staleness:g}",
            )
        _check_range("ttl", ttl, 0.001, 1e9)
        _check_range("verify_fraction", verify_fraction, 0.0, 1.0)
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigError("max_entries", f"must be a positive int, got {max_entries!r}")
        self._feed = feed
        self._probe = probe
        self._loader = loader
        self._async_loader = inspect.iscoroutinefunction(loader) or inspect.iscoroutinefunction(
            getattr(loader, "__call__", None)  # noqa: B004 - callable objects with async __call__
        )
        self._keys = keys
        self._on_event = on_event
        self._interval = probe_interval
        self._name = name
        self._logger = logger or logging.getLogger("eventstream")
        self._clock = clock
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._waiting = 0  # threads in self._cond.wait()
        self._wakers: set[Callable[[], object]] = set()  # of coroutines waiting in aget()
        self._loop: asyncio.AbstractEventLoop | None = None  # of the latest aget()
        self._core: CacheCore[K, V] = CacheCore(
            max_staleness=max_staleness,
            ttl=ttl,
            max_entries=max_entries,
            probe_interval=probe_interval,
            sample_every=round(1 / verify_fraction) if verify_fraction else 0,
        )
        self._verifier = (
            Verifier(self._core, self._lock, self._load, clock, self._logger, name)
            if verify_fraction
            else None
        )
        self._stop = threading.Event()
        self._logged_state: CacheState = "not_ready"
        self._probe_failing = False
        self._key_errors = SummaryLog(
            self._logger, f"keys(event) raised for %d more events of cache {name!r} (each flushed)"
        )
        self._round_errors = SummaryLog(
            self._logger, f"%d more probe rounds of cache {name!r} failed", level=logging.ERROR
        )
        self._prober = threading.Thread(
            target=self._probe_loop, name=f"eventstream-cache-probe-{name}", daemon=True
        )
        feed.start(_Sink(self._apply, self._partitions_changed, self._gap, self._failed))
        self._feed.skip_to_end(functools.partial(self._skipped, 0))
        self._prober.start()
        if self._verifier is not None:
            self._verifier.start()

    # -- reads -----------------------------------------------------------------------------------

    def get(self, key: K, *, after: Token | None = None, timeout: float = 10.0) -> V:
        """The value of ``key``: a hit, or the loader's value (a miss stores it; concurrent
        misses of one key share one load, and its error reaches each of them).

        ``after`` (e.g. ``producer.produce(...).token``) first waits until this cache has
        applied those events, so the value reflects the writes behind them; blocks up to
        ``timeout`` for that (a cache that is not serving reads the loader at once instead).
        A hit takes no network call. Blocks while loading.

        Raises what the loader raised, :class:`~eventstream.WaitTimeoutError` when ``after``
        was not applied within ``timeout``, :class:`~eventstream.ClosedError`, and
        :class:`~eventstream.ArgumentTypeError` for an ``async`` loader without a loop to run
        it on (call :meth:`aget` there)."""
        deadline: float | None = None
        while True:
            with self._lock:
                outcome = self._decide(key, after)
                if outcome is WAIT:
                    deadline, remaining = self._deadline(after, deadline, timeout)
                    self._waiting += 1
                    try:
                        self._cond.wait(min(remaining, _SLICE))
                    finally:
                        self._waiting -= 1
                    continue
            if not isinstance(outcome, Miss):
                return outcome
            if outcome is BYPASS:
                return self._counted(self._load, key)
            if isinstance(outcome, Start):
                return self._fill(key, cast("Start[V]", outcome).fill)
            try:
                return cast("Join[V]", outcome).fill.result()
            except _Abandoned:
                continue

    async def aget(self, key: K, *, after: Token | None = None, timeout: float = 10.0) -> V:
        """:meth:`get` for asyncio: never blocks the loop. A synchronous loader runs in the
        loop's default executor, an ``async`` one on this loop. Raises as :meth:`get`
        does."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        deadline: float | None = None
        while True:
            wait: tuple[asyncio.Future[None], Callable[[], object], float] | None = None
            with self._lock:
                outcome = self._decide(key, after)
                if outcome is WAIT:
                    deadline, remaining = self._deadline(after, deadline, timeout)
                    woken: asyncio.Future[None] = loop.create_future()
                    waker = functools.partial(_wake_on, loop, woken)
                    self._wakers.add(waker)
                    wait = (woken, waker, remaining)
            if wait is not None:
                wait_for, wake, left = wait
                try:
                    await asyncio.wait_for(wait_for, min(left, _SLICE))
                except TimeoutError:
                    pass
                finally:
                    with self._lock:
                        self._wakers.discard(wake)
                continue
            if not isinstance(outcome, Miss):
                return outcome
            if outcome is BYPASS:
                try:
                    return await self._aload(key)
                except Exception:
                    self._load_failed()
                    raise
            if isinstance(outcome, Start):
                return await self._afill(key, cast("Start[V]", outcome).fill)
            try:
                return await asyncio.wrap_future(cast("Join[V]", outcome).fill)
            except _Abandoned:
                continue

    def _decide(self, key: K, after: Token | None) -> V | Miss:
        if self._core.closed:
            raise ClosedError(f"cache of {self._name!r} is closed")
        return self._core.decide(key, after, self._clock())

    def _deadline(
        self, after: Token | None, deadline: float | None, timeout: float
    ) -> tuple[float, float]:
        """The deadline of an ``after`` wait and the time left; raises once it passed."""
        now = time.monotonic()
        if deadline is None:
            deadline = now + timeout
        if now >= deadline:
            raise wait_timeout_error(
                f"cache of {self._name!r} has not applied {after!r} (applied: "
                f"{dict(sorted(self._core.positions.items()))})",
                timeout,
                None,
            )
        return deadline, deadline - now

    def _fill(self, key: K, fill: Future[V]) -> V:
        try:
            value = self._load(key)
        except BaseException as exc:
            self._fill_failed(key, fill, exc)
            raise
        self._fill_done(key, fill, value)
        return value

    async def _afill(self, key: K, fill: Future[V]) -> V:
        try:
            value = await self._aload(key)
        except BaseException as exc:
            self._fill_failed(key, fill, exc)
            raise
        self._fill_done(key, fill, value)
        return value

    def _fill_done(self, key: K, fill: Future[V], value: V) -> None:
        with self._lock:
            self._core.finish(key, fill, value, self._clock())
        fill.set_result(value)

    def _fill_failed(self, key: K, fill: Future[V], exc: BaseException) -> None:
        """The load of ``fill`` raised ``exc``: its waiters get it (or load by themselves when
        it was a cancellation or an interrupt); nothing is stored."""
        with self._lock:
            self._core.abandon(key, fill)
        if isinstance(exc, Exception):
            self._load_failed()
            fill.set_exception(exc)
        else:
            fill.set_exception(_Abandoned())

    def _counted(self, load: Callable[[K], V], key: K) -> V:
        try:
            return load(key)
        except Exception:
            self._load_failed()
            raise

    def _load_failed(self) -> None:
        with self._lock:
            self._core.load_errors += 1

    def _load(self, key: K) -> V:
        """The loader's value, in this thread (an async loader on the loop of the latest
        :meth:`aget`, which must run in another thread)."""
        if not self._async_loader:
            return cast("V", self._loader(key))
        loop = self._loop
        if loop is None or loop.is_closed() or _running_loop() is loop:
            raise ArgumentTypeError(
                f"cache of {self._name!r}: the loader is async, so get() needs the loop of an "
                "earlier aget() running in another thread; call aget() instead"
            )
        coroutine = cast("Awaitable[V]", self._loader(key))
        return asyncio.run_coroutine_threadsafe(_awaited(coroutine), loop).result()

    async def _aload(self, key: K) -> V:
        if self._async_loader:
            return await cast("Awaitable[V]", self._loader(key))
        loop = asyncio.get_running_loop()
        return cast("V", await loop.run_in_executor(None, self._loader, key))

    # -- state -----------------------------------------------------------------------------------

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the cache is ``serving``.

        Raises :class:`~eventstream.WaitTimeoutError` saying what it waits for, what stopped
        its consumer (a :class:`~eventstream.BrokerError`, ...), or
        :class:`~eventstream.ClosedError`."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                core = self._core
                if core.closed:
                    raise ClosedError(f"cache of {self._name!r} is closed")
                if core.failure is not None:
                    failure = core.failure
                    raise fresh(failure) if isinstance(failure, BrokerError) else failure
                now = self._clock()
                if core.serving(now):
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise wait_timeout_error(
                        f"cache of {self._name!r} is not serving ({core.status(now).reason})",
                        timeout,
                        None,
                    )
                self._waiting += 1
                try:
                    self._cond.wait(min(remaining, _SLICE))
                finally:
                    self._waiting -= 1

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called. Thread-safe."""
        return self._core.closed

    @property
    def status(self) -> CacheStatus:
        """The cache's state, why, and its staleness bound. Thread-safe; no network call."""
        with self._lock:
            return self._core.status(self._clock())

    def metrics(self) -> CacheMetrics:
        """The cache's counts since it was made. Thread-safe; no network call."""
        with self._lock:
            return self._core.metrics(self._clock())

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop: drop every entry, end the probe and the verifier, close the feed (its consumer
        commits and leaves the group). Gets raise :class:`~eventstream.ClosedError` from now on;
        loads under way finish and store nothing. Idempotent; blocks up to about ``timeout``.
        Raises what the feed's close raised."""
        with self._lock:
            if self._core.closed:
                return
            self._core.close()
            self._wake()
        self._stop.set()
        try:
            self._feed.close(timeout)
        finally:
            if self._verifier is not None:
                self._verifier.stop(timeout)
            if self._prober is not threading.current_thread():
                self._prober.join(timeout)
            self._key_errors.flush()
            self._round_errors.flush()

    def __repr__(self) -> str:
        return f"Cache({self._name!r}, {self.status.state})"

    # -- what the feed calls (on its poll thread) ------------------------------------------------

    def _apply(self, event: object, partition: int, offset: int) -> None:
        keys = self._keys_of(event, partition, offset)
        with self._lock:
            if self._core.closed:
                return
            if isinstance(keys, str):
                self._core.clear(cast("FlushReason", keys))
            else:
                self._core.invalidate(keys)
            if self._on_event is None:
                self._core.applied(partition, offset)
                self._wake()
        if self._on_event is not None:
            try:
                self._on_event(event)
            finally:
                with self._lock:
                    self._core.applied(partition, offset)
                    self._wake()

    def _keys_of(self, event: object, partition: int, offset: int) -> tuple[K, ...] | str:
        """The keys ``event`` invalidates, or the flush reason when it invalidates all."""
        try:
            found = self._keys(event)
            if found is None:
                return "event"
            if isinstance(found, str | bytes | tuple) or not isinstance(found, Iterable):
                return (cast("K", found),)
            return tuple(cast("Iterable[Any]", found))
        except Exception as exc:
            self._key_errors.occurred(
                "keys(event) raised for the event at %s[%d]@%d, so the cache was flushed: %s: %s",
                self._name,
                partition,
                offset,
                type(exc).__name__,
                exc,
                exc_info=exc,
            )
            return "keys_error"

    def _partitions_changed(self, change: PartitionChange) -> None:
        shown = ", ".join(map(str, change.partitions)) or "none"
        level = logging.WARNING if change.kind == "lost" else logging.INFO
        self._reset(change.kind, f"partitions {shown} {change.kind}", level)

    def _gap(self, error: EventStreamError) -> None:
        self._reset("gap", str(error), logging.WARNING)

    def _failed(self, error: EventStreamError) -> None:
        with self._lock:
            if self._core.closed:
                return
            self._core.fail(error)
            self._wake()
        self._logger.error(
            "cache of %r: its consumer stopped, so every get goes to the loader from now on: %s",
            self._name,
            error,
        )

    def _skipped(self, epoch: int) -> None:
        with self._lock:
            self._core.skip_done(epoch)
            self._wake()

    # -- flushes, the probe and waking waiters ---------------------------------------------------

    def _reset(self, reason: FlushReason, detail: str, level: int) -> None:
        with self._lock:
            if self._core.closed:
                return
            epoch = self._core.reset(reason, detail)
            self._wake()
        self._after_reset(epoch, detail, level)

    def _after_reset(self, epoch: int, detail: str, level: int) -> None:
        """Log a flush that began ``epoch`` and ask the feed to move to the end. Called
        without the lock: the feed may call back at once."""
        self._logger.log(
            level,
            "cache of %r flushed (%s); it reads from the end of the topic and serves hits again "
            "once caught up",
            self._name,
            detail,
        )
        self._feed.skip_to_end(functools.partial(self._skipped, epoch))

    def _wake(self) -> None:
        """Wake every waiter to look again. Called with the lock held."""
        if self._waiting:
            self._cond.notify_all()
        for waker in self._wakers:
            with contextlib.suppress(RuntimeError):  # its loop was closed
                waker()

    def _probe_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._probe_round()
            except Exception as exc:  # a bug: the bound grows, so it degrades instead of lying
                self._round_errors.occurred(
                    "cache of %r: a probe round failed: %s", self._name, exc, exc_info=exc
                )
            if self._verifier is not None:
                self._verifier.wake()
            self._stop.wait(self._interval)

    def _probe_round(self) -> None:
        with self._lock:
            epoch = self._core.epoch
        before = self._feed.positions()
        asked_at = self._clock()
        try:
            ends, failure = self._probe.end_offsets(), None
        except Exception as exc:
            ends, failure = None, exc
        after = self._feed.positions()
        with self._lock:
            core = self._core
            if core.closed:
                return
            flushed_epoch = (
                core.record(epoch, asked_at, ends, before, after, self._clock())
                if ends is not None
                else core.probe_failed(cast(Exception, failure), self._clock())
            )
            detail = core.flushed
            status = core.status(self._clock())
            self._wake()
        self._log_probe(failure)
        if flushed_epoch is not None:
            self._after_reset(flushed_epoch, detail.removeprefix("flushed: "), logging.WARNING)
        self._log_state(status)

    def _log_probe(self, failure: Exception | None) -> None:
        if failure is not None and not self._probe_failing:
            self._logger.warning(
                "cache of %r: the end-offsets probe gets no answer, so the staleness bound grows "
                "(logged once until it answers): %s",
                self._name,
                failure,
            )
        elif failure is None and self._probe_failing:
            self._logger.info("cache of %r: the end-offsets probe answers again", self._name)
        self._probe_failing = failure is not None

    def _log_state(self, status: CacheStatus) -> None:
        """One line per change between serving and degraded (flushes log themselves)."""
        previous, self._logged_state = self._logged_state, status.state
        if status.state == previous:
            return
        if status.state == "serving":
            again = " again" if previous == "degraded" else ""
            self._logger.info("cache of %r is serving%s: %s", self._name, again, status.reason)
        elif status.state == "degraded":
            self._logger.warning(
                "cache of %r is degraded, every get goes to the loader until it catches up: %s",
                self._name,
                status.reason,
            )


class _Sink:
    """The :class:`~eventstream.cache.feed.FeedSink` a cache gives its feed: its handlers."""

    def __init__(
        self,
        apply: Callable[[object, int, int], None],
        partitions_changed: Callable[[PartitionChange], None],
        gap: Callable[[EventStreamError], None],
        failed: Callable[[EventStreamError], None],
    ) -> None:
        self._apply = apply
        self._partitions_changed = partitions_changed
        self._gap = gap
        self._failed = failed

    def apply(self, event: object, partition: int, offset: int) -> None:
        self._apply(event, partition, offset)

    def partitions_changed(self, change: PartitionChange) -> None:
        self._partitions_changed(change)

    def gap(self, error: EventStreamError) -> None:
        self._gap(error)

    def failed(self, error: EventStreamError) -> None:
        self._failed(error)


def _check_range(field: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(field, f"must be a number in {low:g}..{high:g}, got {value!r}")


def _wake_on(loop: asyncio.AbstractEventLoop, woken: asyncio.Future[None]) -> None:
    """Resolve ``woken`` on its ``loop``, from any thread."""
    loop.call_soon_threadsafe(_resolve, woken)


def _resolve(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def _awaited(awaitable: Awaitable[V]) -> V:
    return await awaitable
