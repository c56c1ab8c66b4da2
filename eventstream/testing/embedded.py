"""An in-process Kafka-protocol cluster for demos and quick tests: librdkafka's mock cluster.

It speaks the Kafka protocol on real 127.0.0.1 ports, so any client in any process can use its
``bootstrap_servers`` while it runs. It is **not** Apache Kafka and proves no delivery guarantee:

- it keeps only the last few MiB of each partition (older records are dropped);
- topics are auto-created with 4 partitions on first use; it has no CreateTopics, so
  ``Topic.ensure_exists`` goes through :meth:`EmbeddedCluster.create_topic` instead (any partition
  count with the compiled backend; at most the auto-created 4 with the pure-Python one);
- it has no DeleteTopics, DescribeGroups, ListGroups or topic configs, no ACLs and no TLS/SASL;
- it knows a group's members by member id, not ``group.instance.id``: a restarted static member
  joins as a new one, and the group waits for the old one's session to end. Consumers of an
  embedded cluster in this process therefore get ``session.timeout.ms=6000`` (heartbeats every
  second) unless their properties say otherwise: a restart is assigned in about 11 s;
- it lives in this process: it stops when the cluster is closed or the process exits.

Test delivery guarantees against a real broker (see the README's Testing section).
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from eventstream._runtime.admin import register_topic_creator, unregister_topic_creator
from eventstream._runtime.backend import backend
from eventstream._runtime.librdkafka import ClientLog
from eventstream.errors import ClosedError, ConfigError, TopicError

if TYPE_CHECKING:
    import confluent_kafka

__all__ = ["EmbeddedCluster"]

_AUTO_CREATED_PARTITIONS = 4


class _Mock(Protocol):
    @property
    def bootstrap_servers(self) -> str: ...

    def create_topic(self, name: str, partitions: int, replication_factor: int) -> None: ...

    def close(self) -> None: ...


class _ClientHostedMock:
    """The pure-Python route: a confluent-kafka client configured with ``test.mock.num.brokers``
    hosts the cluster for as long as it lives; its metadata names the brokers' ports."""

    def __init__(self, brokers: int) -> None:
        import confluent_kafka  # on first use: importing eventstream.testing loads none

        log = ClientLog(logging.getLogger("eventstream.embedded"))
        self._host: confluent_kafka.Producer | None = confluent_kafka.Producer(
            {"test.mock.num.brokers": brokers, "logger": log}
        )
        found = self._host.list_topics(timeout=10).brokers.values()
        self.bootstrap_servers = ",".join(
            f"{b.host}:{b.port}" for b in sorted(found, key=lambda b: b.id)
        )

    def create_topic(self, name: str, partitions: int, replication_factor: int) -> None:
        if partitions > _AUTO_CREATED_PARTITIONS:
            raise TopicError(
                f"the embedded cluster on the pure-Python backend can only auto-create topics "
                f"with {_AUTO_CREATED_PARTITIONS} partitions, not {partitions}; use the compiled "
                "backend or a real cluster",
                code=37,
                name="INVALID_PARTITIONS",
                retriable=False,
            )
        if self._host is None:
            raise ClosedError("the embedded cluster is closed")
        self._host.list_topics(name, timeout=10)  # a metadata request auto-creates the topic

    def close(self) -> None:
        self._host = None  # dropping the client destroys it and its cluster


class EmbeddedCluster:
    """``with EmbeddedCluster(brokers=3) as cluster: ... cluster.bootstrap_servers ...``

    Starting takes milliseconds and connects nowhere outside this process. Uses the compiled
    backend's ``MockCluster`` when that backend is active (no group-join delay), otherwise a
    confluent-kafka client hosts the cluster (the first group join then waits ~3 s).
    Start and close from one thread.
    """

    def __init__(self, brokers: int = 1) -> None:
        if brokers < 1:
            raise ConfigError("brokers", f"must be at least 1, got {brokers}")
        self._brokers = brokers
        self._mock: _Mock | None = None

    @property
    def bootstrap_servers(self) -> str:
        """``host:port,...`` of the running cluster. Raises ``ClosedError`` when not running."""
        if self._mock is None:
            raise ClosedError("the embedded cluster is not running: call start()")
        return self._mock.bootstrap_servers

    def start(self) -> EmbeddedCluster:
        """Start the brokers (no-op when running); returns ``self``."""
        if self._mock is None:
            mock: _Mock
            if backend() == "compiled":
                from eventstream import _core

                mock = _core.MockCluster(self._brokers)
            else:
                mock = _ClientHostedMock(self._brokers)
            register_topic_creator(mock.bootstrap_servers, mock.create_topic)
            self._mock = mock
        return self

    def create_topic(self, name: str, partitions: int = 1, replication_factor: int = 1) -> None:
        """Create topic ``name``. Raises :class:`TopicError` if the cluster refuses."""
        if self._mock is None:
            raise ClosedError("the embedded cluster is not running: call start()")
        self._mock.create_topic(name, partitions, replication_factor)

    def close(self) -> None:
        """Stop the cluster. Idempotent. Clients still connected will see their brokers as down."""
        mock, self._mock = self._mock, None
        if mock is not None:
            unregister_topic_creator(mock.bootstrap_servers)
            mock.close()

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = self._mock.bootstrap_servers if self._mock is not None else "stopped"
        return f"EmbeddedCluster(brokers={self._brokers}, {state})"
