"""The app: what each VES_STREAMS_ROLE defines, start-up errors, and a sink-only worker on a broker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.agents.conftest import INTERVAL
from tests.agents.support import PROJECT_DIR, KafkaIO, Names, Worker, host_messages
from ves_streams.app import PRODUCER_LINGER, create_app, load_settings
from ves_streams.runtime import faust_compat


def _app(role: str):  # type: ignore[no-untyped-def]
    settings, topology = load_settings({"VES_STREAMS_ROLE": role, "VES_STREAMS_APP_ID": f"roles-{role}"})
    return settings, create_app(settings, topology if settings.role.processes else None)


def test_process_role_defines_the_agents_and_the_state_table_but_no_sink() -> None:
    _, app = _app("process")
    assert sorted(app.agents) == ["ves_streams.measurements"]
    assert list(app.tables) == ["samples-state"]
    # ingest and faults are stage loops in groups of their own, started by the worker like the sink;
    # faults on the side loop (a thread of its own), so that no fault waits behind ingest's bursts
    [ingest, side] = faust_compat.extra_services(app)
    assert type(side).__name__ == "SideLoop"
    [faults] = side.services
    assert type(ingest).__name__ == type(faults).__name__ == "StageLoop"
    assert type(ingest.handler).__name__ == "ValuesHandler" and type(faults.handler).__name__ == "FaultsHandler"
    assert (ingest.group_id, ingest.topic) == ("roles-process-ingest", "collectd")
    # faults: the same kind of loop, apart and with small batches, so no fault waits behind value lists
    assert (faults.group_id, faults.topic) == ("roles-process-faults", "collectd-notifications")
    assert faults.max_batch < ingest.max_batch
    assert app.conf.producer_linger == PRODUCER_LINGER  # batches produce requests (Faust's default is 0)


def test_sink_role_defines_no_agent_and_no_table() -> None:
    _, app = _app("sink")
    assert list(app.agents) == []
    assert list(app.tables) == []
    assert app.producer_only  # no Kafka consumer at all in this worker's Faust app
    [side] = faust_compat.extra_services(app)
    assert [type(s).__name__ for s in side.services] == ["SinkService"]


def test_all_role_processes_and_sinks() -> None:
    settings, app = _app("all")
    assert list(app.agents) == ["ves_streams.measurements"]
    [ingest, side] = faust_compat.extra_services(app)
    assert type(ingest).__name__ == "StageLoop" and ingest.loop_name == "ingest"
    # faults and the sink share the side loop's thread, away from ingest's bursts and the renders
    assert [type(s).__name__ for s in side.services] == ["StageLoop", "SinkService"]
    sink = side.services[1]
    assert sink.config.events_topic == settings.events_topic
    assert sink.config.group_id == f"{settings.app_id}-sink"


@pytest.mark.integration
def test_sink_only_worker_does_not_consume_the_processing_topics(
    kafka, start_worker: Callable[..., Worker], kafka_io: KafkaIO, names: Names  # type: ignore[no-untyped-def]
) -> None:
    worker = start_worker("sink-only", VES_STREAMS_ROLE="sink", VES_STREAMS_COLLECTOR_URL="http://127.0.0.1:9")
    assert worker.get("/health").status_code == 200
    events = kafka_io.reader([names.events])
    kafka_io.produce_many(names.values, host_messages("ignored", time.time(), interval=60.0))
    time.sleep(3 * INTERVAL)
    assert events.snapshot() == []

    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    async def groups() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
        await admin.start()
        try:
            return [g[0] for g in await admin.list_consumer_groups()]
        finally:
            await admin.close()

    listed = asyncio.run(groups())
    assert names.app_id not in listed  # the processing group was never joined
    assert f"{names.app_id}-ingest" not in listed  # nor ingest's
    assert f"{names.app_id}-faults" not in listed
    assert f"{names.app_id}-sink" in listed  # the sink's own group


def _worker_exits(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("VES_STREAMS_")}
    return subprocess.run(
        [sys.executable, "-m", "faust", "-A", "ves_streams", "worker", "-l", "info"],
        env={**base, "PYTHONPATH": str(PROJECT_DIR), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_invalid_setting_stops_the_worker_at_start_naming_it() -> None:
    done = _worker_exits(
        {"VES_STREAMS_INTERVAL": "abc", "VES_STREAMS_COLLECTOR_PASSWORD": "hunter2", "VES_STREAMS_COLLECTOR_USERNAME": "u"}
    )
    assert done.returncode == 2
    assert "ves-streams: VES_STREAMS_INTERVAL: must be a positive number of seconds, got 'abc'" in done.stderr
    assert "Traceback" not in done.stderr
    assert "hunter2" not in done.stderr + done.stdout


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"VES_STREAMS_KAFKA_SASL_MECHANISM": "PLAIN", "VES_STREAMS_KAFKA_USERNAME": "k",
          "VES_STREAMS_KAFKA_PASSWORD": "kafka-hunter2"}, "VES_STREAMS_KAFKA_SECURITY_PROTOCOL"),
        ({"VES_STREAMS_COLLECTOR_URL": "http://collector:30000", "VES_STREAMS_COLLECTOR_USERNAME": "u",
          "VES_STREAMS_COLLECTOR_PASSWORD": "collector-hunter2"}, "VES_STREAMS_COLLECTOR_URL"),
    ],
    ids=["sasl-without-tls", "basic-over-http"],
)  # fmt: skip
def test_credentials_in_clear_stop_the_worker_at_start_naming_the_setting(env: dict[str, str], named: str) -> None:
    done = _worker_exits(env)
    assert done.returncode == 2
    assert f"ves-streams: {named}: " in done.stderr
    assert "Traceback" not in done.stderr
    assert "hunter2" not in done.stderr + done.stdout


def test_broken_topology_stops_the_worker_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("Host Measurements: !Measurements\n  - ITEM-DESC: [unclosed\n")
    done = _worker_exits({"VES_STREAMS_TOPOLOGY": str(bad)})
    assert done.returncode == 2
    assert f"ves-streams: {bad}:" in done.stderr
    assert "Traceback" not in done.stderr


def test_kafka_sasl_and_tls_settings_reach_faust(tmp_path: Path) -> None:
    import faust

    from tests.plugins.collector import make_self_signed
    from ves_streams.runtime.kafka import KafkaConnection
    from ves_streams.settings import Settings

    def _kafka_credentials(settings: Settings) -> object:
        return KafkaConnection.from_settings(settings).faust_credentials()

    ca = make_self_signed(tmp_path).cert
    settings = Settings.from_env(
        {
            "VES_STREAMS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
            "VES_STREAMS_KAFKA_USERNAME": "ves",
            "VES_STREAMS_KAFKA_PASSWORD": "kafka-hunter2",
            "VES_STREAMS_KAFKA_SSL_CAFILE": str(ca),
        }
    )
    credentials = _kafka_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.mechanism.value == "SCRAM-SHA-256"
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.username == "ves" and credentials.password == "kafka-hunter2"
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert "kafka-hunter2" not in repr(settings)
    assert _kafka_credentials(Settings.from_env({})) is None


def test_state_table_is_stored_in_rocksdb_through_rocksdict(tmp_path: Path) -> None:
    settings, topology = load_settings({"VES_STREAMS_ROLE": "process", "VES_STREAMS_DATA_DIR": str(tmp_path)})
    app = create_app(settings, topology)
    store = app.tables["samples-state"].data
    assert type(store).__module__ == "faust.stores.rocksdb"
    assert store.use_rocksdict
    assert app.tables["samples-state"].changelog_topic.get_topic_name() == "ves-streams-samples-state-changelog"
    assert str(tmp_path) in str(store.path)


def test_the_state_databases_are_opened_with_small_write_buffers_and_block_cache(tmp_path: Path) -> None:
    # Faust's defaults (3 x 64 MB write buffers, a 2 GB block cache, per partition) let RSS grow for hours
    settings, topology = load_settings({"VES_STREAMS_ROLE": "process", "VES_STREAMS_DATA_DIR": str(tmp_path)})
    store = create_app(settings, topology).tables["samples-state"].data
    options = store.rocksdb_options
    assert (options.write_buffer_size, options.max_write_buffer_number, options.block_cache_size) == (
        1024 * 1024, 2, 1024 * 1024,
    )  # fmt: skip
    db = faust_compat.partition_db_opener(store)(0)  # the database the worker really opens, with those options
    db[b"k"] = b"v"
    assert db[b"k"] == b"v"
