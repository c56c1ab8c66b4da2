"""Consumer of the pure-Python backend: confluent_kafka.Consumer driven by one poll thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import confluent_kafka
from google.protobuf.message import DecodeError, Message

from eventstream._runtime import wire
from eventstream._runtime.backend import ConsumerSpec, Dispatch, DispatchAbandoned
from eventstream._runtime.failures import gaps
from eventstream._runtime.failures.policy import Failures
from eventstream._runtime.failures.skips import SkipReason
from eventstream._runtime.librdkafka import ClientLog
from eventstream._runtime.records import PartitionChange, RawRecord
from eventstream._runtime.telemetry.metrics import Histogram, LatencyRecorder
from eventstream._runtime.telemetry.reporting import statistics_tick
from eventstream.errors import (
    BrokerError,
    ClosedError,
    EventStreamError,
    instance_id_conflict,
    is_retriable,
    max_poll_exceeded,
)

__all__ = ["PureConsumer"]

_BATCH = 500
_FIRST_WAIT = 0.1  # seconds the poll thread blocks for a first record; bounds close() latency
_RESOLVE_TIMEOUT = 10.0  # longest an assignment blocks resolving start offsets
_CONTENT_TYPE = wire.HEADER_CONTENT_TYPE
_TYPE = wire.HEADER_TYPE
_SOURCE = wire.HEADER_SOURCE
_ID = wire.HEADER_ID
_LEGACY_SOURCE = wire.HEADER_LEGACY_SOURCE


# Fatal errors a consumer meets. confluent-kafka hands a consumer's fatal error over as a
# record error of code _FATAL whose text quotes the cause, but offers no rd_kafka_fatal_error():
# the cause's code is found from its librdkafka description in that text.
_FATAL_CAUSES = (82, 111, 110, 25, 90)  # FENCED_INSTANCE_ID, UNRELEASED_INSTANCE_ID, ...


def _raw(msg: confluent_kafka.Message) -> RawRecord:
    """The record as read, for a dead-letter copy (a failure path only)."""
    headers = cast("list[tuple[str, bytes | None]] | None", msg.headers())
    return RawRecord(
        msg.value(), msg.key(), list(headers or ()), msg.partition() or 0, msg.offset() or 0
    )


def _underlying(err: confluent_kafka.KafkaError) -> tuple[int, str, str, bool]:
    """(code, name, reason, fatal) of ``err``, or of the fatal error it stands for."""
    if err.code() == confluent_kafka.KafkaError._FATAL:
        for code in _FATAL_CAUSES:
            cause = confluent_kafka.KafkaError(code)
            if cause.str() in err.str():
                return code, cause.name(), err.str(), True
        return err.code(), err.name(), err.str(), True
    return err.code(), err.name(), err.str(), err.fatal()


class PureConsumer:
    """One confluent-kafka consumer and the thread that polls it and runs the handler."""

    def __init__(self, spec: ConsumerSpec) -> None:
        self._spec = spec
        self._health = spec.health
        self._client: confluent_kafka.Consumer | None = None
        self._thread: threading.Thread | None = None
        self._stop = False
        self._closed = False
        self._failure: BaseException | None = None
        self._lock = threading.Lock()
        self._positions: dict[int, int] = {}  # assigned partition -> next offset to handle
        self._dispatch: Dispatch | None = None
        # When the poll thread last came back from librdkafka to handle a batch (0: inside it);
        # a handler running longer than max.poll.interval.ms has lost the partitions.
        self._dispatch_since = 0.0
        self._handling: confluent_kafka.Message | None = None  # the record in the handler now
        self._topic_missing_logged = False
        self._failures: Failures  # set by start(), before the poll thread runs
        self._handled = 0
        self._timed = spec.timed
        self._handler_time = LatencyRecorder()
        self._e2e = LatencyRecorder()
        props = spec.properties
        self._max_poll = int(props.get("max.poll.interval.ms", "300000")) / 1000
        self._cooperative = "cooperative" in props.get("partition.assignment.strategy", "") or (
            props.get("group.protocol", "classic").lower() == "consumer"
        )
        self._from_beginning = spec.start_from_beginning
        self._resets = gaps.OffsetResets(spec.topic)

    def start(self, dispatch: Dispatch) -> None:
        with self._lock:
            if self._closed:
                raise ClosedError(f"the consumer of {self._spec.topic!r} is closed")
            conf: dict[str, object] = dict(self._spec.properties)
            conf["error_cb"] = self._on_client_error
            conf["stats_cb"] = self._on_stats
            conf["logger"] = ClientLog(self._spec.logger, self._on_librdkafka_warning)
            client = confluent_kafka.Consumer(conf)
            # confluent-kafka assigns (incrementally, for the cooperative protocol) after these
            # callbacks return unless they assigned themselves; they run on the poll thread.
            client.subscribe(
                [self._spec.topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            self._client = client
            self._dispatch = dispatch
            self._failures = dispatch.failures
            self._thread = threading.Thread(
                target=self._run,
                args=(client, dispatch),
                name=f"eventstream-consumer-{self._spec.topic}",
                daemon=True,
            )
            self._thread.start()

    def assignment(self) -> dict[int, int]:
        # Kept by the poll thread: asking confluent-kafka from another thread while its poll()
        # runs a rebalance can block until that poll returns.
        since = self._dispatch_since
        if since and time.monotonic() - since > self._max_poll:
            return {}
        with self._lock:
            if self._closed:
                return {}
            return dict(self._positions)

    # -- rebalancing (callbacks run inside poll(), on the poll thread) -----------------------------

    def _on_assign(
        self, client: confluent_kafka.Consumer, partitions: list[confluent_kafka.TopicPartition]
    ) -> None:
        # Resolve where each partition starts (its committed offset if the log still has it,
        # else the low watermark, a gap; without one, the end that auto.offset.reset names) and
        # assign at exactly that offset: the position reported by assignment() is then where
        # reading starts, and an event produced after wait_until_assigned() returns cannot fall
        # before it.
        resolved = partitions
        if partitions:
            try:
                resolved = self._resolve_starts(client, partitions)
            except confluent_kafka.KafkaException as exc:
                err = exc.args[0]
                self._health.warn(
                    BrokerError(
                        f"consumer of {self._spec.topic!r}: rebalance: start offsets failed: "
                        f"{err.name()}: {err.str()}; librdkafka resolves the start offsets "
                        "itself",
                        code=err.code(),
                        name=err.name(),
                        retriable=is_retriable(err.code()),
                    )
                )
        if self._cooperative:
            client.incremental_assign(resolved)
        else:
            client.assign(resolved)
        with self._lock:
            if not self._cooperative:
                self._positions.clear()
            for tp in resolved:
                self._positions[tp.partition] = tp.offset
        if resolved or not self._cooperative:
            self._health.up()
            self._changed("assigned", resolved)

    def _resolve_starts(
        self, client: confluent_kafka.Consumer, partitions: list[confluent_kafka.TopicPartition]
    ) -> list[confluent_kafka.TopicPartition]:
        # A just-created topic may not have its leaders everywhere yet: retry what is transient.
        deadline = time.monotonic() + _RESOLVE_TIMEOUT
        while True:
            try:
                return self._resolve_once(client, partitions, deadline)
            except confluent_kafka.KafkaException as exc:
                if not is_retriable(exc.args[0].code()) or time.monotonic() + 0.1 >= deadline:
                    raise
                time.sleep(0.1)

    def _resolve_once(
        self,
        client: confluent_kafka.Consumer,
        partitions: list[confluent_kafka.TopicPartition],
        deadline: float,
    ) -> list[confluent_kafka.TopicPartition]:
        committed = client.committed(partitions, timeout=max(0.1, deadline - time.monotonic()))
        ends: list[dict[int, confluent_kafka.TopicPartition]] = []
        for timestamp in (confluent_kafka.OFFSET_BEGINNING, confluent_kafka.OFFSET_END):
            # A ListOffsets timestamp of -2/-1 asks for the low/high watermark: one request per
            # leader for all partitions.
            query = [
                confluent_kafka.TopicPartition(tp.topic, tp.partition, timestamp)
                for tp in partitions
            ]
            found: list[confluent_kafka.TopicPartition] = client.offsets_for_times(
                query, timeout=max(0.1, deadline - time.monotonic())
            )
            ends.append({tp.partition: tp for tp in found})
        lows, highs = ends
        resolved: list[confluent_kafka.TopicPartition] = []
        for tp in committed:
            for entry in (tp, lows[tp.partition], highs[tp.partition]):
                if entry.error is not None:
                    raise confluent_kafka.KafkaException(entry.error)
            low, high = int(lows[tp.partition].offset), int(highs[tp.partition].offset)
            offset = int(tp.offset)
            if offset < 0:
                offset = low if self._from_beginning else high
            elif offset < low or offset > high:
                self._health.report(
                    gaps.start_outside_log(self._spec.topic, tp.partition, offset, low, high)
                )
                offset = low
            resolved.append(confluent_kafka.TopicPartition(tp.topic, tp.partition, offset))
        return resolved

    def _on_revoke(self, _client: object, partitions: list[confluent_kafka.TopicPartition]) -> None:
        self._forget(partitions)
        self._changed("revoked", partitions)

    def _on_lost(self, _client: object, partitions: list[confluent_kafka.TopicPartition]) -> None:
        self._forget(partitions)
        self._changed("lost", partitions)

    def _forget(self, partitions: list[confluent_kafka.TopicPartition]) -> None:
        with self._lock:
            if self._cooperative:
                for tp in partitions:
                    self._positions.pop(tp.partition, None)
            else:
                self._positions.clear()

    def _changed(self, kind: str, partitions: list[confluent_kafka.TopicPartition]) -> None:
        dispatch = self._dispatch
        hook = None if dispatch is None else dispatch.on_rebalance
        if hook is None or not partitions:
            return
        change = PartitionChange(
            kind,  # type: ignore[arg-type]
            self._spec.topic,
            tuple(sorted(tp.partition for tp in partitions)),
        )
        try:
            hook(change)
        except Exception as exc:
            self._spec.logger.error(
                "consumer of %r: the on_rebalance hook raised for %s %s",
                self._spec.topic,
                kind,
                change.partitions,
                exc_info=exc,
            )

    # -- closing --------

    def close(self, timeout: float) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop = True
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            state = self._health.status.state
            if state == "disconnected":
                # Leaving needs a broker: don't wait for librdkafka to find none (the poll
                # thread keeps trying in the background).
                self._spec.logger.warning(
                    "consumer of %r: close() did not wait for the consumer to commit its last "
                    "offsets and leave the group: no broker answers (last client error: %s). If "
                    "none comes back, events handled since the last commit (at most "
                    "auto.commit.interval.ms worth) will be handled again by the group's next "
                    "consumer, which gets the partitions after the session times out.",
                    self._spec.topic,
                    self._health.last_error or "none",
                )
            else:
                thread.join(timeout)
                if thread.is_alive():
                    self._log_still_running(timeout)
        self._health.closed()
        failure = self._failure
        if failure is not None and not isinstance(failure, DispatchAbandoned):
            raise failure

    def _log_still_running(self, timeout: float) -> None:
        handling = self._handling
        topic = self._spec.topic
        if handling is not None:
            partition, offset = handling.partition() or 0, handling.offset() or 0
            self._spec.logger.error(
                "consumer of %r: close() stopped waiting after %g s: the handler is still "
                "running for the event at %s[%d]@%d. The consumer leaves its group once it "
                "returns, committing that event and the ones handled before it; if the process "
                "exits first, that event and those after it are handled again by the group's "
                "next consumer.",
                topic,
                timeout,
                topic,
                partition,
                offset,
            )
        else:
            self._spec.logger.error(
                "consumer of %r: close() stopped waiting after %g s for the consumer to commit "
                "its offsets and leave the group (last client error: %s); events handled since "
                "the last commit will be handled again by the group's next consumer.",
                topic,
                timeout,
                self._health.last_error or "none",
            )

    # -- the poll thread --------

    def _on_client_error(self, err: confluent_kafka.KafkaError) -> None:
        failure = self._report(err)
        if failure is not None:
            self._stopped_by(failure)

    def _report(self, err: confluent_kafka.KafkaError) -> BrokerError | None:
        code, name, reason, fatal = _underlying(err)
        hint = instance_id_conflict(code, self._spec.properties)
        if hint:
            reason = f"{reason}. {hint}"
        return self._health.client_error(code, name, reason, fatal=fatal)

    def _on_stats(self, stats: str) -> None:
        statistics_tick(stats, self._health, self._spec.statistics, self._spec.logger)

    def _on_librdkafka_warning(self, facility: str, text: str) -> None:
        """A fetch position out of the log is a gap (librdkafka resets it and says so)."""
        if facility == "OFFSET":
            gap = self._resets.warned(text)
            if gap is not None:
                self._health.report(gap)

    def _check_resumed(self, batch: list[confluent_kafka.Message]) -> None:
        for msg in batch:
            partition, offset = msg.partition(), msg.offset()
            if msg.error() is None and partition is not None and offset is not None:
                gap = self._resets.resumed(partition, offset)
                if gap is not None:
                    self._health.report(gap)
            if not self._resets.pending:
                return

    def _stopped_by(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        self._stop = True

    def _run(self, client: confluent_kafka.Consumer, dispatch: Dispatch) -> None:
        try:
            while not self._stop:
                self._dispatch_since = 0.0
                first = client.poll(_FIRST_WAIT)
                self._dispatch_since = time.monotonic()
                if first is None:
                    continue
                batch = [first]
                if not self._stop:
                    batch.extend(client.consume(_BATCH - 1, 0))
                if self._resets.pending:
                    self._check_resumed(batch)
                if dispatch.mode == "event":
                    self._dispatch_events(client, batch, dispatch)
                else:
                    self._dispatch_batch(client, batch, dispatch)
        except BaseException as exc:  # recorded and re-raised by close()
            if not isinstance(exc, EventStreamError | DispatchAbandoned):
                self._health.stopped(exc)
            self._stopped_by(exc)
        finally:
            self._dispatch_since = 0.0
            try:
                client.close()  # commits stored offsets and leaves the group
            except Exception as exc:
                if self._health.failure is None:
                    self._spec.logger.warning(
                        "consumer of %r: close failed: %s", self._spec.topic, exc
                    )

    def _record_error(self, err: confluent_kafka.KafkaError) -> None:
        """An error delivered as a message: failures raise (ending the loop), others are
        reported through the Health (logged once per kind)."""
        spec = self._spec
        code = err.code()
        if code == confluent_kafka.KafkaError._PARTITION_EOF:
            return
        if code == confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART:
            # Normal until the topic is created (or auto-created by its first producer).
            if not self._topic_missing_logged:
                self._topic_missing_logged = True
                spec.logger.info("topic %r does not exist yet; waiting for it", spec.topic)
            return
        if code == confluent_kafka.KafkaError._MAX_POLL_EXCEEDED:
            self._health.warn(max_poll_exceeded(spec.topic, round(self._max_poll * 1000)))
            return
        failure = self._report(err)
        if failure is not None:
            raise failure

    def _decode(
        self, msg: confluent_kafka.Message, with_extras: bool = True
    ) -> tuple[Message, Any] | None:
        """Decode one record; ``None`` if it is skipped (reported through Failures). Returns the
        event and its ``(key, timestamp, source, id)`` extras (``None`` unless ``with_extras``).
        A repeated header counts by its last occurrence (wire.py)."""
        spec = self._spec
        err = msg.error()
        if err is not None:
            self._record_error(err)
            return None
        ce_type = content_type = source = event_id = legacy_source = None
        traceparent = tracestate = None
        # Received headers are always a list of (name, bytes or None); the stubs allow more.
        headers = cast("list[tuple[str, bytes | None]] | None", msg.headers())
        has_type = has_ct = False
        if headers:
            for name, value in headers:
                if name == _TYPE:
                    ce_type, has_type = value, True
                elif name == _SOURCE:
                    source = value
                elif name == _ID:
                    event_id = value
                elif name == _CONTENT_TYPE:
                    content_type, has_ct = value, True
                elif name == _LEGACY_SOURCE:
                    legacy_source = value
                elif name == "traceparent":
                    traceparent = value
                elif name == "tracestate":
                    tracestate = value
        if (
            has_ct
            and content_type != wire.CONTENT_TYPE
            and (content_type is None or not wire.is_protobuf(content_type))
        ):
            shown = content_type.decode(errors="replace") if content_type is not None else None
            self._skip(msg, "content-type", f"content-type {shown!r} is not protobuf")
            return None
        if has_type and (ce_type is None or ce_type.decode(errors="replace") != spec.type_name):
            shown = ce_type.decode(errors="replace") if ce_type is not None else None
            self._skip(msg, "type", f"ce_type {shown!r} is not {spec.type_name!r}")
            return None
        try:
            event = spec.event_type.FromString(msg.value() or b"")
        except (DecodeError, RuntimeError, ValueError) as exc:
            self._skip(msg, "decode", f"value does not decode as {spec.type_name}: {exc}")
            return None
        if not with_extras:
            return event, None
        if source is None:
            source = legacy_source
        extras: tuple[Any, ...] = (
            msg.key(),
            msg.timestamp()[1],
            None if source is None else source.decode(errors="replace"),
            None if event_id is None else event_id.decode(errors="replace"),
        )
        if self._spec.trace_headers:  # TopicConfig.telemetry: the W3C trace context too
            extras += (
                None if traceparent is None else traceparent.decode(errors="replace"),
                None if tracestate is None else tracestate.decode(errors="replace"),
            )
        return event, extras

    def _skip(self, msg: confluent_kafka.Message, reason: SkipReason, detail: str) -> None:
        failures = self._failures
        failures.skip(
            reason,
            msg.partition() or 0,
            msg.offset() or 0,
            detail,
            _raw(msg) if failures.wants_raw else None,
        )

    def _metadata(self, msg: confluent_kafka.Message, extras: Any) -> Any:
        return self._spec.metadata_factory(msg.topic(), msg.partition(), msg.offset(), *extras)

    def _handle(
        self,
        handler: Callable[..., object],
        event: Message,
        meta: Any,
        msg: confluent_kafka.Message,
    ) -> bool:
        """Call the handler for one event, retrying as the policy says; True if it returned.
        A BaseException that is not an Exception propagates (the offset is not stored)."""
        failures = self._failures
        timed = self._timed
        attempt = 1
        started = 0
        while True:
            if timed:
                started = time.monotonic_ns()
                stamp = msg.timestamp()[1]
                if stamp > 0:
                    self._e2e.add((time.time_ns() // 1_000_000 - stamp) * 1_000_000)
            try:
                if meta is None:
                    handler(event)
                else:
                    handler(event, meta)
                return True
            except Exception as exc:
                if attempt < failures.attempts:
                    failures.wait(failures.delay(attempt))  # may raise DispatchAbandoned
                    attempt += 1
                    continue
                failures.gave_up(
                    exc,
                    msg.partition() or 0,
                    msg.offset() or 0,
                    attempt,
                    _raw(msg) if failures.wants_raw else None,
                )
                return False
            finally:
                if timed:
                    self._handler_time.add(time.monotonic_ns() - started)

    def _dispatch_events(
        self,
        client: confluent_kafka.Consumer,
        batch: list[confluent_kafka.Message],
        dispatch: Dispatch,
    ) -> None:
        handler = dispatch.handler
        with_metadata = dispatch.with_metadata
        done: list[confluent_kafka.Message] = []
        try:
            for msg in batch:
                if self._stop:
                    break
                decoded = self._decode(msg, with_metadata)
                if decoded is not None:
                    event, extras = decoded
                    self._handling = msg
                    try:
                        meta = self._metadata(msg, extras) if with_metadata else None
                        if self._handle(handler, event, meta, msg):
                            self._handled += 1
                    finally:
                        self._handling = None
                done.append(msg)
        finally:
            # Offsets of the events whose handler returned (or that were skipped), even when a
            # BaseException stops the loop half-way: those events are finished.
            self._store(client, done)

    def _dispatch_batch(
        self,
        client: confluent_kafka.Consumer,
        batch: list[confluent_kafka.Message],
        dispatch: Dispatch,
    ) -> None:
        """A batch handler (the async runner) gets every decoded event of the batch and returns
        the ones that failed after its retries, as (index, exception, attempts)."""
        events: list[Message] = []
        metadatas: list[Any] = []
        where: list[confluent_kafka.Message] = []
        for msg in batch:
            decoded = self._decode(msg)
            if decoded is not None:
                event, extras = decoded
                events.append(event)
                metadatas.append(self._metadata(msg, extras))
                where.append(msg)
        if events:
            self._handling = batch[0]
            failed: Sequence[tuple[int, Exception, int]] = ()
            try:
                failed = (
                    cast(
                        "Sequence[tuple[int, Exception, int]] | None",
                        dispatch.handler(events, metadatas),
                    )
                    or ()
                )
            except Exception as exc:
                self._spec.logger.error(
                    "batch handler failed for %d events of %r",
                    len(events),
                    self._spec.topic,
                    exc_info=exc,
                )
            finally:
                self._handling = None
            failures = self._failures
            for index, error, attempts in failed:
                msg = where[index]
                failures.gave_up(
                    error,
                    msg.partition() or 0,
                    msg.offset() or 0,
                    attempts,
                    _raw(msg) if failures.wants_raw else None,
                )
            self._handled += len(events) - len(failed)
        self._store(client, batch)

    def stopping(self) -> bool:
        return self._stop

    def metrics(self) -> tuple[int, Histogram | None, Histogram | None]:
        if not self._timed:
            return self._handled, None, None
        return self._handled, self._handler_time.snapshot(), self._e2e.snapshot()

    def _store(self, client: confluent_kafka.Consumer, done: list[confluent_kafka.Message]) -> None:
        if not done:
            return
        # One store call per batch: the highest finished offset + 1 of each partition.
        next_offsets: dict[tuple[str, int], int] = {}
        for msg in done:
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if (
                msg.error() is None
                and topic is not None
                and partition is not None
                and offset is not None
            ):
                next_offsets[(topic, partition)] = offset + 1
        if not next_offsets:
            return
        with self._lock:
            for (_topic, partition), offset in next_offsets.items():
                if partition in self._positions:
                    self._positions[partition] = offset
        try:
            client.store_offsets(
                offsets=[
                    confluent_kafka.TopicPartition(topic, partition, offset)
                    for (topic, partition), offset in next_offsets.items()
                ]
            )
        except confluent_kafka.KafkaException as exc:
            # _STATE: the partition was revoked meanwhile; its new owner reads these events again.
            self._spec.logger.info("offsets not stored: %s", exc)
