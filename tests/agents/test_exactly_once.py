"""``VES_STREAMS_PROCESSING_GUARANTEE=exactly_once``: Kafka transactions end to end.

Everything the worker writes (repartitioned samples, events, dead letters,
changelog) is transactional, committed with the input offsets it derives
from; consumers that read committed data see each output once, even when
the worker is SIGKILLed between processing and committing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.agents.conftest import INTERVAL
from tests.agents.support import KafkaIO, Names, Worker, host_messages, measurement_windows, notification
from ves_streams.runtime.clean_exit import CLEAN_EXIT

pytestmark = [pytest.mark.integration, pytest.mark.broker_version]

EXACTLY_ONCE = {"VES_STREAMS_PROCESSING_GUARANTEE": "exactly_once"}


def test_exactly_once_runs_end_to_end_and_survives_kill_9(
    start_worker: Callable[..., Worker], kafka_io: KafkaIO, names: Names
) -> None:
    first = start_worker("eos-1", **EXACTLY_ONCE)
    events = kafka_io.reader([names.events], read_committed=True)
    dlq = kafka_io.reader([names.dlq], read_committed=True)
    hosts = ["eos-a", "eos-b"]
    now = time.time()
    for host in hosts:
        kafka_io.produce_many(names.values, host_messages(host, now, interval=300.0))
    kafka_io.produce(names.values, b"not json")
    kafka_io.produce(names.notifications, notification("eos-a", now, "first"))

    events.wait_for(lambda rs: set(measurement_windows(rs)) >= set(hosts), timeout=6 * INTERVAL + 10)
    events.wait_for(lambda rs: len(rs) == 1, timeout=20, where=lambda r: r.domain == "fault")
    dlq.wait_for(lambda rs: len(rs) == 1, timeout=20)
    assert "offset commits wait for the records in flight" in first.log_text()  # commit_gate.py

    # A notification processed, maybe produced, but not committed when the worker dies:
    # its transaction is aborted and the next worker processes it again -- once, for readers of committed data.
    kafka_io.produce(names.notifications, notification("eos-b", time.time(), "second"))
    time.sleep(0.3)
    first.kill()
    second = start_worker("eos-2", **EXACTLY_ONCE)
    ready_at = time.time()
    faults = events.wait_for(lambda rs: len(rs) >= 2, timeout=30, where=lambda r: r.domain == "fault")
    events.wait_for(
        lambda rs: {r.key for r in rs} >= {h.encode() for h in hosts},
        timeout=2 * INTERVAL + 10,
        where=lambda r: r.domain == "measurement" and r.received > ready_at,
    )
    time.sleep(2 * INTERVAL)
    faults = events.snapshot(lambda r: r.domain == "fault")
    assert sorted(r.key for r in faults) == [b"eos-a", b"eos-b"], [(r.key, r.event_id) for r in faults]
    assert len(dlq.snapshot()) == 1
    # Duplicated windows (the dead worker's aborted ones are invisible) keep one eventId each.
    ids: dict[tuple[bytes | None, float | None], set[str]] = {}
    for r in events.snapshot(lambda r: r.domain == "measurement"):
        ids.setdefault((r.key, r.interval_start), set()).add(r.event_id)
    assert all(len(v) == 1 for v in ids.values())
    assert "Traceback" not in second.log_text(), second.log_tail()


def test_exactly_once_restart_on_the_same_data_directory_renders_every_window_once(
    start_worker: Callable[..., Worker], kafka_io: KafkaIO, names: Names
) -> None:
    """SIGKILL while a window's transaction is open, restart on the same disk (a StatefulSet's pod):
    the window is rendered again, and read_committed readers see every window exactly once.

    The window's render wrote its partition marker to the local store before its transaction
    committed; a restart that trusted the local store took the replayed tick for a duplicate."""
    committed = kafka_io.reader([names.events], read_committed=True)
    uncommitted = kafka_io.reader([names.events])
    first = start_worker("eos-same-disk", **EXACTLY_ONCE)
    host = "eos-disk"
    # fresh for 600 s: every window renders from this one round, no feed needed
    kafka_io.produce_many(names.values, host_messages(host, time.time(), interval=300.0))
    committed.wait_for(lambda rs: len(measurement_windows(rs).get(host, ())) >= 2, timeout=6 * INTERVAL + 20)
    done = max(measurement_windows(committed.snapshot())[host])
    # the next window is produced in an open transaction (Faust commits every few seconds): kill now
    uncommitted.wait_for(lambda rs: max(measurement_windows(rs).get(host, {0.0})) > done, timeout=4 * INTERVAL + 10)
    first.kill()
    killed_window = max(measurement_windows(uncommitted.snapshot())[host])
    second = start_worker("eos-same-disk", **EXACTLY_ONCE)
    ready_at = time.time()
    committed.wait_for(
        lambda rs: max(measurement_windows(rs).get(host, {0.0})) >= killed_window + 3 * INTERVAL,
        timeout=8 * INTERVAL + 30,
    )
    counts: dict[float, int] = {}
    for r in committed.snapshot(lambda r: r.domain == "measurement" and r.key == host.encode()):
        assert r.interval_start is not None
        counts[r.interval_start] = counts.get(r.interval_start, 0) + 1
    windows = sorted(counts)
    expected = [round(windows[0] + i * INTERVAL, 6) for i in range(int(round((windows[-1] - windows[0]) / INTERVAL)) + 1)]
    assert [w for w in expected if w not in counts] == [], f"windows never committed (killed at {killed_window})"
    assert {w: n for w, n in counts.items() if n != 1} == {}, "windows committed more than once"
    assert "Traceback" not in second.log_text(), second.log_tail()
    assert "the last exit was not clean and exactly_once is on: removed the local table data" in second.log_text()
    assert time.time() - ready_at < 8 * INTERVAL + 30
    second.stop()  # a clean stop says so: the next start keeps the local store
    assert list(Path(second.env["VES_STREAMS_DATA_DIR"]).rglob(CLEAN_EXIT)), "no clean-exit mark after SIGTERM"
