"""Helpers shared by the integration tests: waiting for events without sleeping, raw Kafka I/O.

Nothing here sleeps where an event can be awaited: :class:`Collector` wakes the test through a
``threading.Condition`` the moment the awaited events arrived, and every wait has a deadline so
that a lost event fails the test with what did arrive instead of hanging it.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import confluent_kafka

#: Default deadline (seconds) for an awaited event. Generous: it only matters when a test fails.
WAIT = 30.0

#: Every record's headers without telemetry, in the order both backends write them.
EVENT_HEADERS = ("content-type", "ce_specversion", "ce_source", "ce_type", "ce_id", "ce_time")


@dataclass(frozen=True)
class Received:
    """One handler call: the event, its metadata (``None`` without ``with_metadata``), and the
    tag of the handler that received it (to tell consumers sharing one collector apart)."""

    event: Any
    metadata: Any
    tag: str


class Collector:
    """A handler that records what it receives and lets the test wait for it.

    Use the collector itself as the handler (``consumer.consume(collector)`` or with
    ``with_metadata=True``), or ``collector.handler("c1")`` to tag what one consumer received.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._received: list[Received] = []

    def __call__(self, event: Any, metadata: Any = None) -> None:
        self._record(event, metadata, "")

    def handler(self, tag: str) -> Callable[..., None]:
        def handle(event: Any, metadata: Any = None) -> None:
            self._record(event, metadata, tag)

        return handle

    def _record(self, event: Any, metadata: Any, tag: str) -> None:
        with self._cond:
            self._received.append(Received(event, metadata, tag))
            self._cond.notify_all()

    # -- reading ----------------------------------------------------------------------------------

    @property
    def received(self) -> list[Received]:
        with self._cond:
            return list(self._received)

    @property
    def events(self) -> list[Any]:
        return [r.event for r in self.received]

    @property
    def seqs(self) -> list[int]:
        return [r.event.seq for r in self.received]

    def __len__(self) -> int:
        with self._cond:
            return len(self._received)

    # -- waiting ----------------------------------------------------------------------------------

    def wait_until(
        self, predicate: Callable[[list[Received]], bool], what: str, timeout: float = WAIT
    ) -> list[Received]:
        """Block until ``predicate(received so far)`` holds; fail the test after ``timeout``."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self._received), timeout):
                seqs = [getattr(r.event, "seq", r.event) for r in self._received]
                raise AssertionError(
                    f"timed out after {timeout:g} s waiting for {what}; received "
                    f"{len(seqs)} events: {_abbreviate(seqs)}"
                )
            return list(self._received)

    def wait_for_count(self, count: int, timeout: float = WAIT) -> list[Received]:
        return self.wait_until(lambda r: len(r) >= count, f"{count} events", timeout)

    def wait_for_seq(self, seq: int, timeout: float = WAIT) -> list[Received]:
        """Block until an event with ``seq`` arrived; returns everything received so far."""
        return self.wait_until(
            lambda r: any(x.event.seq == seq for x in r), f"the event with seq {seq}", timeout
        )

    def wait_for_seqs(self, seqs: Iterable[int], timeout: float = WAIT) -> list[Received]:
        wanted = set(seqs)
        return self.wait_until(
            lambda r: wanted <= {x.event.seq for x in r},
            f"{len(wanted)} events with seqs {_abbreviate(sorted(wanted))}",
            timeout,
        )


class ErrorLog:
    """A ``TopicConfig.on_error`` that records what it is given and lets a test wait for it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.errors: list[Any] = []

    def __call__(self, error: Any) -> None:
        with self._cond:
            self.errors.append(error)
            self._cond.notify_all()

    def wait_for(
        self, kind: type[BaseException], timeout: float = WAIT, *, client: str = ""
    ) -> Any:
        """The first ``kind`` error (of the client whose description starts with ``client``,
        e.g. "consumer" or "producer")."""

        def found() -> list[Any]:
            return [e for e in self.errors if isinstance(e, kind) and str(e).startswith(client)]

        with self._cond:
            if not self._cond.wait_for(found, timeout):
                raise AssertionError(f"no {kind.__name__} within {timeout:g} s: {self.errors}")
            return found()[0]

    def wait_for_count(self, count: int, timeout: float = WAIT) -> list[Any]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.errors) >= count, timeout):
                raise AssertionError(
                    f"fewer than {count} errors within {timeout:g} s: {self.errors}"
                )
            return list(self.errors)


def _abbreviate(items: Sequence[Any], limit: int = 40) -> str:
    items = list(items)
    if len(items) <= limit:
        return repr(items)
    return f"{items[:limit]!r} ... (+{len(items) - limit} more)"


def impersonate_static_member(
    topic: Any, group_instance_id: str | None, timeout: float = WAIT
) -> None:
    """Join ``topic``'s group as static member ``group_instance_id`` with a plain client until
    it is assigned partitions, then close it: the member that held the id is fenced, and the
    closed client stays the member (a static member leaves no group on close)."""
    settings = topic.config.consumer_settings(group_instance_id=group_instance_id)
    impostor = confluent_kafka.Consumer(settings)
    try:
        joined = threading.Event()
        impostor.subscribe([topic.name], on_assign=lambda *_: joined.set())
        deadline = time.monotonic() + timeout
        while not joined.is_set():  # poll() serves on_assign
            assert time.monotonic() < deadline, "the impostor was never assigned partitions"
            impostor.poll(0.1)
    finally:
        impostor.close()


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll ``predicate`` (for state that offers nothing to wait on, e.g. a file another
    process writes or a consumer's assignment) until it holds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def sanitizer_report(pid: int) -> str:
    """The AddressSanitizer report of process ``pid``, if it wrote one to the files that
    ``ASAN_OPTIONS=log_path=...`` names (as .ci/sanitizer sets it), else ''."""
    found = re.search(r"(?:^|:)log_path=([^:]+)", os.environ.get("ASAN_OPTIONS", ""))
    if found is None:
        return ""
    try:
        with open(f"{found.group(1)}.{pid}") as report:
            return report.read()
    except OSError:
        return ""


def closed_port() -> int:
    """A local TCP port nothing listens on (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- raw Kafka access, bypassing eventstream -------------------------------------------------------


def raw_produce(
    bootstrap: str,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes | None, list[tuple[str, bytes]] | None]],
) -> None:
    """Write ``(value, key, headers)`` records with a plain confluent-kafka producer, in order, to
    partition 0, and wait until all are acknowledged."""
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True}
    )
    errors: list[Any] = []
    for value, key, headers in records:
        producer.produce(
            topic,
            value,
            key,
            partition=0,
            headers=headers,
            on_delivery=lambda err, _msg: errors.append(err) if err else None,
        )
    remaining = producer.flush(WAIT)
    assert remaining == 0, f"{remaining} raw records not acknowledged"
    assert not errors, f"raw produce failed: {errors}"


def raw_consume(
    bootstrap: str, topic: str, count: int, *, partitions: int = 1, timeout: float = WAIT
) -> list[confluent_kafka.Message]:
    """Read the first ``count`` records of ``topic`` with a plain confluent-kafka consumer
    (assigned, not subscribed: no group join), in partition order."""
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"raw-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.assign(
            [
                confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                for p in range(partitions)
            ]
        )
        records: list[confluent_kafka.Message] = []
        deadline = time.monotonic() + timeout
        while len(records) < count:
            assert time.monotonic() < deadline, f"raw consumer read {len(records)} of {count}"
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            records.append(msg)
        return records
    finally:
        consumer.close()


def raw_consume_all(
    bootstrap: str, topic: str, *, partitions: int = 1, timeout: float = WAIT
) -> list[confluent_kafka.Message]:
    """Read every record of ``topic`` up to its end (the end each partition has when the reader
    reaches it: call it once the writers are done) with a plain confluent-kafka consumer
    (assigned, not subscribed), in partition order."""
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"raw-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        consumer.assign(
            [
                confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                for p in range(partitions)
            ]
        )
        records: list[confluent_kafka.Message] = []
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(at_end) < partitions:
            assert time.monotonic() < deadline, (
                f"raw consumer read {len(records)} records and reached the end of partitions "
                f"{sorted(at_end)} only"
            )
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            error = msg.error()
            if error is not None and error.code() == confluent_kafka.KafkaError._PARTITION_EOF:
                at_end.add(msg.partition())
                continue
            assert error is None, error
            records.append(msg)
        return records
    finally:
        consumer.close()
