"""Replay a recorded collectd capture to Kafka, as ``write_kafka`` would.

Used by ``make run`` when collectd is not installed, and by the benchmarks to
stand in for N hosts. The capture (``ves_streams/dev/capture/``, shipped with
the package: :func:`ves_streams.resources.capture_dir`) is split into
the rounds collectd produced (one per interval); each replayed round rewrites
``host`` and ``time`` so the data looks live, and each message is published
as a one-element JSON array with a random key, exactly like ``write_kafka``
(so one host's data lands on every partition, which is what the ingest
repartitioning must cope with).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from ves_streams import resources
from ves_streams.runtime.kafka import KafkaConnection

__all__ = [
    "Capture",
    "DEFAULT_CAPTURE_DIR",
    "host_names",
    "load_capture",
    "notification_messages",
    "round_messages",
    "replay",
    "register",
]

#: The recorded capture shipped with ves-streams (``compute-0.*.jsonl``).
DEFAULT_CAPTURE_DIR = resources.capture_dir()


@dataclass(frozen=True, slots=True)
class Capture:
    """A capture split into collection rounds.

    ``rounds[i]`` holds the value-list objects collectd emitted in its i-th
    interval; ``notifications`` holds ``(offset_seconds, notification)`` with
    offsets relative to the first value list.
    """

    rounds: tuple[tuple[dict[str, Any], ...], ...]
    notifications: tuple[tuple[float, dict[str, Any]], ...]
    interval: float
    host: str

    @property
    def value_lists_per_round(self) -> float:
        return sum(len(r) for r in self.rounds) / max(1, len(self.rounds))


def load_capture(values: Path, notifications: Path | None = None) -> Capture:
    """Read ``*.values.jsonl`` (and optionally ``*.notifications.jsonl``)."""
    items: list[dict[str, Any]] = []
    for line in values.read_bytes().splitlines():
        if line.strip():
            items.extend(orjson.loads(line))
    if not items:
        raise ValueError(f"{values}: no value lists")
    t0 = min(float(i["time"]) for i in items)
    interval = float(items[0]["interval"])
    buckets: dict[int, list[dict[str, Any]]] = {}
    for item in items:
        buckets.setdefault(int((float(item["time"]) - t0 + 0.5) // interval), []).append(item)
    rounds = tuple(tuple(buckets[k]) for k in sorted(buckets))
    notes: list[tuple[float, dict[str, Any]]] = []
    if notifications is not None and notifications.exists():
        for line in notifications.read_bytes().splitlines():
            if not line.strip():
                continue
            for n in orjson.loads(line):
                starts = datetime.fromisoformat(n["startsAt"][:26].replace("Z", "") + "+00:00").timestamp()
                notes.append((max(0.0, starts - t0), n))
    return Capture(rounds, tuple(notes), interval, str(items[0]["host"]))


def host_names(count: int, prefix: str = "compute") -> list[str]:
    """Stable synthetic host names: compute-00000, compute-00001, ..."""
    return [f"{prefix}-{i:05d}" for i in range(count)]


def round_messages(capture: Capture, index: int, hosts: list[str], now: float) -> Iterator[bytes]:
    """The write_kafka messages of round ``index`` for every host, timestamped ``now``."""
    template = capture.rounds[index % len(capture.rounds)]
    for host in hosts:
        for item in template:
            out = dict(item)
            out["host"] = host
            out["time"] = round(now, 3)
            yield orjson.dumps([out])


def notification_messages(capture: Capture, hosts: list[str], now: float) -> Iterator[tuple[float, bytes]]:
    """Each captured notification for every host, as collectd 5.9+ JSON, with its offset."""
    stamp = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for offset, note in capture.notifications:
        for host in hosts:
            labels = dict(note["labels"], instance=host)
            annotations = dict(note["annotations"])
            summary = annotations.get("summary", "")
            annotations["summary"] = summary.replace(f"Host {capture.host},", f"Host {host},", 1)
            yield offset, orjson.dumps([{"labels": labels, "annotations": annotations, "startsAt": stamp}])


async def replay(
    broker: str | KafkaConnection,
    capture: Capture,
    hosts: list[str],
    *,
    values_topic: str = "collectd",
    notifications_topic: str | None = "collectd-notifications",
    interval: float | None = None,
    rounds: int | None = None,
    full_speed: bool = False,
    on_round: Callable[[int, int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Publish rounds until ``rounds`` is reached or ``stop`` is set; return messages sent.

    At the realistic rate one round goes out per ``interval`` (default: the
    capture's), starting on an interval boundary; with ``full_speed`` rounds
    follow each other without waiting. Each captured notification is sent in
    the round its recorded offset falls in, once per pass over the capture.
    """
    from aiokafka import AIOKafkaProducer

    period = interval or capture.interval
    connection = broker if isinstance(broker, KafkaConnection) else KafkaConnection.parse(broker)
    producer = AIOKafkaProducer(
        bootstrap_servers=connection.bootstrap_servers, acks="all", linger_ms=20, max_batch_size=256 * 1024,
        compression_type=None, **connection.client_kwargs(),
    )  # fmt: skip
    await producer.start()
    sent = 0
    try:
        index = 0
        while rounds is None or index < rounds:
            if stop is not None and stop.is_set():
                break
            now = time.time()
            if not full_speed:
                next_boundary = (now // period + 1) * period
                await _sleep_until(next_boundary, stop)
                now = time.time()
            batch = 0
            for message in round_messages(capture, index, hosts, now):
                await producer.send(values_topic, message, key=os.urandom(4).hex().encode())
                batch += 1
            if notifications_topic and capture.notifications:
                in_round = index % len(capture.rounds)
                for offset, message in notification_messages(capture, hosts, now):
                    if int(offset // capture.interval) == in_round:
                        await producer.send(notifications_topic, message, key=os.urandom(4).hex().encode())
                        batch += 1
            await producer.flush()
            sent += batch
            index += 1
            if on_round is not None:
                on_round(index, batch)
    finally:
        await producer.stop()
    return sent


async def _sleep_until(deadline: float, stop: asyncio.Event | None) -> None:
    delay = max(0.0, deadline - time.time())
    if stop is None:
        await asyncio.sleep(delay)
        return
    try:
        await asyncio.wait_for(stop.wait(), timeout=delay)
    except asyncio.TimeoutError:
        pass


def _handle(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from ves_streams.runtime.kafka import KafkaConfigError
    from ves_streams.settings import Settings, SettingsError

    capture_dir = Path(args.capture)
    values = next(capture_dir.glob("*.values.jsonl"), None)
    if values is None:
        print(f"ves-streams replay: no *.values.jsonl in {capture_dir}", file=sys.stderr)
        return 2
    notes = next(capture_dir.glob("*.notifications.jsonl"), None)
    capture = load_capture(values, None if args.no_notifications else notes)
    hosts = host_names(args.hosts) if args.hosts > 1 else [args.host or capture.host]
    try:
        # the same VES_STREAMS_* settings as the worker (broker, Kafka TLS and SASL); --broker wins
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"ves-streams replay: {exc}", file=sys.stderr)
        return 2
    try:
        connection = KafkaConnection.from_settings(settings, broker=args.broker)
        connection.client_kwargs()  # builds the TLS context now: a bad CA file is one line, not a traceback
    except KafkaConfigError as exc:
        print(f"ves-streams replay: {exc}", file=sys.stderr)
        return 2
    except (OSError, ssl.SSLError) as exc:  # ssl.SSLError is an OSError; named for the reader
        print(f"ves-streams replay: VES_STREAMS_KAFKA_SSL_CAFILE / _CERTFILE / _KEYFILE: {exc}", file=sys.stderr)
        return 2

    def progress(index: int, count: int) -> None:
        print(f"replay: round {index}: {count} messages for {len(hosts)} host(s)", flush=True)

    try:
        asyncio.run(
            replay(
                connection,
                capture,
                hosts,
                values_topic=args.values_topic or settings.values_topic,
                notifications_topic=None if args.no_notifications else (args.notifications_topic or settings.notifications_topic),
                interval=args.interval,
                rounds=args.rounds,
                full_speed=args.full_speed,
                on_round=progress,
            )
        )
    except KeyboardInterrupt:
        return 0
    except (KafkaError, OSError) as exc:
        print(f"ves-streams replay: cannot publish to Kafka at {connection.bootstrap_servers}: {type(exc).__name__}",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("replay", help="publish the recorded collectd capture to Kafka as write_kafka does")
    parser.add_argument("--broker", default=None,
                        help="Kafka bootstrap (default: VES_STREAMS_BROKER, else kafka://localhost:9092); "
                             "TLS and SASL come from VES_STREAMS_KAFKA_*, as for the worker")  # fmt: skip
    parser.add_argument(
        "--capture", default=str(DEFAULT_CAPTURE_DIR),
        help="directory with *.values.jsonl (default: the recorded capture shipped with ves-streams)",
    )  # fmt: skip
    parser.add_argument("--hosts", type=int, default=1, help="replicate the capture to N synthetic hosts")
    parser.add_argument("--host", default=None, help="host name when replaying one host")
    parser.add_argument("--interval", type=float, default=None, help="seconds between rounds (default: capture's)")
    parser.add_argument("--rounds", type=int, default=None, help="stop after N rounds (default: forever)")
    parser.add_argument("--full-speed", action="store_true", help="do not wait between rounds")
    parser.add_argument("--values-topic", default=None, help="default: VES_STREAMS_VALUES_TOPIC, else collectd")
    parser.add_argument("--notifications-topic", default=None,
                        help="default: VES_STREAMS_NOTIFICATIONS_TOPIC, else collectd-notifications")  # fmt: skip
    parser.add_argument("--no-notifications", action="store_true")
    parser.set_defaults(handler=_handle)
