"""``python -m bench``: the pipeline benchmark, start to finish.

One run, in this order, against one local broker it starts and stops:

1. **ingest**, for each N: preload the backlog (whole capture rounds for N
   hosts, about ``--backlog`` value lists), then time the baseline
   passthrough (``--repeat`` times), the same passthrough as a Faust agent
   (the framework's own cost), one ves-streams worker and two;
2. **latency**, for each N: the realistic rate for ``--rounds`` intervals into
   one worker with the HTTP sink and the real collector;
3. **sink**: a sink-only worker delivering the events of the largest latency
   run that had any;
4. **profiles** (``--profile``): one worker under pyinstrument on the N=1000
   backlog and on the N=1000 realistic load, rendered to text and HTML.

Then the table is printed and ``bench/results/bench-<timestamp>.json`` and
``.png`` are written. Processes are stopped on every exit path (and the
broker dies with this process in any case).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from bench import report as report_mod
from bench.broker import BenchBroker
from bench.latency import run_latency, run_sink_backlog
from bench.load import preload
from bench.profiles import summarise
from bench.throughput import run_baseline, run_faust_passthrough, run_workers
from ves_streams.dev.kafka import DEFAULT_KAFKA_VERSION
from ves_streams.dev.replay import DEFAULT_CAPTURE_DIR, host_names, load_capture

__all__ = ["main"]

PROJECT_DIR = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
PARTITIONS = 8
#: Seconds the Faust passthrough reference may take (it is a per-CPU-second figure).
FAUST_TIME_BOX = 45.0
#: Seconds the collector of the second sink phase holds each request (the issue's "100 ms collector").
SLOW_COLLECTOR = 0.1
#: Backlogs larger than this are timed once by the baseline (it takes ~20 s each at 10000 hosts).
REPEAT_MAX_BACKLOG = 100_000


def _parse_hosts(text: str) -> list[int]:
    try:
        hosts = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hosts: expected numbers like 100,1000, got {text!r}") from None
    if not hosts or hosts[0] < 1:
        raise argparse.ArgumentTypeError("--hosts: at least one positive number of hosts")
    return hosts


def _parse_env(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"--worker-env: expected NAME=VALUE, got {text!r}")
    return name.strip(), value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="ves-streams pipeline benchmark: ingest throughput, latency, RSS and lag, "
        "with a bare aiokafka passthrough as the same-run baseline.",
    )
    parser.add_argument("--hosts", type=_parse_hosts, default=None, help="N values (default 100,1000,10000; quick 100,1000)")
    parser.add_argument("--latency-hosts", type=_parse_hosts, default=None, help="N values for the latency phase (default: --hosts)")
    parser.add_argument("--quick", action="store_true", help="shorter run: fewer N, repeats and rounds, tighter time boxes")
    parser.add_argument("--backlog", type=int, default=None, help="value lists to preload per N (whole rounds, at least one; default 21000, quick 14000)")
    parser.add_argument("--repeat", type=int, default=None, help="baseline runs per N, median reported (default 3, quick 1)")
    parser.add_argument("--time-box", type=float, default=None, help="seconds a worker ingest run may take (default 75, quick 45)")
    parser.add_argument("--interval", type=float, default=10.0, help="render interval and publish period of the latency phase (default 10)")
    parser.add_argument("--rounds", type=int, default=None, help="intervals published in the latency phase (default 7, quick 4)")
    parser.add_argument("--topology", type=Path, default=PROJECT_DIR / "topologies" / "host.yaml")
    parser.add_argument("--kafka-version", default=os.environ.get("VES_STREAMS_TEST_KAFKA_VERSION", DEFAULT_KAFKA_VERSION))
    parser.add_argument("--profile", action="store_true", help="also profile one worker (pyinstrument) at N=1000, after the measured runs")
    parser.add_argument("--worker-env", action="append", default=[], metavar="NAME=VALUE", type=_parse_env,
                        help="extra environment for every worker, e.g. a Faust setting (PRODUCER_LINGER=0.02); repeatable")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="where the JSON and PNG go (default bench/results)")
    parser.add_argument("--replot", type=Path, metavar="JSON", help="only re-render the table and PNG of a saved result")
    return parser


def _defaults(args: argparse.Namespace) -> None:
    quick = args.quick
    if args.hosts is None:
        args.hosts = [100, 1000] if quick else [100, 1000, 10000]
    if args.latency_hosts is None:
        args.latency_hosts = args.hosts
    if args.backlog is None:
        args.backlog = 14000 if quick else 21000
    if args.repeat is None:
        args.repeat = 1 if quick else 3
    if args.time_box is None:
        args.time_box = 45.0 if quick else 75.0
    if args.rounds is None:
        args.rounds = 4 if quick else 7


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.replot is not None:
        report = orjson.loads(args.replot.read_bytes())
        report["targets"] = report_mod.evaluate_targets(report)
        print(report_mod.format_table(report))
        report_mod.plot(report, args.replot.with_suffix(".png"))
        return 0
    _defaults(args)
    args.worker_env = dict(args.worker_env)
    # aiokafka logs (and retries) NotLeaderForPartition while a just-created topic's leader settles.
    logging.getLogger("aiokafka.producer.sender").setLevel(logging.ERROR)
    if not args.topology.is_file():
        print(f"bench: topology {args.topology} not found (--topology)", file=sys.stderr)
        return 2
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run_id = f"bench-{stamp.lower()}"
    work_dir = Path(tempfile.mkdtemp(prefix=f"ves-streams-{run_id}-"))
    args.results.mkdir(parents=True, exist_ok=True)
    capture = load_capture(
        DEFAULT_CAPTURE_DIR / "compute-0.values.jsonl", DEFAULT_CAPTURE_DIR / "compute-0.notifications.jsonl"
    )
    report: dict[str, Any] = {
        "run_id": run_id,
        "started": stamp,
        "command": " ".join([Path(sys.executable).name, "-m", "bench", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kafka_version": args.kafka_version,
            "load_average_start": os.getloadavg()[0],
        },
        "load": {
            "capture_rounds": len(capture.rounds),
            "value_lists_per_host_per_round": capture.value_lists_per_round,
            "notifications_per_host": len(capture.notifications),
            "interval": args.interval,
            "partitions": PARTITIONS,
        },
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "ingest": [],
        "latency": [],
        "sink": None,
        "sink_slow_collector": None,
        "sink_slow_collector_serial": None,
        "profiles": [],
    }
    broker = BenchBroker(work_dir / "kafka", args.kafka_version, PARTITIONS)
    started = time.monotonic()
    try:
        _say(f"starting Kafka {args.kafka_version} (1 node, {PARTITIONS} partitions per topic); work dir {work_dir}")
        broker.start()
        if not args.skip_ingest:
            for hosts in args.hosts:
                report["ingest"].append(_ingest_phase(broker, capture, hosts, run_id, args, work_dir))
                _save(report, args.results, stamp)
        if not args.skip_latency:
            for hosts in args.latency_hosts:
                skip = _latency_out_of_reach(report, capture, hosts, args.interval)
                if skip:
                    report.setdefault("latency_skipped", []).append({"hosts": hosts, "reason": skip})
                    _say(f"latency N={hosts}: not run: {skip}")
                    continue
                _say(f"latency N={hosts}: {args.rounds} intervals of {args.interval:g} s at the realistic rate")
                result = run_latency(broker, capture, hosts, run_id=run_id, interval=args.interval, rounds=args.rounds,
                                     work_dir=work_dir, topology=args.topology, extra_env=args.worker_env)  # fmt: skip
                report["latency"].append(result.as_dict())
                _say(f"  faults p99 {_ms(result.fault_latency.p99)}, measurements p99 {_ms(result.measurement_latency.p99)}, "
                     f"kept up: {result.kept_up}")  # fmt: skip
                _say("  faults by when raised: " + "; ".join(
                    f"{phase} {p.count}: p50 {_ms(p.p50)}, p99 {_ms(p.p99)}" for phase, p in result.fault_latency_by_phase.items()
                ))  # fmt: skip
                _save(report, args.results, stamp)
            source = next((l for l in sorted(report["latency"], key=lambda l: -l["hosts"]) if l["events_received"]), None)
            if source is not None:
                _say(f"sink: delivering the {source['events_topic']} backlog with a sink-only worker")
                sink = run_sink_backlog(broker, source["events_topic"], run_id=run_id, work_dir=work_dir,
                                        topology=args.topology, time_box=min(args.time_box, FAUST_TIME_BOX),
                                        extra_env=args.worker_env)  # fmt: skip
                report["sink"] = sink.as_dict()
                _save(report, args.results, stamp)
                _say(f"sink: the same backlog to a collector that takes {SLOW_COLLECTOR * 1000:.0f} ms per request")
                slow = run_sink_backlog(broker, source["events_topic"], run_id=run_id, work_dir=work_dir,
                                        topology=args.topology, time_box=min(args.time_box, FAUST_TIME_BOX),
                                        extra_env=args.worker_env, collector_delay=SLOW_COLLECTOR)  # fmt: skip
                report["sink_slow_collector"] = slow.as_dict()
                _say(f"  {slow.rate:,.0f} events/s, concurrency limit up to {slow.peak_concurrency_limit:.0f}")
                _save(report, args.results, stamp)
                _say("sink: the same, one request at a time (VES_STREAMS_SINK_MAX_CONCURRENCY=1: the sink before pipelining)")
                serial = run_sink_backlog(broker, source["events_topic"], run_id=f"{run_id}-serial", work_dir=work_dir,
                                          topology=args.topology, time_box=min(args.time_box, FAUST_TIME_BOX) / 3,
                                          extra_env={**args.worker_env, "VES_STREAMS_SINK_MAX_CONCURRENCY": "1"},
                                          collector_delay=SLOW_COLLECTOR)  # fmt: skip
                report["sink_slow_collector_serial"] = serial.as_dict()
                _say(f"  {serial.rate:,.0f} events/s; pipelined/serial {slow.rate / serial.rate if serial.rate else 0:.1f}x")
        if args.profile:
            report["profiles"] = _profile_phase(broker, capture, run_id, args, work_dir, stamp)
    finally:
        broker.stop()
    report["seconds"] = time.monotonic() - started
    reference = next((i for i in report["ingest"] if i["hosts"] == report_mod.TARGET_HOSTS), None)
    report["baseline_reference_rate"] = reference["baseline"]["rate"] if reference and reference["baseline"] else None
    report["targets"] = report_mod.evaluate_targets(report)
    json_path = _save(report, args.results, stamp)
    png_path = json_path.with_suffix(".png")
    report_mod.plot(report, png_path)
    print()
    print(report_mod.format_table(report))
    print()
    logs = _keep_logs(work_dir, args.results / f"bench-{stamp}-logs")
    print(f"wrote {_rel(json_path)} and {_rel(png_path)}; process logs in {_rel(logs)} ({report['seconds'] / 60:.1f} min)")
    shutil.rmtree(work_dir, ignore_errors=True)
    return 0


def _keep_logs(work_dir: Path, target: Path) -> Path:
    """Copy the workers', collectors' and baseline's logs out of the work directory before it goes."""
    target.mkdir(parents=True, exist_ok=True)
    for log in work_dir.glob("*.log"):
        shutil.copy2(log, target / log.name)
    return target


def _ingest_phase(
    broker: BenchBroker, capture: Any, hosts: int, run_id: str, args: argparse.Namespace, work_dir: Path
) -> dict[str, Any]:
    per_round = hosts * capture.value_lists_per_round
    rounds = max(1, round(args.backlog / per_round))
    topic = f"{run_id}-n{hosts}-collectd"
    asyncio.run(broker.create_topics([topic, f"{topic}-passthrough"]))
    loaded = asyncio.run(preload(broker.bootstrap, topic, capture, host_names(hosts), rounds, PARTITIONS))
    _say(f"ingest N={hosts}: preloaded {loaded.messages:,} value lists ({rounds} round(s)) at {loaded.rate:,.0f}/s")
    baselines = []
    # Repeats are cheap for small backlogs; a large one is timed once.
    for i in range(args.repeat if loaded.messages <= REPEAT_MAX_BACKLOG else 1):
        result = run_baseline(broker, topic, f"{topic}-passthrough", f"{run_id}-n{hosts}-passthrough-{i}", hosts,
                              loaded.messages, args.time_box, work_dir / "passthrough.log")  # fmt: skip
        baselines.append(result.as_dict())
        _say(f"  baseline #{i + 1}: {result.rate:,.0f}/s ({result.per_cpu_second:,.0f} per CPU-s)")
    # A reference point per CPU second: a shorter time box is enough.
    faust = run_faust_passthrough(broker, topic, f"{run_id}-n{hosts}-faust", hosts, loaded.messages,
                                  min(args.time_box, FAUST_TIME_BOX), work_dir)  # fmt: skip
    _say(f"  faust passthrough: {faust.rate:,.0f}/s ({faust.per_cpu_second:,.0f} per CPU-s)"
         + (f", error: {faust.error}" if faust.error else ""))  # fmt: skip
    runs: dict[int, list[dict[str, Any]]] = {}

    async def load(worker_topic: str) -> None:
        # the same backlog again, into the workers' own topic once they are all ready
        await broker.create_topics([worker_topic])
        await preload(broker.bootstrap, worker_topic, capture, host_names(hosts), rounds, PARTITIONS)

    for workers in (1, 2):
        app_id = f"{run_id}-n{hosts}-w{workers}"
        result = run_workers(broker, topic, app_id, workers, hosts, loaded.messages, args.time_box, work_dir,
                             args.topology, extra_env=args.worker_env, load=load)  # fmt: skip
        runs[workers] = [result.as_dict()]
        _say(f"  ves-streams x{workers}: {result.rate:,.0f}/s ({result.per_cpu_second:,.0f} per CPU-s), "
             f"{'complete' if result.complete else 'time-boxed'}, RSS {max(result.peak_rss_mb or [0]):.0f} MB"
             + (f", error: {result.error}" if result.error else ""))  # fmt: skip
    summary = report_mod.summarise_ingest(baselines, runs[1], runs[2], [faust.as_dict()])
    summary.update(hosts=hosts, backlog=loaded.messages, rounds=rounds, preload_rate=loaded.rate)
    return summary


def _latency_out_of_reach(report: dict[str, Any], capture: Any, hosts: int, interval: float) -> str | None:
    """Why the realistic rate for ``hosts`` cannot be played here, if it cannot.

    The load generator is one Python process; when the rate the hosts ask
    for is above what it reached at full speed in this run's preload, the
    run would measure the generator, not ves-streams.
    """
    needed = hosts * capture.value_lists_per_round / interval
    rates = [i["preload_rate"] for i in report["ingest"]]
    if not rates:
        return None
    reached = max(rates)
    if needed > 0.8 * reached:
        return (f"the realistic rate is {needed:,.0f} value lists/s and the load generator reached "
                f"{reached:,.0f}/s at full speed in this run")  # fmt: skip
    return None


def _profile_phase(
    broker: BenchBroker, capture: Any, run_id: str, args: argparse.Namespace, work_dir: Path, stamp: str
) -> list[dict[str, str]]:
    """Profile one worker on the N=1000 backlog and the N=1000 realistic load; render text and HTML."""
    hosts = report_mod.TARGET_HOSTS
    out: list[dict[str, str]] = []
    topic = f"{run_id}-n{hosts}-collectd"
    sessions: list[tuple[str, Path]] = []
    if not args.skip_ingest and hosts in args.hosts:
        session = work_dir / "profile-ingest.pyisession"
        _say(f"profile: one worker on the N={hosts} backlog under pyinstrument ({args.time_box:.0f} s)")
        run_workers(broker, topic, f"{run_id}-profile-ingest", 1, hosts, 10**9, args.time_box, work_dir,
                    args.topology, profile=session, extra_env=args.worker_env)  # fmt: skip
        sessions.append(("ingest", session))
    if not args.skip_latency:
        session = work_dir / "profile-latency.pyisession"
        _say(f"profile: one worker on the N={hosts} realistic load under pyinstrument")
        run_latency(broker, capture, hosts, run_id=f"{run_id}-profile", interval=args.interval, rounds=min(args.rounds, 4),
                    work_dir=work_dir, topology=args.topology, profile=session, extra_env=args.worker_env)  # fmt: skip
        sessions.append(("latency", session))
    for name, session in sessions:
        if not session.exists() or session.stat().st_size == 0:
            continue
        html = args.results / f"bench-{stamp}-profile-{name}.html"
        text = args.results / f"bench-{stamp}-profile-{name}.txt"
        subprocess.run([sys.executable, "-m", "pyinstrument", "--load", str(session), "-r", "html", "-o", str(html)],
                       check=False, cwd=PROJECT_DIR)  # fmt: skip
        tree = subprocess.run([sys.executable, "-m", "pyinstrument", "--load", str(session), "-r", "text"],
                              check=False, cwd=PROJECT_DIR, capture_output=True, text=True).stdout  # fmt: skip
        text.write_text(summarise(session) + "\n\npyinstrument's call tree (library frames folded):\n" + tree)
        out.append({"phase": name, "summary": _rel(text), "html": _rel(html)})
    return out


def _save(report: dict[str, Any], results: Path, stamp: str) -> Path:
    path = results / f"bench-{stamp}.json"
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    return path


def _say(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(PROJECT_DIR))
    except ValueError:
        return str(path)
