"""A render tick waits for the collectd partitions other workers own, through the ingest group's commits.

Two stage loops share an ingest group on a real broker, one partition each.
The tick's worker ("mine") has handled its own partition; the other
member's handler is held, as a SIGKILLed worker's partition is held until
the group moves it: the tick must wait for it, and go as soon as that
member has handled and committed what the partition held.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from tests.plugins.kafka import create_topics_async
from tests.runtime.test_loop import EchoHandler, Topics, _loop, _produce, _spec, _until
from ves_streams.agents.measurements import wait_for_ingest
from ves_streams.runtime.outputs import InputMessage, StageOutput

pytestmark = [pytest.mark.integration]


class HeldHandler(EchoHandler):
    """:class:`EchoHandler` that handles nothing while ``running`` is clear."""

    def __init__(self) -> None:
        super().__init__()
        self.running = asyncio.Event()
        self.running.set()

    async def handle(self, messages: Sequence[InputMessage]) -> StageOutput:
        await self.running.wait()
        return await super().handle(messages)


def _pipeline(ingest: Any) -> Any:
    """What :func:`wait_for_ingest` reads of a pipeline: its ingest loop, the interval, the app's state."""
    return SimpleNamespace(
        ingest=ingest, settings=SimpleNamespace(interval=1.0), app=SimpleNamespace(should_stop=False, rebalancing=False)
    )


def test_a_tick_waits_for_another_workers_partition_until_that_worker_committed_what_it_held(kafka: Any) -> None:
    bootstrap = kafka.bootstrap_servers
    t = Topics("tick-waits-for-others")

    async def scenario() -> None:
        await create_topics_async(bootstrap, [t.input], partitions=2)
        await create_topics_async(bootstrap, [t.events, t.dlq], partitions=1)
        spec = _spec(t, max_poll_interval_ms=60000)  # the held handler must not cost the other member its place
        held = HeldHandler()
        mine, other = _loop(spec, EchoHandler(), bootstrap), _loop(spec, held, bootstrap)
        await mine.start()
        await other.start()
        try:
            await _until(lambda: len(mine.assigned()) == 1 and len(other.assigned()) == 1, 60, "one partition each")
            (own,), (theirs,) = mine.assigned(), other.assigned()
            await _produce(bootstrap, t.input, [b"a", b"b", b"c", b"d"], partitions=2)
            await _until(lambda: other.committed_offsets().get(theirs) == 2, 30, "the other member's first commit")

            held.running.clear()
            await _produce(bootstrap, t.input, [b"e", b"f", b"g", b"h"], partitions=2)
            await _until(lambda: mine.handled.get(own) == 4, 30, "this worker's own partition handled")

            started = time.monotonic()
            found = await wait_for_ingest(_pipeline(mine), time.time() + 1.5)
            assert found.behind == [theirs] and not found.refused
            assert time.monotonic() - started >= 1.0, "the tick went before the deadline with a partition behind"

            held.running.set()
            started = time.monotonic()
            found = await wait_for_ingest(_pipeline(mine), time.time() + 30)
            assert found.behind == [] and not found.refused
            assert other.committed_offsets().get(theirs) == 4, "the tick went before the other member's commit"
            assert time.monotonic() - started < 10
        finally:
            held.running.set()
            await other.stop()
            await mine.stop()

    asyncio.run(scenario())
