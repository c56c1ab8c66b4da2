"""A consumer's topic deleted and recreated under it: :class:`TopicWatch`.

librdkafka notices a new topic id only in its debug log and does not move a consumer's position:
the consumer goes on at its old offsets in the new topic, silently skipping what the new topic got
below them (seen with 2.16). So the topic's id is asked of the cluster (DescribeTopics, which
never creates a topic) every few seconds, and at once when the consumer sees a sign of trouble
(an unknown topic or partition, a partition count or an offset reset logged). A changed id is a
new topic: the consumer reports a gap and reads it from its first event.

Asked on the consumer's poll thread without blocking it: a request goes out, and its answer is
looked at on a later round.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Literal, cast

from eventstream._runtime import forks
from eventstream._runtime.librdkafka import ClientLog

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

__all__ = ["TopicWatch"]

#: How often the topic's id is asked when nothing suggests trouble (s).
INTERVAL = 5.0

# Properties of a consumer an admin client has no use for (it would log that it ignores them).
_CONSUMER_ONLY_PREFIXES = (
    "group.",
    "enable.auto.",
    "auto.",
    "partition.assignment",
    "fetch.",
    "max.poll",
    "session.timeout",
    "heartbeat.",
    "isolation.level",
    "statistics.",
)

Change = Literal["recreated", "deleted"]


class TopicWatch:
    """Watches one topic's id. Used on one consumer's poll thread only."""

    def __init__(self, properties: Mapping[str, str], topic: str, logger: logging.Logger) -> None:
        self._topic = topic
        conf: dict[str, object] = {
            k: v for k, v in properties.items() if not k.startswith(_CONSUMER_ONLY_PREFIXES)
        }
        conf["logger"] = ClientLog(logger)
        self._conf = conf
        self._client: AdminClient | None = None
        self._id: str | None = None  # the topic's id as last seen
        self._missing = False  # the topic was found deleted (reported once)
        self._asked: Future[object] | None = None
        self._next = time.monotonic()

    def soon(self) -> None:
        """Something suggests the topic changed: ask at the next round."""
        self._next = 0.0

    def poll(self) -> Change | None:
        """Look at the last answer (non-blocking) and ask again when due. Returns what changed
        since the last answer: the topic was recreated (a new id), or deleted."""
        now = time.monotonic()
        asked = self._asked
        if asked is not None:
            if not asked.done():
                return None
            self._asked = None
            change = self._answer(asked)
            if change is not None:
                return change
        if now >= self._next:
            self._next = now + INTERVAL
            self._ask()
        return None

    def close(self) -> None:
        self._client = None
        self._asked = None

    def _ask(self) -> None:
        # Imported on first use: importing eventstream loads no confluent-kafka.
        import confluent_kafka
        from confluent_kafka.admin import AdminClient

        if self._client is None:
            self._client = AdminClient(self._conf)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
            forks.keep_in_children(self)
        futures = cast(
            "dict[str, Future[object]]",
            self._client.describe_topics(  # pyright: ignore[reportUnknownMemberType]
                confluent_kafka.TopicCollection([self._topic])
            ),
        )
        self._asked = futures[self._topic]

    def _answer(self, asked: Future[object]) -> Change | None:
        import confluent_kafka

        try:
            description = asked.result(0)
        except confluent_kafka.KafkaException as exc:
            if exc.args[0].code() == confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART:
                if not self._missing and self._id is not None:
                    self._missing = True
                    return "deleted"
                self._missing = True
            return None  # anything else: asked again when due
        topic_id = str(getattr(description, "topic_id", ""))
        previous, self._id = self._id, topic_id
        self._missing = False
        if previous is not None and topic_id != previous:
            return "recreated"
        return None
