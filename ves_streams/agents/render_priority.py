"""Render first: ingest holds its next batch while the boundary's windows are being rendered.

At every interval boundary each worker renders every host it owns, one
samples partition after another (~0.1 s each at 1000 hosts on this
project's machine). A second later collectd's next round arrives, every
host's value lists at once, and ingest parsed that burst on the same event
loop: the partitions rendered last shared the loop with it and took two to
five times as long, and their hosts' measurements were the late ones
(bench, N = 1000: p99 1.1-1.6 s after the interval, p50 0.6 s).

So from the moment the render ticks are sent until every tick has been
handled, ingest waits before its next fetch. Before the fetch, not before
parsing what it fetched: a render tick reads ingest's consumer position to
tell whether ingest has caught up, and records fetched but held would
count as caught up. Nothing is lost by it: the burst stays in Kafka a
moment longer, and the next window's tick waits for ingest anyway. The hold is bounded (:data:`MAX_HOLD`): a tick
that never comes back (a rebalance, a broker away) does not stop ingest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

__all__ = ["MAX_HOLD", "RenderPriority"]

#: Longest ingest waits for the boundary's renders (seconds).
MAX_HOLD = 2.0


class RenderPriority:
    """Which ticked partitions have not rendered yet, and a wait for them all (bounded)."""

    def __init__(self, max_hold: float = MAX_HOLD) -> None:
        self.max_hold = max_hold
        #: partition -> ticks sent to it and not yet handled (a backfill sends several)
        self._pending: dict[int, int] = {}
        self._until = 0.0
        self._done: asyncio.Event | None = None
        #: times ingest waited, and for how long in all (for tests and metrics)
        self.holds = 0
        self.held_seconds = 0.0

    def ticked(self, partitions: Iterable[int], ticks: int = 1) -> None:
        """``ticks`` render ticks each went to ``partitions``: ingest waits until all are handled (or :attr:`max_hold`)."""
        self._pending = {partition: ticks for partition in partitions} if ticks > 0 else {}
        self._until = time.monotonic() + self.max_hold
        if self._pending:
            self._event().clear()

    def rendered(self, partition: int) -> None:
        """One of ``partition``'s ticks was handled (rendered, found a duplicate, or refused)."""
        left = self._pending.get(partition)
        if left is None:
            return
        if left > 1:
            self._pending[partition] = left - 1
            return
        del self._pending[partition]
        if not self._pending:
            self._event().set()

    def forget(self) -> None:
        """Partitions moved (a rebalance): their ticks may never be handled here."""
        self._pending.clear()
        self._event().set()

    @property
    def pending(self) -> frozenset[int]:
        return frozenset(self._pending)

    async def wait(self) -> None:
        """Return once every ticked partition has rendered, or at the hold's end."""
        if not self._pending:
            return
        left = self._until - time.monotonic()
        if left <= 0:
            self._pending.clear()
            return
        started = time.monotonic()
        try:
            await asyncio.wait_for(self._event().wait(), left)
        except asyncio.TimeoutError:
            self._pending.clear()
        self.holds += 1
        self.held_seconds += time.monotonic() - started

    def _event(self) -> asyncio.Event:
        if self._done is None:
            self._done = asyncio.Event()
            self._done.set()
        return self._done
