"""SELECT and CONDITION: which samples (or which notification) a rule element matches.

Matching semantics are Barometer's: every key of a SELECT must match; a value
written ``/regex/`` matches with :func:`re.match` (anchored at the start
only), any other value by string equality; when an item has several SELECTs a
sample matching any of them is selected (once). Values of a nested SELECT are
templates rendered with the enclosing sample first; the top-level SELECT of a
``!Measurements`` rule and the CONDITION of an ``!Events`` rule are literal,
as in Barometer.

What differs is the cost. Barometer scans every cached sample for every
selector; here the samples of one host are put in a :class:`SampleIndex`,
which builds, on first use, one hash table per combination of equality fields
the topology's selectors use (``(plugin, type)``, ``(plugin,
plugin_instance, type, type_instance)``, ...). A selector is then a dict
lookup followed by the regex tests on the few candidates, and rendering a host
costs time linear in its number of samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from ves_streams.collectd import Notification, Sample

from .templates import RegexTemplate, Template

__all__ = [
    "SAMPLE_KEYS",
    "NOTIFICATION_KEYS",
    "SampleIndex",
    "Selector",
    "Condition",
    "select_positions",
]

#: Sample fields a SELECT or INDEX-KEY may name (the identity of a sample).
SAMPLE_KEYS: tuple[str, ...] = ("host", "plugin", "plugin_instance", "type", "type_instance", "ds_name")
#: Notification fields a CONDITION may name.
NOTIFICATION_KEYS: tuple[str, ...] = (
    "host",
    "plugin",
    "plugin_instance",
    "type",
    "type_instance",
    "severity",
    "message",
)


class SampleIndex:
    """The latest samples of one host, with lazily built lookup tables.

    If a series occurs more than once the last sample wins but keeps the
    position of the first, which is how Barometer's cache orders updates.
    Positions (indexes into :attr:`samples`) are what selectors return, so
    results always come out in sample order whatever index served them.
    """

    __slots__ = ("samples", "host", "_tables")

    def __init__(self, samples: Sequence[Sample]) -> None:
        seen: dict[tuple[str, ...], int] = {}
        unique: list[Sample] = []
        for sample in samples:
            key = (sample.host, *sample.series)
            pos = seen.get(key)
            if pos is None:
                seen[key] = len(unique)
                unique.append(sample)
            else:
                unique[pos] = sample
        self.samples: list[Sample] = unique
        self.host: str = unique[0].host if unique else ""
        self._tables: dict[tuple[str, ...], dict[Any, list[int]]] = {}

    def positions(self, fields: tuple[str, ...], key: tuple[str, ...]) -> Sequence[int]:
        """Positions of the samples whose ``fields`` equal ``key``, in order."""
        if not fields:
            return range(len(self.samples))
        table = self._tables.get(fields)
        if table is None:
            table = self._build(fields)
        return table.get(key, ())

    def _build(self, fields: tuple[str, ...]) -> dict[Any, list[int]]:
        getter = attrgetter(*fields)
        keys = map(getter, self.samples)
        if len(fields) == 1:
            keys = ((k,) for k in keys)
        table: dict[Any, list[int]] = {}
        get = table.get
        for pos, key in enumerate(keys):
            found = get(key)
            if found is None:
                table[key] = [pos]
            else:
                found.append(pos)
        self._tables[fields] = table
        return table


@dataclass(frozen=True, slots=True)
class Selector:
    """One SELECT map, compiled.

    ``eq_fields`` are the fields compared for equality (in :data:`SAMPLE_KEYS`
    order) and ``eq_values`` their literal strings or templates; ``regexes``
    the fields tested with a regex. ``location`` is ``file:line:col``.
    """

    eq_fields: tuple[str, ...]
    eq_values: tuple[str | Template, ...]
    regexes: tuple[tuple[str, RegexTemplate], ...]
    location: str
    #: the lookup key when every equality value is literal (most selectors), built once
    _literal_key: tuple[str, ...] | None = field(default=None, init=False, repr=False, compare=False)
    #: ``(getter, match)`` per regex when no regex has fields, built once
    _literal_tests: tuple[tuple[Any, Any], ...] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # A selector is asked once per host and window for each item it fills: what does not
        # depend on the sample in hand is worked out here, not on every call.
        if all(isinstance(v, str) for v in self.eq_values):
            object.__setattr__(self, "_literal_key", tuple(self.eq_values))  # type: ignore[arg-type]
        if all(rx.template.is_constant for _, rx in self.regexes):
            tests = tuple((attrgetter(f), rx.compile(None).match) for f, rx in self.regexes)
            object.__setattr__(self, "_literal_tests", tests)

    def positions(self, index: SampleIndex, scope: Any) -> Sequence[int]:
        key = self._literal_key
        if key is None:
            key = tuple([v if isinstance(v, str) else v.render(scope) for v in self.eq_values])
        candidates = index.positions(self.eq_fields, key)
        if not self.regexes or not candidates:
            return candidates
        tests = self._literal_tests
        if tests is None:
            tests = tuple((attrgetter(f), rx.compile(scope).match) for f, rx in self.regexes)
        samples = index.samples
        return [p for p in candidates if all(match(get(samples[p])) is not None for get, match in tests)]

    def describe(self) -> str:
        parts = [f"{f}={v if isinstance(v, str) else v.source!r}" for f, v in zip(self.eq_fields, self.eq_values)]
        parts += [f"{f}=/{rx.template.source}/" for f, rx in self.regexes]
        return "{" + ", ".join(parts) + "}"


def select_positions(selectors: Sequence[Selector], index: SampleIndex, scope: Any) -> Sequence[int]:
    """Samples matching any of ``selectors``, each once, in sample order."""
    if len(selectors) == 1:
        return selectors[0].positions(index, scope)
    found: set[int] = set()
    for selector in selectors:
        found.update(selector.positions(index, scope))
    return sorted(found)


@dataclass(frozen=True, slots=True)
class Condition:
    """The CONDITION of an ``!Events`` rule: literal values and regexes; empty matches all."""

    equals: tuple[tuple[str, str], ...]
    regexes: tuple[tuple[str, Any], ...]  # (field, compiled pattern)

    def matches(self, notification: Notification) -> bool:
        for name, value in self.equals:
            if getattr(notification, name) != value:
                return False
        for name, pattern in self.regexes:
            if pattern.match(getattr(notification, name)) is None:
                return False
        return True
