"""Which process a client belongs to. librdkafka handles are not fork-safe: a child process
forked after a client was made must neither use it nor destroy it (its threads do not exist
there). Every client records :func:`generation` when it is made; a mismatch means "inherited
from a parent process"."""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["generation", "on_fork_in_child"]

_generation = 0
_hooks: list[Callable[[], None]] = []


def generation() -> int:
    """A number that changes in a child process after each ``fork()``."""
    return _generation


def on_fork_in_child(hook: Callable[[], None]) -> None:
    """Run ``hook()`` in the child after every fork (to drop state owned by parent threads)."""
    _hooks.append(hook)


def _after_fork_in_child() -> None:
    global _generation
    _generation += 1
    for hook in _hooks:
        hook()


os.register_at_fork(after_in_child=_after_fork_in_child)
