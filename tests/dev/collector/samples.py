"""Small valid VES events for the collector tests (the schema corpus lives in tests/test_ves_schema.py)."""

from __future__ import annotations

import itertools
from typing import Any

_ids = itertools.count(1)


def header7(domain: str, *, event_id: str | None = None, source: str = "compute-0") -> dict[str, Any]:
    return {
        "domain": domain,
        "eventId": event_id or f"{domain}-{source}-{next(_ids)}",
        "eventName": f"{domain}_{source}",
        "lastEpochMicrosec": 1700000010000000,
        "priority": "Normal",
        "reportingEntityName": source,
        "sequence": 0,
        "sourceName": source,
        "startEpochMicrosec": 1700000000000000,
        "version": "4.1",
        "vesEventListenerVersion": "7.2.1",
    }


def measurement7(**header: Any) -> dict[str, Any]:
    return {
        "commonEventHeader": header7("measurement", **header),
        "measurementFields": {
            "measurementFieldsVersion": "4.0",
            "measurementInterval": 10,
            "cpuUsageArray": [{"cpuIdentifier": "0", "percentUsage": 12.5}],
            "additionalMeasurements": [{"name": "load", "hashMap": {"shortterm": "0.5"}}],
        },
    }


def fault7(**header: Any) -> dict[str, Any]:
    return {
        "commonEventHeader": header7("fault", **header),
        "faultFields": {
            "faultFieldsVersion": "4.0",
            "alarmCondition": "cpu-usage-high",
            "eventSeverity": "MAJOR",
            "eventSourceType": "host",
            "specificProblem": "CPU usage above 90%",
            "vfStatus": "Active",
        },
    }


def heartbeat7(**header: Any) -> dict[str, Any]:
    return {
        "commonEventHeader": header7("heartbeat", **header),
        "heartbeatFields": {"heartbeatFieldsVersion": "3.0", "heartbeatInterval": 60},
    }


def measurement5(source: str = "compute-0") -> dict[str, Any]:
    return {
        "commonEventHeader": {
            "domain": "measurementsForVfScaling",
            "eventId": f"mvfs-{source}-{next(_ids)}",
            "eventName": f"measurementsForVfScaling_{source}",
            "lastEpochMicrosec": 1500000010000000,
            "priority": "Normal",
            "reportingEntityName": source,
            "sequence": 0,
            "sourceName": source,
            "startEpochMicrosec": 1500000000000000,
            "version": 3.0,
        },
        "measurementsForVfScalingFields": {
            "measurementsForVfScalingVersion": 2.0,
            "measurementInterval": 10,
            "additionalMeasurements": [{"name": "load", "arrayOfFields": [{"name": "shortterm", "value": "0.5"}]}],
        },
    }
