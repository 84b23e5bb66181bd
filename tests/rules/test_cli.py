"""``ves-streams render`` and ``ves-streams check`` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .helpers import (
    BAROMETER,
    CAPTURE_NOTIFICATIONS,
    CAPTURE_VALUES,
    GOLDEN,
    REPO,
    TOPOLOGIES,
    as_sets,
    validator,
)


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ves_streams.cli", *map(str, args)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )


def test_render_of_a_barometer_file_prints_barometers_events_one_per_line():
    run = cli("render", BAROMETER / "guest.yaml", "--values", CAPTURE_VALUES,
              "--notifications", CAPTURE_NOTIFICATIONS)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    events = [json.loads(line) for line in run.stdout.splitlines()]
    expected = [json.loads(line) for line in (GOLDEN / "guest.compute-0.jsonl").read_text().splitlines()]
    assert [as_sets(e) for e in events] == [as_sets(e) for e in expected]
    assert [e["event"]["commonEventHeader"]["eventId"] for e in events] == [str(i) for i in range(1, 13)]
    assert all(set(e) == {"event"} for e in events)


def test_render_of_a_ves7_topology_with_heartbeat_validates(tmp_path):
    run = cli("render", TOPOLOGIES / "host.yaml", "--values", CAPTURE_VALUES,
              "--notifications", CAPTURE_NOTIFICATIONS, "--heartbeat", "--hostname", "ves-0",
              "--interval", "10", "--now", "1795300400")
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in run.stdout.splitlines()]
    assert [e["event"]["commonEventHeader"]["domain"] for e in events] == ["measurement", "heartbeat"] + ["fault"] * 11
    check = validator(7)
    assert all(not list(check.iter_errors(e)) for e in events)
    assert {e["event"]["commonEventHeader"]["reportingEntityName"] for e in events} == {"ves-0"}
    again = cli("render", TOPOLOGIES / "host.yaml", "--values", CAPTURE_VALUES,
                "--notifications", CAPTURE_NOTIFICATIONS, "--heartbeat", "--hostname", "ves-0",
                "--interval", "10", "--now", "1795300400")
    assert again.stdout == run.stdout  # header says event_ids: deterministic


def test_render_reports_skipped_events_and_bad_lines_and_exits_1(tmp_path):
    values = tmp_path / "values.jsonl"
    values.write_bytes(CAPTURE_VALUES.read_bytes() + b"not json\n")
    rules = tmp_path / "rules.yaml"
    rules.write_text("M: !Measurements\n  - SELECT: {plugin: cpu, type_instance: idle}\n  - ITEM-DESC:\n"
                     "      user: !ValueItem\n        - SELECT: {plugin: cpu, type_instance: user}\n")
    run = cli("render", rules, "--values", values)
    assert run.returncode == 1
    assert run.stdout == ""
    lines = run.stderr.splitlines()
    assert lines[0].startswith(f"{values}:916: skipped value list: not JSON")
    assert lines[1].startswith(f"skipped event: rule 'M', host 'compute-0': {rules}:4:13: !ValueItem selected 2 samples")
    assert len(lines) == 3 and "Traceback" not in run.stderr


def test_render_of_a_broken_topology_prints_the_rule_error_and_exits_2(tmp_path):
    rules = tmp_path / "host.yaml"
    rules.write_text('M: !Measurements\n  - SELECT: {plugin: cpu}\n  - ITEM-DESC: {x: "{vl.nosuchfield}"}\n')
    run = cli("render", rules, "--values", CAPTURE_VALUES)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.startswith(f"{rules}:3:20: in rule 'M': unknown reference {{vl.nosuchfield}}")
    assert "Traceback" not in run.stderr


def test_check_reports_ok_for_every_shipped_topology():
    paths = sorted(TOPOLOGIES.rglob("*.yaml")) + sorted(BAROMETER.glob("*.yaml"))
    run = cli("check", *paths)
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.splitlines()) == len(paths)
    assert f"{TOPOLOGIES / 'host.yaml'}: ok (VES 7.2.1; rules: Host Measurements, Host Faults, Host Heartbeat; " \
           "heartbeat)" in run.stdout


def test_check_prints_each_error_line_and_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("Host: !Measurement\n  - SELECT: {plugin: cpu}\n")
    run = cli("check", TOPOLOGIES / "host.yaml", bad)
    assert run.returncode == 2
    assert run.stderr.strip() == (f"{bad}:1:7: unknown tag '!Measurement' (hint: known tags: !ArrayItem, "
                                  "!Bytes2Kibibytes, !Events, !Heartbeat, !MapItem, !MapValue, !Measurements, "
                                  "!Microseconds, !Number, !StripExtraDash, !SumItem, !ValueItem)")
    assert "host.yaml: ok" in run.stdout
