"""What a ``produce()`` call returns: where each of its events went (:class:`Deliveries`)."""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from typing import NamedTuple, overload

__all__ = ["Deliveries", "Delivery"]


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

    @classmethod
    def empty(cls) -> Deliveries:
        return cls(array("i"), array("q"), "", 1)
