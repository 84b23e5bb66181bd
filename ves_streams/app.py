"""The Faust app: built from the settings, nothing else happens here.

``faust -A ves_streams worker`` reads the lazy ``ves_streams.app``
attribute, which reads the settings from the environment, loads the
topology and builds the app with :func:`create_app` -- on first access, not
at import.
Tests and tools call :func:`create_app` with their own settings.

What runs depends on ``VES_STREAMS_ROLE``:

* ``all`` (default): the processing agents and the sink;
* ``process``: the processing agents only (see :mod:`ves_streams.agents`);
* ``sink``: only the sink service (``ves_streams.sink.service``), which
  consumes ``ves-events`` in its own consumer group; Faust itself runs
  producer-only, so such a worker never joins the processing group.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import faust

from ves_streams.stages.render import TopologyRenderer
from ves_streams.broker_wait import wait_for_broker
from ves_streams.broker_watch import BrokerWatch
from ves_streams.runtime.kafka import KafkaConfigError, KafkaConnection
from ves_streams.runtime.kafka_access import KafkaAccessError, probe_access
from ves_streams.metrics import Metrics, Readiness, get_metrics, register_views
from ves_streams.runtime import faust_compat
from ves_streams.runtime.clean_exit import mark_clean_exit, wipe_after_unclean_exit
from ves_streams.runtime.side_loop import SideLoop
from ves_streams.settings import ProcessingGuarantee, Settings, SettingsError
from ves_streams.topics import Topics

__all__ = ["app", "create_app", "load_settings"]

log = logging.getLogger(__name__)


def load_settings(environ: Any = None) -> tuple[Settings, Any]:
    """Settings from the environment, completed by the topology header; and the topology.

    Raises :class:`SettingsError` for an invalid setting and the rule
    engine's ``RuleError`` (``file:line:col: message``) for a bad topology.
    """
    from ves_streams.rules import load_topology

    settings = Settings.from_env(os.environ if environ is None else environ)
    topology = load_topology(settings.topology)
    return settings.with_topology_header(topology.header), topology


class VesStreamsApp(faust.App):
    """A Faust app that waits for its broker, and checks it may log in, before its clients start.

    Faust's consumer exits with ``KafkaConnectionError`` when no bootstrap
    server answers at start; ``on_first_start`` runs before the producer,
    consumer and extra services, so waiting here turns a start-up race into a
    logged wait (see :mod:`ves_streams.broker_wait`). A broker that answers
    but refuses the CA or the credentials stops the worker with one line
    naming the setting (:mod:`ves_streams.runtime.kafka_access`).
    """

    #: set by :func:`create_app`; every Kafka client of the worker is built from it
    connection: KafkaConnection
    #: exactly_once with local tables: an unclean exit wipes them at the next start (runtime/clean_exit.py)
    exactly_once_state: bool = False

    async def on_first_start(self) -> None:
        if self.exactly_once_state:  # before any table opens its store (runtime/clean_exit.py)
            wipe_after_unclean_exit(Path(self.conf.tabledir))
        await super().on_first_start()
        await wait_for_broker(self.connection.bootstrap_servers, plaintext=self.connection.plaintext)
        try:
            await probe_access(self.connection)
        except KafkaAccessError as exc:
            # A user error, not a crash: one line naming the setting (never the password), exit 2.
            # Straight to fd 2: Faust's worker has replaced sys.stderr with a logger.
            os.write(2, f"ves-streams: {exc}\n".encode())
            os._exit(2)

    async def on_shutdown(self) -> None:
        await super().on_shutdown()
        if self.exactly_once_state:  # every child stopped: the last transaction committed, the stores closed
            mark_clean_exit(Path(self.conf.tabledir))

    async def on_started(self) -> None:
        await super().on_started()  # the worker's start-up (and its spinner) ends in here
        faust_compat.end_spinner_debug_logging()  # at -l warn: no DEBUG records nobody writes


#: Seconds the producer waits to fill a batch (Faust's ``producer_linger``).
PRODUCER_LINGER = 0.02
#: Largest record batch the producer builds (Faust's default is 16 KiB).
PRODUCER_MAX_BATCH_SIZE = 1024 * 1024


def create_app(settings: Settings, topology: Any = None) -> faust.App:
    """Build the Faust app for ``settings`` (``topology`` is needed unless the role is ``sink``).

    Raises :class:`~ves_streams.runtime.faust_compat.FaustCompatError` when
    the installed faust-streaming lacks what ves-streams relies on.
    """
    connection = KafkaConnection.from_settings(settings)
    try:
        credentials = connection.faust_credentials()
    except KafkaConfigError as exc:
        raise SettingsError(str(exc)) from None
    app = VesStreamsApp(
        settings.app_id,
        broker=connection.faust_broker,
        broker_credentials=credentials,
        store="rocksdb://",
        datadir=str(settings.data_dir),
        processing_guarantee=settings.processing_guarantee.value,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        table_standby_replicas=settings.standby_replicas,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=max(0.5, settings.session_timeout / 4),
        web_port=settings.web_port,
        web_bind=settings.web_bind_address(),  # not every interface (web_access.py)
        **({"web_host": settings.web_host} if settings.web_host else {}),
        # Faust's table and router views answer anyone who reaches the port: ours ask for the token
        web_router_enabled=False,
        web_tables_enabled=False,
        web_enabled=True,
        autodiscover=False,
        consumer_auto_offset_reset="earliest",
        # Faust's default (0) sends a produce request per few records; 20 ms fills
        # batches at a cost of 20 ms per hop (bench: +14-31 % value lists per CPU s).
        producer_linger=PRODUCER_LINGER,
        # changelog records go out as one record batch per partition (runtime/producing.py)
        producer_max_batch_size=PRODUCER_MAX_BATCH_SIZE,
    )
    faust_compat.check(app)  # a faust-streaming without what we rely on fails here, not later
    faust_compat.ask_every_broker_for_the_controller()  # a worker starts while one broker is down
    app.connection = connection
    app.exactly_once_state = settings.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE and settings.role.processes
    metrics = get_metrics()
    readiness = Readiness()
    topics = Topics(app, settings)
    # the faults stage and the sink: on a loop of their own thread, so that no fault waits
    # behind the main loop's ingest bursts and renders (runtime/side_loop.py)
    side_loop = SideLoop("faults-sink")

    if settings.role.processes:
        from ves_streams.agents import register_processing

        if topology is None:
            raise SettingsError("VES_STREAMS_TOPOLOGY: a topology is needed to process (role all or process)")
        renderer = TopologyRenderer(
            topology,
            hostname=settings.hostname,
            interval=settings.interval,
            ves_version=settings.ves_version,
            heartbeat_interval=settings.heartbeat_interval,
        )
        register_processing(app, settings, topics, renderer, metrics, readiness, side_loop)

    else:
        # Sink only: Faust runs producer-only (web server, producer, services), so
        # this worker never joins -- and never rebalances -- the processing group.
        app.producer_only = True

    if settings.role.sinks:
        _add_sink(side_loop, settings, metrics, readiness)
    faust_compat.add_service(app, side_loop)  # started by the worker after the stage loops of the main loop

    @app.task
    async def declare_output_topics() -> None:
        await topics.ensure_outputs()

    # /ready turns 503 while no broker has answered for longer than the session timeout
    watch = BrokerWatch(connection, settings.session_timeout)
    readiness.add("kafka", watch.readiness)

    @app.task
    async def watch_broker() -> None:
        await watch.run()

    register_views(app, metrics, readiness)
    if settings.unknown:
        log.warning("ignoring unknown settings (typos?): %s", ", ".join(settings.unknown))
    log.info("ves-streams %s: %s", settings.role.value, settings)
    return app


def _add_sink(side_loop: SideLoop, settings: Settings, metrics: Metrics, readiness: Readiness) -> None:
    """Run the sink (a stage loop in its own consumer group) on the side loop, with the app, after table recovery."""
    from ves_streams.sink.service import SinkService

    service = SinkService.from_settings(settings)
    side_loop.add(service)
    # readiness and lag come from the loop, as for the processing stages
    readiness.add("sink", lambda: sink_readiness(service, settings.sink_unready_after))
    metrics.add_lag_source(service.lag)


def sink_readiness(service: Any, unready_after: float) -> str | None:
    """Why the sink is not ready (its loop is not running, the collector's configuration refuses events, or the
    collector has failed for too long), or None."""
    if not service.is_ready():
        return "sink not running"
    held = service.held_by_collector()
    if held is not None:
        return held
    failing = service.failing_for()
    if failing > unready_after:
        return (f"every delivery to the collector has failed for {failing:.0f} s "
                f"(VES_STREAMS_SINK_UNREADY_AFTER {unready_after:g} s)")  # fmt: skip
    return None


def _app_from_environment() -> faust.App:
    from ves_streams.rules import RuleError
    from ves_streams.runtime.memory import limit_malloc_arenas

    limit_malloc_arenas()  # the worker's process, before its threads start (runtime/memory.py)

    try:
        settings, topology = load_settings()
    except (SettingsError, RuleError) as exc:
        # A user error, not a crash: one line naming the setting (or file:line:col), exit 2.
        print(f"ves-streams: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return create_app(settings, topology if settings.role.processes else None)


def __getattr__(name: str) -> Any:
    # ``app`` is built on first access (``faust -A ves_streams``), so that
    # importing this module for create_app() reads no environment.
    if name == "app":
        built = globals().get("_app")
        if built is None:
            built = globals()["_app"] = _app_from_environment()
            # Importing this submodule bound ``ves_streams.app`` to the module;
            # Faust's CLI looks ``-A ves_streams`` up more than once and must
            # find the App every time, not the module.
            package = sys.modules.get(__package__ or "ves_streams")
            if package is not None:
                package.app = built
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
