"""Rule tree -> plan: every rule compiled once, at load time.

The compiler walks the YAML node graph of a :class:`~.loader.Document` and
produces the immutable nodes of :mod:`.plan`: templates parsed and checked,
regexes compiled, selectors split into an index lookup and regex tests,
constants folded. Everything that can be wrong with a file without seeing
data is reported here, as a :class:`RuleError` with the file, line and
column, the rule, and a hint; what is left for run time is data-dependent
(a ``!ValueItem`` matching two samples, an unmapped severity, a template
rendering something ``!Number`` cannot parse).

Scopes follow Barometer: in a ``!Measurements`` rule templates see the
selected sample as ``vl``; a nested item's SELECT (and DEFAULT) is rendered
with the enclosing sample, its ITEM-DESC / VALUE / KEY with the sample it
selects; ``!Events`` see the notification as ``n``; everything sees
``system`` and ``config``. Where an item groups by INDEX-KEY only those
fields of ``vl`` are defined (Barometer would render the others as ``None``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import RuleError
from .header import HEADER_KEY, TopologyHeader, default_header, parse_header
from .loader import RULE_TAGS, Document
from .plan import (
    CONVERTERS,
    ArrayItemNode,
    Const,
    Convert,
    EventRule,
    HeartbeatRule,
    ListNode,
    MapItemNode,
    MapNode,
    MapValueNode,
    MeasurementRule,
    Node as PlanNode,
    SumItemNode,
    Text,
    ValueItemNode,
    to_number,
)
from .selectors import NOTIFICATION_KEYS, SAMPLE_KEYS, Condition, Selector
from .templates import RegexTemplate, Template, TemplateProblem, is_regex_source, parse_template

__all__ = ["Plan", "compile_document", "MAX_ELEMENTS"]

_YAML = "tag:yaml.org,2002:"
_STR, _MAP, _SEQ = _YAML + "str", _YAML + "map", _YAML + "seq"
_CONSTANT_TAGS = frozenset({_YAML + "int", _YAML + "float", _YAML + "bool", _YAML + "null"})
#: A file whose aliases expand to more elements than this is refused (alias bombs).
MAX_ELEMENTS = 200_000


@dataclass(frozen=True, slots=True)
class Plan:
    """A compiled topology: its header and its rules in file order."""

    header: TopologyHeader
    measurements: tuple[MeasurementRule, ...]
    events: tuple[EventRule, ...]
    heartbeats: tuple[HeartbeatRule, ...]


@dataclass(frozen=True, slots=True)
class _Ctx:
    """Where in a rule the compiler is: which template roots exist, whether samples do."""

    rule: str
    roots: Mapping[str, frozenset[str] | None]
    where: str
    samples: bool

    def per_sample(self, where: str) -> _Ctx:
        roots = dict(self.roots)
        roots["vl"] = None
        return _Ctx(self.rule, MappingProxyType(roots), where, True)

    def grouped(self, keys: tuple[str, ...], where: str) -> _Ctx:
        roots = dict(self.roots)
        roots["vl"] = frozenset(keys)
        return _Ctx(self.rule, MappingProxyType(roots), where, True)


def compile_document(doc: Document, name: str) -> Plan:
    """Compile every rule of ``doc``; raise the first :class:`RuleError` found."""
    return _Compiler(doc).compile(name)


class _Compiler:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self._active: set[int] = set()
        self._elements = 0

    # ---------------------------------------------------------------- top level

    def compile(self, name: str) -> Plan:
        doc = self.doc
        header: TopologyHeader | None = None
        measurements: list[MeasurementRule] = []
        events: list[EventRule] = []
        heartbeats: list[HeartbeatRule] = []
        seen: dict[str, Node] = {}
        for key_node, value_node in doc.root.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag != _STR:
                if key_node.tag == _YAML + "merge":
                    continue  # a top-level '<<' only feeds anchors
                raise doc.error(key_node, None, "top-level keys must be rule names (strings)",
                                "quote the key")
            key = key_node.value
            if key == HEADER_KEY:
                header = parse_header(doc, value_node, name)
                continue
            if value_node.tag not in RULE_TAGS:
                continue  # plain YAML used through anchors, as in Barometer
            if key in seen:
                raise doc.error(key_node, key, "a rule with this name is already defined",
                                f"rename one of them (the first is at line {seen[key].start_mark.line + 1})")
            seen[key] = key_node
            if value_node.tag == "!Measurements":
                measurements.append(self._measurements(key, value_node))
            elif value_node.tag == "!Events":
                events.append(self._events(key, value_node))
            else:
                heartbeats.append(self._heartbeat(key, value_node))
        if not (measurements or events or heartbeats):
            raise doc.error(doc.root, None, "no rules: nothing would ever be rendered",
                            "tag a top-level key with !Measurements, !Events or !Heartbeat")
        if header is None:
            header = default_header(doc, name)
        if len(heartbeats) > 1:
            raise doc.error(doc.root, heartbeats[1].name, "more than one !Heartbeat rule",
                            "keep one: a host sends one heartbeat per interval")
        return Plan(header, tuple(measurements), tuple(events), tuple(heartbeats))

    def _measurements(self, rule: str, node: Node) -> MeasurementRule:
        spec = self._spec(node, rule, "!Measurements", {"SELECT": True, "INDEX-KEY": False, "ITEM-DESC": False})
        selectors = tuple(self._selector(v, rule, None) for _, v in spec.get("SELECT", ()))
        index_keys = self._index_keys(spec, rule)
        desc = self._required(spec, "ITEM-DESC", node, rule, "!Measurements")
        if not selectors and not index_keys:
            raise self.doc.error(node, rule, "!Measurements needs a SELECT or an INDEX-KEY",
                                 "add e.g. '- SELECT: {plugin: memory, type_instance: free}'")
        base = _Ctx(rule, MappingProxyType({"system": None, "config": None}), "a !Measurements rule", True)
        ctx = base.grouped(index_keys, "this rule") if index_keys else base.per_sample("a !Measurements rule")
        item = self._event_body(desc, ctx)
        return MeasurementRule(rule, selectors, index_keys, item, self.doc.location(node))

    def _events(self, rule: str, node: Node) -> EventRule:
        spec = self._spec(node, rule, "!Events", {"ITEM-DESC": False, "CONDITION": False})
        desc = self._required(spec, "ITEM-DESC", node, rule, "!Events")
        condition = self._condition(spec["CONDITION"][0][1], rule) if "CONDITION" in spec else Condition((), ())
        roots = {"n": None, "alarm": None, "system": None, "config": None}
        ctx = _Ctx(rule, MappingProxyType(roots), "an !Events rule", False)
        return EventRule(rule, condition, self._event_body(desc, ctx), self.doc.location(node))

    def _heartbeat(self, rule: str, node: Node) -> HeartbeatRule:
        spec = self._spec(node, rule, "!Heartbeat", {"ITEM-DESC": False})
        desc = self._required(spec, "ITEM-DESC", node, rule, "!Heartbeat")
        ctx = _Ctx(rule, MappingProxyType({"hb": None, "system": None, "config": None}), "a !Heartbeat rule", False)
        return HeartbeatRule(rule, self._event_body(desc, ctx), self.doc.location(node))

    def _event_body(self, node: Node, ctx: _Ctx) -> PlanNode:
        if not isinstance(node, MappingNode) or node.tag != _MAP:
            raise self.doc.error(node, ctx.rule, "the ITEM-DESC of a rule must be a mapping (the event)",
                                 "write 'ITEM-DESC: {event: {commonEventHeader: ..., ...}}'")
        return self._value(node, ctx)

    # ---------------------------------------------------------------- items

    def _spec(
        self, node: Node, rule: str, tag: str, keys: Mapping[str, bool]
    ) -> dict[str, list[tuple[Node, Node]]]:
        """Read a ``- KEY: value`` list; ``keys`` maps each allowed key to 'may repeat'."""
        doc = self.doc
        allowed = ", ".join(keys)
        if not isinstance(node, SequenceNode):
            raise doc.error(node, rule, f"{tag} must be a list of one-key mappings",
                            f"write it as '{tag}' followed by lines '- KEY: value' with KEY one of {allowed}")
        out: dict[str, list[tuple[Node, Node]]] = {}
        for element in node.value:
            if not isinstance(element, MappingNode) or element.tag != _MAP:
                raise doc.error(element, rule, f"each element of {tag} must be a mapping such as '- SELECT: ...'",
                                f"keys: {allowed}")
            for key_node, value_node in element.value:
                key = key_node.value if isinstance(key_node, ScalarNode) else None
                if key not in keys:
                    raise doc.error(key_node, rule, f"unknown key {key!r} in {tag}", f"keys of {tag}: {allowed}")
                assert isinstance(key, str)
                if key in out and not keys[key]:
                    raise doc.error(key_node, rule, f"{key} is given twice in {tag}", "keep one")
                out.setdefault(key, []).append((key_node, value_node))
        return out

    def _required(
        self, spec: Mapping[str, list[tuple[Node, Node]]], key: str, node: Node, rule: str, tag: str
    ) -> Node:
        if key not in spec:
            hint = {
                "ITEM-DESC": "add '- ITEM-DESC:' with the template of what to render",
                "SELECT": "add '- SELECT:' with the sample fields to match",
                "KEY": "add '- KEY: \"{vl.type_instance}\"' (the key rendered for each sample)",
            }.get(key, f"add '- {key}:'")
            raise self.doc.error(node, rule, f"{tag} has no {key}", hint)
        return spec[key][0][1]

    def _index_keys(self, spec: Mapping[str, list[tuple[Node, Node]]], rule: str) -> tuple[str, ...]:
        if "INDEX-KEY" not in spec:
            return ()
        node = spec["INDEX-KEY"][0][1]
        hint = "list sample fields, e.g. [plugin, plugin_instance]; fields: " + ", ".join(SAMPLE_KEYS)
        if not isinstance(node, SequenceNode) or node.tag != _SEQ or not node.value:
            raise self.doc.error(node, rule, "INDEX-KEY must be a non-empty list of sample fields", hint)
        keys: list[str] = []
        for element in node.value:
            if not isinstance(element, ScalarNode) or element.value not in SAMPLE_KEYS:
                raise self.doc.error(element, rule, f"INDEX-KEY cannot group by {element.value!r}", hint)
            if element.value in keys:
                raise self.doc.error(element, rule, f"{element.value} is listed twice in INDEX-KEY", "keep one")
            keys.append(element.value)
        return tuple(keys)

    def _selectors(self, spec: Mapping[str, list[tuple[Node, Node]]], node: Node, ctx: _Ctx, tag: str
                   ) -> tuple[Selector, ...]:
        self._required(spec, "SELECT", node, ctx.rule, tag)
        return tuple(self._selector(v, ctx.rule, ctx) for _, v in spec["SELECT"])

    def _needs_samples(self, node: Node, ctx: _Ctx) -> None:
        if not ctx.samples:
            raise self.doc.error(node, ctx.rule, f"{node.tag} selects samples, which do not exist in {ctx.where}",
                                 "use it inside a !Measurements rule")

    def _array_item(self, node: Node, ctx: _Ctx) -> PlanNode:
        self._needs_samples(node, ctx)
        spec = self._spec(node, ctx.rule, "!ArrayItem", {"SELECT": True, "INDEX-KEY": False, "ITEM-DESC": False})
        selectors = tuple(self._selector(v, ctx.rule, ctx) for _, v in spec.get("SELECT", ()))
        index_keys = self._index_keys(spec, ctx.rule)
        desc = self._required(spec, "ITEM-DESC", node, ctx.rule, "!ArrayItem")
        if not selectors and not index_keys:
            raise self.doc.error(node, ctx.rule, "!ArrayItem needs a SELECT or an INDEX-KEY",
                                 "add '- SELECT:' with the sample fields to match")
        inner = ctx.grouped(index_keys, "this !ArrayItem") if index_keys else ctx.per_sample("this !ArrayItem")
        return ArrayItemNode(selectors, index_keys, self._value(desc, inner), self.doc.location(node))

    def _value_item(self, node: Node, ctx: _Ctx) -> PlanNode:
        self._needs_samples(node, ctx)
        spec = self._spec(node, ctx.rule, "!ValueItem", {"SELECT": True, "VALUE": False, "DEFAULT": False})
        selectors = self._selectors(spec, node, ctx, "!ValueItem")
        location = self.doc.location(node)
        inner = ctx.per_sample("this !ValueItem's VALUE")
        if "VALUE" in spec:
            value = self._value(spec["VALUE"][0][1], inner)
        else:  # Barometer's default: VALUE: !Number "{vl.value}"
            value = Convert(self._template("{vl.value}", node, inner), to_number, "!Number", location)
        default = self._value(spec["DEFAULT"][0][1], ctx) if "DEFAULT" in spec else None
        return ValueItemNode(selectors, value, default, location)

    def _map_item(self, node: Node, ctx: _Ctx) -> PlanNode:
        self._needs_samples(node, ctx)
        spec = self._spec(node, ctx.rule, "!MapItem", {"SELECT": True, "KEY": False, "VALUE": False})
        selectors = self._selectors(spec, node, ctx, "!MapItem")
        inner = ctx.per_sample("this !MapItem")
        key = self._value(self._required(spec, "KEY", node, ctx.rule, "!MapItem"), inner)
        if "VALUE" in spec:
            value = self._value(spec["VALUE"][0][1], inner)
        else:
            value = Text(self._template("{vl.value}", node, inner))
        return MapItemNode(selectors, key, value, self.doc.location(node))

    def _sum_item(self, node: Node, ctx: _Ctx) -> PlanNode:
        self._needs_samples(node, ctx)
        spec = self._spec(node, ctx.rule, "!SumItem", {"SELECT": True, "DEFAULT": False})
        selectors = self._selectors(spec, node, ctx, "!SumItem")
        default = self._value(spec["DEFAULT"][0][1], ctx) if "DEFAULT" in spec else None
        return SumItemNode(selectors, default, self.doc.location(node))

    def _map_value(self, node: MappingNode, ctx: _Ctx) -> PlanNode:
        doc = self.doc
        doc.flatten(node)
        parts: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, ScalarNode) else None
            if key not in ("VALUE", "TO"):
                raise doc.error(key_node, ctx.rule, f"unknown key {key!r} in !MapValue", "keys: VALUE, TO")
            parts[key] = value_node
        for key in ("VALUE", "TO"):
            if key not in parts:
                raise doc.error(node, ctx.rule, f"!MapValue has no {key}",
                                "write '!MapValue {VALUE: \"{n.severity}\", TO: {NOTIF_OKAY: NORMAL, ...}}'")
        table_node = parts["TO"]
        if not isinstance(table_node, MappingNode) or table_node.tag != _MAP:
            raise doc.error(table_node, ctx.rule, "the TO of !MapValue must be a mapping", "write 'TO: {a: b, ...}'")
        doc.flatten(table_node)
        table: dict[Any, PlanNode] = {}
        for key_node, target in table_node.value:
            if not isinstance(key_node, ScalarNode):
                raise doc.error(key_node, ctx.rule, "the keys of a TO table must be scalars", "write 'KEY: value'")
            table[doc.construct(key_node)] = self._literal(target, ctx.rule)
        value = self._value(parts["VALUE"], ctx)
        if isinstance(value, Const):
            try:
                found = value.value in table
            except TypeError:
                found = False
            if not found:
                raise doc.error(parts["VALUE"], ctx.rule, f"!MapValue VALUE {value.value!r} is not in its TO table",
                                f"add {value.value!r} to TO or make VALUE a template")
        return MapValueNode(value, MappingProxyType(table), doc.location(node))

    # ---------------------------------------------------------------- selectors

    def _selector(self, node: Node, rule: str, ctx: _Ctx | None) -> Selector:
        """A SELECT map; ``ctx`` None means top-level (literal values, as Barometer)."""
        doc = self.doc
        if not isinstance(node, MappingNode) or node.tag != _MAP:
            raise doc.error(node, rule, "SELECT must be a mapping of sample fields to values",
                            "write e.g. 'SELECT: {plugin: cpu, type: percent}'")
        doc.flatten(node)
        fields: dict[str, str | Template | RegexTemplate] = {}
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, ScalarNode) else None
            if name not in SAMPLE_KEYS:
                raise doc.error(key_node, rule, f"SELECT cannot match on {name!r}",
                                "sample fields: " + ", ".join(SAMPLE_KEYS))
            fields[name] = self._match_value(value_node, rule, ctx, "SELECT")
        eq = [(f, fields[f]) for f in SAMPLE_KEYS if f in fields and not isinstance(fields[f], RegexTemplate)]
        regexes = tuple((f, v) for f, v in fields.items() if isinstance(v, RegexTemplate))
        return Selector(
            tuple(f for f, _ in eq),
            tuple(v for _, v in eq),  # type: ignore[misc]
            regexes,
            doc.location(node),
        )

    def _condition(self, node: Node, rule: str) -> Condition:
        doc = self.doc
        if not isinstance(node, MappingNode) or node.tag != _MAP:
            raise doc.error(node, rule, "CONDITION must be a mapping of notification fields to values",
                            "write e.g. 'CONDITION: {plugin: virt}'")
        doc.flatten(node)
        equals: list[tuple[str, str]] = []
        regexes: list[tuple[str, Any]] = []
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, ScalarNode) else None
            if name not in NOTIFICATION_KEYS:
                raise doc.error(key_node, rule, f"CONDITION cannot match on {name!r}",
                                "notification fields: " + ", ".join(NOTIFICATION_KEYS))
            value = self._match_value(value_node, rule, None, "CONDITION")
            if isinstance(value, RegexTemplate):
                regexes.append((name, re.compile(value.template.constant())))
            else:
                assert isinstance(value, str)
                equals.append((name, value))
        return Condition(tuple(equals), tuple(regexes))

    def _match_value(self, node: Node, rule: str, ctx: _Ctx | None, what: str) -> str | Template | RegexTemplate:
        doc = self.doc
        if not isinstance(node, ScalarNode) or node.tag != _STR:
            shown = node.value if isinstance(node, ScalarNode) else "a collection"
            raise doc.error(node, rule, f"{what} values must be strings, got {shown!r}",
                            f'quote it: "{shown}"' if isinstance(node, ScalarNode) else "write a string or /regex/")
        text = node.value
        regex = is_regex_source(text)
        if ctx is None:  # literal
            if not regex:
                return text
            self._check_regex(text[1:-1], node, rule)
            return RegexTemplate(Template(text[1:-1], (text[1:-1],)))
        template = self._template(text[1:-1] if regex else text, node, ctx)
        if not regex:
            return template.constant() if template.is_constant else template
        probe = "".join(p if isinstance(p, str) else "x" for p in template.parts)
        self._check_regex(probe, node, rule)
        return RegexTemplate(template)

    def _check_regex(self, pattern: str, node: Node, rule: str) -> None:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise self.doc.error(node, rule, f"bad regex /{pattern}/: {exc}",
                                 "fix the pattern; it is matched with Python's re.match (anchored at the start)"
                                 ) from None

    # ---------------------------------------------------------------- values

    def _value(self, node: Node, ctx: _Ctx) -> PlanNode:
        self._elements += 1
        if self._elements > MAX_ELEMENTS:
            raise self.doc.error(node, ctx.rule, f"the rules expand to more than {MAX_ELEMENTS} elements",
                                 "aliases nested too deeply? reference fewer anchors")
        tag = node.tag
        if isinstance(node, ScalarNode):
            if tag == _STR:
                template = self._template(node.value, node, ctx)
                return Const(template.constant()) if template.is_constant else Text(template)
            if tag in CONVERTERS:
                return self._convert(node, ctx)
            if tag in _CONSTANT_TAGS:
                return Const(self._constant(node, ctx))
        key = id(node)
        if key in self._active:
            raise self.doc.error(node, ctx.rule, "this alias refers to a mapping or list that contains it",
                                 "an anchor cannot be used inside itself")
        self._active.add(key)
        try:
            if isinstance(node, MappingNode):
                if tag == _MAP:
                    return self._mapping(node, ctx)
                if tag == "!MapValue":
                    return self._map_value(node, ctx)
            elif isinstance(node, SequenceNode):
                if tag == _SEQ:
                    return ListNode(tuple(self._value(v, ctx) for v in node.value))
                if tag == "!ArrayItem":
                    return self._array_item(node, ctx)
                if tag == "!ValueItem":
                    return self._value_item(node, ctx)
                if tag == "!MapItem":
                    return self._map_item(node, ctx)
                if tag == "!SumItem":
                    return self._sum_item(node, ctx)
        finally:
            self._active.discard(key)
        raise self._misplaced(node, ctx)

    def _misplaced(self, node: Node, ctx: _Ctx) -> RuleError:
        tag = node.tag
        if tag in RULE_TAGS:
            return self.doc.error(node, ctx.rule, f"{tag} is a top-level rule and cannot be nested",
                                  "move it to a top-level key")
        kind = {ScalarNode: "a scalar", MappingNode: "a mapping", SequenceNode: "a list"}[type(node)]
        expected = {
            "!MapValue": "a mapping {VALUE: ..., TO: {...}}",
            "!ArrayItem": "a list of '- KEY: value' elements",
            "!ValueItem": "a list of '- KEY: value' elements",
            "!MapItem": "a list of '- KEY: value' elements",
            "!SumItem": "a list of '- KEY: value' elements",
        }.get(tag, "a scalar template")
        if tag == _YAML + "merge":
            return self.doc.error(node, ctx.rule, "'<<' merge keys are only valid as mapping keys",
                                  "write '<<: *anchor' inside a mapping")
        return self.doc.error(node, ctx.rule, f"{tag} cannot be applied to {kind}", f"{tag} takes {expected}")

    def _mapping(self, node: MappingNode, ctx: _Ctx) -> PlanNode:
        doc = self.doc
        doc.flatten(node)
        items: dict[str, PlanNode] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag != _STR:
                shown = key_node.value if isinstance(key_node, ScalarNode) else "a collection"
                raise doc.error(key_node, ctx.rule, f"keys of an event must be strings, got {shown!r}",
                                f'quote it: "{shown}"' if isinstance(key_node, ScalarNode) else "use a string key")
            items[key_node.value] = self._value(value_node, ctx)  # later keys override, keep first position
        return MapNode(tuple(items.items()))

    def _literal(self, node: Node, rule: str) -> PlanNode:
        """A TO-table value: plain YAML data, rendered as is (no templates, as in Barometer)."""
        doc = self.doc
        if isinstance(node, ScalarNode) and (node.tag == _STR or node.tag in _CONSTANT_TAGS):
            value = doc.construct(node)
            if isinstance(value, float) and not math.isfinite(value):
                raise doc.error(node, rule, f"{node.value!r} is not a finite number", "JSON has no NaN or infinity")
            return Const(value)
        if isinstance(node, MappingNode) and node.tag == _MAP:
            doc.flatten(node)
            return MapNode(tuple((str(doc.construct(k)), self._literal(v, rule)) for k, v in node.value))
        if isinstance(node, SequenceNode) and node.tag == _SEQ:
            return ListNode(tuple(self._literal(v, rule) for v in node.value))
        raise doc.error(node, rule, f"tag {node.tag!r} is not allowed in a TO table",
                        "TO values are plain data: strings, numbers, mappings, lists")

    def _convert(self, node: ScalarNode, ctx: _Ctx) -> PlanNode:
        tag = node.tag
        template = self._template(node.value, node, ctx)
        convert = CONVERTERS[tag]
        if template.is_constant:
            text = template.constant()
            try:
                return Const(convert(text))
            except ValueError as exc:
                raise self.doc.error(node, ctx.rule, f"{tag} cannot convert {text!r}: {exc}",
                                     f"give {tag} a number or a template such as \"{{vl.value}}\"") from None
        return Convert(template, convert, tag, self.doc.location(node))

    def _constant(self, node: ScalarNode, ctx: _Ctx) -> Any:
        value = self.doc.construct(node)
        if isinstance(value, float) and not math.isfinite(value):
            raise self.doc.error(node, ctx.rule, f"{node.value!r} is not a finite number",
                                 "JSON has no NaN or infinity; quote it to send a string")
        return value

    def _template(self, text: str, node: Node, ctx: _Ctx) -> Template:
        try:
            return parse_template(text, ctx.roots, ctx.where)
        except TemplateProblem as exc:
            raise self.doc.error(node, ctx.rule, exc.message, exc.hint) from None
