"""eventstream's records as the Java Kafka client reads them (tests/java/ReadEvents.java, compiled
against the broker's own kafka-clients jar): the value byte for byte, the key, and the CloudEvents
binary-mode headers of eventstream/wire.py, each once, with ``Headers.lastHeader`` agreeing and
``ce_time`` accepted by ``java.time.Instant.parse``."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kafka_harness
import pytest
from support import EVENT_HEADERS
from testevents_pb2 import Invalidate

import eventstream

pytestmark = pytest.mark.timeout(90)

SOURCE = Path(__file__).resolve().parent / "java" / "ReadEvents.java"
#: What the Java program may take to read the topic to its end (it exits 1 after this).
READ_TIMEOUT_MS = 30_000
CE_ID = re.compile(r"([0-9a-f]{16})-([1-9][0-9]*)")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CE_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
#: The keys the keyed producer gives (by seq): str (UTF-8, also non-ASCII), bytes, none, empty.
KEYS: dict[int, str | bytes | None] = {
    0: "k0",
    1: "k1",
    2: None,
    3: "clé-ü",
    4: b"\x00\xff\x80",
    5: "",
    6: "k0",
}


@dataclass(frozen=True)
class JavaReader:
    """The compiled ReadEvents and how to run it."""

    java: str
    classpath: str

    def read(self, bootstrap: str, topic: str) -> list[dict[str, Any]]:
        """Every record of ``topic`` (all partitions, from the beginning up to the end offsets
        at the start), one dict per record as ReadEvents prints it."""
        done = subprocess.run(
            [
                self.java,
                "-XX:TieredStopAtLevel=1",  # a short-lived JVM: C1 only starts sooner
                "-XX:+UseSerialGC",
                "-Xshare:auto",
                "-Dslf4j.internal.verbosity=ERROR",  # no "no SLF4J providers" warning
                "-cp",
                self.classpath,
                "ReadEvents",
                bootstrap,
                topic,
                str(READ_TIMEOUT_MS),
            ],
            capture_output=True,
            text=True,
            timeout=READ_TIMEOUT_MS / 1000 + 30,
            check=False,
        )
        assert done.returncode == 0, (
            f"ReadEvents exited with {done.returncode}\nstdout:\n{done.stdout}\n"
            f"stderr:\n{done.stderr[-4000:]}"
        )
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def java_reader(tmp_path_factory: pytest.TempPathFactory) -> JavaReader:
    """ReadEvents compiled once per session into a temp dir, against the cached jars of the
    harness broker's Kafka release (kafka-clients and slf4j-api, which it logs through)."""
    java_home = os.environ.get("JAVA_HOME")
    javac = (
        str(Path(java_home) / "bin" / "javac")
        if java_home and (Path(java_home) / "bin" / "javac").exists()
        else shutil.which("javac")
    )
    if javac is None:
        pytest.skip("javac not found (JAVA_HOME or PATH): the Java interop test needs a JDK")
    lib = kafka_harness.kafka_home() / "lib"
    jars = [
        lib / f"kafka-clients-{kafka_harness.KAFKA_VERSION}.jar",
        lib / f"slf4j-api-{kafka_harness.SLF4J_VERSION}.jar",
    ]
    missing = [jar.name for jar in jars if not jar.is_file()]
    if missing:
        pytest.skip(
            f"{', '.join(missing)} not cached in {lib}: run 'scripts/kafka_harness.py fetch'"
        )
    classes = tmp_path_factory.mktemp("java-interop")
    jar_path = os.pathsep.join(str(jar) for jar in jars)
    compiled = subprocess.run(
        [javac, "--release", "17", "-Xlint:all", "-cp", jar_path, "-d", str(classes), str(SOURCE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert compiled.returncode == 0, f"javac failed:\n{compiled.stdout}{compiled.stderr}"
    return JavaReader(kafka_harness.java_executable(), os.pathsep.join([str(classes), jar_path]))


def b64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text, validate=True)


def key_bytes(key: str | bytes | None) -> bytes | None:
    return key.encode() if isinstance(key, str) else key


def test_java_client_reads_values_keys_and_cloudevents_headers(
    make_topic: Callable[..., eventstream.Topic[Any]],
    kafka_bootstrap: str,
    java_reader: JavaReader,
) -> None:
    topic = make_topic(partitions=3, instance_id="svc-java.interop_1")
    keyed = [Invalidate(key=f"e{i}", seq=i, padding=bytes(range(i * 40))) for i in KEYS]
    unkeyed = [Invalidate(key="free", seq=10), Invalidate(seq=11)]  # the second one is b"" + seq
    sent: list[tuple[Invalidate, bytes | None, Any]] = []  # (event, key, delivery)
    producers: list[set[str]] = []  # the ce_ids of each producer
    with topic.new_producer(key=lambda e: KEYS[e.seq]) as producer:
        calls = [keyed[:4], keyed[4:]]  # two calls: two ce_time values
        deliveries = [d for call in calls for d in producer.produce(*call)]
        sent += [(e, key_bytes(KEYS[e.seq]), d) for e, d in zip(keyed, deliveries, strict=True)]
        producers.append({d.event_id for d in deliveries})
    with topic.new_producer() as producer:
        deliveries = list(producer.produce(*unkeyed))
        sent += [(e, None, d) for e, d in zip(unkeyed, deliveries, strict=True)]
        producers.append({d.event_id for d in deliveries})

    records = java_reader.read(kafka_bootstrap, topic.name)

    by_place = {(r["partition"], r["offset"]): r for r in records}
    assert len(by_place) == len(records)
    assert sorted(by_place) == sorted((d.partition, d.offset) for _, _, d in sent), (
        "Java read other records than eventstream produced"
    )
    ids: list[str] = []
    for event, key, delivery in sent:
        record = by_place[(delivery.partition, delivery.offset)]
        where = f"seq {event.seq} at {delivery.partition}@{delivery.offset}"
        assert record["topic"] == topic.name
        assert b64(record["value"]) == event.SerializeToString(), where
        assert b64(record["key"]) == key, where

        headers = [(h["name"], b64(h["value"])) for h in record["headers"]]
        names = [name for name, _ in headers]
        assert Counter(names) == Counter(EVENT_HEADERS), f"{where}: headers {names}"
        values = dict(headers)
        last = {name: b64(value) for name, value in record["last"].items()}
        assert last == values, f"{where}: Headers.lastHeader disagrees with the last occurrence"

        assert values["content-type"] == b"application/protobuf", where
        assert values["ce_specversion"] == b"1.0", where
        assert values["ce_type"] == Invalidate.DESCRIPTOR.full_name.encode(), where
        assert values["ce_type"] == b"eventstream.tests.Invalidate"
        assert values["ce_source"] == b"svc-java.interop_1", where
        ce_id = (values["ce_id"] or b"").decode("ascii")
        assert CE_ID.fullmatch(ce_id), f"{where}: ce_id {ce_id!r}"
        assert ce_id == delivery.event_id, where
        ids.append(ce_id)

        ce_time = (values["ce_time"] or b"").decode("ascii")
        assert CE_TIME.fullmatch(ce_time), f"{where}: ce_time {ce_time!r}"
        assert record["ce_time_error"] is None, f"{where}: Instant.parse: {record['ce_time_error']}"
        parsed = datetime.fromisoformat(ce_time.replace("Z", "+00:00"))
        millis = (parsed - EPOCH) // timedelta(milliseconds=1)
        assert record["ce_time_epoch_ms"] == millis, (
            f"{where}: {ce_time} read by Java as another time"
        )

    assert len(set(ids)) == len(ids), f"ce_id repeats: {ids}"
    prefixes = [{i.partition("-")[0] for i in group} for group in producers]
    assert all(len(p) == 1 for p in prefixes) and prefixes[0] != prefixes[1], prefixes
