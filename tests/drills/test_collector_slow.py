"""Drill 4: the collector answers in 2 s per request and flaps (503, 429); delivery slows down, loses nothing,
and does not hammer it."""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytest

from tests.drills.conftest import INTERVAL, Drill, metric_sum, print_figures, scrape
from ves_streams.dev.replay import host_names

pytestmark = [pytest.mark.integration, pytest.mark.drill]

DELAY = 2.0
SLOW_SECONDS = 45.0
#: (seconds into the slow phase, control command): 3 s windows of refusals on top of the delay.
FLAPS: list[tuple[float, dict[str, Any]]] = [
    (6.0, {"status": 503, "seconds": 3}),
    (18.0, {"status": 429, "seconds": 3, "retry_after": 1}),
    (30.0, {"status": 503, "seconds": 3}),
]
#: A slow collector must not make events wait much longer than a few requests.
MAX_SLOW_LATENCY = 30.0


def _phase(records: list[dict[str, Any]], produced: dict[str, float], start: float, end: float) -> dict[str, Any]:
    """What the collector accepted in ``[start, end)``: events, requests, batch size, latency since produced."""
    inside = [r for r in records if start <= r["received_at"] < end]
    requests = {r["request"] for r in inside}
    latencies = sorted(
        r["received_at"] - produced[r["event"]["commonEventHeader"]["eventId"]]
        for r in inside if r["event"]["commonEventHeader"]["eventId"] in produced
    )  # fmt: skip
    seconds = max(end - start, 1e-9)
    return {
        "seconds": round(seconds, 1),
        "events": len(inside),
        "events_per_s": round(len(inside) / seconds, 2),
        "requests": len(requests),
        "events_per_request": round(len(inside) / len(requests), 1) if requests else 0.0,
        "latency_p50_s": round(statistics.median(latencies), 2) if latencies else None,
        "latency_max_s": round(latencies[-1], 2) if latencies else None,
    }


def _waits_of_produced(records: list[dict[str, Any]], produced: dict[str, float], start: float, end: float) -> dict[str, Any]:
    """How long the events produced in ``[start, end)`` waited for their first acceptance, whenever it came.

    Counting by production time rather than by arrival keeps the figure honest at the phase's end: the events
    still in flight when the slow phase stops are judged by how long they waited, not dropped from a ratio.
    """
    first: dict[str, float] = {}
    for r in records:
        event_id = r["event"]["commonEventHeader"]["eventId"]
        if event_id in produced and r["received_at"] < first.get(event_id, float("inf")):
            first[event_id] = r["received_at"]
    ids = [event_id for event_id, t in produced.items() if start <= t < end]
    waits = sorted(first[i] - produced[i] for i in ids if i in first)
    return {
        "events": len(ids),
        "delivered": len(waits),
        "wait_p50_s": round(statistics.median(waits), 2) if waits else None,
        "wait_max_s": round(waits[-1], 2) if waits else None,
    }


def test_slow_and_flapping_collector_degrades_gracefully_without_loss(drill: Drill) -> None:
    hosts = host_names(10, "cs")
    processor = drill.processor("p1")
    sink = drill.sink("sink")
    drill.events
    feed = drill.feed(hosts)
    warm = drill.warm_up(hosts)
    normal_start = time.time()
    time.sleep(10.0)

    metrics_before = scrape(sink)
    stats_before = drill.collector.stats()
    slow_start = time.time()
    drill.collector.control(delay=DELAY)
    for at, command in FLAPS:
        time.sleep(max(0.0, slow_start + at - time.time()))
        drill.collector.control(**command)
    time.sleep(max(0.0, slow_start + SLOW_SECONDS - time.time()))
    drill.collector.control(reset=True)
    slow_end = time.time()
    metrics_slow = scrape(sink)
    stats_slow = drill.collector.stats()
    time.sleep(12.0)
    after_end = time.time()
    feed.stop()
    drained = drill.drain(feed, hosts)
    report = drill.report(feed, hosts)

    produced = {r.event_id: r.timestamp / 1000 for r in drill.events.snapshot()}
    records = drill.collected.records()
    normal = _phase(records, produced, normal_start, slow_start)
    slow = _phase(records, produced, slow_start, slow_end)
    after = _phase(records, produced, slow_end, after_end)
    produced_in_slow = _waits_of_produced(records, produced, slow_start, slow_end)
    requests = stats_slow.get("requests", {})
    before = stats_before.get("requests", {})
    refused = {code: requests.get(code, 0) - before.get(code, 0) for code in ("503", "429")}
    slow_requests = stats_slow.get("requests_total", 0) - stats_before.get("requests_total", 0)
    retries = metric_sum(metrics_slow, "ves_streams_sink_retries_total") - metric_sum(metrics_before, "ves_streams_sink_retries_total")
    print_figures(
        "4 slow (2 s/request) and flapping collector",
        {
            "hosts": len(hosts),
            "interval_s": INTERVAL,
            "warm_up_s": round(warm, 1),
            "normal": normal,
            "slow_and_flapping": slow,
            "after_reset": after,
            "events_produced_during_slow": produced_in_slow,
            "requests_during_slow": slow_requests,
            "refused_during_slow": refused,
            "sink_retries_during_slow": retries,
            "drain_s": round(drained, 1),
            "workers_alive": {w.name: w.running for w in (processor, sink)},
            **feed.figures(),
            **report.figures(),
        },
    )
    assert processor.running and sink.running
    report.check(max_missing_per_host=0)
    failures = []
    # graceful: the sink keeps up by sending bigger batches, so every event produced meanwhile waits a bounded time
    if produced_in_slow["delivered"] != produced_in_slow["events"]:
        failures.append(f"delivered {produced_in_slow['delivered']} of {produced_in_slow['events']} events produced while the collector was slow")
    if produced_in_slow["wait_max_s"] is None or produced_in_slow["wait_max_s"] > MAX_SLOW_LATENCY:
        failures.append(f"events produced while the collector was slow waited up to {produced_in_slow['wait_max_s']} s (limit {MAX_SLOW_LATENCY:.0f} s)")
    if slow["events_per_request"] <= normal["events_per_request"]:
        failures.append(f"batches did not grow while the collector was slow ({slow['events_per_request']} events/request)")
    if slow["latency_max_s"] is None or slow["latency_max_s"] > MAX_SLOW_LATENCY:
        failures.append(f"events waited up to {slow['latency_max_s']} s (limit {MAX_SLOW_LATENCY:.0f} s)")
    # one request at a time, each held DELAY seconds: no parallel hammering, no retry storm
    if slow_requests > SLOW_SECONDS / DELAY + 2:
        failures.append(f"{slow_requests} requests in {SLOW_SECONDS:.0f} s at {DELAY} s each")
    if not 0 < sum(refused.values()) <= 3 * len(FLAPS):
        failures.append(f"refused requests {refused} for {len(FLAPS)} flaps")
    if retries != sum(refused.values()):
        failures.append(f"sink counted {retries} retries for {refused} refusals")
    if metric_sum(scrape(sink), "ves_streams_sink_dead_lettered_total") != 0:
        failures.append("events were dead-lettered")
    assert not failures, "; ".join(failures)
