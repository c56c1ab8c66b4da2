"""Which backend runs the suite: CI sets EVENTSTREAM_EXPECT_BACKEND so that a compiled backend
that failed to build or load fails the run instead of silently testing the pure one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import eventstream

_EVENTSTREAM_PARENT = str(Path(eventstream.__file__).resolve().parent.parent)


def test_loaded_backend_is_the_expected_one() -> None:
    loaded = eventstream.backend()
    assert loaded in ("compiled", "pure")
    expected = os.environ.get("EVENTSTREAM_EXPECT_BACKEND", "").strip()
    if expected:
        assert expected in ("compiled", "pure"), (
            f"EVENTSTREAM_EXPECT_BACKEND must be 'compiled' or 'pure', got {expected!r}"
        )
        assert loaded == expected, f"expected the {expected} backend, but {loaded} is loaded"


def test_loaded_core_is_the_expected_build() -> None:
    """EVENTSTREAM_EXPECT_CORE (set by .ci/sanitizer to its instrumented build) names the file
    eventstream._core must be loaded from, so that a run meant for one build cannot test
    another one (e.g. the editable build in the work tree) without failing."""
    expected = os.environ.get("EVENTSTREAM_EXPECT_CORE", "").strip()
    if not expected:
        pytest.skip("EVENTSTREAM_EXPECT_CORE is not set")
    import eventstream._core as core

    assert os.path.realpath(core.__file__) == os.path.realpath(expected)
    with open("/proc/self/maps") as maps:
        mapped = {line.split()[-1] for line in maps if "/" in line}
    assert os.path.realpath(expected) in {os.path.realpath(m) for m in mapped}


def test_the_compiled_module_loads_the_librdkafka_the_shared_locator_names() -> None:
    """One place decides where librdkafka is (eventstream._runtime.librdkafka): the compiled
    module opens one of its candidates, the one confluent-kafka loaded."""
    if eventstream.backend() != "compiled":
        pytest.skip("the compiled backend is not in use")
    import eventstream._core as core
    from eventstream._runtime.librdkafka import candidate_paths

    assert core.LIBRDKAFKA_PATH in candidate_paths()
    with open("/proc/self/maps") as maps:
        mapped = {os.path.realpath(line.split()[-1]) for line in maps if "/" in line}
    assert os.path.realpath(core.LIBRDKAFKA_PATH) in mapped


def test_no_extensions_switch_decides_the_backend() -> None:
    wants_pure = os.environ.get("EVENTSTREAM_NO_EXTENSIONS", "") not in ("", "0")
    assert eventstream.backend() == ("pure" if wants_pure else "compiled")


def _backend_in_subprocess(no_extensions: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "EVENTSTREAM_NO_EXTENSIONS"}
    if no_extensions is not None:
        env["EVENTSTREAM_NO_EXTENSIONS"] = no_extensions
    env["PYTHONPATH"] = os.pathsep.join([_EVENTSTREAM_PARENT, env.get("PYTHONPATH", "")])
    code = (
        "import eventstream\n"
        "try:\n"
        "    print(eventstream.backend())\n"
        "except ImportError as exc:\n"
        "    print('ImportError:', exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.timeout(120)
def test_compiled_backend_is_never_silently_replaced() -> None:
    assert _backend_in_subprocess("1") == "pure"
    # Without the switch: the compiled backend, or an ImportError that says how to opt out.
    for value in (None, "0"):
        outcome = _backend_in_subprocess(value)
        assert outcome == "compiled" or (
            outcome.startswith("ImportError:") and "EVENTSTREAM_NO_EXTENSIONS=1" in outcome
        ), outcome


def test_the_pure_client_never_hands_confluent_kafka_a_negative_timeout() -> None:
    """A close deadline can pass between its check and the flush that follows: confluent-kafka
    reads a negative timeout as "wait forever", and the owner then sat in flush() until the
    messages timed out instead of purging them at the deadline (a call then raised
    ProduceTimeoutError after ~message.timeout.ms instead of ProduceError at close)."""
    from eventstream._pure.producer import _Client

    asked: list[tuple[str, float]] = []

    class Recorder:
        def flush(self, timeout: float) -> int:
            asked.append(("flush", timeout))
            return 0

        def poll(self, timeout: float) -> int:
            asked.append(("poll", timeout))
            return 0

        def __len__(self) -> int:
            return 0

    core = _Client.__new__(_Client)  # only serve() is under test: no client, no owner
    core.client = Recorder()  # type: ignore[assignment]
    core.serve(-0.004)
    core.serve(-0.004, flush=False)
    core.serve(0.05)
    assert asked == [("flush", 0.0), ("poll", 0.0), ("flush", 0.05)]
