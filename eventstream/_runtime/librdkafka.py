"""Where librdkafka's own log lines go when a confluent-kafka client is used."""

from __future__ import annotations

import logging
from collections.abc import Callable

__all__ = ["ClientLog"]


class ClientLog:
    """Passed as confluent-kafka's ``logger``: librdkafka's lines go to ``<logger>.librdkafka``
    at DEBUG. Broker outages would otherwise print a line per reconnect; the errors that matter
    reach the application as exceptions or through eventstream's own log records."""

    def __init__(
        self, logger: logging.Logger, on_warning: Callable[[str, str], None] | None = None
    ) -> None:
        self._logger = logger.getChild("librdkafka")
        self._on_warning = on_warning  # (facility, text) of WARNING-and-worse lines

    def log(self, level: int, msg: str, *args: object) -> None:
        self._logger.debug(msg, *args)
        # confluent-kafka calls log(level, "%s [%s] %s", facility, client name, text).
        if self._on_warning is not None and level >= logging.WARNING and len(args) == 3:
            self._on_warning(str(args[0]), str(args[2]))
