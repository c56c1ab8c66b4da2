"""The pure-Python backend over confluent-kafka's Python API: the fallback, and the reference.

Selected with ``EVENTSTREAM_NO_EXTENSIONS=1``. Semantics are those of
``eventstream._runtime.backend``; the compiled backend (``eventstream._core``) must behave the
same and passes the same tests.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Literal

import confluent_kafka

from eventstream._pure.consumer import PureConsumer
from eventstream._pure.producer import PureProducer
from eventstream._runtime.backend import BackendName, ConsumerListener, ConsumerSpec, ProducerSpec

__all__ = ["BACKEND", "PureBackend"]

_SILENT = logging.getLogger("eventstream.librdkafka.config-check")
_SILENT.addHandler(logging.NullHandler())
_SILENT.propagate = False


class PureBackend:
    name: BackendName = "pure"
    inert = False

    def check_properties(
        self, properties: Mapping[str, str], kind: Literal["producer", "consumer"]
    ) -> str | None:
        # Building a client with no bootstrap servers validates every property by name and value
        # (and a consumer's group settings) without connecting anywhere; its log output (e.g.
        # "consumer property on a producer") is discarded.
        conf: dict[str, object] = {k: v for k, v in properties.items() if k != "bootstrap.servers"}
        return _client_error(conf, kind)

    def new_producer(self, spec: ProducerSpec) -> PureProducer:
        return PureProducer(spec)

    def new_consumer(self, spec: ConsumerSpec, listener: ConsumerListener) -> PureConsumer:
        return PureConsumer(spec, listener)


BACKEND = PureBackend()


def _client_error(conf: dict[str, object], kind: Literal["producer", "consumer"]) -> str | None:
    make = confluent_kafka.Consumer if kind == "consumer" else confluent_kafka.Producer
    try:
        client = make({**conf, "logger": _SILENT})
    except confluent_kafka.KafkaException as exc:
        return str(exc.args[0].str() if exc.args else exc)
    except (TypeError, ValueError) as exc:
        return str(exc)
    if isinstance(client, confluent_kafka.Consumer):
        client.close()
    return None
