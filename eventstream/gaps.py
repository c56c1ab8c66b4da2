"""Where a consumer could not resume where its group left off, in words and as a
:class:`~eventstream.GapError` (both backends report the same)."""

from __future__ import annotations

from eventstream.errors import EventStreamError, GapError

__all__ = ["start_outside_log"]


def start_outside_log(
    topic: str, partition: int, committed: int, low: int, high: int
) -> EventStreamError:
    """The group's committed offset of ``topic[partition]`` lies outside the retained log
    ``[low, high]``; the consumer starts at ``low``."""
    if committed < low:
        return GapError(
            f"consumer of {topic!r}: events {topic}[{partition}]@{committed}..{low - 1} were "
            f"deleted by retention before this instance handled them ({low - committed} "
            f"offsets skipped); resuming at the oldest retained event, offset {low}. A cache "
            "fed by this stream may be stale for them.",
            topic=topic,
            partition=partition,
            first_offset=committed,
            resume_offset=low,
        )
    return EventStreamError(
        f"consumer of {topic!r}: the group's committed offset {committed} of {topic}[{partition}] "
        f"is past the end of the log (offsets {low}..{high - 1} exist): the log was truncated or "
        f"the topic recreated; reading from the oldest retained event, offset {low}."
    )
