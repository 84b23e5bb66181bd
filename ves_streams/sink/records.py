"""Records of the ``ves-events`` topic, parsed for delivery; dead-letter records.

A record on ``ves-events`` carries one VES event as ``{"event": {...}}``,
keyed by the event's ``sourceName`` and usually with the headers
``ves-domain``, ``ves-event-id`` and ``ves-version``. :func:`parse_record`
turns it into a :class:`SinkRecord` (what batching and delivery need) or a
:class:`Malformed` (why it cannot be delivered). It never raises: a record
the sink cannot read is a dead letter, not a crash.

:func:`dead_letter` builds the record that goes to ``ves-events-dlq``. The
original value and key are kept byte for byte (so replaying a dead letter is
producing it back to ``ves-events``); why it was dead-lettered travels in
the project's one dead-letter header scheme (``ves-streams-*``,
:mod:`ves_streams.wire.deadletter`), next to the original headers.

Everything here is pure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ves_streams.sink.errors import scrub_url, truncate
from ves_streams.wire import deadletter

__all__ = [
    "DOMAIN_HEADER",
    "EVENT_ID_HEADER",
    "VERSION_HEADER",
    "DeadLetter",
    "Malformed",
    "SinkRecord",
    "dead_letter",
    "parse_record",
]

DOMAIN_HEADER = "ves-domain"
EVENT_ID_HEADER = "ves-event-id"
VERSION_HEADER = "ves-version"

#: Kafka headers as aiokafka returns them.
Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class SinkRecord:
    """One deliverable VES event and where it came from.

    ``event_json`` is the serialized event object (the value of ``"event"``),
    ready to be spliced into an ``eventList`` without parsing again.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Headers
    timestamp_ms: int | None
    domain: str
    event_id: str | None
    event_json: bytes


@dataclass(frozen=True, slots=True)
class Malformed:
    """A record that cannot be delivered, and why (one short sentence)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Headers
    reason: str
    #: the dead-letter metric's reason: ``malformed``, or ``invalid`` (fails the VES schema)
    kind: str = "malformed"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record for the dead-letter topic: original key and value, reasons in headers."""

    key: bytes | None
    value: bytes
    headers: Headers


def _header(headers: Headers, name: str) -> str | None:
    for k, v in headers:
        if k == name and v:
            try:
                return v.decode("utf-8")
            except UnicodeDecodeError:
                return None
    return None


def parse_record(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] = (),
    timestamp_ms: int | None = None,
    check: Callable[[Mapping[str, Any]], str | None] | None = None,
) -> SinkRecord | Malformed:
    """Read one ``ves-events`` record; never raises.

    The domain and event id come from the ``ves-domain``/``ves-event-id``
    headers when present, else from ``event.commonEventHeader``. The value is
    always parsed, because an event that is not JSON or has no ``event``
    object must be dead-lettered rather than sent to the collector.
    ``check`` (:func:`ves_streams.sink.validation.schema_check`) says why
    an event does not conform to the VES schema; such an event is a
    :class:`Malformed` of kind ``invalid``.
    """
    hdrs: Headers = tuple((str(k), bytes(v) if v is not None else b"") for k, v in headers)
    raw = value if value is not None else b""

    def malformed(reason: str) -> Malformed:
        return Malformed(topic, partition, offset, key, raw, hdrs, reason)

    if not raw:
        return malformed("empty value (tombstone or null record)")
    try:
        doc: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return malformed(f"value is not JSON: {truncate(str(exc), 200)}")
    if not isinstance(doc, dict) or not isinstance(doc.get("event"), dict):
        return malformed('value is not {"event": {...}}')
    event: dict[str, Any] = doc["event"]
    header = event.get("commonEventHeader")
    common: dict[str, Any] = header if isinstance(header, dict) else {}
    domain = _header(hdrs, DOMAIN_HEADER)
    if domain is None:
        json_domain = common.get("domain")
        domain = json_domain if isinstance(json_domain, str) else None
    if not domain:
        return malformed("event has no domain (no ves-domain header, no commonEventHeader.domain)")
    if check is not None:
        problem = check(event)
        if problem is not None:
            return Malformed(topic, partition, offset, key, raw, hdrs, problem, kind="invalid")
    event_id = _header(hdrs, EVENT_ID_HEADER)
    if event_id is None:
        json_id = common.get("eventId")
        event_id = json_id if isinstance(json_id, str) else None
    return SinkRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        key=key,
        value=raw,
        headers=hdrs,
        timestamp_ms=timestamp_ms,
        domain=domain,
        event_id=event_id,
        event_json=orjson.dumps(event),
    )


#: The stage named in the sink's dead letters.
STAGE = "delivery"


def dead_letter(
    record: SinkRecord | Malformed,
    *,
    reason: str,
    status: int | None = None,
    body: str | None = None,
    url: str | None = None,
) -> DeadLetter:
    """Build the dead-letter record for ``record`` (headers: :func:`ves_streams.wire.deadletter.headers`).

    ``ves-streams-status`` and ``ves-streams-body`` (truncated) when the
    collector answered; ``ves-streams-url`` (without credentials) when one was
    tried. Earlier dead-letter headers of either scheme (a dead letter
    replayed and refused again) are replaced.
    """
    out = deadletter.without_dead_letter_headers(record.headers)
    out += deadletter.headers(
        STAGE, truncate(reason, 500), deadletter.Source(record.topic, record.partition, record.offset),
        status=status, body=None if body is None else truncate(body), url=None if url is None else scrub_url(url),
    )  # fmt: skip
    return DeadLetter(key=record.key, value=record.value, headers=tuple(out))
