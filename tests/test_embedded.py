"""The embedded cluster (librdkafka's mock) as the demo and quick tests use it: a consumer's
group must form within wait_until_assigned's usual 30 s, restarts included."""

from __future__ import annotations

import pytest
from support import Collector
from testevents_pb2 import Invalidate

import eventstream
from eventstream.testing import EmbeddedCluster

pytestmark = pytest.mark.timeout(120)


def test_a_consumer_restarted_with_its_instance_id_is_assigned_on_the_embedded_cluster() -> None:
    """The mock knows a group's members by member id, not group.instance.id: the closed static
    member stays until its session times out, and the rebalance waits for it. At librdkafka's
    default 45 s session the new consumer was assigned after ~90 s; eventstream shortens the
    session on an embedded cluster."""
    with EmbeddedCluster() as cluster:
        config = eventstream.TopicConfig(
            brokers=cluster.bootstrap_servers, topic="restarted", instance_id="svc-r"
        )
        with eventstream.new_topic(Invalidate, config) as topic:
            topic.ensure_exists(partitions=1)
            first = topic.new_consumer()
            first.consume(Collector())
            first.wait_until_assigned(timeout=30)
            first.close()
            collector = Collector()
            second = topic.new_consumer()
            second.consume(collector)
            second.wait_until_assigned(timeout=30)
            topic.new_producer().produce(Invalidate(seq=1))
            collector.wait_for_seq(1)
            second.close()


def test_consumers_of_an_embedded_cluster_get_a_short_session_unless_configured() -> None:
    with EmbeddedCluster() as cluster:
        embedded = eventstream.TopicConfig(
            brokers=cluster.bootstrap_servers, topic="t", instance_id="svc"
        )
        assert embedded.consumer_settings()["session.timeout.ms"] == "6000"
        assert embedded.consumer_settings()["heartbeat.interval.ms"] == "1000"
        chosen = eventstream.TopicConfig(
            brokers=cluster.bootstrap_servers,
            topic="t",
            instance_id="svc",
            consumer_properties={"session.timeout.ms": 20000},
        )
        assert chosen.consumer_settings()["session.timeout.ms"] == "20000"
        elsewhere = eventstream.TopicConfig(brokers="127.0.0.1:9", topic="t", instance_id="svc")
        assert "session.timeout.ms" not in elsewhere.consumer_settings()
    assert "session.timeout.ms" not in embedded.consumer_settings()  # the cluster is closed
