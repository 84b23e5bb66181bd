"""The deployment every drill assumes: processing and sink workers as separate fleets of one app.

README ("Scaling"): start workers with the same ``VES_STREAMS_APP_ID``;
``VES_STREAMS_ROLE=process`` and ``=sink`` split processing and delivery into
separately scaled fleets. Every drill runs that way.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from tests.agents.support import KafkaIO, Names, Worker, host_messages
from tests.drills.conftest import INTERVAL, drill_env, print_figures
from tests.plugins.collector import VesCollector
from tests.plugins.kafka import create_topics

pytestmark = [pytest.mark.integration, pytest.mark.drill]


def test_sink_worker_shares_the_app_id_of_the_processing_workers(kafka, ves_collector: VesCollector, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A sink worker started first, then a processing worker with the same app id: both become ready
    and events flow.

    A sink worker that joined the app's consumer group (named after the app
    id) would break this: without a table, faust-streaming gives its consumer
    the round-robin assignor while the processing workers use the "faust"
    one, and the second to join gets ``InconsistentGroupProtocolError``
    forever -- a sink that is never ready or, when the sink wins the race,
    processing workers that never get a partition.
    """
    names = Names.unique("roles")
    create_topics(kafka.bootstrap_servers, [names.values, names.notifications], partitions=4)
    workers: list[Worker] = []
    try:
        for name, role in (("sink", "sink"), ("p1", "process")):
            env = {**drill_env(kafka.broker_url, names, ves_collector.url, role), "VES_STREAMS_REPLICATION": "1"}
            worker = Worker(name, env, tmp_path / "workers")
            workers.append(worker)
            worker.start()
        ready: dict[str, float | str] = {w.name: "never ready" for w in workers}
        started = time.monotonic()
        while time.monotonic() - started < 90 and any(isinstance(v, str) for v in ready.values()):
            for worker in workers:
                if isinstance(ready[worker.name], str) and worker.running and _ready(worker):
                    ready[worker.name] = round(time.monotonic() - started, 1)
            time.sleep(0.5)
        errors = {w.name: [line for line in w.log_text().splitlines() if "InconsistentGroupProtocol" in line][:1] for w in workers}
        print_figures("roles: sink and processing workers with one app id", {"ready_after_s": ready, "join_errors": errors})
        assert all(isinstance(v, float) for v in ready.values()), f"workers not ready: {ready}; {errors}"
        io = KafkaIO(kafka.bootstrap_servers)
        try:
            io.produce_many(names.values, host_messages("roles-host", time.time(), interval=60.0))
            ves_collector.wait_for(1, timeout=6 * INTERVAL + 10)
        finally:
            io.close()
    finally:
        for worker in workers:
            worker.kill()


def _ready(worker: Worker) -> bool:
    try:
        return worker.get("/ready").status_code == 200
    except requests.RequestException:
        return False
