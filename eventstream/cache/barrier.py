"""Waiting until every live instance of a topic has applied some events: :class:`AppliedBarrier`
and :func:`wait_applied`.

Every instance reads the topic in its own consumer group ``"{topic}::{instance_id}"``, and a
cache commits what it applied promptly. So the barrier lists the groups of the topic
(ListConsumerGroups, filtered by that prefix), drops those without live members
(DescribeConsumerGroups: ``Empty`` or ``Dead``), reads the committed offsets of the others
(ListConsumerGroupOffsets, one group per request) and waits until every live group has committed
past the token. It needs DESCRIBE on the groups; librdkafka's mock cluster cannot serve it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

import confluent_kafka
from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, TopicPartition

from eventstream.cache.admin_calls import AdminCalls
from eventstream.config import TopicConfig
from eventstream.errors import BrokerError, WaitTimeoutError

__all__ = ["AppliedBarrier", "wait_applied"]

_NOT_LIVE = (ConsumerGroupState.EMPTY, ConsumerGroupState.DEAD)
_GROUP_ID_NOT_FOUND = 69


class AppliedBarrier:
    """Waits until the live instances of ``config.topic`` have applied a token, over an
    ``AdminClient`` of its own (made at once, no network call until used). Thread-safe."""

    def __init__(self, config: TopicConfig, *, interval: float = 0.1) -> None:
        self._topic = config.topic
        self._prefix = f"{config.topic}::"
        self._interval = interval
        self._calls = AdminCalls(config, f"wait_applied on topic {config.topic!r}")

    def wait(self, token: Mapping[int, int], timeout: float = 30.0) -> None:
        """Block until every consumer group ``"{topic}::*"`` with live members has committed
        offsets at or past ``token`` (``{partition: offset}``, e.g. ``Deliveries.token``) on
        each of its partitions. An empty token returns at once.

        Raises :class:`~eventstream.WaitTimeoutError` (also a ``TimeoutError``) when
        ``timeout`` passes first, naming the instance ids that had not applied it; a
        :class:`~eventstream.BrokerError` that asking again cannot cure (an
        :class:`~eventstream.AuthorizationError` without DESCRIBE on the groups, ...); retriable
        errors are retried until the deadline."""
        if not token:
            return
        deadline = time.monotonic() + timeout
        done: set[str] = set()  # groups seen past the token: offsets only move forward
        behind: dict[str, dict[int, int]] = {}  # group -> committed offsets short of the token
        problem = ""
        while True:
            try:
                behind = self._round(token, done, deadline)
                problem = ""
                if not behind:
                    return
            except WaitTimeoutError as exc:
                problem = str(exc)
            except BrokerError as exc:
                if not exc.retriable:
                    raise
                problem = str(exc)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout(token, timeout, behind, problem)
            time.sleep(min(self._interval, remaining))

    def _round(
        self, token: Mapping[int, int], done: set[str], deadline: float
    ) -> dict[str, dict[int, int]]:
        """The live groups not yet past ``token``, with their committed offsets; adds the
        groups found past it to ``done``."""
        calls = self._calls
        listed = calls.result(
            calls.list_groups(deadline),
            deadline,
            f"listing the consumer groups of topic {self._topic!r}",
        )
        if listed.errors:  # some broker did not answer: a live group may be missing
            first = listed.errors[0]  # a KafkaError (a KafkaException in some versions)
            if isinstance(first, confluent_kafka.KafkaException):
                first = first.args[0]
            raise calls.error(f"listing the consumer groups of topic {self._topic!r}", first)
        groups = sorted(
            g.group_id
            for g in listed.valid
            if g.group_id.startswith(self._prefix) and g.group_id not in done
        )
        if not groups:
            return {}
        live = self._live(groups, deadline)
        requests = {
            group: self._committed_future(group, token, deadline) for group in live
        }  # sent together, answered concurrently
        behind: dict[str, dict[int, int]] = {}
        for group, future in requests.items():
            answer = calls.result(future, deadline, f"committed offsets of group {group!r}")
            committed = {tp.partition: tp.offset for tp in answer.topic_partitions}
            if all(committed.get(p, -1) >= offset for p, offset in token.items()):
                done.add(group)
            else:
                behind[group] = committed
        return behind

    def _live(self, groups: list[str], deadline: float) -> list[str]:
        """The ``groups`` that have members (one DescribeConsumerGroups request)."""
        calls = self._calls
        futures = calls.describe_groups(groups, deadline)
        live: list[str] = []
        for group in groups:
            try:
                described = calls.result(futures[group], deadline, f"describing group {group!r}")
            except BrokerError as exc:
                if exc.code == _GROUP_ID_NOT_FOUND:  # deleted since it was listed
                    continue
                raise
            if described.state not in _NOT_LIVE and described.members:
                live.append(group)
        return live

    def _committed_future(
        self, group: str, token: Mapping[int, int], deadline: float
    ) -> Future[Any]:
        request = ConsumerGroupTopicPartitions(
            group, [TopicPartition(self._topic, p) for p in sorted(token)]
        )
        return self._calls.group_offsets(request, deadline)

    def _timeout(
        self,
        token: Mapping[int, int],
        timeout: float,
        behind: Mapping[str, Mapping[int, int]],
        problem: str,
    ) -> WaitTimeoutError:
        needed = dict(sorted(token.items()))
        if behind:
            shown = "; ".join(
                f"instance {group.partition('::')[2]!r} (group {group!r}) committed "
                f"{ {p: _shown(committed.get(p)) for p in needed} }"
                for group, committed in sorted(behind.items())
            )
            what = f"not applied by every live instance: {shown}; needed {needed}"
            if problem:
                what = f"{what} (then: {problem})"
        else:
            what = f"could not be confirmed ({problem or 'no answer'}); needed {needed}"
        return WaitTimeoutError(
            f"wait_applied on topic {self._topic!r}: the token was {what}, within {timeout:g} s"
        )


def _shown(offset: int | None) -> int | str:
    return "nothing" if offset is None or offset < 0 else offset


def wait_applied(config: TopicConfig, token: Mapping[int, int], timeout: float = 30.0) -> None:
    """:meth:`AppliedBarrier.wait` with a barrier made for this call. Blocks; raises as it
    does."""
    AppliedBarrier(config).wait(token, timeout)
