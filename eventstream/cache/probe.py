"""Asking the broker where the topic ends: :class:`Probe`, and :class:`AdminProbe` over
confluent-kafka's ``AdminClient``: a Metadata request (the partitions) and ``list_offsets``.

A consumer's own idea of the end (librdkafka's cached high watermark) comes from its last fetch
response: during an outage or with a frozen broker it stays where it was, and the consumer
looks caught up. The cache asks instead, every fraction of a second.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Protocol, cast

from confluent_kafka import TopicPartition
from confluent_kafka.admin._listoffsets import OffsetSpec

from eventstream.cache.admin_calls import AdminCalls
from eventstream.config import TopicConfig
from eventstream.errors import BrokerError, TopicError

__all__ = ["AdminProbe", "Probe", "check_ends"]

_BACKOFF = 0.05  # seconds between asks after a partition had no leader
# LEADER_NOT_AVAILABLE, NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH: the
# partition's leadership is moving (a new topic, a broker restarting) and the answer is a metadata
# refresh away.
_BETWEEN_LEADERS = frozenset({5, 6, 74, 75})
_LEADER_NOT_AVAILABLE = 5


class Probe(Protocol):
    """Where every partition of the topic ends now."""

    def end_offsets(self) -> Mapping[int, int]:
        """``{partition: end offset}`` of every partition of the topic (the offset the next
        event written there will get, as committed reads see it), asked of the broker now.
        Blocks (bounded); raises when it cannot tell (no broker, no such topic, ...)."""
        ...


class AdminProbe:
    """A :class:`Probe` over an ``AdminClient`` of its own, built from ``config``: one
    Metadata request (the partitions; it never creates the topic; librdkafka's mock cluster
    answers it, where it cannot answer DescribeTopics) and one ListOffsets
    request (``latest``, read-committed, as the cache's consumer reads) per call. Thread-safe;
    makes no network call until asked."""

    def __init__(self, config: TopicConfig, *, timeout: float = 1.0) -> None:
        self._topic = config.topic
        self._timeout = timeout
        self._calls = AdminCalls(config, f"end-offsets probe of topic {config.topic!r}")

    def end_offsets(self) -> dict[int, int]:
        """Blocks up to ``timeout``. Raises :class:`TopicError` (the topic does not exist, a
        request failed), :class:`~eventstream.WaitTimeoutError` (no answer in time),
        :class:`~eventstream.AuthenticationError`, :class:`~eventstream.AuthorizationError`."""
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                return self._ask(deadline)
            except TopicError as exc:
                # A partition between leaders answers one of _BETWEEN_LEADERS: the next
                # request, after a metadata refresh, finds the new leader.
                if exc.code not in _BETWEEN_LEADERS or time.monotonic() + _BACKOFF >= deadline:
                    raise
            time.sleep(_BACKOFF)

    def _ask(self, deadline: float) -> dict[int, int]:
        calls, what = self._calls, f"end offsets of topic {self._topic!r}"
        try:
            ids = calls.partitions(self._topic, deadline)
        except BrokerError as exc:
            if type(exc) is not BrokerError:  # authentication, authorization, a timeout
                raise
            raise TopicError(
                str(exc), code=exc.code, name=exc.name, retriable=exc.retriable
            ) from None
        partitions = [TopicPartition(self._topic, p) for p in ids]
        latest = cast(OffsetSpec, OffsetSpec.latest())  # type: ignore[no-untyped-call]
        answers = calls.list_offsets(partitions, latest, deadline)
        ends = {
            tp.partition: int(calls.result(future, deadline, what, TopicError).offset)
            for tp, future in answers.items()
        }
        check_ends(ends, what, TopicError)
        return ends


def check_ends(ends: Mapping[int, int], what: str, error: type[BrokerError]) -> None:
    """Raise ``error`` (retriable, LEADER_NOT_AVAILABLE) if a partition in ``ends`` has no
    offset: librdkafka answers -1001, and no error, for a partition whose leader just went away.
    That is no end at all: taken as one it reads as a truncated topic, and seeking there starts
    wherever the consumer resets to."""
    unknown = sorted(p for p, end in ends.items() if end < 0)
    if unknown:
        raise error(
            f"{what}: partition {unknown[0]} has no end offset now (its leader is moving)",
            code=_LEADER_NOT_AVAILABLE,
            name="LEADER_NOT_AVAILABLE",
            retriable=True,
        )
