"""The processing dataflow, declared in one place.

::

    collectd ──ingest──▶ <app id>-samples (keyed by host) ──measurements──▶ ves-events
                              ▲ ticks (each interval)        (state table)   ▲
    collectd-notifications ──faults──────────────────────────────────────────┘
                 malformed input, render errors ──▶ ves-streams-dlq

:func:`register_processing` creates the state table, the two stage loops
(:class:`~ves_streams.runtime.loop.StageLoop`: value lists repartitioned by
host in the consumer group ``<app id>-ingest``, :mod:`ves_streams.stages.repartition`;
notifications into fault events in ``<app id>-faults``,
:mod:`ves_streams.stages.faults`, on the worker's side loop:
:mod:`ves_streams.runtime.side_loop`) and the Faust agent (:mod:`.measurements`)
on an app and returns their shared :class:`~.pipeline.Pipeline`. It is not called for
``VES_STREAMS_ROLE=sink``: a sink-only worker defines no agent, so it never
joins the processing consumer group.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ves_streams.agents import measurements
from ves_streams.agents.pipeline import Pipeline
from ves_streams.alarm_queries import register_alarm_views
from ves_streams.host_queries import HostDirectory, register_host_views
from ves_streams.metrics import Metrics, Readiness
from ves_streams.runtime import faust_compat
from ves_streams.runtime.loop import StageLoop, StageSpec
from ves_streams.runtime.side_loop import SideLoop
from ves_streams.stages import faults, repartition
from ves_streams.stages.render import Renderer
from ves_streams.topics import STATE_TABLE, Topics

if TYPE_CHECKING:
    import faust

    from ves_streams.settings import Settings

__all__ = ["Pipeline", "register_processing", "stage_loops"]

log = logging.getLogger(__name__)

#: RocksDB options of each state partition's database. The state is small (the latest value list
#: of every series: ~14 MB at 1000 hosts) and rewritten every interval, so Faust's defaults -- 64 MB
#: write buffers, up to 3, and a 2 GB block cache, per partition database -- let a worker's RSS grow
#: by what it wrote for as long as it lived (the soak: ~18 MB a minute at 300 hosts). 1 MB buffers
#: flush often (a partition of 1000 hosts writes ~2 MB an interval) and the block cache serves only
#: the host index's rebuild after a rebalance; reads come from the index, not RocksDB. With 4 MB and
#: 8 MB per partition database, 8 partitions held up to 128 MB of them (bench, N = 1000: peak RSS
#: 259-274 MB before, 239 MB with 1 MB, same run conditions).
STATE_DB_OPTIONS: dict[str, int] = {
    "write_buffer_size": 1 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "block_cache_size": 1 * 1024 * 1024,
}


def register_processing(
    app: faust.App,
    settings: Settings,
    topics: Topics,
    renderer: Renderer,
    metrics: Metrics,
    readiness: Readiness,
    side_loop: SideLoop,
) -> Pipeline:
    """Define the state table and the processing agents on ``app``.

    The faults loop goes on ``side_loop`` (its own thread, see
    :mod:`ves_streams.runtime.side_loop`), so that no fault waits for the main
    loop's bursts; the caller adds the side loop to the app.
    """
    table = app.Table(
        STATE_TABLE,
        key_type=bytes,  # bytes -> Faust's "raw" serializer for keys and values
        value_type=bytes,
        partitions=settings.partitions,
        help="Latest value list of every series (key: [host, plugin, plugin_instance, type, type_instance])",
        options=dict(STATE_DB_OPTIONS),
    )
    pipeline = Pipeline(app, settings, topics, renderer, metrics, table)
    # Ingest and faults are stage loops in consumer groups of their own, not Faust
    # agents (see stages/repartition.py and stages/faults.py for why); the worker
    # starts them after table recovery.
    values_loop, faults_loop = stage_loops(pipeline, side_loop)
    pipeline.ingest = values_loop
    faust_compat.add_service(app, values_loop)
    side_loop.add(faults_loop)
    for loop in (values_loop, faults_loop):
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

    register_host_views(app, HostDirectory(
        index=pipeline.index,
        ensure_index=pipeline.ensure_index,
        active_partitions=pipeline.active_samples_partitions,
        partition_of=pipeline.partition_of,
        owners=lambda: faust_compat.partition_owners(app, table.changelog_topic.get_topic_name()),
        own_url=lambda: faust_compat.own_url(app),
        unavailable=processing_ready,
        token=settings.web_token,
    ))  # fmt: skip

    if isinstance(faults_loop.handler, faults.FaultsHandler) and faults_loop.handler.alarms is not None:
        metrics.active_alarms.set_function(lambda handler=faults_loop.handler: len(handler.active_alarms()))
        register_alarm_views(app, faults_loop.handler.active_alarms, lambda: set(faust_compat.partition_owners(
            app, table.changelog_topic.get_topic_name()).values()), lambda: faust_compat.own_url(app),
            settings.web_token)  # fmt: skip

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


def stage_loops(pipeline: Pipeline, side_loop: SideLoop) -> tuple[StageLoop, StageLoop]:
    """The values loop (collectd -> samples) and the fault loop (notifications -> ves-events).

    Two loops, so that a fault never waits behind a burst of value lists; the
    fault loop is meant for ``side_loop``, and declares its topics with Faust's
    clients on the main loop, where they live.
    """
    from ves_streams.runtime.kafka import KafkaConnection

    settings = pipeline.settings
    names = pipeline.topics.names
    kafka = KafkaConnection.from_settings(settings)
    common: dict[str, Any] = {
        "events_topic": names.events,
        "dead_letter_topic": names.dlq,
        "exactly_once": pipeline.exactly_once,
        "session_timeout_ms": int(settings.session_timeout * 1000),
        "max_poll_interval_ms": int(settings.max_poll_interval * 1000),
    }
    values_spec = StageSpec(
        name="ingest", group_id=f"{settings.app_id}-ingest", topics=(names.values,), records_topic=names.samples,
        max_batch=repartition.INGEST_BATCH, fetch_partition_bytes=repartition.FETCH_PARTITION_BYTES,
        fetch_max_wait_ms=repartition.INGEST_FETCH_MAX_WAIT_MS, commit_every=repartition.INGEST_COMMIT_EVERY, **common,
    )  # fmt: skip
    # no producer linger: the loop sends a batch's events and waits for their acknowledgement, so a
    # linger only delays a fault (20 ms here was 20 ms of its 50 ms budget) and fills nothing
    faults_spec = StageSpec(
        name="faults", group_id=f"{settings.app_id}-faults", topics=(names.notifications,),
        records_topic=names.alarms_changelog if settings.alarms_kept else None,
        max_batch=faults.FAULTS_BATCH, linger_ms=0, **common,
    )  # fmt: skip
    connection: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_kwargs": kafka.client_kwargs,
        "on_retry": lambda stage: pipeline.metrics.stage_retries.labels(stage).inc(),
    }

    values_handler = repartition.ValuesHandler(pipeline.samples_partitions, pipeline.metrics, pipeline.render_priority.wait)

    async def prepare_values() -> None:
        # Faust created the input topics while agents subscribed to them; now we do.
        await pipeline.topics.values.maybe_declare()
        await pipeline.topics.ensure_outputs()
        # no samples record the broker would refuse as too large (stages/repartition.py)
        from ves_streams.runtime.topic_limits import max_message_bytes

        values_handler.max_record_bytes = await max_message_bytes(kafka.bootstrap_servers, kafka.client_kwargs, names.samples)

    async def prepare_faults() -> None:
        await pipeline.topics.notifications.maybe_declare()
        await pipeline.topics.ensure_outputs()

    declare_on_main = side_loop.on_main_loop(prepare_faults)

    async def prepare_faults_and_alarms() -> None:
        await declare_on_main()
        if settings.alarms_kept:  # co-partitioned with the notifications topic as it exists
            from ves_streams.runtime.changelog import ensure_changelog
            from ves_streams.topics import ALARMS_CHANGELOG_CONFIG

            await ensure_changelog(kafka.bootstrap_servers, kafka.client_kwargs, names.alarms_changelog,
                                   like=names.notifications, replication=settings.replication,
                                   configs=ALARMS_CHANGELOG_CONFIG)  # fmt: skip

    values = StageLoop(values_spec, values_handler, prepare=prepare_values, **connection)
    fault_loop = StageLoop(
        faults_spec, faults.FaultsHandler(pipeline, _alarm_keeping(pipeline, kafka, lambda: fault_loop)),
        prepare=prepare_faults_and_alarms, **connection,
    )  # fmt: skip
    return values, fault_loop


def _alarm_keeping(pipeline: Pipeline, kafka: Any, loop: Any) -> faults.AlarmKeeping | None:
    """How the fault stage keeps alarms (stages/alarms.py), or None when the lifecycle is off."""
    if not pipeline.settings.alarms_kept:
        return None
    from ves_streams.runtime.changelog import read_partitions

    names = pipeline.topics.names

    async def read(partitions: list[int]) -> dict[int, list[tuple[bytes, bytes | None]]]:
        return await read_partitions(kafka.bootstrap_servers, kafka.client_kwargs, names.alarms_changelog, partitions)

    return faults.AlarmKeeping(
        notifications_topic=names.notifications,
        changelog_topic=names.alarms_changelog,
        read_changelog=read,
        partition_count=lambda: len(loop().input_partitions()),
        unmatched_clears=pipeline.metrics.unmatched_clears,
    )
