"""How often a failing handler is called again: :class:`RetryPolicy`."""

from __future__ import annotations

import math
from dataclasses import dataclass

from eventstream.errors import ConfigError

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a handler that raises an ``Exception`` is called again for the same event.

    ``attempts`` counts every call, the first included (1: no retry). Before attempt ``k + 1`` the
    consumer waits ``min(backoff * 2**(k - 1), max_backoff)`` seconds; the event's partition waits
    meanwhile (events of other partitions of the same consumer wait too: one handler call at a
    time). Keep the worst case, ``sum`` of the waits plus the handler's own time, well below the
    consumer's ``max.poll.interval.ms`` (300 s by default). ``close()`` interrupts a wait; the event
    is then handled again by the group's next consumer.
    """

    attempts: int = 3
    backoff: float = 0.1
    max_backoff: float = 5.0

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise ConfigError("retry.attempts", f"must be an int, got {self.attempts!r}")
        if not 1 <= self.attempts <= 100:
            raise ConfigError("retry.attempts", f"must be 1 to 100, got {self.attempts}")
        for name in ("backoff", "max_backoff"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not 0 <= value <= 300
            ):
                raise ConfigError(f"retry.{name}", f"must be 0 to 300 seconds, got {value!r}")
