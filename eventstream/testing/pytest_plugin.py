"""pytest fixtures for code that uses eventstream (loaded automatically once eventstream is
installed, through the ``pytest11`` entry point).

- ``eventstream_brokers`` (session): bootstrap servers: the cluster named by
  ``--eventstream-brokers`` / ``EVENTSTREAM_BROKERS``, or an :class:`EmbeddedCluster` started for
  the session (fast, but not Apache Kafka: see its limits).
- ``eventstream_topic``: a :class:`~eventstream.testing.TopicFactory`,
  ``eventstream_topic(EventClass, partitions=1, instance_id="test")``, returning a
  ``Topic[EventClass]`` on a new, uniquely named topic that exists. Every topic it made is closed
  after the test; on a real cluster the topic and its consumer group (``"{topic}::{instance_id}"``)
  are then deleted, best-effort: a failure to delete is a warning
  (:class:`EventstreamCleanupWarning`), not an error. The embedded cluster cannot delete topics
  and lives only as long as the session, so nothing is deleted there.
- ``eventstream_recorder``: a new :class:`~eventstream.testing.EventRecorder`, a handler a test
  can wait on.

When a test that made topics with ``eventstream_topic`` fails, its report gets a section,
"eventstream clients", with the state of every producer, consumer and cache those topics made, as
it was when the test failed (a consumer's assigned partitions and positions included): a wait that
timed out then says whether the consumer ever got its partitions.

Annotate fixture arguments with ``eventstream.testing.TopicFactory`` and
``eventstream.testing.EventRecorder[EventClass]``.

pytest imports this module in every session of a project where eventstream is installed, so it
imports nothing heavy: confluent-kafka and eventstream's backends are loaded by the fixtures,
when a test uses one.
"""

from __future__ import annotations

import os
import time
import uuid
import warnings
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, TypeVar, cast

import pytest
from google.protobuf.message import Message

from eventstream.config import TopicConfig
from eventstream.testing.embedded import EmbeddedCluster
from eventstream.testing.factory import TopicFactory
from eventstream.testing.recorder import EventRecorder
from eventstream.topic import Topic, new_topic

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient
    from pluggy import Result

__all__ = ["EventstreamCleanupWarning", "TopicFactory"]

E = TypeVar("E", bound=Message)

#: How long teardown waits for the cluster to delete a test's topics and groups.
CLEANUP_TIMEOUT = 15.0

#: Bootstrap strings of the embedded clusters this plugin started (nothing to delete there).
_embedded: set[str] = set()

#: The topics ``eventstream_topic`` made for a test, kept on its item for the failure report.
_MADE = pytest.StashKey[list["Topic[Message]"]]()


class EventstreamCleanupWarning(UserWarning):
    """A topic or consumer group made by ``eventstream_topic`` could not be deleted."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--eventstream-brokers",
        default=os.environ.get("EVENTSTREAM_BROKERS"),
        help="bootstrap servers for eventstream fixtures (default: an embedded cluster)",
    )


@pytest.fixture(scope="session")
def eventstream_brokers(request: pytest.FixtureRequest) -> Iterator[str]:
    brokers: str | None = request.config.getoption("--eventstream-brokers")
    if brokers:
        yield brokers
        return
    with EmbeddedCluster() as cluster:
        _embedded.add(cluster.bootstrap_servers)
        try:
            yield cluster.bootstrap_servers
        finally:
            _embedded.discard(cluster.bootstrap_servers)


@pytest.fixture
def eventstream_topic(
    eventstream_brokers: str, request: pytest.FixtureRequest
) -> Iterator[TopicFactory]:
    made: list[Topic[Message]] = []
    request.node.stash[_MADE] = made

    def make(event_type: type[E], *, partitions: int = 1, instance_id: str = "test") -> Topic[E]:
        config = TopicConfig(
            brokers=eventstream_brokers,
            topic=f"test-{uuid.uuid4().hex[:12]}",
            instance_id=instance_id,
        )
        topic = new_topic(event_type, config)
        made.append(cast("Topic[Message]", topic))
        topic.ensure_exists(partitions=partitions)
        return topic

    try:
        yield make
    finally:
        try:
            for topic in made:
                topic.close()
        finally:
            if made and eventstream_brokers not in _embedded:
                delete_topics_and_groups(
                    eventstream_brokers,
                    [t.name for t in made],
                    [t.config.group_id for t in made],
                )


@pytest.fixture
def eventstream_recorder() -> EventRecorder[Message]:
    return EventRecorder()


@pytest.hookimpl(hookwrapper=True)  # (the old style: users' pytest may predate wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Result[pytest.TestReport], None]:
    outcome = yield
    made = item.stash.get(_MADE, None)
    if made and call.when == "call":
        report = outcome.get_result()
        if report.failed:
            report.sections.append(("eventstream clients", describe_clients(made)))


def describe_clients(topics: Sequence[Topic[Message]]) -> str:
    """One line per producer, consumer and cache of ``topics``: its state, since when, its
    latest error and (a consumer) its partitions with their positions. No network call."""
    now = time.monotonic()
    lines: list[str] = []
    for topic in topics:
        children = topic._children  # pyright: ignore[reportPrivateUsage]
        if not children:
            lines.append(f"{topic!r}: no producer, consumer or cache")
        for child in children:
            status = child.status
            line = f"{topic!r}: {type(child).__name__.lower()}: {status.state}"
            since: float | None = getattr(status, "since", None)
            if since is not None:
                line += f" for {now - since:.1f} s"
            reason: str | None = getattr(status, "reason", None)
            if reason:
                line += f" ({reason})"
            assignment = getattr(child, "assignment", None)
            if callable(assignment):
                line += f", partitions {assignment() or 'none assigned'}"
            if status.error is not None:
                line += f", latest error: {type(status.error).__name__}: {status.error}"
            lines.append(line)
    return "\n".join(lines)


def delete_topics_and_groups(
    brokers: str,
    topics: Sequence[str],
    groups: Sequence[str],
    timeout: float = CLEANUP_TIMEOUT,
) -> list[str]:
    """Delete ``groups`` then ``topics`` on the cluster at ``brokers``; ones that do not exist
    are fine, and so are groups a static member still holds (they go once its session ends).
    Warns (:class:`EventstreamCleanupWarning`) about each one that could not be deleted, and
    returns those warnings' texts. Never raises for the cluster's answer."""
    import confluent_kafka
    from confluent_kafka.admin import AdminClient

    _GROUP_ABSENT, _TOPIC_ABSENT = _absent_codes()
    failures: list[str] = []
    admin = AdminClient({"bootstrap.servers": brokers, "socket.timeout.ms": 10_000})
    for kind, requested, absent in (
        ("consumer group", _request_groups(admin, groups, timeout), _GROUP_ABSENT),
        ("topic", _request_topics(admin, topics, timeout), _TOPIC_ABSENT),
    ):
        for name, future in requested.items():
            try:
                future.result(timeout + 1.0)
            except confluent_kafka.KafkaException as exc:
                err = exc.args[0]
                if err.code() not in absent:
                    failures.append(f"{kind} {name!r}: {err.str()}")
            except Exception as exc:  # a timeout, or anything else: never fail the test for it
                failures.append(f"{kind} {name!r}: {type(exc).__name__}: {exc}")
    for failure in failures:
        warnings.warn(
            f"eventstream_topic could not delete the {failure} on {brokers}; delete it by hand",
            EventstreamCleanupWarning,
            stacklevel=2,
        )
    return failures


def _absent_codes() -> tuple[frozenset[int], frozenset[int]]:
    """The error codes that mean a consumer group, and a topic, need no deleting."""
    from confluent_kafka import KafkaError

    # NON_EMPTY_GROUP: a static member (eventstream's default) does not leave its group on close;
    # the broker drops it when its session times out, and then the group, whose topic (and with
    # it the committed offsets) is deleted here, disappears by itself.
    return (
        frozenset({KafkaError.GROUP_ID_NOT_FOUND, KafkaError.NON_EMPTY_GROUP}),
        frozenset({KafkaError.UNKNOWN_TOPIC_OR_PART}),
    )


def _request_groups(
    admin: AdminClient, groups: Sequence[str], timeout: float
) -> dict[str, Future[None]]:
    if not groups:
        return {}
    # confluent-kafka's stubs leave the futures' result type unknown.
    return cast(
        "dict[str, Future[None]]",
        admin.delete_consumer_groups(list(groups), request_timeout=timeout),  # pyright: ignore[reportUnknownMemberType]
    )


def _request_topics(
    admin: AdminClient, topics: Sequence[str], timeout: float
) -> dict[str, Future[None]]:
    if not topics:
        return {}
    return cast(
        "dict[str, Future[None]]",
        admin.delete_topics(list(topics), operation_timeout=timeout, request_timeout=timeout),  # pyright: ignore[reportUnknownMemberType]
    )
