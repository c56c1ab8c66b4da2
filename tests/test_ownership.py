"""Who frees a client: its owner thread, never a finalizer. Producers dropped unclosed, collected
by a garbage-collector pass on any thread (their own owner thread's included), closed from a
signal handler or under load: none may crash, hang, or leave a thread behind.

The cases that could crash the interpreter run in a child process (``python -c``), so that a
crash fails the test instead of killing pytest; under .ci/sanitizer the child's AddressSanitizer
report is read as well."""

from __future__ import annotations

import gc
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import closed_port, sanitizer_report, wait_until
from testevents_pb2 import Invalidate

import eventstream
from eventstream import ClosedError, ProduceError

pytestmark = pytest.mark.timeout(180)

HERE = Path(__file__).resolve().parent


def run_child(code: str, *args: str) -> list[str]:
    """Run ``code`` in a fresh interpreter (this session's backend and package); it must exit 0.
    Returns its output lines."""
    env = dict(os.environ)
    package_root = str(Path(eventstream.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([package_root, str(HERE / "protos"), str(HERE)])
    with subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-c", textwrap.dedent(code), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            stdout, stderr = child.communicate(timeout=150)
        finally:
            child.kill()
    output = f"exit {child.returncode}\n{stdout}\n{stderr}\n{sanitizer_report(child.pid)}"
    assert child.returncode == 0, output
    return stdout.splitlines()


GC_ON_THE_OWNER_THREAD = """
import gc, sys, threading, warnings, weakref
from testevents_pb2 import Invalidate
import eventstream
import eventstream.topic

brokers, topic_name = sys.argv[1], sys.argv[2]
warned = []
warnings.simplefilter("always")
warnings.showwarning = lambda message, category, *rest: warned.append(category.__name__)


class Service:
    # The producer's key function is a bound method of an object that holds the producer: a
    # cycle only the garbage collector frees.
    def __init__(self, topic):
        self.topic = topic
        self.producer = topic.new_producer(key=self.key)

    def key(self, event):
        return event.key


collected = threading.Event()
dropped = threading.Event()
where = []
tick = eventstream.topic.statistics_tick


def tick_then_collect(*args, **kwargs):
    # The producer's statistics tick runs on its owner thread: once the producer is dropped, the
    # next tick runs a collection there (as any allocation there may, in a real program).
    tick(*args, **kwargs)
    if dropped.is_set():
        gc.collect()


eventstream.topic.statistics_tick = tick_then_collect


def gone():
    where.append(threading.current_thread() is threading.main_thread())
    collected.set()


config = eventstream.TopicConfig(
    brokers=brokers, topic=topic_name, instance_id="gc-owner", metrics=True
)
service = Service(eventstream.new_topic(Invalidate, config))
service.producer.produce(Invalidate(key="k", seq=1))
weakref.finalize(service.producer, gone)
service.topic._children.clear()
gc.disable()  # no automatic collection on the main thread
del service
dropped.set()
if not collected.wait(60):
    raise SystemExit("the dropped producer was never collected")
gc.enable()
print("collected on", "the main thread" if where[0] else "another thread")
print("warned", warned)
with eventstream.new_topic(Invalidate, config) as topic:  # the process goes on working
    with topic.new_producer() as producer:
        producer.produce(Invalidate(key="k", seq=2))
print("ok")
"""


def test_a_producer_collected_on_its_own_owner_thread_neither_crashes_nor_leaks(
    kafka_bootstrap: str, topic_name: str, make_topic: Callable[..., eventstream.Topic[Any]]
) -> None:
    make_topic(partitions=1)
    lines = run_child(GC_ON_THE_OWNER_THREAD, kafka_bootstrap, topic_name)
    assert lines[-1] == "ok", lines
    assert "collected on another thread" in lines, lines
    assert any("ResourceWarning" in line for line in lines), lines


CLOSE_FROM_A_SIGNAL_HANDLER = """
import signal, sys, threading, time
from testevents_pb2 import Invalidate
import eventstream

port = sys.argv[1]
config = eventstream.TopicConfig(
    brokers=f"127.0.0.1:{port}", topic="nowhere", instance_id="sig-close", delivery_timeout=60
)
topic = eventstream.new_topic(Invalidate, config)
producer = topic.new_producer()
took = []


def on_term(signum, frame):
    started = time.monotonic()
    producer.close(timeout=1.0)
    took.append(time.monotonic() - started)


signal.signal(signal.SIGTERM, on_term)
threading.Timer(0.5, lambda: signal.raise_signal(signal.SIGTERM)).start()
try:
    producer.produce(Invalidate(seq=1))  # no broker: it waits until the handler closes
    print("produce returned")
except eventstream.ProduceError as exc:
    print("produce raised", type(exc).__name__, exc.failed, exc.in_doubt)
print("close took", round(took[0], 2))
print("state", producer.status.state)
topic.close()
print("ok")
"""


def test_close_from_a_signal_handler_during_produce_returns_within_its_timeout() -> None:
    lines = run_child(CLOSE_FROM_A_SIGNAL_HANDLER, str(closed_port()))
    assert lines[-1] == "ok", lines
    raised = next(line for line in lines if line.startswith("produce "))
    assert raised == "produce raised ProduceError 1 0", lines  # purged before it was sent
    took = float(next(line for line in lines if line.startswith("close took")).split()[-1])
    assert took < 5, f"close() from the signal handler took {took} s for a 1 s timeout"
    assert "state closed" in lines, lines


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.parametrize("metrics", [False, True], ids=["plain", "metrics"])
def test_dropped_producers_end_their_threads(metrics: bool) -> None:
    """Ten producers made and dropped without close(), with and without metrics (whose
    reporter points back at its producer): every thread they started ends."""
    config = eventstream.TopicConfig(
        brokers=f"127.0.0.1:{closed_port()}", topic="dropped", instance_id="drop", metrics=metrics
    )
    before = _threads()
    for _ in range(10):
        topic = eventstream.new_topic(Invalidate, config)
        producer = topic.new_producer()
        del producer
        topic._children.clear()
        del topic
    gc.collect()
    wait_until(
        lambda: _threads() <= before, f"the threads to end (now {_threads()}, before {before})", 60
    )


def test_close_racing_many_callers_returns_and_frees_them_all(
    make_topic: Callable[..., eventstream.Topic[Any]],
) -> None:
    """32 threads produce in a loop while close(timeout=0) comes at a random moment: close
    returns, every call in flight ends acknowledged or failed, and every caller's next call is
    refused with ClosedError."""
    topic = make_topic(partitions=3)
    for round_ in range(8):
        producer = topic.new_producer()
        outcomes: dict[int, list[str]] = {}

        def call(
            index: int,
            producer: eventstream.Producer[Invalidate] = producer,
            outcomes: dict[int, list[str]] = outcomes,
        ) -> None:
            mine = outcomes.setdefault(index, [])
            while True:  # until the close refuses a call: nothing else ends the loop
                try:
                    producer.produce(*(Invalidate(seq=i) for i in range(20)), timeout=30)
                    mine.append("sent")
                except ClosedError:
                    mine.append("closed")
                    return
                except ProduceError:
                    mine.append("failed")

        callers = [threading.Thread(target=call, args=(i,), daemon=True) for i in range(32)]
        for caller in callers:
            caller.start()
        time.sleep(random.uniform(0.0, 0.3))  # the moment of the close is the random variable
        closer = threading.Thread(target=producer.close, args=(0,), daemon=True)
        closer.start()
        closer.join(30)
        assert not closer.is_alive(), f"round {round_}: close(timeout=0) never returned"
        for caller in callers:
            caller.join(30)
        stuck = sum(caller.is_alive() for caller in callers)
        assert not stuck, f"round {round_}: {stuck} produce calls never returned after close()"
        not_refused = [i for i, mine in outcomes.items() if mine[-1:] != ["closed"]]
        assert not not_refused, f"round {round_}: callers {not_refused} were never refused"
