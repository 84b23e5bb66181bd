"""Debian's Prometheus scrapes a running worker: every metric the rules and the dashboard use has series.

A worker of role ``all`` (processing and the sink, delivering to the real
local collector) gets values, a notification and a poison message, then a
real ``prometheus`` (Debian's package, installed by ``.ci/run``) scrapes its
``/metrics`` every second. Checked: each metric named in
``deploy/prometheus/ves-streams-alerts.yml`` or ``deploy/grafana/ves-streams.json``
is in the worker's exposition with at least one sample, and a PromQL query
for it returns series. A metric renamed in the code, or a family that only
appears after its first event (so that an alert on it could never fire
before that), fails here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.agents.conftest import INTERVAL
from tests.agents.support import KafkaIO, Names, Worker, free_port, host_messages, notification
from tests.deploy import metric_names
from tests.plugins.collector import VesCollector

pytestmark = pytest.mark.integration


def _used_metrics() -> set[str]:
    exprs = metric_names.rule_exprs() + metric_names.dashboard_exprs()
    used = {name for expr in exprs for name in metric_names.parse_promql(expr).names}
    return used - set(metric_names.PROMETHEUS_SERIES)  # Prometheus's own (up, scrape_*)


@pytest.fixture
def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        if os.environ.get(metric_names.REQUIRE_PROMETHEUS):
            pytest.fail(f"prometheus is not installed, and {metric_names.REQUIRE_PROMETHEUS} is set")
        pytest.skip("Debian's prometheus is not installed (.ci/run installs it)")
    return found


@pytest.fixture
def scrape(prometheus_binary: str, worker_dir: Path) -> Iterator[Callable[[Worker], str]]:
    """``scrape(worker)``: a Prometheus scraping the worker every second; returns its base URL."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(worker: Worker) -> str:
        port = free_port()
        home = worker_dir / "prometheus"
        home.mkdir()
        config = home / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: ves-streams\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{worker.web_port}']}}]\n"
        )
        log = (home / "prometheus.log").open("wb")
        procs.append(subprocess.Popen(
            [prometheus_binary, f"--config.file={config}", f"--storage.tsdb.path={home / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        ))  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/-/ready", timeout=1).status_code == 200:
                    return base
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus did not become ready:\n{(home / 'prometheus.log').read_text()[-3000:]}")

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _query(base: str, expr: str) -> list[dict]:  # type: ignore[type-arg]
    answer = requests.get(f"{base}/api/v1/query", params={"query": expr}, timeout=5).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def test_prometheus_scrapes_every_metric_the_alerts_and_the_dashboard_use_from_a_live_worker(
    start_worker: Callable[..., Worker], kafka_io: KafkaIO, names: Names,
    ves_collector: VesCollector, scrape: Callable[[Worker], str],
) -> None:  # fmt: skip
    used = _used_metrics()
    assert len(used) >= 15, f"the rules and the dashboard name only {sorted(used)}"
    worker = start_worker(VES_STREAMS_ROLE="all", VES_STREAMS_COLLECTOR_URL=ves_collector.url)
    for host in ("scraped-a", "scraped-b"):
        kafka_io.produce_many(names.values, host_messages(host, time.time(), interval=INTERVAL))
    kafka_io.produce(names.values, b"poison")
    kafka_io.produce(names.notifications, notification("scraped-a", time.time()))
    ves_collector.wait_for(lambda events: {e["commonEventHeader"]["domain"] for e in events} >= {"measurement", "fault"},
                           timeout=30)  # fmt: skip

    exposition = worker.get("/metrics").text
    sampled = {sample.name for family in text_string_to_metric_families(exposition) for sample in family.samples}
    missing = sorted(used - sampled)
    assert not missing, f"named by the rules or the dashboard, but without a sample in a live worker's /metrics: {missing}"

    base = scrape(worker)
    deadline = time.monotonic() + 30
    while True:
        up = _query(base, 'up{job="ves-streams"}')
        if up and up[0]["value"][1] == "1" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert up and up[0]["value"][1] == "1", f"prometheus does not scrape the worker: {up}"
    without_series = sorted(name for name in used if not _query(base, name))
    assert not without_series, f"prometheus holds no series of: {without_series}"
    ready = _query(base, "ves_streams_ready")
    assert {r["metric"]["check"] for r in ready} >= {"kafka", "ingest", "faults", "processing", "sink"}
