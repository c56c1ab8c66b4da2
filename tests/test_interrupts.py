"""Real SIGINTs (Ctrl+C) at random moments: the call the signal lands in ends with exactly
KeyboardInterrupt, on both backends, whether it is produce(), flush() or close(); the process
goes on working; and what reached the topic is exactly what the calls enqueued, each once.

Each run is a child process (``sigint_child.py``) that the test signals at a random moment
after it said it is ready; under .ci/sanitizer its AddressSanitizer report is read too."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from support import raw_consume_all, sanitizer_report
from testevents_pb2 import Invalidate

import eventstream

pytestmark = pytest.mark.timeout(300)

CHILD = Path(__file__).resolve().parent / "sigint_child.py"


def interrupted_run(brokers: str, topic: str, mode: str, delay: float | None) -> list[str]:
    """Start the child, send SIGINT ``delay`` seconds after it says ready (``None``: the child
    signals itself); returns its lines."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(eventstream.__file__).resolve().parent.parent)
    with subprocess.Popen(
        [sys.executable, "-X", "faulthandler", str(CHILD), brokers, topic, mode],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        try:
            first = child.stdout.readline()
            assert first.strip() == "ready", first + (child.stderr.read() if child.stderr else "")
            if delay is not None:
                time.sleep(delay)  # the random moment is the point: nothing to await
                child.send_signal(signal.SIGINT)
            stdout, stderr = child.communicate(timeout=120)
        finally:
            child.kill()
    output = f"exit {child.returncode}\n{first}{stdout}\n{stderr}\n{sanitizer_report(child.pid)}"
    assert child.returncode == 0, output
    lines = stdout.splitlines()
    assert lines[-1] == "ok", output
    return lines


@pytest.mark.parametrize("mode", ["produce", "flush", "close"])
def test_a_real_sigint_at_a_random_moment_ends_the_call_cleanly(
    make_topic, kafka_bootstrap: str, mode: str
) -> None:
    topic = make_topic(partitions=2)
    rng = random.Random()
    acked: list[tuple[int, int]] = []
    runs = 4
    for _ in range(runs):
        lines = interrupted_run(kafka_bootstrap, topic.name, mode, rng.uniform(0.05, 0.8))
        raised = next((line for line in lines if line.startswith("raised")), None)
        assert raised == f"raised KeyboardInterrupt in {mode}", lines
        acked += [tuple(map(int, line.split()[1:])) for line in lines if line.startswith("acked")]
    if mode == "close":
        return  # that producer's events could not go anywhere
    records = raw_consume_all(kafka_bootstrap, topic.name, partitions=2)
    seqs = Counter(Invalidate.FromString(r.value()).seq for r in records)
    # Each run starts at seq 0 again: a seq may appear once per run, never more (no duplicates
    # from librdkafka's retries, nothing from freed memory).
    assert max(seqs.values()) <= runs, seqs.most_common(3)
    for first, count in acked:
        for seq in range(first, first + count):
            assert seqs[seq] >= 1, f"acknowledged event {seq} is not in the topic"


def test_a_sigint_that_lands_in_a_callback_ends_the_call(make_topic, kafka_bootstrap: str) -> None:
    """A blocking produce() on the compiled backend serves librdkafka's callbacks (here a log
    line about the refused connection) on its own thread, inside rd_kafka_flush(): the SIGINT
    handler then raises KeyboardInterrupt in the callback, which used to catch and drop it, so
    the call waited out its timeout (60 s) and raised ProduceTimeoutError instead. Now it is kept
    and raised once librdkafka returns; the pure backend (whose owner thread serves the
    callbacks) ends the call the same way."""
    topic = make_topic(partitions=1)
    lines = interrupted_run(kafka_bootstrap, topic.name, "callback", None)
    assert "raised KeyboardInterrupt in callback" in lines, lines  # (the mode's produce call)
    expected = "from another thread" if eventstream.backend() == "pure" else "from the main thread"
    assert f"signalled {expected}" in lines, lines
