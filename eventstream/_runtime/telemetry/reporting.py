"""What a client reports on its statistics tick (about once a second): librdkafka's statistics,
parsed, to ``TopicConfig.on_statistics``; its metrics snapshot to ``TopicConfig.on_metrics`` every
``metrics_interval`` seconds; a consumer's lag into its metrics. Set up only when one of them is
asked for: otherwise librdkafka's statistics are only scanned (in C) for the connection state."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from eventstream._runtime.health import Health, notify
from eventstream.config import TopicConfig

__all__ = ["Reporter", "reporter", "statistics_tick"]


class _Client(Protocol):
    def metrics(self) -> object: ...


class Reporter:
    """The ``statistics`` callback of one client's spec; called on its poll thread."""

    def __init__(self, config: TopicConfig) -> None:
        self._config = config
        self._client: _Client | None = None
        self._on_stats: Callable[[Mapping[str, Any]], None] | None = None
        self._next_report = time.monotonic() + config.metrics_interval

    def attach(self, client: _Client, on_stats: Callable[[Mapping[str, Any]], None] | None) -> None:
        """The client whose metrics to report, and what to feed its statistics to (the lag)."""
        self._client = client
        self._on_stats = on_stats

    def __call__(self, raw: str) -> None:
        config = self._config
        stats: dict[str, Any] = json.loads(raw)
        if self._on_stats is not None:
            self._on_stats(stats)
        if config.on_statistics is not None:
            notify(config.on_statistics, stats, config.logger)
        now = time.monotonic()
        if config.on_metrics is not None and self._client is not None and now >= self._next_report:
            self._next_report = now + config.metrics_interval
            notify(config.on_metrics, self._client.metrics(), config.logger)


def reporter(config: TopicConfig) -> Reporter | None:
    """A Reporter if the config asks for anything it does, else None (nothing is parsed)."""
    if config.metrics_enabled or config.on_statistics is not None:
        return Reporter(config)
    return None


def statistics_tick(
    raw: str, health: Health, statistics: Callable[[str], None] | None, logger: logging.Logger
) -> None:
    """A confluent-kafka client's ``stats_cb`` (the pure-Python backend): the connection state
    (``"state":"UP"`` is how librdkafka's statistics spell a broker that is up), then whoever
    wants the statistics themselves (the compiled backend does the same in C)."""
    health.tick('"state":"UP"' in raw)
    if statistics is not None:
        try:
            statistics(raw)
        except Exception as exc:
            logger.error("could not use librdkafka's statistics", exc_info=exc)
