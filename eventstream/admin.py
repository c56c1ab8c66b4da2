"""Creating and inspecting a topic (cold path, shared by both backends) over confluent-kafka."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import cast

import confluent_kafka
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from eventstream.errors import TopicError, is_retriable
from eventstream.librdkafka_log import ClientLog

__all__ = ["TopicAdmin", "register_topic_creator", "unregister_topic_creator"]

_POLL_INTERVAL = 0.1

#: Clusters that cannot serve CreateTopics (the embedded mock cluster), by bootstrap string:
#: a function ``(topic, partitions, replication_factor) -> None`` that creates the topic instead.
TopicCreator = Callable[[str, int, int], None]
_creators: dict[str, TopicCreator] = {}


def register_topic_creator(bootstrap_servers: str, creator: TopicCreator) -> None:
    """Route topic creation for ``bootstrap_servers`` to ``creator`` (used by EmbeddedCluster)."""
    _creators[bootstrap_servers] = creator


def unregister_topic_creator(bootstrap_servers: str) -> None:
    _creators.pop(bootstrap_servers, None)


class TopicAdmin:
    """Admin operations on one topic. Blocking; thread-safe (one AdminClient, created lazily)."""

    def __init__(
        self, properties: Mapping[str, str], topic: str, logger: logging.Logger | None = None
    ) -> None:
        self._properties: dict[str, object] = dict(properties)
        self._properties["logger"] = ClientLog(logger or logging.getLogger("eventstream"))
        self._bootstrap = properties.get("bootstrap.servers", "")
        self._topic = topic
        self._client: AdminClient | None = None

    def _admin(self) -> AdminClient:
        if self._client is None:
            # The stubs do not list the "logger" property, which takes an object with .log().
            self._client = AdminClient(self._properties)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
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
        creator = _creators.get(self._bootstrap)
        if creator is not None:
            return self._ensure_with(creator, partitions, replication_factor, timeout)
        new = [NewTopic(self._topic, partitions, replication_factor)]
        # confluent-kafka's stubs leave the futures' result type unknown.
        futures = cast(
            "dict[str, Future[None]]",
            self._admin().create_topics(new, operation_timeout=timeout),  # pyright: ignore[reportUnknownMemberType]
        )
        created = True
        try:
            futures[self._topic].result(timeout)
        except TimeoutError:
            raise TopicError(
                f"creating topic {self._topic!r} got no answer within {timeout:g} s",
                code=-185,
                name="_TIMED_OUT",
                retriable=True,
            ) from None
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
            self._check_partitions(partitions, timeout)
        return created

    def _ensure_with(
        self, creator: TopicCreator, partitions: int, replication_factor: int, timeout: float
    ) -> bool:
        created = self.partitions(timeout) is None
        if created:
            creator(self._topic, partitions, replication_factor)
        self.wait_until_ready(timeout)
        if not created:
            self._check_partitions(partitions, timeout)
        return created

    def _check_partitions(self, partitions: int, timeout: float) -> None:
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
