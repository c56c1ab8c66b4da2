"""The pytest plugin users get with eventstream: its fixtures, exercised from a user's test file
(and from the typed example, examples/test_with_the_pytest_plugin.py) in a separate pytest run, on
the embedded cluster and on the real broker; and the teardown that deletes, on a real broker, the
topics and consumer groups it made.

The inner runs turn the plugin's cleanup warning into an error, so a failed deletion fails them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient

import eventstream.testing
from eventstream.testing import EventRecorder, TopicFactory
from eventstream.testing.pytest_plugin import EventstreamCleanupWarning, delete_topics_and_groups

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "test_with_the_pytest_plugin.py"

USER_TEST = """
import os

from testevents_pb2 import Invalidate
from eventstream import EventMetadata, Topic


def _record(topic):
    with open(os.environ["RECORD_NAMES_TO"], "a") as out:
        out.write(f"{topic.name} {topic.config.group_id}\\n")


def test_round_trip(eventstream_topic, eventstream_recorder):
    topic: Topic[Invalidate] = eventstream_topic(Invalidate, partitions=2, instance_id="svc")
    _record(topic)
    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(eventstream_recorder, with_metadata=True)
    events = [Invalidate(key=f"k{i}", seq=i) for i in range(20)]
    topic.new_producer(key=lambda e: e.key).produce(*events)
    got = eventstream_recorder.wait_for(20, timeout=60)
    assert sorted(e.seq for e in got) == list(range(20))
    assert all(isinstance(m, EventMetadata) for m in eventstream_recorder.metadata)
    assert all(m.topic == topic.name and m.offset >= 0 for m in eventstream_recorder.metadata)


def test_two_topics_without_consumers(eventstream_topic):
    for instance_id in ("a", "b"):
        _record(eventstream_topic(Invalidate, instance_id=instance_id))


def test_wait_for_reports_a_shortfall(eventstream_recorder):
    import pytest
    with pytest.raises(TimeoutError, match="expected 1 events within 0.1 s, got 0"):
        eventstream_recorder.wait_for(1, timeout=0.1)
"""


def _run_user_tests(tmp_path: Path, brokers: str | None) -> list[tuple[str, str]]:
    """Run USER_TEST and the typed example in their own pytest; returns the (topic, group)
    pairs the user tests made."""
    (tmp_path / "test_user.py").write_text(USER_TEST)
    (tmp_path / EXAMPLE.name).write_text(EXAMPLE.read_text())
    names = tmp_path / "names.txt"
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)]
    args.append("-Werror::eventstream.testing.pytest_plugin.EventstreamCleanupWarning")
    if brokers is not None:
        args.append(f"--eventstream-brokers={brokers}")
    # The eventstream these tests imported (a checkout's, or an installed one).
    installed = str(Path(eventstream.testing.__file__).resolve().parent.parent.parent)
    path = [str(ROOT / "tests" / "protos"), str(ROOT / "examples"), installed]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "RECORD_NAMES_TO": str(names)}
    env.pop("EVENTSTREAM_BROKERS", None)
    result = subprocess.run(
        args, cwd=tmp_path, capture_output=True, text=True, timeout=240, env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout, result.stdout
    assert "warning" not in result.stdout.lower(), result.stdout
    pairs = [tuple(line.split()) for line in names.read_text().splitlines()]
    assert len(pairs) == 3
    return [(topic, group) for topic, group in pairs]


def test_plugin_fixtures_on_the_embedded_cluster(tmp_path: Path) -> None:
    """Nothing is deleted there (the mock has no DeleteTopics): no warning either."""
    _run_user_tests(tmp_path, brokers=None)


def test_plugin_fixtures_on_a_real_broker_clean_up_after_themselves(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    made = _run_user_tests(tmp_path, brokers=kafka_bootstrap)
    assert made[0][1] == f"{made[0][0]}::svc"  # the group id the plugin deletes
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    deadline = time.monotonic() + 30
    while True:
        topics = set(admin.list_topics(timeout=10).topics)
        groups = {g.group_id for g in admin.list_consumer_groups().result(timeout=10).valid}  # pyright: ignore[reportUnknownMemberType]
        ours = [name for pair in made for name in pair]
        left = [name for name in ours if name in topics | groups - _held(admin, groups, ours)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # deletion propagates through the controller
    assert left == []


def _held(admin: AdminClient, listed: set[str], ours: list[str]) -> set[str]:
    """Which of ``ours`` (the names the test made) among the ``listed`` groups only static
    members still hold: a static member does not leave on close, so its group goes (topic and
    offsets are deleted already) when its session times out. Only those groups are described:
    a broker shared with other tests may hold thousands, and describing them all was slow
    enough to fail this test."""
    listed = {group for group in listed if group in ours}
    if not listed:
        return set()
    held: set[str] = set()
    for group, future in admin.describe_consumer_groups(sorted(listed)).items():  # pyright: ignore[reportUnknownMemberType]
        members = future.result(timeout=10).members
        if members and all(m.group_instance_id for m in members):
            held.add(group)
    return held


def test_cleanup_of_names_that_do_not_exist_is_quiet(kafka_bootstrap: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", EventstreamCleanupWarning)
        failures = delete_topics_and_groups(
            kafka_bootstrap, ["es-never-created-topic"], ["es-never-created::group"], timeout=10
        )
    assert failures == []


def test_cleanup_that_fails_is_a_warning_not_an_error(unreachable_broker: str) -> None:
    with pytest.warns(EventstreamCleanupWarning) as caught:
        failures = delete_topics_and_groups(unreachable_broker, ["t1"], ["t1::svc"], timeout=1)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2, messages
    assert "could not delete the consumer group 't1::svc'" in messages[0]
    assert "could not delete the topic 't1'" in messages[1]
    assert len(failures) == 2
    assert failures[0].startswith("consumer group 't1::svc': ")
    assert failures[1].startswith("topic 't1': ")


def test_the_fixture_types_are_exported() -> None:
    assert {"TopicFactory", "EventRecorder", "EmbeddedCluster"} <= set(eventstream.testing.__all__)
    assert TopicFactory.__module__ == "eventstream.testing.factory"
    assert EventRecorder.__module__ == "eventstream.testing.recorder"
    assert confluent_kafka  # the plugin's deletions go through confluent-kafka's AdminClient


@pytest.fixture
def unreachable_broker() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


def test_loading_the_plugin_imports_nothing_heavy() -> None:
    """pytest imports the plugin in every session of a project that has eventstream installed:
    that costs neither confluent-kafka nor a backend (the fixtures load them when used)."""
    code = (
        "import sys\n"
        "import eventstream.testing.pytest_plugin\n"
        "heavy = ('confluent_kafka', 'eventstream._core', 'eventstream._pure',"
        " 'eventstream.cache')\n"
        "print(sorted(m for m in sys.modules for h in heavy if m == h or m.startswith(h + '.')))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]", f"importing the plugin loaded {loaded}"


FAILING_TEST = """
from testevents_pb2 import Invalidate


def test_fails_with_clients_open(eventstream_topic, eventstream_recorder):
    topic = eventstream_topic(Invalidate, partitions=2, instance_id="svc")
    consumer = topic.new_consumer()
    consumer.consume(eventstream_recorder)
    consumer.wait_until_assigned()
    topic.new_producer().produce(Invalidate(key="k", seq=1))
    eventstream_recorder.wait_for(1)
    assert False, "failing on purpose"


def test_fails_without_topics():
    assert False, "failing on purpose"
"""


def test_a_failed_test_reports_its_clients_states(tmp_path: Path) -> None:
    """The report of a failed test that made topics says what their clients were doing."""
    (tmp_path / "test_failing.py").write_text(FAILING_TEST)
    installed = str(Path(eventstream.testing.__file__).resolve().parent.parent.parent)
    path = [str(ROOT / "tests" / "protos"), installed]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    env.pop("EVENTSTREAM_BROKERS", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=240, env=env,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "2 failed" in result.stdout, result.stdout
    sections = result.stdout.split("eventstream clients")
    assert len(sections) == 2, result.stdout  # the test without topics has no such section
    lines = sections[1].splitlines()[1:3]
    assert "consumer: ready for " in lines[0], result.stdout
    assert "partitions {0: 0, 1: " in lines[0] or "partitions {0: 1, 1: " in lines[0], lines
    assert "producer: ready for " in lines[1], result.stdout
