"""Validate VES events and requests against the project's own VES JSON schemas.

The schemas live in ``schemas/ves-5.json`` (VES 5.4.1, CommonEventFormat
28.4.1) and ``schemas/ves-7.json`` (VES 7.2.1, CommonEventFormat 30.2.1) and
ship as the package ``ves_streams.schemas`` (:mod:`ves_streams.resources`). They
are smaller than the official files but keep the same constraints for what
they model (header, envelope, measurement/measurementsForVfScaling, fault,
heartbeat), so an event they accept is one the ONAP collector accepts too;
``tests/test_ves_schema.py`` checks that claim against the official files.

Errors come back as plain strings naming the JSON path of the offending value
(``event.commonEventHeader.version: 4 is not of type 'string'``) because
their readers are people: collector responses, dead-letter reasons, test
failures.

Two validators per schema: ``fastjsonschema`` compiles the schema to Python
code and decides (18x faster than ``jsonschema`` on our measurement events:
the local collector spent 90 % of its CPU validating, and was the slowest
stage of the benchmark's pipeline); ``jsonschema`` then explains a rejection
with every error and its path. Should the two ever disagree on a rejection,
the fast validator's own message is returned: nothing invalid is accepted
for want of an explanation.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import fastjsonschema
from jsonschema import validators
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator

from ves_streams import resources

__all__ = [
    "SCHEMA_DIR_ENV",
    "SUPPORTED_MAJORS",
    "OFFICIAL_SCHEMA_FILES",
    "VesSchemaError",
    "SchemaNotFoundError",
    "UnsupportedVesVersionError",
    "major_version",
    "schema_path",
    "load_schema",
    "validate_event",
    "validate_request",
    "format_errors",
    "official_validator",
]

#: Environment variable naming a directory that holds ``ves-5.json`` and
#: ``ves-7.json``; read when a schema is first loaded, never at import.
SCHEMA_DIR_ENV = "VES_STREAMS_SCHEMA_DIR"

#: VES major versions we have schemas for.
SUPPORTED_MAJORS: tuple[str, ...] = ("5", "7")

#: The official ONAP schema file for each major version, for comparisons.
OFFICIAL_SCHEMA_FILES: Mapping[str, str] = {
    "5": "CommonEventFormat_28.4.1.json",
    "7": "CommonEventFormat_30.2.1_ONAP.json",
}

#: Longest error message we return; jsonschema quotes whole instances.
_MAX_MESSAGE = 300


class VesSchemaError(Exception):
    """Base class of every error raised by :mod:`ves_streams.dev.collector.schema`."""


class SchemaNotFoundError(VesSchemaError):
    """A schema file is missing: the installation is incomplete."""


class UnsupportedVesVersionError(VesSchemaError, ValueError):
    """The caller asked for a VES version we have no schema for."""


def major_version(version: str | int) -> str:
    """Reduce ``"7"``, ``"v7"``, ``"7.2.1"`` or ``7`` to ``"7"``; refuse what we do not support.

    Callers pass whatever they hold (a URL segment, a settings value), so the
    normalisation lives here once.
    """
    text = str(version).strip().lower().removeprefix("v")
    major = text.split(".", 1)[0]
    if major not in SUPPORTED_MAJORS:
        raise UnsupportedVesVersionError(
            f"unsupported VES version {version!r}: expected one of {', '.join(SUPPORTED_MAJORS)} "
            "(a major version such as '7', 'v7' or '7.2.1')"
        )
    return major


def _shipped_schema_dir() -> Path:
    """The schemas installed with the package (``schemas/`` of the checkout in an editable install)."""
    return resources.schemas_dir()


def _candidate_dirs() -> list[Path]:
    """Where the schemas may be, best first: ``VES_STREAMS_SCHEMA_DIR`` if set, then the shipped ones."""
    dirs: list[Path] = []
    explicit = os.environ.get(SCHEMA_DIR_ENV)
    if explicit:
        dirs.append(Path(explicit))
    dirs.append(_shipped_schema_dir())
    return dirs


def schema_path(version: str | int) -> Path:
    """The file holding our schema for ``version``; raises :class:`SchemaNotFoundError` naming every place tried."""
    name = f"ves-{major_version(version)}.json"
    tried = []
    for directory in _candidate_dirs():
        path = directory / name
        if path.is_file():
            return path
        tried.append(str(path))
    raise SchemaNotFoundError(
        f"VES schema {name} not found (tried {', '.join(tried)}). ves-streams ships its schemas as the "
        f"package ves_streams.schemas: reinstall it (`pip install ves-streams`, or `pip install -e .` from "
        f"a checkout), or set {SCHEMA_DIR_ENV} to a directory containing {name}."
    )


@functools.cache
def _load_schema_cached(major: str) -> dict[str, Any]:
    path = schema_path(major)
    try:
        schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SchemaNotFoundError(f"cannot read VES schema {path}: {exc}") from exc
    return schema


def load_schema(version: str | int) -> dict[str, Any]:
    """Our JSON schema for a VES major version (``"5"`` or ``"7"``), as a fresh dict the caller may change."""
    return copy.deepcopy(_load_schema_cached(major_version(version)))


class _VersionValidators:
    """Compiled validators for one major version: the whole request, and one event."""

    def __init__(self, schema: dict[str, Any]) -> None:
        cls = validators.validator_for(schema)
        cls.check_schema(schema)
        self.request: Validator = cls(schema)
        # Wrapping the event as {"event": ...} makes every error path start
        # with "event", the way a reader of the request body would name it.
        event_schema = {
            "$schema": schema.get("$schema", ""),
            "type": "object",
            "properties": {"event": {"$ref": "#/definitions/event"}},
            "required": ["event"],
            "definitions": schema["definitions"],
        }
        self.event: Validator = cls(event_schema)
        self.fast_request: Callable[[Any], Any] = fastjsonschema.compile(schema)
        self.fast_event: Callable[[Any], Any] = fastjsonschema.compile(event_schema)


def _fast_rejection(fast: Callable[[Any], Any], instance: Any) -> str | None:
    """None when ``fast`` accepts ``instance``, else its message (``data.x.y must be string``)."""
    try:
        fast(instance)
    except fastjsonschema.JsonSchemaValueException as exc:
        return _shorten(str(exc.message).replace("data.", "", 1).replace("data ", "body ", 1))
    return None


@functools.cache
def _validators(major: str) -> _VersionValidators:
    return _VersionValidators(_load_schema_cached(major))


def _format_path(path: Iterable[str | int], root: str) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or root


def _shorten(message: str) -> str:
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 3] + "..."


def format_errors(validator: Validator, instance: Any, *, root: str = "body") -> list[str]:
    """Every error ``validator`` finds in ``instance`` as ``path: message``, sorted by path.

    ``root`` names the instance itself when the error is about the whole
    document (``body: [] is not of type 'object'``). Duplicates are dropped;
    the order is stable so responses and tests are reproducible.
    """
    return _format(validator.iter_errors(instance), root)


def _format(errors: Iterable[ValidationError], root: str) -> list[str]:
    lines = {
        (
            tuple((isinstance(p, str), p) for p in error.absolute_path),
            f"{_format_path(error.absolute_path, root)}: {_shorten(error.message)}",
        )
        for error in errors
    }
    return [line for _key, line in sorted(lines)]


def validate_event(event: Any, version: str | int) -> list[str]:
    """Errors of one event (the value of ``"event"``) against our schema; ``[]`` means valid.

    Raises :class:`UnsupportedVesVersionError` for a version we have no
    schema for and :class:`SchemaNotFoundError` when the schema file is
    missing; never raises for a bad event.
    """
    checks = _validators(major_version(version))
    instance = {"event": event}
    rejection = _fast_rejection(checks.fast_event, instance)
    if rejection is None:
        return []
    return format_errors(checks.event, instance) or [rejection]


def validate_request(body: Any, version: str | int) -> list[str]:
    """Errors of a whole request body, ``{"event": ...}`` or ``{"eventList": [...]}``; ``[]`` means valid.

    Exactly one of the two keys must be present (the official schema would
    accept ``{}``; no collector would). Whether a batch mixes domains is a
    collector rule, not checked here.
    """
    checks = _validators(major_version(version))
    rejection = _fast_rejection(checks.fast_request, body)
    if rejection is None:
        return []
    errors = list(checks.request.iter_errors(body))
    lines = _format((e for e in errors if e.validator not in _ENVELOPE_COUNT_CHECKS), "body")
    if any(e.validator in _ENVELOPE_COUNT_CHECKS for e in errors):
        found = ", ".join(repr(k) for k in body) or "nothing"
        lines.insert(0, f"body: expected exactly one of 'event' or 'eventList', found {found}")
    return lines or [rejection]


#: Envelope rules whose jsonschema messages quote the whole body; reworded above.
_ENVELOPE_COUNT_CHECKS = frozenset({"minProperties", "maxProperties"})


def official_validator(version: str | int, reference_dir: Path) -> Validator:
    """A validator for the official ONAP CommonEventFormat file of ``version`` found in ``reference_dir``.

    For comparisons (tests, audits): the product never needs the official
    files. The validator class follows the file's ``$schema`` (draft-04 for
    both). Formats (``ipv4``, ``uri``) are annotations only, as jsonschema
    does by default; our schemas use none.
    """
    major = major_version(version)
    path = Path(reference_dir) / OFFICIAL_SCHEMA_FILES[major]
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SchemaNotFoundError(f"official VES schema not found: {path} ({exc.strerror})") from exc
    except ValueError as exc:
        raise VesSchemaError(f"official VES schema {path} is not JSON: {exc}") from exc
    cls = validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)
