"""A typed asyncio service: ``produce_async``, and an ``async def`` handler on the app's loop.

python examples/async_consumer.py                    # on an embedded cluster
python examples/async_consumer.py --brokers HOST:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid

from events_pb2 import UserChanged

from eventstream import TopicConfig, new_topic
from eventstream.testing import EmbeddedCluster


async def run(brokers: str, *, events: int = 100) -> int:
    config = TopicConfig(
        brokers=brokers, topic=f"example-async-{uuid.uuid4().hex[:8]}", instance_id="async-node"
    )
    received: list[int] = []
    all_received = asyncio.Event()

    async def on_change(event: UserChanged) -> None:
        # Runs on this loop, one event at a time, in partition order.
        received.append(event.version)
        if len(received) == events:
            all_received.set()

    with new_topic(UserChanged, config) as topic:
        # eventstream never creates topics implicitly; ensure_exists() blocks, so off the loop.
        await asyncio.to_thread(topic.ensure_exists, partitions=1)
        async with topic.new_consumer(start_from_beginning=True) as consumer:
            consumer.consume(on_change)
            async with topic.new_producer(key=lambda event: event.user_id) as producer:
                for version in range(1, events + 1):
                    await producer.produce_async(UserChanged(user_id="user-1", version=version))
            await asyncio.wait_for(all_received.wait(), timeout=60)
    in_order = received == list(range(1, events + 1))
    print(f"received {len(received)} events {'in order' if in_order else 'OUT OF ORDER'}")
    return 0 if in_order else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--brokers", help="bootstrap servers; default: an embedded cluster")
    args = parser.parse_args()
    if args.brokers:
        return asyncio.run(run(args.brokers))
    with EmbeddedCluster() as cluster:
        return asyncio.run(run(cluster.bootstrap_servers))


if __name__ == "__main__":
    sys.exit(main())
