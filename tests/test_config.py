"""Invalid settings fail at construction with a ConfigError naming the field; nothing connects."""

from __future__ import annotations

import os
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


# -- limits and promises ------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [4294967.296, 2.2e6, 1e300])
def test_delivery_timeout_beyond_librdkafkas_range_is_refused(timeout: float) -> None:
    # message.timeout.ms is an int32: larger values would wrap (4294967.296 s -> 0: no timeout).
    with pytest.raises(ConfigError) as info:
        config(delivery_timeout=timeout)
    assert info.value.field == "delivery_timeout"


def test_the_largest_delivery_timeout_librdkafka_takes_is_accepted() -> None:
    cfg = config(delivery_timeout=2_147_483.647)
    assert cfg.producer_settings()["message.timeout.ms"] == "2147483647"


@pytest.mark.parametrize("brokers", [None, 7, b"127.0.0.1:9092", {"a": 1}])
def test_brokers_of_the_wrong_type(brokers: Any) -> None:
    with pytest.raises(ConfigError) as info:
        config(brokers=brokers)
    assert info.value.field == "brokers"


@pytest.mark.parametrize(
    "instance_id", ["x" * 40_000, "x" * 201, "api pod 7", "api:7", "api/7", "üml", "tab\tx"]
)
def test_instance_ids_follow_kafkas_group_instance_id_rule(instance_id: str) -> None:
    with pytest.raises(ConfigError) as info:
        config(instance_id=instance_id)
    assert info.value.field == "instance_id"
    assert len(str(info.value)) < 400  # a 40,000-character id is not echoed whole


@pytest.mark.parametrize("instance_id", ["api-7", "api_7.eu-west-1", "x" * 200, "."])
def test_valid_instance_ids(instance_id: str) -> None:
    assert config(instance_id=instance_id).group_id == f"orders::{instance_id}"


@pytest.mark.parametrize(
    ("field", "name", "value"),
    [
        ("producer_properties", "acks", "0"),
        ("producer_properties", "acks", "1"),
        ("client_properties", "acks", 1),
        ("producer_properties", "request.required.acks", "1"),
        ("producer_properties", "enable.idempotence", False),
        ("client_properties", "enable.idempotence", "false"),
    ],
)
def test_settings_that_would_end_the_acknowledged_produce_promise_are_refused(
    field: str, name: str, value: Any
) -> None:
    with pytest.raises(ConfigError) as info:
        config(**{field: {name: value}})
    assert info.value.field == f"{field}[{name!r}]"
    assert "not supported" in str(info.value)


def test_the_promised_values_may_be_given_explicitly() -> None:
    cfg = config(producer_properties={"acks": "all", "enable.idempotence": True})
    assert cfg.producer_settings()["acks"] == "all"


def test_consumer_properties_are_checked_at_construction() -> None:
    with pytest.raises(ConfigError) as info:
        config(consumer_properties={"session.timeout.ms": "soon"})
    assert info.value.field == "consumer_properties['session.timeout.ms']"


def test_a_combination_librdkafka_refuses_names_the_mapping_and_the_properties() -> None:
    """Each is fine alone, so the config is made (without a client); together librdkafka refuses
    them (max.poll.interval.ms must be at least session.timeout.ms) when the consumer makes its
    client, and the error names the mapping and the properties."""
    cfg = config(
        consumer_properties={"session.timeout.ms": "60000", "max.poll.interval.ms": "50000"}
    )
    topic = eventstream.new_topic(Invalidate, cfg)
    consumer = topic.new_consumer()
    with pytest.raises(ConfigError) as info:
        consumer.consume(lambda event: None)
    assert info.value.field == "consumer_properties"
    assert "'session.timeout.ms'" in str(info.value) and "'max.poll.interval.ms'" in str(info.value)
    topic.close()


def test_a_producer_combination_is_refused_when_the_producer_is_made() -> None:
    cfg = config(
        producer_properties={
            "transactional.id": "t",
            "enable.idempotence": "true",
            "max.in.flight.requests.per.connection": "10",
        }
    )
    topic = eventstream.new_topic(Invalidate, cfg)
    with pytest.raises(ConfigError) as info:
        topic.new_producer()
    assert info.value.field == "producer_properties"
    assert "'max.in.flight.requests.per.connection'" in str(info.value)
    topic.close()


def test_making_a_config_starts_no_client() -> None:
    """librdkafka's threads (rdk:main, rdk:broker...) start with a client: none may appear."""
    before = _native_threads()
    config(
        client_properties={"socket.timeout.ms": "20000"},
        consumer_properties={"fetch.wait.max.ms": "50"},
    )
    started = _native_threads() - before
    assert not any(name.startswith("rdk:") for _tid, name in started), started


def test_kip848_protocol_gets_no_assignment_strategy_and_refuses_classic_only_settings() -> None:
    cfg = config(consumer_properties={"group.protocol": "consumer"})
    settings = cfg.consumer_settings()
    assert "partition.assignment.strategy" not in settings
    assert cfg.uses_consumer_protocol
    topic = eventstream.new_topic(
        Invalidate,
        config(consumer_properties={"group.protocol": "consumer", "session.timeout.ms": "6000"}),
    )
    with pytest.raises(ConfigError) as info:
        topic.new_consumer().consume(lambda event: None)
    assert info.value.field.startswith("consumer_properties")
    topic.close()


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), True, "5", 86_401])
def test_bad_disconnected_after(value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        config(disconnected_after=value)
    assert info.value.field == "disconnected_after"


def test_on_error_must_be_callable() -> None:
    with pytest.raises(ConfigError) as info:
        config(on_error="print")
    assert info.value.field == "on_error"


@pytest.mark.parametrize("timeout", [-1, float("nan"), "1", True])
def test_a_bad_produce_timeout_is_refused_before_anything_is_sent(timeout: Any) -> None:
    # The broker address is closed: a call that sent anything would hang or time out instead.
    with eventstream.new_topic(Invalidate, config(brokers="127.0.0.1:9")) as topic:
        producer = topic.new_producer()
        with pytest.raises(ConfigError) as info:
            producer.produce(Invalidate(seq=1), timeout=timeout)
        assert info.value.field == "timeout"
        assert producer.status.state == "connecting"


def test_every_misuse_of_the_public_api_is_an_eventstream_error() -> None:
    from eventstream import ArgumentTypeError, EventStreamError, WaitTimeoutError
    from eventstream.testing import EventRecorder

    with pytest.raises(ArgumentTypeError) as bad_config:
        eventstream.new_topic(Invalidate, {"brokers": "x"})  # type: ignore[arg-type]
    assert isinstance(bad_config.value, TypeError)
    with eventstream.new_topic(Invalidate, config()) as topic:
        with pytest.raises(ArgumentTypeError):
            topic.new_producer(key="user_id")  # type: ignore[arg-type]
        with pytest.raises(ArgumentTypeError):
            topic.new_consumer().consume("print")  # type: ignore[call-overload]
        with pytest.raises(ConfigError) as bad_count:
            topic.ensure_exists(partitions=0)
        assert bad_count.value.field == "partitions"
    with pytest.raises(WaitTimeoutError) as waited:
        EventRecorder[Invalidate]().wait_for(1, timeout=0.01)
    assert isinstance(waited.value, TimeoutError) and isinstance(waited.value, EventStreamError)


@pytest.mark.parametrize(
    ("name", "instead"),
    [("stats_cb", "on_statistics"), ("error_cb", "on_error"), ("oauth_cb", "not supported")],
)
def test_callback_properties_say_what_takes_their_place(name: str, instead: str) -> None:
    with pytest.raises(ConfigError) as info:
        config(client_properties={name: print})
    assert info.value.field == f"client_properties[{name!r}]"
    assert instead in str(info.value)


def _native_threads() -> set[tuple[str, str]]:
    """(id, name) of this process's threads as the OS sees them (librdkafka's are rdk:...)."""
    threads = set()
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                threads.add((task, f.read().strip()))
        except OSError:  # ended meanwhile
            pass
    return threads


@pytest.mark.parametrize(
    "brokers", ["http://localhost:9092", "PLAINTEXT://kafka:9092", "kafka:9092/path"]
)
def test_a_broker_address_with_a_scheme_or_a_path_is_refused(brokers: str) -> None:
    with pytest.raises(ConfigError) as info:
        config(brokers=brokers)
    assert info.value.field == "brokers" and "without a scheme or a path" in str(info.value)
