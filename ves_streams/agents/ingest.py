"""Ingest: collectd value lists in, repartitioned by host out.

``write_kafka`` keys its messages randomly, so one host's value lists are
spread over every partition of the ``collectd`` topic. Ingest decodes each
message (bytes: a message Faust could not decode would be skipped without a
trace), dead-letters what is malformed, and produces each host's value lists
to the samples topic, keyed by host and in the host's partition
(:func:`~ves_streams.state.host_partition`), so that one worker holds all of
a host's series.

collectd sends one value list per message (a few hundred bytes), so ingest
takes records in small batches (at most ``INGEST_BATCH``, waiting at most
``INGEST_LINGER`` seconds) and produces one samples record per host and
input partition per batch: a host's 70-odd series become one record instead
of 70 sends. Faust acknowledges a batch's records only after the batch was
handled.

A message is accepted or dead-lettered whole (``collectd.parse_value_lists``
never half-parses).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from ves_streams.agents import deadletter
from ves_streams.agents.pipeline import Pipeline
from ves_streams.collectd import MalformedInput, ValueList, parse_value_lists
from ves_streams.identity import OutputRecord
from ves_streams.state import host_partition
from ves_streams.topics import HEADER_KIND, KIND_VALUES

if TYPE_CHECKING:
    from faust.types import TP, Message

__all__ = ["SamplesRecord", "handle_values", "register", "samples_records"]

log = logging.getLogger(__name__)

STAGE = "values"
#: Largest batch of collectd records handled at once, and longest wait to fill it.
INGEST_BATCH = 1000
INGEST_LINGER = 0.05
_VALUES_HEADERS = [(HEADER_KIND, KIND_VALUES)]
#: A samples record stays well under the producer's 1 MB request limit.
SAMPLES_RECORD_MAX_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class SamplesRecord:
    """One host's value lists (from one batch of one input partition), for the samples topic."""

    host: str
    partition: int
    value: bytes

    @property
    def key(self) -> bytes:
        return self.host.encode("utf-8", "surrogatepass")


def samples_records(
    value_lists: list[ValueList], partitions: int, max_bytes: int = SAMPLES_RECORD_MAX_BYTES
) -> list[SamplesRecord]:
    """Group value lists by host (first-seen order) into samples-topic records.

    A host's value lists are split over several records when they would
    exceed ``max_bytes`` (the producer refuses records over 1 MB).
    """
    by_host: dict[str, list[list[bytes]]] = {}
    sizes: dict[str, int] = {}
    for vl in value_lists:
        item = orjson.dumps(vl.to_json())
        chunks = by_host.setdefault(vl.host, [[]])
        if chunks[-1] and sizes[vl.host] + len(item) + 1 > max_bytes:
            chunks.append([])
            sizes[vl.host] = 0
        chunks[-1].append(item)
        sizes[vl.host] = sizes.get(vl.host, 0) + len(item) + 1
    return [
        SamplesRecord(host, host_partition(host, partitions), b"[" + b",".join(chunk) + b"]")
        for host, chunks in by_host.items()
        for chunk in chunks
    ]


async def handle_values(pipeline: Pipeline, messages: Sequence[Message]) -> None:
    """A batch of ``collectd`` records: repartition their value lists, dead-letter the malformed."""
    by_source: dict[TP, list[ValueList]] = {}
    handled: dict[TP, int] = {}
    for message in messages:
        handled[message.tp] = message.offset + 1
        pipeline.metrics.messages_in.labels(message.topic).inc()
        source = deadletter.Source(message.topic, message.partition, message.offset)
        try:
            value_lists = parse_value_lists(message.value)
        except MalformedInput as exc:
            record = deadletter.malformed_input(message.key, message.value, exc.reason, STAGE, source)
            await pipeline.dead_letter(record, STAGE, source=message.tp)
            continue
        except Exception as exc:  # a parser bug: this record is dead-lettered, the batch goes on
            log.exception("internal error parsing %s[%s]@%s", message.topic, message.partition, message.offset)
            reason = f"internal error: {type(exc).__name__}: {exc}"
            record = deadletter.malformed_input(message.key, message.value, reason, STAGE, source)
            await pipeline.dead_letter(record, STAGE, source=message.tp)
            continue
        by_source.setdefault(message.tp, []).extend(value_lists)
    partitions = pipeline.samples_partitions()
    for tp, value_lists in by_source.items():
        for record in samples_records(value_lists, partitions):
            out = OutputRecord(key=record.key, value=record.value, headers=_VALUES_HEADERS)
            await pipeline.produce(pipeline.topics.samples, out, record.partition, source=tp)
    # queued behind this batch's samples records: a render tick sent after this is ordered after them
    for tp, next_offset in handled.items():
        pipeline.ingest_handled(tp, next_offset)


def register(pipeline: Pipeline) -> Any:
    app = pipeline.app

    @app.agent(pipeline.topics.values, name="ves_streams.ingest_values")
    async def ingest_values(stream: Any) -> None:
        async for events in stream.take_events(INGEST_BATCH, within=INGEST_LINGER):
            async with pipeline.gate.processing():
                await handle_values(pipeline, [event.message for event in events])

    return ingest_values
