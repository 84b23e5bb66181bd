"""The sink's delivery handler against a real collector process, with no broker.

The handler is what the stage loop runs for the sink: these tests hand it
records as the loop would (``ConsumerRecord``-shaped) and read what it hands
back: which offsets are finished (safe to commit) and which dead letters to
write. Requests run in tasks of their own (pipelined), so a test waits for
them (:meth:`DeliveryHandler.settled`) and then calls ``handle([])`` as the
loop does when a request finished.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from aiokafka import TopicPartition

from ves_streams.sink.batching import OPEN_BUDGET, BatchLimits
from ves_streams.sink.client import VesHttpClient
from ves_streams.sink.concurrency import AdaptiveConcurrency, ConcurrencyLimits
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
    collector: VesCollector,
    limits: BatchLimits,
    clock: Clock | Callable[[], float],
    body: Callable[[DeliveryHandler], Awaitable[T]],
    *,
    max_concurrency: int = 1,
    initial_concurrency: int = 1,
) -> T:
    config = CollectorConfig(url=collector.url)

    async def main() -> T:
        client = VesHttpClient(config, max_requests=max_concurrency + 1)
        await client.start()
        try:
            concurrency = AdaptiveConcurrency(ConcurrencyLimits(maximum=max_concurrency, initial=initial_concurrency))
            delivery = BatchDelivery(
                config, RetryPolicy(initial_backoff=0.05, max_backoff=0.1), client, concurrency=concurrency
            )
            return await body(DeliveryHandler(limits, lambda: delivery, clock=clock))
        finally:
            await client.close()

    return asyncio.run(main())


async def _after_requests(handler: DeliveryHandler) -> DeliveryOutput:
    """What the loop's next ``handle([])`` gets once every request started so far has finished."""
    await handler.settled()
    return await handler.handle([])


def _delivered_ids(collector: VesCollector) -> list[str]:
    return [e["commonEventHeader"]["eventId"] for e in collector.events()]


def test_a_fault_delivered_ahead_of_a_lingering_measurement_does_not_move_the_commit_past_it(
    ves_collector: VesCollector,
) -> None:
    clock = Clock()
    limits = BatchLimits(max_events=2, linger_ms=50)

    async def body(handler: DeliveryHandler) -> tuple[DeliveryOutput, DeliveryOutput, float | None]:
        # offset 0 opens a measurement batch; offsets 1 and 2 fill (and seal) a fault batch
        await handler.handle([_message(0, "measurement", 0), _message(1, "fault", 1), _message(2, "fault", 2)])
        first = await _after_requests(handler)  # the faults' request finished
        deadline = handler.next_deadline()
        clock.now += 0.05
        await handler.handle([])  # the loop wakes at the deadline with no new input
        return first, await _after_requests(handler), deadline

    first, second, deadline = _with_handler(ves_collector, limits, clock, body)
    assert _delivered_ids(ves_collector) == ["h1-fault-1", "h1-fault-2", "h1-measurement-0"]
    assert first.handled == {}, "offset 0 is still lingering: nothing is safe to commit, though 1 and 2 are delivered"
    assert deadline == 1000.05, "the loop is told when the measurement batch lingers out"
    assert second.handled == {TP: 3}
    assert first.dead_letters == second.dead_letters == []


def test_a_malformed_record_is_finished_only_once_its_dead_letter_is_acknowledged(ves_collector: VesCollector) -> None:
    clock = Clock()

    async def body(handler: DeliveryHandler) -> tuple[DeliveryOutput, dict[TopicPartition, int], int]:
        output = await handler.handle([_message(0, "fault", 0), Message(1, b"not json"), _message(2, "fault", 2)])
        before = dict((await _after_requests(handler)).handled)
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
        await handler.handle([_message(0, "fault", 0), _message(1, "fault", 1)])
        output = await _after_requests(handler)  # the refusal's dead letter comes with the next handle
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
        await handler.settled()
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
        await handler.handle(messages)
        return await _after_requests(handler)

    output = _with_handler(ves_collector, limits, clock, body)
    assert _delivered_ids(ves_collector) == [
        "h1-fault-6", "h1-fault-7",
        "h1-measurement-0", "h1-measurement-1", "h1-measurement-2", "h1-measurement-3",
        "h1-heartbeat-4", "h1-heartbeat-5",
    ]  # fmt: skip
    assert output.handled == {TP: 8}, "every record finished: the commit covers them all"


def _host_message(offset: int, domain: str, host: str, seq: int) -> Message:
    ev = event(domain, host, seq)
    return Message(offset, kafka_value(ev), kafka_headers(ev), key=host.encode())


def test_requests_to_a_slow_collector_are_pipelined_and_each_host_keeps_its_order_within_a_domain(
    ves_collector: VesCollector,
) -> None:
    # every request takes 100 ms at the collector; the first (h0-h2's first round) is answered 503, to be
    # retried after a second: their later rounds must wait for it, other hosts' requests need not
    ves_collector.control(delay=0.1, status=503, count=1, retry_after=1)
    limits = BatchLimits(max_events=3, linger_ms=0)
    hosts = [f"h{i}" for i in range(12)]
    # five rounds of every host's measurement, then a fault for every host: 60 + 12 records
    messages = [_host_message(r * len(hosts) + i, "measurement", h, r) for r in range(5) for i, h in enumerate(hosts)]
    messages += [_host_message(len(messages) + i, "fault", h, 100) for i, h in enumerate(hosts)]

    async def body(handler: DeliveryHandler) -> tuple[int, int, DeliveryOutput]:
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, handler.requests_in_flight())
                await asyncio.sleep(0.005)

        watcher = asyncio.ensure_future(watch())
        try:
            for start in range(0, len(messages), 6):  # fetches of six, as the loop would hand them
                await handler.handle(messages[start : start + 6])
            output = await _after_requests(handler)
        finally:
            watcher.cancel()
        return peak, handler._delivery().concurrency.limit, output  # noqa: SLF001

    peak, limit, output = _with_handler(
        ves_collector, limits, time.monotonic, body, max_concurrency=8, initial_concurrency=4
    )
    assert peak > 1, "several requests were in flight at once"
    assert limit >= 3, "one 503 took the limit down by a tenth at most, flat round trips let it grow"
    assert output.handled == {TP: len(messages)}, "every record delivered: the commit covers them all"
    received = [e["commonEventHeader"] for e in ves_collector.events()]
    assert sorted(h["eventId"] for h in received) == sorted(
        [f"{h}-measurement-{r}" for r in range(5) for h in hosts] + [f"{h}-fault-100" for h in hosts]
    ), "each event delivered once"
    for host in hosts:
        sequences = [h["sequence"] for h in received if h["sourceName"] == host and h["domain"] == "measurement"]
        assert sequences == list(range(5)), f"{host}'s measurements arrived in the order they were produced"


def test_while_no_request_is_free_a_lingering_batch_keeps_filling_and_goes_as_one_request(
    ves_collector: VesCollector,
) -> None:
    ves_collector.control(delay=0.3)
    limits = BatchLimits(max_events=100, linger_ms=0)

    async def body(handler: DeliveryHandler) -> DeliveryOutput:
        await handler.handle([_host_message(0, "measurement", "h0", 0)])  # lingers out at once: the only request
        for offset in range(1, 6):  # arrive while it is in flight
            await handler.handle([_host_message(offset, "measurement", f"h{offset}", offset)])
        return await _after_requests(handler)

    output = _with_handler(ves_collector, limits, time.monotonic, body)
    requests: dict[str, list[str]] = {}
    for r in ves_collector.records():
        requests.setdefault(r["request"], []).append(r["event"]["commonEventHeader"]["sourceName"])
    assert sorted(requests.values()) == [["h0"], ["h1", "h2", "h3", "h4", "h5"]]
    assert output.handled == {TP: 6}


def test_a_stop_lets_the_requests_in_flight_finish_and_starts_no_other(ves_collector: VesCollector) -> None:
    ves_collector.control(delay=0.3)
    limits = BatchLimits(max_events=1, linger_ms=0)

    async def body(handler: DeliveryHandler) -> tuple[Any, int]:
        # h0's request flies; h1's and h2's wait for the one permit, the loop holding in handle()
        messages = [_host_message(offset, "fault", f"h{offset}", offset) for offset in range(3)]
        loop_task = asyncio.ensure_future(handler.handle(messages))
        await asyncio.sleep(0.05)
        loop_task.cancel()  # the loop's task is stopped first, then the handler is told
        finished = await handler.stopping()
        return finished, handler.requests_in_flight()

    finished, in_flight = _with_handler(ves_collector, limits, time.monotonic, body)
    assert finished == {TP: 1}, "the request in flight finished within the grace, and is committed"
    assert in_flight == 0
    assert _delivered_ids(ves_collector) == ["h0-fault-0"], "nothing new started while stopping"


def test_a_request_that_fails_with_an_exception_crashes_the_next_handle(ves_collector: VesCollector) -> None:
    config = CollectorConfig(url=ves_collector.url)

    async def main() -> None:
        client = VesHttpClient(config)  # never started: its post() raises, as a bug would
        delivery = BatchDelivery(config, RetryPolicy(), client)
        handler = DeliveryHandler(BatchLimits(max_events=1), lambda: delivery)
        await handler.handle([_message(0, "fault", 0)])
        await asyncio.sleep(0.05)
        await handler.handle([])

    with pytest.raises(RuntimeError, match="before start"):
        asyncio.run(main())
