"""What Topic, Producer and Consumer share as closeable resources: ``with`` closes them, and
``async with`` / ``aclose()`` close them in a worker thread so the event loop keeps running."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

__all__ = ["Closeable"]


class Closeable:
    def close(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        """:meth:`close` without blocking the event loop."""
        await asyncio.get_running_loop().run_in_executor(None, self.close)

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
