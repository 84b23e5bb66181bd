"""Repartition: collectd value lists in, one samples record per host and batch out.

``write_kafka`` keys its messages randomly, so one host's value lists are
spread over every partition of the ``collectd`` topic. This stage decodes
each message itself, dead-letters what is malformed, and produces each
host's value lists to the samples topic, keyed by host and in the host's
partition (:func:`~ves_streams.wire.samples.host_partition`), so that one worker
holds all of a host's series.

**Why this stage is not a Faust agent.** It is stateless and sees every
collectd message, a few hundred bytes each: at 1000 hosts that is ~7,000
messages per second. Faust's per-record stream machinery costs about 0.7 ms
of CPU per record (measured: a Faust agent that only passes records on does
~1,400 per CPU second, a bare aiokafka loop ~30,000), so a Faust agent could
not keep up with the realistic rate on one worker. It runs on a
:class:`~ves_streams.runtime.loop.StageLoop` in its own consumer group
(``<app id>-ingest``) and packs a whole fetched batch into one samples
record per host (:func:`ingest_batch`), so the stateful Faust stage
downstream pays Faust's per-record cost a few times per host and interval,
not once per value list.

What it guarantees (with the loop's commit-after-ack):

* **Duplicates are harmless.** Replayed value lists update the state table
  to what it already holds (:meth:`~ves_streams.state.SampleStore.apply`
  keeps each series' newest value list and skips an equal one).
* **Render ticks come after the samples they must see.** A batch's input
  offsets count as handled (:attr:`StageLoop.handled`, read by
  :func:`~ves_streams.agents.measurements.wait_for_ingest`) only once its
  samples records are acknowledged, so a tick produced afterwards lands
  behind them in the samples partition.
* **Never crashes on data**: a message is accepted or dead-lettered whole
  (``collectd.parse_value_lists`` never half-parses); a parser bug
  dead-letters the message with ``internal error`` as the reason.
* **Times a window can hold**: a value list stamped more than one of its
  intervals in the future, or with an interval longer than
  :data:`MAX_SAMPLE_INTERVAL`, is dead-lettered with the reason
  (:func:`sample_time_error`). Held, it would sit in a window no tick
  renders for hours, or keep its series fresh as long.
* **No record the broker refuses as too large**: a value list whose record
  would exceed the samples topic's ``max.message.bytes`` (read from the
  broker at start, :mod:`ves_streams.runtime.topic_limits`) is dead-lettered
  with the reason. Produced, it would be refused on every retry and stall
  its partitions. (collectd's input limit, 1 MiB, is above the broker's
  default once a record's key and headers are added.)
* **The event loop stays responsive**: a batch is parsed in chunks of
  :data:`PARSE_CHUNK` records with a yield between them, so faults, the
  sink and the render ticks of the same worker never wait a whole batch.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from ves_streams.collectd import MalformedInput, ValueList, parse_value_lists
from ves_streams.runtime.outputs import InputMessage, StageHandler, StageOutput
from ves_streams.stages import faults
from ves_streams.stages.events import StageMetrics
from ves_streams.wire import deadletter
from ves_streams.wire.samples import SamplesRecord, samples_records

__all__ = [
    "INGEST_BATCH",
    "IngestBatch",
    "SamplesRecord",
    "ValuesHandler",
    "ingest_batch",
    "ingest_batch_yielding",
    "sample_time_error",
    "samples_records",
]

log = logging.getLogger(__name__)

STAGE = "values"
#: Most collectd records handled as one batch. Larger batches pack more of a host's
#: value lists into one samples record (bench, 1000 hosts: ~5 per record at 5000).
INGEST_BATCH = 20000
#: Value-list records parsed between two yields to the event loop (~0.1 s of CPU at most).
PARSE_CHUNK = 250
#: Per-partition fetch size: enough for a batch from a few partitions (aiokafka's default is 1 MB).
FETCH_PARTITION_BYTES = 4 * 1024 * 1024
#: Longest an idle fetch waits at the broker (aiokafka's default is 500 ms). A render tick asks
#: where the collectd partitions end through this consumer, and the broker answers one
#: connection's requests in order: behind an idle long poll the question waited up to 500 ms,
#: and every window's render with it (bench, N = 1000: the tick left 0.09-0.6 s after the boundary).
INGEST_FETCH_MAX_WAIT_MS = 50
#: Offsets are committed this often: the other workers' render ticks read the group's
#: committed offsets to know this worker's ingest has handled the interval's records,
#: so a commit's delay is a window's delay (a commit is one small request).
INGEST_COMMIT_EVERY = 0.25
#: Longest collectd ``interval`` a value list may state (a day). collectd's are seconds to
#: minutes; a value is fresh for twice its interval, so a larger one would keep a series
#: (and a host) rendered long after it stopped reporting.
MAX_SAMPLE_INTERVAL = 86400.0
#: What a samples record adds to its value list's bytes at most: the key (a host name, at most
#: 1 KiB), the headers and the record batch's framing. A value list over the topic's
#: max.message.bytes less this is dead-lettered.
RECORD_OVERHEAD_BYTES = 2048


def sample_time_error(vl: ValueList, now: float) -> str | None:
    """Why ``vl``'s times cannot be held in an event-time window, or None when they can.

    ``now`` is this worker's wall clock. One interval of lead is allowed
    (collectd stamps a read when it starts; clocks differ a little); a value
    list stamped further ahead is from a host whose clock is wrong.
    """
    if not math.isfinite(vl.interval) or vl.interval > MAX_SAMPLE_INTERVAL:
        return f"value list of {vl.host!r}: interval {vl.interval!r} s is beyond {MAX_SAMPLE_INTERVAL:.0f} s"
    if not math.isfinite(vl.time):
        return f"value list of {vl.host!r}: time {vl.time!r} is not a finite number"
    ahead = vl.time - now
    if ahead > vl.interval:
        return (f"value list of {vl.host!r} stamped {ahead:.3f} s in the future (time {vl.time:.3f}, "
                f"interval {vl.interval:g} s): the host's clock is ahead of ours by more than an interval")  # fmt: skip
    return None


@dataclass(slots=True)
class IngestBatch(StageOutput):
    """What one fetched batch of collectd records becomes (``records`` are :class:`SamplesRecord`)."""

    value_lists: int = 0
    #: value-list records dead-lettered (the rest of ``dead_letters`` come from notifications)
    malformed_values: int = 0


class FaultRouting(faults.FaultContext, Protocol):
    """A fault context that also names the notifications topic (the pipeline has both)."""

    topics: Any


def _items(raw: bytes, value_lists: list[ValueList]) -> Iterator[tuple[str, bytes]]:
    """``(host, JSON)`` per value list; a one-element message (all of write_kafka's) reuses its own bytes."""
    if len(value_lists) == 1:
        body = raw.strip()
        if body[:1] == b"[" and body[-1:] == b"]":
            yield value_lists[0].host, body[1:-1].strip()
            return
    for vl in value_lists:
        yield vl.host, orjson.dumps(vl.to_json())


def ingest_batch(
    messages: Sequence[InputMessage],
    partitions: int,
    faults_context: FaultRouting | None = None,
    now: float | None = None,
    max_record_bytes: int | None = None,
) -> IngestBatch:
    """Parse a batch of collectd records: samples records per host, dead letters for the rest.

    Records of the notifications topic (when ``faults_context`` is given)
    become fault events (:func:`~ves_streams.stages.faults.add_faults`).
    Pure but for metrics: no I/O. The samples stage parses the records again
    with the same parser, so reusing a message's bytes cannot let through
    what it refuses.
    """
    batch = IngestBatch()
    items: list[tuple[str, bytes]] = []
    _parse_into(batch, items, messages, faults_context, time.time() if now is None else now, max_record_bytes)
    batch.records = list(samples_records(items, partitions))
    return batch


async def ingest_batch_yielding(
    messages: Sequence[InputMessage],
    partitions: int,
    faults_context: FaultRouting | None = None,
    chunk: int = PARSE_CHUNK,
    now: float | None = None,
    max_record_bytes: int | None = None,
) -> IngestBatch:
    """:func:`ingest_batch`, yielding to the event loop every ``chunk`` records.

    Parsing is pure CPU; a batch of 20,000 value lists took the event loop
    for over a second, and the fault loop, the sink and the render ticks of
    the same worker waited that long.
    """
    batch = IngestBatch()
    items: list[tuple[str, bytes]] = []
    for start in range(0, len(messages), chunk):
        if start:
            await asyncio.sleep(0)
        _parse_into(batch, items, messages[start : start + chunk], faults_context, time.time() if now is None else now,
                    max_record_bytes)  # fmt: skip
    batch.records = list(samples_records(items, partitions))
    return batch


def _parse_into(
    batch: IngestBatch,
    items: list[tuple[str, bytes]],
    messages: Sequence[InputMessage],
    faults_context: FaultRouting | None,
    now: float,
    max_record_bytes: int | None = None,
) -> None:
    notifications = faults_context.topics.names.notifications if faults_context is not None else None
    for message in messages:
        batch.note_input(message)
        if faults_context is not None and message.topic == notifications:
            faults.add_faults(batch, faults_context, message)
            continue
        raw = message.value
        try:
            if raw is None:
                raise MalformedInput("empty record (no value)")
            value_lists = parse_value_lists(raw)
        except MalformedInput as exc:
            reason = exc.reason
        except Exception as exc:  # a parser bug: this record is dead-lettered, the batch goes on
            log.exception("internal error parsing %s[%s]@%s", message.topic, message.partition, message.offset)
            reason = f"internal error: {type(exc).__name__}: {exc}"
        else:
            reason = _times_error(value_lists, now)
            if reason is None:
                if max_record_bytes is not None and len(raw) > max_record_bytes - RECORD_OVERHEAD_BYTES:
                    made = list(_items(raw, value_lists))  # a value list's record is never larger than its message
                    reason = _size_error(made, max_record_bytes)
                else:
                    made = _items(raw, value_lists)  # type: ignore[assignment]
                if reason is None:
                    batch.value_lists += len(value_lists)
                    items.extend(made)
                    continue
        source = deadletter.Source(message.topic, message.partition, message.offset)
        batch.dead_letters.append(deadletter.malformed_input(message.key, raw, reason, STAGE, source))
        batch.malformed_values += 1


def _size_error(items: Sequence[tuple[str, bytes]], max_record_bytes: int | None) -> str | None:
    """Why one of ``items`` cannot be a samples record of its own, or None."""
    if max_record_bytes is None:
        return None
    limit = max_record_bytes - RECORD_OVERHEAD_BYTES
    for host, item in items:
        if len(item) > limit:
            return (f"value list of {host!r}: {len(item)} bytes, more than a samples record may carry "
                    f"({limit} bytes: the samples topic's max.message.bytes {max_record_bytes} less its key, "
                    "headers and framing)")  # fmt: skip
    return None


def _times_error(value_lists: Sequence[ValueList], now: float) -> str | None:
    for vl in value_lists:
        # the usual case in two comparisons (NaN and infinities fail them): 2 % of ingest's CPU otherwise
        interval = vl.interval
        if interval <= MAX_SAMPLE_INTERVAL and vl.time - now <= interval:
            continue
        reason = sample_time_error(vl, now)
        if reason is not None:
            return reason
    return None


class ValuesHandler(StageHandler):
    """The repartition stage's handler: value lists in, samples records (and dead letters) out."""

    def __init__(
        self, partitions: Callable[[], int], metrics: StageMetrics, wait_turn: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        #: the samples topic's partition count (the broker's, once known)
        self.partitions = partitions
        #: the samples topic's max.message.bytes (read from the broker before the first batch)
        self.max_record_bytes: int | None = None
        self.metrics = metrics
        #: awaited before each fetch (the worker's renders go first: agents/render_priority.py)
        self.wait_turn = wait_turn

    async def before_fetch(self) -> None:
        if self.wait_turn is not None:
            await self.wait_turn()

    async def handle(self, messages: Sequence[InputMessage]) -> IngestBatch:
        batch = await ingest_batch_yielding(messages, self.partitions(), max_record_bytes=self.max_record_bytes)
        for topic, count in batch.counts.items():
            self.metrics.messages_in.labels(topic).inc(count)
        return batch

    def acknowledged(self, output: StageOutput) -> None:
        malformed = getattr(output, "malformed_values", 0)
        if malformed:
            self.metrics.dead_letters.labels(STAGE).inc(malformed)
