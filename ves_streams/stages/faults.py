"""Faults: each collectd notification becomes fault events as it arrives.

The notification message is decoded here (either shape; malformed ones are
dead-lettered with their bytes), rendered with the topology's event rules,
and the events go to ``ves-events`` keyed by ``sourceName``.

**Alarms** (the topology's ``alarm_lifecycle``, on by default for VES 7):
each notification is a step of its alarm (:mod:`ves_streams.stages.alarms`):
the onset, a re-raise or severity change, or the clear, rendered with the
alarm's eventId, onset time and sequence. The table of active alarms is kept
per input partition and written, in the same produce (the same transaction
with ``exactly_once``) as the events, to the changelog topic
``<app id>-alarms-changelog``, partition for partition: each record the
alarm's state after a batch and the input offset that made it. When the
loop is assigned a partition, :meth:`FaultsHandler.assigned` reads the
changelog partition back and keeps only the changes whose input offset the
group has committed; the records after the commit are read again and make
the same changes, so a notification handled twice gets the same eventId and
sequence both times. The table changes only once the broker acknowledged
the batch (:meth:`FaultsHandler.acknowledged`); an abandoned batch leaves
no trace.

**One host's notifications in one partition.** The relay keys each host's
notifications by host (Kafka's default partitioner, as
:func:`~ves_streams.wire.samples.host_partition`). A record from another
producer whose host belongs to another partition (unkeyed, or keyed
otherwise) is not rendered here: its notifications are forwarded, keyed by
host, to their host's partition of the notifications topic, where the
partition's owner applies them in order with the host's others. The
relay's records take no extra hop.

Without the lifecycle every notification is an alarm of its own, with an
eventId derived from its content (the same when handled twice).

**Why this is not a Faust agent.** The notifications run on a stage loop of
their own (:class:`~ves_streams.runtime.loop.StageLoop`, consumer group
``<app id>-faults``, small batches so that a fault never waits behind a
burst of value lists), whose offsets are committed only after the broker
acknowledged the fault events. As a Faust agent, one notification was lost
at a takeover in the worker-kill drill (standby replicas off).
faust-streaming's consumer has such a window: its fetch loop waits for
``wait_first(deliver to the stream, suspend_flow)`` and records the offset
as read either way, so a rebalance can cancel a delivery that is then
skipped. Notifications are rare and each one matters, so they take the path
whose commits we control.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from ves_streams.collectd import MalformedInput, Notification, parse_notifications, split_notifications_by_host
from ves_streams.runtime.outputs import InputMessage, StageHandler, StageOutput
from ves_streams.stages.alarms import (
    REPEAT,
    UNMATCHED_CLEAR,
    AlarmKey,
    AlarmOverlay,
    AlarmState,
    AlarmTable,
    Change,
    Transition,
    decode_change,
    encode_change,
    encode_key,
)
from ves_streams.stages.events import EventOutputs, StageMetrics, event_outputs
from ves_streams.stages.render import Renderer
from ves_streams.wire import deadletter
from ves_streams.wire.samples import host_partition

__all__ = [
    "FAULTS_BATCH",
    "HEADER_KIND",
    "KIND_RESEND",
    "STAGE",
    "AlarmKeeping",
    "FaultContext",
    "FaultsHandler",
    "add_faults",
    "fault_outputs",
    "restore_table",
]

log = logging.getLogger(__name__)

STAGE = "notifications"
#: Most notifications handled as one batch: small, a fault goes out as soon as it is read.
FAULTS_BATCH = 500
#: Backoff between attempts to restore the alarms while the cluster refuses (seconds)
RESTORE_RETRY_INITIAL, RESTORE_RETRY_MAX = 0.5, 10.0
#: A record of the notifications topic with this header is an instruction, not a notification
HEADER_KIND = "ves-streams-kind"
#: ... to re-publish every active alarm of its partition (``ves-streams alarms resend``)
KIND_RESEND = b"alarms-resend"


class FaultContext(Protocol):
    """What rendering a notification needs: the topology's renderer and the metrics."""

    renderer: Renderer
    metrics: StageMetrics


def fault_outputs(context: FaultContext, message: InputMessage) -> EventOutputs:
    """What one notification message becomes: fault events and dead letters. No I/O; never raises on data."""
    source = deadletter.Source(message.topic, message.partition, message.offset)
    raw = message.value
    try:
        if raw is None:
            raise MalformedInput("empty record (no value)")
        notifications = parse_notifications(raw)
    except MalformedInput as exc:
        context.metrics.dead_letters.labels(STAGE).inc()
        return EventOutputs(dead_letters=[deadletter.malformed_input(message.key, raw, exc.reason, STAGE, source)])
    out = EventOutputs()
    ves_version = context.renderer.ves_version
    for notification in notifications:
        rendered = context.renderer.notification(notification)
        made = event_outputs(rendered, ves_version=ves_version, metrics=context.metrics, stage="fault", source=source, original=raw)
        out.events += made.events
        out.dead_letters += made.dead_letters
    return out


def add_faults(output: StageOutput, context: FaultContext, message: InputMessage) -> None:
    """Add what ``message`` becomes to ``output``; a bug in the rule engine dead-letters the notification."""
    try:
        made = fault_outputs(context, message)
    except Exception as exc:  # a bug, not the data's fault: dead-letter the notification, go on
        log.exception("internal error handling %s[%s]@%s", message.topic, message.partition, message.offset)
        context.metrics.dead_letters.labels(STAGE).inc()
        source = deadletter.Source(message.topic, message.partition, message.offset)
        reason = f"internal error: {type(exc).__name__}: {exc}"
        output.dead_letters.append(deadletter.malformed_input(message.key, message.value, reason, STAGE, source))
        return
    output.events += made.events
    output.dead_letters += made.dead_letters


class _Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


@dataclass(frozen=True, slots=True)
class AlarmKeeping:
    """What the fault stage needs to keep alarms: where they are changelogged and how to read them back.

    ``read_changelog`` returns each asked partition's ``(key, value)``
    records in order; ``partition_count`` is the notifications topic's
    number of partitions (0 when not known yet: nothing is forwarded).
    """

    notifications_topic: str
    changelog_topic: str
    read_changelog: Callable[[list[int]], Awaitable[Mapping[int, Sequence[tuple[bytes, bytes | None]]]]]
    partition_count: Callable[[], int]
    unmatched_clears: _Counter


@dataclass(frozen=True, slots=True)
class _Record:
    """A record for an explicit partition (:class:`~ves_streams.runtime.outputs.PartitionedRecord`)."""

    partition: int
    key: bytes
    value: bytes
    #: None: the stage's records topic (the changelog)
    topic: str | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(slots=True)
class _Batch:
    """A batch's pending alarm changes: one overlay per input partition, and which offset changed each alarm."""

    tables: Mapping[int, AlarmTable]
    overlays: dict[int, AlarmOverlay] = field(default_factory=dict)
    sources: dict[tuple[int, AlarmKey], int] = field(default_factory=dict)

    def overlay(self, partition: int) -> AlarmOverlay:
        found = self.overlays.get(partition)
        if found is None:
            # a partition without a table is one no longer owned: its batch is abandoned anyway
            table = self.tables.get(partition)
            found = self.overlays[partition] = (AlarmTable() if table is None else table).overlay()
        return found

    def changelog(self) -> list[_Record]:
        out = []
        for partition, overlay in self.overlays.items():
            for key, state in overlay.changes.items():
                change = Change(key, state, self.sources[(partition, key)])
                out.append(_Record(partition, encode_key(key), encode_change(change)))
        return out

    def note_source(self, message: InputMessage, transition: Transition) -> None:
        """Remember that ``message`` made the alarm's latest change (as soon as it is made: a render may fail)."""
        if transition.kind not in (REPEAT, UNMATCHED_CLEAR):
            self.sources[(message.partition, transition.key)] = message.offset

    def commit(self) -> None:
        for partition, overlay in self.overlays.items():
            if overlay.table is self.tables.get(partition):
                overlay.commit()


class FaultsHandler(StageHandler):
    """The fault stage's handler: notifications in, fault events (and dead letters) out.

    With ``alarms``, each notification is a step of its alarm (see the
    module docstring) and the output also holds the alarm changelog
    records and the forwarded misplaced notifications.
    """

    def __init__(self, context: FaultContext, alarms: AlarmKeeping | None = None) -> None:
        self.context = context
        self.alarms = alarms
        #: input partition -> its active alarms (replaced whole on each assignment)
        self.tables: dict[int, AlarmTable] = {}
        self._pending: tuple[StageOutput, _Batch] | None = None

    async def handle(self, messages: Sequence[InputMessage]) -> StageOutput:
        output = StageOutput()
        batch = _Batch(self.tables) if self.alarms is not None else None
        for message in messages:
            output.note_input(message)
            if batch is None:
                if _kind(message) != KIND_RESEND:  # an instruction for alarms, which are not kept here
                    add_faults(output, self.context, message)
            else:
                self._add_alarm_faults(output, batch, message)
        for topic, count in output.counts.items():
            self.context.metrics.messages_in.labels(topic).inc(count)
        if batch is not None:
            output.records += batch.changelog()
            self._pending = (output, batch)
        return output

    def acknowledged(self, output: StageOutput) -> None:
        """The batch's alarm changes are safe in the changelog: apply them to the tables."""
        pending, self._pending = self._pending, None
        if pending is not None and pending[0] is output:
            pending[1].commit()

    def revoked(self) -> Mapping[TopicPartition, int]:
        """Every partition goes (aiokafka's rebalances are eager): their alarms are restored on assignment."""
        self.tables = {}
        self._pending = None
        return {}

    async def assigned(self, partitions: set[TopicPartition]) -> None:
        """Restore the alarms of ``partitions`` from the changelog, up to the group's committed offsets."""
        alarms = self.alarms
        if alarms is None:
            return
        still_current = self.controls.still_current() if self.controls is not None else (lambda: True)
        tps = sorted((tp for tp in partitions if tp.topic == alarms.notifications_topic), key=lambda tp: tp.partition)
        delay = RESTORE_RETRY_INITIAL
        while True:
            try:
                committed = await self.controls.committed(tps) if self.controls is not None else {}
                records = await alarms.read_changelog([tp.partition for tp in tps])
                break
            except (KafkaError, asyncio.TimeoutError) as exc:  # the cluster is failing over: ask again
                if not still_current():
                    return
                log.warning("faults: restoring the alarms failed (again in %.1f s): %s: %s", delay, type(exc).__name__, exc)
                await asyncio.sleep(delay)
                delay = min(RESTORE_RETRY_MAX, delay * 2)
        tables: dict[int, AlarmTable] = {}
        for tp in tps:
            tables[tp.partition] = restore_table(records.get(tp.partition, ()), committed.get(tp, 0))
        if still_current():
            self.tables = tables
            log.info("faults: alarms restored: %s", ", ".join(f"p{p}: {len(t)}" for p, t in sorted(tables.items())) or "none")

    def active_alarms(self) -> list[AlarmState]:
        """Every active alarm of this worker's partitions (read from any thread: the tables are copied)."""
        return [state for table in list(self.tables.values()) for state in table]

    # -- one message ---------------------------------------------------

    def _add_alarm_faults(self, output: StageOutput, batch: _Batch, message: InputMessage) -> None:
        alarms = self.alarms
        if alarms is None:
            raise RuntimeError("the fault stage keeps no alarms")
        try:
            self._alarm_message(alarms, output, batch, message)
        except Exception as exc:  # a bug, not the data's fault: dead-letter the notification, go on
            log.exception("internal error handling %s[%s]@%s", message.topic, message.partition, message.offset)
            self.context.metrics.dead_letters.labels(STAGE).inc()
            source = deadletter.Source(message.topic, message.partition, message.offset)
            reason = f"internal error: {type(exc).__name__}: {exc}"
            output.dead_letters.append(deadletter.malformed_input(message.key, message.value, reason, STAGE, source))

    def _alarm_message(self, alarms: AlarmKeeping, output: StageOutput, batch: _Batch, message: InputMessage) -> None:
        source = deadletter.Source(message.topic, message.partition, message.offset)
        overlay = batch.overlay(message.partition)
        if _kind(message) == KIND_RESEND:
            for key in overlay.active_keys():
                transition = overlay.resend(key)
                if transition is not None:
                    batch.note_source(message, transition)
                    self._render(output, overlay, message, transition, source)
            return
        raw = message.value
        try:
            if raw is None:
                raise MalformedInput("empty record (no value)")
            notifications = parse_notifications(raw)
            count = alarms.partition_count()
            if count and any(host_partition(n.host, count) != message.partition for n in notifications):
                notifications = _forward_misplaced(alarms, output, raw, message.partition, count)
        except MalformedInput as exc:
            self.context.metrics.dead_letters.labels(STAGE).inc()
            output.dead_letters.append(deadletter.malformed_input(message.key, raw, exc.reason, STAGE, source))
            return
        for notification in notifications:
            transition = overlay.apply(notification)
            batch.note_source(message, transition)
            if transition.kind == UNMATCHED_CLEAR:
                alarms.unmatched_clears.inc()
            self._render(output, overlay, message, transition, source)

    def _render(self, output: StageOutput, overlay: AlarmOverlay, message: InputMessage, transition: Transition,
                source: deadletter.Source) -> None:  # fmt: skip
        context = self.context
        rendered = context.renderer.notification(transition.notification, alarm=transition.phase)
        made = event_outputs(rendered, ves_version=context.renderer.ves_version, metrics=context.metrics, stage="fault",
                             source=source, original=message.value)  # fmt: skip
        output.events += made.events
        output.dead_letters += made.dead_letters
        if transition.after is not None:
            ids = tuple(str(getattr(event, "event_id", "")) for event in rendered.events)
            overlay.note_event_ids(transition.key, tuple(i for i in ids if i))


def _forward_misplaced(alarms: AlarmKeeping, output: StageOutput, raw: bytes, partition: int, count: int) -> list[Notification]:
    """Send the notifications of hosts of other partitions there, keyed by host; return this partition's hosts' ones."""
    staying: list[Notification] = []
    for host, payload in split_notifications_by_host(raw):
        target = host_partition(host, count)
        if target == partition:
            staying += parse_notifications(payload)
        else:
            key = host.encode("utf-8", "surrogatepass")
            output.records.append(_Record(target, key, payload, topic=alarms.notifications_topic))
    return staying


def restore_table(records: Sequence[tuple[bytes, bytes | None]], committed: int) -> AlarmTable:
    """The alarms of one partition from its changelog records, as of input offset ``committed``.

    Changes made by input records at or after ``committed`` are left out:
    those records are read again and make them again (a later change of
    the same alarm is only ever after an earlier one, so skipping one skips
    every later one). A record that is not ours is logged and skipped.
    """
    table = AlarmTable()
    for key, value in records:
        if value is None:
            continue
        try:
            change = decode_change(key, value)
        except MalformedInput as exc:
            log.warning("faults: skipped an alarm changelog record: %s", exc.reason)
            continue
        if change.source_offset < committed:
            table.put(change.key, change.state)
    return table


def _kind(message: InputMessage) -> bytes | None:
    for name, value in getattr(message, "headers", None) or ():
        if name == HEADER_KIND:
            return bytes(value)
    return None
