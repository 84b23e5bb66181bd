"""Fixtures for real collectd (Debian collectd-core) and the notification relay.

collectd is installed by `.ci/run` (apt), never by a fixture. Where it is
missing the tests that need it are skipped with a loud reason, unless
``VES_STREAMS_REQUIRE_COLLECTD=1`` (set by CI), where a missing collectd is
a failure: in CI these tests must run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from ves_streams.dev.collectd_runner import CollectdConfig, CollectdProcess, collectd_missing_reason, find_collectd
from ves_streams.dev.kafka import free_ports


@pytest.fixture(scope="session")
def collectd_binary() -> str:
    reason = collectd_missing_reason()
    if reason is not None:
        message = f"REAL COLLECTD UNAVAILABLE: {reason}"
        if os.environ.get("VES_STREAMS_REQUIRE_COLLECTD") == "1":
            pytest.fail(message + " (VES_STREAMS_REQUIRE_COLLECTD=1: these tests must run)")
        sys.stderr.write(f"\n*** {message}: collectd end-to-end tests are SKIPPED ***\n")
        pytest.skip(message)
    binary = find_collectd()
    assert binary is not None
    return binary


@pytest.fixture
def notification_relay_factory(tmp_path: Path) -> Iterator[Callable[[str, str], str]]:
    """Start ``ves-streams relay`` subprocesses; returns the URL collectd posts to."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(bootstrap: str, topic: str, env: dict[str, str] | None = None) -> str:
        """``env``: VES_STREAMS_* settings for the relay (Kafka security); ``bootstrap`` still wins."""
        (port,) = free_ports(1)
        log = open(tmp_path / f"relay-{port}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "ves_streams.cli", "relay", "--broker", bootstrap, "--topic", topic, "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        procs.append(proc)
        deadline = time.time() + 30
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"relay exited: {(tmp_path / f'relay-{port}.log').read_text()}")
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthcheck", timeout=1).ok:
                    return f"http://127.0.0.1:{port}/collectd"
            except requests.RequestException:
                time.sleep(0.2)
        raise RuntimeError("relay did not answer within 30 s")

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def collectd_factory(collectd_binary: str, tmp_path: Path) -> Iterator[Callable[..., CollectdProcess]]:
    """Start real collectd daemons: ``collectd_factory(bootstrap_servers=..., ...)``."""
    daemons: list[CollectdProcess] = []

    def start(**config: object) -> CollectdProcess:
        cfg = CollectdConfig(**config)  # type: ignore[arg-type]
        daemon = CollectdProcess(cfg, tmp_path / f"collectd-{len(daemons)}", binary=collectd_binary)
        daemons.append(daemon)
        daemon.start()
        return daemon

    yield start
    for daemon in daemons:
        daemon.stop()
