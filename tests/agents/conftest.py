"""Fixtures for the worker integration tests (real broker from ``tests/plugins/kafka.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.agents.support import KafkaIO, Names, Worker
from tests.plugins.kafka import create_topics

#: Short render interval so the tests run in seconds (interval boundaries every 2 s).
INTERVAL = 2.0


@pytest.fixture
def names(request: pytest.FixtureRequest) -> Names:
    """Unique app id and topic names; input topics are created by :func:`start_worker`."""
    return Names.unique(request.node.name.removeprefix("test_")[:40])


@pytest.fixture
def kafka_io(kafka) -> Iterator[KafkaIO]:  # type: ignore[no-untyped-def]
    io = KafkaIO(kafka.bootstrap_servers)
    try:
        yield io
    finally:
        io.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[_FAILED] = report.failed


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def worker_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """Data directories and logs of this test's workers.

    Not pytest's ``tmp_path``: other pytest sessions on the same machine
    rotate the shared ``pytest-of-<user>`` directories and could delete a
    running worker's RocksDB under it. Removed after a passing test, kept
    (and named in the output) after a failing one.
    """
    path = Path(tempfile.mkdtemp(prefix="ves-streams-agents-"))
    yield path
    if request.node.stash.get(_FAILED, False):
        print(f"\nworker logs and data kept in {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_worker(kafka, names: Names, worker_dir: Path) -> Iterator[Callable[..., Worker]]:  # type: ignore[no-untyped-def]
    """``start_worker(name, **env)``: a ready processing worker; all are killed at teardown.

    The input topics are created first (4 partitions, 16 MiB messages allowed
    on the values topic so a 10 MB poison message can be produced).
    """
    create_topics(kafka.bootstrap_servers, [names.values], partitions=4, configs={"max.message.bytes": str(16 * 1024 * 1024)})
    create_topics(kafka.bootstrap_servers, [names.notifications], partitions=4, configs={"max.message.bytes": str(16 * 1024 * 1024)})
    workers: list[Worker] = []

    def start(name: str = "w1", *, wait: bool = True, **env: str) -> Worker:
        base = {
            "VES_STREAMS_BROKER": kafka.broker_url,
            "VES_STREAMS_INTERVAL": str(INTERVAL),
            "VES_STREAMS_ROLE": "process",
            "VES_STREAMS_PARTITIONS": "4",
            "VES_STREAMS_KAFKA_SESSION_TIMEOUT": "6",
            "VES_STREAMS_HOSTNAME": "ves-streams-test",
            **names.env(),
        }
        worker = Worker(name, {**base, **env}, worker_dir)
        workers.append(worker)
        worker.start()
        if wait:
            worker.wait_ready()
        return worker

    try:
        yield start
    finally:
        for worker in workers:
            worker.kill()
        for worker in workers:
            print(f"\n===== worker {worker.name} log (tail) =====\n{worker.log_tail(60)}")
