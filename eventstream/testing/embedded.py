"""An in-process Kafka-protocol cluster for demos and quick tests: librdkafka's mock cluster.

It speaks the Kafka protocol on real 127.0.0.1 ports, so any client in any process can use its
``bootstrap_servers``. It is NOT Apache Kafka and proves no guarantee: it keeps only the last few
MiB of each partition, auto-creates topics with 4 partitions, and lacks CreateTopics, DeleteTopics,
DescribeGroups, ListGroups and configs. Test delivery guarantees against a real broker.
"""

from __future__ import annotations

import logging
from types import TracebackType

import confluent_kafka

from eventstream._pure.client_log import ClientLog

__all__ = ["EmbeddedCluster"]


class EmbeddedCluster:
    """``with EmbeddedCluster(brokers=3) as cluster: ... cluster.bootstrap_servers ...``

    Starting takes milliseconds and makes no outside connection; the cluster lives until
    :meth:`close` (or the end of the ``with`` block). Not thread-safe to start/close concurrently.
    """

    def __init__(self, brokers: int = 1) -> None:
        if brokers < 1:
            raise ValueError(f"brokers must be at least 1, got {brokers}")
        self._brokers = brokers
        self._host: confluent_kafka.Producer | None = None
        self._bootstrap = ""

    @property
    def bootstrap_servers(self) -> str:
        if self._host is None:
            raise RuntimeError("the embedded cluster is not started")
        return self._bootstrap

    def start(self) -> EmbeddedCluster:
        if self._host is not None:
            return self
        # librdkafka starts a mock cluster behind a client configured with test.mock.num.brokers;
        # the cluster lives as long as that (otherwise idle) client. Its metadata names the ports.
        host = confluent_kafka.Producer(
            {
                "test.mock.num.brokers": self._brokers,
                "logger": ClientLog(logging.getLogger("eventstream.embedded")),
            }
        )
        brokers = host.list_topics(timeout=10).brokers.values()
        self._bootstrap = ",".join(
            f"{b.host}:{b.port}" for b in sorted(brokers, key=lambda b: b.id)
        )
        self._host = host
        return self

    def close(self) -> None:
        """Stop the cluster. Idempotent. Clients still connected to it will see it as down."""
        self._host = None  # dropping the last reference destroys the client and its cluster

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
