"""A loaded topology and the three things it renders: measurements, faults, heartbeats.

This is the rule engine's front door. The streaming layer, the CLI and the
tests all do the same thing::

    topology = load_topology("topologies/host.yaml")
    ctx = RenderContext(hostname="ves-streams-0", interval=10.0, now=time.time(),
                        ids=DeterministicIds(interval_start=start))
    result = topology.render_measurements(latest_samples_of_one_host, ctx)
    result.events  # list[RenderedEvent], each body a whole {"event": {...}}
    result.errors  # list[RenderError], one per skipped event

Rendering is scoped to one host: the caller partitions by host and passes
that host's latest samples, so every selector in the file only sees that
host's samples, whether or not it says ``host: "{vl.host}"``. (Barometer
rendered all hosts of its cache at once, so a Barometer selector without
``host`` could mix hosts; per host it cannot, which is what those files
meant.) The cost of a render is linear in the host's number of samples and
independent of how many other hosts exist.

Rendering never raises for bad data: an event that cannot be rendered is
skipped, logged at WARNING, and returned as a :class:`RenderError`.
"""

from __future__ import annotations

import datetime
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ves_streams.collectd import Notification, Sample

from .compiler import Plan, compile_document
from .errors import RenderError, RenderFailure, RuleError
from .header import TopologyHeader
from .ids import CounterIds, IdPolicy
from .loader import Document, parse_document, read_document
from .plan import AlarmFields, Config, HeartbeatInfo, Node, Scope, System
from .selectors import SampleIndex

__all__ = [
    "Topology",
    "AlarmPhase",
    "RenderContext",
    "RenderResult",
    "RenderedEvent",
    "load_topology",
    "loads_topology",
    "fresh_samples",
]

log = logging.getLogger("ves_streams.rules")
log.addHandler(logging.NullHandler())  # a library logs; the application decides where to


@dataclass(frozen=True, slots=True)
class AlarmPhase:
    """Where a notification stands in its alarm's life, as the fault stage's alarm table decided.

    ``onset`` is the alarm's first notification's time, ``last`` this one's
    (epoch seconds), ``sequence`` this event's number within the alarm (0 at
    the onset). ``tracked`` is False for a clear of an alarm the table never
    saw raised: its id derives from the clear itself, as without a lifecycle.
    """

    onset: float
    last: float
    sequence: int
    tracked: bool = True


@dataclass(frozen=True, slots=True)
class RenderContext:
    """What a render needs besides the data.

    ``hostname`` is ``{system.hostname}`` (Barometer always rendered
    ``localhost``); ``interval`` is ``{config.interval}`` in seconds; ``now``
    is ``{system.time}`` and the day of ``{system.date}`` (local time, as
    Barometer); ``ids`` produces ``{system.id}``. ``alarm``, when the fault
    stage keeps alarms, is the notification's place in its alarm: then
    ``{system.id}`` and ``{alarm.id}`` of a fault render the alarm's id.
    """

    hostname: str = "localhost"
    interval: float = 10.0
    now: float = field(default_factory=time.time)
    ids: IdPolicy = field(default_factory=CounterIds)
    alarm: AlarmPhase | None = None


@dataclass(frozen=True, slots=True)
class RenderedEvent:
    """One rendered event: ``body`` is the whole ``{"event": {...}}`` document.

    ``domain``, ``source_name`` and ``event_id`` are copied from the body's
    ``commonEventHeader`` (empty strings when absent) for routing and keys.
    """

    rule: str
    body: dict[str, Any]
    domain: str
    source_name: str
    event_id: str


@dataclass(frozen=True, slots=True)
class RenderResult:
    """Events in rule order then selection order, and the events that were skipped."""

    events: list[RenderedEvent] = field(default_factory=list)
    errors: list[RenderError] = field(default_factory=list)


class Topology:
    """A compiled topology file. Immutable and safe to share between threads."""

    __slots__ = ("header", "_plan")

    def __init__(self, plan: Plan) -> None:
        self.header: TopologyHeader = plan.header
        self._plan = plan

    def __repr__(self) -> str:
        p = self._plan
        return (
            f"Topology({self.header.name!r}, ves={self.header.ves_version}, measurements={len(p.measurements)},"
            f" events={len(p.events)}, heartbeat={bool(p.heartbeats)})"
        )

    @property
    def has_measurements(self) -> bool:
        return bool(self._plan.measurements)

    @property
    def has_events(self) -> bool:
        return bool(self._plan.events)

    @property
    def has_heartbeat(self) -> bool:
        return bool(self._plan.heartbeats)

    @property
    def rule_names(self) -> tuple[str, ...]:
        p = self._plan
        return tuple(r.name for r in (*p.measurements, *p.events, *p.heartbeats))

    def heartbeat_interval(self, ctx_interval: float) -> int:
        """Whole seconds between heartbeats: the header's, else the measurement interval."""
        seconds = self.header.heartbeat_interval or self.header.interval or ctx_interval
        return max(1, int(round(seconds)))

    # ------------------------------------------------------------------ render

    def render_measurements(self, samples: Sequence[Sample], ctx: RenderContext) -> RenderResult:
        """Render every ``!Measurements`` rule over the latest samples of one host.

        ``samples`` should hold one sample per series (already aged, see
        :func:`fresh_samples`); if a series repeats, the last one wins. Events
        come out rule by rule, in the order the samples were given.
        """
        result = RenderResult()
        if not self._plan.measurements or not samples:
            return result
        index = SampleIndex(samples)
        host = index.host
        config = Config(float(ctx.interval))
        date = _date(ctx.now)
        for rule in self._plan.measurements:
            for sample, identity in rule.items(index):
                ids = ctx.ids.for_measurement(rule.name, host, identity)
                system = System(ctx.hostname, ctx.now, date, ids)
                scope = Scope(sample, None, system, config, None, index)
                self._render(rule.name, host, rule.item, scope, result)
        return result

    def render_notification(self, notification: Notification, ctx: RenderContext) -> RenderResult:
        """Render every ``!Events`` rule whose CONDITION matches (each at most once, in file order)."""
        result = RenderResult()
        config = Config(float(ctx.interval))
        date = _date(ctx.now)
        phase = ctx.alarm
        for rule in self._plan.events:
            if not rule.condition.matches(notification):
                continue
            if phase is not None and phase.tracked:
                ids = ctx.ids.for_alarm(rule.name, notification, phase.onset)
            else:
                ids = ctx.ids.for_notification(rule.name, notification)
            if phase is None:
                alarm = AlarmFields(ids, notification.time, notification.time, 0)
            else:
                alarm = AlarmFields(ids, phase.onset, phase.last, phase.sequence)
            system = System(ctx.hostname, ctx.now, date, ids)
            scope = Scope(None, notification, system, config, None, None, alarm)
            self._render(rule.name, notification.host, rule.item, scope, result)
        return result

    def render_heartbeat(self, host: str, ctx: RenderContext) -> RenderResult:
        """The heartbeat event of ``host`` (no events unless the topology has a ``!Heartbeat`` rule)."""
        result = RenderResult()
        if not self._plan.heartbeats:
            return result
        config = Config(float(ctx.interval))
        info = HeartbeatInfo(host, self.heartbeat_interval(ctx.interval))
        for rule in self._plan.heartbeats:
            ids = ctx.ids.for_heartbeat(rule.name, host)
            scope = Scope(None, None, System(ctx.hostname, ctx.now, _date(ctx.now), ids), config, info, None)
            self._render(rule.name, host, rule.item, scope, result)
        return result

    @staticmethod
    def _render(rule: str, host: str, item: Node, scope: Scope, result: RenderResult) -> None:
        try:
            body = item.render(scope)
        except RenderFailure as exc:
            reason = exc.reason
        except Exception as exc:  # a bug must not stop the stream; the event is dead-lettered
            log.exception("rule %r: unexpected error rendering an event for host %r", rule, host)
            reason = f"unexpected error: {type(exc).__name__}: {exc}"
        else:
            result.events.append(_rendered(rule, body))
            return
        log.warning("rule %r: skipped an event for host %r: %s", rule, host, reason)
        result.errors.append(RenderError(rule, host, reason))


def _rendered(rule: str, body: Any) -> RenderedEvent:
    header: Any = {}
    if isinstance(body, dict):
        event = body.get("event")
        if isinstance(event, dict):
            header = event.get("commonEventHeader")
            if not isinstance(header, dict):
                header = {}
    return RenderedEvent(
        rule=rule,
        body=body,
        domain=_text(header.get("domain")),
        source_name=_text(header.get("sourceName")),
        event_id=_text(header.get("eventId")),
    )


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _date(now: float) -> str:
    return datetime.date.fromtimestamp(now).isoformat()


# ---------------------------------------------------------------------- helpers


def fresh_samples(samples: Iterable[Sample], now: float, interval: float | None = None) -> list[Sample]:
    """Barometer's aging: drop samples not updated within 2 x interval.

    Barometer removes a cached value once ``now - last_update >= 2 *
    interval``; here the sample's own ``time`` is its last update and the
    interval is ``interval`` if given (Barometer used its send interval) or
    else the sample's own collectd interval. Order is preserved.
    """
    if interval is not None:
        limit = 2.0 * interval
        return [s for s in samples if now - s.time < limit]
    return [s for s in samples if now - s.time < 2.0 * s.interval]


def load_topology(path: str | os.PathLike[str]) -> Topology:
    """Load and compile a topology file; raise :class:`RuleError` on any problem."""
    doc = read_document(path)
    return _compile(doc, _stem(os.fspath(path)))


def loads_topology(text: str, source: str = "<string>") -> Topology:
    """Like :func:`load_topology`, from text (``source`` names it in messages)."""
    return _compile(parse_document(text, source), _stem(source))


def _compile(doc: Document, name: str) -> Topology:
    try:
        return Topology(compile_document(doc, name))
    except RecursionError:
        raise RuleError(doc.path, None, None, None, "the rules nest too deeply (a recursive merge or alias?)",
                        "an anchor cannot be merged into itself") from None


def _stem(path: str) -> str:
    base = os.path.basename(path)
    for suffix in (".yaml", ".yml"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base or "topology"
