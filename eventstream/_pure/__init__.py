"""The pure-Python backend over confluent-kafka's Python API: the fallback, and the reference.

Selected with ``EVENTSTREAM_NO_EXTENSIONS=1``. Semantics are those of
``eventstream._runtime.backend``; the compiled backend (``eventstream._core``) must behave the
same and passes the same tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eventstream._pure.consumer import PureConsumer
from eventstream._pure.producer import PureProducer

if TYPE_CHECKING:  # a backend imports only leaf modules at run time (tests/test_layers.py)
    from eventstream._runtime.backend import (
        BackendName,
        ConsumerListener,
        ConsumerSpec,
        ProducerSpec,
    )

__all__ = ["BACKEND", "PureBackend"]


class PureBackend:
    name: BackendName = "pure"
    inert = False

    def new_producer(self, spec: ProducerSpec) -> PureProducer:
        return PureProducer(spec)

    def new_consumer(self, spec: ConsumerSpec, listener: ConsumerListener) -> PureConsumer:
        return PureConsumer(spec, listener)


BACKEND = PureBackend()
