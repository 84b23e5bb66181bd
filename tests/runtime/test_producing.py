"""send_to_partition: records packed into aiokafka record batches, in order, oversize ones sent alone."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.record.default_records import DefaultRecordBatch

from ves_streams.runtime.producing import send_to_partition


class RecordingProducer(AIOKafkaProducer):  # type: ignore[misc]
    """A real producer's batch builder; what would be queued is recorded instead of sent."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(bootstrap_servers="127.0.0.1:9", **kwargs)
        self.queued: list[tuple[str, Any]] = []

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> Any:
        records = DefaultRecordBatch(bytearray(batch._build()))
        self.queued.append(("batch", [(r.key, r.value, r.headers) for r in records]))
        return asyncio.get_running_loop().create_future()

    async def send(self, topic: str, value: Any = None, key: Any = None, partition: Any = None, **kw: Any) -> Any:
        self.queued.append(("single", [(key, value, kw.get("headers"))]))
        return asyncio.get_running_loop().create_future()


def test_records_are_packed_into_batches_of_the_producers_size_in_order() -> None:
    async def scenario() -> RecordingProducer:
        producer = RecordingProducer(max_batch_size=2048)
        records = [(f"k{i}".encode(), b"v" * 300, [("h", b"1")]) for i in range(20)]
        futures = await send_to_partition(producer, "t", 3, records)
        assert len(futures) == len(producer.queued)
        return producer

    producer = asyncio.run(scenario())
    kinds = [kind for kind, _ in producer.queued]
    assert set(kinds) == {"batch"} and 3 <= len(kinds) < 20  # several records per batch, more than one batch
    flat = [key for _, records in producer.queued for key, _, _ in records]
    assert flat == [f"k{i}".encode() for i in range(20)]
    assert producer.queued[0][1][0][2] == [("h", b"1")]


def test_a_record_larger_than_a_batch_goes_in_a_batch_of_its_own_between_the_others() -> None:
    async def scenario() -> RecordingProducer:
        producer = RecordingProducer(max_batch_size=1024, max_request_size=1_000_000)
        records = [(b"a", b"x" * 100, ()), (b"big", b"y" * 5000, ()), (b"b", b"z" * 100, ())]
        await send_to_partition(producer, "t", 0, records)
        return producer

    producer = asyncio.run(scenario())
    keys = [(kind, [k for k, _, _ in records]) for kind, records in producer.queued]
    assert keys == [("batch", [b"a"]), ("batch", [b"big"]), ("batch", [b"b"])]
