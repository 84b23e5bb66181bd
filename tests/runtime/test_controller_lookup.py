"""A worker starts while one broker of three is down: Faust's controller lookup asks the next broker.

Faust asks only the first broker of its metadata for the controller before
it creates a topic, so a worker (re)started while that broker was down died
at start (the soak's kill-and-restart met a broker restart that way).
:func:`~ves_streams.runtime.faust_compat.ask_every_broker_for_the_controller`
makes it ask each broker in turn; these tests hold the original and the
wrapped lookup against a real 3-node cluster with one node killed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError
from faust.transport.drivers.aiokafka import Transport
from mode import Service

from ves_streams.runtime import faust_compat
from ves_streams.runtime.faust_compat import _OneBrokerClient

pytestmark = [pytest.mark.integration]


def test_the_controller_is_found_through_the_next_broker_when_the_first_is_down(kafka_cluster3: Any) -> None:
    faust_compat.ask_every_broker_for_the_controller()
    faust_compat.ask_every_broker_for_the_controller()  # idempotent: wrapped once
    lookup = Transport._get_controller_node
    original = lookup.__wrapped__
    assert not getattr(original, "_asks_every_broker", False)

    async def scenario() -> None:
        client = AIOKafkaClient(bootstrap_servers=kafka_cluster3.bootstrap_servers, request_timeout_ms=5000)
        await client.bootstrap()
        try:
            brokers = sorted(client.cluster.brokers(), key=lambda b: b.nodeId)
            dead = brokers[0]  # the wrapped lookup asks the lowest node id first
            kafka_cluster3.kill_node(next(i for i in range(3) if kafka_cluster3.node(i).node_id == dead.nodeId))
            owner = Service()
            with pytest.raises(KafkaError):  # what Faust alone does when its first broker is the dead one
                await original(None, owner, _OneBrokerClient(client, dead), timeout=5000)
            controller = await lookup(None, owner, client, timeout=5000)
            assert controller in {b.nodeId for b in brokers[1:]}
        finally:
            await client.close()

    asyncio.run(scenario())
