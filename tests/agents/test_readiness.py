"""``/ready`` tells the truth: 503 naming Kafka while no broker answers, 200 again once it does."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agents.conftest import INTERVAL
from tests.agents.support import Names, Worker
from tests.plugins.kafka import create_topics, running_cluster
from ves_streams.dev.kafka import KafkaCluster

pytestmark = pytest.mark.integration

SESSION_TIMEOUT = 6.0


@pytest.fixture
def own_broker(kafka_version: str, worker_dir: Path) -> Iterator[KafkaCluster]:
    """A single-node broker of this test's own, which it stops and starts again."""
    with running_cluster(worker_dir / "kafka", kafka_version, size=1, stop_timeout=1) as cluster:
        yield cluster


def _ready_metric(worker: Worker, check: str) -> float | None:
    for line in worker.get("/metrics").text.splitlines():
        if line.startswith(f'ves_streams_ready{{check="{check}"}}'):
            return float(line.split()[-1])
    return None


def _wait_status(worker: Worker, status: int, timeout: float) -> tuple[float, dict]:  # type: ignore[type-arg]
    started = time.monotonic()
    deadline = started + timeout
    body: dict = {}  # type: ignore[type-arg]
    while time.monotonic() < deadline:
        answer = worker.get("/ready", timeout=5)
        body = answer.json()
        if answer.status_code == status:
            return time.monotonic() - started, body
        time.sleep(0.25)
    raise AssertionError(f"/ready did not answer {status} within {timeout} s: {body}\n{worker.log_tail(40)}")


def test_ready_turns_503_naming_the_broker_while_it_is_gone_and_200_once_it_is_back(
    own_broker: KafkaCluster, names: Names, worker_dir: Path
) -> None:
    create_topics(own_broker.bootstrap_servers, [names.values, names.notifications], partitions=4)
    worker = Worker("w1", {
        "VES_STREAMS_BROKER": own_broker.broker_url,
        "VES_STREAMS_INTERVAL": str(INTERVAL),
        "VES_STREAMS_ROLE": "process",
        "VES_STREAMS_PARTITIONS": "4",
        "VES_STREAMS_KAFKA_SESSION_TIMEOUT": f"{SESSION_TIMEOUT:g}",
        **names.env(),
    }, worker_dir).start()  # fmt: skip
    try:
        worker.wait_ready()
        assert worker.get("/ready").json()["checks"]["kafka"] == "ok"
        assert _ready_metric(worker, "kafka") == 1.0

        own_broker.kill_node(0)
        took, body = _wait_status(worker, 503, timeout=4 * SESSION_TIMEOUT)
        # one unanswered question is not an outage: the last answer came at most one period (2 s) before the kill
        assert took >= SESSION_TIMEOUT - 2.5, f"/ready turned 503 after {took:.1f} s, before the session timeout"
        assert "no Kafka broker at" in body["checks"]["kafka"], body
        assert own_broker.bootstrap_servers in body["checks"]["kafka"]
        assert _ready_metric(worker, "kafka") == 0.0
        assert worker.get("/health").json() == {"status": "up"}, "liveness is not readiness: the process still runs"

        own_broker.restart_node(0)
        _, body = _wait_status(worker, 200, timeout=90)
        assert body["checks"]["kafka"] == "ok"
        assert worker.running
    finally:
        worker.stop()
