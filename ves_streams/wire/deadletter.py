"""Dead-letter records: what could not be processed, with why and where it came from.

A dead-letter record is produced to ``ves-streams-dlq`` instead of raising,
so one bad message never stops a partition, and never vanishes either:

* **malformed input** keeps the original key and bytes (cut at
  :data:`~ves_streams.topics.DLQ_MAX_VALUE_BYTES`, the original size in a
  header) so it can be inspected and replayed;
* **render errors** carry a small JSON report (rule, host, reason, window)
  since there is no single input message to keep.

Headers (UTF-8): ``ves-streams-reason``, ``ves-streams-stage``,
``ves-streams-source-topic``, ``ves-streams-source-partition``,
``ves-streams-source-offset`` and, for render errors, ``ves-streams-rule``
and ``ves-streams-host``.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from ves_streams import topics
from ves_streams.identity import OutputRecord

__all__ = ["Source", "malformed_input", "render_error"]

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


def _source_headers(stage: str, reason: str, source: Source) -> list[tuple[str, bytes]]:
    return [
        (topics.HEADER_DLQ_REASON, _text(reason)),
        (topics.HEADER_DLQ_STAGE, _text(stage)),
        (topics.HEADER_DLQ_SOURCE_TOPIC, _text(source.topic)),
        (topics.HEADER_DLQ_SOURCE_PARTITION, str(source.partition).encode()),
        (topics.HEADER_DLQ_SOURCE_OFFSET, str(source.offset).encode()),
    ]


def malformed_input(
    key: bytes | None, value: bytes | None, reason: str, stage: str, source: Source
) -> OutputRecord:
    """Dead-letter an input message that could not be parsed."""
    raw = b"" if value is None else bytes(value)
    headers = _source_headers(stage, reason, source)
    if len(raw) > topics.DLQ_MAX_VALUE_BYTES:
        headers.append((topics.HEADER_DLQ_ORIGINAL_SIZE, str(len(raw)).encode()))
        raw = raw[: topics.DLQ_MAX_VALUE_BYTES]
    if key is not None and len(key) > _MAX_HEADER_TEXT:
        key = bytes(key[:_MAX_HEADER_TEXT])
    return OutputRecord(key=key, value=raw, headers=headers)


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
    headers = _source_headers(stage, reason, source)
    headers.append((topics.HEADER_DLQ_RULE, _text(rule)))
    headers.append((topics.HEADER_DLQ_HOST, _text(host)))
    if original is not None:
        value = bytes(original)
        if len(value) > topics.DLQ_MAX_VALUE_BYTES:
            headers.append((topics.HEADER_DLQ_ORIGINAL_SIZE, str(len(value)).encode()))
            value = value[: topics.DLQ_MAX_VALUE_BYTES]
    else:
        value = orjson.dumps(
            {"rule": rule, "host": host, "reason": reason, "stage": stage, "interval_start": interval_start}
        )
    return OutputRecord(key=host.encode("utf-8", "surrogatepass") if host else None, value=value, headers=headers)
