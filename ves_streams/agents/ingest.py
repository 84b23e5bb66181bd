"""Ingest: collectd value lists in, repartitioned by host out; notifications in, fault events out.

``write_kafka`` keys its messages randomly, so one host's value lists are
spread over every partition of the ``collectd`` topic. Ingest decodes each
message itself, dead-letters what is malformed, and produces each host's
value lists to the samples topic, keyed by host and in the host's partition
(:func:`~ves_streams.state.host_partition`), so that one worker holds all of
a host's series.

**Why this stage is not a Faust agent.** Ingest is stateless and sees every
collectd message, a few hundred bytes each: at 1000 hosts that is ~7,000
messages per second. Faust's per-record stream machinery costs about 0.7 ms
of CPU per record (measured: a Faust agent that only passes records on does
~1,400 per CPU second, a bare aiokafka loop ~30,000), so a Faust ingest agent
could not keep up with the realistic rate on one worker. :class:`IngestService`
is a plain ``AIOKafkaConsumer.getmany`` loop in its own consumer group
(``<app id>-ingest``), like the sink. It packs a whole fetched batch into
one samples record per host (:func:`ingest_batch`), so the stateful Faust
stage downstream gets one record per host per batch instead of one per value
list, and pays Faust's per-record cost a few times per host and interval.

A second instance of the same loop consumes ``collectd-notifications`` in
the group ``<app id>-faults`` and produces each notification's fault events
(:mod:`.faults`, which says why they left Faust too), under the same commit
rule. It is a loop of its own, with small batches, so that a fault never
waits behind a burst of value lists: at 1000 hosts a burst is tens of
thousands of them, seconds of parsing. The values loop parses in chunks of
``PARSE_CHUNK`` and yields to the event loop between them for the same
reason.

What it guarantees:

* **Nothing lost.** An input offset is committed only after every samples
  record and dead letter derived from the records before it was acknowledged
  by the broker (``acks=all``). A crash redelivers from the last commit.
* **Duplicates are harmless.** Replayed value lists update the state table
  to what it already holds (:meth:`~ves_streams.state.SampleStore.apply`
  keeps each series' newest value list and skips an equal one). With
  ``exactly_once`` the batch's samples records, dead letters and input
  offsets commit in one Kafka transaction, so not even a dead letter repeats.
* **Render ticks come after the samples they must see.** A batch's input
  offsets count as handled (:attr:`IngestService.handled`, read by
  :func:`~ves_streams.agents.measurements.wait_for_ingest`) only once its
  samples records are acknowledged, so a tick produced afterwards lands
  behind them in the samples partition.
* **Never crashes on data**: a message is accepted or dead-lettered whole
  (``collectd.parse_value_lists`` never half-parses); a parser bug
  dead-letters the message with ``internal error`` as the reason. A broker
  that refuses writes is retried with backoff, the batch kept (Kafka is the
  buffer: nothing more is fetched meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from mode import Service

from ves_streams.agents import deadletter, faults
from ves_streams.agents.batches import send_to_partition
from ves_streams.broker_wait import bootstrap_servers
from ves_streams.collectd import MalformedInput, ValueList, parse_value_lists
from ves_streams.consumer_loop import RebalanceForwarder, stop_task
from ves_streams.identity import OutputRecord
from ves_streams.state import host_partition
from ves_streams.topics import HEADER_KIND, KIND_VALUES

if TYPE_CHECKING:
    from ves_streams.agents.pipeline import Pipeline

__all__ = ["IngestBatch", "IngestService", "InputMessage", "SamplesRecord", "ingest_batch", "ingest_batch_yielding", "samples_records"]

log = logging.getLogger(__name__)

STAGE = "values"
#: Most collectd records handled as one batch. Larger batches pack more of a host's
#: value lists into one samples record (bench, 1000 hosts: ~5 per record at 5000).
INGEST_BATCH = 20000
#: Most notifications handled as one batch: small, a fault goes out as soon as it is read.
FAULTS_BATCH = 500
#: Value-list records parsed between two yields to the event loop (~0.1 s of CPU at most).
PARSE_CHUNK = 250
#: Per-partition fetch size: enough for a batch from a few partitions (aiokafka's default is 1 MB).
FETCH_PARTITION_BYTES = 4 * 1024 * 1024
#: Longest wait for a fetch while the topic is idle.
_POLL_MS = 200
#: Offsets are committed at most this often (and on revoke and stop): a commit is a round trip.
COMMIT_EVERY = 1.0
#: Producer linger: fills produce requests (same as the Faust producer's, see app.py).
LINGER_MS = 20
_VALUES_HEADERS = [(HEADER_KIND, KIND_VALUES)]
#: A samples record stays well under the producer's 1 MB request limit.
SAMPLES_RECORD_MAX_BYTES = 256 * 1024
#: Backoff between attempts to produce a batch the broker refused (seconds).
_RETRY_INITIAL, _RETRY_MAX = 0.5, 10.0


class InputMessage(Protocol):
    """What ingest reads of a Kafka record (aiokafka's ``ConsumerRecord`` has it)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class SamplesRecord:
    """One host's value lists (from one batch), for the samples topic."""

    host: str
    partition: int
    value: bytes

    @property
    def key(self) -> bytes:
        return self.host.encode("utf-8", "surrogatepass")


@dataclass(slots=True)
class IngestBatch:
    """What one fetched batch of collectd records becomes."""

    records: list[SamplesRecord] = field(default_factory=list)
    #: fault events for ``ves-events``, in the order of their notifications
    events: list[OutputRecord] = field(default_factory=list)
    dead_letters: list[OutputRecord] = field(default_factory=list)
    #: input partition -> offset after its last record in the batch
    handled: dict[TopicPartition, int] = field(default_factory=dict)
    #: input topic -> records read
    counts: dict[str, int] = field(default_factory=dict)
    value_lists: int = 0
    #: value-list records dead-lettered (the rest of ``dead_letters`` come from notifications)
    malformed_values: int = 0


def samples_records(
    items: Iterable[tuple[str, bytes]], partitions: int, max_bytes: int = SAMPLES_RECORD_MAX_BYTES
) -> list[SamplesRecord]:
    """Group ``(host, value list JSON)`` pairs by host (first-seen order) into samples-topic records.

    A host's value lists are split over several records when they would
    exceed ``max_bytes`` (the producer refuses records over 1 MB).
    """
    by_host: dict[str, list[list[bytes]]] = {}
    sizes: dict[str, int] = {}
    for host, item in items:
        chunks = by_host.get(host)
        if chunks is None:
            chunks = by_host[host] = [[]]
            sizes[host] = 0
        if chunks[-1] and sizes[host] + len(item) + 1 > max_bytes:
            chunks.append([])
            sizes[host] = 0
        chunks[-1].append(item)
        sizes[host] += len(item) + 1
    return [
        SamplesRecord(host, host_partition(host, partitions), b"[" + b",".join(chunk) + b"]")
        for host, chunks in by_host.items()
        for chunk in chunks
    ]


def _items(raw: bytes, value_lists: list[ValueList]) -> Iterator[tuple[str, bytes]]:
    """``(host, JSON)`` per value list; a one-element message (all of write_kafka's) reuses its own bytes."""
    if len(value_lists) == 1:
        body = raw.strip()
        if body[:1] == b"[" and body[-1:] == b"]":
            yield value_lists[0].host, body[1:-1].strip()
            return
    for vl in value_lists:
        yield vl.host, orjson.dumps(vl.to_json())


def ingest_batch(messages: Sequence[InputMessage], partitions: int, pipeline: Pipeline | None = None) -> IngestBatch:
    """Parse a batch of collectd records: samples records per host, dead letters for the rest.

    Records of the notifications topic (when ``pipeline`` is given) become
    fault events (:func:`~ves_streams.agents.faults.fault_outputs`).
    Pure but for metrics: no I/O. The samples stage parses the records again
    with the same parser, so reusing a message's bytes cannot let through
    what it refuses.
    """
    batch = IngestBatch()
    items: list[tuple[str, bytes]] = []
    _parse_into(batch, items, messages, pipeline)
    batch.records = samples_records(items, partitions)
    return batch


async def ingest_batch_yielding(
    messages: Sequence[InputMessage], partitions: int, pipeline: Pipeline | None = None, chunk: int = PARSE_CHUNK
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
        _parse_into(batch, items, messages[start : start + chunk], pipeline)
    batch.records = samples_records(items, partitions)
    return batch


def _parse_into(batch: IngestBatch, items: list[tuple[str, bytes]], messages: Sequence[InputMessage], pipeline: Pipeline | None) -> None:
    notifications = pipeline.topics.names.notifications if pipeline is not None else None
    for message in messages:
        batch.handled[TopicPartition(message.topic, message.partition)] = message.offset + 1
        batch.counts[message.topic] = batch.counts.get(message.topic, 0) + 1
        if pipeline is not None and message.topic == notifications:
            _add_faults(batch, pipeline, message)
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
            batch.value_lists += len(value_lists)
            items.extend(_items(raw, value_lists))
            continue
        source = deadletter.Source(message.topic, message.partition, message.offset)
        batch.dead_letters.append(deadletter.malformed_input(message.key, raw, reason, STAGE, source))
        batch.malformed_values += 1


def _add_faults(batch: IngestBatch, pipeline: Pipeline, message: InputMessage) -> None:
    try:
        outputs = faults.fault_outputs(pipeline, message)
    except Exception as exc:  # a bug, not the data's fault: dead-letter the notification, go on
        log.exception("internal error handling %s[%s]@%s", message.topic, message.partition, message.offset)
        pipeline.metrics.dead_letters.labels(faults.STAGE).inc()
        source = deadletter.Source(message.topic, message.partition, message.offset)
        reason = f"internal error: {type(exc).__name__}: {exc}"
        outputs = [(False, deadletter.malformed_input(message.key, message.value, reason, faults.STAGE, source))]
    for is_event, record in outputs:
        (batch.events if is_event else batch.dead_letters).append(record)


class IngestService(Service):
    """One ingest loop of a worker (value lists, or with ``notifications`` the fault loop); see the module docstring.

    Started by the Faust worker with the app's other services, after table
    recovery (so the samples topic's partition count is known).
    """

    def __init__(self, pipeline: Pipeline, *, notifications: bool = False, **kwargs: Any) -> None:
        self.pipeline = pipeline
        settings = pipeline.settings
        names = pipeline.topics.names
        #: the fault loop (``collectd-notifications``) rather than the value-list loop (``collectd``)
        self.notifications = notifications
        #: how the logs name this loop, and the suffix of its consumer group
        self.loop_name = "faults" if notifications else "ingest"
        self.group_id = f"{settings.app_id}-{self.loop_name}"
        self.topic = names.notifications if notifications else names.values
        self.max_batch = FAULTS_BATCH if notifications else INGEST_BATCH
        self.exactly_once = pipeline.exactly_once
        #: input partition -> offset after the last record whose outputs the broker acknowledged
        self.handled: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._runner: asyncio.Task[None] | None = None
        self._batch_lock = asyncio.Lock()
        self._last_commit = 0.0
        #: bumped on every revoke: a batch fetched in an older generation is abandoned
        self._generation = 0
        self._joined = False
        super().__init__(**kwargs)

    # -- what the render ticks and the probes ask -------------------------

    def assigned(self) -> list[TopicPartition]:
        """The input partitions this loop owns now."""
        consumer = self._consumer
        if consumer is None:
            return []
        return sorted((tp for tp in consumer.assignment() if tp.topic == self.topic), key=lambda tp: tp.partition)

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        consumer = self._consumer
        if consumer is None or not tps:
            return {}
        return dict(await consumer.end_offsets(list(tps)))

    async def position(self, tp: TopicPartition) -> int | None:
        consumer = self._consumer
        if consumer is None:
            return None
        return int(await consumer.position(tp))

    def is_ready(self) -> bool:
        """Running, and joined its consumer group at least once (an empty assignment counts)."""
        runner = self._runner
        return self.started and not self.should_stop and self._joined and runner is not None and not runner.done()

    def lag(self) -> Iterator[tuple[str, int, int]]:
        """``(topic, partition, records not yet committed)`` of the owned partitions."""
        consumer = self._consumer
        if consumer is None:
            return
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            yield tp.topic, tp.partition, max(0, highwater - self._committed.get(tp, 0))

    # -- lifecycle --------------------------------------------------------

    async def on_start(self) -> None:
        pipeline = self.pipeline
        settings = pipeline.settings
        # Faust created the input topics while agents subscribed to them; now we do.
        await (pipeline.topics.notifications if self.notifications else pipeline.topics.values).maybe_declare()
        await pipeline.topics.ensure_outputs()
        from ves_streams.sink.config import KafkaSecurity

        security = KafkaSecurity.from_settings(settings).client_kwargs()
        servers = bootstrap_servers(settings.broker)
        producer_options: dict[str, Any] = {
            "bootstrap_servers": servers,
            "client_id": self.group_id,
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": LINGER_MS,
            # one record batch per samples partition per ingest batch (see batches.py)
            "max_batch_size": 1024 * 1024,
            "max_request_size": 4 * 1024 * 1024,
        }
        if self.exactly_once:
            # one id per worker process: a restarted worker must not fence a live one
            producer_options["transactional_id"] = f"{self.group_id}-{socket.gethostname()}-{os.getpid()}"
        session_ms = int(settings.session_timeout * 1000)
        try:
            self._producer = AIOKafkaProducer(**producer_options, **security)
            await self._producer.start()
            self._consumer = AIOKafkaConsumer(
                bootstrap_servers=servers,
                group_id=self.group_id,
                client_id=self.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
                max_poll_records=self.max_batch,
                max_partition_fetch_bytes=FETCH_PARTITION_BYTES,
                session_timeout_ms=session_ms,
                heartbeat_interval_ms=max(100, min(3000, session_ms // 4)),
                **security,
            )
            self._consumer.subscribe([self.topic], listener=RebalanceForwarder(self._on_revoked, self._on_assigned))
            await self._consumer.start()
        except BaseException:
            await self._close_io()
            raise
        output = pipeline.topics.names.events if self.notifications else pipeline.topics.names.samples
        log.info("%s started: %s -> %s (group %s%s)", self.loop_name, self.topic, output,
                 self.group_id, ", transactional" if self.exactly_once else "")  # fmt: skip
        self._runner = asyncio.ensure_future(self._run_guarded())

    async def on_stop(self) -> None:
        runner, self._runner = self._runner, None
        await stop_task(runner, log)
        if self._consumer is not None and not self.exactly_once:
            await self._commit(force=True)
        await self._close_io()

    async def _close_io(self) -> None:
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        for name, closer in (("consumer", consumer), ("producer", producer)):
            if closer is None:
                continue
            try:
                await closer.stop()
            except Exception as exc:
                log.warning("%s: stopping the %s failed: %s: %s", self.loop_name, name, type(exc).__name__, exc)

    # -- the loop ---------------------------------------------------------

    async def _run_guarded(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.error("%s loop failed", self.loop_name, exc_info=True)
            await self.crash(exc)
            raise

    async def _run(self) -> None:
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("IngestService loop started without a consumer")
        while True:
            fetched = await consumer.getmany(timeout_ms=_POLL_MS, max_records=self.max_batch)
            generation = self._generation
            messages = [message for records in fetched.values() for message in records]
            if messages:
                async with self._batch_lock:
                    if not await self._handle(messages, generation):
                        continue  # partitions revoked meanwhile: the new owner redoes the batch
            if not self.exactly_once:
                await self._commit()

    async def _handle(self, messages: list[Any], generation: int) -> bool:
        """Produce one batch's outputs until the broker acknowledged them; False if abandoned."""
        pipeline = self.pipeline
        batch = await ingest_batch_yielding(messages, pipeline.samples_partitions(), pipeline)
        for topic, count in batch.counts.items():
            pipeline.metrics.messages_in.labels(topic).inc(count)
        attempt = 0
        while True:
            if generation != self._generation:
                return False
            try:
                await self._produce(batch)
            except (KafkaError, asyncio.TimeoutError) as exc:
                attempt += 1
                delay = min(_RETRY_MAX, _RETRY_INITIAL * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
                log.warning("%s: producing a batch failed (attempt %d, retrying in %.1f s): %s: %s", self.loop_name,
                            attempt, delay, type(exc).__name__, exc)  # fmt: skip
                await asyncio.sleep(delay)
                continue
            break
        if batch.malformed_values:  # the faults' letters were counted when made
            pipeline.metrics.dead_letters.labels(STAGE).inc(batch.malformed_values)
        for tp, next_offset in batch.handled.items():
            if next_offset > self.handled.get(tp, -1):
                self.handled[tp] = next_offset
        return True

    async def _produce(self, batch: IngestBatch) -> None:
        producer = self._producer
        if producer is None:
            raise RuntimeError("IngestService producer used before start")
        names = self.pipeline.topics.names
        if self.exactly_once:
            async with producer.transaction():
                futures = await self._send_all(producer, batch, names)
                await producer.send_offsets_to_transaction(dict(batch.handled), self.group_id)
            await asyncio.gather(*futures)
            for tp, offset in batch.handled.items():
                self._committed[tp] = max(offset, self._committed.get(tp, 0))
            return
        futures = await self._send_all(producer, batch, names)
        await asyncio.gather(*futures)

    async def _send_all(self, producer: AIOKafkaProducer, batch: IngestBatch, names: Any) -> list[Any]:
        futures = []
        for event in batch.events:  # first: a fault waits for no value list
            futures.append(await producer.send(names.events, event.value, event.key, headers=list(event.headers)))
        if self.exactly_once:  # send() adds each partition to the transaction; send_batch() would not
            for record in batch.records:
                futures.append(
                    await producer.send(names.samples, record.value, record.key, partition=record.partition, headers=_VALUES_HEADERS)
                )
        else:
            by_partition: dict[int, list[SamplesRecord]] = {}
            for record in batch.records:
                by_partition.setdefault(record.partition, []).append(record)
            for partition, records in by_partition.items():
                futures += await send_to_partition(
                    producer, names.samples, partition, ((r.key, r.value, _VALUES_HEADERS) for r in records)
                )
        for letter in batch.dead_letters:
            futures.append(await producer.send(names.dlq, letter.value, letter.key, headers=list(letter.headers)))
        return futures

    # -- offsets and the consumer group -----------------------------------

    async def _commit(self, *, force: bool = False) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        due = {tp: offset for tp, offset in self.handled.items() if offset > self._committed.get(tp, -1)}
        if not due or (not force and time.monotonic() - self._last_commit < COMMIT_EVERY):
            return
        owned = consumer.assignment()
        due = {tp: offset for tp, offset in due.items() if tp in owned}
        if not due:
            return
        try:
            await consumer.commit(due)
        except KafkaError as exc:
            log.warning("%s: offset commit failed (committing again later): %s: %s", self.loop_name, type(exc).__name__, exc)
            return
        self._last_commit = time.monotonic()
        self._committed.update(due)

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        # The batch in flight finishes (its outputs acknowledged) before the partitions go,
        # so the new owner starts exactly where this worker's outputs end.
        async with self._batch_lock:
            self._generation += 1
            if not self.exactly_once:
                await self._commit(force=True)
            for tp in revoked:
                self.handled.pop(tp, None)
                self._committed.pop(tp, None)
        if revoked:
            log.info("%s: partitions revoked %s", self.loop_name, sorted(tp.partition for tp in revoked))

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._joined = True
        log.info("%s: partitions assigned %s", self.loop_name, sorted(tp.partition for tp in assigned))
