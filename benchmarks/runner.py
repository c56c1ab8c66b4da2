"""The benchmark runner: ``python -m benchmarks`` (or ``scripts/bench``, or ``eventstream bench``).

Starts a real Apache Kafka broker from the harness (unless ``--brokers`` names one), warms it up,
then runs every scenario for every contender, one after the other, each in a fresh process on a
fresh topic, and writes ``results.json``, ``results.md`` and ``results.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks import common, environment, payload, report

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = HERE / "results"

CONTENDERS: dict[str, str] = {
    "c": "C over librdkafka",
    "compiled": "eventstream compiled",
    "c-again": "C over librdkafka, run again",
    "c-threaded": "C over librdkafka, reports on a second thread",
    "compiled-metrics": "eventstream compiled, metrics=True",
    "compiled-otel": "eventstream compiled, OpenTelemetry",
    "pure": "eventstream pure",
    "confluent": "confluent-kafka typed loop",
    "aiokafka": "aiokafka",
    "kafka-python": "kafka-python",
}
SCENARIOS = ("produce", "consume", "async", "coldstart", "latency", "e2e", "restart")
NATIVE = ("c", "c-again", "c-threaded")
# Measured only when asked for (--contenders): the C program run a second time in every round of
# the throughput cases, so that the report gives, per case, the C program's ratio to itself next
# to compiled's ratio to it: how far a ratio moves from one run to the next on this machine. And
# the C program's pipelined calls with their delivery reports served by a second thread (the
# calling thread waits on a condition variable; header lists come back for reuse, as in
# eventstream): the structure an event loop imposes, whose thread cannot block in
# rd_kafka_flush(), with no Python and no serialization in it.
OPT_IN = ("c-again", "c-threaded")
# Contenders measured in some scenarios only: what metrics and tracing cost is a throughput
# question.
ONLY_IN: dict[str, tuple[str, ...]] = {
    "compiled-metrics": ("produce", "consume"),
    "compiled-otel": ("produce", "consume"),
    "c-again": ("produce", "consume", "async"),
    "c-threaded": ("async",),
}
#: eventstream's contenders (public API, one backend per process).
EVENTSTREAM = ("compiled", "compiled-metrics", "compiled-otel", "pure")
# Scenarios that measure some contenders only: a restart is about eventstream's group
# membership (static by default), which the peers leave to their users.
# The pipelined asyncio scenario compares eventstream's produce_async with the C program's
# pipelined calls (confluent-kafka's AIOProducer refuses headers; aiokafka's produce scenario is
# asyncio already); the cold start is about eventstream's producers and the typed loop's.
SCENARIO_CONTENDERS: dict[str, tuple[str, ...]] = {
    "restart": ("compiled", "pure"),
    "async": ("c", "compiled", "c-again", "c-threaded", "pure"),
    "coldstart": ("compiled", "pure", "confluent"),
}
# The contenders that the targets compare: measured in every round of a throughput scenario (the
# median counts), the others once. Rounds run one after the other in time, so a burst of load
# from elsewhere on the machine hits one round, not all of them.
TARGET_CONTENDERS = ("c", "compiled", "c-again", "c-threaded", "confluent")
THROUGHPUT = ("produce", "consume", "async")
# The worker/C mode that measures each scenario (the default: the scenario's name).
MODES = {"async": "produce-async", "coldstart": "cold-start"}
SCENARIO_TITLES = {
    "produce": "Produce throughput",
    "consume": "Consume throughput",
    "async": "Pipelined produce_async throughput",
    "coldstart": "First produce() of a new producer",
    "latency": "Single-event produce latency",
    "e2e": "End-to-end latency",
    "restart": "Consumer restart after SIGKILL",
}


@dataclass(frozen=True)
class RestartVariant:
    """How the consumer processes of the restart scenario join their group."""

    shared: bool  # Topic.new_consumer(shared=...): False is static membership (the default)
    consumer_properties: dict[str, str]
    label: str


@dataclass(frozen=True)
class ColdStartVariant:
    """When the producer of the cold-start scenario is made, before its first call."""

    delay_s: float
    label: str


COLDSTART_VARIANTS: dict[str, ColdStartVariant] = {
    "now": ColdStartVariant(0.0, "producer made right before the call"),
    "1s": ColdStartVariant(1.0, "producer made 1 s before the call"),
}

RESTART_VARIANTS: dict[str, RestartVariant] = {
    "static": RestartVariant(
        False, {}, "static member (the default: group.instance.id), session.timeout.ms=45000"
    ),
    "shared": RestartVariant(
        True, {}, "shared=True: dynamic member, session.timeout.ms=45000 (librdkafka's default)"
    ),
    "shared-6s": RestartVariant(
        True, {"session.timeout.ms": "6000"}, "shared=True, session.timeout.ms=6000"
    ),
}


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does; --quick scales it down."""

    produce_events: dict[int, int]
    consume_events: dict[int, int]
    produce_warmup: int
    latency_calls: int
    latency_warmup: int
    e2e_events: int
    e2e_warmup: int
    broker_warmup_events: int
    restart_variants: tuple[str, ...] = tuple(RESTART_VARIANTS)
    # The first consumer process handles this many events before it is SIGKILLed; the
    # restarted one reports after handling restart_events; the producer publishes at this rate.
    restart_warmup: int = 1000
    restart_events: int = 200
    restart_rate: float = 500.0
    batch: int = 1000  # events per call where a scenario has one size (latency: 1)
    # produce and async: every case in calls of each of these sizes; the warm-up is at least
    # two calls of the case's size, so that buffers have grown to it before the measured calls
    produce_batches: tuple[int, ...] = (1000, 10_000)
    async_in_flight: int = 4
    coldstart_rounds: int = 3  # fresh processes per contender and variant (median, max)
    coldstart_later_calls: int = 20
    e2e_rate: float = 1000.0
    timeout: float = 600.0


FULL = Sizes(
    # About a second per measured run of the contenders the targets compare: runs of 0.2 s
    # (150,000 events) moved by +-10% with one pause of the broker's JVM.
    produce_events={100: 600_000, 1024: 300_000},
    consume_events={100: 600_000, 1024: 300_000},
    produce_warmup=2_000,
    latency_calls=2_000,
    latency_warmup=200,
    e2e_events=11_000,
    e2e_warmup=1_000,
    broker_warmup_events=400_000,
)
QUICK = Sizes(
    produce_events={100: 20_000, 1024: 20_000},
    consume_events={100: 10_000, 1024: 5_000},
    produce_warmup=1_000,
    latency_calls=300,
    latency_warmup=50,
    e2e_events=1_500,
    e2e_warmup=500,
    broker_warmup_events=50_000,
    restart_variants=("static", "shared-6s"),  # the 45 s of a shared member would double it
    restart_warmup=200,
    restart_events=50,
    coldstart_rounds=1,
    timeout=120.0,
)


@dataclass(frozen=True)
class Case:
    scenario: str
    size: int
    partitions: int
    count: int
    warmup: int
    variant: str = ""  # restart: a key of RESTART_VARIANTS; coldstart: of COLDSTART_VARIANTS
    batch: int = 0  # produce and async: events per call (0: the scenario has no call size)

    @property
    def key(self) -> str:
        key = report.case_key(self.size, self.partitions, self.batch)
        return f"{key}-{self.variant}" if self.variant else key

    @property
    def title(self) -> str:
        parts = "partition" if self.partitions == 1 else "partitions"
        variant = ""
        if self.variant:
            variants = COLDSTART_VARIANTS if self.scenario == "coldstart" else RESTART_VARIANTS
            variant = f", {variants[self.variant].label}"
        calls = f", calls of {self.batch:,} events" if self.batch else ""
        return (
            f"{SCENARIO_TITLES[self.scenario]}: {report.size_label(self.size)} events, "
            f"{self.partitions} {parts}{calls}{variant}"
        )


def build_plan(sizes: Sizes, scenarios: Sequence[str], quick: bool) -> list[Case]:
    plan: list[Case] = []
    matrix = [(100, 1), (100, 6), (1024, 1), (1024, 6)]
    if quick:  # small N and a smaller matrix: the smoke test runs this
        matrix = [(100, 1), (1024, 6)]
    calls = [(s, p, b) for s, p in matrix for b in sizes.produce_batches]
    if quick:  # both call sizes, one case each
        calls = [(100, 1, 1000), (1024, 6, 10_000)]
    for scenario in scenarios:
        if scenario in ("produce", "async"):
            plan += [
                Case(scenario, s, p, sizes.produce_events[s], max(sizes.produce_warmup, 2 * b),
                     batch=b)
                for s, p, b in calls
            ]  # fmt: skip
        elif scenario == "coldstart":
            plan += [
                Case("coldstart", 100, 1, sizes.coldstart_later_calls, 0, variant)
                for variant in COLDSTART_VARIANTS
            ]
        elif scenario == "consume":
            plan += [Case("consume", s, p, sizes.consume_events[s], 0) for s, p in matrix]
        elif scenario == "latency":
            plan.append(Case("latency", 100, 1, sizes.latency_calls, sizes.latency_warmup))
        elif scenario == "e2e":
            plan.append(Case("e2e", 100, 1, sizes.e2e_events, sizes.e2e_warmup))
        elif scenario == "restart":
            plan += [
                Case("restart", 100, 6, sizes.restart_events, sizes.restart_warmup, variant)
                for variant in sizes.restart_variants
            ]
    return plan


# Another process using more than this share of all cores delays a measurement (briefly).
QUIET_OTHER_PCT = 20.0


class BenchError(RuntimeError):
    pass


# --------------------------------------------------------------------------- progress display


class Bar:
    """One progress line on stderr: redrawn in place on a terminal, start/end lines otherwise."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.tty = sys.stderr.isatty()
        self.t0 = time.monotonic()
        self._drawn = 0.0
        self._lock = threading.Lock()
        if not self.tty:
            self._write(f"  {label} ...\n")

    @staticmethod
    def _write(text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()

    def update(self, done: int, total: int) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        with self._lock:
            if now - self._drawn < 0.1 and done < total:
                return
            self._drawn = now
            frac = min(1.0, done / total) if total else 0.0
            bar = "#" * int(frac * 24)
            self._write(
                f"\r  {self.label:<48} [{bar:<24}] {frac * 100:3.0f}% "
                f"{done:>9,}/{total:,} {now - self.t0:5.1f}s\x1b[K"
            )

    def finish(self, text: str) -> None:
        line = f"  {self.label:<48} {text} ({time.monotonic() - self.t0:.1f}s)"
        self._write(f"\r{line}\x1b[K\n" if self.tty else f"{line}\n")


# --------------------------------------------------------------------------- processes


class Proc:
    """A contender process: stderr progress lines go to a Bar, other stderr lines are kept for
    the error message, stdout lines are collected (the result is the last one)."""

    def __init__(self, cmd: Sequence[str], env: dict[str, str], bar: Bar | None) -> None:
        self.cmd = list(cmd)
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self.bar = bar
        self.done = 0  # the count of the latest "@progress" line
        self._threads = [
            threading.Thread(target=self._read_out, daemon=True),
            threading.Thread(target=self._read_err, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.out.append(line.rstrip("\n"))

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if line.startswith("@progress "):
                with contextlib.suppress(ValueError):
                    done, total = (int(x) for x in line.split()[1:3])
                    self.done = done
                    if self.bar is not None:
                        self.bar.update(done, total)
            else:
                self.err.append(line.rstrip("\n"))

    def _tail(self) -> str:
        tail = "\n".join(self.err[-25:])
        return f":\n{tail}" if tail else ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def finish(self, timeout: float) -> dict[str, Any]:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BenchError(f"timed out after {timeout:g} s{self._tail()}") from None
        for t in self._threads:
            t.join(5)
        if self.proc.returncode != 0:
            raise BenchError(f"exited with {self.proc.returncode}{self._tail()}")
        for line in reversed(self.out):
            if line.startswith("{"):
                result: dict[str, Any] = json.loads(line)
                return result
        raise BenchError(f"printed no result{self._tail()}")


class Load:
    """CPU use around one measurement: the client processes, the broker (when it is ours) and
    everything else on the machine."""

    def __init__(self, broker_pids: Sequence[int]) -> None:
        self.broker_pids = list(broker_pids)
        self.t0 = time.monotonic()
        self.busy0 = environment.system_busy_seconds()
        self.children0 = self._children()
        self.self0 = self._self()
        self.broker0 = self._broker()
        self.loadavg = environment.loadavg()

    @staticmethod
    def _children() -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    @staticmethod
    def _self() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def _broker(self) -> float | None:
        if not self.broker_pids:
            return None
        values = [environment.process_cpu_seconds(pid) for pid in self.broker_pids]
        return None if any(v is None for v in values) else sum(v for v in values if v)

    def result(self) -> dict[str, Any]:
        wall = time.monotonic() - self.t0
        cores = os.cpu_count() or 1
        busy = environment.system_busy_seconds() - self.busy0
        client = self._children() - self.children0
        runner = self._self() - self.self0
        broker_now = self._broker()
        broker = None if broker_now is None or self.broker0 is None else broker_now - self.broker0
        other = None if broker is None else max(0.0, busy - client - runner - broker)
        return {
            "wall_s": round(wall, 3),
            "loadavg_before": self.loadavg,
            "machine_busy_pct": round(100 * busy / (wall * cores), 1),
            "client_cpu_s": round(client, 3),
            "broker_cpu_s": None if broker is None else round(broker, 3),
            "other_cpu_pct": None if other is None else round(100 * other / (wall * cores), 1),
        }


# --------------------------------------------------------------------------- the broker


class Broker:
    """The harness's KafkaCluster (started here, stopped at the end) or external brokers."""

    def __init__(self, brokers: str | None, nodes: int) -> None:
        self.external = brokers
        self.nodes = nodes
        self.cluster: Any = None
        self.info: dict[str, Any] = {}

    def start(self) -> str:
        if self.external:
            self.info = {"kind": "external", "bootstrap": self.external}
            self.info["kafka"] = _probe_kafka_version(self.external)
            return self.external
        sys.path.insert(0, str(ROOT / "scripts"))
        try:
            import kafka_harness  # type: ignore[import-not-found]
        except ImportError as exc:
            raise BenchError(
                f"scripts/kafka_harness.py is not importable ({exc}); pass --brokers HOST:PORT"
            ) from exc
        finally:
            sys.path.pop(0)
        # The harness tunes its JVM for start-up (C1 only); a benchmark wants peak speed: C2 on,
        # and a fixed 1 GiB heap as Kafka's own start script sets (-Xmx1G -Xms1G). Its serial GC
        # stays: on 2 cores, G1's and Parallel GC's collector threads cost the clients more
        # (measured: end-to-end p99 2-8x worse).
        heap = "1g"
        jvm_opts = ["-XX:TieredStopAtLevel=4", f"-Xms{heap}"]
        # The broker's data in memory (on disk, the page cache wrote each measurement's data back
        # about 30 s later), and a deleted topic's files gone within a second or two: these are
        # the broker names (file.delete.delay.ms is the topic one, which a broker ignores); with
        # Kafka's 60 s the tmpfs filled with the last minute's topics and runs slowed by half
        # (benchmarks/README.md, "What made the slow rounds"). 0 would recheck every millisecond.
        data_root = _memory_dir()
        broker_config = {
            "log.segment.delete.delay.ms": "1000",
            "log.initial.task.delay.ms": "1000",
        }
        sys.stderr.write(f"starting Apache Kafka {kafka_harness.KAFKA_VERSION} from the harness\n")
        self.cluster = kafka_harness.KafkaCluster(
            nodes=self.nodes,
            heap=heap,
            jvm_opts=jvm_opts,
            temp_root=data_root,
            broker_config=broker_config,
        )
        self.cluster.start()
        self.info = {
            "kind": "harness (scripts/kafka_harness.py)",
            "kafka": kafka_harness.KAFKA_VERSION,
            "nodes": self.nodes,
            "heap": heap,
            "jvm_opts": [
                *kafka_harness._JVM_TUNING,
                *jvm_opts,
                *os.environ.get("EVENTSTREAM_KAFKA_JVM_OPTS", "").split(),
            ],
            "java": environment.java_version(),
            "data": f"tmpfs ({data_root})" if data_root else "the temp dir's file system",
            "broker_config": broker_config,
            "start_s": round(self.cluster.start_seconds, 1),
            "bootstrap": self.cluster.bootstrap_servers,
        }
        return str(self.cluster.bootstrap_servers)

    def pids(self) -> list[int]:
        if self.cluster is None:
            return []
        pids = []
        for node in getattr(self.cluster, "_nodes", []):
            if getattr(node, "pid", None):
                pids.append(node.pid)
        return pids

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None


# A tmpfs holds the harness broker's data when it has this much room (a measurement's topic
# is deleted right after it: the most data at a time is one case's, well under 1 GiB).
MEMORY_DIR_MIN_FREE = 8 << 30


def _memory_dir() -> Path | None:
    """/dev/shm if it is a tmpfs with MEMORY_DIR_MIN_FREE bytes free, else None."""
    shm = Path("/dev/shm")
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
        st = os.statvfs(shm)
    except OSError:
        return None
    tmpfs = any(line.split()[1:3] == [str(shm), "tmpfs"] for line in mounts)
    if not tmpfs or st.f_bavail * st.f_frsize < MEMORY_DIR_MIN_FREE:
        return None
    return shm


def _probe_kafka_version(bootstrap: str) -> str:
    """The broker's protocol level as kafka-python detects it (external brokers only)."""
    try:
        import kafka

        client = kafka.KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
        try:
            version = client._client.check_version()
        finally:
            client.close()
        return "API level " + ".".join(str(v) for v in version) + " (probed by kafka-python)"
    except Exception as exc:
        return f"unknown ({type(exc).__name__})"


class Admin:
    """Creates and deletes the benchmark's topics (confluent-kafka's AdminClient)."""

    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka.admin import AdminClient

        # Quiet: its connection errors after the broker stops at the end are no news.
        conf = {"bootstrap.servers": bootstrap, "log_level": 0, "error_cb": lambda _e: None}
        self.client = AdminClient(conf)
        md = self.client.list_topics(timeout=30)
        self.replication = min(3, len(md.brokers))

    def create(self, name: str, partitions: int) -> None:
        from confluent_kafka.admin import NewTopic

        futures = self.client.create_topics(
            [NewTopic(name, partitions, self.replication)], operation_timeout=30
        )
        futures[name].result(60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            topic = self.client.list_topics(timeout=10).topics.get(name)
            if (
                topic is not None
                and topic.error is None
                and len(topic.partitions) == partitions
                and all(p.leader >= 0 for p in topic.partitions.values())
            ):
                return
            time.sleep(0.05)
        raise BenchError(f"topic {name} has no leaders after 60 s")

    def wait_assigned(self, group: str, topic: str, partitions: int, proc: Proc) -> None:
        """Until the broker says ``group`` is stable with every partition of ``topic`` assigned.
        Asked of the broker, not the client under test, so it means the same for every one."""
        from confluent_kafka import ConsumerGroupState

        deadline = time.monotonic() + 120
        last = "no answer"
        while time.monotonic() < deadline:
            if proc.proc.poll() is not None:
                proc.finish(1)  # raises with the consumer's stderr
            try:
                desc = self.client.describe_consumer_groups([group], request_timeout=10)[group]
                desc = desc.result(15)
                assigned = sum(
                    1
                    for member in desc.members
                    for tp in member.assignment.topic_partitions
                    if tp.topic == topic
                )
                if desc.state == ConsumerGroupState.STABLE and assigned == partitions:
                    return
                last = f"state {desc.state}, {assigned}/{partitions} partitions assigned"
            except Exception as exc:
                last = str(exc)
            time.sleep(0.1)
        proc.kill()
        raise BenchError(f"consumer group {group} not assigned within 120 s: {last}")

    def delete(self, name: str) -> None:
        with contextlib.suppress(Exception):
            self.client.delete_topics([name], operation_timeout=30)[name].result(60)


# --------------------------------------------------------------------------- contenders


class Contenders:
    """How to start each contender's process for one measurement."""

    def __init__(self, native_bin: Path | None, payload_dir: Path) -> None:
        self.native_bin = native_bin
        self.payload_dir = payload_dir
        self._payloads: dict[int, Path] = {}

    def payload_file(self, size: int) -> Path:
        if size not in self._payloads:
            path = self.payload_dir / f"payload-{size}.bin"
            path.write_bytes(payload.template(size))
            self._payloads[size] = path
        return self._payloads[size]

    @staticmethod
    def env(contender: str) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("EVENTSTREAM_NO_EXTENSIONS", None)
        if contender == "pure":
            env["EVENTSTREAM_NO_EXTENSIONS"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def command(self, contender: str, mode: str, spec: dict[str, Any]) -> list[str]:
        if contender not in NATIVE:
            return [sys.executable, "-m", "benchmarks.worker", json.dumps(spec)]
        if self.native_bin is None:
            raise BenchError("the C contender is not built")
        producing = mode in ("produce", "produce-async", "latency", "e2e-produce")
        props = common.RDK_CONSUMER
        if producing:
            props = common.RDK_PRODUCER
        cmd = [
            str(self.native_bin),
            mode,
            "--brokers", spec["brokers"],
            "--topic", spec["topic"],
            "--payload", str(self.payload_file(spec["size"])),
            "--count", str(spec["count"]),
            "--batch", str(spec.get("batch", 1000)),
            "--warmup", str(spec.get("warmup", 0)),
            "--rate", str(spec.get("rate", 1000.0)),
            "--inflight", str(spec.get("in_flight", 4)),
            "--source", common.SOURCE,
            "--type", common.TYPE_NAME,
        ]  # fmt: skip
        if not producing:
            cmd += ["--group", spec["group"]]
        if contender == "c-threaded":
            cmd += ["--report-thread", "1"]
        for key, value in props.items():
            cmd += ["-X", f"{key}={value}"]
        return cmd

    def start(self, contender: str, mode: str, spec: dict[str, Any], bar: Bar | None) -> Proc:
        spec = {**spec, "contender": contender, "mode": mode}
        return Proc(self.command(contender, mode, spec), self.env(contender), bar)

    def describe(self, contender: str, brokers: str) -> dict[str, Any]:
        if contender in NATIVE:
            assert self.native_bin is not None
            res = subprocess.run(
                [str(self.native_bin), "version"], capture_output=True, text=True, check=True
            )
            version = json.loads(res.stdout)["librdkafka"]
            producer = common.RDK_PRODUCER
            return {
                "client": f"C program (benchmarks/native/esbench.c) over librdkafka {version}",
                "producer": dict(producer) | {"(librdkafka defaults)": common.RDK_BATCH_DEFAULTS},
                "consumer": dict(common.RDK_CONSUMER),
                "produce call": "per event: rd_kafka_produceva (6 headers, pre-serialized "
                "payload, MSG_F_COPY); then rd_kafka_flush for the batch",
                "consume": "rd_kafka_consumer_poll + ce_type lookup + offset_store_message "
                "(no protobuf decoding)",
                "async call": "pipelined: calls of rd_kafka_produceva per event, a new call as "
                "soon as the oldest in flight completes "
                + (
                    "(a second thread serves the reports with rd_kafka_flush while events are "
                    "outstanding and detaches each message's header list, which the next call "
                    "reuses; the calling thread waits for the oldest call on a condition "
                    "variable)"
                    if contender == "c-threaded"
                    else "(rd_kafka_flush serves the reports; the report completing a call yields)"
                ),
            }
        spec = {"brokers": brokers, "topic": "describe", "count": 0}
        return self.start(contender, "describe", spec, None).finish(120)


# --------------------------------------------------------------------------- running


@dataclass
class Measurement:
    scenario: str
    size: int
    partitions: int
    contender: str
    count: int
    result: dict[str, Any] = field(default_factory=dict)
    load: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    topic: str = ""
    variant: str = ""
    batch: int = 0


class Runner:
    def __init__(
        self,
        args: argparse.Namespace,
        sizes: Sizes,
        contenders: list[str],
        bootstrap: str,
        broker: Broker,
        procs: Contenders,
    ) -> None:
        self.args = args
        self.sizes = sizes
        self.contenders = contenders
        self.bootstrap = bootstrap
        self.broker = broker
        self.procs = procs
        self.admin = Admin(bootstrap)
        self.run_id = uuid.uuid4().hex[:6]
        self.wait_budget = 90.0
        self.measurements: list[Measurement] = []

    def topic_name(self, case: Case, contender: str, round_: int) -> str:
        suffix = f"-r{round_}" if self.args.repeat > 1 else ""
        return f"bench-{self.run_id}-{case.scenario}-{case.key}-{contender}{suffix}"

    def spec(self, case: Case, topic: str) -> dict[str, Any]:
        delay = COLDSTART_VARIANTS[case.variant].delay_s if case.scenario == "coldstart" else 0
        return {
            "brokers": self.bootstrap,
            "topic": topic,
            "group": f"{topic}-g",
            "size": case.size,
            "partitions": case.partitions,
            "count": case.count,
            "warmup": case.warmup,
            "batch": case.batch or self.sizes.batch,
            "rate": self.sizes.e2e_rate,
            "timeout": self.sizes.timeout,
            "in_flight": self.sizes.async_in_flight,
            "delay": delay,
            "later_calls": self.sizes.coldstart_later_calls,
        }

    def warm_broker(self) -> None:
        """Run the broker's hot paths before measuring (the JIT compiles them first)."""
        n = self.sizes.broker_warmup_events
        contender = "c" if self.procs.native_bin is not None else "confluent"
        topic = f"bench-{self.run_id}-broker-warmup"
        self.admin.create(topic, 6)
        case = Case("produce", 100, 6, n, 1000)
        spec = self.spec(case, topic)
        bar = Bar(f"broker warm-up: {n:,} events ({CONTENDERS[contender]})")
        try:
            self.procs.start(contender, "produce", spec, bar).finish(self.sizes.timeout)
            self.procs.start(contender, "consume", spec | {"warmup": 0}, bar).finish(
                self.sizes.timeout
            )
            bar.finish("done")
        finally:
            self.admin.delete(topic)

    def wait_for_quiet(self) -> dict[str, Any]:
        """Before a measurement: wait (a few seconds at most, 90 s per run) while processes
        other than ours keep the machine busy, e.g. a test suite of someone else."""
        waited = 0.0
        if self.args.quick:  # a smoke test: no waiting, nothing to judge
            return {}
        other = self.other_load(0.5)
        while other > QUIET_OTHER_PCT and waited < 10 and self.wait_budget > 0:
            time.sleep(1.0)
            waited += 1.0
            self.wait_budget -= 1.0
            other = self.other_load(0.5)
        return {"waited_for_quiet_s": waited, "other_cpu_pct_before": round(other, 1)}

    def other_load(self, seconds: float) -> float:
        """Share of all cores used by processes that are neither ours nor our broker's."""
        load = Load(self.broker.pids())
        time.sleep(seconds)
        other = load.result().get("other_cpu_pct")
        return float(other) if other is not None else 0.0

    def run_case(self, case: Case, contender: str, round_: int) -> Measurement:
        if case.scenario in THROUGHPUT and not self.args.quick:
            fraction = common.SLOW_CONTENDER_FRACTION.get(contender, 1.0)
            case = replace(case, count=max(1, int(case.count * fraction)))
        topic = self.topic_name(case, contender, round_)
        m = Measurement(case.scenario, case.size, case.partitions, contender, case.count)
        m.topic = topic
        m.variant = case.variant
        m.batch = case.batch
        bar = Bar(CONTENDERS[contender])
        timeout = self.sizes.timeout
        try:
            self.admin.create(topic, case.partitions)
            spec = self.spec(case, topic)
            if case.scenario == "consume":
                filler = "c" if self.procs.native_bin is not None else "confluent"
                fill = {**spec, "warmup": 0}
                self.procs.start(filler, "produce", fill, None).finish(timeout)
            quiet = self.wait_for_quiet()
            speed_before = environment.machine_speed()
            load = Load(self.broker.pids())
            if case.scenario == "restart":
                m.result = self.restart(case, contender, spec, bar)
            elif case.scenario == "coldstart":
                m.result = self.cold_start(contender, spec, bar)
            elif case.scenario == "e2e":
                consumer = self.procs.start(contender, "e2e-consume", spec, bar)
                try:
                    group = spec["group"]
                    if contender in EVENTSTREAM:
                        group = f"{topic}::{group}"  # eventstream's per-instance group
                    self.admin.wait_assigned(group, topic, case.partitions, consumer)
                    producer = self.procs.start(contender, "e2e-produce", spec, None)
                    produced = producer.finish(timeout)
                    received = consumer.finish(timeout)
                finally:
                    consumer.kill()
                m.result = {"producer": produced, "consumer": _strip_samples(received)}
                m.result["latency"] = common.latency_stats(received.get("samples_ns", []))
            else:
                mode = MODES.get(case.scenario, case.scenario)
                result = self.procs.start(contender, mode, spec, bar).finish(timeout)
                if "samples_ns" in result:
                    result["latency"] = common.latency_stats(result["samples_ns"])
                    result = _strip_samples(result)
                m.result = result
            m.load = load.result() | quiet
            m.load["speed_before"] = speed_before
            m.load["speed_after"] = environment.machine_speed()
            bar.finish(report.summary_of(m.scenario, m.result, case.size))
        except Exception as exc:
            m.error = f"{type(exc).__name__}: {exc}"
            bar.finish("FAILED: " + m.error.splitlines()[0][:200])
        finally:
            self.admin.delete(topic)
        return m

    def cold_start(self, contender: str, spec: dict[str, Any], bar: Bar) -> dict[str, Any]:
        """Fresh processes, one after the other: each makes a producer, waits ``spec["delay"]``
        seconds, times its first call (one event) and a few later ones."""
        rounds = [
            self.procs.start(contender, "cold-start", spec, bar).finish(self.sizes.timeout)
            for _ in range(self.sizes.coldstart_rounds)
        ]

        def med(name: str) -> float | None:
            values = [r[name] for r in rounds if r.get(name) is not None]
            return round(statistics.median(values), 3) if values else None

        return {
            "delay_s": spec["delay"],
            "processes": len(rounds),
            "first_ms": med("first_ms"),
            "first_ms_max": round(max(r["first_ms"] for r in rounds), 3),
            "make_ms": med("make_ms"),
            "later_p50_ms": med("later_p50_ms"),
            "later_calls": spec["later_calls"],
            "rounds": rounds,
        }

    def restart(self, case: Case, contender: str, spec: dict[str, Any], bar: Bar) -> dict[str, Any]:
        """A consumer process handles a paced stream; after ``case.warmup`` events it is
        SIGKILLed and the same command (same instance id) is started again at once. Measured:
        from the SIGKILL to the first event the new process handles (CLOCK_MONOTONIC in both)."""
        variant = RESTART_VARIANTS[case.variant]
        timeout = self.sizes.timeout
        spec = spec | {
            "shared": variant.shared,
            "consumer_properties": variant.consumer_properties,
            "rate": self.sizes.restart_rate,
        }
        group = f"{spec['topic']}::{spec['group']}"  # eventstream's per-instance group
        first_spec = spec | {"count": case.warmup, "until_killed": True}
        first = self.procs.start(contender, "restart-consume", first_spec, None)
        producer: Proc | None = None
        second: Proc | None = None
        try:
            self.admin.wait_assigned(group, spec["topic"], case.partitions, first)
            # Paced for longer than any restart takes; killed once the restart is measured.
            paced = spec | {"count": int(self.sizes.restart_rate * timeout)}
            producer = self.procs.start(contender, "restart-produce", paced, None)
            deadline = time.monotonic() + timeout
            while first.done < case.warmup:
                for proc in (first, producer):
                    if proc.proc.poll() is not None:
                        proc.finish(1)  # raises with its stderr
                if time.monotonic() > deadline:
                    raise BenchError(f"the first consumer handled {first.done} events in time")
                time.sleep(0.05)
            killed_ns = time.monotonic_ns()
            os.kill(first.proc.pid, signal.SIGKILL)
            first.proc.wait()
            spawned_ns = time.monotonic_ns()
            second = self.procs.start(contender, "restart-consume", spec, bar)
            result = second.finish(timeout)
        finally:
            for proc in (first, second, producer):
                if proc is not None:
                    proc.kill()
        seconds = {
            "restart_s": result["first_event_ns"] - killed_ns,
            "spawn_to_consume_s": result["consume_ns"] - spawned_ns,
            "consume_to_assigned_s": result["assigned_ns"] - result["consume_ns"],
            "assigned_to_first_event_s": result["first_event_ns"] - result["assigned_ns"],
        }
        return (
            result
            | {k: round(v / 1e9, 3) for k, v in seconds.items()}
            | {
                "variant": case.variant,
                "shared": variant.shared,
                "consumer_properties": variant.consumer_properties,
                "first_process_events": first.done,
            }
        )

    def run(self, plan: list[Case]) -> None:
        for case in plan:
            count = f"{case.count:,} {'calls' if case.scenario == 'latency' else 'events'}"
            if case.scenario == "restart":
                count = f"SIGKILL after {case.warmup:,} events, restart at once"
            elif case.scenario == "async":
                count += f", {self.sizes.async_in_flight} calls in flight"
            elif case.scenario == "coldstart":
                count = (
                    f"{self.sizes.coldstart_rounds} fresh process(es), then "
                    f"{case.count} later calls, 1 event each"
                )
            sys.stderr.write(f"\n{case.title} ({count} per contender)\n")
            rounds = self.args.repeat if case.scenario in THROUGHPUT else 1
            for round_ in range(rounds):
                if rounds > 1:
                    sys.stderr.write(f" round {round_ + 1} of {rounds}\n")
                for contender in _round_order(self.contenders, round_):
                    if case.scenario not in ONLY_IN.get(contender, SCENARIOS):
                        continue
                    if contender not in SCENARIO_CONTENDERS.get(case.scenario, (contender,)):
                        continue
                    if round_ > 0 and contender not in TARGET_CONTENDERS:
                        continue
                    self.measurements.append(self.run_case(case, contender, round_))


def _round_order(contenders: Sequence[str], round_: int) -> list[str]:
    """The order the contenders run in within a round: as given in even rounds, reversed in odd
    ones (C, compiled, confluent, then confluent, compiled, C), so that whatever the previous
    measurement leaves behind (memory freed by its process and its deleted topic, a broker busy
    cleaning up) does not always fall on the same contender of a pair."""
    return list(contenders) if round_ % 2 == 0 else list(reversed(contenders))


def _strip_samples(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "samples_ns"}


# --------------------------------------------------------------------------- entry point


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark eventstream (compiled and pure backends) side by side with a "
        "confluent-kafka typed loop, aiokafka, kafka-python and a C program over librdkafka, "
        "against a real Apache Kafka broker. Writes results.json, results.md, results.png.",
    )
    parser.add_argument(
        "--brokers",
        help="bootstrap servers of a running cluster (default: start one with "
        "scripts/kafka_harness.py and stop it at the end)",
    )
    parser.add_argument("--quick", action="store_true", help="small N, small matrix (~1-2 min)")
    parser.add_argument(
        "--only", action="append", metavar="SCENARIO",
        help=f"run only these scenarios (repeatable or comma-separated: {', '.join(SCENARIOS)})",
    )  # fmt: skip
    parser.add_argument(
        "--contenders", nargs="+", metavar="NAME",
        help=f"which contenders (default all but {' '.join(OPT_IN)}: {' '.join(CONTENDERS)}); "
        "commas work too. c-again runs the C program twice per round of a throughput case: the "
        "report then gives its ratio to itself per case, the noise of a ratio; c-threaded runs "
        "its pipelined calls with the reports served on a second thread (async only)",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path,
        help=f"output directory (default {DEFAULT_OUT.relative_to(ROOT)}, or its quick/ "
        "subdirectory with --quick)",
    )  # fmt: skip
    parser.add_argument(
        "--repeat",
        type=int,
        help="rounds of each throughput case for the contenders the targets compare (c, "
        "compiled, confluent, and c-again and c-threaded when asked for; the others run once); "
        "the median is "
        "reported (default 3, with --quick 1)",
    )
    parser.add_argument("--nodes", type=int, default=1, help="harness cluster size (default 1)")
    parser.add_argument(
        "--soak", action="store_true",
        help="run the soak test instead (benchmarks/soak.py; see python -m benchmarks.soak -h)",
    )  # fmt: skip
    parser.add_argument(
        "--cache", action="store_true",
        help="run the coherent cache's fan-out and hit cost instead (benchmarks/cache.py; see "
        "python -m benchmarks.cache -h)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    scenarios = [s for item in (args.only or SCENARIOS) for s in item.split(",") if s]
    bad = [s for s in scenarios if s not in SCENARIOS]
    if bad:
        parser.error(f"unknown scenario(s) {bad}; choose from {', '.join(SCENARIOS)}")
    args.scenarios = [s for s in SCENARIOS if s in scenarios]
    default = [c for c in CONTENDERS if c not in OPT_IN]
    chosen = [c for item in (args.contenders or default) for c in item.split(",") if c]
    bad = [c for c in chosen if c not in CONTENDERS]
    if bad:
        parser.error(f"unknown contender(s) {bad}; choose from {', '.join(CONTENDERS)}")
    args.contender_list = [c for c in CONTENDERS if c in chosen]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes (as the ``eventstream`` command's): 0 done (and, in a full run, every target
    met); 1 a measurement failed, or a full run missed a target; 2 bad usage; 3 no broker."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--soak" in argv:
        from benchmarks import soak

        return soak.main([a for a in argv if a != "--soak"])
    if "--cache" in argv:
        from benchmarks import cache

        return cache.main([a for a in argv if a != "--cache"])
    args = parse_args(argv)
    started = time.monotonic()
    started_at = dt.datetime.now(dt.UTC)
    sizes = QUICK if args.quick else FULL
    out: Path = args.out or (DEFAULT_OUT / "quick" if args.quick else DEFAULT_OUT)
    out.mkdir(parents=True, exist_ok=True)
    payload.ensure_generated()

    # Only the contenders some chosen scenario measures (--only restart: eventstream's two).
    contenders = [
        c
        for c in args.contender_list
        if any(c in SCENARIO_CONTENDERS.get(s, (c,)) for s in args.scenarios)
    ]
    if not contenders:
        sys.stderr.write(
            f"benchmarks: none of {', '.join(args.contender_list)} is measured in "
            f"{', '.join(args.scenarios)}\n"
        )
        return 2
    native_bin: Path | None = None
    notes: list[str] = []
    if set(NATIVE) & set(contenders) or "consume" in args.scenarios:
        from benchmarks import native

        try:
            native_bin = native.build()
            sys.stderr.write(f"built the C contender: {native_bin.relative_to(ROOT)}\n")
        except native.BuildError as exc:
            notes.append(f"C contender not built: {exc}")
            sys.stderr.write(f"benchmarks: {notes[-1]}\n")
            contenders = [c for c in contenders if c not in NATIVE]

    broker = Broker(args.brokers, args.nodes)
    tmp = out / ".tmp"
    tmp.mkdir(exist_ok=True)
    procs = Contenders(native_bin, tmp)
    failed = 0
    runner: Runner | None = None
    try:
        try:
            bootstrap = broker.start()
        except Exception as exc:
            sys.stderr.write(f"benchmarks: cannot start the broker: {exc}\n")
            return 3
        sys.stderr.write(f"broker: {bootstrap}\n")
        described: dict[str, Any] = {}
        for contender in list(contenders):
            try:
                described[contender] = procs.describe(contender, bootstrap)
            except Exception as exc:
                notes.append(f"{CONTENDERS[contender]} unavailable: {exc}")
                sys.stderr.write(f"benchmarks: {notes[-1]}\n")
                contenders.remove(contender)
        # Read before measuring: the commit (and whether eventstream/ or ext/ differ from it) of
        # the code the contenders run, not of whatever the tree holds when the run ends.
        software = environment.software() | {"gcc": _gcc(native_bin)}
        runner = Runner(args, sizes, contenders, bootstrap, broker, procs)
        plan = build_plan(sizes, args.scenarios, args.quick)
        if any(case.scenario != "restart" for case in plan):  # a restart needs no JIT-hot broker
            runner.warm_broker()
        runner.run(plan)
        failed = sum(1 for m in runner.measurements if m.error)
        results = {
            "schema": 1,
            "command": "python -m benchmarks " + shlex.join(argv),
            "started_utc": started_at.isoformat(timespec="seconds"),
            "duration_s": round(time.monotonic() - started, 1),
            "quick": args.quick,
            "settings": {
                "batch_events_per_call": sizes.batch,
                "produce_events_per_call": list(sizes.produce_batches),
                "produce_events": {
                    report.size_label(k): v for k, v in sizes.produce_events.items()
                },
                "consume_events": {
                    report.size_label(k): v for k, v in sizes.consume_events.items()
                },
                "produce_warmup_events": sizes.produce_warmup,
                "produce_warmup": f"max({sizes.produce_warmup:,} events, 2 calls of the case's "
                "size), in calls of that size",
                "async": {
                    "calls_in_flight": sizes.async_in_flight,
                    "events": {report.size_label(k): v for k, v in sizes.produce_events.items()},
                    "events_per_call": list(sizes.produce_batches),
                },
                "coldstart": {
                    "processes_per_variant": sizes.coldstart_rounds,
                    "event": "100 B, one event per call, each waited for",
                    "later_calls": sizes.coldstart_later_calls,
                    "variants": {k: asdict(v) for k, v in COLDSTART_VARIANTS.items()},
                },
                "threads": "CPU time (schedstat) and page faults (minflt + majflt) of every "
                "thread of the contender's process over the measured section, read from "
                "/proc/self/task/<tid>/ in that process (Python: benchmarks/threads.py; C: "
                "esbench.c), the measured thread's own counters last before and first after",
                "latency_calls": sizes.latency_calls,
                "latency_warmup_calls": sizes.latency_warmup,
                "e2e_rate_per_s": sizes.e2e_rate,
                "e2e_events": sizes.e2e_events,
                "e2e_warmup_events": sizes.e2e_warmup,
                "broker_warmup_events": sizes.broker_warmup_events,
                "restart": {
                    "partitions": 6,
                    "rate_per_s": sizes.restart_rate,
                    "events_before_kill": sizes.restart_warmup,
                    "events_after_restart": sizes.restart_events,
                    "variants": {
                        name: asdict(RESTART_VARIANTS[name]) for name in sizes.restart_variants
                    },
                },
                "repeat": args.repeat,
                "replication_factor": runner.admin.replication,
                "compression": "none (every client's default)",
                "keys": "none (every client's default partitioner for unkeyed records)",
            },
            "machine": environment.machine(),
            "software": software,
            "broker": broker.info,
            "contenders": {c: {"name": CONTENDERS[c], **described[c]} for c in contenders},
            "measurements": [asdict(m) for m in runner.measurements],
            "notes": notes,
        }
    finally:
        runner = None  # drop the AdminClient before its broker goes away
        broker.stop()
        for f in tmp.glob("*"):
            f.unlink()
        with contextlib.suppress(OSError):
            tmp.rmdir()
    results["duration_s"] = round(time.monotonic() - started, 1)
    results["targets"] = report.targets(results)
    (out / "results.json").write_text(environment.dumps(results) + "\n")
    (out / "results.md").write_text(report.markdown(results))
    chart = report.chart(results, out / "results.png")
    sys.stderr.write("\n" + report.targets_text(results["targets"]) + "\n")
    written = ", ".join(
        str((out / n).relative_to(ROOT) if out.is_relative_to(ROOT) else out / n)
        for n in ("results.json", "results.md") + (("results.png",) if chart else ())
    )
    sys.stderr.write(f"wrote {written} in {results['duration_s']:.0f} s\n")
    if failed:
        sys.stderr.write(f"benchmarks: {failed} measurement(s) failed (see results.md)\n")
        return 1
    missed = [t for t in results["targets"] if t["status"] == "MISS"]
    if missed and not args.quick:  # a quick run's small N says nothing about speed
        return 1
    return 0


def _gcc(native_bin: Path | None) -> str | None:
    if native_bin is None:
        return None
    from benchmarks import native

    return native.compiler_version()
