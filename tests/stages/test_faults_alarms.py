"""The fault stage keeping alarms, without Kafka: the real topology renderer, changelog records in memory.

What the broker does (produce, acknowledge, store the changelog, hand a
partition to another worker) is played by the test: each batch's
``StageOutput`` is "acknowledged" by calling the handler as the loop does,
and a takeover is a new handler restored from the records produced so far.
The same paths through the real broker are in tests/e2e/test_alarms.py and
tests/drills/test_alarm_lifecycle.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import orjson
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from ves_streams.metrics import Metrics
from ves_streams.resources import default_topology
from ves_streams.rules import load_topology
from ves_streams.stages.faults import HEADER_KIND, KIND_RESEND, AlarmKeeping, FaultsHandler
from ves_streams.stages.render import TopologyRenderer
from ves_streams.wire.samples import host_partition

TOPIC = "collectd-notifications"
PARTITIONS = 4
HOST = "compute-0"
P = host_partition(HOST, PARTITIONS)


@dataclass
class Broker:
    """What the broker keeps for the test: the changelog partitions and the group's committed offsets."""

    changelog: dict[int, list[tuple[bytes, bytes | None]]] = field(default_factory=dict)
    committed: dict[int, int] = field(default_factory=dict)

    async def read(self, partitions: list[int]) -> dict[int, list[tuple[bytes, bytes | None]]]:
        return {p: list(self.changelog.get(p, [])) for p in partitions}


class Controls:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def still_current(self) -> Any:
        return lambda: True

    async def committed(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.broker.committed[tp.partition] for tp in tps if tp.partition in self.broker.committed}


def make_handler(broker: Broker) -> tuple[FaultsHandler, Metrics]:
    metrics = Metrics(CollectorRegistry())
    renderer = TopologyRenderer(load_topology(default_topology()), hostname="w", interval=10.0, ves_version="7.2.1")
    keeping = AlarmKeeping(TOPIC, "app-alarms-changelog", broker.read, lambda: PARTITIONS, metrics.unmatched_clears)
    handler = FaultsHandler(SimpleNamespace(renderer=renderer, metrics=metrics), keeping)
    handler.bind(Controls(broker))  # type: ignore[arg-type]
    asyncio.run(handler.assigned({TopicPartition(TOPIC, p) for p in range(PARTITIONS)}))
    return handler, metrics


def collectd_json(severity: str, t: float, host: str = HOST) -> bytes:
    """collectd 5.9+'s JSON notification (write_http Format JSON)."""
    return orjson.dumps([{
        "labels": {"alertname": "collectd_cpu_percent", "instance": host, "cpu": "0", "type": "user", "severity": severity},
        "annotations": {"summary": f"Host {host}, plugin cpu (instance 0) type percent (instance user): too high"},
        "startsAt": f"2026-12-07T10:00:{t:06.3f}Z",
    }])  # fmt: skip


def flat(severity: str, t: float, host: str = HOST) -> bytes:
    """Barometer's flat shape."""
    return orjson.dumps({"host": host, "plugin": "cpu", "plugin_instance": "0", "type": "percent", "type_instance": "user",
                         "severity": severity, "message": "cpu too high", "time": t})  # fmt: skip


class Stage:
    """One worker's fault stage against the test's broker."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.handler, self.metrics = make_handler(broker)
        self.next_offset: dict[int, int] = {}

    def batch(self, values: list[bytes], *, partition: int = P, acknowledge: bool = True, offset: int | None = None,
              headers: Any = ()) -> Any:  # fmt: skip
        start = self.next_offset.get(partition, 0) if offset is None else offset
        messages = [SimpleNamespace(topic=TOPIC, partition=partition, offset=start + i, key=None, value=v, headers=list(headers))
                    for i, v in enumerate(values)]  # fmt: skip
        output = asyncio.run(self.handler.handle(messages))
        if acknowledge:
            for record in output.records:
                if getattr(record, "topic", None) is None:
                    self.broker.changelog.setdefault(record.partition, []).append((record.key, record.value))
            self.handler.acknowledged(output)
            self.next_offset[partition] = start + len(values)
        return output

    def commit(self) -> None:
        self.broker.committed.update(self.next_offset)


def headers_of(output: Any) -> list[dict[str, Any]]:
    return [orjson.loads(e.value)["event"]["commonEventHeader"] for e in output.events]


def severity_of(output: Any) -> list[str]:
    return [orjson.loads(e.value)["event"]["faultFields"]["eventSeverity"] for e in output.events]


def test_raises_and_clear_of_one_alarm_share_id_and_start_and_count_up_then_a_new_alarm_starts() -> None:
    for shape in (collectd_json, flat):
        stage = Stage(Broker())
        out = stage.batch([shape("FAILURE", 1.0), shape("WARNING", 11.0), shape("FAILURE", 21.0), shape("OKAY", 31.0),
                           shape("FAILURE", 41.0)])  # fmt: skip
        h = headers_of(out)
        assert len({x["eventId"] for x in h[:4]}) == 1 and h[4]["eventId"] != h[0]["eventId"]
        assert {x["startEpochMicrosec"] for x in h[:4]} == {h[0]["startEpochMicrosec"]}
        assert [x["sequence"] for x in h] == [0, 1, 2, 3, 0]
        assert [x["lastEpochMicrosec"] - h[0]["startEpochMicrosec"] for x in h[:4]] == [0, 10_000_000, 20_000_000, 30_000_000]
        assert severity_of(out) == ["CRITICAL", "WARNING", "CRITICAL", "NORMAL", "CRITICAL"]
        [alarm] = stage.handler.active_alarms()
        assert alarm.sequence == 0 and alarm.event_ids == (h[4]["eventId"],)


def test_an_abandoned_batch_changes_nothing_and_its_replay_gives_the_same_ids() -> None:
    stage = Stage(Broker())
    first = stage.batch([flat("FAILURE", 1.0)], acknowledge=False)
    again = stage.batch([flat("FAILURE", 1.0)])
    assert headers_of(first) == headers_of(again)


def test_a_takeover_restores_the_alarm_and_a_replay_after_the_commit_repeats_id_and_sequence() -> None:
    broker = Broker()
    old = Stage(broker)
    onset = headers_of(old.batch([flat("FAILURE", 1.0)]))[0]
    old.commit()
    raised = headers_of(old.batch([flat("FAILURE", 11.0)]))[0]  # acknowledged, its offset not committed: a crash now
    new = Stage(broker)  # the next owner: restores up to the committed offset, reads the re-raise again
    new.next_offset = dict(broker.committed)
    replayed = headers_of(new.batch([flat("FAILURE", 11.0)]))[0]
    assert replayed == raised and raised["eventId"] == onset["eventId"] and raised["sequence"] == 1
    clear = new.batch([flat("OKAY", 21.0)])
    assert headers_of(clear)[0]["eventId"] == onset["eventId"] and headers_of(clear)[0]["sequence"] == 2
    assert severity_of(clear) == ["NORMAL"]
    new.commit()
    assert Stage(broker).handler.active_alarms() == []  # the clear's change is restored too


def test_a_clear_of_an_unknown_alarm_goes_out_with_its_own_id_and_is_counted() -> None:
    stage = Stage(Broker())
    out = stage.batch([flat("OKAY", 5.0)])
    assert headers_of(out)[0]["sequence"] == 0 and severity_of(out) == ["NORMAL"]
    assert stage.metrics.unmatched_clears._value.get() == 1  # noqa: SLF001 - prometheus_client's value
    assert stage.handler.active_alarms() == []


def test_notifications_of_another_partitions_host_are_forwarded_there_keyed_by_host() -> None:
    others = [h for h in (f"host-{i}" for i in range(50)) if host_partition(h, PARTITIONS) != P]
    other = others[0]
    mixed = orjson.dumps([orjson.loads(flat("FAILURE", 1.0)), orjson.loads(flat("FAILURE", 2.0, host=other))])
    stage = Stage(Broker())
    out = stage.batch([mixed])
    assert [h["sourceName"] for h in headers_of(out)] == [HOST]  # this partition's host is rendered here
    [forwarded] = [r for r in out.records if r.topic == TOPIC]
    assert (forwarded.key, forwarded.partition) == (other.encode(), host_partition(other, PARTITIONS))
    assert [n["host"] for n in orjson.loads(forwarded.value)] == [other]


def test_resend_repeats_every_active_alarm_with_the_next_sequence() -> None:
    stage = Stage(Broker())
    onset = headers_of(stage.batch([flat("FAILURE", 1.0)]))[0]
    resent = stage.batch([b"{}"], headers=[(HEADER_KIND, KIND_RESEND)])
    [h] = headers_of(resent)
    assert (h["eventId"], h["startEpochMicrosec"], h["sequence"]) == (onset["eventId"], onset["startEpochMicrosec"], 1)
    clear = headers_of(stage.batch([flat("OKAY", 9.0)]))[0]
    assert (clear["eventId"], clear["sequence"]) == (onset["eventId"], 2)


def test_a_rule_engine_bug_dead_letters_the_notification_and_the_batch_and_its_changelog_go_on() -> None:
    stage = Stage(Broker())
    real = stage.handler.context.renderer

    class Breaking:
        ves_version = real.ves_version

        def notification(self, notification: Any, alarm: Any = None) -> Any:
            if notification.time == 11.0:
                raise RuntimeError("a bug")
            return real.notification(notification, alarm=alarm)

    stage.handler.context = SimpleNamespace(renderer=Breaking(), metrics=stage.metrics)
    out = stage.batch([flat("FAILURE", 1.0), flat("FAILURE", 11.0), flat("FAILURE", 21.0)])
    assert [h["sequence"] for h in headers_of(out)] == [0, 2] and len(out.dead_letters) == 1
    [record] = [r for r in out.records if r.topic is None]
    assert orjson.loads(record.value)["offset"] == 2 and orjson.loads(record.value)["state"]["sequence"] == 2


def test_a_restore_the_cluster_refuses_is_tried_again_until_it_succeeds() -> None:
    from aiokafka.errors import KafkaConnectionError

    broker = Broker()
    stage = Stage(broker)
    stage.batch([flat("FAILURE", 1.0)])
    stage.commit()
    failures = [KafkaConnectionError("no broker"), KafkaConnectionError("no broker")]
    read = broker.read

    async def flaky(partitions: list[int]) -> Any:
        if failures:
            raise failures.pop()
        return await read(partitions)

    broker.read = flaky  # type: ignore[method-assign]
    new = Stage(broker)
    assert not failures and [a.onset for a in new.handler.active_alarms()] == [1.0]


def test_without_the_lifecycle_a_resend_instruction_is_skipped_not_dead_lettered() -> None:
    metrics = Metrics(CollectorRegistry())
    renderer = TopologyRenderer(load_topology(default_topology()), hostname="w", interval=10.0, ves_version="7.2.1")
    handler = FaultsHandler(SimpleNamespace(renderer=renderer, metrics=metrics))
    messages = [SimpleNamespace(topic=TOPIC, partition=0, offset=0, key=b"alarms-resend", value=b"{}",
                                headers=[(HEADER_KIND, KIND_RESEND)]),
                SimpleNamespace(topic=TOPIC, partition=0, offset=1, key=None, value=flat("FAILURE", 1.0), headers=[])]  # fmt: skip
    output = asyncio.run(handler.handle(messages))
    assert len(output.events) == 1 and output.dead_letters == [] and output.records == []
    assert headers_of(output)[0]["sequence"] == 0
    assert output.handled == {TopicPartition(TOPIC, 0): 2}


def test_barometers_files_render_as_before_unless_the_lifecycle_is_on_then_their_system_id_is_the_alarms() -> None:
    from pathlib import Path

    ves5 = load_topology(Path(__file__).resolve().parents[2] / "topologies" / "ves5" / "hypervisor.yaml")
    renderer = TopologyRenderer(ves5, hostname="w", interval=10.0, ves_version="5.4.1")
    raises = [SimpleNamespace(topic=TOPIC, partition=P, offset=i, key=None, value=flat("FAILURE", t), headers=[])
              for i, t in enumerate((1.0, 11.0))]  # fmt: skip
    off = FaultsHandler(SimpleNamespace(renderer=renderer, metrics=Metrics(CollectorRegistry())))
    ids_off = [h["eventId"] for h in headers_of(asyncio.run(off.handle(raises)))]
    stage = Stage(Broker())
    stage.handler.context = SimpleNamespace(renderer=renderer, metrics=stage.metrics)
    ids_on = [h["eventId"] for h in headers_of(stage.batch([r.value for r in raises]))]
    assert len(ids_off) == 2 and ids_off[0] != ids_off[1]  # Barometer's way: every notification its own event
    assert len(ids_on) == 2 and ids_on[0] == ids_on[1]
