"""State: series keys, Barometer aging with tombstones, the per-partition host index."""

from __future__ import annotations

from pathlib import Path

from ves_streams.collectd import ValueList
from ves_streams.state import (
    HostIndex,
    RocksDBPartitions,
    SampleStore,
    decode_host,
    decode_value_list,
    encode_host,
    encode_value_list,
    host_key,
    host_partition,
    is_expired,
    local_state_of,
    marker_key,
    series_key,
)


def vl(host: str = "h1", plugin: str = "cpu", ti: str = "idle", time: float = 100.0, interval: float = 10.0, value: float = 1.0) -> ValueList:
    return ValueList(host, plugin, "0", "percent", ti, time, interval, (value, None), ("gauge", "gauge"), ("value", "other"))


def test_value_list_round_trips_through_the_table_encoding() -> None:
    original = vl()
    assert decode_value_list(encode_value_list(original)) == original


def test_series_key_identifies_host_plugin_instances_and_type_only() -> None:
    assert series_key(vl(time=1)) == series_key(vl(time=2, value=9))
    assert series_key(vl(ti="idle")) != series_key(vl(ti="user"))
    assert series_key(vl(host="a")) != series_key(vl(host="b"))
    assert series_key(vl()) == b'["h1","cpu","0","percent","idle"]'


def test_aging_is_twice_the_interval() -> None:
    sample = vl(time=100.0, interval=10.0)
    assert not is_expired(sample, 119.9)
    assert is_expired(sample, 120.0)
    assert is_expired(sample, 120.1)


def test_aging_agrees_with_the_rule_engines_fresh_samples() -> None:
    from ves_streams.rules import fresh_samples

    for now in (105.0, 119.999, 120.0, 120.001, 150.0):
        sample = vl(time=100.0, interval=10.0)
        assert (fresh_samples(sample.samples(), now) == []) == is_expired(sample, now)


def test_host_partition_is_kafkas_default_partitioner() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    for host in ("compute-0", "compute-1", "höst", "a" * 300):
        expected = DefaultPartitioner()(host.encode(), list(range(4)), list(range(4)))
        assert host_partition(host, 4) == expected
    assert {host_partition(f"h{i}", 4) for i in range(100)} == {0, 1, 2, 3}


def test_store_keeps_the_newest_value_of_each_window_in_one_record_per_host() -> None:
    table: dict[bytes, bytes] = {}
    store = SampleStore(table, HostIndex(), interval=10)
    assert store.apply(0, [vl(time=101, value=1), vl(ti="user", time=101)]).held == 2
    assert store.apply(0, [vl(time=100.5, value=5)]).held == 0  # older in the same window: ignored
    assert store.apply(0, [vl(time=101, value=1)]).held == 0  # identical: nothing changes
    assert store.apply(0, [vl(time=112, value=2)]).held == 1
    assert [k for k, _ in store.take_changes(0)] == [host_key("h1")]
    assert list(table) == [host_key("h1")]
    [idle] = [h for h in decode_host(table[host_key("h1")]) if h[0].type_instance == "idle"]
    assert [v.values[0] for v in idle] == [1, 2]  # no window rendered yet
    assert [s.value for s in store.samples(0, "h1") if s.type_instance == "idle"] == [2]
    assert [s.value for s in store.samples(0, "h1", 110.0) if s.type_instance == "idle"] == [1]


def test_expiry_forgets_the_series_and_rewrites_or_tombstones_their_hosts() -> None:
    table: dict[bytes, bytes] = {}
    store = SampleStore(table, HostIndex())
    store.apply(1, [vl(time=100, interval=10), vl(ti="user", time=130, interval=10), vl(host="h2", time=100, interval=10)])
    store.take_changes(1)
    removed = store.expire(1, now=125.0)
    assert sorted(removed) == sorted([series_key(vl()), series_key(vl(host="h2"))])
    assert dict(store.take_changes(1))[host_key("h2")] is None
    assert list(table) == [host_key("h1")]
    assert [h[0].type_instance for h in decode_host(table[host_key("h1")])] == ["user"]
    assert store.index.hosts(1) == ["h1"]  # h2 has nothing left: gone from the index
    assert store.samples(1, "h2") == []


def test_index_rebuild_places_series_by_host_partition_and_keeps_markers() -> None:
    table: dict[bytes, bytes] = {}
    writer = SampleStore(table, HostIndex())
    hosts = [f"host-{i}" for i in range(20)]
    for host in hosts:
        writer.apply(host_partition(host, 4), [vl(host=host), vl(host=host, ti="user")])
    for partition in writer.dirty_partitions():
        writer.take_changes(partition)
    writer.set_marker(2, 1000.0)
    table[b"garbage"] = b"{not json"

    index = HostIndex()
    report = index.rebuild(table.items(), partitions=[0, 2], partition_of=lambda h: host_partition(h, 4))
    expected = sorted(h for h in hosts if host_partition(h, 4) in (0, 2))
    assert sorted(index.hosts(0) + index.hosts(2)) == expected
    assert index.hosts(1) == [] and index.hosts(3) == []
    assert report.series == 2 * len(expected)
    assert report.unreadable == 1
    assert index.marker(2) == 1000.0 and index.marker(0) is None
    assert marker_key(2) in table
    some = expected[0]
    p = host_partition(some, 4)
    assert len(index.value_lists(p, some)) == 2


def test_invalidated_index_is_not_built() -> None:
    index = HostIndex()
    index.rebuild([], [0], lambda h: 0)
    assert index.built
    index.invalidate()
    assert not index.built and index.partitions() == []


def test_samples_come_in_series_order_whatever_the_arrival_order() -> None:
    a = SampleStore({}, HostIndex())
    b = SampleStore({}, HostIndex())
    lists = [vl(ti=t) for t in ("user", "idle", "system")]
    a.apply(0, lists)
    b.apply(0, list(reversed(lists)))
    assert a.samples(0, "h1") == b.samples(0, "h1")
    assert [s.type_instance for s in a.samples(0, "h1") if s.ds_name == "value"] == ["idle", "system", "user"]


def test_keys_kept_in_the_index_cost_their_size_not_an_allocator_page() -> None:
    """orjson over-allocates its results; what the index keeps must be exact-size copies."""
    import tracemalloc

    from ves_streams.collectd import ValueList
    from ves_streams.state import series_key

    vls = [ValueList(f"host-{i}", "cpu", "0", "percent", "idle", 1.0, 10.0, (1.0,), ("gauge",), ("value",)) for i in range(2000)]
    tracemalloc.start()
    keys = [series_key(vl) for vl in vls]
    current, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(keys) == 2000
    assert current / len(keys) < 200, f"{current / len(keys):.0f} bytes per key"


# -- the samples stage's trusted decode -------------------------------------------


def _capture() -> list[bytes]:
    from ves_streams.resources import capture_dir

    path = capture_dir() / "compute-0.values.jsonl"
    return [line for line in path.read_bytes().splitlines() if line.strip()]


def test_trusted_decode_of_ingest_output_equals_the_full_parse_on_the_real_capture() -> None:
    from types import SimpleNamespace

    from ves_streams.stages.repartition import ingest_batch
    from ves_streams.collectd import parse_value_lists
    from ves_streams.state import decode_trusted_value_lists

    lines = _capture()
    messages = [SimpleNamespace(topic="collectd", partition=0, offset=i, key=None, value=v) for i, v in enumerate(lines)]
    batch = ingest_batch(messages, 4)
    assert batch.dead_letters == [] and batch.value_lists == len(lines)
    decoded = [vl for record in batch.records for vl in (decode_trusted_value_lists(record.value) or [])]
    assert decoded == [vl for record in batch.records for vl in parse_value_lists(record.value)]
    assert len(decoded) == len(lines)


def test_trusted_decode_declines_what_the_full_parser_would_normalise_or_refuse() -> None:
    import orjson

    from ves_streams.state import decode_trusted_value_lists

    good = {"values": [1.5], "dstypes": ["gauge"], "dsnames": ["value"], "time": 100.0, "interval": 10,
            "host": "h", "plugin": "cpu", "plugin_instance": "0", "type": "percent", "type_instance": "idle"}  # fmt: skip
    assert decode_trusted_value_lists(orjson.dumps([good])) is not None
    declined = [
        orjson.dumps(good),  # an object, not ingest's array
        orjson.dumps([{**good, "plugin_instance": None}]),  # the parser makes it ""
        orjson.dumps([{k: v for k, v in good.items() if k != "dstypes"}]),  # the parser defaults to gauge
        orjson.dumps([{**good, "values": [True]}]),
        orjson.dumps([{**good, "values": ["1"]}]),
        orjson.dumps([{**good, "time": "100"}]),
        orjson.dumps([{**good, "interval": 0}]),
        orjson.dumps([{**good, "host": ""}]),
        orjson.dumps([{**good, "values": [1, 2]}]),  # lengths differ
        b"[]",
        b"not json",
    ]
    assert [decode_trusted_value_lists(raw) for raw in declined] == [None] * len(declined)


def test_series_written_straight_to_a_faust_rocksdb_partition_read_back_through_faust(tmp_path: Path) -> None:
    """The fast path writes what Faust's own store reads: same bytes, the partition's own database."""
    import faust

    app = faust.App("state-test", store="rocksdb://", datadir=str(tmp_path))
    table = app.Table("samples-state", key_type=bytes, value_type=bytes, partitions=4)
    local = local_state_of(table.data)
    assert isinstance(local, RocksDBPartitions)
    store = SampleStore({}, HostIndex(), local)
    store.apply(2, [vl(time=100, interval=10), vl(ti="user", time=130, interval=10)])
    store.take_changes(2)
    assert table.data[host_key("h1")] == encode_host([(vl(time=100, interval=10),), (vl(ti="user", time=130, interval=10),)])
    assert sorted(table.data._dbs) == [2]  # nothing went to another partition's database
    assert store.expire(2, now=125.0) == [series_key(vl())]
    store.take_changes(2)
    assert [h[0].time for h in decode_host(table.data[host_key("h1")])] == [130]


def test_a_store_without_partition_databases_is_written_as_a_mapping() -> None:
    plain: dict[bytes, bytes] = {}
    store = SampleStore({}, HostIndex(), local_state_of(plain))
    store.apply(0, [vl(time=100)])
    store.take_changes(0)
    assert list(plain) == [host_key("h1")]
