"""Reading a changelog partition back (the alarms' restore) against a real broker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.plugins.kafka import create_topics_async, new_topic_name
from ves_streams.runtime.changelog import ChangelogMissing, ensure_changelog, read_partitions
from ves_streams.topics import ALARMS_CHANGELOG_CONFIG

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


def test_the_changelog_is_created_compacted_with_the_input_topics_partitions_and_a_shorter_one_is_refused(kafka: Any) -> None:
    bootstrap = kafka.bootstrap_servers
    notifications, changelog = new_topic_name("notes"), new_topic_name("alarms-changelog")

    async def scenario() -> tuple[int, int, dict[str, str]]:
        await create_topics_async(bootstrap, [notifications], partitions=6)
        made = await ensure_changelog(bootstrap, dict, changelog, like=notifications, replication=1,
                                      configs=ALARMS_CHANGELOG_CONFIG)  # fmt: skip
        again = await ensure_changelog(bootstrap, dict, changelog, like=notifications, replication=1,
                                       configs=ALARMS_CHANGELOG_CONFIG)  # fmt: skip
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            [described] = await admin.describe_topics([changelog])
            assert len(described["partitions"]) == 6
            [config] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, changelog)])
            values = {name: value for name, value, *_ in config.resources[0][4]}
        finally:
            await admin.close()
        return made, again, values

    made, again, values = asyncio.run(scenario())
    assert made == again == 6
    assert values["cleanup.policy"] == "compact" and values["min.compaction.lag.ms"] == str(24 * 3600 * 1000)

    short = new_topic_name("short")

    async def too_few() -> None:
        await create_topics_async(bootstrap, [short], partitions=2)
        await ensure_changelog(bootstrap, dict, short, like=notifications, replication=1, configs=ALARMS_CHANGELOG_CONFIG)

    with pytest.raises(ChangelogMissing, match="has 2 partitions"):
        asyncio.run(too_few())
