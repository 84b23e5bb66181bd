"""The project's own Kafka: fetched once with Maven, run as real KRaft brokers.

The integration tests here talk to real JVMs through aiokafka; the few unit
tests pin what the generated configuration promises without starting one.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from ves_streams.dev import kafka as kafka_local
from ves_streams.dev import kafka_commands
from ves_streams.dev.kafka import KafkaCluster, KafkaFetchError, KafkaStartError

from tests.plugins.kafka import create_topics, create_topics_async, new_topic_name

#: the local broker's own set-up differs between Kafka versions (logging, storage format, SCRAM)
pytestmark = pytest.mark.broker_version

PROJECT_DIR = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- helpers


async def _broker_ids(bootstrap: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return sorted(b["node_id"] for b in (await admin.describe_cluster())["brokers"])
    finally:
        await admin.close()


async def _until_all_three_listed(bootstrap: str, timeout: float = 60.0) -> None:
    """Wait until the cluster lists brokers 1, 2 and 3.

    Any node may answer a metadata request, and a node that missed its
    controller heartbeats on a loaded machine is fenced for a moment, so the
    listing is polled rather than read once.
    """
    deadline = time.monotonic() + timeout
    while (ids := await _broker_ids(bootstrap)) != [1, 2, 3]:
        assert time.monotonic() < deadline, f"the cluster lists brokers {ids}, not [1, 2, 3]"
        await asyncio.sleep(0.5)


async def _partitions(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        return sorted(described["partitions"], key=lambda p: p["partition"])
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], **config: object) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **config)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def _consume(bootstrap: str, topic: str, count: int, *, group_id: str | None, timeout: float = 30) -> list[tuple[bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group_id, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    seen: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(seen) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            seen.extend((m.key, m.value) for msgs in batches.values() for m in msgs)
        if group_id is not None:
            await consumer.commit()
    finally:
        await consumer.stop()
    return seen


def _records(n: int, tag: str) -> list[tuple[bytes, bytes]]:
    return [(f"host-{i % 7}".encode(), f"{tag}-{i}".encode()) for i in range(n)]


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ves_streams.cli", "kafka", *args],
        capture_output=True, text=True, timeout=timeout, cwd=PROJECT_DIR, env=env,
    )  # fmt: skip


def _broker_pids(under: Path) -> list[int]:
    """Broker JVMs whose configuration lives under ``under`` (other brokers on this machine are not ours)."""
    pattern = rf"kafka\.Kafka {re.escape(str(under))}/"
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _fake_mvn(bin_dir: Path, body: str) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    mvn = bin_dir / "mvn"
    mvn.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    mvn.chmod(0o755)
    return mvn


# --------------------------------------------------------------------------- unit: configuration


def test_broker_url_is_one_faust_url_with_semicolons_and_bootstrap_is_comma_separated(tmp_path: Path) -> None:
    from faust.utils.urls import urllist

    cluster = KafkaCluster(tmp_path, size=3, ports=[19001, 19002, 19003], controller_ports=[19011, 19012, 19013])
    assert cluster.bootstrap_servers == "127.0.0.1:19001,127.0.0.1:19002,127.0.0.1:19003"
    assert cluster.broker_url == "kafka://127.0.0.1:19001;127.0.0.1:19002;127.0.0.1:19003"
    assert [str(u) for u in urllist(cluster.broker_url)] == [
        "kafka://127.0.0.1:19001", "kafka://127.0.0.1:19002", "kafka://127.0.0.1:19003",
    ]  # fmt: skip
    assert [n.node_id for n in cluster.nodes] == [1, 2, 3]


@pytest.mark.parametrize(
    ("size", "rf", "min_isr", "txn_isr"),
    [(1, 1, 1, 1), (2, 2, 1, 2), (3, 3, 2, 2), (5, 3, 2, 2)],
)
def test_replication_settings_fit_the_cluster_size(size: int, rf: int, min_isr: int, txn_isr: int, tmp_path: Path) -> None:
    node = kafka_local.KafkaNode(1, 9092, 9093, tmp_path)
    props = dict(
        line.split("=", 1) for line in kafka_local._node_properties(node, "1@127.0.0.1:9093", size, 6).splitlines()
    )
    assert props["default.replication.factor"] == str(rf)
    assert props["offsets.topic.replication.factor"] == str(rf)
    assert props["transaction.state.log.replication.factor"] == str(rf)
    assert props["min.insync.replicas"] == str(min_isr)
    assert props["transaction.state.log.min.isr"] == str(txn_isr)
    assert props["num.partitions"] == "6"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "true"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"


def test_cluster_ids_are_kafka_uuids_that_the_storage_tool_cannot_take_for_an_option() -> None:
    # One base64url id in 64 starts with "-"; `kafka-storage format -t -x...`
    # then fails with "expected one argument". 2,000 draws miss that case
    # with probability (63/64)**2000, about 2e-14.
    ids = [kafka_local._new_cluster_id() for _ in range(2000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_cli_default_version_is_the_module_default() -> None:
    assert kafka_commands._DEFAULT_VERSION == kafka_local.DEFAULT_KAFKA_VERSION
    assert kafka_local.DEFAULT_KAFKA_VERSION in kafka_local.KAFKA_VERSIONS


def test_invalid_version_is_refused_before_maven_runs() -> None:
    with pytest.raises(kafka_local.KafkaLocalError, match="invalid Kafka version"):
        kafka_local.fetch_kafka("4.1.1</version><x>")


# --------------------------------------------------------------------------- fetch


@pytest.mark.integration
def test_cached_fetch_runs_no_maven(kafka_version: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    libs = kafka_local.fetch_kafka(kafka_version)
    _fake_mvn(tmp_path / "bin", "echo '[ERROR] this mvn must not run' >&2\nexit 1\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")

    assert kafka_local.fetch_kafka(kafka_version) == libs
    done = _cli("fetch", "--version", kafka_version)
    assert done.returncode == 0, done.stderr
    assert "cached" in done.stdout

    # the same failing mvn is really the one used when nothing is cached
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(KafkaFetchError, match="this mvn must not run"):
        kafka_local.fetch_kafka(kafka_version)


@pytest.mark.integration
def test_fetch_is_marked_complete_only_after_maven_succeeds(
    kafka_version: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_libs = kafka_local.fetch_kafka(kafka_version)
    calls = tmp_path / "mvn-calls"
    # a stand-in for Maven that "downloads" by copying the real cache and counts its calls
    _fake_mvn(
        tmp_path / "bin",
        f"""\
        echo call >> {calls}
        for arg in "$@"; do case "$arg" in -DoutputDirectory=*) out="${{arg#-DoutputDirectory=}}";; esac; done
        mkdir -p "$out" && cp {real_libs}/*.jar "$out"/
        """,
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    # an interrupted earlier fetch: jars present, no completion marker
    partial = tmp_path / "cache" / "ves-streams" / "kafka" / kafka_version / "libs"
    partial.mkdir(parents=True)
    (partial / "half-written.jar").write_bytes(b"")
    assert not kafka_local.is_fetched(kafka_version)

    libs = kafka_local.fetch_kafka(kafka_version)
    assert calls.read_text().count("call") == 1
    assert not (libs / "half-written.jar").exists()
    assert {p.name for p in libs.glob("*.jar")} == {p.name for p in real_libs.glob("*.jar")}

    assert kafka_local.fetch_kafka(kafka_version) == libs
    assert calls.read_text().count("call") == 1


def test_cli_fetch_failure_is_one_line_without_traceback(tmp_path: Path) -> None:
    _fake_mvn(tmp_path / "bin", "echo '[ERROR] Could not resolve dependencies (offline)'\nexit 1\n")
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "XDG_CACHE_HOME": str(tmp_path / "c")}
    done = _cli("fetch", "--version", "4.1.1", env=env)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("ves-streams kafka fetch: mvn could not fetch org.apache.kafka:kafka_2.13:4.1.1")
    assert "Could not resolve dependencies (offline)" in done.stderr


# --------------------------------------------------------------------------- single node


@pytest.mark.integration
def test_single_node_broker_round_trips_records_through_a_consumer_group(kafka: KafkaCluster) -> None:
    topic = new_topic_name("roundtrip")
    create_topics(kafka.bootstrap_servers, [topic], partitions=4, replication=1)
    sent = _records(200, "v")

    async def scenario() -> list[tuple[bytes, bytes]]:
        assert await _broker_ids(kafka.bootstrap_servers) == [1]
        await _produce(kafka.bootstrap_servers, topic, sent, acks="all", enable_idempotence=True)
        return await _consume(kafka.bootstrap_servers, topic, len(sent), group_id=new_topic_name("group"))

    received = asyncio.run(scenario())
    assert sorted(received) == sorted(sent)


@pytest.mark.integration
def test_auto_created_topic_gets_the_configured_partition_count(kafka: KafkaCluster, unique_topic_prefix: str) -> None:
    topic = f"{unique_topic_prefix}-auto"

    async def scenario() -> int:
        await _produce(kafka.bootstrap_servers, topic, [(b"k", b"v")], acks=1)
        return len(await _partitions(kafka.bootstrap_servers, topic))

    assert asyncio.run(scenario()) == kafka.num_partitions == 4


@pytest.mark.integration
def test_a_node_that_cannot_bind_fails_start_with_its_log_tail(kafka_version: str, tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        (controller,) = kafka_local.free_ports(1)
        cluster = KafkaCluster(tmp_path, version=kafka_version, ports=[taken], controller_ports=[controller])
        with pytest.raises(KafkaStartError) as failure:
            cluster.start()
    assert "exited" in failure.value.summary
    assert str(cluster.node(0).log_path) in failure.value.summary
    assert "Address already in use" in failure.value.summary
    assert "Address already in use" in failure.value.detail
    assert cluster.running_indexes() == []


@pytest.mark.integration
def test_brokers_die_with_a_python_process_that_is_killed(kafka_version: str, tmp_path: Path) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""\
            import sys, time
            from pathlib import Path
            from ves_streams.dev.kafka import KafkaCluster
            cluster = KafkaCluster(Path({str(tmp_path)!r}), version={kafka_version!r}).start()
            print(cluster.bootstrap_servers, flush=True)
            time.sleep(600)
        """)],
        stdout=subprocess.PIPE, text=True, cwd=PROJECT_DIR,
    )  # fmt: skip
    try:
        assert owner.stdout is not None
        bootstrap = owner.stdout.readline().strip()
        assert bootstrap.startswith("127.0.0.1:"), "the owner did not start its broker"
        assert _broker_pids(tmp_path), "no broker JVM found"
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    deadline = time.monotonic() + 20
    while _broker_pids(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _broker_pids(tmp_path) == []


# --------------------------------------------------------------------------- three nodes


@pytest.mark.integration
def test_three_node_cluster_keeps_accepting_acks_all_writes_when_a_node_is_killed(kafka_cluster3: KafkaCluster) -> None:
    cluster = kafka_cluster3
    bootstrap = cluster.bootstrap_servers
    topic = new_topic_name("rf3")
    before, during, after = _records(60, "before"), _records(60, "during"), _records(60, "after")

    async def setup() -> int:
        await _until_all_three_listed(bootstrap)
        await create_topics_async(bootstrap, [topic], partitions=3, replication=3)
        await _produce(bootstrap, topic, before, acks="all")
        return int((await _partitions(bootstrap, topic))[0]["leader"])

    leader = asyncio.run(setup())
    victim = leader - 1  # node ids are 1-based
    cluster.kill_node(victim)
    assert cluster.running_indexes() == [i for i in range(3) if i != victim]

    async def degraded() -> list[dict[str, Any]]:
        await _produce(bootstrap, topic, during, acks="all", request_timeout_ms=30000)
        return await _partitions(bootstrap, topic)

    partitions = asyncio.run(degraded())
    assert all(p["leader"] != leader for p in partitions)
    assert all(leader not in p["isr"] for p in partitions)
    assert all(len(p["isr"]) == 2 for p in partitions)

    cluster.restart_node(victim)

    async def recovered() -> list[tuple[bytes, bytes]]:
        await _until_all_three_listed(bootstrap)
        deadline = time.monotonic() + 60
        while not all(len(p["isr"]) == 3 for p in await _partitions(bootstrap, topic)):
            assert time.monotonic() < deadline, "the restarted node did not rejoin the ISR"
            await asyncio.sleep(0.5)
        await _produce(bootstrap, topic, after, acks="all")
        return await _consume(bootstrap, topic, 180, group_id=None)

    received = asyncio.run(recovered())
    assert sorted(received) == sorted(before + during + after)


# --------------------------------------------------------------------------- ves-streams kafka up / down


@pytest.mark.integration
def test_cli_up_starts_a_detached_broker_and_down_leaves_nothing_running(kafka_version: str, tmp_path: Path) -> None:
    port, controller = kafka_local.free_ports(2)
    run_dir = tmp_path / "run"
    where = ["--run-dir", str(run_dir)]
    try:
        up = _cli("up", "--version", kafka_version, "--port", str(port), "--controller-port", str(controller), *where)
        assert up.returncode == 0, up.stderr
        assert f"running on 127.0.0.1:{port}" in up.stdout
        pid = int((run_dir / "kafka.pid").read_text())
        assert _broker_pids(run_dir) == [pid]  # the JVM outlived the command

        assert asyncio.run(_broker_ids(f"127.0.0.1:{port}")) == [1]
        again = _cli("up", "--version", kafka_version, "--port", str(port), "--controller-port", str(controller), *where)
        assert again.returncode == 0 and "already running" in again.stdout
        assert _cli("status", *where).returncode == 0

        down = _cli("down", *where)
        assert down.returncode == 0, down.stderr
        assert "stopped" in down.stdout
        assert _broker_pids(run_dir) == []
        assert not (run_dir / "kafka.pid").exists()
        status = _cli("status", *where)
        assert status.returncode == 3 and "not running" in status.stdout
        assert _cli("down", *where).stdout.strip() == "Kafka was not running"
    finally:
        for pid in _broker_pids(run_dir):
            os.killpg(pid, signal.SIGKILL)


@pytest.mark.integration
def test_cli_up_with_sasl_ssl_writes_a_client_env_that_is_all_a_client_needs(kafka_version: str, tmp_path: Path) -> None:
    from ves_streams.runtime.kafka import KafkaConnection
    from ves_streams.settings import Settings

    port, controller, _internal = kafka_local.free_ports(3)
    run_dir = tmp_path / "run"
    where = ["--run-dir", str(run_dir)]
    try:
        up = _cli("up", "--version", kafka_version, "--port", str(port), "--controller-port", str(controller),
                  "--security", "sasl_ssl", *where)  # fmt: skip
        assert up.returncode == 0, up.stderr
        assert f"running on localhost:{port} (SASL_SSL, SCRAM-SHA-512)" in up.stdout
        env_file = run_dir / "client.env"
        assert str(env_file) in up.stdout
        assert oct(env_file.stat().st_mode & 0o777) == "0o600"  # it holds the password
        env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line and not line.startswith("#"))
        assert set(env) == {"VES_STREAMS_BROKER", "VES_STREAMS_KAFKA_SASL_MECHANISM", "VES_STREAMS_KAFKA_USERNAME",
                            "VES_STREAMS_KAFKA_PASSWORD", "VES_STREAMS_KAFKA_SSL_CAFILE"}  # fmt: skip
        assert env["VES_STREAMS_KAFKA_PASSWORD"] not in up.stdout + up.stderr
        connection = KafkaConnection.from_settings(Settings.from_env(env))
        assert connection.security.security_protocol == "SASL_SSL"

        async def listed() -> list[int]:
            from aiokafka.admin import AIOKafkaAdminClient

            admin = AIOKafkaAdminClient(bootstrap_servers=connection.bootstrap_servers, **connection.client_kwargs())
            await admin.start()
            try:
                return sorted(int(b["node_id"]) for b in (await admin.describe_cluster())["brokers"])
            finally:
                await admin.close()

        assert asyncio.run(listed()) == [1]
        assert _cli("down", *where).returncode == 0
    finally:
        for pid in _broker_pids(run_dir):
            os.killpg(pid, signal.SIGKILL)
