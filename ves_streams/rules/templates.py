"""Templates such as ``"{vl.plugin}-{vl.plugin_instance}"``, parsed once at load time.

Barometer renders a template with ``str.format(**context)``. We keep its
output (``format(value, spec)`` of each field, so ``{vl.value}`` of
``24108826624.0`` is ``"24108826624.0"`` and ``{vl.time}`` keeps Python's
shortest float repr) but not its mechanism: a template is split once by
``string.Formatter().parse`` into literal text and fields, every field is
checked against the documented names, and rendering only ever calls
``format()`` on a field's *value*. Data is therefore never parsed as a
template: a host called ``{system.id}`` or ``{0.__class__}`` renders as those
characters, and a rendered result is never formatted again.

Allowed: ``{root.field}`` and ``{root.field:spec}`` with the roots and fields
of :data:`FIELDS`. Refused at load time: positional or bare fields (``{}``,
``{0}``, ``{vl}``), indexing (``{vl[0]}``), nested attributes
(``{vl.host.upper}``), conversions (``{vl.host!r}``), nested fields in a spec,
and specs that do not apply to the field's type.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from operator import attrgetter
from typing import Any

from _string import formatter_field_name_split  # type: ignore[import-not-found]

__all__ = [
    "FIELDS",
    "Field",
    "Template",
    "RegexTemplate",
    "TemplateProblem",
    "parse_template",
    "is_regex_source",
]

#: Every field a template may name, by root, with a sample value of its type
#: (used to check format specs at load time).
FIELDS: Mapping[str, Mapping[str, Any]] = {
    # one collectd sample (a data source of a value list)
    "vl": {
        "host": "h",
        "plugin": "p",
        "plugin_instance": "pi",
        "type": "t",
        "type_instance": "ti",
        "ds_name": "value",
        "value": 1.5,
        "time": 1.5,
        "interval": 1.5,
    },
    # one collectd notification (severity in NOTIF_* form)
    "n": {
        "host": "h",
        "plugin": "p",
        "plugin_instance": "pi",
        "type": "t",
        "type_instance": "ti",
        "severity": "NOTIF_OKAY",
        "message": "m",
        "time": 1.5,
    },
    # the renderer itself
    "system": {"hostname": "h", "id": None, "time": 1.5, "date": "2024-01-01"},
    "config": {"interval": 1.5},
    # ves-streams extension: the heartbeat being rendered
    "hb": {"host": "h", "interval": 10},
    # ves-streams extension: the alarm a notification belongs to (its lifecycle, VES 7.2)
    "alarm": {"id": None, "start": 1.5, "last": 1.5, "sequence": 1},
}

_FORMATTER = string.Formatter()


class TemplateProblem(ValueError):
    """A template that cannot be compiled; ``hint`` says how to fix it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True, slots=True)
class Field:
    """One ``{root.name:spec}`` occurrence."""

    root: str
    name: str
    spec: str
    get: Callable[[Any], Any]

    @property
    def text(self) -> str:
        return "{" + self.root + "." + self.name + (":" + self.spec if self.spec else "") + "}"


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal strings and :class:`Field` parts, in order."""

    source: str
    parts: tuple[str | Field, ...]

    @property
    def fields(self) -> tuple[Field, ...]:
        return tuple(p for p in self.parts if isinstance(p, Field))

    @property
    def is_constant(self) -> bool:
        return all(isinstance(p, str) for p in self.parts)

    def constant(self) -> str:
        """The text of a template without fields (``{{`` already unescaped)."""
        return "".join(p for p in self.parts if isinstance(p, str))

    def render(self, scope: Any) -> str:
        parts = self.parts
        if len(parts) == 1:
            part = parts[0]
            if isinstance(part, str):
                return part
            return format(part.get(scope), part.spec)
        return "".join([p if isinstance(p, str) else format(p.get(scope), p.spec) for p in parts])


@dataclass(frozen=True, slots=True)
class RegexTemplate:
    """A ``/regex/`` selector value, possibly with fields.

    Field values are inserted ``re.escape``-d, so data only ever matches
    itself literally; the surrounding pattern comes from the file and was
    compiled once at load time to prove it valid.
    """

    template: Template  # the text between the slashes

    def compile(self, scope: Any) -> re.Pattern[str]:
        parts = self.template.parts
        if all(isinstance(p, str) for p in parts):
            return _compile(self.template.constant())
        text = "".join(p if isinstance(p, str) else re.escape(format(p.get(scope), p.spec)) for p in parts)
        return _compile(text)


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def is_regex_source(text: str) -> bool:
    """Barometer's rule: a value written ``/.../`` (two characters or more) is a regex."""
    return len(text) > 1 and text[0] == "/" and text[-1] == "/"


def parse_template(text: str, roots: Mapping[str, frozenset[str] | None], where: str) -> Template:
    """Split ``text`` into literal and field parts, refusing anything not documented.

    ``roots`` maps the roots available at this place of the file to the set of
    their fields that are defined here (``None``: all of :data:`FIELDS`); for
    example inside an ``!ArrayItem`` with ``INDEX-KEY: [plugin]`` only
    ``vl.plugin`` is defined. ``where`` names the place for messages
    (``"an !Events rule"``).
    """
    try:
        pieces = list(_FORMATTER.parse(text))
    except ValueError as exc:
        raise TemplateProblem(
            f"bad template {_show(text)}: {exc}",
            "write a literal '{' or '}' as '{{' or '}}'",
        ) from None
    parts: list[str | Field] = []
    for literal, field_name, spec, conversion in pieces:
        if literal:
            parts.append(literal)
        if field_name is None:
            continue
        parts.append(_field(text, field_name, spec or "", conversion, roots, where))
    merged: list[str | Field] = []
    for part in parts:  # adjacent literals (from '{{') become one string
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] = merged[-1] + part
        else:
            merged.append(part)
    return Template(text, tuple(merged) if merged else ("",))


def _field(
    text: str,
    field_name: str,
    spec: str,
    conversion: str | None,
    roots: Mapping[str, frozenset[str] | None],
    where: str,
) -> Field:
    shown = "{" + field_name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
    known = ", ".join(f"{{{r}.<field>}}" for r in roots)
    if not field_name:
        raise TemplateProblem(f"empty field '{{}}' in {_show(text)}", f"name a field such as {known}")
    try:
        root, rest = formatter_field_name_split(field_name)
        rest_parts = list(rest)
    except ValueError as exc:
        raise TemplateProblem(f"bad field {shown} in {_show(text)}: {exc}", f"use {known}") from None
    if not isinstance(root, str) or root.isdigit() or root not in FIELDS:
        raise TemplateProblem(
            f"unknown reference {shown} in {_show(text)}",
            f"available here: {known}; write a literal brace as '{{{{' or '}}}}'",
        )
    if len(rest_parts) != 1 or not rest_parts[0][0]:
        raise TemplateProblem(
            f"unsupported field {shown} in {_show(text)}: only '{{{root}.<field>}}' is allowed",
            f"fields of {root}: {', '.join(FIELDS[root])}",
        )
    name = str(rest_parts[0][1])
    if name not in FIELDS[root]:
        raise TemplateProblem(
            f"unknown reference {shown} in {_show(text)}: {root} has no field {name!r}",
            f"fields of {root}: {', '.join(FIELDS[root])}",
        )
    if root not in roots:
        raise TemplateProblem(
            f"{shown} is not available in {where}",
            f"available here: {known}" if roots else "no fields are available here; use a literal value",
        )
    defined = roots[root]
    if defined is not None and name not in defined:
        raise TemplateProblem(
            f"{shown} is not defined here: this item groups samples by INDEX-KEY "
            f"[{', '.join(sorted(defined))}], so only those fields of vl have a value",
            f"add {name} to INDEX-KEY, or use it inside a nested item that selects single samples",
        )
    if conversion:
        raise TemplateProblem(
            f"conversion '!{conversion}' in {shown} is not supported", f"write {{{root}.{name}}} instead"
        )
    if spec:
        if "{" in spec or "}" in spec:
            raise TemplateProblem(f"nested field in the format spec of {shown}", "use a literal format spec")
        sample = FIELDS[root][name]
        if sample is None:
            raise TemplateProblem(f"{{{root}.{name}}} takes no format spec", f"write {{{root}.{name}}}")
        try:
            format(sample, spec)
        except (ValueError, TypeError) as exc:
            raise TemplateProblem(f"format spec {spec!r} does not apply to {{{root}.{name}}}: {exc}") from None
    return Field(root, name, spec, attrgetter(f"{root}.{name}"))


def _show(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
