"""Where a consumer could not resume where its group left off, in words and as a
:class:`~eventstream.GapError` (both backends report the same)."""

from __future__ import annotations

import re

from eventstream.errors import EventStreamError, GapError

__all__ = ["OffsetResets", "start_outside_log"]

# librdkafka's WARNING (facility OFFSET) when a fetch position is not in the log any more, e.g.
# "users [3]: offset reset (at offset 17 (leader epoch 0), broker 1) to offset BEGINNING
# (leader epoch -1): fetch failed due to requested offset not available on the broker: ...";
# the target may also be "cached BEGINNING offset offset 42 (...)".
_RESET = re.compile(
    r"\[(?P<partition>\d+)\]: offset reset \(at offset (?P<at>-?\d+)\b.*?\) to "
    r"(?:cached BEGINNING offset )?offset (?P<to>-?\d+|[A-Z]+)\b"
)


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


class OffsetResets:
    """A consumer's fetch positions that librdkafka reset because retention (or truncation)
    removed them from the log. Fed with librdkafka's OFFSET warnings and the first offset read
    after each; yields a :class:`GapError` once the offset it resumed at is known. Used on the
    poll thread only."""

    def __init__(self, topic: str) -> None:
        self._topic = topic
        self.pending: dict[int, int] = {}  # partition -> offset that was out of range

    def warned(self, text: str) -> GapError | None:
        """librdkafka's OFFSET warning ``text``: a gap now if the target is an offset, else
        remembered until :meth:`resumed`."""
        match = _RESET.search(text)
        if match is None:
            return None
        partition, at, to = int(match["partition"]), int(match["at"]), match["to"]
        if at < 0:
            return None
        if to.lstrip("-").isdigit():
            return self._gap(partition, at, int(to))
        self.pending[partition] = at
        return None

    def resumed(self, partition: int, offset: int) -> GapError | None:
        """The first record of ``partition`` read after a reset is at ``offset``."""
        at = self.pending.pop(partition, None)
        return None if at is None else self._gap(partition, at, offset)

    def _gap(self, partition: int, at: int, to: int) -> GapError | None:
        if to <= at:
            return None  # reset backwards (the log was truncated): read again, nothing skipped
        return GapError(
            f"consumer of {self._topic!r}: events {self._topic}[{partition}]@{at}..{to - 1} were "
            f"deleted before this consumer read them ({to - at} offsets skipped: it fell behind "
            f"the topic's retention); resumed at offset {to}. A cache fed by this stream may be "
            "stale for them.",
            topic=self._topic,
            partition=partition,
            first_offset=at,
            resume_offset=to,
        )
