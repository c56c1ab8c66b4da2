"""The pure-Python backend's consumer: a confluent_kafka.Consumer and the hot loop over it.

Everything per call or per change (start offsets, hooks, errors, gaps, closing) is the shared
layer's (eventstream._runtime.consuming), called through the listener; this module polls, checks
headers, decodes, dispatches and stores offsets. Used only on the consumer's poll thread, except
where a method says otherwise.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import confluent_kafka
from google.protobuf.message import Message

from eventstream._runtime import forks, wire
from eventstream._runtime.librdkafka import ClientLog
from eventstream._runtime.records import RawRecord
from eventstream._runtime.telemetry.metrics import Histogram, LatencyRecorder
from eventstream.errors import BrokerError, ConfigError, is_retriable

if TYPE_CHECKING:  # a backend imports only leaf modules at run time (tests/test_layers.py)
    from eventstream._runtime.backend import ConsumerListener, ConsumerSpec, Dispatch
    from eventstream._runtime.failures.policy import Failures

__all__ = ["PureConsumer"]

_BATCH = 500
_CONTENT_TYPE = wire.HEADER_CONTENT_TYPE
_TYPE = wire.HEADER_TYPE
_SOURCE = wire.HEADER_SOURCE
_ID = wire.HEADER_ID
_LEGACY_SOURCE = wire.HEADER_LEGACY_SOURCE
_TRACEPARENT = wire.HEADER_TRACEPARENT
_TRACESTATE = wire.HEADER_TRACESTATE

Headers = list[tuple[str, bytes | None]]


def _raw(msg: confluent_kafka.Message) -> RawRecord:
    """The record as read, for a dead-letter copy (a failure path only)."""
    headers = cast("Headers | None", msg.headers())
    return RawRecord(
        msg.value(), msg.key(), list(headers or ()), msg.partition() or 0, msg.offset() or 0
    )


def _broker_error(what: str, err: confluent_kafka.KafkaError) -> BrokerError:
    return BrokerError(
        f"{what}: {err.name()}: {err.str()}",
        code=err.code(),
        name=err.name(),
        retriable=is_retriable(err.code()),
    )


class PureConsumer:
    """eventstream._runtime.backend.NativeConsumer over confluent-kafka."""

    def __init__(self, spec: ConsumerSpec, listener: ConsumerListener) -> None:
        self._spec = spec
        self._type_bytes = spec.type_name.encode()  # compared with ce_type once per record
        self._parse = spec.event_type.FromString
        self._topic = spec.topic
        self._listener = listener
        self._client: confluent_kafka.Consumer | None = None
        self._dispatch: Dispatch | None = None
        self._failures: Failures | None = None
        self._stop = False
        self._lock = threading.Lock()  # guards _positions
        self._positions: dict[int, int] = {}  # assigned partition -> next offset to handle
        self._handling: tuple[int, int] | None = None  # the event in the handler now
        self._dispatching_since = 0.0  # see dispatching_since()
        self._watch_resumes = False
        self._handled = 0
        self._timed = spec.timed
        self._handler_time = LatencyRecorder()
        self._e2e = LatencyRecorder()
        props = spec.properties
        self._cooperative = "cooperative" in props.get("partition.assignment.strategy", "") or (
            props.get("group.protocol", "classic").lower() == "consumer"
        )

    # -- lifetime (poll thread) --------

    def open(self, dispatch: Dispatch) -> None:
        listener = self._listener
        conf: dict[str, object] = dict(self._spec.properties)
        conf["error_cb"] = self._on_client_error
        conf["stats_cb"] = listener.statistics
        conf["logger"] = ClientLog(self._spec.logger, listener.log_warning)
        try:
            client = confluent_kafka.Consumer(conf)
            forks.keep_in_children(self)
        except confluent_kafka.KafkaException as exc:
            raise ConfigError("properties", exc.args[0].str()) from None
        # confluent-kafka assigns (incrementally, for the cooperative protocol) after these
        # callbacks return unless they assigned themselves; they run inside poll().
        client.subscribe(
            [self._topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._client = client
        self._dispatch = dispatch
        self._failures = dispatch.failures

    def leave(self, slice_ms: int) -> bool:
        # confluent-kafka's close() commits, revokes and leaves in one blocking call.
        client, self._client = self._client, None
        if client is not None:
            client.close()
        return True

    def destroy(self, left: bool) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception as exc:  # a failed client: nothing left to release
                self._spec.logger.debug("consumer of %r: close: %s", self._topic, exc)
        with self._lock:
            self._positions.clear()

    # -- any thread --------

    def positions(self) -> dict[int, int]:
        with self._lock:
            return dict(self._positions)

    def stop(self) -> None:
        self._stop = True

    def stopping(self) -> bool:
        return self._stop

    def handling(self) -> tuple[int, int] | None:
        return self._handling

    def dispatching_since(self) -> float:
        return self._dispatching_since

    def counts(self) -> tuple[int, Histogram | None, Histogram | None]:
        if not self._timed:
            return self._handled, None, None
        return self._handled, self._handler_time.snapshot(), self._e2e.snapshot()

    # -- what the shared layer asks on the poll thread --------

    def _tps(self, partitions: Sequence[int], offset: int) -> list[confluent_kafka.TopicPartition]:
        return [confluent_kafka.TopicPartition(self._topic, p, offset) for p in partitions]

    def committed(self, partitions: Sequence[int], timeout_ms: int) -> list[int]:
        client = self._client
        assert client is not None
        try:
            found = client.committed(self._tps(partitions, -1001), timeout=timeout_ms / 1000)
        except confluent_kafka.KafkaException as exc:
            raise _broker_error("committed offsets", exc.args[0]) from None
        for tp in found:
            if tp.error is not None:
                raise _broker_error("committed offsets", tp.error)
        by_partition = {tp.partition: int(tp.offset) for tp in found}
        return [by_partition.get(p, -1001) for p in partitions]

    def watermarks(self, partitions: Sequence[int], timeout_ms: int) -> tuple[list[int], list[int]]:
        client = self._client
        assert client is not None
        deadline = time.monotonic() + timeout_ms / 1000
        ends: list[list[int]] = []
        for which, what in (
            (confluent_kafka.OFFSET_BEGINNING, "low watermarks"),
            (confluent_kafka.OFFSET_END, "high watermarks"),
        ):
            # A ListOffsets timestamp of -2/-1 asks for the low/high watermark: one request per
            # leader for all partitions.
            try:
                found: list[confluent_kafka.TopicPartition] = client.offsets_for_times(
                    self._tps(partitions, which), timeout=max(0.1, deadline - time.monotonic())
                )
            except confluent_kafka.KafkaException as exc:
                raise _broker_error(what, exc.args[0]) from None
            for tp in found:
                if tp.error is not None:
                    raise _broker_error(what, tp.error)
            by_partition = {tp.partition: int(tp.offset) for tp in found}
            ends.append([by_partition[p] for p in partitions])
        return ends[0], ends[1]

    def store(self, offsets: Mapping[int, int]) -> None:
        client = self._client
        assert client is not None
        try:
            client.store_offsets(
                offsets=[
                    confluent_kafka.TopicPartition(self._topic, p, o) for p, o in offsets.items()
                ]
            )
        except confluent_kafka.KafkaException as exc:
            # _STATE: the partition was revoked meanwhile; its new owner starts where the group's
            # committed offset says.
            self._spec.logger.info("consumer of %r: offsets not stored: %s", self._topic, exc)

    def commit(self, offsets: Mapping[int, int]) -> None:
        client = self._client
        assert client is not None
        try:
            client.commit(
                offsets=[
                    confluent_kafka.TopicPartition(self._topic, p, o) for p, o in offsets.items()
                ],
                asynchronous=True,
            )
        except confluent_kafka.KafkaException as exc:
            self._spec.logger.info("consumer of %r: commit: %s", self._topic, exc)

    def seek(self, offsets: Mapping[int, int]) -> None:
        client = self._client
        assert client is not None
        for partition, offset in offsets.items():
            try:
                client.seek(confluent_kafka.TopicPartition(self._topic, partition, offset))
            except confluent_kafka.KafkaException as exc:  # as the compiled backend raises it
                raise _broker_error("seek", exc.args[0]) from None
        with self._lock:
            for partition, offset in offsets.items():
                if partition in self._positions:
                    self._positions[partition] = offset

    def watch_resumes(self, on: bool) -> None:
        self._watch_resumes = on

    # -- rebalancing (inside poll) --------

    def _on_assign(
        self, client: confluent_kafka.Consumer, partitions: list[confluent_kafka.TopicPartition]
    ) -> None:
        ids = [tp.partition for tp in partitions]
        starts = self._listener.assign(ids) if ids else None
        if starts is not None:
            partitions = [confluent_kafka.TopicPartition(self._topic, p, starts[p]) for p in ids]
        if self._cooperative:
            client.incremental_assign(partitions)
        else:
            client.assign(partitions)
        with self._lock:
            if not self._cooperative:
                self._positions.clear()
            for tp in partitions:
                self._positions[tp.partition] = tp.offset
        if ids or not self._cooperative:
            self._listener.assigned(ids, starts)

    def _on_revoke(
        self, client: confluent_kafka.Consumer, partitions: list[confluent_kafka.TopicPartition]
    ) -> None:
        self._unassign(client, partitions, lost=False)

    def _on_lost(
        self, client: confluent_kafka.Consumer, partitions: list[confluent_kafka.TopicPartition]
    ) -> None:
        self._unassign(client, partitions, lost=True)

    def _unassign(
        self,
        client: confluent_kafka.Consumer,
        partitions: list[confluent_kafka.TopicPartition],
        *,
        lost: bool,
    ) -> None:
        # Unassigned here (librdkafka commits the stored offsets of revoked partitions), so that
        # the hook runs after it, as on the compiled backend.
        try:
            if self._cooperative:
                client.incremental_unassign(partitions)
            else:
                client.unassign()
        except confluent_kafka.KafkaException as exc:
            self._spec.logger.info("consumer of %r: unassign: %s", self._topic, exc)
        with self._lock:
            if self._cooperative:
                for tp in partitions:
                    self._positions.pop(tp.partition, None)
            else:
                self._positions.clear()
        self._listener.unassigned([tp.partition for tp in partitions], lost)

    def _on_client_error(self, err: confluent_kafka.KafkaError) -> None:
        self._listener.client_error(err.code(), err.name(), err.str(), err.fatal())

    # -- the hot loop --------

    def poll(self, wait_ms: int) -> None:
        client = self._client
        dispatch = self._dispatch
        assert client is not None and dispatch is not None
        self._dispatching_since = 0.0
        try:
            first = client.poll(wait_ms / 1000)
            if first is None:
                return
            batch = [first]
            if not self._stop:
                batch.extend(client.consume(_BATCH - 1, 0))
            self._dispatching_since = time.monotonic()
        except confluent_kafka.KafkaException as exc:
            # confluent-kafka raises the client's fatal error (with its cause) from poll().
            err = exc.args[0]
            self._listener.client_error(err.code(), err.name(), err.str(), err.fatal())
            return
        if self._watch_resumes:
            self._report_resumes(batch)
        if dispatch.mode == "event":
            self._dispatch_events(client, batch, dispatch)
        else:
            self._dispatch_batch(client, batch, dispatch)

    def _record_error(
        self, client: confluent_kafka.Consumer, err: confluent_kafka.KafkaError
    ) -> None:
        """An error in place of a record. A fatal one's cause is what rd_kafka_fatal_error()
        says, which confluent-kafka raises from the next poll (its error callback)."""
        if err.code() == confluent_kafka.KafkaError._FATAL:
            try:
                client.poll(0)
            except confluent_kafka.KafkaException as exc:
                err = exc.args[0]
            self._listener.record_error(err.code(), err.name(), err.str(), True)
            return
        self._listener.record_error(err.code(), err.name(), err.str(), err.fatal())

    def _report_resumes(self, batch: list[confluent_kafka.Message]) -> None:
        seen: set[int] = set()
        for msg in batch:
            partition, offset = msg.partition(), msg.offset()
            ok = msg.error() is None and partition is not None and offset is not None
            if ok and partition not in seen:
                seen.add(partition)  # type: ignore[arg-type]
                self._listener.resumed(partition, offset)  # type: ignore[arg-type]

    def _decode(
        self, msg: confluent_kafka.Message, failures: Failures, extras_wanted: bool = True
    ) -> tuple[Message | None, Any]:
        """The event and its metadata extras (key, timestamp, source, id[, trace context]; ``()``
        unless ``extras_wanted``), or ``(None, None)`` if the record is skipped (reported to
        Failures). A repeated header counts by its last occurrence (wire.py)."""
        ce_type = content_type = source = event_id = legacy_source = None
        traceparent = tracestate = None
        headers = cast("Headers | None", msg.headers())
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
                elif name == _TRACEPARENT:
                    traceparent = value
                elif name == _TRACESTATE:
                    tracestate = value
        reason = None
        found: bytes | BaseException | None = None
        event: Any = None
        if (
            has_ct
            and content_type != wire.CONTENT_TYPE
            and (content_type is None or not wire.is_protobuf(content_type))
        ):
            reason, found = "content-type", content_type
        elif has_type and ce_type != self._type_bytes:
            reason, found = "type", ce_type
        else:
            value = msg.value()
            if value is None:
                reason = "tombstone"
            else:
                try:
                    event = self._parse(value)
                except Exception as exc:  # any kind: a bad record never stalls a partition
                    reason, found = "decode", exc
        if reason is not None:
            failures.skip(
                reason,  # type: ignore[arg-type]
                msg.partition() or 0,
                msg.offset() or 0,
                found,
                _raw(msg) if failures.wants_raw else None,
            )
            return None, None
        if not extras_wanted:
            return event, ()
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

    def _dispatch_events(
        self,
        client: confluent_kafka.Consumer,
        batch: list[confluent_kafka.Message],
        dispatch: Dispatch,
    ) -> None:
        handler = dispatch.handler
        with_metadata = dispatch.with_metadata
        failures = dispatch.failures
        factory = self._spec.metadata_factory
        timed = self._timed
        done: list[confluent_kafka.Message] = []
        try:
            for msg in batch:
                if self._stop:
                    break  # close(): the rest is read again by the next owner
                err = msg.error()
                if err is not None:
                    self._record_error(client, err)
                    continue
                event, extras = self._decode(msg, failures, with_metadata)
                if event is not None:
                    partition, offset = msg.partition() or 0, msg.offset() or 0
                    self._handling = (partition, offset)
                    try:
                        if with_metadata:
                            args: tuple[object, ...] = (
                                event,
                                factory(msg.topic(), partition, offset, *extras),
                            )
                        else:
                            args = (event,)
                        started = 0
                        if timed:
                            started = time.monotonic_ns()
                            stamp = msg.timestamp()[1]
                            if stamp > 0:
                                self._e2e.add((time.time_ns() // 1_000_000 - stamp) * 1_000_000)
                        error: Exception | None = None
                        try:
                            handler(*args)
                        except Exception as exc:
                            error = exc
                        if timed:
                            self._handler_time.add(time.monotonic_ns() - started)
                        if error is None or failures.failed(
                            handler,
                            args,
                            error,
                            partition,
                            offset,
                            _raw(msg) if failures.wants_raw else None,
                        ):
                            self._handled += 1
                    finally:
                        self._handling = None
                done.append(msg)
        finally:
            # Offsets of the events whose handler returned (or that were skipped), even when a
            # BaseException stops the loop half-way: those events are finished.
            self._store_done(client, done)

    def _dispatch_batch(
        self,
        client: confluent_kafka.Consumer,
        batch: list[confluent_kafka.Message],
        dispatch: Dispatch,
    ) -> None:
        """A batch handler (the async runner) gets every decoded event of the batch and returns
        the ones that failed after its retries, as (index, exception, attempts)."""
        failures = dispatch.failures
        factory = self._spec.metadata_factory
        events: list[Message] = []
        metadatas: list[Any] = []
        where: list[confluent_kafka.Message] = []
        records: list[confluent_kafka.Message] = []
        for msg in batch:
            err = msg.error()
            if err is not None:
                self._record_error(client, err)
                continue
            records.append(msg)
            event, extras = self._decode(msg, failures)
            if event is not None:
                events.append(event)
                metadatas.append(factory(msg.topic(), msg.partition(), msg.offset(), *extras))
                where.append(msg)
        if events:
            first = where[0]
            self._handling = (first.partition() or 0, first.offset() or 0)
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
                    self._topic,
                    exc_info=exc,
                )
            finally:
                self._handling = None
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
        self._store_done(client, records)

    def _store_done(
        self, client: confluent_kafka.Consumer, done: list[confluent_kafka.Message]
    ) -> None:
        """Store offset + 1 of the last finished record of each partition (with its leader
        epoch), and make that the partition's position: once per batch."""
        if not done:
            return
        last: dict[int, confluent_kafka.Message] = {}
        for msg in done:
            partition = msg.partition()
            if partition is not None:
                last[partition] = msg
        offsets = [
            confluent_kafka.TopicPartition(
                self._topic,
                partition,
                (msg.offset() or 0) + 1,
                leader_epoch=msg.leader_epoch(),
            )
            for partition, msg in last.items()
        ]
        with self._lock:
            for tp in offsets:
                if tp.partition in self._positions:
                    self._positions[tp.partition] = tp.offset
        try:
            client.store_offsets(offsets=offsets)
        except confluent_kafka.KafkaException as exc:
            # _STATE: the partition was revoked meanwhile; its new owner reads these events again.
            self._spec.logger.info("consumer of %r: offsets not stored: %s", self._topic, exc)
