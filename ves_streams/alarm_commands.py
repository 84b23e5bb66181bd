"""``ves-streams alarms resend``: every active alarm's latest fault event, once more.

For a VES collector (or what consumes it) that lost its alarm list: each
active alarm is sent again as its latest fault event with the same eventId
and startEpochMicrosec and the next sequence, as VES 7.2 numbers an
alarm's events.

How: one instruction record (header ``ves-streams-kind: alarms-resend``) to
every partition of the notifications topic. Each partition's owner meets it
in order with the notifications and re-renders the alarms it holds for that
partition (:meth:`ves_streams.stages.faults.FaultsHandler.handle`), so the
resend is changelogged and exactly-once like any notification, and a
notification after it continues the sequence. Needs Kafka access only, no
worker address; workers without the alarm lifecycle ignore it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from ves_streams.runtime.kafka import KafkaConnection

__all__ = ["register", "request_resend"]

log = logging.getLogger(__name__)


async def request_resend(connection: KafkaConnection, topic: str) -> int:
    """Put a resend instruction in every partition of ``topic``; the number of partitions."""
    from ves_streams.stages.faults import HEADER_KIND, KIND_RESEND

    producer = AIOKafkaProducer(bootstrap_servers=connection.bootstrap_servers, acks="all", enable_idempotence=True,
                                **connection.client_kwargs())  # fmt: skip
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        value = orjson.dumps({"requested": time.time()})
        sent = [await producer.send(topic, value, key=b"alarms-resend", partition=p, headers=[(HEADER_KIND, KIND_RESEND)])
                for p in partitions]  # fmt: skip
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return len(partitions)


def _handle(args: argparse.Namespace) -> int:
    from ves_streams.settings import command_settings

    settings = command_settings("alarms")
    connection = KafkaConnection.from_settings(settings, broker=args.broker)
    topic = args.topic or settings.notifications_topic
    try:
        count = asyncio.run(request_resend(connection, topic))
    except KafkaError as exc:
        print(f"ves-streams alarms: cannot reach Kafka at {connection.bootstrap_servers}: {type(exc).__name__}",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"resend requested in {count} partitions of {topic}: every active alarm's latest fault event goes out again")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("alarms", help="the fault stage's active alarms (see GET /alarms on a worker)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    resend = actions.add_parser("resend", help="re-publish every active alarm's latest fault event (same eventId, next sequence)",
                                description=__doc__.split("\n\n")[1] if __doc__ else None)  # fmt: skip
    resend.add_argument("--broker", default=None,
                        help="Kafka bootstrap (default: VES_STREAMS_BROKER); TLS and SASL from VES_STREAMS_KAFKA_*")
    resend.add_argument("--topic", default=None, help="notifications topic (default: VES_STREAMS_NOTIFICATIONS_TOPIC)")
    resend.set_defaults(handler=_handle)
