"""Receiving typed events: :class:`Consumer`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, Literal, TypeVar, overload

from google.protobuf.message import Message

from eventstream._runtime import forks
from eventstream._runtime.backend import Dispatch, DispatchAbandoned
from eventstream._runtime.closing import Closeable, check_timeout
from eventstream._runtime.consuming import ConsumerRuntime
from eventstream._runtime.failures.dead_letters import DeadLetters
from eventstream._runtime.failures.policy import FailureCounts, Failures
from eventstream._runtime.failures.retry import RetryPolicy
from eventstream._runtime.health import ClientStatus, Health
from eventstream._runtime.records import EventMetadata, PartitionChange
from eventstream._runtime.telemetry.metrics import ConsumerMetrics, LatencyRecorder
from eventstream.config import TOPIC_NAME, TopicConfig
from eventstream.errors import (
    ArgumentTypeError,
    ClosedError,
    ConfigError,
    ConsumerAlreadyStartedError,
    EventStreamError,
    GapError,
    fresh,
    wait_timeout_error,
)

__all__ = ["Consumer"]

E = TypeVar("E", bound=Message)

#: An event of a batch whose handler still failed: (its index, the exception, attempts made).
Failed = tuple[int, Exception, int]


def _is_async(handler: Callable[..., object]) -> bool:
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - callable objects with async __call__
    )


class Consumer(Closeable, Generic[E]):
    """Receives every event of one topic for this instance's group. Create it with
    :meth:`Topic.new_consumer`; nothing connects until :meth:`consume`.

    Consumers of one ``instance_id`` share the topic's partitions; each instance id gets every
    event. Delivery is at least once: an event's offset is stored only after its handler returned,
    so events whose handler had not finished are delivered again after a crash or rebalance.

    A consumer made before ``os.fork()`` cannot be used in the child (:class:`ClosedError`);
    closing it there does nothing.
    """

    def __init__(self, runtime: ConsumerRuntime, config: TopicConfig, health: Health) -> None:
        self._runtime = runtime
        self._config = config
        self._topic = config.topic
        self._logger = config.logger
        self._health = health
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        self._abandon = False  # set when close() blocks the async handler's own loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._generation = forks.generation()
        self._failures: Failures | None = None  # set by consume()
        self._lag: Mapping[int, int] = {}  # from librdkafka's statistics (TopicConfig.metrics)
        # An async handler's durations, timed on its loop (the hot loop times sync handlers).
        self._async_handler_time = LatencyRecorder()
        self._async_e2e = LatencyRecorder()

    def __del__(self) -> None:
        # Never joins or frees: the poll thread, asked to stop, leaves and destroys by itself.
        if getattr(self, "_closed", True) or self._generation != forks.generation():
            return
        if self._started:
            warnings.warn(
                f"an unclosed consumer of {self._topic!r} was garbage-collected: it stops "
                "consuming and leaves its group; close() it (or its Topic) to choose when",
                ResourceWarning,
                source=self,
                stacklevel=1,
            )
        self._runtime.abandon()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (it may still be finishing on another thread).
        Thread-safe; no network call."""
        return self._closed

    @property
    def status(self) -> ClientStatus:
        """The consumer's state (``connecting``, ``ready``, ``disconnected``, ``failed``,
        ``closed``), its latest error and since when. Thread-safe; no network call.

        ``failed`` means it stopped consuming (bad credentials, missing permissions, a fatal
        error such as being fenced by a second process with the same instance id, or a handler
        that raised a ``BaseException``); :meth:`close` raises that error.
        """
        return self._health.status

    @property
    def group_instance_id(self) -> str | None:
        """This consumer's static membership id (``"{instance_id}-{n}"``), or ``None`` when it
        was made with ``shared=True``."""
        membership = self._runtime.membership
        return None if membership is None else membership.group_instance_id

    @overload
    def consume(
        self,
        handler: Callable[[E], object],
        *,
        with_metadata: Literal[False] = False,
        loop: asyncio.AbstractEventLoop | None = None,
        on_rebalance: Callable[[PartitionChange], object] | None = None,
        retry: RetryPolicy | None = None,
        dead_letter_topic: str | None = None,
        on_gap: Callable[[GapError], object] | None = None,
    ) -> None: ...

    @overload
    def consume(
        self,
        handler: Callable[[E, EventMetadata], object],
        *,
        with_metadata: Literal[True],
        loop: asyncio.AbstractEventLoop | None = None,
        on_rebalance: Callable[[PartitionChange], object] | None = None,
        retry: RetryPolicy | None = None,
        dead_letter_topic: str | None = None,
        on_gap: Callable[[GapError], object] | None = None,
    ) -> None: ...

    def consume(
        self,
        handler: Callable[..., object],
        *,
        with_metadata: bool = False,
        loop: asyncio.AbstractEventLoop | None = None,
        on_rebalance: Callable[[PartitionChange], object] | None = None,
        retry: RetryPolicy | None = None,
        dead_letter_topic: str | None = None,
        on_gap: Callable[[GapError], object] | None = None,
    ) -> None:
        """Start consuming in the background and return at once.

        ``handler(event)`` — or ``handler(event, metadata)`` with ``with_metadata=True`` — runs
        for every event on this consumer's poll thread, one event at a time in partition order.
        An ``async def`` handler runs on the application's event loop instead (``loop``, or the
        loop running when ``consume`` is called), still one event at a time in order.
        A handler exception is logged with the event's coordinates and consumption continues;
        with ``retry`` (a :class:`RetryPolicy`) the handler is called again first, a bounded
        number of times. With ``dead_letter_topic``, records that do not decode, carry another
        type or content type, or whose handler still fails go to that topic (original value, key
        and headers, plus ``eventstream-dlq-*`` headers saying why, where from and when); the
        dead-letter record is acknowledged before the original's offset is stored. Skipped
        records are logged one by one for the first few, then summarized.

        ``on_rebalance(change)`` (a :class:`PartitionChange`) is called on the poll thread, never
        while a handler runs, whenever partitions are assigned, revoked or lost, before any event
        of a newly assigned partition is handled (and after revoked or lost ones are
        unassigned: no event of theirs is handled after it). ``on_gap(error)`` is called on the
        poll thread with every :class:`GapError` the consumer reports: events it will never
        handle (deleted by retention, lost with a deleted topic). Their exceptions are logged.

        Raises :class:`ConsumerAlreadyStartedError` on a second call, :class:`ClosedError` after
        :meth:`close`, :class:`ArgumentTypeError` for a handler that is not callable,
        :class:`ConfigError` for an async handler without an event loop; a failure to start
        (e.g. the client could not be made) leaves the consumer unstarted, so ``consume()`` may
        be called again.
        """
        self._check_usable()
        if not callable(handler):
            raise ArgumentTypeError(f"handler must be callable, got {handler!r}")
        for name, hook in (("on_rebalance", on_rebalance), ("on_gap", on_gap)):
            if hook is not None and not callable(hook):
                raise ArgumentTypeError(f"{name} must be callable, got {hook!r}")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ArgumentTypeError(f"retry must be a RetryPolicy, got {retry!r}")
        if dead_letter_topic is not None and (
            not isinstance(dead_letter_topic, str)
            or not TOPIC_NAME.fullmatch(dead_letter_topic)
            or dead_letter_topic == self._topic
        ):
            raise ConfigError(
                "dead_letter_topic",
                f"must be a legal Kafka topic name other than the consumed one, got "
                f"{dead_letter_topic!r}",
            )
        is_async = _is_async(handler)
        if is_async and loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise ConfigError(
                    "loop",
                    "an async handler runs on an event loop: call consume() from a coroutine, "
                    "or pass loop=",
                ) from None
        with self._lock:
            if self._closed:
                raise ClosedError(f"the consumer of {self._topic!r} is closed")
            if self._started:
                raise ConsumerAlreadyStartedError(
                    f"this consumer of {self._topic!r} is already consuming; "
                    "create another consumer with Topic.new_consumer()"
                )
            self._started = True
        config = self._config
        if config.telemetry is not None:
            # The wrapper continues each event's trace; it takes the metadata (and passes it on
            # only if the application asked for it).
            handler = config.telemetry.process(
                handler,
                with_metadata=with_metadata,
                topic=self._topic,
                group=config.group_id,
                asynchronous=is_async,
            )
            with_metadata = True
        dead_letters = None
        if dead_letter_topic is not None:
            dead_letters = DeadLetters(
                dead_letter_topic,
                properties=config.producer_settings(),
                origin=self._topic,
                group=config.group_id,
                logger=self._logger,
                health=self._health,
            )
        failures = Failures(
            self._topic,
            self._runtime.type_name,
            self._logger,
            retry=retry,
            dead_letters=dead_letters,
            timed=config.metrics_enabled,
        )
        failures.stopping = self._runtime.stopping
        self._failures = failures
        if is_async:
            assert loop is not None
            self._loop = loop
            runner = self._async_batch_runner(
                handler,  # type: ignore[arg-type]  # _is_async checked it returns awaitables
                with_metadata,
                loop,
                failures,
            )
            dispatch = Dispatch(runner, "batch", True, failures, on_rebalance, on_gap)
        else:
            dispatch = Dispatch(handler, "event", with_metadata, failures, on_rebalance, on_gap)
        try:
            self._runtime.start(dispatch)
        except ConfigError as exc:
            with self._lock:
                self._started = False
            if exc.field != "properties":
                raise
            raise config.client_refused("consumer", exc.reason) from None
        except BaseException:
            with self._lock:
                self._started = False
            raise

    def _async_batch_runner(
        self,
        handler: Callable[..., Awaitable[object]],
        with_metadata: bool,
        loop: asyncio.AbstractEventLoop,
        failures: Failures,
    ) -> Callable[[Sequence[Message], Sequence[EventMetadata]], list[Failed]]:
        timed = self._config.metrics_enabled
        handler_time = self._async_handler_time
        e2e = self._async_e2e

        async def run(
            events: Sequence[Message], metadatas: Sequence[EventMetadata]
        ) -> list[Failed]:
            # The first call of each event is timed here; its retries are the shared policy's
            # (Failures.failed_async, timed there as for a sync handler).
            failed: list[Failed] = []
            for index, (event, meta) in enumerate(zip(events, metadatas, strict=True)):
                started = 0
                if timed:
                    started = time.monotonic_ns()
                    if meta.timestamp_ms > 0:
                        e2e.add((time.time_ns() // 1_000_000 - meta.timestamp_ms) * 1_000_000)
                try:
                    # Called directly: an argument tuple is built only for a failure.
                    if with_metadata:
                        await handler(event, meta)
                    else:
                        await handler(event)
                    continue
                except Exception as exc:
                    error = exc
                finally:
                    if timed:
                        handler_time.add(time.monotonic_ns() - started)
                args = (event, meta) if with_metadata else (event,)
                outcome = await failures.failed_async(handler, args, error)
                if outcome is not None:
                    failed.append((index, *outcome))
            return failed

        def run_batch(
            events: Sequence[Message], metadatas: Sequence[EventMetadata]
        ) -> list[Failed]:
            # Called on the poll thread: one hop to the loop per batch, waited for in slices so
            # that a close() on the loop's own thread (which blocks that loop) cannot deadlock.
            if loop.is_closed():
                self._loop_gone()
                raise DispatchAbandoned()
            coroutine = run(events, metadatas)
            try:
                future = asyncio.run_coroutine_threadsafe(coroutine, loop)
            except RuntimeError:  # closed meanwhile
                coroutine.close()
                self._loop_gone()
                raise DispatchAbandoned() from None
            while True:
                try:
                    return future.result(0.1)
                except concurrent.futures.TimeoutError:
                    if self._abandon:
                        future.cancel()
                        raise DispatchAbandoned() from None
                    if loop.is_closed():
                        future.cancel()
                        self._loop_gone()
                        raise DispatchAbandoned() from None
                except concurrent.futures.CancelledError:
                    if not (self._abandon or self._runtime.stopping()):
                        self._loop_gone()
                    raise DispatchAbandoned() from None

        return run_batch

    def _loop_gone(self) -> None:
        """The async handler's event loop closed while the consumer runs: nothing can be handled
        any more. The consumer fails (one ERROR, on_error; close() raises it); the batch is given
        up unhandled (the caller raises DispatchAbandoned)."""
        error = EventStreamError(
            f"consumer of {self._topic!r}: the event loop that runs its async handler is closed, "
            "so no event can be handled: the consumer stopped consuming, and its unhandled events "
            "go to the group's next consumer. Close the consumer before its loop (`await "
            "consumer.aclose()`, or `async with`)."
        )
        self._health.stopped(error)
        self._runtime.fail(error)

    def metrics(self) -> ConsumerMetrics:
        """Counts since :meth:`consume` (and, with ``TopicConfig(metrics=True)``, handler and
        end-to-end latencies and the lag per partition): a snapshot. Thread-safe; no network
        call."""
        handled, handler_time, e2e = self._runtime.counts()
        if self._loop is not None and self._config.metrics_enabled:
            handler_time, e2e = self._async_handler_time.snapshot(), self._async_e2e.snapshot()
        failures = self._failures
        counts = failures.counts if failures is not None else FailureCounts()
        if handler_time is not None and failures is not None and failures.retry_time is not None:
            handler_time = handler_time.merge(failures.retry_time.snapshot())
        return ConsumerMetrics(
            topic=self._topic,
            group=self._config.group_id,
            handled=handled,
            skipped=counts.skipped,
            failed=counts.failed,
            dead_lettered=counts.dead_lettered,
            retried=counts.retried,
            lag=dict(self._lag),
            handler_seconds=handler_time,
            end_to_end_seconds=e2e,
        )

    def observe_statistics(self, stats: Mapping[str, Any]) -> None:
        """librdkafka's statistics, parsed (TopicConfig.metrics): keeps the lag of this
        consumer's partitions. Called on the poll thread."""
        partitions = stats.get("topics", {}).get(self._topic, {}).get("partitions", {})
        lag: dict[int, int] = {}
        for key, value in partitions.items():
            number, behind = int(key), value.get("consumer_lag", -1)
            if number >= 0 and behind >= 0 and value.get("fetch_state") not in (None, "none"):
                lag[number] = behind
        self._lag = lag

    def wait_until_assigned(self, timeout: float = 30.0) -> dict[int, int]:
        """Block until the group gave this consumer its partitions and the position of each is
        known; return them as ``{partition: position}`` (the next offset it reads).

        Each partition's start offset is pinned when it is assigned (the group's committed
        offset, else the oldest or the latest one), so once this returns, the consumer reads
        every event produced afterwards, whether it starts from the beginning or the latest.

        Raises :class:`WaitTimeoutError` (also a ``TimeoutError``) naming the client's last
        error, the consumer's failure if it failed meanwhile (e.g. :class:`AuthenticationError`),
        :class:`ClosedError`, and :class:`EventStreamError` before ``consume()``.
        """
        deadline = time.monotonic() + timeout
        while True:
            self._check_usable()
            if not self._started:
                raise EventStreamError("call consume() before wait_until_assigned()")
            failure = self._health.failure
            if failure is not None:
                raise fresh(failure)
            positions = self._runtime.assignment()
            if positions and all(offset >= 0 for offset in positions.values()):
                return positions
            if time.monotonic() >= deadline:
                raise wait_timeout_error(
                    f"the consumer of {self._topic!r} was not assigned partitions with known "
                    f"positions (assigned now: {positions or 'none'}; state "
                    f"{self._health.status.state})",
                    timeout,
                    self._health.last_error,
                )
            time.sleep(0.05)

    def assignment(self) -> dict[int, int]:
        """Partitions this consumer owns now, each with its next offset (negative: not known
        yet). Thread-safe; no network call."""
        if self._closed or self._generation != forks.generation():
            return {}
        return self._runtime.assignment()

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop consuming: the running handler finishes, offsets of finished events are committed,
        the consumer leaves its group. Idempotent; blocks up to ``timeout`` seconds (``None``: as
        long as it takes); called from a handler, it returns at once and the consumer stops when
        the handler returns.

        Re-raises what stopped the poll thread (a fatal broker error, or a ``BaseException``
        from a handler). Call :meth:`aclose` from the event loop of an async handler.
        """
        check_timeout(timeout)
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(RuntimeError):  # not on any loop
                self._abandon = asyncio.get_running_loop() is self._loop
        if self._generation != forks.generation():
            self._health.closed()  # the client belongs to the parent process: leave it alone
            return
        if self._abandon:
            self._logger.warning(
                "Consumer.close() was called on the event loop that runs its async handler; "
                "the batch in progress is left for redelivery. Use `await consumer.aclose()`."
            )
        try:
            self._runtime.close(timeout)
        finally:
            if self._failures is not None:
                self._failures.close()  # the skip summary; the dead-letter producer
