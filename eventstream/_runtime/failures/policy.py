"""What one consumer does with records it cannot hand over and handlers that fail:
:class:`Failures`, shared by both backends. Skips are logged summarized
(:class:`~eventstream._runtime.failures.skips.SkipLog`), never one line per record; handlers are
retried as the :class:`~eventstream.RetryPolicy` says; what is given up on goes to the dead-letter
topic if the consumer has one.

Everything here runs on the consumer's poll thread, and only on the paths where something went
wrong: the handled path does not touch it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from eventstream._runtime.backend import DispatchAbandoned
from eventstream._runtime.failures.dead_letters import DeadLetters
from eventstream._runtime.failures.retry import RetryPolicy
from eventstream._runtime.failures.skips import SkipLog, SkipReason
from eventstream._runtime.records import RawRecord

__all__ = ["FailureCounts", "Failures"]


@dataclass
class FailureCounts:
    skipped: int = 0
    failed: int = 0
    dead_lettered: int = 0
    retried: int = 0


class Failures:
    """One consumer's policy for records it cannot hand over and handlers that fail."""

    def __init__(
        self,
        topic: str,
        logger: logging.Logger,
        *,
        retry: RetryPolicy | None,
        dead_letters: DeadLetters | None,
        stopping: Callable[[], bool],
    ) -> None:
        self._topic = topic
        self._logger = logger
        self._retry = retry or RetryPolicy(attempts=1)
        self._dead_letters = dead_letters
        self.stopping = stopping
        self._skips = SkipLog(topic, logger)
        self.counts = FailureCounts()
        #: Whether the backend must build a RawRecord for skipped or failed records.
        self.wants_raw = dead_letters is not None

    @property
    def attempts(self) -> int:
        return self._retry.attempts

    def delay(self, attempt: int) -> float:
        """The wait before attempt ``attempt + 1`` (``attempt`` < ``attempts``)."""
        return float(min(self._retry.backoff * (1 << (attempt - 1)), self._retry.max_backoff))

    def wait(self, seconds: float) -> None:
        """Pause before a retry; raises :class:`DispatchAbandoned` if the consumer closes
        meanwhile (the event is handled again by the group's next consumer)."""
        self.counts.retried += 1
        deadline = time.monotonic() + seconds
        while True:
            if self.stopping():
                raise DispatchAbandoned()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))

    def skip(
        self,
        reason: SkipReason,
        partition: int,
        offset: int,
        detail: str,
        record: RawRecord | None,
    ) -> None:
        """A record that cannot reach the handler (its type, content type or value): logged
        (summarized) and dead-lettered if the consumer has a dead-letter topic."""
        self.counts.skipped += 1
        topic = self._dead_letter(record, reason, detail, 0)
        self._skips.skipped(reason, partition, offset, detail, dead_letter_topic=topic)

    def gave_up(
        self,
        error: Exception,
        partition: int,
        offset: int,
        attempts: int,
        record: RawRecord | None,
    ) -> None:
        """The handler still failed after ``attempts`` calls: logged (summarized, with the
        traceback for the first few) and dead-lettered if the consumer has a dead-letter topic."""
        self.counts.failed += 1
        detail = f"{type(error).__name__}: {error}"
        if attempts > 1:
            detail += f" (after {attempts} attempts)"
        topic = self._dead_letter(record, "handler", detail, attempts)
        self._skips.skipped(
            "handler",
            partition,
            offset,
            detail,
            dead_letter_topic=topic,
            level=logging.ERROR,
            exc_info=error,
        )

    def _dead_letter(
        self, record: RawRecord | None, reason: SkipReason, detail: str, attempts: int
    ) -> str | None:
        if self._dead_letters is None or record is None:
            return None
        self._dead_letters.send(
            record, reason=reason, error=detail, attempts=attempts, stopping=self.stopping
        )
        self.counts.dead_lettered += 1
        return self._dead_letters.topic

    def close(self) -> None:
        self._skips.flush()
        if self._dead_letters is not None:
            self._dead_letters.close()
