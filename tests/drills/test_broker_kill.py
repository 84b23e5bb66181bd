"""Drill 1: a broker is SIGKILLed mid-stream and restarted; the collector loses nothing."""

from __future__ import annotations

import time

import pytest

from tests.drills.conftest import INTERVAL, Drill, partition_leaders, print_figures
from ves_streams.dev.replay import host_names

pytestmark = [pytest.mark.integration, pytest.mark.drill]

#: How long the killed broker stays down (several windows, longer than the
#: brokers' 3 s session timeout so the controller fences it and leaders move).
DOWN_SECONDS = 12.0


def test_broker_kill_9_and_restart_loses_no_event(drill: Drill, kafka_cluster3) -> None:  # type: ignore[no-untyped-def]
    """kill -9 the broker leading the most partitions, restart it: every host gets every window,
    every notification becomes one fault event, the workers never stop."""
    hosts = host_names(10, "bk")
    processor = drill.processor("p1")
    sink = drill.sink("sink")
    drill.events  # start reading ves-events from the beginning
    feed = drill.feed(hosts)
    warm = drill.warm_up(hosts)
    time.sleep(3 * INTERVAL)

    n = drill.names
    leaders = partition_leaders(drill.bootstrap, [n.values, n.notifications, n.samples, n.events,
                                                  f"{n.app_id}-samples-state-changelog"])  # fmt: skip
    node_id = max(leaders, key=lambda k: leaders[k])
    victim = node_id - 1
    killed_at = time.time()
    kafka_cluster3.kill_node(victim)
    time.sleep(DOWN_SECONDS)
    restart_started = time.time()
    kafka_cluster3.restart_node(victim)
    restarted_at = time.time()
    time.sleep(10.0)
    feed.stop()
    drained = drill.drain(feed, hosts)
    report = drill.report(feed, hosts)

    print_figures(
        "1 broker kill -9",
        {
            "hosts": len(hosts),
            "interval_s": INTERVAL,
            "warm_up_s": round(warm, 1),
            "killed_node": node_id,
            "partitions_it_led": leaders[node_id],
            "down_s": round(restart_started - killed_at, 1),
            "restart_took_s": round(restarted_at - restart_started, 1),
            "drain_s": round(drained, 1),
            "workers_alive": {w.name: w.running for w in (processor, sink)},
            **feed.figures(),
            **report.figures(),
        },
    )
    assert processor.running and sink.running, "a worker stopped while a broker was down"
    report.check(max_missing_per_host=0)
