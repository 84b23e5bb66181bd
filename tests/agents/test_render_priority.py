"""Render first: ingest waits for the boundary's renders, never longer than the hold."""

from __future__ import annotations

import asyncio
import time

from ves_streams.agents.render_priority import RenderPriority


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_ingest_waits_until_every_ticked_partition_has_rendered() -> None:
    async def scenario() -> list[str]:
        priority = RenderPriority(max_hold=5.0)
        order: list[str] = []
        priority.ticked([0, 1, 2])

        async def ingest() -> None:
            await priority.wait()
            order.append("ingest")

        async def renders() -> None:
            for partition in (2, 0, 1):
                await asyncio.sleep(0.02)
                order.append(f"render {partition}")
                priority.rendered(partition)

        await asyncio.gather(ingest(), renders())
        assert priority.holds == 1 and 0.04 < priority.held_seconds < 1.0
        return order

    assert run(scenario()) == ["render 2", "render 0", "render 1", "ingest"]


def test_without_ticks_pending_ingest_does_not_wait() -> None:
    async def scenario() -> None:
        priority = RenderPriority()
        started = time.monotonic()
        await priority.wait()
        priority.ticked([])
        await priority.wait()
        assert time.monotonic() - started < 0.05 and priority.holds == 0

    run(scenario())


def test_a_tick_that_never_comes_back_holds_ingest_no_longer_than_the_hold() -> None:
    async def scenario() -> None:
        priority = RenderPriority(max_hold=0.2)
        priority.ticked([0, 1])
        priority.rendered(0)  # partition 1's tick is lost
        started = time.monotonic()
        await priority.wait()
        assert 0.15 < time.monotonic() - started < 1.0
        started = time.monotonic()
        await priority.wait()  # the hold is over: the next batch does not wait again
        assert time.monotonic() - started < 0.05 and priority.pending == frozenset()

    run(scenario())


def test_a_rebalance_releases_ingest_at_once() -> None:
    async def scenario() -> None:
        priority = RenderPriority(max_hold=5.0)
        priority.ticked([3])
        waiting = asyncio.ensure_future(priority.wait())
        await asyncio.sleep(0.02)
        assert not waiting.done()
        priority.forget()
        await asyncio.wait_for(waiting, 1.0)

    run(scenario())


def test_a_new_boundarys_ticks_hold_ingest_again() -> None:
    async def scenario() -> None:
        priority = RenderPriority(max_hold=5.0)
        priority.ticked([0])
        priority.rendered(0)
        await asyncio.wait_for(priority.wait(), 0.5)
        priority.ticked([0])
        waiting = asyncio.ensure_future(priority.wait())
        await asyncio.sleep(0.02)
        assert not waiting.done()
        priority.rendered(0)
        await asyncio.wait_for(waiting, 1.0)

    run(scenario())


def test_ingest_fetches_only_after_the_renders_it_waits_for() -> None:
    from prometheus_client import CollectorRegistry

    from tests.agents.test_handlers import message, values_json
    from ves_streams.metrics import Metrics
    from ves_streams.stages.repartition import ValuesHandler

    import orjson

    async def scenario() -> list[str]:
        priority = RenderPriority(max_hold=5.0)
        order: list[str] = []
        handler = ValuesHandler(lambda: 4, Metrics(CollectorRegistry()), priority.wait)
        priority.ticked([1])

        async def ingest() -> None:
            await handler.before_fetch()  # the stage loop's turn, before it fetches
            order.append("ingest fetches")
            batch = await handler.handle([message(orjson.dumps([values_json("h1", 100.0)]))])
            order.append(f"ingest parsed {batch.value_lists}")

        async def render() -> None:
            await asyncio.sleep(0.05)
            order.append("render 1")
            priority.rendered(1)

        await asyncio.gather(ingest(), render())
        return order

    assert run(scenario()) == ["render 1", "ingest fetches", "ingest parsed 1"]


def test_a_backfill_holds_ingest_until_every_tick_of_every_partition_is_handled() -> None:
    async def scenario() -> None:
        priority = RenderPriority(max_hold=5.0)
        priority.ticked([0, 1], ticks=2)  # the missed window and the latest, to each partition
        for partition in (0, 1, 0):
            priority.rendered(partition)
        assert priority.pending == frozenset({1})
        waiting = asyncio.ensure_future(priority.wait())
        await asyncio.sleep(0.02)
        assert not waiting.done()
        priority.rendered(1)
        await asyncio.wait_for(waiting, 1.0)
        priority.rendered(1)  # a tick nobody counted (another worker's, a replay): nothing to release
        assert priority.pending == frozenset()

    run(scenario())
