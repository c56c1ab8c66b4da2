"""Creating and inspecting a topic (cold path, shared by both backends) over confluent-kafka."""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import Future
from typing import cast

import confluent_kafka
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from eventstream.errors import TopicError, is_retriable

__all__ = ["TopicAdmin"]

_POLL_INTERVAL = 0.1


class TopicAdmin:
    """Admin operations on one topic. Blocking; thread-safe (one AdminClient, created lazily)."""

    def __init__(self, properties: Mapping[str, str], topic: str) -> None:
        self._properties: dict[str, str | int | float | bool] = dict(properties)
        self._topic = topic
        self._client: AdminClient | None = None

    def _admin(self) -> AdminClient:
        if self._client is None:
            self._client = AdminClient(self._properties)
        return self._client

    def partitions(self, timeout: float) -> dict[int, int] | None:
        """``{partition: leader}`` of the topic, or ``None`` if it does not exist.
        Lists all topics so that the request can never auto-create this one."""
        try:
            metadata = self._admin().list_topics(timeout=timeout)
        except confluent_kafka.KafkaException as exc:
            err = exc.args[0]
            raise TopicError(
                f"cannot read metadata of topic {self._topic!r}: {err.str()}",
                code=err.code(),
                name=err.name(),
                retriable=is_retriable(err.code()),
            ) from None
        found = metadata.topics.get(self._topic)
        if found is None or found.error is not None:
            return None
        return {p.id: p.leader for p in found.partitions.values()}

    def wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no metadata yet"
        while True:
            remaining = deadline - time.monotonic()
            try:
                partitions = self.partitions(max(0.1, min(remaining, 5.0)))
                if partitions and all(leader >= 0 for leader in partitions.values()):
                    return
                last = "topic does not exist" if partitions is None else "partitions without leader"
            except TopicError as exc:
                last = str(exc)
            if time.monotonic() + _POLL_INTERVAL > deadline:
                raise TopicError(
                    f"topic {self._topic!r} is not ready after {timeout:g} s: {last}",
                    code=-185,
                    name="_TIMED_OUT",
                    retriable=True,
                )
            time.sleep(_POLL_INTERVAL)

    def ensure_exists(self, partitions: int, replication_factor: int, timeout: float) -> bool:
        """Create the topic unless it exists; ``True`` if this call created it."""
        new = [NewTopic(self._topic, partitions, replication_factor)]
        # confluent-kafka's stubs leave the futures' result type unknown.
        futures = cast(
            "dict[str, Future[None]]",
            self._admin().create_topics(new, operation_timeout=timeout),  # pyright: ignore[reportUnknownMemberType]
        )
        created = True
        try:
            futures[self._topic].result(timeout)
        except confluent_kafka.KafkaException as exc:
            err = exc.args[0]
            if err.code() != confluent_kafka.KafkaError.TOPIC_ALREADY_EXISTS:
                raise TopicError(
                    f"cannot create topic {self._topic!r} with {partitions} partitions and "
                    f"replication factor {replication_factor}: {err.str()}",
                    code=err.code(),
                    name=err.name(),
                    retriable=is_retriable(err.code()),
                ) from None
            created = False
        self.wait_until_ready(timeout)
        if not created:
            existing = self.partitions(timeout) or {}
            if len(existing) < partitions:
                raise TopicError(
                    f"topic {self._topic!r} exists with {len(existing)} partitions, fewer than "
                    f"the {partitions} required; add partitions with Kafka's admin tools "
                    "(kafka-topics --alter --partitions) or use another topic",
                    code=37,
                    name="INVALID_PARTITIONS",
                    retriable=False,
                )
        return created
