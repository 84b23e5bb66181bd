"""The sink's stage handler: ``ves-events`` records in, delivered to the VES collector.

The sink runs on the same :class:`~ves_streams.runtime.loop.StageLoop` as
the processing stages; what is its own is here. :class:`DeliveryHandler`
parses each record (:func:`~ves_streams.sink.records.parse_record`), groups
them into per-domain requests (:class:`~ves_streams.sink.batching.Batcher`),
delivers every sealed request, faults first and each domain in order (:class:`~ves_streams.sink.delivery.BatchDelivery`)
and hands the loop, as a :class:`DeliveryOutput`, the dead letters
(malformed, oversize, refused) and the offsets that are finished.

Unlike a repartitioning handler it holds records between batches (a
request lingers to fill up) and finishes them out of Kafka order (the
domains' requests seal at different times). So:

* its :class:`~ves_streams.sink.offsets.OffsetTracker` offers the loop only
  the contiguous finished prefix of each partition: a record counts as
  finished once the collector accepted it, or once its dead letter was
  acknowledged (:meth:`DeliveryHandler.acknowledged`);
* :meth:`~DeliveryHandler.room` bounds each fetch by the batcher's open
  budget and :meth:`~DeliveryHandler.next_deadline` wakes the loop when a
  request has lingered long enough;
* while a request is retried, the wait goes through the loop's
  :meth:`~ves_streams.runtime.outputs.LoopControls.hold` (partitions paused,
  consumer polled: Kafka is the buffer, the group membership survives), and
  a revoke abandons it (:meth:`~DeliveryHandler.revoked` hands back what was
  accepted so far, then forgets everything else; the partitions' next owner
  delivers it again).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from ves_streams.identity import OutputRecord
from ves_streams.runtime.outputs import InputMessage, StageHandler, StageOutput
from ves_streams.sink import metrics
from ves_streams.sink.batching import Batch, Batcher, BatchLimits
from ves_streams.sink.delivery import BatchDelivery, DeliveryReport
from ves_streams.sink.offsets import OffsetTracker
from ves_streams.sink.records import DeadLetter, Malformed, SinkRecord, dead_letter, parse_record

__all__ = ["PRIORITY_DOMAINS", "DeliveryHandler", "DeliveryOutput"]

logger = logging.getLogger(__name__)

#: Domains whose ready requests go before the others' (:meth:`DeliveryHandler._next_ready`).
PRIORITY_DOMAINS = frozenset({"fault"})


@dataclass(slots=True)
class DeliveryOutput(StageOutput):
    """A :class:`StageOutput` whose dead letters say which record each came from, and why."""

    #: for each dead letter (same order): its source record's partition and offset, and the reason's kind
    letter_sources: list[tuple[TopicPartition, int, str]] = field(default_factory=list)

    def add_letter(self, source: SinkRecord | Malformed, letter: DeadLetter, kind: str) -> None:
        self.dead_letters.append(OutputRecord(key=letter.key, value=letter.value, headers=list(letter.headers)))
        self.letter_sources.append((TopicPartition(source.topic, source.partition), source.offset, kind))


class DeliveryHandler(StageHandler):
    """Batches and delivers ``ves-events`` records; see the module docstring."""

    def __init__(
        self, limits: BatchLimits, delivery: Callable[[], BatchDelivery], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits
        #: the delivery, once the HTTP client is started (the sink starts it with the loop)
        self._delivery = delivery
        self._clock = clock
        self._batcher = Batcher(limits)
        self._tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self._ready: deque[Batch] = deque()

    # -- what the loop asks -----------------------------------------------

    def room(self, max_batch: int) -> int:
        return min(max_batch, self._batcher.room())

    def next_deadline(self) -> float | None:
        if self._ready:
            return self._clock()
        return self._batcher.next_deadline()

    def in_flight(self) -> int:
        """Records taken from Kafka and not yet finished (what the sink holds in memory)."""
        return self._tracker.in_flight()

    async def handle(self, messages: Sequence[InputMessage]) -> DeliveryOutput:
        wanted = self.controls.still_current() if self.controls is not None else (lambda: True)
        tracker = self._tracker
        output = DeliveryOutput()
        now = self._clock()
        for message in messages:
            tracker.consumed(TopicPartition(message.topic, message.partition), message.offset)
            parsed = parse_record(
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                key=message.key,
                value=message.value,
                headers=getattr(message, "headers", ()),
                timestamp_ms=getattr(message, "timestamp", None),
            )
            if isinstance(parsed, Malformed):
                logger.warning("dead-lettering %s/%d/%d: %s", parsed.topic, parsed.partition, parsed.offset, parsed.reason)
                output.add_letter(parsed, dead_letter(parsed, reason=parsed.reason), "malformed")
                continue
            sealed, rejected = self._batcher.add(parsed, now)
            self._ready.extend(sealed)
            if rejected is not None:
                _log_letter(parsed, rejected.reason)
                output.add_letter(parsed, dead_letter(parsed, reason=rejected.reason), "oversize")
        self._ready.extend(self._batcher.due(self._clock()))
        delivery = self._delivery()
        while self._ready and wanted():
            index = self._next_ready()
            report = await delivery.deliver(self._ready[index], wanted=wanted)
            if report is None or not wanted():
                break  # revoked: the new owner delivers it again
            del self._ready[index]
            self._finish(report, output)
        output.handled = tracker.committable()
        return output

    def _next_ready(self) -> int:
        """Which ready request goes next: the oldest fault request, else the oldest request.

        A fault is what an operator acts on, and the requests sealed at an
        interval boundary are mostly measurements (a whole window of every
        host); a fault sealed behind them waited for all of them. Within a
        domain requests keep their order, so each host's events of a domain
        still reach the collector in the order they were produced (across
        domains there is no order to keep: see the README, "Per-host order
        within a domain"); the offset tracker commits only finished prefixes,
        so delivering out of Kafka order moves no commit past a record.
        """
        for index, batch in enumerate(self._ready):
            if batch.domain in PRIORITY_DOMAINS:
                return index
        return 0

    def acknowledged(self, output: StageOutput) -> None:
        """The dead letters are written: their records are finished too."""
        if not isinstance(output, DeliveryOutput) or not output.letter_sources:
            return
        for tp, offset, kind in output.letter_sources:
            metrics.DEAD_LETTERED.labels(reason=kind).inc()
            self._tracker.finished(tp, offset)
        output.handled = self._tracker.committable()

    def revoked(self) -> Mapping[TopicPartition, int]:
        finished = self._tracker.committable()
        self._batcher = Batcher(self.limits)
        self._tracker = OffsetTracker()
        self._ready.clear()
        return finished

    # -- what a delivery report finishes -----------------------------------

    def _finish(self, report: DeliveryReport, output: DeliveryOutput) -> None:
        for record in report.delivered:
            self._tracker.finished(TopicPartition(record.topic, record.partition), record.offset)
        for refusal in report.refused:
            record = refusal.record
            _log_letter(record, refusal.message)
            letter = dead_letter(record, reason=refusal.message, status=refusal.status, body=refusal.body, url=refusal.url)
            output.add_letter(record, letter, refusal.kind)


def _log_letter(record: SinkRecord, reason: str) -> None:
    logger.warning(
        "dead-lettering %s/%d/%d (%s event %s): %s",
        record.topic, record.partition, record.offset, record.domain, record.event_id, reason,
    )  # fmt: skip
