"""The ``eventstream`` command: demo, produce, tail, bench and their exit codes, run as a user would
(a subprocess), against the session's real broker unless a test says otherwise."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TYPE = "events_pb2:UserChanged"


def eventstream(
    *args: str, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m eventstream ARGS`` in examples/ (where events_pb2 lives)."""
    return subprocess.run(
        [sys.executable, "-m", "eventstream", *args],
        cwd=EXAMPLES,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.fixture
def unreachable_broker() -> str:
    """A 127.0.0.1 address where nothing listens (a port just freed by the OS)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


@pytest.fixture(scope="module", autouse=True)
def _example_protos() -> None:
    import gen_protos

    gen_protos.generate()


def test_help_lists_every_subcommand_and_exit_codes() -> None:
    result = eventstream("--help")
    assert result.returncode == 0
    for command in ("demo", "tail", "produce", "bench"):
        assert command in result.stdout
    assert "Exit codes" in result.stdout
    for command in ("demo", "tail", "produce"):
        sub = eventstream(command, "--help")
        assert sub.returncode == 0, sub.stderr
        assert "--brokers" in sub.stdout


def test_produce_then_tail_round_trip(kafka_bootstrap: str, topic_name: str) -> None:
    produced = eventstream(
        "produce",
        "--brokers",
        kafka_bootstrap,
        "--topic",
        topic_name,
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
    piped = eventstream(
        "produce",
        "--brokers",
        kafka_bootstrap,
        "--topic",
        topic_name,
        "--type",
        TYPE,
        stdin='{"user_id": "u3", "version": 3}\n',
    )
    assert piped.returncode == 0, piped.stderr

    tailed = eventstream(
        "tail",
        "--brokers",
        kafka_bootstrap,
        "--topic",
        topic_name,
        "--type",
        TYPE,
        "--from-beginning",
        "--count",
        "3",
    )
    assert tailed.returncode == 0, tailed.stderr
    records = [json.loads(line) for line in tailed.stdout.splitlines()]
    assert [r["event"]["user_id"] for r in records] == ["u1", "u2", "u3"]
    first = records[0]
    assert first["key"] == "u1"
    assert first["partition"] == 0 and first["offset"] == 0
    assert first["headers"]["ce_type"] == "examples.UserChanged"
    assert first["headers"]["ce_source"] == "cli-test"
    assert first["headers"]["content-type"] == "application/protobuf"


def test_bad_type_path_is_a_usage_error(kafka_bootstrap: str) -> None:
    for bad in ("events_pb2", "no_such_module:X", "events_pb2:NoSuchClass", "json:dumps"):
        result = eventstream("tail", "--brokers", kafka_bootstrap, "--topic", "t", "--type", bad)
        assert result.returncode == 2, (bad, result.stderr)
        assert "--type" in result.stderr
        assert "Traceback" not in result.stderr


def test_bad_json_is_a_usage_error(kafka_bootstrap: str, topic_name: str) -> None:
    result = eventstream(
        "produce",
        "--brokers",
        kafka_bootstrap,
        "--topic",
        topic_name,
        "--type",
        TYPE,
        '{"no_such_field": 1}',
    )
    assert result.returncode == 2
    assert "event 1 is not a JSON UserChanged" in result.stderr


def test_unreachable_broker_is_reported(unreachable_broker: str) -> None:
    tailed = eventstream("tail", "--brokers", unreachable_broker, "--topic", "t", "--type", TYPE)
    assert tailed.returncode == 3
    assert "cannot reach the brokers" in tailed.stderr
    produced = eventstream(
        "produce",
        "--brokers",
        unreachable_broker,
        "--topic",
        "t",
        "--type",
        TYPE,
        "--timeout",
        "2",
        '{"user_id": "u1"}',
    )
    assert produced.returncode == 3
    assert "not acknowledged within 2 s" in produced.stderr
    assert "Traceback" not in produced.stderr


def test_demo_converges_on_a_real_broker(kafka_bootstrap: str, topic_name: str) -> None:
    result = eventstream(
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
    result = eventstream("demo", "--duration", "1", "--rate", "300", "--keys", "20")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "embedded cluster" in result.stdout
    assert "every instance converged" in result.stdout


def test_bench_help_is_reachable_from_a_checkout() -> None:
    result = eventstream("bench", "--help")
    assert result.returncode == 0, result.stderr
    assert "--brokers" in result.stdout
