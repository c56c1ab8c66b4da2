"""The coherent cache on a real broker: fan-out to eight instances, and the cost of a hit.

``python -m benchmarks.cache [--rate 1000] [--seconds 30] [--instances 8] [--brokers B] ...``
(also ``python -m benchmarks --cache ...`` and ``scripts/bench --cache ...``). Writes
cache.json and cache.md into the output directory (default benchmarks/results/); the other
scenarios and their results files are left alone.

**Fan-out.** The source of truth is a versioned store shared by every process: a file of one
int64 per key, mapped into each process (``mmap``); the version of a write is its sequence
number, carried in the event. Instance processes (each its own instance id and
``topic.new_cache``, whose loader reads the mapped file, so it returns the newest committed
version) are started one after the other, each waited for until its cache serves. Then each
instance reads keys continuously from one reader thread, and one writer process, paced at
``--rate`` writes a second, commits each write to the store and then publishes its
invalidation (``producer.produce``, each call waited for). Every instance stamps each event in
``on_event`` (which the cache runs right after the event's invalidation); a thread of the
writer calls ``topic.wait_applied(token)`` on a sample of writes. All processes run on one
machine, so ``time.monotonic_ns()`` (CLOCK_MONOTONIC) is one clock for all of them.

A checker (:func:`stale_reads`) counts the stale reads: a read that returned a version older
than the newest version of its key whose produce call returned more than ``max_staleness``
before the read began.

**Hit cost.** One process (the compiled backend) times ``cache.get(key)`` hits of a serving
cache next to a plain ``dict`` and ``cachetools.TTLCache`` over the same keys, one thread.
"""

from __future__ import annotations

import argparse
import array
import bisect
import contextlib
import datetime as dt
import gc
import json
import logging
import mmap
import os
import queue
import random
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from benchmarks import common, environment, payload

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WRITE_FIELDS = 4  # seq, key index, produce call start ns, produce call return ns
APPLY_FIELDS = 2  # seq, on_event ns
READ_FIELDS = 5  # key index, version, start ns, end ns, hit (1) or loader (0)


# --------------------------------------------------------------------------- the shared store


class Store:
    """The source of truth: one int64 version per key in a file every process maps. The writer
    stores a version (one aligned 8-byte store) before it publishes the invalidation."""

    def __init__(self, path: str, keys: int, create: bool = False) -> None:
        if create:
            with open(path, "wb") as fh:
                fh.write(bytes(8 * keys))
        self._file = open(path, "r+b")  # noqa: SIM115 - mapped for the life of the process
        self._map = mmap.mmap(self._file.fileno(), 8 * keys)
        self._versions = memoryview(self._map).cast("q")

    def write(self, key: int, version: int) -> None:
        self._versions[key] = version

    def read(self, key: int) -> int:
        return int(self._versions[key])


def key_name(index: int) -> str:
    return f"k{index}"


def key_index(name: str) -> int:
    return int(name[1:])


# --------------------------------------------------------------------------- worker processes


def _topic(spec: dict[str, Any], instance: str, topic: str | None = None) -> Any:
    from eventstream import TopicConfig, new_topic

    config = TopicConfig(
        brokers=spec["brokers"], topic=topic or spec["topic"], instance_id=instance
    )
    return new_topic(payload.event_class(), config)


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _check_backend(spec: dict[str, Any]) -> str:
    import eventstream

    backend = eventstream.backend()
    if backend != spec["backend"]:
        raise SystemExit(f"cache worker: wanted the {spec['backend']} backend, got {backend}")
    return backend


def work_instance(spec: dict[str, Any]) -> None:
    """One instance: its cache, stamps of every event applied, one reader thread. Prints a
    ``ready`` line once serving, reads after ``go`` on stdin, reports after ``stop``."""
    clock = time.monotonic_ns
    imported_ns = clock()  # Python up, this module imported (eventstream not yet)
    backend = _check_backend(spec)
    eventstream_ns = clock()
    store = Store(spec["store"], spec["keys"])
    name = spec["instance"]
    applied = array.array("q")
    loads = [0]

    def loader(key: str) -> int:
        loads[0] += 1
        return store.read(key_index(key))

    def on_event(event: Any) -> None:
        applied.append(event.seq)
        applied.append(clock())

    made_ns = clock()
    topic = _topic(spec, name)
    topic_ns = clock()
    cache = topic.new_cache(
        loader,
        keys=lambda event: event.body.decode(),
        max_staleness=spec["max_staleness"],
        ttl=spec["ttl"],
        max_entries=spec["max_entries"],
        probe_interval=spec["probe_interval"],
        on_event=on_event,
        name=name,
    )
    cache_ns = clock()
    cache.wait_ready(60.0)
    ready_ns = clock()
    _emit(
        {
            "ready": True,
            "spawn_ns": spec["spawn_ns"],
            "imported_ns": imported_ns,
            "eventstream_ns": eventstream_ns,
            "made_ns": made_ns,
            "topic_ns": topic_ns,
            "cache_ns": cache_ns,
            "ready_ns": ready_ns,
        }
    )
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("cache worker: expected go")
    cpu_at_go = _cpu_seconds()
    reads = array.array("q")
    stop = threading.Event()
    errors: list[str] = []
    keys, burst, pause = spec["keys"], spec["read_burst"], spec["read_pause"]

    def read() -> None:
        rng = random.Random(name)
        get = cache.get
        try:
            while not stop.is_set():
                for _ in range(burst):
                    index = rng.randrange(keys)
                    before = loads[0]
                    start = clock()
                    version = get(key_name(index))
                    end = clock()
                    reads.extend((index, version, start, end, loads[0] == before))
                time.sleep(pause)  # leave the GIL to the consumer's poll thread
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    states: dict[str, int] = {}

    def watch_state() -> None:  # how often the cache was seen not serving
        while not stop.wait(0.05):
            state = cache.status.state
            states[state] = states.get(state, 0) + 1

    threads = [threading.Thread(target=f, daemon=True) for f in (read, watch_state)]
    for thread in threads:
        thread.start()
    if sys.stdin.readline().strip() != "stop":
        raise SystemExit("cache worker: expected stop")
    cpu_reading = _cpu_seconds() - cpu_at_go
    stop.set()
    for thread in threads:
        thread.join(10)
    metrics = cache.metrics()
    status = cache.status
    out = Path(spec["dir"])
    (out / f"applied-{name}.bin").write_bytes(applied.tobytes())
    (out / f"reads-{name}.bin").write_bytes(reads.tobytes())
    topic.close()
    _emit(
        {
            "backend": backend,
            "cpu_s": _cpu_seconds(),
            "cpu_s_go_to_stop": round(cpu_reading, 2),
            "reads": len(reads) // READ_FIELDS,
            "applied": len(applied) // APPLY_FIELDS,
            "errors": errors,
            "states_sampled_every_50ms": states,
            "status_at_end": {"state": status.state, "reason": status.reason},
            "metrics": {
                k: getattr(metrics, k)
                for k in (
                    "hits",
                    "misses",
                    "coalesced",
                    "bypassed",
                    "load_errors",
                    "fills_voided",
                    "invalidations",
                    "evictions",
                    "expirations",
                    "events",
                    "entries",
                    "staleness",
                )
            }
            | {"flushes": dict(metrics.flushes)},
        }
    )


def work_writer(spec: dict[str, Any]) -> None:
    """The writer: commit to the store, then produce the invalidation, paced at the rate; a
    thread calls ``topic.wait_applied`` on a sample of the writes."""
    clock = time.monotonic_ns
    backend = _check_backend(spec)
    store = Store(spec["store"], spec["keys"])
    topic = _topic(spec, "cache-writer")
    producer = topic.new_producer(key=lambda event: event.body)
    cls = payload.event_class()
    # Warm-up: the producer's client connects at its first call, the barrier's at its first.
    t0 = clock()
    warm = producer.produce(cls(sent_ns=t0, seq=0, body=b"warmup"), timeout=30)
    first_produce_ms = (clock() - t0) / 1e6
    t0 = clock()
    topic.wait_applied(warm.token, timeout=30)
    first_wait_applied_ms = (clock() - t0) / 1e6

    writes = array.array("q")
    latest: list[Any] = [None]  # (seq, end_ns, token) of the newest write
    cond = threading.Condition()
    done = threading.Event()
    waits = array.array("q")  # seq, produce return ns, wait_applied call ns, return ns, ok
    wait_errors: list[str] = []
    rng = random.Random(7)
    keys = spec["keys"]

    def send(first: int, count: int) -> None:
        events = []
        written = []
        for seq in range(first + 1, first + count + 1):
            index = rng.randrange(keys)
            store.write(index, seq)  # the writer commits to the store first
            written.append((seq, index))
            events.append(cls(sent_ns=0, seq=seq, body=key_name(index).encode()))
        start = clock()
        for event in events:
            event.sent_ns = start
        deliveries = producer.produce(*events, timeout=30)
        end = clock()
        for seq, index in written:
            writes.extend((seq, index, start, end))
        with cond:
            latest[0] = (written[-1][0], end, deliveries.token)
            cond.notify_all()

    def sample_wait_applied() -> None:
        seen = [0]

        def newer() -> bool:
            return done.is_set() or bool(latest[0] and latest[0][0] > seen[0])

        while not done.is_set():
            with cond:
                cond.wait_for(newer, 1.0)
                if done.is_set() or not latest[0] or latest[0][0] <= seen[0]:
                    continue
                seq, end, token = latest[0]
            seen[0] = seq
            called = clock()
            ok = 1
            try:
                topic.wait_applied(token, timeout=spec["wait_applied_timeout"])
            except Exception as exc:
                ok = 0
                wait_errors.append(f"{type(exc).__name__}: {exc}")
            waits.extend((seq, end, called, clock(), ok))
            done.wait(spec["wait_applied_every"])

    sampler = threading.Thread(target=sample_wait_applied, name="wait-applied", daemon=True)
    sampler.start()
    total = int(spec["rate"] * (spec["warmup_s"] + spec["seconds"]))
    started = time.monotonic()
    calls = common.pace(spec["rate"], total, send, common.Progress(total))
    seconds = time.monotonic() - started
    done.set()
    with cond:
        cond.notify_all()
    sampler.join(spec["wait_applied_timeout"] + 5)
    out = Path(spec["dir"])
    (out / "writes.bin").write_bytes(writes.tobytes())
    (out / "waits.bin").write_bytes(waits.tobytes())
    topic.close()
    _emit(
        {
            "backend": backend,
            "cpu_s": _cpu_seconds(),
            "writes": total,
            "calls": calls,
            "seconds": seconds,
            "first_produce_ms": first_produce_ms,
            "first_wait_applied_ms": first_wait_applied_ms,
            "wait_applied_errors": wait_errors[:10],
            "wait_applied_failed": len(wait_errors),
        }
    )


def work_hit_cost(spec: dict[str, Any]) -> None:
    """ns per lookup of a hit: a serving cache's ``get`` next to ``dict`` and ``TTLCache``."""
    import cachetools

    backend = _check_backend(spec)
    count = spec["hit_keys"]
    names = [key_name(i) for i in range(count)]
    values = {name: i for i, name in enumerate(names)}
    topic = _topic(spec, "cache-hitcost", topic=spec["hit_topic"])
    cache = topic.new_cache(
        values.__getitem__,
        keys=lambda event: event.body.decode(),
        max_staleness=spec["max_staleness"],
        ttl=spec["hit_ttl"],
        max_entries=2 * count,
        probe_interval=spec["probe_interval"],
        name="hitcost",
    )
    cache.wait_ready(60.0)
    ttl_cache: Any = cachetools.TTLCache(maxsize=2 * count, ttl=spec["hit_ttl"])
    plain = dict(values)
    for name in names:
        cache.get(name)
        ttl_cache[name] = values[name]
    order = names[:]
    random.Random(3).shuffle(order)  # the same key order for every variant
    passes = spec["hit_passes"]

    def empty() -> None:
        for _ in range(passes):
            for _key in order:
                pass

    def dict_subscript() -> None:
        d = plain
        for _ in range(passes):
            for key in order:
                d[key]

    def dict_get() -> None:
        get = plain.get
        for _ in range(passes):
            for key in order:
                get(key)

    def ttl_subscript() -> None:
        t = ttl_cache
        for _ in range(passes):
            for key in order:
                t[key]

    def cache_get() -> None:
        get = cache.get
        for _ in range(passes):
            for key in order:
                get(key)

    variants: dict[str, Callable[[], None]] = {
        "loop only": empty,
        "dict[key]": dict_subscript,
        "dict.get(key)": dict_get,
        "cachetools.TTLCache[key]": ttl_subscript,
        "cache.get(key)": cache_get,
    }
    ops = passes * count
    times: dict[str, list[float]] = {name: [] for name in variants}
    hits_before = cache.metrics().hits
    gc.collect()
    gc.disable()
    try:
        for _ in range(spec["hit_repeats"]):  # interleaved: a burst of load hits every variant
            for name, run in variants.items():
                t0 = time.perf_counter_ns()
                run()
                times[name].append((time.perf_counter_ns() - t0) / ops)
    finally:
        gc.enable()
    metrics = cache.metrics()
    state = cache.status.state
    topic.close()
    _emit(
        {
            "backend": backend,
            "ops_per_repeat": ops,
            "ns_per_op": times,
            "cache_hits_counted": metrics.hits - hits_before,
            "cache_gets_timed": ops * spec["hit_repeats"],
            "cache_bypassed": metrics.bypassed,
            "cache_state_at_end": state,
        }
    )


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round(usage.ru_utime + usage.ru_stime, 2)


def worker_main(spec: dict[str, Any]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    {"instance": work_instance, "writer": work_writer, "hitcost": work_hit_cost}[spec["role"]](spec)
    return 0


# --------------------------------------------------------------------------- the checker


def stale_reads(
    writes: Sequence[tuple[int, int, int, int]],
    reads: Sequence[tuple[int, int, int, int, int]],
    max_staleness_ns: int,
) -> list[tuple[tuple[int, int, int, int, int], int, int]]:
    """The reads that returned a version older than the newest version of their key whose
    produce call returned more than ``max_staleness_ns`` before the read began: each as
    (read, that version, how long before the read its produce returned, ns).

    ``writes`` are (version, key, produce start ns, produce return ns); ``reads`` are (key,
    version, start ns, end ns, hit)."""
    ends: dict[int, list[int]] = {}
    newest: dict[int, list[int]] = {}
    for version, key, _start, end in sorted(writes, key=lambda w: w[3]):
        key_ends = ends.setdefault(key, [])
        key_newest = newest.setdefault(key, [])
        key_ends.append(end)
        key_newest.append(max(version, key_newest[-1] if key_newest else 0))
    found = []
    for read in reads:
        key, version, start = read[0], read[1], read[2]
        returned = ends.get(key)
        if not returned:
            continue
        settled = bisect.bisect_left(returned, start - max_staleness_ns)
        if settled and version < newest[key][settled - 1]:
            found.append((read, newest[key][settled - 1], start - returned[settled - 1]))
    return found


def behind(
    writes: Sequence[tuple[int, int, int, int]], reads: Sequence[tuple[int, int, int, int, int]]
) -> list[tuple[int, int]]:
    """The reads that returned an older version than the store held when they began (a
    version whose produce call had started, so it was committed): each as (hit, ns from the
    return of the first produce it missed to the read's start; negative if not yet returned).
    Allowed within ``max_staleness``; the largest is the staleness observed."""
    by_key: dict[int, tuple[list[int], list[int], list[int]]] = {}
    for version, key, start, end in sorted(writes):
        versions, starts, ends = by_key.setdefault(key, ([], [], []))
        versions.append(version)
        starts.append(start)
        ends.append(end)
    found = []
    for key, version, start, _end, hit in reads:
        if key not in by_key:
            continue
        versions, starts, ends = by_key[key]
        missed = bisect.bisect_right(versions, version)
        if missed < len(versions) and starts[missed] < start:
            found.append((hit, start - ends[missed]))
    return found


def _checker_finds_a_stale_read() -> bool:
    """The checker is not vacuous: a read that missed a version published long before it is
    found; reads within the bound are not."""
    s = 1_000_000_000
    writes = [(1, 0, 0, 1 * s), (2, 0, 5 * s, 6 * s)]
    reads = [(0, 0, int(1.5 * s), 0, 1), (0, 1, int(6.5 * s), 0, 1), (0, 1, int(7.5 * s), 0, 1)]
    found = stale_reads(writes, reads, s)
    return len(found) == 1 and found[0][0][2] == int(7.5 * s)


# --------------------------------------------------------------------------- the runner


class Child:
    """A worker process: stdin for ``go``/``stop``, stdout for JSON lines, stderr to a log."""

    def __init__(self, label: str, spec: dict[str, Any], env: dict[str, str], logs: Path) -> None:
        self.label = label
        self.log_path = logs / f"{label}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in finish()
        spec = spec | {"spawn_ns": time.monotonic_ns()}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.cache", "--worker", json.dumps(spec)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.lines.put(line)
        self.lines.put(None)

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        return ""

    def expect(self, timeout: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise RuntimeError(
                f"{self.label}: no answer within {timeout:g} s\n{self.tail()}"
            ) from None
        if line is None:
            self.proc.wait()
            raise RuntimeError(f"{self.label} exited with {self.proc.returncode}\n{self.tail()}")
        result: dict[str, Any] = json.loads(line)
        return result

    def send(self, word: str) -> None:
        stdin: IO[str] | None = self.proc.stdin
        assert stdin is not None
        stdin.write(word + "\n")
        stdin.flush()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def finish(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._log.close()


def _records(path: Path, fields: int) -> list[tuple[int, ...]]:
    values = array.array("q")
    values.frombytes(path.read_bytes())
    return [tuple(values[i : i + fields]) for i in range(0, len(values), fields)]


def _ms(samples_ns: Sequence[int]) -> dict[str, Any]:
    stats = common.latency_stats(samples_ns)
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in stats.items()}


def analyse(
    spec: dict[str, Any],
    writes: list[tuple[int, ...]],
    applied: dict[str, list[tuple[int, ...]]],
    reads: dict[str, list[tuple[int, ...]]],
    waits: list[tuple[int, ...]],
) -> dict[str, Any]:
    """Invalidation latency (to every instance, per instance), wait_applied latency and the
    stale reads the checker finds."""
    first_start = min(w[2] for w in writes)
    warm_until = first_start + int(spec["warmup_s"] * 1e9)
    measured = [w for w in writes if w[2] >= warm_until]
    at: dict[str, dict[int, int]] = {
        i: {seq: ns for seq, ns in rows} for i, rows in applied.items()
    }
    from_start: list[int] = []
    from_return: list[int] = []
    per_instance: dict[str, list[int]] = {i: [] for i in at}
    missing: dict[str, int] = {i: 0 for i in at}
    for seq, _key, start, end in measured:
        stamps = []
        for instance, seen in at.items():
            ns = seen.get(seq)
            if ns is None:
                missing[instance] += 1
                continue
            stamps.append(ns)
            per_instance[instance].append(ns - start)
        if len(stamps) == len(at):
            last = max(stamps)
            from_start.append(last - start)
            from_return.append(last - end)
    seconds: dict[int, list[int]] = {}
    for (_seq, _key, start, _end), latency in zip(
        [w for w in measured if all(w[0] in seen for seen in at.values())], from_start, strict=True
    ):
        seconds.setdefault((start - warm_until) // 1_000_000_000, []).append(latency)
    per_second = [
        {
            "second": second,
            "p50_ms": round(statistics.median(values) / 1e6, 2),
            "max_ms": round(max(values) / 1e6, 2),
        }
        for second, values in sorted(seconds.items())
    ]
    all_reads = [r for rows in reads.values() for r in rows]
    stale = stale_reads(
        [(w[0], w[1], w[2], w[3]) for w in writes],
        [(r[0], r[1], r[2], r[3], r[4]) for r in all_reads],
        int(spec["max_staleness"] * 1e9),
    )
    hits = sum(1 for r in all_reads if r[4])
    lagging = behind(
        [(w[0], w[1], w[2], w[3]) for w in writes],
        [(r[0], r[1], r[2], r[3], r[4]) for r in all_reads],
    )
    ages = sorted(age for _hit, age in lagging)
    waited = [w for w in waits if w[4]]
    calls = sorted({(w[2], w[3]) for w in measured})
    duration = (max(w[3] for w in writes) - first_start) / 1e9
    return {
        "writes": len(writes),
        "writes_measured": len(measured),
        "writes_per_s": round(len(writes) / duration, 1) if duration else None,
        "invalidation_latency": {
            "to_every_instance_from_produce_call_start": _ms(from_start),
            "to_every_instance_from_produce_return": _ms(from_return),
            "per_instance_from_produce_call_start": {
                i: _ms(v) for i, v in sorted(per_instance.items())
            },
            "not_applied": missing,
            "to_every_instance_per_second_of_the_measured_run": per_second,
        },
        "produce_calls": {
            "calls": len(calls),
            "events_per_call": round(len(measured) / len(calls), 2) if calls else None,
            "call_ms": _ms([end - start for start, end in calls]),
        },
        "wait_applied": {
            "samples": len(waits),
            "failed": len(waits) - len(waited),
            "call_ms": _ms([w[3] - w[2] for w in waited]),
            "from_produce_return_ms": _ms([w[3] - w[1] for w in waited]),
        },
        "reads": {
            "total": len(all_reads),
            "hits": hits,
            "loader": len(all_reads) - hits,
            "per_instance": {i: len(v) for i, v in sorted(reads.items())},
            "get_ms": _ms([r[3] - r[2] for r in all_reads]),
            "hit_get_us_p50": round(
                statistics.median([r[3] - r[2] for r in all_reads if r[4]] or [0]) / 1e3, 2
            ),
        },
        "checker_finds_a_planted_stale_read": _checker_finds_a_stale_read(),
        "reads_behind_the_store": {
            "reads": len(lagging),
            "hits": sum(1 for hit, _age in lagging if hit),
            "age_since_missed_produce_returned_ms": {
                "p50": round(common.percentile(ages, 50) / 1e6, 2) if ages else None,
                "p99": round(common.percentile(ages, 99) / 1e6, 2) if ages else None,
                "max": round(ages[-1] / 1e6, 2) if ages else None,
            },
        },
        "stale_reads": len(stale),
        "stale_hits": sum(1 for s in stale if s[0][4]),
        "stale_examples": [
            {
                "key": key_name(read[0]),
                "version": read[1],
                "hit": bool(read[4]),
                "expected_at_least": version,
                "published_s_before_read": round(ago / 1e9, 3),
            }
            for read, version, ago in stale[:10]
        ],
    }


def startup(ready: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Seconds from the process start (the runner, right before spawning it) and from the Topic
    made to the cache serving (``wait_ready`` returned), per instance."""
    rows = {}
    for instance, r in sorted(ready.items()):
        rows[instance] = {
            "spawn_to_serving_s": round((r["ready_ns"] - r["spawn_ns"]) / 1e9, 3),
            "spawn_to_python_up_s": round((r["imported_ns"] - r["spawn_ns"]) / 1e9, 3),
            "import_eventstream_s": round((r["eventstream_ns"] - r["imported_ns"]) / 1e9, 3),
            "new_topic_s": round((r["topic_ns"] - r["made_ns"]) / 1e9, 3),
            "topic_to_serving_s": round((r["ready_ns"] - r["topic_ns"]) / 1e9, 3),
            "new_cache_call_s": round((r["cache_ns"] - r["topic_ns"]) / 1e9, 3),
        }
    summary = {}
    for field in ("spawn_to_serving_s", "topic_to_serving_s"):
        values = sorted(row[field] for row in rows.values())
        summary[field] = {
            "min": values[0],
            "median": round(statistics.median(values), 3),
            "max": values[-1],
        }
    return {"per_instance": rows, "summary": summary}


def hit_summary(result: dict[str, Any]) -> dict[str, Any]:
    best = {name: min(v) for name, v in result["ns_per_op"].items()}
    median = {name: statistics.median(v) for name, v in result["ns_per_op"].items()}
    loop = median["loop only"]
    rows = {
        name: {
            "ns_median": round(median[name], 1),
            "ns_best": round(best[name], 1),
            "ns_net_of_loop": round(median[name] - loop, 1),
        }
        for name in median
    }
    cache = median["cache.get(key)"]
    return {
        "rows": rows,
        "ratio_cache_get_to_dict_subscript": round(cache / median["dict[key]"], 2),
        "ratio_cache_get_to_ttlcache": round(cache / median["cachetools.TTLCache[key]"], 2),
        "ratio_net_of_loop_to_dict_subscript": round(
            (cache - loop) / max(median["dict[key]"] - loop, 0.1), 1
        ),
        "ratio_net_of_loop_to_ttlcache": round(
            (cache - loop) / max(median["cachetools.TTLCache[key]"] - loop, 0.1), 2
        ),
    }


def _wait_for_quiet(threshold_pct: float, budget_s: float) -> dict[str, Any]:
    """Before starting: wait (up to ``budget_s``) while the machine's CPUs are more than
    ``threshold_pct`` busy, e.g. with someone else's test suite on a shared machine."""
    waited = 0.0
    while True:
        busy0, t0 = environment.system_busy_seconds(), time.monotonic()
        time.sleep(1.0)
        cores = os.cpu_count() or 1
        pct = 100 * (environment.system_busy_seconds() - busy0) / ((time.monotonic() - t0) * cores)
        if pct <= threshold_pct or waited >= budget_s:
            return {"waited_s": waited, "machine_busy_pct": round(pct, 1)}
        if not waited:
            sys.stderr.write(f"cache: the machine is {pct:.0f}% busy; waiting for it to calm\n")
        waited += 1.0


class _Busy:
    """How busy the machine's CPUs were over a phase, and the broker's share (when ours)."""

    def __init__(self, broker_pids: Sequence[int]) -> None:
        self.pids = list(broker_pids)
        self.t0 = time.monotonic()
        self.busy0 = environment.system_busy_seconds()
        self.broker0 = self._broker()
        self.runner0 = _cpu_seconds()

    def _broker(self) -> float | None:
        values = [environment.process_cpu_seconds(pid) for pid in self.pids]
        return sum(v for v in values if v) if self.pids and None not in values else None

    def result(self) -> dict[str, Any]:
        wall = time.monotonic() - self.t0
        busy = environment.system_busy_seconds() - self.busy0
        broker = self._broker()
        return {
            "wall_s": round(wall, 2),
            "machine_busy_pct": round(100 * busy / (wall * (os.cpu_count() or 1)), 1),
            "broker_cpu_s": None
            if broker is None or self.broker0 is None
            else round(broker - self.broker0, 2),
            "runner_cpu_s": round(_cpu_seconds() - self.runner0, 2),
            "busy_cpu_s": round(busy, 2),
            "loadavg_after": environment.loadavg(),
        }


def _f(value: Any, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def markdown(results: dict[str, Any]) -> str:
    s = results["settings"]
    fan = results["fanout"]
    inv = fan["invalidation_latency"]
    wa = fan["wait_applied"]
    st = results["startup"]
    machine = results["machine"]
    lw = results["load_while_writing"]
    inst_cpu = sum(r["cpu_s_go_to_stop"] for r in results["instances"].values())
    others = (
        lw["busy_cpu_s"]
        - (lw["broker_cpu_s"] or 0)
        - inst_cpu
        - fan["writer"]["cpu_s"]
        - lw["runner_cpu_s"]
    )
    out = [
        "# eventstream coherent cache: fan-out and hit cost",
        "",
        f"`{results['command']}` — {results['started_utc']}, {results['duration_s']:.0f} s in "
        f"all; {s['backend']} backend; Apache Kafka {results['broker'].get('kafka')} "
        f"({results['broker'].get('kind')}, {results['broker'].get('nodes', '?')} node).",
        "",
        "## Settings",
        "",
        "| setting | value |",
        "|---|---|",
        f"| writer | 1 process, {s['rate']:,.0f} writes/s for {s['warmup_s']:g} s of warm-up "
        f"and {s['seconds']:g} s measured "
        f"({fan['writes']:,} writes, {fan['writes_per_s']:,} /s achieved); each write commits "
        "to the store, then `producer.produce(event)` (calls paced, each waited for: acks=all) |",
        f"| instances | {s['instances']} processes, one instance id and one "
        "`topic.new_cache` each, started one after the other (each serving before the next) |",
        f"| topic | {s['partitions']} partitions, replication {s['replication_factor']}; "
        f"events keyed by the cache key; {s['keys']:,} keys |",
        f"| cache | max_staleness={s['max_staleness']:g} s, ttl={s['ttl']:g} s, "
        f"probe_interval={s['probe_interval']:g} s, max_entries={s['max_entries']:,} |",
        f"| store | {s['store']} |",
        f"| readers | 1 thread per instance: bursts of {s['read_burst']} `cache.get(key)` of "
        f"uniformly random keys, then `sleep({s['read_pause']:g})` |",
        f"| wait_applied | a writer thread calls `topic.wait_applied(token, timeout="
        f"{s['wait_applied_timeout']:g})` with the token of the newest write, then waits "
        f"{s['wait_applied_every']:g} s, and again |",
        f"| warm-up | the writes of the first {s['warmup_s']:g} s (the same load: the broker's "
        "JIT compiles its hot paths) are left out of the latencies, not of the stale-read "
        "check |",
        f"| clock | {s['clock']} |",
        f"| machine | {machine['cpu_model']}, {machine['cores']} cores (shared), "
        f"{machine['memory_gib']} GiB; {machine['python']}; before the start: load average "
        f"{results['loadavg_before']}, CPUs {results['quiet_before']['machine_busy_pct']}% "
        f"busy after waiting {results['quiet_before']['waited_s']:g} s for them to calm |",
        f"| load while reading and writing | {lw['wall_s']} s: the machine's CPUs "
        f"{lw['machine_busy_pct']}% busy ({lw['busy_cpu_s']} CPU s); of it the broker "
        f"{lw['broker_cpu_s']} s, the {s['instances']} instances {inst_cpu:.2f} s "
        f"({', '.join(str(r['cpu_s_go_to_stop']) for r in results['instances'].values())}), "
        f"the writer {fan['writer']['cpu_s']} s (its life), the runner {lw['runner_cpu_s']} s, "
        f"other processes ~{others:.2f} s; load average after {lw['loadavg_after']} |",
        "",
        f"## Fan-out: one writer, {s['instances']} instances",
        "",
        "Invalidation latency: from the produce call to the event's invalidation applied in the "
        "cache (`on_event`, which the cache runs right after it). *Every instance* is the last "
        f"of the {s['instances']} for each write; measured writes: {fan['writes_measured']:,}.",
        "",
        "| | samples | p50 ms | p99 ms | p99.9 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def row(label: str, r: dict[str, Any]) -> str:
        return (
            f"| {label} | {r.get('samples', 0):,} | {_f(r.get('p50_ms'))} | "
            f"{_f(r.get('p99_ms'))} | {_f(r.get('p999_ms'))} | {_f(r.get('max_ms'))} |"
        )

    out.append(
        row(
            "**applied in every instance**, from produce call start",
            inv["to_every_instance_from_produce_call_start"],
        )
    )
    out.append(
        row(
            "applied in every instance, from produce return",
            inv["to_every_instance_from_produce_return"],
        )
    )
    for instance, r in inv["per_instance_from_produce_call_start"].items():
        out.append(row(f"{instance} alone, from call start", r))
    out.append(row("**`topic.wait_applied(token)`**: the call", wa["call_ms"]))
    series = inv["to_every_instance_per_second_of_the_measured_run"]
    out.append(row("`wait_applied`: produce return to its return", wa["from_produce_return_ms"]))
    not_applied = sum(inv["not_applied"].values())
    pc, wr = fan["produce_calls"], fan["writer"]
    lag = fan["reads_behind_the_store"]
    age = lag["age_since_missed_produce_returned_ms"]
    reads = fan["reads"]
    out += [
        "",
        f"Events of measured writes not applied by some instance: {not_applied}. "
        f"`wait_applied` calls that failed: {wa['failed']} of {wa['samples']}. "
        f"The writer's produce calls (measured part): {pc['calls']:,} calls of "
        f"{pc['events_per_call']} events on average (a call sends every write due by then), "
        f"p50 {_f(pc['call_ms'].get('p50_ms'))} ms, p99 {_f(pc['call_ms'].get('p99_ms'))} ms; "
        f"its first produce call {wr['first_produce_ms']:.0f} ms and first `wait_applied` "
        f"{wr['first_wait_applied_ms']:.0f} ms (warm-up, not measured); writer CPU "
        f"{wr['cpu_s']} s.",
        "",
        "Applied in every instance, from produce call start, per second of the measured run "
        "(p50 / max ms): " + ", ".join(f"{r['p50_ms']:g}/{r['max_ms']:g}" for r in series) + ".",
        "",
        f"**Stale reads: {fan['stale_reads']}** (of which hits: {fan['stale_hits']}) in "
        f"{reads['total']:,} reads ({reads['hits']:,} hits, {reads['loader']:,} from the "
        f"loader; median hit {reads['hit_get_us_p50']} µs incl. recording). The checker "
        "counts a read as stale when it returned a version older than the newest version of "
        "its key whose produce call returned more than max_staleness before the read began "
        "(target 0); it finds a planted stale read: "
        f"{'yes' if fan['checker_finds_a_planted_stale_read'] else 'NO'}.",
        "",
        f"Reads behind the store (a version older than the store held when the read began, "
        f"allowed within max_staleness): {lag['reads']:,}, of which hits {lag['hits']:,}; the "
        "time from the return of the first produce call such a read missed to the read's start "
        f"(its staleness; negative: the call had not returned yet): p50 {_f(age['p50'])} ms, "
        f"p99 {_f(age['p99'])} ms, max {_f(age['max'])} ms (max_staleness "
        f"{s['max_staleness'] * 1000:g} ms).",
        "",
        "| instance | reads | hits | misses | bypassed | invalidations | events | flushes | "
        "not serving (50 ms samples) | CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for instance, r in sorted(results["instances"].items()):
        m = r["metrics"]
        flushes = ", ".join(f"{k} {v}" for k, v in m["flushes"].items() if v) or "none"
        not_serving = sum(v for k, v in r["states_sampled_every_50ms"].items() if k != "serving")
        out.append(
            f"| {instance} | {r['reads']:,} | {m['hits']:,} | {m['misses']:,} | "
            f"{m['bypassed']:,} | {m['invalidations']:,} | {m['events']:,} | {flushes} | "
            f"{not_serving} | {r['cpu_s']} |"
        )
    out += [
        "",
        "## Start to serving",
        "",
        "Process start is the runner's clock right before it spawns the process; *Topic made* "
        "is right after `new_topic(...)` returned; serving is `cache.wait_ready()` returned.",
        "",
        "| instance | process start → serving s | of which: Python up | import eventstream "
        "| new_topic | **Topic made → serving s** | of which: new_cache call |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for instance, r in st["per_instance"].items():
        out.append(
            f"| {instance} | {r['spawn_to_serving_s']:.3f} | {r['spawn_to_python_up_s']:.3f} | "
            f"{r['import_eventstream_s']:.3f} | {r['new_topic_s']:.3f} | "
            f"{r['topic_to_serving_s']:.3f} | {r['new_cache_call_s']:.3f} |"
        )
    sm = st["summary"]
    out += [
        "",
        "Process start → serving: min {min:.3f} / median {median:.3f} / max {max:.3f} s; ".format(
            **sm["spawn_to_serving_s"]
        )
        + "Topic made → serving: min {min:.3f} / median {median:.3f} / max {max:.3f} s.".format(
            **sm["topic_to_serving_s"]
        ),
    ]
    hit = results["hit_cost"]
    hs = hit["summary"]
    out += [
        "",
        "## Hit cost",
        "",
        f"One process, {s['backend']} backend, one thread: {s['hit_keys']:,} string keys, "
        f"all present, looked up in one shuffled order, {s['hit_passes']} passes a repeat, "
        f"{s['hit_repeats']} repeats interleaved across the variants (median and best of the "
        "repeats; GC off while timing). The cache is serving on the real broker (ttl "
        f"{s['hit_ttl']:g} s); its hit counter rose by {hit['raw']['cache_hits_counted']:,} "
        f"for {hit['raw']['cache_gets_timed']:,} timed gets. *Net* subtracts the loop alone. "
        f"Load average before: {hit['loadavg_before']}; the machine's CPUs "
        f"{hit['load']['machine_busy_pct']}% busy while it ran.",
        "",
        "| lookup | ns median | ns best | ns net of the loop |",
        "|---|---:|---:|---:|",
    ]
    for name, r in hs["rows"].items():
        out.append(
            f"| {name} | {r['ns_median']:.1f} | {r['ns_best']:.1f} | {r['ns_net_of_loop']:.1f} |"
        )
    out += [
        "",
        f"`cache.get(key)` / `dict[key]`: **{hs['ratio_cache_get_to_dict_subscript']}x** "
        f"({hs['ratio_net_of_loop_to_dict_subscript']}x net of the loop); "
        f"`cache.get(key)` / `TTLCache[key]`: **{hs['ratio_cache_get_to_ttlcache']}x** "
        f"({hs['ratio_net_of_loop_to_ttlcache']}x net).",
        "",
    ]
    if results["notes"]:
        out += ["## Notes", "", *[f"- {n}" for n in results["notes"]], ""]
    return "\n".join(out)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cache",
        description="The coherent cache on a real broker: invalidation fan-out to N instance "
        "processes (latency, wait_applied, stale reads, start to serving) and the cost of a hit.",
    )
    parser.add_argument("--brokers", help="bootstrap servers (default: start the harness broker)")
    parser.add_argument("--rate", type=float, default=1000.0, help="writes/s (default 1000)")
    parser.add_argument("--seconds", type=float, default=30.0, help="writing time (default 30)")
    parser.add_argument("--instances", type=int, default=8)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--max-staleness", type=float, default=1.0)
    parser.add_argument("--ttl", type=float, default=300.0)
    parser.add_argument("--probe-interval", type=float, default=0.25)
    parser.add_argument("--max-entries", type=int, default=100_000)
    parser.add_argument("--read-burst", type=int, default=1, help="gets between two sleeps")
    parser.add_argument("--read-pause", type=float, default=0.001, help="seconds")
    parser.add_argument(
        "--warmup",
        type=float,
        default=10.0,
        help="seconds of writing before --seconds, left out of the latencies (the broker's JIT)",
    )
    parser.add_argument("--wait-applied-every", type=float, default=0.1, help="seconds")
    parser.add_argument("--hit-keys", type=int, default=1000)
    parser.add_argument("--hit-passes", type=int, default=200)
    parser.add_argument("--hit-repeats", type=int, default=7)
    parser.add_argument("--backend", choices=("compiled", "pure"), default="compiled")
    parser.add_argument(
        "--quiet-pct",
        type=float,
        default=30.0,
        help="wait before starting while the CPUs are busier than this (default 30%%)",
    )
    parser.add_argument("--quiet-wait", type=float, default=120.0, help="at most, seconds")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        return worker_main(json.loads(args.worker))
    from benchmarks import runner

    started = time.monotonic()
    started_at = dt.datetime.now(dt.UTC)
    quiet = _wait_for_quiet(args.quiet_pct, args.quiet_wait)
    loadavg_before = environment.loadavg()
    payload.ensure_generated()
    work = Path(tempfile.mkdtemp(prefix="es-cache-bench-"))
    broker = runner.Broker(args.brokers, 1)
    try:
        bootstrap = broker.start()
    except Exception as exc:
        sys.stderr.write(f"cache: cannot start the broker: {exc}\n")
        return 3
    children: list[Child] = []
    notes: list[str] = []
    try:
        admin = runner.Admin(bootstrap)
        run_id = uuid.uuid4().hex[:8]
        topic, hit_topic = f"cache-fanout-{run_id}", f"cache-hit-{run_id}"
        admin.create(topic, args.partitions)
        admin.create(hit_topic, 1)
        store_path = work / "store.bin"
        Store(str(store_path), args.keys, create=True)
        spec: dict[str, Any] = {
            "brokers": bootstrap,
            "topic": topic,
            "hit_topic": hit_topic,
            "dir": str(work),
            "store": str(store_path),
            "backend": args.backend,
            "keys": args.keys,
            "rate": args.rate,
            "seconds": args.seconds,
            "max_staleness": args.max_staleness,
            "ttl": args.ttl,
            "probe_interval": args.probe_interval,
            "max_entries": args.max_entries,
            "read_burst": args.read_burst,
            "read_pause": args.read_pause,
            "warmup_s": args.warmup,
            "wait_applied_every": args.wait_applied_every,
            "wait_applied_timeout": 10.0,
            "hit_keys": args.hit_keys,
            "hit_passes": args.hit_passes,
            "hit_repeats": args.hit_repeats,
            "hit_ttl": 3600.0,
        }
        env = runner.Contenders.env(args.backend)
        names = [f"cache-inst-{n}" for n in range(args.instances)]
        ready: dict[str, dict[str, Any]] = {}
        sys.stderr.write(f"cache: starting {args.instances} instances one after the other\n")
        for name in names:
            child = Child(name, spec | {"role": "instance", "instance": name}, env, work)
            children.append(child)
            ready[name] = child.expect(90)
            sys.stderr.write(
                f"  {name} serving {(ready[name]['ready_ns'] - ready[name]['spawn_ns']) / 1e9:.2f}"
                " s after its start\n"
            )
        window = _Busy(broker.pids())
        for child in children:
            child.send("go")
        time.sleep(1.0)  # readers running, every cache filling
        sys.stderr.write(
            f"cache: the writer publishes {args.rate:g} invalidations/s for {args.seconds:g} s\n"
        )
        writer = Child("writer", spec | {"role": "writer"}, env, work)
        wrote = writer.expect(args.seconds + args.warmup + 120)
        writer.finish(30)
        time.sleep(max(1.0, 2 * args.max_staleness))  # the last invalidations reach everyone
        instances: dict[str, dict[str, Any]] = {}
        for child in children:
            child.send("stop")
        load_writing = window.result()
        for name, child in zip(names, children, strict=True):
            instances[name] = child.expect(60)
            child.finish(30)
        sys.stderr.write("cache: timing hits\n")
        loadavg_hits = environment.loadavg()
        phase = _Busy(broker.pids())
        hitter = Child("hitcost", spec | {"role": "hitcost"}, env, work)
        children.append(hitter)
        hits = hitter.expect(300)
        hitter.finish(30)
        load_hits = phase.result()
        for child in [*children, writer]:
            for line in child.log_path.read_text().splitlines():
                if " WARNING " in line or " ERROR " in line or "degraded" in line:
                    notes.append(f"{child.label}: {line}")
        sys.stderr.write("cache: checking\n")
        writes = _records(work / "writes.bin", WRITE_FIELDS)
        waits = _records(work / "waits.bin", 5)
        applied = {n: _records(work / f"applied-{n}.bin", APPLY_FIELDS) for n in names}
        reads = {n: _records(work / f"reads-{n}.bin", READ_FIELDS) for n in names}
        fanout = analyse(spec, writes, applied, reads, waits)
        fanout["writer"] = wrote
        replication = admin.replication
        admin.delete(topic)
        admin.delete(hit_topic)
        del admin
    finally:
        for child in children:
            child.kill()
        broker.stop()
    results: dict[str, Any] = {
        "command": " ".join(filter(None, ["python -m benchmarks --cache", shlex.join(argv)])),
        "started_utc": started_at.isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - started, 1),
        "loadavg_before": loadavg_before,
        "quiet_before": quiet,
        "settings": {
            k: v
            for k, v in spec.items()
            if k not in ("brokers", "topic", "hit_topic", "dir", "store")
        }
        | {
            "instances": args.instances,
            "partitions": args.partitions,
            "replication_factor": replication,
            "store": "a file of one int64 per key, mmap-ed by every process; the writer stores "
            "the version (its sequence number, also in the event) before produce()",
            "clock": "time.monotonic_ns() (CLOCK_MONOTONIC) in every process, one machine",
            "event": "benchmarks/bench.proto BenchEvent: sent_ns = produce call start, seq = "
            "version, body = the key (the cache's keys= and the producer's partition key)",
            "writer": "python -m benchmarks.cache --worker (role writer)",
        },
        "machine": environment.machine(),
        "software": environment.software() | {"cachetools": _cachetools_version()},
        "broker": broker.info,
        "fanout": fanout,
        "startup": startup(ready),
        "instances": instances,
        "hit_cost": {
            "summary": hit_summary(hits),
            "raw": hits,
            "loadavg_before": loadavg_hits,
            "load": load_hits,
        },
        "load_while_writing": load_writing,
        "notes": notes,
    }
    shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cache.json").write_text(environment.dumps(results) + "\n")
    (args.out / "cache.md").write_text(markdown(results))
    inv = fanout["invalidation_latency"]["to_every_instance_from_produce_call_start"]
    sys.stderr.write(
        f"cache: invalidation to every instance p50 {_f(inv.get('p50_ms'))} ms, p99 "
        f"{_f(inv.get('p99_ms'))} ms; stale reads {fanout['stale_reads']}; hit "
        f"{hit_summary(hits)['ratio_cache_get_to_dict_subscript']}x a dict; wrote "
        f"cache.{{json,md}} to {args.out} in {results['duration_s']:.0f} s\n"
    )
    return 0 if fanout["stale_reads"] == 0 else 1


def _cachetools_version() -> str | None:
    try:
        from importlib import metadata

        return metadata.version("cachetools")
    except Exception:
        return None


if __name__ == "__main__":
    sys.exit(main())
