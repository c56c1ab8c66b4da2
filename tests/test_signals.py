"""Leaving a produce call early while librdkafka's queue is full: a signal (Ctrl+C during
``produce()``, a raising SIGALRM handler while ``produce_async()`` is awaited), a timeout, an
exception.

Each case runs in a child process (``signal_producer.py``), so that a crash (the signal path used
to corrupt the heap: ``corrupted double-linked list``, exit 134) fails the test instead of killing
pytest. The child inherits the environment, so it runs on this session's backend. Afterwards the
topic is read back with a plain confluent-kafka consumer: every record must be, byte for byte, an
event the child produced, with well-formed headers. What a call enqueued before it was left
reaches the broker (the child flushes it); what it never enqueued does not; nothing arrives twice
(idempotence is on and nobody retries the call).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest
import signal_producer
from signal_producer import EVENTS, INSTANCE, events, marker
from support import raw_consume_all, sanitizer_report

import eventstream
from eventstream._runtime import wire

pytestmark = pytest.mark.timeout(180)

SCRIPT = Path(signal_producer.__file__).resolve()
CE_ID = re.compile(r"([0-9a-f]{16})-([0-9]+)")


def run_child(kafka_bootstrap: str, topic: str, mode: str) -> dict[str, Any]:
    """Run signal_producer.py; it must exit 0 and end with its JSON report, which is returned."""
    env = dict(os.environ)
    package_root = str(Path(eventstream.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([package_root, env.get("PYTHONPATH", "")])
    with subprocess.Popen(
        [
            sys.executable,
            str(SCRIPT),
            "--brokers",
            kafka_bootstrap,
            "--topic",
            topic,
            "--mode",
            mode,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            stdout, stderr = child.communicate(timeout=150)
        finally:
            child.kill()
    output = (
        f"exit code {child.returncode}\nstdout:\n{stdout}\nstderr:\n{stderr}\n"
        f"{sanitizer_report(child.pid)}"
    )
    assert child.returncode == 0, output
    lines = stdout.strip().splitlines()
    assert lines, output
    report: dict[str, Any] = json.loads(lines[-1])
    # The child ran what this session tests (the backend, and the same installed package).
    assert report["backend"] == eventstream.backend(), output
    assert report["package"] == eventstream.__file__, output
    return report


def check_headers(record: confluent_kafka.Message) -> tuple[str, int]:
    """The record's headers are eventstream's, each once; returns its ce_id's (producer, n)."""
    headers = record.headers() or []
    names = [name for name, _ in headers]
    assert sorted(names) == sorted(
        [
            wire.HEADER_CONTENT_TYPE,
            wire.HEADER_SPECVERSION,
            wire.HEADER_ID,
            wire.HEADER_SOURCE,
            wire.HEADER_TYPE,
            wire.HEADER_TIME,
        ]
    ), headers
    values = dict(headers)
    assert values[wire.HEADER_CONTENT_TYPE] == wire.CONTENT_TYPE, headers
    assert values[wire.HEADER_SPECVERSION] == wire.SPECVERSION, headers
    assert values[wire.HEADER_SOURCE] == INSTANCE.encode(), headers
    assert values[wire.HEADER_TYPE] == b"eventstream.tests.Invalidate", headers
    ce_id = CE_ID.fullmatch(values[wire.HEADER_ID].decode("ascii", "replace"))
    assert ce_id is not None, headers
    return ce_id.group(1), int(ce_id.group(2))


def read_back(kafka_bootstrap: str, topic: str, mode: str) -> list[int]:
    """Check the whole topic; returns the seqs of the call's events found in it, in offset
    order (the marker, found exactly once, is left out)."""
    produced = {e.SerializeToString(): e.seq for e in events(mode)}
    marker_value = marker(mode).SerializeToString()
    records = raw_consume_all(kafka_bootstrap, topic)
    seqs: list[int] = []
    markers = 0
    ce_ids: set[tuple[str, int]] = set()
    call_producers: set[str] = set()
    for record in records:
        value = record.value()
        where = f"record at offset {record.offset()}: {value!r:.200}"
        ce_id = check_headers(record)
        assert ce_id not in ce_ids, f"{where}: ce_id {ce_id} seen twice"
        ce_ids.add(ce_id)
        if value == marker_value:
            markers += 1
            continue
        assert value in produced, f"{where} is not an event the child produced"
        assert record.key() is None, where
        seqs.append(produced[value])
        call_producers.add(ce_id[0])
    assert markers == 1, f"the marker is there {markers} times"
    assert len(call_producers) <= 1, f"the call's events name producers {call_producers}"
    return seqs


@pytest.mark.parametrize("mode", ["interrupt", "alarm"])
def test_signal_while_the_queue_is_full(kafka_bootstrap: str, topic_name: str, mode: str) -> None:
    report = run_child(kafka_bootstrap, topic_name, mode)
    assert report["raised"] == {"interrupt": "KeyboardInterrupt", "alarm": "Alarm"}[mode]
    seqs = read_back(kafka_bootstrap, topic_name, mode)
    # What was enqueued, in call order, each once.
    assert seqs, "nothing of the interrupted call was written"
    assert seqs == list(range(len(seqs))), seqs
    if mode == "interrupt":
        # Not all of it: Ctrl+C came while the call waited for room in the queue.
        assert len(seqs) < EVENTS, "the signal did not land while the call was enqueueing"
    else:
        # All of it: the loop was never blocked, the handler ran in it while a worker thread
        # waited for room, and that worker (which asyncio.run's shutdown waits for) enqueued
        # the rest.
        assert len(seqs) == EVENTS, seqs


@pytest.mark.parametrize("mode", ["timeout", "timeout-async"])
def test_timeout_while_the_queue_is_full(kafka_bootstrap: str, topic_name: str, mode: str) -> None:
    report = run_child(kafka_bootstrap, topic_name, mode)
    assert report["raised"] == "ProduceTimeoutError"
    assert report["total"] == EVENTS
    never_sent = report["failed"]
    assert 0 < never_sent < EVENTS, report
    # Exactly the events handed to librdkafka are written (in doubt at the deadline, delivered
    # afterwards); those counted as never sent are not.
    seqs = read_back(kafka_bootstrap, topic_name, mode)
    assert seqs == list(range(EVENTS - never_sent)), (seqs, report)


@pytest.mark.parametrize("mode", ["key-error", "key-error-async"])
def test_key_function_error_sends_nothing(kafka_bootstrap: str, topic_name: str, mode: str) -> None:
    report = run_child(kafka_bootstrap, topic_name, mode)
    # The child checked that the error names event KEY_ERROR_AT and is caused by the key function.
    assert report["raised"] == "SerializationError"
    assert read_back(kafka_bootstrap, topic_name, mode) == [], "the failed call sent events"
