"""Smoke test of an *installed* eventstream: the one a wheel or sdist install must pass.

    python scripts/smoke_test.py [--expect compiled|pure]

Run it with the interpreter of the environment under test (not from a checkout's .venv): it
needs only eventstream's runtime dependencies, no compiler, no broker, no generated code. It
checks that

- ``eventstream`` is imported from that environment, not from a source checkout;
- the backend is the expected one (default ``compiled``), chosen without any environment switch;
- a typed round trip works on the embedded cluster: events of a protobuf class built here from a
  descriptor are produced, consumed by a group, and arrive as that class with their metadata;
- ``eventstream --version`` (the console script) and ``python -m eventstream --version`` print
  the version and the backend.

Exits 0 and prints one summary line when all is well; otherwise fails with what went wrong.
Used by .ci/install and by cibuildwheel's test-command (pyproject.toml).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

CHECKOUT = Path(__file__).resolve().parent.parent
EVENTS = 50


class _Announcements(logging.Handler):
    """Collects what eventstream logs at INFO and above while the backend is chosen."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


def fail(message: str) -> NoReturn:
    print(f"smoke test FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def ping_class() -> Any:
    """A protobuf message class ``eventstream_smoke.Ping`` made at run time (no protoc needed)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    proto = descriptor_pb2.FileDescriptorProto(
        name="eventstream_smoke/ping.proto", package="eventstream_smoke", syntax="proto3"
    )
    message = proto.message_type.add(name="Ping")
    field = descriptor_pb2.FieldDescriptorProto
    message.field.add(name="text", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    message.field.add(name="seq", number=2, type=field.TYPE_INT64, label=field.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("eventstream_smoke.Ping"))


def round_trip() -> float:
    from eventstream import EventMetadata, TopicConfig, new_topic
    from eventstream.testing import EmbeddedCluster, EventRecorder

    ping = ping_class()
    started = time.monotonic()
    with EmbeddedCluster() as cluster:
        config = TopicConfig(
            brokers=cluster.bootstrap_servers, topic="smoke-test", instance_id="smoke"
        )
        with new_topic(ping, config) as topic:
            topic.ensure_exists(partitions=2)
            recorder: EventRecorder[Any] = EventRecorder()
            consumer = topic.new_consumer()  # starts at the end: wait for the partitions
            consumer.consume(recorder, with_metadata=True)
            consumer.wait_until_assigned(timeout=30)
            producer = topic.new_producer(key=lambda event: event.text)
            sent = [ping(text=f"key-{i % 5}", seq=i) for i in range(EVENTS)]
            producer.produce(*sent)
            got = recorder.wait_for(EVENTS, timeout=30)
            if sorted(e.seq for e in got) != list(range(EVENTS)):
                fail(f"events lost or duplicated: {sorted(e.seq for e in got)}")
            if not all(type(e) is ping for e in got):
                fail(f"events arrived as {type(got[0])!r}, not {ping!r}")
            metadata = recorder.metadata
            if not all(isinstance(m, EventMetadata) and m.source == "smoke" for m in metadata):
                fail(f"unexpected metadata: {metadata[:3]}")
            by_key: dict[bytes | None, list[int]] = {}
            for event, meta in zip(got, metadata, strict=True):
                assert meta is not None
                by_key.setdefault(meta.key, []).append(event.seq)
            if any(seqs != sorted(seqs) for seqs in by_key.values()):
                fail(f"events of one key out of order: {by_key}")
    return time.monotonic() - started


def version_commands(expect: str) -> str:
    import eventstream

    script = shutil.which("eventstream", path=str(Path(sys.executable).parent))
    if script is None:
        fail(f"no `eventstream` console script next to {sys.executable}")
    lines: list[str] = []
    for command in ([script, "--version"], [sys.executable, "-m", "eventstream", "--version"]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd="/")
        line = done.stdout.strip()
        if done.returncode != 0 or not line.startswith(f"eventstream {eventstream.__version__} ("):
            fail(f"{' '.join(command)} -> exit {done.returncode}: {line} {done.stderr}")
        if f"({expect} backend" not in line:
            fail(f"{' '.join(command)} names another backend: {line}")
        lines.append(line)
    return lines[0]


def main() -> int:
    parser = argparse.ArgumentParser(description="Smoke test of an installed eventstream.")
    parser.add_argument("--expect", choices=["compiled", "pure"], default="compiled")
    args = parser.parse_args()
    for switch in ("EVENTSTREAM_NO_EXTENSIONS", "EVENTSTREAM_REQUIRE_COMPILED"):
        os.environ.pop(switch, None)  # the installation alone decides

    import eventstream

    location = Path(eventstream.__file__).resolve().parent
    if location.is_relative_to(CHECKOUT):
        fail(f"eventstream was imported from the checkout {location}, not from an installation")
    announced = _Announcements()
    logging.getLogger("eventstream").addHandler(announced)
    logging.getLogger("eventstream").setLevel(logging.INFO)
    if eventstream.backend() != args.expect:
        fail(f"the {eventstream.backend()} backend is loaded, not the {args.expect} one")
    eventstream.backend()  # asked again: announced once all the same
    logging.getLogger("eventstream").removeHandler(announced)
    if args.expect == "pure":
        # Built without the extension: there must be no _core in the installation, and the
        # choice is announced in one INFO line.
        if compiled := list(location.glob("_core*.so")):
            fail(f"a pure-only installation carries {compiled}")
        if len(announced.lines) != 1 or "pure-Python backend" not in announced.lines[0]:
            fail(f"the pure-Python backend was not announced once at INFO: {announced.lines}")
    elif announced.lines:
        fail(f"the compiled backend was announced as something else: {announced.lines}")
    seconds = round_trip()
    version = version_commands(args.expect)
    print(
        f"smoke test passed: {version}, from {location}; "
        f"a typed round trip of {EVENTS} events on the embedded cluster in {seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
