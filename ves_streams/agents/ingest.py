"""Ingest: collectd value lists in, repartitioned by host out.

``write_kafka`` keys its messages randomly, so one host's value lists are
spread over every partition of the ``collectd`` topic. Ingest decodes each
message (bytes: a message Faust could not decode would be skipped without a
trace), dead-letters what is malformed, and produces each host's value lists
to the samples topic, keyed by host and in the host's partition
(:func:`~ves_streams.state.host_partition`), so that one worker holds all of
a host's series.

A message is accepted or dead-lettered whole (``collectd.parse_value_lists``
never half-parses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from ves_streams.agents import deadletter
from ves_streams.agents.pipeline import Pipeline
from ves_streams.collectd import MalformedInput, ValueList, parse_value_lists
from ves_streams.state import host_partition
from ves_streams.topics import HEADER_KIND, KIND_VALUES

if TYPE_CHECKING:
    from faust.types import Message

__all__ = ["SamplesRecord", "handle_values", "register", "samples_records"]

STAGE = "values"


@dataclass(frozen=True, slots=True)
class SamplesRecord:
    """One host's value lists from one input message, for the samples topic."""

    host: str
    partition: int
    value: bytes

    @property
    def key(self) -> bytes:
        return self.host.encode("utf-8", "surrogatepass")


def samples_records(value_lists: list[ValueList], partitions: int) -> list[SamplesRecord]:
    """Group value lists by host (first-seen order) into samples-topic records."""
    by_host: dict[str, list[dict[str, Any]]] = {}
    for vl in value_lists:
        by_host.setdefault(vl.host, []).append(vl.to_json())
    return [SamplesRecord(host, host_partition(host, partitions), orjson.dumps(items)) for host, items in by_host.items()]


async def handle_values(pipeline: Pipeline, message: Message) -> None:
    """One ``collectd`` record: repartition its value lists, or dead-letter it."""
    source = deadletter.Source(message.topic, message.partition, message.offset)
    try:
        value_lists = parse_value_lists(message.value)
    except MalformedInput as exc:
        await pipeline.dead_letter(deadletter.malformed_input(message.key, message.value, exc.reason, STAGE, source), STAGE)
        return
    headers = [(HEADER_KIND, KIND_VALUES)]
    for record in samples_records(value_lists, pipeline.samples_partitions()):
        await pipeline.topics.samples.send(key=record.key, value=record.value, partition=record.partition, headers=headers)


def register(pipeline: Pipeline) -> Any:
    app = pipeline.app

    @app.agent(pipeline.topics.values, name="ves_streams.ingest_values")
    async def ingest_values(stream: Any) -> None:
        async for event in stream.events():
            await pipeline.guard(STAGE, event.message, handle_values)

    return ingest_values
