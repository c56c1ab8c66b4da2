"""The wire format: header names (eventstream's, the trace context's, the dead-letter ones), the
content type and event ids, for both backends, the dead-letter path and telemetry to share.

An event travels as one Kafka record. The value is the serialized protobuf message; the headers
follow the CloudEvents 1.0 Kafka protocol binding in binary content mode:

=================  ===========================================================================
header             value
=================  ===========================================================================
``content-type``   ``application/protobuf``
``ce_specversion`` ``1.0``
``ce_source``      the producing instance id (``TopicConfig.instance_id``), a URI reference
``ce_type``        the protobuf full name of the event class, e.g. ``acme.cache.Invalidate``
``ce_id``          unique per event for its source: ``<16 hex digits of the producer>-<n>``
``ce_time``        when the produce call was made (RFC 3339, UTC, milliseconds)
=================  ===========================================================================

Reading: a header that occurs more than once counts by its last occurrence (as Kafka's
``Headers.lastHeader`` and librdkafka's ``rd_kafka_header_get_last`` read it). A record whose
``ce_type`` names another type, or whose ``content-type`` is not a protobuf media type, is
skipped; media types compare as media types (case-insensitive, parameters allowed). Records
without these headers are accepted when the value decodes as the event class, so plain producers
can publish too; the original Go producer's ``source-instance`` header counts as ``ce_source``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

__all__ = [
    "ACCEPTED_MEDIA_TYPES",
    "CONTENT_TYPE",
    "DEAD_LETTER_HEADERS",
    "HEADER_CONTENT_TYPE",
    "HEADER_ID",
    "HEADER_LEGACY_SOURCE",
    "HEADER_SOURCE",
    "HEADER_SPECVERSION",
    "HEADER_TIME",
    "HEADER_TRACEPARENT",
    "HEADER_TRACESTATE",
    "HEADER_TYPE",
    "SPECVERSION",
    "headers_size",
    "is_protobuf",
    "new_producer_id",
    "payload_budget",
    "timestamp",
]

HEADER_CONTENT_TYPE = "content-type"
HEADER_SPECVERSION = "ce_specversion"
HEADER_ID = "ce_id"
HEADER_SOURCE = "ce_source"
HEADER_TYPE = "ce_type"
HEADER_TIME = "ce_time"
#: W3C trace context, written and read only when TopicConfig.telemetry is set.
HEADER_TRACEPARENT = "traceparent"
HEADER_TRACESTATE = "tracestate"
#: The original Go producer (segmentio/kafka-go based) named its instance in this header.
HEADER_LEGACY_SOURCE = "source-instance"

CONTENT_TYPE = b"application/protobuf"
SPECVERSION = b"1.0"
#: Media types a consumer decodes as protobuf (the registered one and its older alias), lower-case.
ACCEPTED_MEDIA_TYPES = frozenset({"application/protobuf", "application/x-protobuf"})

#: Headers a dead-letter record carries besides the original's, in this order.
DEAD_LETTER_HEADERS = (
    "eventstream-dlq-reason",  # content-type | type | tombstone | decode | handler
    "eventstream-dlq-error",  # what went wrong, in words
    "eventstream-dlq-topic",  # where the original was
    "eventstream-dlq-partition",
    "eventstream-dlq-offset",
    "eventstream-dlq-group",  # the consumer group that gave up on it
    "eventstream-dlq-attempts",  # handler calls made (0 if it never reached the handler)
    "eventstream-dlq-time",  # when it was dead-lettered (RFC 3339, UTC)
)


#: librdkafka's largest per-record overhead (``RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD``): it refuses a
#: record at enqueue (``MSG_SIZE_TOO_LARGE``) when this + key + value + headers exceeds
#: ``message.max.bytes``, a header counting its name, its value and their lengths as varints.
RECORD_OVERHEAD = 36
_ID_PREFIX_LEN = 17  # new_producer_id() and its "-"
_MAX_ID_DIGITS = 20
_TIME_LEN = 24  # timestamp(): 2026-12-01T09:30:00.123Z


def _varint_size(length: int) -> int:
    """Bytes of ``length`` as a zigzag varint (how record headers carry their lengths)."""
    value, size = length << 1, 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


def headers_size(headers: Iterable[tuple[str, int]]) -> int:
    """What ``(name, value length)`` headers add to a record, as librdkafka counts it."""
    total = 0
    for name, value_len in headers:
        name_len = len(name.encode())
        total += name_len + value_len + _varint_size(name_len) + _varint_size(value_len)
    return total


def payload_budget(max_message_bytes: int, source: str, type_name: str) -> int:
    """The largest key + value of an event with eventstream's headers (the longest ce_id) that
    librdkafka accepts under ``max_message_bytes``."""
    headers = (
        (HEADER_CONTENT_TYPE, len(CONTENT_TYPE)),
        (HEADER_SPECVERSION, len(SPECVERSION)),
        (HEADER_ID, _ID_PREFIX_LEN + _MAX_ID_DIGITS),
        (HEADER_SOURCE, len(source.encode())),
        (HEADER_TYPE, len(type_name.encode())),
        (HEADER_TIME, _TIME_LEN),
    )
    return max_message_bytes - RECORD_OVERHEAD - headers_size(headers)


def is_protobuf(content_type: bytes) -> bool:
    """Whether a ``content-type`` value names protobuf: ``type/subtype`` compared without regard
    to case, parameters (``; proto=pkg.Type``) and surrounding spaces ignored (RFC 9110)."""
    media = content_type.decode("latin-1").partition(";")[0].strip().lower()
    return media in ACCEPTED_MEDIA_TYPES


def new_producer_id() -> str:
    """16 random hex digits naming one producer; its events get ids ``<producer id>-<n>``."""
    return os.urandom(8).hex()


def timestamp(seconds: float | None = None) -> bytes:
    """``ce_time``: RFC 3339 in UTC with milliseconds, e.g. ``2026-12-01T09:30:00.123Z``."""
    now = time.time() if seconds is None else seconds
    whole = int(now)
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        + f".{int((now - whole) * 1000):03d}Z"
    ).encode()
