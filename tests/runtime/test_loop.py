"""The stage loop against a real broker: commit after ack, retries that keep the group, revoke, exactly-once abort.

The broker refuses every write to an output topic whose ``max.message.bytes``
is smaller than any record batch (``MESSAGE_TOO_LARGE``), until the test
raises it. For exactly-once the limit lets a transaction marker (a control
batch of about 80 bytes) through and refuses the record: an abort must be
written where the refused record was. (A single broker cannot refuse with ``NOT_ENOUGH_REPLICAS``: Kafka
4 accepts ``acks=all`` writes to a topic whose replication factor is below
its ``min.insync.replicas``; the three-broker drill does that.)
``max.poll.interval.ms`` is set to 3 s, below the length of every refusal,
so a loop that stopped polling while it retried would be thrown out of its
group.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.plugins.kafka import create_topics_async, new_topic_name
from ves_streams.identity import OutputRecord
from ves_streams.runtime.loop import StageLoop, StageSpec
from ves_streams.runtime.outputs import InputMessage, StageHandler, StageOutput

pytestmark = [pytest.mark.integration, pytest.mark.broker_version]

MAX_POLL_MS = 3000


class EchoHandler(StageHandler):
    """Every input value becomes one event; a value starting with ``bad`` also a dead letter."""

    def __init__(self) -> None:
        self.batches = 0
        self.acknowledged_values: list[bytes] = []

    async def handle(self, messages: Sequence[InputMessage]) -> StageOutput:
        self.batches += 1
        out = StageOutput()
        for message in messages:
            out.note_input(message)
            value = message.value or b""
            out.events.append(OutputRecord(key=message.key, value=value, headers=[]))
            if value.startswith(b"bad"):
                out.dead_letters.append(OutputRecord(key=message.key, value=value, headers=[("reason", b"bad")]))
        return out

    def acknowledged(self, output: StageOutput) -> None:
        self.acknowledged_values += [e.value for e in output.events]


class Topics:
    def __init__(self, prefix: str) -> None:
        self.input = new_topic_name(f"{prefix}-in")
        self.events = new_topic_name(f"{prefix}-events")
        self.dlq = new_topic_name(f"{prefix}-dlq")
        self.group = new_topic_name(f"{prefix}-group")


def _spec(t: Topics, **overrides: Any) -> StageSpec:
    options: dict[str, Any] = {
        "name": "echo", "group_id": t.group, "topics": (t.input,), "events_topic": t.events, "dead_letter_topic": t.dlq,
        "max_batch": 100, "session_timeout_ms": 6000, "max_poll_interval_ms": MAX_POLL_MS, "request_timeout_ms": 2000,
        "commit_every": 0.2,
    }  # fmt: skip
    options.update(overrides)
    return StageSpec(**options)


#: a topic with this config refuses every record batch
REFUSING = {"max.message.bytes": "16"}
#: ... and this one every batch holding a record of :data:`LARGE` bytes, but not a transaction marker
REFUSING_LARGE = {"max.message.bytes": "300"}
LARGE = 600


async def _accept_writes(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": "1048588"})])
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, values: Sequence[bytes], partitions: int = 1) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i, value in enumerate(values):
            await producer.send_and_wait(topic, value, key=b"k", partition=i % partitions)
    finally:
        await producer.stop()


async def _read_all(bootstrap: str, topic: str, *, committed_only: bool = True, settle: float = 2.0) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
        isolation_level="read_committed" if committed_only else "read_uncommitted",
    )  # fmt: skip
    await consumer.start()
    out: list[bytes] = []
    try:
        quiet_until = time.monotonic() + settle
        while time.monotonic() < quiet_until:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                out += [r.value for r in records]
                quiet_until = time.monotonic() + settle
    finally:
        await consumer.stop()
    return out


async def _committed(bootstrap: str, group: str, topic: str, partitions: int = 1) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        await consumer.stop()


async def _until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


def _loop(spec: StageSpec, handler: EchoHandler, bootstrap: str) -> StageLoop:
    return StageLoop(spec, handler, bootstrap_servers=bootstrap)


def test_a_refused_produce_is_retried_polling_and_offsets_are_committed_only_after_the_ack(kafka: Any) -> None:
    bootstrap = kafka.bootstrap_servers
    t = Topics("refused")

    async def scenario() -> None:
        await create_topics_async(bootstrap, [t.input, t.dlq], partitions=1)
        await create_topics_async(bootstrap, [t.events], partitions=1, configs=REFUSING)
        values = [f"v{i}".encode() for i in range(20)]
        await _produce(bootstrap, t.input, values)
        handler = EchoHandler()
        loop = _loop(_spec(t), handler, bootstrap)
        await loop.start()
        try:
            await _until(lambda: loop.failed_attempts >= 2, 30, "two refused attempts")
            # refused for longer than max.poll.interval.ms: nothing committed, still in the group
            await asyncio.sleep(MAX_POLL_MS / 1000 + 1)
            assert await _committed(bootstrap, t.group, t.input) == {0: None}
            assert handler.acknowledged_values == []
            assert loop.is_ready()
            await _accept_writes(bootstrap, t.events)
            await _until(lambda: loop.handled.get(TopicPartition(t.input, 0)) == 20, 60, "the batch acknowledged")
            await _until(lambda: loop.committed_offsets().get(TopicPartition(t.input, 0)) == 20, 10, "the commit")
            assert loop.assignments == 1, "the loop left its group while retrying (max.poll.interval.ms expired)"
        finally:
            await loop.stop()
        assert await _committed(bootstrap, t.group, t.input) == {0: 20}
        delivered = await _read_all(bootstrap, t.events)
        assert sorted(set(delivered)) == sorted(values)  # every one, once acknowledged (copies allowed: at-least-once)

    asyncio.run(scenario())


async def _refuse_large(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=REFUSING_LARGE)])
    finally:
        await admin.close()


def test_a_batch_refused_for_good_after_earlier_writes_does_not_stall_the_partition_once_it_passes(kafka: Any) -> None:
    """A non-retriable refusal (too large) after acknowledged writes: a new producer makes the next attempt.

    The refused batch's sequence numbers stay counted in the old idempotent
    producer, so the broker refused every later write to that partition.
    """
    bootstrap = kafka.bootstrap_servers
    t = Topics("stall")

    async def scenario() -> None:
        await create_topics_async(bootstrap, [t.input, t.dlq, t.events], partitions=1)
        handler = EchoHandler()
        loop = _loop(_spec(t), handler, bootstrap)
        await loop.start()
        try:
            await _produce(bootstrap, t.input, [b"before-1", b"before-2"])
            await _until(lambda: loop.handled.get(TopicPartition(t.input, 0)) == 2, 60, "the first writes")
            await _refuse_large(bootstrap, t.events)
            await _produce(bootstrap, t.input, [b"x" * LARGE])
            await _until(lambda: loop.failed_attempts >= 2, 60, "refused attempts")
            await _accept_writes(bootstrap, t.events)
            await _produce(bootstrap, t.input, [b"after"])
            await _until(lambda: loop.handled.get(TopicPartition(t.input, 0)) == 4, 60, "writes after the refusal")
        finally:
            await loop.stop()
        delivered = await _read_all(bootstrap, t.events)
        assert set(delivered) == {b"before-1", b"before-2", b"x" * LARGE, b"after"}

    asyncio.run(scenario())


def test_a_revoke_abandons_the_batch_in_flight_and_the_new_owner_redoes_it(kafka: Any) -> None:
    bootstrap = kafka.bootstrap_servers
    t = Topics("revoke")

    async def scenario() -> None:
        await create_topics_async(bootstrap, [t.input], partitions=2)
        await create_topics_async(bootstrap, [t.dlq], partitions=1)
        await create_topics_async(bootstrap, [t.events], partitions=1, configs=REFUSING)
        values = [f"r{i}".encode() for i in range(40)]
        await _produce(bootstrap, t.input, values, partitions=2)
        first_handler, second_handler = EchoHandler(), EchoHandler()
        first = _loop(_spec(t), first_handler, bootstrap)
        await first.start()
        second = _loop(_spec(t), second_handler, bootstrap)
        try:
            await _until(lambda: first.failed_attempts >= 1, 30, "the first loop's batch refused")
            await second.start()  # joins the group: the first loop's partitions are revoked mid-batch
            await _until(lambda: first.abandoned >= 1, 60, "the batch in flight abandoned")
            await _until(lambda: second.assignments >= 1 and first.assignments >= 2, 30, "both loops assigned")
            await _accept_writes(bootstrap, t.events)
            ends = {TopicPartition(t.input, 0): 20, TopicPartition(t.input, 1): 20}

            def all_committed() -> bool:
                done = {**first.committed_offsets(), **second.committed_offsets()}
                return all(done.get(tp) == end for tp, end in ends.items())

            await _until(all_committed, 60, "every partition committed by its owner")
        finally:
            await second.stop()
            await first.stop()
        assert await _committed(bootstrap, t.group, t.input, partitions=2) == {0: 20, 1: 20}
        assert sorted(set(await _read_all(bootstrap, t.events))) == sorted(values)
        assert second_handler.acknowledged_values, "the new owner redid the revoked partition's records"

    asyncio.run(scenario())


def test_exactly_once_aborts_a_refused_batch_whole_and_commits_it_once_when_the_broker_takes_it(kafka: Any) -> None:
    bootstrap = kafka.bootstrap_servers
    t = Topics("eos-abort")

    async def scenario() -> None:
        await create_topics_async(bootstrap, [t.input, t.events], partitions=1)
        await create_topics_async(bootstrap, [t.dlq], partitions=1, configs=REFUSING_LARGE)
        values = [f"e{i}".encode() for i in range(20)]
        values[5] = b"bad" + b"x" * LARGE  # its event is taken, its dead letter refused: the transaction fails
        await _produce(bootstrap, t.input, values)
        handler = EchoHandler()
        loop = _loop(_spec(t, exactly_once=True), handler, bootstrap)
        await loop.start()
        try:
            await _until(lambda: loop.failed_attempts >= 2, 30, "two refused transactions")
            written = await _read_all(bootstrap, t.events, committed_only=False, settle=1.0)
            assert set(written) == set(values), "the aborted attempts did write their events"
            assert await _read_all(bootstrap, t.events, settle=1.0) == [], "an aborted event is never read"
            assert await _committed(bootstrap, t.group, t.input) == {0: None}, "offsets abort with the events"
            assert handler.acknowledged_values == []
            await _accept_writes(bootstrap, t.dlq)
            await _until(lambda: loop.committed_offsets().get(TopicPartition(t.input, 0)) == 20, 60, "the commit")
            assert loop.assignments == 1
        finally:
            await loop.stop()
        assert await _committed(bootstrap, t.group, t.input) == {0: 20}
        assert await _read_all(bootstrap, t.events) == values, "each event once, in order, after the aborts"
        assert await _read_all(bootstrap, t.dlq) == [values[5]]

    asyncio.run(scenario())


def test_a_loop_sees_every_input_partition_and_what_the_group_committed_on_those_another_member_owns(kafka: Any) -> None:
    bootstrap = kafka.bootstrap_servers
    t = Topics("group-view")

    async def scenario() -> None:
        await create_topics_async(bootstrap, [t.input], partitions=2)
        await create_topics_async(bootstrap, [t.events, t.dlq], partitions=1)
        first = _loop(_spec(t), EchoHandler(), bootstrap)
        second = _loop(_spec(t), EchoHandler(), bootstrap)
        await first.start()
        await second.start()
        try:
            everything = [TopicPartition(t.input, 0), TopicPartition(t.input, 1)]
            await _until(lambda: len(first.assigned()) == 1 and len(second.assigned()) == 1, 60, "one partition each")
            assert first.input_partitions() == everything
            (theirs,) = second.assigned()
            assert await first.group_committed([theirs]) == {}  # nothing committed yet: left out, not 0
            await _produce(bootstrap, t.input, [f"g{i}".encode() for i in range(10)], partitions=2)
            await _until(lambda: second.committed_offsets().get(theirs) == 5, 30, "the other member's commit")
            assert await first.group_committed([theirs]) == {theirs: 5}
        finally:
            await second.stop()
            await first.stop()

    asyncio.run(scenario())


class RestoringHandler(EchoHandler):
    """A handler with state: its restore of the assigned partitions takes longer than max.poll.interval.ms."""

    def __init__(self, restore_seconds: float) -> None:
        super().__init__()
        self.restore_seconds = restore_seconds
        self.restored: list[set[TopicPartition]] = []
        self.handled_before_restore = 0

    async def handle(self, messages: Sequence[InputMessage]) -> StageOutput:
        if not self.restored:
            self.handled_before_restore += len(messages)
        return await super().handle(messages)

    async def assigned(self, partitions: set[TopicPartition]) -> None:
        await asyncio.sleep(self.restore_seconds)
        self.restored.append(set(partitions))


def test_a_handler_restores_its_assigned_partitions_before_it_sees_their_records_and_the_group_is_kept(kafka: Any) -> None:
    bootstrap = kafka.bootstrap_servers
    t = Topics("restore")

    async def scenario() -> None:
        await create_topics_async(bootstrap, [t.input], partitions=2)
        await create_topics_async(bootstrap, [t.events, t.dlq], partitions=1)
        values = [f"s{i}".encode() for i in range(10)]
        await _produce(bootstrap, t.input, values, partitions=2)
        handler = RestoringHandler(restore_seconds=MAX_POLL_MS / 1000 + 1)
        loop = _loop(_spec(t), handler, bootstrap)
        await loop.start()
        try:
            ends = {TopicPartition(t.input, 0): 5, TopicPartition(t.input, 1): 5}
            await _until(lambda: all(loop.handled.get(tp) == end for tp, end in ends.items()), 60, "every record handled")
        finally:
            await loop.stop()
        assert handler.restored == [set(ends)]
        assert handler.handled_before_restore == 0
        assert loop.assignments == 1, "the loop left its group while the handler restored"
        assert sorted(handler.acknowledged_values) == sorted(values)

    asyncio.run(scenario())
