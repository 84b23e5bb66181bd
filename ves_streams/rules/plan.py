"""The compiled form of a topology: a tree of small immutable nodes that render.

The compiler (:mod:`.compiler`) turns each rule's ``ITEM-DESC`` into a tree of
these nodes once, at load time; rendering walks the tree with a
:class:`Scope` holding the sample (or notification) in hand. No YAML is
parsed, no template is re-parsed and no selector scans the cache while
rendering.

Every node's ``render(scope)`` returns a fresh JSON-compatible value (dicts,
lists, str, int, float, bool, None) or raises :class:`RenderFailure` whose
reason starts with the ``file:line:col`` of the element that failed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from operator import attrgetter
from typing import Any

from ves_streams.collectd import Notification, Sample

from .errors import RenderFailure
from .ids import IdSource
from .selectors import Condition, SampleIndex, Selector, select_positions
from .templates import Template

__all__ = [
    "Scope",
    "System",
    "Config",
    "HeartbeatInfo",
    "AlarmFields",
    "Node",
    "Const",
    "Text",
    "Convert",
    "MapNode",
    "ListNode",
    "MapValueNode",
    "ArrayItemNode",
    "ValueItemNode",
    "MapItemNode",
    "SumItemNode",
    "MeasurementRule",
    "EventRule",
    "HeartbeatRule",
    "CONVERTERS",
]


# --------------------------------------------------------------------------
# what templates see


class System:
    """``{system.*}``: the renderer's host name, the event id, the render time."""

    __slots__ = ("hostname", "time", "date", "_next_id")

    def __init__(self, hostname: str, time: float, date: str, next_id: IdSource) -> None:
        self.hostname = hostname
        self.time = time
        self.date = date
        self._next_id = next_id

    @property
    def id(self) -> int | str:
        return self._next_id()


@dataclass(frozen=True, slots=True)
class Config:
    """``{config.interval}``: the measurement interval in seconds (a float)."""

    interval: float


@dataclass(frozen=True, slots=True)
class HeartbeatInfo:
    """``{hb.*}`` (extension): the host a heartbeat is for and its whole-second interval."""

    host: str
    interval: int


class AlarmFields:
    """``{alarm.*}`` (extension, ``!Events`` rules): the alarm a notification belongs to.

    ``id`` is the alarm's eventId (the same for its onset, re-raises and
    clear), ``start`` its onset time and ``last`` this notification's time
    (epoch seconds), ``sequence`` this event's place in the alarm (0 at the
    onset). Without the alarm lifecycle every notification is an alarm of its
    own: ``id`` is ``{system.id}``, ``start`` and ``last`` are ``{n.time}``,
    ``sequence`` is 0.
    """

    __slots__ = ("_next_id", "start", "last", "sequence")

    def __init__(self, next_id: IdSource, start: float, last: float, sequence: int) -> None:
        self._next_id = next_id
        self.start = start
        self.last = last
        self.sequence = sequence

    @property
    def id(self) -> int | str:
        return self._next_id()


class Scope:
    """Everything a template may read at one point of a render.

    ``vl`` is the sample in hand (``None`` in events and heartbeats), ``n``
    the notification, ``index`` the host's samples for nested selectors,
    ``alarm`` the notification's alarm.
    """

    __slots__ = ("vl", "n", "system", "config", "hb", "index", "alarm")

    def __init__(
        self,
        vl: Sample | None,
        n: Notification | None,
        system: System,
        config: Config,
        hb: HeartbeatInfo | None,
        index: SampleIndex | None,
        alarm: AlarmFields | None = None,
    ) -> None:
        self.vl = vl
        self.n = n
        self.system = system
        self.config = config
        self.hb = hb
        self.index = index
        self.alarm = alarm

    def with_sample(self, sample: Sample) -> Scope:
        return Scope(sample, self.n, self.system, self.config, self.hb, self.index, self.alarm)


def _require_index(scope: Scope, location: str) -> SampleIndex:
    if scope.index is None:  # the compiler only allows items where samples exist
        raise RenderFailure(f"{location}: no samples are available here")
    return scope.index


# --------------------------------------------------------------------------
# scalar conversions (the tags !Number, !Bytes2Kibibytes, !StripExtraDash, !Microseconds)


def _finite(value: float, text: str, tag: str) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{tag} of {text!r} is not a finite number")
    return value


def to_number(text: str) -> int | float:
    """Barometer's ``!Number``: ``int(text)`` if that parses, else ``float(text)``."""
    try:
        return int(text)
    except ValueError:
        return _finite(float(text), text, "!Number")


def bytes_to_kibibytes(text: str) -> float:
    """Barometer's ``!Bytes2Kibibytes``: ``round(float(text) / 1024, 3)``."""
    return round(_finite(float(text), text, "!Bytes2Kibibytes") / 1024.0, 3)


def strip_extra_dash(text: str) -> str:
    """Barometer's ``!StripExtraDash``: ``"cpu--0-"`` -> ``"cpu-0"``."""
    return "-".join(part for part in text.split("-") if part)


def to_microseconds(text: str) -> int:
    """Extension ``!Microseconds``: epoch seconds (``"1795300336.028"``) to integer microseconds.

    Decimal arithmetic, so ``.028`` s is exactly 28000 us; rounded half-even.
    """
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"!Microseconds of {text!r}: not a number of seconds") from None
    if not value.is_finite():
        raise ValueError(f"!Microseconds of {text!r} is not a finite number")
    return int((value * 1_000_000).to_integral_value())


#: tag -> conversion applied to the rendered template text.
CONVERTERS: Mapping[str, Callable[[str], Any]] = {
    "!Number": to_number,
    "!Bytes2Kibibytes": bytes_to_kibibytes,
    "!StripExtraDash": strip_extra_dash,
    "!Microseconds": to_microseconds,
}


# --------------------------------------------------------------------------
# nodes


class Node:
    """A compiled piece of an ITEM-DESC."""

    __slots__ = ()

    def render(self, scope: Scope) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Const(Node):
    """A scalar known at load time (numbers, booleans, null, strings without fields)."""

    value: str | int | float | bool | None

    def render(self, scope: Scope) -> Any:
        return self.value


@dataclass(frozen=True, slots=True)
class Text(Node):
    """A string template; the result stays a string (even when it looks like a number)."""

    template: Template

    def render(self, scope: Scope) -> str:
        return self.template.render(scope)


@dataclass(frozen=True, slots=True)
class Convert(Node):
    """A tagged scalar such as ``!Number "{vl.value}"``: render, then convert."""

    template: Template
    convert: Callable[[str], Any]
    tag: str
    location: str

    def render(self, scope: Scope) -> Any:
        text = self.template.render(scope)
        try:
            return self.convert(text)
        except ValueError:
            raise RenderFailure(
                f"{self.location}: {self.tag} cannot convert {_short(text)!r} "
                f"(rendered from {self.template.source!r})"
                f" (hint: make sure the template renders a number, or drop the {self.tag} tag)"
            ) from None


@dataclass(frozen=True, slots=True)
class MapNode(Node):
    """A YAML mapping (merge keys already applied; keys are literal strings)."""

    items: tuple[tuple[str, Node], ...]

    def render(self, scope: Scope) -> dict[str, Any]:
        return {key: node.render(scope) for key, node in self.items}


@dataclass(frozen=True, slots=True)
class ListNode(Node):
    """A plain YAML sequence; every element is rendered."""

    items: tuple[Node, ...]

    def render(self, scope: Scope) -> list[Any]:
        return [node.render(scope) for node in self.items]


@dataclass(frozen=True, slots=True)
class MapValueNode(Node):
    """``!MapValue {VALUE: ..., TO: {...}}``: look the rendered VALUE up in the TO table."""

    value: Node
    table: Mapping[Any, Node]
    location: str

    def render(self, scope: Scope) -> Any:
        value = self.value.render(scope)
        try:
            target = self.table.get(value)
        except TypeError:  # unhashable
            target = None
        if target is None:
            keys = ", ".join(repr(k) for k in list(self.table)[:10])
            raise RenderFailure(
                f"{self.location}: !MapValue has no entry for {_short(str(value))!r} (TO keys: {keys})"
                f" (hint: add {_short(str(value))!r} to the TO table)"
            )
        return target.render(scope)


def _describe(sample: Sample) -> str:
    return "/".join((sample.plugin, sample.plugin_instance, sample.type, sample.type_instance, sample.ds_name))


@dataclass(frozen=True, slots=True)
class ArrayItemNode(Node):
    """``!ArrayItem``: a list with one rendered ITEM-DESC per selected sample.

    With INDEX-KEY the selected samples are grouped by those fields and one
    item is rendered per group (first-seen order), with the first sample of
    the group in hand (the compiler allows only INDEX-KEY fields to be read).
    Nothing selected renders ``[]``, as in Barometer.
    """

    selectors: tuple[Selector, ...]
    index_keys: tuple[str, ...]
    item: Node
    location: str

    def render(self, scope: Scope) -> list[Any]:
        index = _require_index(scope, self.location)
        samples = index.samples
        chosen = [samples[p] for p in _select(self.selectors, index, scope)]
        if self.index_keys:
            chosen = _group(chosen, self.index_keys)
        return [self.item.render(scope.with_sample(s)) for s in chosen]


def _select(selectors: tuple[Selector, ...], index: SampleIndex, scope: Scope) -> Sequence[int]:
    if not selectors:  # INDEX-KEY without SELECT: every sample of the host
        return range(len(index.samples))
    return select_positions(selectors, index, scope)


def _group(samples: list[Sample], keys: tuple[str, ...]) -> list[Sample]:
    getter = attrgetter(*keys)
    first: dict[Any, Sample] = {}
    for sample in samples:
        first.setdefault(getter(sample), sample)
    return list(first.values())


@dataclass(frozen=True, slots=True)
class ValueItemNode(Node):
    """``!ValueItem``: the VALUE of the one selected sample, or DEFAULT if none.

    Two or more selected samples, or none without a DEFAULT, fail this event.
    """

    selectors: tuple[Selector, ...]
    value: Node
    default: Node | None
    location: str

    def render(self, scope: Scope) -> Any:
        index = _require_index(scope, self.location)
        found = select_positions(self.selectors, index, scope)
        if len(found) == 1:
            return self.value.render(scope.with_sample(index.samples[found[0]]))
        if not found:
            if self.default is not None:
                return self.default.render(scope)
            wanted = " or ".join(s.describe() for s in self.selectors)
            raise RenderFailure(
                f"{self.location}: !ValueItem selected no sample for {_short(_rendered(self.selectors, scope))} "
                f"(SELECT {_short(wanted)}) and has no DEFAULT"
                " (hint: add '- DEFAULT: <value>' or check that collectd reports this value)"
            )
        names = ", ".join(_describe(index.samples[p]) for p in list(found)[:4])
        raise RenderFailure(
            f"{self.location}: !ValueItem selected {len(found)} samples ({_short(names, 300)}), expected one"
            " (hint: add fields such as plugin_instance, type_instance or ds_name to its SELECT"
            " so it matches exactly one sample)"
        )


def _rendered(selectors: tuple[Selector, ...], scope: Scope) -> str:
    out = []
    for sel in selectors:
        vals = [v if isinstance(v, str) else v.render(scope) for v in sel.eq_values]
        out.append("{" + ", ".join(f"{f}={v!r}" for f, v in zip(sel.eq_fields, vals)) + "}")
    return " or ".join(out)


@dataclass(frozen=True, slots=True)
class MapItemNode(Node):
    """Extension ``!MapItem``: a mapping with one KEY: VALUE entry per selected sample.

    Made for VES 7 ``hashMap`` fields, whose values must be strings (VALUE
    defaults to ``"{vl.value}"``). Two samples rendering the same key fail the
    event rather than silently dropping one.
    """

    selectors: tuple[Selector, ...]
    key: Node
    value: Node
    location: str

    def render(self, scope: Scope) -> dict[str, Any]:
        index = _require_index(scope, self.location)
        out: dict[str, Any] = {}
        for pos in select_positions(self.selectors, index, scope):
            inner = scope.with_sample(index.samples[pos])
            key = self.key.render(inner)
            if not isinstance(key, str):
                key = str(key)
            if key in out:
                raise RenderFailure(
                    f"{self.location}: !MapItem rendered the key {_short(key)!r} for two samples"
                    " (hint: make KEY include the fields that differ, e.g. {vl.type_instance} or {vl.ds_name})"
                )
            out[key] = self.value.render(inner)
        return out


@dataclass(frozen=True, slots=True)
class SumItemNode(Node):
    """Extension ``!SumItem``: the sum of the values of the selected samples.

    Integers stay integers; a float sum is rounded to 6 decimals. Nothing
    selected renders DEFAULT, or fails the event when there is none.
    """

    selectors: tuple[Selector, ...]
    default: Node | None
    location: str

    def render(self, scope: Scope) -> Any:
        index = _require_index(scope, self.location)
        found = select_positions(self.selectors, index, scope)
        if not found:
            if self.default is not None:
                return self.default.render(scope)
            raise RenderFailure(
                f"{self.location}: !SumItem selected no sample for {_short(_rendered(self.selectors, scope))}"
                " and has no DEFAULT (hint: add '- DEFAULT: 0' or check that collectd reports these values)"
            )
        total = sum(index.samples[p].value for p in found)
        return round(total, 6) if isinstance(total, float) else total


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------
# rules


@dataclass(frozen=True, slots=True)
class MeasurementRule:
    """A top-level ``!Measurements`` rule: one event per selected sample (or INDEX-KEY group)."""

    name: str
    selectors: tuple[Selector, ...]
    index_keys: tuple[str, ...]
    item: Node
    location: str

    def items(self, index: SampleIndex) -> list[tuple[Sample, tuple[str, ...]]]:
        """The samples events are rendered for, each with its identity for event ids."""
        dummy = None  # top-level selectors are literal: no scope is read
        samples = index.samples
        chosen = [samples[p] for p in _select(self.selectors, index, dummy)]  # type: ignore[arg-type]
        if self.index_keys:
            return [(s, tuple(getattr(s, k) for k in self.index_keys)) for s in _group(chosen, self.index_keys)]
        return [(s, s.series) for s in chosen]


@dataclass(frozen=True, slots=True)
class EventRule:
    """A top-level ``!Events`` rule: one event per notification matching CONDITION."""

    name: str
    condition: Condition
    item: Node
    location: str


@dataclass(frozen=True, slots=True)
class HeartbeatRule:
    """Extension ``!Heartbeat``: one event per host and heartbeat interval."""

    name: str
    item: Node
    location: str
