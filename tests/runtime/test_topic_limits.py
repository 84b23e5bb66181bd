"""A topic's max.message.bytes, as the broker says it (a real broker)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.plugins.kafka import create_topics_async, new_topic_name
from ves_streams.runtime.topic_limits import BROKER_DEFAULT_MAX_MESSAGE_BYTES, max_message_bytes

pytestmark = pytest.mark.integration


def test_the_limit_is_the_topics_own_or_kafkas_default(kafka: Any) -> None:
    bootstrap = kafka.bootstrap_servers
    plain, large = new_topic_name("limit"), new_topic_name("limit-large")

    async def scenario() -> tuple[int, int]:
        await create_topics_async(bootstrap, [plain], partitions=1)
        await create_topics_async(bootstrap, [large], partitions=1, configs={"max.message.bytes": "2000000"})
        return await max_message_bytes(bootstrap, dict, plain), await max_message_bytes(bootstrap, dict, large)

    assert asyncio.run(scenario()) == (BROKER_DEFAULT_MAX_MESSAGE_BYTES, 2_000_000)
