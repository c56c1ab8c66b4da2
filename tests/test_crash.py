"""At-least-once across a crash: a consumer process killed with SIGKILL mid-stream and restarted
loses no event (it may handle some twice)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import wait_until
from testevents_pb2 import Invalidate

import eventstream

pytestmark = pytest.mark.timeout(150)

SCRIPT = Path(__file__).resolve().parent / "crash_consumer.py"
EVENTS = 300


def read_seqs(path: Path) -> list[int]:
    if not path.exists():
        return []
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]  # a line being written is not handled yet
    return [int(line) for line in complete.splitlines()]


def spawn(
    kafka_bootstrap: str, topic: str, out: Path, log: Path, delay: float
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    package_root = str(Path(eventstream.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([package_root, env.get("PYTHONPATH", "")])
    with log.open("ab") as sink:
        return subprocess.Popen(
            [
                sys.executable,
                str(SCRIPT),
                "--brokers",
                kafka_bootstrap,
                "--topic",
                topic,
                "--instance",
                "svc-crash",
                "--out",
                str(out),
                "--delay",
                str(delay),
            ],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def test_sigkilled_consumer_process_loses_nothing(
    make_topic, kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = make_topic(partitions=2)
    with topic.new_producer(key=lambda e: e.key) as producer:
        producer.produce(*(Invalidate(key=f"k{i % 7}", seq=i) for i in range(EVENTS)))
    out, log = tmp_path / "handled.txt", tmp_path / "consumer.log"

    first = spawn(kafka_bootstrap, topic.name, out, log, delay=0.02)
    try:
        wait_until(
            lambda: len(read_seqs(out)) >= 40 or first.poll() is not None,
            "the first consumer process to handle 40 events",
            timeout=60,
        )
        assert first.poll() is None, f"consumer exited early:\n{log.read_text()}"
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait(30)
    before_restart = set(read_seqs(out))
    assert len(before_restart) < EVENTS, "the kill did not land mid-stream"

    second = spawn(kafka_bootstrap, topic.name, out, log, delay=0.0)
    try:
        wait_until(
            lambda: set(read_seqs(out)) >= set(range(EVENTS)) or second.poll() is not None,
            "the restarted consumer process to handle the remaining events",
            timeout=90,
        )
        assert second.poll() is None, f"consumer exited early:\n{log.read_text()}"
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, log.read_text()
    finally:
        second.kill()
        second.wait(30)

    handled = read_seqs(out)
    assert set(handled) == set(range(EVENTS)), (
        f"lost: {sorted(set(range(EVENTS)) - set(handled))[:20]}\n{log.read_text()}"
    )
