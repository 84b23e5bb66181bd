"""BatchDelivery against a real collector process (no broker): failover, attempt limits, refusals."""

from __future__ import annotations

import asyncio
import socket
import time

from ves_streams.sink.batching import Batch
from ves_streams.sink.client import VesHttpClient
from ves_streams.sink.config import CollectorConfig
from ves_streams.sink.delivery import POISON_AFTER, BatchDelivery, DeliveryReport
from ves_streams.sink.retry import RetryPolicy

from tests.plugins.collector import VesCollector
from tests.sink.events import event_id, record


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _deliver(collector: CollectorConfig, policy: RetryPolicy, batch: Batch, waits: list[float]) -> DeliveryReport:
    async def wait(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(seconds)

    async def main() -> DeliveryReport:
        client = VesHttpClient(collector)
        await client.start()
        try:
            report = await BatchDelivery(collector, policy, client, wait=wait).deliver(batch)
        finally:
            await client.close()
        assert report is not None
        return report

    return asyncio.run(main())


def test_unreachable_primary_fails_over_to_the_backup_at_once(ves_collector: VesCollector) -> None:
    batch = Batch("fault", (record("fault", "h1", 1), record("fault", "h1", 2)))
    waits: list[float] = []
    report = _deliver(
        CollectorConfig(url=_closed_port_url(), backup_url=ves_collector.url, connect_timeout=2),
        RetryPolicy(initial_backoff=5, max_backoff=10),
        batch,
        waits,
    )
    assert [r.event_id for r in report.delivered] == ["h1-fault-1", "h1-fault-2"]
    assert waits == [], "no backoff before trying a healthy backup"
    assert [e["commonEventHeader"]["eventId"] for e in ves_collector.events()] == ["h1-fault-1", "h1-fault-2"]


def test_attempt_limit_refuses_the_events_as_exhausted(ves_collector: VesCollector) -> None:
    ves_collector.control(status=503, seconds=30)
    batch = Batch("heartbeat", (record("heartbeat", "h1", 1),))
    waits: list[float] = []
    report = _deliver(
        CollectorConfig(url=ves_collector.url),
        RetryPolicy(initial_backoff=0.01, max_backoff=0.05, max_attempts=3),
        batch,
        waits,
    )
    assert report.delivered == ()
    [refusal] = report.refused
    assert (refusal.kind, refusal.status) == ("exhausted", 503)
    assert len(waits) == 2 and all(0 <= w <= 0.05 for w in waits)
    assert ves_collector.stats()["requests"] == {"503": 3}


def test_refused_batch_is_resent_one_by_one_in_order(ves_collector: VesCollector) -> None:
    records = tuple(record("measurement", f"h{i % 2}", i) for i in range(6))
    bad = event_id("measurement", "h0", 2)
    ves_collector.control(reject_event_ids=[bad])
    report = _deliver(CollectorConfig(url=ves_collector.url), RetryPolicy(), Batch("measurement", records), [])
    assert [r.event_id for r in report.delivered] == [r.event_id for r in records if r.event_id != bad]
    [refusal] = report.refused
    assert (refusal.record.event_id, refusal.kind, refusal.status) == (bad, "refused", 400)
    assert refusal.body and "requestError" in refusal.body
    paths = [r["path"] for r in ves_collector.records()]
    assert paths == ["/eventListener/v7"] * 5, "the fallback sends single events"


def test_wanted_false_abandons_without_reporting(ves_collector: VesCollector) -> None:
    ves_collector.control(status=503, seconds=30)
    calls: list[int] = []

    def wanted() -> bool:
        calls.append(1)
        return len(calls) < 3

    async def main() -> object:
        collector = CollectorConfig(url=ves_collector.url)
        client = VesHttpClient(collector)
        await client.start()
        try:
            delivery = BatchDelivery(collector, RetryPolicy(initial_backoff=0.01, max_backoff=0.02), client)
            return await delivery.deliver(Batch("fault", (record("fault", "h1", 1),)), wanted=wanted)
        finally:
            await client.close()

    assert asyncio.run(main()) is None
    assert ves_collector.stats()["requests"] == {"503": 2}


# -- no batch blocks its hosts forever ------------------------------------------------


def test_a_batch_answered_500_for_one_event_is_split_and_the_event_dead_lettered(ves_collector: VesCollector) -> None:
    records = tuple(record("fault", f"h{i % 3}", i) for i in range(9))
    bad = event_id("fault", "h1", 4)
    ves_collector.control(reject_event_ids=[bad], reject_status=500)
    report = _deliver(
        CollectorConfig(url=ves_collector.url),
        RetryPolicy(initial_backoff=0.01, max_backoff=0.05),
        Batch("fault", records),
        [],
    )
    assert sorted(r.event_id or "" for r in report.delivered) == sorted(
        r.event_id or "" for r in records if r.event_id != bad
    )
    [refusal] = report.refused
    assert (refusal.record.event_id, refusal.kind, refusal.status) == (bad, "poisoned", 500)
    assert "while it accepted other requests" in refusal.message and refusal.body and "SVC1000" in refusal.body
    accepted = [e["commonEventHeader"] for e in ves_collector.events()]
    for host in ("h0", "h1", "h2"):
        sequences = [h["sequence"] for h in accepted if h["sourceName"] == host]
        assert sequences == sorted(sequences), f"{host}'s events out of order: {sequences}"
    assert [h["sequence"] for h in accepted if h["sourceName"] == "h1"] == [1, 7]
    poison_attempts = sum(1 for r in ves_collector.rejected() if r["event_ids"] == [bad])
    assert poison_attempts == POISON_AFTER


def test_a_413_batch_is_split_down_to_single_events(ves_collector: VesCollector) -> None:
    records = tuple(record("measurement", "h0", i) for i in range(4))
    bad = event_id("measurement", "h0", 3)
    ves_collector.control(reject_event_ids=[bad], reject_status=413)
    report = _deliver(
        CollectorConfig(url=ves_collector.url),
        RetryPolicy(initial_backoff=0.01, max_backoff=0.05),
        Batch("measurement", records),
        [],
    )
    assert [r.event_id for r in report.delivered] == [r.event_id for r in records[:3]]
    [refusal] = report.refused
    assert (refusal.kind, refusal.status) == ("poisoned", 413)


def test_when_every_request_is_answered_500_nothing_is_dead_lettered(ves_collector: VesCollector) -> None:
    ves_collector.control(status=500)
    records = tuple(record("fault", f"h{i % 2}", i) for i in range(4))
    deadline = time.monotonic() + 4.0

    async def main() -> object:
        collector = CollectorConfig(url=ves_collector.url)
        client = VesHttpClient(collector)
        await client.start()
        try:
            delivery = BatchDelivery(collector, RetryPolicy(initial_backoff=0.01, max_backoff=0.05), client)
            return await delivery.deliver(Batch("fault", records), wanted=lambda: time.monotonic() < deadline)
        finally:
            await client.close()

    assert asyncio.run(main()) is None, "still retrying: an outage is waited out, never dead-lettered"
    rejected = ves_collector.rejected()
    assert any(r["path"] == "/eventListener/v7" for r in rejected), "the batch was split after a few 500s"
    assert len(rejected) > 2 * POISON_AFTER, "single events were retried past the poison limit"
    assert ves_collector.events() == []
