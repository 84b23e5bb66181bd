"""Drill 2: one of two processing workers is SIGKILLed mid-stream; the other takes its partitions over."""

from __future__ import annotations

import re
import time
from collections import Counter
from datetime import datetime

import orjson
import pytest

from tests.drills.conftest import INTERVAL, PARTITIONS, SESSION_TIMEOUT, Drill, print_figures
from ves_streams.dev.replay import host_names
from ves_streams.state import host_partition

pytestmark = [pytest.mark.integration, pytest.mark.drill]

_REBUILT = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\].*host index rebuilt from the table: partitions \[([^\]]*)\], (\d+) hosts, (\d+) series",
    re.MULTILINE,
)


def _rebuilds(log: str) -> list[tuple[float, list[int], int, int]]:
    """(time, partitions, hosts, series) of every "host index rebuilt" line of a worker log."""
    out = []
    for m in _REBUILT.finditer(log):
        when = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        parts = [int(p) for p in m.group(2).split(",") if p.strip()]
        out.append((when, parts, int(m.group(3)), int(m.group(4))))
    return out


_BACKFILL = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\].*partition (\d+): rendered (\d+) missed windows", re.MULTILINE
)


def _backfills(log: str) -> list[tuple[float, int, int]]:
    """(time, partition, windows) of every backfill a worker logged."""
    return [
        (datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp(), int(m.group(2)), int(m.group(3)))
        for m in _BACKFILL.finditer(log)
    ]


def _aged_out_between(drill: Drill, since: float, until: float) -> dict[str, int]:
    """host -> records deleted from the state table (changelog tombstones) between ``since`` and ``until``.

    A host's record is deleted when all its series aged out. The feed runs
    without pause until ``until``, so a host aging out before then means a
    window was rendered before samples already sent for it had reached the
    state (they were stuck behind the dead worker's partitions).
    """
    changelog = drill.io.reader([f"{drill.names.app_id}-samples-state-changelog"])
    time.sleep(3.0)
    out: Counter[str] = Counter()
    for r in changelog.snapshot(lambda r: r.value is None and since < r.timestamp / 1000 < until):
        if r.key and r.key.startswith(b"["):
            out[orjson.loads(r.key)[0]] += 1
    return dict(sorted(out.items()))


def test_worker_kill_9_partitions_move_and_state_recovers(drill: Drill) -> None:
    """kill -9 one of two processing workers: the survivor owns every partition, rebuilds every host
    from the changelog, no host misses a window, a window sent twice has one eventId, and
    every window delivered carries its own round's samples (the windows rendered late after the
    takeover included)."""
    hosts = host_names(10, "wk")
    survivor = drill.processor("p1")
    victim = drill.processor("p2")
    sink = drill.sink("sink")
    drill.events
    dlq = drill.dlq
    feed = drill.feed(hosts)
    warm = drill.warm_up(hosts)
    # both workers own partitions (the assignment settles once the second one joined)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (_rebuilds(victim.log_text()) and _rebuilds(victim.log_text())[-1][1]):
        time.sleep(0.5)
    time.sleep(3 * INTERVAL)
    victim_partitions = _rebuilds(victim.log_text())[-1][1]
    victim_hosts = sorted(h for h in hosts if host_partition(h, PARTITIONS) in victim_partitions)

    killed_at = time.time()
    victim.kill()
    time.sleep(SESSION_TIMEOUT + 18)  # eviction, rebalance, changelog recovery, several windows
    feed.stop()
    drained = drill.drain(feed, hosts)
    report = drill.report(feed, hosts, contents=True)

    aged_out = _aged_out_between(drill, killed_at, feed.rounds[-1].acked_at)
    takeovers = [r for r in _rebuilds(survivor.log_text()) if r[0] > killed_at]
    full = [r for r in takeovers if sorted(r[1]) == list(range(PARTITIONS))]
    first_full = full[0] if full else None
    print_figures(
        "2 worker kill -9",
        {
            "hosts": len(hosts),
            "interval_s": INTERVAL,
            "session_timeout_s": SESSION_TIMEOUT,
            "warm_up_s": round(warm, 1),
            "victim_partitions": victim_partitions,
            "victim_hosts": len(victim_hosts),
            "survivor_rebuilds_after_kill": [(round(t - killed_at, 1), p, h, s) for t, p, h, s in takeovers],
            "takeover_s": round(first_full[0] - killed_at, 1) if first_full else None,
            "survivor_backfills": [(round(t - killed_at, 1), part, n) for t, part, n in _backfills(survivor.log_text()) if t > killed_at],
            "missing_windows_since_kill_s": {
                f"{h} (partition {host_partition(h, PARTITIONS)})": [round(w - killed_at, 1) for w in ws]
                for h, ws in report.missing.items() if ws
            },
            "series_aged_out_while_fed": aged_out,
            "notifications_without_fault": [(t, h, p, o, f"acked {a - killed_at:+.1f}s from kill")
                                             for t, h, p, o, a in report.lost_notifications],
            "victim_assignment": [line.strip() for line in victim.log_text().splitlines()
                                  if "-notifications " in line and "{" in line][-1:],
            "dead_letters": [(r.headers.get("ves-streams-stage", b"").decode(), r.headers.get("ves-streams-reason", b"")[:120])
                             for r in dlq.snapshot()][:5],
            "drain_s": round(drained, 1),
            "workers_alive": {w.name: w.running for w in (survivor, sink)},
            **feed.figures(),
            **report.figures(),
        },
    )
    assert survivor.running and sink.running
    assert victim_partitions and victim_hosts, "the victim owned no partition with hosts: nothing to take over"
    assert first_full is not None, f"the survivor never owned all {PARTITIONS} partitions after the kill: {takeovers}"
    # the index after the takeover is rebuilt from the table (recovered from the changelog) before any new value
    # is applied, so every host of the victim's partitions must be in it
    assert first_full[2] == len(hosts), f"survivor's table after takeover holds {first_full[2]} hosts, not {len(hosts)}"
    assert report.content_checked >= len(hosts) * 5, f"only {report.content_checked} windows' contents checked"
    report.check(max_missing_per_host=0)
