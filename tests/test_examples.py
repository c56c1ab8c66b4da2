"""The examples run against the session's real broker, so they never rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.mark.parametrize(
    ("script", "expected"),
    [("cache_service.py", "converged"), ("async_consumer.py", "in order")],
)
def test_example_runs(kafka_bootstrap: str, script: str, expected: str) -> None:
    import gen_protos

    gen_protos.generate()
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--brokers", kafka_bootstrap],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert expected in result.stdout
    assert "NOT" not in result.stdout
