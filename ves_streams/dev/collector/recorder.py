"""What the collector writes down: accepted events, refused requests, and a console line for each.

Two JSON-lines files, so that the accepted-events file holds nothing but
events (``make run`` and the test fixtures count its lines):

* accepted (``--record``): one line per event,
  ``{"received_at": <epoch float>, "path": "/eventListener/v7", "request": <n>, "event": {...}}``;
  ``request`` numbers the HTTP request, so events of one batch share it;
* refused (``--record-rejected``, default ``<record>.rejected.jsonl``): one line
  per refused event request,
  ``{"received_at", "path", "request", "status", "reason", "event_ids", "body"}``,
  where ``body`` is the parsed JSON, or ``null`` when it was not read (401, an
  injected 503) or did not parse; then ``"raw"`` holds its first
  :data:`MAX_RAW_CHARS` characters.

Both files are appended to and flushed after every request, so a reader sees
each request complete as soon as it was answered. Headers (and so
credentials) are never recorded.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import orjson

from ves_streams.dev.collector.listener import event_summary

__all__ = ["EventRecorder", "MAX_RAW_CHARS"]

#: How much of a body that did not parse is kept in the refused-requests file.
MAX_RAW_CHARS = 4096


class EventRecorder:
    """Owns the two record files and the console; open with :meth:`open`, release with :meth:`close`."""

    def __init__(
        self,
        record: Path | None,
        record_rejected: Path | None,
        *,
        quiet: bool = False,
        out: IO[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.record_path = record
        self.rejected_path = record_rejected
        self.quiet = quiet
        self._out = out if out is not None else sys.stdout
        self._clock = clock
        self._accepted: IO[bytes] | None = None
        self._rejected: IO[bytes] | None = None
        self._requests = 0

    def open(self) -> None:
        """Create parent directories and open both files for appending."""
        for path in (self.record_path, self.rejected_path):
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
        if self.record_path is not None:
            self._accepted = open(self.record_path, "ab")
        if self.rejected_path is not None:
            self._rejected = open(self.rejected_path, "ab")

    def close(self) -> None:
        for handle in (self._accepted, self._rejected):
            if handle is not None:
                handle.close()
        self._accepted = self._rejected = None

    def next_request(self) -> int:
        """A number for the request at hand, shared by everything recorded for it."""
        self._requests += 1
        return self._requests

    def accepted(self, request: int, path: str, events: list[dict[str, Any]]) -> None:
        """Record the events of one accepted request, in order, then print one line per event."""
        now = self._clock()
        if self._accepted is not None:
            lines = b"".join(
                orjson.dumps({"received_at": now, "path": path, "request": request, "event": event},
                             option=orjson.OPT_APPEND_NEWLINE)
                for event in events
            )
            self._accepted.write(lines)
            self._accepted.flush()
        if not self.quiet:
            for event in events:
                self._print(f"accepted {event_summary(event)}")

    def refused(
        self,
        request: int,
        path: str,
        status: int,
        reason: str,
        *,
        body: Any = None,
        raw: str | None = None,
        event_ids: list[str] | None = None,
    ) -> None:
        """Record one refused request and print one line about it."""
        if self._rejected is not None:
            record = {
                "received_at": self._clock(),
                "path": path,
                "request": request,
                "status": status,
                "reason": reason,
                "event_ids": event_ids or [],
                "body": body,
            }
            if raw is not None:
                record["raw"] = raw[:MAX_RAW_CHARS]
            self._rejected.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
            self._rejected.flush()
        if not self.quiet:
            short = reason if len(reason) <= 300 else reason[:297] + "..."
            self._print(f"refused  {status} {path}: {short}")

    def _print(self, line: str) -> None:
        self._out.write(line + "\n")
        self._out.flush()
