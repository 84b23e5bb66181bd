"""Contract tests: what ves_streams.runtime.faust_compat relies on, against the installed faust-streaming.

One test (or a few) per function of the adapter, each on a real ``faust.App``
that is never started against a broker. They fail when faust-streaming
renames or changes what we use, before a worker does.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
from pathlib import Path
from typing import Any

import faust
import pytest
import rocksdict
from faust.types import TP, Message
from mode import Service

from ves_streams.runtime import faust_compat
from ves_streams.runtime.faust_compat import FaustCompatError


def app_(**options: Any) -> faust.App:
    options.setdefault("store", "memory://")
    options.setdefault("web_enabled", False)
    return faust.App(options.pop("id", "compat"), **options)


class Cluster:
    """What Faust's assignor reads of aiokafka's cluster metadata: partitions per topic."""

    def __init__(self, partitions: dict[str, int]) -> None:
        self.partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        n = self.partitions.get(topic)
        return set(range(n)) if n else None


def assign(apps: list[faust.App], partitions: dict[str, int]) -> None:
    """One real Faust assignment round: the first app's assignor is the group leader."""
    topics = set(partitions)
    metadata = {f"member-{i}": app.assignor.metadata(topics) for i, app in enumerate(apps)}
    assignments = apps[0].assignor.assign(Cluster(partitions), metadata)  # type: ignore[arg-type]
    for i, app in enumerate(apps):
        app.assignor.on_assignment(assignments[f"member-{i}"])


def test_the_tested_faust_is_installed() -> None:
    """The contract below is checked against this version (pyproject.toml pins the same range)."""
    major, minor, *_ = (int(p) for p in importlib.metadata.version("faust-streaming").split(".")[:3])
    assert (major, minor) == (0, 15)
    assert faust_compat.faust_version() == importlib.metadata.version("faust-streaming")


def test_pyproject_pins_the_tested_range() -> None:
    import tomllib

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    assert f"faust-streaming{faust_compat.TESTED_FAUST}" in project["dependencies"]


# -- check() ---------------------------------------------------------------


def test_check_passes_on_the_installed_faust_for_every_store_and_guarantee() -> None:
    faust_compat.check(app_(store="rocksdb://", processing_guarantee="exactly_once"))
    faust_compat.check(app_(store="memory://", processing_guarantee="at_least_once"))


@pytest.mark.parametrize(
    ("dotted", "name"),
    [
        ("faust.transport.drivers.aiokafka.Producer", "_ensure_producer"),
        ("faust.transport.consumer.Consumer", "force_commit"),
        ("faust.transport.consumer.ThreadDelegateConsumer", "topic_partitions"),
        ("faust.transport.consumer.ThreadDelegateConsumer", "highwater"),
        ("faust.transport.consumer.ThreadDelegateConsumer", "assignment"),
        ("faust.stores.rocksdb.Store", "_db_for_partition"),
        ("faust.assignor.partition_assignor.PartitionAssignor", "group_for_topic"),
        ("faust.assignor.partition_assignor.PartitionAssignor", "assigned_actives"),
        ("faust.tables.manager.TableManager", "recovery"),
        ("faust.tables.recovery.Recovery", "in_recovery"),
        ("faust.sensors.monitor.Monitor", "tp_committed_offsets"),
        ("faust.app.base.App", "on_started_init_extra_services"),
    ],
)
def test_check_names_what_is_missing_and_the_faust_version(monkeypatch: pytest.MonkeyPatch, dotted: str, name: str) -> None:
    module, _, cls = dotted.rpartition(".")
    monkeypatch.delattr(getattr(importlib.import_module(module), cls), name)
    with pytest.raises(FaustCompatError) as info:
        faust_compat.check(app_(store="rocksdb://", processing_guarantee="exactly_once"))
    assert name in str(info.value)
    assert f"faust-streaming {importlib.metadata.version('faust-streaming')}" in str(info.value)


def test_check_catches_a_changed_transactional_id_format(monkeypatch: pytest.MonkeyPatch) -> None:
    from faust.transport.consumer import TransactionManager

    monkeypatch.setattr(TransactionManager, "transactional_id_format", "{group_id}-{tpg.partition}-{tpg.group}")
    with pytest.raises(FaustCompatError, match="transactional_id_format"):
        faust_compat.check(app_())


def test_create_app_runs_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    from faust.stores.rocksdb import Store

    from ves_streams.app import create_app, load_settings

    settings, topology = load_settings({"VES_STREAMS_APP_ID": "compat-check"})
    monkeypatch.delattr(Store, "_db_for_partition")
    with pytest.raises(FaustCompatError, match="_db_for_partition"):
        create_app(settings, topology)


# -- add_service -----------------------------------------------------------


class Recorded(Service):
    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.events = events

    async def on_start(self) -> None:
        self.events.append("service started")


def test_an_added_service_instance_is_started_by_the_worker_after_table_recovery() -> None:
    """What App.on_started does once the worker started the app: recovery first, then our services."""

    async def scenario() -> list[str]:
        app = app_()
        log: list[str] = []
        service = Recorded(log)
        faust_compat.add_service(app, service)
        assert faust_compat.extra_services(app) == [service]

        async def recovered() -> bool:
            log.append("tables recovered")
            return False  # False: not stopped during recovery

        app.tables.wait_until_recovery_completed = recovered  # type: ignore[method-assign]
        app._started.set()  # noqa: SLF001 - mode: on_started runs on a started service
        await app.on_started()
        await service.stop()
        return log

    assert asyncio.run(scenario()) == ["tables recovered", "service started"]


def test_extra_services_lists_decorated_service_classes_too() -> None:
    app = app_()

    @app.service
    class Decorated(Service):
        pass

    assert faust_compat.extra_services(app) == [Decorated]


# -- partition_db_opener / is_rocksdb_store --------------------------------


def test_the_partition_database_is_the_rocksdict_faust_reads_the_partition_from(tmp_path: Path) -> None:
    app = app_(store="rocksdb://", datadir=str(tmp_path))
    table = app.Table("t", key_type=bytes, value_type=bytes, partitions=4)
    store = table.data
    assert faust_compat.is_rocksdb_store(store)
    db = faust_compat.partition_db_opener(store)(2)
    assert isinstance(db, rocksdict.Rdict)
    db.put(b"key", b"value")
    assert faust_compat.partition_db_opener(store)(2) is db  # opened once, the same database every time
    assert store[b"key"] == b"value"  # Faust's own read finds it, unchanged


def test_a_memory_store_or_a_mapping_is_not_a_rocksdb_store() -> None:
    table = app_(store="memory://").Table("t", key_type=bytes, value_type=bytes)
    assert not faust_compat.is_rocksdb_store(table.data)
    assert not faust_compat.is_rocksdb_store({})


def test_partition_db_opener_raises_for_a_store_without_it() -> None:
    with pytest.raises(FaustCompatError, match="_db_for_partition"):
        faust_compat.partition_db_opener(object())


# -- in_recovery -----------------------------------------------------------


def test_in_recovery_follows_faust_table_recovery() -> None:
    app = app_()
    recovery = app.tables.recovery
    assert faust_compat.in_recovery(app) is False
    recovery._set_recovery_started()  # noqa: SLF001 - what Recovery does when a recovery begins
    assert faust_compat.in_recovery(app) is True
    recovery._set_recovery_ended()  # noqa: SLF001
    assert faust_compat.in_recovery(app) is False


# -- plain_producer --------------------------------------------------------


def test_plain_producer_is_the_started_non_transactional_aiokafka_producer(monkeypatch: pytest.MonkeyPatch) -> None:
    import aiokafka

    async def no_broker(self: Any) -> None:
        return None

    monkeypatch.setattr(aiokafka.AIOKafkaProducer, "start", no_broker)
    monkeypatch.setattr(aiokafka.AIOKafkaProducer, "stop", no_broker)

    async def scenario() -> None:
        from faust.exceptions import NotReady

        app = app_(processing_guarantee="exactly_once")
        with pytest.raises(NotReady):  # before the producer started: Faust's error, not a silent None
            faust_compat.plain_producer(app)
        await app.producer.on_start()  # what Faust's producer service does when it starts
        try:
            plain = faust_compat.plain_producer(app)
            assert isinstance(plain, aiokafka.AIOKafkaProducer)
            assert faust_compat.plain_producer(app) is plain
            batch = plain.create_batch()
            assert batch.append(key=b"k", value=b"v", timestamp=None, headers=[]) is not None
            # not one of the per-partition transactional producers (those begin on assignment)
            assert plain not in app.producer._transaction_producers.values()  # noqa: SLF001
        finally:
            await app.producer.on_stop()

    asyncio.run(scenario())


def test_plain_producer_raises_when_faust_lost_the_accessor(monkeypatch: pytest.MonkeyPatch) -> None:
    from faust.transport.drivers.aiokafka import Producer

    monkeypatch.delattr(Producer, "_ensure_producer")
    with pytest.raises(FaustCompatError, match="_ensure_producer"):
        faust_compat.plain_producer(app_())


def test_plain_producer_is_none_only_for_something_that_is_not_a_faust_producer() -> None:
    from types import SimpleNamespace

    assert faust_compat.plain_producer(SimpleNamespace(producer=object())) is None  # type: ignore[arg-type]


# -- transactional_id ------------------------------------------------------


def test_transactional_id_is_the_one_faust_opens_and_commits_a_source_partition_in() -> None:
    """Two source topics in two topic groups; Faust's TransactionManager names their transactions."""

    async def scenario() -> None:
        app = app_(id="txapp", processing_guarantee="exactly_once")
        assign([app], {"src-a": 4, "src-b": 2})
        tps = [TP("src-a", 3), TP("src-b", 1)]
        began: list[str] = []
        committed: dict[str, Any] = {}

        async def maybe_begin_transaction(tid: str) -> None:
            began.append(tid)

        async def commit_transactions(offsets: Any, group_id: str, start_new_transaction: bool = True) -> None:
            committed.update(offsets)

        app.producer.maybe_begin_transaction = maybe_begin_transaction  # type: ignore[method-assign]
        app.producer.commit_transactions = commit_transactions  # type: ignore[method-assign]
        transactions = app.consumer.transactions
        await transactions.on_rebalance(set(tps), set(), set(tps))  # assigned: a transaction per partition
        await transactions.commit({tp: 10 for tp in tps})  # the partitions' offsets

        ours = {tp: faust_compat.transactional_id(app, tp) for tp in tps}
        assert sorted(began) == sorted(ours.values())
        assert committed == {ours[tp]: {tp: 10} for tp in tps}
        assert len(set(ours.values())) == 2 and all(t.startswith("txapp-") for t in ours.values())

    asyncio.run(scenario())


def test_transactional_id_of_a_topic_outside_the_assignment_raises() -> None:
    app = app_(processing_guarantee="exactly_once")
    assign([app], {"src": 2})
    with pytest.raises(KeyError):
        faust_compat.transactional_id(app, TP("elsewhere", 0))


# -- wrap_force_commit and committed_offsets --------------------------------


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_the_commit_timer_commits_through_the_wrapper_and_the_monitor_records_it(guarantee: str) -> None:
    """Faust's commit timer (the consumer task mode starts with it) -> commit() -> force_commit:
    the wrapper sees every commit, and committed_offsets() reports what was committed."""

    async def scenario() -> None:
        app = app_(processing_guarantee=guarantee, broker_commit_interval=0.01)
        app.in_worker = True  # as `faust worker` sets it: Faust's consumer is transactional only in a worker
        tp = TP("src", 1)
        assign([app], {"src": 2})
        consumer = app.consumer
        consumer.assignment = lambda: {tp}  # type: ignore[method-assign]  # the driver asks the broker otherwise
        sent: dict[Any, Any] = {}

        async def flush() -> None:
            return None

        async def commit_offsets(offsets: Any) -> bool:  # the driver's commit to Kafka (at-least-once)
            sent.update(offsets)
            return True

        async def commit_transactions(offsets: Any, group_id: str, start_new_transaction: bool = True) -> None:
            sent.update(offsets)  # exactly-once: offsets go to the partition's transaction

        app.producer.flush = flush  # type: ignore[method-assign]
        app.producer.commit_transactions = commit_transactions  # type: ignore[method-assign]
        consumer._commit = commit_offsets  # type: ignore[method-assign]  # noqa: SLF001

        wrapped: list[Any] = []

        async def wrapper(original: Any, *args: Any, **kwargs: Any) -> Any:
            wrapped.append((args, kwargs))
            return await original(*args, **kwargs)

        faust_compat.wrap_force_commit(consumer, wrapper)
        assert faust_compat.committed_offsets(app) == {}

        # a record of src[1] at offset 41, read and acknowledged by a stream
        app.topics.add(app.topic("src"))
        await app.topics._update_indices()  # noqa: SLF001 - what subscribing does
        message = Message("src", 1, 41, 0.0, 0, None, b"k", b"v", None)
        consumer.track_message(message)
        consumer.ack(message)

        timer = type(consumer)._commit_handler
        assert timer in set(consumer._get_tasks())  # noqa: SLF001 - mode starts it with the consumer
        task = asyncio.ensure_future(timer.fun(consumer))  # as mode starts it
        try:
            for _ in range(200):
                if faust_compat.committed_offsets(app):
                    break
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
        assert wrapped, "Faust's commit timer did not go through force_commit"
        if guarantee == "exactly_once":
            assert sent == {faust_compat.transactional_id(app, tp): {tp: 42}}
        else:
            assert sent == {tp: 42}
        assert dict(faust_compat.committed_offsets(app)) == {tp: 42}

    asyncio.run(scenario())


def test_wrap_force_commit_refuses_a_consumer_without_it() -> None:
    async def wrapper(original: Any, *args: Any, **kwargs: Any) -> Any:
        return await original(*args, **kwargs)

    with pytest.raises(FaustCompatError, match="force_commit"):
        faust_compat.wrap_force_commit(object(), wrapper)


# -- active_partitions -----------------------------------------------------


def test_active_partitions_are_this_workers_actives_without_its_standbys() -> None:
    apps = [
        app_(id="standby", table_standby_replicas=1, canonical_url=f"http://worker-{i}:6066") for i in range(2)
    ]
    for app in apps:
        app.topic("src", partitions=4)
        table = app.Table("t", partitions=4)
    changelog = table.changelog_topic.get_topic_name()
    assign(apps, {"src": 4, changelog: 4})
    mine, theirs = (faust_compat.active_partitions(app, "src") for app in apps)
    assert sorted(mine + theirs) == [0, 1, 2, 3] and not set(mine) & set(theirs)
    standbys = {tp.partition for tp in apps[0].assignor.assigned_standbys() if tp.topic == "src"}
    assert standbys == set(theirs)  # Faust hands the other worker's partitions out as standbys: not ours to tick
    assert faust_compat.active_partitions(apps[0], "other-topic") == []


# -- partition_owners / own_url ---------------------------------------------


def test_partition_owners_name_each_changelog_partitions_active_worker_by_its_canonical_url() -> None:
    apps = [app_(id="owners", canonical_url=f"http://worker-{i}:6066") for i in range(2)]
    for app in apps:
        app.topic("src", partitions=4)
        table = app.Table("t", partitions=4)
    changelog = table.changelog_topic.get_topic_name()
    assign(apps, {"src": 4, changelog: 4})
    for app in apps:
        owners = faust_compat.partition_owners(app, changelog)
        assert sorted(owners) == [0, 1, 2, 3], "every partition has one owner, as every member is told"
        assert owners == faust_compat.partition_owners(apps[0], changelog), "the members agree"
        mine = {p for p, url in owners.items() if url == faust_compat.own_url(app)}
        assert mine == set(faust_compat.active_partitions(app, "src"))
    assert faust_compat.own_url(apps[1]) == "http://worker-1:6066"
    assert faust_compat.partition_owners(apps[0], "not-a-changelog") == {}


def test_the_spinners_debug_root_level_is_undone_after_start_up() -> None:
    """As Faust's worker leaves it at -l warn: a console handler at WARN, the spinner's handler, root at DEBUG."""
    import io
    import logging

    from faust.utils.terminal.spinners import Spinner, SpinnerHandler

    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    console = logging.StreamHandler(io.StringIO())
    console.setLevel(logging.WARNING)
    spinner = SpinnerHandler(Spinner(file=io.StringIO()), level=logging.DEBUG)
    try:
        root.handlers[:] = [console, spinner]
        root.setLevel(logging.DEBUG)
        assert logging.getLogger("aiokafka.consumer.fetcher").isEnabledFor(logging.DEBUG)
        assert faust_compat.end_spinner_debug_logging()
        assert root.level == logging.WARNING and root.handlers == [console]
        assert not logging.getLogger("aiokafka.consumer.fetcher").isEnabledFor(logging.DEBUG)
        # -l debug (no spinner) or a second call: nothing changes
        root.setLevel(logging.DEBUG)
        assert not faust_compat.end_spinner_debug_logging()
        assert root.level == logging.DEBUG
    finally:
        root.handlers[:] = saved[1]
        root.setLevel(saved[0])
