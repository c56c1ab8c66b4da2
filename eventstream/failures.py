"""What a consumer does with records it cannot hand over, and handlers that fail.

- :class:`RetryPolicy`: a handler that raises is called again, a bounded number of times, with a
  growing pause; the partition waits at most as long as the policy allows.
- :class:`DeadLetters`: records that do not decode, carry another type, or whose handler still
  fails go to a dead-letter topic with their original value, key and headers, plus headers that
  say why, where from and when. The dead-letter record is acknowledged before the consumer stores
  the original's offset, so nothing is lost between the two.
- :class:`Failures`: the policy one consumer applies, shared by both backends; skips are logged
  summarized (:class:`~eventstream.skips.SkipLog`), never one line per record.

Everything here runs on the consumer's poll thread, and only on the paths where something went
wrong: the handled path does not touch it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple, cast

import confluent_kafka

from eventstream import wire
from eventstream.backend import DispatchAbandoned
from eventstream.errors import BrokerError, ConfigError, is_retriable
from eventstream.health import Health
from eventstream.librdkafka_log import ClientLog
from eventstream.skips import SkipLog, SkipReason

__all__ = ["DEAD_LETTER_HEADERS", "DeadLetters", "Failures", "RawRecord", "RetryPolicy"]

#: Headers a dead-letter record carries besides the original's, in this order.
DEAD_LETTER_HEADERS = (
    "eventstream-dlq-reason",  # content-type | type | decode | handler
    "eventstream-dlq-error",  # what went wrong, in words
    "eventstream-dlq-topic",  # where the original was
    "eventstream-dlq-partition",
    "eventstream-dlq-offset",
    "eventstream-dlq-group",  # the consumer group that gave up on it
    "eventstream-dlq-attempts",  # handler calls made (0 if it never reached the handler)
    "eventstream-dlq-time",  # when it was dead-lettered (RFC 3339, UTC)
)


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


class RawRecord(NamedTuple):
    """A record as it was read: what a dead-letter record copies."""

    value: bytes | None
    key: bytes | None
    headers: list[tuple[str, bytes | None]]
    partition: int
    offset: int


class DeadLetters:
    """A producer of dead-letter records (a confluent-kafka client: the raw record and headers are
    copied as they are). Made at the first dead letter; used on the poll thread only."""

    def __init__(
        self,
        topic: str,
        *,
        properties: Mapping[str, str],
        origin: str,
        group: str,
        logger: logging.Logger,
        health: Health,
    ) -> None:
        self.topic = topic
        self._properties = dict(properties)
        self._origin = origin
        self._group = group
        self._logger = logger
        self._health = health
        self._client: confluent_kafka.Producer | None = None

    def _producer(self) -> confluent_kafka.Producer:
        if self._client is None:
            conf: dict[str, object] = {
                k: v for k, v in self._properties.items() if k != "statistics.interval.ms"
            }
            conf["logger"] = ClientLog(self._logger)
            self._client = confluent_kafka.Producer(conf)
        return self._client

    def send(
        self,
        record: RawRecord,
        *,
        reason: SkipReason,
        error: str,
        attempts: int,
        stopping: Callable[[], bool],
    ) -> None:
        """Write ``record`` to the dead-letter topic and block until it is acknowledged. A failed
        attempt is tried again (reported once through the Health) until it succeeds; raises
        :class:`DispatchAbandoned` if the consumer closes first (the original's offset is then not
        stored, so the record is read again)."""
        headers = [
            *record.headers,
            ("eventstream-dlq-reason", reason.encode()),
            ("eventstream-dlq-error", error.encode("utf-8", "replace")[:2000]),
            ("eventstream-dlq-topic", self._origin.encode()),
            ("eventstream-dlq-partition", str(record.partition).encode()),
            ("eventstream-dlq-offset", str(record.offset).encode()),
            ("eventstream-dlq-group", self._group.encode()),
            ("eventstream-dlq-attempts", str(attempts).encode()),
            ("eventstream-dlq-time", wire.timestamp()),
        ]
        pause = 0.5
        warned = False
        while True:
            outcome: list[confluent_kafka.KafkaError | None] = []

            def delivered(
                err: confluent_kafka.KafkaError | None,
                _msg: object,
                outcome: list[confluent_kafka.KafkaError | None] = outcome,
            ) -> None:
                outcome.append(err)

            producer = self._producer()
            try:
                producer.produce(
                    self.topic,
                    record.value,
                    record.key,
                    headers=cast("list[tuple[str, str | bytes | None]]", headers),
                    on_delivery=delivered,
                )
                while not outcome:
                    producer.flush(0.1)
                    if stopping() and not outcome:
                        raise DispatchAbandoned()
                failure = outcome[0]
            except confluent_kafka.KafkaException as exc:
                failure = exc.args[0]
            except BufferError:
                failure = confluent_kafka.KafkaError(confluent_kafka.KafkaError._QUEUE_FULL)
            if failure is None:
                return
            if not warned:
                warned = True
                self._health.warn(
                    BrokerError(
                        f"consumer of {self._origin!r}: could not write a dead-letter record to "
                        f"{self.topic!r}: {failure.name()}: {failure.str()}; trying again (the "
                        f"partition waits: {self._origin}[{record.partition}]@{record.offset} "
                        "is not given up before it is written)",
                        code=failure.code(),
                        name=failure.name(),
                        retriable=is_retriable(failure.code()),
                    )
                )
            deadline = time.monotonic() + pause
            while time.monotonic() < deadline:
                if stopping():
                    raise DispatchAbandoned()
                time.sleep(0.05)
            pause = min(pause * 2, 10.0)

    def close(self) -> None:
        if self._client is not None:
            self._client.flush(5.0)
            self._client = None


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
