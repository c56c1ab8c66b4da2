"""Every error eventstream raises derives from :class:`EventStreamError`.

Misuse errors also derive from the built-in a caller would expect (``ValueError``, ``TypeError``,
``RuntimeError``), so ``except ValueError`` keeps working. Errors from the broker or the client
library carry librdkafka's error code and name, and say whether retrying can help.
"""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "CloseError",
    "ClosedError",
    "ConfigError",
    "ConsumerAlreadyStartedError",
    "EventStreamError",
    "EventTypeError",
    "ProduceError",
    "ProduceTimeoutError",
    "SerializationError",
    "TopicError",
]


class EventStreamError(Exception):
    """Root of every error raised by eventstream."""


class ConfigError(EventStreamError, ValueError):
    """A setting is invalid. Raised at construction; ``field`` names the setting to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class EventTypeError(EventStreamError, TypeError):
    """An event is not an instance of the topic's event class. Nothing of that call was sent."""


class SerializationError(EventStreamError, ValueError):
    """An event (or its key) could not be serialized. Nothing of that call was sent."""


class ClosedError(EventStreamError, RuntimeError):
    """The topic, producer or consumer was used after ``close()``."""


class ConsumerAlreadyStartedError(EventStreamError, RuntimeError):
    """``consume()`` was called a second time on the same consumer."""


class CloseError(EventStreamError):
    """``Topic.close()`` could not close some of its producers and consumers; ``failures`` holds
    what each of them raised (the first is also the ``__cause__``)."""

    def __init__(self, message: str, failures: list[BaseException]) -> None:
        super().__init__(message)
        self.failures = failures


class BrokerError(EventStreamError):
    """An error reported by librdkafka or the broker.

    ``code`` is librdkafka's ``rd_kafka_resp_err_t`` value (negative for client-side errors such as
    ``_MSG_TIMED_OUT``), ``name`` its symbolic name. ``retriable`` says whether the same request may
    succeed later (the broker was unreachable, a leader moved); ``fatal`` that the client instance
    cannot be used any more.
    """

    def __init__(
        self, message: str, *, code: int, name: str, retriable: bool, fatal: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.name = name
        self.retriable = retriable
        self.fatal = fatal

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), str(self), self.code, self.name, self.retriable, self.fatal))


def _rebuild(
    cls: type[BrokerError], message: str, code: int, name: str, retriable: bool, fatal: bool
) -> BrokerError:
    return cls(message, code=code, name=name, retriable=retriable, fatal=fatal)


class ProduceError(BrokerError):
    """At least one event of a ``produce`` call was not acknowledged by the broker.

    ``failed`` is how many events of the call failed; events of a call may partly succeed.
    """

    failed: int = 0


class ProduceTimeoutError(ProduceError, TimeoutError):
    """A ``produce`` call's ``timeout`` passed before every event was acknowledged.

    The unacknowledged events are in doubt: they may still be delivered, or fail later.
    """


class TopicError(BrokerError):
    """Creating or inspecting the topic failed, or it exists with fewer partitions than required."""


# librdkafka error codes that mean "the same request may succeed later": the broker was unreachable,
# a leader moved, a queue was full, a deadline passed while the cluster was unavailable.
_RETRIABLE_CODES = frozenset(
    {
        -195,  # _TRANSPORT
        -193,  # _RESOLVE
        -192,  # _MSG_TIMED_OUT
        -190,  # _UNKNOWN_PARTITION
        -188,  # _UNKNOWN_TOPIC
        -187,  # _ALL_BROKERS_DOWN
        -185,  # _TIMED_OUT
        -184,  # _QUEUE_FULL
        3,  # UNKNOWN_TOPIC_OR_PART
        5,  # LEADER_NOT_AVAILABLE
        6,  # NOT_LEADER_FOR_PARTITION
        7,  # REQUEST_TIMED_OUT
        13,  # NETWORK_EXCEPTION
        14,  # COORDINATOR_LOAD_IN_PROGRESS
        15,  # COORDINATOR_NOT_AVAILABLE
        16,  # NOT_COORDINATOR
        19,  # NOT_ENOUGH_REPLICAS
        20,  # NOT_ENOUGH_REPLICAS_AFTER_APPEND
        56,  # KAFKA_STORAGE_ERROR
        74,  # FENCED_LEADER_EPOCH
        75,  # UNKNOWN_LEADER_EPOCH
        89,  # THROTTLING_QUOTA_EXCEEDED
    }
)


def is_retriable(code: int) -> bool:
    """Whether librdkafka error ``code`` is transient (see :class:`BrokerError`)."""
    return code in _RETRIABLE_CODES


def produce_error(
    code: int, name: str, reason: str, *, failed: int, total: int, topic: str, fatal: bool = False
) -> ProduceError:
    """The error a ``produce`` call raises when ``failed`` of its ``total`` events failed with
    librdkafka error ``code``/``name`` (first failure's ``reason``). Used by both backends."""
    retriable = is_retriable(code) and not fatal
    hint = (
        "transient: the broker was unreachable or busy; the call may be retried"
        if retriable
        else "permanent: retrying the same events will not help"
    )
    err = ProduceError(
        f"{failed} of {total} events to topic {topic!r} were not acknowledged: "
        f"{name} ({code}): {reason} [{hint}]",
        code=code,
        name=name,
        retriable=retriable,
        fatal=fatal,
    )
    err.failed = failed
    return err


def produce_timeout_error(
    *, pending: int, total: int, topic: str, timeout: float, last_error: str | None
) -> ProduceTimeoutError:
    """The error a ``produce`` call raises when its ``timeout`` passed with ``pending`` events of
    ``total`` unacknowledged; ``last_error`` is the client's latest connection error, if any."""
    cause = f"; last client error: {last_error}" if last_error else ""
    err = ProduceTimeoutError(
        f"{pending} of {total} events to topic {topic!r} were not acknowledged within "
        f"{timeout:g} s{cause}. They are in doubt: they may still be delivered. "
        "Check that the brokers in TopicConfig.brokers are reachable.",
        code=-185,
        name="_TIMED_OUT",
        retriable=True,
    )
    err.failed = pending
    return err
