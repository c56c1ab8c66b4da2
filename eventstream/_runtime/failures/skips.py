"""Records a consumer did not hand to its handler, logged without flooding: :class:`SkipLog`.

A topic that carries 1,000 records of a foreign type must not produce 1,000 warnings. The first
few skips of each kind are logged one by one, with their coordinates; after that they are
counted, and a summary line per interval says how many were skipped and why.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Literal

__all__ = ["SkipLog", "SkipReason"]

#: ``content-type``: not a protobuf media type; ``type``: ``ce_type`` names another event class;
#: ``tombstone``: a record without a value; ``decode``: the value does not decode as the event
#: class; ``handler``: the handler still failed after the retry policy (dead-lettered or dropped).
SkipReason = Literal["content-type", "type", "tombstone", "decode", "handler"]

_WORDS = {
    "content-type": "not protobuf",
    "type": "of another ce_type",
    "tombstone": "without a value (tombstones)",
    "decode": "that do not decode",
    "handler": "whose handler failed",
}


class SkipLog:
    """Used on one consumer's poll thread only."""

    def __init__(
        self,
        topic: str,
        logger: logging.Logger,
        *,
        first: int = 3,
        interval: float = 60.0,
    ) -> None:
        self._topic = topic
        self._logger = logger
        self._first = first  # logged one by one, of each reason
        self._interval = interval
        self._logged: Counter[str] = Counter()
        self._pending: Counter[str] = Counter()
        self._since = time.monotonic()
        self.total = 0

    def skipped(
        self,
        reason: SkipReason,
        partition: int,
        offset: int,
        detail: str,
        *,
        dead_letter_topic: str | None = None,
        level: int = logging.WARNING,
        exc_info: BaseException | None = None,
    ) -> None:
        """One record was not handled: ``detail`` says why; ``dead_letter_topic`` where it went."""
        self.total += 1
        where = f"; dead-lettered to {dead_letter_topic!r}" if dead_letter_topic else ""
        if self._logged[reason] < self._first:
            self._logged[reason] += 1
            verb = "handler failed for" if reason == "handler" else "skipping"
            more = "" if self._logged[reason] < self._first else " (from now on summarized)"
            self._logger.log(
                level,
                "%s event at %s[%d]@%d: %s%s%s",
                verb,
                self._topic,
                partition,
                offset,
                detail,
                where,
                more,
                exc_info=exc_info,
            )
            return
        self._pending[_WORDS[reason] + where.replace(";", ",")] += 1
        self.flush_if_due()

    def flush_if_due(self) -> None:
        if self._pending and time.monotonic() - self._since >= self._interval:
            self.flush()

    def flush(self) -> None:
        """Log the summary of what was counted since the last one (at close, or when due)."""
        if self._pending:
            count = sum(self._pending.values())
            why = ", ".join(f"{n} {words}" for words, n in self._pending.most_common())
            self._logger.warning(
                "skipped %d more records of %r in the last %.0f s: %s",
                count,
                self._topic,
                time.monotonic() - self._since,
                why,
            )
            self._pending.clear()
        self._since = time.monotonic()
