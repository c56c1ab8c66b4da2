"""The Health's reports of an outage from librdkafka's statistics, on a clock the test turns (no
broker, no waiting)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from eventstream._runtime import health as health_module
from eventstream._runtime.health import Health


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def make_health(monkeypatch: pytest.MonkeyPatch, kind: str = "consumer") -> tuple[Health, Clock]:
    clock = Clock()
    monkeypatch.setattr(health_module, "time", clock)
    health = Health(
        what=f"{kind} of topic 't'",
        kind=kind,  # type: ignore[arg-type]
        brokers="127.0.0.1:9",
        logger=logging.getLogger("eventstream.test-health"),
        on_error=None,
        disconnected_after=5.0,
        fail_on_authorization=True,
    )
    return health, clock


def stats(*, up: bool = True, rx: int = 100, rxidle_s: float = 0.1, waiting: int = 0) -> Any:
    """Statistics with one broker entry: its state, bytes received, time since it last received
    and requests waiting for a response."""
    return {
        "brokers": {
            "127.0.0.1:9/1": {
                "state": "UP" if up else "DOWN",
                "rx": rx,
                "rxidle": int(rxidle_s * 1e6),
                "waitresp_cnt": waiting,
                "outbuf_cnt": 0,
            }
        }
    }


def test_the_recovery_line_counts_the_whole_outage(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No connection from t=0 (the first statistics tick without one), disconnected at t=6 (after
    ``disconnected_after``), a broker again at t=22: 22 s without a broker, not the 16 s spent
    in the state ``disconnected``."""
    health, clock = make_health(monkeypatch)
    caplog.set_level(logging.INFO, logger="eventstream.test-health")
    health.up()
    start = clock.now
    health.observe(stats(up=False))
    clock.now = start + 6
    health.observe(stats(up=False))
    assert health.status.state == "disconnected"
    clock.now = start + 22
    health.observe(stats(rx=200))
    assert health.status.state == "ready"
    [warning, info] = [r.getMessage() for r in caplog.records]
    assert "has answered for 6 s" in warning, warning
    assert "a broker answers again, after 22.0 s without one" in info, info
    assert "delivery_timeout" not in warning, "a consumer's warning names a producer setting"


def test_a_frozen_broker_with_requests_waiting_is_an_outage(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A stopped broker keeps its connections open (state UP), but nothing it was asked comes
    back: the client is disconnected once requests have waited ``disconnected_after`` seconds
    since the last answer, and the recovery line counts from that answer."""
    health, clock = make_health(monkeypatch, "producer")
    caplog.set_level(logging.INFO, logger="eventstream.test-health")
    start = clock.now
    health.observe(stats(rx=50, rxidle_s=0.5))  # the entry's first tick: a baseline
    health.observe(stats(rx=100, rxidle_s=0.2, waiting=1))  # answered at start - 0.2
    assert health.status.state == "ready"
    for second in range(1, 5):
        clock.now = start + second
        health.observe(stats(rx=100, rxidle_s=second + 0.2, waiting=3))
        assert health.status.state == "ready", second
    clock.now = start + 5
    health.observe(stats(rx=100, rxidle_s=5.2, waiting=5))
    assert health.status.state == "disconnected"
    clock.now = start + 31
    health.observe(stats(rx=900, rxidle_s=0.3, waiting=1))
    assert health.status.state == "ready"
    [warning, info] = [r.getMessage() for r in caplog.records]
    assert "has answered for 5 s" in warning and "frozen" in warning, warning
    assert "delivery_timeout" in warning, warning
    assert "after 31.2 s without one" in info, info


def test_an_idle_client_is_not_disconnected(monkeypatch: pytest.MonkeyPatch) -> None:
    """Connections up, nothing asked, nothing received for a minute: an idle producer learns
    nothing about the brokers, and is not told it lost them."""
    health, clock = make_health(monkeypatch, "producer")
    health.up()
    start = clock.now
    for second in range(0, 61, 5):
        clock.now = start + second
        health.observe(stats(rx=100, rxidle_s=second + 1))
    assert health.status.state == "ready"


def test_a_producer_with_messages_queued_counts_as_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    health, clock = make_health(monkeypatch, "producer")
    health.up()
    start = clock.now
    for second in (0, 3, 6):
        clock.now = start + second
        health.observe({**stats(rx=100, rxidle_s=second + 1), "msg_cnt": 7})
    assert health.status.state == "disconnected"


def test_a_join_waiting_at_the_coordinator_during_a_rebalance_is_no_outage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rebalance can hold a consumer's join request at the coordinator for as long as it takes
    (up to max.poll.interval.ms): requests waiting there then say nothing about the brokers."""
    health, clock = make_health(monkeypatch)
    health.up()
    start = clock.now
    for second in range(0, 11):
        clock.now = start + second
        health.observe(
            {
                "cgrp": {"join_state": "wait-join"},
                "brokers": {
                    "GroupCoordinator": {
                        "state": "UP",
                        "rx": 3,
                        "rxidle": (second + 1) * 10**6,
                        "waitresp_cnt": 1,
                        "outbuf_cnt": 0,
                    },
                },
            }
        )
    assert health.status.state == "ready"
