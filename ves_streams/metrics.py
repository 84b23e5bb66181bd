"""Prometheus metrics of the processing side, and the worker's web views.

Views (on the Faust web server, ``VES_STREAMS_WEB_PORT``):

* ``GET /health`` -- 200 while the process runs (liveness);
* ``GET /ready``  -- 200 when the worker can do its job: a Kafka broker has
  answered within the session timeout (:mod:`ves_streams.broker_watch`);
  for processing, it has a partition assignment, its tables are recovered
  and its stage loops run; for the sink, its loop runs and the collector has
  not failed every delivery for ``VES_STREAMS_SINK_UNREADY_AFTER``. 503 with
  the reasons otherwise (also exported as ``ves_streams_ready{check}``);
* ``GET /metrics`` -- Prometheus text of the default registry (so the sink's
  metrics, defined in ``ves_streams.sink.metrics``, appear there too).

Metrics here start with ``ves_streams_`` and have bounded labels (``topic``
is one of the configured topics, ``domain`` a VES domain, ``stage`` one of a
few fixed words). Create them with :func:`get_metrics`, which registers them
on first use -- importing this module registers nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    import faust

__all__ = [
    "Metrics",
    "Readiness",
    "get_metrics",
    "register_views",
]

log = logging.getLogger(__name__)

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4"

#: ``(topic, partition, lag)`` triples, computed at scrape time.
LagSource = Callable[[], Iterable[tuple[str, int, int]]]


class _LagCollector(Collector):
    """``ves_streams_consumer_lag{topic,partition}``: high watermark minus position."""

    def __init__(self) -> None:
        self.sources: list[LagSource] = []

    def describe(self) -> Iterable[Any]:
        return [GaugeMetricFamily("ves_streams_consumer_lag", "Records not yet consumed", labels=["topic", "partition"])]

    def collect(self) -> Iterator[Any]:
        family = GaugeMetricFamily(
            "ves_streams_consumer_lag",
            "Records not yet consumed, per assigned input partition (high watermark - committed offset)",
            labels=["topic", "partition"],
        )
        for source in list(self.sources):
            try:
                for topic, partition, lag in source():
                    family.add_metric([topic, str(partition)], float(lag))
            except Exception:  # a scrape must never fail because the consumer is rebalancing
                log.debug("consumer lag unavailable", exc_info=True)
        yield family


class _ReadinessCollector(Collector):
    """``ves_streams_ready{check}``: 1 while a readiness check passes, 0 while it does not.

    What ``/ready`` answers, evaluated at scrape time, so that an alert can
    say which check failed for how long.
    """

    def __init__(self) -> None:
        self.readiness: Readiness | None = None

    def describe(self) -> Iterable[Any]:
        return [GaugeMetricFamily("ves_streams_ready", "Readiness checks", labels=["check"])]

    def collect(self) -> Iterator[Any]:
        family = GaugeMetricFamily(
            "ves_streams_ready", "1 while the readiness check passes, 0 while /ready names it", labels=["check"]
        )
        readiness = self.readiness
        if readiness is not None:
            _, problems = readiness.evaluate()
            for name in list(readiness.checks):
                family.add_metric([name], 0.0 if name in problems else 1.0)
        yield family


class Metrics:
    """The processing side's counters, gauges and histograms.

    One instance per process (:func:`get_metrics`); pass a fresh
    ``CollectorRegistry`` only in tests.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else REGISTRY
        r = self.registry
        self.messages_in = Counter(
            "ves_streams_messages_in", "Kafka records consumed, per topic", ["topic"], registry=r
        )
        self.events_out = Counter(
            "ves_streams_events_out", "VES events produced to the events topic, per domain", ["domain"], registry=r
        )
        self.render_errors = Counter(
            "ves_streams_render_errors",
            "Rules that failed to render, per stage (measurements, heartbeat, fault)",
            ["stage"],
            registry=r,
        )
        self.dead_letters = Counter(
            "ves_streams_dead_letters",
            "Records produced to the dead-letter topic, per stage (values, notifications, samples, measurements, "
            "heartbeat, fault)",
            ["stage"],
            registry=r,
        )
        self.windows = Counter(
            "ves_streams_render_windows",
            "Measurement windows per outcome: rendered (on time), backfilled (missed by a previous owner), "
            "duplicate (tick already rendered), skipped (more missed than may be backfilled: never rendered)",
            ["outcome"],
            registry=r,
        )
        self.partial_windows = Counter(
            "ves_streams_partial_host_windows",
            "Host windows not rendered because the host (re)appeared during the window, with part of its series",
            registry=r,
        )
        self.late_samples = Counter(
            "ves_streams_late_samples",
            "Value lists that reached the state after their window was rendered: counted and dropped, "
            "never rendered in another window",
            registry=r,
        )
        self.render_wait = Histogram(
            "ves_streams_render_wait_seconds",
            "How long a render tick waited after its boundary for ingest to handle what the input held then",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.render_seconds = Histogram(
            "ves_streams_render_seconds",
            "Time to render and produce one partition's window",
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.stage_retries = Counter(
            "ves_streams_stage_produce_retries",
            "Batches a stage loop produced again after the broker refused or timed out, per stage (ingest, faults)",
            ["stage"],
            registry=r,
        )
        self.hosts = Gauge("ves_streams_hosts", "Hosts with current samples in this worker's active partitions", registry=r)
        self.series = Gauge("ves_streams_series", "Series held in this worker's active partitions", registry=r)
        self.unmatched_clears = Counter(
            "ves_streams_unmatched_clears",
            "Clears (collectd OKAY) of an alarm the fault stage did not know (raised before it kept alarms):"
            " sent with an id derived from the clear",
            registry=r,
        )
        # read when scraped (the fault stage's tables, see agents/__init__.py)
        self.active_alarms = Gauge(
            "ves_streams_active_alarms", "Alarms raised and not cleared in this worker's notifications partitions",
            registry=r,
        )
        # Every series of a fixed vocabulary exists from the start, at 0: an alert on
        # increase() sees the first dead letter or retry, not a series appearing with it.
        for stage in ("measurements", "heartbeat", "fault"):
            self.render_errors.labels(stage)
        for stage in ("values", "notifications", "samples", "measurements", "heartbeat", "fault"):
            self.dead_letters.labels(stage)
        for outcome in ("rendered", "backfilled", "duplicate", "skipped"):
            self.windows.labels(outcome)
        for stage in ("ingest", "faults"):
            self.stage_retries.labels(stage)
        self._lag = _LagCollector()
        r.register(self._lag)
        self._ready = _ReadinessCollector()
        r.register(self._ready)

    def add_lag_source(self, source: LagSource) -> None:
        self._lag.sources.append(source)

    def report_readiness(self, readiness: Readiness) -> None:
        """Export ``readiness`` as ``ves_streams_ready{check}`` (the latest app's, one per process)."""
        self._ready.readiness = readiness

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text of the whole registry and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


_metrics: Metrics | None = None
_metrics_lock = threading.Lock()


def get_metrics() -> Metrics:
    """The process-wide :class:`Metrics` on the default registry, created on first call.

    The sink and anything else may add their own metrics to
    ``get_metrics().registry`` (the default registry).
    """
    global _metrics
    with _metrics_lock:
        if _metrics is None:
            _metrics = Metrics()
        return _metrics


# --------------------------------------------------------------------------
# web views


@dataclass
class Readiness:
    """Named checks; ready when all pass. A check returns ``None`` when fine, else why not."""

    checks: dict[str, Callable[[], str | None]] = field(default_factory=dict)

    def add(self, name: str, check: Callable[[], str | None]) -> None:
        self.checks[name] = check

    def evaluate(self) -> tuple[bool, dict[str, str]]:
        problems: dict[str, str] = {}
        for name, check in self.checks.items():
            try:
                problem = check()
            except Exception as exc:  # a broken check means "not ready", visibly
                problem = f"check failed: {type(exc).__name__}: {exc}"
            if problem:
                problems[name] = problem
        return not problems, problems


def register_views(app: faust.App, metrics: Metrics, readiness: Readiness) -> None:
    """Add ``/health``, ``/ready`` and ``/metrics`` to the app's web server."""
    metrics.report_readiness(readiness)

    @app.page("/health")
    async def health(self: Any, request: Any) -> Any:
        return self.json({"status": "up"})

    @app.page("/ready")
    async def ready(self: Any, request: Any) -> Any:
        ok, problems = readiness.evaluate()
        body = {"status": "ready" if ok else "not ready", "checks": {n: problems.get(n, "ok") for n in readiness.checks}}
        return self.json(body, status=200 if ok else 503)

    @app.page("/metrics")
    async def prometheus(self: Any, request: Any) -> Any:
        data, _ = metrics.exposition()
        # aiohttp refuses a charset inside content_type; the exposition is UTF-8 (ASCII in practice).
        return self.bytes(data, content_type=PROMETHEUS_CONTENT_TYPE)
