"""Fetch and run a real Apache Kafka (KRaft) on this machine.

``make run``, ``make kafka-up`` and the integration tests all need a broker,
and none of them may assume Docker or a pre-installed Kafka. So the project
fetches the broker itself: ``org.apache.kafka:kafka_2.13`` and its runtime
dependencies from Maven Central (with ``mvn``), cached per version under
``${XDG_CACHE_HOME:-~/.cache}/ves-streams/kafka/<version>/libs/``, and runs it
with ``java -cp 'libs/*' kafka.Kafka``. Only Java and Maven are required.

Three entry points:

* :func:`fetch_kafka` downloads once; later calls do not run Maven at all.
* :class:`KafkaCluster` runs N combined broker+controller nodes on free ports
  for tests and drills. Its processes die with the Python process that owns
  them, even when that process is killed.
* :func:`kafka_up` / :func:`kafka_down` / :func:`kafka_status` manage one
  detached broker on ``127.0.0.1:9092`` that outlives the command that
  started it (``make kafka-up`` / ``make kafka-down``).

Every failure a user can fix (no Java, no Maven, Maven failed, the broker did
not come up) is a :class:`KafkaLocalError` whose first line says what to do.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import concurrent.futures
import contextlib
import ctypes
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ves_streams import resources
from ves_streams.dev.kafka_security import MECHANISM, KafkaSecrets, client_env, make_secrets, write_client_env

__all__ = [
    "KAFKA_VERSIONS",
    "DEFAULT_KAFKA_VERSION",
    "TEST_JVM_OPTS",
    "SERVICE_JVM_OPTS",
    "KafkaLocalError",
    "MissingToolError",
    "KafkaFetchError",
    "KafkaStartError",
    "KafkaNode",
    "KafkaCluster",
    "LocalBroker",
    "cache_root",
    "kafka_dir",
    "is_fetched",
    "fetch_kafka",
    "free_ports",
    "wait_for_brokers",
    "default_run_dir",
    "kafka_up",
    "kafka_down",
    "kafka_status",
]

#: The Kafka versions the project pins and tests against (newest first).
KAFKA_VERSIONS: tuple[str, ...] = ("4.1.1", "3.9.1")
#: The broker ``make run``, ``make kafka-up`` and the tests use unless told otherwise.
DEFAULT_KAFKA_VERSION = "4.1.1"

#: JVM flags of one test node: small heap, serial GC and C1 only, which halves the
#: start of a 3-node cluster on two cores (15 s -> 8 s) at some cost in peak throughput.
TEST_JVM_OPTS: tuple[str, ...] = ("-Xmx512m", "-Xms256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
#: JVM flags of the long-running ``make kafka-up`` broker and of benchmarks: full JIT.
SERVICE_JVM_OPTS: tuple[str, ...] = ("-Xmx512m", "-Xms256m", "-XX:+UseSerialGC")

_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")
_MARKER = "fetch-complete.json"
_T = TypeVar("_T")


# --------------------------------------------------------------------------- errors


class KafkaLocalError(RuntimeError):
    """Something the user can fix: the first line of the message says what.

    ``detail`` (a log tail, Maven's output) is kept apart so a command line can
    print the one-line :attr:`summary` while tests show everything.
    """

    def __init__(self, summary: str, detail: str = "") -> None:
        self.summary = summary
        self.detail = detail
        super().__init__(f"{summary}\n{detail}" if detail else summary)


class MissingToolError(KafkaLocalError):
    """``java`` or ``mvn`` is not installed."""


class KafkaFetchError(KafkaLocalError):
    """Maven could not fetch the broker (network, unknown version)."""


class KafkaStartError(KafkaLocalError):
    """A broker process exited or did not answer clients in time."""


# --------------------------------------------------------------------------- fetch


def cache_root() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/ves-streams/kafka``, read at call time."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ves-streams" / "kafka"


def kafka_dir(version: str) -> Path:
    """The cache directory of one version (``libs/`` and the completion marker)."""
    _check_version(version)
    return cache_root() / version


def is_fetched(version: str) -> bool:
    """True when a complete fetch of ``version`` is cached (no network needed)."""
    home = kafka_dir(version)
    return (home / _MARKER).is_file() and (home / "libs").is_dir()


def _check_version(version: str) -> None:
    if not _VERSION_RE.match(version):
        raise KafkaLocalError(f"invalid Kafka version {version!r}: expected X.Y.Z, e.g. {DEFAULT_KAFKA_VERSION}")


def _major(version: str) -> int:
    return int(version.split(".", 1)[0])


def _logging_artifacts(version: str) -> list[tuple[str, str, str]]:
    """The SLF4J binding to add, since ``kafka_2.13``'s pom leaves the choice to the distribution.

    Both lines resolve ``slf4j-api`` 1.7.36, so the binding must be an SLF4J 1.x
    one: reload4j for 3.x (log4j 1 configuration), log4j2's ``log4j-slf4j-impl``
    for 4.x, which already brings ``log4j-core`` 2.24.3 (log4j2 configuration).
    """
    if _major(version) >= 4:
        return [
            ("org.apache.logging.log4j", "log4j-slf4j-impl", "2.24.3"),
            ("org.apache.logging.log4j", "log4j-core", "2.24.3"),
        ]
    return [("org.slf4j", "slf4j-reload4j", "1.7.36")]


def _pom(version: str) -> str:
    deps = [("org.apache.kafka", "kafka_2.13", version), *_logging_artifacts(version)]
    dependencies = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>"
        for g, a, v in deps
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.ves-streams</groupId>
  <artifactId>kafka-broker-fetch</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{dependencies}
  </dependencies>
</project>
"""


def _require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingToolError(f"{name} not found on PATH: {hint}")
    return path


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    return _require_tool("java", "install a Java 17+ runtime (apt-get install openjdk-17-jre-headless)")


def fetch_kafka(version: str = DEFAULT_KAFKA_VERSION, *, timeout: float = 900.0) -> Path:
    """Make sure the broker jars of ``version`` are cached and return the ``libs/`` directory.

    Idempotent and cheap once done: a marker written only after a complete
    copy means a cached version needs neither Maven nor the network, and an
    interrupted fetch (no marker) is redone from scratch. Concurrent callers
    (parallel test runs) are serialised with a file lock. Raises
    :class:`MissingToolError` without ``mvn`` and :class:`KafkaFetchError`
    when Maven fails, naming the log that holds its full output.
    """
    home = kafka_dir(version)
    libs = home / "libs"
    if is_fetched(version):
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_fetched(version):  # another process finished while we waited
            return libs
        mvn = _require_tool("mvn", "install Apache Maven (apt-get install maven) to fetch Kafka from Maven Central")
        _maven_copy(mvn, version, home, timeout)
    return libs


def _maven_copy(mvn: str, version: str, home: Path, timeout: float) -> None:
    libs = home / "libs"
    shutil.rmtree(libs, ignore_errors=True)
    log_path = home / "fetch.log"
    with tempfile.TemporaryDirectory(prefix="fetch-", dir=home) as tmp:
        staging = Path(tmp) / "libs"
        (Path(tmp) / "pom.xml").write_text(_pom(version))
        command = [
            mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(Path(tmp) / "pom.xml"),
            "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={staging}",
        ]  # fmt: skip
        try:
            done = subprocess.run(
                command, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            raise KafkaFetchError(f"mvn did not finish fetching Kafka {version} within {timeout:.0f} s") from exc
        log_path.write_text(done.stdout)
        jars = sorted(p.name for p in staging.glob("*.jar")) if staging.is_dir() else []
        if done.returncode != 0 or not any(n.startswith(f"kafka_2.13-{version}") for n in jars):
            raise KafkaFetchError(
                f"mvn could not fetch org.apache.kafka:kafka_2.13:{version} (exit {done.returncode}): "
                f"{_maven_error_line(done.stdout)}; full output in {log_path}",
                _tail(done.stdout, 30),
            )
        staging.rename(libs)
    (home / _MARKER).write_text(json.dumps({"version": version, "jars": jars}, indent=1))


def _maven_error_line(output: str) -> str:
    plain = re.sub(r"\x1b\[[0-9;]*m", "", output)
    errors = [line.strip() for line in plain.splitlines() if "[ERROR]" in line and line.strip() != "[ERROR]"]
    return errors[0][:300] if errors else "no error message (see the log)"


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _read_end(path: Path, size: int = 256 * 1024) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - size))
            return fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []


_EXCEPTION_LINE = re.compile(r"^(?:Caused by: )?[\w.$]+(?:Exception|Error): (.+)$")


def _first_error(lines: Sequence[str]) -> str | None:
    """The message of the first ERROR/FATAL record, preferring the exception text below it,
    e.g. "Socket server failed to bind to 127.0.0.1:9092: Address already in use."."""
    for i, line in enumerate(lines):
        if "] ERROR " in line or "] FATAL " in line:
            following = _EXCEPTION_LINE.match(lines[i + 1]) if i + 1 < len(lines) else None
            message = following.group(1) if following else line.split("] ", 1)[-1]
            return message.strip()[:300]
    return None


def _log_excerpt(path: Path, tail: int = 25) -> str:
    """The ERROR/FATAL records (first lines only) and the last lines of a broker log:
    the cause of a failed start is usually far above the shutdown noise at the end."""
    lines = _read_end(path)
    errors: list[str] = []
    for i, line in enumerate(lines):
        if ("] ERROR " in line or "] FATAL " in line) and len(errors) < 16:
            errors.append(line[:500])
            if i + 1 < len(lines) and _EXCEPTION_LINE.match(lines[i + 1]):
                errors.append("    " + lines[i + 1][:500])
    parts = [f"--- errors in {path} ---", *errors] if errors else []
    return "\n".join([*parts, f"--- last {tail} lines of {path} ---", *lines[-tail:]])


# --------------------------------------------------------------------------- node configuration


_LOG4J1 = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
"""

_LOG4J2 = """\
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
"""


@dataclass(frozen=True, slots=True)
class KafkaNode:
    """One combined broker+controller: its id, ports and files under ``directory``."""

    node_id: int
    port: int
    controller_port: int
    directory: Path
    #: the SASL_SSL client listener (``localhost:secure_port``) of a secured node; ``port`` is then
    #: the internal plaintext listener the brokers (and the start-up probe) use
    secure_port: int | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def client_address(self) -> str:
        """Where clients connect: the secured listener if there is one (by name: TLS checks the hostname)."""
        return f"localhost:{self.secure_port}" if self.secure_port is not None else self.address

    @property
    def config_path(self) -> Path:
        return self.directory / "server.properties"

    @property
    def log_path(self) -> Path:
        """The broker's own log (stdout and stderr of the JVM)."""
        return self.directory / "broker.log"

    @property
    def data_path(self) -> Path:
        return self.directory / "data"


def _node_properties(node: KafkaNode, voters: str, size: int, num_partitions: int, secrets: KafkaSecrets | None = None) -> str:
    """Server properties tuned for tests: small replication for small clusters,
    no rebalance delay, and a dead node fenced within seconds rather than half a minute.

    With ``secrets``, clients get a SASL_SSL listener (SCRAM-SHA-512, the
    broker certificate of ``secrets``) and the plaintext one is renamed
    INTERNAL: it carries the brokers' own traffic.
    """
    settings: dict[str, str | int] = {
        "process.roles": "broker,controller",
        "node.id": node.node_id,
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(node.data_path),
        "num.partitions": num_partitions,
        "default.replication.factor": min(3, size),
        "min.insync.replicas": 2 if size >= 3 else 1,
        "offsets.topic.replication.factor": min(3, size),
        "offsets.topic.num.partitions": 10,
        "transaction.state.log.replication.factor": min(3, size),
        "transaction.state.log.min.isr": min(2, size),
        "transaction.state.log.num.partitions": 10,
        "share.coordinator.state.topic.replication.factor": min(3, size),
        "share.coordinator.state.topic.min.isr": min(2, size),
        "group.initial.rebalance.delay.ms": 0,
        "auto.create.topics.enable": "true",
        "broker.heartbeat.interval.ms": 500,
        "broker.session.timeout.ms": 3000,
        "replica.lag.time.max.ms": 5000,
        "num.network.threads": 2,
        "num.io.threads": 4,
        "num.recovery.threads.per.data.dir": 1,
        "log.retention.check.interval.ms": 60000,
    }
    if secrets is not None and node.secure_port is not None:
        settings.update({
            "listeners": f"INTERNAL://127.0.0.1:{node.port},SASL_SSL://127.0.0.1:{node.secure_port},"
                         f"CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"INTERNAL://127.0.0.1:{node.port},SASL_SSL://localhost:{node.secure_port}",
            "inter.broker.listener.name": "INTERNAL",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,SASL_SSL:SASL_SSL",
            "sasl.enabled.mechanisms": MECHANISM,
            f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(secrets.keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(secrets.ca_file),
            "ssl.client.auth": "none",
        })  # fmt: skip
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def _log_config(node_dir: Path, version: str) -> list[str]:
    """Write the node's logging configuration; return the JVM flags that select it."""
    if _major(version) >= 4:
        path = node_dir / "log4j2.properties"
        path.write_text(_LOG4J2)
        return [f"-Dlog4j2.configurationFile={path}"]
    path = node_dir / "log4j.properties"
    path.write_text(_LOG4J1)
    return [f"-Dlog4j.configuration=file:{path}"]


def _java_command(libs: Path, log_flags: Sequence[str], jvm_opts: Sequence[str], main: str, *args: str) -> list[str]:
    return [
        _java(), *jvm_opts, *log_flags, "-Djava.awt.headless=true",
        "-cp", f"{libs}/*", main, *args,
    ]  # fmt: skip


def _new_cluster_id() -> str:
    """A Kafka ``Uuid`` (base64url, no padding) made here to save a JVM start.

    Like Kafka's own ``Uuid.randomUuid``, an id starting with ``-`` is drawn
    again: ``kafka-storage format -t -abc`` reads it as an option and fails
    (one id in 64; it broke CI once).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _format_storage(libs: Path, node: KafkaNode, version: str, cluster_id: str,
                    secrets: KafkaSecrets | None = None) -> subprocess.Popen[str]:
    flags = _log_config(node.directory, version)
    scram = (["--add-scram", f"{MECHANISM}=[name={secrets.username},password={secrets.password}]"]
             if secrets is not None else [])  # fmt: skip
    command = _java_command(
        libs, flags, ("-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"),
        "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(node.config_path), *scram,
    )  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _format_all(libs: Path, nodes: Sequence[KafkaNode], version: str, cluster_id: str,
                secrets: KafkaSecrets | None = None) -> None:
    """Format every node's log directory in parallel (one short JVM each); with ``secrets``, create its SCRAM user."""
    procs = [(node, _format_storage(libs, node, version, cluster_id, secrets)) for node in nodes]
    failures = []
    for node, proc in procs:
        try:
            output, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            for _, other in procs:
                other.kill()
            raise KafkaStartError(f"kafka.tools.StorageTool format did not finish in 120 s for node {node.node_id}") from None
        if proc.returncode != 0:
            failures.append((node, proc.returncode, output))
    if failures:
        node, code, output = failures[0]
        raise KafkaStartError(
            f"kafka.tools.StorageTool format failed for node {node.node_id} (exit {code}) in {node.directory}",
            _tail(output, 30),
        )


def _die_with_parent() -> None:
    """``preexec_fn``: ask Linux to SIGKILL the JVM when the starting thread dies,
    so a test run killed with SIGKILL leaves no broker behind."""
    PR_SET_PDEATHSIG = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _spawn(command: list[str], log_path: Path, *, tie_to_parent: bool) -> subprocess.Popen[bytes]:
    """Start a JVM in its own session (so its whole group can be signalled) with output to ``log_path``.

    ``tie_to_parent`` uses PR_SET_PDEATHSIG, which fires when the *thread* that
    forked exits; it is therefore only requested from the main thread.
    """
    preexec: Callable[[], None] | None = None
    if tie_to_parent and threading.current_thread() is threading.main_thread():
        preexec = _die_with_parent
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=preexec, close_fds=True,
        )  # fmt: skip


# --------------------------------------------------------------------------- readiness


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 right now (held together so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _run_coroutine(factory: Callable[[], Coroutine[Any, Any, _T]], timeout: float) -> _T:
    """Run a coroutine on a private loop in a worker thread, so the sync API also
    works when called from inside a running event loop (async tests, Faust)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result(timeout=timeout)


async def _describe(bootstrap: str, timeout: float) -> list[int]:
    """Broker ids a real client sees, after a second metadata request (topic list) succeeds."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="ves-streams-readiness", request_timeout_ms=int(timeout * 1000)
    )
    try:
        await asyncio.wait_for(admin.start(), timeout)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout)
        await asyncio.wait_for(admin.list_topics(), timeout)
        if cluster.get("controller_id", -1) < 0:
            return []
        return sorted(int(b["node_id"]) for b in cluster["brokers"])
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def _probe(bootstrap: str, timeout: float = 5.0) -> list[int] | None:
    """Broker ids listed via ``bootstrap``, or None if it does not answer as Kafka."""
    try:
        return _run_coroutine(lambda: _describe(bootstrap, timeout), timeout * 3 + 5)
    except Exception:  # any failure here means "not ready yet"; the caller decides when to give up
        return None


def wait_for_brokers(
    bootstrap: str,
    expected: Sequence[int] | int,
    *,
    timeout: float = 90.0,
    alive: Callable[[], str | None] = lambda: None,
) -> list[int]:
    """Wait until a client bootstrapped from ``bootstrap`` lists the expected brokers.

    ``expected`` is a broker count or the exact ids that must all be listed.
    ``alive`` returns a reason to give up early (a node process exited). Raises
    :class:`KafkaStartError` on timeout; returns the ids seen.
    """
    deadline = time.monotonic() + timeout
    port = int(bootstrap.split(",")[0].rsplit(":", 1)[1])
    last: list[int] | None = None
    while True:
        problem = alive()
        if problem:
            raise KafkaStartError(problem)
        if _port_open(port):
            last = _probe(bootstrap, timeout=min(5.0, max(1.0, deadline - time.monotonic())))
            if last is not None and _satisfied(last, expected):
                return last
        if time.monotonic() > deadline:
            seen = "no answer" if last is None else f"brokers {last}"
            raise KafkaStartError(f"Kafka at {bootstrap} did not list brokers {expected} within {timeout:.0f} s ({seen})")
        time.sleep(0.25)


def _start_failure(exc: KafkaStartError, log_path: Path) -> KafkaStartError:
    """``exc`` with the broker's own first error in the summary and the log excerpt as detail."""
    cause = _first_error(_read_end(log_path))
    summary = f"{exc.summary}: {cause}" if cause else exc.summary
    return KafkaStartError(f"{summary} (broker log: {log_path})", _log_excerpt(log_path))


def _satisfied(seen: list[int], expected: Sequence[int] | int) -> bool:
    if isinstance(expected, int):
        return len(seen) >= expected
    return set(expected) <= set(seen)


# --------------------------------------------------------------------------- process control


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; reaps it if it is our zombie child."""
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _terminate(pids: Sequence[int], timeout: float) -> None:
    """SIGTERM every process group, wait up to ``timeout``, then SIGKILL what is left."""
    for pid in pids:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            _signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


# --------------------------------------------------------------------------- cluster


#: ``KafkaCluster(security=...)`` and ``kafka up --security``: plain, or TLS + SASL/SCRAM-SHA-512 for clients.
SECURITY_MODES = ("plaintext", "sasl_ssl")


class KafkaCluster:
    """N KRaft nodes (each broker+controller, static quorum) on 127.0.0.1, for tests and drills.

    ``start()`` returns only once every node answers a real client that lists
    all N brokers. Nodes run in their own process groups, are stopped at
    interpreter exit, and (when started from the main thread) are killed by
    the kernel if this Python process dies. Not thread-safe: drive one
    cluster from one thread.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        size: int = 1,
        version: str = DEFAULT_KAFKA_VERSION,
        ports: Sequence[int] | None = None,
        controller_ports: Sequence[int] | None = None,
        num_partitions: int = 4,
        jvm_opts: Sequence[str] = TEST_JVM_OPTS,
        start_timeout: float = 90.0,
        security: str = "plaintext",
    ) -> None:
        if size < 1:
            raise KafkaLocalError(f"a Kafka cluster needs at least one node, not {size}")
        if security not in SECURITY_MODES:
            raise KafkaLocalError(f"security must be one of {', '.join(SECURITY_MODES)}, not {security!r}")
        _check_version(version)
        picked = free_ports(3 * size)
        ports = list(ports) if ports is not None else picked[:size]
        controller_ports = list(controller_ports) if controller_ports is not None else picked[size:2 * size]
        secure_ports: list[int | None] = list(picked[2 * size:]) if security == "sasl_ssl" else [None] * size
        if len(ports) != size or len(controller_ports) != size:
            raise KafkaLocalError(f"need {size} broker and {size} controller ports, got {ports} and {controller_ports}")
        self.version = version
        self.data_dir = Path(data_dir)
        self.num_partitions = num_partitions
        self.jvm_opts = tuple(jvm_opts)
        self.start_timeout = start_timeout
        self.nodes: tuple[KafkaNode, ...] = tuple(
            KafkaNode(i + 1, ports[i], controller_ports[i], self.data_dir / f"node-{i + 1}", secure_ports[i])
            for i in range(size)
        )
        self.security = security
        #: the CA, the broker certificate and the SCRAM user of a secured cluster (made at start)
        self.secrets: KafkaSecrets | None = None
        self.cluster_id = _new_cluster_id()
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._formatted = False
        self._libs: Path | None = None

    # -- addresses

    @property
    def size(self) -> int:
        return len(self.nodes)

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:p1,127.0.0.1:p2,...`` for aiokafka and librdkafka."""
        return ",".join(n.address for n in self.nodes)

    @property
    def broker_url(self) -> str:
        """``kafka://127.0.0.1:p1;127.0.0.1:p2`` for Faust's ``broker`` setting."""
        return "kafka://" + ";".join(n.address for n in self.nodes)

    @property
    def client_bootstrap_servers(self) -> str:
        """Where clients connect: the SASL_SSL listeners (``localhost:p``) of a secured cluster, else the plain ones."""
        return ",".join(n.client_address for n in self.nodes)

    @property
    def client_broker_url(self) -> str:
        """``VES_STREAMS_BROKER`` for clients (:attr:`client_bootstrap_servers` in Faust's form)."""
        return "kafka://" + ";".join(n.client_address for n in self.nodes)

    def client_env(self) -> dict[str, str]:
        """Every ``VES_STREAMS_*`` Kafka setting a client needs (the broker alone when not secured)."""
        if self.secrets is None:
            return {"VES_STREAMS_BROKER": self.client_broker_url}
        return client_env(self.secrets, self.client_broker_url)

    @property
    def log_paths(self) -> list[Path]:
        return [n.log_path for n in self.nodes]

    def node(self, index: int) -> KafkaNode:
        """Node by 0-based index (node ids are 1-based)."""
        return self.nodes[index]

    def is_running(self, index: int) -> bool:
        proc = self._procs.get(index)
        return proc is not None and proc.poll() is None

    def running_indexes(self) -> list[int]:
        return [i for i in range(self.size) if self.is_running(i)]

    # -- lifecycle

    def start(self) -> KafkaCluster:
        """Format (first time only), start every node and wait until all are listed.

        On failure every node is stopped again and :class:`KafkaStartError`
        carries the tail of the failing node's log.
        """
        self._libs = fetch_kafka(self.version)
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        if not self._formatted:
            if self.security == "sasl_ssl":
                self.secrets = make_secrets(self.data_dir / "security")
            for node in self.nodes:
                node.directory.mkdir(parents=True, exist_ok=True)
                node.config_path.write_text(_node_properties(node, voters, self.size, self.num_partitions, self.secrets))
            _format_all(self._libs, self.nodes, self.version, self.cluster_id, self.secrets)
            self._formatted = True
        atexit.register(self.stop)
        try:
            for i in range(self.size):
                if not self.is_running(i):
                    self._launch(i)
            for i in range(self.size):
                self._wait_node(i, list(range(1, self.size + 1)))
        except BaseException:
            self.stop(timeout=5)
            raise
        return self

    def _launch(self, index: int) -> None:
        if self._libs is None:
            raise KafkaLocalError("KafkaCluster nodes can only be launched by start()")
        node = self.nodes[index]
        flags = _log_config(node.directory, self.version)
        with open(node.log_path, "ab") as log:
            log.write(f"\n===== ves-streams: starting node {node.node_id} at {time.ctime()} =====\n".encode())
        command = _java_command(self._libs, flags, self.jvm_opts, "kafka.Kafka", str(node.config_path))
        self._procs[index] = _spawn(command, node.log_path, tie_to_parent=True)

    def _wait_node(self, index: int, expected: Sequence[int]) -> None:
        node = self.nodes[index]

        # only the nodes expected up count: a node killed on purpose (kill_node) may stay down
        watched = {i: p for i, p in self._procs.items() if self.nodes[i].node_id in expected or i == index}

        def alive() -> str | None:
            for i, proc in watched.items():
                if proc.poll() is not None:
                    return f"Kafka node {self.nodes[i].node_id} exited with code {proc.returncode}"
            return None

        try:
            wait_for_brokers(node.address, expected, timeout=self.start_timeout, alive=alive)
        except KafkaStartError as exc:
            failed = next((i for i, p in watched.items() if p.poll() is not None), index)
            raise _start_failure(exc, self.nodes[failed].log_path) from None

    def stop(self, timeout: float = 15.0) -> None:
        """Stop every node: SIGTERM (controlled shutdown), SIGKILL after ``timeout``. Idempotent."""
        pids = [p.pid for p in self._procs.values() if p.poll() is None]
        _terminate(pids, timeout)
        for proc in self._procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
        self._procs.clear()
        atexit.unregister(self.stop)

    def kill_node(self, index: int) -> None:
        """SIGKILL one node (a crash: no controlled shutdown) and wait until it is gone."""
        proc = self._procs.get(index)
        if proc is None or proc.poll() is not None:
            return
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop_node(self, index: int, timeout: float = 15.0) -> None:
        """Stop one node gracefully (SIGTERM, SIGKILL after ``timeout``)."""
        proc = self._procs.get(index)
        if proc is None or proc.poll() is not None:
            return
        _terminate([proc.pid], timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    def restart_node(self, index: int) -> None:
        """Start a stopped or killed node again (same data) and wait until every running node lists it."""
        if self._libs is None:
            raise KafkaLocalError("restart_node() needs a cluster that was started")
        if self.is_running(index):
            self.stop_node(index)
        self._launch(index)
        running = [i for i in range(len(self.nodes)) if self.is_running(i)]
        expected = [self.nodes[i].node_id for i in running]
        # The restarted node lists itself first; the others learn it is unfenced from
        # the metadata log a moment later, and a client may ask any of them.
        for i in [index, *(i for i in running if i != index)]:
            self._wait_node(i, expected)

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"KafkaCluster(version={self.version!r}, bootstrap={self.bootstrap_servers!r})"


# --------------------------------------------------------------------------- make kafka-up


def default_run_dir() -> Path:
    """``.run/kafka/``: pid file, state, log and data of ``make kafka-up``.

    In the checkout (``.run/`` is git-ignored) or, for an installed wheel, in
    the current directory (:func:`ves_streams.resources.run_dir`).
    """
    return resources.run_dir() / "kafka"


@dataclass(frozen=True, slots=True)
class LocalBroker:
    """What ``kafka_up`` recorded about the detached broker (``state.json``)."""

    pid: int
    version: str
    port: int
    controller_port: int
    log_path: Path
    data_dir: Path

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"


def _state_path(run_dir: Path) -> Path:
    return run_dir / "state.json"


def _pid_path(run_dir: Path) -> Path:
    return run_dir / "kafka.pid"


def _read_state(run_dir: Path) -> LocalBroker | None:
    try:
        raw = json.loads(_state_path(run_dir).read_text())
        return LocalBroker(
            pid=int(raw["pid"]), version=str(raw["version"]), port=int(raw["port"]),
            controller_port=int(raw["controller_port"]), log_path=Path(raw["log_path"]),
            data_dir=Path(raw["data_dir"]),
        )  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _is_our_broker(pid: int) -> bool:
    """The pid still runs ``kafka.Kafka`` (not a recycled pid of something else)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return _alive(pid) and b"kafka.Kafka" in cmdline


def kafka_status(run_dir: Path | None = None) -> LocalBroker | None:
    """The detached broker if its process is alive, else None (stale files are left to ``kafka_up``)."""
    state = _read_state(run_dir or default_run_dir())
    if state is None or not _is_our_broker(state.pid):
        return None
    return state


def kafka_up(
    version: str = DEFAULT_KAFKA_VERSION,
    port: int = 9092,
    *,
    controller_port: int | None = None,
    run_dir: Path | None = None,
    data_dir: Path | None = None,
    timeout: float = 90.0,
    security: str = "plaintext",
) -> bool:
    """Start one detached KRaft broker on ``127.0.0.1:port`` (controller on ``port + 1``).

    With ``security="sasl_ssl"`` clients connect to ``localhost:port`` with
    TLS (a CA and a broker certificate made for the run, hostname verified)
    and SASL/SCRAM-SHA-512 (a user made for the run); the brokers' own
    plaintext listener is on ``port + 2``, and ``run_dir/client.env`` holds
    every setting a client needs (:func:`client_env_path`).

    The broker runs in its own session, so it outlives this process; its pid,
    state and log (``kafka.pid``, ``state.json``, ``kafka.log``) live in
    ``run_dir`` (default :func:`default_run_dir`) and its data in
    ``data_dir`` (default ``run_dir/data-<version>``, kept between ``up``s so
    topics survive a restart). Returns True once a client lists the broker,
    False when a broker already answers on ``port`` (ours or not: it is left
    alone and used). Raises :class:`KafkaStartError` (with the log tail) if
    it did not come up; then nothing is left running.
    """
    run_dir = Path(run_dir or default_run_dir())
    if security not in SECURITY_MODES:
        raise KafkaLocalError(f"security must be one of {', '.join(SECURITY_MODES)}, not {security!r}")
    controller_port = controller_port if controller_port is not None else port + 1
    secured = security == "sasl_ssl"
    internal_port = port + 2 if secured else port
    bootstrap = f"127.0.0.1:{internal_port}"
    if secured and _port_open(port):
        if _probe(bootstrap) is not None:
            return False
        raise KafkaStartError(f"port {port} on 127.0.0.1 is taken by something that is not our Kafka; free it or pass --port")
    if _port_open(internal_port):
        if _probe(bootstrap) is not None:
            return False
        raise KafkaStartError(f"port {port} on 127.0.0.1 is taken by something that is not Kafka; free it or pass --port")
    if _port_open(controller_port):
        raise KafkaStartError(f"controller port {controller_port} on 127.0.0.1 is taken; free it or pass --controller-port")
    previous = kafka_status(run_dir)
    if previous is not None:  # ours, alive, yet not answering: replace it
        _terminate([previous.pid], 15)

    libs = fetch_kafka(version)
    # a secured broker keeps data of its own: its SCRAM user is created when the storage is formatted
    data_dir = Path(data_dir or run_dir / (f"data-{version}-sasl_ssl" if secured else f"data-{version}"))
    node = KafkaNode(1, internal_port, controller_port, data_dir, port if secured else None)
    node.directory.mkdir(parents=True, exist_ok=True)
    secrets = make_secrets(run_dir / "security") if secured else None
    node.config_path.write_text(_node_properties(node, f"1@127.0.0.1:{controller_port}", 1, 4, secrets))
    if not any(node.data_path.glob("meta.properties")):
        shutil.rmtree(node.data_path, ignore_errors=True)
        _format_all(libs, [node], version, _new_cluster_id(), secrets)
    if secrets is not None:
        write_client_env(client_env_path(run_dir), client_env(secrets, f"kafka://{node.client_address}"))
    else:
        client_env_path(run_dir).unlink(missing_ok=True)

    log_path = run_dir / "kafka.log"
    log_path.write_bytes(b"")
    command = _java_command(libs, _log_config(node.directory, version), SERVICE_JVM_OPTS, "kafka.Kafka", str(node.config_path))
    proc = _spawn(command, log_path, tie_to_parent=False)
    state = LocalBroker(proc.pid, version, port, controller_port, log_path, data_dir)
    _pid_path(run_dir).write_text(f"{proc.pid}\n")
    _state_path(run_dir).write_text(
        json.dumps({**{k: getattr(state, k) for k in ("pid", "version", "port", "controller_port")},
                    "log_path": str(log_path), "data_dir": str(data_dir)}, indent=1)
    )  # fmt: skip

    def alive() -> str | None:
        return None if proc.poll() is None else f"Kafka exited with code {proc.returncode}"

    try:
        wait_for_brokers(bootstrap, 1, timeout=timeout, alive=alive)
    except KafkaStartError as exc:
        _terminate([proc.pid], 5)
        _forget(run_dir)
        raise _start_failure(exc, log_path) from None
    proc.returncode = 0  # detached on purpose: keep Popen.__del__ from warning that it still runs
    return True


def client_env_path(run_dir: Path | None = None) -> Path:
    """``client.env`` of a secured ``kafka up``: the ``VES_STREAMS_*`` settings its clients need."""
    return Path(run_dir or default_run_dir()) / "client.env"


def _forget(run_dir: Path) -> None:
    for path in (_pid_path(run_dir), _state_path(run_dir)):
        path.unlink(missing_ok=True)


def kafka_down(run_dir: Path | None = None, timeout: float = 30.0) -> bool:
    """Stop the broker ``kafka_up`` started (SIGTERM, SIGKILL after ``timeout``).

    Returns True if one was running. Idempotent: with nothing running it only
    removes stale pid/state files. Data is kept for the next ``kafka_up``.
    """
    run_dir = Path(run_dir or default_run_dir())
    state = kafka_status(run_dir)
    if state is None:
        _forget(run_dir)
        return False
    _terminate([state.pid], timeout)
    if _alive(state.pid):
        raise KafkaLocalError(f"Kafka (pid {state.pid}) is still running after SIGKILL")
    _forget(run_dir)
    return True
