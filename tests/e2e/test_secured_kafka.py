"""The pipeline over SASL_SSL (SCRAM-SHA-512, TLS with hostname verification), configured only from client.env.

A secured local broker (``KafkaCluster(security="sasl_ssl")``: a CA and a
broker certificate made for the run, a SCRAM user made for the run) serves
a worker of role ``all`` (the Faust app, the ingest and fault loops, the
sink) and the notification relay, each given nothing but the settings of
``client_env()``. A wrong password and a CA that did not sign the broker's
certificate each stop the worker at start with one line naming the setting;
no output of any process ever holds a password.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.agents.conftest import INTERVAL
from tests.agents.support import Names, Worker, host_messages, notification
from tests.plugins.collector import VesCollector
from tests.plugins.kafka import create_topics
from ves_streams.dev.kafka import KafkaCluster
from ves_streams.dev.kafka_security import make_secrets
from ves_streams.dev.replay import DEFAULT_CAPTURE_DIR, load_capture
from ves_streams.runtime.kafka import KafkaConnection
from ves_streams.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.broker_version]


def _base(names: Names) -> dict[str, str]:
    return {
        "VES_STREAMS_INTERVAL": str(INTERVAL),
        "VES_STREAMS_PARTITIONS": "4",
        "VES_STREAMS_KAFKA_SESSION_TIMEOUT": "6",
        "VES_STREAMS_HOSTNAME": "ves-streams-test",
        **names.env(),
    }


def _produce(env: dict[str, str], topic: str, values: list[bytes]) -> None:
    """Produce as a client configured from ``env`` only (the same KafkaConnection the worker uses)."""
    from aiokafka import AIOKafkaProducer

    connection = KafkaConnection.from_settings(Settings.from_env(env))

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=connection.bootstrap_servers, acks="all", **connection.client_kwargs())
        await producer.start()
        try:
            for value in values:
                await producer.send_and_wait(topic, value)
        finally:
            await producer.stop()

    asyncio.run(send())


def _wait_exit(worker: Worker, timeout: float) -> int:
    assert worker.proc is not None
    try:
        return worker.proc.wait(timeout=timeout)
    except Exception:
        worker.kill()
        raise AssertionError(f"the worker did not stop within {timeout} s:\n{worker.log_tail(30)}") from None


@pytest.fixture
def secured_names(kafka_sasl_ssl: KafkaCluster, request: pytest.FixtureRequest) -> Names:
    names = Names.unique(request.node.name.removeprefix("test_")[:40])
    # the tests' own set-up goes through the brokers' internal plaintext listener
    create_topics(kafka_sasl_ssl.bootstrap_servers, [names.values, names.notifications], partitions=4)
    return names


def test_the_pipeline_runs_end_to_end_over_sasl_ssl_from_client_env_alone(
    kafka_sasl_ssl: KafkaCluster, secured_names: Names, tmp_path: Path, ves_collector: VesCollector,
    notification_relay_factory: Callable[..., str],
) -> None:  # fmt: skip
    client = kafka_sasl_ssl.client_env()
    assert client["VES_STREAMS_BROKER"].startswith("kafka://localhost:")  # the certificate's name: TLS checks it
    password = client["VES_STREAMS_KAFKA_PASSWORD"]
    names = secured_names
    worker = Worker("secured", {**_base(names), **client, "VES_STREAMS_ROLE": "all",
                                "VES_STREAMS_COLLECTOR_URL": ves_collector.url}, tmp_path).start()  # fmt: skip
    try:
        worker.wait_ready()
        relay = notification_relay_factory(client["VES_STREAMS_BROKER"], names.notifications, client)
        for host in ("secure-a", "secure-b"):
            _produce(client, names.values, host_messages(host, time.time(), interval=INTERVAL))
        answer = requests.post(relay, data=notification("secure-a", time.time()), timeout=30)
        assert answer.status_code == 200, answer.text  # acknowledged by the secured broker
        events = ves_collector.wait_for(
            lambda es: {(e["commonEventHeader"]["domain"], e["commonEventHeader"]["sourceName"]) for e in es}
            >= {("measurement", "secure-a"), ("measurement", "secure-b"), ("fault", "secure-a")},
            timeout=60,
        )  # fmt: skip
        assert events
        assert worker.get("/ready").json()["checks"]["kafka"] == "ok"
    finally:
        worker.stop()
    relay_logs = {p.name: p.read_text(errors="replace") for p in tmp_path.rglob("relay-*.log")}
    assert relay_logs, "the relay wrote no log to check"
    outputs = {"worker": worker.log_text(), **relay_logs}
    leaked = [name for name, text in outputs.items() if password in text]
    assert not leaked, f"the SASL password appears in the output of {leaked}"


def _topic_records(bootstrap: str, topic: str) -> list[bytes]:
    """Every record of ``topic``, read through the brokers' internal plaintext listener."""
    from aiokafka import AIOKafkaConsumer

    async def read() -> list[bytes]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            values: list[bytes] = []
            while True:
                batch = await consumer.getmany(timeout_ms=2000)
                if not batch:
                    return values
                values += [m.value for messages in batch.values() for m in messages]
        finally:
            await consumer.stop()

    return asyncio.run(read())


def test_replay_publishes_over_sasl_ssl_configured_from_client_env_alone(
    kafka_sasl_ssl: KafkaCluster, secured_names: Names
) -> None:
    client = kafka_sasl_ssl.client_env()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VES_STREAMS_")}
    env.update(client, VES_STREAMS_VALUES_TOPIC=secured_names.values)
    done = subprocess.run(
        [sys.executable, "-m", "ves_streams.cli", "replay", "--rounds", "2", "--full-speed", "--no-notifications",
         "--host", "secure-replay"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert client["VES_STREAMS_KAFKA_PASSWORD"] not in output
    capture = load_capture(next(DEFAULT_CAPTURE_DIR.glob("*.values.jsonl")))
    records = _topic_records(kafka_sasl_ssl.bootstrap_servers, secured_names.values)
    assert len(records) == len(capture.rounds[0]) + len(capture.rounds[1])
    assert all(b'"host":"secure-replay"' in r for r in records)


def test_a_plaintext_client_is_not_served_on_the_secured_listener(kafka_sasl_ssl: KafkaCluster) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    async def plain() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_sasl_ssl.client_bootstrap_servers, request_timeout_ms=3000)
        try:
            await asyncio.wait_for(admin.start(), 10)
            await asyncio.wait_for(admin.describe_cluster(), 10)
        finally:
            await admin.close()

    with pytest.raises(Exception):
        asyncio.run(plain())


def test_a_wrong_password_stops_the_worker_naming_the_setting_and_never_the_password(
    kafka_sasl_ssl: KafkaCluster, secured_names: Names, tmp_path: Path
) -> None:
    client = kafka_sasl_ssl.client_env()
    wrong = "not-the-password-" + client["VES_STREAMS_KAFKA_PASSWORD"][:4][::-1]
    worker = Worker("bad-password", {**_base(secured_names), **client, "VES_STREAMS_ROLE": "process",
                                     "VES_STREAMS_KAFKA_PASSWORD": wrong}, tmp_path).start()  # fmt: skip
    assert _wait_exit(worker, 90) == 2
    output = worker.log_text()
    lines = [line for line in output.splitlines() if line.startswith("ves-streams: ")]
    assert len(lines) == 1, output[-3000:]
    assert "VES_STREAMS_KAFKA_PASSWORD" in lines[0] and client["VES_STREAMS_BROKER"].removeprefix("kafka://") in lines[0]
    assert "'ves-streams'" in lines[0]  # the user it tried
    assert wrong not in output and client["VES_STREAMS_KAFKA_PASSWORD"] not in output


def test_a_ca_that_did_not_sign_the_broker_stops_the_worker_naming_the_cafile(
    kafka_sasl_ssl: KafkaCluster, secured_names: Names, tmp_path: Path
) -> None:
    client = kafka_sasl_ssl.client_env()
    other = make_secrets(tmp_path / "other-ca")
    worker = Worker("bad-ca", {**_base(secured_names), **client, "VES_STREAMS_ROLE": "process",
                               "VES_STREAMS_KAFKA_SSL_CAFILE": str(other.ca_file)}, tmp_path).start()  # fmt: skip
    assert _wait_exit(worker, 90) == 2
    output = worker.log_text()
    lines = [line for line in output.splitlines() if line.startswith("ves-streams: ")]
    assert len(lines) == 1, output[-3000:]
    assert "VES_STREAMS_KAFKA_SSL_CAFILE" in lines[0] and str(other.ca_file) in lines[0]
    assert "certificate" in lines[0]
    assert client["VES_STREAMS_KAFKA_PASSWORD"] not in output
