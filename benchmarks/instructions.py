"""Instructions per event under callgrind: the guard that noise cannot fool (``.ci/instructions``).

``python -m benchmarks.instructions [--update] [--runs N] [--only produce|consume]``

Counts, with ``valgrind --tool=callgrind --separate-threads=yes``, the instructions that the
compiled backend executes per event

- **produce**: on the *calling thread*, in blocking ``producer.produce(*batch)`` calls;
- **consume**: on the *consuming thread* (the consumer's poll thread, where the handler runs),
  from poll to the (counting) handler's return and the offset store;

on the embedded cluster (``eventstream.testing.EmbeddedCluster``, librdkafka's mock cluster in
the measured process: no Kafka needed), and fails when a count grows more than 5% over its
budget in ``benchmarks/budgets.json``. Instruction counts do not depend on the machine's load or
clock, so a 5% threshold holds on a shared 2-core machine where timings vary by ±15%.

Only the measured section of the measured thread is counted: valgrind starts with
instrumentation off (``--instr-atstart=no``: the interpreter's start-up and the imports are not
even instrumented), the worker turns it on before its warm-up, and the measured thread itself
zeroes its counters where the section starts and dumps them where it ends (callgrind's client
requests ``ZERO_STATS`` and ``DUMP_STATS_AT``, which act on the calling thread only when threads
are separated; ``native/cgmark.c``, loaded with ctypes). So start-up, warm-up, the pre-fill of
the consume workload and every other thread (librdkafka's, the mock brokers', eventstream's
poll thread) are left out; a few hundred instructions of the two client-request calls are in.
The worker runs with glibc's default malloc settings, as an application does: how the
producer and the consumer free librdkafka's small blocks (right before they allocate as many
again, on the same thread) is part of what is measured. Six runs spread by 0.2% (produce) and
0.6% (consume). (Earlier budgets ran with fastbins off, ``glibc.malloc.mxfast=0``: then the
poll thread's frees made produce runs vary by up to 4%; that thread no longer frees what the
measured thread allocated.)

``--update`` rewrites the budgets with what this run measured (the median of ``--runs``), the
date, the commit and the settings. Raising a budget is a reviewed change: say why in the commit.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUDGETS = HERE / "budgets.json"
HELPER_SOURCE = HERE / "native" / "cgmark.c"
BIN_DIR = HERE / "bin"
TOLERANCE = 0.05  # a count more than 5% over its budget fails
MODES = ("produce", "consume")

# What is measured (written into budgets.json; a budget only holds for the same settings).
SETTINGS: dict[str, Any] = {
    "backend": "compiled",
    "cluster": "eventstream.testing.EmbeddedCluster(brokers=1) in the measured process "
    "(librdkafka mock cluster)",
    "event_bytes": 100,
    "partitions": 1,
    "headers": "eventstream's six CloudEvents headers (TopicConfig defaults)",
    "produce": {
        "call": "producer.produce(*batch), blocking, batch of 1000 pre-built events",
        "events_per_call": 1000,
        "warmup_events": 3000,
        "measured_events": 10000,
        "thread": "the calling thread",
    },
    "consume": {
        "call": "consumer.consume(handler), counting handler, start_from_beginning=True; "
        "topic pre-filled by the compiled producer before instrumentation starts",
        "warmup_events": 2000,
        "measured_events": 10000,
        "thread": "the consuming thread (where the handler runs)",
    },
    "valgrind": "--tool=callgrind --separate-threads=yes --instr-atstart=no",
    # glibc's fastbins off: with them, how much malloc_consolidate() finds to do on the
    # measured thread depends on when the poll thread frees (delivered messages), which made a
    # produce run now and then ~4% cheaper; without them, runs agree to ~0.1%.
    "python_env": {"PYTHONHASHSEED": "0"},
}


# --------------------------------------------------------------------------- the helper library


def build_helper() -> Path:
    """Compile native/cgmark.c into bin/ (when missing or changed); return the .so."""
    import hashlib

    cc = os.environ.get("CC", "gcc")
    if shutil.which(cc) is None:
        raise SystemExit(f"instructions: no C compiler ({cc!r}) to build {HELPER_SOURCE.name}")
    flags = ["-O2", "-shared", "-fPIC", "-Wall", "-Werror"]
    digest = hashlib.sha256(HELPER_SOURCE.read_bytes() + " ".join([cc, *flags]).encode())
    out = BIN_DIR / f"cgmark-{digest.hexdigest()[:12]}.so"
    if out.exists():
        return out
    BIN_DIR.mkdir(exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    cmd = [cc, *flags, str(HELPER_SOURCE), "-o", str(tmp)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(
            f"instructions: {' '.join(cmd)} failed (valgrind/callgrind.h comes with Debian's "
            f"valgrind package):\n{res.stdout}{res.stderr}"
        )
    tmp.rename(out)
    return out


# --------------------------------------------------------------------------- the worker


def _label(mode: str) -> str:
    return f"eventstream-{mode}-measured"


def worker(mode: str, helper: str) -> int:
    """Runs under valgrind: one workload, the measured section marked with client requests."""
    lib = ctypes.CDLL(helper)
    lib.cgmark_dump.argtypes = [ctypes.c_char_p]
    if not lib.cgmark_on_valgrind():
        print("instructions: the worker is not running under valgrind", file=sys.stderr)
        return 2
    import eventstream
    from benchmarks import payload
    from eventstream import TopicConfig, new_topic
    from eventstream.testing import EmbeddedCluster

    if eventstream.backend() != "compiled":
        print(f"instructions: the {eventstream.backend()} backend is loaded", file=sys.stderr)
        return 3
    cls = payload.event_class()
    body = b"\x5a" * payload.body_length(SETTINGS["event_bytes"])  # fixed: runs compare exactly
    label = _label(mode).encode()
    with EmbeddedCluster(brokers=1) as cluster:
        cluster.create_topic("guard", SETTINGS["partitions"])
        config = TopicConfig(brokers=cluster.bootstrap_servers, topic="guard", instance_id="guard")
        topic = new_topic(cls, config)
        try:
            producer = topic.new_producer()
            per_call = SETTINGS["produce"]["events_per_call"]
            batch = [payload.make_event(cls, body, seq=i + 1) for i in range(per_call)]
            if mode == "produce":
                st = SETTINGS["produce"]
                lib.cgmark_start_instrumentation()
                for _ in range(st["warmup_events"] // per_call):
                    producer.produce(*batch)
                lib.cgmark_zero()
                for _ in range(st["measured_events"] // per_call):
                    producer.produce(*batch)
                lib.cgmark_dump(label)
                events = st["measured_events"]
            else:
                st = SETTINGS["consume"]
                total = st["warmup_events"] + st["measured_events"]
                for start in range(0, total, per_call):
                    producer.produce(*batch[: min(per_call, total - start)])
                warmup, done = st["warmup_events"], threading.Event()
                count = 0

                def handler(event: Any) -> None:
                    nonlocal count
                    count += 1
                    if count == warmup:
                        lib.cgmark_zero()  # the consuming thread's own counters, from here on
                    elif count == total:
                        lib.cgmark_dump(label)
                        done.set()

                lib.cgmark_start_instrumentation()
                topic.new_consumer(start_from_beginning=True).consume(handler)
                if not done.wait(900):
                    print(f"instructions: consumed {count} of {total} events", file=sys.stderr)
                    return 1
                events = st["measured_events"]
        finally:
            topic.close()
    print(json.dumps({"mode": mode, "events": events}))
    return 0


# --------------------------------------------------------------------------- the driver


def _read_dump(path: Path) -> dict[str, Any]:
    info: dict[str, Any] = {"file": path.name}
    with path.open() as f:
        for line in f:
            if line.startswith("thread:"):
                info["thread"] = int(line.split()[1])
            elif line.startswith("desc: Trigger:"):
                info["trigger"] = line.split(":", 2)[2].strip()
            elif line.startswith("summary:"):
                info["instructions"] = int(line.split()[1])
            elif line.startswith(("fn=", "fl=")):
                break  # the header is over
    return info


def measure(mode: str, helper: Path, keep: Path | None = None) -> dict[str, Any]:
    """One run of one workload under callgrind: the measured thread's instructions."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("instructions: no valgrind (Debian: apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="eventstream-cg-") as tmp:
        out = Path(tmp)
        cmd = [
            valgrind, "--tool=callgrind", "--separate-threads=yes", "--instr-atstart=no",
            f"--callgrind-out-file={out}/callgrind.out.%p", f"--log-file={out}/valgrind.log",
            sys.executable, "-m", "benchmarks.instructions", "--worker", mode,
            "--helper", str(helper),
        ]  # fmt: skip
        env = dict(os.environ)
        env.pop("EVENTSTREAM_NO_EXTENSIONS", None)
        env.update(SETTINGS["python_env"])
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
        t0 = time.monotonic()
        res = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
        )
        seconds = time.monotonic() - t0
        if res.returncode != 0:
            log = (out / "valgrind.log").read_text() if (out / "valgrind.log").exists() else ""
            raise SystemExit(
                f"instructions: the {mode} worker exited with {res.returncode}:\n"
                f"{res.stdout[-3000:]}{res.stderr[-3000:]}\n{log[-3000:]}"
            )
        result = json.loads(res.stdout.strip().splitlines()[-1])
        want = f"Client Request: {_label(mode)}"
        found = [_read_dump(path) for path in out.glob("callgrind.out.*")]
        dumps = [d for d in found if d.get("trigger") == want]
        if len(dumps) != 1:
            raise SystemExit(f"instructions: expected one dump {want!r}, found {len(dumps)}")
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(out / dumps[0]["file"], keep / f"callgrind.{mode}.out")
    dump = dumps[0]
    return {
        "mode": mode,
        "events": result["events"],
        "instructions": dump["instructions"],
        "per_event": dump["instructions"] / result["events"],
        "valgrind_thread": dump["thread"],
        "seconds": round(seconds, 1),
    }


def _git(*args: str) -> str:
    res = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return res.stdout.strip()


def _versions() -> dict[str, Any]:
    from importlib import metadata

    import confluent_kafka

    valgrind = subprocess.run(["valgrind", "--version"], capture_output=True, text=True)
    return {
        "python": sys.version.split()[0],
        "protobuf": metadata.version("protobuf"),
        "confluent-kafka": metadata.version("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
        "valgrind": valgrind.stdout.strip(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.instructions",
        description="Instructions per event of the compiled backend under callgrind (produce: "
        "calling thread; consume: consuming thread), on the embedded cluster, against the "
        f"budgets in {BUDGETS.relative_to(ROOT)}; fails when a count is more than "
        f"{TOLERANCE:.0%} over its budget.",
    )
    parser.add_argument("--update", action="store_true", help="rewrite the budgets with this run")
    parser.add_argument(
        "--runs", type=int,
        help="runs per workload, the median counts (default 1; with --update 5)",
    )  # fmt: skip
    parser.add_argument("--only", choices=MODES, action="append", help="one workload only")
    parser.add_argument("--budgets", type=Path, default=BUDGETS, help="the budgets file")
    parser.add_argument("--keep", type=Path, help="copy the measured callgrind dumps here")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--helper", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.helper)
    if args.runs is None:
        args.runs = 5 if args.update else 1
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    modes = [m for m in MODES if m in (args.only or MODES)]
    from benchmarks import payload

    payload.ensure_generated()  # bench_pb2.py, here rather than under valgrind
    helper = build_helper()
    started = time.monotonic()
    measured: dict[str, dict[str, Any]] = {}
    for mode in modes:
        runs = []
        for i in range(args.runs):
            r = measure(mode, helper, args.keep)
            runs.append(r)
            sys.stderr.write(
                f"instructions: {mode} run {i + 1}/{args.runs}: {r['per_event']:,.1f} "
                f"instructions/event ({r['instructions']:,} over {r['events']:,} events, "
                f"valgrind thread {r['valgrind_thread']}, {r['seconds']:.0f} s)\n"
            )
        values = [r["per_event"] for r in runs]
        measured[mode] = {
            "per_event": statistics.median(values),
            "runs": [round(v, 1) for v in values],
            "spread": (max(values) - min(values)) / min(values),
        }

    budgets: dict[str, Any] = {}
    if args.budgets.exists():
        budgets = json.loads(args.budgets.read_text())
    failed = []
    print(f"{'workload':<10} {'measured':>12} {'budget':>12} {'ratio':>7}  verdict")
    for mode in modes:
        m = measured[mode]
        budget = budgets.get("budgets", {}).get(mode, {}).get("per_event")
        line = f"{mode:<10} {m['per_event']:>12,.1f}"
        if budget is None:
            line += f" {'—':>12} {'—':>7}  no budget"
            if not args.update:
                failed.append(f"{mode}: no budget in {args.budgets}")
        else:
            ratio = m["per_event"] / budget
            verdict = "ok" if ratio <= 1 + TOLERANCE else f"FAIL (> {1 + TOLERANCE:.2f})"
            if ratio < 1 - 2 * TOLERANCE:
                verdict += " (well under budget: lower it with --update)"
            line += f" {budget:>12,.1f} {ratio:>7.3f}  {verdict}"
            if ratio > 1 + TOLERANCE and not args.update:
                failed.append(f"{mode}: {m['per_event']:,.1f} > {budget:,.1f} x {1 + TOLERANCE}")
        if len(m["runs"]) > 1:
            line += f"  (runs {', '.join(f'{v:,.1f}' for v in m['runs'])}: {m['spread']:.2%})"
        print(line)
    if budgets and budgets.get("settings") != SETTINGS and not args.update:
        failed.append(
            f"the budgets were measured with other settings than this workload's "
            f"({args.budgets}); measure them again with --update"
        )
    if args.update:
        dirty = _git("status", "--porcelain", "--untracked-files=no", "--", "eventstream", "ext")
        new = {
            "what": "instructions per event (callgrind Ir) of the compiled backend on the "
            "measured thread; .ci/instructions fails above budget x "
            f"{1 + TOLERANCE}",
            "date": dt.date.today().isoformat(),
            "commit": _git("rev-parse", "--short=12", "HEAD") + ("+dirty" if dirty else ""),
            "settings": SETTINGS,
            "versions": _versions(),
            "budgets": dict(budgets.get("budgets", {})),
        }
        for mode in modes:
            new["budgets"][mode] = {
                "per_event": round(measured[mode]["per_event"], 1),
                "thread": SETTINGS[mode]["thread"],
                "runs": measured[mode]["runs"],
            }
        args.budgets.write_text(json.dumps(new, indent=2) + "\n")
        print(f"wrote {args.budgets}")
    elif budgets.get("versions") and budgets["versions"] != _versions():
        print(f"note: budgets measured with {budgets['versions']}; this run: {_versions()}")
    print(f"({time.monotonic() - started:.0f} s)")
    for f in failed:
        print(f"instructions: FAIL: {f}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
