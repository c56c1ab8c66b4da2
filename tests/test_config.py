"""Invalid settings fail at construction with a ConfigError naming the field; nothing connects."""

from __future__ import annotations

from typing import Any

import pytest
from testevents_pb2 import Invalidate

import eventstream
from eventstream import ConfigError, EventTypeError, TopicConfig

# Reachability does not matter: construction must not connect anywhere.
GOOD = {"brokers": "127.0.0.1:9092", "topic": "orders", "instance_id": "svc-a"}


def config(**changes: Any) -> TopicConfig:
    return TopicConfig(**{**GOOD, **changes})


def test_valid_config_normalises_brokers_and_names_the_group() -> None:
    cfg = config(brokers=[" 127.0.0.1:9092", "[::1]:9093"])
    assert cfg.brokers == "127.0.0.1:9092,[::1]:9093"
    assert cfg.group_id == "orders::svc-a"


@pytest.mark.parametrize(
    "brokers", ["", " ", [], ",", "127.0.0.1:9092,", "localhost", "host:0", "host:70000", "a b:1"]
)
def test_bad_brokers(brokers: Any) -> None:
    with pytest.raises(ConfigError) as info:
        config(brokers=brokers)
    assert info.value.field == "brokers"
    assert str(info.value).startswith("brokers:")


@pytest.mark.parametrize("topic", ["", "has space", "bad/slash", "ümlaut", "x" * 250, ".", "..", 7])
def test_bad_topic_name(topic: Any) -> None:
    with pytest.raises(ConfigError) as info:
        config(topic=topic)
    assert info.value.field == "topic"


@pytest.mark.parametrize("instance_id", ["", "   ", "tab\there", None])
def test_bad_instance_id(instance_id: Any) -> None:
    with pytest.raises(ConfigError) as info:
        config(instance_id=instance_id)
    assert info.value.field == "instance_id"


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), True, "5"])
def test_bad_delivery_timeout(timeout: Any) -> None:
    with pytest.raises(ConfigError) as info:
        config(delivery_timeout=timeout)
    assert info.value.field == "delivery_timeout"


@pytest.mark.parametrize(
    "field", ["client_properties", "producer_properties", "consumer_properties"]
)
def test_unknown_librdkafka_property(field: str) -> None:
    with pytest.raises(ConfigError) as info:
        config(**{field: {"no.such.property": "1"}})
    assert info.value.field == f"{field}['no.such.property']"


def test_bad_librdkafka_value_names_the_property() -> None:
    with pytest.raises(ConfigError) as info:
        config(producer_properties={"linger.ms": "soon"})
    assert info.value.field == "producer_properties['linger.ms']"


@pytest.mark.parametrize(
    "name",
    [
        "bootstrap.servers",
        "group.id",
        "enable.auto.offset.store",
        "enable.auto.commit",
        "auto.offset.reset",
    ],
)
@pytest.mark.parametrize("field", ["client_properties", "consumer_properties"])
def test_reserved_property(field: str, name: str) -> None:
    with pytest.raises(ConfigError) as info:
        config(**{field: {name: "x"}})
    assert info.value.field == f"{field}[{name!r}]"
    assert "managed by eventstream" in str(info.value)


def test_property_values_must_be_scalars() -> None:
    with pytest.raises(ConfigError) as info:
        config(client_properties={"client.rack": ["a"]})
    assert info.value.field == "client_properties['client.rack']"


def test_config_error_is_a_value_error_and_config_is_immutable() -> None:
    assert issubclass(ConfigError, ValueError)
    cfg = config()
    with pytest.raises(AttributeError):
        cfg.topic = "other"  # type: ignore[misc]


def test_new_topic_rejects_a_class_that_is_not_a_protobuf_message() -> None:
    with pytest.raises(EventTypeError):
        eventstream.new_topic(dict, config())  # type: ignore[type-var]
    with pytest.raises(EventTypeError):
        eventstream.new_noop_topic(str)  # type: ignore[type-var]
    topic = eventstream.new_topic(Invalidate, config())  # makes no network call
    assert topic.type_name == "eventstream.tests.Invalidate"
    assert topic.name == "orders"
    topic.close()
