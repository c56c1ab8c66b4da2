"""Consumer of the pure-Python backend: confluent_kafka.Consumer driven by one poll thread."""

from __future__ import annotations

import threading
from typing import Any, cast

import confluent_kafka
from google.protobuf.message import DecodeError, Message

from eventstream import wire
from eventstream.backend import ConsumerSpec, Dispatch, DispatchAbandoned
from eventstream.errors import BrokerError, ClosedError, is_retriable
from eventstream.librdkafka_log import ClientLog

__all__ = ["PureConsumer"]

_BATCH = 500
_FIRST_WAIT = 0.1  # seconds the poll thread blocks for a first record; bounds close() latency
_CONTENT_TYPE = wire.HEADER_CONTENT_TYPE
_TYPE = wire.HEADER_TYPE
_SOURCE = wire.HEADER_SOURCE
_ID = wire.HEADER_ID


class PureConsumer:
    """One confluent-kafka consumer and the thread that polls it and runs the handler."""

    def __init__(self, spec: ConsumerSpec) -> None:
        self._spec = spec
        self._client: confluent_kafka.Consumer | None = None
        self._thread: threading.Thread | None = None
        self._stop = False
        self._closed = False
        self._failure: BaseException | None = None
        self._lock = threading.Lock()
        self._positions: dict[int, int] = {}  # assigned partition -> next offset to handle
        props = spec.properties
        self._cooperative = "cooperative" in props.get("partition.assignment.strategy", "") or (
            props.get("group.protocol") == "consumer"
        )
        self._from_beginning = props.get("auto.offset.reset") in (
            "earliest",
            "smallest",
            "beginning",
        )

    def start(self, dispatch: Dispatch) -> None:
        with self._lock:
            if self._closed:
                raise ClosedError("the consumer is closed")
            conf: dict[str, object] = dict(self._spec.properties)
            conf["error_cb"] = self._on_client_error
            conf["logger"] = ClientLog(self._spec.logger)
            client = confluent_kafka.Consumer(conf)
            # confluent-kafka assigns (incrementally, for the cooperative protocol) after these
            # callbacks return; they run on the poll thread.
            client.subscribe(
                [self._spec.topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_revoke,
            )
            self._client = client
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
        with self._lock:
            if self._closed:
                return {}
            return dict(self._positions)

    def _on_assign(
        self, client: confluent_kafka.Consumer, partitions: list[confluent_kafka.TopicPartition]
    ) -> None:
        # Resolve where each partition starts (its committed offset, else the end that
        # auto.offset.reset names) and assign at exactly that offset: the position reported by
        # assignment() is then where reading starts, and an event produced after
        # wait_until_assigned() returns cannot fall before it.
        try:
            resolved = [
                confluent_kafka.TopicPartition(
                    tp.topic, tp.partition, self._start_offset(client, tp)
                )
                for tp in client.committed(partitions, timeout=10)
            ]
        except confluent_kafka.KafkaException as exc:
            self._spec.logger.warning("could not resolve start offsets, librdkafka will: %s", exc)
            resolved = partitions
        if self._cooperative:
            client.incremental_assign(resolved)
        else:
            client.assign(resolved)
        with self._lock:
            for tp in resolved:
                self._positions[tp.partition] = tp.offset

    def _start_offset(
        self, client: confluent_kafka.Consumer, committed: confluent_kafka.TopicPartition
    ) -> int:
        if committed.error is not None:
            # Unknown whether an offset is committed: let librdkafka decide (caught by caller).
            raise confluent_kafka.KafkaException(committed.error)
        if committed.offset >= 0:
            return int(committed.offset)
        low, high = client.get_watermark_offsets(
            confluent_kafka.TopicPartition(committed.topic, committed.partition),
            timeout=10,
            cached=False,
        )
        return int(low if self._from_beginning else high)

    def _on_revoke(self, _client: object, partitions: list[confluent_kafka.TopicPartition]) -> None:
        with self._lock:
            for tp in partitions:
                self._positions.pop(tp.partition, None)

    def close(self, timeout: float) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop = True
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                self._spec.logger.error(
                    "consumer of %r: the handler did not return within %g s of close(); "
                    "its partitions will be read again by the next consumer of the group",
                    self._spec.topic,
                    timeout,
                )
        failure = self._failure
        if failure is not None and not isinstance(failure, DispatchAbandoned):
            raise failure

    # -- the poll thread ------------------------------------------------------------------------

    def _on_client_error(self, err: confluent_kafka.KafkaError) -> None:
        if err.fatal():
            self._failure = BrokerError(
                f"consumer fatal error: {err.name()}: {err.str()}",
                code=err.code(),
                name=err.name(),
                retriable=False,
                fatal=True,
            )
            self._stop = True
        elif err.code() not in (
            confluent_kafka.KafkaError._TRANSPORT,
            confluent_kafka.KafkaError._ALL_BROKERS_DOWN,
        ):
            self._spec.logger.warning("consumer error: %s: %s", err.name(), err.str())

    def _run(self, client: confluent_kafka.Consumer, dispatch: Dispatch) -> None:
        try:
            while not self._stop:
                first = client.poll(_FIRST_WAIT)
                if first is None:
                    continue
                batch = [first]
                if not self._stop:
                    batch.extend(client.consume(_BATCH - 1, 0))
                if dispatch.mode == "event":
                    self._dispatch_events(client, batch, dispatch)
                else:
                    self._dispatch_batch(client, batch, dispatch)
        except BaseException as exc:  # recorded and re-raised by close()
            if self._failure is None:
                self._failure = exc
        finally:
            try:
                client.close()  # commits stored offsets and leaves the group
            except Exception as exc:
                self._spec.logger.warning("consumer close failed: %s", exc)

    def _decode(self, msg: confluent_kafka.Message) -> tuple[Message, Any] | None:
        """Decode one record; ``None`` if it is skipped (already logged). Returns the event and
        its ``(key, timestamp, source, id)`` extras."""
        spec = self._spec
        err = msg.error()
        if err is not None:
            if err.fatal():
                raise BrokerError(
                    f"consumer fatal error: {err.name()}: {err.str()}",
                    code=err.code(),
                    name=err.name(),
                    retriable=False,
                    fatal=True,
                )
            if err.code() == confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART:
                # Normal until the topic is created (or auto-created by its first producer).
                spec.logger.info("topic %r does not exist yet; waiting for it", spec.topic)
                return None
            spec.logger.warning(
                "consumer error: %s: %s%s",
                err.name(),
                err.str(),
                "" if is_retriable(err.code()) else " (permanent)",
            )
            return None
        source = event_id = None
        # Received headers are always a list of (name, bytes or None); the stubs allow more.
        headers = cast("list[tuple[str, bytes | None]] | None", msg.headers())
        if headers:
            for name, value in headers:
                if name == _TYPE:
                    if value is None or value.decode(errors="replace") != spec.type_name:
                        spec.logger.warning(
                            "skipping event at %s[%d]@%d: ce_type %r is not %r",
                            msg.topic(),
                            msg.partition(),
                            msg.offset(),
                            value.decode(errors="replace") if value is not None else None,
                            spec.type_name,
                        )
                        return None
                elif name == _SOURCE:
                    source = value.decode(errors="replace") if value is not None else None
                elif name == _ID:
                    event_id = value.decode(errors="replace") if value is not None else None
                elif name == _CONTENT_TYPE and value not in wire.ACCEPTED_CONTENT_TYPES:
                    spec.logger.warning(
                        "skipping event at %s[%d]@%d: content-type %r is not protobuf",
                        msg.topic(),
                        msg.partition(),
                        msg.offset(),
                        value.decode(errors="replace") if value is not None else None,
                    )
                    return None
        try:
            event = spec.event_type.FromString(msg.value() or b"")
        except (DecodeError, RuntimeError, ValueError) as exc:
            spec.logger.error(
                "skipping event at %s[%d]@%d: value does not decode as %s: %s",
                msg.topic(),
                msg.partition(),
                msg.offset(),
                spec.type_name,
                exc,
            )
            return None
        return event, (msg.key(), msg.timestamp()[1], source, event_id)

    def _metadata(self, msg: confluent_kafka.Message, extras: Any) -> Any:
        key, timestamp, source, event_id = extras
        return self._spec.metadata_factory(
            msg.topic(), msg.partition(), msg.offset(), key, timestamp, source, event_id
        )

    def _dispatch_events(
        self,
        client: confluent_kafka.Consumer,
        batch: list[confluent_kafka.Message],
        dispatch: Dispatch,
    ) -> None:
        handler = dispatch.handler
        with_metadata = dispatch.with_metadata
        logger = self._spec.logger
        done: list[confluent_kafka.Message] = []
        try:
            for msg in batch:
                if self._stop:
                    break
                decoded = self._decode(msg)
                if decoded is not None:
                    event, extras = decoded
                    try:
                        if with_metadata:
                            handler(event, self._metadata(msg, extras))
                        else:
                            handler(event)
                    except Exception as exc:
                        logger.error(
                            "handler failed for event at %s[%d]@%d",
                            msg.topic(),
                            msg.partition(),
                            msg.offset(),
                            exc_info=exc,
                        )
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
        events: list[Message] = []
        metadatas: list[Any] = []
        for msg in batch:
            decoded = self._decode(msg)
            if decoded is not None:
                event, extras = decoded
                events.append(event)
                metadatas.append(self._metadata(msg, extras))
        if events:
            try:
                dispatch.handler(events, metadatas)
            except Exception as exc:
                self._spec.logger.error(
                    "batch handler failed for %d events of %r",
                    len(events),
                    self._spec.topic,
                    exc_info=exc,
                )
        self._store(client, batch)

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
