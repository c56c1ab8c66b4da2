"""The demo's event class, built from a descriptor at import so the package needs no protoc.

Equivalent to::

    syntax = "proto3";
    package eventstream.demo;
    message CacheInvalidated {
      string key = 1;           // the cache entry that changed
      int64 version = 2;        // the source of truth's version after the change
      int64 written_at_us = 3;  // when the writer published it (for latency)
    }
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

__all__ = ["CacheInvalidated"]

_F = descriptor_pb2.FieldDescriptorProto


def _build() -> type[Message]:
    pool = descriptor_pool.Default()
    name = "eventstream.demo.CacheInvalidated"
    try:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
    except KeyError:
        pass
    file = descriptor_pb2.FileDescriptorProto(
        name="eventstream/demo/cache.proto", package="eventstream.demo", syntax="proto3"
    )
    message = file.message_type.add(name="CacheInvalidated")
    for number, (field, kind) in enumerate(
        (("key", _F.TYPE_STRING), ("version", _F.TYPE_INT64), ("written_at_us", _F.TYPE_INT64)),
        start=1,
    ):
        message.field.add(name=field, number=number, type=kind, label=_F.LABEL_OPTIONAL)
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


if TYPE_CHECKING:
    # What protoc's --pyi_out would declare: type checkers see the fields and the keyword
    # constructor (types-protobuf's Message takes no field arguments).
    class CacheInvalidated(Message):
        key: str
        version: int
        written_at_us: int

        def __init__(
            self,
            *,
            key: str | None = ...,
            version: int | None = ...,
            written_at_us: int | None = ...,
        ) -> None: ...

else:
    CacheInvalidated = _build()
