"""Fault injection and counters for the dev collector (``--control``; never product behaviour).

``POST /_control`` takes one JSON object; its keys combine, ``reset`` first:

==========================  ==========================================================
``{"reset": true}``         clear every injected fault (counters are kept)
``{"status": 503}``         answer event requests with this 4xx/5xx status ...
``"seconds": 60``           ... for this long (with ``status``), and/or
``"count": 3``              ... for this many requests (with ``status``);
                            neither: until reset
``"retry_after": 2``        ... with a ``Retry-After`` header (seconds; a string is sent
                            as it is: ``"-5"``, an HTTP date, junk)
``{"delay": 2.0}``          sleep this long before answering each event request
                            (non-blocking; ``0`` turns it off)
``{"reject_event_ids":      answer 400 to any request holding one of these eventIds
["id1"]}``                  (replaces the previous list; ``[]`` clears it) ...
``"reject_status": 500``    ... or this 4xx/5xx status instead (a poisoned event:
                            ONAP answers 500 when DMaaP refuses a message)
==========================  ==========================================================

Misbehaviours of every error answer (injected or not) until reset, the ways
a real collector or a proxy in front of it says no badly:

==========================  ==========================================================
``{"charset": "x-bogus"}``  declare this charset in the answer's Content-Type
``{"body_bytes": 10000000}``pad the answer's body to this many bytes
``{"echo_auth": true}``     echo the request's ``Authorization`` header and the
                            credentials it carries in the answer's body
==========================  ==========================================================

Refusals about the collector's own configuration, as ONAP's collector answers
them (after the body is read and found valid), until reset:

==============================  ======================================================
``{"onap_refusal":              400 SVC2000 "No domain defined for stream id" (a domain
"no_stream"}``                  missing from ``collector.dmaap.streamid``)
``"http_with_auth"``            400 ``Operation not permitted`` (text; plain HTTP while
                                auth is on)
``"api_version"``               400 ``API version vN is not supported``
``"refuse_domains": ["fault"]`` ... only for events of these domains (default: all)
==============================  ======================================================

Injected statuses apply after authentication and before the body is read,
as an overloaded collector or a proxy in front of it would answer.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ves_streams.dev.collector.errors import ControlError

__all__ = ["ONAP_REFUSALS", "StatusFault", "FaultInjector", "CollectorStats", "retry_after_header"]

#: The configuration refusals ``onap_refusal`` can make.
ONAP_REFUSALS = frozenset({"no_stream", "http_with_auth", "api_version"})

_CONTROL_KEYS = frozenset(
    {"reset", "status", "seconds", "count", "retry_after", "delay", "reject_event_ids", "reject_status",
     "charset", "body_bytes", "echo_auth", "onap_refusal", "refuse_domains"}
)


def _number(control: Mapping[str, Any], key: str, *, minimum: float, integer: bool = False) -> float | None:
    value = control.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ControlError(f"{key!r} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not math.isfinite(value) or value < minimum:
        raise ControlError(f"{key!r} must be >= {minimum}, got {value!r}")
    return value


def retry_after_header(seconds: float | str) -> str:
    """``Retry-After`` value: whole seconds as HTTP says; a fraction is kept (``0.5``) for fast tests; a string as is."""
    if isinstance(seconds, str):
        return seconds
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


@dataclass(slots=True)
class StatusFault:
    """An injected answer: ``status`` until ``until`` (monotonic) and/or for ``remaining`` more requests."""

    status: int
    retry_after: float | str | None = None
    until: float | None = None
    remaining: int | None = None

    def active(self, now: float) -> bool:
        if self.until is not None and now >= self.until:
            return False
        return self.remaining is None or self.remaining > 0

    def describe(self, now: float) -> dict[str, Any]:
        return {
            "status": self.status,
            "retry_after": self.retry_after,
            "seconds_left": None if self.until is None else max(0.0, round(self.until - now, 3)),
            "count_left": self.remaining,
        }


@dataclass(slots=True)
class FaultInjector:
    """The faults currently injected; mutated only by :meth:`apply` and consumed by :meth:`take_status`."""

    clock: Callable[[], float] = time.monotonic
    status_fault: StatusFault | None = None
    delay: float = 0.0
    reject_event_ids: frozenset[str] = frozenset()
    reject_status: int = 400
    #: misbehaviours of every error answer (see the module docstring)
    charset: str | None = None
    body_bytes: int = 0
    echo_auth: bool = False
    onap_refusal: str | None = None
    refuse_domains: frozenset[str] = frozenset()

    def apply(self, control: Any) -> dict[str, Any]:
        """Apply one ``/_control`` command; all-or-nothing: a bad command changes nothing and raises ControlError."""
        if not isinstance(control, dict) or not control:
            raise ControlError('send a JSON object such as {"status": 503, "seconds": 60} or {"reset": true}')
        unknown = sorted(set(control) - _CONTROL_KEYS)
        if unknown:
            raise ControlError(f"unknown control keys {unknown}; known: {sorted(_CONTROL_KEYS)}")
        reset = control.get("reset", False)
        if not isinstance(reset, bool):
            raise ControlError(f"'reset' must be true or false, got {reset!r}")
        status = control.get("status")
        if status is not None and (isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599):
            raise ControlError(f"'status' must be an HTTP error status 400..599, got {status!r}")
        seconds = _number(control, "seconds", minimum=0)
        count = _number(control, "count", minimum=1, integer=True)
        raw_retry_after = control.get("retry_after")
        retry_after: float | str | None = (
            raw_retry_after if isinstance(raw_retry_after, str) else _number(control, "retry_after", minimum=0)
        )
        reject_status = control.get("reject_status")
        if reject_status is not None and (
            isinstance(reject_status, bool) or not isinstance(reject_status, int) or not 400 <= reject_status <= 599
        ):
            raise ControlError(f"'reject_status' must be an HTTP error status 400..599, got {reject_status!r}")
        charset = control.get("charset")
        if charset is not None and (not isinstance(charset, str) or not charset.isascii() or not charset.isprintable()):
            raise ControlError(f"'charset' must be a printable ASCII string, got {charset!r}")
        body_bytes = _number(control, "body_bytes", minimum=0, integer=True)
        onap_refusal = control.get("onap_refusal")
        if onap_refusal is not None and onap_refusal not in ONAP_REFUSALS:
            raise ControlError(f"'onap_refusal' must be one of {sorted(ONAP_REFUSALS)}, got {onap_refusal!r}")
        refuse_domains = control.get("refuse_domains")
        if refuse_domains is not None and (
            not isinstance(refuse_domains, list) or not all(isinstance(d, str) for d in refuse_domains)
        ):
            raise ControlError(f"'refuse_domains' must be a list of strings, got {refuse_domains!r}")
        echo_auth = control.get("echo_auth")
        if echo_auth is not None and not isinstance(echo_auth, bool):
            raise ControlError(f"'echo_auth' must be true or false, got {echo_auth!r}")
        if status is None and (seconds is not None or count is not None or retry_after is not None):
            raise ControlError("'seconds', 'count' and 'retry_after' qualify a 'status'; add one")
        delay = _number(control, "delay", minimum=0)
        ids = control.get("reject_event_ids")
        if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)):
            raise ControlError(f"'reject_event_ids' must be a list of strings, got {ids!r}")

        if reset:
            self.status_fault, self.delay, self.reject_event_ids, self.reject_status = None, 0.0, frozenset(), 400
            self.charset, self.body_bytes, self.echo_auth = None, 0, False
            self.onap_refusal, self.refuse_domains = None, frozenset()
        if onap_refusal is not None:
            self.onap_refusal = onap_refusal
        if refuse_domains is not None:
            self.refuse_domains = frozenset(refuse_domains)
        if reject_status is not None:
            self.reject_status = reject_status
        if charset is not None:
            self.charset = charset or None
        if body_bytes is not None:
            self.body_bytes = int(body_bytes)
        if echo_auth is not None:
            self.echo_auth = echo_auth
        if status is not None:
            self.status_fault = StatusFault(
                status=status,
                retry_after=retry_after,
                until=None if seconds is None else self.clock() + seconds,
                remaining=None if count is None else int(count),
            )
        if delay is not None:
            self.delay = float(delay)
        if ids is not None:
            self.reject_event_ids = frozenset(ids)
        return self.snapshot()

    def take_status(self) -> StatusFault | None:
        """The injected status for the request at hand, if any; counts it against ``count``."""
        fault = self.status_fault
        if fault is None:
            return None
        if not fault.active(self.clock()):
            self.status_fault = None
            return None
        if fault.remaining is not None:
            fault.remaining -= 1
        return fault

    def configuration_refusal(self, domains: set[str]) -> str | None:
        """The ``onap_refusal`` for a request of these domains, if one is set and applies."""
        if self.onap_refusal is None or (self.refuse_domains and not domains & self.refuse_domains):
            return None
        return self.onap_refusal

    def rejected_ids(self, ids: list[str]) -> list[str]:
        return [i for i in ids if i in self.reject_event_ids]

    def snapshot(self) -> dict[str, Any]:
        now = self.clock()
        fault = self.status_fault if self.status_fault is not None and self.status_fault.active(now) else None
        return {
            "status": None if fault is None else fault.describe(now),
            "delay": self.delay,
            "reject_event_ids": sorted(self.reject_event_ids),
            "reject_status": self.reject_status,
            "charset": self.charset,
            "body_bytes": self.body_bytes,
            "echo_auth": self.echo_auth,
            "onap_refusal": self.onap_refusal,
            "refuse_domains": sorted(self.refuse_domains),
        }


@dataclass(slots=True)
class CollectorStats:
    """Counters for ``GET /_stats``: event requests by answered status, events by domain."""

    requests_by_status: Counter[int] = field(default_factory=Counter)
    events_accepted: int = 0
    events_refused: int = 0
    accepted_by_domain: Counter[str] = field(default_factory=Counter)
    #: the client connections event requests came on (peer address and port): shows keep-alive
    connections: set[str] = field(default_factory=set)

    def answered(self, status: int) -> None:
        self.requests_by_status[status] += 1

    def accepted(self, events: list[dict[str, Any]]) -> None:
        self.events_accepted += len(events)
        for event in events:
            self.accepted_by_domain[str(event.get("commonEventHeader", {}).get("domain", "?"))] += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": {str(k): v for k, v in sorted(self.requests_by_status.items())},
            "requests_total": sum(self.requests_by_status.values()),
            "events_accepted": self.events_accepted,
            "events_refused": self.events_refused,
            "accepted_by_domain": dict(sorted(self.accepted_by_domain.items())),
            "connections": len(self.connections),
        }
