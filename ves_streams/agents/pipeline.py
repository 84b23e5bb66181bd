"""What the agents share: topics, state, renderer, metrics, and how they produce.

One :class:`Pipeline` per app. The agents (``ingest``, ``measurements``,
``faults``) are thin loops over a topic that call the handlers in their
modules with the pipeline; the handlers do the work with plain functions
(``state``, ``identity``, ``deadletter``) and produce through
:meth:`Pipeline.produce`.

No handler raises on bad data: malformed input and render errors become
dead-letter records (:meth:`Pipeline.dead_letter`). Faust acknowledges (and
so skips) a record whose processing raised, so :meth:`Pipeline.guard` turns
any unexpected exception into a dead-letter record too, logged with its
traceback; only a failure to produce that record stops the worker.

**Exactly-once.** Faust keeps one transactional producer per *source*
partition (``<app id>-<topic group>-<partition>``) and commits a partition's
consumed offsets in that producer's transaction, but its own ``send`` picks
the producer from the *destination* partition. That only works when the
output is co-partitioned with the input and owned by the same worker; ours
is repartitioned by host, or goes to ``ves-events`` and the dead-letter
topic (unknown to the consumer's metadata, where Faust silently sends
*outside* any transaction). So :meth:`Pipeline.produce` names the
transaction itself: the one of the record being processed (``source``).
Outputs and the input offset then commit or abort together, as in Kafka
Streams (one producer per task).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from faust import current_event

from ves_streams.wire import deadletter
from ves_streams.agents.commit_gate import CommitGate
from ves_streams.agents.render_priority import RenderPriority
from ves_streams.identity import OutputRecord
from ves_streams.runtime.producing import send_to_partition
from ves_streams.stages.events import MAX_EVENT_BYTES, EventOutputs, event_outputs
from ves_streams.stages.render import Rendered, Renderer
from ves_streams.metrics import Metrics
from ves_streams.runtime import faust_compat
from ves_streams.settings import ProcessingGuarantee
from ves_streams.state import HostIndex, SampleStore, host_partition, local_state_of
from ves_streams.wire.samples import key_partition
from ves_streams.topics import Topics

if TYPE_CHECKING:
    import faust

    from faust.types import TP, Message, TopicT

    from ves_streams.runtime.loop import StageLoop
    from ves_streams.settings import Settings

__all__ = ["MAX_EVENT_BYTES", "Pipeline"]

log = logging.getLogger(__name__)

#: At most this many windows missed by a failed owner are rendered when a
#: partition is taken over (older gaps stay gaps; see measurements.py).
MAX_BACKFILL_WINDOWS = 10
#: Changed hosts' records are queued at least this often, and whenever this many hosts changed.
CHANGELOG_FLUSH_SECONDS = 0.1
CHANGELOG_FLUSH_HOSTS = 2000




class Pipeline:
    """Shared state and producing helpers of one app's agents."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        topics: Topics,
        renderer: Renderer,
        metrics: Metrics,
        table: Any,
    ) -> None:
        self.app = app
        self.settings = settings
        self.topics = topics
        self.renderer = renderer
        self.metrics = metrics
        self.table = table
        self.index = HostIndex()
        # A Faust table: value lists are written to its local store and their
        # changelog records produced in bulk (write_changelog); a plain mapping
        # (unit tests) is written directly.
        # Both are looked up on first use (table.data opens Faust's store).
        self.changelog_topic: str | None = None
        self._faust_table = hasattr(table, "changelog_topic") and hasattr(table, "data")
        # a series holds the windows a tick may still render: the backfill limit and the current one
        self.store = SampleStore(table, self.index, interval=settings.interval, keep=MAX_BACKFILL_WINDOWS + 2)
        self.changelog_failures = 0
        self.max_backfill = MAX_BACKFILL_WINDOWS
        #: when a late value list was last named in the log (measurements.py, at most once a minute)
        self.late_logged_at = -math.inf
        self.exactly_once = settings.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE
        #: with exactly_once, keeps Faust's commits out of a record's processing (commit_gate.py)
        self.gate = CommitGate()
        #: the values stage loop (its own consumer group; set by ``register_processing``)
        self.ingest: StageLoop | None = None
        #: ingest holds its next batch while the boundary's windows render (render_priority.py)
        self.render_priority = RenderPriority()

    # -- partitions ------------------------------------------------------

    def samples_partitions(self) -> int:
        """Partition count of the samples topic (the broker's, once known)."""
        try:
            n = self.app.consumer.topic_partitions(self.topics.names.samples)
        except Exception:  # consumer not started yet
            n = None
        return n or self.settings.partitions

    def partition_of(self, host: str) -> int:
        return host_partition(host, self.samples_partitions())

    def active_samples_partitions(self) -> list[int]:
        """Samples partitions this worker actively owns (not standby replicas)."""
        return faust_compat.active_partitions(self.app, self.topics.names.samples)

    def on_rebalance(self) -> None:
        """Partitions moved: the index is rebuilt from the recovered table before next use."""
        self.index.invalidate()
        self.store.forget()
        self.render_priority.forget()

    def ensure_index(self) -> None:
        if self._faust_table:
            self._faust_table = False
            self.changelog_topic = self.table.changelog_topic.get_topic_name()
            self.store.local = local_state_of(self.table.data)
        if self.index.built:
            return
        partitions = self.active_samples_partitions()
        report = self.index.rebuild(self.table.items(), partitions, self.partition_of)
        self.store.adopt(report)  # an earlier release's per-series records are rewritten per host
        hosts, series = self.index.size()
        self.metrics.hosts.set(hosts)
        self.metrics.series.set(series)
        log.info(
            "host index rebuilt from the table: partitions %s, %d hosts, %d series%s",
            partitions,
            report.hosts,
            report.series,
            f", {report.unreadable} unreadable entries ignored" if report.unreadable else "",
        )

    # -- producing -------------------------------------------------------

    def transactional_id(self, source: TP) -> str:
        """Faust's transactional id of the producer that owns ``source``'s offsets."""
        return faust_compat.transactional_id(self.app, source)

    async def produce(
        self, topic: TopicT, record: OutputRecord, partition: int | None = None, *, source: TP | None = None
    ) -> Awaitable[Any]:
        """Send one record (raw bytes) and return its delivery future.

        ``source`` is the input partition the record derives from (default:
        the record being processed); with ``exactly_once`` the record joins
        that partition's transaction. Records are queued in call order.
        """
        if topic in self.topics.outputs:
            await self.topics.ensure_outputs()
        tid = None
        if self.exactly_once:
            if source is None:
                event = current_event()
                source = event.message.tp if event is not None else None
            if source is not None:
                tid = self.transactional_id(source)
        return await self.app.producer.send(
            topic.get_topic_name(), record.key, record.value, partition, None, record.headers, transactional_id=tid
        )

    async def write_changelog(self, partition: int, changes: Sequence[tuple[bytes, bytes | None]]) -> None:
        """Produce host records (a value None is a tombstone) to the table's changelog partition ``partition``.

        With ``exactly_once`` each record is sent at once, in the transaction
        of the record being processed; otherwise as one record batch through
        the plain producer (outside any transaction), without linger.
        """
        topic = self.changelog_topic
        if topic is None or not changes:
            return
        if self.exactly_once:
            event = current_event()
            tid = self.transactional_id(event.message.tp) if event is not None else None
            send = self.app.producer.send
            for key, value in changes:
                future = await send(topic, key, value, partition, None, None, transactional_id=tid)
                future.add_done_callback(self._changelog_written)
            return
        for future in await self.send_to_partition(topic, partition, [(k, v, []) for k, v in changes]):
            future.add_done_callback(self._changelog_written)

    async def write_state(self, partition: int) -> None:
        """The changed hosts' records of ``partition``: in this record's transaction with ``exactly_once``.

        At-least-once leaves them to :meth:`flush_changelog` (every
        ``CHANGELOG_FLUSH_SECONDS``, at ``CHANGELOG_FLUSH_HOSTS`` changed
        hosts, before a render tick and on rebalance), so that a host whose
        value lists arrive over several samples records gets one record per
        flush, not one per value list. Durability is Faust's own for table
        changes: the changelog is written after the local store, not awaited,
        and a failed write is logged and counted; collectd sends every series
        every interval, so the host's next value list writes it again.
        """
        if self.exactly_once:
            await self.write_changelog(partition, self.store.take_changes(partition))
        elif self.store.pending_hosts() >= CHANGELOG_FLUSH_HOSTS:
            await self.flush_changelog()

    async def flush_changelog(self) -> None:
        """Write the changed hosts' records and queue them to the producer, one batch per partition."""
        for partition in self.store.dirty_partitions():
            await self.write_changelog(partition, self.store.take_changes(partition))

    async def send_to_partition(
        self, topic: str, partition: int, records: Sequence[tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]]]]
    ) -> list[Awaitable[Any]]:
        """Queue ``(key, value, headers)`` records to ``topic[partition]`` outside any transaction, in order.

        As complete record batches through the plain producer
        (:func:`~ves_streams.runtime.producing.send_to_partition`: no linger, one
        future per batch); one by one through the app's producer when there is
        no plain one (a test double).
        """
        producer = self.plain_producer()
        if producer is not None:
            return await send_to_partition(producer, topic, partition, records)
        send = self.app.producer.send
        return [await send(topic, k, v, partition, None, list(h) or None) for k, v, h in records]

    def plain_producer(self) -> Any:
        """The aiokafka producer under Faust's (outside transactions), for batch sends.

        None only when the app's producer is not Faust's (a test double);
        see :func:`~ves_streams.runtime.faust_compat.plain_producer`.
        """
        return faust_compat.plain_producer(self.app)

    def _changelog_written(self, future: Any) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            self.changelog_failures += 1
            log.warning("a state changelog write failed (the series is written again with its next value): %s: %s",
                        type(exc).__name__, exc)  # fmt: skip

    async def dead_letter(self, record: OutputRecord, stage: str, *, source: TP | None = None) -> Awaitable[Any]:
        self.metrics.dead_letters.labels(stage).inc()
        return await self.produce(self.topics.dlq, record, source=source)

    async def publish_events(self, records: Sequence[OutputRecord]) -> list[Awaitable[Any]]:
        """Produce ``records`` to the events topic, one record batch per events partition where it can.

        A window's render makes an event or two per host, all at once. Sent
        one by one through the producer, each cost ~50 us of Python and the
        last of them waited out the producer's linger (20 ms) before it left,
        at every partition's tick. A complete record batch per events
        partition leaves at once. The partition of a record is the one
        ``send`` would pick (Kafka's default partitioner on the key,
        :func:`~ves_streams.wire.samples.key_partition`), so a host's events
        stay in one partition, in order. With ``exactly_once``, for a record
        without a key, and until the producer knows the topic's partitions,
        records go one by one, as before.
        """
        if not records:
            return []
        producer = None if self.exactly_once or self.app is None else self.plain_producer()
        topic = self.topics.names.events if producer is not None else None
        partitions = _partition_count(producer, topic) if topic is not None else 0
        if producer is None or not partitions:
            return [await self.produce(self.topics.events, record) for record in records]
        if self.topics.events in self.topics.outputs:
            await self.topics.ensure_outputs()
        pending: list[Awaitable[Any]] = []
        by_partition: dict[int, list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]] = {}
        for record in records:
            if record.key is None:
                pending.append(await self.produce(self.topics.events, record))
                continue
            by_partition.setdefault(key_partition(record.key, partitions), []).append(
                (record.key, record.value, record.headers)
            )
        for partition, batch in by_partition.items():
            pending += await send_to_partition(producer, topic, partition, batch)
        return pending

    async def publish(
        self,
        rendered: Rendered,
        *,
        stage: str,
        source: deadletter.Source,
        interval_start: float | None = None,
        original: bytes | None = None,
    ) -> list[Awaitable[Any]]:
        """Produce rendered events to the events topic and dead-letter the errors (:meth:`publish_outputs`)."""
        made = self.outputs(rendered, stage=stage, source=source, interval_start=interval_start, original=original)
        return await self.publish_outputs(made)

    async def publish_outputs(self, made: EventOutputs) -> list[Awaitable[Any]]:
        """Dead-letter ``made``'s letters (first: they are rare), then its events (:meth:`publish_events`)."""
        pending: list[Awaitable[Any]] = [await self.produce(self.topics.dlq, letter) for letter in made.dead_letters]
        pending += await self.publish_events(made.events)
        return pending

    def outputs(
        self,
        rendered: Rendered,
        *,
        stage: str,
        source: deadletter.Source,
        interval_start: float | None = None,
        original: bytes | None = None,
    ) -> EventOutputs:
        """The records ``rendered`` becomes (:func:`~ves_streams.stages.events.event_outputs`); no I/O."""
        return event_outputs(
            rendered, ves_version=self.renderer.ves_version, metrics=self.metrics, stage=stage, source=source,
            interval_start=interval_start, original=original,
        )  # fmt: skip

    # -- the agent loop --------------------------------------------------

    async def guard(
        self, stage: str, message: Message, handler: Callable[[Pipeline, Message], Awaitable[None]]
    ) -> None:
        """Run ``handler``; an unexpected exception dead-letters the record instead of skipping it."""
        self.metrics.messages_in.labels(message.topic).inc()
        async with self.gate.processing():  # the dead letter too is part of the record's processing
            try:
                await handler(self, message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._internal_error(stage, message, exc)

    async def _internal_error(self, stage: str, message: Message, exc: Exception) -> None:
        log.error(
            "internal error processing %s[%s]@%s; dead-lettering it",
            message.topic, message.partition, message.offset, exc_info=exc,
        )  # fmt: skip
        source = deadletter.Source(message.topic, message.partition, message.offset)
        record = deadletter.malformed_input(
            message.key, message.value, f"internal error: {type(exc).__name__}: {exc}", stage, source
        )
        try:
            await self.dead_letter(record, stage, source=message.tp)
        except Exception as dlq_exc:  # cannot even dead-letter: stop rather than lose it
            log.critical("cannot produce to the dead-letter topic; stopping the worker", exc_info=True)
            await self.app.crash(dlq_exc)
            raise

    @staticmethod
    async def delivered(pending: Iterable[Awaitable[Any]]) -> None:
        """Wait until every future in ``pending`` is acknowledged by the broker."""
        futures = list(pending)
        if futures:
            await asyncio.gather(*futures)


def _partition_count(producer: Any, topic: str) -> int:
    """How many partitions ``producer``'s metadata knows ``topic`` to have (0: not known yet)."""
    try:
        partitions = producer.client.cluster.partitions_for_topic(topic)
    except AttributeError:  # not an aiokafka producer (a test double)
        return 0
    return len(partitions) if partitions else 0
