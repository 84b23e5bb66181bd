"""``ves-streams import-barometer ves_app_config.conf``: Barometer's VES app settings as ``VES_STREAMS_*`` ones.

Barometer's collectd VES application reads an INI file (section
``[config]``: ``Domain``, ``Port``, ``Path``, ``Topic``, ``UseHttps``,
``Username``, ``Password``, ``SendEventInterval``, ``ApiVersion``,
``KafkaBroker``, ``KafkaPort``) and posts to
``http[s]://{Domain}:{Port}[/{Path}]/eventListener/v{ApiVersion}[/{Topic}]``.
:func:`barometer_settings` maps it onto the settings ves-streams reads; the
collector URL keeps Barometer's whole listener path (the sink recognises it,
topic included: :class:`~ves_streams.sink.config.CollectorConfig`).

The password is never printed: the line for ``VES_STREAMS_COLLECTOR_PASSWORD``
says where to set it, whatever the file holds (a terminal's scrollback, a
CI log or a shell history would otherwise keep it).
"""

from __future__ import annotations

import argparse
import configparser
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["BarometerConfigError", "SettingLine", "barometer_settings", "register"]

_SECTION = "config"
_KNOWN = frozenset({
    "domain", "port", "path", "topic", "usehttps", "username", "password", "sendeventinterval", "apiversion",
    "kafkabroker", "kafkaport", "functionalrole", "directory_path",
})  # fmt: skip


class BarometerConfigError(Exception):
    """The file cannot be read as Barometer's ``ves_app_config.conf``; the message names the key."""


@dataclass(frozen=True, slots=True)
class SettingLine:
    """One ``VES_STREAMS_*`` variable and its value (None: set it yourself, see ``note``)."""

    name: str
    value: str | None
    note: str = ""

    def render(self) -> str:
        comment = f"  # {self.note}" if self.note else ""
        if self.value is None:
            return f"# {self.name}=...{comment}"
        return f"{self.name}={shlex.quote(self.value)}{comment}"


def barometer_settings(text: str) -> list[SettingLine]:
    """The ``VES_STREAMS_*`` settings equivalent to a ``ves_app_config.conf``; raises :class:`BarometerConfigError`."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        raise BarometerConfigError(f"not an INI file: {str(exc).splitlines()[0]}") from None
    if not parser.has_section(_SECTION):
        raise BarometerConfigError(f"no [{_SECTION}] section (Barometer's ves_app_config.conf has one)")
    section = parser[_SECTION]

    def get(key: str, default: str = "") -> str:
        return section.get(key, default).strip().strip('"').strip()

    domain = get("Domain", "127.0.0.1")
    port = get("Port", "30000")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise BarometerConfigError(f"Port {port!r}: must be a TCP port number")
    https = get("UseHttps", "false").lower()
    if https not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
        raise BarometerConfigError(f"UseHttps {https!r}: must be true or false")
    scheme = "https" if https in ("true", "yes", "1", "on") else "http"
    version = get("ApiVersion", "5.1").lstrip("vV")
    major = version.split(".", 1)[0]
    if major not in ("5", "7"):
        raise BarometerConfigError(f"ApiVersion {version!r}: ves-streams sends VES 5 or 7")
    path = get("Path").strip("/")
    topic = get("Topic").strip("/")
    url = f"{scheme}://{domain}:{port}" + (f"/{path}" if path else "") + f"/eventListener/v{version}"
    url += f"/{topic}" if topic else ""
    lines = [
        SettingLine("VES_STREAMS_COLLECTOR_URL", url),
        SettingLine("VES_STREAMS_VES_VERSION", version),
    ]
    username = get("Username")
    if username:
        lines.append(SettingLine("VES_STREAMS_COLLECTOR_USERNAME", username))
    if get("Password"):
        lines.append(
            SettingLine(
                "VES_STREAMS_COLLECTOR_PASSWORD",
                None,
                "the file's Password is not printed: set it from your secret store",
            )
        )
    interval = get("SendEventInterval")
    if interval:
        try:
            seconds = float(interval)
        except ValueError:
            raise BarometerConfigError(f"SendEventInterval {interval!r}: must be a number of seconds") from None
        if not seconds > 0:
            raise BarometerConfigError(f"SendEventInterval {interval!r}: must be > 0")
        lines.append(SettingLine("VES_STREAMS_INTERVAL", f"{seconds:g}"))
    broker, kafka_port = get("KafkaBroker"), get("KafkaPort")
    if broker or kafka_port:
        lines.append(SettingLine("VES_STREAMS_BROKER", f"kafka://{broker or 'localhost'}:{kafka_port or '9092'}"))
    unknown = sorted(key for key in section if key.lower() not in _KNOWN)
    if unknown:
        lines.append(SettingLine("#", None, f"not mapped: {', '.join(unknown)}"))
    return lines


def run_import(args: argparse.Namespace) -> int:
    """Handler of ``ves-streams import-barometer``: 0, or 2 when the file cannot be read."""
    path: Path = args.config
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
        lines = barometer_settings(text)
    except OSError as exc:
        print(f"ves-streams import-barometer: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except BarometerConfigError as exc:
        print(f"ves-streams import-barometer: {path}: {exc}", file=sys.stderr)
        return 2
    print(f"# VES_STREAMS_* settings equivalent to {path} (Barometer's ves_app_config.conf)")
    for line in lines:
        print(line.render() if line.name != "#" else f"# {line.note}")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "import-barometer",
        help="print the VES_STREAMS_* settings equivalent to Barometer's ves_app_config.conf",
        description="Read Barometer's collectd VES app configuration (ves_app_config.conf) and print the "
        "equivalent VES_STREAMS_* settings, one NAME=value line each (source them with `set -a; . FILE`). "
        "The password is never printed.",
    )
    parser.add_argument("config", type=Path, metavar="ves_app_config.conf")
    parser.set_defaults(handler=run_import)
