"""When to retry a delivery, how long to wait, and which collector URL to use.

Three pure pieces, each taking time and randomness as arguments so tests pin
them exactly:

* :func:`classify_response`: an HTTP status becomes success (None), a
  :class:`TransientDeliveryError` (retry: 5xx, 408, 413, 429, and the *endpoint*
  errors 3xx/401/403/404/405/407, see below) or a
  :class:`PermanentDeliveryError` (dead-letter: every other 4xx).
* :class:`RetryPolicy`: exponential backoff with full jitter
  (``uniform(0, min(max_backoff, initial * 2**(attempt-1)))``), a server's
  ``Retry-After`` honoured only to wait *longer* (capped at
  ``max_retry_after``: a ``Retry-After: 0``, a negative one or a date in
  the past gives the normal backoff, never a hot loop; a date years ahead
  parks nothing for more than the cap), and an optional attempt limit (0 =
  retry forever, the default: Kafka is the buffer).
* :class:`EndpointSchedule`: the primary collector URL while it works; after
  it fails, the backup (if configured) at once, and the primary again every
  ``failback_after`` seconds. When both fail they alternate, oldest failure
  first.

Why endpoint errors retry instead of dead-lettering: a 401/403 (credentials),
404/405 (wrong path or VES version) or a redirect says the *sink is
misconfigured*, not that an event is bad. Dead-lettering would empty the
topic into the DLQ during a password rotation; retrying stalls delivery
visibly (consumer lag, ``ves_streams_sink_retries_total{reason="endpoint"}``,
an ERROR log naming the status) and resumes by itself once fixed.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Callable
from dataclasses import dataclass

from ves_streams.sink.errors import (
    PermanentDeliveryError,
    SinkConfigError,
    TransientDeliveryError,
)

__all__ = [
    "ENDPOINT_ERROR_STATUSES",
    "EndpointSchedule",
    "RetryPolicy",
    "classify_response",
    "is_content_refusal",
    "is_endpoint_error",
    "parse_retry_after",
]

#: 4xx statuses that mean "wrong endpoint or credentials", retried like 5xx.
ENDPOINT_ERROR_STATUSES = frozenset({401, 403, 404, 405, 407})
#: 4xx statuses that mean "not now", retried.
_TRANSIENT_4XX = frozenset({408, 429})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff, attempt limit and failback timing for transient delivery failures."""

    initial_backoff: float = 0.5
    max_backoff: float = 30.0
    #: Attempts per request before its events are dead-lettered; 0 = forever.
    max_attempts: int = 0
    #: Upper bound on a server's Retry-After, so a bogus header cannot park the sink.
    max_retry_after: float = 300.0
    #: After the primary URL fails, how long the backup is used before the primary is tried again.
    failback_after: float = 30.0

    def __post_init__(self) -> None:
        if not (self.initial_backoff > 0 and math.isfinite(self.initial_backoff)):
            raise SinkConfigError(f"sink retry initial backoff must be > 0 seconds, got {self.initial_backoff}")
        if not (self.max_backoff >= self.initial_backoff and math.isfinite(self.max_backoff)):
            raise SinkConfigError(
                f"sink retry max backoff must be >= initial backoff ({self.initial_backoff}), got {self.max_backoff}"
            )
        if self.max_attempts < 0:
            raise SinkConfigError(f"sink retry max attempts must be >= 0 (0 = forever), got {self.max_attempts}")
        if self.max_retry_after < 0 or self.failback_after < 0:
            raise SinkConfigError("sink retry max_retry_after and failback_after must be >= 0")

    def backoff_ceiling(self, attempt: int) -> float:
        """The upper bound of the jittered wait after failed attempt number ``attempt`` (1-based)."""
        exponent = min(max(attempt, 1) - 1, 64)
        return min(self.max_backoff, self.initial_backoff * (2.0**exponent))

    def backoff(self, attempt: int, random: Callable[[], float]) -> float:
        """Full-jitter wait after failed attempt ``attempt``; ``random()`` returns [0, 1)."""
        return self.backoff_ceiling(attempt) * random()

    def delay(self, attempt: int, error: TransientDeliveryError, random: Callable[[], float]) -> float:
        """How long to wait before the next attempt: the backoff, or the server's Retry-After if longer.

        A Retry-After is the collector's wish, and an answer is untrusted
        input: it may lengthen the wait (up to ``max_retry_after``), never
        shorten it below the backoff.
        """
        backoff = self.backoff(attempt, random)
        hint = self.retry_after(error)
        return backoff if hint is None else max(backoff, hint)

    def retry_after(self, error: TransientDeliveryError) -> float | None:
        """The server's Retry-After in seconds, within [0, ``max_retry_after``]; None without one."""
        hint = error.retry_after
        if hint is None or not math.isfinite(hint):
            return None
        return min(max(hint, 0.0), self.max_retry_after)

    def exhausted(self, attempts: int) -> bool:
        """True when ``attempts`` failed attempts use up the limit."""
        return self.max_attempts > 0 and attempts >= self.max_attempts


def parse_retry_after(value: str | None, now_epoch: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or HTTP-date).

    Returns None for a missing or unreadable header; never negative.
    ``now_epoch`` is the wall clock (``time.time()``), needed for dates.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
            if when.tzinfo is None:
                return None
            return max(0.0, when.timestamp() - now_epoch)
        except (TypeError, ValueError, IndexError, OverflowError, OSError):
            return None
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def is_content_refusal(status: int | None) -> bool:
    """True for answers that may be about *this* request's content rather than the collector's state.

    413 (too large) and the 5xx that are not "not now": ONAP's collector
    answers 500 when DMaaP refuses a message (one too large among them),
    while 502/503/504 say a gateway or the collector itself is unavailable.
    Such an answer is retried like any 5xx; it singles a request out only
    while the collector accepts other requests (:mod:`ves_streams.sink.delivery`).
    """
    return status is not None and (status == 413 or (status >= 500 and status not in _NOT_NOW_5XX))


#: 5xx statuses that say the collector (or a gateway) cannot take anything now, whatever the content.
_NOT_NOW_5XX = frozenset({502, 503, 504})


def is_endpoint_error(status: int | None) -> bool:
    """True for statuses that mean the sink's URL or credentials are wrong."""
    return status is not None and (300 <= status < 400 or status in ENDPOINT_ERROR_STATUSES)


def classify_response(
    status: int,
    *,
    body: str,
    url: str,
    retry_after: str | None,
    now_epoch: float,
) -> TransientDeliveryError | PermanentDeliveryError | None:
    """None for 2xx; otherwise the error that says whether to retry or dead-letter."""
    if 200 <= status < 300:
        return None
    excerpt = _printable(body)[:200]
    if status >= 500 or status in _TRANSIENT_4XX or status == 413:
        return TransientDeliveryError(
            f"collector answered {status}: {excerpt}",
            url=url,
            status=status,
            retry_after=parse_retry_after(retry_after, now_epoch),
            body=body,
        )
    if is_endpoint_error(status) or status < 200:
        return TransientDeliveryError(
            f"collector answered {status}, which means the sink's collector URL, VES version or "
            f"credentials are wrong; retrying until fixed: {excerpt}",
            url=url,
            status=status,
        )
    return PermanentDeliveryError(f"collector refused the events with {status}: {excerpt}", status=status, body=body, url=url)


class EndpointSchedule:
    """Chooses the collector URL for the next attempt; see the module docstring.

    Time is any monotonic clock in seconds, passed in.
    """

    def __init__(self, primary: str, backup: str | None, failback_after: float) -> None:
        self.primary = primary
        self.backup = backup if backup and backup != primary else None
        self.failback_after = failback_after
        self._down_until: dict[str, float] = {}

    def is_up(self, url: str, now: float) -> bool:
        """True when ``url`` has not failed recently."""
        return self._down_until.get(url, -math.inf) <= now

    def choose(self, now: float) -> str:
        """The URL to use now: the first one up (primary first), else the one that failed longest ago."""
        if self.backup is None:
            return self.primary
        for url in (self.primary, self.backup):
            if self.is_up(url, now):
                return url
        if self._down_until[self.backup] < self._down_until[self.primary]:
            return self.backup
        return self.primary

    def failed(self, url: str, now: float, retry_after: float | None = None) -> None:
        """``url`` failed transiently; avoid it for ``failback_after`` (or the server's Retry-After if longer)."""
        self._down_until[url] = now + max(self.failback_after, retry_after or 0.0)

    def succeeded(self, url: str) -> None:
        """``url`` accepted a request; prefer it again (the primary) or keep using it (the backup)."""
        self._down_until.pop(url, None)


def _printable(text: str) -> str:
    """``text`` on one line: control characters (newlines, escapes a terminal would obey) become spaces."""
    return "".join(ch if ch.isprintable() else " " for ch in text.strip())
