"""Run by test_fork.py: make a producer and a running consumer, fork, and in the child try to use
them (each use must raise ClosedError), make a new Topic there (it must work), and exit through the
normal interpreter shutdown. Prints one line per outcome; the parent process checks them."""

from __future__ import annotations

import os
import sys

from testevents_pb2 import Invalidate

import eventstream


def main(brokers: str, topic_name: str) -> int:
    received: list[int] = []
    config = eventstream.TopicConfig(brokers=brokers, topic=topic_name, instance_id="svc-fork")
    topic = eventstream.new_topic(Invalidate, config)
    topic.ensure_exists(partitions=1)
    producer = topic.new_producer()
    producer.produce(Invalidate(seq=1))
    consumer = topic.new_consumer(start_from_beginning=True)
    consumer.consume(lambda event: received.append(event.seq))
    consumer.wait_until_assigned(30)
    pid = os.fork()
    if pid == 0:
        try:
            producer.produce(Invalidate(seq=2))
            print("child: parent's producer produced", flush=True)
        except eventstream.ClosedError as exc:
            print("child: producer refused:", "fork" in str(exc), flush=True)
        try:
            consumer.wait_until_assigned(1)
            print("child: parent's consumer answered", flush=True)
        except eventstream.ClosedError as exc:
            print("child: consumer refused:", "fork" in str(exc), flush=True)
        print("child: assignment", consumer.assignment(), flush=True)
        own = eventstream.new_topic(Invalidate, config)
        own.new_producer().produce(Invalidate(seq=3))
        print("child: own producer ok", flush=True)
        own.close()
        topic.close()  # closes nothing that belongs to the parent
        print("child: closed", producer.status.state, consumer.status.state, flush=True)
        sys.exit(0)  # a normal shutdown: atexit handlers, the inherited clients garbage-collected
    _, status = os.waitpid(pid, 0)
    print("parent: child exit", os.waitstatus_to_exitcode(status), flush=True)
    producer.produce(Invalidate(seq=4))
    print("parent: producer ok", flush=True)
    topic.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
