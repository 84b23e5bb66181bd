"""``ves-streams render`` and ``ves-streams check``: the rule engine from a shell.

``render`` does offline what a worker does live, with Barometer's timing: it
reads write_kafka JSON lines, keeps the latest sample of every series, renders
the measurements once per host (Barometer's timer tick over its cache), then
renders each notification in order, and prints one ``{"event": ...}`` JSON
document per line. Defaults follow Barometer (``{system.hostname}`` is
``localhost``, ``{system.id}`` counts from 1) so a Barometer file's output can
be compared with Barometer's.

Exit codes: 0 all rendered; 1 some input lines or events were skipped (each
reported on stderr); 2 the topology does not load (the RuleError on stderr).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import orjson

from ves_streams.collectd import MalformedInput, Notification, Sample, parse_notifications, parse_value_lists

from .errors import RenderError, RuleError
from .ids import CounterIds, DeterministicIds, IdPolicy
from .topology import RenderContext, Topology, load_topology

__all__ = ["register", "render_command", "check_command"]


def register(subparsers: Any) -> None:
    """Add ``render`` and ``check`` to the ``ves-streams`` command line."""
    render = subparsers.add_parser(
        "render",
        help="render collectd data through a topology and print VES events (one JSON per line)",
        description="Read write_kafka JSON lines, render the measurements once over the latest samples "
        "(per host), then each notification in order; print one {\"event\": ...} per line.",
    )
    render.add_argument("topology", metavar="TOPOLOGY", help="topology YAML file (ves-streams or Barometer)")
    render.add_argument("--values", metavar="FILE", required=True,
                        help="write_kafka value lists, one JSON message per line")
    render.add_argument("--notifications", metavar="FILE",
                        help="collectd notifications (5.9+ JSON or Barometer's flat shape), one message per line")
    render.add_argument("--interval", metavar="S", type=_positive,
                        help="{config.interval} in seconds (default: the header's, else collectd's)")
    render.add_argument("--hostname", metavar="H", default="localhost",
                        help="{system.hostname} (default: localhost, as Barometer)")
    render.add_argument("--now", metavar="EPOCH", type=float,
                        help="{system.time}/{system.date} (default: the current time)")
    render.add_argument("--ids", choices=("counter", "deterministic"),
                        help="{system.id} policy (default: the header's event_ids, else Barometer's counter)")
    render.add_argument("--heartbeat", action="store_true",
                        help="also render one heartbeat per host after its measurements")
    render.set_defaults(handler=render_command)

    check = subparsers.add_parser(
        "check",
        help="load and compile topology files and report errors",
        description="Load and compile each topology; print 'ok' with a summary, or the error with "
        "file:line:column, rule and hint. Exit 2 if any file fails.",
    )
    check.add_argument("topologies", metavar="TOPOLOGY", nargs="+", help="topology YAML file(s)")
    check.set_defaults(handler=check_command)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def check_command(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    status = 0
    for path in args.topologies:
        try:
            topology = load_topology(path)
        except RuleError as exc:
            print(exc, file=err)
            status = 2
            continue
        print(f"{path}: ok ({_summary(topology)})", file=out)
    return status


def _summary(topology: Topology) -> str:
    h = topology.header
    parts = [f"VES {h.ves_version}", f"rules: {', '.join(topology.rule_names)}"]
    if topology.has_heartbeat:
        parts.append("heartbeat")
    return "; ".join(parts)


def render_command(args: argparse.Namespace) -> int:
    err = sys.stderr
    try:
        topology = load_topology(args.topology)
    except RuleError as exc:
        print(exc, file=err)
        return 2
    skipped = 0
    samples: dict[tuple[str, ...], Sample] = {}
    try:
        for problem in _read_values(Path(args.values), samples):
            print(problem, file=err)
            skipped += 1
        notes: list[Notification] = []
        if args.notifications:
            for item in _read_notifications(Path(args.notifications)):
                if isinstance(item, str):
                    print(item, file=err)
                    skipped += 1
                else:
                    notes.append(item)
    except OSError as exc:
        print(f"ves-streams render: cannot read {exc.filename}: {exc.strerror}", file=err)
        return 2

    hosts: dict[str, list[Sample]] = {}
    for s in samples.values():
        hosts.setdefault(s.host, []).append(s)
    interval = args.interval or topology.header.interval or _collectd_interval(samples.values())
    now = time.time() if args.now is None else args.now
    ids = _ids(args.ids or topology.header.event_ids or "counter", now, interval)
    ctx = RenderContext(hostname=args.hostname, interval=interval, now=now, ids=ids)

    write = sys.stdout.buffer.write
    errors: list[RenderError] = []
    for host, host_samples in hosts.items():
        result = topology.render_measurements(host_samples, ctx)
        errors += result.errors
        for event in result.events:
            write(_json(event.body))
        if args.heartbeat:
            beat = topology.render_heartbeat(host, ctx)
            errors += beat.errors
            for event in beat.events:
                write(_json(event.body))
    for n in notes:
        result = topology.render_notification(n, ctx)
        errors += result.errors
        for event in result.events:
            write(_json(event.body))
    sys.stdout.flush()
    for e in errors:
        print(f"skipped event: rule {e.rule!r}, host {e.host!r}: {e.reason}", file=err)
    return 1 if (errors or skipped) else 0


def _json(body: Any) -> bytes:
    return orjson.dumps(body) + b"\n"


def _ids(policy: str, now: float, interval: float) -> IdPolicy:
    if policy == "deterministic":
        return DeterministicIds(interval_start=math.floor(now / interval) * interval)
    return CounterIds()


def _collectd_interval(samples: Any) -> float:
    for s in samples:
        return float(s.interval)
    return 10.0


def _read_values(path: Path, into: dict[tuple[str, ...], Sample]) -> Iterator[str]:
    """Fill ``into`` with the latest sample per series; yield a message per bad line."""
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                lists = parse_value_lists(line)
            except MalformedInput as exc:
                yield f"{path}:{number}: skipped value list: {exc.reason}"
                continue
            for vl in lists:
                for s in vl.samples():
                    into[(s.host, *s.series)] = s


def _read_notifications(path: Path) -> Iterator[Notification | str]:
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield from parse_notifications(line)
            except MalformedInput as exc:
                yield f"{path}:{number}: skipped notification: {exc.reason}"
