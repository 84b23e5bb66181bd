"""Every answer is safe: the sink against the project's collector made to answer badly (no broker).

Charsets the collector declares but Python cannot decode with, bodies far
larger than any VES error, ``Retry-After`` values that would spin or park the
sink, and a collector that echoes the credentials it was sent.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from ves_streams.sink.batching import Batch
from ves_streams.sink.client import RESPONSE_BODY_LIMIT, HttpAnswer, VesHttpClient
from ves_streams.sink.config import CollectorConfig, Secret
from ves_streams.sink.delivery import BatchDelivery, DeliveryReport
from ves_streams.sink.records import dead_letter
from ves_streams.sink.retry import RetryPolicy

from tests.plugins.collector import VesCollector
from tests.sink.events import event, kafka_value, record

PASSWORD = "echo-me-not-7Qz"


def _post(collector: CollectorConfig, bodies: list[bytes]) -> list[HttpAnswer]:
    async def main() -> list[HttpAnswer]:
        client = VesHttpClient(collector)
        await client.start()
        try:
            return [await client.post(collector.single_url(collector.url), body) for body in bodies]
        finally:
            await client.close()

    return asyncio.run(main())


def _body() -> bytes:
    return kafka_value(event("heartbeat", "h1", 1))


@pytest.mark.parametrize("charset", ["x-no-such-charset", "rot13", "base64", "utf-16"])
def test_an_unknown_or_wrong_charset_decodes_with_a_fallback(ves_collector: VesCollector, charset: str) -> None:
    ves_collector.control(status=500, charset=charset)
    [answer] = _post(CollectorConfig(url=ves_collector.url), [_body()])
    assert answer.status == 500
    if charset != "utf-16":  # a real text encoding the bytes do not fit: decoded, garbled, no crash
        assert "SVC2000" in answer.body


def test_a_huge_body_is_read_up_to_the_limit_and_its_connection_not_kept(ves_collector: VesCollector) -> None:
    collector = CollectorConfig(url=ves_collector.url)
    ves_collector.control(status=503, count=2)
    small = _post(collector, [_body(), _body(), _body()])
    assert [a.status for a in small] == [503, 503, 202] and not any(a.truncated for a in small)
    assert ves_collector.stats()["connections"] == 1, "a small answer leaves its connection to be reused"

    ves_collector.control(status=503, count=2, body_bytes=50_000_000)
    started = time.monotonic()
    large = _post(collector, [_body(), _body(), _body()])
    assert [a.status for a in large] == [503, 503, 202]
    assert large[0].truncated and large[1].truncated and not large[2].truncated
    assert all(len(a.body.encode()) <= RESPONSE_BODY_LIMIT for a in large)
    assert "SVC1000" in large[0].body, "the start of the body, which holds the reason, is kept"
    assert time.monotonic() - started < 5, "50 MB were not read"
    # one new connection for the run, and one more after each cut-short answer
    assert ves_collector.stats()["connections"] == 1 + 3


def _deliver(
    collector: CollectorConfig,
    policy: RetryPolicy,
    batch: Batch,
    *,
    waits: list[float] | None = None,
    wanted: Callable[[], bool] = lambda: True,
) -> DeliveryReport | None:
    async def wait(seconds: float) -> None:
        if waits is not None:
            waits.append(seconds)
        await asyncio.sleep(seconds)

    async def main() -> DeliveryReport | None:
        client = VesHttpClient(collector)
        await client.start()
        try:
            return await BatchDelivery(collector, policy, client, wait=wait).deliver(batch, wanted=wanted)
        finally:
            await client.close()

    return asyncio.run(main())


@pytest.mark.parametrize(
    "retry_after",
    [0, "0", "-5", email.utils.formatdate(time.time() - 3600, usegmt=True), "soon"],
)
def test_a_retry_after_of_zero_or_less_never_makes_a_hot_loop(ves_collector: VesCollector, retry_after: Any) -> None:
    ves_collector.control(status=503, retry_after=retry_after)
    deadline = time.monotonic() + 3.0
    report = _deliver(
        CollectorConfig(url=ves_collector.url),
        RetryPolicy(initial_backoff=0.2, max_backoff=0.4),
        Batch("heartbeat", (record("heartbeat", "h1", 1),)),
        wanted=lambda: time.monotonic() < deadline,
    )
    assert report is None
    sent = ves_collector.stats()["requests_total"]
    # the normal backoff (full jitter, ceiling 0.2 then 0.4 s) gives ~10-20 in 3 s; a hot loop gives hundreds
    assert 3 <= sent <= 40, f"{sent} requests in 3 s"


def test_a_retry_after_years_ahead_is_capped(ves_collector: VesCollector) -> None:
    ves_collector.control(status=503, count=2, retry_after="Fri, 31 Dec 9999 23:59:59 GMT")
    waits: list[float] = []
    report = _deliver(
        CollectorConfig(url=ves_collector.url),
        RetryPolicy(initial_backoff=0.05, max_backoff=0.1, max_retry_after=0.5),
        Batch("heartbeat", (record("heartbeat", "h1", 1),)),
        waits=waits,
    )
    assert report is not None and len(report.delivered) == 1
    assert waits == [0.5, 0.5]


def test_echoed_credentials_reach_no_log_line_and_no_dead_letter(
    ves_collector_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    collector: VesCollector = ves_collector_factory(username="sink", password=PASSWORD)
    basic = base64.b64encode(f"sink:{PASSWORD}".encode()).decode()
    requests.post(
        f"{collector.url}/_control",
        json={"echo_auth": True, "status": 503, "count": 1, "reject_event_ids": ["h1-fault-2"]},
        timeout=10,
    )
    config = CollectorConfig(url=collector.url, username="sink", password=Secret(PASSWORD))
    batch = Batch("fault", (record("fault", "h1", 1), record("fault", "h1", 2)))
    with caplog.at_level(logging.DEBUG):
        report = _deliver(config, RetryPolicy(initial_backoff=0.01, max_backoff=0.02), batch)
    assert report is not None
    assert [r.event_id for r in report.delivered] == ["h1-fault-1"]
    [refusal] = report.refused
    assert refusal.body is not None and '"echo"' in refusal.body, "the collector did echo them"
    letter = dead_letter(refusal.record, reason=refusal.message, status=refusal.status, body=refusal.body, url=refusal.url)
    written = b"".join(value for _name, value in letter.headers) + caplog.text.encode()
    for secret in (PASSWORD, basic):
        assert secret.encode() not in written
    assert "***" in (refusal.body or "")
