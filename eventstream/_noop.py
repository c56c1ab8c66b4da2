"""The backend behind :func:`eventstream.new_noop_topic`: every operation succeeds and does nothing.

Events are still type-checked, so a program behaves the same whether streaming is on or off.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from google.protobuf.message import Message

from eventstream._runtime.records import Deliveries
from eventstream._runtime.telemetry.metrics import Histogram, ProducerMetrics
from eventstream.errors import event_type_error

if TYPE_CHECKING:  # a backend imports only leaf modules at run time (tests/test_layers.py)
    from eventstream._runtime.backend import (
        BackendName,
        ConsumerListener,
        ConsumerSpec,
        Dispatch,
        PendingEnqueue,
        ProducerSpec,
    )

__all__ = ["NOOP_BACKEND"]


class _NoopProducer:
    def __init__(self, spec: ProducerSpec) -> None:
        self._event_type = spec.event_type
        self._type_name = spec.type_name

    def _check(self, events: Sequence[Message]) -> None:
        for index, event in enumerate(events):
            if type(event) is not self._event_type:
                raise event_type_error(index, type(event), self._event_type, self._type_name)

    def produce(
        self,
        events: Sequence[Message],
        timeout: float | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> Deliveries:
        self._check(events)
        # Nowhere: partition -1, offset -1 (ce_ids "noop-1", ...).
        n = len(events)
        return Deliveries(array("i", [-1]) * n, array("q", [-1]) * n, "noop-", 1)

    def produce_async(
        self,
        events: Sequence[Message],
        loop: asyncio.AbstractEventLoop,
        timeout: float | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> tuple[asyncio.Future[Deliveries], PendingEnqueue | None]:
        future: asyncio.Future[Deliveries] = loop.create_future()
        future.set_result(self.produce(events, timeout))
        return future, None

    def metrics(self) -> ProducerMetrics:
        return ProducerMetrics(topic="noop")

    def flush(self, timeout: float) -> int:
        return 0

    def close(self, timeout: float | None) -> tuple[int, int, bool]:
        return 0, 0, True

    def abandon(self) -> None:
        pass


class _NoopConsumer:
    """Subscribes nowhere; its one nominal partition at offset 0 lets wait_until_assigned()
    return."""

    def __init__(self) -> None:
        self._stop = False

    def open(self, dispatch: Dispatch) -> None:
        pass

    def poll(self, wait_ms: int) -> None:
        time.sleep(wait_ms / 1000)

    def committed(self, partitions: Sequence[int], timeout_ms: int) -> list[int]:
        return [-1001] * len(partitions)

    def watermarks(self, partitions: Sequence[int], timeout_ms: int) -> tuple[list[int], list[int]]:
        return [0] * len(partitions), [0] * len(partitions)

    def store(self, offsets: Mapping[int, int]) -> None:
        pass

    def commit(self, offsets: Mapping[int, int]) -> None:
        pass

    def seek(self, offsets: Mapping[int, int]) -> None:
        pass

    def watch_resumes(self, on: bool) -> None:
        pass

    def leave(self, slice_ms: int) -> bool:
        return True

    def destroy(self, left: bool) -> None:
        pass

    def positions(self) -> dict[int, int]:
        return {0: 0}

    def stop(self) -> None:
        self._stop = True

    def stopping(self) -> bool:
        return self._stop

    def handling(self) -> tuple[int, int] | None:
        return None

    def dispatching_since(self) -> float:
        return 0.0

    def counts(self) -> tuple[int, Histogram | None, Histogram | None]:
        return 0, None, None


class _NoopBackend:
    name: BackendName = "pure"
    inert = True

    def new_producer(self, spec: ProducerSpec) -> _NoopProducer:
        return _NoopProducer(spec)

    def new_consumer(self, spec: ConsumerSpec, listener: ConsumerListener) -> _NoopConsumer:
        return _NoopConsumer()


NOOP_BACKEND = _NoopBackend()
