"""Fakes for the cache tests: a feed, a probe and a clock the test drives step by step.

Nothing here sleeps: :class:`FakeProbe` hands the cache's probe thread one answer at a time and
returns once the thread has recorded it (it is back asking), so a test knows exactly which
answers the cache has seen and when each was asked.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from eventstream import PartitionChange
from eventstream.cache import Cache, FeedSink

#: Deadline of every wait here; it only matters when a test fails.
WAIT = 10.0


class FakeClock:
    """A monotonic clock that moves only when told. :meth:`read_by` tells the test when a
    thread has read it: the cache reads it under its lock as a get decides, and the verifier
    as it stamps a difference, so a test can wait for exactly that point."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self._watches: list[tuple[str, threading.Event]] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        value = self.now
        name = threading.current_thread().name
        with self._lock:
            fired = [w for w in self._watches if name.startswith(w[0])]
            self._watches = [w for w in self._watches if w not in fired]
        for _, event in fired:
            event.set()
        return value

    def read_by(self, thread_name: str) -> threading.Event:
        """An event set at the next read by a thread whose name starts with ``thread_name``."""
        event = threading.Event()
        with self._lock:
            self._watches.append((thread_name, event))
        return event

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Background(threading.Thread):
    """Runs ``function()`` on a thread of its own; :meth:`outcome` joins it and returns its
    result or raises what it raised."""

    def __init__(self, function: Callable[[], Any], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._function = function
        self._result: Any = None
        self._error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self._result = self._function()
        except BaseException as exc:
            self._error = exc

    def outcome(self) -> Any:
        self.join(WAIT)
        assert not self.is_alive(), f"{self.name} did not finish"
        if self._error is not None:
            raise self._error
        return self._result


class FakeFeed:
    """A :class:`~eventstream.cache.Feed` whose events, partition changes and positions the
    test supplies; the test's thread stands in for the poll thread. ``ends`` is where
    :meth:`skip_to_end` moves each assigned partition; with ``auto_skip=False`` the moves wait
    for :meth:`finish_skips`."""

    def __init__(self, *, auto_skip: bool = True) -> None:
        self.sink: FeedSink | None = None
        self.auto_skip = auto_skip
        self.ends: dict[int, int] = {}
        self.closed = False
        self._lock = threading.Lock()
        self._positions: dict[int, int] = {}
        self._skips: list[Callable[[], None]] = []

    # -- the Feed protocol
    def start(self, sink: FeedSink) -> None:
        self.sink = sink

    def positions(self) -> Mapping[int, int]:
        with self._lock:
            return dict(self._positions)

    def skip_to_end(self, done: Callable[[], None]) -> None:
        with self._lock:
            self._skips.append(done)
        if self.auto_skip:
            self.finish_skips()

    def close(self, timeout: float) -> None:
        self.closed = True

    # -- the test's side
    def finish_skips(self) -> int:
        """Move every assigned partition to ``ends`` and report the skips asked so far."""
        with self._lock:
            skips, self._skips = self._skips, []
            for partition in self._positions:
                self._positions[partition] = max(
                    self._positions[partition], self.ends.get(partition, 0)
                )
        for done in skips:
            done()
        return len(skips)

    def assign(self, positions: Mapping[int, int]) -> None:
        """The group gave the feed these partitions, at these positions."""
        with self._lock:
            self._positions.update(positions)
        self._sink().partitions_changed(PartitionChange("assigned", "t", tuple(sorted(positions))))

    def take(self, kind: str, *partitions: int) -> None:
        """Partitions ``revoked`` or ``lost``."""
        with self._lock:
            for partition in partitions:
                self._positions.pop(partition, None)
        self._sink().partitions_changed(PartitionChange(kind, "t", partitions))  # type: ignore[arg-type]

    def deliver(self, event: object, partition: int = 0, offset: int | None = None) -> None:
        """Apply ``event`` at ``offset`` (default: the partition's position), then advance."""
        with self._lock:
            at = self._positions.get(partition, 0) if offset is None else offset
        self._sink().apply(event, partition, at)
        with self._lock:
            self._positions[partition] = at + 1

    def move(self, partition: int, position: int) -> None:
        """Set a position without applying anything (a record the sink never sees)."""
        with self._lock:
            self._positions[partition] = position

    def _sink(self) -> FeedSink:
        assert self.sink is not None, "the cache did not start the feed"
        return self.sink


class FakeProbe:
    """A :class:`~eventstream.cache.Probe` whose answers the test gives one by one.

    ``end_offsets()`` blocks until :meth:`answer` gives it something; :meth:`answer` returns
    once the cache's probe thread is back asking, so the answer has been recorded. The ask that
    an answer answers was made (and stamped) when the previous one returned.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._asks = 0
        self._answered = 0
        self._answer: Mapping[int, int] | Exception | None = None
        self._released = False

    def end_offsets(self) -> Mapping[int, int]:
        with self._cond:
            self._asks += 1
            self._cond.notify_all()
            while self._answer is None and not self._released:
                self._cond.wait()
            if self._released:
                raise RuntimeError("the fake probe was released")
            answer, self._answer = self._answer, None
        if isinstance(answer, Exception):
            raise answer
        assert answer is not None
        return answer

    def wait_asked(self) -> None:
        """Until the probe thread waits for an answer (its ask is stamped)."""
        with self._cond:
            assert self._cond.wait_for(lambda: self._asks > self._answered, WAIT), "no ask"

    def answer(self, ends: Mapping[int, int] | Exception) -> None:
        """Answer the waiting ask with ``ends`` (or raise ``ends`` there); return once it was
        recorded."""
        self.wait_asked()
        with self._cond:
            self._answer = ends
            self._answered += 1
            self._cond.notify_all()
            assert self._cond.wait_for(
                lambda: self._asks > self._answered or self._released, WAIT
            ), "the probe thread did not come back"

    def release(self) -> None:
        """Let the probe thread go (at the end of a test)."""
        with self._cond:
            self._released = True
            self._cond.notify_all()


class Source:
    """The source of truth: ``key -> version``; ``load`` counts its calls. Thread-safe."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self.loads: list[str] = []
        self._lock = threading.Lock()

    def write(self, key: str) -> int:
        with self._lock:
            self.rows[key] = self.rows.get(key, 0) + 1
            return self.rows[key]

    def load(self, key: str) -> int:
        with self._lock:
            self.loads.append(key)
            return self.rows.get(key, 0)


@contextmanager
def running(
    loader: Callable[[str], Any],
    *,
    feed: FakeFeed | None = None,
    clock: FakeClock | None = None,
    **settings: Any,
) -> Iterator[tuple[Cache[str, Any], FakeFeed, FakeProbe, FakeClock]]:
    """A cache over fakes (``keys``: the event is its own key, list of keys or None), closed
    at the end; ``probe_interval`` 0 so that each answer is asked for at once."""
    feed = feed or FakeFeed()
    probe = FakeProbe()
    clock = clock or FakeClock()
    settings.setdefault("keys", lambda event: event)
    settings.setdefault("probe_interval", 0.0)
    cache: Cache[str, Any] = Cache(feed, probe, loader, clock=clock, **settings)
    try:
        yield cache, feed, probe, clock
    finally:
        probe.release()
        cache.close(timeout=WAIT)


def serve(feed: FakeFeed, probe: FakeProbe, positions: Mapping[int, int] | None = None) -> None:
    """Assign ``positions`` (default ``{0: 0}``), which flushes, and answer the probe until an
    ask made after that was answered with the positions as end offsets: the cache serves."""
    positions = dict(positions or {0: 0})
    feed.ends.update(positions)
    probe.wait_asked()  # stamped before the flush: its answer does not count
    feed.assign(positions)
    probe.answer(positions)
    probe.answer(positions)


class Gate:
    """A loader that reads ``source`` when called, then holds until :attr:`opened` is set;
    returns what it read, or raises ``error``."""

    def __init__(self, source: Source, error: Exception | None = None) -> None:
        self.source = source
        self.error = error
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.calls = 0

    def __call__(self, key: str) -> int:
        value = self.source.load(key)
        self.calls += 1
        self.entered.set()
        assert self.opened.wait(WAIT), "the gate was never opened"
        if self.error is not None:
            raise self.error
        return value
