"""Run a real collectd (Debian ``collectd-core``) wired to Kafka.

``make run`` and the end-to-end tests both need the same thing: a collectd
that reads this machine's CPU, memory, load, interfaces and disks, publishes
value lists with ``write_kafka`` (``Format JSON``) and posts notifications
(from a ``threshold`` block that fires on purpose) through ``write_http`` to
the notification relay. This module writes that configuration and owns the
process. It installs nothing: :func:`find_collectd` says whether collectd and
the plugins' libraries are present.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CollectdConfig", "CollectdProcess", "find_collectd", "collectd_missing_reason"]

_CANDIDATES = ("/usr/sbin/collectd", "/usr/local/sbin/collectd")
_PLUGIN_DIR = Path("/usr/lib/collectd")


def _binary() -> str | None:
    return shutil.which("collectd") or next((p for p in _CANDIDATES if os.path.exists(p)), None)


def find_collectd() -> str | None:
    """Path of a collectd binary whose write_kafka plugin can load, or None."""
    return None if collectd_missing_reason() else _binary()


def collectd_missing_reason() -> str | None:
    """Why real collectd cannot run here (None when it can)."""
    if _binary() is None:
        return "collectd is not installed (apt-get install collectd-core librdkafka1 libyajl2)"
    plugin = _PLUGIN_DIR / "write_kafka.so"
    if not plugin.exists():
        return f"{plugin} is missing (collectd-core without write_kafka?)"
    try:
        out = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    missing = [line.split()[0] for line in out.splitlines() if "not found" in line]
    if missing:
        return f"write_kafka cannot load, missing libraries: {', '.join(missing)} (apt-get install librdkafka1 libyajl2)"
    return None


@dataclass(frozen=True, slots=True)
class CollectdConfig:
    """What the generated collectd.conf says. ``load_warning_max`` is set so
    low that the threshold plugin raises a notification every interval."""

    bootstrap_servers: str
    hostname: str = "e2e-host"
    interval: float = 2.0
    values_topic: str = "collectd"
    notification_url: str | None = None
    #: the relay's bearer token, sent by write_http as ``Authorization: Bearer <token>``
    notification_token: str | None = None
    load_warning_max: float = 0.000001
    load_failure_max: float | None = None
    plugins: tuple[str, ...] = ("cpu", "memory", "load", "interface", "disk", "df", "processes", "uptime", "swap")

    def render(self, base_dir: Path) -> str:
        lines = [
            f'Hostname "{self.hostname}"',
            "FQDNLookup false",
            f"Interval {self.interval}",
            f'BaseDir "{base_dir}"',
            f'PIDFile "{base_dir}/collectd.pid"',
            'TypesDB "/usr/share/collectd/types.db"',
            "AutoLoadPlugin false",
            "LoadPlugin logfile",
            "<Plugin logfile>",
            "  LogLevel info",
            f'  File "{base_dir}/collectd.log"',
            "</Plugin>",
        ]
        for plugin in self.plugins:
            lines.append(f"LoadPlugin {plugin}")
            if plugin == "cpu":
                lines += ["<Plugin cpu>", "  ReportByCpu true", "  ReportByState true", "  ValuesPercentage true", "</Plugin>"]
        lines += [
            "LoadPlugin write_kafka",
            "<Plugin write_kafka>",
            f'  Property "metadata.broker.list" "{self.bootstrap_servers}"',
            f'  <Topic "{self.values_topic}">',
            "    Format JSON",
            "  </Topic>",
            "</Plugin>",
        ]
        if self.notification_url:
            failure = f"      FailureMax {self.load_failure_max:.9f}" if self.load_failure_max is not None else ""
            lines += [
                "LoadPlugin threshold",
                "<Plugin threshold>",
                '  <Plugin "load">',
                '    <Type "load">',
                '      DataSource "shortterm"',
                f"      WarningMax {self.load_warning_max:.9f}",
                *([failure] if failure else []),
                "      Persist true",
                "    </Type>",
                "  </Plugin>",
                "</Plugin>",
                "LoadPlugin write_http",
                "<Plugin write_http>",
                '  <Node "notifications">',
                f'    URL "{self.notification_url}"',
                *([f'    Header "Authorization: Bearer {self.notification_token}"'] if self.notification_token else []),
                '    Format "JSON"',
                "    Metrics false",
                "    Notifications true",
                "  </Node>",
                "</Plugin>",
            ]
        return "\n".join(lines) + "\n"


@dataclass
class CollectdProcess:
    """A collectd running in the foreground of its own process group."""

    config: CollectdConfig
    base_dir: Path
    binary: str = "/usr/sbin/collectd"
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def log_path(self) -> Path:
        return self.base_dir / "collectd.log"

    def start(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        conf = self.base_dir / "collectd.conf"
        conf.write_text(self.config.render(self.base_dir))
        check = subprocess.run([self.binary, "-t", "-C", str(conf)], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"collectd rejected its configuration: {check.stderr.strip() or check.stdout.strip()}")
        out = open(self.base_dir / "collectd.stdout", "wb")
        self.process = subprocess.Popen(
            [self.binary, "-f", "-C", str(conf)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"collectd exited with {self.process.returncode}: {self.log_tail()}")
            if self.log_path.exists() and "entering read-loop" in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.1)
        raise RuntimeError(f"collectd did not start within 15 s: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
