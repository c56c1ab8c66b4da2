"""The wire format: the only module that knows header names, the content type and event ids.

An event travels as one Kafka record. The value is the serialized protobuf message; the headers
follow the CloudEvents 1.0 Kafka protocol binding in binary content mode:

=================  ===========================================================================
header             value
=================  ===========================================================================
``content-type``   ``application/protobuf``
``ce_specversion`` ``1.0``
``ce_id``          unique per event for its source: ``<16 hex digits of the producer>-<n>``
``ce_source``      the producing instance id (``TopicConfig.instance_id``)
``ce_type``        the protobuf full name of the event class, e.g. ``acme.cache.Invalidate``
=================  ===========================================================================

A consumer skips (and logs) a record whose ``ce_type`` names another type, and accepts records
without these headers when the value decodes as its event class.
"""

from __future__ import annotations

import os

__all__ = [
    "ACCEPTED_CONTENT_TYPES",
    "CONTENT_TYPE",
    "HEADER_CONTENT_TYPE",
    "HEADER_ID",
    "HEADER_SOURCE",
    "HEADER_SPECVERSION",
    "HEADER_TYPE",
    "SPECVERSION",
    "new_producer_id",
]

HEADER_CONTENT_TYPE = "content-type"
HEADER_SPECVERSION = "ce_specversion"
HEADER_ID = "ce_id"
HEADER_SOURCE = "ce_source"
HEADER_TYPE = "ce_type"

CONTENT_TYPE = b"application/protobuf"
SPECVERSION = b"1.0"
#: Content types a consumer decodes as protobuf (the registered one and its older alias).
ACCEPTED_CONTENT_TYPES = frozenset({CONTENT_TYPE, b"application/x-protobuf"})


def new_producer_id() -> str:
    """16 random hex digits naming one producer; its events get ids ``<producer id>-<n>``."""
    return os.urandom(8).hex()
