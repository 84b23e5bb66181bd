"""Dead-letter records: what could not be processed, with why and where it came from.

One header scheme for both dead-letter topics: ``ves-streams-dlq`` (the
workers: malformed input, render errors) and ``ves-events-dlq`` (the sink:
events the collector refused for good). A dead-letter record is produced
instead of raising, so one bad message never stops a partition, and never
vanishes either:

* **malformed input** keeps the original key and bytes (cut at
  :data:`~ves_streams.DLQ_MAX_VALUE_BYTES`, the original size in a
  header) so it can be inspected and replayed;
* **render errors** carry a small JSON report (rule, host, reason, window)
  since there is no single input message to keep.

Headers (UTF-8): ``ves-streams-reason``, ``ves-streams-stage``,
``ves-streams-source-topic``, ``ves-streams-source-partition``,
``ves-streams-source-offset``; for render errors ``ves-streams-rule`` and
``ves-streams-host``; for refused deliveries ``ves-streams-status``,
``ves-streams-body`` and ``ves-streams-url`` (without credentials);
``ves-streams-original-size`` when the value was cut and
``ves-streams-value-dropped`` when it had to be left out.

Before this scheme the sink wrote ``ves-dlq-*`` headers (``ves-dlq-reason``,
``ves-dlq-source`` as ``topic/partition/offset``, ...): a dead letter
replayed and refused again loses its earlier headers of either scheme
(:func:`without_dead_letter_headers`), so it never carries two reasons.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from ves_streams.identity import OutputRecord

__all__ = [
    "DLQ_MAX_VALUE_BYTES",
    "HEADER_PREFIX",
    "LEGACY_HEADER_PREFIX",
    "Source",
    "headers",
    "malformed_input",
    "render_error",
    "without_dead_letter_headers",
    "without_value",
]

HEADER_PREFIX = "ves-streams-"
#: The sink's scheme before there was one: still recognised (and replaced) on a replayed dead letter.
LEGACY_HEADER_PREFIX = "ves-dlq-"
HEADER_DLQ_REASON = "ves-streams-reason"
HEADER_DLQ_STAGE = "ves-streams-stage"
HEADER_DLQ_SOURCE_TOPIC = "ves-streams-source-topic"
HEADER_DLQ_SOURCE_PARTITION = "ves-streams-source-partition"
HEADER_DLQ_SOURCE_OFFSET = "ves-streams-source-offset"
HEADER_DLQ_RULE = "ves-streams-rule"
HEADER_DLQ_HOST = "ves-streams-host"
HEADER_DLQ_STATUS = "ves-streams-status"
HEADER_DLQ_BODY = "ves-streams-body"
HEADER_DLQ_URL = "ves-streams-url"
HEADER_DLQ_ORIGINAL_SIZE = "ves-streams-original-size"
HEADER_DLQ_VALUE_DROPPED = "ves-streams-value-dropped"
#: The dead-letter headers (a record's other headers, ``ves-domain`` say, are kept beside them).
_DLQ_HEADERS = frozenset({
    HEADER_DLQ_REASON, HEADER_DLQ_STAGE, HEADER_DLQ_SOURCE_TOPIC, HEADER_DLQ_SOURCE_PARTITION,
    HEADER_DLQ_SOURCE_OFFSET, HEADER_DLQ_RULE, HEADER_DLQ_HOST, HEADER_DLQ_STATUS, HEADER_DLQ_BODY, HEADER_DLQ_URL,
    HEADER_DLQ_ORIGINAL_SIZE, HEADER_DLQ_VALUE_DROPPED,
})  # fmt: skip

#: A dead-letter record carries at most this much of the original message
#: (the rest is cut, and ``ves-streams-original-size`` says how big it was):
#: the producer and the broker refuse records over 1 MB by default.
DLQ_MAX_VALUE_BYTES = 512 * 1024

#: A header value is cut here: reasons are one sentence, not a dump.
_MAX_HEADER_TEXT = 1024


@dataclass(frozen=True, slots=True)
class Source:
    """Where a record came from."""

    topic: str
    partition: int
    offset: int


def _text(value: object) -> bytes:
    text = str(value)
    if len(text) > _MAX_HEADER_TEXT:
        text = text[: _MAX_HEADER_TEXT - 3] + "..."
    return text.encode("utf-8", "replace")


def headers(
    stage: str,
    reason: str,
    source: Source,
    *,
    status: int | None = None,
    body: str | None = None,
    url: str | None = None,
) -> list[tuple[str, bytes]]:
    """The dead-letter headers every dead letter carries, and the delivery ones when given.

    ``url`` must already be free of credentials; ``body`` is cut like a reason.
    """
    out = [
        (HEADER_DLQ_REASON, _text(reason)),
        (HEADER_DLQ_STAGE, _text(stage)),
        (HEADER_DLQ_SOURCE_TOPIC, _text(source.topic)),
        (HEADER_DLQ_SOURCE_PARTITION, str(source.partition).encode()),
        (HEADER_DLQ_SOURCE_OFFSET, str(source.offset).encode()),
    ]
    if status is not None:
        out.append((HEADER_DLQ_STATUS, str(status).encode()))
    if body is not None:
        out.append((HEADER_DLQ_BODY, _text(body)))
    if url is not None:
        out.append((HEADER_DLQ_URL, _text(url)))
    return out


def without_dead_letter_headers(record_headers: Iterable[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """``record_headers`` without any dead-letter header of either scheme (for a dead letter dead-lettered again)."""
    return [(k, v) for k, v in record_headers if k not in _DLQ_HEADERS and not k.startswith(LEGACY_HEADER_PREFIX)]


def malformed_input(
    key: bytes | None, value: bytes | None, reason: str, stage: str, source: Source
) -> OutputRecord:
    """Dead-letter an input message that could not be parsed."""
    raw = b"" if value is None else bytes(value)
    out = headers(stage, reason, source)
    if len(raw) > DLQ_MAX_VALUE_BYTES:
        out.append((HEADER_DLQ_ORIGINAL_SIZE, str(len(raw)).encode()))
        raw = raw[: DLQ_MAX_VALUE_BYTES]
    if key is not None and len(key) > _MAX_HEADER_TEXT:
        key = bytes(key[:_MAX_HEADER_TEXT])
    return OutputRecord(key=key, value=raw, headers=out)


def render_error(
    rule: str,
    host: str,
    reason: str,
    stage: str,
    source: Source,
    *,
    interval_start: float | None = None,
    original: bytes | None = None,
) -> OutputRecord:
    """Dead-letter a rule that could not render.

    For a notification, ``original`` is the notification message (kept as
    the record value, as for malformed input); for measurements and
    heartbeats the value is a JSON report of the failure.
    """
    out = headers(stage, reason, source)
    out.append((HEADER_DLQ_RULE, _text(rule)))
    out.append((HEADER_DLQ_HOST, _text(host)))
    if original is not None:
        value = bytes(original)
        if len(value) > DLQ_MAX_VALUE_BYTES:
            out.append((HEADER_DLQ_ORIGINAL_SIZE, str(len(value)).encode()))
            value = value[: DLQ_MAX_VALUE_BYTES]
    else:
        value = orjson.dumps(
            {"rule": rule, "host": host, "reason": reason, "stage": stage, "interval_start": interval_start}
        )
    return OutputRecord(key=host.encode("utf-8", "surrogatepass") if host else None, value=value, headers=out)


def without_value(letter: OutputRecord) -> OutputRecord:
    """``letter`` without its value, for a dead letter too large for its topic (a header says why)."""
    dropped = (HEADER_DLQ_VALUE_DROPPED, f"{len(letter.value)} bytes: too large for the DLQ topic".encode())
    return OutputRecord(key=letter.key, value=b"", headers=[*letter.headers, dropped])
