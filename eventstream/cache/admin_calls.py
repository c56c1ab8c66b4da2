"""A confluent-kafka ``AdminClient`` of the cache's own (:class:`AdminCalls`), whose futures are
waited for in short slices so that Ctrl+C works and deadlines hold."""

from __future__ import annotations

import time
from concurrent.futures import Future
from typing import Any

import confluent_kafka
from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec

from eventstream._runtime import forks
from eventstream._runtime.librdkafka import ClientLog
from eventstream.config import TopicConfig
from eventstream.errors import (
    BrokerError,
    WaitTimeoutError,
    client_error,
    fresh,
    is_authentication,
    request_error,
)

__all__ = ["AdminCalls"]

# Producer settings an AdminClient does not use (they would make it log configuration warnings),
# and statistics, which nothing reads here.
_NOT_FOR_ADMIN = frozenset(
    {"acks", "enable.idempotence", "linger.ms", "message.timeout.ms", "statistics.interval.ms"}
)
# The longest wait on a future in one go: between two, the client's errors are served and a
# signal can interrupt.
_SLICE = 0.1


class AdminCalls:
    """An ``AdminClient`` for ``config``'s brokers (its TLS/SASL settings), made at once
    without a network call. Thread-safe."""

    def __init__(self, config: TopicConfig, what: str) -> None:
        settings: dict[str, object] = {
            k: v for k, v in config.producer_settings().items() if k not in _NOT_FOR_ADMIN
        }
        # The probe's Metadata requests name the topic: they must never create it.
        settings["allow.auto.create.topics"] = "false"
        settings["logger"] = ClientLog(config.logger)
        settings["error_cb"] = self._on_client_error
        self._what = what
        self._failure: BrokerError | None = None  # refused credentials, a fatal error
        self.last_error: str | None = None
        # The stubs do not list the "logger" property, which takes an object with .log().
        self.client = AdminClient(settings)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
        forks.keep_in_children(self)

    def _on_client_error(self, err: confluent_kafka.KafkaError) -> None:
        self.last_error = f"{err.name()}: {err.str()}"
        if err.fatal() or is_authentication(err.code(), err.str()):
            self._failure = client_error(
                err.code(), err.name(), err.str(), what=self._what, fatal=err.fatal()
            )

    def result(
        self,
        future: Future[Any],
        deadline: float,
        what: str,
        error: type[BrokerError] = BrokerError,
    ) -> Any:
        """The result of ``future`` (an admin request about ``what``). Blocks until it is done
        or ``deadline`` (``time.monotonic()``) passed. Raises :class:`WaitTimeoutError` at the
        deadline, the client's failure (:class:`AuthenticationError`, a fatal error), or the
        request's error: :class:`AuthorizationError`, else ``error`` (``.retriable`` says
        whether asking again may help)."""
        while True:
            self.client.poll(0)  # serves error_cb and the log
            if self._failure is not None:
                raise fresh(self._failure)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                cause = f"; last client error: {self.last_error}" if self.last_error else ""
                raise WaitTimeoutError(f"{what}: no answer from the brokers in time{cause}")
            try:
                return future.result(min(_SLICE, remaining))
            except TimeoutError:
                continue
            except confluent_kafka.KafkaException as exc:
                raise self.error(what, exc.args[0], error) from None

    # confluent-kafka's stubs leave the futures' result types unknown: these say what they are.

    def list_groups(self, deadline: float) -> Future[Any]:
        """ListConsumerGroups: a future of a ``ListConsumerGroupsResult``."""
        future: Future[Any] = self.client.list_consumer_groups(request_timeout=_timeout(deadline))  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        return future

    def describe_groups(self, groups: list[str], deadline: float) -> dict[str, Future[Any]]:
        """DescribeConsumerGroups: ``{group: future of a ConsumerGroupDescription}``."""
        futures: dict[str, Future[Any]] = self.client.describe_consumer_groups(  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
            groups, request_timeout=_timeout(deadline)
        )
        return futures

    def group_offsets(self, request: ConsumerGroupTopicPartitions, deadline: float) -> Future[Any]:
        """ListConsumerGroupOffsets of one group: a future of its
        ``ConsumerGroupTopicPartitions``."""
        futures: dict[str, Future[Any]] = self.client.list_consumer_group_offsets(  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
            [request], request_timeout=_timeout(deadline)
        )
        return futures[request.group_id]

    def describe_topic(self, topic: str, deadline: float) -> Future[Any]:
        """DescribeTopics of one topic (never creates it): a future of its
        ``TopicDescription``."""
        futures: dict[str, Future[Any]] = self.client.describe_topics(  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
            TopicCollection([topic]), request_timeout=_timeout(deadline)
        )
        return futures[topic]

    def partitions(self, topic: str, deadline: float) -> list[int]:
        """The partitions of ``topic``, from a Metadata request (answered by any broker, also
        by librdkafka's mock cluster, which cannot answer DescribeTopics; it never creates the
        topic). Blocks until ``deadline``. Raises :class:`WaitTimeoutError`, the client's
        failure, or the topic's error as a :class:`BrokerError`
        (``UNKNOWN_TOPIC_OR_PART``: it does not exist)."""
        what = f"partitions of topic {topic!r}"
        if self._failure is not None:
            raise fresh(self._failure)
        try:
            metadata = self.client.list_topics(topic, timeout=_timeout(deadline))
        except confluent_kafka.KafkaException as exc:
            err: confluent_kafka.KafkaError = exc.args[0]
            if err.code() == confluent_kafka.KafkaError._TIMED_OUT:
                cause = f"; last client error: {self.last_error}" if self.last_error else ""
                raise WaitTimeoutError(
                    f"{what}: no answer from the brokers in time{cause}"
                ) from None
            raise self.error(what, err) from None
        found = metadata.topics.get(topic)
        if found is None:
            raise BrokerError(
                f"{what}: not in the brokers' answer",
                code=3,
                name="UNKNOWN_TOPIC_OR_PART",
                retriable=True,
            )
        if found.error is not None:
            raise self.error(what, found.error)
        return sorted(found.partitions)

    def list_offsets(
        self, partitions: list[TopicPartition], spec: OffsetSpec, deadline: float
    ) -> dict[TopicPartition, Future[Any]]:
        """ListOffsets (read-committed) of ``partitions`` for one ``OffsetSpec``:
        ``{partition: future of a ListOffsetsResultInfo}``."""
        futures: dict[TopicPartition, Future[Any]] = self.client.list_offsets(  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
            dict.fromkeys(partitions, spec),
            isolation_level=IsolationLevel.READ_COMMITTED,
            request_timeout=_timeout(deadline),
        )
        return futures

    def error(
        self, what: str, err: confluent_kafka.KafkaError, cls: type[BrokerError] = BrokerError
    ) -> BrokerError:
        """The error for a request about ``what`` that failed with ``err``."""
        return request_error(what, err.code(), err.name(), err.str(), cls)


def _timeout(deadline: float) -> float:
    """The ``request_timeout`` argument of an admin call that must end by ``deadline``."""
    return max(0.1, deadline - time.monotonic())
