"""One kind of trouble logged without flooding: :class:`SummaryLog`."""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["SummaryLog"]


class SummaryLog:
    """Logs the first ``first`` occurrences one by one, then counts them and logs one summary
    line (``summary % count``) at the first occurrence after each ``interval`` seconds, and at
    :meth:`flush`. Thread-safe."""

    def __init__(
        self,
        logger: logging.Logger,
        summary: str,
        *,
        first: int = 3,
        interval: float = 60.0,
        level: int = logging.WARNING,
    ) -> None:
        self._logger = logger
        self._summary = summary
        self._first = first
        self._interval = interval
        self._level = level
        self._lock = threading.Lock()
        self._logged = 0
        self._pending = 0
        self._since = time.monotonic()

    def occurred(self, message: str, *args: object, exc_info: BaseException | None = None) -> None:
        """One occurrence, described by ``message % args`` if it is logged on its own."""
        with self._lock:
            if self._logged < self._first:
                self._logged += 1
                more = " (from now on summarized)" if self._logged == self._first else ""
                self._logger.log(self._level, message + more, *args, exc_info=exc_info)
                return
            self._pending += 1
            if time.monotonic() - self._since < self._interval:
                return
        self.flush()

    def flush(self) -> None:
        """Log the summary of what was counted since the last one, if anything."""
        with self._lock:
            count, self._pending = self._pending, 0
            elapsed = time.monotonic() - self._since
            self._since = time.monotonic()
        if count:
            self._logger.log(self._level, self._summary + " in the last %.0f s", count, elapsed)
