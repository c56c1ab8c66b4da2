"""What one consumer does with records it cannot hand over and handlers that fail:
:class:`Failures`, shared by both backends. Skips are logged summarized
(:class:`~eventstream._runtime.failures.skips.SkipLog`), never one line per record; handlers are
retried as the :class:`~eventstream.RetryPolicy` says; what is given up on goes to the dead-letter
topic if the consumer has one.

Everything here runs on the consumer's poll thread (but :meth:`Failures.failed_async`, on the
async handler's event loop), and only on the paths where something went wrong: the handled path
does not touch it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from eventstream._runtime.backend import DispatchAbandoned
from eventstream._runtime.failures.dead_letters import DeadLetters
from eventstream._runtime.failures.retry import RetryPolicy
from eventstream._runtime.failures.skips import SkipLog, SkipReason
from eventstream._runtime.records import RawRecord
from eventstream._runtime.telemetry.metrics import LatencyRecorder

__all__ = ["FailureCounts", "Failures"]


@dataclass
class FailureCounts:
    skipped: int = 0
    failed: int = 0
    dead_lettered: int = 0
    retried: int = 0


class Failures:
    """One consumer's policy for records it cannot hand over and handlers that fail. Used on the
    poll thread only."""

    def __init__(
        self,
        topic: str,
        type_name: str,
        logger: logging.Logger,
        *,
        retry: RetryPolicy | None,
        dead_letters: DeadLetters | None,
        timed: bool = False,
    ) -> None:
        self._topic = topic
        self._type_name = type_name
        self._logger = logger
        self._retry = retry or RetryPolicy(attempts=1)
        self._dead_letters = dead_letters
        #: Whether the consumer is closing: retries and dead letters give up (set by the
        #: consumer's runtime once its native consumer exists).
        self.stopping: Callable[[], bool] = lambda: False
        self._skips = SkipLog(topic, logger)
        self.counts = FailureCounts()
        #: Whether the hot loop must build a RawRecord for skipped or failed records.
        self.wants_raw = dead_letters is not None
        #: Durations of the handler calls made by retries (the hot loop times the first ones).
        self.retry_time = LatencyRecorder() if timed else None

    def _next_pause(self, attempt: int) -> float | None:
        """The one place that decides on a retry, for the sync and the async handler alike: after
        ``attempt`` failed calls, the pause before the next one, or ``None`` to give up (the
        policy's attempts are used). Counts the retry. Raises :class:`DispatchAbandoned` if the
        consumer is closing (the event is handled again by the group's next consumer)."""
        if attempt >= self._retry.attempts:
            return None
        if self.stopping():
            raise DispatchAbandoned()
        self.counts.retried += 1
        return float(min(self._retry.backoff * (1 << (attempt - 1)), self._retry.max_backoff))

    def _pause_slice(self, deadline: float) -> float:
        """How long to wait next (at most 50 ms, so that a close() is seen) before ``deadline``;
        0 when it passed. Raises :class:`DispatchAbandoned` if the consumer is closing."""
        if self.stopping():
            raise DispatchAbandoned()
        return max(0.0, min(deadline - time.monotonic(), 0.05))

    def failed(
        self,
        handler: Callable[..., object],
        args: tuple[object, ...],
        error: Exception,
        partition: int,
        offset: int,
        record: RawRecord | None,
    ) -> bool:
        """The handler raised ``error`` for the event at ``partition``/``offset``: call it again
        with ``args`` as the retry policy says, on the calling (poll) thread. True if a retry
        returned; otherwise the event is given up (:meth:`gave_up`). A ``BaseException`` that is
        not an ``Exception`` propagates; :class:`DispatchAbandoned` if the consumer closes during
        a pause."""
        timer = self.retry_time
        attempt = 1
        while (pause := self._next_pause(attempt)) is not None:
            deadline = time.monotonic() + pause
            while (wait := self._pause_slice(deadline)) > 0:
                time.sleep(wait)
            attempt += 1
            started = time.monotonic_ns()
            try:
                handler(*args)
                return True
            except Exception as exc:
                error = exc
            finally:
                if timer is not None:
                    timer.add(time.monotonic_ns() - started)
        self.gave_up(error, partition, offset, attempt, record)
        return False

    async def failed_async(
        self, handler: Callable[..., Awaitable[object]], args: tuple[object, ...], error: Exception
    ) -> tuple[Exception, int] | None:
        """:meth:`failed` for an ``async`` handler, awaited on its event loop: the same decisions
        (:meth:`_next_pause`), only the pauses are ``asyncio.sleep``. ``None`` if a retry returned;
        otherwise the last exception and the number of calls made, for the poll thread to give
        the event up (:meth:`gave_up`). :class:`DispatchAbandoned` if the consumer closes during a
        pause."""
        timer = self.retry_time
        attempt = 1
        while (pause := self._next_pause(attempt)) is not None:
            deadline = time.monotonic() + pause
            while (wait := self._pause_slice(deadline)) > 0:
                await asyncio.sleep(wait)
            attempt += 1
            started = time.monotonic_ns()
            try:
                await handler(*args)
                return None
            except Exception as exc:
                error = exc
            finally:
                if timer is not None:
                    timer.add(time.monotonic_ns() - started)
        return error, attempt

    def skip(
        self,
        reason: SkipReason,
        partition: int,
        offset: int,
        found: bytes | BaseException | None,
        record: RawRecord | None,
    ) -> None:
        """A record that cannot reach the handler: ``found`` is what disqualified it (the
        content-type or ce_type header value, the decoding error). Logged (summarized) and
        dead-lettered if the consumer has a dead-letter topic."""
        self.counts.skipped += 1
        detail = self._detail(reason, found)
        topic = self._dead_letter(record, reason, detail, 0)
        self._skips.skipped(reason, partition, offset, detail, dead_letter_topic=topic)

    def _detail(self, reason: SkipReason, found: bytes | BaseException | None) -> str:
        if isinstance(found, BaseException):
            return f"value does not decode as {self._type_name}: {found}"
        shown = None if found is None else found.decode("utf-8", "replace")
        if reason == "content-type":
            return f"content-type {shown!r} is not protobuf"
        if reason == "type":
            return f"ce_type {shown!r} is not {self._type_name!r}"
        return f"a record without a value (a tombstone) is not a {self._type_name} event"

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
