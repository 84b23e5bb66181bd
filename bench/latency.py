"""End-to-end latency at the realistic rate: collectd topic -> worker -> VES collector.

One worker (``VES_STREAMS_ROLE=all``: processing and the HTTP sink)
delivers to the real local collector (``ves-streams collector --quiet
--record``), while :func:`bench.load.publish_realistic` plays N hosts for a
number of intervals. Afterwards the collector's record is read back:

* **fault latency** -- collector ``received_at`` minus the moment the
  notification was produced (its ``startsAt``, which the fault event carries
  as ``lastEpochMicrosec``: ``startEpochMicrosec`` is its alarm's onset;
  events are matched by ``(sourceName, lastEpochMicrosec)``);
* **measurement latency** -- ``received_at`` of a host's measurement event
  minus the end of the interval its samples were published in (the event's
  ``startEpochMicrosec`` is the samples' time). This is "sample published ->
  event received, minus the interval wait". A host whose samples missed
  their window's render shows up with a latency above one interval, and a
  host never delivered counts as missing. The first round is warm-up and is
  left out of the percentiles.

The worker's peak RSS, the collector's, and both consumer groups' lag at the
end are recorded too. :func:`run_sink_backlog` then measures how fast a
sink-only worker delivers a ready backlog of events (the events this phase
produced) to a fresh collector.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.broker import BenchBroker
from bench.load import RealisticLog, RoundLog, publish_realistic
from bench.procs import CollectorProcess, ProcessError, WorkerProcess
from bench.throughput import worker_settings, worker_topics
from ves_streams.dev.kafka import free_ports
from ves_streams.dev.replay import Capture, host_names

__all__ = ["LatencyResult", "Percentiles", "SinkResult", "analyse", "percentile", "run_latency", "run_sink_backlog"]

#: Rounds at the start of the run left out of the percentiles (worker warm-up).
WARMUP_ROUNDS = 1
#: Wait after the last interval before reading the lag (longer than Faust's 2.8 s commit interval).
LAG_SETTLE_SECONDS = 4.0


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (``p`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Percentiles:
    count: int = 0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, values: Sequence[float]) -> Percentiles:
        return cls(len(values), percentile(values, 50), percentile(values, 95), percentile(values, 99),
                   max(values) if values else None)  # fmt: skip


@dataclass
class LatencyResult:
    hosts: int
    interval: float
    rounds: int
    offered_rate: float = 0.0  # value lists per second the load asks for
    published: int = 0  # value lists published
    publish_seconds_max: float = 0.0  # longest time to publish one round (all acknowledged)
    notifications: int = 0
    faults_matched: int = 0
    fault_latency: Percentiles = field(default_factory=Percentiles)
    #: the same split by when the notification was raised (:func:`fault_phase`): during the round's
    #: value-list burst, between the boundary and the burst (the render), or in the quiet rest
    fault_latency_by_phase: dict[str, Percentiles] = field(default_factory=dict)
    #: and by the second of the interval it was raised in ("0" .. "9" at a 10 s interval)
    fault_latency_by_second: dict[str, Percentiles] = field(default_factory=dict)
    measurements_expected: int = 0  # hosts x measured rounds
    measurements_received: int = 0  # distinct (host, round) received
    measurement_latency: Percentiles = field(default_factory=Percentiles)
    measurements_late: int = 0  # received more than one interval after their window closed
    events_received: int = 0  # every event the collector accepted during the run
    events_per_second: float = 0.0  # over the publishing period (bounded by the offered load)
    events_by_domain: dict[str, int] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    collector_peak_rss_mb: float = 0.0
    worker_cpu_seconds: float = 0.0
    value_lists_per_host_per_round: float = 0.0
    lag_end: dict[str, int] = field(default_factory=dict)
    load_average: tuple[float, float] = (0.0, 0.0)
    events_topic: str = ""
    error: str | None = None

    @property
    def kept_up(self) -> bool:
        """Every notification and every host's every measured window arrived, and nothing was left unconsumed."""
        return (
            self.error is None
            and self.faults_matched >= self.notifications
            and self.measurements_received >= self.measurements_expected
            and sum(self.lag_end.values()) == 0
        )

    @property
    def cpu_ms_per_value_list(self) -> float | None:
        """Worker CPU per value list it consumed, every stage and the sink included (the load's own mix)."""
        consumed = self.published - self.lag_end.get("values", 0)
        return self.worker_cpu_seconds * 1000 / consumed if consumed > 0 and self.worker_cpu_seconds > 0 else None

    @property
    def hosts_per_core(self) -> float | None:
        """Hosts one fully available core could serve at this cost: what keeping up needs, whatever else runs."""
        cost = self.cpu_ms_per_value_list
        if not cost or not self.value_lists_per_host_per_round:
            return None
        return self.interval * 1000 / (cost * self.value_lists_per_host_per_round)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(kept_up=self.kept_up, cpu_ms_per_value_list=self.cpu_ms_per_value_list, hosts_per_core=self.hosts_per_core)
        return out


def run_latency(
    broker: BenchBroker,
    capture: Capture,
    hosts: int,
    *,
    run_id: str,
    interval: float,
    rounds: int,
    work_dir: Path,
    topology: Path,
    profile: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> LatencyResult:
    """Publish ``rounds`` intervals for ``hosts`` hosts to one ``all`` worker and measure at the collector."""
    app_id = f"{run_id}-lat-n{hosts}"
    settings = worker_settings(
        broker, app_id, work_dir / f"{app_id}-data", topology, VES_STREAMS_ROLE="all", VES_STREAMS_INTERVAL=f"{interval:g}",
        **(extra_env or {}),
    )
    topics = [settings["VES_STREAMS_VALUES_TOPIC"], settings["VES_STREAMS_NOTIFICATIONS_TOPIC"], settings["VES_STREAMS_EVENTS_TOPIC"]]
    asyncio.run(broker.create_topics(worker_topics(settings)))
    result = LatencyResult(hosts, interval, rounds, events_topic=settings["VES_STREAMS_EVENTS_TOPIC"])
    result.offered_rate = hosts * capture.value_lists_per_round / interval
    result.value_lists_per_host_per_round = capture.value_lists_per_round
    load_start = _load1()
    collector = CollectorProcess(work_dir / f"{app_id}-collector.log", work_dir / f"{app_id}-events.jsonl")
    worker: WorkerProcess | None = None
    log: RealisticLog | None = None
    try:
        collector.start()
        settings["VES_STREAMS_COLLECTOR_URL"] = collector.wait_listening()
        worker = WorkerProcess("worker", work_dir / f"{app_id}-worker.log", settings, free_ports(1)[0], profile=profile)
        worker.start()
        worker.wait_ready()
        worker.mark_cpu()
        log = asyncio.run(_drive(broker, capture, hosts, settings, interval, rounds, worker, collector))
        result.worker_cpu_seconds = worker.cpu_since_mark()
        processing = asyncio.run(broker.lag(app_id, [f"{app_id}-samples"]))
        ingest = asyncio.run(broker.lag(f"{app_id}-ingest", [topics[0]]))
        faults = asyncio.run(broker.lag(f"{app_id}-faults", [topics[1]]))
        sink = asyncio.run(broker.lag(f"{app_id}-sink", [topics[2]]))
        result.lag_end = {
            "values": ingest[topics[0]],
            "notifications": faults[topics[1]],
            "samples": processing[f"{app_id}-samples"],
            "events (sink)": sink[topics[2]],
        }
    except ProcessError as exc:
        result.error = str(exc).splitlines()[0]
    finally:
        if worker is not None:
            worker.stop()
        collector.stop()
    result.peak_rss_mb = (worker.peak_rss or 0.0) if worker is not None else 0.0
    result.collector_peak_rss_mb = collector.peak_rss or 0.0
    result.load_average = (load_start, _load1())
    if log is not None:
        analyse(result, log, collector.record)
    return result


async def _drive(
    broker: BenchBroker,
    capture: Capture,
    hosts: int,
    settings: dict[str, str],
    interval: float,
    rounds: int,
    worker: WorkerProcess,
    collector: CollectorProcess,
) -> RealisticLog:
    """Publish the load while sampling the processes; then give the last window one interval to arrive."""
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            worker.check_alive()
            worker.sample()
            collector.sample()
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                pass

    watcher = asyncio.create_task(watch())
    try:
        log = await publish_realistic(
            broker.bootstrap, capture, host_names(hosts),
            values_topic=settings["VES_STREAMS_VALUES_TOPIC"],
            notifications_topic=settings["VES_STREAMS_NOTIFICATIONS_TOPIC"],
            interval=interval, rounds=rounds, partitions=broker.default_partitions,
        )  # fmt: skip
        last_window_end = log.rounds[-1].window_start + interval
        # One more interval for the last window's events to arrive, and a few
        # seconds more so that the tick of that boundary is processed and the
        # workers' periodic offset commit (2.8 s) has happened before the lag is read.
        await asyncio.sleep(max(0.0, last_window_end + interval + LAG_SETTLE_SECONDS - time.time()))
    finally:
        stop.set()
        await watcher
    return log


def _read_record(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().split(b"\n") if line.strip()]


def analyse(result: LatencyResult, log: RealisticLog, record: Path) -> None:
    """Fill ``result``'s latency figures from the publish log and the collector's record.

    Notifications produced and windows of the first ``WARMUP_ROUNDS`` rounds
    are left out of both the expected counts and the percentiles.
    """
    interval = log.interval
    result.published = log.value_lists
    result.publish_seconds_max = max((r.published_at - r.sample_time for r in log.rounds), default=0.0)
    measured = [r for r in log.rounds if r.index >= WARMUP_ROUNDS]
    since = measured[0].window_start if measured else math.inf
    notifications = {key for key in log.notifications if key[1] / 1e6 >= since}
    result.notifications = len(notifications)
    stamps = {round(r.sample_time, 3): r for r in measured}
    result.measurements_expected = log.hosts * len(measured)
    fault_latencies: list[float] = []
    fault_phases: list[tuple[float, float]] = []
    first_seen: dict[tuple[str, int], float] = {}
    by_domain: dict[str, int] = {}
    received: list[float] = []
    for row in _read_record(record):
        event = row.get("event") or {}
        header = event.get("commonEventHeader") or {}
        domain = str(header.get("domain"))
        by_domain[domain] = by_domain.get(domain, 0) + 1
        at = float(row["received_at"])
        received.append(at)
        host = header.get("sourceName")
        start_us = int(header.get("startEpochMicrosec") or 0)
        if domain == "fault":
            raised_us = int(header.get("lastEpochMicrosec") or 0)  # this notification's time (start: its alarm's onset)
            if (host, raised_us) in notifications:
                fault_latencies.append(at - raised_us / 1e6)
                fault_phases.append((raised_us / 1e6, at - raised_us / 1e6))
        elif domain == "measurement":
            round_ = stamps.get(round(start_us / 1e6, 3))
            if round_ is not None:
                key = (str(host), round_.index)
                window_end = round_.window_start + interval
                first_seen[key] = min(first_seen.get(key, math.inf), at - window_end)
    result.faults_matched = len(fault_latencies)
    result.fault_latency = Percentiles.of(fault_latencies)
    by_phase: dict[str, list[float]] = {}
    for start, latency in fault_phases:
        by_phase.setdefault(fault_phase(start, log.rounds, interval), []).append(latency)
    result.fault_latency_by_phase = {phase: Percentiles.of(values) for phase, values in sorted(by_phase.items())}
    by_second: dict[int, list[float]] = {}
    for start, latency in fault_phases:
        by_second.setdefault(int((start % interval) // 1), []).append(latency)
    result.fault_latency_by_second = {str(sec): Percentiles.of(by_second[sec]) for sec in sorted(by_second)}
    measurement_latencies = list(first_seen.values())
    result.measurements_received = len(measurement_latencies)
    result.measurement_latency = Percentiles.of(measurement_latencies)
    result.measurements_late = sum(1 for v in measurement_latencies if v > interval)
    result.events_received = len(received)
    result.events_by_domain = by_domain
    if log.rounds:
        period = log.rounds[-1].window_start + interval - log.rounds[0].window_start
        result.events_per_second = len(received) / period if period > 0 else 0.0


def fault_phase(raised: float, rounds: Sequence[RoundLog], interval: float) -> str:
    """When a notification raised at ``raised`` was raised, as the worker saw the interval.

    ``burst``: while its round's value lists were being published (ingest's
    busiest seconds); ``boundary``: between the interval boundary and the
    round's start (the boundary's render); ``quiet``: the rest.
    """
    for entry in rounds:
        if entry.window_start <= raised < entry.window_start + interval:
            if entry.sample_time <= raised <= entry.published_at:
                return "burst"
            if raised < entry.sample_time:
                return "boundary"
            return "quiet"
    return "quiet"


@dataclass
class SinkResult:
    """A sink-only worker delivering a ready backlog of events to a fresh collector."""

    events: int
    #: seconds the collector held every request (0: it answered as fast as it could)
    collector_delay: float = 0.0
    delivered: float = 0.0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    complete: bool = False
    peak_rss_mb: float = 0.0
    collector_cpu_seconds: float = 0.0  # the collector validates every event: it can be the limit
    lag_end: dict[str, int] = field(default_factory=dict)
    #: the sink's concurrency limit and requests in flight, as sampled every 0.1 s: the most seen
    peak_concurrency_limit: float = 0.0
    peak_requests_in_flight: float = 0.0
    #: (seconds since the first delivery, events delivered, concurrency limit, requests in flight), every 0.5 s
    timeline: list[tuple[float, float, float, float]] = field(default_factory=list)
    error: str | None = None

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["rate"] = self.rate
        return out


def run_sink_backlog(
    broker: BenchBroker,
    events_topic: str,
    *,
    run_id: str,
    work_dir: Path,
    topology: Path,
    time_box: float,
    extra_env: Mapping[str, str] | None = None,
    collector_delay: float = 0.0,
) -> SinkResult:
    """Time a sink-only worker (``VES_STREAMS_ROLE=sink``) through every event in ``events_topic``.

    ``collector_delay`` > 0 makes the collector hold every request that long
    (a collector far away, or busy): what pipelined requests are for.
    """
    app_id = f"{run_id}-sink" + (f"-{int(collector_delay * 1000)}ms" if collector_delay else "")
    total = asyncio.run(broker.message_count([events_topic]))
    result = SinkResult(total, collector_delay=collector_delay)
    collector = CollectorProcess(work_dir / f"{app_id}-collector.log", work_dir / f"{app_id}-events.jsonl",
                                 control=collector_delay > 0)  # fmt: skip
    worker: WorkerProcess | None = None
    try:
        collector.start()
        url = collector.wait_listening()
        if collector_delay:
            collector.control(delay=collector_delay)
        settings = worker_settings(
            broker, app_id, work_dir / f"{app_id}-data", topology,
            VES_STREAMS_ROLE="sink", VES_STREAMS_EVENTS_TOPIC=events_topic,
            VES_STREAMS_COLLECTOR_URL=url, **(extra_env or {}),
        )  # fmt: skip
        worker = WorkerProcess("sink", work_dir / f"{app_id}-worker.log", settings, free_ports(1)[0])
        worker.start()
        worker.wait_ready()
        start: tuple[float, float] | None = None
        deadline = time.monotonic() + time_box + 60
        while time.monotonic() < deadline:
            worker.check_alive()
            worker.sample()
            metrics = worker.metrics() or {}
            delivered = _metric(metrics, "ves_streams_sink_events_delivered")
            result.peak_concurrency_limit = max(result.peak_concurrency_limit, _metric(metrics, "ves_streams_sink_concurrency_limit"))
            result.peak_requests_in_flight = max(result.peak_requests_in_flight, _metric(metrics, "ves_streams_sink_requests_in_flight"))
            now = time.perf_counter()
            if start is None and delivered > 0:
                worker.mark_cpu()
                collector.mark_cpu()
                start = (now, delivered)
            if start is not None:
                result.delivered = delivered - start[1]
                result.seconds = now - start[0]
                if not result.timeline or result.seconds - result.timeline[-1][0] >= 0.5:
                    result.timeline.append((round(result.seconds, 2), result.delivered,
                                            _metric(metrics, "ves_streams_sink_concurrency_limit"),
                                            _metric(metrics, "ves_streams_sink_requests_in_flight")))  # fmt: skip
                if delivered >= total:
                    result.complete = True
                    break
                if result.seconds >= time_box:
                    break
            time.sleep(0.1)
        result.cpu_seconds = worker.cpu_since_mark()
        result.collector_cpu_seconds = collector.cpu_since_mark()
        result.lag_end = dict(asyncio.run(broker.settled_lag(f"{app_id}-sink", [events_topic], within=5.0)))
    except ProcessError as exc:
        result.error = str(exc).splitlines()[0]
    finally:
        if worker is not None:
            worker.stop()
            result.peak_rss_mb = worker.peak_rss or 0.0
        collector.stop()
    return result


def _metric(metrics: Mapping[tuple[str, Any], float], wanted: str) -> float:
    return sum(v for (name, _labels), v in metrics.items() if name == wanted)


def _load1() -> float:
    import os

    return os.getloadavg()[0]
