"""A worker started before its broker waits and says so (drill 6 runs it against a real cluster)."""

from __future__ import annotations

import asyncio

import pytest

from ves_streams.broker_wait import bootstrap_addresses, bootstrap_servers, wait_for_broker
from ves_streams.dev.kafka import free_ports


def test_bootstrap_addresses_accept_faust_and_plain_forms() -> None:
    assert bootstrap_addresses("kafka://h1:9093;h2:9094") == [("h1", 9093), ("h2", 9094)]
    assert bootstrap_servers("kafka://h1:9093;h2") == "h1:9093,h2:9092"
    assert bootstrap_addresses("h1:1,h2:9092") == [
        ("h1", 1),
        ("h2", 9092),
    ]


def test_an_absent_broker_is_waited_for_with_a_line_naming_it() -> None:
    (port,) = free_ports(1)
    said: list[str] = []

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(wait_for_broker(f"kafka://127.0.0.1:{port}", report=said.append), timeout=2.0)

    asyncio.run(main())
    assert len(said) >= 2, said
    assert all(f"127.0.0.1:{port}" in line and "waiting" in line for line in said)


def test_waiting_ends_when_the_broker_port_opens() -> None:
    (port,) = free_ports(1)
    said: list[str] = []

    async def main() -> float:
        async def open_later() -> asyncio.base_events.Server:
            await asyncio.sleep(1.0)
            return await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)

        opener = asyncio.create_task(open_later())
        waited = await asyncio.wait_for(
            wait_for_broker(f"127.0.0.1:{port}", plaintext=False, max_delay=0.5, report=said.append), timeout=10
        )
        (await opener).close()
        return waited

    waited = asyncio.run(main())
    assert waited >= 0.9
    assert "reachable after" in said[-1]
