"""``ves-streams dlq list`` / ``dlq redrive`` against a real broker, the real sink and the project's collector."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import orjson
import pytest

from ves_streams.dlq_commands import DlqRecord, RedriveFilter
from ves_streams.sink.config import CollectorConfig
from ves_streams.sink.service import SinkService

from tests.plugins.collector import PROJECT_DIR, VesCollector
from tests.plugins.kafka import new_topic_name
from tests.sink.events import event, event_id
from tests.sink.test_service import _config, _produce, _read_dlq, _topics, _wait_committed, _wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _record(reason: str, timestamp: float, **headers: str) -> DlqRecord:
    pairs = [("ves-streams-reason", reason.encode())] + [(k.replace("_", "-"), v.encode()) for k, v in headers.items()]
    return DlqRecord(0, 0, int(timestamp * 1000), b"k", b"{}", tuple(pairs))


def test_the_filters_choose_by_reason_and_time() -> None:
    record = _record("collector refused the events with 400: SVC0002", 1000.0)
    assert RedriveFilter().matches(record)
    assert RedriveFilter(reason="svc0002").matches(record)
    assert not RedriveFilter(reason="poisoned").matches(record)
    assert RedriveFilter(since=1000.0, until=1000.5).matches(record)
    assert not RedriveFilter(since=1000.5).matches(record) and not RedriveFilter(until=1000.0).matches(record)


def test_a_dead_letter_without_its_whole_message_is_never_republished() -> None:
    assert not RedriveFilter().matches(_record("cut", 1.0, ves_streams_original_size="2000000"))
    # a measurement's render error is a report (its samples are in the state, its window gone)
    assert not RedriveFilter().matches(_record("render", 1.0, ves_streams_rule="host.yaml:3", ves_streams_stage="measurements"))
    assert not RedriveFilter().matches(_record("render", 1.0, ves_streams_rule="host.yaml:3"))


def test_a_notification_a_rule_could_not_render_is_republished_once_the_rule_file_is_fixed() -> None:
    """Its render error keeps the notification whole: re-published to its topic, the fixed rule renders it."""
    assert RedriveFilter().matches(_record("render", 1.0, ves_streams_rule="host.yaml:40", ves_streams_stage="fault"))
    assert not RedriveFilter().matches(
        _record("render", 1.0, ves_streams_rule="host.yaml:40", ves_streams_stage="fault", ves_streams_original_size="9")
    )


def _cli(kafka: Any, app_id: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, VES_STREAMS_BROKER=f"kafka://{kafka.bootstrap_servers}", VES_STREAMS_APP_ID=app_id)
    return subprocess.run([sys.executable, "-m", "ves_streams.cli", "dlq", *args], capture_output=True, text=True,
                          timeout=120, cwd=PROJECT_DIR, env=env)  # fmt: skip


def test_redrive_delivers_each_dead_lettered_event_once_and_a_second_run_sends_nothing(
    kafka: Any, ves_collector: VesCollector
) -> None:
    topic, dlq = _topics(kafka, "redrive", partitions=2)
    sent = [event("fault", f"host-{i % 3}", i) for i in range(12)]
    bad = [event_id("fault", "host-1", 4), event_id("fault", "host-2", 8)]
    ves_collector.control(reject_event_ids=bad)
    config = _config(kafka, topic, CollectorConfig(url=ves_collector.url))
    app_id = new_topic_name("redrive-app")

    async def first_pass() -> None:
        await _produce(kafka.bootstrap_servers, topic, sent)
        async with SinkService(config):
            await _wait_for(ves_collector, len(sent) - 2)
            assert len(await _read_dlq(kafka.bootstrap_servers, dlq, 2)) == 2
            await _wait_committed(kafka.bootstrap_servers, config.group_id, topic)

    asyncio.run(first_pass())
    listed = _cli(kafka, app_id, "list", "--topic", dlq)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith(f"2 dead letters in {dlq}")
    assert "refused" in listed.stdout and "400" in listed.stdout

    ves_collector.control(reset=True)  # the cause is fixed
    none_yet = _cli(kafka, app_id, "redrive", "--topic", dlq, "--reason", "no such reason")
    assert none_yet.returncode == 0 and "re-published 0 dead letters" in none_yet.stdout, none_yet.stdout
    since = time.time() - 3600
    redriven = _cli(kafka, app_id, "redrive", "--topic", dlq, "--since", str(since))
    assert redriven.returncode == 0, redriven.stderr
    assert "re-published 2 dead letters" in redriven.stdout, redriven.stdout
    again = _cli(kafka, app_id, "redrive", "--topic", dlq)
    assert "re-published 0 dead letters" in again.stdout, "the first run committed what it re-published"

    async def second_pass() -> None:
        async with SinkService(config):
            await _wait_for(ves_collector, len(sent))
            await _wait_committed(kafka.bootstrap_servers, config.group_id, topic)
            await asyncio.sleep(1)

    asyncio.run(second_pass())
    ids = [e["commonEventHeader"]["eventId"] for e in ves_collector.events()]
    assert sorted(ids) == sorted(e["commonEventHeader"]["eventId"] for e in sent), "every event once, the redriven too"
    redriven_events = [r for r in ves_collector.records() if r["event"]["commonEventHeader"]["eventId"] in bad]
    assert len(redriven_events) == 2
    assert all("ves-streams" not in orjson.dumps(r["event"]).decode() for r in redriven_events)
