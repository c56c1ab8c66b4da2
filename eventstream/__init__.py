"""eventstream: typed event streaming over Apache Kafka with protobuf payloads.

topic = eventstream.new_topic(Invalidate, TopicConfig(brokers=..., topic=..., instance_id=...))
with topic.new_producer() as producer:
    producer.produce(Invalidate(key="user:42"))   # blocks until the broker acknowledged it
"""

from eventstream.backend import backend
from eventstream.config import TopicConfig
from eventstream.consumer import Consumer
from eventstream.errors import (
    BrokerError,
    ClosedError,
    CloseError,
    ConfigError,
    ConsumerAlreadyStartedError,
    EventStreamError,
    EventTypeError,
    ProduceError,
    ProduceTimeoutError,
    SerializationError,
    TopicError,
)
from eventstream.metadata import EventMetadata
from eventstream.producer import Producer
from eventstream.topic import Topic, new_noop_topic, new_topic

__version__ = "0.1.0"

__all__ = [
    "BrokerError",
    "CloseError",
    "ClosedError",
    "ConfigError",
    "Consumer",
    "ConsumerAlreadyStartedError",
    "EventMetadata",
    "EventStreamError",
    "EventTypeError",
    "ProduceError",
    "ProduceTimeoutError",
    "Producer",
    "SerializationError",
    "Topic",
    "TopicConfig",
    "TopicError",
    "__version__",
    "backend",
    "new_noop_topic",
    "new_topic",
]
