"""A second event loop, on a thread of its own, for the stages that a burst must not delay.

A worker's main event loop carries the interval's CPU-bound work: ingest
parses each burst of value lists (every host's ~70 within a second at the
interval's start), the samples agent writes them to the state table, and at
each boundary every host is rendered. A fault whose stage shared that loop
waited for all of it, step by step: its fetch, its produce, its
acknowledgement, the sink's batch and its POST each waited for the loop's
next turn, and a turn could be a whole parse chunk or a partition's render
(bench, N = 1000: faults p50 30-50 ms, but p99 0.5-2.4 s).

On this loop the same steps wait for the interpreter lock instead, which a
busy thread hands over after ``sys.getswitchinterval()``: each step waits
that long at most, whatever the main loop is doing. While a side loop runs
the interval is :data:`SWITCH_INTERVAL` (0.2 ms, Python's default is 5 ms;
the figures are beside it). Bench, N = 1000, one worker, faults p50/p99:
36/1,053 ms on the main loop, 38/368 ms here at 5 ms, 31/125 ms at 0.2 ms.

It is a thread, not a process: the two loops share one interpreter lock, so
it buys latency, not parallelism, and adds no CPU of its own; the services
on it are the same :class:`~mode.Service` objects, built as before, and bind
to this loop when they start here (mode and aiokafka take the running loop).
What they share with the main thread must be thread-safe: the renderer is
immutable (compiled once), Prometheus metrics lock, readiness and lag only
read.

Guarantees:

* the services start in the order added and stop in reverse, each on this
  loop, while the side loop starts and stops with the worker;
* a service that crashes (its loop's guard calls ``crash``), or the
  thread's end while they run, crashes the side loop on the main loop, and
  so the worker, as it would have on the main loop;
* a stop that comes while the services are starting waits for the one being
  started, and starts no other;
* on stop, whatever a service left running on the thread's loop is
  cancelled and awaited before the loop closes, and the switch interval is
  restored.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from mode import Service, ServiceT

__all__ = ["CRASH_POLL", "SideLoop"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How often the main loop looks for a crashed service on the side loop (seconds).
CRASH_POLL = 0.25
#: The interpreter's switch interval while a side loop runs (seconds; Python's default is 0.005):
#: how long the side loop's thread waits at most for the lock a busy main loop holds, per step.
#: Bench, N = 1000, one worker, the same code: fault p99 425 ms at 5 ms, 282-325 ms at 1 ms, 125 ms
#: at 0.2 ms, CPU per value list unchanged (0.10 ms): the main thread is handed off only when the
#: side thread asks, which is a few times per fault, not per switch interval.
SWITCH_INTERVAL = 0.0002
#: Longest a stop waits for a start still under way (seconds).
START_WAIT = 60.0
#: Longest wait for the thread to end once its loop was told to stop (seconds).
JOIN_TIMEOUT = 10.0


class SideLoop(Service):
    """Runs the services given to :meth:`add` on an event loop of its own thread; see the module docstring."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        self.name = name
        self._services: list[ServiceT] = []
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        #: the loop this service runs on (the worker's), known once it starts
        self._main_loop: asyncio.AbstractEventLoop | None = None
        self._watcher: asyncio.Task[None] | None = None
        #: the interpreter's switch interval before this loop started (restored when it stops)
        self._switch_interval: float | None = None
        #: set once on_start is over (a stop during start-up waits for it)
        self._starting: asyncio.Event | None = None
        super().__init__(**kwargs)

    def add(self, service: ServiceT) -> None:
        """Run ``service`` on this loop (before it starts; ``service`` must not have bound a loop yet)."""
        if self._thread is not None:
            raise RuntimeError(f"side loop {self.name}: services are added before it starts")
        self._services.append(service)

    @property
    def services(self) -> list[ServiceT]:
        """The services on this loop, in start order."""
        return list(self._services)

    @property
    def thread(self) -> threading.Thread | None:
        """The thread the loop runs on, while it runs."""
        return self._thread

    def _repr_info(self) -> str:
        return f"{self.name}: {', '.join(type(s).__name__ for s in self._services)}"

    # -- lifecycle --------------------------------------------------------

    async def on_start(self) -> None:
        self._main_loop = asyncio.get_running_loop()
        self._starting = asyncio.Event()
        try:
            await self._start_services()
        finally:
            self._starting.set()

    async def _start_services(self) -> None:
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch_interval, SWITCH_INTERVAL))
        self._start_thread()
        started: list[ServiceT] = []
        try:
            for service in self._services:
                if self.should_stop:  # the worker is stopping already: on_stop stops what started
                    return
                await self.submit(service.start())
                started.append(service)
        except BaseException:
            for service in reversed(started):
                await self._stop_service(service)
            await self._end_thread()
            raise
        if self.should_stop:
            return
        log.info("side loop %s: running %s on thread %s", self.name,
                 ", ".join(type(s).__name__ for s in self._services), self._thread.name if self._thread else "?")  # fmt: skip
        self._watcher = asyncio.ensure_future(self._watch_for_crashes())

    async def on_stop(self) -> None:
        starting = self._starting
        if starting is not None and not starting.is_set():
            # a stop during start-up: let the service being started finish starting, then stop it
            # (stopped halfway, a stage loop would go on to start its clients after their close)
            try:
                await asyncio.wait_for(starting.wait(), START_WAIT)
            except asyncio.TimeoutError:
                log.warning("side loop %s: still starting after %.0f s; stopping anyway", self.name, START_WAIT)
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            try:
                await watcher
            except (asyncio.CancelledError, Exception):
                pass
        if self._thread_loop is None:
            return
        for service in reversed(self._services):
            await self._stop_service(service)
        await self._end_thread()

    async def submit(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro`` on the side loop and wait for its result from the calling (main) loop."""
        loop = self._thread_loop
        if loop is None or loop.is_closed():
            coro.close()
            raise RuntimeError(f"side loop {self.name} is not running")
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    def on_main_loop(self, fn: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
        """``fn`` as a coroutine function that, awaited on the side loop, runs ``fn()`` on the main loop.

        For what a side-loop service must do with clients of the main loop
        (Faust's producer and admin client declare topics): an aiokafka client
        is bound to the loop it was started on.
        """

        async def on_main() -> T:
            main = self._main_loop
            if main is None or asyncio.get_running_loop() is main:
                return await fn()
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_awaited(fn), main))

        return on_main

    async def _stop_service(self, service: ServiceT) -> None:
        try:
            await self.submit(service.stop())
        except Exception:
            log.warning("side loop %s: stopping %s failed", self.name, type(service).__name__, exc_info=True)

    async def _watch_for_crashes(self) -> None:
        while True:
            thread = self._thread
            if thread is not None and not thread.is_alive():
                reason = RuntimeError(f"side loop {self.name}: its thread ended while its services ran")
                log.error("%s", reason)
                await self.crash(reason)
                return
            for service in self._services:
                if service.crashed:
                    reason = service.crash_reason or RuntimeError(f"{type(service).__name__} crashed")
                    log.error("side loop %s: %s crashed: %s", self.name, type(service).__name__, reason)
                    await self.crash(reason)
                    return
            await asyncio.sleep(CRASH_POLL)

    # -- the thread -------------------------------------------------------

    def _start_thread(self) -> None:
        loop = asyncio.new_event_loop()
        running = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(running.set)
            try:
                loop.run_forever()
            finally:
                _close(loop)

        thread = threading.Thread(target=main, name=f"ves-streams-{self.name}", daemon=True)
        thread.start()
        running.wait()
        self._thread_loop, self._thread = loop, thread

    async def _end_thread(self) -> None:
        loop, thread = self._thread_loop, self._thread
        self._thread_loop = self._thread = None
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
            self._switch_interval = None
        if loop is None or thread is None:
            return
        try:
            loop.call_soon_threadsafe(loop.stop)
        except RuntimeError:  # closed already: the thread has ended on its own
            pass
        await asyncio.get_running_loop().run_in_executor(None, thread.join, JOIN_TIMEOUT)
        if thread.is_alive():
            log.warning("side loop %s: its thread did not end within %.0f s", self.name, JOIN_TIMEOUT)


async def _awaited(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()


def _close(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left on ``loop`` and close it (what ``asyncio.run`` does on its way out)."""
    try:
        tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    except Exception:
        log.warning("closing a side loop failed", exc_info=True)
    finally:
        asyncio.set_event_loop(None)
        loop.close()
