"""Drill: the worker holding an alarm is SIGKILLed between its raise and its clear; the clear keeps the alarm's eventId.

Two processing workers and a sink on the 3-broker cluster. A host whose
notifications partition the victim owns raises an alarm twice (keyed by
host, as the relay sends); the victim is killed as soon as the collector has
the re-raise (its offset may not be committed yet, so the survivor may
replay it); the survivor takes the partition over, restores the alarm from
the changelog, and the clear that follows carries the raise's eventId and
startEpochMicrosec, the next sequence and NORMAL. A raise after it is a new
alarm. Every (eventId, sequence) the collector got is one of those steps:
a replayed notification repeats its step, it never makes a new one.
"""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
import pytest

from tests.drills.conftest import PARTITIONS, SESSION_TIMEOUT, Drill, print_figures
from ves_streams.wire.samples import host_partition

pytestmark = [pytest.mark.integration, pytest.mark.drill]

_ASSIGNED = re.compile(r"faults: partitions assigned \[([^\]]*)\]")


def _fault_partitions(log: str) -> list[int]:
    """The notifications partitions the worker's fault stage owns, from its latest assignment line."""
    found = _ASSIGNED.findall(log)
    return [int(p) for p in found[-1].split(",") if p.strip()] if found else []


def _notification(host: str, severity: str, when: float) -> bytes:
    """collectd 5.9+'s JSON, as the relay forwards it."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{int((when % 1) * 1e9):09d}Z"
    return orjson.dumps([{
        "labels": {"alertname": "collectd_memory_percent", "instance": host, "type": "used", "severity": severity},
        "annotations": {"summary": f"Host {host}, plugin memory type percent (instance used): drill alarm"},
        "startsAt": stamp,
    }])  # fmt: skip


def _faults(drill: Drill, host: str) -> list[dict[str, Any]]:
    return [e for e in drill.collected.events()
            if e["commonEventHeader"]["domain"] == "fault" and e["commonEventHeader"]["sourceName"] == host]  # fmt: skip


def _wait(what: str, condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_worker_kill_between_raise_and_clear_the_clear_carries_the_raises_eventid(drill: Drill, guarantee: str) -> None:
    env = {"VES_STREAMS_PROCESSING_GUARANTEE": guarantee}
    survivor = drill.processor("p1", **env)
    victim = drill.processor("p2", **env)
    drill.sink("sink")
    _wait("both workers' fault stages own partitions",
          lambda: _fault_partitions(victim.log_text()) and _fault_partitions(survivor.log_text()), 90)  # fmt: skip
    owned = _fault_partitions(victim.log_text())
    host = next(h for h in (f"alarm-host-{i}" for i in range(1000)) if host_partition(h, PARTITIONS) in owned)
    topic = drill.names.notifications
    key = host.encode()
    t0 = time.time()

    drill.io.produce(topic, _notification(host, "FAILURE", t0), key=key)
    drill.io.produce(topic, _notification(host, "FAILURE", t0 + 1), key=key)
    _wait("the raise and the re-raise at the collector", lambda: len(_faults(drill, host)) >= 2, 60)
    # GET /alarms on the worker that does not hold the alarm: it asks the other one
    listed = survivor.get("/alarms", timeout=15).json()
    [alarm] = [a for a in listed["alarms"] if a["host"] == host]
    onset = _faults(drill, host)[0]["commonEventHeader"]
    assert (alarm["eventId"], alarm["sequence"], alarm["severity"]) == (onset["eventId"], 1, "NOTIF_FAILURE")
    assert alarm["worker"] != listed["worker"] and set(listed["workers"].values()) == {"ok"}
    killed_at = time.time()
    victim.kill()

    _wait("the survivor owning every notifications partition",
          lambda: sorted(_fault_partitions(survivor.log_text())) == list(range(PARTITIONS)), SESSION_TIMEOUT + 60)  # fmt: skip
    took_over = time.time() - killed_at
    drill.io.produce(topic, _notification(host, "OKAY", t0 + 2), key=key)
    drill.io.produce(topic, _notification(host, "FAILURE", t0 + 3), key=key)

    def steps() -> set[tuple[str, int]]:
        return {(f["commonEventHeader"]["eventId"], f["commonEventHeader"]["sequence"]) for f in _faults(drill, host)}

    _wait("the clear and the next raise at the collector", lambda: len(steps()) >= 4, 90)
    time.sleep(3)  # anything replayed late arrives too
    faults = _faults(drill, host)
    by_step = {(f["commonEventHeader"]["eventId"], f["commonEventHeader"]["sequence"]): f for f in faults}
    first = faults[0]["commonEventHeader"]
    clear = next(f for f in faults if f["faultFields"]["eventSeverity"] == "NORMAL")
    new = [f["commonEventHeader"] for f in faults if f["commonEventHeader"]["eventId"] != first["eventId"]]
    print_figures(f"alarm lifecycle, worker kill ({guarantee})", {
        "host": host, "partition": host_partition(host, PARTITIONS), "victim_partitions": owned,
        "takeover_s": round(took_over, 1), "fault_events": len(faults), "distinct_steps": sorted((i[:8], s) for i, s in by_step),
        "restores": [line.split("]: ")[-1] for line in survivor.log_text().splitlines() if "alarms restored" in line][-2:],
    })  # fmt: skip
    assert clear["commonEventHeader"]["eventId"] == first["eventId"], "the clear after the takeover has another eventId"
    assert clear["commonEventHeader"]["startEpochMicrosec"] == first["startEpochMicrosec"]
    assert clear["commonEventHeader"]["sequence"] == 2
    assert len(steps()) == 4, f"a replayed notification made a step of its own: {sorted(steps())}"
    assert {s for i, s in steps() if i == first["eventId"]} == {0, 1, 2}
    assert len({h["eventId"] for h in new}) == 1 and {h["sequence"] for h in new} == {0}
