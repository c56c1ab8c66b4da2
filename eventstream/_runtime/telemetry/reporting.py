"""What a client reports on its statistics tick (about once a second): librdkafka's statistics,
parsed, to ``TopicConfig.on_statistics``; its metrics snapshot to ``TopicConfig.on_metrics`` every
``metrics_interval`` seconds; a consumer's lag into its metrics. Set up only when one of them is
asked for: otherwise librdkafka's statistics are only scanned (in C) for the connection state."""

from __future__ import annotations

import json
import logging
import time
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from eventstream._runtime.health import Health, notify

if TYPE_CHECKING:
    from eventstream.config import TopicConfig

__all__ = ["Reporter", "reporter", "statistics_tick"]


class _Client(Protocol):
    def metrics(self) -> object: ...

    def observe_statistics(self, stats: Mapping[str, Any]) -> None:
        """What the client keeps of its statistics (a consumer: its lag)."""
        ...


class Reporter:
    """The ``statistics`` callback of one client's spec; called on its poll thread."""

    def __init__(self, config: TopicConfig) -> None:
        self._config = config
        # Held weakly: a client's own statistics callback must not keep it alive.
        self._client: weakref.ref[_Client] | None = None
        self._next_report = time.monotonic() + config.metrics_interval

    def attach(self, client: _Client) -> None:
        """The client whose metrics to report and that observes its statistics."""
        self._client = weakref.ref(client)

    def __call__(self, stats: Mapping[str, Any]) -> None:
        config = self._config
        client = None if self._client is None else self._client()
        if client is not None:
            client.observe_statistics(stats)
        if config.on_statistics is not None:
            notify(config.on_statistics, stats, config.logger)
        now = time.monotonic()
        if config.on_metrics is not None and client is not None and now >= self._next_report:
            self._next_report = now + config.metrics_interval
            notify(config.on_metrics, client.metrics(), config.logger)


def reporter(config: TopicConfig) -> Reporter | None:
    """A Reporter if the config asks for anything it does, else None (nothing is parsed)."""
    if config.metrics_enabled or config.on_statistics is not None:
        return Reporter(config)
    return None


def statistics_tick(
    raw: str,
    health: Health,
    statistics: Callable[[Mapping[str, Any]], None] | None,
    logger: logging.Logger,
) -> None:
    """A client's statistics tick (both backends, both kinds of client): librdkafka's statistics
    are parsed once, the Health reads from them whether brokers answer, then the Reporter (if
    something was asked for) gets them."""
    try:
        stats: dict[str, Any] = json.loads(raw)
    except ValueError as exc:
        logger.error("could not parse librdkafka's statistics", exc_info=exc)
        return
    health.observe(stats)
    if statistics is not None:
        try:
            statistics(stats)
        except Exception as exc:
            logger.error("could not use librdkafka's statistics", exc_info=exc)
