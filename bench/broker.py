"""The one Kafka broker of a benchmark run, and what the run asks it.

One KRaft node (:class:`~ves_streams.dev.kafka.KafkaCluster`, full JIT)
serves every phase; phases keep apart by topic and consumer-group names
that carry the run id. The questions asked of it: create topics (and wait
for their leaders), end offsets, a group's committed offsets, and so the
group's lag.

A secured broker (``security="sasl_ssl"``: TLS and SCRAM, as ``ves-streams
kafka up --security sasl_ssl``) serves the system under test (workers, load)
through its SASL_SSL listeners, configured only from :meth:`BenchBroker.client_env`;
the run's own questions go through the brokers' internal plaintext listener.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from ves_streams.dev.kafka import SERVICE_JVM_OPTS, KafkaCluster
from ves_streams.runtime.kafka import KafkaConnection
from ves_streams.settings import Settings

__all__ = ["BenchBroker", "EndOffsets", "Lag"]


class Lag(dict[str, int]):
    """Records not consumed by a group, per topic (end offset minus committed offset)."""

    @property
    def total(self) -> int:
        return sum(self.values())


class BenchBroker:
    """A single-node broker (or, for the soak, a 3-node cluster) on free ports for the whole run."""

    def __init__(self, data_dir: Path, version: str, partitions: int, size: int = 1, security: str = "plaintext") -> None:
        self.default_partitions = partitions
        #: replication factor of the topics it creates (all nodes: the soak's 3-node cluster loses one at a time)
        self.replication = size
        self.cluster = KafkaCluster(
            data_dir, size=size, version=version, num_partitions=partitions, jvm_opts=SERVICE_JVM_OPTS, security=security
        )

    def client_env(self) -> dict[str, str]:
        """The ``VES_STREAMS_*`` Kafka settings of the system under test (the broker, and TLS/SASL when secured)."""
        return self.cluster.client_env()

    def client_connection(self) -> KafkaConnection:
        """:meth:`client_env` as the connection a load generator uses."""
        return KafkaConnection.from_settings(Settings.from_env(self.client_env()))

    def start(self) -> BenchBroker:
        self.cluster.start()
        return self

    def stop(self) -> None:
        self.cluster.stop()

    @property
    def bootstrap(self) -> str:
        return self.cluster.bootstrap_servers

    @property
    def url(self) -> str:
        return self.cluster.broker_url

    @property
    def pids(self) -> list[int]:
        """The broker's JVM process ids (for its CPU time)."""
        procs = getattr(self.cluster, "_procs", {})  # KafkaCluster keeps them private; no public accessor
        return [p.pid for p in procs.values() if p.poll() is None]

    async def create_topics(self, names: Sequence[str], partitions: int | None = None, timeout: float = 30.0) -> None:
        """Create ``names`` (those that exist are left alone) and wait until every partition has a leader."""
        count = partitions or self.default_partitions
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            new = [NewTopic(n, num_partitions=count, replication_factor=self.replication) for n in names if n not in existing]
            if new:
                await admin.create_topics(new)
            deadline = time.monotonic() + timeout
            while True:
                described = await admin.describe_topics(list(names))
                if all(t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
                       for t in described):  # fmt: skip
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"topics {list(names)} have no leader after {timeout:.0f} s")
                await asyncio.sleep(0.1)
        finally:
            await admin.close()

    async def topic_partitions(self, topics: Sequence[str]) -> list[TopicPartition]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            described = await admin.describe_topics(list(topics))
        finally:
            await admin.close()
        return [TopicPartition(t["topic"], p["partition"]) for t in described if t["error_code"] == 0
                for p in t["partitions"]]  # fmt: skip

    async def end_offsets(self, topics: Sequence[str]) -> dict[TopicPartition, int]:
        partitions = await self.topic_partitions(topics)
        if not partitions:
            return {}
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            return dict(await consumer.end_offsets(partitions))
        finally:
            await consumer.stop()

    async def committed(self, group: str) -> dict[TopicPartition, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
        return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}

    async def lag(self, group: str, topics: Sequence[str]) -> Lag:
        """End offsets minus ``group``'s committed offsets, per topic (uncommitted partitions count whole)."""
        ends = await self.end_offsets(topics)
        committed = await self.committed(group)
        lag = Lag({t: 0 for t in topics})
        for tp, end in ends.items():
            lag[tp.topic] += max(0, end - committed.get(tp, 0))
        return lag

    async def settled_lag(self, group: str, topics: Sequence[str], within: float) -> Lag:
        """:meth:`lag`, read again for up to ``within`` seconds until it is zero (commits are periodic)."""
        deadline = time.monotonic() + within
        while True:
            lag = await self.lag(group, topics)
            if lag.total == 0 or time.monotonic() >= deadline:
                return lag
            await asyncio.sleep(0.5)

    async def message_count(self, topics: Sequence[str]) -> int:
        """Records in ``topics`` (end offsets summed; the run's topics are never compacted or trimmed)."""
        return sum((await self.end_offsets(topics)).values())


class EndOffsets:
    """A long-lived consumer that answers "how many records are in these topics now", cheaply.

    ``async with EndOffsets(bootstrap) as ends: await ends.total(["t"])``
    """

    def __init__(self, bootstrap: str) -> None:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self._partitions: dict[str, list[TopicPartition]] = {}

    async def __aenter__(self) -> EndOffsets:
        await self._consumer.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self._consumer.stop()

    async def total(self, topics: Sequence[str]) -> int:
        partitions: list[TopicPartition] = []
        for topic in topics:
            if topic not in self._partitions:
                known = self._consumer.partitions_for_topic(topic)
                if not known:
                    await self._consumer._client.force_metadata_update()  # noqa: SLF001 (aiokafka has no public call)
                    known = self._consumer.partitions_for_topic(topic)
                if not known:
                    continue
                self._partitions[topic] = [TopicPartition(topic, p) for p in sorted(known)]
            partitions += self._partitions[topic]
        if not partitions:
            return 0
        return sum((await self._consumer.end_offsets(partitions)).values())
