"""A producer process for test_interrupts.py (run as a script; not collected by pytest): it
works until a real SIGINT arrives, which must end the call it lands in with exactly
KeyboardInterrupt; then the process must go on working.

Modes (the call the signal is meant for, in the main thread):
- ``produce``: calls of 50 keyed events, one after the other;
- ``flush``: ``flush()`` in a loop while a second thread produces;
- ``close``: ``close(60)`` of a producer whose events cannot be delivered (no broker answers).
- ``callback``: ``produce(timeout=60)`` of an event that cannot be delivered, the SIGINT sent
  by the child itself from inside a Python callback that librdkafka runs in that call (a log
  handler of librdkafka's lines: os.kill() runs the SIGINT handler before it returns, so the
  KeyboardInterrupt is raised inside the callback). On the compiled backend a blocking
  produce() serves its own callbacks, so this is sent from the main thread; the pure backend
  serves them on the producer's owner thread, from where the signal reaches the main thread
  waiting in produce().

It prints ``ready`` when the parent may send the signal, then ``raised <exception> in <call>``,
then the seqs of the calls that were acknowledged (``acked <first> <count>``), and ``ok``."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "protos"))

from testevents_pb2 import Invalidate

import eventstream
from eventstream._runtime.backend import backend

# A non-interactive shell starts background jobs with SIGINT ignored; Python then keeps it so.
signal.signal(signal.SIGINT, signal.default_int_handler)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(brokers: str, topic_name: str, mode: str) -> None:
    config = eventstream.TopicConfig(brokers=brokers, topic=topic_name, instance_id="sigint")
    topic = eventstream.new_topic(Invalidate, config)
    acked: list[tuple[int, int]] = []
    stop = threading.Event()
    if mode == "close":
        nowhere = eventstream.TopicConfig(
            brokers=f"127.0.0.1:{closed_port()}", topic="nowhere", instance_id="sigint"
        )
        target = eventstream.new_topic(Invalidate, nowhere).new_producer()
        # A call that gives up waiting leaves its event with librdkafka: close() has it to wait
        # for (the event is in doubt, not withdrawn).
        with contextlib.suppress(eventstream.ProduceTimeoutError):
            target.produce(Invalidate(seq=1), timeout=0.1)
    if mode == "callback":
        interrupter = _Interrupter()
        logging.getLogger("sigint-callback").addHandler(interrupter)
        logging.getLogger("sigint-callback").setLevel(logging.DEBUG)
        nowhere = eventstream.TopicConfig(
            brokers=f"127.0.0.1:{closed_port()}",
            topic="nowhere",
            instance_id="sigint",
            logger=logging.getLogger("sigint-callback"),
        )
        target = eventstream.new_topic(Invalidate, nowhere).new_producer()
    producer = topic.new_producer(key=lambda e: e.key)
    background: threading.Thread | None = None
    if mode == "flush":

        def keep_producing() -> None:
            seq = 1_000_000
            while not stop.is_set():
                producer.produce(*(Invalidate(key=f"b{i % 5}", seq=seq + i) for i in range(20)))
                acked.append((seq, 20))
                seq += 20

        background = threading.Thread(target=keep_producing, daemon=True)
        background.start()
    print("ready", flush=True)
    call = mode
    try:
        if mode == "produce":
            seq = 0
            while True:
                producer.produce(*(Invalidate(key=f"k{i % 7}", seq=seq + i) for i in range(50)))
                acked.append((seq, 50))
                seq += 50
        elif mode == "flush":
            while True:
                producer.flush(5)
        elif mode == "callback":
            interrupter.armed = True
            try:
                target.produce(Invalidate(seq=1), timeout=60)
            finally:
                interrupter.armed = False
                print("signalled", interrupter.signalled, flush=True)
            call = "produce returned"
        else:
            target.close(60)  # waits: nothing can be delivered
            call = "close returned"
    except BaseException as exc:
        print("raised", type(exc).__name__, "in", call, flush=True)
    stop.set()
    if mode == "callback":
        target.close(0)
    if background is not None:
        background.join(30)
    # The process goes on: the producer still works (unless it was the one closed).
    producer.produce(Invalidate(key="after", seq=-1))
    acked.append((-1, 1))
    producer.close(30)
    topic.close()
    for first, count in acked:
        print("acked", first, count, flush=True)
    print("ok", flush=True)


class _Interrupter(logging.Handler):
    """Once armed, sends SIGINT to this process from the first librdkafka log line emitted on
    the main thread (any thread on the pure backend, whose callbacks never run there)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.armed = False
        self.signalled = "never"
        self.any_thread = backend() == "pure"

    def emit(self, record: logging.LogRecord) -> None:
        on_main = threading.current_thread() is threading.main_thread()
        if not self.armed or not record.name.endswith(".librdkafka"):
            return
        if not (on_main or self.any_thread):
            return
        self.armed = False
        self.signalled = "from the main thread" if on_main else "from another thread"
        os.kill(os.getpid(), signal.SIGINT)  # on the main thread: raises KeyboardInterrupt here


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
