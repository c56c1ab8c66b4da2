"""The harness's ``security=True`` cluster, checked with plain confluent-kafka clients.

These tests are about scripts/kafka_harness.py (its SASL_SSL listener, SCRAM users, CAs and
ACLs), not about eventstream's API: they document what librdkafka reports for each failure
mode so that tests of eventstream's behaviour can rely on it. The error texts quoted in the
docstrings were seen with librdkafka 2.16.0 against Kafka 4.3.1.

librdkafka treats authentication and TLS handshake failures as non-fatal: it retries them
forever and reports each through ``error_cb`` (which ``poll()`` serves), so the tests wait for
the first matching report with a deadline and then drop the client.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from kafka_harness import ClusterSecurity
from support import WAIT

pytestmark = pytest.mark.timeout(120)


class ErrorWatch:
    """An ``error_cb`` that records every error and sets an Event when one of ``codes`` came."""

    def __init__(self, *codes: int) -> None:
        self.codes = codes
        self.errors: list[KafkaError] = []
        self.matched: KafkaError | None = None
        self._event = threading.Event()

    def __call__(self, err: KafkaError) -> None:
        self.errors.append(err)
        if err.code() in self.codes and self.matched is None:
            self.matched = err
            self._event.set()

    def wait(self, client: Any, timeout: float = WAIT) -> KafkaError:
        """Serve ``client``'s callbacks (``poll``) until a matching error came; fail after
        ``timeout`` s with every error seen."""
        deadline = time.monotonic() + timeout
        while not self._event.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                seen = [f"{e.name()}: {e.str()}" for e in self.errors] or "none"
                pytest.fail(f"no error with code {self.codes} within {timeout} s; seen: {seen}")
            client.poll(min(0.5, left))  # returns as soon as a callback ran
        assert self.matched is not None
        return self.matched


@contextlib.contextmanager
def _connecting_producer(conf: dict[str, Any], topic: str) -> Iterator[Producer]:
    """A producer with one message queued, so that it connects; purged when done."""
    producer = Producer({**conf, "message.timeout.ms": int(WAIT * 1000) * 2})
    producer.produce(topic, b"never delivered")
    try:
        yield producer
    finally:
        producer.purge()
        producer.flush(0)


def _create_topic_as_alice(sec: ClusterSecurity, topic: str) -> None:
    conf: dict[str, Any] = {**sec.client_properties("alice")}
    admin = AdminClient(conf)
    admin.create_topics([NewTopic(topic, 1, 1)], request_timeout=WAIT)[topic].result(WAIT)


def test_client_properties_are_librdkafka_settings_for_a_scram_user_over_sasl_ssl(
    kafka_security: ClusterSecurity,
) -> None:
    sec = kafka_security
    assert {"alice", "mallory", "admin"} <= set(sec.users)
    assert sec.ca_location.is_file() and sec.wrong_ca_location.is_file()
    assert sec.ca_location.read_bytes() != sec.wrong_ca_location.read_bytes()
    props = sec.client_properties()
    assert props == {
        "bootstrap.servers": sec.bootstrap_servers,
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "alice",
        "sasl.password": sec.users["alice"],
        "ssl.ca.location": str(sec.ca_location),
        "ssl.endpoint.identification.algorithm": "https",
    }
    wrong = sec.client_properties("mallory", "guess", ca_location=sec.wrong_ca_location)
    assert wrong["sasl.username"] == "mallory"
    assert wrong["sasl.password"] == "guess"
    assert wrong["ssl.ca.location"] == str(sec.wrong_ca_location)
    with pytest.raises(KeyError, match="no SCRAM user 'bob'"):
        sec.client_properties("bob")
    assert sec.client_properties("bob", "x")["sasl.username"] == "bob"


def test_alice_round_trip_over_sasl_ssl(kafka_security: ClusterSecurity, topic_name: str) -> None:
    """alice creates a topic, produces idempotently with acks=all and consumes in a group with
    a synchronous commit: TLS with host-name verification (``https``, the SAN holds
    127.0.0.1), SCRAM-SHA-512 and her ACLs on topic, group and cluster all work."""
    sec = kafka_security
    errors = ErrorWatch()
    conf = {**sec.client_properties("alice"), "error_cb": errors}
    _create_topic_as_alice(sec, topic_name)

    producer = Producer({**conf, "enable.idempotence": True, "acks": "all", "linger.ms": 0})
    reports: list[tuple[KafkaError | None, bytes | None]] = []
    producer.produce(
        topic_name, b"hello", key=b"k", on_delivery=lambda e, m: reports.append((e, m.value()))
    )
    assert producer.flush(WAIT) == 0
    assert reports == [(None, b"hello")]

    consumer = Consumer(
        {
            **conf,
            "group.id": f"{topic_name}-alice",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic_name])
        deadline = time.monotonic() + WAIT
        msg = None
        while msg is None and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
        assert msg is not None, "alice received nothing"
        assert msg.error() is None, msg.error()
        assert (msg.key(), msg.value()) == (b"k", b"hello")
        committed = consumer.commit(message=msg, asynchronous=False)
        assert committed is not None and committed[0].error is None
    finally:
        consumer.close()
    rejected = (KafkaError._AUTHENTICATION, KafkaError._SSL)
    assert not [e for e in errors.errors if e.code() in rejected], errors.errors


def test_wrong_password_is_an_authentication_error(
    kafka_security: ClusterSecurity, topic_name: str
) -> None:
    """Seen: ``_AUTHENTICATION`` (-169), "sasl_ssl://127.0.0.1:PORT/bootstrap: SASL
    authentication error: Authentication failed during authentication due to invalid
    credentials with SASL mechanism SCRAM-SHA-512 (after 321ms in state AUTH_REQ)", then
    ``_ALL_BROKERS_DOWN`` "1/1 brokers are down", and the first again on every retry. An unknown
    user name gets the very same text (the broker does not tell them apart)."""
    watch = ErrorWatch(KafkaError._AUTHENTICATION)
    conf = {**kafka_security.client_properties("alice", "not-alice-secret"), "error_cb": watch}
    with _connecting_producer(conf, topic_name) as producer:
        err = watch.wait(producer)
    assert "SASL authentication error" in err.str()
    assert "invalid credentials with SASL mechanism SCRAM-SHA-512" in err.str()
    assert not err.fatal()


def test_wrong_ca_is_an_ssl_error(kafka_security: ClusterSecurity, topic_name: str) -> None:
    """Seen: ``_SSL`` (-181), "sasl_ssl://127.0.0.1:PORT/bootstrap: SSL handshake failed:
    error:0A000086:SSL routines::certificate verify failed: broker certificate could not be
    verified, verify that ssl.ca.location is correctly configured or root CA certificates are
    installed (install ca-certificates package) (after 5ms in state SSL_HANDSHAKE)"."""
    sec = kafka_security
    watch = ErrorWatch(KafkaError._SSL)
    conf = {**sec.client_properties(ca_location=sec.wrong_ca_location), "error_cb": watch}
    with _connecting_producer(conf, topic_name) as producer:
        err = watch.wait(producer)
    assert "certificate verify failed" in err.str()
    assert not err.fatal()


def test_sasl_plaintext_against_the_plaintext_listener(
    kafka_security: ClusterSecurity, kafka_bootstrap: str, topic_name: str
) -> None:
    """A SASL client on a listener without SASL: the broker answers the SaslHandshake request
    with ILLEGAL_SASL_STATE and no mechanisms. Seen: ``_AUTHENTICATION`` (-169),
    "sasl_plaintext://127.0.0.1:PORT/bootstrap: SASL SCRAM-SHA-512 mechanism handshake failed:
    Broker: Request not valid in current SASL state: broker's supported mechanisms:  (after 1ms
    in state AUTH_HANDSHAKE)" (two spaces: the list is empty), retried like a bad password."""
    props = kafka_security.client_properties("alice")
    conf: dict[str, Any] = {k: v for k, v in props.items() if not k.startswith("ssl.")}
    watch = ErrorWatch(KafkaError._AUTHENTICATION)
    conf.update(
        {
            "bootstrap.servers": kafka_bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "error_cb": watch,
        }
    )
    with _connecting_producer(conf, topic_name) as producer:
        err = watch.wait(producer)
    assert "mechanism handshake failed" in err.str()
    assert "Request not valid in current SASL state" in err.str()
    assert not err.fatal()


def test_mallory_cannot_produce(kafka_security: ClusterSecurity, topic_name: str) -> None:
    """mallory authenticates but has no ACL. Seen in the delivery report:
    ``TOPIC_AUTHORIZATION_FAILED`` (29), "Broker: Topic authorization failed"; error_cb stays
    quiet (the failure is per topic, not per connection)."""
    sec = kafka_security
    _create_topic_as_alice(sec, topic_name)
    errors = ErrorWatch()
    producer = Producer(
        {
            **sec.client_properties("mallory"),
            "error_cb": errors,
            "message.timeout.ms": int(WAIT * 1000),
        }
    )
    reports: list[KafkaError | None] = []
    producer.produce(topic_name, b"denied", on_delivery=lambda e, _m: reports.append(e))
    assert producer.flush(WAIT * 2) == 0
    assert len(reports) == 1 and reports[0] is not None
    assert reports[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, reports[0]
    assert not [e for e in errors.errors if e.code() == KafkaError._AUTHENTICATION]


def test_mallory_cannot_consume(kafka_security: ClusterSecurity, topic_name: str) -> None:
    """Seen from ``poll()`` (not error_cb): ``GROUP_AUTHORIZATION_FAILED`` (30),
    "FindCoordinator response error: Group authorization failed." The group check comes first,
    so TOPIC_AUTHORIZATION_FAILED did not show up; either is accepted here."""
    sec = kafka_security
    _create_topic_as_alice(sec, topic_name)
    denied = (KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError.TOPIC_AUTHORIZATION_FAILED)
    watch = ErrorWatch(*denied)
    consumer = Consumer(
        {
            **sec.client_properties("mallory"),
            "group.id": f"{topic_name}-mallory",
            "auto.offset.reset": "earliest",
            "error_cb": watch,
        }
    )
    try:
        consumer.subscribe([topic_name])
        deadline = time.monotonic() + WAIT
        err: KafkaError | None = None
        while err is None:
            left = deadline - time.monotonic()
            if left <= 0:
                seen = [f"{e.name()}: {e.str()}" for e in watch.errors]
                pytest.fail(f"mallory's consumer saw no authorization error; error_cb: {seen}")
            msg = consumer.poll(min(0.5, left))
            if watch.matched is not None:
                err = watch.matched
            elif msg is not None:
                msg_err = msg.error()
                assert msg_err is not None, f"mallory read a message: {msg.value()!r}"
                if msg_err.code() in denied:
                    err = msg_err
    finally:
        consumer.close()
    assert err.code() in denied, err
    assert "authorization failed" in err.str().lower()


def test_plaintext_listener_is_unaffected_by_the_authorizer(
    kafka_security: ClusterSecurity, kafka_bootstrap: str, topic_name: str
) -> None:
    """The default listener stays what every other test uses: User:ANONYMOUS is a super user,
    so a client without credentials may create a topic and produce without any ACL."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    try:
        admin.create_topics([NewTopic(topic_name, 1, 1)], request_timeout=WAIT)[topic_name].result(
            WAIT
        )
    except KafkaException as exc:
        pytest.fail(f"ANONYMOUS could not create a topic: {exc}")
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 0})
    reports: list[KafkaError | None] = []
    producer.produce(topic_name, b"anonymous", on_delivery=lambda e, _m: reports.append(e))
    assert producer.flush(WAIT) == 0
    assert reports == [None]
