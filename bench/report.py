"""The run's figures: the printed table, ratios to the baseline, the targets, JSON and the PNG.

Everything here works on the plain dictionaries the phases produce
(``IngestResult.as_dict()`` and friends), so a saved JSON file can be
re-rendered (``python -m bench --replot FILE``).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["evaluate_targets", "format_table", "median_result", "plot", "summarise_ingest"]

#: The issue's targets, at N = 1000 hosts on this machine.
TARGET_HOSTS = 1000
TARGET_INGEST_RATIO = 0.5  # per-worker ingest / bare passthrough
TARGET_SCALING = 1.8  # 2 workers / 1 worker
TARGET_FAULT_P99_MS = 250.0
TARGET_MEASUREMENT_P99_MS = 1000.0
TARGET_RSS_MB = 300.0
# the performance issue's targets (beside the earlier ones, whose keys the JSON keeps)
TARGET_CPU_MS_PER_VALUE_LIST = 0.028  # 5,000 hosts per core
TARGET_FAULT_P50_MS = 50.0
TARGET_RSS_MB_PER_WORKER = 200.0
TARGET_SCALING_PER_CPU = 0.9  # 2 workers' value lists per CPU-s / 1 worker's
TARGET_SINK_SLOW_COLLECTOR = 5000.0  # events/s to a collector that takes 100 ms per request


def median_result(results: Sequence[dict[str, Any]], key: str = "rate") -> dict[str, Any] | None:
    """The result whose ``key`` is the median (lower median for even counts); None if empty."""
    usable = [r for r in results if not r.get("error")]
    if not usable:
        return None
    ordered = sorted(usable, key=lambda r: r[key])
    return ordered[(len(ordered) - 1) // 2]


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def summarise_ingest(
    baselines: list[dict[str, Any]],
    one: list[dict[str, Any]],
    two: list[dict[str, Any]],
    faust: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Medians of the repeated runs at one N, and the ratios the table shows."""
    base = median_result(baselines)
    w1 = median_result(one)
    w2 = median_result(two)
    floor = median_result(faust or [])
    return {
        "faust_passthrough": floor,
        "ratio_one_worker_to_faust_per_cpu": _ratio(w1 and w1["per_cpu_second"], floor and floor["per_cpu_second"]),
        "ratio_faust_to_baseline_per_cpu": _ratio(floor and floor["per_cpu_second"], base and base["per_cpu_second"]),
        "baseline": base,
        "one_worker": w1,
        "two_workers": w2,
        "ratio_one_worker": _ratio(w1 and w1["rate_per_worker"], base and base["rate"]),
        "ratio_one_worker_per_cpu": _ratio(w1 and w1["per_cpu_second"], base and base["per_cpu_second"]),
        "scaling_two_workers": _ratio(w2 and w2["rate"], w1 and w1["rate"]),
        "scaling_two_workers_per_cpu": _ratio(w2 and w2["per_cpu_second"], w1 and w1["per_cpu_second"]),
        "ratio_rss_one_worker": _ratio(w1 and max(w1["peak_rss_mb"] or [0]), base and max(base["peak_rss_mb"] or [0])),
        "runs": {"baseline": baselines, "one_worker": one, "two_workers": two, "faust_passthrough": faust or []},
    }


def evaluate_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue with the value measured at N = 1000 and whether it was met."""
    targets: list[dict[str, Any]] = []
    ingest = next((i for i in report.get("ingest", []) if i["hosts"] == TARGET_HOSTS), None)
    latency = next((l for l in report.get("latency", []) if l["hosts"] == TARGET_HOSTS), None)

    def add(name: str, target: str, value: Any, met: bool | None, note: str = "") -> None:
        targets.append({"target": name, "wanted": target, "measured": value, "met": met, "note": note})

    if ingest is not None:
        ratio = ingest["ratio_one_worker"]
        add("ingest per worker vs bare passthrough", f">= {TARGET_INGEST_RATIO:.0%}",
            None if ratio is None else f"{ratio:.1%}", None if ratio is None else ratio >= TARGET_INGEST_RATIO)  # fmt: skip
        scaling = ingest["scaling_two_workers"]
        add("2 workers vs 1 worker", f">= {TARGET_SCALING}x",
            None if scaling is None else f"{scaling:.2f}x", None if scaling is None else scaling >= TARGET_SCALING,
            "2 workers + the broker + the harness share 2 cores")  # fmt: skip
    if latency is not None:
        w1 = ingest and ingest["one_worker"]
        capacity = w1["rate_per_worker"] if w1 else None
        add("1 worker keeps up with the realistic rate", f"{latency['offered_rate']:.0f} value lists/s",
            "yes" if latency["kept_up"] else "no", bool(latency["kept_up"]),
            f"full-speed ingest capacity {capacity:.0f}/s" if capacity else "")  # fmt: skip
        p99 = latency["fault_latency"]["p99"]
        lost = latency["notifications"] - latency["faults_matched"]
        add("p99 fault latency", f"< {TARGET_FAULT_P99_MS:.0f} ms", _ms(p99),
            (p99 is not None and p99 * 1000 < TARGET_FAULT_P99_MS and lost <= 0) if (p99 is not None or lost > 0) else None,
            f"{lost} of {latency['notifications']} notifications not delivered by the end" if lost > 0 else "")  # fmt: skip
        p99 = latency["measurement_latency"]["p99"]
        missing = latency["measurements_expected"] - latency["measurements_received"]
        met = (p99 is not None and p99 * 1000 < TARGET_MEASUREMENT_P99_MS and missing <= 0) if (p99 is not None or missing > 0) else None
        add("p99 measurement latency after the interval closes", f"< {TARGET_MEASUREMENT_P99_MS:.0f} ms", _ms(p99),
            met, f"{missing} of {latency['measurements_expected']} host-windows never delivered" if missing > 0 else "")  # fmt: skip
    rss = [v for v in _worker_rss(ingest, latency)]
    if rss:
        add("peak RSS per worker", f"< {TARGET_RSS_MB:.0f} MB", f"{max(rss):.0f} MB", max(rss) < TARGET_RSS_MB)
    _performance_targets(report, ingest, latency, rss, add)
    return targets


def _performance_targets(
    report: dict[str, Any],
    ingest: dict[str, Any] | None,
    latency: dict[str, Any] | None,
    rss: list[float],
    add: Any,
) -> None:
    """The performance issue's targets, each with the figure it is judged on."""
    if latency is not None:
        cost = latency.get("cpu_ms_per_value_list")
        add("CPU per value list, all stages and the sink", f"<= {TARGET_CPU_MS_PER_VALUE_LIST} ms",
            _num(cost, "{:.3f} ms"), None if cost is None else cost <= TARGET_CPU_MS_PER_VALUE_LIST,
            f"{latency['hosts_per_core']:,.0f} hosts per core" if latency.get("hosts_per_core") else "")  # fmt: skip
        p50 = latency["fault_latency"]["p50"]
        add("p50 fault latency", f"< {TARGET_FAULT_P50_MS:.0f} ms", _ms(p50),
            None if p50 is None else p50 * 1000 < TARGET_FAULT_P50_MS)  # fmt: skip
        late = latency["measurements_late"]
        missing = latency["measurements_expected"] - latency["measurements_received"]
        add("measurement windows late or missing", "0", f"{late} late, {missing} missing", late == 0 and missing <= 0)
    if rss:
        add("peak RSS per worker (performance issue)", f"< {TARGET_RSS_MB_PER_WORKER:.0f} MB", f"{max(rss):.0f} MB",
            max(rss) < TARGET_RSS_MB_PER_WORKER)  # fmt: skip
    if ingest is not None:
        per_cpu = ingest.get("scaling_two_workers_per_cpu")
        add("2 workers' value lists per CPU-s vs 1 worker's", f">= {TARGET_SCALING_PER_CPU:.0%}",
            _num(per_cpu, "{:.0%}"), None if per_cpu is None else per_cpu >= TARGET_SCALING_PER_CPU,
            "2 workers + the broker + the harness share 2 cores")  # fmt: skip
    slow = report.get("sink_slow_collector")
    if slow:
        add(f"sink to a collector taking {slow['collector_delay'] * 1000:.0f} ms per request",
            f">= {TARGET_SINK_SLOW_COLLECTOR:,.0f} events/s", f"{slow['rate']:,.0f} events/s",
            None if slow.get("error") else slow["rate"] >= TARGET_SINK_SLOW_COLLECTOR,
            f"concurrency limit up to {slow.get('peak_concurrency_limit', 0):.0f}; "
            + ("complete" if slow["complete"] else "time-boxed"))  # fmt: skip


def _worker_rss(ingest: dict[str, Any] | None, latency: dict[str, Any] | None) -> Iterable[float]:
    if ingest is not None:
        for key in ("one_worker", "two_workers"):
            if ingest.get(key):
                yield from ingest[key]["peak_rss_mb"]
    if latency is not None and latency.get("peak_rss_mb"):
        yield latency["peak_rss_mb"]


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _num(value: float | None, fmt: str = "{:,.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def format_table(report: dict[str, Any]) -> str:
    lines: list[str] = []
    machine = report["machine"]
    lines.append(
        f"ves-streams benchmark {report['run_id']}: Kafka {machine['kafka_version']}, {machine['cpus']} CPUs, "
        f"Python {machine['python']}, load average at start {machine['load_average_start']:.1f}"
    )
    lines.append("")
    lines.append("Ingest: a fresh consumer group works through a ready backlog (value lists/s; median of the repeats).")
    lines.append("  ratio = ves-streams per worker / bare aiokafka passthrough; per CPU-s = value lists per CPU second.")
    lines.append("  2w/1w = 2 workers / 1 worker; busy = share of all CPUs busy (every process) during the 2-worker run.")
    header = (f"{'hosts':>6} {'backlog':>8} {'baseline/s':>11} {'1 worker/s':>11} {'ratio':>7} "
              f"{'base/CPU-s':>11} {'1w/CPU-s':>9} {'ratio':>7} {'2 workers/s':>12} {'2w/1w':>6} {'busy':>5} "
              f"{'RSS MB base/1w/2w':>19} {'lag end 1w/2w':>14}")  # fmt: skip
    lines.append(header)
    for item in report.get("ingest", []):
        base, w1, w2 = item["baseline"], item["one_worker"], item["two_workers"]
        rss = "/".join(
            _num(max(r["peak_rss_mb"]) if r and r["peak_rss_mb"] else None) for r in (base, w1, w2)
        )
        lag = "/".join("-" if not r else f"{sum(r['lag_end'].values()):,}" for r in (w1, w2))
        boxed = [name for name, r in (("1w", w1), ("2w", w2)) if r and not r["complete"]]
        flag = f" ({', '.join(boxed)} time-boxed)" if boxed else ""
        lines.append(
            f"{item['hosts']:>6} {item['backlog']:>8,} {_num(base and base['rate']):>11} "
            f"{_num(w1 and w1['rate_per_worker']):>11} {_num(item['ratio_one_worker'], '{:.1%}'):>7} "
            f"{_num(base and base['per_cpu_second']):>11} {_num(w1 and w1['per_cpu_second']):>9} "
            f"{_num(item['ratio_one_worker_per_cpu'], '{:.1%}'):>7} {_num(w2 and w2['rate']):>12} "
            f"{_x(item['scaling_two_workers']):>6} {_num(w2 and w2.get('machine_busy'), '{:.0%}'):>5} "
            f"{rss:>19} {lag:>14}{flag}"
        )
    if any(i.get("faust_passthrough") for i in report.get("ingest", [])):
        lines.append("")
        lines.append("Framework share: the same passthrough as a faust-streaming agent (record by record), per CPU second.")
        lines.append(f"{'hosts':>6} {'faust/s':>9} {'faust/CPU-s':>12} {'vs baseline':>12} {'ves-streams 1w vs faust':>24}")
        for item in report["ingest"]:
            floor = item.get("faust_passthrough")
            if not floor:
                continue
            lines.append(
                f"{item['hosts']:>6} {floor['rate']:>9,.0f} {floor['per_cpu_second']:>12,.0f} "
                f"{_num(item['ratio_faust_to_baseline_per_cpu'], '{:.1%}'):>12} "
                f"{_x(item['ratio_one_worker_to_faust_per_cpu']):>24}" + ("" if floor["complete"] else "  (time-boxed)")
            )
    if report.get("latency"):
        lines.append("")
        interval = report["latency"][0]["interval"]
        lines.append(
            f"Latency: realistic rate (each host publishes one capture round every {interval:g} s, "
            f"notifications spread over the interval); 1 worker, role all, to the real collector."
        )
        lines.append(
            "  late = measurement windows delivered over one interval late; missing = host-windows never delivered;"
        )
        lines.append(
            "  CPU ms/vl = worker CPU per value list (all stages + sink); hosts/core = what one free core would serve."
        )
        lines.append(
            f"{'hosts':>6} {'offered/s':>10} {'kept up':>8} {'fault p50/p95/p99 ms':>22} "
            f"{'meas. p50/p95/p99 ms':>22} {'late':>5} {'missing':>8} {'events/s':>9} {'RSS MB':>7} {'lag end':>8} "
            f"{'CPU ms/vl':>10} {'hosts/core':>11}"
        )
        for lat in report["latency"]:
            f, m = lat["fault_latency"], lat["measurement_latency"]
            missing = lat["measurements_expected"] - lat["measurements_received"]
            lines.append(
                f"{lat['hosts']:>6} {lat['offered_rate']:>10,.0f} {'yes' if lat['kept_up'] else 'NO':>8} "
                f"{_triple(f):>22} {_triple(m):>22} {lat['measurements_late']:>5} {missing:>8,} "
                f"{lat['events_per_second']:>9,.0f} {lat['peak_rss_mb']:>7.0f} {sum(lat['lag_end'].values()):>8,} "
                f"{_num(lat.get('cpu_ms_per_value_list'), '{:.2f}'):>10} {_num(lat.get('hosts_per_core')):>11}"
                + (f"  error: {lat['error']}" if lat.get("error") else "")
            )
    for skipped in report.get("latency_skipped", []):
        lines.append(f"{skipped['hosts']:>6}  not run: {skipped['reason']}")
    sink = report.get("sink")
    if sink:
        base_rate = report.get("baseline_reference_rate")
        lines.append("")
        lines.append(
            f"Sink: {sink['events']:,} ready events delivered to a fresh collector by a sink-only worker: "
            f"{sink['rate']:,.0f} events/s ({'complete' if sink['complete'] else 'time-boxed'}), "
            f"{_num(_ratio(sink['rate'], base_rate), '{:.1%}')} of the baseline's records/s at N={TARGET_HOSTS}, "
            f"RSS {sink['peak_rss_mb']:.0f} MB; CPU s in the window: sink {sink['cpu_seconds']:.1f}, "
            f"collector {sink.get('collector_cpu_seconds', 0):.1f} of {sink['seconds']:.1f} s"
        )
    slow = report.get("sink_slow_collector")
    if slow:
        lines.append(
            f"Sink, collector holding each request {slow['collector_delay'] * 1000:.0f} ms: {slow['rate']:,.0f} events/s "
            f"({'complete' if slow['complete'] else 'time-boxed'}), concurrency limit up to "
            f"{slow.get('peak_concurrency_limit', 0):.0f}, requests in flight up to {slow.get('peak_requests_in_flight', 0):.0f}, "
            f"RSS {slow['peak_rss_mb']:.0f} MB, sink CPU {slow['cpu_seconds']:.1f} s of {slow['seconds']:.1f} s"
            + (f"  error: {slow['error']}" if slow.get("error") else "")
        )
        serial = report.get("sink_slow_collector_serial")
        if serial:
            lines.append(
                f"  the same one request at a time (VES_STREAMS_SINK_MAX_CONCURRENCY=1): {serial['rate']:,.0f} events/s; "
                f"pipelined / one at a time {_x(_ratio(slow['rate'], serial['rate']))}"
            )
    if report.get("targets"):
        lines.append("")
        lines.append(f"Targets at N = {TARGET_HOSTS}:")
        for t in report["targets"]:
            met = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
            note = f"  ({t['note']})" if t.get("note") else ""
            lines.append(f"  {met:>6}  {t['target']}: wanted {t['wanted']}, measured {t['measured']}{note}")
    return "\n".join(lines)


def _triple(p: dict[str, Any]) -> str:
    if not p["count"]:
        return "-"
    return "/".join(f"{(p[k] or 0) * 1000:.0f}" for k in ("p50", "p95", "p99"))


def plot(report: dict[str, Any], path: Path) -> None:
    """Throughput and latency against N, side by side, with the targets drawn in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(17, 5))
    plotted: dict[int, tuple[list[float], list[float]]] = {}

    def draw(axis: Any, xs: list[float], ys: list[float], style: str, label: str) -> None:
        axis.plot(xs, ys, style, label=label)
        seen = plotted.setdefault(id(axis), ([], []))
        seen[0].extend(xs)
        seen[1].extend(ys)

    ingest = sorted(report.get("ingest", []), key=lambda i: i["hosts"])
    if ingest:
        xs = [i["hosts"] for i in ingest]

        def series(key: str, field: str) -> list[float]:
            return [i[key][field] if i.get(key) else float("nan") for i in ingest]

        draw(left, xs, series("baseline", "rate"), "o-", "bare aiokafka passthrough")
        if any(i.get("faust_passthrough") for i in ingest):
            draw(left, xs, series("faust_passthrough", "rate"), "x:", "passthrough as a Faust agent")
        draw(left, xs, series("one_worker", "rate"), "s-", "ves-streams, 1 worker")
        draw(left, xs, series("two_workers", "rate"), "^-", "ves-streams, 2 workers")
        per_host = report["load"]["value_lists_per_host_per_round"] / report["load"]["interval"]
        draw(left, xs, [x * per_host for x in xs], "k--", "realistic rate (needed)")
        left.set_xlabel("hosts (N)")
        left.set_ylabel("value lists / s (ingest, ready backlog)")
        left.set_title("Ingest throughput (wall clock)")
        left.grid(True, which="both", alpha=0.3)
        left.legend(fontsize=8)
        draw(middle, xs, series("baseline", "per_cpu_second"), "o-", "bare aiokafka passthrough")
        if any(i.get("faust_passthrough") for i in ingest):
            draw(middle, xs, series("faust_passthrough", "per_cpu_second"), "x:", "passthrough as a Faust agent")
        draw(middle, xs, series("one_worker", "per_cpu_second"), "s-", "ves-streams, 1 worker")
        draw(middle, xs, series("two_workers", "per_cpu_second"), "^-", "ves-streams, 2 workers")
        middle.set_xlabel("hosts (N)")
        middle.set_ylabel("value lists per CPU second")
        middle.set_title("Ingest cost (not distorted by other load)")
        middle.grid(True, which="both", alpha=0.3)
        middle.legend(fontsize=8)
    latency = sorted(report.get("latency", []), key=lambda l: l["hosts"])
    if latency:
        xs = [l["hosts"] for l in latency]

        def ms(key: str, p: str) -> list[float]:
            return [(l[key][p] * 1000) if l[key][p] is not None else float("nan") for l in latency]

        draw(right, xs, ms("fault_latency", "p50"), "o-", "fault p50")
        draw(right, xs, ms("fault_latency", "p99"), "o--", "fault p99")
        draw(right, xs, ms("measurement_latency", "p50"), "s-", "measurement p50 (after interval end)")
        draw(right, xs, ms("measurement_latency", "p99"), "s--", "measurement p99 (after interval end)")
        right.axhline(TARGET_FAULT_P99_MS, color="C0", alpha=0.4, linestyle=":", label="fault p99 target")
        right.axhline(TARGET_MEASUREMENT_P99_MS, color="C2", alpha=0.4, linestyle=":", label="measurement p99 target")
        right.set_xlabel("hosts (N)")
        right.set_ylabel("ms")
        right.set_title("End-to-end latency at the realistic rate (1 worker)")
        right.grid(True, which="both", alpha=0.3)
        right.legend(fontsize=8)
    for axis in (left, middle, right):
        _log_scale_if_possible(axis, plotted.get(id(axis), ([], [])))
    fig.suptitle(f"ves-streams benchmark {report['run_id']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _log_scale_if_possible(axis: Any, data: tuple[list[float], list[float]]) -> None:
    """Log axes only where there is something positive to draw (matplotlib refuses otherwise)."""
    xs, ys = data
    axis.set_yscale("log" if any(y == y and y > 0 for y in ys) else "linear")
    axis.set_xscale("log" if len({x for x in xs if x > 0}) > 1 else "linear")


def median(values: Iterable[float]) -> float | None:
    data = list(values)
    return statistics.median(data) if data else None
