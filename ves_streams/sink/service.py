"""The sink: a ``mode.Service`` that moves ``ves-events`` records to the VES collector.

It owns, from ``on_start`` to ``on_stop``:

* an ``AIOKafkaConsumer`` on the events topic in its own consumer group
  (``<app id>-sink``), so delivery scales and lags independently of the
  processing agents, with auto-commit off;
* an ``AIOKafkaProducer`` for the dead-letter topic;
* a :class:`~ves_streams.sink.client.VesHttpClient` (requests on its own thread).

The loop (one task): fetch at most what the open batches have room for,
parse (:func:`~ves_streams.sink.records.parse_record`), batch
(:class:`~ves_streams.sink.batching.Batcher`), deliver sealed batches one at a
time (:class:`~ves_streams.sink.delivery.BatchDelivery`), dead-letter what is
malformed, oversize or refused, then commit.

What it guarantees:

* **At-least-once, never lost.** An offset is committed only when its record
  and every earlier record of its partition were accepted by a collector or
  written to the dead-letter topic (:class:`~ves_streams.sink.offsets.OffsetTracker`).
  A crash or stop redelivers what was in flight.
* **Per-host order within a domain** at the collector (see :mod:`ves_streams.sink.batching`).
* **Kafka is the buffer.** While a batch is being retried nothing more is
  fetched: the consumer's partitions are paused and polled empty, which keeps
  the group membership alive however long the outage (no
  ``max.poll.interval.ms`` eviction) and holds no records in memory. Memory
  is bounded by the open-batch budget, not by the outage's length.
* **Never crashes on data.** Malformed records, oversize events and refused
  events go to the dead-letter topic and delivery continues. Only a bug or
  an unusable Kafka crashes the service (``mode``'s crash, logged).
* **Rebalances** (another sink instance joining or leaving): offsets finished
  so far are committed in ``on_partitions_revoked``, and the batch in flight
  is abandoned (the new owner delivers it again from the committed offset).

Run it standalone (``async with SinkService(config): ...``) or with the
Faust app (``faust_compat.add_service(app, service)``, see ``ves_streams.app``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError
from mode import Service

from ves_streams.runtime.loop import PausedPoll, RebalanceForwarder, run_guarded, stop_task
from ves_streams.sink import metrics
from ves_streams.sink.batching import Batch, Batcher
from ves_streams.sink.client import VesHttpClient
from ves_streams.sink.config import SinkConfig
from ves_streams.sink.delivery import BatchDelivery, DeliveryReport
from ves_streams.sink.errors import scrub
from ves_streams.sink.offsets import OffsetTracker
from ves_streams.wire.deadletter import HEADER_DLQ_VALUE_DROPPED
from ves_streams.sink.records import DeadLetter, Malformed, SinkRecord, dead_letter, parse_record

__all__ = ["SinkService"]

logger = logging.getLogger(__name__)

#: Longest single poll while nothing is open (keeps stop and rebalances snappy).
_IDLE_POLL_MS = 1000


@dataclass(slots=True)
class _Pipeline:
    """What belongs to one consumer-group generation; replaced whole on rebalance."""

    batcher: Batcher
    tracker: OffsetTracker[TopicPartition] = field(default_factory=OffsetTracker)
    ready: deque[Batch] = field(default_factory=deque)


class SinkService(Service):
    """Delivers VES events from Kafka to the collector; see the module docstring.

    ``SinkService(config)`` then ``await start()``/``await stop()``, or
    ``async with``. Keyword arguments ``loop`` and ``beacon`` are mode's.
    """

    def __init__(self, config: SinkConfig, **kwargs: Any) -> None:
        self.config = config
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._client: VesHttpClient | None = None
        self._delivery: BatchDelivery | None = None
        self._pipeline = _Pipeline(Batcher(config.batching))
        self._runner: asyncio.Task[None] | None = None
        self._poll: PausedPoll | None = None
        self._secrets = config.secrets()
        super().__init__(**kwargs)

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> SinkService:
        """The sink configured from the project's settings object (see :meth:`SinkConfig.from_settings`)."""
        return cls(SinkConfig.from_settings(settings), **kwargs)

    def is_ready(self) -> bool:
        """True while the service runs and its delivery loop is alive (a sink with no partitions is ready too)."""
        runner = self._runner
        return (
            self.started
            and not self.should_stop
            and not self.crashed
            and runner is not None
            and not runner.done()
            and self._consumer is not None
        )

    def _repr_info(self) -> str:
        return f"group={self.config.group_id} topic={self.config.events_topic} collector={self.config.collector.url}"

    # -- lifecycle --------------------------------------------------------

    async def on_start(self) -> None:
        """Start the HTTP client, the DLQ producer and the consumer, then the delivery loop."""
        cfg = self.config
        security = cfg.kafka_security.client_kwargs()
        try:
            self._client = VesHttpClient(cfg.collector, extra_secrets=cfg.kafka_security.secrets())
            await self._client.start()
            self._delivery = BatchDelivery(cfg.collector, cfg.retry, self._client, wait=self._hold)
            self._producer = AIOKafkaProducer(
                bootstrap_servers=cfg.bootstrap_servers,
                client_id=f"{cfg.group_id}-dlq",
                acks="all",
                enable_idempotence=True,
                max_request_size=max(4 * 1024 * 1024, 2 * cfg.batching.max_bytes),
                **security,
            )
            await self._producer.start()
            self._consumer = AIOKafkaConsumer(**self._consumer_options(security))
            self._poll = PausedPoll(self._consumer, "VES sink", describe=self._scrub)
            self._consumer.subscribe([cfg.events_topic], listener=RebalanceForwarder(self._on_revoked, self._on_assigned))
            await self._consumer.start()
        except BaseException:
            await self._close_io()
            raise
        logger.info(
            "VES sink started: group %s, topic %s -> %s (backup %s), VES v%s, batching %s",
            cfg.group_id,
            cfg.events_topic,
            cfg.collector.url,
            cfg.collector.backup_url or "none",
            cfg.collector.ves_version,
            "on" if cfg.batching.enabled else "off",
        )
        self._runner = asyncio.ensure_future(run_guarded(self, self._run, "VES sink delivery", self._scrub))

    def _consumer_options(self, security: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments of the events consumer (a seam for tests that need other timeouts)."""
        cfg = self.config
        return {
            "bootstrap_servers": cfg.bootstrap_servers,
            "group_id": cfg.group_id,
            "client_id": cfg.group_id,
            "enable_auto_commit": False,
            # Events from an aborted exactly-once transaction must never reach
            # the collector; without transactions this reads up to the high
            # watermark as before.
            "isolation_level": "read_committed",
            "auto_offset_reset": cfg.auto_offset_reset,
            "max_poll_records": cfg.batching.max_events,
            "session_timeout_ms": cfg.session_timeout_ms,
            "heartbeat_interval_ms": max(100, min(3000, cfg.session_timeout_ms // 3)),
            "max_poll_interval_ms": cfg.max_poll_interval_ms,
            "rebalance_timeout_ms": max(cfg.max_poll_interval_ms, cfg.session_timeout_ms),
            **security,
        }

    async def on_stop(self) -> None:
        """Stop the loop (the batch in flight is abandoned, uncommitted), then close everything."""
        runner, self._runner = self._runner, None
        await stop_task(runner, logger)
        await self._close_io()

    async def _close_io(self) -> None:
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        client, self._client = self._client, None
        for name, closer in (
            ("consumer", consumer.stop if consumer else None),
            ("DLQ producer", producer.stop if producer else None),
            ("HTTP client", client.close if client else None),
        ):
            if closer is None:
                continue
            try:
                await closer()
            except Exception as exc:
                logger.warning("VES sink: stopping the %s failed: %s", name, self._scrub(exc))

    # -- the loop ---------------------------------------------------------

    async def _run(self) -> None:
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("SinkService loop started without a consumer")
        while True:
            pipeline = self._pipeline
            deadline = pipeline.batcher.next_deadline()
            if deadline is None:
                timeout_ms = _IDLE_POLL_MS
            else:
                timeout_ms = max(0, min(_IDLE_POLL_MS, int((deadline - time.monotonic()) * 1000)))
            fetched = await consumer.getmany(timeout_ms=timeout_ms, max_records=pipeline.batcher.room())
            pipeline = self._pipeline  # a rebalance during getmany replaced it; records are the new generation's
            letters: list[tuple[SinkRecord | Malformed, DeadLetter, str]] = []
            now = time.monotonic()
            for tp, messages in fetched.items():
                for message in messages:
                    pipeline.tracker.consumed(tp, message.offset)
                    parsed = parse_record(
                        topic=message.topic,
                        partition=message.partition,
                        offset=message.offset,
                        key=message.key,
                        value=message.value,
                        headers=message.headers,
                        timestamp_ms=message.timestamp,
                    )
                    if isinstance(parsed, Malformed):
                        logger.warning(
                            "dead-lettering %s/%d/%d: %s", parsed.topic, parsed.partition, parsed.offset, parsed.reason
                        )
                        letters.append((parsed, dead_letter(parsed, reason=parsed.reason), "malformed"))
                        continue
                    sealed, rejected = pipeline.batcher.add(parsed, now)
                    pipeline.ready.extend(sealed)
                    if rejected is not None:
                        logger.warning(
                            "dead-lettering %s/%d/%d (%s event %s): %s",
                            parsed.topic,
                            parsed.partition,
                            parsed.offset,
                            parsed.domain,
                            parsed.event_id,
                            rejected.reason,
                        )
                        letters.append((parsed, dead_letter(parsed, reason=rejected.reason), "oversize"))
            pipeline.ready.extend(pipeline.batcher.due(time.monotonic()))
            if letters and not await self._dead_letter(pipeline, letters):
                continue
            while pipeline.ready and pipeline is self._pipeline:
                batch = pipeline.ready.popleft()
                if not await self._deliver(pipeline, batch):
                    break
            if pipeline is self._pipeline:
                await self._commit(pipeline)

    async def _deliver(self, pipeline: _Pipeline, batch: Batch) -> bool:
        """Deliver one batch and finish its records; False if a rebalance abandoned it."""
        delivery = self._delivery
        if delivery is None:
            raise RuntimeError("SinkService delivery used before start")
        report = await delivery.deliver(batch, wanted=lambda: pipeline is self._pipeline)
        if report is None or pipeline is not self._pipeline:
            return False
        return await self._finish(pipeline, report)

    async def _finish(self, pipeline: _Pipeline, report: DeliveryReport) -> bool:
        for record in report.delivered:
            pipeline.tracker.finished(TopicPartition(record.topic, record.partition), record.offset)
        if not report.refused:
            return True
        letters: list[tuple[SinkRecord | Malformed, DeadLetter, str]] = []
        for refusal in report.refused:
            record = refusal.record
            logger.warning(
                "dead-lettering %s/%d/%d (%s event %s): %s",
                record.topic,
                record.partition,
                record.offset,
                record.domain,
                record.event_id,
                refusal.message,
            )
            letter = dead_letter(
                record,
                reason=refusal.message,
                status=refusal.status,
                body=refusal.body,
                url=refusal.url,
            )
            letters.append((record, letter, refusal.kind))
        return await self._dead_letter(pipeline, letters)

    # -- dead letters -----------------------------------------------------

    async def _dead_letter(
        self, pipeline: _Pipeline, letters: list[tuple[SinkRecord | Malformed, DeadLetter, str]]
    ) -> bool:
        """Write dead letters (retrying Kafka errors), then finish their records; False if abandoned."""
        producer = self._producer
        if producer is None:
            raise RuntimeError("SinkService DLQ producer used before start")
        pending = list(letters)
        attempt = 0
        while pending:
            if pipeline is not self._pipeline:
                return False
            failed: list[tuple[SinkRecord | Malformed, DeadLetter, str]] = []
            futures = []
            for item in pending:
                futures.append((item, await self._send_letter(producer, item[1])))
            for item, future in futures:
                try:
                    if future is not None:
                        await future
                except (MessageSizeTooLargeError, RecordTooLargeError):
                    failed.append((item[0], _without_value(item[1]), item[2]))
                except KafkaError as exc:
                    logger.warning("VES sink: writing a dead letter failed, will retry: %s", self._scrub(exc))
                    failed.append(item)
                else:
                    source, _, kind = item
                    metrics.DEAD_LETTERED.labels(reason=kind).inc()
                    pipeline.tracker.finished(TopicPartition(source.topic, source.partition), source.offset)
            pending = failed
            if pending:
                attempt += 1
                await self._hold(self.config.retry.backoff(attempt, random.random))
        return True

    async def _send_letter(self, producer: AIOKafkaProducer, letter: DeadLetter) -> asyncio.Future[Any] | None:
        future: asyncio.Future[Any]
        try:
            future = await producer.send(
                self.config.dlq_topic, value=letter.value, key=letter.key, headers=list(letter.headers)
            )
        except (MessageSizeTooLargeError, RecordTooLargeError):
            fallback = _without_value(letter)
            future = await producer.send(
                self.config.dlq_topic, value=fallback.value, key=fallback.key, headers=list(fallback.headers)
            )
        return future

    # -- offsets and the consumer group -----------------------------------

    async def _commit(self, pipeline: _Pipeline) -> None:
        consumer = self._consumer
        offsets = pipeline.tracker.committable()
        if consumer is None or not offsets:
            return
        try:
            await consumer.commit(dict(offsets))
        except KafkaError as exc:
            metrics.COMMITS.labels(outcome="failed").inc()
            logger.warning("VES sink: offset commit failed (will commit again after the next batch): %s", self._scrub(exc))
            return
        pipeline.tracker.committed(offsets)
        metrics.COMMITS.labels(outcome="ok").inc()

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        old = self._pipeline
        self._pipeline = _Pipeline(Batcher(self.config.batching))
        if revoked:
            logger.info("VES sink: partitions revoked %s; committing finished offsets", sorted(revoked))
            await self._commit(old)

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        logger.info("VES sink: partitions assigned %s", sorted(assigned))
        if self._poll is not None:
            self._poll.on_assigned(assigned)

    async def _hold(self, seconds: float) -> None:
        """Wait ``seconds`` without fetching: partitions paused, the consumer still polled (:class:`PausedPoll`)."""
        poll = self._poll
        if poll is None or seconds <= 0:
            await asyncio.sleep(max(0.0, seconds))
            return
        await poll.sleep(seconds)

    def _scrub(self, exc: BaseException) -> str:
        return scrub(f"{type(exc).__name__}: {exc}", self._secrets)


def _without_value(letter: DeadLetter) -> DeadLetter:
    """The dead letter without its value, for a record too large for the DLQ topic."""
    headers = letter.headers + ((HEADER_DLQ_VALUE_DROPPED, f"{len(letter.value)} bytes: too large for the DLQ topic".encode()),)
    return DeadLetter(key=letter.key, value=b"", headers=headers)
