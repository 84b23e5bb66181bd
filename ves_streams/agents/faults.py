"""Faults: each collectd notification becomes fault events as it arrives.

The notification message is decoded here (either shape; malformed ones are
dead-lettered with their bytes), rendered with the topology's event rules,
and the events are produced to ``ves-events`` keyed by ``sourceName``. Their
eventIds derive from the notification's content, so a notification
processed twice (at-least-once after a crash) yields the same eventId.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ves_streams.agents import deadletter
from ves_streams.agents.pipeline import Pipeline
from ves_streams.collectd import MalformedInput, parse_notifications

if TYPE_CHECKING:
    from faust.types import Message

__all__ = ["handle_notifications", "register"]

STAGE = "notifications"


async def handle_notifications(pipeline: Pipeline, message: Message) -> None:
    source = deadletter.Source(message.topic, message.partition, message.offset)
    try:
        notifications = parse_notifications(message.value)
    except MalformedInput as exc:
        await pipeline.dead_letter(deadletter.malformed_input(message.key, message.value, exc.reason, STAGE, source), STAGE)
        return
    for notification in notifications:
        rendered = pipeline.renderer.notification(notification)
        await pipeline.publish(rendered, stage="fault", source=source, original=message.value)


def register(pipeline: Pipeline) -> Any:
    app = pipeline.app

    @app.agent(pipeline.topics.notifications, name="ves_streams.faults")
    async def faults(stream: Any) -> None:
        async for event in stream.events():
            await pipeline.guard(STAGE, event.message, handle_notifications)

    return faults
