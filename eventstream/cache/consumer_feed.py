"""The :class:`~eventstream.cache.feed.Feed` of ``Topic.new_cache``: :class:`ConsumerFeed`, over
the consumer runtime both backends share (its poll thread, rebalance and gap hooks, closing).

The runtime is made by the topic with a spec that starts every assignment at the end of its
partitions (``from_end``: an empty cache needs nothing older) and commits stored offsets every
:data:`COMMIT_INTERVAL_MS` (:func:`~eventstream.cache.wait_applied` reads them). Each event goes
to ``sink.apply`` with its partition and offset; its offset is stored once that returned.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from typing import Any

from eventstream._runtime.backend import Dispatch
from eventstream._runtime.consuming import ConsumerRuntime
from eventstream._runtime.failures.policy import Failures
from eventstream.cache.feed import FeedSink
from eventstream.cache.probe import check_ends
from eventstream.errors import BrokerError, EventStreamError

__all__ = ["COMMIT_INTERVAL_MS", "ConsumerFeed", "where"]

#: auto.commit.interval.ms of a cache's consumer: what it applied is committed this promptly.
COMMIT_INTERVAL_MS = 200
_ENDS_TIMEOUT_MS = 5000  # asking the end offsets on the poll thread: the longest it blocks
_ENDS_RETRY = 0.1  # seconds before asking again after a failure


def where(_topic: str, partition: int, offset: int, *_extras: object) -> tuple[int, int]:
    """The metadata factory of a cache's consumer: only where the event is."""
    return partition, offset


class ConsumerFeed:
    """A :class:`~eventstream.cache.feed.Feed` over ``runtime`` (not started yet), whose spec
    has :func:`where` as its metadata factory. Thread-safe as the protocol says."""

    def __init__(self, runtime: ConsumerRuntime, topic: str, type_name: str, logger: Any) -> None:
        self._runtime = runtime
        self._topic = topic
        self._type_name = type_name
        self._logger = logger
        self._sink: FeedSink | None = None
        self._ends_failing = False

    def start(self, sink: FeedSink) -> None:
        self._sink = sink
        failures = Failures(
            self._topic, self._type_name, self._logger, retry=None, dead_letters=None
        )
        failures.stopping = self._runtime.stopping
        dispatch = Dispatch(
            self._handle,
            "event",
            True,  # the metadata is where(): (partition, offset)
            failures,
            on_rebalance=sink.partitions_changed,
            on_gap=sink.gap,
            on_failure=self._failed,
        )
        self._runtime.start(dispatch)

    def positions(self) -> Mapping[int, int]:
        return {p: o for p, o in self._runtime.assignment().items() if o >= 0}

    def skip_to_end(self, done: Callable[[], None]) -> None:
        self._runtime.call_soon(functools.partial(self._skip, done))

    def close(self, timeout: float | None) -> None:
        self._runtime.close(timeout)

    # -- the poll thread --------

    def _handle(self, event: object, at: tuple[int, int]) -> None:
        sink = self._sink
        assert sink is not None
        sink.apply(event, at[0], at[1])

    def _skip(self, done: Callable[[], None]) -> None:
        """Move every assigned partition to its end, make that the group's committed offset,
        then ``done()``; asked again a moment later if the ends cannot be had now."""
        native = self._runtime.native
        partitions = sorted(native.positions())
        if partitions:
            try:
                _lows, highs = native.watermarks(partitions, _ENDS_TIMEOUT_MS)
                ends = dict(zip(partitions, highs, strict=True))
                check_ends(ends, "high watermarks", BrokerError)
                native.seek(ends)
            except BrokerError as exc:
                if not self._ends_failing:
                    self._logger.warning(
                        "consumer of cache of %r: moving to the end of the topic failed, asking "
                        "again (logged once until it works): %s",
                        self._topic,
                        exc,
                    )
                self._ends_failing = True
                retry = threading.Timer(
                    _ENDS_RETRY, self._runtime.call_soon, (functools.partial(self._skip, done),)
                )
                retry.daemon = True
                retry.start()
                return
            self._ends_failing = False
            native.store(ends)
            native.commit(ends)
        done()

    def _failed(self, error: BaseException) -> None:
        sink = self._sink
        if sink is None:
            return
        if not isinstance(error, EventStreamError):
            wrapped = EventStreamError(
                f"the consumer of cache of {self._topic!r} stopped: {type(error).__name__}: {error}"
            )
            wrapped.__cause__ = error
            error = wrapped
        sink.failed(error)
