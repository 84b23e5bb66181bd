"""State survives crashes: recovered from the changelog, taken over by the surviving worker."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable

import pytest

from tests.agents.conftest import INTERVAL
from tests.agents.support import KafkaIO, Names, Record, Worker, host_messages, measurement_windows

pytestmark = pytest.mark.integration

_REBUILT = re.compile(r"host index rebuilt from the table: partitions \[[^\]]*\], (\d+) hosts, (\d+) series")


def _fields(record: Record) -> dict:
    return record.json()["event"]["measurementFields"]


def test_state_recovers_from_the_changelog_after_kill_9(
    start_worker: Callable[..., Worker], kafka_io: KafkaIO, names: Names
) -> None:
    """kill -9, restart with an empty data dir: events resume for the hosts, same samples, no value re-sent."""
    first = start_worker("before")
    events = kafka_io.reader([names.events])
    hosts = ["rec-a", "rec-b"]
    now = time.time()
    for host in hosts:
        # collectd interval 300 s: nothing ages out during the test, and nothing is sent again
        kafka_io.produce_many(names.values, host_messages(host, now, interval=300.0))
    events.wait_for(lambda rs: set(measurement_windows(rs)) >= set(hosts), timeout=4 * INTERVAL + 5)
    time.sleep(4.0)  # past Faust's commit interval (2.8 s): the input offsets are committed
    samples_before = {r.key: _fields(r) for r in events.snapshot(lambda r: r.domain == "measurement")}

    first.kill()
    killed_at = time.time()
    # A new worker on another (empty) data directory: the state can only come from the changelog.
    second = start_worker("after")
    ready_at = time.time()
    after = events.wait_for(
        lambda rs: {r.key for r in rs} >= {h.encode() for h in hosts},
        timeout=2 * INTERVAL + 5,
        where=lambda r: r.domain == "measurement" and r.received > ready_at,
    )
    for host in hosts:
        resumed = min(r.received for r in after if r.key == host.encode())
        assert resumed - ready_at <= 2 * INTERVAL + 1.0, f"{host}: first event {resumed - ready_at:.1f}s after ready"
        latest = max((r for r in after if r.key == host.encode()), key=lambda r: r.received)
        assert _fields(latest) == samples_before[host.encode()], "the restarted worker renders the same samples"

    rebuilt = [tuple(map(int, m.groups())) for m in _REBUILT.finditer(second.log_text())]
    assert rebuilt, second.log_tail()
    assert rebuilt[0][0] == len(hosts), f"first index rebuild after recovery saw {rebuilt[0]} (hosts, series)"
    # Windows rendered during the downtime: none lost, the gap was backfilled.
    windows = measurement_windows(events.snapshot())
    for host in hosts:
        starts = sorted(windows[host])
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        assert max(gaps) <= 3 * INTERVAL, f"{host}: windows {starts} around the kill at {killed_at:.1f}"


def test_two_workers_one_killed_every_host_keeps_getting_events(
    start_worker: Callable[..., Worker], kafka_io: KafkaIO, names: Names
) -> None:
    """Two workers share the partitions; one is SIGKILLed mid-stream.

    Every host keeps getting measurement events with no more than two
    windows missing, and a window rendered twice (by the dead worker and by
    the one taking over) carries the same eventId both times.
    """
    survivor = start_worker("w1")
    victim = start_worker("w2")
    events = kafka_io.reader([names.events])
    hosts = [f"node-{i}" for i in range(6)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def feed() -> None:
        try:
            while not stop.is_set():
                now = time.time()
                for host in hosts:
                    # collectd's interval (10 s) outlasts the outage (session timeout 6 s + rebalance):
                    # series must not age out while half the input partitions have no consumer.
                    kafka_io.produce_many(names.values, host_messages(host, now, interval=10.0))
                stop.wait(INTERVAL)
        except BaseException as exc:  # surfaced in the test thread
            errors.append(exc)

    feeder = threading.Thread(target=feed, name="feed", daemon=True)
    feeder.start()
    try:
        events.wait_for(lambda rs: set(measurement_windows(rs)) >= set(hosts), timeout=30)
        steady = time.time() + INTERVAL
        time.sleep(5 * INTERVAL)
        victim.kill()
        killed_at = time.time()
        time.sleep(24.0)  # session timeout (6 s), rebalance, recovery, several windows
        end = time.time()
    finally:
        stop.set()
        feeder.join(30)
    assert not errors, errors
    time.sleep(2 * INTERVAL)
    lag = [line for line in survivor.get("/metrics").text.splitlines() if line.startswith(("ves_streams_consumer_lag", "ves_streams_render_windows_total"))]
    print("survivor metrics:", *lag, sep="\n  ")

    records = events.snapshot(lambda r: r.domain == "measurement")
    windows = measurement_windows(records)
    first_window = (int(steady // INTERVAL) + 1) * INTERVAL
    last_window = (int(end // INTERVAL) - 2) * INTERVAL
    expected = [first_window + i * INTERVAL for i in range(int((last_window - first_window) / INTERVAL) + 1)]
    report = {}
    for host in hosts:
        missing = [w for w in expected if w not in windows.get(host, set())]
        longest, run = 0, 0
        for w in expected:
            run = run + 1 if w in missing else 0
            longest = max(longest, run)
        report[host] = (longest, missing)
        seen = sorted((r.interval_start, round(r.received - killed_at, 1)) for r in records if r.key == host.encode())
        assert longest <= 2, f"{host} missed {longest} consecutive windows: {missing} (kill at {killed_at:.1f}); got {seen}"
    # events after the takeover: the survivor renders every host
    late = {r.key.decode() for r in records if r.received > killed_at + 15}
    assert late >= set(hosts), f"hosts without events after the takeover: {set(hosts) - late}"

    # Before the kill, each window of each host is rendered once: by the partition's active
    # owner only, never by the worker holding a standby replica of it.
    before_kill = Counter((r.key, r.interval_start) for r in records
                          if r.interval_start is not None and first_window <= r.interval_start < killed_at - 2 * INTERVAL)  # fmt: skip
    assert before_kill and max(before_kill.values()) == 1, before_kill.most_common(3)

    # duplicates only with the same eventId
    ids_by_window: dict[tuple[bytes | None, float | None], set[str]] = defaultdict(set)
    windows_by_id: dict[str, set[tuple[bytes | None, float | None]]] = defaultdict(set)
    for r in records:
        ids_by_window[(r.key, r.interval_start)].add(r.event_id)
        windows_by_id[r.event_id].add((r.key, r.interval_start))
    assert all(len(ids) == 1 for ids in ids_by_window.values())
    assert all(len(ws) == 1 for ws in windows_by_id.values())
