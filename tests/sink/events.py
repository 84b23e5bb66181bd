"""VES 7 events for the sink's tests: valid per the project's schema, small, ordered by ``sequence``.

``event(domain, source, seq)`` builds one event whose ``eventId`` is
``"<source>-<domain>-<seq>"``, so a test can read order and identity back
from what the collector recorded.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ves_streams.sink.records import SinkRecord, parse_record

__all__ = ["event", "event_id", "record", "kafka_value", "kafka_headers"]


def event_id(domain: str, source: str, seq: int) -> str:
    return f"{source}-{domain}-{seq}"


def event(domain: str, source: str, seq: int, *, padding: int = 0) -> dict[str, Any]:
    """One VES 7.2 event of ``domain`` (heartbeat, fault or measurement) from ``source``."""
    now_us = int(time.time() * 1_000_000)
    header: dict[str, Any] = {
        "domain": domain,
        "eventId": event_id(domain, source, seq),
        "eventName": f"{domain}_ves_streams_test",
        "lastEpochMicrosec": now_us,
        "priority": "Normal",
        "reportingEntityName": source,
        "sequence": seq,
        "sourceName": source,
        "startEpochMicrosec": now_us,
        "version": "4.1",
        "vesEventListenerVersion": "7.2.1",
    }
    body: dict[str, Any] = {"commonEventHeader": header}
    if domain == "heartbeat":
        body["heartbeatFields"] = {"heartbeatFieldsVersion": "3.0", "heartbeatInterval": 10}
        if padding:
            body["heartbeatFields"]["additionalFields"] = {"padding": "x" * padding}
    elif domain == "fault":
        body["faultFields"] = {
            "faultFieldsVersion": "4.0",
            "alarmCondition": "test",
            "eventSeverity": "MINOR",
            "eventSourceType": "host",
            "specificProblem": "test problem",
            "vfStatus": "Active",
        }
        if padding:
            body["faultFields"]["alarmAdditionalInformation"] = {"padding": "x" * padding}
    elif domain == "measurement":
        body["measurementFields"] = {"measurementFieldsVersion": "4.0", "measurementInterval": 10}
        if padding:
            body["measurementFields"]["additionalFields"] = {"padding": "x" * padding}
    else:
        raise ValueError(f"no test event for domain {domain!r}")
    return body


def kafka_value(ev: dict[str, Any]) -> bytes:
    return orjson.dumps({"event": ev})


def kafka_headers(ev: dict[str, Any]) -> list[tuple[str, bytes]]:
    h = ev["commonEventHeader"]
    return [("ves-domain", h["domain"].encode()), ("ves-event-id", h["eventId"].encode()), ("ves-version", b"7")]


def record(domain: str, source: str, seq: int, *, offset: int = 0, partition: int = 0, padding: int = 0) -> SinkRecord:
    """A parsed record as the sink sees it, for the pure tests."""
    ev = event(domain, source, seq, padding=padding)
    parsed = parse_record(
        topic="ves-events",
        partition=partition,
        offset=offset,
        key=source.encode(),
        value=kafka_value(ev),
        headers=kafka_headers(ev),
        timestamp_ms=None,
    )
    assert isinstance(parsed, SinkRecord)
    return parsed
