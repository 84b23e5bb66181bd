"""Batching: one domain per batch, per-host order within a domain, count/byte/linger limits, oversize rejection."""

from __future__ import annotations

from typing import Any

import itertools
import random

import orjson
import pytest

from ves_streams.sink.batching import (
    OPEN_BUDGET,
    Batch,
    BatchLimits,
    Batcher,
    batch_body,
    batch_body_size,
    single_body,
)
from ves_streams.sink.errors import SinkConfigError

from tests.sink.events import record


def _ids(batch: Batch) -> list[str | None]:
    return [r.event_id for r in batch.records]


def _drive(batcher: Batcher, records, now: float = 0.0) -> list[Batch]:
    out: list[Batch] = []
    for r in records:
        sealed, rejected = batcher.add(r, now)
        assert rejected is None
        out.extend(sealed)
    return out + batcher.flush()


def test_batch_holds_one_domain_only() -> None:
    batcher = Batcher(BatchLimits(max_events=100))
    records = [
        record("measurement", "h1", 1),
        record("heartbeat", "h2", 1),
        record("measurement", "h3", 1),
        record("heartbeat", "h4", 1),
    ]
    batches = _drive(batcher, records)
    assert sorted((b.domain, tuple(_ids(b))) for b in batches) == [
        ("heartbeat", ("h2-heartbeat-1", "h4-heartbeat-1")),
        ("measurement", ("h1-measurement-1", "h3-measurement-1")),
    ]
    for b in batches:
        assert {e["commonEventHeader"]["domain"] for e in orjson.loads(b.body())["eventList"]} == {b.domain}


def test_a_host_moving_between_domains_does_not_cut_batches_short() -> None:
    """The slow-collector case (drill 4): every host sends a measurement per window, heartbeats and faults
    in between. One batch per domain, full, whatever the hosts' switches; each domain in host order."""
    batcher = Batcher(BatchLimits(max_events=50, linger_ms=10_000))
    hosts = [f"h{i}" for i in range(20)]
    stream = []
    for window in range(10):
        for i, h in enumerate(hosts):
            stream.append(record("measurement", h, window))
            if window % 5 == 0:
                stream.append(record("heartbeat", h, window))
            if (window + i) % 7 == 0:
                stream.append(record("fault", h, window))
    delivered = _drive(batcher, stream)
    assert sorted(r.event_id for b in delivered for r in b.records) == sorted(r.event_id for r in stream)
    per_domain = {d: sum(1 for r in stream if r.domain == d) for d in ("measurement", "heartbeat", "fault")}
    # the fewest requests one-domain batches of 50 allow
    assert len(delivered) == sum(-(-n // 50) for n in per_domain.values())
    for h in hosts:
        for d in per_domain:
            mine = [r.event_id for b in delivered for r in b.records if r.key == h.encode() and r.domain == d]
            assert mine == [r.event_id for r in stream if r.key == h.encode() and r.domain == d], f"{h} {d}"


def test_random_streams_keep_per_host_order_per_domain_and_lose_nothing() -> None:
    rng = random.Random(7)
    domains = ["measurement", "heartbeat", "fault"]
    hosts = [f"h{i}" for i in range(6)]
    for trial in range(50):
        limits = BatchLimits(max_events=rng.randint(1, 8), max_bytes=rng.randint(1200, 6000))
        batcher = Batcher(limits)
        seq = itertools.count(1)
        stream = [record(rng.choice(domains), rng.choice(hosts), next(seq), offset=i) for i in range(200)]
        delivered: list[Batch] = []
        for i, r in enumerate(stream):
            sealed, rejected = batcher.add(r, now=i * 0.01)
            assert rejected is None
            delivered.extend(sealed)
            delivered.extend(batcher.due(now=i * 0.01))
        delivered.extend(batcher.flush())
        flat = [r for b in delivered for r in b.records]
        assert sorted(r.offset for r in flat) == list(range(200)), "every record exactly once"
        for host in hosts:
            for domain in domains:
                seen = [r.offset for r in flat if r.key == host.encode() and r.domain == domain]
                assert seen == sorted(seen), f"trial {trial}: {host}'s {domain} events out of order"
        for b in delivered:
            assert {r.domain for r in b.records} == {b.domain}
            assert len(b) <= limits.max_events
            assert len(b.body()) <= limits.max_bytes


def test_count_limit_seals_a_full_batch_at_once() -> None:
    batcher = Batcher(BatchLimits(max_events=3))
    sealed_all = []
    for i in range(7):
        sealed, _ = batcher.add(record("measurement", f"h{i}", i), 0.0)
        sealed_all.extend(sealed)
    assert [len(b) for b in sealed_all] == [3, 3]
    assert [len(b) for b in batcher.flush()] == [1]


def test_byte_limit_splits_a_batch_and_body_size_is_exact() -> None:
    one = record("measurement", "h0", 0)
    limit = batch_body_size(3, 3 * len(one.event_json))
    batcher = Batcher(BatchLimits(max_events=100, max_bytes=limit))
    records = [record("measurement", f"h{i}", 0) for i in range(7)]
    assert all(len(r.event_json) == len(one.event_json) for r in records)
    batches = _drive(batcher, records)
    assert [len(b) for b in batches] == [3, 3, 1]
    assert len(batches[0].body()) == limit
    assert [r.event_id for b in batches for r in b.records] == [r.event_id for r in records]


def test_event_larger_than_the_limit_is_rejected_not_sent() -> None:
    batcher = Batcher(BatchLimits(max_bytes=2048))
    small = record("fault", "h1", 1)
    big = record("fault", "h1", 2, padding=4096)
    batcher.add(small, 0.0)
    sealed, rejected = batcher.add(big, 0.0)
    assert sealed == []
    assert rejected is not None and rejected.record is big
    assert "too large" in rejected.reason and "2048" in rejected.reason
    assert [_ids(b) for b in batcher.flush()] == [["h1-fault-1"]]


def test_oversize_rejected_when_batching_is_off_too() -> None:
    batcher = Batcher(BatchLimits(enabled=False, max_bytes=1024))
    sealed, rejected = batcher.add(record("fault", "h1", 1, padding=2048), 0.0)
    assert sealed == [] and rejected is not None


def test_linger_seals_a_batch_after_its_first_record_waits_long_enough() -> None:
    batcher = Batcher(BatchLimits(linger_ms=200))
    batcher.add(record("measurement", "h1", 1), now=10.0)
    batcher.add(record("measurement", "h2", 1), now=10.15)
    assert batcher.next_deadline() == pytest.approx(10.2)
    assert batcher.due(10.19) == []
    due = batcher.due(10.2)
    assert [_ids(b) for b in due] == [["h1-measurement-1", "h2-measurement-1"]]
    assert batcher.next_deadline() is None and batcher.buffered_events == 0


def test_a_lingering_batch_the_caller_has_no_request_for_keeps_filling() -> None:
    batcher = Batcher(BatchLimits(max_events=3, linger_ms=200))
    batcher.add(record("measurement", "h1", 1), now=10.0)
    batcher.add(record("fault", "h1", 2), now=10.0)
    only_faults = lambda domain: domain == "fault"  # noqa: E731
    assert [_ids(b) for b in batcher.due(10.5, only_faults)] == [["h1-fault-2"]]
    assert batcher.next_deadline(only_faults) is None, "no deadline for a batch that may not be sealed"
    sealed, _ = batcher.add(record("measurement", "h2", 3), now=10.6)
    sealed, _ = batcher.add(record("measurement", "h3", 4), now=10.7)
    assert [(_ids(b), b.full) for b in sealed] == [(["h1-measurement-1", "h2-measurement-3", "h3-measurement-4"], True)]


def test_only_batches_that_could_take_no_more_are_full() -> None:
    batcher = Batcher(BatchLimits(max_events=2, linger_ms=0))
    sealed, _ = batcher.add(record("fault", "h1", 1), now=0.0)
    assert sealed == []
    [lingered] = batcher.due(0.0)
    batcher.add(record("fault", "h1", 2), now=0.0)
    sealed, _ = batcher.add(record("fault", "h1", 3), now=0.0)
    assert (lingered.full, [b.full for b in sealed]) == (False, [True])


def test_batching_off_sends_each_event_alone_as_single_event_body() -> None:
    batcher = Batcher(BatchLimits(enabled=False))
    r = record("heartbeat", "h1", 1)
    sealed, rejected = batcher.add(r, 0.0)
    assert rejected is None and len(sealed) == 1 and sealed[0].single
    assert orjson.loads(sealed[0].body()) == {"event": orjson.loads(r.event_json)}
    assert batcher.buffered_events == 0


def test_open_batches_are_bounded_across_domains() -> None:
    limits = BatchLimits(max_events=5, max_bytes=1024 * 1024, linger_ms=10_000)
    batcher = Batcher(limits)
    domains = ["measurement", "heartbeat", "fault"]
    for i in range(1000):
        batcher.add(record(domains[i % 3], f"h{i}", i), 0.0)
        assert batcher.buffered_events <= OPEN_BUDGET * limits.max_events
    assert batcher.room() >= 1


def test_bodies_are_the_ves_envelopes() -> None:
    a, b = record("fault", "h1", 1), record("fault", "h2", 2)
    assert orjson.loads(batch_body((a, b))) == {"eventList": [orjson.loads(a.event_json), orjson.loads(b.event_json)]}
    assert orjson.loads(single_body(a)) == {"event": orjson.loads(a.event_json)}
    assert len(batch_body((a, b))) == batch_body_size(2, len(a.event_json) + len(b.event_json))


def test_one_by_one_keeps_order_as_single_requests() -> None:
    batch = Batch("fault", (record("fault", "h1", 1), record("fault", "h1", 2)))
    singles = batch.one_by_one()
    assert [(s.single, _ids(s)) for s in singles] == [(True, ["h1-fault-1"]), (True, ["h1-fault-2"])]


@pytest.mark.parametrize("kwargs", [{"max_events": 0}, {"max_bytes": 10}, {"linger_ms": -1}])
def test_invalid_limits_are_refused_naming_the_setting(kwargs: dict[str, Any]) -> None:
    with pytest.raises(SinkConfigError, match="sink"):
        BatchLimits(**kwargs)


def test_each_partition_is_a_lane_of_its_own_so_batches_of_different_partitions_share_no_host() -> None:
    batcher = Batcher(BatchLimits(max_events=2, linger_ms=10_000))
    sealed = []
    # two rounds of four hosts, hosts h0/h1 in partition 0 and h2/h3 in partition 1, as a backlog holds them
    for rnd in range(2):
        for i in range(4):
            sealed += batcher.add(record("measurement", f"h{i}", rnd, offset=rnd * 4 + i, partition=i // 2), 0.0)[0]
    hosts = [{r.key for r in b.records} for b in sealed]
    assert hosts == [{b"h0", b"h1"}, {b"h2", b"h3"}, {b"h0", b"h1"}, {b"h2", b"h3"}]
    assert all(len({r.partition for r in b.records}) == 1 for b in sealed), "no batch mixes partitions"


def test_without_lanes_one_batch_per_domain_takes_every_partition_and_a_switch_seals_what_is_open() -> None:
    batcher = Batcher(BatchLimits(max_events=10, linger_ms=10_000))
    assert batcher.use_lanes(False) == [], "nothing open, nothing sealed"
    for i in range(4):
        batcher.add(record("measurement", f"h{i}", 0, offset=i, partition=i % 2), 0.0)
    [whole] = batcher.use_lanes(True)
    assert [r.key for r in whole.records] == [b"h0", b"h1", b"h2", b"h3"], "both partitions in one batch, in order"
    for i in range(4):
        batcher.add(record("measurement", f"h{i}", 1, offset=4 + i, partition=i % 2), 0.0)
    assert [[r.key for r in b.records] for b in batcher.flush()] == [[b"h0", b"h2"], [b"h1", b"h3"]]
