"""Interval windows aligned on the wall clock, backfill and duplicates, event keying."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from ves_streams.identity import Interval, event_record, heartbeat_due, interval_ending_at, intervals_to_render, next_boundary


def test_next_boundary_is_the_next_wall_clock_multiple() -> None:
    assert next_boundary(1000.0, 10) == 1010.0
    assert next_boundary(1003.7, 10) == 1010.0
    assert next_boundary(1009.999, 10) == 1010.0
    assert next_boundary(1000.05, 0.1) == pytest.approx(1000.1)
    assert next_boundary(7.0, 2) == 8.0


def test_window_ends_at_the_tick() -> None:
    assert interval_ending_at(1010.0, 10) == Interval(1000.0, 1010.0)
    assert interval_ending_at(1010.0000001, 10) == Interval(1000.0, 1010.0)  # float noise aligned away


def test_first_tick_renders_one_window() -> None:
    assert intervals_to_render(None, 1010, 10, max_backfill=5) == [Interval(1000, 1010)]


def test_duplicate_or_late_tick_renders_nothing() -> None:
    assert intervals_to_render(1010, 1010, 10, max_backfill=5) == []
    assert intervals_to_render(1020, 1010, 10, max_backfill=5) == []


def test_next_tick_renders_one_window() -> None:
    assert intervals_to_render(1010, 1020, 10, max_backfill=5) == [Interval(1010, 1020)]


def test_missed_windows_are_backfilled_oldest_first() -> None:
    assert intervals_to_render(1010, 1040, 10, max_backfill=5) == [
        Interval(1010, 1020),
        Interval(1020, 1030),
        Interval(1030, 1040),
    ]


def test_a_gap_longer_than_the_backfill_limit_resumes_at_the_current_window() -> None:
    # State from an earlier run (or a fleet down for long): old windows are not
    # rendered from today's samples.
    assert intervals_to_render(1000, 2000, 10, max_backfill=2) == [Interval(1990, 2000)]
    # exactly at the limit the missed windows are still backfilled
    assert intervals_to_render(1000, 1030, 10, max_backfill=2) == [
        Interval(1000, 1010),
        Interval(1010, 1020),
        Interval(1020, 1030),
    ]


def test_heartbeat_due_once_per_heartbeat_interval() -> None:
    windows = [interval_ending_at(t, 10) for t in range(1010, 1130, 10)]
    due = [heartbeat_due(w, 60) for w in windows]
    assert [d for d in due if d is not None] == [1020.0, 1080.0]
    assert heartbeat_due(Interval(1000, 1010), 10) == 1010.0  # equal intervals: every window


@dataclass
class FakeEvent:
    body: Any
    domain: str
    source_name: str
    event_id: str
    rule: str = "r"


def test_event_record_is_keyed_by_source_name_with_domain_headers() -> None:
    event = FakeEvent({"event": {"commonEventHeader": {"sourceName": "compute-0"}}}, "measurement", "compute-0", "abc")
    record = event_record(event, "7.2.1", interval_start=1000.0)
    assert record.key == b"compute-0"
    assert orjson.loads(record.value) == event.body
    headers = dict(record.headers)
    assert headers["ves-domain"] == b"measurement"
    assert headers["ves-event-id"] == b"abc"
    assert headers["ves-version"] == b"7.2.1"
    assert headers["ves-streams-interval-start"] == b"1000.0"
    assert "ves-streams-interval-start" not in dict(event_record(event, "7.2.1").headers)
