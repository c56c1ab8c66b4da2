"""Where librdkafka's own log lines go when a confluent-kafka client is used."""

from __future__ import annotations

import logging

__all__ = ["ClientLog"]


class ClientLog:
    """Passed as confluent-kafka's ``logger``: librdkafka's lines go to ``<logger>.librdkafka``
    at DEBUG. Broker outages would otherwise print a line per reconnect; the errors that matter
    reach the application as exceptions or through eventstream's own log records."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger.getChild("librdkafka")

    def log(self, level: int, msg: str, *args: object) -> None:
        self._logger.debug(msg, *args)
