"""How large a record a topic takes: its ``max.message.bytes``, asked of the broker.

Ingest sizes its samples records by it (:mod:`ves_streams.stages.repartition`):
a record the broker refuses as too large is refused on every retry, so the
batch it is in would be retried forever and its partitions would stall.
The broker's default (1 MiB + 12 bytes) is below what one collectd value
list may be (collectd's input limit is 1 MiB, and a record adds its key,
headers and batch framing), so the limit is read, not assumed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

__all__ = ["BROKER_DEFAULT_MAX_MESSAGE_BYTES", "max_message_bytes"]

log = logging.getLogger(__name__)

#: Kafka's default ``message.max.bytes`` / ``max.message.bytes``: what a topic takes unless configured.
BROKER_DEFAULT_MAX_MESSAGE_BYTES = 1048588


async def max_message_bytes(
    bootstrap_servers: str, client_kwargs: Callable[[], dict[str, Any]], topic: str, timeout: float = 30.0
) -> int:
    """The topic's ``max.message.bytes``; Kafka's default when the broker does not say (logged).

    ``client_kwargs`` gives the security arguments (:meth:`KafkaConnection.client_kwargs`).
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout * 1000),
                                **client_kwargs())  # fmt: skip
    try:
        await asyncio.wait_for(admin.start(), timeout)
        responses = await asyncio.wait_for(
            admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": None})]),
            timeout,
        )
    except (KafkaError, asyncio.TimeoutError, OSError) as exc:
        log.warning("cannot read max.message.bytes of %s (%s): assuming Kafka's default, %d bytes",
                    topic, type(exc).__name__, BROKER_DEFAULT_MAX_MESSAGE_BYTES)  # fmt: skip
        return BROKER_DEFAULT_MAX_MESSAGE_BYTES
    finally:
        await admin.close()
    found = _config_value(responses, topic, "max.message.bytes")
    try:
        return int(found) if found is not None else BROKER_DEFAULT_MAX_MESSAGE_BYTES
    except ValueError:
        return BROKER_DEFAULT_MAX_MESSAGE_BYTES


def _config_value(responses: Any, topic: str, name: str) -> str | None:
    """``name``'s value for ``topic`` in DescribeConfigs responses (any version's tuple layout)."""
    for response in responses:
        for resource in getattr(response, "resources", ()):
            # (error_code, error_message, resource_type, resource_name, config_entries)
            if len(resource) < 5 or resource[3] != topic or resource[0]:
                continue
            for entry in resource[4]:
                if entry and entry[0] == name:
                    return str(entry[1]) if entry[1] is not None else None
    return None
