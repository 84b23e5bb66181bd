"""How many requests the sink keeps in flight: grows on flat round trips, shrinks on errors and latency."""

from __future__ import annotations

import pytest

from ves_streams.sink.concurrency import AdaptiveConcurrency, ConcurrencyLimits
from ves_streams.sink.errors import SinkConfigError


def _saturated_period(c: AdaptiveConcurrency, now: float, rtt: float, *, back_pressure: bool = False) -> float:
    """Fill every permit with a full request waiting for more, let each answer after ``rtt``; return the time after."""
    in_flight = 0
    while c.available(in_flight):
        in_flight += 1
    c.starved()
    for _ in range(in_flight):
        c.attempted(None if back_pressure else rtt, back_pressure=back_pressure, now=now + rtt)
    return now + rtt


def test_the_limit_doubles_from_the_start_until_the_first_decrease_then_grows_by_one_per_period() -> None:
    c = AdaptiveConcurrency(ConcurrencyLimits(maximum=64))
    now = 0.0
    limits = []
    for _ in range(5):
        now = _saturated_period(c, now, 0.125)
        limits.append(c.limit)
    assert limits == [1, 2, 4, 8, 16], "the first period sets the reference, each later one doubles"
    now = _saturated_period(c, now, 0.125, back_pressure=True)
    assert c.limit == 14, "back pressure takes a tenth off"
    after = []
    for _ in range(4):
        now = _saturated_period(c, now, 0.125)
        after.append(c.limit)
    assert [b - a for a, b in zip(after[1:], after[2:])] == [1, 1], f"after a decrease, one more per period: {after}"


def test_the_limit_never_exceeds_the_maximum() -> None:
    c = AdaptiveConcurrency(ConcurrencyLimits(maximum=3))
    now = 0.0
    for _ in range(20):
        now = _saturated_period(c, now, 0.125)
    assert c.limit == 3


def test_the_limit_does_not_grow_without_evidence_that_more_was_wanted() -> None:
    c = AdaptiveConcurrency(ConcurrencyLimits(maximum=8, initial=4))
    now = 0.0
    for _ in range(10):  # one request at a time, under a limit of four
        now += 0.125
        c.attempted(0.125, back_pressure=False, now=now)
    assert c.limit == 4
    for _ in range(10):  # every permit in use, but no full request waiting: the batching keeps up
        now += 0.125
        for _ in range(c.limit):
            c.attempted(0.125, back_pressure=False, now=now)
    assert c.limit == 4


def test_back_pressure_takes_a_tenth_off_and_never_goes_below_one() -> None:
    c = AdaptiveConcurrency(ConcurrencyLimits(maximum=32, initial=20))
    now = _saturated_period(c, 0.0, 0.125)  # the reference round trip
    history = []
    for _ in range(40):
        now = _saturated_period(c, now, 0.125, back_pressure=True)
        history.append(c.limit)
    assert history[:3] == [18, 16, 14]
    assert history[-1] == 1 and min(history) == 1


def test_a_round_trip_far_above_the_past_mean_shrinks_the_limit() -> None:
    c = AdaptiveConcurrency(ConcurrencyLimits(maximum=32, initial=10))
    now = 0.0
    for rtt in (0.10, 0.11, 0.10, 0.11):  # a reference with a little deviation
        now = _saturated_period(c, now, rtt)
    grown = c.limit
    now = _saturated_period(c, now, 0.5)  # the collector slows down five times
    assert c.limit == int(grown * 0.9)


def test_a_request_may_start_while_fewer_than_the_limit_are_in_flight_and_priority_ones_beyond_it() -> None:
    c = AdaptiveConcurrency(ConcurrencyLimits(maximum=4, initial=2))
    assert c.available(0) and c.available(1) and c.available(1, extra=1)
    assert not c.available(2), "two of two permits in use"
    assert c.available(2, extra=1), "a priority request may use one beyond the limit"
    assert not c.available(3, extra=1)


def test_a_maximum_of_one_is_one_request_at_a_time_whatever_happens() -> None:
    c = AdaptiveConcurrency(ConcurrencyLimits(maximum=1))
    now = 0.0
    for _ in range(5):
        now = _saturated_period(c, now, 0.125)
    assert (c.limit, c.adaptive) == (1, False)


@pytest.mark.parametrize(
    "kwargs", [{"maximum": 0}, {"maximum": 4, "initial": 5}, {"decrease_ratio": 1.0}, {"ewma_alpha": 0.0}]
)
def test_impossible_limits_are_refused_at_configuration(kwargs: dict[str, float]) -> None:
    with pytest.raises(SinkConfigError):
        ConcurrencyLimits(**kwargs)  # type: ignore[arg-type]
