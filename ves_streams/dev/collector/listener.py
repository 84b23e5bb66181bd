"""The VES event listener rules, without HTTP: paths, envelopes, batches, error bodies.

Kept apart from the aiohttp server so each rule reads in one place and can
be called directly. Every refusal is a :class:`RequestRefused` carrying the
HTTP status and the VES ``requestError`` body to send, as the ONAP collector
does:

* ``400 SVC0002 Bad Parameter`` for JSON that does not parse, a body that does
  not match the schema of the path's version, or the wrong envelope for the
  path (``event`` on ``/eventListener/vN``, ``eventList`` on ``.../eventBatch``);
  a batch is refused whole when any event in it is invalid;
* ``400 SVC0001`` for a batch that mixes domains (one domain per batch).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ves_streams.dev.collector import schema as ves_schema
from ves_streams.dev.collector.errors import CollectorError

__all__ = [
    "ListenerPath",
    "RequestRefused",
    "service_exception",
    "policy_exception",
    "parse_version_segment",
    "listener_path",
    "parse_body",
    "accept_request",
    "event_ids",
    "event_summary",
]

#: Longest error text put into a response; the full list goes to the rejected-requests file.
MAX_ERROR_TEXT = 2000


def service_exception(message_id: str, text: str, variables: Sequence[str] = ()) -> dict[str, Any]:
    """A VES ``requestError`` body of the ``serviceException`` kind (``%1`` in ``text`` is ``variables[0]``)."""
    body: dict[str, Any] = {"messageId": message_id, "text": text}
    if variables:
        body["variables"] = list(variables)
    return {"requestError": {"serviceException": body}}


def policy_exception(message_id: str, text: str, variables: Sequence[str] = ()) -> dict[str, Any]:
    """A VES ``requestError`` body of the ``policyException`` kind (used for 401)."""
    body: dict[str, Any] = {"messageId": message_id, "text": text}
    if variables:
        body["variables"] = list(variables)
    return {"requestError": {"policyException": body}}


class RequestRefused(CollectorError):
    """A request the collector answers with an error; carries what to send and what to record."""

    def __init__(self, status: int, body: dict[str, Any], reason: str, headers: Mapping[str, str] | None = None):
        super().__init__(reason)
        self.status = status
        self.body = body
        self.reason = reason
        self.headers: dict[str, str] = dict(headers or {})


def _bad_parameter(reason: str) -> RequestRefused:
    return RequestRefused(400, service_exception("SVC0002", "Bad Parameter: %1", [reason[:MAX_ERROR_TEXT]]), reason)


@dataclass(frozen=True, slots=True)
class ListenerPath:
    """What an event-listener URL asks for: the VES major version, batch or not, and the topic if any."""

    major: str
    batch: bool
    topic: str | None = None


_VERSION_SEGMENT = re.compile(r"v(\d+)(?:\.\d+)*")


def parse_version_segment(segment: str) -> str:
    """``"v7"`` (or ``"v7.2"``) -> ``"7"``; refuse versions without a schema with 400, as ONAP does."""
    match = _VERSION_SEGMENT.fullmatch(segment)
    if match is None:
        raise _bad_parameter(f"API version {segment!r} is not supported: use v5 or v7")
    try:
        return ves_schema.major_version(match.group(1))
    except ves_schema.UnsupportedVesVersionError:
        raise _bad_parameter(f"API version {segment!r} is not supported: use v5 or v7") from None


def listener_path(version_segment: str, rest: str | None) -> ListenerPath:
    """Interpret ``/eventListener/{version}[/{rest}]``: ``rest`` is ``eventBatch`` or a topic name."""
    major = parse_version_segment(version_segment)
    if rest == "eventBatch":
        return ListenerPath(major=major, batch=True)
    return ListenerPath(major=major, batch=False, topic=rest or None)


def parse_body(raw: bytes) -> Any:
    """The request body as JSON; 400 ``Incorrect JSON payload`` when it is not."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestRefused(
            400,
            service_exception("SVC0002", "Bad Parameter: %1", [f"Incorrect JSON payload: {exc}"]),
            f"Incorrect JSON payload: {exc}",
        ) from None


def accept_request(path: ListenerPath, body: Any) -> list[dict[str, Any]]:
    """The events of a request the collector accepts, in order; raise :class:`RequestRefused` otherwise.

    Order of checks follows ONAP: envelope for the path, schema of the
    path's version (all errors, every event; one bad event refuses the whole
    batch), then one domain per batch.
    """
    expected = "eventList" if path.batch else "event"
    if not isinstance(body, dict) or expected not in body:
        where = "/eventBatch" if path.batch else "a single-event path"
        found = ", ".join(repr(k) for k in body) if isinstance(body, dict) else type(body).__name__
        raise _bad_parameter(f"{where} takes a body with {expected!r}; found {found or 'an empty object'}")
    errors = ves_schema.validate_request(body, path.major)
    if errors:
        raise _bad_parameter("; ".join(errors))
    if not path.batch:
        return [body["event"]]
    events: list[dict[str, Any]] = body["eventList"]
    if not events:
        raise _bad_parameter("eventList is empty")
    domains = sorted({e["commonEventHeader"]["domain"] for e in events})
    if len(domains) > 1:
        listed = ", ".join(domains)
        raise RequestRefused(
            400,
            service_exception("SVC0001", "Mixed domains in eventList (%1): send one domain per batch", [listed]),
            f"mixed domains in eventList: {listed}",
        )
    return events


def event_ids(body: Any) -> list[str]:
    """The ``eventId`` of every event in a parsed body, whatever its shape; for fault injection and records."""
    if not isinstance(body, dict):
        return []
    candidates = body.get("eventList") if "eventList" in body else [body.get("event")]
    ids = []
    for event in candidates if isinstance(candidates, list) else []:
        header = event.get("commonEventHeader") if isinstance(event, dict) else None
        if isinstance(header, dict) and isinstance(header.get("eventId"), str):
            ids.append(header["eventId"])
    return ids


def event_summary(event: Mapping[str, Any]) -> str:
    """One console line for an accepted event: domain, sourceName, eventName, eventId."""
    header = event.get("commonEventHeader", {})
    return (
        f"{header.get('domain', '?'):<12} source={header.get('sourceName', '?')} "
        f"name={header.get('eventName', '?')} id={header.get('eventId', '?')}"
    )
