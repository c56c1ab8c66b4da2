"""Settings of one topic: where the brokers are, which topic, which service instance."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from eventstream._runtime import librdkafka
from eventstream._runtime.admin import is_embedded_cluster
from eventstream._runtime.telemetry.instrumentation import Telemetry
from eventstream.errors import ConfigError, EventStreamError

__all__ = ["TOPIC_NAME", "TopicConfig"]

TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
# Kafka's rule for group.instance.id (and topic names); also a valid URI reference for ce_source.
_INSTANCE_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")
_BROKER = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})")
# librdkafka's message.timeout.ms is an int32 of milliseconds.
_MAX_DELIVERY_TIMEOUT = 2_147_483.647

#: librdkafka properties eventstream sets itself because its guarantees depend on them.
RESERVED_PROPERTIES = MappingProxyType(
    {
        "bootstrap.servers": "set TopicConfig.brokers instead",
        "group.id": 'the group is always "{topic}::{instance_id}"',
        "group.instance.id": (
            "derived from instance_id and the consumer's index (static membership); use "
            "new_consumer(shared=True) for consumers that share partitions across processes"
        ),
        "enable.auto.offset.store": "offsets are stored after each handler returns (at-least-once)",
        "enable.auto.commit": "stored offsets are committed in the background and on close",
        "auto.offset.reset": "use new_consumer(start_from_beginning=...)",
    }
)

# Values that would silently end the promise of an acknowledged, ordered produce.
_PROMISES = {
    "acks": ({"all", "-1"}, "produce() waits until every in-sync replica has the event (acks=all)"),
    "request.required.acks": ({"all", "-1"}, "produce() waits for every in-sync replica"),
    "enable.idempotence": (
        {"true"},
        "idempotence keeps a partition in order across librdkafka's retries",
    ),
}

PropertyValue = str | int | float | bool

# confluent-kafka's callback "properties", and what takes their place.
_CALLBACKS = {
    "error_cb": "TopicConfig(on_error=...)",
    "stats_cb": "TopicConfig(on_statistics=...) (and statistics.interval.ms)",
    "throttle_cb": "TopicConfig(on_statistics=...): throttling is in the statistics",
    "logger": "TopicConfig(logger=...)",
    "on_delivery": "the Deliveries that produce() returns",
    "oauth_cb": "nothing yet: OAUTHBEARER token refresh is not supported",
}

#: Where a property came from, in the order a later one wins.
PropertyField = Literal["client_properties", "producer_properties", "consumer_properties"]


def _property_map(field_name: str, value: object) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError(field_name, f"must be a mapping of librdkafka properties, got {value!r}")
    out: dict[str, str] = {}
    items: Mapping[object, object] = value  # pyright: ignore[reportUnknownVariableType]
    for name, raw in items.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(field_name, f"property names must be non-empty strings, got {name!r}")
        if name in RESERVED_PROPERTIES:
            raise ConfigError(
                f"{field_name}[{name!r}]",
                f"is managed by eventstream: {RESERVED_PROPERTIES[name]}",
            )
        if isinstance(raw, bool):
            text = "true" if raw else "false"
        elif isinstance(raw, str | int | float):
            text = str(raw)
        elif callable(raw) or name in _CALLBACKS:
            instead = _CALLBACKS.get(name, "TopicConfig's on_error, on_statistics or on_metrics")
            raise ConfigError(
                f"{field_name}[{name!r}]",
                f"librdkafka callbacks are not properties here: use {instead}",
            )
        else:
            raise ConfigError(
                f"{field_name}[{name!r}]", f"must be a str, int, float or bool, got {raw!r}"
            )
        promise = _PROMISES.get(name)
        if promise is not None and field_name != "consumer_properties":
            allowed, why = promise
            if text.strip().lower() not in allowed:
                raise ConfigError(
                    f"{field_name}[{name!r}]",
                    f"{text!r} is not supported: {why}; eventstream does not offer weaker "
                    "delivery. Remove the property.",
                )
        out[name] = text
    return MappingProxyType(out)


def _brokers(value: object) -> str:
    if isinstance(value, str):
        items: list[object] = list(value.split(","))
    elif isinstance(value, Sequence):
        items = list(value)  # pyright: ignore[reportUnknownArgumentType]
    else:
        raise ConfigError(
            "brokers",
            f"must be a comma-separated 'host:port' string or a sequence of them, got {value!r}",
        )
    brokers = [b.strip() for b in items if isinstance(b, str) and b.strip()]
    if not brokers or len(brokers) != len(items):
        raise ConfigError(
            "brokers",
            f"must list at least one 'host:port' (a comma-separated string or a sequence), "
            f"got {value!r}",
        )
    for broker in brokers:
        if "://" in broker or "/" in broker:
            raise ConfigError(
                "brokers",
                f"{broker!r} is not a 'host:port' address: write the brokers without a scheme "
                "or a path (the protocol is client_properties['security.protocol'])",
            )
        match = _BROKER.fullmatch(broker)
        if match is None or not 0 < int(match.group(1)) < 65536:
            raise ConfigError("brokers", f"{broker!r} is not a 'host:port' address")
    return ",".join(brokers)


def _seconds(name: str, value: object, low: float, high: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise ConfigError(
            name, f"must be a number of seconds from {low:g} to {high:g}, got {value!r}"
        )
    return float(value)


def _strings(properties: Mapping[str, PropertyValue]) -> Mapping[str, str]:
    # After __post_init__ every value is a string; this narrows the declared type.
    return {k: str(v) for k, v in properties.items()}


@dataclass(frozen=True, kw_only=True)
class TopicConfig:
    """Where and as whom one topic is used. Immutable; validated at construction.

    ``brokers`` is a comma-separated ``host:port`` string or a sequence of them. ``instance_id``
    names this service instance (1-200 letters, digits, ``.``, ``_``, ``-``): it is the
    ``ce_source`` of what it produces and makes its consumer group ``"{topic}::{instance_id}"``.
    Keep it stable across restarts and give every process that holds a cache its own.

    ``client_properties`` are librdkafka properties for both producers and consumers (TLS, SASL,
    tuning); ``producer_properties``/``consumer_properties`` apply to one side and win over
    ``client_properties``. ``delivery_timeout`` bounds how long librdkafka retries one event.

    ``on_error(error)`` is called (on a background thread, once per occurrence) with every error
    the application should know about: a client that failed (authentication, a fatal error), no
    broker reachable for ``disconnected_after`` seconds, events skipped by retention, ... Its
    exceptions are logged, never raised.

    ``metrics=True`` makes consumers time their handlers and the end-to-end latency and report
    their lag (counters are always kept: ``producer.metrics()``, ``consumer.metrics()``);
    ``on_metrics(snapshot)`` gets every client's metrics every ``metrics_interval`` seconds (and
    implies ``metrics``); ``on_statistics(stats)`` gets librdkafka's statistics, parsed, at
    ``statistics.interval.ms`` (1000 by default). All three callbacks run on a background thread.
    ``telemetry`` instruments produce calls and handlers (``eventstream.otel.OpenTelemetry()``
    for traces and metrics in OpenTelemetry); without it nothing is added per event.

    Raises :class:`~eventstream.ConfigError` naming the field for any invalid value, including a
    property librdkafka does not know or a value it rejects (a combination of properties
    librdkafka refuses is reported when a producer or consumer makes its client). Makes no
    client and no network call.
    """

    brokers: str | Sequence[str]
    topic: str
    instance_id: str
    client_properties: Mapping[str, PropertyValue] = field(default_factory=dict[str, PropertyValue])
    producer_properties: Mapping[str, PropertyValue] = field(
        default_factory=dict[str, PropertyValue]
    )
    consumer_properties: Mapping[str, PropertyValue] = field(
        default_factory=dict[str, PropertyValue]
    )
    delivery_timeout: float = 30.0
    disconnected_after: float = 5.0
    on_error: Callable[[EventStreamError], object] | None = None
    metrics: bool = False
    on_metrics: Callable[[Any], object] | None = None
    metrics_interval: float = 10.0
    on_statistics: Callable[[dict[str, Any]], object] | None = None
    telemetry: Telemetry | None = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("eventstream"))

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "brokers", _brokers(self.brokers))
        if not isinstance(self.topic, str) or not TOPIC_NAME.fullmatch(self.topic):
            raise ConfigError(
                "topic",
                f"{self.topic!r} is not a legal Kafka topic name "
                "(1-249 characters of letters, digits, '.', '_' and '-')",
            )
        if self.topic in (".", ".."):
            raise ConfigError("topic", f"{self.topic!r} is not a legal Kafka topic name")
        if not isinstance(self.instance_id, str) or not _INSTANCE_ID.fullmatch(self.instance_id):
            shown = self.instance_id
            if isinstance(shown, str) and len(shown) > 60:
                shown = f"{shown[:60]}... ({len(shown)} characters)"
            raise ConfigError(
                "instance_id",
                f"must be 1-200 characters of letters, digits, '.', '_' and '-' (a host name or "
                f"a pod name fits), got {shown!r}",
            )
        set_(
            self,
            "delivery_timeout",
            _seconds("delivery_timeout", self.delivery_timeout, 0.001, _MAX_DELIVERY_TIMEOUT),
        )
        set_(
            self,
            "disconnected_after",
            _seconds("disconnected_after", self.disconnected_after, 0.0, 86_400.0),
        )
        for name in ("on_error", "on_metrics", "on_statistics"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise ConfigError(name, f"must be a callable or None, got {value!r}")
        if self.telemetry is not None and not all(
            callable(getattr(self.telemetry, name, None)) for name in ("send", "process")
        ):
            raise ConfigError(
                "telemetry",
                f"must have send() and process() (e.g. eventstream.otel.OpenTelemetry()), got "
                f"{self.telemetry!r}",
            )
        if not isinstance(self.metrics, bool):
            raise ConfigError("metrics", f"must be True or False, got {self.metrics!r}")
        set_(
            self,
            "metrics_interval",
            _seconds("metrics_interval", self.metrics_interval, 0.1, 86_400.0),
        )
        if not isinstance(self.logger, logging.Logger):
            raise ConfigError("logger", f"must be a logging.Logger, got {self.logger!r}")
        for name in ("client_properties", "producer_properties", "consumer_properties"):
            set_(self, name, _property_map(name, getattr(self, name)))
        self._check_properties()

    @property
    def group_id(self) -> str:
        """The consumer group of this instance: ``"{topic}::{instance_id}"``."""
        return f"{self.topic}::{self.instance_id}"

    @property
    def metrics_enabled(self) -> bool:
        """Whether clients keep the metrics that cost a clock read per event (and the lag)."""
        return self.metrics or self.on_metrics is not None

    @property
    def uses_consumer_protocol(self) -> bool:
        """Whether consumers use KIP-848's ``group.protocol=consumer`` (else the classic one)."""
        conf = {**_strings(self.client_properties), **_strings(self.consumer_properties)}
        return conf.get("group.protocol", "classic").strip().lower() == "consumer"

    def _common_settings(self) -> dict[str, str]:
        return {
            "bootstrap.servers": str(self.brokers),
            "client.id": f"eventstream-{self.instance_id}",
            # Statistics about once a second tell the client's connection state (ClientStatus).
            "statistics.interval.ms": "1000",
            # Partitions added to the topic reach producers and consumers within seconds
            # (librdkafka's default is 5 minutes): one small Metadata request per interval.
            "topic.metadata.refresh.interval.ms": "3000",
            # Topics are made by Topic.ensure_exists() only: a producer or consumer of a missing
            # (or just deleted) topic must not create it with the broker's defaults.
            "allow.auto.create.topics": "false",
        }

    def producer_settings(self) -> dict[str, str]:
        """The complete librdkafka configuration of a producer of this topic."""
        conf = self._common_settings()
        conf.update(
            {
                # Blocking produce waits for every in-sync replica; idempotence keeps a
                # partition's order across librdkafka's internal retries.
                "acks": "all",
                "enable.idempotence": "true",
                # librdkafka gathers a call's events into few requests while they are enqueued
                # (at linger.ms=0 a call of 1000 goes out in ~16); once a call has enqueued
                # everything, both backends make librdkafka send at once (flush), so no call
                # waits out the linger.
                "linger.ms": "5",
                "message.timeout.ms": str(max(1, round(self.delivery_timeout * 1000))),
                # A topic missing from the metadata this long fails its events at once (not
                # written) instead of waiting out delivery_timeout: eventstream never creates
                # topics implicitly (allow.auto.create.topics=false).
                "topic.metadata.propagation.max.ms": "5000",
                # The Java client's partitioner (murmur2 of the key): a key lands on the same
                # partition whichever client produced it, and an empty key is a key (librdkafka's
                # default, consistent_random, scatters empty keys).
                "partitioner": "murmur2_random",
            }
        )
        conf.update(_strings(self.client_properties))
        conf.update(_strings(self.producer_properties))
        return conf

    def consumer_settings(self, *, group_instance_id: str | None = None) -> dict[str, str]:
        """The complete librdkafka configuration of a consumer of this topic;
        ``group_instance_id`` makes it a static member of the group. (Where a new group starts
        is the consumer spec's ``start_from_beginning``: see the comment on auto.offset.reset.)"""
        conf = self._common_settings()
        conf.update(
            {
                "group.id": self.group_id,
                # At-least-once: an offset is stored only after its handler returned, and
                # librdkafka commits stored offsets in the background, on revoke and on close.
                "enable.auto.offset.store": "false",
                "enable.auto.commit": "true",
                "auto.commit.interval.ms": "1000",
                # Where a partition starts is pinned at assignment (start_from_beginning says
                # which end a group without committed offsets takes). librdkafka resets by itself
                # only when that fails or a fetch position falls out of the log: then the oldest
                # retained event, so that nothing retained is skipped (reported as a gap).
                "auto.offset.reset": "earliest",
                "enable.partition.eof": "false",
                # Cache invalidation wants events promptly, not in large fetches.
                "fetch.wait.max.ms": "100",
                # A partition whose local queue was full waits this long before its next fetch
                # (librdkafka's default is 1000): at 1000 a consumer that drains its queue faster
                # stalls for most of a second, reading a backlog of 150k events at 6 partitions
                # took 1.17 s instead of 0.40 s.
                "fetch.queue.backoff.ms": "10",
            }
        )
        if not self.uses_consumer_protocol:
            # KIP-848's protocol assigns on the broker and refuses this property.
            conf["partition.assignment.strategy"] = "cooperative-sticky"
        if group_instance_id is not None:
            conf["group.instance.id"] = group_instance_id
        if is_embedded_cluster(str(self.brokers)):
            # librdkafka's mock cluster knows members by member id only, not group.instance.id,
            # and waits up to the session timeout (less 1 s) for a rebalance's members: a
            # consumer restarted with the same instance id left a member behind that held the
            # new one's assignment for ~90 s at librdkafka's default 45 s. At 6 s it is ~11 s.
            conf["session.timeout.ms"] = "6000"
            conf["heartbeat.interval.ms"] = "1000"
        conf.update(_strings(self.client_properties))
        conf.update(_strings(self.consumer_properties))
        return conf

    def _check_properties(self) -> None:
        """Each property, as librdkafka's configuration API sees it (no client is made: a
        combination librdkafka refuses is reported when the client is made, by
        :meth:`client_refused`)."""
        for field_name in ("client_properties", "producer_properties", "consumer_properties"):
            mapping: Mapping[str, PropertyValue] = getattr(self, field_name)
            for name, value in mapping.items():
                error = librdkafka.property_error(name, str(value))
                if error is not None:
                    raise ConfigError(f"{field_name}[{name!r}]", error)

    def client_refused(self, kind: Literal["producer", "consumer"], reason: str) -> ConfigError:
        """The error for librdkafka refusing to make a ``kind`` client from this configuration
        (a combination of properties that are each fine: e.g. max.poll.interval.ms below
        session.timeout.ms), naming the mappings and properties it came from."""
        specific = "producer_properties" if kind == "producer" else "consumer_properties"
        mappings = [f for f in ("client_properties", specific) if getattr(self, f)] or [specific]
        names = (
            ", ".join(repr(n) for f in mappings for n in getattr(self, f))
            or "eventstream's defaults"
        )
        return ConfigError(
            " and ".join(mappings),
            f"librdkafka refuses this {kind} configuration ({names}): {reason}",
        )
