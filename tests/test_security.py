"""Credentials, TLS and permissions on a real SASL_SSL listener (the harness's ``--security``).

Bad credentials are not a transient outage: librdkafka retries them forever, but eventstream
reports them at once, once, as :class:`AuthenticationError` / :class:`AuthorizationError`, with
what to fix: a producer fails what it queued and refuses further calls, a consumer stops, goes
to ``failed`` and ``close()`` raises, ``ensure_exists``/``wait_until_ready`` raise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kafka_harness import ClusterSecurity
from support import Collector, ErrorLog, wait_until
from testevents_pb2 import Invalidate

import eventstream
from eventstream import (
    AuthenticationError,
    AuthorizationError,
    BrokerError,
    ProduceError,
)
from eventstream.errors import ProduceAuthenticationError, ProduceAuthorizationError

pytestmark = pytest.mark.timeout(90)


def secure_config(
    sec: ClusterSecurity, topic: str, properties: dict[str, str], **fields: Any
) -> eventstream.TopicConfig:
    props = dict(properties)
    brokers = props.pop("bootstrap.servers")
    return eventstream.TopicConfig(
        brokers=brokers, topic=topic, instance_id="svc-sec", client_properties=props, **fields
    )


@pytest.fixture
def created_topic(kafka_security: ClusterSecurity, topic_name: str) -> str:
    """The test's topic, created by alice (who may) over SASL_SSL through eventstream."""
    with eventstream.new_topic(
        Invalidate, secure_config(kafka_security, topic_name, kafka_security.client_properties())
    ) as topic:
        assert topic.ensure_exists(partitions=1, timeout=30) is True
    return topic_name


def test_round_trip_with_good_credentials(
    kafka_security: ClusterSecurity, created_topic: str, collector: Collector
) -> None:
    errors = ErrorLog()
    config = secure_config(
        kafka_security, created_topic, kafka_security.client_properties(), on_error=errors
    )
    with eventstream.new_topic(Invalidate, config) as topic:
        consumer = topic.new_consumer(start_from_beginning=True)
        consumer.consume(collector)
        consumer.wait_until_assigned(timeout=30)
        producer = topic.new_producer()
        producer.produce(Invalidate(seq=1), Invalidate(seq=2))
        collector.wait_for_seqs([1, 2])
        assert producer.status.state == "ready"
        wait_until(lambda: consumer.status.state == "ready", "the consumer to be ready")
    assert topic.closed
    assert producer.status.state == consumer.status.state == "closed"
    assert errors.errors == []


# (what is wrong, client properties for it, the librdkafka code expected, words the fix needs)
BadCredentials = Callable[[ClusterSecurity, str], dict[str, str]]


def _wrong_password(sec: ClusterSecurity, _plain: str) -> dict[str, str]:
    return sec.client_properties("alice", "not-alice-secret")


def _wrong_ca(sec: ClusterSecurity, _plain: str) -> dict[str, str]:
    return sec.client_properties(ca_location=sec.wrong_ca_location)


def _sasl_on_plain_listener(sec: ClusterSecurity, plain: str) -> dict[str, str]:
    props = {k: v for k, v in sec.client_properties().items() if not k.startswith("ssl.")}
    return {**props, "bootstrap.servers": plain, "security.protocol": "SASL_PLAINTEXT"}


BAD = [
    pytest.param(_wrong_password, -169, "sasl.password", id="wrong-password"),
    pytest.param(_wrong_ca, -181, "ssl.ca.location", id="wrong-ca"),
    pytest.param(_sasl_on_plain_listener, -169, "security.protocol", id="sasl-on-plain-listener"),
]


@pytest.fixture
def eventstream_records(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO, logger="eventstream")
    yield caplog


def _records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno == level and r.name == "eventstream"  # not eventstream.librdkafka (DEBUG)
    ]


@pytest.mark.parametrize(("bad", "code", "fix"), BAD)
def test_bad_credentials_fail_produce_at_once_and_the_producer_refuses_further_calls(
    kafka_security: ClusterSecurity,
    kafka_bootstrap: str,
    created_topic: str,
    eventstream_records: pytest.LogCaptureFixture,
    bad: BadCredentials,
    code: int,
    fix: str,
) -> None:
    errors = ErrorLog()
    config = secure_config(
        kafka_security,
        created_topic,
        bad(kafka_security, kafka_bootstrap),
        # Far beyond the test's timeout: the call must end because the credentials were refused,
        # not because librdkafka gave up on the events.
        delivery_timeout=600,
        on_error=errors,
    )
    with eventstream.new_topic(Invalidate, config) as topic:
        producer = topic.new_producer()
        with pytest.raises(ProduceAuthenticationError) as info:
            producer.produce(Invalidate(seq=1), Invalidate(seq=2))
        error = info.value
        assert isinstance(error, AuthenticationError) and isinstance(error, ProduceError)
        assert (error.code, error.retriable, error.fatal) == (code, False, False)
        assert (error.failed, error.in_doubt, error.total) == (2, 0, 2)  # never written
        assert fix in str(error), str(error)
        status = producer.status
        assert status.state == "failed"
        assert isinstance(status.error, AuthenticationError)
        # Refused at once from now on, with the same error.
        with pytest.raises(ProduceAuthenticationError) as again:
            producer.produce(Invalidate(seq=3))
        assert again.value.code == code
        assert isinstance(errors.wait_for(AuthenticationError), AuthenticationError)
    assert len([e for e in errors.errors if isinstance(e, AuthenticationError)]) == 1
    errors_logged = _records(eventstream_records, logging.ERROR)
    assert len(errors_logged) == 1, [r.getMessage() for r in errors_logged]
    assert len(_records(eventstream_records, logging.WARNING)) <= 1  # no line per retry


@pytest.mark.parametrize(("bad", "code", "fix"), BAD)
def test_bad_credentials_stop_a_consumer_and_close_raises(
    kafka_security: ClusterSecurity,
    kafka_bootstrap: str,
    created_topic: str,
    eventstream_records: pytest.LogCaptureFixture,
    bad: BadCredentials,
    code: int,
    fix: str,
) -> None:
    errors = ErrorLog()
    config = secure_config(
        kafka_security, created_topic, bad(kafka_security, kafka_bootstrap), on_error=errors
    )
    topic = eventstream.new_topic(Invalidate, config)
    consumer = topic.new_consumer()
    consumer.consume(Collector())
    with pytest.raises(AuthenticationError) as waited:
        consumer.wait_until_assigned(timeout=60)
    assert waited.value.code == code
    reported = errors.wait_for(AuthenticationError)
    assert fix in str(reported), str(reported)
    assert consumer.status.state == "failed"
    with pytest.raises(AuthenticationError) as closed:
        consumer.close()
    assert closed.value.code == code and closed.value.retriable is False
    topic.close()
    assert len([e for e in errors.errors if isinstance(e, AuthenticationError)]) == 1
    assert len(_records(eventstream_records, logging.ERROR)) == 1
    assert len(_records(eventstream_records, logging.WARNING)) <= 1


@pytest.mark.parametrize(("bad", "code", "fix"), BAD)
def test_bad_credentials_fail_ensure_exists_and_wait_until_ready(
    kafka_security: ClusterSecurity,
    kafka_bootstrap: str,
    created_topic: str,
    bad: BadCredentials,
    code: int,
    fix: str,
) -> None:
    config = secure_config(kafka_security, created_topic, bad(kafka_security, kafka_bootstrap))
    with eventstream.new_topic(Invalidate, config) as topic:
        with pytest.raises(AuthenticationError) as created:
            topic.ensure_exists(partitions=1, timeout=60)
        assert created.value.code == code and fix in str(created.value)
        with pytest.raises(AuthenticationError) as ready:
            topic.wait_until_ready(timeout=60)
        assert ready.value.code == code


def test_missing_permissions_are_authorization_errors(
    kafka_security: ClusterSecurity,
    created_topic: str,
    eventstream_records: pytest.LogCaptureFixture,
) -> None:
    """mallory authenticates but has no ACL: her produce is refused by the broker (and, as she
    may write no topic at all, her idempotent producer cannot get a producer id: librdkafka
    reports that as fatal); her consumer cannot use the group, so it stops and ``close()``
    raises."""
    errors = ErrorLog()
    config = secure_config(
        kafka_security,
        created_topic,
        kafka_security.client_properties("mallory"),
        on_error=errors,
    )
    with eventstream.new_topic(Invalidate, config) as topic:
        producer = topic.new_producer()
        with pytest.raises(ProduceAuthorizationError) as info:
            producer.produce(Invalidate(seq=1))
        error = info.value
        assert isinstance(error, AuthorizationError) and isinstance(error, BrokerError)
        assert (error.code, error.retriable, error.failed) == (29, False, 1)
        assert "ACL" in str(error)
        # The idempotent producer's id request is refused too: a fatal error. The producer
        # fails, says so with the cause, and refuses further calls with it.
        fatal = errors.wait_for(BrokerError, client="producer")
        assert isinstance(fatal, AuthorizationError)
        assert (fatal.code, fatal.fatal, fatal.retriable) == (31, True, False)
        assert "fatal error" in str(fatal) and "CLUSTER_AUTHORIZATION_FAILED" in str(fatal)
        wait_until(lambda: producer.status.state == "failed", "the producer to fail")
        with pytest.raises(ProduceError) as refused:
            producer.produce(Invalidate(seq=2))
        assert (refused.value.code, refused.value.fatal, refused.value.failed) == (31, True, 1)

        consumer = topic.new_consumer()
        consumer.consume(Collector())
        reported = errors.wait_for(AuthorizationError, client="consumer")
        assert reported.code in (29, 30)  # type: ignore[attr-defined]
        wait_until(lambda: consumer.status.state == "failed", "the consumer to fail")
        with pytest.raises(AuthorizationError):
            consumer.close()
