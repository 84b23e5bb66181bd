"""The load: the recorded capture replicated to N hosts, published as ``write_kafka`` does.

Two ways to publish it:

* :func:`preload` -- full speed, into a topic nobody consumes yet, so that a
  consumer can later be timed on a ready backlog (ingest throughput);
* :func:`publish_realistic` -- one capture round per host per interval, as N
  collectd hosts with that interval would, plus the captured notifications
  spread over each interval, stamped with the moment they are produced
  (latency).

Messages are exactly :func:`ves_streams.dev.replay.round_messages`' (a one-element
JSON array per value list, random 8-hex-digit key, so a host's value lists
land on every partition), and notifications are the collectd 5.9+ JSON
shape of :func:`ves_streams.dev.replay.notification_messages`, with ``startsAt``
set to the microsecond they are produced so a fault event can be matched to
its notification by ``(sourceName, startEpochMicrosec)``.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from ves_streams.dev.replay import Capture, round_messages
from ves_streams.runtime.kafka import KafkaConnection

__all__ = [
    "PreloadReport",
    "RealisticLog",
    "RoundLog",
    "notification_message",
    "preload",
    "publish_batched",
    "publish_realistic",
    "round_sizes",
]

def round_sizes(capture: Capture, rounds: int) -> list[int]:
    """Value lists per host in each of the first ``rounds`` rounds (the capture cycles)."""
    return [len(capture.rounds[i % len(capture.rounds)]) for i in range(rounds)]


def _key() -> bytes:
    return os.urandom(4).hex().encode()


@dataclass(frozen=True, slots=True)
class PreloadReport:
    topic: str
    messages: int
    bytes: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0


async def preload(
    bootstrap: str, topic: str, capture: Capture, hosts: list[str], rounds: int, partitions: int
) -> PreloadReport:
    """Publish ``rounds`` rounds for every host as fast as possible; return when all are acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=50, max_batch_size=512 * 1024)
    await producer.start()
    started = time.perf_counter()
    count = size = 0
    try:
        for index in range(rounds):
            sent, sent_bytes = await publish_batched(producer, topic, round_messages(capture, index, hosts, time.time()), partitions)
            count += sent
            size += sent_bytes
    finally:
        await producer.stop()
    return PreloadReport(topic, count, size, time.perf_counter() - started)


async def publish_batched(
    producer: AIOKafkaProducer, topic: str, messages: Iterable[bytes], partitions: int
) -> tuple[int, int]:
    """Produce ``messages`` (random keys and partitions, as write_kafka's random keys amount to) and wait for all acks.

    Batches are built per partition with ``create_batch``/``send_batch``:
    the per-message ``send`` path would make the load generator, not the
    broker or the consumer, the slowest part. Yields to the event loop
    between batches. Returns (messages, bytes).
    """
    count = size = 0
    pending: list[asyncio.Future[Any]] = []
    batches = [producer.create_batch() for _ in range(partitions)]
    for message in messages:
        partition = random.randrange(partitions)
        if batches[partition].append(key=_key(), value=message, timestamp=None) is None:
            pending.append(await producer.send_batch(batches[partition], topic, partition=partition))
            batches[partition] = producer.create_batch()
            batches[partition].append(key=_key(), value=message, timestamp=None)
            if len(pending) >= 64:
                await asyncio.gather(*pending)
                pending.clear()
            await asyncio.sleep(0)
        count += 1
        size += len(message)
    for partition, batch in enumerate(batches):
        if batch.record_count():
            pending.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*pending)
    return count, size


def notification_message(note: dict[str, Any], capture_host: str, host: str, starts_us: int) -> bytes:
    """One captured notification for ``host``, raised at ``starts_us`` (epoch microseconds)."""
    labels = dict(note["labels"], instance=host)
    annotations = dict(note["annotations"])
    summary = annotations.get("summary", "")
    annotations["summary"] = summary.replace(f"Host {capture_host},", f"Host {host},", 1)
    stamp = datetime.fromtimestamp(starts_us // 1_000_000, timezone.utc).replace(microsecond=starts_us % 1_000_000)
    starts = stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return orjson.dumps([{"labels": labels, "annotations": annotations, "startsAt": starts}])


@dataclass(slots=True)
class RoundLog:
    """One published round: its interval window, the sample time it carries and how long publishing took."""

    index: int
    window_start: float
    sample_time: float
    messages: int = 0
    published_at: float = 0.0  # all acknowledged


@dataclass(slots=True)
class RealisticLog:
    interval: float
    hosts: int
    rounds: list[RoundLog] = field(default_factory=list)
    #: ``(host, startsAt in epoch microseconds)`` of every notification produced.
    notifications: set[tuple[str, int]] = field(default_factory=set)
    #: seconds between a notification's scheduled and actual produce time
    notification_delays: list[float] = field(default_factory=list)

    @property
    def value_lists(self) -> int:
        return sum(r.messages for r in self.rounds)


async def publish_realistic(
    broker: str | KafkaConnection,
    capture: Capture,
    hosts: list[str],
    *,
    values_topic: str,
    notifications_topic: str,
    interval: float,
    rounds: int,
    partitions: int,
    phase: float = 1.0,
) -> RealisticLog:
    """Publish ``rounds`` intervals of load at the realistic rate and log what went out when.

    Round ``k`` starts ``phase`` seconds after a wall-clock interval boundary
    (the hosts are NTP-synchronised and share the interval) and publishes
    one capture round for every host, stamped with that start time. The
    notifications of that capture round, for every host, are produced at
    evenly spaced moments over the rest of the interval. ``broker`` is a
    bootstrap string (plaintext) or the :class:`KafkaConnection` of a secured one.
    """
    connection = broker if isinstance(broker, KafkaConnection) else KafkaConnection.parse(broker)
    producer = AIOKafkaProducer(
        bootstrap_servers=connection.bootstrap_servers, acks=1, linger_ms=5, max_batch_size=256 * 1024,
        **connection.client_kwargs(),
    )  # fmt: skip
    await producer.start()
    log = RealisticLog(interval=interval, hosts=len(hosts))
    first = (time.time() // interval + 1) * interval
    try:
        for k in range(rounds):
            window = first + k * interval
            await _sleep_until(window + phase)
            stamp = time.time()
            # The window the samples belong to: where the stamp falls (a late round falls later).
            entry = RoundLog(k, (stamp // interval) * interval, round(stamp, 3))
            log.rounds.append(entry)
            notes = _notifications_of_round(capture, k, hosts)
            spread = max(0.0, interval - phase - 0.5) / max(1, len(notes))
            note_task = asyncio.create_task(
                _send_notifications(producer, notifications_topic, capture, notes, stamp, spread, log)
            )
            entry.messages, _ = await publish_batched(producer, values_topic, round_messages(capture, k, hosts, stamp), partitions)
            entry.published_at = time.time()
            await note_task
    finally:
        await producer.stop()
    return log


def _notifications_of_round(capture: Capture, k: int, hosts: list[str]) -> list[tuple[str, dict[str, Any]]]:
    in_round = k % len(capture.rounds)
    notes = [n for offset, n in capture.notifications if int(offset // capture.interval) == in_round]
    return [(host, note) for note in notes for host in hosts]


async def _send_notifications(
    producer: AIOKafkaProducer,
    topic: str,
    capture: Capture,
    notes: list[tuple[str, dict[str, Any]]],
    start: float,
    spread: float,
    log: RealisticLog,
) -> None:
    futures = []
    for j, (host, note) in enumerate(notes):
        due = start + (j + 0.5) * spread
        await _sleep_until(due)
        starts_us = time.time_ns() // 1000
        log.notification_delays.append(starts_us / 1e6 - due)
        # keyed by host, as the relay produces them (a record of another partition's host takes a hop more)
        futures.append(await producer.send(topic, notification_message(note, capture.host, host, starts_us), key=host.encode()))
        log.notifications.add((host, starts_us))
    await asyncio.gather(*futures)


async def _sleep_until(deadline: float) -> None:
    delay = deadline - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
