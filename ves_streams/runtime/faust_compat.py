"""Every use of Faust's and mode's non-public API, in one place.

ves-streams needs a few things faust-streaming does not offer as public API:
starting our own services with the worker, writing a table partition's
RocksDB database directly, the producer under Faust's producer, the
transaction a source partition's offsets commit in, holding Faust's offset
commits back, and some of its bookkeeping (committed offsets, active
partitions, recovery). Each is one small function here, with what it relies
on and why it is needed. Nothing else in the project reaches into Faust or
mode; ``tests/runtime/test_faust_compat.py`` checks each function against the
installed faust-streaming, without a broker.

What counts as public: names exported by ``faust`` and ``mode``, what
Faust's user guide documents, and the attributes and methods declared on
Faust's interface types (``faust.types``: ``AppT``, ``ConsumerT``,
``ProducerT``) used as declared there -- e.g. ``app.rebalancing``,
``app.producer_only``, ``faust.current_event()``, ``app.consumer.assignment()``,
``highwater()``, ``topic_partitions()``, ``app.producer.send(...,
transactional_id=...)``, mode's ``Service`` hooks. Everything else is here:
leading-underscore attributes, attributes of implementation classes only
(``TableManager.recovery``, ``Consumer.force_commit``), formats Faust builds
internally (transactional ids), and bookkeeping we read although Faust only
keeps it for itself (the monitor's committed offsets, the assignor's
actives).

Nothing falls back silently. A function whose attribute is missing raises
:class:`FaustCompatError` naming it and the installed faust-streaming
version, and :func:`check` probes all of them when the app is created (see
``ves_streams.app.create_app``), so a Faust that renamed one fails the worker
at start, not as a slower or subtly wrong worker later. It also probes the
few public consumer methods the project reads behind broad ``except``
clauses (lag metrics, the samples partition count), where a rename would
otherwise pass unnoticed. The supported range is pinned in
``pyproject.toml`` (only 0.15.x is tested).
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import faust
    from aiokafka import AIOKafkaProducer
    from faust.types import TP
    from mode import ServiceT

__all__ = [
    "TESTED_FAUST",
    "FaustCompatError",
    "active_partitions",
    "add_service",
    "ask_every_broker_for_the_controller",
    "check",
    "committed_offsets",
    "end_spinner_debug_logging",
    "extra_services",
    "faust_version",
    "in_recovery",
    "is_rocksdb_store",
    "partition_db_opener",
    "plain_producer",
    "own_url",
    "partition_owners",
    "transactional_id",
    "wrap_force_commit",
]

#: The faust-streaming versions the contract tests run against (pyproject.toml pins the same).
TESTED_FAUST = ">=0.15.3,<0.16"

#: Faust's transactional id of a source partition: ``TransactionManager.transactional_id_format``.
_TRANSACTIONAL_ID_FORMAT = "{group_id}-{tpg.group}-{tpg.partition}"

_MISSING = object()


class FaustCompatError(RuntimeError):
    """The installed faust-streaming (or mode) lacks something ves-streams relies on.

    The message names the attribute and the installed version. This is not a
    configuration error: install a faust-streaming in the tested range, or
    adapt :mod:`ves_streams.runtime.faust_compat` (and its contract tests).
    """


def faust_version() -> str:
    """The installed faust-streaming version, as its package metadata says."""
    try:
        return importlib.metadata.version("faust-streaming")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _error(what: str, needed: str) -> FaustCompatError:
    return FaustCompatError(
        f"faust-streaming {faust_version()}: {what} -- ves-streams needs it for {needed}; "
        f"ves-streams is tested with faust-streaming{TESTED_FAUST} "
        "(see ves_streams/runtime/faust_compat.py)"
    )


def _attr(obj: Any, name: str, owner: str, needed: str) -> Any:
    value = getattr(obj, name, _MISSING)
    if value is _MISSING or getattr(value, "__isabstractmethod__", False):
        raise _error(f"{owner}.{name} is gone", needed)
    return value


# -- services ------------------------------------------------------------


def add_service(app: faust.App, service: ServiceT) -> None:
    """Have the worker start ``service`` with the app, after table recovery, and stop it with the app.

    Relies on ``App._extra_services``: the list behind the public
    ``@app.service`` decorator, which only takes a class and instantiates it
    without arguments. Our services (ingest, faults, the sink) are built
    from the settings, so the instance goes into the list directly: Faust's
    ``on_started_init_extra_services`` accepts instances as well as classes
    and adds each as a runtime dependency of the app once tables are
    recovered.
    """
    services = _attr(app, "_extra_services", "App", "starting ingest, faults and the sink with the worker")
    if not isinstance(services, list):
        raise _error(f"App._extra_services is a {type(services).__name__}, not a list", "starting our services")
    services.append(service)


def extra_services(app: faust.App) -> list[Any]:
    """The services the worker will start with ``app`` (:func:`add_service`'s and ``@app.service``'s), in order."""
    return list(_attr(app, "_extra_services", "App", "starting ingest, faults and the sink with the worker"))


# -- logging -------------------------------------------------------------


def end_spinner_debug_logging() -> bool:
    """Undo the DEBUG root level that Faust's worker sets for its start-up spinner; True if it did.

    At ``-l warn`` (Faust's default) the worker adds a ``SpinnerHandler``
    that turns its terminal spinner on every log record, and sets the root
    logger to DEBUG so that every record reaches it (the console handler
    stays at WARN). The spinner is finished once start-up is over, but the
    level stays: every ``log.debug`` of aiokafka (one per partition and fetch)
    then builds a record that nothing writes, 4 % of a worker's CPU at
    N = 1000 (bench profile at ``-l warn``). Called once the worker has
    started, this removes the spinner's handlers and sets the root level
    back to the lowest level of the handlers that write.

    Relies on ``faust.utils.terminal.spinners.SpinnerHandler``; without it
    (another faust-streaming) nothing changes: this is about CPU, not
    correctness. At ``-l info`` or ``-l debug`` there is no spinner and
    nothing changes either.
    """
    try:
        from faust.utils.terminal.spinners import SpinnerHandler
    except ImportError:
        return False
    root = logging.getLogger()
    spinners = [h for h in root.handlers if isinstance(h, SpinnerHandler)]
    writers = [h.level for h in root.handlers if not isinstance(h, SpinnerHandler) and h.level > logging.DEBUG]
    if not spinners or root.level != logging.DEBUG or not writers:
        return False
    for handler in spinners:
        root.removeHandler(handler)
    root.setLevel(min(writers))
    return True


# -- table state ---------------------------------------------------------


@functools.cache
def _rocksdb_store_class() -> type:
    from faust.stores.rocksdb import Store

    return Store


def is_rocksdb_store(store: object) -> bool:
    """True when ``store`` (a table's ``table.data``) is Faust's RocksDB store (``store="rocksdb://"``).

    Public: the class is ``faust.stores.rocksdb.Store``, what the store URL
    names. Anything else (Faust's memory store, a plain mapping) has no
    partition databases and is written through its mapping interface.
    """
    return isinstance(store, _rocksdb_store_class())


def partition_db_opener(store: Any) -> Callable[[int], Any]:
    """Faust's RocksDB store's ``partition -> database`` accessor (a ``rocksdict.Rdict``).

    Relies on ``Store._db_for_partition(partition)``, which opens the
    partition's database on first use and returns the same object Faust
    reads and writes. The samples stage writes bytes it already has, to a
    partition it already knows, straight to that database: Faust's
    ``__setitem__``/``__delitem__`` re-serialise, look the partition up from
    the current event and, for a delete of an uncached key, delete from
    every partition (see ``ves_streams.state.RocksDBPartitions``). The
    returned callable is bound once, so the hot path pays no lookup.
    """
    opener = _attr(store, "_db_for_partition", type(store).__name__, "writing table state straight to RocksDB")
    if not callable(opener):
        raise _error(f"{type(store).__name__}._db_for_partition is not callable", "writing table state straight to RocksDB")
    return opener


def in_recovery(app: faust.App) -> bool:
    """True while Faust recovers tables from their changelogs (readiness says not ready then).

    Relies on ``app.tables.recovery`` (the ``TableManager``'s ``Recovery``
    service, not declared on ``TableManagerT``) and its ``in_recovery`` flag,
    set from the start to the end of a recovery.
    """
    recovery = _attr(app.tables, "recovery", "TableManager", "the readiness check during table recovery")
    return bool(_attr(recovery, "in_recovery", "Recovery", "the readiness check during table recovery"))


# -- producing and transactions ------------------------------------------


def plain_producer(app: faust.App) -> AIOKafkaProducer | None:
    """The aiokafka producer under Faust's producer (outside any transaction), for record-batch sends.

    Relies on the aiokafka driver's ``Producer._ensure_producer()``, which
    returns the started non-transactional ``AIOKafkaProducer`` (and raises
    Faust's ``NotReady`` before the producer started). Faust's ``send`` takes
    one record at a time; the state changelog goes out as whole record
    batches (``create_batch``/``send_batch``, see ``agents/batches.py``).

    Returns None only when ``app.producer`` is not a Faust producer at all
    (a test double with just ``send``). For a Faust producer that lacks the
    accessor, or whose driver returns no aiokafka producer, it raises
    :class:`FaustCompatError`: no silent per-record fallback.
    """
    from faust.types.transports import ProducerT

    producer = app.producer
    if not isinstance(producer, ProducerT):
        return None
    ensure = _attr(producer, "_ensure_producer", type(producer).__name__, "batched changelog writes")
    plain = ensure()
    if not (callable(getattr(plain, "create_batch", None)) and callable(getattr(plain, "send_batch", None))):
        raise _error(
            f"{type(producer).__name__}._ensure_producer() returned a {type(plain).__name__}, "
            "not an aiokafka producer with create_batch/send_batch (the aiokafka driver, kafka://, is required)",
            "batched changelog writes",
        )
    return plain


def transactional_id(app: faust.App, tp: TP) -> str:
    """Faust's transactional id of the producer that owns source partition ``tp``'s offsets.

    Relies on Faust's format ``<app id>-<topic group>-<partition>`` (built
    in ``TransactionManager``: ``transactional_id_format`` when it opens a
    partition's transaction on assignment, the same f-string in ``commit``
    when it commits the partition's offsets) and on the assignor's
    ``group_for_topic``. Faust's own ``send`` picks the transaction from the
    *destination* partition; our outputs are not co-partitioned with their
    input, so ``Pipeline.produce`` names the source's transaction itself.
    Raises ``KeyError`` for a topic the current assignment does not know.
    """
    group_for_topic = _attr(app.assignor, "group_for_topic", "PartitionAssignor", "exactly-once produce")
    # the format is _TRANSACTIONAL_ID_FORMAT (check() compares it with Faust's), as an f-string: hot path
    return f"{app.conf.id}-{group_for_topic(tp.topic)}-{tp.partition}"


def wrap_force_commit(consumer: Any, wrapper: Callable[..., Awaitable[Any]]) -> None:
    """Route every offset commit of Faust's consumer through ``wrapper(original, *args, **kwargs)``.

    Relies on ``Consumer.force_commit`` being the one coroutine every commit
    goes through (``commit()`` -- called by the commit timer, on revoke and
    on stop -- calls ``self.force_commit(...)``), looked up on the instance,
    so an instance attribute replaces it. The exactly-once commit gate
    (``agents/commit_gate.py``) keeps commits out of a record's processing
    this way. ``wrapper`` must await ``original`` with the arguments given.
    """
    original = _attr(consumer, "force_commit", type(consumer).__name__, "the exactly-once commit gate")
    if not inspect.iscoroutinefunction(original):
        raise _error(f"{type(consumer).__name__}.force_commit is not a coroutine function", "the exactly-once commit gate")

    @functools.wraps(original)
    async def force_commit(*args: Any, **kwargs: Any) -> Any:
        return await wrapper(original, *args, **kwargs)

    consumer.force_commit = force_commit


# -- bookkeeping ---------------------------------------------------------


def committed_offsets(app: faust.App) -> Mapping[TP, int]:
    """The offsets Faust's consumer last committed, by source partition (empty before the first commit).

    Relies on ``app.monitor.tp_committed_offsets``, which the consumer
    updates (``monitor.on_tp_commit``) after every commit, transactional or
    not. The monitor keeps it for its web statistics; the lag metric reads
    it to report records not yet committed.
    """
    offsets = _attr(app.monitor, "tp_committed_offsets", type(app.monitor).__name__, "the consumer lag metric")
    return offsets or {}


def active_partitions(app: faust.App, topic: str) -> list[int]:
    """The partitions of ``topic`` this worker actively owns (not standby replicas), sorted.

    Relies on ``app.assignor.assigned_actives()``: the active partitions of
    Faust's last assignment (its assignor also hands out standbys, which
    ``consumer.assignment()`` includes). Render ticks go to active
    partitions only, and the host index is built for them.
    """
    actives = _attr(app.assignor, "assigned_actives", "PartitionAssignor", "render ticks and the host index")
    return sorted(tp.partition for tp in actives() if tp.topic == topic)


def partition_owners(app: faust.App, changelog_topic: str) -> dict[int, str]:
    """partition -> web URL of the worker that actively owns it, from Faust's last assignment.

    Relies on ``app.assignor.table_metadata(topic)``: Faust's assignor sends
    every member the distribution of the tables' changelog partitions (the
    members' ``canonical_url``), which is what Faust's own table routing
    uses. The host queries (``GET /hosts/{name}``) read it to ask the owner.
    """
    metadata = _attr(app.assignor, "table_metadata", "PartitionAssignor", "the host queries' routing")
    owners: dict[int, str] = {}
    for url, topics in metadata(changelog_topic).items():
        for partition in topics.get(changelog_topic, ()):
            owners[int(partition)] = str(url)
    return owners


def own_url(app: faust.App) -> str:
    """This worker's web URL as the other members know it (``canonical_url``)."""
    return str(app.conf.canonical_url).rstrip("/")


# -- topic creation --------------------------------------------------------


class _OneBrokerCluster:
    """A view of aiokafka's cluster metadata that lists one broker."""

    def __init__(self, cluster: Any, broker: Any) -> None:
        self._cluster = cluster
        self._broker = broker

    def brokers(self) -> set[Any]:
        return {self._broker}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cluster, name)


class _OneBrokerClient:
    """An aiokafka client whose metadata lists one broker; everything else is the client's own."""

    def __init__(self, client: Any, broker: Any) -> None:
        self._client = client
        self.cluster = _OneBrokerCluster(client.cluster, broker)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def ask_every_broker_for_the_controller() -> None:
    """Have Faust ask the next broker for the controller when one does not answer.

    Faust creates its topics at start (the tables' changelogs, the agents'
    topics) and first asks for the cluster's controller, in the aiokafka
    driver's ``Transport._get_controller_node``: it asks only the first broker
    of the client's metadata, and when that one is down the worker dies at
    start with ``NodeNotReadyError``, although the other brokers serve (the
    soak saw it: a worker restarted while one broker of three was restarting
    never came back). This wraps that method so that each known broker is
    asked in turn, the original doing the asking, and a controller that
    cannot be reached (a broker that went a moment ago is still named in the
    others' metadata) is replaced by the broker that answered: KRaft brokers
    forward topic creation to the controller (a ZooKeeper-mode broker would
    answer NOT_CONTROLLER, and Faust fail as it did before; ves-streams
    supports KRaft clusters, Kafka 3.9 and 4.x). The last error is raised only
    when none answers. Idempotent.
    """
    from aiokafka.errors import KafkaError
    from faust.transport.drivers.aiokafka import Transport

    original = _attr(Transport, "_get_controller_node", "Transport", "starting while one broker is down")
    if not inspect.iscoroutinefunction(original):
        raise _error("Transport._get_controller_node is not a coroutine function", "starting while one broker is down")
    if getattr(original, "_asks_every_broker", False):
        return

    @functools.wraps(original)
    async def _get_controller_node(self: Any, owner: Any, client: Any, timeout: int = 30000) -> Any:
        brokers = sorted(client.cluster.brokers(), key=lambda b: (b.nodeId is None, b.nodeId or 0))
        failure: BaseException | None = None
        for broker in brokers:
            try:
                controller = await original(self, owner, _OneBrokerClient(client, broker), timeout=timeout)
                if controller is None or await client.ready(controller):
                    return controller
                # metadata not yet updated for a broker that just went: the one that answered
                # takes the request instead (brokers forward admin requests to the controller)
                if await client.ready(broker.nodeId):
                    return broker.nodeId
            except (KafkaError, OSError) as exc:
                failure = exc
        if failure is not None:
            raise failure
        return await original(self, owner, client, timeout=timeout)  # no broker known: Faust says so

    _get_controller_node._asks_every_broker = True  # type: ignore[attr-defined]
    Transport._get_controller_node = _get_controller_node  # type: ignore[method-assign]


# -- start-up probe --------------------------------------------------------


def check(app: faust.App) -> None:
    """Probe, without a broker and without starting anything, what the functions above rely on.

    Called when the app is created, so that a faust-streaming that renamed
    or changed one fails the worker at start. Looks at the classes the app
    is configured with (transport, store, assignor, table manager, monitor)
    rather than creating its consumer or producer. Raises
    :class:`FaustCompatError` listing every problem found.
    """
    import faust
    from faust.tables.recovery import Recovery

    problems: list[str] = []

    def need(owner: Any, name: str, label: str, *, coroutine: bool = False) -> None:
        value = getattr(owner, name, _MISSING)
        if value is _MISSING or getattr(value, "__isabstractmethod__", False):
            problems.append(f"{label}.{name} is gone")
        elif coroutine and not inspect.iscoroutinefunction(value):
            problems.append(f"{label}.{name} is not a coroutine function")
        elif not coroutine and not callable(value) and name not in _NON_CALLABLE:
            problems.append(f"{label}.{name} is not callable")

    services = getattr(app, "_extra_services", _MISSING)
    if not isinstance(services, list):
        problems.append("App._extra_services is gone or not a list")
    need(app, "on_started_init_extra_services", "App", coroutine=True)

    transport = faust.transport.by_url(app.conf.broker_consumer[0])
    need(transport.Producer, "_ensure_producer", transport.Producer.__qualname__)
    need(transport.Consumer, "force_commit", transport.Consumer.__qualname__, coroutine=True)
    need(transport, "_get_controller_node", transport.__qualname__, coroutine=True)
    need(transport.Consumer, "commit", transport.Consumer.__qualname__, coroutine=True)
    # Public (ConsumerT), but read behind broad excepts -- a metrics scrape never fails, the
    # pipeline falls back to the configured partition count -- where a rename would go unnoticed.
    for name in ("assignment", "highwater", "topic_partitions"):
        need(transport.Consumer, name, transport.Consumer.__qualname__)
    id_format = getattr(transport.TransactionManager, "transactional_id_format", None)
    if id_format != _TRANSACTIONAL_ID_FORMAT:
        problems.append(
            f"TransactionManager.transactional_id_format is {id_format!r}, not {_TRANSACTIONAL_ID_FORMAT!r}"
        )

    store_class = faust.stores.by_url(app.conf.store)
    if issubclass(store_class, _rocksdb_store_class()):
        need(store_class, "_db_for_partition", store_class.__qualname__)

    need(app.conf.PartitionAssignor, "group_for_topic", "PartitionAssignor")
    need(app.conf.PartitionAssignor, "assigned_actives", "PartitionAssignor")
    need(app.conf.PartitionAssignor, "table_metadata", "PartitionAssignor")
    need(app.conf.TableManager, "recovery", "TableManager")
    need(Recovery, "in_recovery", "Recovery")
    need(app.conf.Monitor, "tp_committed_offsets", "Monitor")

    if problems:
        raise FaustCompatError(
            f"faust-streaming {faust_version()} lacks what ves-streams relies on: " + "; ".join(problems)
            + f". ves-streams is tested with faust-streaming{TESTED_FAUST} (see ves_streams/runtime/faust_compat.py)"
        )


#: Probed attributes that are data or properties, not methods.
_NON_CALLABLE = frozenset({"recovery", "in_recovery", "tp_committed_offsets"})
