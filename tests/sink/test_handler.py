"""The sink's delivery handler against a real collector process, with no broker.

The handler is what the stage loop runs for the sink: these tests hand it
records as the loop would (``ConsumerRecord``-shaped) and read what it hands
back: which offsets are finished (safe to commit) and which dead letters to
write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiokafka import TopicPartition

from ves_streams.sink.batching import OPEN_BUDGET, BatchLimits
from ves_streams.sink.client import VesHttpClient
from ves_streams.sink.config import CollectorConfig
from ves_streams.sink.delivery import BatchDelivery
from ves_streams.sink.handler import DeliveryHandler, DeliveryOutput
from ves_streams.sink.retry import RetryPolicy
from ves_streams.wire.deadletter import HEADER_DLQ_REASON, HEADER_DLQ_STATUS

from tests.plugins.collector import VesCollector
from tests.sink.events import event, kafka_headers, kafka_value

TP = TopicPartition("ves-events", 0)
T = TypeVar("T")


@dataclass
class Message:
    """A ``ves-events`` record as aiokafka hands it to the loop."""

    offset: int
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    topic: str = TP.topic
    partition: int = TP.partition
    key: bytes | None = b"h1"
    timestamp: int | None = None


def _message(offset: int, domain: str, seq: int) -> Message:
    ev = event(domain, "h1", seq)
    return Message(offset, kafka_value(ev), kafka_headers(ev))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _with_handler(
    collector: VesCollector, limits: BatchLimits, clock: Clock, body: Callable[[DeliveryHandler], Awaitable[T]]
) -> T:
    config = CollectorConfig(url=collector.url)

    async def main() -> T:
        client = VesHttpClient(config)
        await client.start()
        try:
            delivery = BatchDelivery(config, RetryPolicy(initial_backoff=0.05, max_backoff=0.1), client)
            return await body(DeliveryHandler(limits, lambda: delivery, clock=clock))
        finally:
            await client.close()

    return asyncio.run(main())


def _delivered_ids(collector: VesCollector) -> list[str]:
    return [e["commonEventHeader"]["eventId"] for e in collector.events()]


def test_a_fault_delivered_ahead_of_a_lingering_measurement_does_not_move_the_commit_past_it(
    ves_collector: VesCollector,
) -> None:
    clock = Clock()
    limits = BatchLimits(max_events=2, linger_ms=50)

    async def body(handler: DeliveryHandler) -> tuple[DeliveryOutput, DeliveryOutput, float | None]:
        # offset 0 opens a measurement batch; offsets 1 and 2 fill (and seal) a fault batch
        first = await handler.handle([_message(0, "measurement", 0), _message(1, "fault", 1), _message(2, "fault", 2)])
        deadline = handler.next_deadline()
        clock.now += 0.05
        second = await handler.handle([])  # the loop wakes at the deadline with no new input
        return first, second, deadline

    first, second, deadline = _with_handler(ves_collector, limits, clock, body)
    assert _delivered_ids(ves_collector) == ["h1-fault-1", "h1-fault-2", "h1-measurement-0"]
    assert first.handled == {}, "offset 0 is still lingering: nothing is safe to commit"
    assert deadline == 1000.05, "the loop is told when the measurement batch lingers out"
    assert second.handled == {TP: 3}
    assert first.dead_letters == second.dead_letters == []


def test_a_malformed_record_is_finished_only_once_its_dead_letter_is_acknowledged(ves_collector: VesCollector) -> None:
    clock = Clock()

    async def body(handler: DeliveryHandler) -> tuple[DeliveryOutput, dict[TopicPartition, int], int]:
        output = await handler.handle([_message(0, "fault", 0), Message(1, b"not json"), _message(2, "fault", 2)])
        before = dict(output.handled)
        handler.acknowledged(output)
        return output, before, handler.in_flight()

    output, before, in_flight = _with_handler(ves_collector, BatchLimits(max_events=1), clock, body)
    assert _delivered_ids(ves_collector) == ["h1-fault-0", "h1-fault-2"]
    assert before == {TP: 1}, "offsets 1 and 2 wait for the dead letter of offset 1"
    [letter] = output.dead_letters
    assert letter.value == b"not json", "the dead letter keeps the record as it was"
    assert dict(letter.headers)[HEADER_DLQ_REASON]
    assert output.handled == {TP: 3} and in_flight == 0


def test_a_refused_event_becomes_a_dead_letter_with_the_collectors_answer(ves_collector: VesCollector) -> None:
    ves_collector.control(reject_event_ids=["h1-fault-1"])

    async def body(handler: DeliveryHandler) -> DeliveryOutput:
        output = await handler.handle([_message(0, "fault", 0), _message(1, "fault", 1)])
        handler.acknowledged(output)
        return output

    output = _with_handler(ves_collector, BatchLimits(max_events=2), Clock(), body)
    assert _delivered_ids(ves_collector) == ["h1-fault-0"]
    [letter] = output.dead_letters
    headers = dict(letter.headers)
    assert headers[HEADER_DLQ_STATUS].startswith(b"4")
    assert output.handled == {TP: 2}


def test_a_revoke_hands_back_what_was_accepted_and_forgets_what_was_held(ves_collector: VesCollector) -> None:
    clock = Clock()
    limits = BatchLimits(max_events=2, linger_ms=50)

    async def body(handler: DeliveryHandler) -> tuple[Any, int, int, float | None]:
        await handler.handle([_message(0, "fault", 0), _message(1, "fault", 1), _message(2, "measurement", 2)])
        finished = handler.revoked()
        return finished, handler.in_flight(), handler.room(10_000), handler.next_deadline()

    finished, in_flight, room, deadline = _with_handler(ves_collector, limits, clock, body)
    assert finished == {TP: 2}, "the accepted faults are committed before the partitions go"
    assert (in_flight, deadline) == (0, None), "the lingering measurement is the next owner's"
    assert room == OPEN_BUDGET * limits.max_events
    assert _delivered_ids(ves_collector) == ["h1-fault-0", "h1-fault-1"]


def test_fetches_are_bounded_by_the_open_batch_budget(ves_collector: VesCollector) -> None:
    limits = BatchLimits(max_events=3, linger_ms=10_000)

    async def body(handler: DeliveryHandler) -> tuple[int, int, int]:
        empty = handler.room(500)
        # one open batch per domain, none full: nothing is delivered, all is held
        await handler.handle([_message(0, "fault", 0), _message(1, "measurement", 1), _message(2, "heartbeat", 2)])
        return empty, handler.room(500), handler.room(2)

    empty, after, capped = _with_handler(ves_collector, limits, Clock(), body)
    assert empty == OPEN_BUDGET * limits.max_events
    assert after == OPEN_BUDGET * limits.max_events - 3
    assert capped == 2, "never more than the loop's own batch size"
    assert ves_collector.events() == []


def test_a_fault_sealed_behind_a_boundarys_measurements_is_delivered_first_and_each_domain_keeps_its_order(
    ves_collector: VesCollector,
) -> None:
    clock = Clock()
    limits = BatchLimits(max_events=2, linger_ms=50)

    async def body(handler: DeliveryHandler) -> DeliveryOutput:
        # two full measurement requests, a heartbeat request, then a full fault request: all ready at once
        messages = [_message(0, "measurement", 0), _message(1, "measurement", 1), _message(2, "measurement", 2),
                    _message(3, "measurement", 3), _message(4, "heartbeat", 4), _message(5, "heartbeat", 5),
                    _message(6, "fault", 6), _message(7, "fault", 7)]  # fmt: skip
        return await handler.handle(messages)

    output = _with_handler(ves_collector, limits, clock, body)
    assert _delivered_ids(ves_collector) == [
        "h1-fault-6", "h1-fault-7",
        "h1-measurement-0", "h1-measurement-1", "h1-measurement-2", "h1-measurement-3",
        "h1-heartbeat-4", "h1-heartbeat-5",
    ]  # fmt: skip
    assert output.handled == {TP: 8}, "every record finished: the commit covers them all"
