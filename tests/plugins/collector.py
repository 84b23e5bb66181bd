"""Fixtures for the local VES collector: a real ``ves-streams collector`` subprocess per test.

* ``ves_collector``: plain HTTP, ``--control`` on, recording to a temporary file.
* ``ves_collector_factory(...)``: the same with Basic auth and/or TLS (a
  self-signed certificate made with the ``openssl`` CLI,
  ``ves_collector_tls_files``), client certificates
  (``ves_collector_client_tls_files``), ``--quiet``, extra flags; every
  collector it starts is stopped at teardown.

The collector binds ``--port 0`` and the handle reads the bound port from its
first output line, so parallel tests never race for a port. A collector is
"up" when ``/healthcheck`` answers over the same scheme, not when the port
opens.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

__all__ = ["VesCollector", "TlsFiles", "start_collector", "make_self_signed"]

PROJECT_DIR = Path(__file__).resolve().parents[2]
PASSWORD_ENV = "VES_STREAMS_COLLECTOR_PASSWORD"
START_TIMEOUT = 30.0
_LISTENING = re.compile(r"VES collector listening on (https?)://([^:\s]+):(\d+)")


@dataclass(frozen=True)
class TlsFiles:
    """A self-signed certificate for ``127.0.0.1`` (and ``localhost``) and its key; ``cert`` doubles as the CA bundle."""

    cert: Path
    key: Path


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Complete lines only: the collector may be writing the last one right now."""
    if not path.exists():
        return []
    data = path.read_bytes()
    return [orjson.loads(line) for line in data.split(b"\n")[:-1] if line.strip()]


@dataclass
class VesCollector:
    """A running ``ves-streams collector`` process and ways to talk to it."""

    url: str
    process: subprocess.Popen[bytes]
    record: Path
    rejected_record: Path
    log: Path
    auth: tuple[str, str] | None = None
    ca_bundle: Path | None = None
    client_cert: tuple[str, str] | None = None
    _returncode: int | None = field(default=None, repr=False)

    @property
    def verify(self) -> str | bool:
        """What to pass as ``requests``' ``verify=`` for this collector."""
        return str(self.ca_bundle) if self.ca_bundle is not None else True

    def tls_kwargs(self) -> dict[str, Any]:
        """``verify=`` (and ``cert=`` under mutual TLS) for a ``requests`` call to this collector."""
        kwargs: dict[str, Any] = {"verify": self.verify}
        if self.client_cert is not None:
            kwargs["cert"] = self.client_cert
        return kwargs

    def event_url(self, version: int | str = 7, topic: str | None = None) -> str:
        return f"{self.url}/eventListener/v{version}" + (f"/{topic}" if topic else "")

    def batch_url(self, version: int | str = 7) -> str:
        return f"{self.url}/eventListener/v{version}/eventBatch"

    def records(self) -> list[dict[str, Any]]:
        """Every accepted-event record: ``{"received_at", "path", "request", "event"}``."""
        return _read_jsonl(self.record)

    def events(self) -> list[dict[str, Any]]:
        """The accepted events, in the order the collector accepted them."""
        return [r["event"] for r in self.records()]

    def rejected(self) -> list[dict[str, Any]]:
        """Every refused-request record: ``{"received_at", "path", "request", "status", "reason", "event_ids", "body"}``."""
        return _read_jsonl(self.rejected_record)

    def wait_for(
        self, predicate_or_count: int | Callable[[list[dict[str, Any]]], object], timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """Wait until at least N events were accepted, or ``predicate(events)`` is true; return the events.

        Raises ``TimeoutError`` naming what was seen, so a failing test says
        how far it got.
        """
        predicate: Callable[[list[dict[str, Any]]], object]
        if isinstance(predicate_or_count, int):
            count = predicate_or_count
            predicate, wanted = (lambda events: len(events) >= count), f"{count} events"
        else:
            predicate, wanted = predicate_or_count, getattr(predicate_or_count, "__name__", "predicate")
        deadline = time.monotonic() + timeout
        while True:
            events = self.events()
            if predicate(events):
                return events
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"collector at {self.url}: waited {timeout}s for {wanted}; have {len(events)} events, "
                    f"{len(self.rejected())} refused requests, stats {self.stats()}"
                )
            if self.process.poll() is not None:
                raise RuntimeError(f"collector exited with {self.process.returncode}:\n{self.output()}")
            time.sleep(0.05)

    def control(self, **command: Any) -> dict[str, Any]:
        """``POST /_control`` with ``command`` (e.g. ``status=503, seconds=60``); returns the faults now in force."""
        response = requests.post(f"{self.url}/_control", json=command, timeout=10, **self.tls_kwargs())
        if response.status_code != 200:
            raise ValueError(f"/_control refused {command}: {response.status_code} {response.text}")
        faults: dict[str, Any] = response.json()["faults"]
        return faults

    def stats(self) -> dict[str, Any]:
        try:
            result: dict[str, Any] = requests.get(f"{self.url}/_stats", timeout=10, **self.tls_kwargs()).json()
        except requests.RequestException as exc:
            return {"error": str(exc)}
        return result

    def output(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait, SIGKILL if it hangs; returns the exit code (0 for a clean stop)."""
        if self._returncode is not None:
            return self._returncode
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._returncode = self.process.returncode
        return self._returncode


def start_collector(
    workdir: Path,
    *,
    username: str | None = None,
    password: str | None = None,
    tls: TlsFiles | None = None,
    client_tls: TlsFiles | None = None,
    control: bool = True,
    quiet: bool = False,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> VesCollector:
    """Start ``python -m ves_streams.cli collector --port 0 ...`` and wait until ``/healthcheck`` answers.

    The password travels in the environment (``VES_STREAMS_COLLECTOR_PASSWORD``),
    never in argv.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    record = workdir / "events.jsonl"
    log = workdir / "collector.log"
    argv = [sys.executable, "-m", "ves_streams.cli", "collector", "--host", "127.0.0.1", "--port", "0",
            "--record", str(record)]
    child_env = dict(os.environ)
    child_env.pop(PASSWORD_ENV, None)
    child_env["PYTHONUNBUFFERED"] = "1"
    if username is not None:
        argv += ["--username", username]
    if password is not None:
        child_env[PASSWORD_ENV] = password
    if tls is not None:
        argv += ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
    if client_tls is not None:
        argv += ["--tls-client-ca", str(client_tls.cert)]
    if control:
        argv.append("--control")
    if quiet:
        argv.append("--quiet")
    argv += list(extra_args)
    child_env.update(env or {})
    with open(log, "wb") as log_file:
        process = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, env=child_env, cwd=PROJECT_DIR,
                                   start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT
    url = None
    while url is None:
        match = _LISTENING.search(log.read_text(errors="replace"))
        if match:
            url = f"{match.group(1)}://{match.group(2)}:{match.group(3)}"
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait(timeout=5)
            raise RuntimeError(f"collector did not start ({' '.join(argv)}):\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    collector = VesCollector(
        url=url,
        process=process,
        record=record,
        rejected_record=workdir / "events.rejected.jsonl",
        log=log,
        auth=(username, password or "") if username is not None else None,
        ca_bundle=tls.cert if tls else None,
        client_cert=(str(client_tls.cert), str(client_tls.key)) if client_tls else None,
    )
    while True:
        try:
            if requests.get(f"{url}/healthcheck", timeout=2, **collector.tls_kwargs()).status_code == 200:
                return collector
        except requests.RequestException:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            collector.stop()
            raise RuntimeError(f"collector at {url} never answered /healthcheck:\n{collector.output()}")
        time.sleep(0.05)


def make_self_signed(directory: Path, common_name: str = "localhost") -> TlsFiles:
    """A self-signed EC certificate (valid 2 days) for ``localhost`` and ``127.0.0.1``, made with ``openssl``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the openssl command is needed to make a test certificate (apt-get install openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={common_name}",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return TlsFiles(cert=cert, key=key)


@pytest.fixture(scope="session")
def ves_collector_tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """The collector's server certificate; pass ``tls=`` it to the factory and use ``.cert`` as the CA bundle."""
    return make_self_signed(tmp_path_factory.mktemp("collector-tls"), "localhost")


@pytest.fixture(scope="session")
def ves_collector_client_tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A client certificate for mutual TLS; pass it as ``client_tls=`` to the factory (its cert is the client CA)."""
    return make_self_signed(tmp_path_factory.mktemp("collector-client-tls"), "ves-streams-sink")


@pytest.fixture
def ves_collector_factory(tmp_path: Path) -> Iterator[Callable[..., VesCollector]]:
    """Start collectors with :func:`start_collector`'s options (``username=``, ``password=``, ``tls=``, ...)."""
    started: list[VesCollector] = []

    def factory(**options: Any) -> VesCollector:
        collector = start_collector(tmp_path / f"collector-{len(started)}", **options)
        started.append(collector)
        return collector

    yield factory
    for collector in started:
        collector.stop()


@pytest.fixture
def ves_collector(ves_collector_factory: Callable[..., VesCollector]) -> VesCollector:
    """A plain-HTTP collector with ``--control``, recording to a temporary directory."""
    return ves_collector_factory()
