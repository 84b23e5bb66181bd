"""``ves-streams run``: the whole pipeline on this machine, for ``make run``.

Starts, in order, and stops in reverse on Ctrl-C:

1. a single-node KRaft Kafka on localhost:9092 (unless one already answers;
   then it is used and left running),
2. the local VES collector on :30000, recording to ``.run/collector/``,
3. a worker (``faust -A ves_streams worker``) with the default topology,
4. the feed: real collectd (``write_kafka`` + ``write_http`` notifications
   through the relay) when it is installed, else a replay of the recorded
   capture,

and prints a progress line every few seconds: value lists in, VES events
delivered per domain, errors (dead letters, collector rejections).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import requests

from ves_streams import resources
from ves_streams.broker_wait import bootstrap_servers

__all__ = ["register", "RunPlan", "parse_prometheus"]

@dataclass
class RunPlan:
    """Where ``make run`` puts things; everything lives under ``.run/`` (:func:`ves_streams.resources.run_dir`)."""

    kafka_version: str
    interval: float
    run_dir: Path = field(default_factory=resources.run_dir)
    collector_port: int = 30000
    web_port: int = 6066
    relay_port: int = 18089
    broker: str = "kafka://localhost:9092"

    @property
    def bootstrap(self) -> str:
        return bootstrap_servers(self.broker)

    @property
    def collector_record(self) -> Path:
        return self.run_dir / "collector" / "events.jsonl"


def parse_prometheus(text: str) -> dict[str, float]:
    """Sum Prometheus samples by metric name (labels dropped): enough for a progress line."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not match:
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        totals[match.group(1)] = totals.get(match.group(1), 0.0) + value
    return totals


def _metric(totals: dict[str, float], *fragments: str) -> int:
    return int(sum(v for k, v in totals.items() if all(f in k for f in fragments) and k.endswith("_total")))


class _Processes:
    """Children started by ``run``, stopped in reverse order."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=resources.checkout_dir(), start_new_session=True
        )
        self.started.append((name, proc))
        print(f"  started {name} (pid {proc.pid}, log {self.logs / (name + '.log')})", flush=True)
        return proc

    def check(self) -> str | None:
        for name, proc in self.started:
            if proc.poll() is not None:
                return f"{name} exited with code {proc.returncode}; see {self.logs / (name + '.log')}"
        return None

    def stop_all(self) -> None:
        for name, proc in reversed(self.started):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for name, proc in reversed(self.started):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            print(f"  stopped {name}", flush=True)


def _wait_http(url: str, timeout: float, procs: _Processes) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        problem = procs.check()
        if problem:
            raise RuntimeError(problem)
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def _delivered(record: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    if not record.exists():
        return counts
    with record.open("rb") as fh:
        for line in fh:
            try:
                doc = orjson.loads(line)
                counts[doc["event"]["commonEventHeader"]["domain"]] += 1
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
    return counts


def run(plan: RunPlan, *, feed: str) -> int:
    from ves_streams.dev.collectd_runner import CollectdConfig, CollectdProcess, collectd_missing_reason
    from ves_streams.dev import kafka as kafka_local

    logs = plan.run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    plan.collector_record.parent.mkdir(parents=True, exist_ok=True)
    plan.collector_record.unlink(missing_ok=True)
    procs = _Processes(logs)
    collectd: CollectdProcess | None = None
    started_kafka = False
    python = sys.executable

    stop = {"now": False}

    def on_signal(_sig: int, _frame: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        print(f"[1/4] Kafka {plan.kafka_version} on localhost:9092", flush=True)
        started_kafka = kafka_local.kafka_up(plan.kafka_version, port=9092)
        print(f"[2/4] VES collector on http://127.0.0.1:{plan.collector_port}", flush=True)
        procs.start(
            "collector",
            [python, "-m", "ves_streams.cli", "collector", "--port", str(plan.collector_port),
             "--record", str(plan.collector_record), "--quiet"],
        )
        _wait_http(f"http://127.0.0.1:{plan.collector_port}/healthcheck", 30, procs)

        env = dict(os.environ)
        env.setdefault("VES_STREAMS_BROKER", plan.broker)
        env.setdefault("VES_STREAMS_COLLECTOR_URL", f"http://127.0.0.1:{plan.collector_port}")
        env.setdefault("VES_STREAMS_TOPOLOGY", str(resources.default_topology()))
        env.setdefault("VES_STREAMS_INTERVAL", str(plan.interval))
        env.setdefault("VES_STREAMS_DATA_DIR", str(plan.run_dir / "worker-data"))
        env.setdefault("VES_STREAMS_WEB_PORT", str(plan.web_port))
        env.setdefault("VES_STREAMS_WEB_BIND", "127.0.0.1")  # this machine's own: make run's endpoints are local
        print(f"[3/4] worker (faust -A ves_streams worker), topology {env['VES_STREAMS_TOPOLOGY']}", flush=True)
        procs.start(
            "worker",
            [python, "-m", "faust", "-A", "ves_streams", "worker", "-l", "info", "--web-port", str(plan.web_port)],
            env=env,
        )

        missing = collectd_missing_reason()
        use_collectd = feed == "collectd" or (feed == "auto" and missing is None)
        if use_collectd:
            if missing:
                raise RuntimeError(missing)
            print("[4/4] feed: real collectd (write_kafka values, write_http notifications via the relay)", flush=True)
            procs.start(
                "relay",
                [python, "-m", "ves_streams.cli", "relay", "--broker", plan.broker, "--port", str(plan.relay_port)],
            )
            _wait_http(f"http://127.0.0.1:{plan.relay_port}/healthcheck", 30, procs)
            collectd = CollectdProcess(
                CollectdConfig(
                    bootstrap_servers=plan.bootstrap,
                    hostname=os.uname().nodename or "localhost",
                    interval=min(plan.interval, 10.0),
                    notification_url=f"http://127.0.0.1:{plan.relay_port}/collectd",
                    load_warning_max=0.5,
                    load_failure_max=4.0,
                ),
                plan.run_dir / "collectd",
            )
            collectd.start()
        else:
            print(f"[4/4] feed: replay of the recorded capture ({missing or 'requested'})", flush=True)
            procs.start(
                "replay",
                [python, "-m", "ves_streams.cli", "replay", "--broker", plan.broker, "--interval", str(plan.interval)],
            )

        print(f"\nRunning. Events land in {plan.collector_record}. Ctrl-C stops everything.\n", flush=True)
        while not stop["now"]:
            problem = procs.check()
            if problem:
                raise RuntimeError(problem)
            _progress(plan)
            for _ in range(20):
                if stop["now"]:
                    break
                time.sleep(0.1)
    except RuntimeError as exc:
        print(f"ves-streams run: {exc}", file=sys.stderr)
        return 1
    finally:
        print("\nstopping ...", flush=True)
        if collectd is not None:
            collectd.stop()
            print("  stopped collectd", flush=True)
        procs.stop_all()
        if started_kafka:
            kafka_local.kafka_down()
            print("  stopped Kafka", flush=True)
    return 0


def _progress(plan: RunPlan) -> None:
    delivered = _delivered(plan.collector_record)
    try:
        totals = parse_prometheus(requests.get(f"http://127.0.0.1:{plan.web_port}/metrics", timeout=1).text)
    except requests.RequestException:
        totals = {}
    values_in = _metric(totals, "messages_in")
    errors = _metric(totals, "dlq") + _metric(totals, "render_error")
    by_domain = ", ".join(f"{d} {n}" for d, n in sorted(delivered.items())) or "none yet"
    print(
        f"{time.strftime('%H:%M:%S')}  messages in: {values_in:>7}  delivered: {sum(delivered.values()):>6} "
        f"({by_domain})  errors: {errors}",
        flush=True,
    )


def _handle(args: argparse.Namespace) -> int:
    plan = RunPlan(kafka_version=args.kafka_version, interval=args.interval)
    return run(plan, feed=args.feed)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run", help="start a local Kafka, collector, worker and collectd (or a replay): `make run`"
    )
    parser.add_argument("--kafka-version", default="4.1.1")
    parser.add_argument("--interval", type=float, default=float(os.environ.get("VES_STREAMS_INTERVAL", "10")))
    parser.add_argument("--feed", choices=("auto", "collectd", "replay"), default="auto")
    parser.set_defaults(handler=_handle)
