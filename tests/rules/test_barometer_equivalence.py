"""Barometer's own mapping files give, here, the events Barometer's normalizer gave.

The golden files were produced by running OPNFV Barometer's ``normalizer.py``
over the same inputs (see ``tests/fixtures/golden/README.md``). Events are
compared with the eventId aside and arrays as sets: Barometer builds INDEX-KEY
arrays from a Python ``set``, so their order is arbitrary there.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ves_streams.rules import CounterIds, RenderContext, load_topology

from .helpers import (
    BAROMETER,
    CAPTURE_NOTIFICATIONS,
    CAPTURE_VALUES,
    GOLDEN,
    NODE_VALUES,
    VIRT_NOTIFICATIONS,
    VIRT_VALUES,
    as_sets,
    render_events,
)

CASES = [
    ("host", CAPTURE_VALUES, CAPTURE_NOTIFICATIONS, "host.compute-0.jsonl"),
    ("guest", CAPTURE_VALUES, CAPTURE_NOTIFICATIONS, "guest.compute-0.jsonl"),
    ("node", CAPTURE_VALUES, CAPTURE_NOTIFICATIONS, "node.compute-0.jsonl"),
    ("hypervisor", CAPTURE_VALUES, CAPTURE_NOTIFICATIONS, "hypervisor.compute-0.jsonl"),
    ("hypervisor", VIRT_VALUES, VIRT_NOTIFICATIONS, "hypervisor.virt.jsonl"),
    ("node", NODE_VALUES, VIRT_NOTIFICATIONS, "node.node.jsonl"),
]


def render_like_barometer(name: str, values: Path, notes: Path) -> list[dict]:
    """One measurement tick over the latest samples, then each notification, one shared counter."""
    topology = load_topology(BAROMETER / f"{name}.yaml")
    ctx = RenderContext(hostname="localhost", interval=20.0, ids=CounterIds())
    return render_events(topology, values, notes, ctx)


@pytest.mark.parametrize(("name", "values", "notes", "golden"), CASES, ids=[c[3] for c in CASES])
def test_barometer_file_renders_the_events_barometer_rendered(name, values, notes, golden):
    expected = [json.loads(line) for line in (GOLDEN / golden).read_text().splitlines()]
    # Per host here, per rule in Barometer: with several hosts only the order of events differs.
    assert as_sets(render_like_barometer(name, values, notes)) == as_sets(expected)


def test_golden_files_are_not_trivially_empty():
    counts = {g: len((GOLDEN / g).read_text().splitlines()) for *_, g in CASES}
    assert counts["host.compute-0.jsonl"] == 1
    assert counts["guest.compute-0.jsonl"] == 12  # 1 measurement + 11 faults
    assert counts["hypervisor.virt.jsonl"] == 5  # 2 VMs + 3 faults
    assert counts["node.node.jsonl"] == 4  # host, guest, 2 VMs


def test_event_ids_follow_barometers_counter_in_event_order():
    events = render_like_barometer("guest", CAPTURE_VALUES, CAPTURE_NOTIFICATIONS)
    expected = [json.loads(line) for line in (GOLDEN / "guest.compute-0.jsonl").read_text().splitlines()]
    ids = [e["event"]["commonEventHeader"]["eventId"] for e in events]
    assert ids == [e["event"]["commonEventHeader"]["eventId"] for e in expected]
    assert ids == [str(i) for i in range(1, 13)]
