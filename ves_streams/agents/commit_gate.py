"""Exactly-once: a commit never cuts through the processing of a record.

Faust commits on a timer, in its own coroutine. It takes the acknowledged
offsets, then sends them to each source partition's transaction and commits
it. The agents keep running meanwhile, so a record can be half processed at
that moment: its events are already in the open transaction, but its offset
is not yet acknowledged. The commit then makes the events visible without
the offset. A worker killed before the next commit leaves that record to be
processed again, and readers of committed data see its events twice. The
exactly-once drill caught this about once in fifty runs.

:class:`CommitGate` closes the gap. Handlers run inside :meth:`processing`,
and Faust's ``force_commit`` runs behind :meth:`install`'s wrapper. A commit
waits until no record is in flight, and no record starts while a commit is
running. Faust acknowledges a record synchronously as soon as its handler
returns, with no await in between, so every record a commit includes is
whole.

Under at-least-once the gate is never installed and :meth:`processing`
costs one attribute test.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ves_streams.runtime import faust_compat

__all__ = ["CommitGate"]

log = logging.getLogger(__name__)


class CommitGate:
    """Commits and record processing exclude each other; see the module docstring."""

    def __init__(self) -> None:
        self.installed = False
        self._in_flight = 0
        self._idle: asyncio.Event | None = None
        self._committing: asyncio.Future[None] | None = None

    @property
    def in_flight(self) -> int:
        """Records being processed right now."""
        return self._in_flight

    def _idle_event(self) -> asyncio.Event:
        if self._idle is None:
            self._idle = asyncio.Event()
            self._idle.set()
        return self._idle

    @contextlib.asynccontextmanager
    async def processing(self) -> AsyncIterator[None]:
        """Around one record's (or one batch's) handler."""
        if not self.installed:
            yield
            return
        while self._committing is not None:
            await asyncio.shield(self._committing)
        idle = self._idle_event()
        self._in_flight += 1
        idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                idle.set()

    async def committing(self, commit: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        """Run ``commit`` once no record is in flight, holding new records back until it is done."""
        while self._committing is not None:  # one commit at a time through the gate
            await asyncio.shield(self._committing)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._committing = done
        try:
            await self._idle_event().wait()
            return await commit(*args, **kwargs)
        finally:
            self._committing = None
            done.set_result(None)

    def install(self, consumer: Any) -> None:
        """Route ``consumer.force_commit`` (Faust's one entry to committing offsets) through the gate.

        See :func:`~ves_streams.runtime.faust_compat.wrap_force_commit`; a
        consumer without it raises ``FaustCompatError``.
        """
        if self.installed:
            return
        faust_compat.wrap_force_commit(consumer, self.committing)
        self.installed = True
        log.info("exactly_once: offset commits wait for the records in flight")
