"""A real worker (``faust -A ves_streams worker``) on a real broker with topologies/host.yaml."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from tests.agents.conftest import INTERVAL
from tests.agents.support import PROJECT_DIR, KafkaIO, Names, Worker, host_messages, measurement_windows, notification

pytestmark = pytest.mark.integration


def test_values_become_measurement_events_and_a_notification_one_fault_event(
    start_worker: Callable[..., Worker], kafka_io: KafkaIO, names: Names, worker_dir: Path
) -> None:
    # The topology sets the heartbeat interval: host.yaml with 4 s instead of 60 s.
    topology = worker_dir / "host-hb4.yaml"
    topology.write_text((PROJECT_DIR / "topologies/host.yaml").read_text().replace("heartbeat_interval: 60", "heartbeat_interval: 4"))
    start_worker(VES_STREAMS_TOPOLOGY=str(topology))
    events = kafka_io.reader([names.events])
    hosts = ["compute-a", "compute-b", "compute-c"]
    sent_at = time.time()
    for host in hosts:
        kafka_io.produce_many(names.values, host_messages(host, time.time(), interval=60.0))

    # Within two render intervals of the values (plus the next boundary), every host has a measurement event.
    got = events.wait_for(
        lambda rs: set(measurement_windows(rs)) >= set(hosts), timeout=3 * INTERVAL + 5, where=lambda r: r.domain == "measurement"
    )
    first = {r.key: r.received for r in reversed(got)}
    assert max(first.values()) - sent_at < 3 * INTERVAL + 1.5
    for record in got:
        body = record.json()
        header = body["event"]["commonEventHeader"]
        assert record.key == header["sourceName"].encode()  # keyed by sourceName
        assert record.event_id == header["eventId"]
        assert record.headers["ves-version"] == b"7.2.1"
        assert header["reportingEntityName"] == "ves-streams-test"
        assert body["event"]["measurementFields"]["additionalMeasurements"]
    # one measurement event per host per window: the eventId identifies (host, window)
    by_id = Counter(r.event_id for r in events.snapshot(lambda r: r.domain == "measurement"))
    windows = {(r.key, r.interval_start) for r in events.snapshot(lambda r: r.domain == "measurement")}
    assert len(by_id) == len(windows)

    # Heartbeats: one per reporting host on every multiple of the heartbeat interval (4 s here).
    beats = events.wait_for(lambda rs: {r.key for r in rs} >= {h.encode() for h in hosts}, timeout=15,
                            where=lambda r: r.domain == "heartbeat")  # fmt: skip
    for beat in beats:
        assert beat.interval_start is not None and beat.interval_start % 4 == 0
        assert beat.json()["event"]["heartbeatFields"]["heartbeatInterval"] == 4
    assert len({(b.key, b.interval_start) for b in beats}) == len({b.event_id for b in beats}) == len(beats)

    kafka_io.produce(names.notifications, notification("compute-b", time.time()))
    faults = events.wait_for(lambda rs: len(rs) >= 1, timeout=15, where=lambda r: r.domain == "fault")
    time.sleep(2 * INTERVAL)  # nothing more arrives for it
    faults = events.snapshot(lambda r: r.domain == "fault")
    assert len(faults) == 1
    fault = faults[0].json()["event"]
    assert faults[0].key == b"compute-b"
    assert fault["commonEventHeader"]["sourceName"] == "compute-b"
    assert fault["faultFields"]["eventSeverity"] == "CRITICAL"


def test_poison_messages_are_dead_lettered_while_good_traffic_flows(
    start_worker: Callable[..., Worker], kafka_io: KafkaIO, names: Names
) -> None:
    """Malformed input on both topics lands in the DLQ with reasons; the good messages around it are processed.

    This would fail with a JSON ``value_serializer`` on the input topics (Faust
    acknowledges and skips a record it cannot decode: no dead letter, no
    trace) and with an agent that raises on bad input (the record's offset is
    skipped, and a crashed agent stops the good messages after it).
    """
    start_worker()
    events = kafka_io.reader([names.events])
    dlq = kafka_io.reader([names.dlq])

    deep = b"[" * 200 + b"]" * 200
    # just under collectd's 1 MiB input limit: its samples record would be over the samples topic's
    # max.message.bytes (the broker's default), refused on every retry, and ingest would stall
    n = 74_800
    huge = {**orjson.loads(host_messages("huge", time.time(), 60.0)[0])[0], "values": [1] * n,
            "dsnames": ["v"] * n, "dstypes": ["gauge"] * n}  # fmt: skip
    poisons_values = {
        "just under 1 MiB": orjson.dumps([huge]),
        "not json": b"this is not json",
        "wrong shape": orjson.dumps([{"values": [1], "host": "x"}]),
        "10 MB": b"[" + b" " * (10 * 1024 * 1024) + b"]",
        "deep": deep,
        "invalid utf-8": b"\xff\xfe\xfd garbage \xc3\x28",
        "empty": b"",
    }
    poisons_notifications = {
        "not json": b"{nope",
        "wrong shape": orjson.dumps({"host": "h", "severity": "LOUD", "time": 1}),
        "deep": deep,
        "invalid utf-8": b"\x80\x81\x82",
    }
    now = time.time()
    good_before = host_messages("good-before", now, interval=60.0)
    kafka_io.produce_many(names.values, good_before[: len(good_before) // 2])
    sources = {}
    for label, raw in poisons_values.items():
        meta = kafka_io.produce(names.values, raw)
        sources[(names.values, meta.partition, meta.offset)] = f"values: {label}"
    kafka_io.produce_many(names.values, good_before[len(good_before) // 2 :])
    for label, raw in poisons_notifications.items():
        meta = kafka_io.produce(names.notifications, raw)
        sources[(names.notifications, meta.partition, meta.offset)] = f"notifications: {label}"
    # A Latin-1 byte in a host name is collectd's doing, not an attack: kept, decoded as U+FFFD.
    latin1 = [m.replace(b'"host":"good-after"', b'"host":"caf\xe9"') for m in host_messages("good-after", now, 60.0)]
    kafka_io.produce_many(names.values, latin1)
    kafka_io.produce(names.notifications, notification("good-after", time.time()))

    letters = dlq.wait_for(lambda rs: len(rs) >= len(sources), timeout=30)
    assert len(letters) == len(sources)
    for letter in letters:
        topic = letter.headers["ves-streams-source-topic"].decode()
        key = (topic, int(letter.headers["ves-streams-source-partition"]), int(letter.headers["ves-streams-source-offset"]))
        assert key in sources, key
        assert letter.headers["ves-streams-reason"]
        assert letter.headers["ves-streams-stage"] in (b"values", b"notifications")
    reasons = {sources[(l.headers["ves-streams-source-topic"].decode(), int(l.headers["ves-streams-source-partition"]),
                        int(l.headers["ves-streams-source-offset"]))]: l for l in letters}  # fmt: skip
    assert b"not JSON" in reasons["values: not json"].headers["ves-streams-reason"]
    assert b"not JSON" in reasons["notifications: not json"].headers["ves-streams-reason"]
    assert b"exceeds" in reasons["values: 10 MB"].headers["ves-streams-reason"]
    assert int(reasons["values: 10 MB"].headers["ves-streams-original-size"]) > 10 * 1024 * 1024
    assert b"nested deeper" in reasons["values: deep"].headers["ves-streams-reason"]
    assert b"nested deeper" in reasons["notifications: deep"].headers["ves-streams-reason"]
    assert b"unknown severity" in reasons["notifications: wrong shape"].headers["ves-streams-reason"]
    assert b"empty" in reasons["values: empty"].headers["ves-streams-reason"]
    assert b"max.message.bytes 1048588" in reasons["values: just under 1 MiB"].headers["ves-streams-reason"]
    # the original bytes are kept
    assert reasons["values: invalid utf-8"].value == poisons_values["invalid utf-8"]
    assert reasons["values: wrong shape"].value == poisons_values["wrong shape"]
    assert reasons["notifications: invalid utf-8"].value == poisons_notifications["invalid utf-8"]

    got = events.wait_for(
        lambda rs: {"good-before", "caf\ufffd"} <= set(measurement_windows(rs)), timeout=4 * INTERVAL + 5
    )
    assert got
    events.wait_for(lambda rs: len(rs) == 1, timeout=15, where=lambda r: r.domain == "fault" and r.key == b"good-after")


def test_health_ready_and_metrics_views(start_worker: Callable[..., Worker], kafka_io: KafkaIO, names: Names) -> None:
    worker = start_worker()
    events = kafka_io.reader([names.events])
    kafka_io.produce_many(names.values, host_messages("metered", time.time(), interval=60.0))
    kafka_io.produce(names.values, b"poison")
    events.wait_for(lambda rs: "metered" in measurement_windows(rs), timeout=4 * INTERVAL + 5)
    assert worker.get("/health").json() == {"status": "up"}
    ready = worker.get("/ready")
    assert ready.status_code == 200 and ready.json()["checks"] == {"ingest": "ok", "faults": "ok", "processing": "ok", "kafka": "ok"}
    deadline = time.time() + 10
    while True:
        text = worker.get("/metrics").text
        lines = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line and not line.startswith("#")}
        if lines.get('ves_streams_dead_letters_total{stage="values"}') == 1.0 or time.time() > deadline:
            break
        time.sleep(0.5)
    assert lines[f'ves_streams_messages_in_total{{topic="{names.values}"}}'] == len(host_messages("x", 0, 1)) + 1
    assert lines['ves_streams_events_out_total{domain="measurement"}'] >= 1
    assert lines['ves_streams_dead_letters_total{stage="values"}'] == 1.0
    assert lines["ves_streams_hosts"] == 1.0
    assert any(k.startswith("ves_streams_consumer_lag{") and names.values in k for k in lines)  # ingest's own group
    assert any(k.startswith("ves_streams_render_seconds_bucket") for k in lines)
