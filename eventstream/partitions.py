"""What a consumer learns when its share of the topic changes: :class:`PartitionChange`."""

from __future__ import annotations

from typing import Literal, NamedTuple

__all__ = ["PartitionChange"]


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
