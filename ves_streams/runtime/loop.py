"""The stage loop: fetch a batch, hand it to a pure handler, produce, wait for the ack, commit.

Every hand-written consume-produce stage of a worker (values ingest, faults,
and the sink, whose handler delivers to the VES collector) runs on
:class:`StageLoop`; what differs between them is their handler
(:class:`~ves_streams.runtime.outputs.StageHandler`) and their
:class:`StageSpec`. The loop owns, once for all of them: the aiokafka
consumer (its own consumer group, auto-commit off, ``read_committed``) and
producer (``acks=all``, idempotent), the guarded runner, rebalances,
backoff, offsets, readiness and lag.

What it guarantees:

* **Commit after the ack.** An input offset is committed only after every
  record the handler made of the records before it was acknowledged by the
  broker. A crash redelivers from the last commit (at-least-once).
* **Exactly-once** (``spec.exactly_once``): one Kafka transaction per batch,
  holding the batch's outputs and its input offsets; they commit or abort
  together, and a failed attempt aborts and is retried in a new transaction
  by a new producer (new epoch: no sequence number of the failed one lingers).
* **Group membership survives any outage.** While a produce is waiting for
  its acknowledgement for longer than :data:`HOLD_AFTER`, or waiting to be
  retried, the loop pauses its partitions and keeps polling
  (:class:`PausedPoll`): ``max.poll.interval.ms`` never expires, nothing more
  is fetched, and memory holds one batch.
* **A revoke abandons the batch in flight.** A produce attempt under way is
  let finish (so a transaction commits or aborts whole before the partitions
  go); offsets acknowledged so far are committed; a batch not yet
  acknowledged is dropped and the partitions' next owner redoes it from the
  committed offset (aiokafka's eager rebalance re-reads every partition's
  position from its commit).
* **State before records.** After an assignment the handler's
  :meth:`~ves_streams.runtime.outputs.StageHandler.assigned` is awaited
  (partitions paused, the consumer polled) before any record is handed to
  it: a stateful handler (the fault stage's alarms) restores there.
* **A dead letter too large for its topic** is written without its value
  (a header says so), never retried forever.
* **Never crashes on data**: handlers turn bad input into dead letters.
  Only a bug or an unusable Kafka crashes the loop (logged, and ``mode``
  crashes the worker).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError
from mode import Service

from ves_streams.identity import OutputRecord
from ves_streams.runtime.outputs import PartitionedRecord, StageHandler, StageOutput
from ves_streams.runtime.producing import send_to_partition
from ves_streams.wire.deadletter import without_value

__all__ = ["HOLD_AFTER", "PausedPoll", "RebalanceForwarder", "StageLoop", "StageSpec", "run_guarded", "stop_task"]

log = logging.getLogger(__name__)

#: Longest wait for a fetch while the input is idle.
POLL_MS = 200
#: A produce not acknowledged after this long is waited for with the partitions paused and polled.
HOLD_AFTER = 0.5
#: Longest single poll while holding (keeps revokes and stops snappy).
HOLD_SLICE = 1.0
#: Backoff between attempts to produce a batch the broker refused (seconds).
RETRY_INITIAL, RETRY_MAX = 0.5, 10.0


@dataclass(frozen=True, slots=True)
class StageSpec:
    """What one stage loop consumes, where its outputs go, and how it is tuned."""

    #: how logs, metrics and readiness name the stage; the suffix of its consumer group
    name: str
    group_id: str
    topics: tuple[str, ...]
    #: destination of :attr:`StageOutput.events`, if the stage makes any
    events_topic: str | None
    #: destination of :attr:`StageOutput.dead_letters`
    dead_letter_topic: str
    #: destination of :attr:`StageOutput.records` (each to its own partition), if the stage makes any
    records_topic: str | None = None
    #: most records handled as one batch
    max_batch: int = 500
    exactly_once: bool = False
    session_timeout_ms: int = 10_000
    #: aiokafka's ``max_poll_interval_ms``: the loop polls through outages, so it can be low
    max_poll_interval_ms: int = 300_000
    fetch_partition_bytes: int = 1024 * 1024
    #: longest a fetch waits at the broker for records (aiokafka's ``fetch_max_wait_ms``); the broker
    #: answers the requests of one connection in order, so a question asked meanwhile
    #: (:meth:`StageLoop.end_offsets`) waits behind it
    fetch_max_wait_ms: int = 500
    #: offsets are committed at most this often (and on revoke and stop): a commit is a round trip
    commit_every: float = 1.0
    linger_ms: int = 20
    #: how long the producer retries a record the broker refuses before the attempt fails
    request_timeout_ms: int = 30_000
    #: where a group with no committed offset starts
    auto_offset_reset: str = "earliest"
    #: largest produce request (a stage whose dead letters carry large events raises it)
    max_request_size: int = 4 * 1024 * 1024


class RebalanceForwarder(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no type information
    """Forwards aiokafka's rebalance callbacks to a service's methods, as sets of partitions.

    ``revoked`` is awaited before the partitions go (commit what is finished there).
    """

    def __init__(
        self,
        revoked: Callable[[set[TopicPartition]], Awaitable[None]],
        assigned: Callable[[set[TopicPartition]], None],
    ) -> None:
        self._revoked = revoked
        self._assigned = assigned

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._assigned(set(assigned))


async def stop_task(task: asyncio.Task[Any] | None, logger: logging.Logger) -> None:
    """Cancel a loop task and wait for it; its own failure was logged by the loop's guard."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception:
        logger.debug("stopped loop had failed", exc_info=True)


async def run_guarded(service: Service, run: Callable[[], Awaitable[None]], name: str,
                      describe: Callable[[BaseException], str] | None = None) -> None:
    """Run a service's loop; a failure is logged (``describe`` scrubs it) and crashes the service (mode)."""
    try:
        await run()
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        text = describe(exc) if describe is not None else f"{type(exc).__name__}: {exc}"
        log.error("%s loop failed: %s", name, text, exc_info=True)
        await service.crash(exc)
        raise


class PausedPoll:
    """Wait without fetching: the consumer's partitions paused, the consumer still polled.

    Polling keeps the group membership (``max.poll.interval.ms``) alive
    through outages of any length; pausing means nothing is fetched or held.
    Should a poll return records anyway (a partition assigned meanwhile), the
    consumer is rewound to them. Shared by the stage loops and the sink.
    """

    def __init__(self, consumer: AIOKafkaConsumer, name: str, describe: Callable[[BaseException], str] | None = None) -> None:
        self.consumer = consumer
        self.name = name
        self.holding = False
        self._describe = describe or (lambda exc: f"{type(exc).__name__}: {exc}")

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Partitions assigned while holding stay paused too."""
        if self.holding and assigned:
            self.consumer.pause(*assigned)

    async def sleep(self, seconds: float) -> None:
        """Hold for ``seconds``."""
        if seconds <= 0:
            return
        end = time.monotonic() + seconds
        await self._hold(lambda: end - time.monotonic())

    async def until(self, future: asyncio.Future[Any]) -> None:
        """Hold until ``future`` is done (its outcome is the caller's to read)."""
        await self._hold(lambda: 0.0 if future.done() else HOLD_SLICE, wake=future)

    async def _hold(self, remaining: Callable[[], float], wake: asyncio.Future[Any] | None = None) -> None:
        consumer = self.consumer
        self.holding = True
        try:
            while True:
                left = remaining()
                if left <= 0:
                    return
                assigned = consumer.assignment()
                if assigned:
                    consumer.pause(*assigned)
                poll = asyncio.ensure_future(consumer.getmany(timeout_ms=max(1, int(min(left, HOLD_SLICE) * 1000))))
                try:
                    # a produce acknowledged mid-poll ends the hold at once; the poll itself runs out on its own
                    await asyncio.wait({poll} if wake is None else {poll, wake}, return_when=asyncio.FIRST_COMPLETED)
                    if not poll.done():
                        await poll
                    stray = poll.result()
                except KafkaError as exc:
                    log.warning("%s: polling while waiting failed: %s", self.name, self._describe(exc))
                    await asyncio.sleep(min(max(left, 0.0), HOLD_SLICE))
                    continue
                finally:
                    if not poll.done():
                        poll.cancel()
                for tp, messages in stray.items():
                    if messages:
                        consumer.seek(tp, messages[0].offset)
        finally:
            self.holding = False
            assigned = consumer.assignment()
            if assigned:
                consumer.resume(*assigned)


class StageLoop(Service):
    """One stage of a worker on its own consumer group; see the module docstring.

    Started by the Faust worker with the app's other services (after table
    recovery), or standalone (``async with StageLoop(...)``) in tests.
    ``prepare`` runs first in ``on_start`` (declare topics, say).
    """

    def __init__(
        self,
        spec: StageSpec,
        handler: StageHandler,
        *,
        bootstrap_servers: str,
        client_kwargs: Callable[[], dict[str, Any]] = dict,
        prepare: Callable[[], Awaitable[None]] | None = None,
        on_retry: Callable[[str], None] | None = None,
        on_commit: Callable[[str, bool], None] | None = None,
        describe: Callable[[BaseException], str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.spec = spec
        self.handler = handler
        self._servers = bootstrap_servers
        self._client_kwargs = client_kwargs
        self._prepare = prepare
        self._on_retry = on_retry
        self._on_commit = on_commit
        #: how errors are written into logs (a stage with secrets scrubs them)
        self.describe: Callable[[BaseException], str] = describe or _describe
        #: what the handler may ask of this loop (wait with the group kept, is my batch still wanted)
        self.controls = _Controls(self)
        handler.bind(self.controls)
        #: input partition -> offset after the last record whose outputs the broker acknowledged
        self.handled: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._poll: PausedPoll | None = None
        self._producer_options: dict[str, Any] = {}
        #: the transactional producer must be replaced before the next attempt
        self._renew = False
        self._runner: asyncio.Task[None] | None = None
        #: the produce attempt under way, if any (a revoke lets it finish)
        self._attempt: asyncio.Task[None] | None = None
        #: when the batch in hand began to be produced (monotonic), None between batches
        self._producing_since: float | None = None
        self._last_commit = 0.0
        #: bumped on every revoke: a batch fetched in an older generation is abandoned
        self._generation = 0
        self._joined = False
        #: input partitions assigned and not yet handed to :meth:`StageHandler.assigned`
        self._fresh_assignment: set[TopicPartition] | None = None
        #: batches abandoned by a revoke, produce attempts that failed (for tests and logs)
        self.abandoned = 0
        self.failed_attempts = 0
        #: group generations joined (one per rebalance this loop took part in)
        self.assignments = 0
        super().__init__(**kwargs)

    # -- what the render ticks, the probes and the metrics ask ------------

    @property
    def loop_name(self) -> str:
        return self.spec.name

    @property
    def group_id(self) -> str:
        return self.spec.group_id

    @property
    def topic(self) -> str:
        """The (first) input topic."""
        return self.spec.topics[0]

    @property
    def max_batch(self) -> int:
        return self.spec.max_batch

    @property
    def exactly_once(self) -> bool:
        return self.spec.exactly_once

    def assigned(self) -> list[TopicPartition]:
        """The input partitions this loop owns now."""
        consumer = self._consumer
        if consumer is None:
            return []
        # list(): one copy under the interpreter lock (a loop on another thread may be rebalancing)
        return sorted((tp for tp in list(consumer.assignment()) if tp.topic in self.spec.topics), key=lambda tp: (tp.topic, tp.partition))

    def input_partitions(self) -> list[TopicPartition]:
        """Every partition of the loop's input topics the consumer's metadata knows, owned or not."""
        consumer = self._consumer
        if consumer is None:
            return []
        return [
            TopicPartition(topic, partition)
            for topic in self.spec.topics
            for partition in sorted(consumer.partitions_for_topic(topic) or ())
        ]

    async def group_committed(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The group's committed offsets of ``tps``, whichever member committed them (never-committed ones left out).

        A render tick reads them for the partitions other workers own: a dead
        worker's partitions stay below their end until the group moves them and
        their new owner has caught up.
        """
        consumer = self._consumer
        if consumer is None or not tps:
            return {}
        # one question per partition (aiokafka's public API); the first failure cancels the rest,
        # which would otherwise go on retrying in the background
        tasks = [asyncio.ensure_future(consumer.committed(tp)) for tp in tps]
        try:
            offsets = await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        return {tp: int(offset) for tp, offset in zip(tps, offsets) if offset is not None}

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        consumer = self._consumer
        if consumer is None or not tps:
            return {}
        return dict(await consumer.end_offsets(list(tps)))

    async def position(self, tp: TopicPartition) -> int | None:
        consumer = self._consumer
        if consumer is None:
            return None
        return int(await consumer.position(tp))

    def producing_for(self) -> float:
        """Seconds the batch in hand has been waiting for its acknowledgement (0 between batches).

        A render tick reads it to tell a cluster that refuses writes (the batch
        waits, or is being retried) from an ingest that is merely busy.
        """
        since = self._producing_since
        return 0.0 if since is None else time.monotonic() - since

    def is_ready(self) -> bool:
        """Running, and joined its consumer group at least once (an empty assignment counts)."""
        runner = self._runner
        return self.started and not self.should_stop and self._joined and runner is not None and not runner.done()

    def lag(self) -> Iterator[tuple[str, int, int]]:
        """``(topic, partition, records not yet committed)`` of the owned partitions.

        Read from the metrics endpoint's thread while the loop may run on another
        (:mod:`~ves_streams.runtime.side_loop`): the assignment is copied in one step.
        """
        consumer = self._consumer
        if consumer is None:
            return
        for tp in list(consumer.assignment()):
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            yield tp.topic, tp.partition, max(0, highwater - self._committed.get(tp, 0))

    def committed_offsets(self) -> dict[TopicPartition, int]:
        """What this loop committed (or, with exactly_once, committed in a transaction) per partition."""
        return dict(self._committed)

    # -- lifecycle --------------------------------------------------------

    async def on_start(self) -> None:
        spec = self.spec
        if self._prepare is not None:
            await self._prepare()
        security = self._client_kwargs()
        producer_options: dict[str, Any] = {
            "bootstrap_servers": self._servers,
            "client_id": spec.group_id,
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": spec.linger_ms,
            "request_timeout_ms": spec.request_timeout_ms,
            # one record batch per output partition per input batch (see producing.py)
            "max_batch_size": 1024 * 1024,
            "max_request_size": spec.max_request_size,
        }
        if spec.exactly_once:
            # one id per worker process: a restarted worker must not fence a live one
            producer_options["transactional_id"] = f"{spec.group_id}-{socket.gethostname()}-{os.getpid()}"
        self._producer_options = {**producer_options, **security}
        try:
            self._producer = AIOKafkaProducer(**self._producer_options)
            await self._producer.start()
            self._consumer = AIOKafkaConsumer(**self._consumer_options(security))
            self._poll = PausedPoll(self._consumer, spec.name, describe=self.describe)
            self._consumer.subscribe(list(spec.topics), listener=RebalanceForwarder(self._on_revoked, self._on_assigned))
            await self._consumer.start()
        except BaseException:
            await self._close_io()
            raise
        outputs = ", ".join(t for t in (spec.records_topic, spec.events_topic) if t)
        log.info("%s started: %s -> %s (group %s%s)", spec.name, ", ".join(spec.topics), outputs,
                 spec.group_id, ", transactional" if spec.exactly_once else "")  # fmt: skip
        self._runner = asyncio.ensure_future(run_guarded(self, self._run, spec.name, self.describe))

    def _consumer_options(self, security: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments of the input consumer (a seam for tests that need other timeouts)."""
        spec = self.spec
        session_ms = spec.session_timeout_ms
        return {
            "bootstrap_servers": self._servers,
            "group_id": spec.group_id,
            "client_id": spec.group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": spec.auto_offset_reset,
            # records of an aborted exactly-once transaction are never read
            "isolation_level": "read_committed",
            "max_poll_records": spec.max_batch,
            "max_partition_fetch_bytes": spec.fetch_partition_bytes,
            "fetch_max_wait_ms": spec.fetch_max_wait_ms,
            "session_timeout_ms": session_ms,
            "heartbeat_interval_ms": max(100, min(3000, session_ms // 4)),
            "max_poll_interval_ms": spec.max_poll_interval_ms,
            "rebalance_timeout_ms": max(spec.max_poll_interval_ms, session_ms),
            **security,
        }

    async def on_stop(self) -> None:
        runner, self._runner = self._runner, None
        await stop_task(runner, log)
        await self._wait_attempt()
        for tp, offset in (await self.handler.stopping()).items():
            if offset > self.handled.get(tp, -1):
                self.handled[tp] = offset
        if self._consumer is not None and not self.spec.exactly_once:
            await self._commit(force=True)
        await self._close_io()

    async def _close_io(self) -> None:
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        for name, closer in (("consumer", consumer), ("producer", producer)):
            if closer is None:
                continue
            try:
                await closer.stop()
            except Exception as exc:
                log.warning("%s: stopping the %s failed: %s", self.spec.name, name, self.describe(exc))

    # -- the loop ---------------------------------------------------------

    async def _run(self) -> None:
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("StageLoop started without a consumer")
        handler = self.handler
        while True:
            await handler.before_fetch()
            deadline = handler.next_deadline()
            timeout_ms = POLL_MS if deadline is None else max(0, min(POLL_MS, int((deadline - time.monotonic()) * 1000)))
            fetched = await consumer.getmany(timeout_ms=timeout_ms, max_records=max(1, handler.room(self.spec.max_batch)))
            generation = self._generation  # before the hand-over: a revoke meanwhile abandons these records
            if self._fresh_assignment is not None:
                await self._hand_over_assignment()
            messages = [message for records in fetched.values() for message in records]
            deadline = handler.next_deadline()
            if messages or (deadline is not None and deadline <= time.monotonic()):
                await self._process(messages, generation)
            if not self.spec.exactly_once:
                await self._commit()

    async def _hand_over_assignment(self) -> None:
        """Let the handler restore its state of the partitions just assigned, before it sees their records.

        Records of them fetched meanwhile wait in hand (the consumer's
        positions are past them, and a revoke abandons them with the batch).
        A rebalance during the restore sets a new assignment, which is handed
        over next.
        """
        while self._fresh_assignment is not None:
            fresh, self._fresh_assignment = self._fresh_assignment, None
            task = asyncio.ensure_future(self.handler.assigned(fresh))
            try:
                if self._poll is not None:
                    await self._poll.until(task)
                await task
            finally:
                if not task.done():
                    task.cancel()

    async def _process(self, messages: list[Any], generation: int) -> bool:
        """Hand one batch to the handler and produce its output until acknowledged; False if abandoned."""
        output = await self.handler.handle(messages)
        self._producing_since = time.monotonic()
        try:
            return await self._produce_until_acknowledged(output, generation)
        finally:
            self._producing_since = None

    async def _produce_until_acknowledged(self, output: StageOutput, generation: int) -> bool:
        attempt = 0
        while True:
            if generation != self._generation:
                self.abandoned += 1
                return False
            task = self._attempt = asyncio.ensure_future(self._attempt_produce(output, generation))
            try:
                done, _ = await asyncio.wait({task}, timeout=HOLD_AFTER)
                if not done and self._poll is not None:
                    await self._poll.until(task)
                await task
            except (KafkaError, asyncio.TimeoutError) as exc:
                attempt += 1
                self.failed_attempts += 1
                if isinstance(exc, KafkaError) and not exc.retriable:
                    # A refused record batch (too large, invalid) leaves the idempotent producer's
                    # sequence numbers counting it, and the broker answers OUT_OF_ORDER_SEQUENCE_NUMBER
                    # to every later write of that partition: a new producer does the next attempt.
                    self._renew = True
                if self._on_retry is not None:
                    self._on_retry(self.spec.name)
                delay = min(RETRY_MAX, RETRY_INITIAL * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
                log.warning("%s: producing a batch failed (attempt %d, retrying in %.1f s): %s", self.spec.name,
                            attempt, delay, self.describe(exc))  # fmt: skip
                if self._poll is not None:
                    await self._poll.sleep(delay)
                else:
                    await asyncio.sleep(delay)
                continue
            finally:
                if self._attempt is task:
                    self._attempt = None
            return generation == self._generation

    async def _attempt_produce(self, output: StageOutput, generation: int) -> None:
        """One attempt: produce ``output`` and wait for the ack; then its offsets count as handled.

        Runs as a task of its own so that a revoke can wait for it while the
        loop task polls.
        """
        if self._renew:
            await self._renew_producer()  # a failure here fails the attempt, and the next one tries again
        producer = self._producer
        if producer is None:
            raise RuntimeError("StageLoop producer used before start")
        if self.spec.exactly_once:
            # Not aiokafka's ``transaction()`` context: when a record of the transaction failed,
            # its commit raises and the context leaves the transaction open (ABORTABLE_ERROR),
            # and the next one hung in send_offsets_to_transaction. Here every failure aborts.
            # Every record is acknowledged before the commit: aiokafka commits a transaction in which
            # a record was refused (MESSAGE_TOO_LARGE), so the refusal would only show after the
            # commit, and the retry would write the batch a second time.
            await producer.begin_transaction()
            try:
                await asyncio.gather(*await self._send_all(producer, output))
                await producer.send_offsets_to_transaction(dict(output.handled), self.spec.group_id)
                await producer.commit_transaction()
            except BaseException:
                await self._abort(producer)
                # aiokafka keeps counting the sequence numbers of a refused record batch, and the
                # broker answers OUT_OF_ORDER_SEQUENCE_NUMBER to every later write of that
                # partition: a new producer (new epoch, sequences from 0) does the next attempt.
                self._renew = True
                raise
            for tp, offset in output.handled.items():
                self._committed[tp] = max(offset, self._committed.get(tp, 0))
        else:
            futures = await self._send_all(producer, output)
            await asyncio.gather(*futures)
        self.handler.acknowledged(output)
        # acknowledged: handled even when revoked meanwhile (the revoke waited for this and commits it)
        for tp, next_offset in output.handled.items():
            if next_offset > self.handled.get(tp, -1):
                self.handled[tp] = next_offset

    async def _send_all(self, producer: AIOKafkaProducer, output: StageOutput) -> list[asyncio.Future[Any]]:
        spec = self.spec
        futures: list[asyncio.Future[Any]] = []
        for event in output.events:  # first: a fault waits for no value list
            futures.append(await producer.send(spec.events_topic, event.value, event.key, headers=list(event.headers)))
        if output.records:
            if spec.records_topic is None:
                raise RuntimeError(f"stage {spec.name} made records but has no records topic")
            futures += await self._send_records(producer, spec.records_topic, output.records)
        for letter in output.dead_letters:
            futures.append(await self._send_letter(producer, letter))
        return futures

    async def _send_letter(self, producer: AIOKafkaProducer, letter: OutputRecord) -> asyncio.Future[Any]:
        """Send a dead letter; one too large for the topic goes without its value."""
        topic = self.spec.dead_letter_topic
        try:
            future = await producer.send(topic, letter.value, letter.key, headers=list(letter.headers))
        except (MessageSizeTooLargeError, RecordTooLargeError):
            fallback = without_value(letter)
            return await producer.send(topic, fallback.value, fallback.key, headers=list(fallback.headers))
        if self.spec.exactly_once:
            return future  # a refusal fails the transaction, and the attempt is retried whole

        async def acknowledged() -> Any:
            try:
                return await future
            except (MessageSizeTooLargeError, RecordTooLargeError):  # the topic's max.message.bytes
                fallback = without_value(letter)
                return await (await producer.send(topic, fallback.value, fallback.key, headers=list(fallback.headers)))

        return asyncio.ensure_future(acknowledged())

    async def _send_records(self, producer: AIOKafkaProducer, topic: str, records: Sequence[PartitionedRecord]) -> list[asyncio.Future[Any]]:
        if self.spec.exactly_once:  # send() adds each partition to the transaction; send_batch() would not
            return [
                await producer.send(_topic_of(r, topic), r.value, r.key, partition=r.partition, headers=list(r.headers))
                for r in records
            ]
        by_partition: dict[tuple[str, int], list[PartitionedRecord]] = {}
        for record in records:
            by_partition.setdefault((_topic_of(record, topic), record.partition), []).append(record)
        futures: list[asyncio.Future[Any]] = []
        for (destination, partition), batch in by_partition.items():
            futures += await send_to_partition(producer, destination, partition, ((r.key, r.value, r.headers) for r in batch))
        return futures

    async def _abort(self, producer: AIOKafkaProducer) -> None:
        """Abort the open transaction (if that fails too, the next producer's ``init_transactions`` aborts it)."""
        try:
            await asyncio.wait_for(producer.abort_transaction(), timeout=self.spec.request_timeout_ms / 1000 + 5)
        except Exception as exc:
            log.warning("%s: aborting the transaction failed (a new producer takes over): %s",
                        self.spec.name, self.describe(exc))  # fmt: skip

    async def _renew_producer(self) -> None:
        """A new producer with the same transactional id, after a failed transaction.

        Its ``init_transactions`` fences the old instance and aborts what it
        left open, as Kafka Streams does with a task's producer after an
        error.
        """
        old, self._producer = self._producer, None
        if old is not None:
            try:
                await asyncio.wait_for(old.stop(), timeout=10)
            except Exception as exc:
                log.warning("%s: stopping the failed transactional producer: %s", self.spec.name, self.describe(exc))
        producer = AIOKafkaProducer(**self._producer_options)
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer
        self._renew = False

    # -- offsets and the consumer group -----------------------------------

    async def _commit(self, *, force: bool = False) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        due = {tp: offset for tp, offset in self.handled.items() if offset > self._committed.get(tp, -1)}
        if not due or (not force and time.monotonic() - self._last_commit < self.spec.commit_every):
            return
        owned = consumer.assignment()
        due = {tp: offset for tp, offset in due.items() if tp in owned}
        if not due:
            return
        try:
            await consumer.commit(due)
        except KafkaError as exc:
            log.warning("%s: offset commit failed (committing again later): %s", self.spec.name, self.describe(exc))
            if self._on_commit is not None:
                self._on_commit(self.spec.name, False)
            return
        self._last_commit = time.monotonic()
        self._committed.update(due)
        if self._on_commit is not None:
            self._on_commit(self.spec.name, True)

    async def _wait_attempt(self) -> None:
        attempt = self._attempt
        if attempt is not None and not attempt.done():
            await asyncio.wait({attempt})

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        # The batch in flight is abandoned; a produce attempt under way finishes first
        # (a transaction commits or aborts whole), then what was acknowledged is committed.
        self._generation += 1
        await self._wait_attempt()
        for tp, offset in self.handler.revoked().items():
            if offset > self.handled.get(tp, -1):
                self.handled[tp] = offset
        if not self.spec.exactly_once:
            await self._commit(force=True)
        for tp in revoked:
            self.handled.pop(tp, None)
            self._committed.pop(tp, None)
        if revoked:
            log.info("%s: partitions revoked %s", self.spec.name, sorted(tp.partition for tp in revoked))

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._joined = True
        self.assignments += 1
        self._fresh_assignment = {tp for tp in assigned if tp.topic in self.spec.topics}
        if self._poll is not None:
            self._poll.on_assigned(assigned)
        log.info("%s: partitions assigned %s", self.spec.name, sorted(tp.partition for tp in assigned))


def _topic_of(record: PartitionedRecord, default: str) -> str:
    """Where ``record`` goes: its own ``topic`` if it names one, else the stage's records topic."""
    return getattr(record, "topic", None) or default


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class _Controls:
    """What a handler may ask of its loop (:class:`~ves_streams.runtime.outputs.LoopControls`)."""

    def __init__(self, loop: StageLoop) -> None:
        self._loop = loop

    async def hold(self, seconds: float) -> None:
        poll = self._loop._poll  # noqa: SLF001 - the loop's own helper
        if poll is None:
            await asyncio.sleep(max(0.0, seconds))
        else:
            await poll.sleep(seconds)

    async def hold_until(self, future: asyncio.Future[Any]) -> None:
        poll = self._loop._poll  # noqa: SLF001
        if poll is None:
            await asyncio.wait({future})
        else:
            await poll.until(future)

    def still_current(self) -> Callable[[], bool]:
        loop = self._loop
        generation = loop._generation  # noqa: SLF001
        return lambda: loop._generation == generation  # noqa: SLF001

    async def committed(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return await self._loop.group_committed(tps)
