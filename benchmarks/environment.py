"""What the results record about the machine, the software and the load around each measurement."""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def memory_gib() -> float | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        res = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=10
        )
        if res.returncode == 0:
            return res.stdout.strip()
    return None


def java_version() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        res = subprocess.run(
            ["java", "-version"], capture_output=True, text=True, check=False, timeout=30
        )
        lines = (res.stderr or res.stdout).splitlines()
        return lines[0].strip() if lines else None
    return None


def machine() -> dict[str, Any]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    virt = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        res = subprocess.run(["systemd-detect-virt"], capture_output=True, text=True, check=False)
        virt = res.stdout.strip() or None
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "memory_gib": memory_gib(),
        "os": platform.platform(),
        "virtualization": virt,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "python_executable": sys.executable,
    }


def software() -> dict[str, Any]:
    """Versions of every client and library in this interpreter (the workers use the same one)."""
    protobuf_impl = None
    with contextlib.suppress(Exception):
        from google.protobuf.internal import api_implementation

        protobuf_impl = api_implementation.Type()
    librdkafka = None
    with contextlib.suppress(Exception):
        import confluent_kafka

        librdkafka = confluent_kafka.libversion()[0]
    commit = _git("rev-parse", "--short=12", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", "eventstream", "ext")
    return {
        "eventstream": _version("eventstream"),
        "eventstream_commit": commit + ("+dirty" if dirty else "") if commit else None,
        "confluent-kafka": _version("confluent-kafka"),
        "librdkafka": librdkafka,
        "aiokafka": _version("aiokafka"),
        "kafka-python": _version("kafka-python"),
        "protobuf": _version("protobuf"),
        "protobuf_implementation": protobuf_impl,
        "Cython (build)": _version("Cython"),
        "matplotlib": _version("matplotlib"),
    }


# ---- load around a measurement: the runner shares the machine with the broker (and, on a
# ---- shared host, with whatever else runs), so each result says how busy the CPUs were.

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def system_busy_seconds() -> float:
    """CPU seconds all CPUs spent not idle since boot (/proc/stat)."""
    fields = _read("/proc/stat").splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / _CLK_TCK


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a running process (all its threads), None if it is gone."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


#: The fixed work of machine_speed(): loop iterations, and bytes of fresh memory touched.
_SPEED_LOOP = 100_000
_SPEED_TOUCH = 8 << 20


def machine_speed() -> dict[str, float]:
    """Milliseconds the machine takes right now for a fixed piece of work, run by the runner
    between measurements: ``cpu_ms`` a pure-Python loop, ``touch_ms`` one write to each page of
    8 MiB of fresh memory (page faults). On a virtual machine both grow when the host is busy
    elsewhere or has taken memory back, which the guest's own CPU counters do not show."""
    started = time.perf_counter()
    x = 0
    for i in range(_SPEED_LOOP):
        x += i ^ (x & 0xFF)
    looped = time.perf_counter()
    with mmap.mmap(-1, _SPEED_TOUCH) as memory:
        for offset in range(0, _SPEED_TOUCH, mmap.PAGESIZE):
            memory[offset] = 1
    touched = time.perf_counter()
    return {
        "cpu_ms": round((looped - started) * 1e3, 2),
        "touch_ms": round((touched - looped) * 1e3, 2),
    }


def loadavg() -> float | None:
    text = _read("/proc/loadavg")
    return float(text.split()[0]) if text else None


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=False, default=str)
