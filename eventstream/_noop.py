"""The backend behind :func:`eventstream.new_noop_topic`: every operation succeeds and does nothing.

Events are still type-checked, so a program behaves the same whether streaming is on or off.
"""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import Mapping, Sequence
from typing import Literal

from google.protobuf.message import Message

from eventstream._runtime.backend import BackendName, ConsumerSpec, Dispatch, ProducerSpec
from eventstream._runtime.records import Deliveries
from eventstream._runtime.telemetry.metrics import Histogram, ProducerMetrics
from eventstream.errors import event_type_error

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
    ) -> asyncio.Future[Deliveries]:
        future: asyncio.Future[Deliveries] = loop.create_future()
        future.set_result(self.produce(events, timeout))
        return future

    def metrics(self) -> ProducerMetrics:
        return ProducerMetrics(topic="noop")

    def flush(self, timeout: float) -> int:
        return 0

    def close(self, timeout: float) -> None:
        pass


class _NoopConsumer:
    def start(self, dispatch: Dispatch) -> None:
        pass

    def assignment(self) -> dict[int, int]:
        return {0: 0}  # a nominal partition at offset 0, so wait_until_assigned() returns

    def close(self, timeout: float) -> None:
        pass

    def stopping(self) -> bool:
        return False

    def metrics(self) -> tuple[int, Histogram | None, Histogram | None]:
        return 0, None, None


class _NoopBackend:
    name: BackendName = "pure"

    def check_properties(
        self, properties: Mapping[str, str], kind: Literal["producer", "consumer"]
    ) -> str | None:
        return None

    def new_producer(self, spec: ProducerSpec) -> _NoopProducer:
        return _NoopProducer(spec)

    def new_consumer(self, spec: ConsumerSpec) -> _NoopConsumer:
        return _NoopConsumer()


NOOP_BACKEND = _NoopBackend()
