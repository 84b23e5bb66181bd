"""A real worker (``faust -A ves_streams worker``) on a real broker with topologies/host.yaml."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import orjson
import pytest

from tests.agents.conftest import INTERVAL
from tests.agents.support import KafkaIO, Names, Worker, host_messages, measurement_windows, notification

pytestmark = pytest.mark.integration


def test_values_become_measurement_events_and_a_notification_one_fault_event(
    start_worker: Callable[..., Worker], kafka_io: KafkaIO, names: Names
) -> None:
    start_worker()
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
    poisons_values = {
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
    # the original bytes are kept
    assert reasons["values: invalid utf-8"].value == poisons_values["invalid utf-8"]
    assert reasons["values: wrong shape"].value == poisons_values["wrong shape"]
    assert reasons["notifications: invalid utf-8"].value == poisons_notifications["invalid utf-8"]

    got = events.wait_for(
        lambda rs: {"good-before", "caf\ufffd"} <= set(measurement_windows(rs)), timeout=4 * INTERVAL + 5
    )
    assert got
    events.wait_for(lambda rs: len(rs) == 1, timeout=15, where=lambda r: r.domain == "fault" and r.key == b"good-after")
