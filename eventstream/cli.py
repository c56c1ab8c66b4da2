"""The ``eventstream`` command (also ``python -m eventstream``).

Exit codes: 0 success; 1 the command ran but its check failed (the demo did not converge, a
benchmark target was missed); 2 bad usage, configuration or event type; 3 the brokers could not
be reached or refused a request; 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import platform
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import confluent_kafka
from google.protobuf import json_format
from google.protobuf.message import Message

from eventstream.errors import BrokerError, ConfigError, EventStreamError

if TYPE_CHECKING:
    from eventstream.producer import Producer

__all__ = ["main"]

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_BROKER, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class UsageError(Exception):
    """Bad arguments: printed without a traceback, exit code 2."""


def version_text() -> tuple[str, bool]:
    """``eventstream <version> (<backend> backend, librdkafka <version>, ...)`` and whether the
    backend loaded; a backend that cannot load is named in the text instead."""
    from eventstream import __version__
    from eventstream._runtime.backend import load_backend

    where = f"confluent-kafka {confluent_kafka.__version__}, Python {platform.python_version()}"
    try:
        name = load_backend().name
    except ImportError as exc:
        return f"eventstream {__version__} (no backend loads: {exc}; {where})", False
    if name == "compiled":
        from eventstream import _core

        librdkafka = _core.LIBRDKAFKA_VERSION
    else:
        librdkafka = confluent_kafka.libversion()[0]
    return f"eventstream {__version__} ({name} backend, librdkafka {librdkafka}, {where})", True


class _VersionAction(argparse.Action):
    """``--version``: like argparse's, but the text (which loads the backend) is made only when
    asked for, and a backend that does not load makes it exit 1."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        text, loaded = version_text()
        print(text)
        parser.exit(EXIT_OK if loaded else EXIT_CHECK_FAILED)


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


log = logging.getLogger("eventstream.cli")

#: How long tail waits for the brokers' metadata before reporting them unreachable.
METADATA_TIMEOUT = 10.0
#: How long it goes on trying when every connection is refused (nothing listens there).
REFUSED_TIMEOUT = 3.0
#: It waits in slices this long, so that Ctrl+C is handled at once (librdkafka's wait is in C).
_WAIT_SLICE = 0.2


def _tail(args: argparse.Namespace) -> int:
    from eventstream._runtime.librdkafka import ClientLog

    event_type = load_event_type(args.type)
    type_name = event_type.DESCRIPTOR.full_name
    # No consumer group: tail assigns every partition itself and commits nothing, so looking at a
    # topic leaves no group behind and moves no service's offsets.
    with _interrupt_between_calls() as check_interrupt:
        consumer = confluent_kafka.Consumer(
            {
                "bootstrap.servers": args.brokers,
                "group.id": "eventstream-tail-unused",
                "enable.auto.commit": False,
                "logger": ClientLog(logging.getLogger("eventstream")),
            }
        )
        try:
            log.debug(
                "tail: waiting for the metadata of %s (up to %g s)", args.brokers, METADATA_TIMEOUT
            )
            topics = _metadata(consumer, args.brokers, args.topic, check=check_interrupt)
            partitions = topics[args.topic].partitions
            start = (
                confluent_kafka.OFFSET_BEGINNING
                if args.from_beginning
                else confluent_kafka.OFFSET_END
            )
            consumer.assign(
                [confluent_kafka.TopicPartition(args.topic, p, start) for p in partitions]
            )
            log.debug("tail: reading %d partitions of %s", len(partitions), args.topic)
            printed = 0
            while args.count is None or printed < args.count:
                check_interrupt()
                msg = consumer.poll(_WAIT_SLICE)
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
    value = msg.value()
    if value is None:  # a tombstone (a delete marker for its key), not an empty event
        record["event"] = None
        record["tombstone"] = True
        return record
    if headers.get("ce_type", type_name) != type_name:
        record["error"] = f"ce_type is {headers['ce_type']!r}, not {type_name!r}"
        return record
    try:
        event = event_type.FromString(value)
        record["event"] = json_format.MessageToDict(event, preserving_proto_field_name=True)
    except Exception as exc:
        record["error"] = f"value does not decode as {type_name}: {exc}"
    return record


def _metadata(
    client: Any,
    brokers: str,
    topic: str,
    timeout: float = METADATA_TIMEOUT,
    check: Callable[[], None] = lambda: None,
) -> Any:
    """All topics' metadata, asked for in short slices so that Ctrl+C interrupts the wait
    (``check`` raises KeyboardInterrupt between slices). Gives up after ``timeout``, or after
    :data:`REFUSED_TIMEOUT` if every connection fails."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        check()
        remaining = deadline - time.monotonic()
        try:
            topics = client.list_topics(timeout=max(0.01, min(_WAIT_SLICE, remaining))).topics
            break
        except confluent_kafka.KafkaException as exc:
            err = exc.args[0]
            waited = time.monotonic() - started
            refused = err.code() == confluent_kafka.KafkaError._TRANSPORT
            if err.code() in _STILL_CONNECTING and waited < (
                min(timeout, REFUSED_TIMEOUT) if refused else timeout
            ):
                continue
            reason = "no connection could be made" if refused else "no answer"
            raise BrokerError(
                f"cannot reach the brokers at {brokers} ({reason} within {waited:.0f} s): "
                f"{err.str()}",
                code=err.code(),
                name=err.name(),
                retriable=True,
            ) from None
    if topic not in topics:
        raise UsageError(f"topic {topic!r} does not exist on {brokers}")
    return topics


_STILL_CONNECTING = frozenset(
    {confluent_kafka.KafkaError._TIMED_OUT, confluent_kafka.KafkaError._TRANSPORT}
)


@contextlib.contextmanager
def _interrupt_between_calls() -> Generator[Callable[[], None]]:
    """Inside the block SIGINT only sets a flag; the check it gives raises KeyboardInterrupt
    between calls into confluent-kafka (each of which waits at most :data:`_WAIT_SLICE`).

    confluent-kafka's consumer runs its ``logger`` inside ``poll()`` and ``list_topics()``: a
    KeyboardInterrupt raised there (Python's default SIGINT handler fires in whatever Python code
    runs next) is lost, and the call then fails with ``SystemError: ... returned NULL without
    setting an exception``, which is what tail printed when Ctrl+C came while librdkafka logged
    its reconnects to brokers that had gone away. An interrupt that came in the block is raised
    when it ends. Off the main thread (``main()`` called by a test's thread) signals cannot be
    handled there, so the block changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    interrupted = threading.Event()

    def on_sigint(signum: int, frame: object) -> None:
        interrupted.set()

    def check() -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, previous)
    check()


def _produce(args: argparse.Namespace) -> int:
    from eventstream.config import TopicConfig
    from eventstream.topic import new_topic

    event_type = load_event_type(args.type)
    key_field: str | None = args.key_field
    if key_field is not None:
        _check_key_field(event_type, key_field)
    if args.json:
        lines = args.json
    else:
        if sys.stdin.isatty():
            print(
                "eventstream produce: reading events from stdin, one JSON object a line "
                "(end with Ctrl+D)",
                file=sys.stderr,
            )
        log.debug("produce: reading events from stdin, one JSON object a line")
        lines = [line for line in sys.stdin.read().splitlines() if line.strip()]
        if not lines:
            raise UsageError(
                "no events given: pass them as JSON arguments or one per line on stdin"
            )
    events: list[Message] = []
    for number, text in enumerate(lines, start=1):
        try:
            events.append(json_format.Parse(text, event_type()))
        except json_format.ParseError as exc:
            raise UsageError(f"event {number} is not a JSON {event_type.__name__}: {exc}") from None
    # No broker answering for a few seconds ends the command with that, in a CLI user's words,
    # instead of waiting out --timeout.
    config = TopicConfig(
        brokers=args.brokers,
        topic=args.topic,
        instance_id=args.source,
        disconnected_after=_NO_BROKER_AFTER,
    )
    with new_topic(event_type, config) as topic:
        producer = topic.new_producer(key=_field_key(key_field) if key_field else None)
        try:
            _produce_watched(producer, events, args.timeout, args.brokers)
        except KeyboardInterrupt:
            # main() says in one line that the command was interrupted and what that means for
            # the events; close()'s warnings about the call it cuts short would only repeat it.
            quiet = config.logger
            level = quiet.level
            quiet.setLevel(logging.ERROR)
            try:
                producer.close(timeout=0)
            finally:
                quiet.setLevel(level)
            raise
        except BaseException:
            producer.close(timeout=0)  # the failure is reported; don't wait for events in doubt
            raise
        producer.close(timeout=args.timeout)
    print(f"published {len(events)} events to {args.topic!r}", file=sys.stderr)
    return EXIT_OK


#: Seconds without any broker answering after which `produce` gives up (exit 3).
_NO_BROKER_AFTER = 3.0


def _produce_watched(
    producer: Producer[Message], events: list[Message], timeout: float, brokers: str
) -> None:
    """``producer.produce(*events, timeout=timeout)`` on a worker thread, watched from this one:
    when no broker answers for _NO_BROKER_AFTER seconds the call is abandoned and that is raised
    as a BrokerError; Ctrl+C here is a KeyboardInterrupt at once."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            producer.produce(*events, timeout=timeout)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, name="eventstream-produce", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.1)
        status = producer.status
        if worker.is_alive() and status.state == "disconnected":
            # The Health's message ends "... (last error: <librdkafka's reason>). librdkafka ...".
            reason = str(status.error).partition("(last error: ")[2].partition("). ")[0]
            raise BrokerError(
                f"no broker at {brokers} answers ({reason or status.error}); nothing was "
                "acknowledged. Check --brokers, and that the cluster runs and is reachable.",
                code=-187,
                name="_ALL_BROKERS_DOWN",
                retriable=True,
            )
    if outcome and outcome[0] is not None:
        raise outcome[0]


def _field_key(name: str) -> Callable[[Message], str]:
    def key(event: Message) -> str:
        return str(getattr(event, name))

    return key


def _check_key_field(event_type: type[Message], name: str) -> None:
    """``--key-field`` must name a singular scalar field of the event class."""
    fields = event_type.DESCRIPTOR.fields
    found = event_type.DESCRIPTOR.fields_by_name.get(name)
    known = ", ".join(f.name for f in fields) or "none"
    if found is None:
        raise UsageError(
            f"--key-field {name}: {event_type.__name__} has no field {name!r} (its fields: {known})"
        )
    # protobuf >= 6 has FieldDescriptor.is_repeated; older ones only label (3: repeated).
    repeated = bool(getattr(found, "is_repeated", getattr(found, "label", 0) == 3))
    if found.message_type is not None or repeated:
        raise UsageError(
            f"--key-field {name}: {event_type.__name__}.{name} is not a single scalar field, "
            "so it cannot be a key"
        )


#: The source checkout this module sits in, where the benchmark suite lives (if it is one).
_CHECKOUT = Path(__file__).resolve().parent.parent


def _bench(args: argparse.Namespace) -> int:
    checkout = _CHECKOUT
    if not (checkout / "benchmarks" / "__init__.py").exists():
        raise UsageError(
            "the benchmark suite ships with eventstream's source checkout, not the package: "
            "clone the repository and run `scripts/bench` (or `eventstream bench` from there)"
        )
    sys.path.insert(0, str(checkout))
    benchmarks = importlib.import_module("benchmarks")
    status: int = benchmarks.main(args.bench_args)
    return status


def _positive(kind: Callable[[str], float]) -> Callable[[str], Any]:
    """An argparse ``type``: a number of ``kind`` above 0, else argparse's usage error (exit 2)
    naming the flag. A demo of no instances, no events or no time would "converge" vacuously."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be a {'whole ' if kind is int else ''}number above 0, got {text!r}"
            ) from None
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be above 0, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eventstream",
        description="Typed event streaming over Apache Kafka with protobuf payloads.",
        epilog="Exit codes: 0 success; 1 a check failed (demo not converged, benchmark target "
        "missed); 2 bad usage, configuration or event type; 3 brokers unreachable or a broker "
        "error; 130 interrupted.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="print eventstream's version, its backend and librdkafka's version, and exit",
    )
    # -v also works after the subcommand; SUPPRESS keeps a -v given before it from being reset.
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log at DEBUG level"
    )
    commands = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        help="what to do (COMMAND --help for more)",
    )

    demo = commands.add_parser(
        "demo",
        parents=[verbose],
        help="cache invalidation across service instances, live (the main job)",
        description="Several service instances keep local caches; a writer updates the source "
        "of truth and publishes invalidation events at a fixed rate. Shows events/s, end-to-end "
        "latency and invalidations per instance, then checks that every instance converged "
        "(exit 1 if not). Runs on an embedded cluster (librdkafka's mock) unless --brokers "
        "names a real one.",
    )
    demo.add_argument("--brokers", help="bootstrap servers of a real cluster (host:port,...)")
    demo.add_argument("--topic", help="topic name (default: a new random one)")
    demo.add_argument(
        "--instances", type=_positive(int), default=3, help="service instances (default 3)"
    )
    demo.add_argument(
        "--rate", type=_positive(int), default=2000, help="events per second (default 2000)"
    )
    demo.add_argument(
        "--duration", type=_positive(float), default=10.0, help="seconds (default 10)"
    )
    demo.add_argument(
        "--keys", type=_positive(int), default=500, help="distinct cache keys (default 500)"
    )
    demo.add_argument("--partitions", type=_positive(int), default=4, help="partitions (default 4)")
    demo.set_defaults(run=_demo)

    tail = commands.add_parser(
        "tail",
        parents=[verbose],
        help="print a topic's events as JSON lines",
        description="Print events as JSON lines with their headers and coordinates. Joins no "
        "consumer group and commits nothing. A tombstone (a record without a value) prints as "
        '"event": null, "tombstone": true.',
    )
    tail.add_argument("--brokers", required=True, help="bootstrap servers (host:port,...)")
    tail.add_argument("--topic", required=True, help="the topic to read (it must exist)")
    tail.add_argument("--type", required=True, help="event class as package.module:Class")
    tail.add_argument("--from-beginning", action="store_true", help="start at the oldest event")
    tail.add_argument("--count", type=int, help="stop after N events (default: run until ^C)")
    tail.set_defaults(run=_tail)

    produce = commands.add_parser(
        "produce",
        parents=[verbose],
        help="publish events given as JSON",
        description="Publish events given as JSON (arguments, or one per line on stdin) and "
        "wait until the broker acknowledged them.",
    )
    produce.add_argument("--brokers", required=True, help="bootstrap servers (host:port,...)")
    produce.add_argument(
        "--topic",
        required=True,
        help="the topic to publish to (it must exist: see Topic.ensure_exists)",
    )
    produce.add_argument("--type", required=True, help="event class as package.module:Class")
    produce.add_argument(
        "--source",
        default="eventstream-cli",
        help="the instance id, sent as ce_source (default eventstream-cli)",
    )
    produce.add_argument(
        "--key-field", help="use this field of each event as its key (default: no key)"
    )
    produce.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the acks (default 30)"
    )
    produce.add_argument("json", nargs="*", help="events as JSON objects (default: stdin)")
    produce.set_defaults(run=_produce)

    bench = commands.add_parser(
        "bench",
        help="run the benchmark suite (from a source checkout)",
        description="Run benchmarks/ side by side with its peers; arguments after `bench` go to "
        "the suite (try `eventstream bench --help`).",
        add_help=False,
    )
    bench.add_argument(
        "bench_args", nargs=argparse.REMAINDER, help="arguments of the benchmark suite"
    )
    bench.set_defaults(run=_bench)
    return parser


#: What main() prints (after "eventstream COMMAND: ") when Ctrl+C ends a command.
_INTERRUPTED = {
    "produce": "interrupted; events not acknowledged by then may or may not have been written "
    "(tail the topic to see which were)",
}


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
        print(
            f"eventstream {args.command}: {_INTERRUPTED.get(args.command, 'interrupted')}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return status


if __name__ == "__main__":
    sys.exit(main())
