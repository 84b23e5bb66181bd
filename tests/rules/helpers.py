"""Helpers for the rule engine tests: the capture, synthetic data, official VES schemas."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ves_streams.collectd import Notification, Sample, parse_notifications, parse_value_lists
from ves_streams.resources import capture_dir
from ves_streams.rules import RenderContext, Topology

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
CAPTURE_VALUES = capture_dir() / "compute-0.values.jsonl"
CAPTURE_NOTIFICATIONS = capture_dir() / "compute-0.notifications.jsonl"
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


def render_events(
    topology: Topology, values: Path, notes: Path, ctx: RenderContext, *, heartbeats: bool = False
) -> list[dict[str, Any]]:
    """Event bodies of one measurement tick over each host's latest samples of ``values`` (then, with
    ``heartbeats``, that host's heartbeat), then of each notification in ``notes``; all without errors."""
    events: list[dict[str, Any]] = []
    for host, samples in by_host(latest_samples(values)).items():
        results = [topology.render_measurements(samples, ctx)]
        if heartbeats:
            results.append(topology.render_heartbeat(host, ctx))
        for result in results:
            assert result.errors == []
            events += [e.body for e in result.events]
    for n in notifications(notes):
        result = topology.render_notification(n, ctx)
        assert result.errors == []
        events += [e.body for e in result.events]
    return events


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



VES_OFFICIAL = FIXTURES / "ves-official"
SCHEMA_FILES = {5: "CommonEventFormat_28.4.1.json", 7: "CommonEventFormat_30.2.1_ONAP.json"}


def schema_path(major: int) -> Path:
    """The official ONAP schema for a VES major version.

    ``shared/`` sits beside the clone in CI (``<repo>/../shared``); when it is
    there its copy is used, otherwise the copy committed under
    ``tests/fixtures/ves-official/`` (the two are checked to be identical).
    """
    name = SCHEMA_FILES[major]
    shared = REPO.parent / "shared" / "reference" / "ves" / name
    return shared if shared.exists() else VES_OFFICIAL / name


def validator(major: int) -> Any:
    import jsonschema

    schema = json.loads(schema_path(major).read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def load(text: str, name: str = "t.yaml") -> Any:
    """A topology from text (dedented)."""
    import textwrap

    from ves_streams.rules import loads_topology

    return loads_topology(textwrap.dedent(text), name)
