"""What a handler may learn about the event it is handling, besides the event itself."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

__all__ = ["EventMetadata"]


class EventMetadata(NamedTuple):
    """Where an event was read from and who sent it. Immutable; cheap to build (a tuple).

    ``source`` and ``event_id`` are the ``ce_source``/``ce_id`` headers, ``None`` for records
    written without them. ``timestamp_ms`` is the record's Kafka timestamp (ms since the epoch).
    ``traceparent`` / ``tracestate`` are the W3C trace context headers, read only when the topic
    has ``TopicConfig.telemetry`` (else ``None``).
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    timestamp_ms: int
    source: str | None
    event_id: str | None
    traceparent: str | None = None
    tracestate: str | None = None

    @property
    def timestamp(self) -> datetime:
        """The record's timestamp as an aware UTC datetime."""
        return datetime.fromtimestamp(self.timestamp_ms / 1000, tz=UTC)
