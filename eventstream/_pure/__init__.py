"""The pure-Python backend over confluent-kafka's Python API: the fallback, and the reference.

Selected with ``EVENTSTREAM_NO_EXTENSIONS=1``. Semantics are those of ``eventstream.backend``; the
compiled backend (``eventstream._core``) must behave the same and passes the same tests.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import confluent_kafka

from eventstream._pure.consumer import PureConsumer
from eventstream._pure.producer import PureProducer
from eventstream.backend import BackendName, ConsumerSpec, ProducerSpec

__all__ = ["BACKEND", "PureBackend"]

_SILENT = logging.getLogger("eventstream.librdkafka.config-check")
_SILENT.addHandler(logging.NullHandler())
_SILENT.propagate = False


class PureBackend:
    name: BackendName = "pure"

    def check_properties(self, properties: Mapping[str, str]) -> None:
        # Building a client with no bootstrap servers validates every property by name and value
        # without connecting anywhere; its log output (e.g. "consumer property on a producer") is
        # discarded.
        conf: dict[str, object] = {
            k: v for k, v in properties.items() if k not in ("bootstrap.servers", "group.id")
        }
        error = _client_error(conf)
        if error is None:
            return
        # Name the culprit: librdkafka reports aliases (acks -> request.required.acks) by their
        # canonical name, so find the first property that fails on its own.
        culprit = next((k for k, v in conf.items() if _client_error({k: v}) is not None), "?")
        raise ValueError(f"{culprit}: {error}")

    def new_producer(self, spec: ProducerSpec) -> PureProducer:
        return PureProducer(spec)

    def new_consumer(self, spec: ConsumerSpec) -> PureConsumer:
        return PureConsumer(spec)


BACKEND = PureBackend()


def _client_error(conf: dict[str, object]) -> str | None:
    try:
        confluent_kafka.Producer({**conf, "logger": _SILENT})
    except confluent_kafka.KafkaException as exc:
        return str(exc.args[0].str() if exc.args else exc)
    return None
