"""What a cache needs from its consumer (:class:`Feed`) and what the consumer calls on the cache
(:class:`FeedSink`). The cache knows nothing else of the consumer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from eventstream._runtime.records import PartitionChange
from eventstream.errors import EventStreamError

__all__ = ["Feed", "FeedSink"]


class FeedSink(Protocol):
    """What a :class:`Feed` calls, always on its poll thread, one call at a time, and never
    while it holds a lock of its own (the cache calls back into the feed from inside these
    calls). A sink method raises only what the user's ``on_event`` handler raised."""

    def apply(self, event: object, partition: int, offset: int) -> None:
        """The event at ``partition``/``offset``: invalidate its keys, then run ``on_event``.
        Events of one partition come in offset order, and only events of partitions assigned
        to the feed (none after a ``revoked``/``lost`` change of its partition, until it is
        ``assigned`` again)."""
        ...

    def partitions_changed(self, change: PartitionChange) -> None:
        """Partitions were assigned, revoked or lost; report the first assignment too (before
        any of its events)."""
        ...

    def gap(self, error: EventStreamError) -> None:
        """A position moved other than by applying events: a :class:`~eventstream.GapError`
        (events deleted by retention), an offset reset, a committed offset outside the log."""
        ...

    def failed(self, error: EventStreamError) -> None:
        """The consumer stopped for good (a fatal or authentication error, ...). No call
        follows."""
        ...


class Feed(Protocol):
    """The cache's consumer: it owns the instance's consumer group ``"{topic}::{instance_id}"``
    and delivers every event of the topic to a :class:`FeedSink`.

    It commits the positions it has applied promptly (an asynchronous commit after each batch,
    or at least every few hundred milliseconds): :func:`~eventstream.cache.wait_applied` reads
    them. Every method may be called from any thread, including its own poll thread from inside
    a sink call, and none blocks except :meth:`close`.
    """

    def start(self, sink: FeedSink) -> None:
        """Start consuming in the background and delivering to ``sink``. Called once."""
        ...

    def positions(self) -> Mapping[int, int]:
        """``{partition: next offset}`` of the partitions assigned now whose position is known
        (a logical end must be resolved to a number first). A position advances only after the
        sink applied the event below it (or the feed skipped a record that never reaches
        the sink, e.g. one that does not decode), or through :meth:`skip_to_end`; any other
        move is reported as a gap."""
        ...

    def skip_to_end(self, done: Callable[[], None]) -> None:
        """Ask the poll thread to move every assigned partition to its current end, then call
        ``done()`` (on the poll thread). The events skipped are not applied and not reported
        as a gap. ``done`` must be called after a move that started after this call: a request
        that arrives while a move is under way needs a move of its own (requests may be merged
        into one later move). Returns at once."""
        ...

    def close(self, timeout: float | None) -> None:
        """Stop consuming: commit what was applied, leave the group. Blocks up to ``timeout``
        for a sink call in progress; raises what stopped the consumer, if anything."""
        ...
