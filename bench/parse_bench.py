"""Decoding cost per value list: the Python checks (baseline) against msgspec's, in one run.

Two decodes happen to every value list a worker handles: ingest parses the
``write_kafka`` message (:func:`ves_streams.collectd.parse_value_lists`),
and the samples stage reads back the record ingest wrote
(:func:`ves_streams.wire.samples.decode_trusted_value_lists`). Both are
timed here over the recorded capture against what they replaced, on the
same bytes: :func:`~ves_streams.collectd.parse_value_lists_checked` (every
check in Python, what a rejection's reason comes from) for ingest, and
:func:`python_trusted_decode` (the samples stage's Python decode before
msgspec, kept here as the baseline) for the samples stage. Figures are
medians of ``--repeat`` passes of CPU time, with their ratio.

Run: ``.venv/bin/python -m bench.parse_bench [--repeat 7] [--hosts 20]``
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import orjson

from ves_streams.collectd import parse_value_lists, parse_value_lists_checked
from ves_streams.dev.replay import DEFAULT_CAPTURE_DIR, host_names, load_capture, round_messages
from ves_streams.stages.repartition import ingest_batch
from ves_streams.wire.samples import decode_trusted_value_lists, value_list_from_json


def python_trusted_decode(raw: bytes) -> list[Any] | None:
    """The samples stage's decode before msgspec (ves-streams 2026-12-02): orjson, then checks in Python."""
    try:
        items = orjson.loads(raw)
        if type(items) is not list or not items:
            return None
        out = []
        for d in items:
            vl = value_list_from_json(d)
            names = (vl.host, vl.plugin, vl.plugin_instance, vl.type, vl.type_instance)
            if not all(type(n) is str for n in names) or not (vl.host and vl.plugin and vl.type):
                return None
            if not (math.isfinite(vl.time) and math.isfinite(vl.interval) and vl.interval > 0) or not vl.values:
                return None
            for v in vl.values:
                if v is not None and (type(v) is not float and type(v) is not int or not math.isfinite(v)):
                    return None
            out.append(vl)
        return out
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError, OverflowError):
        return None


def _median_us_per_value_list(decode: Callable[[bytes], Any], payloads: Sequence[bytes], value_lists: int, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        started = time.process_time()
        for raw in payloads:
            decode(raw)
        runs.append((time.process_time() - started) / value_lists * 1e6)
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.parse_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="passes per decoder, median reported (default 7)")
    parser.add_argument("--hosts", type=int, default=20, help="synthetic hosts the capture is replicated to (default 20)")
    args = parser.parse_args(argv)

    capture = load_capture(next(DEFAULT_CAPTURE_DIR.glob("*.values.jsonl")))
    hosts = host_names(args.hosts)
    messages = [m for index in range(len(capture.rounds)) for m in round_messages(capture, index, hosts, time.time())]
    inputs = [SimpleNamespace(topic="collectd", partition=0, offset=i, key=None, value=m) for i, m in enumerate(messages)]
    records = [r.value for r in ingest_batch(inputs, 8).records]  # what the samples stage reads
    count = len(messages)
    assert sum(len(parse_value_lists(r)) for r in records) == count

    assert [python_trusted_decode(r) for r in records] == [decode_trusted_value_lists(r) for r in records]
    rows = [
        ("ingest: write_kafka message", messages, parse_value_lists_checked, parse_value_lists),
        ("samples stage: ingest's record", records, python_trusted_decode, decode_trusted_value_lists),
    ]
    print(f"{count} value lists ({args.hosts} hosts x the capture), {len(records)} samples records, "
          f"median of {args.repeat} passes, CPU µs per value list")  # fmt: skip
    print(f"{'decode':34} {'python':>9} {'msgspec':>9} {'ratio':>7}")
    for name, payloads, before, decode in rows:
        baseline = _median_us_per_value_list(before, payloads, count, args.repeat)
        measured = _median_us_per_value_list(decode, payloads, count, args.repeat)
        print(f"{name:34} {baseline:9.2f} {measured:9.2f} {baseline / measured:6.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
