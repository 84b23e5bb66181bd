"""The sink service against a real broker and a real collector process (no HTTP mocks).

Each test gets its own topics and consumer group on the session broker and
its own collector subprocess. The sink runs in the test's event loop
(``asyncio.run``); the collector fixture's blocking helpers are called via
``asyncio.to_thread`` so they never stall the sink.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from ves_streams.sink.batching import OPEN_BUDGET, BatchLimits
from ves_streams.sink.config import CollectorConfig, Secret, SinkConfig
from ves_streams.sink.retry import RetryPolicy
from ves_streams.sink.service import SinkService

from tests.plugins.collector import VesCollector
from tests.plugins.kafka import create_topics, new_topic_name
from tests.sink.events import event, event_id, kafka_headers, kafka_value

pytestmark = [pytest.mark.integration, pytest.mark.broker_version, pytest.mark.timeout(180)]

DOMAINS = ("measurement", "heartbeat", "fault")


# -- helpers -----------------------------------------------------------------


def _topics(kafka: Any, name: str, partitions: int = 4) -> tuple[str, str]:
    topic = new_topic_name(f"sink-{name}")
    create_topics(kafka.bootstrap_servers, [topic], partitions=partitions)
    create_topics(kafka.bootstrap_servers, [f"{topic}-dlq"], partitions=1)
    return topic, f"{topic}-dlq"


def _config(kafka: Any, topic: str, collector: CollectorConfig, **overrides: Any) -> SinkConfig:
    settings: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "group_id": f"{topic}-sink",
        "events_topic": topic,
        "dlq_topic": f"{topic}-dlq",
        "collector": collector,
        "batching": BatchLimits(max_events=20, linger_ms=50),
        "retry": RetryPolicy(initial_backoff=0.1, max_backoff=0.5, failback_after=2.0),
    }
    settings.update(overrides)
    return SinkConfig(**settings)


def _stream(hosts: int, per_host: int) -> list[dict[str, Any]]:
    """Events interleaved across hosts, ``sequence`` rising per host; each host changes domain every 5 events."""
    out = []
    for seq in range(per_host):
        for h in range(hosts):
            out.append(event(DOMAINS[(seq // 5 + h) % len(DOMAINS)], f"host-{h}", seq))
    return out


async def _produce(bootstrap: str, topic: str, items: list[Any], *, headers: bool = True) -> None:
    """Produce events (dicts, keyed by sourceName) or raw ``(key, value)`` pairs, in order."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = []
        for item in items:
            if isinstance(item, dict):
                key = item["commonEventHeader"]["sourceName"].encode()
                futures.append(
                    await producer.send(
                        topic, kafka_value(item), key=key, headers=kafka_headers(item) if headers else None
                    )
                )
            else:
                key, value = item
                futures.append(await producer.send(topic, value, key=key))
        for f in futures:
            await f
    finally:
        await producer.stop()


async def _read_dlq(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                out.extend(messages)
        return out
    finally:
        await consumer.stop()


async def _committed(bootstrap: str, group: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
    finally:
        await admin.close()


async def _end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - test helper
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = await consumer.end_offsets(partitions)
        return {tp.partition: off for tp, off in ends.items() if off > 0}
    finally:
        await consumer.stop()


async def _wait_committed(bootstrap: str, group: str, topic: str, timeout: float = 20.0) -> dict[int, int]:
    ends = await _end_offsets(bootstrap, topic)
    deadline = time.monotonic() + timeout
    while True:
        committed = await _committed(bootstrap, group)
        if committed == ends or time.monotonic() > deadline:
            assert committed == ends, f"committed {committed}, end offsets {ends}"
            return committed
        await asyncio.sleep(0.2)


async def _wait_for(collector: VesCollector, what: int | Callable[[list[dict[str, Any]]], object], timeout: float = 30.0) -> list[dict[str, Any]]:
    return await asyncio.to_thread(collector.wait_for, what, timeout)


def _ids(events: list[dict[str, Any]]) -> list[str]:
    return [e["commonEventHeader"]["eventId"] for e in events]


def _assert_once_and_in_host_domain_order(accepted: list[dict[str, Any]], sent: list[dict[str, Any]]) -> None:
    ids = _ids(accepted)
    assert sorted(ids) == sorted(_ids(sent)), "every event exactly once"
    by_host: dict[tuple[str, str], list[int]] = {}
    for e in accepted:
        h = e["commonEventHeader"]
        by_host.setdefault((h["sourceName"], h["domain"]), []).append(h["sequence"])
    for (host, domain), seqs in by_host.items():
        assert seqs == sorted(seqs), f"{host}'s {domain} events delivered out of order: {seqs}"


# -- tests -------------------------------------------------------------------


def test_events_are_delivered_in_batches_once_each_in_key_order(kafka: Any, ves_collector: VesCollector) -> None:
    topic, _ = _topics(kafka, "deliver")
    sent = _stream(hosts=8, per_host=30)
    config = _config(kafka, topic, CollectorConfig(url=ves_collector.url))

    async def main() -> None:
        await _produce(kafka.bootstrap_servers, topic, sent)
        async with SinkService(config):
            accepted = await _wait_for(ves_collector, len(sent))
            await _wait_committed(kafka.bootstrap_servers, config.group_id, topic)
        _assert_once_and_in_host_domain_order(accepted, sent)

    asyncio.run(main())
    records = ves_collector.records()
    batch_requests = {r["request"] for r in records}
    assert all(r["path"].endswith("/eventListener/v7/eventBatch") for r in records)
    assert len(batch_requests) < len(sent) / 3, "events travel in batches, not one by one"
    assert ves_collector.stats()["requests"].get("400", 0) == 0, "no batch mixed domains"


def test_outage_loses_nothing_commits_nothing_and_survives_a_sink_restart(
    kafka: Any, ves_collector: VesCollector
) -> None:
    topic, _ = _topics(kafka, "outage")
    sent = _stream(hosts=6, per_host=40)
    config = _config(kafka, topic, CollectorConfig(url=ves_collector.url))
    ves_collector.control(status=503, seconds=14)
    outage_started = time.monotonic()

    async def main() -> None:
        await _produce(kafka.bootstrap_servers, topic, sent)
        first = SinkService(config)
        await first.start()
        try:
            await asyncio.sleep(4)
            assert not first.crashed
            held = first.in_flight()  # the memory bound is the point
            assert 0 < held <= OPEN_BUDGET * config.batching.max_events + config.batching.max_events
            assert await _committed(kafka.bootstrap_servers, config.group_id) == {}, "nothing committed in the outage"
        finally:
            await first.stop()
        assert ves_collector.events() == []
        async with SinkService(config) as second:
            await asyncio.sleep(3)
            assert await _committed(kafka.bootstrap_servers, config.group_id) == {}
            accepted = await _wait_for(ves_collector, len(sent), timeout=60)
            assert time.monotonic() - outage_started >= 13.5
            await _wait_committed(kafka.bootstrap_servers, config.group_id, topic)
            assert not second.crashed
        _assert_once_and_in_host_domain_order(accepted, sent)

    asyncio.run(main())
    assert ves_collector.stats()["requests"].get("503", 0) >= 5, "the sink kept retrying through the outage"


def test_refused_event_lands_in_the_dlq_with_status_and_body_and_the_rest_are_delivered(
    kafka: Any, ves_collector: VesCollector
) -> None:
    topic, dlq = _topics(kafka, "refused")
    sent = [event("fault", f"host-{i % 3}", i) for i in range(15)]
    bad = event_id("fault", "host-1", 7)
    ves_collector.control(reject_event_ids=[bad])
    config = _config(kafka, topic, CollectorConfig(url=ves_collector.url))

    async def main() -> None:
        await _produce(kafka.bootstrap_servers, topic, sent)
        async with SinkService(config):
            accepted = await _wait_for(ves_collector, len(sent) - 1)
            letters = await _read_dlq(kafka.bootstrap_servers, dlq, 1)
            await _wait_committed(kafka.bootstrap_servers, config.group_id, topic)
        good = [e for e in sent if e["commonEventHeader"]["eventId"] != bad]
        _assert_once_and_in_host_domain_order(accepted, good)
        assert len(letters) == 1
        letter = letters[0]
        headers = {k: v.decode() for k, v in letter.headers}
        assert letter.key == b"host-1"
        assert orjson.loads(letter.value)["event"]["commonEventHeader"]["eventId"] == bad
        assert headers["ves-streams-status"] == "400"
        assert "requestError" in headers["ves-streams-body"]
        assert headers["ves-streams-source-topic"] == topic
        assert headers["ves-domain"] == "fault"

    asyncio.run(main())
    assert ves_collector.events()[-1]["commonEventHeader"]["eventId"] != bad


def test_429_retry_after_is_honoured(kafka: Any, ves_collector: VesCollector) -> None:
    topic, _ = _topics(kafka, "throttled", partitions=1)
    sent = [event("heartbeat", "host-0", i) for i in range(5)]
    ves_collector.control(status=429, retry_after=1.5, count=3)
    config = _config(kafka, topic, CollectorConfig(url=ves_collector.url), batching=BatchLimits(max_events=100))

    async def main() -> float:
        await _produce(kafka.bootstrap_servers, topic, sent)
        async with SinkService(config):
            started = time.monotonic()
            accepted = await _wait_for(ves_collector, len(sent))
            elapsed = time.monotonic() - started
        _assert_once_and_in_host_domain_order(accepted, sent)
        return elapsed

    elapsed = asyncio.run(main())
    # three 429s each asking for 1.5 s; the sink's own backoff (<= 0.5 s) would be far quicker
    assert elapsed >= 4.4, f"delivered after {elapsed:.2f}s: Retry-After was not honoured"
    assert ves_collector.stats()["requests"].get("429") == 3


def test_basic_auth_and_mutual_tls_with_a_ca_bundle_never_log_the_password(
    kafka: Any,
    ves_collector_factory: Callable[..., VesCollector],
    ves_collector_tls_files: Any,
    ves_collector_client_tls_files: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    password = "Tr0ub4dor&3-sink"
    collector = ves_collector_factory(
        username="sink", password=password, tls=ves_collector_tls_files, client_tls=ves_collector_client_tls_files
    )
    assert collector.url.startswith("https://")
    topic, _ = _topics(kafka, "tls")
    sent = [event("measurement", f"host-{i % 2}", i) for i in range(10)]
    collector.control(status=503, count=2)  # make the sink log retries too
    config = _config(
        kafka,
        topic,
        CollectorConfig(
            url=collector.url,
            username="sink",
            password=Secret(password),
            ca_bundle=str(ves_collector_tls_files.cert),
            client_cert=str(ves_collector_client_tls_files.cert),
            client_key=str(ves_collector_client_tls_files.key),
        ),
    )
    caplog.set_level(logging.DEBUG)

    async def main() -> None:
        await _produce(kafka.bootstrap_servers, topic, sent)
        async with SinkService(config) as service:
            accepted = await _wait_for(collector, len(sent))
            logging.getLogger("test").info("service %r config %s", service, config)
        _assert_once_and_in_host_domain_order(accepted, sent)

    asyncio.run(main())
    assert collector.stats()["requests"].get("503") == 2
    assert "retrying" in caplog.text, "the retries were logged"
    assert password not in caplog.text
    assert password not in repr(config) and password not in str(config)


def test_wrong_password_is_retried_not_dead_lettered(
    kafka: Any, ves_collector_factory: Callable[..., VesCollector], caplog: pytest.LogCaptureFixture
) -> None:
    password = "right-Pa55word"
    collector = ves_collector_factory(username="sink", password=password)
    topic, dlq = _topics(kafka, "auth")
    sent = [event("heartbeat", "host-0", i) for i in range(3)]
    config = _config(kafka, topic, CollectorConfig(url=collector.url, username="sink", password=Secret("wrong-Pa55word")))
    caplog.set_level(logging.DEBUG)

    async def main() -> None:
        await _produce(kafka.bootstrap_servers, topic, sent)
        async with SinkService(config) as service:
            await asyncio.sleep(3)
            assert not service.crashed
        assert await _read_dlq(kafka.bootstrap_servers, dlq, 1, timeout=2) == []
        assert await _committed(kafka.bootstrap_servers, config.group_id) == {}

    asyncio.run(main())
    assert collector.stats()["requests"].get("401", 0) >= 2
    assert "credentials are wrong" in caplog.text
    assert "wrong-Pa55word" not in caplog.text


def test_backup_url_takes_over_while_the_primary_is_down(
    kafka: Any, ves_collector_factory: Callable[..., VesCollector]
) -> None:
    primary, backup = ves_collector_factory(), ves_collector_factory()
    topic, _ = _topics(kafka, "backup")
    first = _stream(hosts=4, per_host=10)
    second = [event("heartbeat", f"host-{h}", 100 + i) for i in range(5) for h in range(4)]
    primary.control(status=503, seconds=6)
    down_until = time.monotonic() + 6
    config = _config(kafka, topic, CollectorConfig(url=primary.url, backup_url=backup.url))

    async def main() -> None:
        await _produce(kafka.bootstrap_servers, topic, first)
        async with SinkService(config):
            on_backup = await _wait_for(backup, len(first), timeout=20)
            _assert_once_and_in_host_domain_order(on_backup, first)
            assert primary.events() == []
            await asyncio.sleep(max(0.0, down_until - time.monotonic()) + 0.5)
            await _produce(kafka.bootstrap_servers, topic, second)
            await _wait_for(primary, 1, timeout=20)
            await asyncio.to_thread(
                lambda: _wait_until(lambda: len(primary.events()) + len(backup.events()) >= len(first) + len(second))
            )
        everything = backup.events() + primary.events()
        assert sorted(_ids(everything)) == sorted(_ids(first + second))

    asyncio.run(main())
    assert primary.stats()["requests"].get("503", 0) >= 1


def test_event_over_the_byte_limit_and_malformed_records_are_dead_lettered(
    kafka: Any, ves_collector: VesCollector
) -> None:
    topic, dlq = _topics(kafka, "oversize", partitions=1)
    small_before, big, small_after = (
        event("fault", "host-0", 1),
        event("fault", "host-0", 2, padding=8000),
        event("fault", "host-0", 3),
    )
    config = _config(
        kafka, topic, CollectorConfig(url=ves_collector.url), batching=BatchLimits(max_bytes=4096, linger_ms=50)
    )

    async def main() -> None:
        await _produce(kafka.bootstrap_servers, topic, [small_before, big])
        await _produce(kafka.bootstrap_servers, topic, [(b"host-9", b"not json"), (b"host-9", b'{"event": {}}')])
        await _produce(kafka.bootstrap_servers, topic, [small_after], headers=False)
        async with SinkService(config) as service:
            accepted = await _wait_for(ves_collector, 2)
            letters = await _read_dlq(kafka.bootstrap_servers, dlq, 3)
            await _wait_committed(kafka.bootstrap_servers, config.group_id, topic)
            assert not service.crashed
        assert _ids(accepted) == _ids([small_before, small_after])
        reasons = sorted(dict(m.headers)["ves-streams-reason"].decode() for m in letters)
        assert len(reasons) == 3
        assert any("too large" in r for r in reasons)
        assert any("not JSON" in r for r in reasons)
        assert any("no domain" in r for r in reasons)
        too_big = next(m for m in letters if b"too large" in dict(m.headers)["ves-streams-reason"])
        assert too_big.value == kafka_value(big)

    asyncio.run(main())


def test_batching_off_posts_single_events(kafka: Any, ves_collector: VesCollector) -> None:
    topic, _ = _topics(kafka, "single", partitions=2)
    sent = _stream(hosts=3, per_host=4)
    config = _config(kafka, topic, CollectorConfig(url=ves_collector.url), batching=BatchLimits(enabled=False))

    async def main() -> None:
        await _produce(kafka.bootstrap_servers, topic, sent)
        async with SinkService(config):
            accepted = await _wait_for(ves_collector, len(sent))
        _assert_once_and_in_host_domain_order(accepted, sent)

    asyncio.run(main())
    assert {r["path"] for r in ves_collector.records()} == {"/eventListener/v7"}


def _wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.05)


class _ImpatientSink(SinkService):
    """A sink whose group evicts a member that does not poll for 2 s (the default is 5 min)."""

    def _consumer_options(self, security: dict[str, Any]) -> dict[str, Any]:
        return {**super()._consumer_options(security), "max_poll_interval_ms": 2000}


def test_a_long_outage_keeps_the_group_membership_and_delivers_once(
    kafka: Any, ves_collector: VesCollector, caplog: pytest.LogCaptureFixture
) -> None:
    topic, _ = _topics(kafka, "membership", partitions=2)
    sent = _stream(hosts=4, per_host=10)
    config = _config(kafka, topic, CollectorConfig(url=ves_collector.url))
    ves_collector.control(status=503, seconds=7)
    caplog.set_level(logging.INFO, logger="ves_streams.runtime.loop")

    async def main() -> None:
        await _produce(kafka.bootstrap_servers, topic, sent)
        async with _ImpatientSink(config) as service:
            accepted = await _wait_for(ves_collector, len(sent), timeout=40)
            await _wait_committed(kafka.bootstrap_servers, config.group_id, topic)
            assert not service.crashed
        _assert_once_and_in_host_domain_order(accepted, sent)

    asyncio.run(main())
    assignments = [r for r in caplog.records if "partitions assigned" in r.getMessage()]
    assert len(assignments) == 1, "waiting out the outage (3x the poll interval) never cost the group membership"


def test_two_sinks_share_the_partitions_and_a_leaving_one_loses_nothing(
    kafka: Any, ves_collector: VesCollector
) -> None:
    topic, _ = _topics(kafka, "scale", partitions=4)
    first_wave = _stream(hosts=8, per_host=10)
    second_wave = [event("heartbeat", f"host-{h}", 100 + i) for i in range(10) for h in range(8)]
    config = _config(kafka, topic, CollectorConfig(url=ves_collector.url))

    async def main() -> None:
        a, b = SinkService(config), SinkService(config)
        await a.start()
        await b.start()
        try:
            deadline = time.monotonic() + 30

            def shared() -> bool:
                sizes = [len(s._consumer.assignment()) if s._consumer else 0 for s in (a, b)]  # noqa: SLF001
                return min(sizes) > 0 and sum(sizes) == 4

            while not shared():
                assert time.monotonic() < deadline, "the two sinks never shared the 4 partitions"
                await asyncio.sleep(0.1)
            await _produce(kafka.bootstrap_servers, topic, first_wave)
            accepted = await _wait_for(ves_collector, len(first_wave))
            _assert_once_and_in_host_domain_order(accepted, first_wave)
            await a.stop()
            await _produce(kafka.bootstrap_servers, topic, second_wave)
            everything = await _wait_for(
                ves_collector,
                lambda events: set(_ids(second_wave)) <= set(_ids(events)),
                timeout=40,
            )
            await _wait_committed(kafka.bootstrap_servers, config.group_id, topic)
            assert sorted(set(_ids(everything))) == sorted(_ids(first_wave + second_wave))
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(main())


def test_events_of_an_aborted_transaction_never_reach_the_collector(kafka: Any, ves_collector: VesCollector) -> None:
    """Under exactly_once, workers write ves-events in transactions; the sink reads committed data only."""
    topic, _ = _topics(kafka, "txn", partitions=1)
    aborted = [event("fault", "host-a", seq) for seq in range(3)]
    committed = [event("fault", "host-a", seq) for seq in range(3, 6)]
    config = _config(kafka, topic, CollectorConfig(url=ves_collector.url))

    async def write(producer: AIOKafkaProducer, events: list[dict[str, Any]]) -> None:
        for item in events:
            key = item["commonEventHeader"]["sourceName"].encode()
            await producer.send(topic, kafka_value(item), key=key, headers=kafka_headers(item))

    async def main() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, transactional_id=f"{topic}-txn")
        await producer.start()
        try:
            await producer.begin_transaction()
            await write(producer, aborted)
            await producer.flush()
            await producer.abort_transaction()
            async with producer.transaction():
                await write(producer, committed)
        finally:
            await producer.stop()
        async with SinkService(config):
            accepted = await _wait_for(ves_collector, len(committed))
            await asyncio.sleep(1.0)  # give an aborted event the chance to (wrongly) arrive
            accepted = await asyncio.to_thread(ves_collector.events)
        assert sorted(_ids(accepted)) == sorted(_ids(committed))

    asyncio.run(main())


def test_readiness_names_the_failing_collector_after_the_configured_time_and_recovers(
    kafka: Any, ves_collector: VesCollector
) -> None:
    from ves_streams.app import sink_readiness

    topic, _ = _topics(kafka, "unready")
    sent = _stream(hosts=2, per_host=5)
    config = _config(kafka, topic, CollectorConfig(url=ves_collector.url))
    ves_collector.control(status=503, seconds=8)

    async def main() -> None:
        await _produce(kafka.bootstrap_servers, topic, sent)
        async with SinkService(config) as service:
            deadline = time.monotonic() + 20
            while not service.is_ready() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert sink_readiness(service, unready_after=2.0) is None, "a failure younger than the limit is not an outage"
            while service.failing_for() <= 2.5 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            reason = sink_readiness(service, unready_after=2.0)
            assert reason is not None and "every delivery to the collector has failed for" in reason, reason
            assert "VES_STREAMS_SINK_UNREADY_AFTER" in reason
            await _wait_for(ves_collector, len(sent), timeout=30)
            assert service.failing_for() == 0.0
            assert sink_readiness(service, unready_after=2.0) is None

    asyncio.run(main())


def test_an_event_answered_500_while_others_are_accepted_is_dead_lettered_and_its_hosts_go_on(
    kafka: Any, ves_collector: VesCollector
) -> None:
    topic, dlq = _topics(kafka, "poisoned", partitions=1)
    sent = [event("fault", f"host-{i % 4}", i) for i in range(40)]
    bad = event_id("fault", "host-2", 6)
    ves_collector.control(reject_event_ids=[bad], reject_status=500)
    config = _config(kafka, topic, CollectorConfig(url=ves_collector.url))

    async def main() -> None:
        await _produce(kafka.bootstrap_servers, topic, sent)
        async with SinkService(config) as sink:
            accepted = await _wait_for(ves_collector, len(sent) - 1)
            letters = await _read_dlq(kafka.bootstrap_servers, dlq, 1)
            await _wait_committed(kafka.bootstrap_servers, config.group_id, topic)
            assert not sink.crashed
        good = [e for e in sent if e["commonEventHeader"]["eventId"] != bad]
        _assert_once_and_in_host_domain_order(accepted, good)
        [letter] = letters
        headers = {k: v.decode() for k, v in letter.headers}
        assert orjson.loads(letter.value)["event"]["commonEventHeader"]["eventId"] == bad
        assert headers["ves-streams-status"] == "500"
        assert "while it accepted other requests" in headers["ves-streams-reason"]
        assert "SVC1000" in headers["ves-streams-body"]

    asyncio.run(main())


def test_a_collector_configuration_refusal_holds_delivery_dead_letters_nothing_and_resumes_by_itself(
    kafka: Any, ves_collector: VesCollector, caplog: pytest.LogCaptureFixture
) -> None:
    from ves_streams.app import sink_readiness

    topic, dlq = _topics(kafka, "held", partitions=2)
    sent = _stream(hosts=4, per_host=15)
    ves_collector.control(onap_refusal="no_stream", refuse_domains=["fault"])
    config = _config(kafka, topic, CollectorConfig(url=ves_collector.url))

    async def main() -> None:
        await _produce(kafka.bootstrap_servers, topic, sent)
        async with SinkService(config) as service:
            deadline = time.monotonic() + 30
            while (reason := sink_readiness(service, unready_after=600)) is None:
                assert time.monotonic() < deadline, "delivery was never held"
                await asyncio.sleep(0.1)
            await asyncio.sleep(2)
            assert all(e["commonEventHeader"]["domain"] != "fault" for e in ves_collector.events())
            reason = sink_readiness(service, unready_after=600)
            assert reason is not None and "fault events held" in reason and "collector.dmaap.streamid" in reason
            assert "No domain defined for stream id" in reason
            committed = await _committed(kafka.bootstrap_servers, config.group_id)
            ends = await _end_offsets(kafka.bootstrap_servers, topic)
            assert committed != ends, "nothing past a held event is committed"
            await asyncio.to_thread(ves_collector.control, reset=True)
            accepted = await _wait_for(ves_collector, len(sent))
            await _wait_committed(kafka.bootstrap_servers, config.group_id, topic)
            assert sink_readiness(service, unready_after=600) is None
            assert not service.crashed
        _assert_once_and_in_host_domain_order(accepted, sent)
        assert await _read_dlq(kafka.bootstrap_servers, dlq, 1, timeout=3) == [], "nothing dead-lettered"

    with caplog.at_level(logging.INFO, logger="ves_streams.sink"):
        asyncio.run(main())
    holding = [r for r in caplog.records if r.getMessage().startswith("holding delivery of fault events")]
    assert len(holding) == 1, "one line a person can act on"
    assert "collector.dmaap.streamid" in holding[0].getMessage()


def test_a_collector_echoing_the_credentials_puts_them_in_no_log_line_and_no_dead_letter(
    kafka: Any, ves_collector_factory: Callable[..., VesCollector], caplog: pytest.LogCaptureFixture
) -> None:
    import base64

    password = "echo-Pa55-in-dlq?"
    basic = base64.b64encode(f"sink:{password}".encode()).decode()
    collector = ves_collector_factory(username="sink", password=password)
    topic, dlq = _topics(kafka, "echo", partitions=1)
    sent = [event("fault", f"host-{i % 3}", i) for i in range(9)]
    bad = event_id("fault", "host-1", 4)
    # every error answer echoes the Authorization header and the credentials; one event is refused, one 503 retried
    collector.control(echo_auth=True, reject_event_ids=[bad], status=503, count=1)
    config = _config(kafka, topic, CollectorConfig(url=collector.url, username="sink", password=Secret(password)))
    caplog.set_level(logging.DEBUG)

    async def main() -> list[Any]:
        await _produce(kafka.bootstrap_servers, topic, sent)
        async with SinkService(config):
            await _wait_for(collector, len(sent) - 1)
            letters = await _read_dlq(kafka.bootstrap_servers, dlq, 1)
            await _wait_committed(kafka.bootstrap_servers, config.group_id, topic)
        return letters

    letters = asyncio.run(main())
    [letter] = letters
    headers = {k: v for k, v in letter.headers}
    assert b'"echo"' in headers["ves-streams-body"], "the collector did echo the credentials"
    written = b"".join(v for _k, v in letter.headers) + letter.value + caplog.text.encode()
    for secret in (password, basic):
        assert secret.encode() not in written, f"{secret!r} leaked"


def test_an_event_failing_the_ves_schema_is_dead_lettered_before_it_is_sent(
    kafka: Any, ves_collector: VesCollector
) -> None:
    topic, dlq = _topics(kafka, "invalid", partitions=1)
    sent = [event("measurement", f"host-{i % 2}", i) for i in range(8)]
    bad = sent[3]
    bad["commonEventHeader"]["sequence"] = "three"
    config = _config(kafka, topic, CollectorConfig(url=ves_collector.url))

    async def main() -> list[Any]:
        await _produce(kafka.bootstrap_servers, topic, sent)
        async with SinkService(config):
            await _wait_for(ves_collector, len(sent) - 1)
            letters = await _read_dlq(kafka.bootstrap_servers, dlq, 1)
            await _wait_committed(kafka.bootstrap_servers, config.group_id, topic)
        return letters

    [letter] = asyncio.run(main())
    headers = {k: v.decode() for k, v in letter.headers}
    assert headers["ves-streams-reason"] == (
        "event does not conform to the VES 7 schema: event.commonEventHeader.sequence must be integer"
    )
    assert orjson.loads(letter.value)["event"]["commonEventHeader"]["eventId"] == bad["commonEventHeader"]["eventId"]
    assert ves_collector.rejected() == [], "the collector never saw it"
    assert len(ves_collector.events()) == len(sent) - 1
