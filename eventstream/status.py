"""What a producer or consumer reports about itself: :class:`ClientStatus`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from eventstream.errors import EventStreamError

__all__ = ["ClientState", "ClientStatus"]

#: ``connecting``: no broker has answered yet; ``ready``: a broker answers; ``disconnected``: no
#: broker answered for ``TopicConfig.disconnected_after`` seconds (librdkafka keeps retrying);
#: ``failed``: a permanent error (authentication, a fatal error) stopped the client, ``error`` says
#: which; ``closed``: closed by the application (or unusable in a forked child).
ClientState = Literal["connecting", "ready", "disconnected", "failed", "closed"]


@dataclass(frozen=True, slots=True)
class ClientStatus:
    """A snapshot of a client's state. ``error`` is the latest error the client reported
    (``None`` if none yet), ``since`` the ``time.monotonic()`` when ``state`` began."""

    state: ClientState
    error: EventStreamError | None
    since: float
