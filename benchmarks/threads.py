"""CPU time and page faults of every thread of this process, around a measured section.

Linux keeps them per thread in ``/proc/self/task/<tid>/``: ``stat`` has the minor and major
page faults (``minflt``, ``majflt``) and the user/system split (``utime``, ``stime``, in clock
ticks of 10 ms: too coarse for a section of a few hundred ms), ``schedstat`` the time on a CPU
in nanoseconds (the CPU time reported here), ``comm`` the thread's name. The C contender reads
the same files the same way (``native/esbench.c``).

Each thread gets a *role*: ``calling`` (the thread that makes the produce calls) or
``consuming`` (the thread that runs the handler), ``librdkafka`` (its threads name themselves
``rdk:main``, ``rdk:broker<id>``, ...), ``eventstream`` (eventstream's own threads: the compiled
producer's poll thread is a native thread that inherits the process's name, the others are
Python threads named ``eventstream-...``) or ``other``.
"""

from __future__ import annotations

import os
import threading
from typing import Any

_TASKS = "/proc/self/task"


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:  # the thread ended between listdir and open
        return ""


def snapshot(first: int | None = None, last: int | None = None) -> dict[int, dict[str, Any]]:
    """``{tid: {comm, cpu_ns, utime, stime, minflt, majflt}}`` of every live thread. Reading
    costs ~25 µs of the reading thread's CPU per thread: the measured thread's own counters are
    read ``last`` in the snapshot before a section and ``first`` in the one after, so that
    little of that reading lands in its section."""
    out: dict[int, dict[str, Any]] = {}
    tids = [int(t) for t in os.listdir(_TASKS)]
    if first in tids:
        tids.remove(first)
        tids.insert(0, first)
    if last in tids:
        tids.remove(last)
        tids.append(last)
    for tid in tids:
        base = f"{_TASKS}/{tid}"
        stat = _read(f"{base}/stat")
        if not stat:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        sched = _read(f"{base}/schedstat").split()
        out[tid] = {
            "comm": _read(f"{base}/comm").strip(),
            "cpu_ns": int(sched[0]) if sched else None,
            "minflt": int(fields[7]),
            "majflt": int(fields[9]),
            "utime": int(fields[11]),
            "stime": int(fields[12]),
        }
    return out


def python_names() -> dict[int, str]:
    """Names of the Python threads (``threading``), by native thread id."""
    return {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}


_TICK = os.sysconf("SC_CLK_TCK")


def role_of(
    tid: int, comm: str, py_name: str | None, measured: tuple[int, str], process_comm: str
) -> str:
    if tid == measured[0]:
        return measured[1]
    if comm.startswith("rdk:"):
        return "librdkafka"
    name = py_name or (comm if comm != process_comm else "")
    if name.startswith(("eventstream", "es:", "es-")):
        return "eventstream"
    if py_name is None and comm == process_comm and tid != os.getpid():
        # A native thread that did not name itself: in this process only eventstream's compiled
        # producer starts one (its poll thread); the clients' own threads are named.
        return "eventstream"
    return "other"


def delta(
    before: dict[int, dict[str, Any]],
    after: dict[int, dict[str, Any]],
    measured: tuple[int, str],
    py_names: dict[int, str] | None = None,
) -> dict[str, Any]:
    """Per-thread CPU and faults between two snapshots. ``measured`` is ``(tid, role)`` of the
    calling or consuming thread. Threads that started during the section count from zero;
    those that ended are listed in ``ended`` (what they spent in the section is lost)."""
    names = python_names() if py_names is None else py_names
    process_comm = after.get(os.getpid(), before.get(os.getpid(), {})).get("comm", "")
    rows = []
    for tid, a in sorted(after.items()):
        b = before.get(tid, {"cpu_ns": 0, "utime": 0, "stime": 0, "minflt": 0, "majflt": 0})
        user, sys_ = (a["utime"] - b["utime"]) / _TICK, (a["stime"] - b["stime"]) / _TICK
        if a["cpu_ns"] is not None and b["cpu_ns"] is not None:
            cpu = (a["cpu_ns"] - b["cpu_ns"]) / 1e9
        else:  # no schedstat (a kernel without CONFIG_SCHED_INFO): the coarse ticks
            cpu = user + sys_
        rows.append(
            {
                "tid": tid,
                "name": names.get(tid) or a["comm"],
                "role": role_of(tid, a["comm"], names.get(tid), measured, process_comm),
                "cpu_s": cpu,
                "user_s": user,
                "sys_s": sys_,
                "minflt": a["minflt"] - b["minflt"],
                "majflt": a["majflt"] - b["majflt"],
                "started": tid not in before,
            }
        )
    ended = [t for t in before if t not in after]
    return {"threads": rows, "ended": len(ended)}


class Section:
    """``s = Section(role); ...measured...; s.result()``, both on the measured thread."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.tid = threading.get_native_id()
        self.before = snapshot(last=self.tid)

    def result(self) -> dict[str, Any]:
        after = snapshot(first=self.tid)
        return delta(self.before, after, (self.tid, self.role))
