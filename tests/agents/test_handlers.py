"""Agent handlers without the Faust runtime: a pipeline whose producing is recorded.

These pin the logic the agents run per record -- decoding and dead-lettering,
repartitioning, tick rendering with backfill and de-duplication, aging --
with a stub renderer. The integration tests run the same code in real
workers against a real broker and the real rule engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from faust.types import TP

from ves_streams.wire import deadletter
from ves_streams.stages.faults import fault_outputs
from ves_streams.stages.repartition import ingest_batch, ingest_batch_yielding, samples_records
from ves_streams.agents.measurements import handle_samples, render_partition
from ves_streams.wire.samples import Tick, decode_tick, encode_tick
from ves_streams.agents.pipeline import Pipeline
from ves_streams.stages.render import Rendered, RenderFailure
from ves_streams.collectd import MalformedInput, Notification, Sample, parse_value_lists
from ves_streams.identity import Interval
from ves_streams.metrics import Metrics
from ves_streams.settings import Settings
from ves_streams.state import MappingState, decode_host, host_key, marker_key, series_key
from ves_streams.wire.samples import host_partition
from ves_streams.wire.samples import HEADER_KIND, KIND_TICK


@dataclass
class Event:
    body: Any
    domain: str
    source_name: str
    event_id: str
    rule: str = "rule"


@dataclass
class StubRenderer:
    ves_version: str = "7.2.1"
    has_measurements: bool = True
    has_heartbeat: bool = True
    heartbeat_interval: float | None = 60.0
    calls: list[tuple[str, str, float]] = field(default_factory=list)
    fail_hosts: set[str] = field(default_factory=set)

    def measurements(self, host: str, samples: Sequence[Sample], window: Interval) -> Rendered:
        self.calls.append(("m", host, window.start))
        if host in self.fail_hosts:
            return Rendered(errors=[RenderFailure("Host Measurements", host, "cannot render")])
        eid = f"m-{host}-{window.start}"
        return Rendered(events=[Event({"event": {"n": len(samples)}}, "measurement", host, eid)])

    def heartbeat(self, host: str, boundary: float, window: Interval) -> Rendered:
        self.calls.append(("h", host, boundary))
        return Rendered(events=[Event({"event": {}}, "heartbeat", host, f"h-{host}-{boundary}")])

    def notification(self, notification: Notification) -> Rendered:
        self.calls.append(("n", notification.host, notification.time))
        return Rendered(events=[Event({"event": {}}, "fault", notification.host, f"n-{notification.time}")])


class RecordingPipeline(Pipeline):
    def __init__(self, renderer: StubRenderer, active: list[int] | None = None) -> None:
        settings = Settings.from_env({"VES_STREAMS_INTERVAL": "10", "VES_STREAMS_PARTITIONS": "4"})
        names = SimpleNamespace(samples="app-samples", notifications="collectd-notifications")
        topics = SimpleNamespace(
            names=names,
            events=SimpleNamespace(name="ves-events"),
            dlq=SimpleNamespace(name="ves-streams-dlq"),
            samples=SimpleNamespace(name="app-samples"),
            outputs=(),
        )
        super().__init__(None, settings, topics, renderer, Metrics(CollectorRegistry()), {})  # type: ignore[arg-type]
        self.active = active if active is not None else [0, 1, 2, 3]
        self.sent: list[tuple[str, Any]] = []
        self.partitions: list[int | None] = []
        self.order: list[str] = []

    def active_samples_partitions(self) -> list[int]:
        return self.active

    async def produce(self, topic: Any, record: Any, partition: int | None = None, *, source: Any = None) -> Any:
        self.sent.append((topic.name, record))
        self.partitions.append(partition)
        self.order.append(topic.name)
        return _done()

    def events(self) -> list[Any]:
        return [r for t, r in self.sent if t == "ves-events"]

    def dead_letters(self) -> list[Any]:
        return [r for t, r in self.sent if t == "ves-streams-dlq"]


def _done() -> asyncio.Future[Any]:
    fut = asyncio.get_event_loop().create_future()
    fut.set_result(None)
    return fut


def message(value: bytes, *, topic: str = "collectd", partition: int = 0, offset: int = 7, key: bytes | None = b"k", headers: Any = None) -> Any:
    return SimpleNamespace(
        topic=topic, partition=partition, offset=offset, key=key, value=value, headers=headers or [], tp=TP(topic, partition)
    )


def values_json(host: str, t: float, interval: float = 10.0, ti: str = "idle", value: float = 1.0) -> dict[str, Any]:
    return {
        "values": [value], "dstypes": ["gauge"], "dsnames": ["value"], "time": t, "interval": interval,
        "host": host, "plugin": "cpu", "plugin_instance": "0", "type": "percent", "type_instance": ti,
    }  # fmt: skip


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- ingest ---------------------------------------------------------------


def _pairs(*value_lists: dict[str, Any]) -> list[tuple[str, bytes]]:
    return [(vl["host"], orjson.dumps(vl)) for vl in value_lists]


def test_value_lists_are_grouped_by_host_into_the_hosts_partition() -> None:
    records = samples_records(_pairs(values_json("a", 1), values_json("b", 1), values_json("a", 1, ti="user")), 4)
    assert [r.host for r in records] == ["a", "b"]
    assert records[0].key == b"a" and records[0].partition == host_partition("a", 4)
    assert [v["type_instance"] for v in orjson.loads(records[0].value)] == ["idle", "user"]


def test_a_hosts_value_lists_are_split_over_records_under_the_size_limit() -> None:
    records = samples_records(_pairs(*[values_json("a", 1, ti=f"t{i}") for i in range(50)]), 4, max_bytes=2000)
    assert len(records) > 1
    assert all(len(r.value) <= 2000 for r in records)
    assert [v["type_instance"] for r in records for v in orjson.loads(r.value)] == [f"t{i}" for i in range(50)]
    assert {r.partition for r in records} == {host_partition("a", 4)}


def test_ingest_packs_a_batch_from_every_partition_into_one_record_per_host() -> None:
    batch = [
        message(orjson.dumps([values_json(h, 1, ti=ti)]), partition=part, offset=i)
        for i, (h, ti, part) in enumerate(
            [("a", "idle", 0), ("b", "idle", 1), ("a", "user", 1), ("b", "user", 0), ("a", "system", 2)])
    ]  # fmt: skip
    out = ingest_batch(batch, 4)
    assert [(r.key, r.partition) for r in out.records] == [(b"a", host_partition("a", 4)), (b"b", host_partition("b", 4))]
    assert [v["type_instance"] for v in orjson.loads(out.records[0].value)] == ["idle", "user", "system"]
    assert out.dead_letters == []
    assert out.counts == {"collectd": 5} and out.value_lists == 5
    assert out.handled == {("collectd", 0): 4, ("collectd", 1): 3, ("collectd", 2): 5}


def test_ingest_parses_a_large_batch_in_chunks_letting_the_rest_of_the_worker_run_between_them() -> None:
    """The fault loop, the sink and the ticks share the event loop: a 20,000-record parse must not hold it."""
    batch = [message(orjson.dumps([values_json(f"h{i % 7}", 1, ti=f"t{i}")]), partition=i % 3, offset=i) for i in range(50)]
    batch.insert(20, message(b"nope", offset=999))
    turns: list[None] = []

    async def scenario() -> Any:
        async def neighbour() -> None:
            while True:
                turns.append(None)
                await asyncio.sleep(0)

        task = asyncio.ensure_future(neighbour())
        await asyncio.sleep(0)
        out = await ingest_batch_yielding(batch, 4, chunk=10)
        task.cancel()
        return out

    out = run(scenario())
    expected = ingest_batch(batch, 4)
    assert out.records == expected.records and out.handled == expected.handled
    assert [dict(d.headers) for d in out.dead_letters] == [dict(d.headers) for d in expected.dead_letters]
    assert out.value_lists == 50 and out.malformed_values == 1
    assert len(turns) >= 1 + 5  # 51 records in chunks of 10: the neighbour ran between every two


def test_ingest_output_is_what_the_samples_stage_parses_back_whatever_the_message_layout() -> None:
    one = values_json("a", 1, ti="idle")
    spaced = b"  [ " + orjson.dumps(one) + b" ]\n"  # write_kafka's one-element array, any whitespace
    two = orjson.dumps([values_json("a", 1, ti="user"), values_json("b", 1, ti="user")])
    out = ingest_batch([message(spaced, offset=1), message(two, offset=2)], 4)
    parsed = {r.host: parse_value_lists(r.value) for r in out.records}
    assert [vl.type_instance for vl in parsed["a"]] == ["idle", "user"]
    assert [vl.host for vl in parsed["b"]] == ["b"]
    assert parsed["a"][0] == parse_value_lists(orjson.dumps([one]))[0]


def test_a_poison_record_in_a_batch_is_dead_lettered_and_the_rest_repartitioned() -> None:
    batch = [message(orjson.dumps([values_json("a", 1)]), offset=1), message(b"nope", offset=2), message(orjson.dumps([values_json("b", 1)]), offset=3)]
    out = ingest_batch(batch, 4)
    assert [r.host for r in out.records] == ["a", "b"]
    [dlq] = out.dead_letters
    assert dict(dlq.headers)["ves-streams-source-offset"] == b"2"
    assert out.handled == {("collectd", 0): 4}  # the poison record counts as handled: its letter goes out with the batch


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not JSON"),
        (b'{"values": []}', "'values' must be a non-empty array"),
        (b"[" * 50 + b"]" * 50, "nested deeper"),
        (b"", "empty message"),
        (None, "no value"),
        (b"x" * (2 * 1024 * 1024), "exceeds the 1048576-byte limit"),
    ],
)
def test_malformed_values_are_dead_lettered_with_reason_and_source(raw: bytes | None, reason: str) -> None:
    out = ingest_batch([message(raw, partition=2, offset=99)], 4)  # type: ignore[arg-type]
    [dlq] = out.dead_letters
    headers = dict(dlq.headers)
    assert reason in headers["ves-streams-reason"].decode()
    assert headers["ves-streams-source-topic"] == b"collectd"
    assert headers["ves-streams-source-partition"] == b"2"
    assert headers["ves-streams-source-offset"] == b"99"
    assert dlq.value == (raw or b"")[: len(dlq.value)]
    assert out.records == []


def test_a_parser_bug_dead_letters_the_message_and_the_batch_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from ves_streams.stages import repartition as ingest

    real = ingest.parse_value_lists

    def flaky(raw: bytes) -> Any:
        if b"boom" in raw:
            raise KeyError("bug")
        return real(raw)

    monkeypatch.setattr(ingest, "parse_value_lists", flaky)
    out = ingest_batch([message(b"boom", offset=1), message(orjson.dumps([values_json("a", 1)]), offset=2)], 4)
    [dlq] = out.dead_letters
    assert dict(dlq.headers)["ves-streams-reason"].startswith(b"internal error: KeyError")
    assert [r.host for r in out.records] == ["a"]


def test_unexpected_exception_is_dead_lettered_not_raised() -> None:
    p = RecordingPipeline(StubRenderer())

    async def broken(pipeline: Pipeline, msg: Any) -> None:
        raise KeyError("bug")

    run(p.guard("values", message(b"[]"), broken))
    [dlq] = p.dead_letters()
    assert dict(dlq.headers)["ves-streams-reason"].startswith(b"internal error: KeyError")


# -- measurements -----------------------------------------------------------


def samples_message(p: RecordingPipeline, host: str, t: float, **kw: Any) -> Any:
    return message(
        orjson.dumps([values_json(host, t, **kw)]), topic="app-samples", partition=host_partition(host, 4), key=host.encode()
    )


def tick_message(partition: int, end: float, interval: float = 10.0) -> Any:
    return message(
        encode_tick(Tick(end, interval)), topic="app-samples", partition=partition, key=b"",
        headers=[(HEADER_KIND, KIND_TICK)],
    )  # fmt: skip


def test_tick_encoding_round_trips_and_refuses_garbage() -> None:
    assert decode_tick(encode_tick(Tick(1010.0, 10.0))) == Tick(1010.0, 10.0)
    with pytest.raises(MalformedInput):
        decode_tick(b"{}")


def test_tick_renders_each_host_of_the_partition_once_per_window() -> None:
    renderer = StubRenderer(heartbeat_interval=None)
    p = RecordingPipeline(renderer)
    hosts = [h for h in (f"h{i}" for i in range(40)) if host_partition(h, 4) == 1][:3]

    async def scenario() -> None:
        for host in hosts:
            await handle_samples(p, samples_message(p, host, 995.0))  # reporting since the window before
            await handle_samples(p, samples_message(p, host, 1005.0))
        await handle_samples(p, tick_message(1, 1010.0))
        await handle_samples(p, tick_message(1, 1010.0))  # duplicate tick (two owners during a rebalance)

    run(scenario())
    events = p.events()
    assert sorted(e.key for e in events) == sorted(h.encode() for h in hosts)
    assert {dict(e.headers)["ves-event-id"] for e in events} == {f"m-{h}-1000.0".encode() for h in hosts}
    assert p.store.marker(1) == 1010.0
    assert p.table[marker_key(1)] == b"1010.0"
    assert p.metrics.windows.labels("duplicate")._value.get() == 1


def test_marker_is_written_after_the_events_were_produced() -> None:
    p = RecordingPipeline(StubRenderer(heartbeat_interval=None))
    host = next(h for h in (f"h{i}" for i in range(40)) if host_partition(h, 4) == 0)
    writes: list[str] = []

    class Table(dict[bytes, bytes]):
        def __setitem__(self, key: bytes, value: bytes) -> None:
            writes.append("marker" if key == marker_key(0) else "host")
            super().__setitem__(key, value)

    p.table = p.store.table = Table()
    p.store.local = MappingState(p.table)

    async def scenario() -> None:
        await handle_samples(p, samples_message(p, host, 995.0))
        await handle_samples(p, samples_message(p, host, 1005.0))
        writes.append("--")
        await handle_samples(p, tick_message(0, 1010.0))

    run(scenario())
    assert writes == ["--", "host", "marker"]  # the host's record once, at the tick's flush, before its marker
    assert p.order == ["ves-events"]


Produced = list[tuple[str, bytes, bytes | None, int]]


def direct_write_pipeline() -> tuple[Pipeline, dict[bytes, bytes], Produced]:
    """A pipeline over a Faust-like table whose per-key changelog path fails the test.

    Returns the pipeline, the table's local store, and what its producer was
    asked to send ``(topic, key, value, partition)``. Render ticks may still
    write their partition's marker through the table.
    """
    local: dict[bytes, bytes] = {}
    produced: Produced = []
    markers = {marker_key(i) for i in range(4)}

    class Producer:
        async def send(self, topic: str, key: bytes, value: bytes | None, partition: int, ts: Any, headers: Any, **kw: Any) -> Any:
            produced.append((topic, key, value, partition))
            return _done()

    class FaustLikeTable(dict[bytes, bytes]):
        data = local
        changelog_topic = SimpleNamespace(get_topic_name=lambda: "app-samples-state-changelog")

        def __setitem__(self, key: bytes, value: bytes) -> None:
            if key not in markers:
                raise AssertionError("a series write took Faust's per-key changelog path")
            super().__setitem__(key, value)

        def __delitem__(self, key: bytes) -> None:
            raise AssertionError("an expired series took Faust's per-key changelog path")

    class OnePipeline(Pipeline):
        def active_samples_partitions(self) -> list[int]:
            return [0, 1, 2, 3]

        async def produce(self, topic: Any, record: Any, partition: int | None = None, *, source: Any = None) -> Any:
            return _done()

    p = RecordingPipeline(StubRenderer(heartbeat_interval=None))
    table = FaustLikeTable()
    return OnePipeline(SimpleNamespace(producer=Producer()), p.settings, p.topics, p.renderer, p.metrics, table), local, produced  # type: ignore[arg-type]


def test_a_hosts_record_goes_to_the_tables_local_store_and_its_changelog_partition_once_per_flush() -> None:
    """A Faust table's per-key changelog path is bypassed: one local write and one produce per changed host."""
    p2, local, produced = direct_write_pipeline()
    host = next(h for h in (f"h{i}" for i in range(40)) if host_partition(h, 4) == 2)
    idle = orjson.dumps([values_json(host, 1005.0)])
    user = orjson.dumps([values_json(host, 1005.0, ti="user")])
    run(handle_samples(p2, message(idle, topic="app-samples", partition=2, key=host.encode())))
    run(handle_samples(p2, message(user, topic="app-samples", partition=2, key=host.encode())))
    assert local == {} and produced == []  # the host's record waits for the next flush
    run(p2.flush_changelog())
    assert list(local) == [host_key(host)]
    assert produced == [("app-samples-state-changelog", host_key(host), local[host_key(host)], 2)]
    assert len(decode_host(local[host_key(host)])) == 2
    # the same value lists again (a replay) change nothing and produce nothing
    run(handle_samples(p2, message(user, topic="app-samples", partition=2, key=host.encode())))
    run(p2.flush_changelog())
    assert len(produced) == 1


def test_aged_out_series_leave_their_hosts_record_and_an_empty_host_gets_a_tombstone() -> None:
    """Expiry bypasses Faust's per-key path too: the host's record is rewritten without the series."""
    p2, local, produced = direct_write_pipeline()
    host, gone = [h for h in (f"h{i}" for i in range(60)) if host_partition(h, 4) == 1][:2]
    old = orjson.dumps([values_json(host, 1000.0), values_json(host, 1000.0, ti="user")])
    fresh = orjson.dumps([values_json(host, 1015.0, ti="user")])

    async def scenario() -> None:
        await handle_samples(p2, message(old, topic="app-samples", partition=1, key=host.encode()))
        await handle_samples(p2, message(orjson.dumps([values_json(gone, 1000.0)]), topic="app-samples", partition=1,
                                         key=gone.encode()))  # fmt: skip
        await handle_samples(p2, message(fresh, topic="app-samples", partition=1, key=host.encode()))
        await handle_samples(p2, tick_message(1, 1020.0))
        await p2.flush_changelog()

    run(scenario())
    # idle was last written at 1000: 2 x 10 s old at 1020
    assert [h[0].type_instance for h in decode_host(local[host_key(host)])] == ["user"]
    assert host_key(gone) not in local
    last = {k: v for _, k, v, _ in produced}
    assert last[host_key(gone)] is None
    assert [h[0].type_instance for h in decode_host(last[host_key(host)])] == ["user"]


def test_windows_missed_by_a_dead_owner_are_backfilled_with_their_own_ids() -> None:
    p = RecordingPipeline(StubRenderer(heartbeat_interval=None))
    host = next(h for h in (f"h{i}" for i in range(40)) if host_partition(h, 4) == 2)

    async def scenario() -> None:
        await handle_samples(p, samples_message(p, host, 995.0, interval=100.0))
        await handle_samples(p, samples_message(p, host, 1005.0, interval=100.0))
        await handle_samples(p, tick_message(2, 1010.0))
        await handle_samples(p, tick_message(2, 1050.0))  # 1020, 1030, 1040 were never ticked here

    run(scenario())
    ids = [dict(e.headers)["ves-event-id"].decode() for e in p.events()]
    assert ids == [f"m-{host}-{s}" for s in (1000.0, 1010.0, 1020.0, 1030.0, 1040.0)]
    assert p.metrics.windows.labels("backfilled")._value.get() == 3


@dataclass
class ValueRecordingRenderer(StubRenderer):
    """Records the values each host window was rendered from."""

    windows: dict[float, list[float]] = field(default_factory=dict)

    def measurements(self, host: str, samples: Sequence[Sample], window: Interval) -> Rendered:
        self.windows[window.start] = [s.value for s in samples]
        return super().measurements(host, samples, window)


def test_a_tick_two_intervals_late_renders_each_window_from_its_own_samples() -> None:
    renderer = ValueRecordingRenderer(heartbeat_interval=None)
    p = RecordingPipeline(renderer)
    host = next(h for h in (f"h{i}" for i in range(40)) if host_partition(h, 4) == 1)

    async def scenario() -> None:
        await handle_samples(p, samples_message(p, host, 985.0, value=-1.0))  # reporting since before 990
        await handle_samples(p, samples_message(p, host, 995.0, value=0.0))
        await handle_samples(p, tick_message(1, 1000.0))
        # ingest ran three rounds ahead of the next tick (a backlog, a takeover, a slow worker)
        for t, v in ((1005.0, 1.0), (1015.0, 2.0), (1025.0, 3.0)):
            await handle_samples(p, samples_message(p, host, t, value=v))
        await handle_samples(p, tick_message(1, 1030.0))  # the ticks of 1010 and 1020 never came

    run(scenario())
    assert renderer.windows == {990.0: [0.0], 1000.0: [1.0], 1010.0: [2.0], 1020.0: [3.0]}
    ids = [dict(e.headers)["ves-event-id"].decode() for e in p.events()]
    assert ids == [f"m-{host}-{s}" for s in (990.0, 1000.0, 1010.0, 1020.0)]


def test_a_sample_whose_window_was_rendered_is_counted_late_and_never_rendered() -> None:
    renderer = ValueRecordingRenderer(heartbeat_interval=None)
    p = RecordingPipeline(renderer)
    host = next(h for h in (f"h{i}" for i in range(40)) if host_partition(h, 4) == 3)

    async def scenario() -> None:
        await handle_samples(p, samples_message(p, host, 995.0, value=0.0))
        await handle_samples(p, samples_message(p, host, 1005.0, value=1.0))
        await handle_samples(p, tick_message(3, 1010.0))
        await handle_samples(p, samples_message(p, host, 1009.0, value=9.0))  # after its window's tick
        await handle_samples(p, samples_message(p, host, 1015.0, value=2.0))
        await handle_samples(p, tick_message(3, 1020.0))

    run(scenario())
    assert p.metrics.late_samples._value.get() == 1
    assert renderer.windows == {1000.0: [1.0], 1010.0: [2.0]}


def test_a_value_list_stamped_in_the_future_is_dead_lettered_at_ingest_with_the_reason() -> None:
    now = 1_000_000.0
    ok = orjson.dumps([values_json("a", now + 9.0)])  # within one interval: clocks differ a little
    ahead = orjson.dumps([values_json("b", now + 3600.0)])
    out = ingest_batch([message(ok, offset=1), message(ahead, offset=2)], 4, now=now)
    assert out.value_lists == 1 and out.malformed_values == 1
    [letter] = out.dead_letters
    headers = dict(letter.headers)
    assert b"in the future" in headers["ves-streams-reason"] and b"'b'" in headers["ves-streams-reason"]
    assert letter.value == ahead
    assert [vl.host for r in out.records for vl in parse_value_lists(r.value)] == ["a"]


@pytest.mark.parametrize("interval", [1e9, 86400.5])
def test_a_value_list_with_an_absurd_interval_is_dead_lettered_at_ingest(interval: float) -> None:
    raw = orjson.dumps([values_json("a", 1000.0, interval=interval)])
    out = ingest_batch([message(raw, offset=1)], 4, now=1000.0)
    assert out.value_lists == 0 and len(out.dead_letters) == 1
    assert b"interval" in dict(out.dead_letters[0].headers)["ves-streams-reason"]


def test_expired_series_are_deleted_and_not_rendered() -> None:
    renderer = StubRenderer(heartbeat_interval=None)
    p = RecordingPipeline(renderer)
    host = next(h for h in (f"h{i}" for i in range(40)) if host_partition(h, 4) == 3)

    async def scenario() -> None:
        await handle_samples(p, samples_message(p, host, 1000.0, interval=10.0))
        await handle_samples(p, tick_message(3, 1010.0))
        await handle_samples(p, tick_message(3, 1030.0))  # backfills 1010-1020, renders 1020-1030
        await p.flush_changelog()  # the periodic flush writes the host's tombstone

    run(scenario())
    # the window ending 1010 sees it; at 1020 (backfilled) it is 2 x 10 s old: gone
    assert [c[2] for c in renderer.calls] == [1000.0]
    assert host_key(host) not in p.table and series_key(parse_value_lists(orjson.dumps(values_json(host, 0)))[0]) not in p.table
    assert p.index.hosts(3) == []


def test_a_new_host_is_rendered_from_its_first_whole_window_on() -> None:
    """A host that appears mid-window has only some of its series in it: not rendered until the next."""
    renderer = StubRenderer(heartbeat_interval=10.0)
    p = RecordingPipeline(renderer)
    host = next(h for h in (f"h{i}" for i in range(40)) if host_partition(h, 4) == 2)

    async def scenario() -> None:
        await handle_samples(p, samples_message(p, host, 1004.0, interval=10.0))
        await handle_samples(p, tick_message(2, 1010.0))
        await handle_samples(p, samples_message(p, host, 1014.0, interval=10.0))
        await handle_samples(p, tick_message(2, 1020.0))

    run(scenario())
    assert [c for c in renderer.calls if c[0] == "m"] == [("m", host, 1010.0)]
    assert [c for c in renderer.calls if c[0] == "h"] == [("h", host, 1010.0), ("h", host, 1020.0)]
    assert p.metrics.partial_windows._value.get() == 1


def test_a_host_recovered_from_the_table_is_not_new() -> None:
    renderer = StubRenderer(heartbeat_interval=None)
    p = RecordingPipeline(renderer)
    host = next(h for h in (f"h{i}" for i in range(40)) if host_partition(h, 4) == 2)

    async def scenario() -> None:
        await handle_samples(p, samples_message(p, host, 995.0))
        await p.flush_changelog()  # as the revoke handler does
        p.on_rebalance()
        await handle_samples(p, samples_message(p, host, 1005.0))  # first record after the takeover
        await handle_samples(p, tick_message(2, 1010.0))

    run(scenario())
    assert [c for c in renderer.calls if c[0] == "m"] == [("m", host, 1000.0)]


def test_heartbeats_go_out_per_host_on_heartbeat_boundaries() -> None:
    renderer = StubRenderer(heartbeat_interval=20.0)
    p = RecordingPipeline(renderer)
    host = next(h for h in (f"h{i}" for i in range(40)) if host_partition(h, 4) == 0)

    async def scenario() -> None:
        await handle_samples(p, samples_message(p, host, 995.0, interval=10.0))
        for end in (1010.0, 1020.0, 1030.0, 1040.0):
            await handle_samples(p, samples_message(p, host, end - 5, interval=10.0))
            await handle_samples(p, tick_message(0, end))

    run(scenario())
    assert [c for c in renderer.calls if c[0] == "h"] == [("h", host, 1020.0), ("h", host, 1040.0)]
    domains = [dict(e.headers)["ves-domain"] for e in p.events()]
    assert domains.count(b"heartbeat") == 2 and domains.count(b"measurement") == 4


def test_render_errors_are_dead_lettered_and_other_hosts_still_render() -> None:
    renderer = StubRenderer(heartbeat_interval=None)
    hosts = [h for h in (f"h{i}" for i in range(60)) if host_partition(h, 4) == 1][:2]
    renderer.fail_hosts = {hosts[0]}
    p = RecordingPipeline(renderer)

    async def scenario() -> None:
        for host in hosts:
            await handle_samples(p, samples_message(p, host, 995.0))
            await handle_samples(p, samples_message(p, host, 1005.0))
        await render_partition(p, 1, Tick(1010.0, 10.0), deadletter.Source("app-samples", 1, 5))

    run(scenario())
    assert [e.key for e in p.events()] == [hosts[1].encode()]
    [dlq] = p.dead_letters()
    assert dict(dlq.headers)["ves-streams-host"] == hosts[0].encode()
    assert orjson.loads(dlq.value)["reason"] == "cannot render"


def test_index_is_rebuilt_from_the_table_after_a_rebalance() -> None:
    renderer = StubRenderer(heartbeat_interval=None)
    p = RecordingPipeline(renderer)
    host = next(h for h in (f"h{i}" for i in range(40)) if host_partition(h, 4) == 1)

    async def scenario() -> None:
        await handle_samples(p, samples_message(p, host, 995.0))
        await handle_samples(p, samples_message(p, host, 1005.0))
        await p.flush_changelog()  # as the revoke handler does
        p.on_rebalance()  # partitions moved; the table (RocksDB) survives
        assert not p.index.built
        await handle_samples(p, tick_message(1, 1010.0))

    run(scenario())
    assert [e.key for e in p.events()] == [host.encode()]


# -- faults -------------------------------------------------------------------


def test_notification_becomes_one_fault_event_keyed_by_host() -> None:
    p = RecordingPipeline(StubRenderer())
    raw = orjson.dumps({"host": "compute-0", "plugin": "cpu", "severity": "FAILURE", "message": "hot", "time": 1000.5})
    out = fault_outputs(p, message(raw, topic="collectd-notifications"))
    [event] = out.events
    assert out.dead_letters == []
    assert event.key == b"compute-0"
    assert dict(event.headers)["ves-domain"] == b"fault"


def test_malformed_notification_is_dead_lettered() -> None:
    p = RecordingPipeline(StubRenderer())
    out = fault_outputs(p, message(b'{"host": "h", "severity": "BAD", "time": 1}', topic="collectd-notifications"))
    [dlq] = out.dead_letters
    assert out.events == []
    assert b"unknown severity" in dict(dlq.headers)["ves-streams-reason"]
    assert dict(dlq.headers)["ves-streams-stage"] == b"notifications"


def test_ingest_turns_notifications_into_fault_events_beside_the_value_lists() -> None:
    p = RecordingPipeline(StubRenderer())
    notification = orjson.dumps({"host": "c1", "severity": "WARNING", "message": "m", "time": 5.0})
    batch = [
        message(orjson.dumps([values_json("a", 1)]), partition=0, offset=3),
        message(notification, topic="collectd-notifications", partition=1, offset=8),
        message(b"not json", topic="collectd-notifications", partition=1, offset=9),
        message(orjson.dumps({"host": "c2", "severity": "OKAY", "time": 6.0}), topic="collectd-notifications", partition=2, offset=0),
    ]
    out = ingest_batch(batch, 4, p)
    assert [r.key for r in out.records] == [b"a"]
    assert [(e.key, dict(e.headers)["ves-event-id"]) for e in out.events] == [(b"c1", b"n-5.0"), (b"c2", b"n-6.0")]
    [letter] = out.dead_letters
    assert dict(letter.headers)["ves-streams-source-offset"] == b"9"
    assert out.malformed_values == 0
    assert out.counts == {"collectd": 1, "collectd-notifications": 3}
    # the notification partitions' offsets are handled with the batch, the malformed one included
    assert out.handled == {("collectd", 0): 4, ("collectd-notifications", 1): 10, ("collectd-notifications", 2): 1}


def test_a_rule_engine_bug_on_a_notification_dead_letters_it_and_the_batch_goes_on() -> None:
    class Exploding(StubRenderer):
        def notification(self, notification: Notification) -> Rendered:
            raise RuntimeError("boom")

    p = RecordingPipeline(Exploding())
    raw = orjson.dumps({"host": "c1", "severity": "WARNING", "time": 5.0})
    out = ingest_batch([message(raw, topic="collectd-notifications"), message(orjson.dumps([values_json("a", 1)]))], 4, p)
    [letter] = out.dead_letters
    assert b"internal error: RuntimeError: boom" in dict(letter.headers)["ves-streams-reason"]
    assert [r.key for r in out.records] == [b"a"] and out.events == []


def test_an_event_too_big_or_not_json_is_dead_lettered_not_produced() -> None:
    from ves_streams.agents import pipeline as pipeline_module

    p = RecordingPipeline(StubRenderer())
    huge = Event({"event": {"x": "y" * (pipeline_module.MAX_EVENT_BYTES + 1)}}, "measurement", "h", "1")
    odd = Event({"event": {"x": object()}}, "measurement", "h", "2")
    fine = Event({"event": {}}, "measurement", "h", "3")
    source = deadletter.Source("app-samples", 0, 1)
    run(p.publish(Rendered(events=[huge, odd, fine]), stage="measurements", source=source))
    assert [t for t, _ in p.sent] == ["ves-streams-dlq", "ves-streams-dlq", "ves-events"]
    reasons = [orjson.loads(r.value)["reason"] for r in p.dead_letters()]
    assert "exceeds" in reasons[0] and "not JSON" in reasons[1]


# -- publishing a window's events -------------------------------------------


class _Batch:
    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self.closed = False

    def append(self, *, key: bytes, value: bytes, timestamp: Any, headers: list[Any]) -> object:
        self.keys.append(key)
        return object()

    def record_count(self) -> int:
        return len(self.keys)

    def close(self) -> None:
        self.closed = True


class _BatchProducer:
    """aiokafka's batch API as publish_events uses it: metadata, create_batch, send_batch."""

    def __init__(self, partitions: int) -> None:
        self.client = SimpleNamespace(cluster=SimpleNamespace(partitions_for_topic=lambda topic: set(range(partitions))))
        self.sent: list[tuple[str, int, list[bytes], bool]] = []

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        self.sent.append((topic, partition, list(batch.keys), batch.closed))
        return _done()


def test_a_windows_events_leave_as_one_complete_batch_per_events_partition_where_send_would_put_them() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    from ves_streams.identity import OutputRecord

    pipeline = RecordingPipeline(StubRenderer())
    pipeline.topics.names.events = "ves-events"
    producer = _BatchProducer(partitions=4)
    pipeline.app = SimpleNamespace()  # type: ignore[assignment]
    pipeline.plain_producer = lambda: producer  # type: ignore[method-assign]
    hosts = [f"host-{i}".encode() for i in range(12)]
    records = [OutputRecord(key=h, value=kind, headers=[]) for h in hosts for kind in (b"measurement", b"heartbeat")]

    run(pipeline.publish_events(records))

    assert pipeline.sent == [], "nothing went record by record"
    assert all(closed for *_, closed in producer.sent), "complete batches: they leave without lingering"
    assert len({partition for _, partition, _, _ in producer.sent}) == len(producer.sent), "one batch per partition"
    send = DefaultPartitioner()
    for topic, partition, keys, _ in producer.sent:
        assert topic == "ves-events"
        for key in keys:  # the partition aiokafka's send() picks for the key: a host's events stay together
            assert send(key, [0, 1, 2, 3], [0, 1, 2, 3]) == partition
        # each host's two events, in the order they were rendered
        assert keys == [h for h in hosts if h in keys for _ in range(2)]
    assert sorted(k for *_, keys, _ in producer.sent for k in keys) == sorted(r.key for r in records)


def test_without_known_partitions_or_with_exactly_once_a_windows_events_go_one_by_one() -> None:
    from ves_streams.identity import OutputRecord

    pipeline = RecordingPipeline(StubRenderer())
    pipeline.topics.names.events = "ves-events"
    producer = _BatchProducer(partitions=0)  # the producer has not seen the topic yet
    pipeline.app = SimpleNamespace()  # type: ignore[assignment]
    pipeline.plain_producer = lambda: producer  # type: ignore[method-assign]
    records = [OutputRecord(key=b"h", value=b"m", headers=[]), OutputRecord(key=None, value=b"n", headers=[])]
    run(pipeline.publish_events(records))
    assert producer.sent == [] and pipeline.events() == records

    # exactly-once: every record joins the transaction through send(), whatever the metadata knows
    pipeline.sent.clear()
    pipeline.exactly_once = True
    pipeline.plain_producer = lambda: _BatchProducer(partitions=4)  # type: ignore[method-assign]
    run(pipeline.publish_events(records))
    assert pipeline.events() == records


def test_a_value_list_too_large_for_a_samples_record_is_dead_lettered_and_the_rest_go_on() -> None:
    """collectd's 1 MiB input limit is above what the broker's default max.message.bytes takes with a key."""
    limit = 1048588  # Kafka's default
    big = values_json("big", 1000.0)
    n = 74_800  # ~1 MiB of values, dsnames and dstypes: under collectd's limit, over a record's
    big.update(values=[1] * n, dsnames=["v"] * n, dstypes=["gauge"] * n)
    raw = orjson.dumps([big])
    assert limit - 2048 < len(raw) < 1024 * 1024
    small = orjson.dumps([values_json("small", 1000.0)])
    out = ingest_batch([message(raw, offset=1), message(small, offset=2)], 4, now=1000.0, max_record_bytes=limit)
    assert [vl.host for r in out.records for vl in parse_value_lists(r.value)] == ["small"]
    [letter] = out.dead_letters
    reason = dict(letter.headers)["ves-streams-reason"]
    assert b"max.message.bytes 1048588" in reason and b"'big'" in reason
    assert all(len(r.value) <= limit for r in out.records)
    # where the topic takes more, it is a record like any other
    roomy = ingest_batch([message(raw, offset=1)], 4, now=1000.0, max_record_bytes=4 * 1024 * 1024)
    assert roomy.dead_letters == [] and roomy.value_lists == 1
