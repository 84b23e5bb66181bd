"""The relay against a real broker: each host's notifications keyed by host, in the host's partition, in order;
only an authorized POST reaches the topic, and no more than the cap are served at once."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.plugins.kafka import create_topics_async, new_topic_name
from ves_streams.notification_relay import RelayAccess, exposure_error, keyed_messages, make_relay_app
from ves_streams.secret import Secret
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


TOKEN = "relay-t0ken-hunter2"


def test_the_relay_refuses_to_listen_beyond_loopback_without_a_token_or_mutual_tls(tmp_path: Any) -> None:
    open_ = RelayAccess()
    assert exposure_error("127.0.0.1", open_, None, False) is None
    assert exposure_error("localhost", open_, None, False) is None
    assert exposure_error("::1", open_, None, False) is None
    refused = exposure_error("0.0.0.0", open_, None, False)
    assert refused is not None and "VES_STREAMS_RELAY_TOKEN" in refused and "--insecure-no-auth" in refused
    assert exposure_error("10.0.0.5", RelayAccess(token=Secret(TOKEN)), None, False) is None
    assert exposure_error("10.0.0.5", open_, tmp_path / "ca.pem", False) is None
    assert exposure_error("10.0.0.5", open_, None, True) is None


def test_only_the_exact_bearer_token_is_authorized() -> None:
    access = RelayAccess(token=Secret(TOKEN))
    assert access.authorized(f"Bearer {TOKEN}")
    assert not access.authorized(None)
    assert not access.authorized(TOKEN)
    assert not access.authorized(f"Bearer {TOKEN}x")
    assert not access.authorized(f"Basic {TOKEN}")
    assert RelayAccess().authorized(None)


@pytest.mark.integration
def test_a_post_reaches_the_topic_only_with_the_right_token_and_beyond_the_cap_is_a_503(kafka: Any) -> None:
    bootstrap = kafka.bootstrap_servers
    topic = new_topic_name("relay-auth")

    async def scenario() -> tuple[list[int], list[Any]]:
        await create_topics_async(bootstrap, [topic], partitions=PARTITIONS)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        statuses: list[int] = []
        try:
            app = make_relay_app(producer, topic, RelayAccess(token=Secret(TOKEN), max_concurrent=1))
            async with TestClient(TestServer(app)) as client:
                for headers, message in (({}, "no token"), ({"Authorization": "Bearer wrong"}, "wrong token"),
                                         ({"Authorization": f"Bearer {TOKEN}"}, "right token")):  # fmt: skip
                    response = await client.post("/collectd", data=orjson.dumps([flat("auth-host", message)]), headers=headers)
                    statuses.append(response.status)
                    if response.status == 401:
                        assert response.headers["WWW-Authenticate"].startswith("Bearer")
                        assert TOKEN not in await response.text()
                # two at once with a cap of one: the broker is stopped from answering by a body that is slow to arrive
                slow = asyncio.Event()

                async def trickle() -> Any:
                    yield b"["
                    await slow.wait()
                    yield orjson.dumps(flat("auth-host", "slow"))[0:] + b"]"

                first = asyncio.ensure_future(client.post("/collectd", data=trickle(), headers={"Authorization": f"Bearer {TOKEN}"}))
                await asyncio.sleep(0.5)
                second = await client.post("/collectd", data=orjson.dumps([flat("auth-host", "over the cap")]),
                                           headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
                statuses.append(second.status)
                assert second.headers.get("Retry-After") == "1"
                slow.set()
                statuses.append((await first).status)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
        await consumer.start()
        records: list[Any] = []
        try:
            deadline = asyncio.get_running_loop().time() + 10
            while asyncio.get_running_loop().time() < deadline:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records += batch
        finally:
            await consumer.stop()
        return statuses, records

    statuses, records = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert statuses == [401, 401, 200, 503, 200]
    assert sorted(orjson.loads(r.value)[0]["message"] for r in records) == ["right token", "slow"]


def test_the_relay_command_refuses_an_open_listener_naming_why_and_never_echoes_the_token() -> None:
    import os
    import subprocess
    import sys

    from tests.agents.support import PROJECT_DIR

    env = {k: v for k, v in os.environ.items() if not k.startswith("VES_STREAMS_")}
    refused = subprocess.run([sys.executable, "-m", "ves_streams.cli", "relay", "--host", "0.0.0.0", "--port", "1"],
                             env={**env, "PYTHONPATH": str(PROJECT_DIR)}, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert refused.returncode == 2
    assert "ves-streams relay: --host 0.0.0.0: listening beyond loopback without VES_STREAMS_RELAY_TOKEN" in refused.stderr
    half = subprocess.run([sys.executable, "-m", "ves_streams.cli", "relay", "--host", "0.0.0.0", "--port", "1",
                           "--client-ca", "/nonexistent/ca.pem"],
                          env={**env, "PYTHONPATH": str(PROJECT_DIR), "VES_STREAMS_RELAY_TOKEN": TOKEN},
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert half.returncode == 2 and "--client-ca needs them" in half.stderr
    assert TOKEN not in half.stderr + half.stdout
