"""``VES_STREAMS_PROCESSING_GUARANTEE=exactly_once``: Kafka transactions end to end.

Everything the worker writes (repartitioned samples, events, dead letters,
changelog) is transactional, committed with the input offsets it derives
from; consumers that read committed data see each output once, even when
the worker is SIGKILLed between processing and committing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.agents.conftest import INTERVAL
from tests.agents.support import KafkaIO, Names, Worker, host_messages, measurement_windows, notification

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
