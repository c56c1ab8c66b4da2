"""A forked child can neither use nor destroy its parent's clients: every use raises
ClosedError, a new Topic in the child works, the child exits cleanly, and the parent's clients
carry on (librdkafka handles are not fork-safe: their threads exist only in the parent)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import raw_consume

HERE = Path(__file__).resolve().parent


@pytest.mark.timeout(120)
def test_a_forked_child_cannot_use_its_parents_clients_and_exits_cleanly(
    kafka_bootstrap: str, topic_name: str
) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE / "protos")])}
    done = subprocess.run(
        [sys.executable, str(HERE / "fork_child.py"), kafka_bootstrap, topic_name],
        capture_output=True,
        text=True,
        timeout=100,
        env=env,
    )
    lines = done.stdout.splitlines()
    assert done.returncode == 0, (done.returncode, lines, done.stderr[-3000:])
    assert "child: producer refused: True" in lines, lines
    assert "child: consumer refused: True" in lines, lines
    assert "child: assignment {}" in lines, lines
    assert "child: own producer ok" in lines, lines
    assert "child: closed closed closed" in lines, lines
    assert "parent: child exit 0" in lines, (lines, done.stderr[-3000:])
    assert "parent: producer ok" in lines, lines
    records = raw_consume(kafka_bootstrap, topic_name, 3)
    # What the parent produced (1, 4) and the child's own producer (3); never 2.
    from testevents_pb2 import Invalidate

    assert sorted(Invalidate.FromString(r.value() or b"").seq for r in records) == [1, 3, 4]
