"""A worker's window render per host, in-process: the host index, the renderer and the event records.

What one render tick costs per host, without Kafka: the capture's latest
value lists replicated to N hosts are applied to a :class:`SampleStore`,
then every host of the partition is rendered as ``render_partition`` does
(the store's samples, :class:`TopologyRenderer.measurements`, the events
topic's records). The topology is the worker's default (VES 7 ``host.yaml``).
CPU time of this process, best of ``--repeats``; the baseline measured in
the same run is the rule engine alone on the same hosts' samples, so the
ratio says what the worker adds around it.

A second figure is the state: CPU per value list of holding four intervals of
every host's value lists in the worker's event-time windows
(:func:`state_figures`), against a dict of each series' newest value list.

Run: ``.venv/bin/python -m bench.window_bench [--hosts 1000] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time

import msgspec
from prometheus_client import CollectorRegistry
from rocksdict import Options, Rdict

from ves_streams import resources
from ves_streams.collectd import ValueList, parse_value_lists
from ves_streams.identity import Interval
from ves_streams.metrics import Metrics
from ves_streams.rules import load_topology
from ves_streams.stages.events import event_outputs
from ves_streams.stages.render import TopologyRenderer
from ves_streams.state import HostIndex, SampleStore, decode_value_list, encode_value_list, series_key
from ves_streams.wire import deadletter


def capture_value_lists() -> list[ValueList]:
    """The capture's latest value list of each series."""
    latest: dict[tuple[str, ...], ValueList] = {}
    for line in (resources.capture_dir() / "compute-0.values.jsonl").read_bytes().splitlines():
        for vl in parse_value_lists(line):
            latest[vl.series] = vl
    return list(latest.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    base = capture_value_lists()
    now = max(vl.time for vl in base)
    index = HostIndex()
    store = SampleStore({}, index)
    for i in range(args.hosts):
        host = f"compute-{i:04d}"
        # decoded from bytes, as the samples stage gets them
        store.apply(0, [decode_value_list(encode_value_list(msgspec.structs.replace(vl, host=host, time=now))) for vl in base])
    topology = load_topology(resources.default_topology())
    renderer = TopologyRenderer(topology, hostname="bench", interval=10.0, ves_version="7.2.1")
    metrics = Metrics(CollectorRegistry())
    window = Interval(now - 5, now + 5)
    source = deadletter.Source("bench", 0, 0)
    hosts = index.hosts(0)

    def worker_window() -> int:
        events = 0
        for host in hosts:
            rendered = renderer.measurements(host, store.samples(0, host), window)
            made = event_outputs(rendered, ves_version="7.2.1", metrics=metrics, stage="measurements", source=source,
                                 interval_start=window.start)  # fmt: skip
            events += len(made.events)
        return events

    samples = {host: store.samples(0, host) for host in hosts}
    ctx_of = renderer._context  # noqa: SLF001 - the same context the renderer builds

    def rule_engine_only() -> int:
        events = 0
        for host in hosts:
            events += len(topology.render_measurements(samples[host], ctx_of(window.end, window.start)).events)
        return events

    best = {"rule engine alone (baseline)": float("inf"), "worker's window render": float("inf")}
    counts = {}
    for _ in range(args.repeats):
        for name, fn in (("rule engine alone (baseline)", rule_engine_only), ("worker's window render", worker_window)):
            gc.collect()
            start = time.process_time()
            counts[name] = fn()
            best[name] = min(best[name], time.process_time() - start)
    print(f"{args.hosts} hosts, {len(base)} value lists each, topology {resources.default_topology().name}; "
          f"CPU, best of {args.repeats}")
    for name, seconds in best.items():
        print(f"  {name:<30} {seconds * 1000 / args.hosts:.3f} ms per host ({counts[name]} events)")
    ratio = best["worker's window render"] / best["rule engine alone (baseline)"]
    print(f"  ratio worker / rule engine: {ratio:.2f}")
    state_figures(base, now, args.hosts, args.repeats)
    return 0


class RdictState:
    """A RocksDB database as the store's local state (the worker writes its partitions' databases the same way)."""

    def __init__(self, db: Rdict) -> None:
        self.db = db

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        self.db[key] = value

    def delete(self, partition: int, key: bytes) -> None:
        del self.db[key]


def rocksdb_options() -> Options:
    """RocksDB as the worker opens a state partition: raw bytes, 1 MB write buffer."""
    options = Options(raw_mode=True)
    options.set_write_buffer_size(1024 * 1024)
    return options


def state_figures(base: list[ValueList], now: float, hosts: int, repeats: int, rounds: int = 4) -> None:
    """CPU per value list of holding samples: ``rounds`` intervals of every host's value lists.

    The worker's state (:meth:`SampleStore.apply` per host record, its
    writes to a RocksDB database, then at each boundary the expiry pass and
    the marker, as a tick does) against a baseline measured in the same run:
    a dict of each series' newest encoded value list, the least any
    changelogged store of the latest samples pays.
    """
    interval = 10.0
    batches = []
    for r in range(rounds):
        t = now + r * interval
        batches.append([decode_value_list(encode_value_list(msgspec.structs.replace(vl, host=f"compute-{i:04d}", time=t)))
                        for i in range(hosts) for vl in base])  # fmt: skip
    count = sum(len(b) for b in batches)

    per_host = len(base)

    def windowed_state() -> None:
        with tempfile.TemporaryDirectory() as directory:
            db = Rdict(directory, rocksdb_options())
            try:
                run_state(db)
            finally:
                db.close()

    def run_state(db: Rdict) -> None:
        local = RdictState(db)
        try:
            store = SampleStore({}, HostIndex(), local, interval=interval)
        except TypeError:  # a store without event-time windows (before/after runs of this bench)
            store = SampleStore({}, HostIndex(), local)
        flush = getattr(store, "take_changes", None)  # a store that writes per host at each changelog flush
        for r, batch in enumerate(batches):
            for h in range(hosts):  # a samples record per host; a changelog flush every 10 hosts (~0.1 s at N = 1000)
                store.apply(0, batch[h * per_host : (h + 1) * per_host])
                if flush is not None and h % 10 == 9:
                    flush(0)
            end = now + (r + 1) * interval
            store.expire(0, end)
            if flush is not None:
                flush(0)
            store.set_marker(0, end)

    def newest_only() -> None:
        table: dict[bytes, bytes] = {}
        for batch in batches:
            for vl in batch:
                table[series_key(vl)] = encode_value_list(vl)

    best = {"newest per series (baseline)": float("inf"), "worker's state": float("inf")}
    for _ in range(repeats):
        for name, fn in (("newest per series (baseline)", newest_only), ("worker's state", windowed_state)):
            gc.collect()
            start = time.process_time()
            fn()
            best[name] = min(best[name], time.process_time() - start)
    print(f"{hosts} hosts x {rounds} intervals, {count} value lists; CPU, best of {repeats}")
    for name, seconds in best.items():
        print(f"  {name:<30} {seconds * 1e6 / count:.2f} us per value list")
    ratio = best["worker's state"] / best["newest per series (baseline)"]
    print(f"  ratio worker / baseline: {ratio:.2f}")


if __name__ == "__main__":
    sys.exit(main())
