"""How an installation picks its backend (eventstream/backend.py's ``load_backend``): what the
build recorded in ``eventstream/_build_info.py`` decides what is expected, and a missing compiled
backend is never silently replaced where it was expected.

Each case runs in a fresh interpreter with a stand-in ``_build_info`` (and, where it matters, an
unimportable ``_core``), so it does not depend on how this checkout was built. The real builds
(a wheel, an sdist, a pure-only sdist build) are exercised by .ci/install.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import eventstream

_EVENTSTREAM_PARENT = str(Path(eventstream.__file__).resolve().parent.parent)

pytestmark = pytest.mark.timeout(120)


def _run(
    *, compiled: bool | None, core_missing: bool = False, **env: str
) -> subprocess.CompletedProcess[str]:
    """``eventstream.backend()`` in a subprocess whose build info says ``compiled`` (``None``: no
    build info at all, as in a checkout that was never built); prints the backend or the error."""
    setup = ["import logging, sys, types", "logging.basicConfig(level=logging.INFO)"]
    if compiled is None:
        setup.append("sys.modules['eventstream._build_info'] = None")
    else:
        setup.append(
            "sys.modules['eventstream._build_info'] = types.SimpleNamespace("
            f"COMPILED={compiled!r}, REASON='the test built it so')"
        )
    if core_missing:
        setup.append("sys.modules['eventstream._core'] = None")
    code = "\n".join(
        [
            *setup,
            "import eventstream",
            "try:",
            "    print(eventstream.backend())",
            "    print(eventstream.backend())",  # asked twice: announced once
            "except ImportError as exc:",
            "    print('ImportError:', exc)",
        ]
    )
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("EVENTSTREAM_NO_EXTENSIONS", "EVENTSTREAM_REQUIRE_COMPILED")
    }
    base["PYTHONPATH"] = os.pathsep.join([_EVENTSTREAM_PARENT, base.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_built_without_the_extension_uses_pure_and_says_so_once() -> None:
    done = _run(compiled=False)
    assert done.stdout.split() == ["pure", "pure"]
    announcements = [line for line in done.stderr.splitlines() if "pure-Python backend" in line]
    assert len(announcements) == 1, done.stderr
    assert announcements[0].startswith("INFO:eventstream:")
    assert "the test built it so" in announcements[0]
    assert "EVENTSTREAM_REQUIRE_COMPILED=1" in announcements[0]


def test_require_compiled_makes_a_pure_only_installation_an_error() -> None:
    done = _run(compiled=False, EVENTSTREAM_REQUIRE_COMPILED="1")
    assert done.stdout.startswith("ImportError:"), done.stdout
    assert "EVENTSTREAM_REQUIRE_COMPILED=1" in done.stdout
    assert "the test built it so" in done.stdout


def test_built_with_the_extension_never_falls_back() -> None:
    for compiled in (True, None):
        done = _run(compiled=compiled, core_missing=True)
        assert done.stdout.startswith("ImportError:"), (compiled, done.stdout)
        assert "eventstream._core" in done.stdout
        assert "EVENTSTREAM_NO_EXTENSIONS=1" in done.stdout
        assert "pure-Python backend," not in done.stderr


def test_no_extensions_switch_wins_quietly() -> None:
    for compiled in (True, False, None):
        done = _run(compiled=compiled, core_missing=True, EVENTSTREAM_NO_EXTENSIONS="1")
        assert done.stdout.split() == ["pure", "pure"], (compiled, done.stdout)
        assert "pure-Python backend" not in done.stderr


def test_this_checkout_records_how_it_was_built() -> None:
    """The install (scripts/dev-env's editable one, or any other) wrote _build_info.py."""
    _build_info = pytest.importorskip("eventstream._build_info", reason="not installed")
    assert isinstance(_build_info.COMPILED, bool)
    assert isinstance(_build_info.REASON, str)
    assert _build_info.COMPILED is not bool(_build_info.REASON)
    if _build_info.COMPILED and os.environ.get("EVENTSTREAM_NO_EXTENSIONS", "") in ("", "0"):
        assert eventstream.backend() == "compiled"
