"""Each event checked against the VES schema of its version before it leaves.

An event the collector's schema refuses would cost a request (a batch's,
then one of its own when the batch is re-sent event by event) and come back
as ONAP's 400 "Bad Parameter (JSON does not conform to schema)", which names
no event and no field. Checked here first, it is dead-lettered at once
(``reason="invalid"``) with the validator's message: the JSON path of the
offending value.

The schemas are the project's own (``schemas/ves-{5,7}.json``, shipped as
:mod:`ves_streams.schemas`; the local collector validates with the same
files), compiled once per VES major version with ``fastjsonschema`` and
cached for the process. A schema file that is missing or unreadable raises
:class:`~ves_streams.sink.errors.SinkConfigError` at the first check (the
sink checks at start): an installation problem, never a dead letter.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from typing import Any

import fastjsonschema

from ves_streams import resources
from ves_streams.sink.errors import SinkConfigError

__all__ = ["schema_check", "schema_error"]

#: Longest validator message kept in a dead-letter reason.
_MAX_MESSAGE = 300


@functools.cache
def _event_validator(major: str) -> Callable[[Any], Any]:
    path = resources.schemas_dir() / f"ves-{major}.json"
    try:
        schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        # wrapped as {"event": ...} so that a message's path reads as a reader of the request names it
        event_schema = {
            "$schema": schema.get("$schema", ""),
            "type": "object",
            "properties": {"event": {"$ref": "#/definitions/event"}},
            "required": ["event"],
            "definitions": schema["definitions"],
        }
        return fastjsonschema.compile(event_schema)
    except (OSError, ValueError, KeyError, fastjsonschema.JsonSchemaDefinitionException) as exc:
        raise SinkConfigError(f"cannot load the VES {major} schema {path}: {exc} (reinstall ves-streams)") from exc


def schema_error(event: Mapping[str, Any], major: str) -> str | None:
    """Why ``event`` (the value of ``"event"``) does not conform to the VES ``major`` schema; None if it does."""
    try:
        _event_validator(major)({"event": event})
    except fastjsonschema.JsonSchemaValueException as exc:
        message = str(exc.message).replace("data.", "", 1)
        if len(message) > _MAX_MESSAGE:
            message = message[: _MAX_MESSAGE - 3] + "..."
        return f"event does not conform to the VES {major} schema: {message}"
    return None


def schema_check(major: str) -> Callable[[Mapping[str, Any]], str | None]:
    """The check for one VES major version, its schema compiled now (a missing file fails here, at start)."""
    _event_validator(major)
    return functools.partial(schema_error, major=major)
