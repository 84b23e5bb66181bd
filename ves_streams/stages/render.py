"""The rule engine as the agents see it: one call per host window, notification or heartbeat.

:class:`TopologyRenderer` builds the ``RenderContext`` for each call so that
every event is rendered with ``DeterministicIds`` seeded by the window (or,
for notifications, by the notification itself): rendering the same thing
twice gives the same eventIds. The agents only depend on the small
:class:`Renderer` protocol, so their logic is testable with a stub.

A rule engine that raises (a bug, not a rule error) is turned into a
``RenderError`` here: one bad host or notification is dead-lettered and the
stream goes on.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ves_streams.collectd import Notification, Sample
from ves_streams.identity import Interval

if TYPE_CHECKING:
    from ves_streams.rules import AlarmPhase

__all__ = ["Renderer", "Rendered", "RenderFailure", "TopologyRenderer"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RenderFailure:
    """Shape of the rule engine's ``RenderError`` (rule, host, reason)."""

    rule: str
    host: str
    reason: str


@dataclass(slots=True)
class Rendered:
    """Events (``RenderedEvent``-like: body, domain, source_name, event_id) and errors of one call."""

    events: list[Any] = field(default_factory=list)
    errors: list[Any] = field(default_factory=list)


class Renderer(Protocol):
    ves_version: str
    has_measurements: bool
    has_heartbeat: bool
    heartbeat_interval: float | None

    def measurements(self, host: str, samples: Sequence[Sample], window: Interval) -> Rendered: ...

    def heartbeat(self, host: str, boundary: float, window: Interval) -> Rendered: ...

    def notification(self, notification: Notification, alarm: AlarmPhase | None = None) -> Rendered: ...


class TopologyRenderer:
    """:class:`Renderer` over a compiled topology (``ves_streams.rules.load_topology``)."""

    def __init__(
        self,
        topology: Any,
        *,
        hostname: str,
        interval: float,
        ves_version: str,
        heartbeat_interval: float | None = None,
    ) -> None:
        from ves_streams import rules

        self._rules = rules
        if heartbeat_interval is not None and topology.header.heartbeat_interval != heartbeat_interval:
            # An operator's override: render ``{hb.interval}`` with it too, so the events
            # state the interval they are really sent at. (The topology reads its header.)
            topology = copy.copy(topology)
            topology.header = dataclasses.replace(topology.header, heartbeat_interval=heartbeat_interval)
        self.topology = topology
        self.hostname = hostname
        self.interval = interval
        self.ves_version = ves_version
        self.has_measurements = bool(topology.has_measurements)
        self.has_heartbeat = bool(topology.has_heartbeat)
        self.has_events = bool(topology.has_events)
        # The topology's (header heartbeat_interval, else its interval, else ours):
        # the value its heartbeat events state, so also the one they are sent at.
        # Whole seconds, as the rule engine states it.
        self.heartbeat_interval = float(topology.heartbeat_interval(interval)) if self.has_heartbeat else None

    def _context(self, now: float, interval_start: float, alarm: AlarmPhase | None = None) -> Any:
        rules = self._rules
        return rules.RenderContext(
            hostname=self.hostname,
            interval=self.interval,
            now=now,
            ids=rules.DeterministicIds(interval_start=interval_start),
            alarm=alarm,
        )

    def fresh(self, samples: Sequence[Sample], now: float) -> list[Sample]:
        return list(self._rules.fresh_samples(samples, now))

    def measurements(self, host: str, samples: Sequence[Sample], window: Interval) -> Rendered:
        if not self.has_measurements:
            return Rendered()
        fresh = self.fresh(samples, window.end)
        if not fresh:
            return Rendered()
        return self._call(host, "measurements", self.topology.render_measurements, fresh, self._context(window.end, window.start))

    def heartbeat(self, host: str, boundary: float, window: Interval) -> Rendered:
        if not self.has_heartbeat:
            return Rendered()
        return self._call(host, "heartbeat", self.topology.render_heartbeat, host, self._context(boundary, boundary))

    def notification(self, notification: Notification, alarm: AlarmPhase | None = None) -> Rendered:
        """The fault events of ``notification``; ``alarm``: its place in its alarm (None: an alarm of its own)."""
        if not self.has_events:
            return Rendered()
        ctx = self._context(notification.time, notification.time, alarm)
        return self._call(notification.host, "fault", self.topology.render_notification, notification, ctx)

    @staticmethod
    def _call(host: str, what: str, fn: Any, arg: Any, ctx: Any) -> Rendered:
        try:
            result = fn(arg, ctx)
        except Exception as exc:  # a rule engine bug: dead-letter this one, keep the stream going
            log.exception("rule engine raised while rendering %s for host %r", what, host)
            return Rendered(errors=[RenderFailure(rule="*", host=host, reason=f"rule engine raised {type(exc).__name__}: {exc}")])
        return Rendered(events=list(result.events), errors=list(result.errors))
