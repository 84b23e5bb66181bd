"""Soak: hours without loss, stall or growth, with faults injected on a schedule.

``python -m bench.soak --minutes 60 --hosts 1000`` (``make soak``) runs, on a
3-node KRaft cluster (RF 3, ``min.insync.replicas`` 2), two processing
workers, one sink worker and the real local collector; publishes N hosts at
the realistic rate (:func:`bench.load.publish_realistic`: one capture round
per host per interval, the captured notifications spread over it), and
injects, on a schedule:

* a processing worker killed with SIGKILL and started again, every
  ``--kill-every`` seconds (600; the two take turns);
* the collector down for ``--collector-down`` seconds (60) every
  ``--collector-every`` (900);
* one broker of three killed and restarted, every ``--broker-every`` (1200;
  the nodes take turns).

Every minute it samples RSS and CPU of every process and the consumer lag of
every group. At the end it reads what the collector accepted and reports
per minute: windows delivered / late / missing, faults delivered /
expected, duplicate eventIds, RSS per process, lag per group, CPU per value
list; and checks the targets: no fault and no window lost, every window
delivered within :data:`LATE_BOUND` intervals, RSS growing by less than
5 MB per hour after the first 10 minutes of a process's life, no stall (no
minute without an event while traffic flows and the collector is up).
Results: ``bench/results/soak-<stamp>.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import requests

from bench.broker import BenchBroker
from bench.latency import _read_record
from bench.load import RealisticLog, publish_realistic
from bench.procs import BenchProcess, ProcessError, WorkerProcess, cpu_seconds, rss_mb
from bench.throughput import worker_settings, worker_topics
from ves_streams.dev.kafka import DEFAULT_KAFKA_VERSION, free_ports
from ves_streams.dev.replay import DEFAULT_CAPTURE_DIR, host_names, load_capture

PROJECT_DIR = Path(__file__).resolve().parent.parent
#: A window delivered later than this many intervals after it closed counts as late (the drills' bound:
#: a takeover or an outage may hold windows back, rendered once it is over).
LATE_BOUND = 12
#: Rounds at the start whose windows and notifications are not counted (the workers warm up).
WARMUP_ROUNDS = 3
#: Target: RSS growth per hour of a process after its first 10 minutes.
MAX_GROWTH_MB_PER_HOUR = 5.0


@dataclass
class Injection:
    at: float
    kind: str
    target: str
    seconds: float = 0.0


@dataclass
class Minute:
    index: int
    started: float
    rss_mb: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    lag: dict[str, int] = field(default_factory=dict)
    collector_up: bool = True


def _collector(port: int, record: Path, log: Path) -> BenchProcess:
    command = [sys.executable, "-m", "ves_streams.cli", "collector", "--host", "127.0.0.1", "--port", str(port),
               "--record", str(record), "--quiet"]  # fmt: skip
    return BenchProcess("collector", command, log)


def _wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise ProcessError(f"{url} did not answer within {timeout:.0f} s")


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.run_id = f"soak-{stamp.lower()}"
        self.work = Path(tempfile.mkdtemp(prefix=f"ves-streams-{self.run_id}-"))
        self.results: Path = args.results
        self.stamp = stamp
        self.broker = BenchBroker(self.work / "kafka", args.kafka_version, partitions=8, size=3, security=args.kafka_security)
        self.procs: dict[str, BenchProcess] = {}
        self.settings: dict[str, dict[str, str]] = {}
        self.minutes: list[Minute] = []
        self.injections: list[Injection] = []
        #: workers that exited by themselves, each restarted as Kubernetes would (restartPolicy: Always)
        self.exits: list[Injection] = []
        self.collector_down: list[tuple[float, float]] = []
        self.starts: dict[str, list[float]] = defaultdict(list)
        self.record = self.work / "events.jsonl"
        self.collector_port = free_ports(1)[0]
        self.errors: list[str] = []

    # -- processes -------------------------------------------------------

    def _start_worker(self, name: str) -> None:
        settings = self.settings[name]
        worker = WorkerProcess(name, self.work / f"{name}.log", settings, int(settings["VES_STREAMS_WEB_PORT"]))
        worker.start()
        self.procs[name] = worker
        self.starts[name].append(time.time())

    def _start_collector(self) -> None:
        collector = _collector(self.collector_port, self.record, self.work / "collector.log")
        collector.start()
        self.procs["collector"] = collector
        self.starts["collector"].append(time.time())
        _wait_http(f"http://127.0.0.1:{self.collector_port}/healthcheck")

    def start(self) -> None:
        args = self.args
        self.broker.start()
        topology = PROJECT_DIR / "topologies" / "host.yaml"
        base = worker_settings(
            self.broker, self.run_id, self.work / "data", topology,
            VES_STREAMS_INTERVAL=f"{args.interval:g}", VES_STREAMS_REPLICATION="3",
            VES_STREAMS_COLLECTOR_URL=f"http://127.0.0.1:{self.collector_port}",
        )  # fmt: skip
        asyncio.run(self.broker.create_topics([*worker_topics(base), base["VES_STREAMS_EVENTS_DLQ_TOPIC"]]))
        for name, role in (("p1", "process"), ("p2", "process"), ("sink", "sink")):
            self.settings[name] = {**base, "VES_STREAMS_ROLE": role, "VES_STREAMS_DATA_DIR": str(self.work / f"{name}-data"),
                                   "VES_STREAMS_WEB_PORT": str(free_ports(1)[0])}  # fmt: skip
        self._start_collector()
        for name in ("p1", "p2", "sink"):
            self._start_worker(name)
        for name in ("p1", "p2", "sink"):
            worker = self.procs[name]
            assert isinstance(worker, WorkerProcess)
            worker.wait_ready(timeout=180)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()
        self.broker.stop()

    def discard_data(self) -> None:
        """Delete the brokers' logs and the workers' state (an hour at 1000 hosts is ~40 GB); keep logs and events."""
        for path in [self.work / "kafka", *self.work.glob("*-data")]:
            shutil.rmtree(path, ignore_errors=True)

    # -- faults ----------------------------------------------------------

    def _kill_worker(self, name: str) -> None:
        worker = self.procs[name]
        import os

        if worker.alive():
            os.killpg(worker.pid, signal.SIGKILL)
            worker.process.wait(timeout=30)  # type: ignore[union-attr]
        self.injections.append(Injection(time.time(), "worker SIGKILL + restart", name))
        self._start_worker(name)

    def _restart_exited_workers(self) -> None:
        """Start again a worker that exited by itself (none should): the run goes on as a cluster's would."""
        for name in ("p1", "p2", "sink"):
            worker = self.procs.get(name)
            if worker is not None and not worker.alive() and time.time() - self.starts[name][-1] > 10:
                code = worker.process.poll() if worker.process is not None else None  # type: ignore[union-attr]
                print(f"[soak] {name} exited by itself (exit code {code}): restarting it", flush=True)
                self.exits.append(Injection(time.time(), f"worker exited by itself (code {code}) + restart", name))
                self._start_worker(name)

    def _collector_outage(self) -> None:
        began = time.time()
        self.procs["collector"].stop()
        self.injections.append(Injection(began, "collector down", "collector", self.args.collector_down))
        time.sleep(self.args.collector_down)
        self._start_collector()
        self.collector_down.append((began, time.time()))

    def _broker_restart(self, index: int) -> None:
        began = time.time()
        cluster = self.broker.cluster
        cluster.kill_node(index)
        time.sleep(5)
        cluster.restart_node(index)
        self.injections.append(Injection(began, "broker SIGKILL + restart", f"node {index + 1}", time.time() - began))

    def _in_background(self, fn: Any, *args: Any) -> None:
        def run() -> None:
            try:
                fn(*args)
            except Exception as exc:  # reported, the soak goes on
                self.errors.append(f"{fn.__name__}: {type(exc).__name__}: {exc}")

        threading.Thread(target=run, name=fn.__name__, daemon=True).start()

    # -- sampling --------------------------------------------------------

    def _sample_minute(self, index: int, started: float) -> Minute:
        minute = Minute(index, started, collector_up=self.procs["collector"].alive())
        for name, proc in self.procs.items():
            if proc.alive():
                minute.rss_mb[name] = rss_mb(proc.pid) or 0.0
                minute.cpu_s[name] = cpu_seconds(proc.pid) or 0.0
        for pid_index, pid in enumerate(self.broker.pids):
            minute.rss_mb[f"broker-{pid_index + 1}"] = rss_mb(pid) or 0.0
        base = self.settings["p1"]
        app = base["VES_STREAMS_APP_ID"]
        groups = {f"{app}-ingest": [base["VES_STREAMS_VALUES_TOPIC"]], f"{app}-faults": [base["VES_STREAMS_NOTIFICATIONS_TOPIC"]],
                  app: [f"{app}-samples"], f"{app}-sink": [base["VES_STREAMS_EVENTS_TOPIC"]]}  # fmt: skip
        for group, topics in groups.items():
            try:
                minute.lag[group] = asyncio.run(asyncio.wait_for(self.broker.lag(group, topics), 20)).total
            except Exception:  # a broker restarting: no reading this minute
                minute.lag[group] = -1
        return minute

    # -- the run ---------------------------------------------------------

    def run(self) -> dict[str, Any]:
        args = self.args
        capture = load_capture(DEFAULT_CAPTURE_DIR / "compute-0.values.jsonl", DEFAULT_CAPTURE_DIR / "compute-0.notifications.jsonl")
        hosts = host_names(args.hosts)
        rounds = int(args.minutes * 60 / args.interval)
        base = self.settings["p1"]
        log_box: dict[str, RealisticLog] = {}

        def load() -> None:
            try:
                log_box["log"] = asyncio.run(publish_realistic(
                    self.broker.client_connection(), capture, hosts, values_topic=base["VES_STREAMS_VALUES_TOPIC"],
                    notifications_topic=base["VES_STREAMS_NOTIFICATIONS_TOPIC"], interval=args.interval,
                    rounds=rounds, partitions=8,
                ))  # fmt: skip
            except Exception as exc:
                self.errors.append(f"load: {type(exc).__name__}: {exc}")

        loader = threading.Thread(target=load, name="load", daemon=True)
        started = time.time()
        loader.start()
        kills = collector_outages = broker_restarts = 0
        minute_index = 0
        print(f"[soak] {args.hosts} hosts for {args.minutes:g} min; work dir {self.work}", flush=True)
        while loader.is_alive():
            elapsed = time.time() - started
            if elapsed >= (minute_index + 1) * 60:
                minute = self._sample_minute(minute_index, started + minute_index * 60)
                self.minutes.append(minute)
                print(f"[soak] minute {minute_index + 1}: RSS {', '.join(f'{k} {v:.0f}' for k, v in minute.rss_mb.items())} MB; "
                      f"lag {minute.lag}", flush=True)  # fmt: skip
                minute_index += 1
            if elapsed >= (kills + 1) * args.kill_every:
                kills += 1
                self._kill_worker("p1" if kills % 2 else "p2")
            if elapsed >= (collector_outages + 1) * args.collector_every:
                collector_outages += 1
                self._in_background(self._collector_outage)
            if elapsed >= (broker_restarts + 1) * args.broker_every:
                broker_restarts += 1
                self._in_background(self._broker_restart, (broker_restarts - 1) % 3)
            self._restart_exited_workers()
            time.sleep(1.0)
        # drain: the last windows, and whatever an injected fault held back
        deadline = time.time() + max(120.0, LATE_BOUND * args.interval)
        while time.time() < deadline:
            lag = self._sample_minute(minute_index, time.time()).lag
            if all(v == 0 for v in lag.values()):
                break
            time.sleep(5)
        time.sleep(2 * args.interval)
        return self.analyse(log_box.get("log"), started)

    # -- analysis --------------------------------------------------------

    def analyse(self, log: RealisticLog | None, started: float) -> dict[str, Any]:
        interval = self.args.interval
        rows = _read_record(self.record)
        out: dict[str, Any] = {"run_id": self.run_id, "hosts": self.args.hosts, "minutes": self.args.minutes,
                               "interval_s": interval, "errors": self.errors,
                               "injections": [vars(i) for i in self.injections],
                               "unexpected_exits": [vars(i) for i in self.exits]}  # fmt: skip
        if log is None:
            out["targets"] = {"load ran": False}
            return out
        measured = [r for r in log.rounds if r.index >= WARMUP_ROUNDS]
        stamps = {round(r.sample_time, 3): r for r in measured}
        since = measured[0].window_start if measured else math.inf
        expected_faults = {key for key in log.notifications if key[1] / 1e6 >= since}
        hosts = host_names(self.args.hosts)
        first_arrival: dict[tuple[str, int], float] = {}
        faults_seen: set[tuple[str, int]] = set()
        ids = Counter()
        received_by_minute: Counter[int] = Counter()
        for row in rows:
            header = (row.get("event") or {}).get("commonEventHeader") or {}
            ids[(header.get("eventId"), header.get("sequence"))] += 1  # an alarm's events share its eventId
            at = float(row["received_at"])
            received_by_minute[int((at - started) // 60)] += 1
            start_us = int(header.get("startEpochMicrosec") or 0)
            host = str(header.get("sourceName"))
            if header.get("domain") == "fault":
                faults_seen.add((host, int(header.get("lastEpochMicrosec") or 0)))  # start: the alarm's onset
            elif header.get("domain") == "measurement":
                round_ = stamps.get(round(start_us / 1e6, 3))
                if round_ is not None:
                    key = (host, round_.index)
                    first_arrival[key] = min(first_arrival.get(key, math.inf), at - (round_.window_start + interval))
        per_minute: list[dict[str, Any]] = []
        by_minute_rounds: dict[int, list[Any]] = defaultdict(list)
        for r in measured:
            by_minute_rounds[int((r.window_start + interval - started) // 60)].append(r)
        missing_total = late_total = 0
        for m in self.minutes:
            windows = [(h, r.index) for r in by_minute_rounds.get(m.index, []) for h in hosts]
            delivered = [first_arrival[w] for w in windows if w in first_arrival]
            late = sum(1 for d in delivered if d > LATE_BOUND * interval)
            missing = len(windows) - len(delivered)
            missing_total += missing
            late_total += late
            lo, hi = started + m.index * 60, started + (m.index + 1) * 60
            faults_expected = [k for k in expected_faults if lo <= k[1] / 1e6 < hi]
            per_minute.append({
                "minute": m.index + 1, "windows_due": len(windows), "windows_delivered": len(delivered),
                "windows_late": late, "windows_missing": missing,
                "faults_expected": len(faults_expected), "faults_delivered": sum(1 for k in faults_expected if k in faults_seen),
                "events_received": received_by_minute.get(m.index, 0), "collector_up": m.collector_up,
                "rss_mb": m.rss_mb, "lag": m.lag, "cpu_s": m.cpu_s,
            })  # fmt: skip
        # CPU per value list, per minute: the workers' CPU seconds in the minute / value lists published in it
        vl_per_round = log.value_lists / max(1, len(log.rounds))
        for prev, cur in zip(per_minute, per_minute[1:]):
            cpu = sum(max(0.0, cur["cpu_s"].get(n, 0.0) - prev["cpu_s"].get(n, 0.0)) for n in ("p1", "p2", "sink"))
            cur["cpu_ms_per_value_list"] = round(1000 * cpu / max(1.0, vl_per_round * 60 / interval), 4)
        stalls = [p["minute"] for p in per_minute[1:] if p["events_received"] == 0 and p["collector_up"]
                  and not any(a <= started + p["minute"] * 60 and b >= started + (p["minute"] - 1) * 60
                              for a, b in self.collector_down)]  # fmt: skip
        growth = self._growth(per_minute, started)
        faults_lost = len(expected_faults - faults_seen)
        duplicates = sum(c - 1 for c in ids.values() if c > 1)
        out.update({
            "windows_expected": sum(p["windows_due"] for p in per_minute), "windows_missing": missing_total,
            "windows_late": late_total, "faults_expected": len(expected_faults), "faults_lost": faults_lost,
            "duplicate_event_ids": duplicates, "stalled_minutes": stalls, "rss_growth_mb_per_hour": growth,
            "per_minute": per_minute,
        })  # fmt: skip
        out["targets"] = {
            "no fault lost": faults_lost == 0,
            "no window lost": missing_total == 0,
            f"every window within {LATE_BOUND} intervals": late_total == 0,
            # not met when nothing was measured: no process lived 10 minutes and 5 samples past that
            f"RSS growth < {MAX_GROWTH_MB_PER_HOUR:g} MB/h after 10 min": bool(growth) and all(
                g < MAX_GROWTH_MB_PER_HOUR for name, g in growth.items() if not name.startswith("broker")),
            "no stall": not stalls,
            "no worker exited by itself": not self.exits,
        }
        return out

    def _growth(self, per_minute: list[dict[str, Any]], started: float) -> dict[str, float]:
        """Least-squares RSS slope (MB/hour) per process, over the minutes at least 10 minutes after its last start."""
        slopes: dict[str, float] = {}
        names = {n for p in per_minute for n in p["rss_mb"]}
        for name in sorted(names):
            starts = self.starts.get(name, [started])
            points = []
            for p in per_minute:
                t = started + p["minute"] * 60
                last_start = max((s for s in starts if s <= t), default=started)
                if t - last_start >= 600 and name in p["rss_mb"]:
                    points.append((t / 3600, p["rss_mb"][name]))
            if len(points) >= 5:
                mx = sum(x for x, _ in points) / len(points)
                my = sum(y for _, y in points) / len(points)
                var = sum((x - mx) ** 2 for x, _ in points)
                if var > 0:
                    slopes[name] = round(sum((x - mx) * (y - my) for x, y in points) / var, 2)
        return slopes


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report.get("per_minute") or []
    minutes = [r["minute"] for r in rows]
    fig, axes = plt.subplots(4, 1, figsize=(11, 13), sharex=True)
    names = sorted({n for r in rows for n in r["rss_mb"]})
    for name in names:
        axes[0].plot(minutes, [r["rss_mb"].get(name, float("nan")) for r in rows], label=name)
    axes[0].set_ylabel("RSS MB")
    axes[0].legend(fontsize=7, ncol=4)
    for group in sorted({g for r in rows for g in r["lag"]}):
        axes[1].plot(minutes, [max(0, r["lag"].get(group, 0)) for r in rows], label=group.rsplit("-", 1)[-1])
    axes[1].set_ylabel("consumer lag")
    axes[1].legend(fontsize=7)
    axes[2].plot(minutes, [r["windows_delivered"] for r in rows], label="windows delivered")
    axes[2].plot(minutes, [r["windows_missing"] for r in rows], label="windows missing")
    axes[2].plot(minutes, [r["windows_late"] for r in rows], label="windows late")
    axes[2].plot(minutes, [r["faults_expected"] for r in rows], label="faults expected", linestyle=":")
    axes[2].plot(minutes, [r["faults_delivered"] for r in rows], label="faults delivered")
    axes[2].legend(fontsize=7)
    axes[3].plot(minutes, [r.get("cpu_ms_per_value_list", float("nan")) for r in rows])
    axes[3].set_ylabel("CPU ms / value list")
    axes[3].set_xlabel("minute")
    for injection in report.get("injections", []):
        for ax in axes:
            ax.axvline((injection["at"] - report["started_epoch"]) / 60, color="grey", alpha=0.3, linewidth=0.8)
    fig.suptitle(f"soak {report['run_id']}: {report['hosts']} hosts, {report['minutes']:g} min (grey: injected faults)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--kill-every", type=float, default=600.0, help="seconds between worker SIGKILLs (default 600)")
    parser.add_argument("--collector-every", type=float, default=900.0, help="seconds between collector outages (default 900)")
    parser.add_argument("--collector-down", type=float, default=60.0, help="seconds each collector outage lasts (default 60)")
    parser.add_argument("--broker-every", type=float, default=1200.0, help="seconds between broker restarts (default 1200)")
    parser.add_argument("--kafka-version", default=DEFAULT_KAFKA_VERSION)
    parser.add_argument("--kafka-security", choices=("plaintext", "sasl_ssl"), default="plaintext",
                        help="sasl_ssl: the workers and the load reach the cluster over TLS with SCRAM-SHA-512, "
                             "configured only from its client.env (default plaintext)")  # fmt: skip
    parser.add_argument("--results", type=Path, default=PROJECT_DIR / "bench" / "results")
    parser.add_argument("--keep-data", action="store_true", help="keep the brokers' and workers' data after the run")
    args = parser.parse_args(argv)
    soak = Soak(args)
    args.results.mkdir(parents=True, exist_ok=True)
    began = time.time()
    # SIGTERM stops the run as Ctrl-C does, through soak.stop(): the workers and brokers run in
    # process groups of their own and would outlive a harness that simply died
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        soak.start()
        report = soak.run()
    finally:
        soak.stop()
        if not args.keep_data:
            soak.discard_data()
    report["started_epoch"] = began
    report["kafka_security"] = args.kafka_security
    report["command"] = " ".join(["python -m bench.soak", *(argv if argv is not None else sys.argv[1:])])
    json_path = args.results / f"soak-{soak.stamp}.json"
    json_path.write_text(json.dumps(report, indent=1, default=str))
    png = args.results / f"soak-{soak.stamp}.png"
    if report.get("per_minute"):
        plot(report, png)
    print(f"\nsoak {soak.run_id}: {args.hosts} hosts, {args.minutes:g} min, interval {args.interval:g} s")
    for key in ("windows_expected", "windows_missing", "windows_late", "faults_expected", "faults_lost",
                "duplicate_event_ids", "stalled_minutes", "rss_growth_mb_per_hour", "unexpected_exits", "errors"):  # fmt: skip
        print(f"  {key}: {report.get(key)}")
    print(f"  injected: {len(report.get('injections', []))} faults")
    for name, met in report.get("targets", {}).items():
        print(f"  {'met' if met else 'MISSED':>6}  {name}")
    print(f"wrote {json_path} and {png}; logs in {soak.work}")
    return 0 if all(report.get("targets", {}).values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
