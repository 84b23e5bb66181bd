"""Faults: each collectd notification becomes fault events as it arrives.

The notification message is decoded here (either shape; malformed ones are
dead-lettered with their bytes), rendered with the topology's event rules,
and the events go to ``ves-events`` keyed by ``sourceName``. Their eventIds
derive from the notification's content, so a notification processed twice
(at-least-once after a crash) yields the same eventId.

**Why this is not a Faust agent.** The notifications are consumed by a
loop of their own (:class:`~ves_streams.agents.ingest.IngestService` with
``notifications=True``, consumer group ``<app id>-faults``), and their
offsets are committed only after the broker acknowledged the fault events. As a Faust agent, one notification was lost
at a takeover in the worker-kill drill (standby replicas off).
faust-streaming's consumer has such a window: its fetch loop waits for
``wait_first(deliver to the stream, suspend_flow)`` and records the offset
as read either way, so a rebalance can cancel a delivery that is then
skipped. Notifications are rare and each one matters, so they take the path
whose commits we control.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ves_streams.agents import deadletter
from ves_streams.collectd import MalformedInput, parse_notifications
from ves_streams.identity import OutputRecord

if TYPE_CHECKING:
    from ves_streams.agents.ingest import InputMessage
    from ves_streams.agents.pipeline import Pipeline

__all__ = ["STAGE", "fault_outputs"]

STAGE = "notifications"


def fault_outputs(pipeline: Pipeline, message: InputMessage) -> list[tuple[bool, OutputRecord]]:
    """What one notification message becomes, in order: ``(True, fault event)`` for ``ves-events``,
    ``(False, dead letter)`` for the dead-letter topic. No I/O; never raises on data."""
    source = deadletter.Source(message.topic, message.partition, message.offset)
    raw = message.value
    try:
        if raw is None:
            raise MalformedInput("empty record (no value)")
        notifications = parse_notifications(raw)
    except MalformedInput as exc:
        pipeline.metrics.dead_letters.labels(STAGE).inc()
        return [(False, deadletter.malformed_input(message.key, raw, exc.reason, STAGE, source))]
    out: list[tuple[bool, OutputRecord]] = []
    for notification in notifications:
        rendered = pipeline.renderer.notification(notification)
        out += pipeline.outputs(rendered, stage="fault", source=source, original=raw)
    return out
