"""Static group membership: the ``group.instance.id`` each consumer of an instance gets.

A consumer restarted with the same ``group.instance.id`` takes its partitions back at once,
instead of waiting for the broker to time out the dead member's session (45 s by default). The
id is ``"{instance_id}-{n}"``, ``n`` the lowest index no open consumer of the same group in this
process holds: the first consumer of an instance is always ``-0``, so a restarted process, or a
consumer reopened after ``close()``, is the same static member as before. Two live *processes*
with the same instance id therefore collide, which the broker reports (the older member is fenced)
and eventstream turns into an error naming the shared id.
"""

from __future__ import annotations

import threading

from eventstream._runtime import forks

__all__ = ["Membership", "claim"]

_lock = threading.Lock()
_claimed: dict[tuple[str, str], set[int]] = {}
_sole: set[tuple[str, str]] = set()  # groups whose one member allows no other (a cache's)


class Membership:
    """One claimed index, held until :meth:`release`: the consumer's runtime calls it once the
    member left its group or gave up leaving (close deadline, no broker), or when a consumer
    closes that never started; ``Topic.new_consumer`` calls it if making the consumer failed."""

    def __init__(self, key: tuple[str, str], index: int, instance_id: str) -> None:
        self._key = key
        self.index = index
        self.group_instance_id = f"{instance_id}-{index}"
        self._generation = forks.generation()
        self._released = False

    def release(self) -> None:
        """Free the index for the next consumer. Only the first call does: a later one (a
        finalizer, a second close) must not free an index another consumer holds by then."""
        if self._generation != forks.generation():
            return  # claimed in a parent process: its table is not ours
        with _lock:
            if self._released:
                return
            self._released = True
            held = _claimed.get(self._key)
            if held is not None:
                held.discard(self.index)
                if not held:
                    del _claimed[self._key]
                    _sole.discard(self._key)


def claim(
    brokers: str, group_id: str, instance_id: str, *, sole: bool = False
) -> Membership | None:
    """Claim the lowest free index of ``group_id`` on ``brokers``. ``sole``: only if no other
    member of the group is open in this process, and none may join until it is released (a
    cache owns its group); ``None`` when that cannot be had."""
    key = (brokers, group_id)
    with _lock:
        held = _claimed.setdefault(key, set())
        if (sole and held) or key in _sole:
            if not held:
                del _claimed[key]
            return None
        index = next(i for i in range(len(held) + 1) if i not in held)
        held.add(index)
        if sole:
            _sole.add(key)
    return Membership(key, index, instance_id)


def _reset_after_fork() -> None:
    global _claimed, _sole
    _claimed = {}
    _sole = set()


forks.on_fork_in_child(_reset_after_fork)
