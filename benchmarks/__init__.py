"""Side-by-side benchmarks of eventstream against the clients its users would pick instead.

``python -m benchmarks [--brokers B] [--quick] [--only SCENARIO] [--contenders ...] [--out DIR]``,
``scripts/bench`` or ``eventstream bench`` (from a checkout) run :func:`main`; ``--soak`` (or
``python -m benchmarks.soak``) runs the long memory test instead. See benchmarks/README.md.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks; returns the exit code (0 ok, 1 a measurement failed, 2 usage)."""
    from benchmarks.runner import main as run

    return run(argv)
