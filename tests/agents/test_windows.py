"""Event-time windows: each window renders its own samples, whatever the tick's delay.

These pin :class:`~ves_streams.state.SampleStore`'s windowed state on plain
mappings (no broker): what a window holds, what a late tick renders, what a
late sample does, and that a rebuilt index renders what the live one did.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.rules.helpers import BAROMETER, GOLDEN, as_sets
from tests.rules.helpers import notifications as rule_notifications
from tests.rules.test_barometer_equivalence import CASES
from ves_streams.collectd import Sample, ValueList, parse_value_lists
from ves_streams.identity import next_boundary
from ves_streams.rules import CounterIds, RenderContext, load_topology
from ves_streams.state import (
    HostIndex,
    SampleStore,
    decode_held,
    decode_host,
    encode_held,
    host_key,
    needed,
    series_key,
)

INTERVAL = 10.0


def vl(time: float, value: float, ti: str = "idle", host: str = "h1", interval: float = INTERVAL) -> ValueList:
    return ValueList(host, "cpu", "0", "percent", ti, time, interval, (value,), ("gauge",), ("value",))


def idle(store: SampleStore, end: float, host: str = "h1", partition: int = 0) -> list[float]:
    return [s.value for s in store.samples(partition, host, end) if s.type_instance == "idle"]


def render(store: SampleStore, end: float, partition: int = 0) -> dict[str, list[float]]:
    """What a tick at ``end`` renders, as the agent does it: expire, take samples, move the marker."""
    store.expire(partition, end)
    out = {host: [s.value for s in store.samples(partition, host, end)] for host in store.index.hosts(partition)}
    store.set_marker(partition, end)
    return out


def test_a_tick_two_intervals_late_renders_each_window_from_its_own_samples() -> None:
    store = SampleStore({}, HostIndex(), interval=INTERVAL)
    store.set_marker(0, 100.0)
    # three rounds arrive before the tick for 110 (a backlog, a takeover)
    for t, v in ((105.0, 1.0), (115.0, 2.0), (125.0, 3.0)):
        store.apply(0, [vl(t, v)])
    assert render(store, 110.0) == {"h1": [1.0]}
    assert render(store, 120.0) == {"h1": [2.0]}
    assert render(store, 130.0) == {"h1": [3.0]}


def test_samples_of_the_next_window_never_appear_in_this_one() -> None:
    store = SampleStore({}, HostIndex(), interval=INTERVAL)
    store.apply(0, [vl(105.0, 1.0), vl(110.0, 2.0), vl(119.9, 3.0)])  # 110.0 is the next window's first instant
    assert idle(store, 110.0) == [1.0]
    assert idle(store, 120.0) == [3.0]  # the newest of its own window


def test_a_series_without_a_sample_in_the_window_renders_its_last_fresh_value_as_barometer_does() -> None:
    store = SampleStore({}, HostIndex(), interval=INTERVAL)
    store.apply(0, [vl(105.0, 1.0), vl(105.0, 7.0, ti="user")])
    assert render(store, 110.0) == {"h1": [1.0, 7.0]}
    store.apply(0, [vl(115.0, 2.0)])  # "user" did not report in [110, 120)
    assert render(store, 120.0) == {"h1": [2.0, 7.0]}
    # a value is fresh for twice its interval: at 130 the "user" sample of 105 has aged out
    store.apply(0, [vl(125.0, 3.0)])
    assert render(store, 130.0) == {"h1": [3.0]}


def test_a_late_sample_is_counted_and_not_rendered_in_another_window() -> None:
    store = SampleStore({}, HostIndex(), interval=INTERVAL)
    store.apply(0, [vl(105.0, 1.0)])
    render(store, 110.0)
    render(store, 120.0)  # [110, 120) rendered with the carried 105 sample
    applied = store.apply(0, [vl(115.0, 2.0)])  # its window is gone
    assert applied.late == 1 and applied.held == 0
    store.apply(0, [vl(125.0, 3.0)])
    assert render(store, 130.0) == {"h1": [3.0]}


def test_a_replayed_sample_older_than_what_was_rendered_is_not_late() -> None:
    store = SampleStore({}, HostIndex(), interval=INTERVAL)
    store.apply(0, [vl(95.0, 0.0)])
    store.apply(0, [vl(105.0, 1.0)])
    render(store, 110.0)
    applied = store.apply(0, [vl(95.0, 0.0), vl(105.0, 1.0)])  # at-least-once replay after a restart
    assert applied.late == 0 and applied.held == 0


def test_rendered_windows_are_dropped_but_the_carried_value_kept_until_a_newer_window_has_its_own() -> None:
    table: dict[bytes, bytes] = {}
    store = SampleStore(table, HostIndex(), interval=INTERVAL)
    store.apply(0, [vl(105.0, 1.0), vl(115.0, 2.0)])
    render(store, 110.0)
    key = series_key(vl(0, 0))
    assert [v.time for v in store.index.held(0, "h1", key)] == [105.0, 115.0]
    render(store, 120.0)  # its expiry pass trims what [110, 120) no longer needs
    assert [v.time for v in store.index.held(0, "h1", key)] == [115.0]
    store.apply(0, [vl(135.0, 4.0)])  # [120, 130) has no sample of its own: 115 is still needed
    assert [v.time for v in written(store, table, key)] == [115.0, 135.0]
    render(store, 130.0)
    store.apply(0, [vl(136.0, 5.0)])
    assert [v.time for v in written(store, table, key)] == [136.0]  # [130, 140) has its own: nothing older needed


def written(store: SampleStore, table: dict[bytes, bytes], key: bytes, host: str = "h1") -> tuple[ValueList, ...]:
    """What the table holds for a series once the store wrote its host's record."""
    store.take_changes(0)
    [held] = [h for h in decode_host(table[host_key(host)]) if series_key(h[0]) == key]
    return held


def test_needed_keeps_the_newest_rendered_value_only_while_the_next_window_has_none() -> None:
    a, b, c = vl(101.0, 1), vl(111.0, 2), vl(121.0, 3)
    assert needed((a, b, c), None, INTERVAL) == (a, b, c)
    assert needed((a, b, c), 120.0, INTERVAL) == (c,)
    assert needed((a, b), 120.0, INTERVAL) == (b,)
    assert needed((a, c), 110.0, INTERVAL) == (a, c)  # [110, 120) has nothing of its own: a carries it


def test_a_series_holds_at_most_keep_windows() -> None:
    store = SampleStore({}, HostIndex(), interval=INTERVAL, keep=3)
    store.apply(0, [vl(100.0 + 10 * i + 1, float(i)) for i in range(6)])
    assert [v.values[0] for v in store.index.held(0, "h1", series_key(vl(0, 0)))] == [3.0, 4.0, 5.0]


def test_a_series_with_a_sample_ahead_is_not_expired() -> None:
    store = SampleStore({}, HostIndex(), interval=INTERVAL)
    store.apply(0, [vl(101.0, 1.0), vl(131.0, 4.0)])
    assert store.expire(0, 130.0) == []
    assert idle(store, 130.0) == [1.0]  # held, but the rule engine's aging drops it as Barometer does
    assert idle(store, 140.0) == [4.0]


def test_a_rebuilt_index_renders_what_the_live_one_did() -> None:
    table: dict[bytes, bytes] = {}
    live = SampleStore(table, HostIndex(), interval=INTERVAL)
    live.apply(0, [vl(105.0, 1.0, host="a"), vl(105.0, 1.5, host="b")])
    render(live, 110.0)
    live.apply(0, [vl(115.0, 2.0, host="a"), vl(125.0, 3.0, host="a"), vl(117.0, 2.5, host="b")])
    live.take_changes(0)  # as the agent's changelog flush does
    index = HostIndex()
    index.rebuild(table.items(), [0], lambda h: 0)
    recovered = SampleStore(table, index, interval=INTERVAL)
    assert recovered.marker(0) == 110.0
    for end in (120.0, 130.0):
        assert render(recovered, end) == render(live, end)


def test_the_table_of_an_earlier_release_is_read_as_one_held_value_list() -> None:
    from ves_streams.state import encode_value_list

    old = vl(105.0, 1.0)
    assert decode_held(encode_value_list(old)) == (old,)


def _through_windows(path: Path) -> dict[str, list[Sample]]:
    """Each host's samples for the window after a capture's last value list, the capture having
    been applied in time order with every window before it ticked (expired, rendered, marked).

    Windows are collectd's interval long, as an operator configures them."""
    value_lists = sorted((vl for line in path.read_bytes().splitlines() for vl in parse_value_lists(line)),
                         key=lambda v: v.time)  # fmt: skip
    interval = value_lists[0].interval
    store = SampleStore({}, HostIndex(), interval=interval)
    boundary = next_boundary(value_lists[0].time, interval)
    for vl in value_lists:
        while vl.time >= boundary:
            render(store, boundary)
            boundary = next_boundary(boundary, interval)
        store.apply(0, [vl])
    store.expire(0, boundary)
    return {host: store.samples(0, host, boundary) for host in store.index.hosts(0)}


@pytest.mark.parametrize(("name", "values", "notes", "golden"), CASES, ids=[c[3] for c in CASES])
def test_barometer_files_render_through_the_windowed_state_what_barometer_rendered(name, values, notes, golden):  # type: ignore[no-untyped-def]
    """The recorded capture, held window by window, renders in its last window Barometer's events."""
    topology = load_topology(BAROMETER / f"{name}.yaml")
    ctx = RenderContext(hostname="localhost", interval=20.0, ids=CounterIds())
    events = []
    for host_samples in _through_windows(values).values():
        result = topology.render_measurements(host_samples, ctx)
        assert result.errors == []
        events += [e.body for e in result.events]
    events += [e.body for n in rule_notifications(notes) for e in topology.render_notification(n, ctx).events]
    expected = [json.loads(line) for line in (GOLDEN / golden).read_text().splitlines()]
    assert as_sets(events) == as_sets(expected)


def test_a_hosts_series_are_written_as_one_record_once_per_flush() -> None:
    table: dict[bytes, bytes] = {}
    store = SampleStore(table, HostIndex(), interval=INTERVAL)
    for ti in ("idle", "user", "system"):  # three samples records, as ingest packs them
        store.apply(0, [vl(105.0, 1.0, ti=ti)])
    store.apply(0, [vl(105.0, 1.0, host="h2")])
    records = store.take_changes(0)
    assert [k for k, _ in records] == [host_key("h1"), host_key("h2")]
    assert sorted(h[0].type_instance for h in decode_host(table[host_key("h1")])) == ["idle", "system", "user"]
    assert store.take_changes(0) == []  # nothing changed since
    store.apply(0, [vl(105.0, 1.0, ti="user")])  # a replay changes nothing
    assert store.take_changes(0) == []


def test_a_host_whose_series_all_aged_out_gets_a_tombstone() -> None:
    table: dict[bytes, bytes] = {}
    store = SampleStore(table, HostIndex(), interval=INTERVAL)
    store.apply(0, [vl(101.0, 1.0), vl(101.0, 2.0, host="h2"), vl(125.0, 3.0, host="h2", ti="user")])
    store.take_changes(0)
    assert sorted(store.expire(0, 130.0)) == sorted([series_key(vl(0, 0)), series_key(vl(0, 0, host="h2"))])
    records = dict(store.take_changes(0))
    assert records[host_key("h1")] is None and host_key("h1") not in table
    assert [h[0].type_instance for h in decode_host(records[host_key("h2")])] == ["user"]


def test_an_earlier_releases_series_records_are_read_and_replaced_by_host_records() -> None:
    from ves_streams.state import encode_value_list

    old = {series_key(vl(105.0, 1.0)): encode_value_list(vl(105.0, 1.0)),
           series_key(vl(105.0, 2.0, ti="user")): encode_held((vl(105.0, 2.0, ti="user"),))}  # fmt: skip
    table = dict(old)
    index = HostIndex()
    report = index.rebuild(table.items(), [0], lambda h: 0)
    store = SampleStore(table, index, interval=INTERVAL)
    store.adopt(report)
    assert idle(store, 110.0) == [1.0]
    records = store.take_changes(0)
    assert sorted(k for k, v in records if v is None) == sorted(old)  # tombstones: compaction forgets them
    assert list(table) == [host_key("h1")]
    assert len(decode_host(table[host_key("h1")])) == 2
