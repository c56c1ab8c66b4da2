"""Creating and inspecting a topic (cold path, shared by both backends) over confluent-kafka."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, cast

from eventstream._runtime import forks
from eventstream._runtime.librdkafka import ClientLog
from eventstream.errors import (
    BrokerError,
    TopicError,
    client_error,
    fresh,
    is_authentication,
    is_authorization,
    is_retriable,
    request_error,
)

if TYPE_CHECKING:
    import confluent_kafka
    from confluent_kafka.admin import AdminClient

__all__ = ["TopicAdmin", "register_topic_creator", "unregister_topic_creator"]

_POLL_INTERVAL = 0.1
# Longest single metadata request or wait for a CreateTopics answer: between two, the client's
# errors are served, so refused credentials end a wait within about this long.
_SLICE = 1.0

#: Clusters that cannot serve CreateTopics (the embedded mock cluster), by bootstrap string:
#: a function ``(topic, partitions, replication_factor) -> None`` that creates the topic instead.
TopicCreator = Callable[[str, int, int], None]
_creators: dict[str, TopicCreator] = {}


def register_topic_creator(bootstrap_servers: str, creator: TopicCreator) -> None:
    """Route topic creation for ``bootstrap_servers`` to ``creator`` (used by EmbeddedCluster)."""
    _creators[bootstrap_servers] = creator


def unregister_topic_creator(bootstrap_servers: str) -> None:
    _creators.pop(bootstrap_servers, None)


def is_embedded_cluster(bootstrap_servers: str) -> bool:
    """Whether ``bootstrap_servers`` is an EmbeddedCluster running in this process."""
    return bootstrap_servers in _creators


#: librdkafka's codes for "no broker answered": refused or failed connections, no answer in time.
_NO_ANSWER = frozenset(
    {-195, -193, -187, -185}
)  # _TRANSPORT, _RESOLVE, _ALL_BROKERS_DOWN, _TIMED_OUT


class TopicAdmin:
    """Admin operations on one topic. Blocking; thread-safe (one AdminClient, created lazily)."""

    def __init__(
        self,
        properties: Mapping[str, str],
        topic: str,
        logger: logging.Logger | None = None,
        disconnected_after: float = 5.0,
    ) -> None:
        #: No broker answering for this long is reported as that (``TopicConfig`` of the topic).
        self._disconnected_after = max(_POLL_INTERVAL, disconnected_after)
        self._properties: dict[str, object] = dict(properties)
        self._properties["logger"] = ClientLog(logger or logging.getLogger("eventstream"))
        self._properties["error_cb"] = self._on_client_error
        self._bootstrap = properties.get("bootstrap.servers", "")
        self._topic = topic
        self._client: AdminClient | None = None
        self._generation = forks.generation()
        self._failure: BrokerError | None = None  # refused credentials, a fatal error
        self._last_error: str | None = None

    def _on_client_error(self, err: confluent_kafka.KafkaError) -> None:
        self._last_error = f"{err.name()}: {err.str()}"
        if err.fatal() or is_authentication(err.code(), err.str()):
            self._failure = client_error(
                err.code(),
                err.name(),
                err.str(),
                what=f"admin client of topic {self._topic!r}",
                fatal=err.fatal(),
            )

    def _check_failed(self) -> None:
        """Serve the client's errors; raise a failure (authentication, fatal) they reported."""
        if self._client is not None:
            self._client.poll(0)
        if self._failure is not None:
            raise fresh(self._failure)

    def _error(self, what: str, err: confluent_kafka.KafkaError) -> BrokerError:
        return request_error(what, err.code(), err.name(), err.str(), TopicError)

    def _admin(self) -> AdminClient:
        if self._client is None or self._generation != forks.generation():
            # Imported on first use: importing eventstream loads no confluent-kafka.
            from confluent_kafka.admin import AdminClient

            # The stubs do not list the "logger" property, which takes an object with .log().
            self._client = AdminClient(self._properties)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
            self._generation = forks.generation()  # a forked child makes its own
            forks.keep_in_children(self)
        return self._client

    def partitions(self, timeout: float) -> dict[int, int] | None:
        """``{partition: leader}`` of the topic, or ``None`` if it does not exist.
        Lists all topics so that the request can never auto-create this one."""
        import confluent_kafka

        admin = self._admin()
        deadline = time.monotonic() + timeout
        while True:
            self._check_failed()
            try:
                metadata = admin.list_topics(
                    timeout=max(0.1, min(_SLICE, deadline - time.monotonic()))
                )
                break
            except confluent_kafka.KafkaException as exc:
                err = exc.args[0]
                if time.monotonic() >= deadline or not is_retriable(err.code()):
                    self._check_failed()
                    raise self._error(
                        f"cannot read metadata of topic {self._topic!r}", err
                    ) from None
        found = metadata.topics.get(self._topic)
        if found is None:
            return None
        if found.error is not None:
            if is_authorization(found.error.code()):
                raise self._error(f"cannot describe topic {self._topic!r}", found.error)
            return None
        return {p.id: p.leader for p in found.partitions.values()}

    def wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no metadata yet"
        while True:
            remaining = deadline - time.monotonic()
            try:
                partitions = self.partitions(max(0.1, min(remaining, _SLICE)))
                if partitions and all(leader >= 0 for leader in partitions.values()):
                    return
                last = "topic does not exist" if partitions is None else "partitions without leader"
            except TopicError as exc:
                last = str(exc)
            if time.monotonic() + _POLL_INTERVAL > deadline:
                cause = f"; last client error: {self._last_error}" if self._last_error else ""
                raise TopicError(
                    f"topic {self._topic!r} is not ready after {timeout:g} s: {last}{cause}",
                    code=-185,
                    name="_TIMED_OUT",
                    retriable=True,
                )
            time.sleep(_POLL_INTERVAL)

    def _reachable(self, timeout: float) -> dict[int, int] | None:
        """:meth:`partitions`, asked within ``disconnected_after``: no broker answering by then
        is a :class:`TopicError` that says so, instead of a wait of the caller's whole timeout
        (CreateTopics to brokers that refuse connections waits out its operation timeout)."""
        wait = min(timeout, self._disconnected_after)
        try:
            return self.partitions(wait)
        except TopicError as exc:
            if exc.code not in _NO_ANSWER:
                raise
            reason = self._last_error or f"{exc.name}: {exc}"
            raise TopicError(
                f"no broker at {self._bootstrap} answered within {wait:g} s "
                f"(TopicConfig.disconnected_after), so topic {self._topic!r} could not be "
                f"checked or created (last client error: {reason}). Check TopicConfig.brokers, "
                "and that the cluster runs and is reachable from here.",
                code=-187,
                name="_ALL_BROKERS_DOWN",
                retriable=True,
            ) from None

    def ensure_exists(self, partitions: int, replication_factor: int, timeout: float) -> bool:
        """Create the topic unless it exists; ``True`` if this call created it."""
        creator = _creators.get(self._bootstrap)
        if creator is not None:
            return self._ensure_with(creator, partitions, replication_factor, timeout)
        import confluent_kafka
        from confluent_kafka.cimpl import NewTopic

        self._reachable(timeout)
        new = [NewTopic(self._topic, partitions, replication_factor)]
        # confluent-kafka's stubs leave the futures' result type unknown.
        futures = cast(
            "dict[str, Future[None]]",
            self._admin().create_topics(new, operation_timeout=timeout),  # pyright: ignore[reportUnknownMemberType]
        )
        created = True
        deadline = time.monotonic() + timeout
        future = futures[self._topic]
        try:
            while True:
                self._check_failed()
                try:
                    future.result(max(0.0, min(_SLICE, deadline - time.monotonic())))
                    break
                except TimeoutError:
                    if time.monotonic() < deadline:
                        continue
                    cause = f"; last client error: {self._last_error}" if self._last_error else ""
                    raise TopicError(
                        f"creating topic {self._topic!r} got no answer within {timeout:g} s{cause}",
                        code=-185,
                        name="_TIMED_OUT",
                        retriable=True,
                    ) from None
        except confluent_kafka.KafkaException as exc:
            err = exc.args[0]
            if err.code() != confluent_kafka.KafkaError.TOPIC_ALREADY_EXISTS:
                raise self._error(
                    f"cannot create topic {self._topic!r} with {partitions} partitions and "
                    f"replication factor {replication_factor}",
                    err,
                ) from None
            created = False
        self.wait_until_ready(timeout)
        if not created:
            self._check_partitions(partitions, timeout)
        return created

    def _ensure_with(
        self, creator: TopicCreator, partitions: int, replication_factor: int, timeout: float
    ) -> bool:
        created = self._reachable(timeout) is None
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
