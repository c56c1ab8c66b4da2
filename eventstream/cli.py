"""The ``eventstream`` command (also ``python -m eventstream``).

Exit codes: 0 success, 1 the command ran but its check failed, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import logging
import sys
import uuid
from collections.abc import Sequence

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from eventstream.demo import roundtrip
    from eventstream.testing import EmbeddedCluster

    topic = args.topic or f"eventstream-demo-{uuid.uuid4().hex[:8]}"
    if args.brokers:
        return roundtrip.run(args.brokers, events=args.events, topic=topic)
    with EmbeddedCluster(brokers=3) as cluster:
        print(f"embedded cluster (librdkafka mock, 3 brokers) at {cluster.bootstrap_servers}")
        return roundtrip.run(cluster.bootstrap_servers, events=args.events, topic=topic)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eventstream",
        description="Typed event streaming over Apache Kafka with protobuf payloads.",
        epilog="Exit codes: 0 success; 1 the command's check failed; 2 bad usage or config.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="produce typed events and consume them in two service instances",
        description="Produce typed events and consume them in two service instances, each in "
        "its own consumer group; print what each saw. Runs on an embedded cluster unless "
        "--brokers names a real one.",
    )
    demo.add_argument("--brokers", help="bootstrap servers of a real cluster (host:port,...)")
    demo.add_argument("--events", type=int, default=1000, help="how many events (default 1000)")
    demo.add_argument("--topic", help="topic name (default: a new random one)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from eventstream.errors import ConfigError

    try:
        status: int = args.run(args)
    except ConfigError as exc:
        print(f"eventstream: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
