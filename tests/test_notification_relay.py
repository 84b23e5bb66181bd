"""The relay against a real broker: each host's notifications keyed by host, in the host's partition, in order."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.plugins.kafka import create_topics_async, new_topic_name
from ves_streams.notification_relay import keyed_messages, make_relay_app
from ves_streams.wire.samples import host_partition

PARTITIONS = 4


def flat(host: str, message: str) -> dict[str, Any]:
    return {"host": host, "plugin": "cpu", "plugin_instance": "0", "type": "percent", "type_instance": "user",
            "severity": "FAILURE", "message": message, "time": 1.5}  # fmt: skip


def test_a_body_that_does_not_parse_goes_unkeyed_and_unchanged() -> None:
    assert keyed_messages(b"not json") == [(None, b"not json")]


@pytest.mark.integration
def test_each_hosts_notifications_go_keyed_by_host_to_its_partition_in_order(kafka: Any) -> None:
    bootstrap = kafka.bootstrap_servers
    topic = new_topic_name("relay")
    hosts = [f"relay-host-{i}" for i in range(6)]

    async def scenario() -> list[Any]:
        await create_topics_async(bootstrap, [topic], partitions=PARTITIONS)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            async with TestClient(TestServer(make_relay_app(producer, topic))) as client:
                for round_ in range(3):  # one POST per round holding every host's notification
                    body = orjson.dumps([flat(h, f"{h} round {round_}") for h in hosts])
                    response = await client.post("/collectd", data=body)
                    assert response.status == 200
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
        await consumer.start()
        records: list[Any] = []
        try:
            while len(records) < 3 * len(hosts):
                for batch in (await consumer.getmany(timeout_ms=1000)).values():
                    records += batch
        finally:
            await consumer.stop()
        return records

    records = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert len(records) == 3 * len(hosts)
    for record in records:
        [note] = orjson.loads(record.value)
        assert record.key == note["host"].encode()
        assert record.partition == host_partition(note["host"], PARTITIONS)
    for host in hosts:
        mine = sorted((r for r in records if r.key == host.encode()), key=lambda r: r.offset)
        assert [orjson.loads(r.value)[0]["message"] for r in mine] == [f"{host} round {i}" for i in range(3)]
