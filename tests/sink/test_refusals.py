"""Refusals classified: the collector's configuration (held) or the events (dead-lettered).

The pure classification first, then :class:`BatchDelivery` against the
project's collector answering as ONAP's does when its own configuration is
wrong (no broker here; ``test_service.py`` runs the same through Kafka).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from ves_streams.sink import metrics
from ves_streams.sink.batching import Batch
from ves_streams.sink.client import VesHttpClient
from ves_streams.sink.config import CollectorConfig
from ves_streams.sink.delivery import BatchDelivery, DeliveryReport
from ves_streams.sink.refusals import configuration_error, refusal_signature
from ves_streams.sink.retry import RetryPolicy

from tests.plugins.collector import VesCollector
from tests.sink.events import event_id, record

ONAP_NO_STREAM = (
    '{"requestError":{"serviceException":{"messageId":"SVC2000","text":"The following service error occurred: '
    '%1. Error code is %2","variables":["No domain defined for stream id","400"]}}}'
)


@pytest.mark.parametrize(
    "body, words",
    [
        (ONAP_NO_STREAM, "collector.dmaap.streamid"),
        ("Operation not permitted", "https://"),
        ("API version v7 is not supported", "VES_STREAMS_VES_VERSION"),
        ('{"requestError":{"serviceException":{"messageId":"SVC0002","text":"Bad Parameter (Incorrect request '
         'api version)"}}}', "VES_STREAMS_VES_VERSION"),
    ],
)
def test_answers_naming_the_collectors_configuration_are_recognised(body: str, words: str) -> None:
    meaning = configuration_error(400, body)
    assert meaning is not None and words in meaning


@pytest.mark.parametrize(
    "status, body",
    [
        (400, '{"requestError":{"serviceException":{"messageId":"SVC0002","text":"Bad Parameter (JSON does not '
              'conform to schema)"}}}'),
        (400, ""),
        (500, ONAP_NO_STREAM),  # a 5xx is retried anyway
    ],
)
def test_other_refusals_are_not_configuration_errors(status: int, body: str) -> None:
    assert configuration_error(status, body) is None


def test_refusals_the_same_way_share_a_signature() -> None:
    assert refusal_signature(400, " a\n  b ") == refusal_signature(400, "a b")
    assert refusal_signature(400, "a") != refusal_signature(413, "a")


# -- against the collector ---------------------------------------------------------


def _run(
    collector: CollectorConfig, batch: Batch, during: Callable[[BatchDelivery], Awaitable[None]]
) -> DeliveryReport | None:
    """Deliver ``batch`` while ``during(delivery)`` runs (it lifts the refusal); the report."""

    async def main() -> DeliveryReport | None:
        client = VesHttpClient(collector)
        await client.start()
        try:
            delivery = BatchDelivery(collector, RetryPolicy(initial_backoff=0.05, max_backoff=0.2), client)
            task = asyncio.ensure_future(delivery.deliver(batch))
            await during(delivery)
            return await asyncio.wait_for(task, 20)
        finally:
            await client.close()

    return asyncio.run(main())


async def _held_for_a_while(delivery: BatchDelivery, collector: VesCollector, domain: str) -> dict[str, str]:
    deadline = time.monotonic() + 10
    while domain not in delivery.held():
        assert time.monotonic() < deadline, "delivery never held"
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # probes keep being refused meanwhile
    held = delivery.held()
    assert metrics.HELD.labels(domain=domain)._value.get() == 1  # noqa: SLF001 - the exported value
    assert await asyncio.to_thread(collector.events) == []
    await asyncio.to_thread(collector.control, reset=True)
    return held


@pytest.mark.parametrize("refusal, words", [("no_stream", "No domain defined for stream id"),
                                             ("http_with_auth", "Operation not permitted"),
                                             ("api_version", "is not supported")])
def test_a_configuration_refusal_holds_the_batch_until_the_collector_takes_it(
    ves_collector: VesCollector, refusal: str, words: str
) -> None:
    ves_collector.control(onap_refusal=refusal)
    records = tuple(record("fault", f"h{i % 2}", i) for i in range(4))
    seen: dict[str, str] = {}

    async def during(delivery: BatchDelivery) -> None:
        seen.update(await _held_for_a_while(delivery, ves_collector, "fault"))

    report = _run(CollectorConfig(url=ves_collector.url), Batch("fault", records), during)
    assert report is not None and report.refused == (), "nothing dead-lettered"
    assert [r.event_id for r in report.delivered] == [r.event_id for r in records]
    assert words in seen["fault"]
    assert metrics.HELD.labels(domain="fault")._value.get() == 0  # noqa: SLF001
    assert len(ves_collector.rejected()) >= 3, "the batch was re-sent as a probe while held"
    assert {r["path"] for r in ves_collector.rejected()} == {"/eventListener/v7/eventBatch"}, "never split"


def test_every_event_of_a_batch_refused_the_same_way_holds_it(ves_collector: VesCollector) -> None:
    ves_collector.control(status=400)  # ONAP-like SVC2000 body, the same for every request
    records = tuple(record("measurement", f"h{i % 3}", i) for i in range(5))
    seen: dict[str, str] = {}

    async def during(delivery: BatchDelivery) -> None:
        seen.update(await _held_for_a_while(delivery, ves_collector, "measurement"))

    report = _run(CollectorConfig(url=ves_collector.url), Batch("measurement", records), during)
    assert report is not None and report.refused == ()
    assert len(report.delivered) == 5
    assert "the same way" in seen["measurement"] and "400" in seen["measurement"]
    singles = [r for r in ves_collector.rejected() if r["path"] == "/eventListener/v7"]
    assert len(singles) == 5, "the events were tried one by one once, then the batch was the probe"


def test_one_bad_event_among_good_ones_is_still_dead_lettered_alone(ves_collector: VesCollector) -> None:
    records = tuple(record("fault", "h0", i) for i in range(3))
    bad = event_id("fault", "h0", 1)
    ves_collector.control(reject_event_ids=[bad])

    async def during(_delivery: BatchDelivery) -> None:
        return None

    report = _run(CollectorConfig(url=ves_collector.url), Batch("fault", records), during)
    assert report is not None
    assert [r.record.event_id for r in report.refused] == [bad]
    assert len(report.delivered) == 2
