"""``ves-streams dlq list`` and ``dlq redrive``: what was dead-lettered, and sending it again once fixed.

``dlq list`` reads a dead-letter topic (``ves-events-dlq`` by default, or
``--topic ves-streams-dlq`` for malformed input) from its start and counts
its records by reason, with the first and last time each was written.

``dlq redrive`` re-publishes dead letters to the topic each came from (its
``ves-streams-source-topic`` header: ``ves-events`` for the sink's, the
input topic for malformed input once a fixed rule file can render it), with
the original key, value and headers, the dead-letter headers dropped. The
eventIds are the same, so a collector can discard a duplicate. A dead
letter that does not hold its original message whole (a render error's
report, a value cut at the size limit) is never re-published. Filters:
``--reason`` (a substring of the reason, case-insensitive), ``--since`` and
``--until`` (the dead letter's timestamp: ISO 8601 or epoch seconds).

What it guarantees: a record is re-published at most once per run, and
the DLQ offsets are committed (consumer group ``<app id>-dlq-redrive``)
only after the broker acknowledged the re-published records, and only up
to the first record of each partition that was *not* re-published (one the
filters left out stays for a later run). So a second run with the same
filters sends nothing again; a run with other filters may re-send records
that lie after one left out (the same eventIds: de-duplicated by the
collector). It reads each partition up to its end when the run began, so a
redriven event dead-lettered again is not redriven twice by one run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from ves_streams.runtime.kafka import KafkaConnection
from ves_streams.wire.deadletter import (
    HEADER_DLQ_ORIGINAL_SIZE,
    HEADER_DLQ_REASON,
    HEADER_DLQ_RULE,
    HEADER_DLQ_SOURCE_TOPIC,
    HEADER_DLQ_STAGE,
    HEADER_DLQ_VALUE_DROPPED,
    without_dead_letter_headers,
)

#: dead letters that do not hold their original message whole: never re-published (a render error's report,
#: a value cut or left out)
_NOT_REPUBLISHABLE = (HEADER_DLQ_ORIGINAL_SIZE, HEADER_DLQ_VALUE_DROPPED)
#: Render errors of these stages keep their input message whole (a notification): once the rule
#: file is fixed, re-published to its source topic, it renders. Measurements' and heartbeats'
#: carry a report (their samples are in the state, and their window has passed): never.
_RENDER_ERRORS_WITH_THEIR_MESSAGE = ("fault",)

__all__ = ["RedriveFilter", "DlqRecord", "list_dead_letters", "redrive", "register"]


@dataclass(frozen=True, slots=True)
class DlqRecord:
    """One dead-letter record as read: where it is, when it was written, why, and what to re-publish."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name and value is not None:
                return value.decode("utf-8", errors="replace")
        return None

    @property
    def reason(self) -> str:
        return self.header(HEADER_DLQ_REASON) or self.header("ves-dlq-reason") or "(no reason header)"


@dataclass(frozen=True, slots=True)
class RedriveFilter:
    """Which dead letters to re-publish: all by default."""

    reason: str | None = None
    since: float | None = None
    until: float | None = None

    def matches(self, record: DlqRecord) -> bool:
        """True when ``record`` is chosen and can be re-published (its value whole, not a render error's report)."""
        if any(record.header(name) is not None for name in _NOT_REPUBLISHABLE):
            return False
        if record.header(HEADER_DLQ_RULE) is not None and record.header(HEADER_DLQ_STAGE) not in _RENDER_ERRORS_WITH_THEIR_MESSAGE:
            return False
        when = record.timestamp_ms / 1000.0
        if self.since is not None and when < self.since:
            return False
        if self.until is not None and when >= self.until:
            return False
        return self.reason is None or self.reason.lower() in record.reason.lower()


def parse_time(text: str) -> float:
    """Epoch seconds from ``1765100000`` or ISO 8601 (``2026-12-07T21:00:00Z``; no zone means UTC)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give epoch seconds or an ISO 8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


async def _read(connection: KafkaConnection, topic: str, group: str | None) -> tuple[list[DlqRecord], AIOKafkaConsumer]:
    """Every record of ``topic`` from the group's committed offsets (the start without one) to the end as of now.

    Returns the consumer, started, for the caller to commit with and stop.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=connection.bootstrap_servers, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", isolation_level="read_committed", **connection.client_kwargs(),
    )  # fmt: skip
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - a topic just created
            partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            raise LookupError(f"topic {topic!r} does not exist")
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[DlqRecord] = []
        remaining = {tp for tp in partitions if ends[tp] > await consumer.position(tp)}
        deadline = time.monotonic() + 120
        while remaining and time.monotonic() < deadline:
            batches = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, messages in batches.items():
                for m in messages:
                    if m.offset < ends[tp]:
                        records.append(DlqRecord(tp.partition, m.offset, m.timestamp, m.key, m.value,
                                                 tuple((k, bytes(v or b"")) for k, v in (m.headers or ()))))  # fmt: skip
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        if remaining:
            raise TimeoutError(f"could not read {topic} to its end in 120 s")
        return records, consumer
    except BaseException:
        await consumer.stop()
        raise


async def list_dead_letters(connection: KafkaConnection, topic: str) -> list[tuple[str, int, float, float]]:
    """(reason, count, first, last written as epoch seconds) for every reason in ``topic``, most frequent first."""
    records, consumer = await _read(connection, topic, None)
    await consumer.stop()
    counts: Counter[str] = Counter()
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for record in records:
        reason, when = record.reason, record.timestamp_ms / 1000.0
        counts[reason] += 1
        first[reason] = min(first.get(reason, when), when)
        last[reason] = max(last.get(reason, when), when)
    return [(reason, count, first[reason], last[reason]) for reason, count in counts.most_common()]


async def redrive(
    connection: KafkaConnection, topic: str, group: str, chosen: RedriveFilter, *, target: str | None = None
) -> tuple[int, int]:
    """Re-publish the dead letters ``chosen`` selects; (re-published, left out). See the module docstring."""
    records, consumer = await _read(connection, topic, group)
    try:
        producer = AIOKafkaProducer(bootstrap_servers=connection.bootstrap_servers, acks="all",
                                    enable_idempotence=True, **connection.client_kwargs())  # fmt: skip
        await producer.start()
        try:
            sent = []
            for record in records:
                if chosen.matches(record):
                    destination = target or record.header(HEADER_DLQ_SOURCE_TOPIC)
                    if not destination:
                        continue
                    headers = without_dead_letter_headers(record.headers)
                    sent.append(await producer.send(destination, record.value, key=record.key, headers=headers))
            await asyncio.gather(*sent)
        finally:
            await producer.stop()
        commit: dict[TopicPartition, OffsetAndMetadata] = {}
        stopped: set[int] = set()
        redriven = 0
        for record in sorted(records, key=lambda r: (r.partition, r.offset)):
            chosen_now = chosen.matches(record) and (target or record.header(HEADER_DLQ_SOURCE_TOPIC))
            redriven += 1 if chosen_now else 0
            if record.partition in stopped:
                continue
            if not chosen_now:
                stopped.add(record.partition)
                continue
            commit[TopicPartition(topic, record.partition)] = OffsetAndMetadata(record.offset + 1, "")
        if commit:
            await consumer.commit(commit)
        return redriven, len(records) - redriven
    finally:
        await consumer.stop()


def _connection(args: argparse.Namespace) -> tuple[KafkaConnection, Any]:
    from ves_streams.settings import command_settings

    settings = command_settings("dlq")
    return KafkaConnection.from_settings(settings, broker=args.broker), settings


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _handle_list(args: argparse.Namespace) -> int:
    connection, settings = _connection(args)
    topic = args.topic or settings.events_dlq_topic
    try:
        rows = asyncio.run(list_dead_letters(connection, topic))
    except (KafkaError, LookupError, TimeoutError) as exc:
        print(f"ves-streams dlq: {topic} at {connection.bootstrap_servers}: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    total = sum(row[1] for row in rows)
    print(f"{total} dead letters in {topic}")
    for reason, count, first, last in rows:
        short = reason if len(reason) <= 160 else reason[:157] + "..."
        print(f"{count:>8}  {_stamp(first)} .. {_stamp(last)}  {short}")
    return 0


def _handle_redrive(args: argparse.Namespace) -> int:
    connection, settings = _connection(args)
    topic = args.topic or settings.events_dlq_topic
    chosen = RedriveFilter(reason=args.reason, since=args.since, until=args.until)
    group = f"{settings.app_id}-dlq-redrive"
    try:
        redriven, left = asyncio.run(redrive(connection, topic, group, chosen, target=args.to))
    except (KafkaError, LookupError, TimeoutError) as exc:
        print(f"ves-streams dlq: {topic} at {connection.bootstrap_servers}: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    print(f"re-published {redriven} dead letters of {topic} to their source topics; {left} left out by the filters")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("dlq", help="the dead-letter topics: list what is there, redrive it once fixed")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--broker", default=None,
                        help="Kafka bootstrap (default: VES_STREAMS_BROKER); TLS and SASL from VES_STREAMS_KAFKA_*")
    common.add_argument("--topic", default=None,
                        help="dead-letter topic (default: VES_STREAMS_EVENTS_DLQ_TOPIC, ves-events-dlq; "
                             "malformed input: VES_STREAMS_DLQ_TOPIC, ves-streams-dlq)")  # fmt: skip
    listing = actions.add_parser("list", parents=[common], help="count the dead letters by reason, with first and last time")
    listing.set_defaults(handler=_handle_list)
    again = actions.add_parser("redrive", parents=[common], help="re-publish dead letters to the topic they came from",
                               description=__doc__.split("\n\n")[2] if __doc__ else None)  # fmt: skip
    again.add_argument("--reason", default=None, help="only dead letters whose reason contains this (case-insensitive)")
    again.add_argument("--since", type=parse_time, default=None, help="only those written at or after (ISO 8601 or epoch s)")
    again.add_argument("--until", type=parse_time, default=None, help="only those written before (ISO 8601 or epoch s)")
    again.add_argument("--to", default=None, help="re-publish to this topic instead of each record's source topic")
    again.set_defaults(handler=_handle_redrive)
