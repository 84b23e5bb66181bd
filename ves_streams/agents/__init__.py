"""The processing dataflow, declared in one place.

::

    collectd ──ingest──▶ <app id>-samples (keyed by host) ──measurements──▶ ves-events
                              ▲ ticks (each interval)        (state table)   ▲
    collectd-notifications ──faults──────────────────────────────────────────┘
                 malformed input, render errors ──▶ ves-streams-dlq

:func:`register_processing` creates the state table, the two loops of
:mod:`.ingest` (batched aiokafka loops: value lists in the consumer group
``<app id>-ingest``, notifications into fault events in ``<app id>-faults``,
see :mod:`.faults`) and the Faust agent (:mod:`.measurements`) on an app and
returns their shared :class:`~.pipeline.Pipeline`. It is not called for
``VES_STREAMS_ROLE=sink``: a sink-only worker defines no agent, so it never
joins the processing consumer group.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ves_streams.agents import ingest, measurements
from ves_streams.agents.pipeline import Pipeline
from ves_streams.agents.render import Renderer
from ves_streams.metrics import Metrics, Readiness
from ves_streams.runtime import faust_compat
from ves_streams.topics import STATE_TABLE, Topics

if TYPE_CHECKING:
    import faust

    from ves_streams.settings import Settings

__all__ = ["Pipeline", "register_processing"]

log = logging.getLogger(__name__)


def register_processing(
    app: faust.App,
    settings: Settings,
    topics: Topics,
    renderer: Renderer,
    metrics: Metrics,
    readiness: Readiness,
) -> Pipeline:
    """Define the state table and the processing agents on ``app``."""
    table = app.Table(
        STATE_TABLE,
        key_type=bytes,  # bytes -> Faust's "raw" serializer for keys and values
        value_type=bytes,
        partitions=settings.partitions,
        help="Latest value list of every series (key: [host, plugin, plugin_instance, type, type_instance])",
    )
    pipeline = Pipeline(app, settings, topics, renderer, metrics, table)
    # Ingest is an aiokafka loop in its own consumer group, not a Faust agent
    # (see ingest.py for why); the worker starts it after table recovery.
    service = pipeline.ingest = ingest.IngestService(pipeline)
    # The same loop for notifications, apart, so that faults never queue behind value lists.
    fault_service = ingest.IngestService(pipeline, notifications=True)
    for loop in (service, fault_service):
        faust_compat.add_service(app, loop)
        readiness.add(loop.loop_name, lambda loop=loop: None if loop.is_ready() else f"{loop.loop_name} not running")
        metrics.add_lag_source(loop.lag)
    measurements.register(pipeline)

    state = {"assigned": False}

    @app.on_partitions_revoked.connect
    async def _on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        await pipeline.flush_changelog()  # before the partitions' next owner recovers them
        pipeline.on_rebalance()

    @app.on_partitions_assigned.connect
    async def _on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        state["assigned"] = True
        if pipeline.exactly_once:
            pipeline.gate.install(app.consumer)
        pipeline.on_rebalance()

    def processing_ready() -> str | None:
        if not state["assigned"]:
            return "no partition assignment yet"
        if app.rebalancing:
            return "rebalancing"
        if faust_compat.in_recovery(app):
            return "recovering tables from their changelogs"
        return None

    readiness.add("processing", processing_ready)

    sources = {topics.names.samples}

    def lag() -> Iterator[tuple[str, int, int]]:
        consumer = app.consumer
        committed = faust_compat.committed_offsets(app)
        for tp in consumer.assignment():
            if tp.topic not in sources:
                continue
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            done = committed.get(tp) or 0
            yield tp.topic, tp.partition, max(0, highwater - done)

    metrics.add_lag_source(lag)
    return pipeline
