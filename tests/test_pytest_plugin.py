"""The pytest plugin users get with eventstream: its fixtures, exercised from a user's test file
in a separate pytest run (on the embedded cluster, then on the real broker)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

USER_TEST = """
from testevents_pb2 import Invalidate
from eventstream import EventMetadata, Topic


def test_round_trip(eventstream_topic, eventstream_recorder):
    topic: Topic[Invalidate] = eventstream_topic(Invalidate, partitions=2, instance_id="svc")
    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(eventstream_recorder, with_metadata=True)
    events = [Invalidate(key=f"k{i}", seq=i) for i in range(20)]
    topic.new_producer(key=lambda e: e.key).produce(*events)
    got = eventstream_recorder.wait_for(20, timeout=60)
    assert sorted(e.seq for e in got) == list(range(20))
    assert all(isinstance(m, EventMetadata) for m in eventstream_recorder.metadata)
    assert all(m.topic == topic.name and m.offset >= 0 for m in eventstream_recorder.metadata)


def test_wait_for_reports_a_shortfall(eventstream_recorder):
    import pytest
    with pytest.raises(TimeoutError, match="expected 1 events within 0.1 s, got 0"):
        eventstream_recorder.wait_for(1, timeout=0.1)
"""


@pytest.mark.parametrize("where", ["embedded", "real broker"])
def test_plugin_fixtures_in_a_user_test_file(
    tmp_path: Path, kafka_bootstrap: str, where: str
) -> None:
    (tmp_path / "test_user.py").write_text(USER_TEST)
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)]
    if where == "real broker":
        args.append(f"--eventstream-brokers={kafka_bootstrap}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "protos"), str(ROOT)])}
    env.pop("EVENTSTREAM_BROKERS", None)
    result = subprocess.run(
        args, cwd=tmp_path, capture_output=True, text=True, timeout=240, env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
