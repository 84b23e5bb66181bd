"""The sink: a stage loop that moves ``ves-events`` records to the VES collector.

:class:`SinkService` is a :class:`~ves_streams.runtime.loop.StageLoop`
(consumer group ``<app id>-sink``, so delivery scales and lags
independently of the processing stages) whose handler is delivery
(:class:`~ves_streams.sink.handler.DeliveryHandler`). The loop owns the
consumer, the dead-letter producer, commits, rebalances, readiness and lag,
as it does for every stage; the sink adds the HTTP client
(:class:`~ves_streams.sink.client.VesHttpClient`, requests on its own
thread), started before the loop and closed after it.

What it guarantees:

* **At-least-once, never lost.** An offset is committed only when its record
  and every earlier record of its partition were accepted by a collector or
  written to the dead-letter topic (:class:`~ves_streams.sink.offsets.OffsetTracker`).
  A crash or stop redelivers what was in flight.
* **Per-host order within a domain** at the collector (see :mod:`ves_streams.sink.batching`).
* **Pipelined, adaptively.** Several requests are in flight at once, as many
  as the collector's round trips allow (:mod:`ves_streams.sink.concurrency`,
  at most ``VES_STREAMS_SINK_MAX_CONCURRENCY``), faults first.
* **Kafka is the buffer.** Once as many requests wait as may be in flight
  (the collector slow or away, its requests retried) nothing more is
  fetched: the consumer's partitions are paused and polled empty, which
  keeps the group membership alive however long the outage (no
  ``max.poll.interval.ms`` eviction) and holds no more records in memory.
  Memory is bounded by the open-batch budget and the concurrency limit, not
  by the outage's length.
* **Never crashes on data.** Malformed records, oversize events and refused
  events go to the dead-letter topic and delivery continues. Only a bug or
  an unusable Kafka crashes the service (``mode``'s crash, logged).
* **Rebalances** (another sink instance joining or leaving): offsets finished
  so far are committed before the partitions go, and the batch in flight is
  abandoned (the new owner delivers it again from the committed offset).

Run it standalone (``async with SinkService(config): ...``) or with the
Faust app (``faust_compat.add_service(app, service)``, see ``ves_streams.app``).
"""

from __future__ import annotations

import logging
from typing import Any

from ves_streams.runtime.loop import StageLoop, StageSpec
from ves_streams.sink import metrics
from ves_streams.sink.client import VesHttpClient
from ves_streams.sink.concurrency import AdaptiveConcurrency
from ves_streams.sink.config import SinkConfig
from ves_streams.sink.delivery import BatchDelivery
from ves_streams.sink.errors import scrub
from ves_streams.sink.handler import DeliveryHandler

__all__ = ["SinkService"]

logger = logging.getLogger(__name__)


class SinkService(StageLoop):
    """Delivers VES events from Kafka to the collector; see the module docstring.

    ``SinkService(config)`` then ``await start()``/``await stop()``, or
    ``async with``. Keyword arguments ``loop`` and ``beacon`` are mode's.
    """

    handler: DeliveryHandler

    def __init__(self, config: SinkConfig, **kwargs: Any) -> None:
        self.config = config
        self._client: VesHttpClient | None = None
        self._delivery: BatchDelivery | None = None
        self._secrets = config.secrets()
        spec = StageSpec(
            name="VES sink",
            group_id=config.group_id,
            topics=(config.events_topic,),
            events_topic=None,
            dead_letter_topic=config.dlq_topic,
            max_batch=config.batching.max_events,
            session_timeout_ms=config.session_timeout_ms,
            max_poll_interval_ms=config.max_poll_interval_ms,
            auto_offset_reset=config.auto_offset_reset,
            # a refused event is dead-lettered whole, next to its headers
            max_request_size=max(4 * 1024 * 1024, 2 * config.batching.max_bytes),
            linger_ms=0,
        )
        super().__init__(
            spec,
            DeliveryHandler(config.batching, self._batch_delivery, validate=config.validate),
            bootstrap_servers=config.bootstrap_servers,
            client_kwargs=config.kafka_security.client_kwargs,
            prepare=self._start_client,
            on_commit=lambda _stage, ok: metrics.COMMITS.labels(outcome="ok" if ok else "failed").inc(),
            describe=self._scrub,
            **kwargs,
        )

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> SinkService:
        """The sink configured from the project's settings object (see :meth:`SinkConfig.from_settings`)."""
        return cls(SinkConfig.from_settings(settings), **kwargs)

    def in_flight(self) -> int:
        """Records taken from Kafka and not yet finished (bounded by the open-batch budget)."""
        return self.handler.in_flight()

    def _repr_info(self) -> str:
        return f"group={self.config.group_id} topic={self.config.events_topic} collector={self.config.collector.url}"

    # -- lifecycle --------------------------------------------------------

    async def _start_client(self) -> None:
        cfg = self.config
        # one thread per request in flight, and one for the fault beyond the limit (see the handler)
        self._client = VesHttpClient(
            cfg.collector, extra_secrets=cfg.kafka_security.secrets(), max_requests=cfg.concurrency.maximum + 1
        )
        await self._client.start()
        # a retried request waits in its own task; the loop holds (partitions paused and polled) once
        # as many requests wait as may be in flight: Kafka is the buffer, the group is kept
        self._delivery = BatchDelivery(
            cfg.collector, cfg.retry, self._client, concurrency=AdaptiveConcurrency(cfg.concurrency)
        )
        logger.info(
            "VES sink: delivering to %s (backup %s), VES v%s, batching %s",
            cfg.collector.url,
            cfg.collector.backup_url or "none",
            cfg.collector.ves_version,
            "on" if cfg.batching.enabled else "off",
        )
        if cfg.concurrency.maximum > 1:
            logger.info("VES sink: up to %d requests in flight (adaptive, from 1)", cfg.concurrency.maximum)

    async def on_start(self) -> None:
        try:
            await super().on_start()
        except BaseException:
            await self._close_client()
            raise

    async def on_stop(self) -> None:
        """Stop the loop (the batch in flight is abandoned, uncommitted), then close the HTTP client."""
        try:
            await super().on_stop()
        finally:
            await self._close_client()

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            await client.close()
        except Exception as exc:
            logger.warning("VES sink: stopping the HTTP client failed: %s", self._scrub(exc))

    def failing_for(self) -> float:
        """Seconds every request to the collector has failed (0 while it answers, or before start)."""
        delivery = self._delivery
        return 0.0 if delivery is None else delivery.failing_for()

    def held_by_collector(self) -> str | None:
        """Why delivery is held by the collector's configuration (per domain), or None; for ``/ready``."""
        held = {} if self._delivery is None else self._delivery.held()
        if not held:
            return None
        return "; ".join(f"{domain} events held: {why}" for domain, why in sorted(held.items()))

    def _batch_delivery(self) -> BatchDelivery:
        if self._delivery is None:
            raise RuntimeError("SinkService delivery used before start")
        return self._delivery

    def _scrub(self, exc: BaseException) -> str:
        return scrub(f"{type(exc).__name__}: {exc}", self._secrets)
