"""Alarms through the real pipeline: relay or unkeyed producer -> Kafka -> a worker -> a real VES collector.

VES 7.2 (commonEventHeader eventId, startEpochMicrosec, sequence, "EventId
Use Cases Examples"): one alarm's raises, severity changes and clear share
its eventId and startEpochMicrosec with a strictly increasing sequence, the
clear is NORMAL, and the next raise after the clear is a new alarm. Both
notification shapes: collectd 5.9+'s JSON through ``ves-streams relay``
(keyed by host), and Barometer's flat shape produced without a key to any
partition, as Barometer's patched write_kafka did (the fault stage forwards
it to its host's partition). Every event is checked against ONAP's official
30.2.1 schema. ``GET /alarms`` lists the open alarm; ``ves-streams alarms
resend`` repeats it with the next sequence.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import requests

from tests.agents.support import Names, Worker
from tests.plugins.kafka import create_topics

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
OFFICIAL_V7 = ROOT / "tests" / "fixtures" / "ves-official" / "CommonEventFormat_30.2.1_ONAP.json"
PARTITIONS = 4
T0 = 1796630400.0  # 2026-12-07T08:00:00Z


def collectd_json(host: str, severity: str, t: float) -> bytes:
    """collectd 5.9+'s write_http JSON (Format "JSON", Notifications true)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(round((t % 1) * 1e9)):09d}Z"
    return orjson.dumps([{
        "labels": {"alertname": "collectd_cpu_percent", "instance": host, "cpu": "0", "type": "user",
                   "severity": severity},
        "annotations": {"summary": f"Host {host}, plugin cpu (instance 0) type percent (instance user): "
                                   "Data source \"value\" is currently 97.0. That is above the failure threshold of 90.0.",
                        "DataSource": "value", "CurrentValue": "97.0", "FailureMax": "90.0"},
        "startsAt": stamp,
    }])  # fmt: skip


def flat(host: str, severity: str, t: float) -> bytes:
    """Barometer's flat shape (its patched write_kafka)."""
    return orjson.dumps({"host": host, "plugin": "cpu", "plugin_instance": "0", "type": "percent", "type_instance": "user",
                         "severity": severity, "message": "cpu user above 90 %", "time": t})  # fmt: skip


def produce_to(bootstrap: str, topic: str, value: bytes, partition: int) -> None:
    """One unkeyed record to ``partition``, acknowledged."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(topic, value, key=None, partition=partition)
        finally:
            await producer.stop()

    asyncio.run(send())


def _validator() -> Any:
    schema = json.loads(OFFICIAL_V7.read_text())
    return jsonschema.validators.validator_for(schema, default=jsonschema.Draft4Validator)(schema)


def _faults_of(collector: Any, host: str) -> list[dict[str, Any]]:
    return [e for e in collector.events() if e["commonEventHeader"]["domain"] == "fault"
            and e["commonEventHeader"]["sourceName"] == host]  # fmt: skip


def _assert_lifecycle(faults: list[dict[str, Any]]) -> None:
    """Raise, re-raise, severity change, clear, new raise: the VES 7.2 lifecycle."""
    h = [f["commonEventHeader"] for f in faults]
    first, after = h[:4], h[4]
    assert len({x["eventId"] for x in first}) == 1, f"one alarm, one eventId: {[x['eventId'] for x in first]}"
    assert len({x["startEpochMicrosec"] for x in first}) == 1
    assert [x["sequence"] for x in first] == [0, 1, 2, 3]
    assert [x["lastEpochMicrosec"] for x in first] == sorted(x["lastEpochMicrosec"] for x in first)
    assert [f["faultFields"]["eventSeverity"] for f in faults] == ["CRITICAL", "CRITICAL", "WARNING", "NORMAL", "CRITICAL"]
    assert after["eventId"] != first[0]["eventId"] and after["sequence"] == 0
    assert after["startEpochMicrosec"] > first[0]["startEpochMicrosec"]
    validator = _validator()
    for fault in faults:
        errors = [e.message for e in validator.iter_errors({"event": fault})]
        assert not errors, f"official 30.2.1 schema rejects {fault['commonEventHeader']}: {errors[:3]}"


def _send_in_turn(collector: Any, host: str, send: Callable[[bytes], None], bodies: list[bytes]) -> None:
    """Send each body once the previous one's fault event arrived (an unkeyed producer gives no order)."""
    for n, body in enumerate(bodies, start=1):
        send(body)
        collector.wait_for(lambda _e, n=n: len(_faults_of(collector, host)) >= n, timeout=60)


def test_an_alarms_raises_and_clear_share_its_eventid_and_the_next_raise_is_a_new_alarm(
    kafka: Any, tmp_path: Path, notification_relay_factory: Any, ves_collector: Any
) -> None:
    names = Names.unique("alarms")
    create_topics(kafka.bootstrap_servers, [names.values, names.notifications], partitions=PARTITIONS)
    worker = Worker("alarms", {
        **names.env(), "VES_STREAMS_BROKER": kafka.broker_url, "VES_STREAMS_ROLE": "all",
        "VES_STREAMS_TOPOLOGY": str(ROOT / "topologies" / "host.yaml"), "VES_STREAMS_COLLECTOR_URL": ves_collector.url,
        "VES_STREAMS_HOSTNAME": "ves-streams-e2e", "VES_STREAMS_SINK_LINGER_MS": "20",
    }, tmp_path)  # fmt: skip
    worker.start()
    try:
        worker.wait_ready()
        relay = notification_relay_factory(kafka.bootstrap_servers, names.notifications)
        severities = ["FAILURE", "FAILURE", "WARNING", "OKAY", "FAILURE"]

        # collectd 5.9+ JSON through the relay, keyed by host: posted back to back, order kept by Kafka
        for i, severity in enumerate(severities):
            requests.post(relay, data=collectd_json("alarm-json", severity, T0 + 10 * i), timeout=10).raise_for_status()
        ves_collector.wait_for(lambda _e: len(_faults_of(ves_collector, "alarm-json")) >= 5, timeout=60)
        _assert_lifecycle(_faults_of(ves_collector, "alarm-json"))

        # Barometer's flat shape, unkeyed, to every partition in turn: forwarded to the host's partition
        partition = iter(range(100))
        _send_in_turn(ves_collector, "alarm-flat",
                      lambda body: produce_to(kafka.bootstrap_servers, names.notifications, body, next(partition) % PARTITIONS),
                      [flat("alarm-flat", s, T0 + 10 * i) for i, s in enumerate(severities)])  # fmt: skip
        _assert_lifecycle(_faults_of(ves_collector, "alarm-flat"))

        # the open alarms (the second one of each host), on any worker
        listed = worker.get("/alarms").json()
        open_ids = {a["host"]: a for a in listed["alarms"]}
        for host in ("alarm-json", "alarm-flat"):
            newest = _faults_of(ves_collector, host)[4]["commonEventHeader"]
            assert open_ids[host]["eventId"] == newest["eventId"] and open_ids[host]["sequence"] == 0
            assert open_ids[host]["severity"] == "NOTIF_FAILURE"

        metrics = worker.get("/metrics").text
        assert "ves_streams_active_alarms 2.0" in metrics and "ves_streams_unmatched_clears_total 0.0" in metrics

        # resend: the latest event of each open alarm again, same eventId, next sequence
        subprocess.run([sys.executable, "-m", "ves_streams.cli", "alarms", "resend", "--broker", kafka.bootstrap_servers,
                        "--topic", names.notifications], check=True, timeout=60, env=worker.env)  # fmt: skip
        for host in ("alarm-json", "alarm-flat"):
            ves_collector.wait_for(lambda _e, host=host: len(_faults_of(ves_collector, host)) >= 6, timeout=60)
            newest, resent = (f["commonEventHeader"] for f in _faults_of(ves_collector, host)[4:6])
            assert (resent["eventId"], resent["startEpochMicrosec"], resent["sequence"]) == (
                newest["eventId"], newest["startEpochMicrosec"], 1)
    finally:
        worker.stop()
        print(f"\n===== worker log (tail) =====\n{worker.log_tail(40)}")
