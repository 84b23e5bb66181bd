"""Drill 3: the collector is down for 60 s, then back; everything is delivered and memory stays bounded.

Two kinds of outage: a collector that answers 503 for 60 s, and one that is
stopped (connections refused) and started again on the same port 60 s later.
While it is down the feed goes on and a burst of large events lands on
``ves-events`` (more bytes than the memory bound), so a sink that buffered
in process instead of leaving the backlog in Kafka would break the bound.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest

from tests.drills.conftest import (
    INTERVAL,
    Drill,
    RssSampler,
    burst_events,
    metric_sum,
    print_figures,
    produce_records,
    scrape,
)
from tests.plugins.collector import VesCollector
from ves_streams.dev.replay import host_names

pytestmark = [pytest.mark.integration, pytest.mark.drill]

OUTAGE_SECONDS = 60.0
#: Burst produced to ves-events during the outage: 2400 events of ~64 KiB (~150 MiB), in chunks
#: spread over the first 45 s (so the brokers, shared with the processing worker, are not flooded).
BURST_EVENTS = 2400
BURST_EVENT_BYTES = 64 * 1024
BURST_CHUNK = 200
BURST_SPREAD_SECONDS = 45.0
#: RSS growth allowed to the sink and the processing worker while the collector is down.
RSS_GROWTH_LIMIT_MB = 100.0
#: Requests (attempts) allowed during the outage: exponential backoff from 0.5 s to 30 s
#: makes about ten in 60 s; a retry loop without backoff would make thousands.
MAX_ATTEMPTS_DURING_OUTAGE = 40
#: After the collector is back: the retry may wait out its backoff (<= 30 s), then the backlog drains.
DRAIN_TIMEOUT = 150.0


@pytest.mark.parametrize(
    "outage",
    ["503", "refused"],
)
def test_collector_down_60s_then_back_delivers_everything_with_bounded_memory(
    drill: Drill, ves_collector_factory: Callable[..., VesCollector], outage: str
) -> None:
    hosts = host_names(10, "co")
    processor = drill.processor("p1")
    sink = drill.sink("sink")
    drill.events
    dlq = drill.dlq
    feed = drill.feed(hosts)
    warm = drill.warm_up(hosts)
    time.sleep(2 * INTERVAL)
    collectors = drill.collected
    template = next(e for e in drill.collector.events() if e["commonEventHeader"]["domain"] == "measurement")
    burst = burst_events(template, BURST_EVENTS, BURST_EVENT_BYTES, f"burst-{outage}")
    burst_mb = sum(len(v) for _, v, _ in burst) / 2**20

    metrics_before = scrape(sink)
    requests_before = drill.collector.stats().get("requests_total", 0)
    assert sink.proc is not None and processor.proc is not None
    with RssSampler({"sink": sink.proc.pid, "p1": processor.proc.pid}, period=0.5) as rss:
        time.sleep(3.0)  # baseline
        down_at = time.monotonic()
        port = urlsplit(drill.collector.url).port
        if outage == "503":
            drill.collector.control(status=503, seconds=OUTAGE_SECONDS)
        else:
            drill.collector.stop()
        burst_took = 0.0
        chunks = [burst[i : i + BURST_CHUNK] for i in range(0, len(burst), BURST_CHUNK)]
        for i, chunk in enumerate(chunks):
            burst_took += produce_records(drill.bootstrap, drill.names.events, chunk)
            time.sleep(max(0.0, down_at + (i + 1) * BURST_SPREAD_SECONDS / len(chunks) - time.monotonic()))
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
        if outage == "refused":
            collectors.add(ves_collector_factory(extra_args=["--port", str(port)]))
        up_at = time.monotonic()
    metrics_down = scrape(sink)
    lag_at_recovery = metric_sum(scrape(processor), "ves_streams_consumer_lag")
    outage_requests = (
        drill.collector.stats().get("requests", {}).get("503", 0)
        if outage == "503"
        else metric_sum(metrics_down, "ves_streams_sink_http_responses_total", code="none")
        - metric_sum(metrics_before, "ves_streams_sink_http_responses_total", code="none")
    )
    retries = metric_sum(metrics_down, "ves_streams_sink_retries_total") - metric_sum(metrics_before, "ves_streams_sink_retries_total")

    # the backlog: everything on ves-events when the collector came back
    backlog = {r.event_id for r in drill.events.snapshot()}
    delivered_all = None
    while time.monotonic() - up_at < DRAIN_TIMEOUT:
        started = time.monotonic()
        got = {e["commonEventHeader"]["eventId"] for e in collectors.events()}
        if backlog <= got:
            delivered_all = time.monotonic() - up_at
            break
        time.sleep(max(1.0, time.monotonic() - started))
    time.sleep(2 * INTERVAL)
    feed.stop()
    drained = drill.drain(feed, hosts, collector=collectors)
    report = drill.report(feed, hosts, collector=collectors)
    metrics_after = scrape(sink)
    render_errors = Counter(
        r.headers.get("ves-streams-reason", b"").decode("utf-8", "replace").split(": ", 1)[-1][:90] for r in dlq.snapshot()
    )
    requests_after = sum(c.stats().get("requests_total", 0) for c in collectors.collectors if c.process.poll() is None)

    print_figures(
        f"3 collector down 60 s ({outage})",
        {
            "hosts": len(hosts),
            "interval_s": INTERVAL,
            "warm_up_s": round(warm, 1),
            "outage_s": round(up_at - down_at, 1),
            "burst_events": len(burst),
            "burst_mb": round(burst_mb, 1),
            "burst_produce_busy_s": round(burst_took, 1),
            "backlog_events_at_recovery": len(backlog),
            "attempts_during_outage": outage_requests,
            "sink_retries_during_outage": retries,
            "backlog_delivered_after_s": None if delivered_all is None else round(delivered_all, 1),
            "collector_requests_total": requests_after if outage == "refused" else requests_after - requests_before,
            "sink_events_delivered": metric_sum(metrics_after, "ves_streams_sink_events_delivered_total"),
            "sink_dead_lettered": metric_sum(metrics_after, "ves_streams_sink_dead_lettered_total"),
            "rss_during_outage": rss.figures(),
            "processing_lag_at_recovery": lag_at_recovery,
            "processing_dead_letters": dict(render_errors.most_common(3)),
            "drain_s": round(drained, 1),
            "workers_alive": {w.name: w.running for w in (processor, sink)},
            **feed.figures(),
            **report.figures(),
        },
    )
    assert processor.running and sink.running
    for name in ("sink", "p1"):
        assert rss.growth(name) < RSS_GROWTH_LIMIT_MB, f"{name} RSS grew {rss.growth(name):.0f} MB while the collector was down"
    assert 0 < outage_requests <= MAX_ATTEMPTS_DURING_OUTAGE, f"{outage_requests} attempts in a {OUTAGE_SECONDS:.0f} s outage"
    assert delivered_all is not None, f"backlog not delivered {DRAIN_TIMEOUT:.0f} s after the collector came back"
    assert metric_sum(metrics_after, "ves_streams_sink_dead_lettered_total") == 0, "events dead-lettered instead of retried"
    report.check(max_missing_per_host=0)
