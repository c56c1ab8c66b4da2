"""Soak test: a long run through eventstream must show no growth in memory.

``python -m benchmarks.soak [--events 2000000] [--backend compiled|pure] [--brokers B] [--out DIR]``
(also ``python -m benchmarks --soak ...`` and ``scripts/bench --soak ...``).

A consumer process (handler with metadata) and a producer process (keyed events, new event
objects for every call of ``--batch`` events) of one backend move ``--events`` events through a
real broker. Each process samples its own resident set size (RSS) at intervals, together with how
many events it has handled. After a warm-up (the first ``--warmup-fraction`` of the events, when
librdkafka's queues, buffers and Python's allocator pools reach their working size), the verdict
compares RSS just after warm-up with RSS at the end (medians of the first and last quarter of
the samples after warm-up): growth above ``--threshold-mib`` in either process is a MISS; the
least-squares slope after warm-up (KiB per 100k events) and the peak are reported too.
Writes soak.json, soak.md and soak.png into the output directory (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import common, environment, payload

HERE = Path(__file__).resolve().parent
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def rss_kib() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE_KIB


class Sampler:
    """Samples (seconds, events so far, RSS KiB) every ``interval`` seconds on a thread."""

    def __init__(self, count: Any, interval: float) -> None:
        self.count = count
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []
        self.stop = threading.Event()
        self.t0 = time.monotonic()
        self.thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)
        self.thread.start()

    def take(self) -> None:
        self.samples.append((round(time.monotonic() - self.t0, 3), self.count(), rss_kib()))

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            self.take()

    def finish(self) -> list[tuple[float, int, int]]:
        self.stop.set()
        self.thread.join()
        self.take()
        return self.samples


# --------------------------------------------------------------------------- worker processes


def _topic(spec: dict[str, Any], instance: str) -> Any:
    from eventstream import TopicConfig, new_topic

    config = TopicConfig(brokers=spec["brokers"], topic=spec["topic"], instance_id=instance)
    return new_topic(payload.event_class(), config)


def work_produce(spec: dict[str, Any]) -> dict[str, Any]:
    cls = payload.event_class()
    body = payload.make_body(spec["size"])
    topic = _topic(spec, "soak-producer")
    producer = topic.new_producer(key=lambda e: str(e.seq % 64))
    done = 0
    sampler = Sampler(lambda: done, spec["interval"])
    progress = common.Progress(spec["events"])
    objects: dict[str, int] = {}
    total, batch = spec["events"], spec["batch"]
    while done < total:
        n = min(batch, total - done)
        producer.produce(*[cls(sent_ns=1, seq=done + i, body=body) for i in range(n)])
        done += n
        progress.update(done)
        if not objects and done >= spec["warmup"]:
            objects["warmup"] = len(gc.get_objects())
    objects["end"] = len(gc.get_objects())
    samples = sampler.finish()
    topic.close()
    return {"events": done, "samples": samples, "gc_objects": objects}


def work_consume(spec: dict[str, Any]) -> dict[str, Any]:
    handled = 0
    objects: dict[str, int] = {}
    done = threading.Event()
    total, warmup = spec["events"], spec["warmup"]

    def handler(event: Any, meta: Any) -> None:
        nonlocal handled
        handled += 1
        if handled == warmup:
            objects["warmup"] = len(gc.get_objects())
        if handled >= total:
            done.set()

    topic = _topic(spec, "soak-consumer")
    consumer = topic.new_consumer(start_from_beginning=True)
    sampler = Sampler(lambda: handled, spec["interval"])
    common.watch(common.Progress(total), lambda: handled, done)
    consumer.consume(handler, with_metadata=True)
    if not done.wait(spec["timeout"]):
        raise TimeoutError(f"handled {handled} of {total} events")
    objects["end"] = len(gc.get_objects())
    samples = sampler.finish()
    topic.close()
    return {"events": handled, "samples": samples, "gc_objects": objects}


def worker_main(spec: dict[str, Any]) -> int:
    import eventstream

    run = work_produce if spec["role"] == "produce" else work_consume
    result = run(spec)
    result["backend"] = eventstream.backend()
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


# --------------------------------------------------------------------------- analysis


def analyse(samples: list[list[float]], warmup: int, threshold_mib: float) -> dict[str, Any]:
    """RSS just after warm-up vs at the end, each the median of a quarter of the samples after
    warm-up (the consumer's RSS rises and falls by tens of MiB as librdkafka's prefetch queue
    fills while the handler lags: a transient that one sample could catch, where a leak raises
    the whole level), and the least-squares slope after warm-up."""
    after = [s for s in samples if s[1] >= warmup]
    if len(after) < 8:
        return {"verdict": "N/A", "reason": "too few samples after warm-up"}
    quarter = len(after) // 4
    base = statistics.median(s[2] for s in after[:quarter])
    end = statistics.median(s[2] for s in after[-quarter:])
    peak = max(s[2] for s in after)
    xs = [s[1] for s in after]
    ys = [s[2] for s in after]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0
    growth_mib = (end - base) / 1024
    return {
        "rss_start_mib": round(samples[0][2] / 1024, 1),
        "rss_after_warmup_mib": round(base / 1024, 1),
        "rss_end_mib": round(end / 1024, 1),
        "rss_peak_after_warmup_mib": round(peak / 1024, 1),
        "growth_after_warmup_mib": round(growth_mib, 2),
        "slope_kib_per_100k_events": round(slope * 100_000, 1),
        "threshold_mib": threshold_mib,
        "verdict": "PASS" if growth_mib <= threshold_mib else "MISS",
    }


def markdown(results: dict[str, Any]) -> str:
    out = [
        "# eventstream soak test",
        "",
        f"`{results['command']}` — {results['started_utc']}, {results['duration_s']:.0f} s, "
        f"{results['backend']} backend",
        "",
        f"{results['events']:,} events of {results['size']} B through a real broker "
        f"({results['partitions']} partitions): a producer process (`produce(*batch)` of "
        f"{results['batch']:,} new events per call, keyed) and a consumer process (handler with "
        "metadata). RSS is sampled every "
        f"{results['interval_s']:g} s; the first {results['warmup']:,} events are a warm-up. "
        "'after warm-up' and 'end' are medians of the first and last quarter of the samples "
        "after warm-up, so that a transient (librdkafka's prefetch queue filling while the "
        "handler lags) does not pass for growth; 'peak' is the highest sample.",
        "",
        "| process | events/s | RSS start MiB | after warm-up | end | peak | growth MiB | "
        "slope KiB/100k events | Python objects warm-up → end | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for role in ("producer", "consumer"):
        r = results[role]
        a = r["analysis"]
        objs = r.get("gc_objects", {})
        out.append(
            f"| {role} | {r['rate']:,.0f} | {a.get('rss_start_mib')} | "
            f"{a.get('rss_after_warmup_mib')} | {a.get('rss_end_mib')} | "
            f"{a.get('rss_peak_after_warmup_mib')} | {a.get('growth_after_warmup_mib')} | "
            f"{a.get('slope_kib_per_100k_events')} | "
            f"{objs.get('warmup', '—')} → {objs.get('end', '—')} | {a['verdict']} |"
        )
    out += [
        "",
        f"**{results['verdict']}**: memory growth after warm-up must stay within "
        f"{results['threshold_mib']:g} MiB per process.",
        "",
        f"Machine: {results['machine']['cpu_model']}, {results['machine']['cores']} cores; "
        f"{results['machine']['python']}; broker: Apache Kafka {results['broker'].get('kafka')} "
        f"({results['broker'].get('kind')}).",
        "",
    ]
    return "\n".join(out)


def chart(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for role, color in (("producer", "#1f77b4"), ("consumer", "#d62728")):
        samples = results[role]["samples"]
        ax.plot([s[1] for s in samples], [s[2] / 1024 for s in samples], label=role, color=color)
    ax.axvline(results["warmup"], color="#999", linestyle="--", label="end of warm-up")
    ax.set_xlabel("events handled")
    ax.set_ylabel("RSS (MiB)")
    ax.set_ylim(bottom=0)
    ax.set_title(
        f"eventstream soak, {results['backend']} backend — {results['verdict']} "
        f"({results['started_utc']})"
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------- entry point


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description="Move many events through eventstream's producer and consumer and check "
        "that their memory does not grow.",
    )
    parser.add_argument("--brokers", help="bootstrap servers (default: start the harness broker)")
    parser.add_argument("--events", type=int, default=2_000_000, help="default 2,000,000")
    parser.add_argument("--backend", choices=("compiled", "pure"), default="compiled")
    parser.add_argument("--size", type=int, default=100, help="encoded event size, bytes")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--batch", type=int, default=1000, help="events per produce call")
    parser.add_argument("--interval", type=float, default=0.5, help="RSS sampling, seconds")
    parser.add_argument("--warmup-fraction", type=float, default=0.2)
    parser.add_argument("--threshold-mib", type=float, default=16.0)
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
    payload.ensure_generated()
    broker = runner.Broker(args.brokers, 1)
    try:
        bootstrap = broker.start()
    except Exception as exc:
        sys.stderr.write(f"soak: cannot start the broker: {exc}\n")
        return 3
    try:
        admin = runner.Admin(bootstrap)
        topic = f"soak-{uuid.uuid4().hex[:8]}"
        admin.create(topic, args.partitions)
        spec = {
            "brokers": bootstrap,
            "topic": topic,
            "events": args.events,
            "size": args.size,
            "batch": args.batch,
            "interval": args.interval,
            "warmup": int(args.events * args.warmup_fraction),
            "timeout": max(600.0, args.events / 1000),
        }
        env = runner.Contenders.env(args.backend)
        base = [sys.executable, "-m", "benchmarks.soak", "--worker"]
        sys.stderr.write(
            f"soak: {args.events:,} events through eventstream ({args.backend} backend)\n"
        )
        bar = runner.Bar("consumer (events handled)")
        consumer = runner.Proc([*base, json.dumps({**spec, "role": "consume"})], env, bar)
        admin.wait_assigned(f"{topic}::soak-consumer", topic, args.partitions, consumer)
        producer = runner.Proc([*base, json.dumps({**spec, "role": "produce"})], env, None)
        produced = producer.finish(spec["timeout"])
        consumed = consumer.finish(spec["timeout"])
        bar.finish("done")
        admin.delete(topic)
        del admin
    finally:
        broker.stop()
    results: dict[str, Any] = {
        "command": "python -m benchmarks.soak " + " ".join(argv),
        "started_utc": started_at.isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - started, 1),
        "backend": produced["backend"],
        "events": args.events,
        "size": args.size,
        "partitions": args.partitions,
        "batch": args.batch,
        "interval_s": args.interval,
        "warmup": spec["warmup"],
        "threshold_mib": args.threshold_mib,
        "machine": environment.machine(),
        "software": environment.software(),
        "broker": broker.info,
    }
    for role, res in (("producer", produced), ("consumer", consumed)):
        samples = res["samples"]
        after = [s for s in samples if s[1] >= spec["warmup"]]
        span = (after[-1][0] - after[0][0]) if len(after) > 1 else 0.0
        rate = (after[-1][1] - after[0][1]) / span if span else 0.0
        res["rate"] = rate
        res["analysis"] = analyse(samples, spec["warmup"], args.threshold_mib)
        results[role] = res
    verdicts = {results[r]["analysis"]["verdict"] for r in ("producer", "consumer")}
    results["verdict"] = "MISS" if "MISS" in verdicts else "PASS" if verdicts == {"PASS"} else "N/A"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(environment.dumps(results) + "\n")
    (args.out / "soak.md").write_text(markdown(results))
    chart(results, args.out / "soak.png")
    for role in ("producer", "consumer"):
        a = results[role]["analysis"]
        sys.stderr.write(
            f"  {role}: RSS {a.get('rss_after_warmup_mib')} -> {a.get('rss_end_mib')} MiB after "
            f"warm-up ({a.get('slope_kib_per_100k_events')} KiB/100k events): {a['verdict']}\n"
        )
    sys.stderr.write(f"soak: {results['verdict']}; wrote soak.{{json,md,png}} to {args.out}\n")
    return 0 if results["verdict"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
