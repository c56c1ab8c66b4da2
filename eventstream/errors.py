"""Every error eventstream raises derives from :class:`EventStreamError`.

Misuse errors also derive from the built-in a caller would expect (``ValueError``, ``TypeError``,
``RuntimeError``, ``TimeoutError``), so ``except ValueError`` keeps working. Errors from the broker
or the client library carry librdkafka's error code and name, and say whether retrying can help
(``retriable``) and whether the client is unusable from now on (``fatal``).

An error says what is known about the events involved: a produce error counts the events known
*not* to be written (``failed``) apart from those that *may* have been written (``in_doubt``:
a retry may duplicate them).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "ArgumentTypeError",
    "AuthenticationError",
    "AuthorizationError",
    "BrokerError",
    "CloseError",
    "ClosedError",
    "ConfigError",
    "ConsumerAlreadyStartedError",
    "EventStreamError",
    "EventTypeError",
    "GapError",
    "GroupConflictError",
    "ProduceAuthenticationError",
    "ProduceAuthorizationError",
    "ProduceError",
    "ProduceTimeoutError",
    "SerializationError",
    "TopicError",
    "WaitTimeoutError",
]


class EventStreamError(Exception):
    """Root of every error raised by eventstream."""


class ConfigError(EventStreamError, ValueError):
    """A setting or an argument is invalid; ``field`` names it (e.g.
    ``"producer_properties['acks']"``). Settings are checked at construction."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class EventTypeError(EventStreamError, TypeError):
    """An event is not an instance of the topic's event class. Nothing of that call was sent."""


class ArgumentTypeError(EventStreamError, TypeError):
    """An argument is of the wrong kind: a handler or key function that is not callable, a
    config that is not a :class:`~eventstream.TopicConfig`."""


class SerializationError(EventStreamError, ValueError):
    """An event (or its key) could not be serialized. Nothing of that call was sent."""


class ClosedError(EventStreamError, RuntimeError):
    """The topic, producer or consumer was used after ``close()``, or in a child process forked
    after it was created (a child must make its own)."""


class ConsumerAlreadyStartedError(EventStreamError, RuntimeError):
    """``consume()`` was called a second time on the same consumer."""


class GroupConflictError(EventStreamError, ValueError):
    """A second member was asked for an instance's consumer group of a topic that a cache owns:
    ``Topic.new_cache`` where a consumer of that topic and instance is open, or
    ``Topic.new_consumer`` (or a second ``new_cache``) where a cache is. A cache owns its group;
    give a handler to it as ``on_event=`` instead of a consumer of its own."""


class WaitTimeoutError(EventStreamError, TimeoutError):
    """A wait (``wait_until_assigned``, ``EventRecorder.wait_for``) ended before its condition
    held. The message names what was missing and the client's last error."""


class CloseError(EventStreamError):
    """``Topic.close()`` could not close some of its producers and consumers; ``failures`` holds
    what each of them raised (the first is also the ``__cause__``)."""

    def __init__(self, message: str, failures: list[BaseException]) -> None:
        super().__init__(message)
        self.failures = failures


class GapError(EventStreamError):
    """Events of a partition were skipped, so a cache fed by the stream may be stale: they were
    deleted by retention before this instance handled them, or they were lost with a topic that
    was deleted and recreated under the consumer. Given to ``on_error`` and ``on_gap`` (and
    logged) when a consumer goes on past them; never raised by a call.

    ``first_offset`` is the first skipped offset, ``resume_offset`` where reading resumed;
    ``skipped`` how many offsets lie between (an upper bound on the events missed). When the
    topic was ``recreated``, ``first_offset`` is where the consumer was in the old topic (what
    followed there, if anything, is lost), ``resume_offset`` the first offset of the new one, and
    ``skipped`` is ``None``: nobody can count what the old topic held.
    """

    def __init__(
        self,
        message: str,
        *,
        topic: str,
        partition: int,
        first_offset: int,
        resume_offset: int,
        recreated: bool = False,
    ) -> None:
        super().__init__(message)
        self.topic = topic
        self.partition = partition
        self.first_offset = first_offset
        self.resume_offset = resume_offset
        self.recreated = recreated

    @property
    def skipped(self) -> int | None:
        """How many offsets were skipped (an upper bound on the events missed); ``None`` when
        the topic was recreated."""
        if self.recreated:
            return None
        return max(0, self.resume_offset - self.first_offset)

    def __reduce__(self) -> tuple[object, ...]:
        kwargs = {
            "topic": self.topic,
            "partition": self.partition,
            "first_offset": self.first_offset,
            "resume_offset": self.resume_offset,
            "recreated": self.recreated,
        }
        return (_rebuild_gap, (str(self), kwargs))


def _rebuild_gap(message: str, kwargs: dict[str, object]) -> GapError:
    return GapError(message, **kwargs)  # type: ignore[arg-type]


class BrokerError(EventStreamError):
    """An error reported by librdkafka or the broker.

    ``code`` is librdkafka's ``rd_kafka_resp_err_t`` value (negative for client-side errors such as
    ``_MSG_TIMED_OUT``), ``name`` its symbolic name. ``retriable`` says whether the same request may
    succeed later (the broker was unreachable, a leader moved); ``fatal`` that the client instance
    cannot be used any more (create a new one).
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


def fresh(error: BrokerError) -> BrokerError:
    """A new instance with the same class and fields, to raise a remembered failure again
    without growing the original's traceback."""
    return _rebuild(type(error), str(error), error.code, error.name, error.retriable, error.fatal)


class AuthenticationError(BrokerError):
    """The brokers refused this client's credentials or TLS handshake (wrong password, unknown
    user, SASL mechanism or protocol mismatch, a broker certificate the configured CA cannot
    verify). Never retriable: fix ``client_properties``. A consumer stops consuming; a producer
    fails what it has queued and refuses further calls."""


class AuthorizationError(BrokerError):
    """The broker authenticated this client but its principal lacks a permission (an ACL) for
    the topic, the consumer group or the cluster. Never retriable by itself: grant the ACL."""


class ProduceError(BrokerError):
    """Some events of a ``produce`` call were not acknowledged.

    ``failed`` counts the events known not to be written (rejected by the broker, or never sent);
    ``in_doubt`` those that may or may not have been written (their acknowledgement did not
    arrive in time): retrying them may duplicate them. ``total`` is the size of the call. The
    other events of the call were written.
    """

    failed: int = 0
    in_doubt: int = 0
    total: int = 0


class ProduceTimeoutError(ProduceError, TimeoutError):
    """A deadline passed (the call's ``timeout`` or ``TopicConfig.delivery_timeout``) before every
    event of a ``produce`` call was acknowledged. The unacknowledged events are in doubt (they may
    have been written, or may still be), except those known never to have left the client
    (``failed``: librdkafka's queue stayed full, or no broker ever answered)."""


class ProduceAuthenticationError(ProduceError, AuthenticationError):
    """A ``produce`` call failed because the producer could not authenticate."""


class ProduceAuthorizationError(ProduceError, AuthorizationError):
    """A ``produce`` call was refused: the principal may not write to the topic."""


class TopicError(BrokerError):
    """Creating or inspecting the topic failed, or it exists with fewer partitions than required."""


# -- classification of librdkafka error codes (shared by both backends) ---------------------------

# librdkafka error codes that mean "the same request may succeed later": the broker was unreachable,
# a leader moved, a queue was full, a deadline passed while the cluster was unavailable.
RETRIABLE_CODES = frozenset(
    {
        -195,  # _TRANSPORT
        -193,  # _RESOLVE
        -192,  # _MSG_TIMED_OUT
        -190,  # _UNKNOWN_PARTITION
        -188,  # _UNKNOWN_TOPIC
        -187,  # _ALL_BROKERS_DOWN
        -185,  # _TIMED_OUT
        -184,  # _QUEUE_FULL
        -151,  # _PURGE_INFLIGHT
        -147,  # _MAX_POLL_EXCEEDED (the consumer rejoins by itself)
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

#: Delivery-report codes after which an event may or may not be in the topic: the request may have
#: reached the broker, but no acknowledgement came back. Every other delivery error means the event
#: was not written (the broker rejected it, or it was never sent).
IN_DOUBT_CODES = frozenset(
    {
        -195,  # _TRANSPORT
        -192,  # _MSG_TIMED_OUT
        -185,  # _TIMED_OUT
        -151,  # _PURGE_INFLIGHT
        -150,  # _FATAL
        7,  # REQUEST_TIMED_OUT
        13,  # NETWORK_EXCEPTION
        20,  # NOT_ENOUGH_REPLICAS_AFTER_APPEND
    }
)

#: Codes that mean "no broker can be reached right now": routine, retried by librdkafka forever,
#: reported as a connection state (``disconnected``), never one log line per retry.
CONNECTIVITY_CODES = frozenset({-195, -193, -187})  # _TRANSPORT, _RESOLVE, _ALL_BROKERS_DOWN

_AUTHENTICATION_CODES = frozenset(
    {
        -169,  # _AUTHENTICATION
        33,  # UNSUPPORTED_SASL_MECHANISM
        34,  # ILLEGAL_SASL_STATE
        58,  # SASL_AUTHENTICATION_FAILED
    }
)
_SSL = -181
_AUTHORIZATION_CODES = frozenset(
    {
        29,  # TOPIC_AUTHORIZATION_FAILED
        30,  # GROUP_AUTHORIZATION_FAILED
        31,  # CLUSTER_AUTHORIZATION_FAILED
        53,  # TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        65,  # DELEGATION_TOKEN_AUTHORIZATION_FAILED
    }
)
_TIMEOUT_CODES = frozenset({-192, -185, 7})  # _MSG_TIMED_OUT, _TIMED_OUT, REQUEST_TIMED_OUT
FENCED_INSTANCE_ID = 82
UNRELEASED_INSTANCE_ID = 111


#: Fatal errors a consumer meets, by librdkafka code: FENCED_INSTANCE_ID, UNRELEASED_INSTANCE_ID,
#: FENCED_MEMBER_EPOCH, UNKNOWN_MEMBER_ID, PRODUCER_FENCED.
_FATAL_CAUSES = (82, 111, 110, 25, 90)
_FATAL = -150


def fatal_cause(code: int, reason: str) -> int:
    """The code of the error behind a ``_FATAL`` one. librdkafka's ``rd_kafka_fatal_error()``
    names it; where a client offers only the error's text (confluent-kafka hands a consumer's
    fatal error over as a record error), the cause is the librdkafka error whose description
    the text quotes. Other codes are returned as they are."""
    if code != _FATAL:
        return code
    import confluent_kafka

    for cause in _FATAL_CAUSES:
        if confluent_kafka.KafkaError(cause).str() in reason:
            return cause
    return code


def error_name(code: int) -> str:
    """librdkafka's symbolic name of ``code`` (``rd_kafka_err2name``), e.g. ``"_MSG_TIMED_OUT"``."""
    import confluent_kafka

    return str(confluent_kafka.KafkaError(code).name())


def is_retriable(code: int) -> bool:
    """Whether librdkafka error ``code`` is transient (see :class:`BrokerError`)."""
    return code in RETRIABLE_CODES


def is_authentication(code: int, reason: str = "") -> bool:
    """Whether ``code`` (with librdkafka's ``reason``) means the brokers refused the client's
    credentials or TLS handshake. ``_SSL`` counts when it is about the handshake or the broker's
    certificate, not a TLS error on an established connection."""
    if code in _AUTHENTICATION_CODES:
        return True
    if code == _SSL:
        text = reason.lower()
        return any(w in text for w in ("handshake", "certificate", "verify", "unknown ca"))
    return False


def is_authorization(code: int) -> bool:
    """Whether ``code`` means the client's principal lacks an ACL."""
    return code in _AUTHORIZATION_CODES


_UNKNOWN_TOPIC = frozenset({3, -188})  # UNKNOWN_TOPIC_OR_PART, _UNKNOWN_TOPIC


def _hint(code: int, reason: str) -> str:
    if code in _UNKNOWN_TOPIC:
        return (
            "The topic does not exist: eventstream never creates topics implicitly; create it "
            "with Topic.ensure_exists() (or the cluster's own tools)."
        )
    if is_authentication(code, reason):
        if code == _SSL:
            return (
                "The TLS handshake failed: check ssl.ca.location (the CA that signed the broker's "
                "certificate) and security.protocol in client_properties."
            )
        return (
            "Check sasl.username, sasl.password, sasl.mechanisms and security.protocol in "
            "client_properties."
        )
    if is_authorization(code):
        return (
            "The credentials are valid but lack a permission: ask for the ACLs (WRITE on the "
            "topic to produce; READ on the topic and the consumer group to consume)."
        )
    return ""


def client_error(
    code: int, name: str, reason: str, *, what: str, fatal: bool = False
) -> BrokerError:
    """The error for a client-level failure reported by librdkafka (``error_cb``, a consumer
    error): :class:`AuthenticationError`, :class:`AuthorizationError` or :class:`BrokerError`,
    with ``what`` (e.g. ``"consumer of topic 'x'"``), the cause and what to do in the message."""
    hint = _hint(code, reason)
    message = f"{what}: {'fatal error: ' if fatal else ''}{name}: {reason}"
    if hint:
        message = f"{message.rstrip('.')}. {hint}"
    cls: type[BrokerError] = BrokerError
    if is_authentication(code, reason):
        cls = AuthenticationError
    elif is_authorization(code):
        cls = AuthorizationError
    retriable = is_retriable(code) and not fatal and cls is BrokerError
    return cls(message, code=code, name=name, retriable=retriable, fatal=fatal)


def request_error(
    what: str, code: int, name: str, reason: str, cls: type[BrokerError] = BrokerError
) -> BrokerError:
    """The error for an admin request about ``what`` that failed: :class:`AuthenticationError`
    or :class:`AuthorizationError` as :func:`client_error` makes them, else ``cls``."""
    if is_authentication(code, reason) or is_authorization(code):
        return client_error(code, name, reason, what=what)
    return cls(f"{what}: {name}: {reason}", code=code, name=name, retriable=is_retriable(code))


def produce_error(
    code: int,
    name: str,
    reason: str,
    *,
    failed: int,
    in_doubt: int,
    total: int,
    topic: str,
    fatal: bool = False,
    cause: BrokerError | None = None,
) -> ProduceError:
    """The error a ``produce`` call raises when ``failed + in_doubt`` of its ``total`` events were
    not acknowledged; ``code``/``name``/``reason`` describe the first failed delivery, ``cause``
    the producer's own failure (authentication, a fatal error) if it has one. Both backends use
    it, so they report the same class, counts and words."""
    if cause is not None:
        code, name, fatal = cause.code, cause.name, cause.fatal
        reason = str(cause)
    else:
        hint = _hint(code, reason)
        if hint:
            reason = f"{reason.rstrip('.')}. {hint}"
    parts: list[str] = []
    if failed:
        parts.append(f"{failed} failed (not written)")
    if in_doubt:
        parts.append(
            f"{in_doubt} {'is' if in_doubt == 1 else 'are'} in doubt (may have been written; "
            "a retry may duplicate them)"
        )
    cls: type[ProduceError] = ProduceError
    if isinstance(cause, AuthenticationError) or (cause is None and is_authentication(code)):
        cls = ProduceAuthenticationError
    elif isinstance(cause, AuthorizationError) or (cause is None and is_authorization(code)):
        cls = ProduceAuthorizationError
    elif code in _TIMEOUT_CODES:
        cls = ProduceTimeoutError
    retriable = is_retriable(code) and not fatal and cls in (ProduceError, ProduceTimeoutError)
    err = cls(
        f"{failed + in_doubt} of {total} events to topic {topic!r} were not acknowledged: "
        f"{' and '.join(parts)}: {name} ({code}): {reason}",
        code=code,
        name=name,
        retriable=retriable,
        fatal=fatal,
    )
    err.failed = failed
    err.in_doubt = in_doubt
    err.total = total
    return err


def event_too_large_error(
    index: int,
    key_len: int,
    value_len: int,
    budget: int,
    *,
    max_message_bytes: int,
    total: int,
    topic: str,
) -> ProduceError:
    """The error a ``produce`` call raises, before it sends anything, for event ``index`` whose
    key and value exceed ``budget`` (what ``message.max.bytes`` leaves them)."""
    err = ProduceError(
        f"event {index} of the call is too large for topic {topic!r}: its value ({value_len} "
        f"bytes) and key ({key_len} bytes) with eventstream's headers exceed message.max.bytes "
        f"({max_message_bytes}) by {key_len + value_len - budget} bytes; nothing of the call was "
        f"sent ({total} {'event' if total == 1 else 'events'} failed). Keep events smaller, or "
        "raise message.max.bytes in producer_properties and the topic's max.message.bytes on "
        "the brokers.",
        code=10,
        name="MSG_SIZE_TOO_LARGE",
        retriable=False,
    )
    err.failed = total
    err.in_doubt = 0
    err.total = total
    return err


def refused_at_enqueue(reason: str, index: int, total: int) -> str:
    """How a call's failure reads when librdkafka refused its event ``index`` of ``total`` (for
    ``reason``) before sending it, so that it and the rest of the call were not sent."""
    return (
        f"{reason} (event {index} of the call was refused before it was sent; events "
        f"{index}..{total - 1} were not sent)"
    )


def produce_timeout_error(
    *,
    pending: int,
    total: int,
    topic: str,
    timeout: float | None,
    last_error: str | None,
    not_sent: int = 0,
) -> ProduceTimeoutError:
    """The error a ``produce`` call raises when its ``timeout`` passed with ``pending`` events of
    ``total`` handed to librdkafka but unacknowledged (in doubt) and ``not_sent`` never handed
    over (librdkafka's queue stayed full: failed); ``last_error`` is the client's latest error."""
    cause = f"; last client error: {last_error}" if last_error else ""
    unsent = (
        f" {not_sent} of them were never sent (librdkafka's queue stayed full): not written."
        if not_sent
        else ""
    )
    doubt = (
        f" {pending} {'is' if pending == 1 else 'are'} in doubt: they may have been written, or "
        "may still be (librdkafka keeps trying until TopicConfig.delivery_timeout); a retry may "
        "duplicate them."
        if pending
        else ""
    )
    err = ProduceTimeoutError(
        f"{pending + not_sent} of {total} events to topic {topic!r} were not acknowledged within "
        f"{timeout or 0:g} s{cause}.{unsent}{doubt}",
        code=-185,
        name="_TIMED_OUT",
        retriable=True,
    )
    err.failed = not_sent
    err.in_doubt = pending
    err.total = total
    return err


def instance_id_conflict(code: int, props: Mapping[str, str], *, again: str = "") -> str:
    """What a fenced or refused static member must hear when it stops: two live processes share
    an instance id. ``props`` are the consumer's librdkafka properties; ``again`` follows the
    member's description when it was fenced before (e.g. "again, 4 s after it rejoined").
    Empty for other codes."""
    if code not in (FENCED_INSTANCE_ID, UNRELEASED_INSTANCE_ID):
        return ""
    return (
        f"{_instance_id_happened(code, props)}{' ' + again if again else ''}: most likely "
        f"instance_id {_instance_of(props)!r} is used by two live processes. Give every process "
        "that holds a cache its own instance_id (a host name shared by several worker processes "
        "is not unique), or use new_consumer(shared=True) where processes share the partitions "
        "on purpose"
    )


def fenced_rejoining(
    code: int, name: str, reason: str, props: Mapping[str, str], *, what: str, within: float
) -> BrokerError:
    """A static member was fenced and rejoins with a new client: not a failure yet. ``what``
    as :func:`client_error` takes it."""
    member = props.get("group.instance.id", "?")
    return BrokerError(
        f"{what}: {name}: {reason.rstrip('.')}. "
        f"{_instance_id_happened(code, props)}. A broker failure that moves the group's "
        "coordinator can cause this too, so the consumer rejoins at once with a new client as "
        f"static member {member!r}: its partitions are lost meanwhile, and events handled since "
        "its last commit are handled again. If another live process uses instance_id "
        f"{_instance_of(props)!r}, the two fence each other and one of them stops with an error "
        f"within {within:g} s",
        code=code,
        name=name,
        retriable=True,
    )


def _instance_of(props: Mapping[str, str]) -> str:
    return str(props.get("group.id", "?")).partition("::")[2] or "?"


def _instance_id_happened(code: int, props: Mapping[str, str]) -> str:
    group = props.get("group.id", "?")
    member = props.get("group.instance.id", "?")
    if code == FENCED_INSTANCE_ID:
        return f"Another consumer joined group {group!r} as static member {member!r}"
    return f"Static member {member!r} of group {group!r} is still held by another consumer"


def max_poll_exceeded(topic: str, max_poll_ms: int) -> BrokerError:
    return BrokerError(
        f"consumer of {topic!r}: a handler ran longer than max.poll.interval.ms ({max_poll_ms} "
        "ms), so the consumer left its group and rejoins; its partitions may have moved, and "
        "events handled since the last commit may be handled again. Make handlers faster or "
        "raise max.poll.interval.ms in consumer_properties.",
        code=-147,
        name="_MAX_POLL_EXCEEDED",
        retriable=True,
    )


# -- misuse detected before anything is sent (shared, so both backends say the same) -------------


def event_type_error(index: int, got: type, expected: type, type_name: str) -> EventTypeError:
    return EventTypeError(
        f"event {index} of the call is a {got.__module__}.{got.__qualname__}, expected "
        f"{type_name} ({expected.__module__}.{expected.__qualname__}); nothing was sent"
    )


def serialize_error(index: int, type_name: str, exc: BaseException) -> SerializationError:
    return SerializationError(
        f"event {index} of the call ({type_name}) could not be serialized: "
        f"{type(exc).__name__}: {exc}; nothing was sent"
    )


def key_function_error(index: int, type_name: str, exc: BaseException) -> SerializationError:
    if isinstance(exc, UnicodeError):
        what = f"returned a key that is not encodable as UTF-8 ({exc})"
    else:
        what = f"raised {type(exc).__name__}: {exc}"
    return SerializationError(
        f"the key function {what} for event {index} of the call ({type_name}); nothing was sent"
    )


def key_type_error(index: int, type_name: str, key: object) -> SerializationError:
    return SerializationError(
        f"the key function returned {type(key).__qualname__} ({key!r:.60}) for event {index} of "
        f"the call ({type_name}); it must return str, bytes or None; nothing was sent"
    )


def wait_timeout_error(what: str, timeout: float, last_error: str | None) -> WaitTimeoutError:
    """A :class:`WaitTimeoutError` saying what did not happen within ``timeout`` and why, if the
    client knows."""
    cause = f"; last client error: {last_error}" if last_error else ""
    return WaitTimeoutError(f"{what} within {timeout:g} s{cause}")
