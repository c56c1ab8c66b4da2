"""Faults on a real Apache Kafka cluster: a leader SIGKILLed under produce load, a broker outage
under a consumer, a consumer process SIGKILLed and restarted at once.

These tests stop and start brokers, so they run on clusters of their own (never the session's
broker), started by ``scripts/kafka_harness.py`` only when one of them is selected, and one at a
time: the 3-node cluster for the leader crash is stopped before the 1-node cluster of the
outage and restart tests starts (the machine's cores are shared). The 3-node cluster keeps
Kafka's default ``broker.session.timeout.ms`` (9 s): with 3 s the controller drops a killed node
from the ISRs so fast (produce stalled ~2.8 s) that no call outlasts its 5 s delivery timeout,
and the test would never see the failures it is there to check.

Nothing here asserts a timing: each waits for an outcome, with a deadline. The figures worth
knowing (calls that failed, in-doubt events found in the topic anyway, how long the stall
lasted) are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from kafka_harness import KafkaCluster
from support import wait_until
from testevents_pb2 import Invalidate

import eventstream

pytestmark = [pytest.mark.timeout(300), pytest.mark.kafka]  # clusters of its own: marked by hand

CRASH_CONSUMER = Path(__file__).resolve().parent / "crash_consumer.py"


# -- clusters, one at a time --------------------------------------------------------------------


class Clusters:
    """Hands out a harness cluster of 1 or 3 nodes, stopping the other size first, so that at
    most one of them runs at a time. Tests may stop and start its nodes; a cluster missing a
    node when the next test asks for it is replaced."""

    def __init__(self) -> None:
        self._cluster: KafkaCluster | None = None

    def get(self, nodes: int) -> KafkaCluster:
        current = self._cluster
        if current is not None:
            if current.nodes == nodes and len(current.running_node_ids()) == nodes:
                return current
            self.stop()
        self._cluster = KafkaCluster(nodes=nodes).start()
        return self._cluster

    def stop(self) -> None:
        if self._cluster is not None:
            # SIGKILL rather than the graceful stop: the data is thrown away anyway, and the
            # last nodes of a 3-node cluster would wait seconds for a quorum that is gone.
            for node in self._cluster.running_node_ids():
                self._cluster.stop_node(node, kill=True)
            self._cluster.stop()
            self._cluster = None


@pytest.fixture(scope="module")
def clusters() -> Iterator[Clusters]:
    pool = Clusters()
    try:
        yield pool
    finally:
        pool.stop()


def log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What eventstream logged at INFO and above (librdkafka's own lines are DEBUG)."""
    return [
        f"{r.levelname} {r.getMessage()}"
        for r in caplog.records
        if r.name.startswith("eventstream") and r.levelno >= logging.INFO
    ]


def new_topic_name(what: str) -> str:
    return f"faults-{what}-{uuid.uuid4().hex[:10]}"


def quiet(bootstrap: str) -> dict[str, Any]:
    """A plain client's settings: nodes coming and going are no news to it."""
    return {"bootstrap.servers": bootstrap, "log_level": 0, "error_cb": lambda _err: None}


def create_topic(
    bootstrap: str, name: str, partitions: int, replication: int, **config: str
) -> AdminClient:
    """Create ``name`` and wait until every partition has a leader and a full ISR."""
    admin = AdminClient(quiet(bootstrap))
    future = admin.create_topics([NewTopic(name, partitions, replication, config=config)])[name]
    future.result(30)

    def ready() -> bool:
        topic = admin.list_topics(name, timeout=5).topics.get(name)
        return (
            topic is not None
            and topic.error is None
            and len(topic.partitions) == partitions
            and all(p.leader >= 0 and len(p.isrs) == replication for p in topic.partitions.values())
        )

    wait_until(ready, f"topic {name} to have leaders and full ISRs")
    return admin


def leaders(admin: AdminClient, name: str) -> dict[int, int]:
    """``{partition: leader node id}``."""
    topic = admin.list_topics(name, timeout=10).topics[name]
    return {p.id: p.leader for p in topic.partitions.values()}


def read_topic(bootstrap: str, name: str) -> dict[int, list[tuple[int, int]]]:
    """Every record of ``name``, read with a plain consumer (assigned, no group):
    ``{partition: [(offset, seq), ...]}`` in offset order."""
    consumer = confluent_kafka.Consumer(
        {**quiet(bootstrap), "group.id": f"faults-reader-{uuid.uuid4().hex}"}
    )
    try:
        metadata = consumer.list_topics(name, timeout=10).topics[name]
        ends: dict[int, int] = {}
        for p in metadata.partitions:
            tp = confluent_kafka.TopicPartition(name, p)
            _low, high = consumer.get_watermark_offsets(tp, timeout=10)
            ends[p] = high
        consumer.assign(
            [
                confluent_kafka.TopicPartition(name, p, confluent_kafka.OFFSET_BEGINNING)
                for p in ends
            ]
        )
        records: dict[int, list[tuple[int, int]]] = {p: [] for p in ends}
        left = {p for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + 60
        while left:
            assert time.monotonic() < deadline, f"reading {name}: partitions {left} not read"
            for msg in consumer.consume(1000, 0.5):
                assert msg.error() is None, msg.error()
                partition, offset = msg.partition(), msg.offset()
                assert partition is not None and offset is not None
                records[partition].append((offset, Invalidate.FromString(msg.value()).seq))
                if offset + 1 >= ends[partition]:
                    left.discard(partition)
        return records
    finally:
        consumer.close()


# -- a. a leader SIGKILLed while a producer produces ---------------------------------------------


@dataclass
class Call:
    """One ``produce`` call of the load: its events' seqs and what it raised (``None``: ok)."""

    first: int
    size: int
    started: float
    ended: float = 0.0
    error: BaseException | None = None

    @property
    def seqs(self) -> range:
        return range(self.first, self.first + self.size)


@dataclass
class Load:
    """Blocking calls of ``size`` events (keys ``k0``..``k49``), one after the other, ``pause``
    seconds apart, on a thread, until stopped."""

    producer: eventstream.Producer[Invalidate]
    size: int = 100
    pause: float = 0.0
    calls: list[Call] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="faults-load", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        seq = 0
        while not self.stop.is_set():
            call = Call(seq, self.size, time.monotonic())
            events = [Invalidate(key=f"k{s % 50}", seq=s) for s in call.seqs]
            try:
                self.producer.produce(*events)
            except BaseException as exc:  # judged by the test
                call.error = exc
            call.ended = time.monotonic()
            self.calls.append(call)
            seq += self.size
            if self.pause:
                self.stop.wait(self.pause)  # pacing, not waiting for anything

    def done_since(self, index: int) -> int:
        """Successful calls that returned after the first ``index``."""
        return sum(1 for c in self.calls[index:] if c.error is None)

    @property
    def acknowledged(self) -> set[int]:
        return {s for c in self.calls if c.error is None for s in c.seqs}

    def finish(self) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(60)
        assert not self.thread.is_alive(), "a produce call did not return within 60 s"


def test_no_acknowledged_event_is_lost_when_the_leader_is_killed(
    clusters: Clusters, caplog: pytest.LogCaptureFixture
) -> None:
    """3 nodes, replication factor 3, min.insync.replicas=2: SIGKILL the node leading most
    partitions under a stream of blocking calls, restart it, read the topic back."""
    caplog.set_level(logging.INFO, logger="eventstream")
    cluster = clusters.get(3)
    bootstrap = cluster.bootstrap_servers
    name = new_topic_name("leader")
    admin = create_topic(bootstrap, name, 6, 3, **{"min.insync.replicas": "2"})
    errors: list[eventstream.EventStreamError] = []
    config = eventstream.TopicConfig(
        brokers=bootstrap,
        topic=name,
        instance_id="faults-producer",
        delivery_timeout=5.0,  # a call stuck on the dead leader ends within 5 s
        on_error=errors.append,
    )
    with eventstream.new_topic(Invalidate, config) as topic:
        load = Load(topic.new_producer())
        load.start()
        try:
            wait_until(lambda: load.done_since(0) >= 50, "50 calls before the crash", 60)
            led = Counter(leaders(admin, name).values())
            victim = led.most_common(1)[0][0]
            killed_at, kill_index = time.monotonic(), len(load.calls)
            cluster.stop_node(victim, kill=True)
            # The cluster goes on with two replicas (min.insync.replicas=2): calls succeed again.
            wait_until(lambda: load.done_since(kill_index) >= 50, "50 calls after the crash", 90)
            cluster.start_node(victim)
            restart_index = len(load.calls)
            wait_until(
                lambda: (
                    load.done_since(restart_index) >= 50 and len(load.calls) * load.size >= 30_000
                ),
                "50 calls after the restart and 30,000 events in all",
                90,
            )
        finally:
            load.finish()
        final_state = load.producer.status.state

    records = read_topic(bootstrap, name)
    in_topic = Counter(seq for part in records.values() for _offset, seq in part)
    calls = load.calls
    ok = [c for c in calls if c.error is None]
    failed = [c for c in calls if c.error is not None]
    # Calls of more than a second around the kill: how long produce stalled, and how it ended.
    slow = [c for c in calls[max(0, kill_index - 1) :] if c.ended - c.started > 1.0]
    found_of_failed = {id(c): sum(1 for s in c.seqs if s in in_topic) for c in failed}
    print(
        f"\nleader crash ({eventstream.backend()} backend): {len(calls)} calls of {load.size} "
        f"events; node {victim} led {led[victim]} of 6 partitions; {len(failed)} calls failed"
        + "".join(
            f"\n  {type(c.error).__name__}: failed={getattr(c.error, 'failed', '?')} "
            f"in_doubt={getattr(c.error, 'in_doubt', '?')} total={getattr(c.error, 'total', '?')}"
            f" retriable={getattr(c.error, 'retriable', '?')}; {found_of_failed[id(c)]} of its "
            f"{c.size} events are in the topic: {c.error}"
            for c in failed
        )
        + "\n  calls over 1 s (start-end s after the kill): "
        + ", ".join(
            f"{c.started - killed_at:.1f}-{c.ended - killed_at:.1f} "
            f"{'ok' if c.error is None else 'failed'}"
            for c in slow
        )
        + f"; on_error got {len(errors)}: "
        + "; ".join(f"{type(e).__name__}: {e}" for e in errors[:5])
        + "".join(f"\n  log: {line}" for line in log_lines(caplog))
    )

    # No acknowledged event is missing.
    missing = [s for c in ok for s in c.seqs if s not in in_topic]
    assert not missing, f"{len(missing)} acknowledged events are not in the topic: {missing[:20]}"
    # Idempotence: librdkafka's retries neither duplicate nor reorder a partition.
    duplicated = sorted(s for s, n in in_topic.items() if n > 1)
    assert not duplicated, f"{len(duplicated)} events are in the topic twice: {duplicated[:20]}"
    for partition, part in records.items():
        seqs = [seq for _offset, seq in part]
        assert seqs == sorted(seqs), f"partition {partition} is out of produce order"
    # Nothing is in the topic that was not produced.
    assert set(in_topic) <= {s for c in calls for s in c.seqs}
    # Every failed call raised a retriable ProduceError whose counts add up and do not claim
    # "not written" for an event that was written.
    for c in failed:
        error = c.error
        assert isinstance(error, eventstream.ProduceError), repr(error)
        assert error.retriable, f"a leader crash is transient, but: {error!r}"
        assert error.total == c.size, error
        assert 1 <= error.failed + error.in_doubt <= c.size, error
        assert found_of_failed[id(c)] <= c.size - error.failed, (
            f"{found_of_failed[id(c)]} events of a call are in the topic, but its error says "
            f"{error.failed} of {c.size} were not written: {error}"
        )
    assert final_state == "ready", f"the producer ended {final_state} after the node came back"


# -- b. a consumer across a broker outage ---------------------------------------------------------

OUTAGE = 20.0  # seconds the broker stays down


def check_partition_order(received: list[tuple[int, int, int]]) -> dict[int, int]:
    """``received`` is ``(partition, offset, seq)`` in the order the handler ran. Per partition,
    each event is the next offset or a rewind to one handled before (a redelivery: at least
    once), never a skip; one offset always carries one event, and the log is in produce order
    (seq grows with the offset). Returns ``{partition: events handled twice or more}``."""
    by_partition: dict[int, list[tuple[int, int]]] = {}
    for partition, offset, seq in received:
        by_partition.setdefault(partition, []).append((offset, seq))
    again: dict[int, int] = {}
    for partition, items in by_partition.items():
        seen: dict[int, int] = {}
        previous = items[0][0] - 1
        for offset, seq in items:
            assert offset <= previous + 1, (
                f"partition {partition}: offsets {previous + 1}..{offset - 1} were skipped"
            )
            assert seen.setdefault(offset, seq) == seq, f"offset {offset} changed its event"
            previous = offset
        in_order = [seen[o] for o in sorted(seen)]
        assert in_order == sorted(in_order), f"partition {partition}: log not in produce order"
        assert sorted(seen) == list(range(min(seen), max(seen) + 1)), (
            f"partition {partition}: offsets missing from what was handled"
        )
        again[partition] = len(items) - len(seen)
    return again


def test_consumer_handles_the_stream_across_a_broker_outage(
    clusters: Clusters, caplog: pytest.LogCaptureFixture
) -> None:
    """One node, stopped for 20 s and started again on its ports and data, under a consumer and
    a producer that the test leaves alone: the consumer goes disconnected and comes back by
    itself, reports the outage once, and handles every acknowledged event in partition order.

    One node because ``disconnected`` means that no broker answers: with three, the consumer
    keeps talking to the two that are up and rightly stays ``ready``."""
    caplog.set_level(logging.INFO, logger="eventstream")
    cluster = clusters.get(1)
    bootstrap = cluster.bootstrap_servers
    name = new_topic_name("outage")
    create_topic(bootstrap, name, 3, 1)
    consumer_errors: list[eventstream.EventStreamError] = []
    producer_errors: list[eventstream.EventStreamError] = []
    consumer_config = eventstream.TopicConfig(
        brokers=bootstrap, topic=name, instance_id="faults-cache", on_error=consumer_errors.append
    )
    producer_config = eventstream.TopicConfig(
        brokers=bootstrap,
        topic=name,
        instance_id="faults-writer",
        delivery_timeout=120.0,  # a call waiting out the outage still gets its events written
        on_error=producer_errors.append,
    )
    handled: list[tuple[int, int, int]] = []  # (partition, offset, seq), in handling order
    handled_at: list[float] = []
    cond = threading.Condition()

    def handle(event: Invalidate, meta: eventstream.EventMetadata) -> None:
        with cond:
            handled_at.append(time.monotonic())
            handled.append((meta.partition, meta.offset, event.seq))
            cond.notify_all()

    def wait_handled(what: str, predicate: Callable[[], bool], timeout: float) -> None:
        with cond:
            assert cond.wait_for(predicate, timeout), (
                f"timed out after {timeout:g} s waiting for {what}; handled {len(handled)}"
            )

    with (
        eventstream.new_topic(Invalidate, consumer_config) as cache_topic,
        eventstream.new_topic(Invalidate, producer_config) as writer_topic,
    ):
        consumer = cache_topic.new_consumer(start_from_beginning=True)
        consumer.consume(handle, with_metadata=True)
        consumer.wait_until_assigned()
        load = Load(writer_topic.new_producer(key=lambda e: e.key), size=10, pause=0.02)
        load.start()
        try:
            wait_handled("200 events before the outage", lambda: len(handled) >= 200, 60)
            assert consumer.status.state == "ready", consumer.status
            stopped_at = time.monotonic()
            cluster.stop_node(1)
            wait_until(
                lambda: consumer.status.state == "disconnected", "the consumer to notice", OUTAGE
            )
            outage_status = consumer.status
            # The outage lasts OUTAGE seconds: a duration to let pass, not an event to await.
            time.sleep(max(0.0, stopped_at + OUTAGE - time.monotonic()))
            starting_at = time.monotonic()
            cluster.start_node(1)
            restarted_at = time.monotonic()
            restart_index = len(load.calls)
            wait_until(lambda: consumer.status.state == "ready", "the consumer to recover", 60)
            wait_until(lambda: load.done_since(restart_index) >= 50, "50 calls after restart", 60)
        finally:
            load.finish()
        acknowledged = load.acknowledged
        wait_handled(
            f"all {len(acknowledged)} acknowledged events",
            lambda: acknowledged <= {seq for _p, _o, seq in handled},
            90,
        )
        final_status = consumer.status
        writer_status = load.producer.status
        with cond:
            received, times = list(handled), list(handled_at)

    gap_start, gap_end = max(itertools.pairwise(times), key=lambda ab: ab[1] - ab[0])
    again = check_partition_order(received)
    print(
        f"\nbroker outage ({eventstream.backend()} backend): {len(received)} events handled "
        f"({sum(again.values())} twice), {len(acknowledged)} acknowledged, "
        f"{sum(1 for c in load.calls if c.error)} produce calls failed; from the stop: "
        f"disconnected at {outage_status.since - stopped_at:.1f} s, start_node called at "
        f"{starting_at - stopped_at:.1f} s, returned at {restarted_at - stopped_at:.1f} s; "
        f"handling paused from {gap_start - stopped_at:.1f} s to {gap_end - stopped_at:.1f} s"
        f"\n  consumer on_error: {[f'{type(e).__name__}: {e}' for e in consumer_errors]}"
        f"\n  producer on_error: {[f'{type(e).__name__}: {e}' for e in producer_errors]}"
        + "".join(f"\n  log: {line}" for line in log_lines(caplog))
    )
    assert isinstance(outage_status.error, eventstream.BrokerError), outage_status
    assert outage_status.error.retriable, outage_status
    assert final_status.state == "ready", final_status
    assert writer_status.state == "ready", writer_status
    # One report of the outage, no flood (each retry of librdkafka is no news).
    assert len(consumer_errors) == 1, [str(e) for e in consumer_errors]
    [error] = consumer_errors
    assert isinstance(error, eventstream.BrokerError), repr(error)
    assert error.retriable, repr(error)
    assert len(producer_errors) == 1, [str(e) for e in producer_errors]


# -- c. a consumer process SIGKILLed and restarted at once -----------------------------------------


def read_seqs(path: Path) -> list[int]:
    if not path.exists():
        return []
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]  # a line being written is not handled yet
    return [int(line) for line in complete.splitlines()]


def spawn_consumer(
    bootstrap: str, topic: str, out: Path, log: Path, delay: float
) -> subprocess.Popen[bytes]:
    """tests/crash_consumer.py as instance ``faults-restart`` with eventstream's defaults (static
    membership, librdkafka's session timeout)."""
    env = dict(os.environ)
    package_root = str(Path(eventstream.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([package_root, env.get("PYTHONPATH", "")])
    options = {
        "--brokers": bootstrap,
        "--topic": topic,
        "--instance": "faults-restart",
        "--out": str(out),
        "--delay": str(delay),
        "--session-timeout-ms": "0",
    }
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, str(CRASH_CONSUMER), *itertools.chain(*options.items())],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def test_consumer_process_killed_and_restarted_at_once_resumes(
    clusters: Clusters, tmp_path: Path
) -> None:
    """SIGKILL a consumer process mid-stream and start it again at once with the same instance
    id: the new process takes over (static membership: no waiting out the dead one's session is
    needed, but only the outcome is checked here; the time is a benchmark, benchmarks/), handles
    what the first left, and then new events; nothing is lost."""
    cluster = clusters.get(1)
    bootstrap = cluster.bootstrap_servers
    name = new_topic_name("restart")
    create_topic(bootstrap, name, 2, 1)
    config = eventstream.TopicConfig(brokers=bootstrap, topic=name, instance_id="faults-feed")
    before, after = range(300), range(300, 400)
    out1, out2, log = tmp_path / "first.txt", tmp_path / "second.txt", tmp_path / "consumers.log"
    with eventstream.new_topic(Invalidate, config) as topic:
        producer = topic.new_producer(key=lambda e: e.key)
        producer.produce(*(Invalidate(key=f"k{i % 7}", seq=i) for i in before))

        first = spawn_consumer(bootstrap, name, out1, log, delay=0.02)
        try:
            wait_until(
                lambda: len(read_seqs(out1)) >= 40 or first.poll() is not None,
                "the first consumer process to handle 40 events",
                60,
            )
            assert first.poll() is None, f"the first consumer exited early:\n{log.read_text()}"
            first.send_signal(signal.SIGKILL)
            first.wait(30)
            second = spawn_consumer(bootstrap, name, out2, log, delay=0.0)
        finally:
            first.kill()
            first.wait(30)
        try:
            assert len(read_seqs(out1)) < len(before), "the kill did not land mid-stream"
            wait_until(
                lambda: (
                    set(read_seqs(out1)) | set(read_seqs(out2)) >= set(before)
                    or second.poll() is not None
                ),
                "the restarted process to handle what the first one left",
                120,
            )
            producer.produce(*(Invalidate(key=f"k{i % 7}", seq=i) for i in after))
            wait_until(
                lambda: set(read_seqs(out2)) >= set(after) or second.poll() is not None,
                "the restarted process to handle new events",
                60,
            )
            assert second.poll() is None, f"the restarted consumer exited:\n{log.read_text()}"
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0, log.read_text()
        finally:
            second.kill()
            second.wait(30)

    handled = set(read_seqs(out1)) | set(read_seqs(out2))
    lost = sorted((set(before) | set(after)) - handled)
    assert not lost, f"lost: {lost[:20]}\n{log.read_text()}"
    assert set(read_seqs(out2)) >= set(after)
    print(
        f"\nrestart ({eventstream.backend()} backend): the first process handled "
        f"{len(read_seqs(out1))} events, the restarted one {len(read_seqs(out2))} "
        f"({len(set(read_seqs(out1)) & set(read_seqs(out2)))} of them again)"
        + "".join(f"\n  log: {line}" for line in log.read_text().splitlines())
    )


# -- d. a frozen broker (SIGSTOP) under a producer and a consumer --------------------------------


def test_a_frozen_broker_makes_its_clients_disconnected_and_the_recovery_counts_the_freeze(
    clusters: Clusters, caplog: pytest.LogCaptureFixture
) -> None:
    """The single node is frozen: its connections stay open (librdkafka's statistics still say
    UP) but nothing asked comes back. A producer with a call waiting and an idle consumer (its
    fetch long-polls wait) each become ``disconnected`` once requests have waited
    ``disconnected_after`` seconds, with one WARNING and one ``on_error`` each; thawed, each
    becomes ``ready`` with one INFO line that counts the outage from the last answer."""
    caplog.set_level(logging.INFO, logger="eventstream")
    cluster = clusters.get(1)
    bootstrap = cluster.bootstrap_servers
    name = new_topic_name("frozen")
    create_topic(bootstrap, name, 2, 1)
    errors: list[eventstream.EventStreamError] = []
    config = eventstream.TopicConfig(
        brokers=bootstrap,
        topic=name,
        instance_id="faults-frozen",
        disconnected_after=2.0,
        delivery_timeout=120.0,
        on_error=errors.append,
    )
    with eventstream.new_topic(Invalidate, config) as topic:
        consumer = topic.new_consumer()
        consumer.consume(lambda event: None)
        consumer.wait_until_assigned(60)
        producer = topic.new_producer()
        producer.produce(Invalidate(seq=0))
        waiting = threading.Thread(
            target=lambda: producer.produce(Invalidate(seq=1)), name="faults-frozen-call"
        )
        frozen_at = time.monotonic()
        cluster.freeze_node(1)
        try:
            waiting.start()
            wait_until(
                lambda: (
                    producer.status.state == "disconnected"
                    and consumer.status.state == "disconnected"
                ),
                "both clients to become disconnected",
                60,
            )
            noticed = time.monotonic() - frozen_at
        finally:
            cluster.freeze_node(1, frozen=False)
        wait_until(
            lambda: producer.status.state == "ready" and consumer.status.state == "ready",
            "both clients to be ready again",
            60,
        )
        outage = time.monotonic() - frozen_at
        waiting.join(60)
        assert not waiting.is_alive(), "the call made during the freeze never returned"
    print(f"\nfrozen broker: both disconnected after {noticed:.1f} s, ready after {outage:.1f} s")
    lines = log_lines(caplog)
    for who in ("producer", "consumer"):
        warnings = [
            line for line in lines if line.startswith(f"WARNING {who}") and "answered for" in line
        ]
        infos = [
            line for line in lines if line.startswith(f"INFO {who}") and "answers again" in line
        ]
        assert len(warnings) == 1 and len(infos) == 1, lines
        seconds = float(infos[0].split("after ")[1].split(" s")[0])
        assert seconds >= 2.0, infos  # at least disconnected_after of it was seen
    disconnected = [e for e in errors if e.code == -187]  # type: ignore[attr-defined]
    assert len(disconnected) == 2, errors
