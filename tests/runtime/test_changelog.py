"""Reading a changelog partition back (the alarms' restore) against a real broker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from tests.plugins.kafka import create_topics_async, new_topic_name
from ves_streams.runtime.changelog import ChangelogMissing, read_partitions

pytestmark = [pytest.mark.integration, pytest.mark.broker_version]


def test_a_restore_reads_each_partition_to_its_end_in_order_without_aborted_transactions(kafka: Any) -> None:
    bootstrap = kafka.bootstrap_servers
    topic = new_topic_name("changelog")

    async def scenario() -> dict[int, list[tuple[bytes, bytes | None]]]:
        await create_topics_async(bootstrap, [topic], partitions=3)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=new_topic_name("tx"))
        await producer.start()
        try:
            async with producer.transaction():
                for i in range(3):
                    await producer.send(topic, f"v{i}".encode(), key=b"k", partition=0)
                await producer.send(topic, b"w", key=b"k", partition=2)
            await producer.begin_transaction()
            await (await producer.send(topic, b"aborted", key=b"k", partition=0))
            await producer.abort_transaction()
        finally:
            await producer.stop()
        return await read_partitions(bootstrap, dict, topic, [0, 1, 2], timeout=30)

    read = asyncio.run(scenario())
    assert read == {0: [(b"k", b"v0"), (b"k", b"v1"), (b"k", b"v2")], 1: [], 2: [(b"k", b"w")]}


def test_a_changelog_without_the_partition_is_an_error_naming_it(kafka: Any) -> None:
    bootstrap = kafka.bootstrap_servers
    topic = new_topic_name("short-changelog")

    async def scenario() -> None:
        await create_topics_async(bootstrap, [topic], partitions=1)
        await read_partitions(bootstrap, dict, topic, [0, 3], timeout=30)

    with pytest.raises(ChangelogMissing, match=r"no partition \[3\]"):
        asyncio.run(scenario())
