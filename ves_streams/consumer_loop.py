"""What the project's own aiokafka consumer loops share: ingest and the sink.

Both run one task that fetches, works and commits, beside Faust's consumer
and in a consumer group of their own; both must hear about rebalances and
stop their task cleanly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition

__all__ = ["RebalanceForwarder", "stop_task"]


class RebalanceForwarder(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no type information
    """Forwards aiokafka's rebalance callbacks to a service's methods, as sets of partitions.

    ``revoked`` is awaited before the partitions go (commit what is finished there).
    """

    def __init__(
        self,
        revoked: Callable[[set[TopicPartition]], Awaitable[None]],
        assigned: Callable[[set[TopicPartition]], None],
    ) -> None:
        self._revoked = revoked
        self._assigned = assigned

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._assigned(set(assigned))


async def stop_task(task: asyncio.Task[Any] | None, log: logging.Logger) -> None:
    """Cancel a loop task and wait for it; its own failure was logged by the loop's guard."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception:
        log.debug("stopped loop had failed", exc_info=True)
