"""The API the streaming agents code against: header, ids, heartbeats, aging, event records."""

from __future__ import annotations

import dataclasses
import textwrap
import threading

import pytest

from ves_streams.collectd import Notification
from ves_streams.rules import (
    CounterIds,
    DeterministicIds,
    RenderContext,
    RenderedEvent,
    RenderResult,
    Topology,
    TopologyHeader,
    fresh_samples,
    load_topology,
)

from .helpers import BAROMETER, TOPOLOGIES, load, sample

RULES = textwrap.dedent("""
    M: !Measurements
      - SELECT: {plugin: cpu}
      - ITEM-DESC:
          event:
            commonEventHeader: {domain: measurement, eventId: "{system.id}", sourceName: "{vl.host}"}
            again: "{system.id}"
    E: !Events
      - ITEM-DESC:
          event:
            commonEventHeader: {domain: fault, eventId: "{system.id}", sourceName: "{n.host}"}
    H: !Heartbeat
      - ITEM-DESC:
          event:
            commonEventHeader: {domain: heartbeat, eventId: "{system.id}", sourceName: "{hb.host}"}
            heartbeatFields: {heartbeatInterval: !Number "{hb.interval}"}
    """)
NOTE = Notification("compute-0", "load", "", "load", "", "NOTIF_WARNING", "high", 1795300000.25)
SAMPLES = [sample(plugin_instance="0"), sample(plugin_instance="1")]


def test_header_keys_and_defaults():
    topology = load(textwrap.dedent("""
        ves-streams:
          name: edge
          values_topic: edge-values
          notifications_topic: edge-notes
          events_topic: edge-ves
          interval: 10
          heartbeat_interval: 30
          event_ids: counter
          sink: {batch_size: 20, path: /eventListener/v7}
        """) + RULES, "edge.yaml")
    h = topology.header
    assert isinstance(h, TopologyHeader)
    assert (h.name, h.ves_version, h.values_topic, h.notifications_topic, h.events_topic) == (
        "edge", "7.2.1", "edge-values", "edge-notes", "edge-ves")
    assert (h.interval, h.heartbeat_interval, h.event_ids, h.source_path) == (10.0, 30.0, "counter", "edge.yaml")
    assert dict(h.sink) == {"batch_size": 20, "path": "/eventListener/v7"}
    with pytest.raises(TypeError):
        h.sink["batch_size"] = 1  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        h.name = "x"  # type: ignore[misc]


def test_barometer_file_without_header_runs_with_defaults():
    h = load_topology(BAROMETER / "host.yaml").header
    assert (h.name, h.ves_version, h.values_topic, h.notifications_topic, h.events_topic) == (
        "host", "5.4.1", "collectd", "collectd-notifications", "ves-events")
    assert (h.interval, h.heartbeat_interval, dict(h.sink), h.event_ids) == (None, None, {}, None)


def test_header_without_version_means_ves_7():
    assert load("ves-streams: {name: x}\n" + RULES).header.ves_version == "7.2.1"


def test_has_flags():
    topology = load(RULES)
    assert (topology.has_measurements, topology.has_events, topology.has_heartbeat) == (True, True, True)
    barometer = load_topology(BAROMETER / "host.yaml")
    assert (barometer.has_measurements, barometer.has_events, barometer.has_heartbeat) == (True, False, False)
    assert barometer.render_heartbeat("compute-0", RenderContext()) == RenderResult()


def test_rendered_event_carries_rule_body_domain_source_and_id():
    topology = load(RULES)
    result = topology.render_measurements(SAMPLES[:1], RenderContext(ids=CounterIds()))
    assert result.events == [RenderedEvent(
        rule="M",
        body={"event": {"commonEventHeader": {"domain": "measurement", "eventId": "1", "sourceName": "h1"},
                        "again": "2"}},
        domain="measurement", source_name="h1", event_id="1",
    )]


def test_counter_ids_count_every_read_across_events_like_barometer():
    topology = load(RULES)
    ctx = RenderContext(ids=CounterIds())
    ids = [e.event_id for e in topology.render_measurements(SAMPLES, ctx).events]
    ids += [e.event_id for e in topology.render_notification(NOTE, ctx).events]
    assert ids == ["1", "3", "5"]


def test_counter_ids_are_unique_across_threads():
    ids = CounterIds()
    got: list[int | str] = []
    lock = threading.Lock()

    def take() -> None:
        source = ids.for_heartbeat("H", "h")
        values = [source() for _ in range(1000)]
        with lock:
            got.extend(values)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 4001))


def test_deterministic_ids_repeat_on_replay_and_differ_per_item_host_rule_and_interval():
    topology = load(RULES)

    def ids(samples, start: float) -> list[str]:
        ctx = RenderContext(ids=DeterministicIds(interval_start=start))
        return [e.event_id for e in topology.render_measurements(samples, ctx).events]

    first = ids(SAMPLES, 1000.0)
    assert first == ids(SAMPLES, 1000.0)  # replay
    assert len(set(first)) == 2 and all(len(i) == 32 for i in first)
    assert first != ids(SAMPLES, 1010.0)  # next interval
    assert ids([sample(host="other")], 1000.0)[0] not in first
    body = topology.render_measurements(SAMPLES[:1], RenderContext(ids=DeterministicIds(1000.0))).events[0].body
    assert body["event"]["commonEventHeader"]["eventId"] == body["event"]["again"]  # one id per event


def test_deterministic_ids_of_notifications_depend_on_content():
    topology = load(RULES)
    ctx = RenderContext(ids=DeterministicIds())
    a = topology.render_notification(NOTE, ctx).events[0].event_id
    assert a == topology.render_notification(NOTE, RenderContext(ids=DeterministicIds(5.0))).events[0].event_id
    changed = dataclasses.replace(NOTE, message="higher")
    assert topology.render_notification(changed, ctx).events[0].event_id != a


def test_heartbeat_renders_host_and_whole_second_interval():
    topology = load("ves-streams: {heartbeat_interval: 59.6}\n" + RULES)
    result = topology.render_heartbeat("compute-0", RenderContext(interval=10.0))
    (event,) = result.events
    assert event.domain == "heartbeat" and event.source_name == "compute-0" and event.rule == "H"
    assert event.body["event"]["heartbeatFields"] == {"heartbeatInterval": 60}


def test_heartbeat_interval_defaults_to_the_header_then_context_interval():
    assert load(RULES).heartbeat_interval(10.0) == 10
    assert load("ves-streams: {interval: 5}\n" + RULES).heartbeat_interval(10.0) == 5


def test_deterministic_heartbeat_ids_are_per_host_and_interval():
    topology = load(RULES)
    one = topology.render_heartbeat("a", RenderContext(ids=DeterministicIds(100.0))).events[0].event_id
    assert one == topology.render_heartbeat("a", RenderContext(ids=DeterministicIds(100.0))).events[0].event_id
    assert one != topology.render_heartbeat("b", RenderContext(ids=DeterministicIds(100.0))).events[0].event_id


def test_fresh_samples_drops_what_was_not_updated_within_two_intervals():
    now = 1000.0
    samples = [sample(time=now - 5, interval=10), sample(time=now - 19.9, interval=10),
               sample(time=now - 20, interval=10), sample(time=now - 30, interval=20)]
    assert fresh_samples(samples, now) == [samples[0], samples[1], samples[3]]
    assert fresh_samples(samples, now, interval=15) == [samples[0], samples[1], samples[2]]


def test_empty_samples_render_nothing():
    assert load(RULES).render_measurements([], RenderContext()) == RenderResult()


def test_topology_is_reusable_and_shareable_between_threads():
    topology = load_topology(TOPOLOGIES / "host.yaml")
    assert isinstance(topology, Topology)
    results: list[int] = []

    def render() -> None:
        for _ in range(20):
            results.append(len(topology.render_measurements(SAMPLES, RenderContext()).events))

    threads = [threading.Thread(target=render) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [0] * 80  # no memory sample: the host rule selects nothing, and nothing breaks


def test_public_api_names():
    import ves_streams.rules as rules

    for name in ("load_topology", "Topology", "TopologyHeader", "RenderContext", "RenderResult",
                 "RenderedEvent", "RuleError", "RenderError", "CounterIds", "DeterministicIds", "fresh_samples"):
        assert name in rules.__all__ and hasattr(rules, name)
