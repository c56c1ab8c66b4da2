"""What Topic, Producer and Consumer share as closeable resources: ``with`` closes them, and
``async with`` / ``aclose()`` close them in a worker thread so the event loop keeps running."""

from __future__ import annotations

import asyncio
import math
from types import TracebackType
from typing import Self

from eventstream._runtime import forks
from eventstream.errors import ClosedError, ConfigError

__all__ = ["Closeable", "check_timeout"]


def check_timeout(timeout: float | None) -> None:
    """Raise ConfigError unless ``timeout`` is ``None`` or a number of seconds >= 0."""
    if timeout is None:
        return
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or math.isnan(timeout)
        or timeout < 0
    ):
        raise ConfigError("timeout", f"must be None or a number of seconds >= 0, got {timeout!r}")


class Closeable:
    def close(self, timeout: float | None = 30.0) -> None:
        """Release what the object holds, waiting up to ``timeout`` seconds."""
        raise NotImplementedError

    # Producer and Consumer: made in this process (forks.generation()) and not closed.
    _generation: int
    _closed: bool
    _topic: str

    def _check_usable(self) -> None:
        """Raise ClosedError if closed, or if made in the parent of this forked process."""
        what = f"the {type(self).__name__.lower()} of {self._topic!r}"
        if self._generation != forks.generation():
            raise ClosedError(
                f"{what} was created in the parent of this forked process; librdkafka clients "
                "cannot cross fork(): create a new Topic here"
            )
        if self._closed:
            raise ClosedError(f"{what} is closed")

    async def aclose(self, timeout: float | None = 30.0) -> None:
        """:meth:`close` without blocking the event loop."""
        await asyncio.get_running_loop().run_in_executor(None, self.close, timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
