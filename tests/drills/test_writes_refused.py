"""Drill 8: two of three brokers down, so no write is accepted, for longer than ``max.poll.interval.ms``.

Two of the three combined broker+controller nodes are SIGKILLed while the
feed runs, and stay down for :data:`DOWN_SECONDS`, clearly longer than the
loops' ``max.poll.interval.ms`` (:data:`MAX_POLL_INTERVAL`, set low for this
drill through ``VES_STREAMS_KAFKA_MAX_POLL_INTERVAL``). Then both come back.

While they are down no write can be acknowledged: every topic has RF 3 and
``min.insync.replicas`` 2, and one replica is left. Killing two of three
combined nodes also loses the KRaft quorum, so the controller cannot shrink
any ISR or move any leader either: the survivor keeps leading what it led,
with the dead nodes still in every ISR, and an ``acks=all`` write can be
satisfied anywhere (it waits in vain on the survivor's partitions, and
finds no reachable leader for the others). Writes are refused either way; the drill
checks it did see no feed round acknowledged while the nodes were down
(the feed's send of the round due then stays pending, retried inside the
producer, and is acknowledged once the nodes are back; what it could not
send is not expected).

The nodes are killed right after the feed had a notification (and the round
before it) acknowledged, so the ingest and fault loops may be producing
that very input when the cluster stops taking writes: they must hold it,
partitions paused and the consumer polled, for the whole outage.

Pinned: no worker crashes; no loop (ingest, faults, sink) leaves its
consumer group while its group coordinator stays up (the survivor is chosen
to coordinate as many of the three groups as possible; the others are
reported); no ``loop failed`` and no traceback in any worker log; once the
nodes are back, processing resumes by itself, every window the feed made
due reaches the collector (late is fine, lost is not), and every
notification becomes exactly one fault event.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

import pytest

from tests.agents.support import Worker
from tests.drills.conftest import INTERVAL, DeliveryReport, Drill, print_figures
from ves_streams.dev.kafka import KafkaCluster
from ves_streams.dev.replay import host_names

pytestmark = [pytest.mark.integration, pytest.mark.drill]

#: The loops' ``max.poll.interval.ms`` in this drill (seconds), set low (production default 300).
MAX_POLL_INTERVAL = 6.0
#: How long the two nodes stay down: over twice ``MAX_POLL_INTERVAL``; with the nodes' restart,
#: longer than the render ticks' wait for an ingest that is behind by load (``max_backfill - 1`` =
#: 9 intervals, 18 s here): a tick waits out an outage of the cluster for as long as it lasts.
DOWN_SECONDS = 15.0
#: Traffic after both nodes are back, before the feed stops.
AFTER_SECONDS = 16.0

_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def _coordinators(bootstrap: str, groups: Sequence[str]) -> dict[str, int]:
    """group id -> node id of its group coordinator (FindCoordinator)."""
    from aiokafka.admin import AIOKafkaAdminClient

    out: dict[str, int] = {}
    errors: list[BaseException] = []

    async def find() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
        await admin.start()
        try:
            for group in groups:
                out[group] = int(await admin.find_coordinator(group))
        finally:
            await admin.close()

    def run() -> None:
        try:
            asyncio.run(find())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="find-coordinators")
    thread.start()
    thread.join(60)
    if errors:
        raise errors[0]
    return out


def _lines(worker: Worker, since: float, until: float = float("inf")) -> list[str]:
    """The worker's log lines stamped in ``[since, until)`` (continuation lines go with their stamped line)."""
    out: list[str] = []
    keep = False
    for line in worker.log_text().splitlines():
        m = _STAMP.match(line)
        if m:
            keep = since <= datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() < until
        if keep:
            out.append(line)
    return out


def _count(lines: Sequence[str], needle: str) -> int:
    return sum(needle in line for line in lines)


def _heartbeats_due(report: DeliveryReport, windows: Sequence[float]) -> dict[str, list[float]]:
    """The report's missing heartbeats, less boundaries whose window was not due.

    A heartbeat for boundary ``b`` goes out with the window ending at ``b``, for
    hosts with current samples; ``report.missing_heartbeats`` counts every
    boundary inside the span of the windows, and here that span has a gap of
    more than ten seconds in which the feed could write nothing, so no host
    had current samples and no heartbeat was due.
    """
    due = set(windows)
    return {h: [b for b in bs if round(b - INTERVAL, 6) in due] for h, bs in report.missing_heartbeats.items()}


def test_two_brokers_down_beyond_max_poll_interval_no_loop_leaves_its_group_and_nothing_is_lost(
    drill: Drill, kafka_cluster3: KafkaCluster
) -> None:
    """Writes refused for 15 s (> 2 x max.poll.interval 6 s) while the feed keeps trying; then the brokers
    return: every worker runs on, no loop whose coordinator stayed up rejoins its group, every notification
    reaches the collector once, every due window arrives (the render ticks wait out the outage for the
    samples still held upstream), and processing resumes by itself."""
    hosts = host_names(10, "wr")
    env = {"VES_STREAMS_KAFKA_MAX_POLL_INTERVAL": f"{MAX_POLL_INTERVAL:g}"}
    processor = drill.processor("p1", **env)
    sink = drill.sink("sink", **env)
    drill.events  # start reading ves-events from the beginning
    feed = drill.feed(hosts)
    warm = drill.warm_up(hosts)
    time.sleep(3 * INTERVAL)

    app = drill.names.app_id
    loops = {"ingest": (processor, f"{app}-ingest", "ingest: partitions revoked"),
             "faults": (processor, f"{app}-faults", "faults: partitions revoked"),
             "sink": (sink, f"{app}-sink", "VES sink: partitions revoked")}  # fmt: skip
    coordinators = _coordinators(drill.bootstrap, [group for _, group, _ in loops.values()] + [app])
    per_node = Counter(coordinators[group] for _, group, _ in loops.values())
    survivor_id = max(sorted(per_node), key=lambda node: per_node[node])
    victims = [i for i in range(kafka_cluster3.size) if kafka_cluster3.node(i).node_id != survivor_id]

    # kill right after a notification (and the round before it) was acknowledged: the loops are busy with them
    seen = len(feed.notifications)
    deadline = time.monotonic() + 4 * 3 * INTERVAL
    while len(feed.notifications) == seen and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(feed.notifications) > seen, "the feed acknowledged no notification to kill the brokers after"
    rounds_before = len(feed.rounds)
    notifications_before = len(feed.notifications)
    failures_before = len(feed.failures)
    killed_at = time.time()
    for i in victims:
        kafka_cluster3.kill_node(i)
    time.sleep(DOWN_SECONDS)
    restart_started = time.time()
    acked_while_down = [r for r in feed.rounds[rounds_before:] if r.acked_at < restart_started]
    acked_notifications_while_down = [n for n in feed.notifications[notifications_before:] if n.acked_at < restart_started]
    failures_while_down = len(feed.failures) - failures_before
    alive_while_down = {w.name: w.running for w in (processor, sink)}
    restart_took: list[float] = []
    for i in victims:
        began = time.time()
        kafka_cluster3.restart_node(i)
        restart_took.append(round(time.time() - began, 1))
    restarted_at = time.time()
    time.sleep(AFTER_SECONDS)
    feed.stop()
    drained = drill.drain(feed, hosts)
    report = drill.report(feed, hosts)
    windows = feed.fresh_windows()
    missing_heartbeats = _heartbeats_due(report, windows)

    # what the workers logged from the kill on
    since_kill = {w.name: _lines(w, killed_at) for w in (processor, sink)}
    while_down = {w.name: _lines(w, killed_at, restarted_at) for w in (processor, sink)}
    revokes = {name: _count(since_kill[w.name], needle) for name, (w, _, needle) in loops.items()}
    revokes_while_down = {name: _count(while_down[w.name], needle) for name, (w, _, needle) in loops.items()}
    joins = {group: sum(_count(lines, f"Joined group '{group}'") for lines in since_kill.values())
             for group in [*(g for _, g, _ in loops.values()), app]}  # fmt: skip
    held = {name: _count(since_kill[processor.name], f"{name}: producing a batch failed") for name in ("ingest", "faults")}
    logs = {w.name: w.log_text() for w in (processor, sink)}
    failed_loops = {name: [line[:300] for line in log.splitlines() if "loop failed" in line] for name, log in logs.items()}
    tracebacks = {name: log.count("Traceback") for name, log in logs.items()}
    leaves = {name: _count(lines, "LeaveGroup") for name, lines in since_kill.items()}
    session_expired = {name: _count(lines, "Heartbeat session expired") for name, lines in since_kill.items()}
    rendering = [line.split("] ", 3)[-1][:200] for line in since_kill[processor.name]
                 if any(k in line for k in ("ingest still behind", "more than 10 intervals", "missed windows",
                                            "waited", "could not send the render tick"))]  # fmt: skip

    # processing resumed: the first event the collector accepted after the restart, and the first of a fresh window
    starts = {r.event_id: r.interval_start for r in drill.events.snapshot()}
    records = drill.collected.records()
    after = [r for r in records if r["received_at"] >= restarted_at]
    fresh = [r for r in after if r["event"]["commonEventHeader"]["domain"] == "measurement"
             and (starts.get(r["event"]["commonEventHeader"]["eventId"]) or 0) >= restarted_at]  # fmt: skip
    # windows due while the nodes were down (their boundary fell in the outage), and when they arrived
    outage_windows = [w for w in windows if killed_at <= w + INTERVAL < restarted_at]
    arrival: dict[float, float] = {}
    for r in records:
        start = starts.get(r["event"]["commonEventHeader"]["eventId"])
        if start in outage_windows and r["event"]["commonEventHeader"]["domain"] == "measurement":
            arrival[start] = max(arrival.get(start, 0.0), r["received_at"])

    print_figures(
        "8 two brokers down: writes refused beyond max.poll.interval",
        {
            "hosts": len(hosts),
            "interval_s": INTERVAL,
            "max_poll_interval_s": MAX_POLL_INTERVAL,
            "warm_up_s": round(warm, 1),
            "coordinators": coordinators,
            "surviving_node": survivor_id,
            "killed_nodes": [kafka_cluster3.node(i).node_id for i in victims],
            "killed_at": time.strftime("%H:%M:%S", time.localtime(killed_at)) + f".{int(killed_at % 1 * 1000):03d}",
            "down_s": round(restart_started - killed_at, 1),
            "restart_took_s": restart_took,
            "rounds_acked_while_down": len(acked_while_down),
            "notifications_acked_while_down": len(acked_notifications_while_down),
            # a send the broker does not answer is retried inside the producer (40 s) before it counts as failed
            "feed_retries_while_down": failures_while_down,
            "feed_first_failure": feed.failures[failures_before][:200] if failures_while_down else None,
            "workers_alive_while_down": alive_while_down,
            "workers_alive": {w.name: w.running for w in (processor, sink)},
            "produce_attempts_failed_since_kill": held,
            "revokes_while_down": revokes_while_down,
            "revokes_since_kill": revokes,
            "group_joins_since_kill": joins,
            "leave_group_lines": leaves,
            "heartbeat_session_expired_lines": session_expired,
            "loop_failed_lines": {n: len(v) for n, v in failed_loops.items()},
            "tracebacks": tracebacks,
            "first_event_after_restart_s": round(min(r["received_at"] for r in after) - restarted_at, 1) if after else None,
            "first_fresh_window_after_restart_s": round(min(r["received_at"] for r in fresh) - restarted_at, 1) if fresh else None,
            "windows_due_in_outage": len(outage_windows),
            "outage_windows_arrived_after_restart_s": sorted(round(t - restarted_at, 1) for t in arrival.values()),
            "missing_windows_since_kill_s": {h: [round(w - killed_at, 1) for w in ws] for h, ws in report.missing.items() if ws},
            "render_log_since_kill": rendering[:12],
            "missing_due_heartbeats": {h: len(b) for h, b in missing_heartbeats.items() if b},
            "drain_s": round(drained, 1),
            **feed.figures(),
            **report.figures(),
        },
    )
    assert alive_while_down == {processor.name: True, sink.name: True}, f"a worker stopped while writes were refused: {alive_while_down}"
    assert processor.running and sink.running, "a worker stopped after the brokers returned"
    assert not acked_while_down and not acked_notifications_while_down, (
        f"{len(acked_while_down)} rounds and {len(acked_notifications_while_down)} notifications were acknowledged "
        "with two of three nodes down: writes were not refused, the drill proves nothing"
    )
    assert not any(failed_loops.values()), f"a loop failed: {failed_loops}"
    assert not any(tracebacks.values()), f"tracebacks in the worker logs: {tracebacks}"
    kept_coordinator = {name for name, (_, group, _) in loops.items() if coordinators[group] == survivor_id}
    rejoined = {name: revokes[name] for name in kept_coordinator if revokes[name]}
    assert not rejoined, (
        f"loops whose group coordinator (node {survivor_id}) stayed up gave up their partitions: {rejoined} "
        f"(max.poll.interval {MAX_POLL_INTERVAL:g} s, writes refused {DOWN_SECONDS:g} s)"
    )
    assert fresh, "no window after the restart reached the collector: processing did not resume"
    bad_heartbeats = {h: b for h, b in missing_heartbeats.items() if len(b) > 1}
    assert not bad_heartbeats, f"hosts missing due heartbeats: {bad_heartbeats}"
    lost = {h: [round(w - killed_at, 1) for w in ws] for h, ws in report.missing.items() if ws}
    report.missing_heartbeats = missing_heartbeats
    assert not lost, (
        f"measurement windows due while writes were refused never reached the collector (lost, not late), "
        f"window starts in s from the kill: {lost}; the worker logged: {rendering}"
    )
    report.check(max_missing_per_host=0)
