"""The boundary between the public floor and the two backends, and the one place that picks one.

Data crosses this boundary once per call (a whole batch of events), never once per event. Both
backends, ``eventstream._core`` (compiled, over librdkafka) and ``eventstream._pure`` (over
confluent-kafka's Python API), satisfy :class:`Backend`; the test suite runs against each of them.

Which one a process uses is decided once, by :func:`load_backend`:

- ``EVENTSTREAM_NO_EXTENSIONS=1`` selects the pure-Python backend;
- otherwise an installation built with the compiled backend (every Linux build, and the Linux
  wheels) uses it, and failing to import it is an ``ImportError``: it is never silently replaced;
- an installation built without it (on a platform other than Linux, or with
  ``EVENTSTREAM_NO_EXTENSIONS=1`` at build time; setup.py records which in
  ``eventstream/_build_info.py``) uses the pure-Python backend and says so in one INFO line on the
  ``eventstream`` logger; ``EVENTSTREAM_REQUIRE_COMPILED=1`` makes that an ``ImportError`` instead.

A source checkout used without being installed (no ``_build_info``) expects the compiled backend.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from google.protobuf.message import Message

from eventstream._runtime.health import Health
from eventstream._runtime.records import PartitionChange
from eventstream.errors import GapError

if TYPE_CHECKING:
    from eventstream._runtime.failures.policy import Failures
    from eventstream._runtime.records import Deliveries
    from eventstream._runtime.telemetry.metrics import Histogram, ProducerMetrics

__all__ = [
    "Backend",
    "BackendName",
    "ConsumerListener",
    "ConsumerSpec",
    "Dispatch",
    "DispatchAbandoned",
    "NativeConsumer",
    "NativeProducer",
    "PendingEnqueue",
    "ProducerSpec",
    "backend",
    "load_backend",
]

BackendName = Literal["compiled", "pure"]

#: A key function as the backend sees it: event -> partition key (``None``: no key).
KeyFunction = Callable[[Any], "str | bytes | None"]


@dataclass(frozen=True, slots=True)
class ProducerSpec:
    """Everything a backend needs to build a producer. Built by the public floor, read-only."""

    #: Final librdkafka properties (strings), bootstrap and our defaults included.
    properties: Mapping[str, str]
    topic: str
    #: The exact generated class every event of a call must be (``type(event) is event_type``).
    event_type: type[Message]
    #: Value of the ``ce_type`` header: the protobuf full name of ``event_type``.
    type_name: str
    #: Value of the ``ce_source`` header: the producing instance id.
    source: str
    #: Optional key function; ``None`` produces unkeyed events.
    key: KeyFunction | None
    logger: logging.Logger
    #: Where the producer reports its connection state and errors (see eventstream._runtime.health).
    health: Health
    #: Called with librdkafka's statistics JSON (statistics.interval.ms): the shared layer's
    #: tick (the Health reads the brokers' state from it; the reporting what it was asked for).
    statistics: Callable[[str], None] | None = None
    #: The largest key + value an event may have, its headers (the longest ce_id included)
    #: and librdkafka's per-record overhead taken from ``message.max.bytes`` (which is also
    #: given, for the error's words). A call's extra headers come off it too (wire.py).
    payload_budget: int = 1_000_000
    max_message_bytes: int = 1_000_000


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """Everything a consumer needs. Built by the public floor, read-only."""

    #: Final librdkafka properties: group.id, auto.offset.reset, enable.auto.offset.store=false, ...
    properties: Mapping[str, str]
    topic: str
    event_type: type[Message]
    type_name: str
    logger: logging.Logger
    #: Builds the metadata handed to handlers (``eventstream.EventMetadata``), called as
    #: ``metadata_factory(topic, partition, offset, key, timestamp_ms, source, event_id)``.
    metadata_factory: Callable[..., Any]
    #: Where the consumer reports its connection state, failures and gaps.
    health: Health
    #: Where a group that never committed an offset of the topic starts: the oldest retained
    #: event, or the end. (A partition such a group has not seen yet, e.g. one added to the
    #: topic, starts at its first event.)
    start_from_beginning: bool = False
    #: Every assignment starts at the end of its partitions, whatever was committed (a cache,
    #: which is empty when it is assigned partitions, needs nothing older).
    from_end: bool = False
    #: Time handlers and end-to-end latency (TopicConfig.metrics): a clock read per event.
    timed: bool = False
    #: What else wants librdkafka's statistics, parsed (metrics, on_statistics), if anything.
    statistics: Callable[[Mapping[str, Any]], None] | None = None
    #: Read the W3C trace context headers into the metadata (TopicConfig.telemetry): the
    #: factory is then called with ``traceparent, tracestate`` too.
    trace_headers: bool = False


@dataclass(frozen=True, slots=True)
class Dispatch:
    """How the consumer's hot loop hands events to the application.

    ``mode == "event"``: ``handler(event)``, or ``handler(event, metadata)`` when ``with_metadata``,
    once per event on the poll thread. An ``Exception`` from the handler goes to
    ``failures.failed`` (which retries as the policy says, then gives up: logged summarized,
    dead-lettered), and the offset is stored either way. Records that cannot reach the handler
    go to ``failures.skip``.

    ``mode == "batch"``: ``handler(events, metadatas)`` once per polled batch, in partition order;
    ``metadatas`` is always given. The handler retries per event itself (the async runner, with
    ``failures.failed_async``) and returns the events that still failed as
    ``(index, exception, attempts)`` (each goes to ``failures.gave_up``); an exception escaping it
    is logged and the batch's offsets are stored anyway (never stall a partition).

    In both modes the offset of an event is stored only after the handler returned for it.
    A ``BaseException`` that is not an ``Exception`` (KeyboardInterrupt, SystemExit, or
    ``DispatchAbandoned``) stops the poll loop *without* storing the offsets of the events it
    interrupted (the whole batch in batch mode); ``close()`` re-raises it, except
    ``DispatchAbandoned``, which is raised on purpose to give up a batch at close.
    """

    handler: Callable[..., object]
    mode: Literal["event", "batch"]
    with_metadata: bool
    #: What becomes of records that cannot reach the handler and of handlers that fail.
    failures: Failures
    #: Called on the poll thread, never while a handler runs, after partitions were assigned
    #: (before any of their events is handled), revoked or lost (after they were unassigned).
    on_rebalance: Callable[[PartitionChange], object] | None = None
    #: Called on the poll thread with every GapError the consumer reports (events it will never
    #: handle: deleted by retention, or lost with a recreated topic).
    on_gap: Callable[[GapError], object] | None = None
    #: Called on the poll thread, once, when consumption stopped for good other than by
    #: ``close()`` (a fatal or authentication error, a handler's BaseException, ``fail()``),
    #: with what close() will raise, before the consumer leaves its group.
    on_failure: Callable[[BaseException], object] | None = None


class DispatchAbandoned(BaseException):
    """Raised to give up a batch unprocessed (its offsets are not stored)."""


class ConsumerListener(Protocol):
    """What a consumer's hot loop reports to the shared layer (eventstream._runtime.consuming),
    always on the consumer's poll thread, from inside ``poll()``. Nothing here raises into the
    caller except :meth:`record_error`, whose exception ends the poll loop."""

    def assign(self, partitions: Sequence[int]) -> Mapping[int, int] | None:
        """New ``partitions`` are being assigned: where each starts (``None``: where librdkafka
        says). Called before they are assigned; may call the consumer's ``committed`` and
        ``watermarks``."""
        ...

    def assigned(self, partitions: Sequence[int], starts: Mapping[int, int] | None) -> None:
        """``partitions`` were assigned (at ``starts``)."""
        ...

    def unassigned(self, partitions: Sequence[int], lost: bool) -> None:
        """``partitions`` were unassigned: revoked in a rebalance, or ``lost``."""
        ...

    def client_error(self, code: int, name: str, reason: str, fatal: bool) -> None:
        """librdkafka reported an error for the whole client (its error callback)."""
        ...

    def record_error(self, code: int, name: str, reason: str, fatal: bool) -> None:
        """An error delivered in place of a record (for a fatal error: its cause, as
        ``rd_kafka_fatal_error()`` gives it). Raises what ends the poll loop."""
        ...

    def statistics(self, raw: str) -> None:
        """librdkafka's statistics JSON (statistics.interval.ms)."""
        ...

    def log_warning(self, facility: str, text: str) -> None:
        """A WARNING-or-worse line of librdkafka's log (every line goes to the DEBUG log)."""
        ...

    def resumed(self, partition: int, offset: int) -> None:
        """The first record read of ``partition`` after :meth:`NativeConsumer.watch_resumes`."""
        ...


class NativeConsumer(Protocol):
    """A backend's consumer: the librdkafka handle and the hot loop over it (poll, check headers,
    decode, dispatch, store offsets). Made by :meth:`Backend.new_consumer`; nothing connects
    until :meth:`open`. Its poll thread is the shared layer's: every method but
    :meth:`positions`, :meth:`stop`, :meth:`stopping`, :meth:`handling`,
    :meth:`dispatching_since` and :meth:`counts` runs on it."""

    def open(self, dispatch: Dispatch) -> None:
        """Create the client and subscribe. Raises ConfigError for a configuration librdkafka
        refuses."""
        ...

    def poll(self, wait_ms: int) -> None:
        """One round: wait up to ``wait_ms`` for a first record, take what else is there (up to a
        batch), dispatch it, store the offsets of what was handled, move the positions. Callbacks
        (rebalance, errors, statistics, logs) are served inside. A BaseException from a handler
        propagates."""
        ...

    def committed(self, partitions: Sequence[int], timeout_ms: int) -> list[int]:
        """The group's committed offsets of ``partitions`` (negative: none). Raises BrokerError."""
        ...

    def watermarks(self, partitions: Sequence[int], timeout_ms: int) -> tuple[list[int], list[int]]:
        """The oldest retained and the next offset of each of ``partitions``, asked of the
        leaders. Raises BrokerError."""
        ...

    def store(self, offsets: Mapping[int, int]) -> None:
        """Store ``{partition: next offset}`` for the next commit (assigned partitions only)."""
        ...

    def commit(self, offsets: Mapping[int, int]) -> None:
        """Commit ``{partition: next offset}`` now (asynchronously), even below what was
        committed before (librdkafka's auto-commit skips that after a move backwards)."""
        ...

    def seek(self, offsets: Mapping[int, int]) -> None:
        """Move assigned partitions to ``{partition: offset}`` and make those their positions."""
        ...

    def watch_resumes(self, on: bool) -> None:
        """Report the first record of each partition to ``listener.resumed`` while on."""
        ...

    def leave(self, slice_ms: int) -> bool:
        """One step of closing: commit, revoke, leave the group. True once closed."""
        ...

    def destroy(self, left: bool) -> None:
        """Destroy the handle (``left``: after a clean :meth:`leave`). May block when no broker
        answers."""
        ...

    def positions(self) -> dict[int, int]:
        """``{partition: next offset}`` of the assigned partitions (moved after each batch);
        negative where not known. Any thread, no network."""
        ...

    def stop(self) -> None:
        """Ask the hot loop to stop after the running handler. Any thread."""
        ...

    def stopping(self) -> bool:
        """Whether :meth:`stop` was called. Any thread."""
        ...

    def handling(self) -> tuple[int, int] | None:
        """``(partition, offset)`` of the event whose handler runs now, if any. Any thread."""
        ...

    def dispatching_since(self) -> float:
        """When (``time.monotonic()``) the hot loop last came back from librdkafka to dispatch
        a batch; 0 while it is inside librdkafka (where the group's poll interval is served).
        Any thread."""
        ...

    def counts(self) -> tuple[int, Histogram | None, Histogram | None]:
        """(events handled, handler durations, end-to-end latencies): the durations only when
        the spec is ``timed``. Any thread, no lock."""
        ...


class PendingEnqueue(Protocol):
    """The rest of a ``produce_async()`` call that did not fit into librdkafka's queue."""

    def finish(self) -> None:
        """Enqueue the rest, blocking until there is room or the call's deadline passed (then
        the call's future fails with a timeout). Call it off the event loop, once."""
        ...


class NativeProducer(Protocol):
    """A backend's producer: the librdkafka handle, its owner thread (which serves delivery
    reports and, at the end, destroys the handle), and the hot path (serialize, build headers,
    enqueue, track this call's deliveries). Made by :meth:`Backend.new_producer`: the client
    starts at once and connects and obtains its producer id in the background.

    Thread-safe. Only its owner thread destroys the handle: :meth:`close` and :meth:`abandon` ask
    it to stop, and a native producer that is garbage-collected does the same, never joining."""

    def produce(
        self,
        events: Sequence[Message],
        timeout: float | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> Deliveries:
        """Serialize, enqueue and block until every event of this call is acknowledged.

        ``headers`` are added to every event of the call (Telemetry's trace context). Returns
        where each event went, in call order. Raises, before anything is sent:
        ``EventTypeError``, ``SerializationError``, ``ProduceError`` for an event over
        ``message.max.bytes`` (``failed`` = the whole call); after: ``ProduceError`` with the
        first failed delivery's code, ``ProduceTimeoutError`` if ``timeout`` passed first.
        Releases the GIL while waiting, in slices so that signals are handled.
        """
        ...

    def produce_async(
        self,
        events: Sequence[Message],
        loop: asyncio.AbstractEventLoop,
        timeout: float | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> tuple[asyncio.Future[Deliveries], PendingEnqueue | None]:
        """Like :meth:`produce`, without waiting: enqueues what fits into librdkafka's queue now
        and returns a future of ``loop`` (resolved on ``loop``, with the same results and errors,
        a timeout included) and, if some events did not fit, what enqueues the rest. Must be
        called on ``loop``'s thread; never blocks it. Errors found before anything is sent are
        raised directly."""
        ...

    def flush(self, timeout: float) -> int:
        """Wait for everything outstanding; return the number of messages still in flight."""
        ...

    def close(self, timeout: float | None) -> tuple[int, int, bool]:
        """Ask the owner thread to stop: new calls fail, what is outstanding gets until the
        deadline (``timeout`` seconds; ``None``: no deadline) to be acknowledged, the rest fails,
        then the handle is destroyed. Waits for that up to the deadline (and a little more).
        Returns the events the close failed ``(not written, in doubt)`` and whether the owner
        finished in time. Idempotent (later calls return zeros and wait again)."""
        ...

    def abandon(self) -> None:
        """Ask the owner thread to fail what is outstanding at once and stop (a producer dropped
        without ``close()``). Never blocks."""
        ...

    def metrics(self) -> ProducerMetrics:
        """Counts and call durations since the producer was made. Any thread, no network."""
        ...


class Backend(Protocol):
    """What ``eventstream._core`` and ``eventstream._pure`` each export as ``BACKEND`` (and the
    no-op topic's ``eventstream._noop.NOOP_BACKEND``): the factory of native producers and
    consumers."""

    name: BackendName
    #: No clients, no threads: every operation does nothing (the no-op topic's backend).
    inert: bool

    def new_producer(self, spec: ProducerSpec) -> NativeProducer: ...

    def new_consumer(self, spec: ConsumerSpec, listener: ConsumerListener) -> NativeConsumer: ...


_ENV = "EVENTSTREAM_NO_EXTENSIONS"
_REQUIRE_ENV = "EVENTSTREAM_REQUIRE_COMPILED"
_loaded: Backend | None = None


def _switch(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def _built_without_compiled() -> str | None:
    """Why this installation was built without the compiled backend, or ``None`` if it was built
    with it (or is a source checkout that was never built, which expects it too)."""
    try:
        from eventstream import _build_info
    except ImportError:
        return None
    if _build_info.COMPILED:
        return None
    return _build_info.REASON or "it was built without it"


def load_backend() -> Backend:
    """The backend of this process, chosen once (see the module docstring for the rules).

    Raises ``ImportError`` naming what is missing if the compiled backend was expected and cannot
    be loaded (set ``EVENTSTREAM_NO_EXTENSIONS=1`` to run on the pure-Python backend instead), or
    if ``EVENTSTREAM_REQUIRE_COMPILED=1`` is set and this installation has no compiled backend.
    """
    global _loaded
    chosen = _loaded
    if chosen is None:
        if _switch(_ENV):
            from eventstream import _pure

            chosen = _pure.BACKEND
        elif (why := _built_without_compiled()) is not None:
            if _switch(_REQUIRE_ENV):
                raise ImportError(
                    f"eventstream's compiled backend is required ({_REQUIRE_ENV}=1), but this "
                    f"installation has none: {why}. The compiled backend is built on Linux; "
                    f"unset {_REQUIRE_ENV} to use the pure-Python backend."
                )
            from eventstream import _pure

            chosen = _pure.BACKEND
            logging.getLogger("eventstream").info(
                "using the pure-Python backend, because %s (set %s=1 to make this an error)",
                why,
                _REQUIRE_ENV,
            )
        else:
            try:
                from eventstream import _core  # type: ignore[attr-defined,unused-ignore]
            except ImportError as exc:
                raise ImportError(
                    "eventstream's compiled backend (eventstream._core) could not be loaded: "
                    f"{exc}. Reinstall eventstream (from a checkout: `pip install -e .`, which "
                    f"needs Cython and a C compiler), or set {_ENV}=1 to use the pure-Python "
                    "backend."
                ) from exc
            chosen = _core.BACKEND
        _loaded = chosen
    return chosen


def backend() -> BackendName:
    """Which backend this process uses: ``"compiled"`` or ``"pure"``."""
    return load_backend().name
