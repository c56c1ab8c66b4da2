"""The ``eventstream`` command: demo, produce, tail, bench, --version and their exit codes, run as a
user would (a subprocess), or in-process through ``main([...])`` where a failure has to be staged.

Every error path of eventstream/cli.py has a test here. Most need no broker (an address where
nothing listens, or an embedded cluster hosted by this test process); the round trips run on the
embedded cluster and on the session's real broker.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import confluent_kafka
import confluent_kafka.admin
import pytest
from testevents_pb2 import Invalidate

import eventstream
from eventstream import cli
from eventstream.testing import EmbeddedCluster

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TYPE = "events_pb2:UserChanged"
#: Subprocesses run the eventstream these tests imported (a checkout's, or an installed one).
EVENTSTREAM_PATH = str(Path(eventstream.__file__).resolve().parent.parent)


def eventstream_command(
    *args: str, stdin: str | None = "", timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m eventstream ARGS`` in examples/ (where events_pb2 lives)."""
    return subprocess.run(
        [sys.executable, "-m", "eventstream", *args],
        cwd=EXAMPLES,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": EVENTSTREAM_PATH},
    )


@pytest.fixture
def unreachable_broker() -> str:
    """A 127.0.0.1 address where nothing listens (a port just freed by the OS)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def embedded() -> Iterator[EmbeddedCluster]:
    """An embedded cluster hosted by this test process, for the subprocesses to talk to."""
    with EmbeddedCluster() as cluster:
        yield cluster


@pytest.fixture(scope="module", autouse=True)
def _example_protos() -> None:
    import gen_protos

    gen_protos.generate()


def _usage_error(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    for text in expected:
        assert text in result.stderr, (text, result.stderr)


# --- help, version, arguments -------------------------------------------------------------------


def test_help_lists_every_subcommand_and_exit_codes() -> None:
    result = eventstream_command("--help")
    assert result.returncode == 0
    for command in ("demo", "tail", "produce", "bench", "--version"):
        assert command in result.stdout
    assert "Exit codes" in result.stdout
    for command in ("demo", "tail", "produce"):
        sub = eventstream_command(command, "--help")
        assert sub.returncode == 0, sub.stderr
        assert "--brokers" in sub.stdout
        assert "--verbose" in sub.stdout


def test_every_argument_has_help_text() -> None:
    parser = cli._parser()
    parsers: dict[str, Any] = {"eventstream": parser}
    for action in parser._actions:
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict):
            parsers.update({f"eventstream {name}": sub for name, sub in choices.items()})
    assert set(parsers) >= {"eventstream", "eventstream tail", "eventstream produce"}
    missing = [
        f"{name}: {'/'.join(action.option_strings) or action.dest}"
        for name, sub in parsers.items()
        for action in sub._actions
        if not action.help
    ]
    assert missing == []


def test_version_names_the_backend_and_librdkafka() -> None:
    for args in (["--version"], ["-v", "--version"]):
        result = eventstream_command(*args)
        assert result.returncode == 0, result.stderr
        line = result.stdout.strip()
        assert line.startswith(f"eventstream {eventstream.__version__} ("), line
        assert f"{eventstream.backend()} backend" in line
        assert f"librdkafka {confluent_kafka.libversion()[0]}" in line
        assert f"confluent-kafka {confluent_kafka.__version__}" in line


def test_version_with_a_backend_that_does_not_load(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken() -> object:
        raise ImportError("eventstream._core is broken (staged by the test)")

    # (eventstream._runtime.backend is also the name of a function: patch the module itself)
    monkeypatch.setattr(sys.modules["eventstream._runtime.backend"], "load_backend", broken)
    with pytest.raises(SystemExit) as stopped:
        cli.main(["--version"])
    assert stopped.value.code == 1
    out = capsys.readouterr().out
    assert out.startswith(f"eventstream {eventstream.__version__} (no backend loads: ")
    assert "staged by the test" in out


def test_unknown_and_missing_arguments_are_usage_errors() -> None:
    _usage_error(
        eventstream_command("produce", "--brokers", "b:9", "--topic", "t", "--type", TYPE, "--x"),
        "unrecognized arguments: --x",
    )
    _usage_error(eventstream_command("tail", "--brokers", "b:9"), "required", "--topic")
    _usage_error(eventstream_command(), "required", "COMMAND")


# --- event types, events, keys, configuration ---------------------------------------------------


def test_bad_type_path_is_a_usage_error(unreachable_broker: str) -> None:
    for bad in ("events_pb2", "no_such_module:X", "events_pb2:NoSuchClass", "json:dumps"):
        for command, *events in (["tail"], ["produce", "{}"]):
            result = eventstream_command(
                command, "--brokers", unreachable_broker, "--topic", "t", "--type", bad, *events
            )
            _usage_error(result, "--type")


def test_bad_json_is_a_usage_error(unreachable_broker: str) -> None:
    result = eventstream_command(
        "produce",
        "--brokers",
        unreachable_broker,
        "--topic",
        "t",
        "--type",
        TYPE,
        '{"user_id": "u1"}',
        '{"no_such_field": 1}',
    )
    _usage_error(result, "event 2 is not a JSON UserChanged")


def test_unknown_key_field_is_a_usage_error_naming_the_fields(unreachable_broker: str) -> None:
    result = eventstream_command(
        "produce",
        "--brokers",
        unreachable_broker,
        "--topic",
        "t",
        "--type",
        TYPE,
        "--key-field",
        "nosuch",
        '{"user_id": "u1"}',
    )
    _usage_error(result, "--key-field nosuch", "no field 'nosuch'", "user_id, version")


def test_key_field_must_be_a_single_scalar(unreachable_broker: str) -> None:
    for field in ("dependency", "options"):  # a repeated string, a message
        result = eventstream_command(
            "produce",
            "--brokers",
            unreachable_broker,
            "--topic",
            "t",
            "--type",
            "google.protobuf.descriptor_pb2:FileDescriptorProto",
            "--key-field",
            field,
            "{}",
        )
        _usage_error(result, f"FileDescriptorProto.{field} is not a single scalar field")


def test_empty_stdin_is_a_usage_error(unreachable_broker: str) -> None:
    for stdin in ("", "\n  \n"):
        result = eventstream_command(
            "produce", "--brokers", unreachable_broker, "--topic", "t", "--type", TYPE, stdin=stdin
        )
        _usage_error(result, "no events given")


def test_bad_configuration_is_a_usage_error(unreachable_broker: str) -> None:
    for args in (["--source", " "], ["--topic", "no spaces"]):
        result = eventstream_command(
            "produce", "--brokers", unreachable_broker, "--topic", "t", "--type", TYPE, *args, "{}"
        )
        _usage_error(result, "eventstream produce: ")


# --- brokers: unreachable, interrupted, missing topics -----------------------------------------


def test_unreachable_broker_is_reported(unreachable_broker: str) -> None:
    tailed = eventstream_command(
        "tail", "--brokers", unreachable_broker, "--topic", "t", "--type", TYPE
    )
    assert tailed.returncode == 3
    assert f"cannot reach the brokers at {unreachable_broker}" in tailed.stderr
    assert "Traceback" not in tailed.stderr
    # Within a few seconds (not --timeout's 60), in a CLI user's words.
    produced = eventstream_command(
        "produce",
        "--brokers",
        unreachable_broker,
        "--topic",
        "t",
        "--type",
        TYPE,
        "--timeout",
        "60",
        '{"user_id": "u1"}',
        timeout=40,  # far less than --timeout: the command must not wait that out
    )
    assert produced.returncode == 3
    assert f"no broker at {unreachable_broker} answers" in produced.stderr, produced.stderr
    assert "Connection refused" in produced.stderr and "Check --brokers" in produced.stderr
    assert "Traceback" not in produced.stderr


class _Running:
    """``python -m eventstream ARGS`` started as a user would, its stderr merged into its stdout,
    read all along by a thread (so that the pipe never fills while the test does something else)
    for the test to await a line."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "eventstream", *args],
            cwd=EXAMPLES,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONPATH": EVENTSTREAM_PATH},
        )
        self.lines: list[str] = []
        self._ended = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def wait_for(self, text: str) -> int:
        """Wait until a line contains ``text``; the number of lines read by then."""
        with self._changed:
            found = self._changed.wait_for(
                lambda: self._ended or any(text in line for line in self.lines), timeout=120
            )
            if not found or not any(text in line for line in self.lines):
                pytest.fail(f"never printed {text!r}:\n" + "".join(self.lines))
            return len(self.lines)

    def interrupt(self) -> tuple[int, str]:
        """Ctrl+C; its exit status and what it printed from then on."""
        with self._changed:
            before = len(self.lines)
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=60)
        self._reader.join(timeout=60)
        return code, "".join(self.lines[before:])

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=60)


def _assert_interrupted(command: str, code: int, rest: str) -> None:
    assert code == 130, (code, rest)
    assert "Traceback" not in rest, rest
    assert rest.splitlines()[-1].startswith(f"eventstream {command}: interrupted"), rest


def test_ctrl_c_while_tail_waits_for_the_brokers(unreachable_broker: str) -> None:
    """Also: -v works after the subcommand (the line awaited here is logged at DEBUG)."""
    running = _Running(
        "tail", "--brokers", unreachable_broker, "--topic", "t", "--type", TYPE, "-v"
    )
    try:
        running.wait_for("tail: waiting for the metadata")
        _assert_interrupted("tail", *running.interrupt())
    finally:
        running.close()


def test_ctrl_c_after_the_brokers_went_away_from_tail() -> None:
    """librdkafka then logs every reconnect (with -v, through a Python callback inside poll());
    a Ctrl+C landing in that callback made poll() fail with a SystemError traceback, exit 1."""
    cluster = EmbeddedCluster().start()
    running: _Running | None = None
    try:
        topic = f"cli-gone-{uuid.uuid4().hex[:8]}"
        cluster.create_topic(topic, partitions=1)
        producer = confluent_kafka.Producer({"bootstrap.servers": cluster.bootstrap_servers})
        producer.produce(topic, value=b"", headers=[("ce_type", b"examples.UserChanged")])
        assert producer.flush(10) == 0
        del producer
        brokers = cluster.bootstrap_servers
        running = _Running(
            "tail", "--brokers", brokers, "--topic", topic, "--type", TYPE, "--from-beginning", "-v"
        )
        running.wait_for('"offset": 0')  # it reads the topic
        cluster.close()
        running.wait_for("Connection refused")  # and retries the brokers that went away
        _assert_interrupted("tail", *running.interrupt())
    finally:
        cluster.close()
        if running is not None:
            running.close()


def test_ctrl_c_while_produce_waits_for_a_broker_that_does_not_answer() -> None:
    """A port that accepts connections and never answers: produce is waiting for its acks."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        broker = f"127.0.0.1:{listener.getsockname()[1]}"
        running = _Running(
            "produce", "--brokers", broker, "--topic", "t", "--type", TYPE, '{"user_id": "u1"}'
        )
        try:
            connection, _ = listener.accept()  # it runs and has reached the "broker"
            with connection:
                code, rest = running.interrupt()
            _assert_interrupted("produce", code, rest)
            assert "may or may not have been written" in rest, rest
            assert len(rest.splitlines()) == 1, rest  # close()'s warnings do not repeat it
        finally:
            running.close()


def test_ctrl_c_while_produce_reads_stdin(unreachable_broker: str) -> None:
    args = ["produce", "-v", "--brokers", unreachable_broker, "--topic", "t", "--type", TYPE]
    process = subprocess.Popen(
        [sys.executable, "-m", "eventstream", *args],
        cwd=EXAMPLES,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": EVENTSTREAM_PATH},
    )
    try:
        assert process.stderr is not None
        seen: list[str] = []
        for line in process.stderr:
            seen.append(line)
            if "produce: reading events from stdin" in line:
                break
        else:
            pytest.fail("produce never said it reads stdin:\n" + "".join(seen))
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
        _assert_interrupted("produce", process.returncode, err)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_tail_of_a_missing_topic_is_a_usage_error(embedded: EmbeddedCluster) -> None:
    result = eventstream_command(
        "tail", "--brokers", embedded.bootstrap_servers, "--topic", "no-such-topic", "--type", TYPE
    )
    _usage_error(result, "topic 'no-such-topic' does not exist")


# --- what tail prints ---------------------------------------------------------------------------


def test_tail_prints_tombstones_and_records_it_cannot_decode(
    embedded: EmbeddedCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    from events_pb2 import UserChanged

    topic = f"cli-tail-{uuid.uuid4().hex[:8]}"
    embedded.create_topic(topic, partitions=1)
    producer = confluent_kafka.Producer({"bootstrap.servers": embedded.bootstrap_servers})
    good = UserChanged(user_id="u1", version=1).SerializeToString()
    producer.produce(topic, key=b"tombstone", value=None)
    producer.produce(topic, key=b"empty", value=b"")  # a valid event whose fields are all default
    producer.produce(topic, key=b"other", value=good, headers=[("ce_type", b"other.Type")])
    producer.produce(topic, key=b"garbage", value=b"\xff\xff\xff")
    producer.produce(topic, key=b"good", value=good, headers=[("ce_type", b"examples.UserChanged")])
    assert producer.flush(10) == 0

    result = eventstream_command(
        "tail",
        "--brokers",
        embedded.bootstrap_servers,
        "--topic",
        topic,
        "--type",
        TYPE,
        "--from-beginning",
        "--count",
        "5",
    )
    assert result.returncode == 0, result.stderr
    records = {r["key"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert set(records) == {"tombstone", "empty", "other", "garbage", "good"}
    assert records["tombstone"]["event"] is None
    assert records["tombstone"]["tombstone"] is True
    assert records["empty"]["event"] == {}
    assert "tombstone" not in records["empty"]
    assert records["other"]["error"] == "ce_type is 'other.Type', not 'examples.UserChanged'"
    assert "event" not in records["other"]
    assert records["garbage"]["error"].startswith("value does not decode as examples.UserChanged")
    assert records["good"]["event"] == {"user_id": "u1", "version": "1"}


class _FakeMessage:
    def __init__(self, error: str | None = None) -> None:
        self._error = error

    def error(self) -> str | None:
        return self._error

    def headers(self) -> list[tuple[str, bytes]]:
        return []

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b""

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 7

    def timestamp(self) -> tuple[int, int]:
        return (1, 1234)


class _FakeConsumer:
    """Stands in for confluent_kafka.Consumer: one topic of one partition, and a poll that
    hands out a consumer error first, then an event."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.polls = [None, _FakeMessage(error="Local: staged by the test"), _FakeMessage()]

    def list_topics(self, timeout: float) -> Any:
        partitions = {0: object()}
        return type("Metadata", (), {"topics": {"t": type("T", (), {"partitions": partitions})}})

    def assign(self, partitions: list[Any]) -> None:
        pass

    def poll(self, timeout: float) -> _FakeMessage | None:
        return self.polls.pop(0)

    def close(self) -> None:
        pass


def test_tail_reports_a_consumer_error_and_goes_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setattr(confluent_kafka, "Consumer", _FakeConsumer)
    status = cli.main(["tail", "--brokers", "b:9", "--topic", "t", "--type", TYPE, "--count", "1"])
    assert status == 0
    out, err = capsys.readouterr()
    assert "eventstream tail: Local: staged by the test" in err
    [line] = out.splitlines()
    assert json.loads(line)["offset"] == 7


# --- round trips --------------------------------------------------------------------------------


def _produce_then_tail(brokers: str, topic: str) -> list[dict[str, Any]]:
    # eventstream never creates a topic implicitly: this one is made first, with one partition.
    config = eventstream.TopicConfig(brokers=brokers, topic=topic, instance_id="cli-test")
    with eventstream.new_topic(Invalidate, config) as maker:
        maker.ensure_exists(partitions=1)
    produced = eventstream_command(
        "produce",
        "--brokers",
        brokers,
        "--topic",
        topic,
        "--type",
        TYPE,
        "--key-field",
        "user_id",
        "--source",
        "cli-test",
        '{"user_id": "u1", "version": 1}',
        '{"user_id": "u2", "version": 2}',
    )
    assert produced.returncode == 0, produced.stderr
    assert "published 2 events" in produced.stderr
    piped = eventstream_command(
        "produce",
        "--brokers",
        brokers,
        "--topic",
        topic,
        "--type",
        TYPE,
        stdin='{"user_id": "u3", "version": 3}\n',
    )
    assert piped.returncode == 0, piped.stderr

    tailed = eventstream_command(
        "tail",
        "--brokers",
        brokers,
        "--topic",
        topic,
        "--type",
        TYPE,
        "--from-beginning",
        "--count",
        "3",
    )
    assert tailed.returncode == 0, tailed.stderr
    records = [json.loads(line) for line in tailed.stdout.splitlines()]
    first = next(r for r in records if r["key"] == "u1")
    assert first["offset"] >= 0
    assert first["event"] == {"user_id": "u1", "version": "1"}
    assert first["headers"]["ce_type"] == "examples.UserChanged"
    assert first["headers"]["ce_source"] == "cli-test"
    assert first["headers"]["content-type"] == "application/protobuf"
    return records


def test_produce_then_tail_round_trip_on_the_embedded_cluster(embedded: EmbeddedCluster) -> None:
    records = _produce_then_tail(embedded.bootstrap_servers, f"cli-rt-{uuid.uuid4().hex[:8]}")
    assert sorted(r["event"]["user_id"] for r in records) == ["u1", "u2", "u3"]


def test_produce_then_tail_round_trip(kafka_bootstrap: str, topic_name: str) -> None:
    records = _produce_then_tail(kafka_bootstrap, topic_name)
    # One partition: tail shows the produce order.
    assert [r["event"]["user_id"] for r in records] == ["u1", "u2", "u3"]
    assert (records[0]["partition"], records[0]["offset"]) == (0, 0)


def test_produce_to_a_missing_topic_says_it_is_missing_and_creates_nothing(
    kafka_bootstrap: str, topic_name: str
) -> None:
    produced = eventstream_command(
        "produce",
        "--brokers",
        kafka_bootstrap,
        "--topic",
        topic_name,
        "--type",
        TYPE,
        '{"user_id": "u1", "version": 1}',
    )
    assert produced.returncode == 3, produced.stderr
    assert "does not exist" in produced.stderr and "ensure_exists" in produced.stderr
    assert "failed (not written)" in produced.stderr and "in doubt" not in produced.stderr
    admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": kafka_bootstrap})
    assert topic_name not in admin.list_topics(timeout=10).topics


# --- demo and bench -----------------------------------------------------------------------------


def test_demo_converges_on_a_real_broker(kafka_bootstrap: str, topic_name: str) -> None:
    result = eventstream_command(
        "demo",
        "--brokers",
        kafka_bootstrap,
        "--topic",
        topic_name,
        "--instances",
        "2",
        "--rate",
        "500",
        "--duration",
        "2",
        "--keys",
        "50",
        "--partitions",
        "3",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every instance converged" in result.stdout
    assert result.stdout.count("converged") >= 3  # one line per instance, and the verdict
    assert "events published and acknowledged" in result.stdout


def test_demo_on_the_embedded_cluster() -> None:
    result = eventstream_command("demo", "--duration", "1", "--rate", "300", "--keys", "20")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "embedded cluster" in result.stdout
    assert "every instance converged" in result.stdout


def test_demo_reports_an_unreachable_broker(unreachable_broker: str) -> None:
    """Within disconnected_after (the demo's default, 5 s), not a 30 s wait that printed nothing;
    the test's own timeout is the only time limit here."""
    result = eventstream_command("demo", "--brokers", unreachable_broker, timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"eventstream demo: no broker at {unreachable_broker} answered within 5 s" in (
        result.stderr
    )
    assert "Connection refused" in result.stderr and "Check " in result.stderr
    assert "Traceback" not in result.stderr and "converged" not in result.stdout


def test_demo_arguments_that_make_no_demo_are_usage_errors() -> None:
    """They used to run and report that every one of no instances converged (exit 0)."""
    for flag, value in [
        ("--instances", "0"),
        ("--instances", "-1"),
        ("--rate", "-5"),
        ("--rate", "0"),
        ("--duration", "0"),
        ("--duration", "nan"),
        ("--duration", "inf"),
        ("--keys", "0"),
        ("--partitions", "0"),
        ("--partitions", "1.5"),
    ]:
        # No broker is contacted: an address where nothing could listen shows it.
        result = eventstream_command("demo", "--brokers", "127.0.0.1:1", flag, value, timeout=60)
        _usage_error(result, f"argument {flag}: must be", repr(value))
        assert "converged" not in result.stdout


def test_bench_help_is_reachable_from_a_checkout() -> None:
    result = eventstream_command("bench", "--help")
    assert result.returncode == 0, result.stderr
    assert "--brokers" in result.stdout


def test_bench_outside_a_checkout_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "_CHECKOUT", tmp_path)  # as in an installed package
    assert cli.main(["bench", "--quick"]) == 2
    assert "ships with eventstream's source checkout" in capsys.readouterr().err
