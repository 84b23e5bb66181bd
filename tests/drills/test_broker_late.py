"""Drill 6: workers start while no broker answers; they wait, say so clearly, and proceed once the cluster is up."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.drills.conftest import INTERVAL, Drill, print_figures
from tests.plugins.collector import VesCollector
from ves_streams.dev.kafka import KafkaCluster, free_ports
from ves_streams.dev.replay import host_names

pytestmark = [pytest.mark.integration, pytest.mark.drill]

#: How long the workers run with no broker before the cluster starts.
ABSENT_SECONDS = 25.0
#: A "clear" line: says the worker is waiting for / cannot reach the broker (and, checked apart, names it).
_WAITING = re.compile(r"wait|retry|retrying|unreachable|not reachable|cannot reach|could not connect|unable to connect", re.I)


def _clear_lines(log: str, addresses: list[str]) -> list[str]:
    """Log lines that say the worker waits for (or retries) the broker and name one of its addresses."""
    lines = [line for line in log.splitlines() if not line.lstrip().startswith(("|", "+", "〃"))]
    return [line for line in lines if _WAITING.search(line) and any(a in line for a in addresses)]


def test_workers_wait_for_an_absent_broker_and_proceed_when_it_appears(
    kafka_version: str, ves_collector: VesCollector, tmp_path: Path
) -> None:
    ports = free_ports(6)
    broker_ports, controller_ports = ports[:3], ports[3:]
    addresses = [f"127.0.0.1:{p}" for p in broker_ports]
    bootstrap = ",".join(addresses)
    drill = Drill("broker_late", bootstrap, "kafka://" + ";".join(addresses), ves_collector, tmp_path)
    cluster = KafkaCluster(tmp_path / "kafka3", size=3, version=kafka_version, ports=broker_ports,
                           controller_ports=controller_ports)  # fmt: skip
    failed = True
    try:
        started = time.monotonic()
        processor = drill.processor("p1", wait=False)
        sink = drill.sink("sink", wait=False)
        exited_after: dict[str, float] = {}
        while time.monotonic() - started < ABSENT_SECONDS:
            for w in (processor, sink):
                if not w.running and w.name not in exited_after:
                    exited_after[w.name] = round(time.monotonic() - started, 1)
            time.sleep(0.2)
        logs_before = {w.name: w.log_text() for w in (processor, sink)}
        clear = {name: _clear_lines(log, addresses) for name, log in logs_before.items()}
        print_figures(
            "6 broker absent at start: while absent",
            {
                "absent_s": ABSENT_SECONDS,
                "exited_after_s": exited_after,
                "exit_codes": {w.name: (w.proc.returncode if w.proc is not None else None) for w in (processor, sink)},
                "clear_waiting_lines": {n: len(v) for n, v in clear.items()},
                "first_waiting_line": {n: (v[0][:200] if v else None) for n, v in clear.items()},
                "tracebacks": {name: log.count("Traceback") for name, log in logs_before.items()},
                "last_error": {name: next((line[:300] for line in reversed(log.splitlines()) if "ERROR" in line), None)
                               for name, log in logs_before.items()},  # fmt: skip
            },
        )
        if exited_after:
            pytest.fail(
                f"workers exited while the broker was absent instead of waiting for it: {exited_after} s after start, "
                f"exit codes { {w.name: w.proc.returncode for w in (processor, sink) if w.proc is not None and not w.running} }",
                pytrace=False,
            )
        assert all(clear.values()), (
            "a worker did not log that it is waiting for the broker (a line naming the broker address "
            f"and saying it waits/retries): { {n: logs_before[n].splitlines()[-15:] for n, v in clear.items() if not v} }"
        )

        cluster_started = time.monotonic()
        cluster.start()
        cluster_up = time.monotonic()
        drill.create_topics()
        ready_after: dict[str, float] = {}
        for worker in (processor, sink):
            worker.wait_ready(timeout=120)
            ready_after[worker.name] = round(time.monotonic() - cluster_up, 1)
        hosts = host_names(5, "bl")
        drill.events
        feed = drill.feed(hosts)
        warm = drill.warm_up(hosts, timeout=90)
        first_event_after = time.monotonic() - cluster_up
        time.sleep(6 * INTERVAL)
        feed.stop()
        drained = drill.drain(feed, hosts)
        report = drill.report(feed, hosts)
        print_figures(
            "6 broker absent at start: once it appears",
            {
                "cluster_start_s": round(cluster_up - cluster_started, 1),
                "ready_after_cluster_s": ready_after,
                "first_events_after_cluster_s": round(first_event_after, 1),
                "warm_up_s": round(warm, 1),
                "drain_s": round(drained, 1),
                **feed.figures(),
                **report.figures(),
            },
        )
        assert processor.running and sink.running
        report.check(max_missing_per_host=0)
        failed = False
    finally:
        drill.close(failed=failed)
        cluster.stop(timeout=1)
