#!/usr/bin/env python3
"""Run a real Apache Kafka 4.x broker (KRaft mode, 127.0.0.1) from Maven Central jars.

No Kafka distribution, no Docker: ``fetch`` resolves ``org.apache.kafka:kafka_2.13`` and its
runtime class path (plus an SLF4J 2 -> log4j2 binding) with Maven into a cache outside the
repository, and the nodes run as ``java -cp <jars> kafka.Kafka server.properties``.

CLI (the plaintext bootstrap address is always the LAST line of stdout of ``start``/``status``)::

    python3 scripts/kafka_harness.py fetch  [--no-cds]
    python3 scripts/kafka_harness.py start  [--nodes N] [--state-dir DIR] [--timeout S] [--security]
    python3 scripts/kafka_harness.py status [--state-dir DIR]
    python3 scripts/kafka_harness.py stop   [--state-dir DIR] [--timeout S]

Python API (what a pytest session fixture uses)::

    from kafka_harness import KafkaCluster
    with KafkaCluster(nodes=1) as cluster:
        cluster.bootstrap_servers          # "127.0.0.1:PORT[,...]"
        cluster.stop_node(2); cluster.start_node(2)   # node ids are 1..nodes

    cluster = KafkaCluster(nodes=3).start()  # or without ``with``; ``cluster.stop()`` later
    cluster = KafkaCluster.attach(state_dir)  # a cluster the CLI started (security included)

Security (``KafkaCluster(security=True)``, ``start --security``), for tests of bad
credentials, wrong CAs and missing permissions. Every node gets a ``SASL_SSL`` listener next
to ``PLAINTEXT``, which stays ``bootstrap_servers``, the inter-broker and (with CONTROLLER)
the controller listener, so plaintext clients see no difference::

    cluster.sasl_ssl_bootstrap_servers   # "127.0.0.1:PORT[,...]", one SASL_SSL port per node
    cluster.ca_location                  # Path: PEM of the CA that signed the brokers' cert
    cluster.wrong_ca_location            # Path: PEM of an unrelated CA (TLS handshake fails)
    cluster.client_properties(user="alice", password=None, *, ca_location=None)
        # -> dict[str, str] for librdkafka: bootstrap.servers (SASL_SSL), security.protocol,
        #    sasl.mechanisms=SCRAM-SHA-512, sasl.username/password (the real one unless
        #    given), ssl.ca.location, ssl.endpoint.identification.algorithm=https
    cluster.security                     # all of the above as one ClusterSecurity object

* SCRAM-SHA-512 users (``SECURITY_USERS``) are in the metadata from the storage format on:
  ``alice``/``alice-secret`` (ACLs: ALL on topic ``*``, group ``*``, transactional id ``*``
  and the cluster), ``mallory``/``mallory-secret`` (no ACL: produce gets
  TOPIC_AUTHORIZATION_FAILED, a consumer GROUP_AUTHORIZATION_FAILED) and ``admin``/
  ``admin-secret`` (a super user). They come from ``StorageTool format --add-scram
  'SCRAM-SHA-512=[name=alice,password=alice-secret]'``, run once into a second cached format
  template (or for every node with ``format_with_tool=True``); readiness checks they exist.
* TLS: at every start, ``openssl`` writes a fresh throw-away CA, a broker certificate (EC
  P-256, SAN ``IP:127.0.0.1``, ``DNS:localhost``; one for all nodes) and an unrelated second
  CA into ``<state dir>/tls/`` (~40 ms); the broker reads it as a PEM keystore. No client
  certificates (``ssl.client.auth=none``).
* Authorization: ``StandardAuthorizer``, ``allow.everyone.if.no.acl.found=false``,
  ``super.users=User:ANONYMOUS;User:admin`` (ANONYMOUS is every PLAINTEXT and controller
  connection: plaintext clients may still do anything). alice's ACLs are created after the
  probe, through the PLAINTEXT listener with AdminClient.create_acls.
* CLI: ``start --security`` and ``status`` print ``sasl_ssl: ADDR``, ``ca: PATH``,
  ``wrong_ca: PATH`` and ``users (SCRAM-SHA-512): name/password, ...`` lines before the
  plaintext bootstrap line; ``attach`` restores all of it from ``cluster.json``.
* What librdkafka 2.16 reports: see tests/test_harness_security.py (a wrong password is
  ``_AUTHENTICATION``, the wrong CA ``_SSL`` "certificate verify failed", both through
  error_cb and retried forever).

Ready means: every node answers metadata, a probe topic (``__eventstream_harness_probe``,
replication factor min(3, nodes)) is in sync and takes an idempotent acks=all write, and
an offset commit works (so the first consumer group of a test does not wait for
__consumer_offsets); with security also: alice's ACLs are created, every SCRAM user has a
credential, and alice gets metadata showing the probe topic through each node's SASL_SSL
listener (TLS, SCRAM and ACLs work on every node). Broker defaults: auto-created topics
have 1 partition and replication factor min(3, nodes); internal topics have 3 partitions;
group.initial.rebalance.delay.ms=0.
``broker_config={...}`` adds or overrides server.properties keys, e.g. for outage tests
``{"broker.session.timeout.ms": "3000", "broker.heartbeat.interval.ms": "500"}`` (a killed
node is noticed after 3 s instead of 9 s).

Times measured on 2 shared cores: warm ``fetch`` 0.3 s; cold ``fetch`` ~55 s (Maven ~30 s
with an empty ~/.m2, then ~20 s for the one-off CDS archive); ``start`` 1 node ~3-5 s,
3 nodes ~7-9 s; ``stop`` 1 node ~0.7 s, 3 nodes ~6 s (the last nodes lose their quorum
and wait for it before giving up). ``--security`` adds ~0.3 s to a start (1 node, median
of 4: 2.7 s plain, 3.0 s secure): TLS files 0.03 s, ACLs 0.05 s, and the first SASL_SSL metadata
request 0.17-0.26 s (TLS and SCRAM classes are not in the CDS archive); a fresh client's first
SASL_SSL metadata request to a warm broker takes ~0.1 s (plaintext ~0.06 s). The SCRAM
format template costs one StorageTool run (~1.2 s) the first time.

Files and environment:

* ``EVENTSTREAM_KAFKA_CACHE``: cache root (default ``$XDG_CACHE_HOME/eventstream`` or
  ``~/.cache/eventstream``). Jars go to ``<root>/kafka-<version>/lib`` (complete once
  ``lib/.complete`` exists); ``<root>/kafka-<version>/`` also keeps storage-format templates
  (``format-template/``: plain, and ``scram-<digest>/`` with the SCRAM users) and a
  class-data-sharing (AppCDS) archive that halves JVM start-up.
* ``EVENTSTREAM_KAFKA_STATE``: the CLI's default state dir (default ``<root>/run/default``).
  The Python API uses a fresh temporary dir unless given one. ``stop`` removes it. It holds
  ``cluster.json`` (ports, pids and, with security, the SASL_SSL ports, users and TLS dir:
  what ``attach`` reads), ``node-N/`` (config, data, logs) and, with security, ``tls/``.
* ``EVENTSTREAM_KAFKA_JVM_OPTS``: extra JVM flags appended after the defaults (later wins,
  e.g. ``-XX:TieredStopAtLevel=4`` to get the C2 compiler back for throughput benchmarks).
* ``JAVA_HOME``: the JVM to use (default: ``java`` on PATH). Kafka 4 needs Java 17+.

Process lifetime: every node is its own process group (``start_new_session``) and writes to
files in the state dir only. With the Python API (``die_with_parent=True``, the default) each
JVM gets ``PR_SET_PDEATHSIG=SIGKILL``: if the thread that started it dies (the process is
killed, even with SIGKILL) the kernel kills the JVM; its state dir is then left behind in the
temp dir. A normal interpreter exit stops and cleans running clusters through ``atexit``;
the context manager and ``stop()`` always do. Beware: the death signal follows the *thread*
that launched the JVM, so start clusters from a long-lived thread (pytest fixtures run on the
main thread). The CLI ``start`` detaches: its nodes run until ``stop``.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

KAFKA_VERSION = "4.3.1"
"""The pinned Apache Kafka release (``org.apache.kafka:kafka_2.13``)."""
LOG4J_VERSION = "2.25.3"
SLF4J_VERSION = "2.0.17"

POM_PATH = Path(__file__).resolve().parent / "kafka" / "pom.xml"
PROBE_TOPIC = "__eventstream_harness_probe"
DEFAULT_READY_TIMEOUT = 90.0
DEFAULT_STOP_TIMEOUT = 10.0
DEFAULT_HEAP = "512m"
STATE_FILE = "cluster.json"
_STATE_FORMAT = 1  # security adds optional keys only: older harnesses still read the file

SCRAM_MECHANISM = "SCRAM-SHA-512"
SECURITY_USERS: Mapping[str, str] = {
    "admin": "admin-secret",  # a super user, like ANONYMOUS on the PLAINTEXT listeners
    "alice": "alice-secret",  # ALL on every topic, group, transactional id and the cluster
    "mallory": "mallory-secret",  # authenticates, has no ACL: every request is denied
}
"""The SCRAM users of a ``security=True`` cluster and their passwords (throw-away values)."""
SUPER_USERS = ("User:ANONYMOUS", "User:admin")
ALLOWED_USER = "alice"
TLS_DIR = "tls"
"""Under the state dir: ``ca.pem``, ``wrong-ca.pem``, ``broker.pem`` (key + chain), keys."""

# Measured on 2 cores (1 node, time to a metadata answer): plain 4.4 s, +SerialGC 3.9 s,
# +TieredStopAtLevel=1 3.3 s, + the AppCDS archive 1.6 s. C1-only code is slower at peak,
# which a test broker does not reach; EVENTSTREAM_KAFKA_JVM_OPTS can undo it.
_JVM_TUNING = (
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "-Xshare:auto",
    "-Djava.awt.headless=true",
    "-XX:+ExitOnOutOfMemoryError",
)

_LOG4J2_PROPERTIES = """\
# Written by scripts/kafka_harness.py: WARN and up, plus the start/stop lines of the server.
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = FILE
logger.raftserver.name = kafka.server.KafkaRaftServer
logger.raftserver.level = INFO
"""


class KafkaHarnessError(RuntimeError):
    """Fetching, starting or stopping the broker failed (the message says why)."""


def _log(msg: str) -> None:
    print(f"kafka_harness: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- cache / fetch


def cache_root() -> Path:
    """The cache root: ``$EVENTSTREAM_KAFKA_CACHE`` or ``~/.cache/eventstream``."""
    env = os.environ.get("EVENTSTREAM_KAFKA_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "eventstream").resolve()


def kafka_home(version: str = KAFKA_VERSION) -> Path:
    """``<cache root>/kafka-<version>``: holds ``lib/``, the format template, CDS archives."""
    return cache_root() / f"kafka-{version}"


def default_state_dir() -> Path:
    """The CLI's state dir: ``$EVENTSTREAM_KAFKA_STATE`` or ``<cache root>/run/default``."""
    env = os.environ.get("EVENTSTREAM_KAFKA_STATE")
    return Path(env).expanduser().resolve() if env else cache_root() / "run" / "default"


def java_executable() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise KafkaHarnessError("no java on PATH (Kafka 4 needs Java 17+); set JAVA_HOME")
    return found


def _java_key(java: str) -> str:
    """Identifies one JVM build: a CDS archive only works with the JVM that dumped it."""
    real = Path(java).resolve()
    st = real.stat()
    return hashlib.sha256(f"{real}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive flock: parallel test workers fetch once, the others wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass(frozen=True)
class KafkaDist:
    """A fetched Kafka class path and what ``start`` needs from the cache."""

    version: str
    home: Path
    jars: tuple[Path, ...]
    java: str
    bootstrap_checkpoint: Path | None = None
    cds_archive: Path | None = None

    @property
    def lib(self) -> Path:
        return self.home / "lib"

    @property
    def classpath(self) -> str:
        # An explicit, sorted list rather than 'lib/*': the CDS archive needs the same order.
        return os.pathsep.join(str(j) for j in self.jars)


def _pom_digest(version: str) -> str:
    text = POM_PATH.read_bytes()
    pins = f"{version}:{LOG4J_VERSION}:{SLF4J_VERSION}".encode()
    return hashlib.sha256(text + pins).hexdigest()


def _read_marker(home: Path, version: str) -> tuple[Path, ...] | None:
    marker = home / "lib" / ".complete"
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if data.get("version") != version or data.get("pom") != _pom_digest(version):
        return None
    jars = tuple(home / "lib" / name for name in data.get("jars", []))
    if not jars or not all(j.is_file() for j in jars):
        return None
    return jars


def _mvn_copy_dependencies(home: Path, version: str) -> tuple[Path, ...]:
    mvn = shutil.which("mvn")
    if not mvn:
        raise KafkaHarnessError("mvn not found: install Maven (apt-get install maven)")
    home.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="lib.tmp-", dir=home))
    try:
        with tempfile.TemporaryDirectory(prefix="eventstream-mvn-") as work:
            # Run from a temp copy of the pom so that Maven leaves nothing in the repository.
            shutil.copy2(POM_PATH, Path(work) / "pom.xml")
            cmd = [
                mvn,
                "-q",
                "-B",
                "-f",
                str(Path(work) / "pom.xml"),
                "dependency:copy-dependencies",
                f"-Dkafka.version={version}",
                f"-Dlog4j.version={LOG4J_VERSION}",
                f"-Dslf4j.version={SLF4J_VERSION}",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={staging}",
            ]
            res = subprocess.run(
                cmd,
                cwd=work,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                check=False,
            )
        if res.returncode != 0:
            raise KafkaHarnessError(
                f"mvn failed ({res.returncode}) resolving kafka_2.13:{version}:\n"
                + _tail_text(res.stdout + res.stderr, 40)
            )
        names = sorted(p.name for p in staging.glob("*.jar"))
        if f"kafka_2.13-{version}.jar" not in names:
            raise KafkaHarnessError(f"mvn ran but kafka_2.13-{version}.jar is missing")
        slf4j = [n for n in names if n.startswith("slf4j-api-")]
        if slf4j != [f"slf4j-api-{SLF4J_VERSION}.jar"]:
            # slf4j-api 1.7 cannot see the SLF4J 2 provider: the broker would log nowhere.
            raise KafkaHarnessError(f"unexpected slf4j-api on the class path: {slf4j}")
        lib = home / "lib"
        if lib.exists():
            shutil.rmtree(lib)
        staging.rename(lib)
        marker = {"version": version, "pom": _pom_digest(version), "jars": names}
        (lib / ".complete").write_text(json.dumps(marker, indent=1) + "\n")
        return tuple(lib / n for n in names)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _scram_args(users: Mapping[str, str]) -> list[str]:
    """StorageTool's ``--add-scram 'SCRAM-SHA-512=[name=alice,password=alice-secret]'``, one per
    user (syntax as ``kafka-storage format --help`` of 4.3.1 shows it)."""
    args: list[str] = []
    for name, password in sorted(users.items()):
        for value in (name, password):
            if not value or not all(c.isalnum() or c in "._-" for c in value):
                raise ValueError(f"SCRAM user names and passwords are [A-Za-z0-9._-]+: {value!r}")
        args += ["--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={password}]"]
    return args


def _storage_format(
    java: str,
    classpath: str,
    config: Path,
    cluster_id: str,
    jvm_opts: Sequence[str],
    extra_args: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    out = open(config.parent / "format.log", "wb")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            [
                java,
                *jvm_opts,
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "--cluster-id",
                cluster_id,
                "--config",
                str(config),
                *extra_args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    finally:
        out.close()


def _scram_template_path(home: Path, users: Mapping[str, str]) -> Path:
    """Where the format template with these SCRAM users goes (one per set of credentials)."""
    key = hashlib.sha256(json.dumps(_scram_args(users)).encode()).hexdigest()[:12]
    return home / "format-template" / f"scram-{key}" / "bootstrap.checkpoint"


def _build_format_template(
    home: Path, java: str, classpath: str, *, scram_users: Mapping[str, str] | None = None
) -> Path:
    """Format one throw-away node with StorageTool and keep its ``bootstrap.checkpoint``.

    With static ``controller.quorum.voters`` (kraft.version 0) StorageTool writes exactly two
    files per node: ``meta.properties`` (version, node.id, directory.id, cluster.id) and
    ``bootstrap.checkpoint`` (feature levels of this release: no ids, no ports). Copying the
    latter and writing the former saves one JVM start (~1.2 s) per node and start; any other
    layout makes us fall back to running StorageTool for every node.

    With ``scram_users`` the checkpoint also holds their ``UserScramCredentialRecord``s
    (``--add-scram``: name, salt, salted password, iterations; no cluster id either), so a
    node formatted from it starts with those users; it is kept beside the plain one.
    """
    if scram_users:
        target = _scram_template_path(home, scram_users)
        extra_args = _scram_args(scram_users)
    else:
        target = home / "format-template" / "bootstrap.checkpoint"
        extra_args = []
    with tempfile.TemporaryDirectory(prefix="format-", dir=home) as tmp:
        node = _NodeSpec(node_id=1, port=1, controller_port=2, dir=Path(tmp))
        node.dir.mkdir(parents=True, exist_ok=True)
        node.config_path.write_text(_server_properties(node, [node], extra={}), encoding="utf-8")
        proc = _storage_format(
            java, classpath, node.config_path, _random_kafka_uuid(), _JVM_TUNING, extra_args
        )
        if proc.wait(120) != 0:
            raise KafkaHarnessError(
                "StorageTool format failed:\n" + _tail_file(node.dir / "format.log", 30)
            )
        files = sorted(p.name for p in node.data_dir.iterdir())
        meta = _read_properties(node.data_dir / "meta.properties")
        if files != ["bootstrap.checkpoint", "meta.properties"] or set(meta) != {
            "version",
            "node.id",
            "directory.id",
            "cluster.id",
        }:
            raise KafkaHarnessError(f"unexpected storage layout {files} / {sorted(meta)}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(node.data_dir / "bootstrap.checkpoint", target.with_suffix(".tmp"))
        target.with_suffix(".tmp").rename(target)
    return target


def _build_cds_archive(dist: KafkaDist, archive: Path) -> None:
    """Start one node with -XX:ArchiveClassesAtExit, exercise it, stop it: the JVM dumps
    the classes it loaded. Later JVMs map them instead of loading ~5000 classes again."""
    tmp = archive.with_name(archive.name + ".tmp")
    tmp.unlink(missing_ok=True)
    cluster = KafkaCluster(
        nodes=1,
        dist=dist,
        use_cds=False,
        jvm_opts=[f"-XX:ArchiveClassesAtExit={tmp}"],
        die_with_parent=True,
    )
    try:
        cluster.start()
        cluster._exercise()
    finally:
        cluster.stop(timeout=120.0)  # dumping the archive takes a few seconds at exit
    if not tmp.is_file() or tmp.stat().st_size == 0:
        raise KafkaHarnessError("the JVM wrote no CDS archive")
    tmp.rename(archive)


def fetch(
    version: str = KAFKA_VERSION, *, build_cds: bool = True, verbose: bool = False
) -> KafkaDist:
    """Make sure the cache holds everything ``start`` needs; return it. Idempotent.

    1. the jars (``mvn dependency:copy-dependencies``; skipped when ``lib/.complete`` matches),
    2. a storage-format template made by ``kafka.tools.StorageTool``,
    3. an AppCDS archive for the current JVM (optional: a failure only costs start-up time).
    """
    home = kafka_home(version)
    java = java_executable()
    with _file_lock(home.parent / f".kafka-{version}.lock"):
        jars = _read_marker(home, version)
        if jars is None:
            _log(f"resolving kafka_2.13:{version} with Maven into {home / 'lib'}")
            t0 = time.monotonic()
            jars = _mvn_copy_dependencies(home, version)
            _log(f"fetched {len(jars)} jars in {time.monotonic() - t0:.1f} s")
        elif verbose:
            _log(f"cached: {home / 'lib'} ({len(jars)} jars)")
        dist = KafkaDist(version=version, home=home, jars=jars, java=java)

        checkpoint: Path | None = home / "format-template" / "bootstrap.checkpoint"
        if checkpoint is not None and not checkpoint.is_file():
            try:
                checkpoint = _build_format_template(home, java, dist.classpath)
            except KafkaHarnessError as exc:
                _log(f"no format template ({exc}); StorageTool will format every node")
                checkpoint = None
        dist = KafkaDist(
            version=version,
            home=home,
            jars=jars,
            java=java,
            bootstrap_checkpoint=checkpoint,
        )

        # Valid for one JVM build and one lib/ (a re-fetch rewrites the marker).
        marker_mtime = (home / "lib" / ".complete").stat().st_mtime_ns
        key = _java_key(java) + "-" + hashlib.sha256(str(marker_mtime).encode()).hexdigest()[:8]
        archive = home / "cds" / f"kafka-{key}.jsa"
        failed = archive.with_suffix(".failed")  # retried after a day (or delete it)
        with contextlib.suppress(OSError):
            if time.time() - failed.stat().st_mtime > 86400:
                failed.unlink()
        if not archive.is_file() and build_cds and not failed.exists():
            archive.parent.mkdir(parents=True, exist_ok=True)
            _log("building the class-data-sharing archive (once per JVM and lib/)")
            t0 = time.monotonic()
            try:
                _build_cds_archive(dist, archive)
                for old in archive.parent.glob(f"kafka-{_java_key(java)}-*.jsa"):
                    if old != archive:
                        old.unlink(missing_ok=True)  # made for an older lib/
                _log(f"CDS archive built in {time.monotonic() - t0:.1f} s")
            except KafkaHarnessError as exc:
                failed.write_text(str(exc))
                _log(f"no CDS archive ({exc}); JVMs start without it")
        return KafkaDist(
            version=version,
            home=home,
            jars=jars,
            java=java,
            bootstrap_checkpoint=checkpoint,
            cds_archive=archive if archive.is_file() else None,
        )


# --------------------------------------------------------------------------- security


def scram_format_template(dist: KafkaDist, users: Mapping[str, str]) -> Path | None:
    """The cached format template that also holds ``users``' SCRAM credentials, made on first
    use (one StorageTool run, ~1.3 s). None where the plain template is unavailable or this
    one cannot be made: then StorageTool formats every node with ``--add-scram`` instead."""
    if dist.bootstrap_checkpoint is None:
        return None
    target = _scram_template_path(dist.home, users)
    if target.is_file():
        return target
    with _file_lock(dist.home.parent / f".kafka-{dist.version}.lock"):
        if target.is_file():
            return target
        try:
            return _build_format_template(dist.home, dist.java, dist.classpath, scram_users=users)
        except KafkaHarnessError as exc:
            _log(f"no SCRAM format template ({exc}); StorageTool will format every node")
            return None


_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
_CA_EXTENSIONS = (
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
)


def make_tls_files(tls_dir: Path) -> None:
    """Write a throw-away CA (``ca.pem``, ``ca.key``), a broker certificate it signs (SAN
    ``IP:127.0.0.1``, ``DNS:localhost``) together with its key and the CA as Kafka's PEM
    keystore (``broker.pem``), and a second, unrelated CA (``wrong-ca.pem``) for tests of a
    client that trusts the wrong CA. EC P-256 keys, ``openssl req -x509`` (OpenSSL 3): three
    openssl runs, ~40 ms in all. Valid for 30 days from now."""
    openssl = shutil.which("openssl")
    if not openssl:
        raise KafkaHarnessError("security=True needs openssl (OpenSSL 3) on PATH")
    tls_dir.mkdir(parents=True, exist_ok=True)
    tls_dir.chmod(0o700)

    def req(*args: str | Path) -> None:
        cmd = [openssl, "req", "-x509", "-days", "30", *_EC_KEY, *map(str, args)]
        res = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
        )
        if res.returncode != 0:
            raise KafkaHarnessError(
                f"{' '.join(cmd)} failed ({res.returncode}):\n{_tail_text(res.stderr, 10)}"
            )

    ca, ca_key = tls_dir / "ca.pem", tls_dir / "ca.key"
    broker_crt, broker_key = tls_dir / "broker.crt", tls_dir / "broker.key"
    req("-keyout", ca_key, "-out", ca, "-subj", "/CN=eventstream harness CA", *_CA_EXTENSIONS)
    req(
        "-CA",
        ca,
        "-CAkey",
        ca_key,
        "-keyout",
        broker_key,
        "-out",
        broker_crt,
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=IP:127.0.0.1,DNS:localhost",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-addext",
        "extendedKeyUsage=serverAuth",
    )
    req(
        "-keyout",
        tls_dir / "wrong-ca.key",
        "-out",
        tls_dir / "wrong-ca.pem",
        "-subj",
        "/CN=eventstream harness wrong CA",
        *_CA_EXTENSIONS,
    )
    # Kafka's PEM keystore file: an unencrypted PKCS#8 key, then the chain (leaf first).
    keystore = tls_dir / "broker.pem"
    keystore.write_text(
        broker_key.read_text() + broker_crt.read_text() + ca.read_text(), encoding="ascii"
    )
    keystore.chmod(0o600)


@dataclass(frozen=True)
class ClusterSecurity:
    """How to reach the SASL_SSL listeners of a ``security=True`` cluster.

    ``client_properties(user, password, ca_location=...)`` gives librdkafka (confluent-kafka)
    settings for a SCRAM user over SASL_SSL, ``bootstrap.servers`` included; merge your own
    (``error_cb``, ``group.id``, ...) into them.
    """

    bootstrap_servers: str
    """``127.0.0.1:PORT[,...]``: the SASL_SSL listener of every node."""
    ca_location: Path
    """PEM of the CA that signed the brokers' certificate."""
    wrong_ca_location: Path
    """PEM of an unrelated CA: a client that trusts only it fails the TLS handshake."""
    users: Mapping[str, str] = field(default_factory=lambda: dict(SECURITY_USERS))
    """SCRAM user name -> password."""
    mechanism: str = SCRAM_MECHANISM

    def client_properties(
        self,
        user: str = ALLOWED_USER,
        password: str | None = None,
        *,
        ca_location: str | os.PathLike[str] | None = None,
    ) -> dict[str, str]:
        """librdkafka properties for ``user`` over SASL_SSL with SCRAM-SHA-512: the user's
        real password unless ``password`` is given (any user name works then), the cluster's
        CA unless ``ca_location`` is given. Host names are verified (``https``): the broker
        certificate's SAN holds 127.0.0.1 and localhost."""
        if password is None:
            try:
                password = self.users[user]
            except KeyError:
                raise KeyError(
                    f"no SCRAM user {user!r} (users: {', '.join(sorted(self.users))}); "
                    "pass password= for a user that does not exist"
                ) from None
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": self.mechanism,
            "sasl.username": user,
            "sasl.password": password,
            "ssl.ca.location": str(ca_location if ca_location is not None else self.ca_location),
            "ssl.endpoint.identification.algorithm": "https",
        }


# --------------------------------------------------------------------------- cluster


def _random_kafka_uuid() -> str:
    """Like org.apache.kafka.common.Uuid.randomUuid().toString(): 22 base64url chars."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-") and text not in (
            "AAAAAAAAAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAAAAAAAAQ",
        ):
            return text


_TEMP_PREFIX = "eventstream-kafka-"


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _sweep_orphaned_state_dirs(root: Path | None = None) -> None:
    """Delete temp state dirs (in ``root``, default the system's temp dir) whose owner died
    without cleaning up (e.g. SIGKILLed pytest: its nodes died with it through
    PR_SET_PDEATHSIG, their data stayed)."""
    for sd in (root or Path(tempfile.gettempdir())).glob(_TEMP_PREFIX + "*"):
        try:
            data = json.loads((sd / STATE_FILE).read_text())
            owner = data.get("owner_pid")
            if not isinstance(owner, int) or _pid_alive(owner):
                continue
            if any(
                _pid_is_our_node(n["pid"], Path(n["dir"]) / "server.properties")
                for n in data["nodes"]
                if n.get("pid")
            ):
                continue
        except (OSError, ValueError, KeyError, TypeError):
            continue
        shutil.rmtree(sd, ignore_errors=True)


def _free_ports(count: int) -> list[int]:
    """Ports the kernel hands out now; all sockets are held until all are chosen."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _read_properties(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def _tail_text(text: str, lines: int) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def _tail_file(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return f"(no {path.name})"
    return _tail_text(text, lines) or f"({path.name} is empty)"


@dataclass
class _NodeSpec:
    node_id: int
    port: int
    controller_port: int
    dir: Path
    pid: int | None = None
    sasl_ssl_port: int | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def config_path(self) -> Path:
        return self.dir / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        return self.dir / "server.log"

    @property
    def out_path(self) -> Path:
        return self.dir / "jvm.out"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_ssl_address(self) -> str:
        if self.sasl_ssl_port is None:
            raise KafkaHarnessError(f"node {self.node_id} has no SASL_SSL listener")
        return f"127.0.0.1:{self.sasl_ssl_port}"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "node_id": self.node_id,
            "port": self.port,
            "controller_port": self.controller_port,
            "dir": str(self.dir),
            "pid": self.pid,
        }
        if self.sasl_ssl_port is not None:
            data["sasl_ssl_port"] = self.sasl_ssl_port
        return data


def _security_properties(node: _NodeSpec, tls_dir: Path) -> dict[str, str]:
    """A SASL_SSL listener (SCRAM-SHA-512 over TLS) beside PLAINTEXT, which stays the
    inter-broker listener and, with the controller listener, keeps User:ANONYMOUS, a super
    user; everyone else needs an ACL (StandardAuthorizer, no ACL means deny)."""
    return {
        "listeners": f"PLAINTEXT://127.0.0.1:{node.port},"
        f"SASL_SSL://127.0.0.1:{node.sasl_ssl_port},"
        f"CONTROLLER://127.0.0.1:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port},"
        f"SASL_SSL://127.0.0.1:{node.sasl_ssl_port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,"
        "CONTROLLER:PLAINTEXT",
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "listener.name.sasl_ssl.ssl.keystore.type": "PEM",
        "listener.name.sasl_ssl.ssl.keystore.location": str(tls_dir / "broker.pem"),
        "listener.name.sasl_ssl.ssl.client.auth": "none",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": ";".join(SUPER_USERS),
    }


def _server_properties(
    node: _NodeSpec,
    all_nodes: Sequence[_NodeSpec],
    extra: Mapping[str, str],
    tls_dir: Path | None = None,
) -> str:
    n = len(all_nodes)
    rf = min(3, n)
    min_isr = min(2, rf)
    voters = ",".join(f"{x.node_id}@127.0.0.1:{x.controller_port}" for x in all_nodes)
    props: dict[str, str] = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(node.data_dir),
        "num.partitions": "1",
        "default.replication.factor": str(rf),
        "min.insync.replicas": "1",
        "auto.create.topics.enable": "true",
        "delete.topic.enable": "true",
        "offsets.topic.replication.factor": str(rf),
        "offsets.topic.num.partitions": "3",
        "transaction.state.log.replication.factor": str(rf),
        "transaction.state.log.min.isr": str(min_isr),
        "transaction.state.log.num.partitions": "3",
        "share.coordinator.state.topic.replication.factor": str(rf),
        "share.coordinator.state.topic.min.isr": str(min_isr),
        "share.coordinator.state.topic.num.partitions": "3",
        "group.initial.rebalance.delay.ms": "0",
        # 2 cores: fewer threads than the defaults (3 network, 8 io, 10 background).
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "background.threads": "4",
    }
    if node.sasl_ssl_port is not None and tls_dir is not None:
        props.update(_security_properties(node, tls_dir))
    props.update(extra)
    body = "".join(f"{k}={v}\n" for k, v in props.items())
    return f"# Written by scripts/kafka_harness.py for node {node.node_id} of {n}.\n{body}"


def _pid_is_our_node(pid: int, config_path: Path) -> bool:
    """True if pid is alive and still the JVM we started (not a recycled pid)."""
    if not _pid_alive(pid):
        return False  # includes zombies: PID 1 here may be slow to reap orphans
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    args = raw.split(b"\0")
    return b"kafka.Kafka" in args and str(config_path).encode() in args


_PR_SET_PDEATHSIG = 1
_prctl: Any = None


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """A preexec_fn that makes the kernel SIGKILL the child when its parent thread dies.

    libc is loaded here, in the parent: the child only makes one foreign call before exec.
    """
    global _prctl
    if sys.platform != "linux":
        return None
    if _prctl is None:
        import ctypes

        _prctl = ctypes.CDLL(None, use_errno=True).prctl

    sigkill = int(signal.SIGKILL)

    def preexec() -> None:
        _prctl(_PR_SET_PDEATHSIG, sigkill)

    return preexec


# Strong references: a started cluster stays reachable (and is stopped at interpreter exit)
# even if the caller drops it.
_LIVE: set[KafkaCluster] = set()


@atexit.register
def _stop_live_clusters() -> None:
    for cluster in list(_LIVE):
        with contextlib.suppress(Exception):
            cluster.stop()


class KafkaCluster:
    """A KRaft cluster of ``nodes`` combined broker+controller nodes on 127.0.0.1.

    ``start()`` returns self once the cluster is ready (see the module docstring) or raises
    KafkaHarnessError with the tail of the broker logs; ``stop()`` terminates the nodes and
    deletes the state dir (also after a failed or partial start). A context manager: enter
    starts (unless started), exit stops. Node ids are ``1..nodes``; ``stop_node(i)`` /
    ``start_node(i)`` take one node down and bring it back on the same ports and data.

    ``state_dir=None`` uses a fresh temp dir, in ``temp_root`` if given (e.g. a tmpfs, so
    that the brokers' data never waits for the disk). ``die_with_parent`` (default True) makes the
    kernel kill the JVMs when the starting thread dies. ``use_cds`` / ``format_with_tool``
    turn the two start-up shortcuts off; ``warm_group_coordinator=False`` skips the offset
    commit of the readiness probe. ``security=True`` adds a SASL_SSL listener to every node
    (SCRAM users, TLS files, ACLs: see the module docstring); ``cluster.security`` then
    says how to reach it.
    """

    def __init__(
        self,
        nodes: int = 1,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        temp_root: str | os.PathLike[str] | None = None,
        version: str = KAFKA_VERSION,
        heap: str = DEFAULT_HEAP,
        jvm_opts: Sequence[str] = (),
        broker_config: Mapping[str, str] | None = None,
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
        die_with_parent: bool = True,
        use_cds: bool = True,
        format_with_tool: bool = False,
        warm_group_coordinator: bool = True,
        security: bool = False,
        dist: KafkaDist | None = None,
    ) -> None:
        if nodes < 1:
            raise ValueError("nodes must be >= 1")
        self.nodes = nodes
        self.version = version
        self.heap = heap
        self.jvm_opts = list(jvm_opts)
        self.broker_config = dict(broker_config or {})
        self.ready_timeout = ready_timeout
        self.die_with_parent = die_with_parent
        self.use_cds = use_cds
        self.format_with_tool = format_with_tool
        self.warm_group_coordinator = warm_group_coordinator
        self.with_security = security
        """True if the nodes have a SASL_SSL listener (``security=True`` or the attached
        cluster's state says so)."""
        self._security: ClusterSecurity | None = None
        self._dist = dist
        self._given_state_dir = Path(state_dir).resolve() if state_dir is not None else None
        self._temp_root = Path(temp_root) if temp_root is not None else None
        self._state_dir: Path | None = None
        self._owns_state_dir = False
        self._nodes: list[_NodeSpec] = []
        self._cluster_id = ""
        self._started = False
        self._lock = threading.RLock()
        self.start_seconds = 0.0
        """Seconds the last successful ``start()`` took (fetch check included)."""
        self.phase_seconds: dict[str, float] = {}
        """When each phase of the last start/wait_ready ended, in s from its beginning."""
        self._t0 = 0.0

    # ------------------------------------------------------------------ public API

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:PORT[,127.0.0.1:PORT...]`` of all nodes."""
        if not self._nodes:
            raise KafkaHarnessError("cluster not started")
        return ",".join(n.address for n in self._nodes)

    @property
    def security(self) -> ClusterSecurity:
        """The SASL_SSL address, CA files, users and ``client_properties()`` of a cluster
        started with ``security=True``."""
        if self._security is None:
            raise KafkaHarnessError(
                "cluster not started" if not self._nodes else "cluster started without security"
            )
        return self._security

    @property
    def sasl_ssl_bootstrap_servers(self) -> str:
        """``127.0.0.1:PORT[,...]`` of every node's SASL_SSL listener."""
        return self.security.bootstrap_servers

    @property
    def ca_location(self) -> Path:
        """PEM file of the CA that signed the brokers' certificate."""
        return self.security.ca_location

    @property
    def wrong_ca_location(self) -> Path:
        """PEM file of an unrelated CA (a client trusting it fails the TLS handshake)."""
        return self.security.wrong_ca_location

    def client_properties(
        self,
        user: str = ALLOWED_USER,
        password: str | None = None,
        *,
        ca_location: str | os.PathLike[str] | None = None,
    ) -> dict[str, str]:
        """``self.security.client_properties(...)``: librdkafka settings for a SCRAM user
        over SASL_SSL (see ClusterSecurity.client_properties)."""
        return self.security.client_properties(user, password, ca_location=ca_location)

    @property
    def state_dir(self) -> Path:
        if self._state_dir is None:
            raise KafkaHarnessError("cluster not started")
        return self._state_dir

    @property
    def node_ids(self) -> list[int]:
        return [n.node_id for n in self._nodes]

    @property
    def cluster_id(self) -> str:
        return self._cluster_id

    def node_address(self, node_id: int) -> str:
        """``127.0.0.1:PORT`` of one node."""
        return self._node(node_id).address

    def log_path(self, node_id: int) -> Path:
        return self._node(node_id).log_path

    def log_tail(self, node_id: int, lines: int = 40) -> str:
        node = self._node(node_id)
        return (
            f"--- {node.log_path}\n{_tail_file(node.log_path, lines)}\n"
            f"--- {node.out_path}\n{_tail_file(node.out_path, lines // 2)}"
        )

    def is_node_running(self, node_id: int) -> bool:
        node = self._node(node_id)
        if node.proc is not None:
            return node.proc.poll() is None
        return node.pid is not None and _pid_is_our_node(node.pid, node.config_path)

    def running_node_ids(self) -> list[int]:
        return [n.node_id for n in self._nodes if self.is_node_running(n.node_id)]

    def start(self) -> Self:
        """Format, launch and wait until ready; on any failure stop everything and raise."""
        with self._lock:
            if self._started:
                raise KafkaHarnessError("cluster already started")
            self._started = True
            _LIVE.add(self)
            for attempt in (1, 2):
                try:
                    self._start_once()
                    return self
                except BaseException as exc:
                    bind_race = isinstance(exc, KafkaHarnessError) and (
                        "Address already in use" in str(exc) or "BindException" in str(exc)
                    )
                    self._teardown(DEFAULT_STOP_TIMEOUT)
                    if not (bind_race and attempt == 1):
                        self._started = False
                        _LIVE.discard(self)
                        raise
                    _LIVE.add(self)
                    _log("a port was taken between choosing and binding it; retrying")
            raise AssertionError("unreachable")

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """SIGTERM every node, SIGKILL what is left after ``timeout`` s, delete the state
        dir. Idempotent, and safe after a failed or partial ``start``."""
        with self._lock:
            self._teardown(timeout)
            self._started = False
            _LIVE.discard(self)

    def stop_node(
        self, node_id: int, *, kill: bool = False, timeout: float = DEFAULT_STOP_TIMEOUT
    ) -> None:
        """Stop one node, keeping its data: SIGTERM (controlled shutdown) or, with ``kill``,
        SIGKILL (a crash). Returns when the process is gone."""
        node = self._node(node_id)
        self._signal_nodes([node], signal.SIGKILL if kill else signal.SIGTERM, timeout)
        self._write_state()

    def start_node(self, node_id: int, *, timeout: float | None = None) -> None:
        """Restart a stopped node on its old ports and data; wait until it is registered
        again and back in the ISR of the probe topic."""
        node = self._node(node_id)
        if self.is_node_running(node_id):
            raise KafkaHarnessError(f"node {node_id} is running")
        self._launch(node)
        self._write_state()
        self.wait_ready(timeout)

    def freeze_node(self, node_id: int, frozen: bool = True) -> None:
        """SIGSTOP (or, ``frozen=False``, SIGCONT) a node's JVM: a frozen broker keeps its TCP
        connections open and answers nothing, as an overloaded or paused one does."""
        node = self._node(node_id)
        if node.pid is None or not self.is_node_running(node_id):
            raise KafkaHarnessError(f"node {node_id} is not running")
        os.kill(node.pid, signal.SIGSTOP if frozen else signal.SIGCONT)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until every running node answers metadata and the probe topic is writable
        with acks=all and fully in sync across running nodes."""
        self._t0 = time.monotonic()
        self.phase_seconds = {}
        deadline = self._t0 + (self.ready_timeout if timeout is None else timeout)
        running = [n for n in self._nodes if self.is_node_running(n.node_id)]
        self._wait_ready(running, deadline)

    def detach(self) -> None:
        """Forget the processes without stopping them (the CLI's ``start`` does this)."""
        with self._lock:
            _LIVE.discard(self)
            for n in self._nodes:
                n.proc = None  # dropped Popen objects do not kill anything

    @classmethod
    def attach(cls, state_dir: str | os.PathLike[str]) -> KafkaCluster:
        """Load a cluster that another process started into ``state_dir``."""
        path = Path(state_dir).resolve()
        try:
            data = json.loads((path / STATE_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise KafkaHarnessError(f"no cluster state in {path}: {exc}") from exc
        if data.get("format") != _STATE_FORMAT:
            raise KafkaHarnessError(f"unknown state format in {path / STATE_FILE}")
        self = cls(
            nodes=len(data["nodes"]), state_dir=path, version=data["version"], die_with_parent=False
        )
        self._state_dir = path
        self._owns_state_dir = bool(data.get("owns_state_dir"))
        self._cluster_id = data["cluster_id"]
        self._nodes = [
            _NodeSpec(
                node_id=n["node_id"],
                port=n["port"],
                controller_port=n["controller_port"],
                dir=Path(n["dir"]),
                pid=n["pid"],
                sasl_ssl_port=n.get("sasl_ssl_port"),
            )
            for n in data["nodes"]
        ]
        security = data.get("security")
        if security:
            self.with_security = True
            self._security = self._security_info(
                Path(security["tls_dir"]), dict(security["users"]), security["mechanism"]
            )
        self._started = True
        return self

    def __enter__(self) -> Self:
        if not self._started:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        boot = ",".join(n.address for n in self._nodes) or "-"
        return f"KafkaCluster(nodes={self.nodes}, bootstrap={boot!r}, started={self._started})"

    # ------------------------------------------------------------------ internals

    def _mark(self, phase: str) -> None:
        self.phase_seconds[phase] = round(time.monotonic() - self._t0, 3)

    def _node(self, node_id: int) -> _NodeSpec:
        for n in self._nodes:
            if n.node_id == node_id:
                return n
        raise KeyError(f"no node {node_id} (node ids: {self.node_ids})")

    def _start_once(self) -> None:
        t0 = self._t0 = time.monotonic()
        self.phase_seconds = {}
        dist = self._dist or fetch(self.version)  # the first time: mvn, CDS (~1 min)
        self._mark("fetch")
        self._dist = dist
        deadline = time.monotonic() + self.ready_timeout
        if self._given_state_dir is not None:
            sd = self._given_state_dir
            if (sd / STATE_FILE).exists():
                raise KafkaHarnessError(f"{sd} holds another cluster's state: stop it first")
            sd.mkdir(parents=True, exist_ok=True)
            self._owns_state_dir = not any(sd.iterdir())
        else:
            _sweep_orphaned_state_dirs(self._temp_root)
            sd = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=self._temp_root))
            self._owns_state_dir = True
        self._state_dir = sd
        (sd / "log4j2.properties").write_text(_LOG4J2_PROPERTIES, encoding="utf-8")
        per_node = 3 if self.with_security else 2
        ports = _free_ports(per_node * self.nodes)
        self._cluster_id = _random_kafka_uuid()
        self._nodes = [
            _NodeSpec(
                node_id=i + 1,
                port=ports[per_node * i],
                controller_port=ports[per_node * i + 1],
                dir=sd / f"node-{i + 1}",
                sasl_ssl_port=ports[per_node * i + 2] if self.with_security else None,
            )
            for i in range(self.nodes)
        ]
        tls_dir: Path | None = None
        if self.with_security:
            tls_dir = sd / TLS_DIR
            if tls_dir.exists():  # never reuse a CA: every cluster gets its own
                shutil.rmtree(tls_dir)
            make_tls_files(tls_dir)
            self._security = self._security_info(tls_dir, dict(SECURITY_USERS), SCRAM_MECHANISM)
            self._mark("tls files")
        for node in self._nodes:
            if node.dir.exists():  # left by a cluster that died without its cluster.json
                shutil.rmtree(node.dir)
            node.dir.mkdir(parents=True)
            node.config_path.write_text(
                _server_properties(node, self._nodes, self.broker_config, tls_dir),
                encoding="utf-8",
            )
        self._write_state()
        self._format(dist)
        self._mark("format")
        for node in self._nodes:
            self._launch(node)
        self._write_state()
        self._mark("launch")
        self._wait_ready(self._nodes, deadline)
        self.start_seconds = time.monotonic() - t0

    def _security_info(
        self, tls_dir: Path, users: dict[str, str], mechanism: str
    ) -> ClusterSecurity:
        return ClusterSecurity(
            bootstrap_servers=",".join(n.sasl_ssl_address for n in self._nodes),
            ca_location=tls_dir / "ca.pem",
            wrong_ca_location=tls_dir / "wrong-ca.pem",
            users=users,
            mechanism=mechanism,
        )

    def _format(self, dist: KafkaDist) -> None:
        # SCRAM users go into the bootstrap metadata either way: from a template made with
        # --add-scram, or by running StorageTool with --add-scram for every node.
        checkpoint = None if self.format_with_tool else dist.bootstrap_checkpoint
        if checkpoint is not None and self.with_security:
            checkpoint = scram_format_template(dist, SECURITY_USERS)
        if checkpoint is not None:
            for node in self._nodes:
                node.data_dir.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(checkpoint, node.data_dir / "bootstrap.checkpoint")
                (node.data_dir / "meta.properties").write_text(
                    "#\n#Written by scripts/kafka_harness.py\n"
                    f"node.id={node.node_id}\n"
                    f"directory.id={_random_kafka_uuid()}\n"
                    "version=1\n"
                    f"cluster.id={self._cluster_id}\n",
                    encoding="utf-8",
                )
            return
        flags = list(_JVM_TUNING)  # not self.jvm_opts: those are for the broker JVMs
        if self.use_cds and dist.cds_archive is not None:
            flags.append(f"-XX:SharedArchiveFile={dist.cds_archive}")
        procs = [
            (
                node,
                _storage_format(
                    dist.java,
                    dist.classpath,
                    node.config_path,
                    self._cluster_id,
                    flags,
                    _scram_args(SECURITY_USERS) if self.with_security else (),
                ),
            )
            for node in self._nodes
        ]
        for node, proc in procs:
            if proc.wait(120) != 0:
                raise KafkaHarnessError(
                    f"StorageTool format of node {node.node_id} failed:\n"
                    + _tail_file(node.dir / "format.log", 30)
                )

    def _jvm_flags(self, dist: KafkaDist) -> list[str]:
        flags = list(_JVM_TUNING)
        if self.use_cds and dist.cds_archive is not None:
            flags.append(f"-XX:SharedArchiveFile={dist.cds_archive}")
        flags += self.jvm_opts
        flags += os.environ.get("EVENTSTREAM_KAFKA_JVM_OPTS", "").split()
        return flags

    def _launch(self, node: _NodeSpec) -> None:
        if self._dist is None:  # an attached cluster restarting a node
            self._dist = fetch(self.version)
        dist = self._dist
        assert self._state_dir is not None
        cmd = [
            dist.java,
            f"-Xmx{self.heap}",
            *self._jvm_flags(dist),
            f"-Dkafka.logs.dir={node.dir}",
            f"-Dlog4j2.configurationFile={self._state_dir / 'log4j2.properties'}",
            "-cp",
            dist.classpath,
            "kafka.Kafka",
            str(node.config_path),
        ]
        with open(node.out_path, "ab") as out:
            node.proc = subprocess.Popen(
                cmd,
                cwd=node.dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_pdeathsig_preexec() if self.die_with_parent else None,
            )
        node.pid = node.proc.pid

    def _write_state(self) -> None:
        if self._state_dir is None:
            return
        data = {
            "format": _STATE_FORMAT,
            "version": self.version,
            "cluster_id": self._cluster_id,
            "bootstrap_servers": ",".join(n.address for n in self._nodes),
            "owns_state_dir": self._owns_state_dir,
            # The process whose death kills the nodes (PR_SET_PDEATHSIG), if any: once it is
            # gone, a temp state dir it left is garbage (see _sweep_orphaned_state_dirs).
            "owner_pid": os.getpid() if self.die_with_parent else None,
            "nodes": [n.to_json() for n in self._nodes],
        }
        if self._security is not None:
            data["security"] = {
                "tls_dir": str(self._security.ca_location.parent),
                "users": dict(self._security.users),
                "mechanism": self._security.mechanism,
                "sasl_ssl_bootstrap_servers": self._security.bootstrap_servers,
            }
        tmp = self._state_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        tmp.rename(self._state_dir / STATE_FILE)

    def _signal_nodes(self, nodes: Sequence[_NodeSpec], sig: int, timeout: float) -> None:
        """Send sig to the running nodes, wait up to timeout, then SIGKILL the rest."""
        live = [n for n in nodes if self.is_node_running(n.node_id)]
        for n in live:
            assert n.pid is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(n.pid, sig)
        deadline = time.monotonic() + timeout
        for n in live:
            if not self._wait_exit(n, deadline):
                with contextlib.suppress(ProcessLookupError):
                    assert n.pid is not None
                    os.kill(n.pid, signal.SIGKILL)
                self._wait_exit(n, time.monotonic() + 10)
        for n in nodes:
            if n.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    n.proc.wait(0)  # reap

    def _wait_exit(self, node: _NodeSpec, deadline: float) -> bool:
        while True:
            if node.proc is not None:
                try:
                    node.proc.wait(max(0.0, min(0.1, deadline - time.monotonic())))
                    return True
                except subprocess.TimeoutExpired:
                    pass
            elif not self.is_node_running(node.node_id):
                return True
            else:
                time.sleep(0.05)
            if time.monotonic() >= deadline:
                return not self.is_node_running(node.node_id)

    def _teardown(self, timeout: float) -> None:
        if self._nodes:
            self._signal_nodes(self._nodes, signal.SIGTERM, timeout)
        sd = self._state_dir
        if sd is not None:
            if self._owns_state_dir:
                shutil.rmtree(sd, ignore_errors=True)
            else:  # a user-given dir that held other files: remove only ours
                for n in self._nodes:
                    shutil.rmtree(n.dir, ignore_errors=True)
                for name in (STATE_FILE, "log4j2.properties"):
                    (sd / name).unlink(missing_ok=True)
                if self.with_security:
                    shutil.rmtree(sd / TLS_DIR, ignore_errors=True)
        self._nodes = []
        self._state_dir = None
        self._security = None

    def _check_alive(self, nodes: Sequence[_NodeSpec]) -> None:
        for n in nodes:
            if not self.is_node_running(n.node_id):
                code = n.proc.poll() if n.proc is not None else None
                raise KafkaHarnessError(
                    f"kafka node {n.node_id} exited (code {code}) before it was ready:\n"
                    + self.log_tail(n.node_id)
                )

    def _timeout(self, nodes: Sequence[_NodeSpec], what: str) -> KafkaHarnessError:
        tails = "\n".join(self.log_tail(n.node_id) for n in nodes)
        return KafkaHarnessError(f"kafka not ready: {what}\n{tails}")

    def _wait_ready(self, nodes: Sequence[_NodeSpec], deadline: float) -> None:
        # 1. every listener accepts TCP (stdlib, so librdkafka logs no refused connects).
        for n in nodes:
            while True:
                self._check_alive(nodes)
                try:
                    socket.create_connection(("127.0.0.1", n.port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise self._timeout(
                            nodes, f"node {n.node_id} never listened on {n.port}"
                        ) from None
                    time.sleep(0.05)
        try:
            from confluent_kafka import KafkaException  # noqa: F401
        except ImportError:
            _log("confluent_kafka missing: readiness checked by TCP only")
            return
        self._mark("listening")
        self._probe(nodes, deadline)
        if self._security is not None:
            self._probe_security(nodes, deadline)

    def _client_conf(self, nodes: Sequence[_NodeSpec]) -> dict[str, Any]:
        return {
            "bootstrap.servers": ",".join(n.address for n in nodes),
            "log_level": 0,  # no "connection refused" noise while nodes come and go
            "error_cb": lambda _err: None,
            "socket.connection.setup.timeout.ms": 2000,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
        }

    def _probe(self, nodes: Sequence[_NodeSpec], deadline: float) -> None:
        """2. metadata lists every node; 3. the probe topic (RF min(3, nodes)) exists and its
        ISR holds every running node; 4. an idempotent acks=all write to it is acknowledged;
        5. (``warm_group_coordinator``) an offset commit succeeds.

        On a new cluster, 4 and 5 each wait ~1 s on a client retry timer (the first
        InitProducerId gets COORDINATOR_LOAD_IN_PROGRESS until the broker has a producer-id
        block; the first FindCoordinator creates __consumer_offsets and gets
        COORDINATOR_NOT_AVAILABLE). Both are started right away and overlap with 2-3.
        """
        from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
        from confluent_kafka.admin import AdminClient
        from confluent_kafka.cimpl import NewTopic

        conf = self._client_conf(nodes)
        want = {n.node_id for n in nodes}
        rf = min(3, self.nodes)
        last = "no metadata yet"

        def remaining() -> float:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._timeout(nodes, last)
            return left

        # The idempotent producer asks for its producer id as soon as it exists.
        producer = Producer(
            {
                **conf,
                "acks": "all",
                "enable.idempotence": True,
                "message.timeout.ms": 10000,
                "linger.ms": 0,
            }
        )
        commit_done = threading.Event()
        stop_committing = threading.Event()
        commit_error: list[str] = []
        consumer: Any = None
        if self.warm_group_coordinator:
            consumer = Consumer({**conf, "group.id": PROBE_TOPIC, "enable.auto.commit": False})

            def commit_until_ok() -> None:
                try:
                    while time.monotonic() < deadline and not stop_committing.is_set():
                        try:
                            offsets = [TopicPartition(PROBE_TOPIC, 0, 0)]
                            consumer.commit(offsets=offsets, asynchronous=False)
                            commit_error.clear()
                            return
                        except KafkaException as exc:
                            commit_error[:] = [str(exc)]
                            time.sleep(0.1)
                finally:
                    commit_done.set()

            threading.Thread(target=commit_until_ok, name="kafka-probe-commit", daemon=True).start()
        else:
            commit_done.set()

        admin = AdminClient(conf)
        try:
            while True:
                self._check_alive(nodes)
                try:
                    md = admin.list_topics(timeout=min(2.0, remaining()))
                except KafkaException as exc:
                    last = f"metadata: {exc}"
                    continue
                if not want <= set(md.brokers):
                    last = f"registered brokers {sorted(md.brokers)}, want {sorted(want)}"
                    time.sleep(0.05)
                    continue
                topic = md.topics.get(PROBE_TOPIC)
                if topic is None or topic.error is not None:
                    fut = admin.create_topics(
                        [NewTopic(PROBE_TOPIC, 1, rf)], request_timeout=min(10.0, remaining())
                    )[PROBE_TOPIC]
                    try:
                        fut.result()
                    except KafkaException as exc:
                        err = exc.args[0]
                        if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                            last = f"create {PROBE_TOPIC}: {err}"
                            time.sleep(0.1)
                    continue
                parts = list(topic.partitions.values())
                if not parts or any(p.leader < 0 or not want <= set(p.isrs) for p in parts):
                    last = f"{PROBE_TOPIC} partitions not in sync: " + ", ".join(
                        f"leader={p.leader} isr={p.isrs}" for p in parts
                    )
                    time.sleep(0.1)
                    continue
                break
            self._mark("metadata+probe topic")

            result: list[Any] = []

            def on_delivery(err: Any, _msg: Any) -> None:
                result.append(err)

            while True:
                self._check_alive(nodes)
                result.clear()
                producer.produce(PROBE_TOPIC, b"ready", on_delivery=on_delivery)
                producer.flush(min(12.0, remaining()))
                if result and result[0] is None:
                    break
                last = f"probe write: {result[0] if result else 'no delivery report'}"
                time.sleep(0.1)
            self._mark("probe write")

            while not commit_done.wait(0.1):
                self._check_alive(nodes)
                last = f"probe offset commit: {commit_error or 'waiting'}"
                remaining()
            if commit_error:
                last = f"probe offset commit: {commit_error[0]}"
                raise self._timeout(nodes, last)
            if consumer is not None:
                self._mark("offset commit")
        finally:
            stop_committing.set()
            # A commit stuck on a dead cluster: leave its consumer to the daemon thread.
            if consumer is not None and commit_done.wait(5):
                consumer.close()

    def _probe_security(self, nodes: Sequence[_NodeSpec], deadline: float) -> None:
        """6. alice's ACLs exist (created as User:ANONYMOUS, a super user, through the
        PLAINTEXT listener; creating an existing ACL again is a no-op); 7. every SCRAM user
        has a credential; 8. through each running node's own SASL_SSL listener, alice gets
        metadata that shows her the probe topic: TLS, SCRAM and her ACLs work on that node."""
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported
            AclBinding,
            AclOperation,
            AclPermissionType,
            AdminClient,
            ResourcePatternType,
            ResourceType,
        )

        sec = self.security
        last = "creating ACLs"

        def remaining() -> float:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._timeout(nodes, last)
            return left

        admin = AdminClient(self._client_conf(nodes))
        principal = f"User:{ALLOWED_USER}"
        bindings = [
            AclBinding(
                rtype,
                name,
                ResourcePatternType.LITERAL,
                principal,
                "*",
                AclOperation.ALL,
                AclPermissionType.ALLOW,
            )
            for rtype, name in (
                (ResourceType.TOPIC, "*"),
                (ResourceType.GROUP, "*"),
                (ResourceType.TRANSACTIONAL_ID, "*"),
                (ResourceType.BROKER, "kafka-cluster"),  # BROKER is Kafka's CLUSTER type
            )
        ]
        pending = list(bindings)
        while pending:
            self._check_alive(nodes)
            futures = admin.create_acls(pending, request_timeout=min(10.0, remaining()))
            failed = []
            for binding, fut in futures.items():
                try:
                    fut.result()
                except KafkaException as exc:
                    failed.append(binding)
                    last = f"create ACL {binding}: {exc}"
            if failed:
                time.sleep(0.1)
            pending = failed
        self._mark("acls")

        users = sorted(sec.users)
        while True:
            self._check_alive(nodes)
            futs: dict[str, Any] = admin.describe_user_scram_credentials(  # type: ignore[assignment]
                users, request_timeout=min(10.0, remaining())
            )
            missing: list[str] = []
            retry: list[str] = []
            for user, fut in futs.items():
                try:
                    desc = fut.result()
                except KafkaException as exc:
                    err = exc.args[0]
                    bad = missing if err.code() == KafkaError.RESOURCE_NOT_FOUND else retry
                    bad.append(f"{user} ({err.name()}: {err.str()})")
                    continue
                mechanisms = {i.mechanism.name for i in desc.scram_credential_infos}
                if sec.mechanism.replace("-", "_") not in mechanisms:
                    missing.append(f"{user} (has {sorted(mechanisms)})")
            if missing:  # a harness bug, not a slow broker
                raise KafkaHarnessError(
                    f"no {sec.mechanism} credential after the storage format for "
                    + ", ".join(missing)
                )
            if not retry:
                break
            last = f"describe SCRAM credentials: {', '.join(retry)}"
            time.sleep(0.1)
        self._mark("scram users")

        for n in nodes:
            errors: list[str] = []
            conf: dict[str, Any] = {
                **self._client_conf([n]),
                **sec.client_properties(),
                "bootstrap.servers": n.sasl_ssl_address,  # only this node's listener
                "error_cb": lambda err, errors=errors: errors.append(str(err)),
            }
            client = AdminClient(conf)
            while True:
                self._check_alive(nodes)
                try:
                    md = client.list_topics(PROBE_TOPIC, timeout=min(2.0, remaining()))
                except KafkaException as exc:
                    last = f"{ALLOWED_USER} over SASL_SSL {n.sasl_ssl_address}: {exc}"
                    if errors:
                        last += f" (last client error: {errors[-1]})"
                    continue
                topic = md.topics.get(PROBE_TOPIC)
                if topic is not None and topic.error is None:
                    break
                last = (
                    f"{ALLOWED_USER} over SASL_SSL {n.sasl_ssl_address} sees {PROBE_TOPIC}: "
                    f"{topic.error if topic is not None else 'missing'}"
                )
                time.sleep(0.05)
        self._mark("sasl_ssl metadata")

    def _exercise(self) -> None:
        """Drive the common client paths once (used to train the CDS archive)."""
        from confluent_kafka import Consumer, Producer

        conf = self._client_conf(self._nodes)
        producer = Producer({**conf, "enable.idempotence": True, "acks": "all"})
        for i in range(100):
            producer.produce(PROBE_TOPIC, f"m{i}".encode(), headers=[("h", b"v")])
        producer.flush(30)
        consumer = Consumer(
            {
                **conf,
                "group.id": "eventstream-harness-warmup",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([PROBE_TOPIC])
        deadline = time.monotonic() + 30
        got = 0
        while got < 100 and time.monotonic() < deadline:
            msgs = consumer.consume(100, 1.0)
            got += sum(1 for m in msgs if m.error() is None)
        if got:
            consumer.commit(asynchronous=False)
        consumer.close()


# --------------------------------------------------------------------------- CLI


def _cmd_fetch(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    dist = fetch(args.version, build_cds=not args.no_cds, verbose=True)
    _log(f"ready in {time.monotonic() - t0:.1f} s: {dist.lib}")
    print(dist.lib)
    return 0


def _cmd_start(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir).resolve() if args.state_dir else default_state_dir()
    if (state_dir / STATE_FILE).exists():
        old = KafkaCluster.attach(state_dir)
        if old.running_node_ids():
            _log(f"already running in {state_dir} ({old.bootstrap_servers}); stop it first")
            return 1
        _log(f"cleaning up the dead cluster in {state_dir}")
        old.stop()
    cluster = KafkaCluster(
        nodes=args.nodes,
        state_dir=state_dir,
        version=args.version,
        ready_timeout=args.timeout,
        die_with_parent=False,
        security=args.security,
    )
    try:
        cluster.start()
    except KafkaHarnessError as exc:
        _log(str(exc))
        return 1
    cluster.detach()
    _log(f"{args.nodes} node(s) ready in {cluster.start_seconds:.1f} s; state in {state_dir}")
    _print_security(cluster)
    print(cluster.bootstrap_servers, flush=True)
    return 0


def _print_security(cluster: KafkaCluster) -> None:
    """The SASL_SSL lines of ``start``/``status`` (before the plaintext bootstrap line)."""
    if not cluster.with_security:
        return
    sec = cluster.security
    print(f"sasl_ssl: {sec.bootstrap_servers}")
    print(f"ca: {sec.ca_location}")
    print(f"wrong_ca: {sec.wrong_ca_location}")
    users = ", ".join(f"{u}/{p}" for u, p in sorted(sec.users.items()))
    print(f"users ({sec.mechanism}): {users}")


def _cmd_stop(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir).resolve() if args.state_dir else default_state_dir()
    if not (state_dir / STATE_FILE).exists():
        _log(f"nothing to stop in {state_dir}")
        return 0
    cluster = KafkaCluster.attach(state_dir)
    t0 = time.monotonic()
    cluster.stop(timeout=args.timeout)
    _log(f"stopped in {time.monotonic() - t0:.1f} s")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir).resolve() if args.state_dir else default_state_dir()
    if not (state_dir / STATE_FILE).exists():
        print("not running")
        return 1
    cluster = KafkaCluster.attach(state_dir)
    running = cluster.running_node_ids()
    if not running:
        print(f"not running (stale state in {state_dir})")
        return 1
    down = sorted(set(cluster.node_ids) - set(running))
    word = "running" if not down else f"degraded (nodes {down} down)"
    print(f"{word}: {len(cluster.node_ids)} node(s), state {state_dir}")
    _print_security(cluster)
    print(cluster.bootstrap_servers)
    return 0 if not down else 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kafka_harness.py",
        description=f"Run a real Apache Kafka {KAFKA_VERSION} (KRaft) on 127.0.0.1 from jars.",
    )
    parser.add_argument("--version", default=KAFKA_VERSION, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fetch", help="resolve the jars into the cache (idempotent)")
    p.add_argument("--no-cds", action="store_true", help="skip building the AppCDS archive")
    p.set_defaults(func=_cmd_fetch)
    p = sub.add_parser("start", help="start a cluster, print its bootstrap last, leave it running")
    p.add_argument(
        "--nodes", type=int, default=1, choices=range(1, 6), metavar="N", help="1 (default) or 3"
    )
    p.add_argument("--state-dir", help=f"default: {default_state_dir()}")
    p.add_argument(
        "--timeout", type=float, default=DEFAULT_READY_TIMEOUT, help="readiness deadline, s"
    )
    p.add_argument(
        "--security",
        action="store_true",
        help="add a SASL_SSL listener (SCRAM users alice/mallory/admin, TLS, ACLs) to every node",
    )
    p.set_defaults(func=_cmd_start)
    p = sub.add_parser("stop", help="stop the cluster and delete its data")
    p.add_argument("--state-dir", help=f"default: {default_state_dir()}")
    p.add_argument("--timeout", type=float, default=DEFAULT_STOP_TIMEOUT, help="SIGTERM grace, s")
    p.set_defaults(func=_cmd_stop)
    p = sub.add_parser("status", help="say whether it runs; bootstrap on the last line")
    p.add_argument("--state-dir", help=f"default: {default_state_dir()}")
    p.set_defaults(func=_cmd_status)
    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
    except KafkaHarnessError as exc:
        _log(str(exc))
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
