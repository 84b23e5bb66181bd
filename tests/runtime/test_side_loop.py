"""The side loop: services on an event loop of their own thread, started, stopped and crashed with the worker."""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import Any

import pytest
from mode import Service

from ves_streams.runtime.side_loop import CRASH_POLL, SWITCH_INTERVAL, SideLoop


class Recorder(Service):
    """Records where it ran; optionally fails to start, crashes, or leaves a task behind."""

    def __init__(self, events: list[str], name: str, *, fail_start: bool = False, leave_task: bool = False) -> None:
        self.events = events
        self.label_ = name
        self.fail_start = fail_start
        self.leave_task = leave_task
        self.thread: int | None = None
        self.loop_seen: asyncio.AbstractEventLoop | None = None
        self.orphan_cancelled = threading.Event()
        super().__init__()

    async def on_start(self) -> None:
        self.thread = threading.get_ident()
        self.loop_seen = asyncio.get_running_loop()
        if self.fail_start:
            raise RuntimeError(f"{self.label_} cannot start")
        self.events.append(f"start {self.label_}")
        if self.leave_task:
            asyncio.ensure_future(self._orphan())

    async def _orphan(self) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            self.orphan_cancelled.set()

    async def on_stop(self) -> None:
        assert threading.get_ident() == self.thread, "stopped on another thread than it started on"
        self.events.append(f"stop {self.label_}")

    async def crash_now(self, reason: BaseException) -> None:
        await self.crash(reason)


async def _until_crashed(side: SideLoop, timeout: float = 5.0) -> None:
    """Wait until the side loop's crash watcher has seen the crash (it polls every CRASH_POLL)."""
    for _ in range(int(timeout / CRASH_POLL)):
        if side.crashed:
            return
        await asyncio.sleep(CRASH_POLL / 2)


def test_services_start_on_the_side_thread_in_order_and_stop_in_reverse() -> None:
    async def scenario() -> None:
        events: list[str] = []
        first, second = Recorder(events, "first"), Recorder(events, "second")
        side = SideLoop("test")
        side.add(first)
        side.add(second)
        await side.start()
        thread = side.thread
        assert thread is not None and thread.is_alive()
        assert first.thread == second.thread == thread.ident != threading.get_ident()
        assert first.loop_seen is second.loop_seen is not asyncio.get_running_loop()
        await side.stop()
        assert events == ["start first", "start second", "stop second", "stop first"]
        assert not thread.is_alive()
        assert first.loop_seen is not None and first.loop_seen.is_closed()

    asyncio.run(scenario())


def test_a_service_that_fails_to_start_stops_those_before_it_and_ends_the_thread() -> None:
    async def scenario() -> None:
        events: list[str] = []
        first, broken = Recorder(events, "first"), Recorder(events, "broken", fail_start=True)
        side = SideLoop("test")
        side.add(first)
        side.add(broken)
        with pytest.raises(RuntimeError, match="broken cannot start"):
            await side.start()
        assert events == ["start first", "stop first"]
        assert side.thread is None
        assert first.loop_seen is not None and first.loop_seen.is_closed()

    asyncio.run(scenario())


def test_a_crash_on_the_side_loop_crashes_the_side_loop_on_the_main_loop() -> None:
    async def scenario() -> None:
        events: list[str] = []
        service = Recorder(events, "crashing")
        side = SideLoop("test")
        side.add(service)
        await side.start()
        try:
            assert not side.crashed
            reason = RuntimeError("the stage loop failed")
            await side.submit(service.crash_now(reason))
            await _until_crashed(side)
            assert side.crashed
            assert side.crash_reason is reason
        finally:
            await side.stop()
        assert side.thread is None

    asyncio.run(scenario())


def test_tasks_left_on_the_side_loop_are_cancelled_when_it_stops() -> None:
    async def scenario() -> None:
        service = Recorder([], "leaky", leave_task=True)
        side = SideLoop("test")
        side.add(service)
        await side.start()
        await side.stop()
        assert service.orphan_cancelled.is_set()

    asyncio.run(scenario())


def test_on_main_loop_runs_the_function_on_the_loop_the_side_loop_was_started_from() -> None:
    async def scenario() -> None:
        main = asyncio.get_running_loop()
        seen: list[Any] = []

        async def where() -> str:
            seen.append((asyncio.get_running_loop(), threading.get_ident()))
            return "declared"

        side = SideLoop("test")
        side.add(Recorder([], "idle"))
        await side.start()
        try:
            assert await side.submit(side.on_main_loop(where)()) == "declared"
        finally:
            await side.stop()
        assert seen == [(main, threading.get_ident())]

    asyncio.run(scenario())


def test_services_are_added_before_the_side_loop_starts() -> None:
    async def scenario() -> None:
        side = SideLoop("test")
        side.add(Recorder([], "one"))
        await side.start()
        try:
            with pytest.raises(RuntimeError, match="before it starts"):
                side.add(Recorder([], "late"))
        finally:
            await side.stop()

    asyncio.run(scenario())


def test_the_switch_interval_is_short_while_the_side_loop_runs_and_restored_after() -> None:
    async def scenario() -> None:
        before = sys.getswitchinterval()
        side = SideLoop("test")
        side.add(Recorder([], "one"))
        await side.start()
        try:
            assert sys.getswitchinterval() == pytest.approx(min(before, SWITCH_INTERVAL)) and SWITCH_INTERVAL < 0.005
        finally:
            await side.stop()
        assert sys.getswitchinterval() == pytest.approx(before)

    asyncio.run(scenario())


class SlowStarter(Recorder):
    """Takes a while to start (a stage loop's clients joining their group)."""

    async def on_start(self) -> None:
        await asyncio.sleep(0.3)
        await super().on_start()


def test_a_stop_during_start_up_waits_for_the_service_being_started_and_starts_no_other() -> None:
    async def scenario() -> None:
        events: list[str] = []
        slow, never = SlowStarter(events, "slow"), Recorder(events, "never")
        side = SideLoop("test")
        side.add(slow)
        side.add(never)
        starting = asyncio.ensure_future(side.start())
        await asyncio.sleep(0.1)  # the first service is starting
        await side.stop()
        await starting
        assert events == ["start slow", "stop slow"], "the started one is stopped after its start, the other never starts"
        assert side.thread is None

    asyncio.run(scenario())


def test_the_end_of_the_side_thread_crashes_the_side_loop() -> None:
    async def scenario() -> None:
        side = SideLoop("test")
        side.add(Recorder([], "one"))
        await side.start()
        try:
            loop = side._thread_loop  # noqa: SLF001 - the thread's loop, stopped from outside to kill the thread
            assert loop is not None
            loop.call_soon_threadsafe(loop.stop)
            await _until_crashed(side)
            assert side.crashed and "thread ended" in str(side.crash_reason)
        finally:
            await side.stop()

    asyncio.run(scenario())
