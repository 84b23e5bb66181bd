"""When events are rendered and how they are keyed: interval windows and output records.

Measurement events are rendered per *interval window* ``[start, end)``,
aligned on wall-clock multiples of the interval (10 s -> :00, :10, :20...).
The window's ``start`` seeds the rule engine's ``DeterministicIds``, so the
same window of the same host always yields the same eventId: a window
rendered twice (a retried tick, a worker that died after producing) is a
duplicate the collector can recognise, never a different event.

Every event goes to ``ves-events`` keyed by its ``sourceName`` with headers
naming its domain, eventId and VES version, so consumers (the sink) can batch
by domain without parsing the body.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from ves_streams import topics

__all__ = [
    "Interval",
    "OutputRecord",
    "event_record",
    "heartbeat_due",
    "interval_ending_at",
    "intervals_to_render",
    "next_boundary",
]

#: Boundaries are rounded to the microsecond so that float arithmetic on
#: intervals like 0.1 s never produces two "different" windows for one tick.
_PRECISION = 6


@dataclass(frozen=True, slots=True, order=True)
class Interval:
    """One render window ``[start, end)``; ``end`` is the wall-clock tick."""

    start: float
    end: float

    @property
    def length(self) -> float:
        return round(self.end - self.start, _PRECISION)


def next_boundary(now: float, interval: float) -> float:
    """The first wall-clock multiple of ``interval`` strictly after ``now``."""
    if interval <= 0 or not math.isfinite(interval):
        raise ValueError("interval must be a positive number of seconds")
    n = math.floor(round(now / interval, 9)) + 1
    return round(n * interval, _PRECISION)


def align(t: float, interval: float) -> float:
    """The wall-clock multiple of ``interval`` nearest ``t``."""
    return round(round(t / interval) * interval, _PRECISION)


def interval_ending_at(end: float, interval: float) -> Interval:
    end = align(end, interval)
    return Interval(round(end - interval, _PRECISION), end)


def intervals_to_render(last_end: float | None, tick_end: float, interval: float, max_backfill: int) -> list[Interval]:
    """The windows a tick ending at ``tick_end`` must render, oldest first.

    * nothing if the tick is not newer than ``last_end`` (the end of the last
      window rendered for this partition): a duplicate or late tick;
    * otherwise the window ending at ``tick_end`` plus, when windows were
      missed since ``last_end`` (the previous owner of the partition died or
      the partition was unowned during a rebalance), the missed windows
      immediately before it;
    * but when more than ``max_backfill`` windows were missed, only the
      current one: such a gap is not a failover but a fleet that was down
      (or state from an earlier run), and its windows cannot be rendered
      honestly from the samples held now.
    """
    tick_end = align(tick_end, interval)
    if last_end is not None:
        last_end = align(last_end, interval)
        if tick_end <= last_end:
            return []
        missed = int(round((tick_end - last_end) / interval)) - 1
    else:
        missed = 0
    count = 1 + (missed if 0 < missed <= max_backfill else 0)
    return [interval_ending_at(tick_end - i * interval, interval) for i in range(count - 1, -1, -1)]


def heartbeat_due(window: Interval, heartbeat_interval: float) -> float | None:
    """The heartbeat boundary inside ``(window.start, window.end]``, if there is one.

    Heartbeats are aligned on multiples of their own interval, independently
    of the measurement interval; the boundary seeds their eventIds.
    """
    if heartbeat_interval <= 0:
        return None
    boundary = math.floor(round(window.end / heartbeat_interval, 9)) * heartbeat_interval
    boundary = round(boundary, _PRECISION)
    if window.start < boundary <= window.end:
        return boundary
    return None


class RenderedEventLike(Protocol):
    body: Any
    domain: str
    source_name: str
    event_id: str


@dataclass(frozen=True, slots=True)
class OutputRecord:
    """A record ready for ``topic.send``: raw key, value and headers."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def event_record(event: RenderedEventLike, ves_version: str, interval_start: float | None = None) -> OutputRecord:
    """The ``ves-events`` record of one rendered event: key = sourceName."""
    headers = [
        (topics.HEADER_DOMAIN, event.domain.encode()),
        (topics.HEADER_EVENT_ID, str(event.event_id).encode()),
        (topics.HEADER_VES_VERSION, str(ves_version).encode()),
    ]
    if interval_start is not None:
        headers.append((topics.HEADER_INTERVAL_START, repr(float(interval_start)).encode()))
    key = event.source_name.encode("utf-8", "surrogatepass") if event.source_name else None
    return OutputRecord(key=key, value=orjson.dumps(event.body), headers=headers)
