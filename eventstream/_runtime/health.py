"""How a client's troubles reach the application: once, with their cause, as a state.

Each producer and consumer has one :class:`Health`. Its backend feeds it from the client's poll
thread (librdkafka's error callback, a statistics tick about once a second, evidence that a broker
answered) and consults it (``failure``) before each call. It turns that stream into:

- ``status``: a :class:`~eventstream.ClientStatus` snapshot, readable from any thread, no lock;
- one log line per change of state (WARNING when no broker answered for ``disconnected_after``
  seconds, INFO when one answers again, ERROR when the client failed), and one WARNING per kind
  of other error until the client is ready again: never a line per librdkafka retry;
- ``TopicConfig.on_error(error)`` for every error the application should know about, called on
  one shared background thread (a slow or raising callback never blocks or breaks a client).

Backend-independent on purpose: both backends report the same states, words and errors.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from eventstream._runtime import forks
from eventstream.errors import (
    CONNECTIVITY_CODES,
    BrokerError,
    EventStreamError,
    client_error,
    is_authentication,
    is_authorization,
)

__all__ = ["ClientState", "ClientStatus", "ErrorCallback", "Health", "notify"]

ClientState = Literal["connecting", "ready", "disconnected", "failed", "closed"]
"""A client's state (:attr:`ClientStatus.state`). ``connecting``: no broker has answered yet;
``ready``: a broker answers; ``disconnected``: no broker answered for
``TopicConfig.disconnected_after`` seconds (librdkafka keeps retrying); ``failed``: a permanent
error (authentication, a fatal error) stopped the client, ``error`` says which; ``closed``: closed
by the application (or unusable in a forked child)."""


@dataclass(frozen=True, slots=True)
class ClientStatus:
    """A snapshot of a client's state. ``error`` is the latest error the client reported
    (``None`` if none yet), ``since`` the ``time.monotonic()`` when ``state`` began."""

    state: ClientState
    error: EventStreamError | None
    since: float


ErrorCallback = Callable[[EventStreamError], object]

_ALL_BROKERS_DOWN = -187


class Health:
    """The state of one client. Thread-safe; every method is cheap and never raises into the
    caller (a poll thread)."""

    def __init__(
        self,
        *,
        what: str,
        kind: Literal["producer", "consumer"],
        brokers: str,
        logger: logging.Logger,
        on_error: ErrorCallback | None,
        disconnected_after: float,
        fail_on_authorization: bool,
    ) -> None:
        self.what = what  # e.g. "consumer of topic 'users' (group 'users::api-7')"
        self._kind = kind
        self._brokers = brokers
        self._logger = logger
        self._on_error = on_error
        self._threshold = disconnected_after
        self._fail_on_authorization = fail_on_authorization
        self._lock = threading.Lock()
        self._status = ClientStatus("connecting", None, time.monotonic())
        self._failure: BrokerError | None = None
        self._down_since: float | None = None
        self._last_error: str | None = None
        self._warned: set[int] = set()
        # observe(): received bytes per broker entry at the last tick, and when a broker last
        # answered (counted from the client's start until one does).
        self._rx: dict[str, int] = {}
        self._last_answer = time.monotonic()
        #: Whether a broker has ever answered this client (until then, nothing it sent can
        #: have been written).
        self.answered = False

    # -- reading (any thread) --------

    @property
    def status(self) -> ClientStatus:
        return self._status

    @property
    def failure(self) -> BrokerError | None:
        """The error that failed the client (authentication, fatal), or ``None``."""
        return self._failure

    @property
    def last_error(self) -> str | None:
        """``"NAME: reason"`` of the client's latest librdkafka error, for timeout messages."""
        return self._last_error

    # -- feeding (poll threads) --------

    def up(self) -> None:
        """A broker answered (a statistics tick shows a connection up, a delivery succeeded, an
        assignment arrived)."""
        status = self._status
        if status.state == "ready" and self._down_since is None:
            return  # the common case: nothing to do, no lock
        self.answered = True
        with self._lock:
            # The outage began with the first evidence of no broker, disconnected_after before
            # the state said so.
            down_since, self._down_since = self._down_since, None
            status = self._status
            if status.state in ("ready", "failed", "closed"):
                return
            now = time.monotonic()
            self._status = ClientStatus("ready", status.error, now)
            self._warned.clear()
        if status.state == "disconnected":
            since = status.since if down_since is None else down_since
            self._log(
                logging.INFO,
                f"{self.what}: a broker answers again, after {now - since:.1f} s without one",
            )

    def down(self, reason: str | None = None, *, since: float | None = None) -> None:
        """Evidence that no broker answers now (librdkafka's all-brokers-down error; statistics
        without a connection up, or with requests unanswered since ``since``). After
        ``disconnected_after`` seconds of it the client becomes ``disconnected``: one WARNING and
        one ``on_error``."""
        now = time.monotonic()
        with self._lock:
            if reason:
                self._last_error = reason
            if self._status.state in ("disconnected", "failed", "closed"):
                return
            if since is not None and (self._down_since is None or since < self._down_since):
                self._down_since = since
            if self._down_since is None:
                self._down_since = now
                return
            if now - self._down_since < self._threshold:
                return
            waiting = (
                "events wait until TopicConfig.delivery_timeout"
                if self._kind == "producer"
                else "the consumer goes on where it left off once one answers"
            )
            error = BrokerError(
                f"{self.what}: no broker of {self._brokers} has answered for "
                f"{now - self._down_since:.0f} s (last error: {self._last_error or 'none'}). "
                f"librdkafka keeps trying; {waiting}. Check that the brokers run (a broker that "
                "is up but frozen or overloaded counts as not answering) and that "
                "TopicConfig.brokers and security.protocol are right.",
                code=_ALL_BROKERS_DOWN,
                name="_ALL_BROKERS_DOWN",
                retriable=True,
            )
            self._status = ClientStatus("disconnected", error, now)
        self._log(logging.WARNING, str(error))
        self._notify(error)

    def observe(self, stats: Mapping[str, Any]) -> None:
        """librdkafka's statistics (a tick every statistics.interval.ms): do brokers answer?

        A broker answered when an entry's received bytes grew since the last tick (an entry new
        at this tick only sets its baseline); the last answer came the smallest ``rxidle`` before
        the tick. Requests are waiting when an entry has
        requests in flight or queued (``waitresp_cnt``, ``outbuf_cnt``) or a producer has messages
        (``msg_cnt``); while a consumer's group rebalances, its coordinator may hold a join request
        as long as the rebalance takes, which is not waiting in vain. Requests waiting and no
        answer for ``disconnected_after`` seconds is an
        outage even with every connection up (a frozen or overloaded broker keeps its sockets
        open); no connection up at all is one too. An idle client with nothing outstanding learns
        nothing either way."""
        now = time.monotonic()
        brokers: Mapping[str, Mapping[str, Any]] = stats.get("brokers") or {}
        answered = False
        any_up = False
        waiting = int(stats.get("msg_cnt", 0) or 0) > 0 if self._kind == "producer" else False
        rx_now: dict[str, int] = {}
        idle: list[int] = []
        group: Mapping[str, Any] = stats.get("cgrp") or {}
        rebalancing = group.get("join_state", "steady") != "steady"
        for name, broker in brokers.items():
            rx = int(broker.get("rx", 0) or 0)
            rx_now[name] = rx
            if rx > self._rx.get(name, rx):  # entries come and go: a new one is a baseline
                answered = True
            rxidle = int(broker.get("rxidle", -1))
            if rxidle >= 0:
                idle.append(rxidle)
            any_up = any_up or broker.get("state") == "UP"
            if name == "GroupCoordinator" and rebalancing:
                continue  # a join waits at the coordinator as long as the rebalance takes
            waiting = (
                waiting
                or int(broker.get("waitresp_cnt", 0) or 0) > 0
                or int(broker.get("outbuf_cnt", 0) or 0) > 0
            )
        self._rx = rx_now
        if idle:  # each entry says how long ago it last received anything
            self._last_answer = now - min(idle) / 1e6
        if not any_up:
            self.down()
        elif waiting and now - self._last_answer >= self._threshold:
            self.down(since=self._last_answer)
        elif answered:
            self.up()

    def client_error(
        self, code: int, name: str, reason: str, *, fatal: bool = False
    ) -> BrokerError | None:
        """librdkafka reported an error for the whole client (``error_cb``, or a consumer error
        not tied to one record). Returns the failure if this error failed the client: the
        backend then stops (a consumer) or fails what is queued (a producer)."""
        self._last_error = f"{name}: {reason}"
        if (
            fatal
            or is_authentication(code, reason)
            or (self._fail_on_authorization and is_authorization(code))
        ):
            return self.fail(client_error(code, name, reason, what=self.what, fatal=fatal))
        if code in CONNECTIVITY_CODES:
            if code == _ALL_BROKERS_DOWN:
                self.down()
            return None
        self.warn(client_error(code, name, reason, what=self.what))
        return None

    def fail(self, error: BrokerError) -> BrokerError:
        """The client cannot go on: state ``failed``, one ERROR, ``on_error``. Idempotent: the
        first failure stays the failure (and is returned)."""
        with self._lock:
            if self._failure is not None:
                return self._failure
            self._failure = error
            if self._status.state != "closed":
                self._status = ClientStatus("failed", error, time.monotonic())
        self._log(logging.ERROR, str(error))
        self._notify(error)
        return error

    def stopped(self, cause: BaseException) -> None:
        """Consumption ended for good: a handler raised a BaseException (SystemExit,
        KeyboardInterrupt, ...), or ``cause`` is an EventStreamError saying why. State
        ``failed``, one ERROR, ``on_error``; ``close()`` re-raises it."""
        if isinstance(cause, EventStreamError):
            error = cause
        else:
            said = f": {cause}" if str(cause) else ""
            error = EventStreamError(
                f"{self.what} stopped consuming: the handler raised {type(cause).__name__}"
                f"{said}; close() re-raises it. The event it was handling is delivered again to "
                "the group's next consumer."
            )
        with self._lock:
            if self._status.state in ("failed", "closed"):
                return
            self._status = ClientStatus("failed", error, time.monotonic())
        self._log(logging.ERROR, str(error))
        self._notify(error)

    def warn(self, error: EventStreamError, *, code: int | None = None) -> None:
        """An error the application should know about that does not stop the client: given to
        ``on_error`` every time; logged once per kind (``code``) until the client is ready
        again."""
        if code is None:
            code = error.code if isinstance(error, BrokerError) else 0
        with self._lock:
            first = code not in self._warned
            self._warned.add(code)
            self._status = ClientStatus(self._status.state, error, self._status.since)
        if first:
            self._log(logging.WARNING, str(error))
        self._notify(error)

    def report(self, error: EventStreamError, level: int = logging.WARNING) -> None:
        """An error worth one log line and one ``on_error`` every time (e.g. a gap)."""
        with self._lock:
            self._status = ClientStatus(self._status.state, error, self._status.since)
        self._log(level, str(error))
        self._notify(error)

    def closed(self) -> None:
        with self._lock:
            self._status = ClientStatus("closed", self._status.error, time.monotonic())

    # -- internals --------

    def _log(self, level: int, message: str) -> None:
        with contextlib.suppress(Exception):  # logging must never break the client
            self._logger.log(level, "%s", message)

    def _notify(self, error: EventStreamError) -> None:
        if self._on_error is not None:
            _notifier.submit(self._on_error, error, self._logger)


class _Notifier:
    """One daemon thread that calls the applications' ``on_error`` callbacks in order."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[ErrorCallback, EventStreamError, logging.Logger]]
        self._queue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(
        self, callback: ErrorCallback, error: EventStreamError, logger: logging.Logger
    ) -> None:
        self._queue.put((callback, error, logger))
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="eventstream-on-error", daemon=True
                    )
                    self._thread.start()

    def _run(self) -> None:
        while True:
            callback, error, logger = self._queue.get()
            try:
                callback(error)
            except Exception:
                with contextlib.suppress(Exception):
                    logger.exception("TopicConfig.on_error raised while handling: %s", error)


_notifier = _Notifier()


def notify(callback: Callable[[Any], object], payload: Any, logger: logging.Logger) -> None:
    """Call ``callback(payload)`` on the shared background thread (exceptions are logged)."""
    _notifier.submit(callback, payload, logger)


def _reset_after_fork() -> None:
    global _notifier
    _notifier = _Notifier()  # the parent's thread does not exist in the child


forks.on_fork_in_child(_reset_after_fork)
