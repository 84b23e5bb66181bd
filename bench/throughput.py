"""Ingest throughput: how fast a fresh consumer group works through a ready backlog.

The backlog (the capture for N hosts, :func:`bench.load.preload`) is in the
topic before anyone reads it, so what is timed is consumption alone:

* **baseline** -- :mod:`bench.passthrough` in its own process, timed by
  itself from the first fetched record to the last acknowledged produce;
* **ves-streams** -- 1 or 2 workers with ``VES_STREAMS_ROLE=process`` (ingest
  to the samples topic, then the samples agent updating the state table).
  The workers' ``/metrics`` counters (``ves_streams_messages_in`` per topic)
  are polled every 0.5 s. The window opens when every worker is ready
  (partitions assigned, not rebalancing), as the backlog is published (or,
  for a backlog already there, once they have consumed something), so
  start-up and the first rebalance are not counted, and closes when every
  value list has passed both stages or the time box runs out. (Opening it
  at the first progress seen missed all of N = 100's 12,300 value lists
  once ingest took them within one poll.)

A value list is *ingested* once it is in the state table, after two
stages (collectd topic -> samples topic -> table). Each stage's progress in
the window counts half: ``rate = (d_values + d_samples) / 2 / seconds``,
which is the plain rate when the backlog is finished in the window and
stays fair when the time box closes it first with one stage ahead of the
other (the result then says it was time-boxed). CPU seconds in the window give a second figure, value lists per
CPU second, which other load on the machine does not distort.

The render interval is set to an hour so that no measurement tick falls
into the window: this phase measures ingest, the latency phase the rest.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import requests

from bench.broker import BenchBroker, EndOffsets
from bench.procs import PROJECT_DIR, BenchProcess, MachineCpu, ProcessError, WorkerProcess, cpu_seconds
from ves_streams.dev.kafka import free_ports

__all__ = ["IngestResult", "run_baseline", "run_faust_passthrough", "run_workers", "worker_settings", "worker_topics"]

#: Worker metrics are polled this often (each poll costs the worker a Prometheus exposition).
POLL_SECONDS = 0.5


@dataclass
class IngestResult:
    """One timed consumption of a backlog."""

    system: str  # "baseline" or "ves-streams"
    hosts: int
    workers: int
    backlog: int  # value lists in the topic
    ingested: float  # value lists counted in the window
    seconds: float
    cpu_seconds: float  # all workers, in the window
    complete: bool  # the whole backlog went through before the time box closed
    peak_rss_mb: list[float] = field(default_factory=list)
    lag_end: dict[str, int] = field(default_factory=dict)
    consumed_rate: float = 0.0  # collectd-topic records per second (first stage only)
    broker_cpu_seconds: float = 0.0  # the Kafka broker's CPU in the window
    machine_busy: float = 0.0  # fraction of all CPUs busy in the window (every process on the machine)
    load_average: tuple[float, float] = (0.0, 0.0)  # 1-min load average at start and end
    error: str | None = None

    @property
    def rate(self) -> float:
        """Value lists per second, all workers together."""
        return self.ingested / self.seconds if self.seconds > 0 else 0.0

    @property
    def rate_per_worker(self) -> float:
        return self.rate / max(1, self.workers)

    @property
    def per_cpu_second(self) -> float:
        return self.ingested / self.cpu_seconds if self.cpu_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(rate=self.rate, rate_per_worker=self.rate_per_worker, per_cpu_second=self.per_cpu_second)
        return out


def _load1() -> float:
    return os.getloadavg()[0]


def run_baseline(
    broker: BenchBroker, topic: str, output: str, group: str, hosts: int, backlog: int, time_box: float, log: Path
) -> IngestResult:
    """Run :mod:`bench.passthrough` over ``topic`` and read its JSON result."""
    load_start = _load1()
    command = [sys.executable, "-m", "bench.passthrough", "--bootstrap", broker.bootstrap, "--input", topic,
               "--output", output, "--group", group, "--expect", str(backlog), "--timeout", str(time_box)]  # fmt: skip
    log.parent.mkdir(parents=True, exist_ok=True)
    machine = MachineCpu()
    broker_cpu = _broker_cpu(broker)
    with open(log, "ab") as err:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=err, cwd=PROJECT_DIR, timeout=time_box + 120)
    busy, broker_cpu = machine.busy(), _broker_cpu(broker) - broker_cpu
    lines = done.stdout.decode().strip().splitlines()
    if not lines:
        return IngestResult("baseline", hosts, 1, backlog, 0, 0, 0, False, error=f"passthrough failed; see {log}")
    data = orjson.loads(lines[-1])
    lag = asyncio.run(broker.lag(group, [topic]))
    return IngestResult(
        system="baseline",
        hosts=hosts,
        workers=1,
        backlog=backlog,
        ingested=data["messages"],
        seconds=data["seconds"],
        cpu_seconds=data["cpu_seconds"],
        complete=bool(data["complete"]),
        peak_rss_mb=[data["peak_rss_mb"]],
        lag_end=dict(lag),
        consumed_rate=data["rate"],
        load_average=(load_start, _load1()),
        broker_cpu_seconds=broker_cpu,  # the process's whole life, start-up included
        machine_busy=busy,
    )


def run_faust_passthrough(
    broker: BenchBroker, topic: str, app_id: str, hosts: int, backlog: int, time_box: float, work_dir: Path
) -> IngestResult:
    """Time :mod:`bench.faust_passthrough` (the passthrough as a Faust agent) on ``topic``."""
    port = free_ports(1)[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VES_STREAMS_", "BENCH_FAUST_"))}
    env.update(BENCH_FAUST_APP=app_id, BENCH_FAUST_BROKER=broker.url, BENCH_FAUST_INPUT=topic,
               BENCH_FAUST_OUTPUT=f"{app_id}-out", BENCH_FAUST_DATA_DIR=str(work_dir / f"{app_id}-data"))  # fmt: skip
    command = [sys.executable, "-m", "faust", "-A", "bench.faust_passthrough", "worker", "-l", "warn", "--web-port", str(port)]
    proc = BenchProcess("faust passthrough", command, work_dir / f"{app_id}.log", env)
    asyncio.run(broker.create_topics([f"{app_id}-out"]))
    load_start = _load1()
    result = IngestResult("faust passthrough", hosts, 1, backlog, 0, 0, 0, False)

    def handled() -> float:
        try:
            return float(requests.get(f"http://127.0.0.1:{port}/count", timeout=2).json()["records"])
        except (requests.RequestException, ValueError, KeyError):
            return 0.0

    try:
        proc.start()
        deadline = time.monotonic() + 120
        first = 0.0
        while first <= 0:
            proc.check_alive()
            if time.monotonic() > deadline:
                raise ProcessError(f"faust passthrough consumed nothing in 120 s; see {proc.log_path}")
            time.sleep(POLL_SECONDS)
            first = handled()
        proc.mark_cpu()
        machine = MachineCpu()
        t0, first = time.perf_counter(), handled()
        count = first
        while count < backlog and time.perf_counter() - t0 < time_box:
            time.sleep(POLL_SECONDS)
            proc.check_alive()
            proc.sample()
            count = handled()
        result.seconds = time.perf_counter() - t0
        result.ingested = count - first
        result.cpu_seconds = proc.cpu_since_mark()
        result.complete = count >= backlog
        result.consumed_rate = result.rate
        result.machine_busy = machine.busy()
    except ProcessError as exc:
        result.error = str(exc).splitlines()[0]
    finally:
        proc.stop()
    result.peak_rss_mb = [proc.peak_rss or 0.0]
    result.load_average = (load_start, _load1())
    return result


def worker_settings(broker: BenchBroker, app_id: str, data_dir: Path, topology: Path, **extra: str) -> dict[str, str]:
    """The ``VES_STREAMS_*`` environment of a benchmark worker (topics named after ``app_id`` unless given)."""
    settings = {
        **broker.client_env(),
        "VES_STREAMS_APP_ID": app_id,
        "VES_STREAMS_DATA_DIR": str(data_dir),
        "VES_STREAMS_TOPOLOGY": str(topology),
        "VES_STREAMS_PARTITIONS": str(broker.default_partitions),
        "VES_STREAMS_VALUES_TOPIC": f"{app_id}-values",
        "VES_STREAMS_NOTIFICATIONS_TOPIC": f"{app_id}-notifications",
        "VES_STREAMS_EVENTS_TOPIC": f"{app_id}-events",
        "VES_STREAMS_DLQ_TOPIC": f"{app_id}-dlq",
        "VES_STREAMS_EVENTS_DLQ_TOPIC": f"{app_id}-events-dlq",
    }
    settings.update(extra)
    return settings


def worker_topics(settings: dict[str, str]) -> list[str]:
    """Topics a processing worker reads or writes, to create before it starts.

    Faust creates them itself, but a worker that subscribes before the
    creation is visible logs "Ignoring missing topic" and does not consume
    that topic until its next metadata refresh (minutes): the samples topic,
    in practice, so nothing reached the state. Creating them first keeps that
    start-up race out of the figures.
    """
    app_id = settings["VES_STREAMS_APP_ID"]
    return [settings["VES_STREAMS_VALUES_TOPIC"], settings["VES_STREAMS_NOTIFICATIONS_TOPIC"], f"{app_id}-samples",
            settings["VES_STREAMS_EVENTS_TOPIC"], settings["VES_STREAMS_DLQ_TOPIC"]]  # fmt: skip


def _counter(metrics: dict[tuple[str, str], float] | None, topic: str) -> float:
    if not metrics:
        return 0.0
    return metrics.get(("ves_streams_messages_in", f'topic="{topic}"'), 0.0)


def run_workers(
    broker: BenchBroker,
    topic: str,
    app_id: str,
    workers: int,
    hosts: int,
    backlog: int,
    time_box: float,
    work_dir: Path,
    topology: Path,
    start_timeout: float = 120.0,
    profile: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
    load: Callable[[str], Awaitable[Any]] | None = None,
) -> IngestResult:
    """Start ``workers`` ves-streams workers (role ``process``) on ``topic`` and time them.

    With ``load``, the workers read a topic of their own instead, empty until
    every worker is ready; then ``load(that topic)`` publishes the backlog
    into it. Ingest works through a backlog faster than a second worker
    starts (~20,000 value lists/s), so on a ready backlog the first worker
    would finish it alone before the window opened.

    With ``profile``, the first worker runs under pyinstrument and writes its session there.
    ``extra_env`` is added to the workers' environment (e.g. Faust settings such as
    ``PRODUCER_LINGER``, which Faust reads from the environment).
    """
    samples_topic = f"{app_id}-samples"
    if load is not None:
        topic = f"{app_id}-collectd"
    ports = free_ports(workers)
    procs = [
        WorkerProcess(
            f"worker-{i + 1}",
            work_dir / f"{app_id}-worker-{i + 1}.log",
            worker_settings(broker, app_id, work_dir / f"{app_id}-data-{i + 1}", topology,
                            VES_STREAMS_ROLE="process", VES_STREAMS_INTERVAL="3600", VES_STREAMS_VALUES_TOPIC=topic,
                            **(extra_env or {})),
            ports[i],
            profile=profile if i == 0 else None,
        )  # fmt: skip
        for i in range(workers)
    ]
    asyncio.run(broker.create_topics(worker_topics(dict(procs[0].env or {}))))
    load_start = _load1()
    result = IngestResult("ves-streams", hosts, workers, backlog, 0, 0, 0, False)
    try:
        for proc in procs:
            proc.start()
        result = asyncio.run(
            _time_window(broker, procs, topic, samples_topic, hosts, backlog, time_box, start_timeout, load)
        )
        # A finished backlog should end with no lag once the next periodic commit (2.8 s) happened.
        within = 6.0 if result.complete else 0.0
        lag = asyncio.run(broker.settled_lag(f"{app_id}-ingest", [topic], within=within))  # ingest's own group
        lag.update(asyncio.run(broker.settled_lag(app_id, [samples_topic], within=within)))
        result.lag_end = dict(lag)
    except ProcessError as exc:
        result.error = str(exc).splitlines()[0]
    finally:
        for proc in procs:
            proc.stop()
    result.peak_rss_mb = [p.peak_rss or 0.0 for p in procs]
    result.load_average = (load_start, _load1())
    return result


async def _time_window(
    broker: BenchBroker,
    procs: list[WorkerProcess],
    topic: str,
    samples_topic: str,
    hosts: int,
    backlog: int,
    time_box: float,
    start_timeout: float,
    load: Callable[[str], Awaitable[Any]] | None = None,
) -> IngestResult:
    async with EndOffsets(broker.bootstrap) as ends:
        deadline = time.monotonic() + start_timeout
        loading: asyncio.Task[Any] | None = None
        while True:
            if time.monotonic() > deadline:
                raise ProcessError(f"workers not ready and consuming after {start_timeout:.0f} s; see {procs[0].log_path}")
            first = await _progress(procs, topic, samples_topic, ends)
            ready = all(await asyncio.gather(*(asyncio.to_thread(p.ready) for p in procs)))
            if ready and load is not None:
                break  # the window opens as the backlog is published (a small one is done within a poll)
            if first.values > 0 and ready:
                break
            await asyncio.sleep(POLL_SECONDS)
        for proc in procs:
            proc.mark_cpu()
        machine = MachineCpu()
        broker_cpu = _broker_cpu(broker)
        first = await _progress(procs, topic, samples_topic, ends)
        if load is not None:
            loading = asyncio.ensure_future(load(topic))
        values_done_at: float | None = None
        complete = False
        while True:
            await asyncio.sleep(POLL_SECONDS)
            last = await _progress(procs, topic, samples_topic, ends)
            if values_done_at is None and last.values >= backlog:
                values_done_at = last.at
            if last.values >= backlog and last.in_state >= backlog:
                complete = True
                break
            if last.at - first.at >= time_box:
                break
        if loading is not None:
            await loading  # long done: it publishes far faster than ingest consumes
    seconds = last.at - first.at
    consumed_seconds = (values_done_at or last.at) - first.at
    return IngestResult(
        system="ves-streams",
        hosts=hosts,
        workers=len(procs),
        backlog=backlog,
        ingested=((last.values - first.values) + (last.in_state - first.in_state)) / 2,
        seconds=seconds,
        cpu_seconds=sum(proc.cpu_since_mark() for proc in procs),
        complete=complete,
        consumed_rate=(last.values - first.values) / consumed_seconds if consumed_seconds > 0 else 0.0,
        broker_cpu_seconds=_broker_cpu(broker) - broker_cpu,
        machine_busy=machine.busy(),
    )


def _broker_cpu(broker: BenchBroker) -> float:
    return sum(cpu_seconds(pid) or 0.0 for pid in broker.pids)


@dataclass(frozen=True, slots=True)
class _Progress:
    at: float
    values: float  # collectd records consumed (first stage)
    in_state: float  # value lists applied to the table (second stage), estimated

    @classmethod
    def of(cls, at: float, values: float, samples_consumed: float, samples_in_topic: int) -> _Progress:
        # Ingest packs many value lists into one samples record, so the second
        # stage is known as a fraction: records consumed / records produced.
        if samples_in_topic <= 0:
            return cls(at, values, 0.0)
        return cls(at, values, values * min(1.0, samples_consumed / samples_in_topic))


async def _progress(procs: list[WorkerProcess], topic: str, samples_topic: str, ends: EndOffsets) -> _Progress:
    for proc in procs:
        proc.check_alive()
        proc.sample()
    snapshots = await asyncio.gather(*(asyncio.to_thread(proc.metrics) for proc in procs))
    at = time.perf_counter()
    produced = await ends.total([samples_topic])
    values = sum(_counter(s, topic) for s in snapshots)
    samples = sum(_counter(s, samples_topic) for s in snapshots)
    return _Progress.of(at, values, samples, produced)
