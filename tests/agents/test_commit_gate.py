"""Exactly-once: Faust's commit waits for the records in flight, and records wait for a running commit."""

from __future__ import annotations

import asyncio
from typing import Any

from ves_streams.agents.commit_gate import CommitGate


class Consumer:
    """Faust's consumer as far as the gate sees it: ``force_commit`` snapshots what was acknowledged."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.acked: list[str] = []

    async def force_commit(self, *args: Any, **kwargs: Any) -> bool:
        self.log.append(f"commit {sorted(self.acked)}")
        await asyncio.sleep(0.02)  # sending offsets, committing the transaction
        self.log.append("commit done")
        return True


def test_a_commit_waits_for_the_record_being_processed() -> None:
    log: list[str] = []
    consumer = Consumer(log)
    gate = CommitGate()
    gate.install(consumer)

    async def record(name: str) -> None:
        async with gate.processing():
            log.append(f"produce {name}")
            await asyncio.sleep(0.05)  # e.g. waiting for the broker's acks
        consumer.acked.append(name)  # Faust acks as the handler returns

    async def scenario() -> None:
        processing = asyncio.create_task(record("a"))
        await asyncio.sleep(0.01)  # "a" has produced, not yet acknowledged
        assert gate.in_flight == 1
        await consumer.force_commit()
        await processing

    asyncio.run(scenario())
    # without the gate: "commit []" while a's events sit in the transaction being committed
    assert log == ["produce a", "commit ['a']", "commit done"]


def test_records_wait_while_a_commit_runs() -> None:
    log: list[str] = []
    consumer = Consumer(log)
    gate = CommitGate()
    gate.install(consumer)

    async def record(name: str) -> None:
        async with gate.processing():
            log.append(f"produce {name}")
        consumer.acked.append(name)

    async def scenario() -> None:
        committing = asyncio.create_task(consumer.force_commit())
        await asyncio.sleep(0)  # the commit has started
        await record("b")
        await committing

    asyncio.run(scenario())
    assert log == ["commit []", "commit done", "produce b"]


def test_without_install_processing_does_not_wait() -> None:
    gate = CommitGate()

    async def scenario() -> int:
        async with gate.processing():
            return gate.in_flight

    assert asyncio.run(scenario()) == 0
    assert not gate.installed
