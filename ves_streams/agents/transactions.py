"""Exactly-once: send every record in the transaction of the record being processed.

Faust's ``processing_guarantee="exactly_once"`` keeps one transactional
producer per *source* partition (``<app id>-<topic group>-<partition>``) and
commits a partition's consumed offsets in that producer's transaction. But
its ``TransactionManager.send`` picks the producer from the *destination*
partition, which only works when the output is co-partitioned with the input
and owned by the same worker. Our pipeline repartitions by host and writes
to ``ves-events`` and the dead-letter topic, so the destination partition is
usually owned by another worker (``ProducerSendError: No transaction
producer found``) or is unknown to the consumer's metadata (then Faust sends
it *outside* any transaction, silently).

:class:`SourceTransactionManager` routes a send made while processing an
event to the transaction of that event's source partition: the outputs and
the input offset commit or abort together, which is what exactly-once
means (Kafka Streams does the same with one producer per task). Sends made
outside any event keep Faust's behaviour (table changelog records are
buffered and flushed by a background task; they carry the source partition
and resolve to the same transaction).

:class:`ExactlyOnceTransport` is Faust's aiokafka transport with this
manager; ``app.py`` installs it only for ``exactly_once``.
"""

from __future__ import annotations

from typing import Any, Optional

from faust import current_event
from faust.transport.consumer import TransactionManager
from faust.transport.drivers.aiokafka import Transport as AIOKafkaTransport
from faust.types import TP

__all__ = ["ExactlyOnceTransport", "SourceTransactionManager", "transactional_id_for"]


def transactional_id_for(app_id: str, group: int, partition: int) -> str:
    """Faust's transactional id format for a source partition of a topic group."""
    return f"{app_id}-{group}-{partition}"


class SourceTransactionManager(TransactionManager):
    """A transaction manager that sends in the *source* partition's transaction."""

    async def send(
        self,
        topic: str,
        key: Optional[bytes],
        value: Optional[bytes],
        partition: Optional[int],
        timestamp: Optional[float],
        headers: Any,
        *,
        transactional_id: Optional[str] = None,
    ) -> Any:
        event = current_event()
        if event is None:
            return await super().send(topic, key, value, partition, timestamp, headers)
        source: TP = event.message.tp
        group = self.app.assignor.group_for_topic(source.topic)
        tid = transactional_id_for(self.app.conf.id, group, source.partition)
        p = self.consumer.key_partition(topic, key, partition)
        return await self.producer.send(topic, key, value, p, timestamp, headers, transactional_id=tid)


class ExactlyOnceTransport(AIOKafkaTransport):
    TransactionManager = SourceTransactionManager
