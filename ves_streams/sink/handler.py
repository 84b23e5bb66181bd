"""The sink's stage handler: ``ves-events`` records in, delivered to the VES collector.

The sink runs on the same :class:`~ves_streams.runtime.loop.StageLoop` as
the processing stages; what is its own is here. :class:`DeliveryHandler`
parses each record (:func:`~ves_streams.sink.records.parse_record`), groups
them into per-domain requests (:class:`~ves_streams.sink.batching.Batcher`),
starts every sealed request it may (:class:`~ves_streams.sink.delivery.BatchDelivery`,
each in a task of its own) and hands the loop, as a :class:`DeliveryOutput`,
the dead letters (malformed, oversize, refused) and the offsets that are
finished.

**Requests are pipelined.** Several requests are in flight at once, as many
as :class:`~ves_streams.sink.concurrency.AdaptiveConcurrency` allows (it
grows while round trips stay flat, and shrinks on errors and rising
latency), so a collector 100 ms away is not capped at one batch per round
trip. What stays as it was:

* **per-host order within a domain**: a request starts only when no
  earlier request of its domain that is unfinished (in flight, or sealed
  and waiting) carries one of its keys; retried or not, a host's events of
  a domain reach the collector in the order they were produced;
* **faults first**: ready fault requests start before the others, and,
  once the collector has shown it takes more than one request at a time,
  may use one beyond the limit, so a fault sealed at an interval boundary
  does not queue behind the boundary's measurements;
* **bigger batches before more requests**: a batch that has lingered is
  sealed only when a request could start for it; while every permit is in
  use it keeps filling (a slow collector gets fewer, fuller requests, as
  it did with one request at a time), and only full requests waiting for
  a permit let the limit grow;
* **Kafka is the buffer**: when as many sealed requests wait as the limit
  allows in flight, :meth:`~DeliveryHandler.handle` holds through the loop's
  :meth:`~ves_streams.runtime.outputs.LoopControls.hold_until` (partitions
  paused, consumer polled: the group membership survives an outage of any
  length) until a request finishes; what the sink holds is bounded by the
  open-batch budget plus twice the concurrency limit in requests.

It holds records between batches (a request lingers to fill up) and
finishes them out of Kafka order, so:

* its :class:`~ves_streams.sink.offsets.OffsetTracker` offers the loop only
  the contiguous finished prefix of each partition: a record counts as
  finished once the collector accepted it, or once its dead letter was
  acknowledged (:meth:`DeliveryHandler.acknowledged`);
* :meth:`~DeliveryHandler.room` bounds each fetch by the batcher's open
  budget and :meth:`~DeliveryHandler.next_deadline` wakes the loop when a
  request has lingered long enough, or when a request finished (to commit
  it and write its dead letters);
* a revoke abandons what is in flight (:meth:`~DeliveryHandler.revoked`
  hands back what was accepted so far, cancels the rest and forgets
  everything else; the partitions' next owner delivers it again), and a
  stop waits up to :data:`STOP_GRACE` seconds for requests in flight.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from ves_streams.identity import OutputRecord
from ves_streams.runtime.loop import HOLD_AFTER
from ves_streams.runtime.outputs import InputMessage, StageHandler, StageOutput
from ves_streams.sink import metrics
from ves_streams.sink.batching import Batch, Batcher, BatchLimits
from ves_streams.sink.delivery import BatchDelivery, DeliveryReport
from ves_streams.sink.offsets import OffsetTracker
from ves_streams.sink.records import DeadLetter, Malformed, SinkRecord, dead_letter, parse_record
from ves_streams.sink.validation import schema_check

__all__ = ["PRIORITY_DOMAINS", "STOP_GRACE", "DeliveryHandler", "DeliveryOutput"]

logger = logging.getLogger(__name__)

#: Domains whose ready requests go before the others' (:meth:`DeliveryHandler._start_ready`).
PRIORITY_DOMAINS = frozenset({"fault"})
#: How long a stopping sink waits for its requests in flight before abandoning them (seconds).
STOP_GRACE = 5.0


@dataclass(slots=True)
class DeliveryOutput(StageOutput):
    """A :class:`StageOutput` whose dead letters say which record each came from, and why."""

    #: for each dead letter (same order): its source record's partition and offset, and the reason's kind
    letter_sources: list[tuple[TopicPartition, int, str]] = field(default_factory=list)

    def add_letter(self, source: SinkRecord | Malformed, letter: DeadLetter, kind: str) -> None:
        self.dead_letters.append(OutputRecord(key=letter.key, value=letter.value, headers=list(letter.headers)))
        self.letter_sources.append((TopicPartition(source.topic, source.partition), source.offset, kind))


@dataclass(frozen=True, slots=True)
class _Request:
    """A sealed batch and the keys (hosts) it carries: what orders it against its domain's others."""

    batch: Batch
    keys: frozenset[bytes | None]

    @classmethod
    def of(cls, batch: Batch) -> _Request:
        return cls(batch, frozenset(record.key for record in batch.records))


class DeliveryHandler(StageHandler):
    """Batches and delivers ``ves-events`` records; see the module docstring."""

    def __init__(
        self,
        limits: BatchLimits,
        delivery: Callable[[], BatchDelivery],
        *,
        clock: Callable[[], float] = time.monotonic,
        validate: bool = True,
    ) -> None:
        self.limits = limits
        #: check each event against the VES schema of the collector's version before it is sent
        self.validate = validate
        self._check: Callable[[Mapping[str, Any]], str | None] | None = None
        #: the delivery, once the HTTP client is started (the sink starts it with the loop)
        self._delivery = delivery
        self._clock = clock
        self._batcher = Batcher(limits)
        self._tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        #: sealed, not started, in the order they were sealed
        self._ready: deque[_Request] = deque()
        #: requests in flight, and their keys per domain
        self._running: set[asyncio.Task[None]] = set()
        self._keys_in_flight: dict[str, Counter[bytes | None]] = {}
        #: requests finished since the last :meth:`handle` (their refusals become dead letters there)
        self._reports: list[DeliveryReport] = []
        #: set when a request finishes: wakes a :meth:`handle` that holds
        self._wake: asyncio.Future[None] | None = None
        #: bumped by a revoke: a request of an earlier epoch reports nothing
        self._epoch = 0
        #: a request that failed with an exception (a bug): raised by the next :meth:`handle`, which crashes the loop
        self._failure: BaseException | None = None
        #: set while stopping: requests in flight may finish, no new one starts
        self._closing = False

    def _schema_check(self) -> Callable[[Mapping[str, Any]], str | None] | None:
        """The VES schema check of the collector's version (compiled once), or None when validation is off."""
        if not self.validate:
            return None
        if self._check is None:
            self._check = schema_check(self._delivery().collector.ves_version)
        return self._check

    # -- what the loop asks -----------------------------------------------

    def room(self, max_batch: int) -> int:
        return min(max_batch, self._batcher.room())

    def next_deadline(self) -> float | None:
        if self._reports or self._failure is not None:
            return self._clock()
        # a batch with no request to spare keeps filling; a finishing request wakes the loop (its report)
        return self._batcher.next_deadline(self._may_seal)

    def in_flight(self) -> int:
        """Records taken from Kafka and not yet finished (what the sink holds in memory)."""
        return self._tracker.in_flight()

    def requests_in_flight(self) -> int:
        """Requests to the collector under way."""
        return len(self._running)

    async def handle(self, messages: Sequence[InputMessage]) -> DeliveryOutput:
        self._raise_failure()
        wanted = self.controls.still_current() if self.controls is not None else (lambda: True)
        tracker = self._tracker
        output = DeliveryOutput()
        now = self._clock()
        # lanes (a batch per partition) once requests fly together; one batch per domain while one at a time
        self._ready.extend(_Request.of(batch) for batch in self._batcher.use_lanes(self._delivery().concurrency.limit > 1))
        check = self._schema_check()
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
                check=check,
            )
            if isinstance(parsed, Malformed):
                logger.warning("dead-lettering %s/%d/%d: %s", parsed.topic, parsed.partition, parsed.offset, parsed.reason)
                output.add_letter(parsed, dead_letter(parsed, reason=parsed.reason), parsed.kind)
                continue
            sealed, rejected = self._batcher.add(parsed, now)
            self._ready.extend(_Request.of(batch) for batch in sealed)
            if rejected is not None:
                _log_letter(parsed, rejected.reason)
                output.add_letter(parsed, dead_letter(parsed, reason=rejected.reason), "oversize")
        self._seal_due()
        self._start_ready()
        # as many requests wait as may be in flight: let Kafka hold the rest
        while wanted() and len(self._ready) >= max(1, self._delivery().concurrency.limit):
            await self._hold_until_one_finishes()
            self._raise_failure()
        if wanted():
            self._take_reports(output)
        output.handled = self._tracker.committable()
        return output

    async def settled(self) -> None:
        """Wait until no request is in flight (or waiting to start): every sealed request finished."""
        while self._running or self._ready:
            if self._running:
                await asyncio.wait(set(self._running))
            else:
                self._start_ready()
                if not self._running:
                    return

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
        self._epoch += 1
        for task in self._running:
            task.cancel()
        self._running = set()
        self._keys_in_flight = {}
        self._reports = []
        self._batcher = Batcher(self.limits)
        self._tracker = OffsetTracker()
        self._ready.clear()
        self._signal()
        self._publish_gauges()
        return finished

    async def stopping(self) -> Mapping[TopicPartition, int]:
        """Give the requests in flight :data:`STOP_GRACE` seconds to finish (fewer redeliveries), then revoke."""
        self._closing = True
        try:
            if self._running:
                await asyncio.wait(set(self._running), timeout=STOP_GRACE)
            return self.revoked()
        finally:
            self._closing = False

    # -- requests ----------------------------------------------------------

    def _start_ready(self) -> None:
        """Start every ready request that may go now: faults first, each domain in order, within the limit.

        A request waits while an unfinished earlier request of its domain
        (in flight, or ready before it) shares a key with it: that is what
        keeps each host's events of a domain in order. Across domains there
        is no order to keep (see the README, "Per-host order within a
        domain"); the offset tracker commits only finished prefixes, so
        finishing out of Kafka order moves no commit past a record.
        """
        if not self._ready or self._closing:
            return
        concurrency = self._delivery().concurrency
        waiting: dict[str, set[bytes | None]] = {}
        started: set[int] = set()
        for priority in (True, False):
            extra = self._extra_permits(priority)
            for index, request in enumerate(self._ready):
                domain = request.batch.domain
                if (domain in PRIORITY_DOMAINS) != priority:
                    continue
                if not concurrency.available(len(self._running), extra):
                    if any(r.batch.full for r in self._ready):
                        concurrency.starved()
                    break
                blocked = waiting.setdefault(domain, set())
                in_flight = self._keys_in_flight.get(domain)
                if request.keys.isdisjoint(blocked) and (not in_flight or request.keys.isdisjoint(in_flight)):
                    started.add(index)
                    self._start(request)
                else:
                    blocked.update(request.keys)
        if started:
            self._ready = deque(r for i, r in enumerate(self._ready) if i not in started)

    def _seal_due(self) -> None:
        """Seal the lingered batches a request is free for, oldest first; the others keep filling."""
        claimed = 0

        def may_seal(domain: str) -> bool:
            nonlocal claimed
            if self._free_permits(domain) - claimed <= 0:
                return False
            claimed += 1
            return True

        self._ready.extend(_Request.of(batch) for batch in self._batcher.due(self._clock(), may_seal))

    def _extra_permits(self, priority: bool) -> int:
        """Permits beyond the limit: one for faults, once the collector has shown it takes more than one.

        A collector held at one request at a time (slow, or failing) gets
        one at a time, faults first; one that takes several never makes a
        fault wait for a measurement request to finish. One more, a probe,
        while a request is answered with a content refusal
        (:meth:`~ves_streams.sink.delivery.BatchDelivery.suspected`): only
        another request can tell a poisoned event from a collector that
        refuses everything.
        """
        delivery = self._delivery()
        probe = 1 if delivery.suspected() else 0
        return probe + (1 if priority and delivery.concurrency.limit > 1 else 0)

    def _may_seal(self, domain: str) -> bool:
        """A lingering batch of ``domain`` is sealed only when a request could start for it now."""
        return self._free_permits(domain) > 0

    def _free_permits(self, domain: str) -> int:
        """Requests that could start now for a new batch of ``domain``, after those already waiting."""
        concurrency = self._delivery().concurrency
        extra = self._extra_permits(domain in PRIORITY_DOMAINS)
        return concurrency.limit + extra - len(self._running) - len(self._ready)

    def _start(self, request: _Request) -> None:
        delivery = self._delivery()
        delivery.on_suspect = self._probe
        self._keys_in_flight.setdefault(request.batch.domain, Counter()).update(request.keys)
        task = asyncio.ensure_future(self._deliver(delivery, request, self._epoch))
        self._running.add(task)
        self._publish_gauges()

    async def _deliver(self, delivery: BatchDelivery, request: _Request, epoch: int) -> None:
        current = lambda: epoch == self._epoch  # noqa: E731
        report = None
        try:
            report = await delivery.deliver(request.batch, wanted=current)
        except Exception as exc:
            if current():
                self._failure = exc
                self._signal()
            return
        finally:
            if current():
                self._running.discard(asyncio.current_task())  # type: ignore[arg-type]
                keys = self._keys_in_flight[request.batch.domain]
                keys.subtract(request.keys)
                for key in request.keys:
                    if keys[key] <= 0:
                        del keys[key]
                self._publish_gauges()
        if report is None or not current():
            return  # revoked: the new owner delivers it again
        for record in report.delivered:
            self._tracker.finished(TopicPartition(record.topic, record.partition), record.offset)
        self._reports.append(report)
        self._seal_due()  # a batch that kept filling while no request was free goes now
        self._start_ready()
        self._signal()

    def _probe(self) -> None:
        """A request is answered with a content refusal: start one more, to learn whether others are taken."""
        if self._closing:
            return
        self._seal_due()
        self._start_ready()
        self._signal()

    def _take_reports(self, output: DeliveryOutput) -> None:
        reports, self._reports = self._reports, []
        for report in reports:
            for refusal in report.refused:
                record = refusal.record
                _log_letter(record, refusal.message)
                letter = dead_letter(record, reason=refusal.message, status=refusal.status, body=refusal.body, url=refusal.url)
                output.add_letter(record, letter, refusal.kind)

    async def _hold_until_one_finishes(self) -> None:
        """Wait for a request to finish: briefly as is, then with the partitions paused and polled.

        A request usually finishes within a round trip; a paused poll runs
        out its slice even when the wait is over, so it is only worth it
        once the wait is long enough to matter to ``max.poll.interval.ms``
        (the loop waits for a produce's acknowledgement the same way).
        """
        wake = self._wake
        if wake is None or wake.done():
            wake = self._wake = asyncio.get_running_loop().create_future()
        done, _ = await asyncio.wait({wake}, timeout=HOLD_AFTER)
        if done:
            return
        if self.controls is not None:
            await self.controls.hold_until(wake)
        else:
            await asyncio.wait({wake})

    def _publish_gauges(self) -> None:
        metrics.REQUESTS_IN_FLIGHT.set(len(self._running))
        metrics.CONCURRENCY_LIMIT.set(self._delivery().concurrency.limit)

    def _raise_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def _signal(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)


def _log_letter(record: SinkRecord, reason: str) -> None:
    logger.warning(
        "dead-lettering %s/%d/%d (%s event %s): %s",
        record.topic, record.partition, record.offset, record.domain, record.event_id, reason,
    )  # fmt: skip
