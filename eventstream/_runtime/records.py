"""The values that cross the API in both directions, shared by every layer (a leaf: it imports
nothing of eventstream): what ``produce()`` returns (:class:`Deliveries`, :class:`Delivery`) and
the position a reader must reach to have seen those events (:class:`Token`); what a handler may
learn about its event (:class:`EventMetadata`); what ``on_rebalance`` hears
(:class:`PartitionChange`); a record as it was read (:class:`RawRecord`, for dead letters)."""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Literal, NamedTuple, cast, overload

__all__ = [
    "Deliveries",
    "Delivery",
    "EventMetadata",
    "PartitionChange",
    "RawRecord",
    "Token",
]


class Token(Mapping[int, int]):
    """What a reader must have applied to have seen some events: ``{partition: offset}``, the
    offset just past the last of those events in each partition (a consumer whose position in
    every listed partition is at least that has handled them all).

    Immutable and hashable. ``a | b`` (or :meth:`merge`) is the token of both: the larger offset
    per partition. Made by :attr:`Deliveries.token`; build one from a mapping to wait for
    positions learned elsewhere.
    """

    __slots__ = ("_offsets",)

    def __init__(self, offsets: Mapping[int, int] | Iterable[tuple[int, int]] = ()) -> None:
        merged: dict[int, int] = {}
        items = cast(
            "Iterable[tuple[int, int]]",
            offsets.items() if isinstance(offsets, Mapping) else offsets,  # pyright: ignore[reportUnknownMemberType]
        )
        for partition, offset in items:
            if merged.get(partition, -1) < offset:
                merged[partition] = offset
        self._offsets = merged

    def __getitem__(self, partition: int) -> int:
        return self._offsets[partition]

    def __iter__(self) -> Iterator[int]:
        return iter(self._offsets)

    def __len__(self) -> int:
        return len(self._offsets)

    def merge(self, *others: Mapping[int, int]) -> Token:
        """The token of this and ``others`` together: the larger offset per partition."""
        pairs = [*self._offsets.items()]
        for other in others:
            pairs.extend(other.items())
        return Token(pairs)

    def __or__(self, other: Mapping[int, int]) -> Token:
        return self.merge(other)

    def reached_by(self, positions: Mapping[int, int]) -> bool:
        """Whether ``positions`` (``{partition: next offset to read}``) have passed every event
        of this token."""
        return all(positions.get(p, -1) >= offset for p, offset in self._offsets.items())

    def __hash__(self) -> int:
        return hash(frozenset(self._offsets.items()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self._offsets) == dict(other)  # pyright: ignore[reportUnknownArgumentType]
        return NotImplemented

    def __repr__(self) -> str:
        return f"Token({dict(sorted(self._offsets.items()))})"


class Delivery(NamedTuple):
    """Where one event was written: its partition and offset, and its ``ce_id``."""

    partition: int
    offset: int
    event_id: str


class Deliveries(Sequence[Delivery]):
    """The events of one call, in call order. Immutable; entries are made when read, so a caller
    that ignores the result pays only for two small arrays."""

    __slots__ = ("_first", "_offsets", "_partitions", "_prefix")

    def __init__(
        self, partitions: array[int], offsets: array[int], prefix: str, first: int
    ) -> None:
        self._partitions = partitions
        self._offsets = offsets
        self._prefix = prefix  # "<producer id>-"
        self._first = first  # the sequence number of the call's first ce_id

    def __len__(self) -> int:
        return len(self._partitions)

    @overload
    def __getitem__(self, index: int) -> Delivery: ...

    @overload
    def __getitem__(self, index: slice) -> list[Delivery]: ...

    def __getitem__(self, index: int | slice) -> Delivery | list[Delivery]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = range(len(self))[index]
        return Delivery(self._partitions[i], self._offsets[i], f"{self._prefix}{self._first + i}")

    def __iter__(self) -> Iterator[Delivery]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        shown = ", ".join(f"{d.partition}@{d.offset}" for d in self[:5])
        more = f", ... ({len(self)} events)" if len(self) > 5 else ""
        return f"Deliveries([{shown}{more}])"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)  # pyright: ignore[reportUnknownArgumentType]

    __hash__ = None  # type: ignore[assignment]

    @property
    def token(self) -> Token:
        """The :class:`Token` of this call's events: ``{partition: offset + 1}`` of the last
        event written to each partition. A reader at or past it has handled every one of them
        (``cache.get(key, after=deliveries.token)``, ``topic.wait_applied(deliveries.token)``).
        Events without a known offset (the no-op topic's) are left out."""
        return Token(
            (p, o + 1)
            for p, o in zip(self._partitions, self._offsets, strict=True)
            if p >= 0 and o >= 0
        )

    @classmethod
    def empty(cls) -> Deliveries:
        """The deliveries of a call that produced no events."""
        return cls(array("i"), array("q"), "", 1)


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


class PartitionChange(NamedTuple):
    """Partitions this consumer gained or gave up, passed to ``consume(on_rebalance=...)``.

    ``kind`` is ``"assigned"`` (the consumer reads them from now on), ``"revoked"`` (handed to
    another member in an orderly rebalance: the offsets of handled events were committed) or
    ``"lost"`` (taken away without that, e.g. after the session timed out or a handler exceeded
    ``max.poll.interval.ms``: other members may have handled events meanwhile, and events this
    consumer handled may be handled again). A cache that must not miss invalidations can drop
    what it holds for lost partitions.
    """

    kind: Literal["assigned", "revoked", "lost"]
    topic: str
    partitions: tuple[int, ...]


class RawRecord(NamedTuple):
    """A record as it was read: what a dead-letter record copies."""

    value: bytes | None
    key: bytes | None
    headers: list[tuple[str, bytes | None]]
    partition: int
    offset: int
