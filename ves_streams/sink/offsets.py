"""Which offsets are safe to commit: the contiguous finished prefix of each partition.

Batches of different domains finish out of Kafka order, and a record can be
dead-lettered before an earlier one is delivered. Committing the highest
finished offset would then skip records that are still in flight, and a crash
would lose them. :class:`OffsetTracker` only ever offers, per partition, the
offset after the last record such that it and *every record consumed before
it* is finished (delivered or dead-lettered). A restart resumes there;
anything after it is delivered again (at-least-once).

Pure; partitions are any hashable (the service uses aiokafka's
``TopicPartition``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["OffsetTracker"]

P = TypeVar("P", bound=Hashable)


class OffsetTracker(Generic[P]):
    """Per-partition consumed/finished bookkeeping; see the module docstring."""

    def __init__(self) -> None:
        self._pending: dict[P, deque[int]] = {}
        self._finished: dict[P, set[int]] = {}
        self._commit_at: dict[P, int] = {}
        self._committed: dict[P, int] = {}

    def consumed(self, partition: P, offset: int) -> None:
        """Record that ``offset`` was taken from ``partition`` (offsets arrive increasing)."""
        self._pending.setdefault(partition, deque()).append(offset)

    def finished(self, partition: P, offset: int) -> None:
        """Record that ``offset`` was delivered or dead-lettered."""
        pending = self._pending.get(partition)
        if not pending:
            return
        done = self._finished.setdefault(partition, set())
        done.add(offset)
        while pending and pending[0] in done:
            head = pending.popleft()
            done.discard(head)
            self._commit_at[partition] = head + 1

    def committable(self) -> dict[P, int]:
        """Offsets to commit (next offset to read) for partitions that advanced since the last commit."""
        return {p: o for p, o in self._commit_at.items() if self._committed.get(p) != o}

    def committed(self, offsets: dict[P, int]) -> None:
        """Record that ``offsets`` were committed."""
        self._committed.update(offsets)

    def in_flight(self) -> int:
        """Records consumed and not yet finished."""
        return sum(len(q) for q in self._pending.values())
