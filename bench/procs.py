"""The processes a benchmark phase runs: ves-streams workers, the VES collector, the baseline.

Each is a child process with its own log file, stopped (SIGTERM, then
SIGKILL) by the phase that started it, and measured from ``/proc``: peak
resident memory (``VmHWM``) and CPU seconds (``utime + stime``). Nothing
here needs a dependency beyond the standard library and ``requests``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

__all__ = [
    "BenchProcess",
    "CollectorProcess",
    "ProcessError",
    "WorkerProcess",
    "MachineCpu",
    "cpu_seconds",
    "peak_rss_mb",
    "rss_mb",
    "worker_metrics",
]

PROJECT_DIR = Path(__file__).resolve().parent.parent
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ProcessError(RuntimeError):
    """A benchmark process exited early or did not come up; the message names its log."""


def _status_mb(pid: int, key: str) -> float | None:
    """A kB line (``VmHWM``, ``VmRSS``...) of ``/proc/<pid>/status`` in MiB, or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident set size (``VmHWM``) of a live process in MiB, or None once it is gone."""
    return _status_mb(pid, "VmHWM")


def rss_mb(pid: int) -> float | None:
    """Current resident set size (``VmRSS``) of a live process in MiB, or None once it is gone."""
    return _status_mb(pid, "VmRSS")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (its own threads, not its children)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


class MachineCpu:
    """How busy the whole machine was between :meth:`start` and :meth:`busy` (from ``/proc/stat``).

    Includes every process, not only the benchmark's: on a shared machine
    this is what says whether the cores, not the design, were the limit.
    """

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields) - idle, sum(fields)

    def start(self) -> None:
        self._start = self._read()

    def busy(self) -> float:
        """Fraction of all CPUs' time spent busy since :meth:`start` (0..1)."""
        busy, total = self._read()
        d_total = total - self._start[1]
        return (busy - self._start[0]) / d_total if d_total > 0 else 0.0


_METRIC_LINE = re.compile(r'^(ves_streams_[a-z_]+?)(?:_total)?(?:\{([^}]*)\})?\s+([0-9.eE+-]+)$')


def worker_metrics(port: int, timeout: float = 2.0) -> dict[tuple[str, str], float] | None:
    """The worker's ``ves_streams_*`` counters as ``{(name, labels): value}``; None if it does not answer.

    ``labels`` is the raw label text, e.g. ``topic="collectd"``.
    """
    try:
        response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=timeout)
    except requests.RequestException:
        return None
    if response.status_code != 200:
        return None
    out: dict[tuple[str, str], float] = {}
    for line in response.text.splitlines():
        match = _METRIC_LINE.match(line)
        if match:
            out[(match.group(1), match.group(2) or "")] = float(match.group(3))
    return out


@dataclass
class BenchProcess:
    """A child process of the benchmark, its log, and its last known figures."""

    name: str
    command: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    peak_rss: float | None = field(default=None, init=False)
    cpu: float | None = field(default=None, init=False)
    _cpu_mark: float = field(default=0.0, init=False)

    def start(self) -> BenchProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                list(self.command),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(self.env) if self.env is not None else None,
                cwd=PROJECT_DIR,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ProcessError(f"{self.name} was not started")
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise ProcessError(
                f"{self.name} exited with code {self.process.returncode}; see {self.log_path}:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def sample(self) -> None:
        """Remember peak RSS and CPU while the process is alive (/proc forgets them at exit)."""
        if not self.alive():
            return
        rss = peak_rss_mb(self.pid)
        if rss is not None:
            self.peak_rss = max(self.peak_rss or 0.0, rss)
        cpu = cpu_seconds(self.pid)
        if cpu is not None:
            self.cpu = cpu

    def mark_cpu(self) -> None:
        """Start counting CPU seconds from now (see :meth:`cpu_since_mark`)."""
        self.sample()
        self._cpu_mark = self.cpu or 0.0

    def cpu_since_mark(self) -> float:
        self.sample()
        return (self.cpu or 0.0) - self._cpu_mark

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the process group, SIGKILL after ``timeout``; return the exit code."""
        if self.process is None:
            return None
        self.sample()
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        return self.process.returncode


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


class WorkerProcess(BenchProcess):
    """``python -m faust -A ves_streams worker`` configured by ``VES_STREAMS_*`` variables."""

    def __init__(
        self, name: str, log_path: Path, settings: Mapping[str, str], web_port: int, profile: Path | None = None
    ) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VES_STREAMS_")}
        env.update(settings)
        env["VES_STREAMS_WEB_PORT"] = str(web_port)
        env.setdefault("VES_STREAMS_WEB_BIND", "127.0.0.1")  # the bench asks 127.0.0.1
        env.setdefault("PYTHONUNBUFFERED", "1")
        command = ["-m", "faust", "-A", "ves_streams", "worker", "-l", "warn", "--web-port", str(web_port)]
        if profile is not None:
            # pyinstrument samples the event loop's thread; the session file is rendered afterwards.
            command = ["-m", "pyinstrument", "-i", "0.005", "-r", "session", "-o", str(profile), *command]
        super().__init__(name, [sys.executable, *command], log_path, env)
        self.web_port = web_port
        self.profile = profile

    def stop(self, timeout: float = 30.0) -> int | None:
        """Stop the worker; a profiled one gets SIGINT first, so pyinstrument writes its session."""
        if self.profile is not None and self.alive():
            self.sample()
            _signal_group(self.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                pass
        return super().stop(timeout)

    def ready(self) -> bool:
        """``GET /ready`` answers 200: partitions assigned, tables recovered, not rebalancing."""
        try:
            return requests.get(f"http://127.0.0.1:{self.web_port}/ready", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if self.ready():
                return
            time.sleep(0.2)
        raise ProcessError(f"{self.name} not ready after {timeout:.0f} s; see {self.log_path}:\n{self.log_tail()}")

    def metrics(self) -> dict[tuple[str, str], float] | None:
        return worker_metrics(self.web_port)


_LISTENING = re.compile(r"VES collector listening on https?://[^:\s]+:(\d+)")


class CollectorProcess(BenchProcess):
    """``ves-streams collector --port 0 --quiet --record FILE``: the real local collector."""

    def __init__(self, log_path: Path, record: Path, *, control: bool = False) -> None:
        command = [sys.executable, "-m", "ves_streams.cli", "collector", "--host", "127.0.0.1", "--port", "0",
                   "--record", str(record), "--quiet"]  # fmt: skip
        if control:
            command.append("--control")
        super().__init__("collector", command, log_path)
        self.record = record
        self.port: int | None = None

    def control(self, **command: Any) -> None:
        """``POST /_control`` (needs ``control=True``): e.g. ``delay=0.1`` makes every request take 100 ms."""
        response = requests.post(f"http://127.0.0.1:{self.port}/_control", json=command, timeout=5)
        if response.status_code != 200:
            raise ProcessError(f"collector refused the control command {command}: {response.status_code} {response.text[:200]}")

    def wait_listening(self, timeout: float = 30.0) -> str:
        """Wait for the 'listening on' line and ``/healthcheck``; return the collector's URL."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            match = _LISTENING.search(self.log_path.read_text(errors="replace"))
            if match:
                self.port = int(match.group(1))
                url = f"http://127.0.0.1:{self.port}"
                try:
                    if requests.get(f"{url}/healthcheck", timeout=2).status_code < 500:
                        return url
                except requests.RequestException:
                    pass
            time.sleep(0.1)
        raise ProcessError(f"collector not listening after {timeout:.0f} s; see {self.log_path}:\n{self.log_tail()}")
