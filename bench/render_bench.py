"""Rendering cost per host: Barometer's host.yaml over N copies of the capture.

The capture (one real collectd host, ``ves_streams/dev/capture``) is
replicated N times with the host name changed, and every host's latest
samples are rendered once, as a worker does each interval. The figure that
matters is seconds per host: it must stay flat as N grows (rendering is per
host, every selector a lookup), so the ratio per-host(1000) / per-host(40)
should be close to 1. Loading and compiling the file happens once and is
reported separately.

With ``--barometer DIR`` (a directory holding Barometer's
``ves_app/normalizer.py``, see ``tests/fixtures/golden/README.md``) the same
data is also rendered by Barometer's normalizer for the first N, giving the
baseline in the same run. Barometer's cost grows with the square of N (each
selector scans the whole cache), so keep that N small.

Run: ``.venv/bin/python -m bench.render_bench [--hosts 40 1000] [--topology FILE]``

Figures from ``.venv/bin/python -m bench.render_bench --barometer /tmp/barometer``
(2 shared cores under a load average of about 5, Python 3.11, 95 samples per
host; three runs without ``--barometer`` gave ratios 0.85, 1.08, 1.05)::

     hosts  events   seconds     s/host
        40      40    0.0520   0.001301
      1000    1000    1.5672   0.001567
    ratio s/host(1000) / s/host(40) = 1.20
    barometer normalizer, 40 hosts: 44.43 s (40 events, 1.1107 s/host)
    ves-streams 1000 hosts vs barometer 40 hosts: 1.567 s vs 44.43 s
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from ves_streams.collectd import Sample, parse_value_lists
from ves_streams.resources import capture_dir
from ves_streams.rules import CounterIds, RenderContext, load_topology

REPO = Path(__file__).resolve().parents[1]
CAPTURE = capture_dir() / "compute-0.values.jsonl"
DEFAULT_TOPOLOGY = REPO / "tests" / "fixtures" / "barometer" / "host.yaml"


def capture_samples() -> list[Sample]:
    """Latest sample of each series of the capture, first-seen order."""
    latest: dict[tuple[str, ...], Sample] = {}
    for line in CAPTURE.read_bytes().splitlines():
        for vl in parse_value_lists(line):
            for s in vl.samples():
                latest[(s.host, *s.series)] = s
    return list(latest.values())


def replicate(samples: list[Sample], n: int) -> dict[str, list[Sample]]:
    """N hosts with the capture's samples, host names changed."""
    return {
        f"compute-{i:04d}": [msgspec.structs.replace(s, host=f"compute-{i:04d}") for s in samples] for i in range(n)
    }


def time_ves_streams(topology_path: Path, host_sets: dict[int, dict[str, list[Sample]]], repeats: int
                     ) -> dict[int, tuple[float, int]]:
    """Best-of-``repeats`` seconds to render every host once, per N; and the events per round.

    Rounds for the different N are interleaved, each measurement covers the
    same number of host renders (small N render their hosts several times),
    and CPU time of this process is measured, so other load on the machine
    affects every N alike: the ratio is what matters.
    """
    topology = load_topology(topology_path)
    largest = max(host_sets)
    best: dict[int, tuple[float, int]] = {n: (float("inf"), 0) for n in host_sets}
    for _ in range(repeats):
        for n, hosts in host_sets.items():
            passes = -(-largest // n)  # small N render their hosts several times: same work per sample
            ctx = RenderContext(hostname="bench", interval=10.0, now=time.time(), ids=CounterIds())
            gc.collect()
            start = time.process_time()
            count = 0
            for _ in range(passes):
                for samples in hosts.values():
                    result = topology.render_measurements(samples, ctx)
                    if result.errors:
                        raise SystemExit(f"render errors: {result.errors[:3]}")
                    count += len(result.events)
            best[n] = (min(best[n][0], (time.process_time() - start) / passes), count // passes)
    return best


def time_barometer(barometer_dir: Path, topology_path: Path, hosts: dict[str, list[Sample]]) -> tuple[float, int]:
    """Seconds Barometer's normalizer takes for one timer tick over the same cache."""
    spec = importlib.util.spec_from_file_location("barometer_normalizer", barometer_dir / "ves_app" / "normalizer.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"no ves_app/normalizer.py under {barometer_dir}")
    normalizer: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(normalizer)
    normalizer.Collector._start_age_timer = lambda self: None
    sent: list[Any] = []

    class Capture(normalizer.Normalizer):  # type: ignore[misc,name-defined]
        def send_data(self, data: Any) -> None:
            sent.append(data)

    app = Capture()
    app.events_stream, app.measurements_stream = app.read_configuration(str(topology_path))
    app.system, app.config = normalizer.System(), normalizer.Config(10.0)
    app.collector = normalizer.Collector(20.0)
    for samples in hosts.values():
        for s in samples:
            value = normalizer.CollectdValue(s.host, s.plugin, s.plugin_instance, s.type, s.type_instance,
                                             s.ds_name, s.value, s.interval)
            value.time = s.time
            app.collector.add(value)
    start = time.perf_counter()
    app.process_measurements()
    return time.perf_counter() - start, len(sent)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[40, 1000], help="numbers of hosts (default 40 1000)")
    parser.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY, help="topology file (default: Barometer's host.yaml)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds per N; the best is reported (default 5)")
    parser.add_argument("--barometer", type=Path, metavar="DIR",
                        help="also time Barometer's normalizer (ves_app/normalizer.py under DIR) for the first N")
    args = parser.parse_args(argv)

    samples = capture_samples()
    start = time.perf_counter()
    load_topology(args.topology)
    compile_seconds = time.perf_counter() - start
    print(f"topology: {args.topology.relative_to(REPO) if args.topology.is_relative_to(REPO) else args.topology}")
    print(f"capture: {len(samples)} samples per host; load+compile {compile_seconds * 1000:.1f} ms (once)")
    print(f"{'hosts':>6} {'events':>7} {'seconds':>9} {'s/host':>10}")
    per_host: dict[int, float] = {}
    timings = time_ves_streams(args.topology, {n: replicate(samples, n) for n in args.hosts}, args.repeats)
    for n, (seconds, events) in timings.items():
        per_host[n] = seconds / n
        print(f"{n:>6} {events:>7} {seconds:>9.4f} {per_host[n]:>10.6f}")
    base = args.hosts[0]
    for n in args.hosts[1:]:
        print(f"ratio s/host({n}) / s/host({base}) = {per_host[n] / per_host[base]:.2f}")
    if args.barometer:
        n = args.hosts[0]
        seconds, events = time_barometer(args.barometer, args.topology, replicate(samples, n))
        print(f"barometer normalizer, {n} hosts: {seconds:.2f} s ({events} events, {seconds / n:.4f} s/host)")
        last = args.hosts[-1]
        print(f"ves-streams {last} hosts vs barometer {n} hosts: "
              f"{per_host[last] * last:.3f} s vs {seconds:.2f} s")
    spread = statistics.pstdev(per_host.values()) / statistics.mean(per_host.values()) if len(per_host) > 1 else 0
    print(f"per-host cost spread across N: {spread:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
