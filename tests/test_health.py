"""The Health's reports of an outage, on a clock the test turns (no broker, no waiting)."""

from __future__ import annotations

import logging

import pytest

from eventstream._runtime import health as health_module
from eventstream._runtime.health import Health


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_the_recovery_line_counts_the_whole_outage(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No broker from t=0 (the first statistics tick without one), disconnected at t=6 (after
    ``disconnected_after``), a broker again at t=22: 22 s without a broker, not the 16 s spent
    in the state ``disconnected``."""
    clock = Clock()
    monkeypatch.setattr(health_module, "time", clock)
    caplog.set_level(logging.INFO, logger="eventstream.test-health")
    health = Health(
        what="consumer of topic 't'",
        brokers="127.0.0.1:9",
        logger=logging.getLogger("eventstream.test-health"),
        on_error=None,
        disconnected_after=5.0,
        fail_on_authorization=True,
    )
    health.up()
    start = clock.now
    health.tick(False)
    clock.now = start + 6
    health.tick(False)
    assert health.status.state == "disconnected"
    clock.now = start + 22
    health.tick(True)
    assert health.status.state == "ready"
    [warning, info] = [r.getMessage() for r in caplog.records]
    assert "has answered for 6 s" in warning, warning
    assert "a broker answers again, after 22.0 s without one" in info, info
