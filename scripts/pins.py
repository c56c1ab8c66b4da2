"""Print the exact requirements pinned in pyproject.toml, one per line, for scripts and CI jobs
that install tools outside the development venv.

    python3 scripts/pins.py build test      # [build-system] requires + the `test` extra

A group is ``build`` (the build-system requirements) or the name of an optional-dependency
extra; an extra's reference to another extra of eventstream (``eventstream[test]``) is expanded.
Needs only the standard library (Python 3.11+).
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def requirements(groups: list[str]) -> list[str]:
    data = tomllib.loads(PYPROJECT.read_text())
    name = data["project"]["name"]
    extras: dict[str, list[str]] = data["project"]["optional-dependencies"]
    out: list[str] = []

    def add(group: str) -> None:
        if group == "build":
            items = data["build-system"]["requires"]
        elif group in extras:
            items = extras[group]
        else:
            raise SystemExit(f"pins.py: no group {group!r} (build, {', '.join(extras)})")
        for item in items:
            if item.startswith(f"{name}["):
                for inner in item[len(name) + 1 : item.index("]")].split(","):
                    add(inner.strip())
            elif item not in out:
                out.append(item)

    for group in groups:
        add(group)
    return out


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1:])))
