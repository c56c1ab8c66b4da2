"""The ``eventstream`` command (also ``python -m eventstream``).

Exit codes: 0 success; 1 the command ran but its check failed (the demo did not converge, a
benchmark target was missed); 2 bad usage, configuration or event type; 3 the brokers could not
be reached or refused a request; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import confluent_kafka
from google.protobuf import json_format
from google.protobuf.message import Message

from eventstream.errors import BrokerError, ConfigError, EventStreamError

__all__ = ["main"]

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_BROKER, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class UsageError(Exception):
    """Bad arguments: printed without a traceback, exit code 2."""


def load_event_type(path: str) -> type[Message]:
    """``package.module:Class`` -> the generated protobuf class. Raises :class:`UsageError`."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise UsageError(f"--type must look like package.module:Class, got {path!r}")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: modules of the current directory are found
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(
            f"--type {path}: cannot import {module_name!r} ({exc}); is it on PYTHONPATH?"
        ) from None
    found: object = module
    for part in attr.split("."):
        found = getattr(found, part, None)
        if found is None:
            raise UsageError(f"--type {path}: {module_name!r} has no attribute {attr!r}")
    if not (isinstance(found, type) and issubclass(found, Message)):
        raise UsageError(f"--type {path}: {found!r} is not a protobuf message class")
    return found


def _demo(args: argparse.Namespace) -> int:
    from eventstream.demo.cache import DemoSettings, run
    from eventstream.testing import EmbeddedCluster

    def settings(brokers: str, **extra: Any) -> DemoSettings:
        return DemoSettings(
            brokers=brokers,
            topic=args.topic or f"eventstream-demo-{uuid.uuid4().hex[:8]}",
            instances=args.instances,
            rate=args.rate,
            duration=args.duration,
            keys=args.keys,
            partitions=args.partitions,
            **extra,
        )

    if args.brokers:
        return run(settings(args.brokers))
    with EmbeddedCluster(brokers=3) as cluster:
        print(f"embedded cluster (librdkafka's mock, 3 brokers) at {cluster.bootstrap_servers}")
        # The mock broker answers a fetch only when fetch.wait.max.ms expires, even when data
        # arrives meanwhile (Apache Kafka answers at once): keep the wait short there.
        fast_fetch = {"fetch.wait.max.ms": "5"}
        return run(settings(cluster.bootstrap_servers, consumer_properties=fast_fetch))


def _tail(args: argparse.Namespace) -> int:
    from eventstream.librdkafka_log import ClientLog

    event_type = load_event_type(args.type)
    type_name = event_type.DESCRIPTOR.full_name
    # No consumer group: tail assigns every partition itself and commits nothing, so looking at a
    # topic leaves no group behind and moves no service's offsets.
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": args.brokers,
            "group.id": "eventstream-tail-unused",
            "enable.auto.commit": False,
            "logger": ClientLog(logging.getLogger("eventstream")),
        }
    )
    try:
        topics = _metadata(consumer, args.brokers, args.topic)
        partitions = topics[args.topic].partitions
        start = (
            confluent_kafka.OFFSET_BEGINNING if args.from_beginning else confluent_kafka.OFFSET_END
        )
        consumer.assign([confluent_kafka.TopicPartition(args.topic, p, start) for p in partitions])
        printed = 0
        while args.count is None or printed < args.count:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error() is not None:
                print(f"eventstream tail: {msg.error()}", file=sys.stderr)
                continue
            print(json.dumps(_record(msg, event_type, type_name)), flush=True)
            printed += 1
    finally:
        consumer.close()
    return EXIT_OK


def _record(
    msg: confluent_kafka.Message, event_type: type[Message], type_name: str
) -> dict[str, Any]:
    raw = cast("list[tuple[str, bytes | None]]", msg.headers() or [])
    key = msg.key()
    headers: dict[str, str | None] = {
        k: (v.decode(errors="replace") if v is not None else None) for k, v in raw
    }
    record: dict[str, Any] = {
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "timestamp_ms": msg.timestamp()[1],
        "key": key.decode(errors="replace") if isinstance(key, bytes) else key,
        "headers": headers,
    }
    if headers.get("ce_type", type_name) != type_name:
        record["error"] = f"ce_type is {headers['ce_type']!r}, not {type_name!r}"
        return record
    try:
        event = event_type.FromString(msg.value() or b"")
        record["event"] = json_format.MessageToDict(event, preserving_proto_field_name=True)
    except Exception as exc:
        record["error"] = f"value does not decode as {type_name}: {exc}"
    return record


def _metadata(client: Any, brokers: str, topic: str) -> Any:
    try:
        topics = client.list_topics(timeout=10).topics
    except confluent_kafka.KafkaException as exc:
        err = exc.args[0]
        raise BrokerError(
            f"cannot reach the brokers at {brokers}: {err.str()}",
            code=err.code(),
            name=err.name(),
            retriable=True,
        ) from None
    if topic not in topics:
        raise UsageError(f"topic {topic!r} does not exist on {brokers}")
    return topics


def _produce(args: argparse.Namespace) -> int:
    from eventstream.config import TopicConfig
    from eventstream.topic import new_topic

    event_type = load_event_type(args.type)
    lines = args.json or [line for line in sys.stdin.read().splitlines() if line.strip()]
    events: list[Message] = []
    for number, text in enumerate(lines, start=1):
        try:
            events.append(json_format.Parse(text, event_type()))
        except json_format.ParseError as exc:
            raise UsageError(f"event {number} is not a JSON {event_type.__name__}: {exc}") from None
    config = TopicConfig(brokers=args.brokers, topic=args.topic, instance_id=args.source)
    key_field = args.key_field
    with new_topic(event_type, config) as topic:

        def key(event: Message) -> str:
            return str(getattr(event, key_field))

        producer = topic.new_producer(key=key if key_field else None)
        try:
            producer.produce(*events, timeout=args.timeout)
        except BaseException:
            producer.close(timeout=0)  # the failure is reported; don't wait for events in doubt
            raise
        producer.close(timeout=args.timeout)
    print(f"published {len(events)} events to {args.topic!r}", file=sys.stderr)
    return EXIT_OK


def _bench(args: argparse.Namespace) -> int:
    checkout = Path(__file__).resolve().parent.parent
    if not (checkout / "benchmarks" / "__init__.py").exists():
        raise UsageError(
            "the benchmark suite ships with eventstream's source checkout, not the package: "
            "clone the repository and run `scripts/bench` (or `eventstream bench` from there)"
        )
    sys.path.insert(0, str(checkout))
    benchmarks = importlib.import_module("benchmarks")
    status: int = benchmarks.main(args.bench_args)
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eventstream",
        description="Typed event streaming over Apache Kafka with protobuf payloads.",
        epilog="Exit codes: 0 success; 1 a check failed (demo not converged, benchmark target "
        "missed); 2 bad usage, configuration or event type; 3 brokers unreachable or a broker "
        "error; 130 interrupted.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="cache invalidation across service instances, live (the main job)",
        description="Several service instances keep local caches; a writer updates the source "
        "of truth and publishes invalidation events at a fixed rate. Shows events/s, end-to-end "
        "latency and invalidations per instance, then checks that every instance converged "
        "(exit 1 if not). Runs on an embedded cluster (librdkafka's mock) unless --brokers "
        "names a real one.",
    )
    demo.add_argument("--brokers", help="bootstrap servers of a real cluster (host:port,...)")
    demo.add_argument("--topic", help="topic name (default: a new random one)")
    demo.add_argument("--instances", type=int, default=3, help="service instances (default 3)")
    demo.add_argument("--rate", type=int, default=2000, help="events per second (default 2000)")
    demo.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
    demo.add_argument("--keys", type=int, default=500, help="distinct cache keys (default 500)")
    demo.add_argument("--partitions", type=int, default=4, help="partitions (default 4)")
    demo.set_defaults(run=_demo)

    tail = commands.add_parser(
        "tail",
        help="print a topic's events as JSON lines",
        description="Print events as JSON lines with their headers and coordinates. Joins no "
        "consumer group and commits nothing.",
    )
    tail.add_argument("--brokers", required=True, help="bootstrap servers (host:port,...)")
    tail.add_argument("--topic", required=True)
    tail.add_argument("--type", required=True, help="event class as package.module:Class")
    tail.add_argument("--from-beginning", action="store_true", help="start at the oldest event")
    tail.add_argument("--count", type=int, help="stop after N events (default: run until ^C)")
    tail.set_defaults(run=_tail)

    produce = commands.add_parser(
        "produce",
        help="publish events given as JSON",
        description="Publish events given as JSON (arguments, or one per line on stdin) and "
        "wait until the broker acknowledged them.",
    )
    produce.add_argument("--brokers", required=True, help="bootstrap servers (host:port,...)")
    produce.add_argument("--topic", required=True)
    produce.add_argument("--type", required=True, help="event class as package.module:Class")
    produce.add_argument("--source", default="eventstream-cli", help="ce_source (instance id)")
    produce.add_argument("--key-field", help="use this field of each event as its key")
    produce.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    produce.add_argument("json", nargs="*", help="events as JSON objects (default: stdin)")
    produce.set_defaults(run=_produce)

    bench = commands.add_parser(
        "bench",
        help="run the benchmark suite (from a source checkout)",
        description="Run benchmarks/ side by side with its peers; arguments after `bench` go to "
        "the suite (try `eventstream bench --help`).",
        add_help=False,
    )
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench.set_defaults(run=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    # `bench` hands everything after it to the suite's own parser (including --help).
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        args.bench_args = [*rest, *args.bench_args]
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        status: int = args.run(args)
    except (UsageError, ConfigError, TypeError) as exc:
        print(f"eventstream {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (BrokerError, EventStreamError) as exc:
        print(f"eventstream {args.command}: {exc}", file=sys.stderr)
        return EXIT_BROKER
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return status


if __name__ == "__main__":
    sys.exit(main())
