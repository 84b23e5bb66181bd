"""The renderer the agents use, over the real rule engine and topologies/host.yaml."""

from __future__ import annotations

import orjson
import pytest

from tests.agents.support import capture_round
from ves_streams.stages.render import TopologyRenderer
from ves_streams.collectd import Notification, parse_value_lists
from ves_streams.identity import Interval
from ves_streams.rules import load_topology
from ves_streams.resources import topologies_dir


@pytest.fixture(scope="module")
def topology():  # type: ignore[no-untyped-def]
    return load_topology(topologies_dir() / "host.yaml")


def samples(host: str, t: float):  # type: ignore[no-untyped-def]
    out = []
    for raw in capture_round():
        item = orjson.loads(raw)
        item.update(host=host, time=t, interval=10.0)
        for vl in parse_value_lists(orjson.dumps([item])):
            out.extend(vl.samples())
    return out


def test_same_window_renders_the_same_event_id_and_the_next_window_another(topology) -> None:  # type: ignore[no-untyped-def]
    r = TopologyRenderer(topology, hostname="w", interval=10.0, ves_version="7.2.1")
    s = samples("compute-0", 995.0)
    a = r.measurements("compute-0", s, Interval(990.0, 1000.0))
    b = r.measurements("compute-0", s, Interval(990.0, 1000.0))
    c = r.measurements("compute-0", s, Interval(1000.0, 1010.0))
    assert [e.event_id for e in a.events] == [e.event_id for e in b.events]
    assert {e.event_id for e in a.events}.isdisjoint(e.event_id for e in c.events)
    assert a.events[0].source_name == "compute-0" and a.events[0].domain == "measurement"


def test_stale_samples_render_nothing(topology) -> None:  # type: ignore[no-untyped-def]
    r = TopologyRenderer(topology, hostname="w", interval=10.0, ves_version="7.2.1")
    assert r.measurements("compute-0", samples("compute-0", 900.0), Interval(990.0, 1000.0)).events == []


def test_heartbeat_interval_is_the_topologys_unless_overridden(topology) -> None:  # type: ignore[no-untyped-def]
    default = TopologyRenderer(topology, hostname="w", interval=10.0, ves_version="7.2.1")
    assert default.heartbeat_interval == 60.0
    beat = default.heartbeat("h", 1020.0, Interval(1010.0, 1020.0)).events[0]
    assert beat.body["event"]["heartbeatFields"]["heartbeatInterval"] == 60

    override = TopologyRenderer(topology, hostname="w", interval=10.0, ves_version="7.2.1", heartbeat_interval=20.0)
    assert override.heartbeat_interval == 20.0
    beat = override.heartbeat("h", 1020.0, Interval(1010.0, 1020.0)).events[0]
    assert beat.body["event"]["heartbeatFields"]["heartbeatInterval"] == 20
    assert topology.heartbeat_interval(10.0) == 60  # the shared topology is left as it was


def test_notification_renders_one_fault_with_a_content_derived_id(topology) -> None:  # type: ignore[no-untyped-def]
    r = TopologyRenderer(topology, hostname="w", interval=10.0, ves_version="7.2.1")
    n = Notification("compute-0", "cpu", "0", "percent", "user", "NOTIF_WARNING", "hot", 1000.5)
    first, again = r.notification(n), r.notification(n)
    assert len(first.events) == 1 and first.events[0].domain == "fault"
    assert first.events[0].event_id == again.events[0].event_id


def test_a_rule_engine_exception_becomes_a_render_error(topology) -> None:  # type: ignore[no-untyped-def]
    class Broken:
        header = topology.header
        has_measurements = has_events = True
        has_heartbeat = False

        def render_notification(self, n, ctx):  # type: ignore[no-untyped-def]
            raise ZeroDivisionError("boom")

    r = TopologyRenderer(Broken(), hostname="w", interval=10.0, ves_version="7.2.1")
    result = r.notification(Notification("h", "cpu", "", "t", "", "NOTIF_OKAY", "", 1.0))
    assert result.events == [] and "ZeroDivisionError: boom" in result.errors[0].reason
