"""Typed face of eventstream's compiled backend (built from ext/ with Cython).

The module resolves, at import, the librdkafka that confluent-kafka bundles and has loaded, and
refuses librdkafka older than :data:`MIN_LIBRDKAFKA_VERSION` with an ``ImportError``.
"""

import asyncio
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Final, final

from google.protobuf.message import Message

from eventstream._runtime.backend import (
    BackendName,
    ConsumerListener,
    ConsumerSpec,
    Dispatch,
    PendingEnqueue,
    ProducerSpec,
)
from eventstream._runtime.records import Deliveries
from eventstream._runtime.telemetry.metrics import Histogram, ProducerMetrics

__all__ = [
    "BACKEND",
    "LIBRDKAFKA_PATH",
    "LIBRDKAFKA_VERSION",
    "MIN_LIBRDKAFKA_VERSION",
    "CompiledBackend",
    "Consumer",
    "MockCluster",
    "Producer",
]

#: The oldest librdkafka the module accepts.
MIN_LIBRDKAFKA_VERSION: Final[str]
#: Path of the librdkafka shared object in use (the one confluent-kafka loaded).
LIBRDKAFKA_PATH: Final[str]
#: Its version, e.g. ``"2.16.0"``.
LIBRDKAFKA_VERSION: Final[str]

@final
class Producer:
    """``eventstream._runtime.backend.NativeProducer`` over librdkafka."""

    @property
    def topic(self) -> str: ...
    @property
    def producer_id(self) -> str | None:
        """The ``<producer id>`` part of this producer's ``ce_id`` headers."""
    def __init__(self, spec: ProducerSpec) -> None: ...
    def produce(
        self,
        events: Sequence[Message],
        timeout: float | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> Deliveries: ...
    def produce_async(
        self,
        events: Sequence[Message],
        loop: asyncio.AbstractEventLoop,
        timeout: float | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> tuple[asyncio.Future[Deliveries], PendingEnqueue | None]: ...
    def flush(self, timeout: float) -> int: ...
    def close(self, timeout: float | None) -> tuple[int, int, bool]: ...
    def abandon(self) -> None: ...
    def metrics(self) -> ProducerMetrics: ...

@final
class Consumer:
    """``eventstream._runtime.backend.NativeConsumer`` over librdkafka."""

    @property
    def topic(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    def __init__(self, spec: ConsumerSpec, listener: ConsumerListener) -> None: ...
    def open(self, dispatch: Dispatch) -> None: ...
    def poll(self, wait_ms: int) -> None: ...
    def committed(self, partitions: Sequence[int], timeout_ms: int) -> list[int]: ...
    def watermarks(
        self, partitions: Sequence[int], timeout_ms: int
    ) -> tuple[list[int], list[int]]: ...
    def store(self, offsets: Mapping[int, int]) -> None: ...
    def commit(self, offsets: Mapping[int, int]) -> None: ...
    def seek(self, offsets: Mapping[int, int]) -> None: ...
    def watch_resumes(self, on: bool) -> None: ...
    def leave(self, slice_ms: int) -> bool: ...
    def destroy(self, left: bool) -> None: ...
    def positions(self) -> dict[int, int]: ...
    def stop(self) -> None: ...
    def stopping(self) -> bool: ...
    def handling(self) -> tuple[int, int] | None: ...
    def dispatching_since(self) -> float: ...
    def counts(self) -> tuple[int, Histogram | None, Histogram | None]: ...

class CompiledBackend:
    """``eventstream._runtime.backend.Backend`` over librdkafka's C API."""

    name: BackendName
    inert: bool
    def new_producer(self, spec: ProducerSpec) -> Producer: ...
    def new_consumer(self, spec: ConsumerSpec, listener: ConsumerListener) -> Consumer: ...

BACKEND: CompiledBackend

@final
class MockCluster:
    """librdkafka's in-process mock cluster: real TCP brokers on 127.0.0.1 for any client.
    Not Apache Kafka: see eventstream.testing for its limits."""

    @property
    def bootstrap_servers(self) -> str: ...
    @property
    def num_brokers(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def __init__(self, num_brokers: int = 1) -> None: ...
    def create_topic(self, name: str, partitions: int = 1, replication_factor: int = 1) -> None:
        """Create ``name``; raises ``eventstream.errors.TopicError`` if the cluster refuses."""
    def close(self) -> None: ...
    def __enter__(self) -> MockCluster: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
