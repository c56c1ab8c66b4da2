"""Settings of one topic: where the brokers are, which topic, which service instance."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from eventstream.errors import ConfigError

__all__ = ["TopicConfig"]

_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
_BROKER = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})")

#: librdkafka properties eventstream sets itself because its guarantees depend on them.
RESERVED_PROPERTIES = MappingProxyType(
    {
        "bootstrap.servers": "set TopicConfig.brokers instead",
        "group.id": 'the group is always "{topic}::{instance_id}"',
        "enable.auto.offset.store": "offsets are stored after each handler returns (at-least-once)",
        "enable.auto.commit": "stored offsets are committed in the background and on close",
        "auto.offset.reset": "use new_consumer(start_from_beginning=...)",
    }
)

PropertyValue = str | int | float | bool


def _property_map(field_name: str, value: Mapping[str, PropertyValue]) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError(field_name, f"must be a mapping of librdkafka properties, got {value!r}")
    out: dict[str, str] = {}
    for name, raw in value.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(field_name, f"property names must be non-empty strings, got {name!r}")
        if name in RESERVED_PROPERTIES:
            raise ConfigError(
                f"{field_name}[{name!r}]",
                f"is managed by eventstream: {RESERVED_PROPERTIES[name]}",
            )
        if isinstance(raw, bool):
            out[name] = "true" if raw else "false"
        elif isinstance(raw, str | int | float):
            out[name] = str(raw)
        else:
            raise ConfigError(
                f"{field_name}[{name!r}]", f"must be a str, int, float or bool, got {raw!r}"
            )
    return MappingProxyType(out)


def _brokers(value: str | Sequence[str]) -> str:
    items = value.split(",") if isinstance(value, str) else list(value)
    brokers = [b.strip() for b in items if isinstance(b, str) and b.strip()]
    if not brokers or len(brokers) != len(items):
        raise ConfigError(
            "brokers",
            f"must list at least one 'host:port' (a comma-separated string or a sequence), "
            f"got {value!r}",
        )
    for broker in brokers:
        address = broker.split("://", 1)[-1]
        match = _BROKER.fullmatch(address)
        if match is None or not 0 < int(match.group(1)) < 65536:
            raise ConfigError("brokers", f"{broker!r} is not a 'host:port' address")
    return ",".join(brokers)


def _strings(properties: Mapping[str, PropertyValue]) -> Mapping[str, str]:
    # After __post_init__ every value is a string; this narrows the declared type.
    return {k: str(v) for k, v in properties.items()}


@dataclass(frozen=True, kw_only=True)
class TopicConfig:
    """Where and as whom one topic is used. Immutable; validated at construction.

    ``brokers`` is a comma-separated ``host:port`` string or a sequence of them. ``instance_id``
    names this service instance: it is the ``ce_source`` of what it produces and makes its consumer
    group ``"{topic}::{instance_id}"``, so it should be stable across restarts.

    ``client_properties`` are librdkafka properties for both producers and consumers (TLS, SASL,
    tuning); ``producer_properties``/``consumer_properties`` apply to one side and win over
    ``client_properties``. ``delivery_timeout`` bounds how long librdkafka retries one event.

    Raises :class:`~eventstream.ConfigError` naming the field for any invalid value, including a
    property librdkafka does not know or a value it rejects. Makes no network call.
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
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("eventstream"))

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "brokers", _brokers(self.brokers))
        if not isinstance(self.topic, str) or not _TOPIC_NAME.fullmatch(self.topic):
            raise ConfigError(
                "topic",
                f"{self.topic!r} is not a legal Kafka topic name "
                "(1-249 characters of letters, digits, '.', '_' and '-')",
            )
        if self.topic in (".", ".."):
            raise ConfigError("topic", f"{self.topic!r} is not a legal Kafka topic name")
        if not isinstance(self.instance_id, str) or not self.instance_id.strip():
            raise ConfigError(
                "instance_id", f"must be a non-empty string, got {self.instance_id!r}"
            )
        if any(not ch.isprintable() for ch in self.instance_id):
            raise ConfigError("instance_id", f"must be printable, got {self.instance_id!r}")
        if (
            isinstance(self.delivery_timeout, bool)
            or not isinstance(self.delivery_timeout, int | float)
            or not math.isfinite(self.delivery_timeout)
            or self.delivery_timeout < 0.001
        ):
            raise ConfigError(
                "delivery_timeout",
                f"must be a positive number of seconds, got {self.delivery_timeout!r}",
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

    def producer_settings(self) -> dict[str, str]:
        """The complete librdkafka configuration of a producer of this topic."""
        conf = {
            "bootstrap.servers": str(self.brokers),
            "client.id": f"eventstream-{self.instance_id}",
            # Blocking produce waits for every in-sync replica; idempotence keeps a partition's
            # order across librdkafka's internal retries.
            "acks": "all",
            "enable.idempotence": "true",
            # librdkafka gathers a call's events into few requests while they are enqueued (at
            # linger.ms=0 a call of 1000 goes out in ~16); once a call has enqueued everything,
            # both backends make librdkafka send at once (flush), so no call waits out the linger.
            "linger.ms": "5",
            "message.timeout.ms": str(max(1, round(self.delivery_timeout * 1000))),
        }
        conf.update(_strings(self.client_properties))
        conf.update(_strings(self.producer_properties))
        return conf

    def consumer_settings(self, *, start_from_beginning: bool) -> dict[str, str]:
        """The complete librdkafka configuration of a consumer of this topic."""
        conf = {
            "bootstrap.servers": str(self.brokers),
            "client.id": f"eventstream-{self.instance_id}",
            "group.id": self.group_id,
            # At-least-once: an offset is stored only after its handler returned, and librdkafka
            # commits stored offsets in the background, on revoke and on close.
            "enable.auto.offset.store": "false",
            "enable.auto.commit": "true",
            "auto.commit.interval.ms": "1000",
            "auto.offset.reset": "earliest" if start_from_beginning else "latest",
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.partition.eof": "false",
            # Cache invalidation wants events promptly, not in large fetches.
            "fetch.wait.max.ms": "100",
        }
        conf.update(_strings(self.client_properties))
        conf.update(_strings(self.consumer_properties))
        return conf

    def _check_properties(self) -> None:
        from eventstream.backend import load_backend

        check = load_backend().check_properties
        for field_name, conf in (
            ("producer_properties", self.producer_settings()),
            ("consumer_properties", self.consumer_settings(start_from_beginning=False)),
        ):
            try:
                check(conf)
            except ValueError as exc:
                name = str(exc).split(":", 1)[0]
                where = field_name if name in self.__dict__[field_name] else "client_properties"
                reason = str(exc).split(":", 1)[-1].strip()
                raise ConfigError(f"{where}[{name!r}]", reason) from None
