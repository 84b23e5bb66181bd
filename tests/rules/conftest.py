"""Shared helpers for the rule engine tests: the capture, synthetic data, schemas."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from ves_streams.collectd import Notification, Sample, parse_notifications, parse_value_lists

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
CAPTURE_VALUES = FIXTURES / "collectd" / "compute-0.values.jsonl"
CAPTURE_NOTIFICATIONS = FIXTURES / "collectd" / "compute-0.notifications.jsonl"
GOLDEN = FIXTURES / "golden"
VIRT_VALUES = GOLDEN / "inputs" / "virt.values.jsonl"
NODE_VALUES = GOLDEN / "inputs" / "node.values.jsonl"
VIRT_NOTIFICATIONS = GOLDEN / "inputs" / "virt.notifications.jsonl"
BAROMETER = FIXTURES / "barometer"
TOPOLOGIES = REPO / "topologies"


def latest_samples(path: Path) -> list[Sample]:
    """Every sample of a write_kafka capture, latest per series, in first-seen order."""
    latest: dict[tuple[str, ...], Sample] = {}
    for line in path.read_bytes().splitlines():
        for vl in parse_value_lists(line):
            for sample in vl.samples():
                latest[(sample.host, *sample.series)] = sample
    return list(latest.values())


def notifications(path: Path) -> list[Notification]:
    return [n for line in path.read_bytes().splitlines() for n in parse_notifications(line)]


def by_host(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}
    for s in samples:
        out.setdefault(s.host, []).append(s)
    return out


def as_sets(value: Any) -> Any:
    """Compare events as Barometer's tests would: eventId aside, arrays as sets."""
    if isinstance(value, dict):
        return {k: as_sets(v) for k, v in value.items() if k != "eventId"}
    if isinstance(value, list):
        return sorted((as_sets(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    return value


def sample(**fields: Any) -> Sample:
    """A sample with defaults for the fields a test does not care about."""
    base: dict[str, Any] = dict(
        host="h1", plugin="cpu", plugin_instance="0", type="percent", type_instance="idle",
        ds_name="value", value=1.0, time=1795300000.0, interval=10.0,
    )
    base.update(fields)
    return Sample(**base)


@pytest.fixture(scope="session")
def capture_samples() -> list[Sample]:
    return latest_samples(CAPTURE_VALUES)


@pytest.fixture(scope="session")
def capture_notifications() -> list[Notification]:
    return notifications(CAPTURE_NOTIFICATIONS)
