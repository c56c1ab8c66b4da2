"""eventstream: typed event streaming over Apache Kafka with protobuf payloads.

topic = eventstream.new_topic(Invalidate, TopicConfig(brokers=..., topic=..., instance_id=...))
with topic.new_producer() as producer:
    producer.produce(Invalidate(key="user:42"))   # blocks until the broker acknowledged it
"""

from typing import TYPE_CHECKING

from eventstream._runtime.backend import backend
from eventstream._runtime.failures.retry import RetryPolicy
from eventstream._runtime.health import ClientState, ClientStatus
from eventstream._runtime.records import Deliveries, Delivery, EventMetadata, PartitionChange, Token
from eventstream._runtime.telemetry.instrumentation import Telemetry
from eventstream._runtime.telemetry.metrics import ConsumerMetrics, Histogram, ProducerMetrics
from eventstream.config import TopicConfig
from eventstream.consumer import Consumer
from eventstream.errors import (
    ArgumentTypeError,
    AuthenticationError,
    AuthorizationError,
    BrokerError,
    ClosedError,
    CloseError,
    ConfigError,
    ConsumerAlreadyStartedError,
    EventStreamError,
    EventTypeError,
    GapError,
    GroupConflictError,
    ProduceError,
    ProduceTimeoutError,
    SerializationError,
    TopicError,
    WaitTimeoutError,
)
from eventstream.producer import Producer
from eventstream.topic import Topic, new_noop_topic, new_topic

if TYPE_CHECKING:
    from eventstream.cache import Cache, CacheMetrics, CacheState, CacheStatus

__version__ = "0.1.0"
"""This distribution's version (PEP 440), the one ``pip`` installed."""

# Imported on first use, so that `import eventstream` (and pytest loading the plugin of
# eventstream.testing in every session) loads neither eventstream.cache nor confluent-kafka.
_FROM_CACHE = frozenset({"Cache", "CacheMetrics", "CacheState", "CacheStatus"})


def __getattr__(name: str) -> object:
    if name in _FROM_CACHE:
        from eventstream import cache

        value = getattr(cache, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'eventstream' has no attribute {name!r}")


__all__ = [
    "ArgumentTypeError",
    "AuthenticationError",
    "AuthorizationError",
    "BrokerError",
    "Cache",
    "CacheMetrics",
    "CacheState",
    "CacheStatus",
    "ClientState",
    "ClientStatus",
    "CloseError",
    "ClosedError",
    "ConfigError",
    "Consumer",
    "ConsumerAlreadyStartedError",
    "ConsumerMetrics",
    "Deliveries",
    "Delivery",
    "EventMetadata",
    "EventStreamError",
    "EventTypeError",
    "GapError",
    "GroupConflictError",
    "Histogram",
    "PartitionChange",
    "ProduceError",
    "ProduceTimeoutError",
    "Producer",
    "ProducerMetrics",
    "RetryPolicy",
    "SerializationError",
    "Telemetry",
    "Token",
    "Topic",
    "TopicConfig",
    "TopicError",
    "WaitTimeoutError",
    "__version__",
    "backend",
    "new_noop_topic",
    "new_topic",
]
