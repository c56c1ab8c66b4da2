"""Records a consumer gives up on, written to a dead-letter topic: :class:`DeadLetters`.

A record that does not decode, carries another type, or whose handler still fails goes to the
dead-letter topic with its original value, key and headers, plus headers that say why, where
from and when (``wire.DEAD_LETTER_HEADERS``). The dead-letter record is acknowledged before the
consumer stores the original's offset, so nothing is lost between the two.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, cast

from eventstream._runtime import forks, wire
from eventstream._runtime.backend import DispatchAbandoned
from eventstream._runtime.failures.skips import SkipReason
from eventstream._runtime.health import Health
from eventstream._runtime.librdkafka import ClientLog
from eventstream._runtime.records import RawRecord
from eventstream.errors import BrokerError, is_retriable

if TYPE_CHECKING:
    import confluent_kafka

__all__ = ["DeadLetters"]


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
            # Imported on first use: importing eventstream loads no confluent-kafka.
            import confluent_kafka

            conf: dict[str, object] = {
                k: v for k, v in self._properties.items() if k != "statistics.interval.ms"
            }
            conf["logger"] = ClientLog(self._logger)
            self._client = confluent_kafka.Producer(conf)
            forks.keep_in_children(self)
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
        values = (
            reason.encode(),
            error.encode("utf-8", "replace")[:2000],
            self._origin.encode(),
            str(record.partition).encode(),
            str(record.offset).encode(),
            self._group.encode(),
            str(attempts).encode(),
            wire.timestamp(),
        )
        headers = [*record.headers, *zip(wire.DEAD_LETTER_HEADERS, values, strict=True)]
        import confluent_kafka

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
