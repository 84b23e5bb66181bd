"""What a stage's handler hands back to the loop: a typed value, not flags in tuples.

A handler (:class:`StageHandler`) is pure with respect to Kafka: it gets a
batch of input records and returns a :class:`StageOutput` saying what to
produce, in which order, and which input offsets that covers. The loop
(:mod:`ves_streams.runtime.loop`) produces it, waits for the broker's
acknowledgement and only then counts those offsets as handled.

Most handlers turn each batch into output at once (repartitioning, faults).
A handler that holds records across batches (the sink's delivery handler
lingers to fill a request, and finishes records out of Kafka order) tells
the loop how much more it can take (:meth:`StageHandler.room`), when it
wants to run without new input (:meth:`StageHandler.next_deadline`) and,
on a revoke, which offsets it finished (:meth:`StageHandler.revoked`). It
waits through the loop's :class:`LoopControls`, which keep the consumer
group membership alive.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import TopicPartition

from ves_streams.identity import OutputRecord

__all__ = ["InputMessage", "LoopControls", "PartitionedRecord", "StageHandler", "StageOutput"]


class InputMessage(Protocol):
    """What a stage reads of a Kafka record (aiokafka's ``ConsumerRecord`` has it)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class PartitionedRecord(Protocol):
    """A record for an explicit partition of the stage's record topic (the samples topic).

    A record with a ``topic`` attribute that is not None goes to that topic
    instead (the fault stage writes its changelog and forwards misplaced
    notifications in one output).
    """

    @property
    def key(self) -> bytes: ...

    @property
    def value(self) -> bytes: ...

    @property
    def partition(self) -> int: ...

    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


@dataclass(slots=True)
class StageOutput:
    """What one batch of input becomes. Produced in this order: events, records, dead letters.

    Events go first so that a fault waits for no value list; within each
    list the order is kept (per partition, Kafka keeps it too).
    """

    #: for the events topic (``ves-events``)
    events: list[OutputRecord] = field(default_factory=list)
    #: for the stage's record topic, each to its own partition (the samples topic)
    records: list[PartitionedRecord] = field(default_factory=list)
    #: for the dead-letter topic
    dead_letters: list[OutputRecord] = field(default_factory=list)
    #: input partition -> offset after its last record in the batch
    handled: dict[TopicPartition, int] = field(default_factory=dict)
    #: input topic -> records read
    counts: dict[str, int] = field(default_factory=dict)

    def note_input(self, message: InputMessage) -> None:
        """Count ``message`` as part of this batch (its offset is covered once the output is acknowledged)."""
        self.handled[TopicPartition(message.topic, message.partition)] = message.offset + 1
        self.counts[message.topic] = self.counts.get(message.topic, 0) + 1


class LoopControls(Protocol):
    """What a handler may ask of the loop that runs it."""

    async def hold(self, seconds: float) -> None:
        """Wait ``seconds`` with the partitions paused and the consumer polled (group membership kept)."""
        ...

    async def hold_until(self, future: asyncio.Future[Any]) -> None:
        """Wait until ``future`` is done, with the partitions paused and the consumer polled."""
        ...

    def still_current(self) -> Callable[[], bool]:
        """A test that stays True until the partitions of the batch being handled are revoked."""
        ...

    async def committed(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The consumer group's committed offsets of ``tps`` (partitions never committed left out)."""
        ...


class StageHandler:
    """A stage's logic: a batch of input records in, what to produce out; no Kafka I/O.

    Subclasses implement :meth:`handle`; the other methods have the defaults
    of a handler that holds nothing between batches.
    """

    controls: LoopControls | None = None

    def bind(self, controls: LoopControls) -> None:
        """Called by the loop before the first batch."""
        self.controls = controls

    async def handle(self, messages: Sequence[InputMessage]) -> StageOutput:
        """What ``messages`` become. Never raises on data: bad input becomes dead letters."""
        raise NotImplementedError

    def acknowledged(self, output: StageOutput) -> None:
        """Called once the broker acknowledged ``output``, before its ``handled`` offsets are taken.

        A handler that finishes records only once their dead letters are
        acknowledged may extend ``output.handled`` here.
        """

    def room(self, max_batch: int) -> int:
        """How many records the next fetch may take (at least 1)."""
        return max_batch

    async def before_fetch(self) -> None:
        """Awaited before each fetch: a handler that must let other work go first waits here.

        Before the fetch, not after: records fetched and not yet handled would
        put the consumer's position past what :attr:`StageLoop.handled` says.
        """

    def next_deadline(self) -> float | None:
        """``time.monotonic()`` at which :meth:`handle` must run even with no new input; None: never."""
        return None

    async def assigned(self, partitions: set[TopicPartition]) -> None:
        """The loop was assigned ``partitions`` (all it owns now): restore what is kept of them.

        Awaited before any record of them is handled, with the consumer's
        partitions paused and polled (the group membership kept). A handler
        with state restores it here.
        """

    def revoked(self) -> Mapping[TopicPartition, int]:
        """The partitions are going: forget what is held; return the offsets finished and not yet handed back."""
        return {}

    async def stopping(self) -> Mapping[TopicPartition, int]:
        """The loop is stopping (its task ended): finish or drop what is under way; return the offsets finished."""
        return self.revoked()
