"""eventstream: typed event streaming over Apache Kafka with protobuf payloads.

topic = eventstream.new_topic(Invalidate, TopicConfig(brokers=..., topic=..., instance_id=...))
with topic.new_producer() as producer:
    producer.produce(Invalidate(key="user:42"))   # blocks until the broker acknowledged it
"""

from eventstream.backend import backend
from eventstream.cache import Cache, CacheMetrics, CacheState, CacheStatus
from eventstream.config import TopicConfig
from eventstream.consumer import Consumer
from eventstream.deliveries import Deliveries, Delivery, Token
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
    ProduceError,
    ProduceTimeoutError,
    SerializationError,
    TopicError,
    WaitTimeoutError,
)
from eventstream.failures import RetryPolicy
from eventstream.metadata import EventMetadata
from eventstream.metrics import ConsumerMetrics, Histogram, ProducerMetrics
from eventstream.partitions import PartitionChange
from eventstream.producer import Producer
from eventstream.status import ClientState, ClientStatus
from eventstream.topic import Topic, new_noop_topic, new_topic

__version__ = "0.1.0"

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
    "Histogram",
    "PartitionChange",
    "ProduceError",
    "ProduceTimeoutError",
    "Producer",
    "ProducerMetrics",
    "RetryPolicy",
    "SerializationError",
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
