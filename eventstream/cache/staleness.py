"""The staleness bound of a cache, from probe answers: :class:`Staleness`.

A probe answer is the topic's end offsets, stamped with the monotonic time at which they were
*asked*. A produce call that returned before that time wrote below those ends (``acks=all``), so
once the cache's applied positions have reached them on every partition, every such event has
been applied. The bound is ``now`` minus the ask time of the newest answer reached that way.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from eventstream._runtime.records import Token

__all__ = ["Staleness"]


class Staleness:
    """Probe answers not reached yet, and the ask time of the newest one reached. Not
    thread-safe: the cache uses it under its lock.

    ``window`` bounds the answers waiting to be reached (the oldest are dropped first); it must
    cover ``max_staleness`` worth of probes, since dropping an answer can only delay the moment
    the bound is known to be small again, never make it look smaller than it is.
    """

    __slots__ = ("_pending", "partitions", "reached_at")

    def __init__(self, window: int) -> None:
        self._pending: deque[tuple[float, Token]] = deque(maxlen=window)
        #: The ask time of the newest answer reached since the last reset.
        self.reached_at: float | None = None
        #: The topic's partitions, from the latest answer (kept across resets).
        self.partitions: frozenset[int] | None = None

    def reset(self) -> None:
        """Forget every answer: after a flush, only answers asked after it count."""
        self._pending.clear()
        self.reached_at = None

    def topic_changed(self, ends: Mapping[int, int], before: Mapping[int, int]) -> str | None:
        """Why the answer ``ends`` shows a topic that changed under the cache, or ``None``: its
        partitions differ from the previous answer's, or a partition ends below ``before`` (the
        applied positions read before the probe was asked): the topic was recreated or
        truncated. Remembers the partitions."""
        partitions = frozenset(ends)
        previous, self.partitions = self.partitions, partitions
        if previous is not None and partitions != previous:
            return f"the topic's partitions changed from {len(previous)} to {len(partitions)}"
        for partition, end in sorted(ends.items()):
            position = before.get(partition)
            if position is not None and end < position:
                return (
                    f"partition {partition} ends at offset {end}, below the position {position} "
                    "this cache had applied: the topic was recreated or truncated"
                )
        return None

    def add(self, asked_at: float, ends: Mapping[int, int]) -> None:
        """An answer: ``ends`` (``{partition: end offset}`` of every partition), asked at
        ``asked_at``. Answers come in the order they were asked."""
        self._pending.append((asked_at, Token(ends)))

    def advance(self, positions: Mapping[int, int]) -> None:
        """Take the newest answer that ``positions`` (applied, ``{partition: next offset}``)
        reach on every partition of the topic as the bound's base; drop it and older ones."""
        for index in range(len(self._pending) - 1, -1, -1):
            asked_at, ends = self._pending[index]
            if ends.reached_by(positions):
                self.reached_at = asked_at
                for _ in range(index + 1):
                    self._pending.popleft()
                return

    def behind(self, positions: Mapping[int, int]) -> tuple[list[int], int] | None:
        """For the newest answer waiting: the partitions ``positions`` lack, and how many events
        the others are behind it. ``None`` without one."""
        if not self._pending:
            return None
        _, ends = self._pending[-1]
        missing = sorted(p for p in ends if p not in positions)
        events = sum(max(0, end - positions[p]) for p, end in ends.items() if p in positions)
        return missing, events

    def bound(self, now: float) -> float | None:
        """``now`` minus the ask time of the newest answer reached, or ``None``."""
        return None if self.reached_at is None else now - self.reached_at
