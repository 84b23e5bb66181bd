"""The whole product: real collectd -> Kafka -> a ves-streams worker -> a real VES collector.

collectd (Debian collectd-core) publishes this machine's metrics with
write_kafka and its threshold notifications through write_http and the relay;
one worker runs processing and the sink (`VES_STREAMS_ROLE=all`) with
`topologies/host.yaml`; the collector validates every event against our VES 7
schema, and here every received event is checked again against ONAP's
official 30.2.1 schema.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import jsonschema
import pytest

from tests.agents.support import KafkaIO, Names, Worker
from tests.plugins.kafka import create_topics
from ves_streams.collectd import parse_notifications

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.broker_version]

ROOT = Path(__file__).resolve().parents[2]
OFFICIAL_V7 = ROOT / "tests" / "fixtures" / "ves-official" / "CommonEventFormat_30.2.1_ONAP.json"
INTERVAL = 2.0
HOST = "e2e-compute"


def _official_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(OFFICIAL_V7.read_text())
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft4Validator)
    return cls(schema)


def test_collectd_traffic_becomes_valid_ves7_events_at_the_collector(
    kafka, tmp_path, collectd_factory, notification_relay_factory, ves_collector
) -> None:
    names = Names.unique("e2e")
    create_topics(kafka.bootstrap_servers, [names.values, names.notifications], partitions=4)
    worker = Worker(
        "e2e",
        {
            **names.env(),
            "VES_STREAMS_BROKER": kafka.broker_url,
            "VES_STREAMS_INTERVAL": str(INTERVAL),
            "VES_STREAMS_ROLE": "all",
            "VES_STREAMS_TOPOLOGY": str(ROOT / "topologies" / "host.yaml"),
            "VES_STREAMS_COLLECTOR_URL": ves_collector.url,
            "VES_STREAMS_HOSTNAME": "ves-streams-e2e",
            "VES_STREAMS_SINK_LINGER_MS": "50",
            "VES_STREAMS_HEARTBEAT_INTERVAL": str(2 * INTERVAL),
        },
        tmp_path,
    )
    worker.start()
    collectd = None
    try:
        worker.wait_ready()
        relay_url = notification_relay_factory(kafka.bootstrap_servers, names.notifications)
        collectd = collectd_factory(
            bootstrap_servers=kafka.bootstrap_servers,
            values_topic=names.values,
            notification_url=relay_url,
            hostname=HOST,
            interval=INTERVAL,
        )

        def measurement_arrivals() -> list[float]:
            return [
                r["received_at"]
                for r in ves_collector.records()
                if r["event"]["commonEventHeader"]["domain"] == "measurement"
                and r["event"]["commonEventHeader"]["sourceName"] == HOST
            ]

        # Measurement events for the host, interval after interval.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(measurement_arrivals()) < 6:
            time.sleep(0.5)
        collectd.stop()
        collectd_stopped = time.time()
        arrivals = measurement_arrivals()
        assert len(arrivals) >= 6, f"only {len(arrivals)} measurement events:\n{worker.log_tail()}"
        gaps = [round(b - a, 2) for a, b in zip(arrivals, arrivals[1:])]
        print(f"measurement event gaps (s): {gaps}")
        # One event per interval; under load a render may slip, but never two intervals in a row.
        assert max(gaps) < 2 * INTERVAL + 1.0, f"the host went without a measurement event too long: {gaps}"
        samples_seen = {
            e["commonEventHeader"]["startEpochMicrosec"]
            for e in ves_collector.events()
            if e["commonEventHeader"]["domain"] == "measurement"
        }
        assert len(samples_seen) >= 4, "measurement events must carry fresh collectd samples, not one repeated snapshot"

        # Every notification collectd raised becomes exactly one fault event: a step of its alarm (one
        # eventId from raise to clear, VES 7.2), so an event is its eventId and sequence.
        io = KafkaIO(kafka.bootstrap_servers)
        try:
            reader = io.reader([names.notifications])
            time.sleep(3)
            raised = [n for r in reader.snapshot() for n in parse_notifications(r.value)]
        finally:
            io.close()
        assert raised, "collectd raised no notification (threshold misconfigured?)"

        def faults() -> list[dict]:
            return [e for e in ves_collector.events() if e["commonEventHeader"]["domain"] == "fault"]

        def steps() -> Counter[tuple[str, int]]:
            return Counter((f["commonEventHeader"]["eventId"], f["commonEventHeader"]["sequence"]) for f in faults())

        ves_collector.wait_for(lambda _events: len(steps()) >= len(raised), timeout=30)
        time.sleep(2 * INTERVAL)
        fault_ids = steps()
        assert len(fault_ids) == len(raised), f"{len(raised)} notifications but {len(fault_ids)} distinct fault events"
        assert all(count == 1 for count in fault_ids.values()), f"duplicated fault events: {fault_ids.most_common(3)}"
        first = faults()[0]
        assert first["faultFields"]["alarmCondition"]
        assert first["commonEventHeader"]["sourceName"] == HOST

        # Heartbeats for the reporting host.
        heartbeats = [e for e in ves_collector.events() if e["commonEventHeader"]["domain"] == "heartbeat"]
        assert heartbeats and heartbeats[0]["commonEventHeader"]["sourceName"] == HOST

        # Everything the collector accepted is valid VES 7 for ONAP's own schema too.
        validator = _official_validator()
        for event in ves_collector.events():
            errors = [e.message for e in validator.iter_errors({"event": event})]
            assert not errors, f"official 30.2.1 schema rejects {event['commonEventHeader']}: {errors[:3]}"
        assert time.time() - collectd_stopped < 120
    finally:
        if collectd is not None:
            collectd.stop()
        worker.stop()
        print(f"\n===== worker log (tail) =====\n{worker.log_tail(40)}")
