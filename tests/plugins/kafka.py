"""Real Kafka brokers for integration tests, started by the project itself.

* ``kafka_version``: the broker version under test, from
  ``VES_STREAMS_TEST_KAFKA_VERSION`` (default: the project's default version);
  ``make test`` runs the integration tests once per pinned version.
* ``kafka``: one single-node cluster on free ports, shared by the whole session.
  Tests must not assume an empty broker: name topics with ``new_topic_name()``
  or the ``unique_topic_prefix`` fixture.
* ``kafka_sasl_ssl``: a single-node cluster whose clients need TLS and
  SASL/SCRAM-SHA-512 (``client_env()``), shared by the session.
* ``kafka_cluster3``: a fresh 3-node cluster per test (RF 3, min.insync 2 by
  default) for fault tests, which may kill and restart its nodes.
* ``create_topics()`` / ``create_topics_async()``: create topics with aiokafka's
  admin client and return only when every partition has a leader.

Any test using the broker fixtures (directly or through another fixture)
must be marked ``integration``; it fails before a JVM starts otherwise, so
``-m "not integration"`` never needs a broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from ves_streams.dev.kafka import DEFAULT_KAFKA_VERSION, KafkaCluster, fetch_kafka

__all__ = ["new_topic_name", "create_topics", "create_topics_async", "running_cluster"]

_VERSION_ENV = "VES_STREAMS_TEST_KAFKA_VERSION"


def new_topic_name(prefix: str = "test") -> str:
    """A topic name no other test (or earlier run against the same broker) uses."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", prefix).strip("-")[:150] or "test"
    return f"{clean}-{uuid.uuid4().hex[:10]}"


async def create_topics_async(
    bootstrap: str,
    names: Sequence[str],
    partitions: int = 4,
    replication: int = 1,
    *,
    configs: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> None:
    """Create ``names`` and wait until every partition has a leader, so the
    first produce does not race the controller."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(n, num_partitions=partitions, replication_factor=replication, topic_configs=configs or {})
             for n in names]
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            described = await admin.describe_topics(list(names))
            led = [
                t for t in described
                if t["error_code"] == 0 and len(t["partitions"]) == partitions
                and all(p["leader"] >= 0 and len(p["isr"]) == replication for p in t["partitions"])
            ]  # fmt: skip
            if len(led) == len(names):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {list(names)} have no leader/full ISR after {timeout} s: {described}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


def create_topics(
    bootstrap: str,
    names: Sequence[str],
    partitions: int = 4,
    replication: int = 1,
    *,
    configs: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> None:
    """Blocking :func:`create_topics_async`; safe to call inside a running event loop
    (it runs on its own loop in a helper thread)."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(create_topics_async(bootstrap, names, partitions, replication, configs=configs, timeout=timeout))
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    worker = threading.Thread(target=run, name="create-topics")
    worker.start()
    worker.join()
    if errors:
        raise errors[0]


_BROKER_FIXTURES = frozenset({"kafka", "kafka_cluster3", "kafka_sasl_ssl"})


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail (before any JVM starts) a test that uses a broker without the ``integration`` marker."""
    used = _BROKER_FIXTURES.intersection(getattr(item, "fixturenames", ()))
    if used and item.get_closest_marker("integration") is None:
        pytest.fail(f"{item.nodeid} uses {', '.join(sorted(used))}: mark it @pytest.mark.integration", pytrace=False)


@pytest.fixture(scope="session")
def kafka_version() -> str:
    """The Kafka version the integration tests run against."""
    return os.environ.get(_VERSION_ENV) or DEFAULT_KAFKA_VERSION


@contextlib.contextmanager
def running_cluster(data_dir: Path, version: str, *, stop_timeout: float = 10, **options: Any) -> Iterator[KafkaCluster]:
    """A :class:`KafkaCluster` started in ``data_dir`` (``options``: size, security, ...), stopped on exit."""
    fetch_kafka(version)
    cluster = KafkaCluster(data_dir, version=version, **options)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop(timeout=stop_timeout)


@pytest.fixture(scope="session")
def kafka(kafka_version: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """One single-node broker on free ports, started on first use and shared by the session."""
    with running_cluster(tmp_path_factory.mktemp("kafka"), kafka_version, size=1) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def kafka_sasl_ssl(kafka_version: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """One single-node broker whose client listener requires TLS and SASL/SCRAM-SHA-512, shared by the session.

    ``client_env()`` is what a client needs; ``bootstrap_servers`` is the
    brokers' internal plaintext listener (for the tests' own topic set-up).
    """
    with running_cluster(tmp_path_factory.mktemp("kafka-sasl-ssl"), kafka_version, size=1, security="sasl_ssl") as cluster:
        yield cluster


@pytest.fixture
def kafka_cluster3(kafka_version: str, tmp_path: Path) -> Iterator[KafkaCluster]:
    """A fresh 3-node KRaft cluster (each node broker+controller) this test may damage."""
    # disposable data: no point waiting for the last node's controlled shutdown without quorum
    with running_cluster(tmp_path / "kafka3", kafka_version, size=3, stop_timeout=1) as cluster:
        yield cluster


@pytest.fixture
def unique_topic_prefix(request: pytest.FixtureRequest) -> str:
    """A prefix unique to this test run, derived from the test's name (``<test>-<random>``)."""
    return new_topic_name(request.node.name)
