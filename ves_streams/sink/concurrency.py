"""How many requests the sink keeps in flight: adaptive, bounded, backing off on latency and errors.

One request at a time caps a sink at one batch per round trip: 100 events
per 100 ms is 1,000 events/s to a collector 100 ms away, whatever the
collector could take. A fixed high number instead overloads a collector
that is struggling. :class:`AdaptiveConcurrency` finds the number the way
Vector's adaptive request concurrency does (additive increase,
multiplicative decrease, on round-trip times):

* it starts at ``initial`` (1) and never exceeds ``maximum``; until the
  first decrease it doubles where it would grow by one (TCP's slow start:
  Vector's one step per round trip took the sink ~5 s to reach the eight
  requests a 100 ms collector needed);
* requests are timed per attempt; every *period* (one past mean RTT long)
  the period's mean RTT is compared with an exponentially weighted mean of
  the past periods (and its deviation);
* if, in the period, a full request had to wait for a permit (evidence
  that more concurrency would carry more: requests that are not full say
  the batching keeps up, and bigger batches are kinder to a collector than
  more requests), nothing pushed back and the RTT did not rise, the limit
  grows by one;
* if anything pushed back (a 5xx, 429, timeout or refused connection: every
  transient error) or the RTT rose past the past mean plus
  ``rtt_deviation_scale`` deviations, the limit is multiplied by
  ``decrease_ratio`` (at least 1).

Requests already in flight keep going when the limit drops (they are never
abandoned); no new one starts until the count is below the limit again.
``maximum = 1`` is the old sink: one request at a time, nothing adapts.

Pure: time is passed in (seconds, any monotonic clock).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ves_streams.sink.errors import SinkConfigError

__all__ = ["AdaptiveConcurrency", "ConcurrencyLimits"]


@dataclass(frozen=True, slots=True)
class ConcurrencyLimits:
    """Bounds and tuning of :class:`AdaptiveConcurrency` (Vector's defaults for the tuning)."""

    #: most requests in flight (``VES_STREAMS_SINK_MAX_CONCURRENCY``); 1 = one at a time
    maximum: int = 32
    initial: int = 1
    decrease_ratio: float = 0.9
    ewma_alpha: float = 0.4
    rtt_deviation_scale: float = 2.5

    def __post_init__(self) -> None:
        if self.maximum < 1:
            raise SinkConfigError(f"sink max concurrency must be >= 1, got {self.maximum}")
        if not 1 <= self.initial <= self.maximum:
            raise SinkConfigError(f"sink initial concurrency must be in 1..{self.maximum}, got {self.initial}")
        if not 0 < self.decrease_ratio < 1 or not 0 < self.ewma_alpha < 1 or self.rtt_deviation_scale < 0:
            raise SinkConfigError("sink concurrency tuning: decrease ratio and EWMA alpha in (0, 1), deviation scale >= 0")


class _Ewma:
    """Exponentially weighted mean and variance (West's incremental form)."""

    __slots__ = ("alpha", "mean", "variance")

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.mean: float | None = None
        self.variance = 0.0

    def update(self, value: float) -> None:
        if self.mean is None:
            self.mean = value
            return
        diff = value - self.mean
        step = self.alpha * diff
        self.mean += step
        self.variance = (1 - self.alpha) * (self.variance + diff * step)


class AdaptiveConcurrency:
    """The current limit on requests in flight; see the module docstring.

    The caller asks :meth:`available` with the number of requests it has in
    flight (a request is a batch's whole delivery, retries included; the
    caller counts them, this class does not keep a second count), reports
    :meth:`attempted` after every attempt and :meth:`starved` when a full
    request is ready and no permit is free.
    """

    def __init__(self, limits: ConcurrencyLimits) -> None:
        self.limits = limits
        self.limit = limits.initial
        self._past = _Ewma(limits.ewma_alpha)
        self._next_update = -math.inf
        self._rtt_sum = 0.0
        self._rtt_count = 0
        self._back_pressure = False
        self._reached_limit = False
        #: doubling until the first decrease
        self._slow_start = True

    @property
    def adaptive(self) -> bool:
        """False when the limit is fixed at 1."""
        return self.limits.maximum > 1

    def available(self, in_flight: int, extra: int = 0) -> bool:
        """True when one more request may start beside ``in_flight`` (``extra`` permits beyond the limit)."""
        return in_flight < self.limit + extra

    def starved(self) -> None:
        """A full request is ready and every permit is in use: more concurrency would be used."""
        self._reached_limit = True

    def attempted(self, rtt: float | None, *, back_pressure: bool, now: float) -> None:
        """One attempt ended: ``rtt`` if the collector processed it (accepted or refused), None otherwise."""
        if back_pressure:
            self._back_pressure = True
        if rtt is not None:
            self._rtt_sum += rtt
            self._rtt_count += 1
        self._adjust(now)

    def _adjust(self, now: float) -> None:
        current = self._rtt_sum / self._rtt_count if self._rtt_count else None
        past = self._past
        if past.mean is None:
            if current is not None:
                past.update(current)
                self._next_update = now + current
                self._reset_period()
            return
        if now < self._next_update:
            return
        limits = self.limits
        threshold = math.sqrt(past.variance) * limits.rtt_deviation_scale
        if (
            self.limit < limits.maximum
            and self._reached_limit
            and not self._back_pressure
            and current is not None
            and current <= past.mean
        ):
            self.limit = min(limits.maximum, self.limit * 2 if self._slow_start else self.limit + 1)
        elif self._back_pressure or (current is not None and current > past.mean + threshold):
            self._slow_start = False
            self.limit = max(1, int(self.limit * limits.decrease_ratio))
        if current is not None:
            past.update(current)
        self._next_update = now + (past.mean or 0.0)
        self._reset_period()

    def _reset_period(self) -> None:
        self._rtt_sum = 0.0
        self._rtt_count = 0
        self._back_pressure = False
        self._reached_limit = False
