"""A consumer process for test_crash.py (run as a script, not collected by pytest).

Consumes ``--topic`` as ``--instance`` from the beginning and appends the ``seq`` of every event it
handles to ``--out``, one line per event, written and fsynced before the handler returns (the
offset is stored only after that). ``--delay`` slows the handler so that a SIGKILL lands
mid-stream. ``--session-timeout-ms`` (default 6000; 0 leaves librdkafka's 45 s) is the group
session. SIGTERM closes the consumer cleanly.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--instance", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--session-timeout-ms", type=int, default=6000)
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent / "protos"))
    from testevents_pb2 import Invalidate

    import eventstream

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    out = os.open(args.out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def handle(event: Invalidate) -> None:
        os.write(out, f"{event.seq}\n".encode())
        os.fsync(out)
        if args.delay:
            time.sleep(args.delay)  # a slow handler, so that the kill lands mid-stream

    # The killed member never leaves its group: with a short session (the broker's minimum is
    # 6 s) the broker evicts it quickly, should the restarted process not simply take its place
    # as the same static member.
    session: dict[str, str | int | float | bool] = {}
    if args.session_timeout_ms:
        session = {"session.timeout.ms": args.session_timeout_ms, "heartbeat.interval.ms": 500}
    config = eventstream.TopicConfig(
        brokers=args.brokers,
        topic=args.topic,
        instance_id=args.instance,
        consumer_properties=session,
    )
    with eventstream.new_topic(Invalidate, config) as topic:
        consumer = topic.new_consumer(start_from_beginning=True)
        consumer.consume(handle)
        print(f"consuming with the {eventstream.backend()} backend", flush=True)
        while not stop.wait(0.2):
            pass
    os.close(out)


if __name__ == "__main__":
    main()
