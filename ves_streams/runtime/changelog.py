"""Reading a changelog partition back: what a stage loop's state is restored from.

The fault stage's alarm table (:mod:`ves_streams.stages.alarms`) is written
to a compacted changelog topic in the same produce (the same transaction,
with ``exactly_once``) as the fault events it made; when the stage is
assigned an input partition it reads the changelog partition of the same
number back from its beginning to its end with :func:`read_partitions`.
The reader is a consumer without a group (``assign``, not ``subscribe``)
with ``read_committed``: records of an aborted transaction never come back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import for_code

__all__ = ["ChangelogMissing", "ensure_changelog", "read_partitions"]

log = logging.getLogger(__name__)

#: Longest a restore may take before it fails (and the loop crashes, rather than run on wrong state).
RESTORE_TIMEOUT = 120.0
#: Metadata requests (half a second apart) before a missing changelog partition is an error.
METADATA_ATTEMPTS = 20


class ChangelogMissing(RuntimeError):
    """The changelog topic lacks a partition the input topic has (they must be co-partitioned)."""


#: Kafka's error code for a topic that exists already
_TOPIC_ALREADY_EXISTS = 36


async def ensure_changelog(
    bootstrap_servers: str,
    client_kwargs: Callable[[], dict[str, Any]],
    topic: str,
    *,
    like: str,
    replication: int,
    configs: Mapping[str, str],
) -> int:
    """Create ``topic`` with as many partitions as the existing topic ``like``; their number.

    Co-partitioned because partition p of the changelog holds the state of
    input partition p: the count comes from the input topic as it is, not
    from a setting that may differ from it. An existing changelog with
    fewer partitions is a :class:`ChangelogMissing` naming both counts.
    Only ``like`` and an existing ``topic`` are described: a metadata
    request for a missing topic could have the broker auto-create it with
    the wrong settings.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **client_kwargs())
    await admin.start()
    try:
        partitions = _partition_count(await admin.describe_topics([like]), like)
        response = await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=replication,
                                                       topic_configs=dict(configs))])  # fmt: skip
        for name, code, *_ in response.topic_errors:
            if name != topic or code == 0:
                continue
            if code != _TOPIC_ALREADY_EXISTS:
                raise for_code(code)(f"creating the changelog topic {topic!r}")
            existing = _partition_count(await admin.describe_topics([topic]), topic)
            if existing < partitions:
                raise ChangelogMissing(f"changelog topic {topic!r} has {existing} partitions, the input topic {like!r}"
                                       f" {partitions}: they must have as many (add partitions to the changelog)")  # fmt: skip
    finally:
        await admin.close()
    return partitions


def _partition_count(described: Sequence[Any], topic: str) -> int:
    for entry in described:
        if entry.get("topic") == topic and entry.get("error_code") == 0 and entry.get("partitions"):
            return len(entry["partitions"])
    raise ChangelogMissing(f"topic {topic!r} does not exist (or has no partitions)")


async def read_partitions(
    bootstrap_servers: str,
    client_kwargs: Callable[[], dict[str, Any]],
    topic: str,
    partitions: Sequence[int],
    *,
    timeout: float = RESTORE_TIMEOUT,
) -> dict[int, list[tuple[bytes, bytes | None]]]:
    """Every ``(key, value)`` of ``topic``'s ``partitions``, in offset order, up to their end.

    The end is the last stable offset at the start of the read (no stage
    writes these partitions while their input is unassigned).
    """
    out: dict[int, list[tuple[bytes, bytes | None]]] = {p: [] for p in partitions}
    if not partitions:
        return out
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        **client_kwargs(),
    )
    await consumer.start()
    try:
        known: set[int] = set()
        for _ in range(METADATA_ATTEMPTS):  # a topic created just now may take a moment to show
            # a consumer without subscriptions asks for every topic's metadata (aiokafka has no public call for it)
            await consumer._client.force_metadata_update()  # noqa: SLF001
            known = set(consumer.partitions_for_topic(topic) or ())
            if set(partitions) <= known:
                break
            await asyncio.sleep(0.5)
        missing = sorted(set(partitions) - known)
        if missing:
            raise ChangelogMissing(f"changelog topic {topic!r} has no partition {missing} (it has {sorted(known or ())}):"
                                   " it must have as many partitions as the input topic")  # fmt: skip
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > await consumer.position(tp)}

        async def drain() -> None:
            while remaining:
                fetched = await consumer.getmany(*remaining, timeout_ms=500)
                for tp, records in fetched.items():
                    for record in records:
                        if record.offset < ends[tp]:
                            out[tp.partition].append((record.key, record.value))
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)

        await asyncio.wait_for(drain(), timeout)
    finally:
        await consumer.stop()
    return out
