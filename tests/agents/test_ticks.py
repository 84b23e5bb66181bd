"""Which boundaries a render tick sends after waiting, and what they render together."""

from __future__ import annotations

from ves_streams.agents.measurements import boundaries_to_tick
from ves_streams.identity import intervals_to_render

INTERVAL = 10.0
BACKFILL = 10


def _rendered(marker: float, ticks: list[float]) -> list[float]:
    """Window ends the ticks render, in order, from a partition whose last window ended at ``marker``."""
    out: list[float] = []
    for tick in ticks:
        windows = intervals_to_render(marker, tick, INTERVAL, BACKFILL)
        out += [w.end for w in windows]
        if windows:
            marker = windows[-1].end
    return out


def test_a_tick_on_time_sends_its_own_boundary_only() -> None:
    assert boundaries_to_tick(1000.0, 1000.3, INTERVAL, BACKFILL) == [1000.0]


def test_a_tick_that_waited_a_few_intervals_sends_the_latest_too_and_every_window_is_rendered() -> None:
    ticks = boundaries_to_tick(1000.0, 1034.0, INTERVAL, BACKFILL)
    assert ticks == [1000.0, 1030.0]
    assert _rendered(990.0, ticks) == [1000.0, 1010.0, 1020.0, 1030.0]


def test_after_an_outage_longer_than_the_backfill_the_waited_window_and_the_latest_ones_are_rendered() -> None:
    # waited 25 intervals: one tick for 1000 would be followed by a gap too long to backfill,
    # which would skip the windows since the cluster returned as well
    ticks = boundaries_to_tick(1000.0, 1255.0, INTERVAL, BACKFILL)
    rendered = _rendered(990.0, ticks)
    assert rendered[0] == 1000.0
    assert rendered[-(BACKFILL + 1):] == [1250.0 - i * INTERVAL for i in range(BACKFILL, -1, -1)]
    assert rendered == sorted(set(rendered)), "a window rendered twice or out of order"
    assert len(rendered) == 1 + BACKFILL + 1


def test_just_past_the_backfill_every_window_is_still_rendered() -> None:
    ticks = boundaries_to_tick(1000.0, 1000.0 + (BACKFILL + 1) * INTERVAL + 1, INTERVAL, BACKFILL)
    assert _rendered(990.0, ticks) == [1000.0 + i * INTERVAL for i in range(BACKFILL + 2)]
