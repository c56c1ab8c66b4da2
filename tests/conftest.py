"""Integration-test fixtures: one real Kafka broker per session, fresh topics per test.

The broker is ``EVENTSTREAM_TEST_BROKERS`` (a bootstrap list) when set, otherwise a single-node
Apache Kafka cluster started by ``scripts/kafka_harness.py`` and stopped when the session ends.
Tests run against whichever backend ``eventstream`` loaded (``EVENTSTREAM_NO_EXTENSIONS=1``
selects the pure-Python one); ``test_backend.py`` checks it is the one CI expected.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "tests" / "protos"
SCRIPTS = ROOT / "scripts"


def _prepare_imports() -> None:
    """Generate the test protobuf modules (stale or missing ones only) and make them, the
    harness and, for a plain ``pytest`` run from a checkout, eventstream importable."""
    for folder in (SCRIPTS, PROTOS):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    import gen_protos

    gen_protos.generate()
    try:
        import eventstream  # noqa: F401  (an installed eventstream wins over the checkout)
    except ImportError:
        sys.path.append(str(ROOT))


_prepare_imports()


def _restore_sigint() -> None:
    """Started in the background by a non-interactive shell (``cmd &``, as some CI scripts do),
    the test run inherits SIGINT ignored, and so would every process it starts: Python then
    installs no KeyboardInterrupt handler, and the tests that send Ctrl+C to a child fail for
    that reason alone. Ctrl+C is part of what these tests check, so restore it: a handler set
    here goes back to the default in children at exec, where Python installs its own."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


_restore_sigint()

from support import Collector  # noqa: E402
from testevents_pb2 import Invalidate  # noqa: E402

import eventstream  # noqa: E402


# --- packaging: the `kafka` marker (CI's fast jobs run `-m "not kafka"`) ----------------------
@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that needs the broker (uses ``kafka_bootstrap``, directly or through
    another fixture) as ``kafka``, so that ``-m "not kafka"`` selects the tests that need none
    and the selection cannot rot when a test gains a broker fixture."""
    for item in items:
        if "kafka_bootstrap" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)


# --- end of the packaging block ------------------------------------------------------------


_cluster: Any = None  # the harness cluster of this session, if it started one
_cluster_error: BaseException | None = None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the harness broker once the selected tests are known and one of them needs it.

    Started here rather than inside the fixture so that the start (about a minute on a machine
    whose jar cache is cold) does not count against the first test's pytest-timeout.
    """
    global _cluster, _cluster_error
    if os.environ.get("EVENTSTREAM_TEST_BROKERS", "").strip() or session.config.option.collectonly:
        return
    if not any("kafka_bootstrap" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    from kafka_harness import KafkaCluster

    try:
        _cluster = KafkaCluster(nodes=1, security=True).start()  # see kafka_security
    except Exception as exc:  # reported by every test that needs the broker
        _cluster_error = exc


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _cluster is not None:
        _cluster.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Bootstrap servers of the session's broker: ``EVENTSTREAM_TEST_BROKERS`` if set, else the
    single-node cluster this session started with scripts/kafka_harness.py."""
    given = os.environ.get("EVENTSTREAM_TEST_BROKERS", "").strip()
    if given:
        return given
    if _cluster_error is not None:
        raise RuntimeError(f"the test broker did not start: {_cluster_error}") from _cluster_error
    assert _cluster is not None, "no broker: pytest_collection_finish did not start one"
    return str(_cluster.bootstrap_servers)


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> str:
    """A topic name no other test (or earlier run against the same broker) uses."""
    test = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:80].strip("-")
    return f"es-{test}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_config(kafka_bootstrap: str, topic_name: str) -> Callable[..., eventstream.TopicConfig]:
    """``make_config(instance_id="svc-a", topic=<this test's topic>, **TopicConfig fields)``."""

    def make(
        instance_id: str = "svc-a", topic: str | None = None, **fields: Any
    ) -> eventstream.TopicConfig:
        return eventstream.TopicConfig(
            brokers=kafka_bootstrap, topic=topic or topic_name, instance_id=instance_id, **fields
        )

    return make


@pytest.fixture
def make_topic(
    make_config: Callable[..., eventstream.TopicConfig],
) -> Iterator[Callable[..., eventstream.Topic[Any]]]:
    """``make_topic(event_type=Invalidate, *, partitions=1, create=True, instance_id=..., ...)``:
    a Topic of this test's topic name, created with ``partitions`` partitions through
    ``Topic.ensure_exists`` (unless ``create=False``), closed when the test ends."""
    topics: list[eventstream.Topic[Any]] = []

    def make(
        event_type: type[Any] = Invalidate,
        *,
        partitions: int = 1,
        create: bool = True,
        **config_fields: Any,
    ) -> eventstream.Topic[Any]:
        topic = eventstream.new_topic(event_type, make_config(**config_fields))
        topics.append(topic)
        if create:
            topic.ensure_exists(partitions=partitions, timeout=30)
        return topic

    yield make
    for topic in reversed(topics):
        topic.close()


@pytest.fixture
def collector() -> Collector:
    return Collector()


# ================================================================ harness security (begin)
# The SASL_SSL side of the session's harness cluster for tests of bad credentials, wrong
# CAs and missing permissions (tests/test_harness_security.py). The cluster comes from
# scripts/test (``start --security``, found through EVENTSTREAM_TEST_KAFKA_STATE) or from
# pytest_collection_finish above (security=True); see scripts/kafka_harness.py.

from kafka_harness import ClusterSecurity, KafkaCluster, KafkaHarnessError  # noqa: E402


@pytest.fixture(scope="session")
def kafka_security(kafka_bootstrap: str) -> ClusterSecurity:
    """The session cluster's SASL_SSL listener: ``bootstrap_servers``, ``ca_location``,
    ``wrong_ca_location``, ``users`` (alice: ALL through ACLs, mallory: no ACL, admin: super
    user) and ``client_properties(user="alice", password=None, *, ca_location=None)``, the
    librdkafka settings for a SCRAM-SHA-512 user over SASL_SSL.

    Skipped only when the session runs against an external ``EVENTSTREAM_TEST_BROKERS``
    cluster without a harness state dir (``EVENTSTREAM_TEST_KAFKA_STATE``); a harness
    cluster started without ``--security`` is an error."""
    if _cluster is not None:
        cluster: KafkaCluster = _cluster
    else:
        state = os.environ.get("EVENTSTREAM_TEST_KAFKA_STATE", "").strip()
        if not state:
            pytest.skip(
                "EVENTSTREAM_TEST_BROKERS names an external cluster and no harness state dir "
                "(EVENTSTREAM_TEST_KAFKA_STATE) says where its SASL_SSL listener, users and CA "
                "are: start it with 'scripts/kafka_harness.py start --security' and export that"
            )
        try:
            cluster = KafkaCluster.attach(state)
        except KafkaHarnessError as exc:
            raise RuntimeError(f"EVENTSTREAM_TEST_KAFKA_STATE={state}: {exc}") from exc
        if set(cluster.bootstrap_servers.split(",")) != set(kafka_bootstrap.split(",")):
            raise RuntimeError(
                f"EVENTSTREAM_TEST_KAFKA_STATE={state} holds the cluster at "
                f"{cluster.bootstrap_servers}, not EVENTSTREAM_TEST_BROKERS={kafka_bootstrap}"
            )
    if not cluster.with_security:
        raise RuntimeError(
            f"the harness cluster at {cluster.bootstrap_servers} runs without a SASL_SSL "
            "listener: start it with 'scripts/kafka_harness.py start --security'"
        )
    return cluster.security


# ================================================================== harness security (end)
