"""Which process a client belongs to. librdkafka handles are not fork-safe: a child process
forked after a client was made must neither use it nor destroy it (its threads do not exist
there). Every client records :func:`generation` when it is made; a mismatch means "inherited
from a parent process"."""

from __future__ import annotations

import ctypes
import os
import weakref
from collections.abc import Callable

__all__ = ["generation", "keep_in_children", "on_fork_in_child"]

_generation = 0
_hooks: list[Callable[[], None]] = []
# Owners of confluent-kafka clients alive now (see keep_in_children).
_clients: weakref.WeakSet[object] = weakref.WeakSet()


def generation() -> int:
    """A number that changes in a child process after each ``fork()``."""
    return _generation


def on_fork_in_child(hook: Callable[[], None]) -> None:
    """Run ``hook()`` in the child after every fork (to drop state owned by parent threads)."""
    _hooks.append(hook)


def keep_in_children(owner: object) -> None:
    """Register the owner of a confluent-kafka client: in a child forked while it is alive, it
    is kept alive for good, because destroying the client there (its finalizer) would join
    librdkafka threads that exist only in the parent."""
    _clients.add(owner)


def _after_fork_in_child() -> None:
    global _generation
    _generation += 1
    for owner in list(_clients):
        # A reference nothing holds: not even the interpreter's last collection at exit frees it.
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(owner))
    _clients.clear()
    for hook in _hooks:
        hook()


os.register_at_fork(after_in_child=_after_fork_in_child)
