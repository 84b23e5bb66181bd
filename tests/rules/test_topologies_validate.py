"""Every topology under topologies/ renders real collectd data into events ONAP accepts.

Each file renders the capture (a real collectd 5.12 host) and the synthetic
virt/node data; every event must validate against the official ONAP schema
of the VES version the topology declares (28.4.1 for VES 5, 30.2.1 for 7).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ves_streams.rules import DeterministicIds, RenderContext, load_topology

from .helpers import (
    CAPTURE_NOTIFICATIONS,
    CAPTURE_VALUES,
    NODE_VALUES,
    REPO,
    TOPOLOGIES,
    VES_OFFICIAL,
    VIRT_NOTIFICATIONS,
    VIRT_VALUES,
    render_events,
    validator,
)

ALL_TOPOLOGIES = sorted(TOPOLOGIES.rglob("*.yaml"))
DATASETS = {
    "capture": (CAPTURE_VALUES, CAPTURE_NOTIFICATIONS),
    "virt": (VIRT_VALUES, VIRT_NOTIFICATIONS),
    "node": (NODE_VALUES, VIRT_NOTIFICATIONS),
}


def render_all(path: Path, dataset: str) -> list[dict]:
    values, notes = DATASETS[dataset]
    topology = load_topology(path)
    now = time.time()
    ctx = RenderContext(hostname="ves-streams-test", interval=10.0, now=now, ids=DeterministicIds(now))
    return render_events(topology, values, notes, ctx, heartbeats=True)


def test_there_are_ves7_and_ves5_topologies():
    names = {p.relative_to(TOPOLOGIES).as_posix() for p in ALL_TOPOLOGIES}
    assert {"host.yaml", "guest.yaml", "hypervisor.yaml"} <= names
    assert {"ves5/host.yaml", "ves5/guest.yaml", "ves5/hypervisor.yaml", "ves5/node.yaml"} <= names


@pytest.mark.parametrize("dataset", sorted(DATASETS))
@pytest.mark.parametrize("path", ALL_TOPOLOGIES, ids=lambda p: p.relative_to(TOPOLOGIES).as_posix())
def test_topology_renders_events_the_official_schema_accepts(path, dataset):
    topology = load_topology(path)
    check = validator(topology.header.ves_major)
    events = render_all(path, dataset)
    for event in events:
        problems = [f"{list(e.absolute_path)}: {e.message}" for e in check.iter_errors(event)]
        assert problems == [], f"{path.name} on {dataset}: {problems[:3]}"


@pytest.mark.parametrize("name", ["host.yaml", "guest.yaml", "hypervisor.yaml"])
def test_ves7_topology_covers_measurement_fault_and_heartbeat_domains(name):
    path = TOPOLOGIES / name
    dataset = "virt" if name == "hypervisor.yaml" else "capture"
    events = render_all(path, dataset)
    domains = {e["event"]["commonEventHeader"]["domain"] for e in events}
    assert domains == {"measurement", "fault", "heartbeat"}
    for event in events:
        header = event["event"]["commonEventHeader"]
        assert header["vesEventListenerVersion"] == "7.2.1"
        assert header["version"] in ("4.0", "4.0.1", "4.1")
        assert isinstance(header["startEpochMicrosec"], int) and header["startEpochMicrosec"] > 10**15
        body = event["event"]
        if "measurementFields" in body:
            assert body["measurementFields"]["measurementFieldsVersion"] == "4.0"
            for named in body["measurementFields"].get("additionalMeasurements", []):
                assert set(named) == {"name", "hashMap"}
                assert all(isinstance(v, str) for v in named["hashMap"].values())
        if "faultFields" in body:
            assert body["faultFields"]["faultFieldsVersion"] == "4.0"
            assert body["faultFields"]["eventSeverity"] in ("CRITICAL", "MAJOR", "MINOR", "WARNING", "NORMAL")
        if "heartbeatFields" in body:
            assert body["heartbeatFields"]["heartbeatFieldsVersion"] == "3.0"
            assert body["heartbeatFields"]["heartbeatInterval"] == 60


def test_hypervisor_topology_renders_one_measurement_event_per_vm():
    events = render_all(TOPOLOGIES / "hypervisor.yaml", "virt")
    measured = [e["event"]["commonEventHeader"]["sourceName"] for e in events
                if e["event"]["commonEventHeader"]["domain"] == "measurement"]
    assert measured == ["instance-00000001", "instance-00000002"]


def test_ves7_host_measurements_carry_the_capture_in_kibibytes_and_percent(capture_samples):
    topology = load_topology(TOPOLOGIES / "host.yaml")
    (event,) = topology.render_measurements(capture_samples, RenderContext()).events
    fields = event.body["event"]["measurementFields"]
    (memory,) = fields["memoryUsageArray"]
    free = next(s for s in capture_samples if s.plugin == "memory" and s.type_instance == "free")
    assert memory["memoryFree"] == round(free.value / 1024, 3)
    cpu0 = next(c for c in fields["cpuUsageArray"] if c["cpuIdentifier"] == "0")
    busy = [s.value for s in capture_samples
            if s.plugin == "cpu" and s.plugin_instance == "0" and s.type_instance != "idle"]
    assert cpu0["percentUsage"] == pytest.approx(sum(busy), abs=1e-6)  # !SumItem rounds to 6 places
    names = {m["name"] for m in fields["additionalMeasurements"]}
    assert {"df-root", "swap", "uptime"} <= names and "memory" not in names


def test_committed_schemas_are_the_official_ones():
    shared = REPO.parent / "shared" / "reference" / "ves"
    for copy in VES_OFFICIAL.glob("*.json"):
        original = shared / copy.name
        if original.exists():
            assert copy.read_bytes() == original.read_bytes()
    assert sorted(p.name for p in VES_OFFICIAL.glob("*.json")) == [
        "CommonEventFormat_28.4.1.json",
        "CommonEventFormat_30.2.1_ONAP.json",
    ]
