"""Rendered events into the records that go out: events for ``ves-events``, dead letters for the rest.

Shared by the fault stage and the measurements agent, so that both make the
same records of the same events and dead-letter an event the producer
would refuse (too large, not JSON) instead of failing the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ves_streams.identity import OutputRecord, event_record
from ves_streams.stages.render import Rendered
from ves_streams.wire import deadletter

__all__ = ["MAX_EVENT_BYTES", "EventOutputs", "StageMetrics", "event_outputs"]

#: An event larger than this is dead-lettered (the producer refuses records over 1 MB).
MAX_EVENT_BYTES = 900 * 1024


class _Counter(Protocol):
    def labels(self, *values: str) -> Any: ...


class StageMetrics(Protocol):
    """The counters a stage bumps (:class:`~ves_streams.metrics.Metrics` has them)."""

    events_out: _Counter
    render_errors: _Counter
    dead_letters: _Counter
    messages_in: _Counter


@dataclass(slots=True)
class EventOutputs:
    """What a render call becomes: events for the events topic and dead letters, each in order."""

    events: list[OutputRecord] = field(default_factory=list)
    dead_letters: list[OutputRecord] = field(default_factory=list)


def event_outputs(
    rendered: Rendered,
    *,
    ves_version: str,
    metrics: StageMetrics,
    stage: str,
    source: deadletter.Source,
    interval_start: float | None = None,
    original: bytes | None = None,
) -> EventOutputs:
    """The records ``rendered`` becomes; counts them in ``metrics``. No I/O."""
    out = EventOutputs()
    for event in rendered.events:
        record, problem = _event_record(event, ves_version, interval_start)
        if record is None:
            metrics.render_errors.labels(stage).inc()
            metrics.dead_letters.labels(stage).inc()
            out.dead_letters.append(deadletter.render_error(
                str(getattr(event, "rule", "?")), str(getattr(event, "source_name", "")), str(problem), stage,
                source, interval_start=interval_start, original=original,
            ))  # fmt: skip
            continue
        out.events.append(record)
        metrics.events_out.labels(event.domain).inc()
    for error in rendered.errors:
        # the rule engine has logged it; here it is counted and dead-lettered
        metrics.render_errors.labels(stage).inc()
        metrics.dead_letters.labels(stage).inc()
        out.dead_letters.append(deadletter.render_error(
            str(error.rule), str(error.host), str(error.reason), stage, source,
            interval_start=interval_start, original=original,
        ))  # fmt: skip
    return out


def _event_record(event: Any, ves_version: str, interval_start: float | None) -> tuple[OutputRecord | None, str | None]:
    """The events-topic record of ``event``, or why it cannot be produced."""
    try:
        record = event_record(event, ves_version, interval_start)
    except (TypeError, ValueError) as exc:  # a body orjson cannot serialise
        return None, f"event body is not JSON: {exc}"
    if len(record.value) > MAX_EVENT_BYTES:
        return None, f"event of {len(record.value)} bytes exceeds the {MAX_EVENT_BYTES}-byte limit"
    return record, None
