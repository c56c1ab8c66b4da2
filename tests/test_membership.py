"""Static group membership: a restarted instance resumes at once; two live processes with one
instance id are an error that names it, unless they asked to share the partitions; both group
protocols (classic and KIP-848's ``group.protocol=consumer``) work."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import Collector, ErrorLog, impersonate_static_member, wait_until
from testevents_pb2 import Invalidate

import eventstream
from eventstream import BrokerError

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.timeout(120)


def test_consumers_of_an_instance_are_numbered_static_members() -> None:
    config = eventstream.TopicConfig(brokers="127.0.0.1:9", topic="numbered", instance_id="api-7")
    with eventstream.new_topic(Invalidate, config) as topic:
        first, second = topic.new_consumer(), topic.new_consumer()
        assert (first.group_instance_id, second.group_instance_id) == ("api-7-0", "api-7-1")
        first.close()
        # A consumer reopened in this process is the same static member as the closed one.
        assert topic.new_consumer().group_instance_id == "api-7-0"
        assert topic.new_consumer(shared=True).group_instance_id is None
    kip848 = eventstream.TopicConfig(
        brokers="127.0.0.1:9",
        topic="numbered",
        instance_id="api-7",
        consumer_properties={"group.protocol": "consumer"},
    )
    with eventstream.new_topic(Invalidate, kip848) as topic:
        assert topic.new_consumer().group_instance_id is None


def test_a_static_member_id_is_held_by_one_open_consumer_at_a_time(
    make_topic: Callable[..., eventstream.Topic[Any]],
) -> None:
    """A closed consumer's id goes to the next consumer; the closed one, garbage-collected
    later, must not free it again: the consumer after that gets another id."""
    topic = make_topic(instance_id="api-8")
    first = topic.new_consumer()
    first.consume(lambda event: None)
    first.wait_until_assigned(60)
    first.close()
    second = topic.new_consumer()
    assert second.group_instance_id == "api-8-0"
    gone = weakref.ref(first)
    topic._children = [second]  # the test drops the closed consumer: nothing else holds it
    del first
    gc.collect()
    assert gone() is None, "the closed consumer is still alive"
    third = topic.new_consumer()
    assert third.group_instance_id == "api-8-1", "two open consumers share a static member id"
    second.close()
    assert topic.new_consumer().group_instance_id == "api-8-0"


CHILD = textwrap.dedent(
    """
    import sys
    sys.path[:0] = {paths!r}
    from testevents_pb2 import Invalidate
    import eventstream

    def on_error(error):
        print("error", type(error).__name__, getattr(error, "name", ""), str(error), flush=True)

    config = eventstream.TopicConfig(
        brokers={brokers!r}, topic={topic!r}, instance_id="dup", on_error=on_error
    )
    topic = eventstream.new_topic(Invalidate, config)
    consumer = topic.new_consumer(start_from_beginning=True, shared={shared!r})
    consumer.consume(lambda event: print("got", event.seq, flush=True))
    print("assigned", sorted(consumer.wait_until_assigned(60)), flush=True)
    sys.stdin.readline()  # the test says when to stop (or kills us)
    print("state", consumer.status.state, flush=True)
    try:
        consumer.close()
        print("closed cleanly", flush=True)
    except eventstream.EventStreamError as exc:
        print("close raised", type(exc).__name__, flush=True)
    """
)


class Child:
    """A consumer process of instance id "dup" on the test's topic."""

    def __init__(self, brokers: str, topic: str, *, shared: bool) -> None:
        paths = [str(HERE), str(HERE / "protos")]
        code = CHILD.format(paths=paths, brokers=brokers, topic=topic, shared=shared)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_line(self, prefix: str, timeout: float = 60, *, having: str = "") -> str:
        """The first line that starts with ``prefix`` and contains ``having``."""

        def match(line: str) -> bool:
            return line.startswith(prefix) and having in line

        with self._cond:
            if not self._cond.wait_for(lambda: any(map(match, self.lines)), timeout):
                raise AssertionError(f"child never printed {prefix!r}: {self.lines}")
            return next(x for x in self.lines if match(x))

    def finish(self) -> list[str]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        self.proc.wait(60)
        self._reader.join(10)
        assert self.proc.returncode == 0, self.lines
        return self.lines

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def child_factory(kafka_bootstrap: str, topic_name: str) -> Iterator[Callable[..., Child]]:
    made: list[Child] = []

    def make(*, shared: bool) -> Child:
        child = Child(kafka_bootstrap, topic_name, shared=shared)
        made.append(child)
        return child

    yield make
    for child in made:
        child.kill()


def test_a_second_live_process_with_the_same_instance_id_is_an_error_naming_it(
    make_topic: Callable[..., eventstream.Topic[Any]], child_factory: Callable[..., Child]
) -> None:
    """The newer member takes over (a restart looks just like this). The older process is
    fenced and rejoins once (a broker failure can fence a member by itself), fencing the newer
    one, which rejoins in turn; fenced again soon after rejoining, the older process fails and
    hears why: its instance id is used twice. The newer one goes on consuming."""
    errors = ErrorLog()
    topic = make_topic(partitions=2, instance_id="dup", on_error=errors)
    child = child_factory(shared=False)
    child.wait_line("assigned [0, 1]")
    collector = Collector()
    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(collector)
    assert consumer.wait_until_assigned(60).keys() == {0, 1}
    with topic.new_producer() as producer:
        producer.produce(Invalidate(seq=1))
    collector.wait_for_seq(1)
    rejoined = child.wait_line("error BrokerError FENCED_INSTANCE_ID")  # its next heartbeat
    assert "'dup'" in rejoined and "rejoins" in rejoined, rejoined
    fenced = child.wait_line("error BrokerError FENCED_INSTANCE_ID", 90, having="fatal error")
    assert "two live processes" in fenced and "'dup'" in fenced, fenced
    ours = errors.wait_for(BrokerError, 60)  # fenced once by the child's rejoin
    assert ours.code == 82 and "rejoins" in str(ours) and not ours.fatal, ours
    lines = child.finish()
    assert "state failed" in lines, lines
    assert "close raised BrokerError" in lines
    with topic.new_producer() as producer:
        producer.produce(Invalidate(seq=2))
    collector.wait_for_seq(2)
    assert consumer.status.state == "ready"
    consumer.close()


def test_a_static_member_fenced_once_rejoins_and_misses_nothing(
    make_topic: Callable[..., eventstream.Topic[Any]],
) -> None:
    """A fencing that is not repeated (here a client that joins as the same static member and
    goes away, as a failed-over coordinator does to a member by itself): the consumer replaces
    its client, says so once, and handles every event, the ones sent while it was fenced too."""
    errors = ErrorLog()
    topic = make_topic(partitions=2, instance_id="fenced-once", on_error=errors)
    collector = Collector()
    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(collector)
    assert consumer.wait_until_assigned(60).keys() == {0, 1}
    with topic.new_producer() as producer:
        producer.produce(*(Invalidate(seq=i) for i in range(1, 51)))
        collector.wait_for_seq(50)
        impersonate_static_member(topic, consumer.group_instance_id, 60)
        producer.produce(*(Invalidate(seq=i) for i in range(51, 101)))
        fenced = errors.wait_for(BrokerError, 60)
        assert fenced.code == 82 and not fenced.fatal and "rejoins" in str(fenced), fenced
        producer.produce(*(Invalidate(seq=i) for i in range(101, 151)))
        collector.wait_for_seqs(range(1, 151))
    assert consumer.wait_until_assigned(60).keys() == {0, 1}
    assert consumer.status.state == "ready"
    assert consumer.metrics().handled >= 150  # the replaced client's count is kept
    assert [e for e in errors.errors if isinstance(e, BrokerError)] == [fenced]
    consumer.close()


def test_processes_that_share_an_instance_id_on_purpose_split_the_partitions(
    make_topic: Callable[..., eventstream.Topic[Any]], child_factory: Callable[..., Child]
) -> None:
    topic = make_topic(partitions=2, instance_id="dup")
    child = child_factory(shared=True)
    child.wait_line("assigned")
    consumer = topic.new_consumer(start_from_beginning=True, shared=True)
    consumer.consume(Collector())
    wait_until(lambda: len(consumer.assignment()) == 1, "the partitions to be split")
    lines = child.finish()
    assert "state ready" in lines, lines
    assert not [x for x in lines if x.startswith("error")], lines
    assert "closed cleanly" in lines
    assert consumer.status.state == "ready"


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_both_group_protocols_deliver_every_event_in_order(
    make_topic: Callable[..., eventstream.Topic[Any]], protocol: str
) -> None:
    topic = make_topic(
        partitions=3,
        instance_id=f"proto-{protocol}",
        consumer_properties={"group.protocol": protocol},
    )
    collector = Collector()
    errors = ErrorLog()
    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(collector, with_metadata=True)
    assert consumer.wait_until_assigned(60).keys() == {0, 1, 2}
    with topic.new_producer(key=lambda e: str(e.seq % 7)) as producer:
        producer.produce(*(Invalidate(seq=i) for i in range(300)))
    received = collector.wait_for_count(300)
    by_key: dict[int, list[int]] = {}
    for r in received:
        by_key.setdefault(r.event.seq % 7, []).append(r.event.seq)
    assert all(seqs == sorted(seqs) for seqs in by_key.values())
    assert sorted(r.event.seq for r in received) == list(range(300))
    consumer.close()
    # Reopened in this process: resumes after what it handled, with no new events to read.
    again = Collector()
    reopened = topic.new_consumer(start_from_beginning=True)
    reopened.consume(again)
    positions = reopened.wait_until_assigned(60)
    assert sum(positions.values()) == 300
    assert not errors.errors
    assert not isinstance(reopened.status.error, BrokerError)
