"""Faults: each collectd notification becomes fault events as it arrives.

The notification message is decoded here (either shape; malformed ones are
dead-lettered with their bytes), rendered with the topology's event rules,
and the events go to ``ves-events`` keyed by ``sourceName``. Their eventIds
derive from the notification's content, so a notification processed twice
(at-least-once after a crash) yields the same eventId.

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

import logging
from collections.abc import Sequence
from typing import Protocol

from ves_streams.collectd import MalformedInput, parse_notifications
from ves_streams.runtime.outputs import InputMessage, StageHandler, StageOutput
from ves_streams.stages.events import EventOutputs, StageMetrics, event_outputs
from ves_streams.stages.render import Renderer
from ves_streams.wire import deadletter

__all__ = ["FAULTS_BATCH", "STAGE", "FaultContext", "FaultsHandler", "add_faults", "fault_outputs"]

log = logging.getLogger(__name__)

STAGE = "notifications"
#: Most notifications handled as one batch: small, a fault goes out as soon as it is read.
FAULTS_BATCH = 500


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


class FaultsHandler(StageHandler):
    """The fault stage's handler: notifications in, fault events (and dead letters) out."""

    def __init__(self, context: FaultContext) -> None:
        self.context = context

    async def handle(self, messages: Sequence[InputMessage]) -> StageOutput:
        output = StageOutput()
        for message in messages:
            output.note_input(message)
            add_faults(output, self.context, message)
        for topic, count in output.counts.items():
            self.context.metrics.messages_in.labels(topic).inc(count)
        return output

    def acknowledged(self, output: StageOutput) -> None:
        """Fault events and their dead letters were counted when made."""
