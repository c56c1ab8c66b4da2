"""One Kafka topic of typed events: :class:`Topic`, :func:`new_topic`, :func:`new_noop_topic`."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from google.protobuf.message import Message

from eventstream._noop import NOOP_BACKEND
from eventstream._runtime import wire
from eventstream._runtime.admin import TopicAdmin
from eventstream._runtime.backend import Backend, ConsumerSpec, ProducerSpec, load_backend
from eventstream._runtime.closing import Closeable, check_timeout
from eventstream._runtime.consuming import ConsumerRuntime
from eventstream._runtime.health import Health
from eventstream._runtime.membership import Membership, claim
from eventstream._runtime.records import EventMetadata
from eventstream._runtime.telemetry.reporting import reporter, statistics_tick
from eventstream.config import TopicConfig
from eventstream.consumer import Consumer
from eventstream.errors import (
    ArgumentTypeError,
    ClosedError,
    CloseError,
    ConfigError,
    EventTypeError,
    GroupConflictError,
)
from eventstream.producer import Producer

if TYPE_CHECKING:  # eventstream.cache (and the admin client it uses) load on the first new_cache()
    from eventstream.cache.barrier import AppliedBarrier
    from eventstream.cache.cache import Cache

__all__ = ["Topic", "new_noop_topic", "new_topic"]

E = TypeVar("E", bound=Message)
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

KeyFunction = Callable[[E], "str | bytes | None"]


class Topic(Closeable, Generic[E]):
    """A Kafka topic whose events are all of one protobuf class ``E``.

    Makes producers and consumers, creates the topic if asked, and closes everything it made.
    Thread-safe. Creating it, or its producers and consumers, makes no network call.
    """

    def __init__(
        self,
        event_type: type[E],
        config: TopicConfig,
        *,
        _backend: Backend | None = None,
        _admin: TopicAdmin | None = None,
    ) -> None:
        descriptor = getattr(event_type, "DESCRIPTOR", None)
        if not (isinstance(event_type, type) and issubclass(event_type, Message)) or not hasattr(
            descriptor, "full_name"
        ):
            raise EventTypeError(
                f"event_type must be a generated protobuf message class, got {event_type!r}"
            )
        if not isinstance(config, TopicConfig):
            raise ArgumentTypeError(f"config must be a TopicConfig, got {config!r}")
        self.event_type = event_type
        self.config = config
        self.type_name: str = event_type.DESCRIPTOR.full_name
        self._backend = _backend if _backend is not None else load_backend()
        self._admin = _admin
        self._lock = threading.Lock()
        self._children: list[Producer[E] | Consumer[E] | Cache[Any, Any]] = []
        self._closed = False
        self._barrier: AppliedBarrier | None = None

    @property
    def name(self) -> str:
        """The Kafka topic's name (``config.topic``)."""
        return self.config.topic

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (its producers and consumers are then closed or
        closing). Thread-safe; no network call."""
        return self._closed

    def _adopt(self, child: Producer[E] | Consumer[E] | Cache[Any, Any]) -> None:
        with self._lock:
            if self._closed:
                raise ClosedError(f"topic {self.name!r} is closed")
            self._children = [c for c in self._children if not c.closed]
            if not isinstance(child, Producer):
                self._check_member("consumer" if isinstance(child, Consumer) else "cache")
            self._children.append(child)

    def _check_member(self, new: Literal["cache", "consumer"]) -> None:
        """Refuse a cache next to a consumer of this topic, or a consumer (or a second cache)
        next to a cache: a cache owns the instance's group. Called with the lock held."""
        for child in self._children:
            if child.closed:
                continue
            is_cache = not isinstance(child, Producer | Consumer)
            if is_cache or (new == "cache" and isinstance(child, Consumer)):
                raise self._conflict(new)

    def _conflict(self, new: Literal["cache", "consumer"]) -> GroupConflictError:
        group = self.config.group_id
        if new == "cache":
            return GroupConflictError(
                f"topic {self.name!r}: a cache owns its instance's consumer group {group!r}, but "
                "a consumer of that group is open in this process (made by this or another "
                "Topic with the same instance id): close it and pass its handler to new_cache() "
                "as on_event= (it runs after each event's invalidation), or use another "
                "instance id"
            )
        return GroupConflictError(
            f"topic {self.name!r}: a cache of this topic owns the consumer group {group!r} in "
            "this process, so no other member may join it: pass the handler to new_cache() as "
            "on_event= instead of consuming the topic a second time, or use another instance id"
        )

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"topic {self.name!r} is closed")

    def new_producer(self, *, key: KeyFunction[E] | None = None) -> Producer[E]:
        """A producer of this topic. ``key(event)`` (``str``, ``bytes`` or ``None``) picks the
        partition: events with one key land in one partition and keep their order."""
        self._check_open()
        if key is not None and not callable(key):
            raise ArgumentTypeError(f"key must be a function of the event, got {key!r}")
        health = self._health(
            f"producer of topic {self.name!r}", "producer", fail_on_authorization=False
        )
        report = reporter(self.config)
        properties = self.config.producer_settings()
        max_bytes = int(properties.get("message.max.bytes", "1000000"))
        spec = ProducerSpec(
            properties=properties,
            topic=self.name,
            event_type=self.event_type,
            type_name=self.type_name,
            source=self.config.instance_id,
            key=key,
            logger=self.config.logger,
            health=health,
            statistics=partial(
                statistics_tick, health=health, statistics=report, logger=self.config.logger
            ),
            payload_budget=wire.payload_budget(max_bytes, self.config.instance_id, self.type_name),
            max_message_bytes=max_bytes,
        )
        try:
            native = self._backend.new_producer(spec)
        except ConfigError as exc:
            if exc.field != "properties":
                raise
            raise self.config.client_refused("producer", exc.reason) from None
        producer: Producer[E] = Producer(
            native,
            self.name,
            health,
            self.config.logger,
            self.config.telemetry,
        )
        if report is not None:
            report.attach(producer)
        self._adopt(producer)
        return producer

    def new_consumer(
        self, *, start_from_beginning: bool = False, shared: bool = False
    ) -> Consumer[E]:
        """A consumer in this instance's group ``"{topic}::{instance_id}"``.

        ``start_from_beginning`` decides where a group without committed offsets starts: the
        oldest retained event, or only events produced after it joined (the default). A group
        that has committed offsets always resumes after them.

        By default the consumer is a *static member* of its group (``group.instance.id``
        ``"{instance_id}-{n}"``, ``n`` the lowest index no open consumer of this instance in this
        process holds): restarted with the same instance id it gets its partitions back at once,
        and a second live process with the same instance id is reported as an error (the two
        fence each other, and one of them fails; a member fenced once rejoins, as a broker
        failure can fence it by itself). ``shared=True`` makes a dynamic member instead, for
        processes that share one instance id's partitions on purpose (each event is handled by
        one of them); a restarted shared consumer waits for the old member's session to time
        out (45 s by default) before it gets partitions.

        With KIP-848's protocol (``consumer_properties={"group.protocol": "consumer"}``) every
        consumer is a dynamic member: there, a static member restarted after a crash is refused
        (``UNRELEASED_INSTANCE_ID``, fatal in librdkafka) until the broker expires the old one,
        so a restart waits for ``group.consumer.session.timeout.ms`` (45 s by default) either way.
        """
        self._check_open()
        with self._lock:
            self._check_member("consumer")
        membership: Membership | None = None
        if not shared and not self.config.uses_consumer_protocol:
            membership = claim(
                str(self.config.brokers), self.config.group_id, self.config.instance_id
            )
            if membership is None:
                raise self._conflict("consumer")
        try:
            health = self._health(
                f"consumer of topic {self.name!r} (group {self.config.group_id!r})",
                "consumer",
                fail_on_authorization=True,
            )
            report = reporter(self.config)
            spec = ConsumerSpec(
                properties=self.config.consumer_settings(
                    group_instance_id=None if membership is None else membership.group_instance_id,
                ),
                topic=self.name,
                event_type=self.event_type,
                type_name=self.type_name,
                logger=self.config.logger,
                metadata_factory=EventMetadata,
                health=health,
                start_from_beginning=start_from_beginning,
                timed=self.config.metrics_enabled,
                statistics=report,
                trace_headers=self.config.telemetry is not None,
            )
            runtime = ConsumerRuntime(spec, self._backend, membership)
            consumer: Consumer[E] = Consumer(runtime, self.config, health)
            if report is not None:
                report.attach(consumer)
        except BaseException:
            if membership is not None:
                membership.release()
            raise
        try:
            self._adopt(consumer)
        except BaseException:
            consumer.close(0)  # never started: releases its membership
            raise
        return consumer

    @overload
    def new_cache(
        self,
        loader: Callable[[K], Awaitable[V]],
        *,
        keys: Callable[[E], K | Iterable[K] | None],
        max_staleness: float = 1.0,
        ttl: float = 300.0,
        max_entries: int = 100_000,
        on_event: Callable[[E], object] | None = None,
        verify_fraction: float = 0.0,
        probe_interval: float = 0.25,
        name: str | None = None,
        logger: logging.Logger | None = None,
    ) -> Cache[K, V]: ...

    @overload
    def new_cache(
        self,
        loader: Callable[[K], V],
        *,
        keys: Callable[[E], K | Iterable[K] | None],
        max_staleness: float = 1.0,
        ttl: float = 300.0,
        max_entries: int = 100_000,
        on_event: Callable[[E], object] | None = None,
        verify_fraction: float = 0.0,
        probe_interval: float = 0.25,
        name: str | None = None,
        logger: logging.Logger | None = None,
    ) -> Cache[K, V]: ...

    def new_cache(
        self,
        loader: Callable[[K], Any],
        *,
        keys: Callable[[E], K | Iterable[K] | None],
        max_staleness: float = 1.0,
        ttl: float = 300.0,
        max_entries: int = 100_000,
        on_event: Callable[[E], object] | None = None,
        verify_fraction: float = 0.0,
        probe_interval: float = 0.25,
        name: str | None = None,
        logger: logging.Logger | None = None,
    ) -> Cache[Any, Any]:
        """A read-through cache of ``loader`` that this topic's events keep coherent (see
        :class:`~eventstream.Cache` for what it promises and what each argument means).

        The cache reads the topic in this instance's group ``"{topic}::{instance_id}"``, from
        the end of the topic (events before it cannot matter to an empty cache), and owns that
        group in this process: a topic with an open consumer refuses it, and a topic with a
        cache refuses :meth:`new_consumer`, both with :class:`GroupConflictError`; a handler
        of the topic's events goes to the cache as ``on_event`` (it runs on the consumer's poll
        thread after each event's invalidation). What it applied is committed every 200 ms,
        which :meth:`wait_applied` reads. It probes the topic's end offsets with an admin
        client of its own every ``probe_interval``. ``name`` (default: the topic's name) is
        used in logs and errors; ``logger`` defaults to the config's.

        Starts consuming at once; :meth:`Cache.wait_ready` waits until it serves hits (about a
        second). The topic closes it on :meth:`close`. On a no-op topic
        (:func:`new_noop_topic`) the cache never serves a hit: every get calls the loader,
        nothing is stored, and ``wait_ready`` returns at once."""
        from eventstream.cache import consumer_feed
        from eventstream.cache.cache import Cache
        from eventstream.cache.probe import AdminProbe

        self._check_open()
        cache_name = self.name if name is None else name
        cache_logger = self.config.logger if logger is None else logger
        if self._backend.inert:
            from eventstream.cache.noop import NoopCache, NoopFeed, NoopProbe

            noop: Cache[Any, Any] = NoopCache(
                NoopFeed(),
                NoopProbe(),
                loader,
                keys=keys,
                max_staleness=max_staleness,
                ttl=ttl,
                max_entries=max_entries,
                on_event=on_event,
                verify_fraction=verify_fraction,
                probe_interval=probe_interval,
                name=cache_name,
                logger=cache_logger,
            )
            self._adopt(noop)
            return noop
        with self._lock:
            self._check_member("cache")
        membership: Membership | None = None
        if not self.config.uses_consumer_protocol:
            membership = claim(
                str(self.config.brokers), self.config.group_id, self.config.instance_id, sole=True
            )
            if membership is None:
                raise self._conflict("cache")
        runtime: ConsumerRuntime | None = None
        try:
            health = self._health(
                f"consumer of cache {cache_name!r} of topic {self.name!r} "
                f"(group {self.config.group_id!r})",
                "consumer",
                fail_on_authorization=True,
            )
            properties = self.config.consumer_settings(
                group_instance_id=None if membership is None else membership.group_instance_id,
            )
            if "auto.commit.interval.ms" not in self.config.consumer_properties:
                properties["auto.commit.interval.ms"] = str(consumer_feed.COMMIT_INTERVAL_MS)
            spec = ConsumerSpec(
                properties=properties,
                topic=self.name,
                event_type=self.event_type,
                type_name=self.type_name,
                logger=cache_logger,
                metadata_factory=consumer_feed.where,
                health=health,
                from_end=True,
            )
            runtime = ConsumerRuntime(spec, self._backend, membership)
            feed = consumer_feed.ConsumerFeed(runtime, self.name, self.type_name, cache_logger)
            cache: Cache[Any, Any] = Cache(
                feed,
                AdminProbe(self.config),
                loader,
                keys=keys,
                max_staleness=max_staleness,
                ttl=ttl,
                max_entries=max_entries,
                on_event=on_event,
                verify_fraction=verify_fraction,
                probe_interval=probe_interval,
                name=cache_name,
                logger=cache_logger,
            )
        except ConfigError as exc:
            self._unclaim(runtime, membership)
            if exc.field != "properties":
                raise
            raise self.config.client_refused("consumer", exc.reason) from None
        except BaseException:
            self._unclaim(runtime, membership)
            raise
        try:
            self._adopt(cache)
        except BaseException:
            cache.close(0)
            raise
        return cache

    @staticmethod
    def _unclaim(runtime: ConsumerRuntime | None, membership: Membership | None) -> None:
        if runtime is not None:
            runtime.close(0)  # never started (or failed to): releases the membership
        elif membership is not None:
            membership.release()

    def wait_applied(self, token: Mapping[int, int], timeout: float = 30.0) -> None:
        """Block until every live instance of this topic has applied the events of ``token``
        (e.g. ``producer.produce(...).token``): every consumer group ``"{topic}::*"`` with live
        members (each instance's cache) has committed offsets at or past it. A cache commits
        what it applied every 200 ms.

        Raises :class:`WaitTimeoutError` (also a ``TimeoutError``) when ``timeout`` passes
        first, naming the instance ids that had not applied it; a :class:`BrokerError` that
        asking again cannot cure (an :class:`AuthorizationError` without DESCRIBE on the
        groups). Returns at once on a no-op topic. Needs ListConsumerGroups,
        DescribeConsumerGroups and OffsetFetch, which librdkafka's mock cluster lacks."""
        self._check_open()
        if self._backend.inert:
            return
        with self._lock:
            if self._barrier is None:
                from eventstream.cache.barrier import AppliedBarrier

                self._barrier = AppliedBarrier(self.config)
            barrier = self._barrier
        barrier.wait(token, timeout)

    def _health(
        self, what: str, kind: Literal["producer", "consumer"], *, fail_on_authorization: bool
    ) -> Health:
        return Health(
            what=what,
            kind=kind,
            brokers=str(self.config.brokers),
            logger=self.config.logger,
            on_error=self.config.on_error,
            disconnected_after=self.config.disconnected_after,
            fail_on_authorization=fail_on_authorization,
        )

    def _topic_admin(self) -> TopicAdmin:
        if self._admin is None:
            settings = self.config.producer_settings()
            self._admin = TopicAdmin(
                {k: v for k, v in settings.items() if k not in _PRODUCER_ONLY},
                self.name,
                self.config.logger,
                self.config.disconnected_after,
            )
        return self._admin

    def ensure_exists(
        self, partitions: int = 1, replication_factor: int = 1, *, timeout: float = 30.0
    ) -> bool:
        """Create the topic if it does not exist and wait until it is usable. Blocks.

        Returns ``True`` if this call created it. Raises :class:`TopicError` if it exists with
        fewer than ``partitions`` partitions, or if creation failed (``.retriable`` says whether
        trying again may help).
        """
        self._check_open()
        if partitions < 1 or replication_factor < 1:
            raise ConfigError(
                "partitions" if partitions < 1 else "replication_factor",
                f"must be at least 1, got {min(partitions, replication_factor)}",
            )
        return self._topic_admin().ensure_exists(partitions, replication_factor, timeout)

    def wait_until_ready(self, timeout: float = 30.0) -> None:
        """Poll metadata every 100 ms until the topic exists and every partition has a leader.
        Blocks; raises :class:`TopicError` (retriable) when ``timeout`` passes first."""
        self._check_open()
        self._topic_admin().wait_until_ready(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Close every producer and consumer (and cache) made by this topic, within ``timeout``
        seconds in all (``None``: as long as they take), carrying on past failures, then raise
        them together as a :class:`CloseError` (a ``BaseException`` such as KeyboardInterrupt
        from a handler is re-raised as itself, after the rest are closed). Idempotent; blocks
        while producers flush and consumer handlers finish."""
        check_timeout(timeout)
        with self._lock:
            if self._closed:
                return
            self._closed = True
            children, self._children = self._children, []
        deadline = None if timeout is None else time.monotonic() + timeout
        failures: list[BaseException] = []
        interrupt: BaseException | None = None
        for child in children:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                child.close(left)
            except Exception as exc:
                failures.append(exc)
            except BaseException as exc:  # e.g. a handler's KeyboardInterrupt: close the rest first
                if interrupt is None:
                    interrupt = exc
        if interrupt is not None:
            raise interrupt
        if failures:
            raise CloseError(
                f"closing topic {self.name!r}: {len(failures)} of {len(children)} clients failed "
                "to close: " + "; ".join(f"{type(f).__name__}: {f}" for f in failures),
                failures,
            ) from failures[0]

    def __repr__(self) -> str:
        return f"Topic({self.type_name}, {self.name!r}, instance_id={self.config.instance_id!r})"


# Producer-only properties that would make an AdminClient log configuration warnings.
_PRODUCER_ONLY = frozenset({"acks", "enable.idempotence", "linger.ms", "message.timeout.ms"})


def new_topic(event_type: type[E], config: TopicConfig) -> Topic[E]:
    """The topic ``config.topic`` carrying events of ``event_type`` (a generated protobuf class).
    Makes no network call; raises :class:`EventTypeError` for a class that is not a message."""
    return Topic(event_type, config)


def new_noop_topic(event_type: type[E]) -> Topic[E]:
    """A topic on which every operation succeeds and does nothing (events are still
    type-checked), for running with streaming disabled."""
    config = TopicConfig(brokers="disabled:9", topic="noop", instance_id="noop")
    return Topic(event_type, config, _backend=NOOP_BACKEND, _admin=_NoopAdmin())


class _NoopAdmin(TopicAdmin):
    def __init__(self) -> None:
        super().__init__({}, "noop")

    def ensure_exists(self, partitions: int, replication_factor: int, timeout: float) -> bool:
        return False

    def wait_until_ready(self, timeout: float) -> None:
        pass
