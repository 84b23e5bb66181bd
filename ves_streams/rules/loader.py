"""Safe YAML loading with positions: topology text -> a YAML node graph.

Barometer loads its files with PyYAML's full ``Loader`` and registers its tags
as ``YAMLObject`` subclasses, so a file may also construct arbitrary Python
objects. Here the file is only *composed* by a :class:`RulesLoader`, a
``yaml.SafeLoader`` subclass: the result is PyYAML's node graph (anchors
resolved to shared nodes, every node carrying its start mark), which the
compiler walks. Plain scalars are constructed by ``SafeLoader``'s own
constructors, merge keys by its own ``flatten_mapping``, so anchors, aliases
and ``<<:`` behave exactly as in Barometer.

Every tag in the file is checked before anything is compiled: our tags (see
:data:`KNOWN_TAGS`) and YAML's plain types are accepted, anything else
(``!Measurement``, ``!!python/object``) is a :class:`RuleError` at its line
and column, including in top-level keys Barometer would have ignored.

``RulesLoader`` also registers a constructor for each of our tags that builds
an inert :class:`TaggedValue`, so ``yaml.load(text, Loader=RulesLoader)`` is
safe to call on a topology from any tool.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from .errors import RuleError

__all__ = [
    "KNOWN_TAGS",
    "RULE_TAGS",
    "RulesLoader",
    "TaggedValue",
    "Document",
    "read_document",
    "parse_document",
    "position",
]

#: Top-level rule tags.
RULE_TAGS = frozenset({"!Measurements", "!Events", "!Heartbeat"})
#: Every tag a topology may use: Barometer's, then ves-streams extensions.
KNOWN_TAGS = frozenset(
    {
        "!Measurements",
        "!Events",
        "!ArrayItem",
        "!ValueItem",
        "!Number",
        "!Bytes2Kibibytes",
        "!StripExtraDash",
        "!MapValue",
        # ves-streams extensions
        "!Heartbeat",
        "!MapItem",
        "!SumItem",
        "!Microseconds",
    }
)
_YAML = "tag:yaml.org,2002:"
#: YAML's own types that make sense in a JSON event (and ``<<`` merge keys).
PLAIN_TAGS = frozenset(_YAML + t for t in ("str", "int", "float", "bool", "null", "map", "seq", "merge"))


@dataclass(frozen=True, slots=True)
class TaggedValue:
    """What ``yaml.load(..., Loader=RulesLoader)`` returns for one of our tags: inert data."""

    tag: str
    node: Node


class RulesLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that knows the ves-streams tags and nothing else."""


def _construct_tagged(loader: RulesLoader, node: Node) -> TaggedValue:
    return TaggedValue(node.tag, node)


for _tag in KNOWN_TAGS:
    RulesLoader.add_constructor(_tag, _construct_tagged)


@dataclass(frozen=True, slots=True)
class Document:
    """A composed topology file: its root mapping and the loader that composed it.

    ``path`` is the file name as the user gave it; it prefixes every message.
    """

    path: str
    root: MappingNode
    loader: RulesLoader

    def construct(self, node: Node) -> Any:
        """The plain Python value of a node that holds only YAML types."""
        return self.loader.construct_object(node, deep=True)

    def flatten(self, node: MappingNode) -> None:
        """Apply ``<<`` merge keys in place, with PyYAML's own semantics."""
        try:
            self.loader.flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            raise _yaml_error(self.path, exc) from None

    def error(self, node: Node | None, rule: str | None, message: str, hint: str | None = None) -> RuleError:
        line, column = position(node)
        return RuleError(self.path, line, column, rule, message, hint)

    def location(self, node: Node) -> str:
        line, column = position(node)
        return f"{self.path}:{line}:{column}"


def position(node: Node | None) -> tuple[int | None, int | None]:
    """1-based line and column of a node's start."""
    if node is None or node.start_mark is None:
        return None, None
    return node.start_mark.line + 1, node.start_mark.column + 1


def read_document(path: str | os.PathLike[str]) -> Document:
    """Read and compose a topology file; any failure is a :class:`RuleError`."""
    shown = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise RuleError(shown, None, None, None, f"cannot read the file: {exc.strerror or exc}",
                        "check the path and its permissions") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RuleError(shown, None, None, None, f"the file is not UTF-8 ({exc.reason} at byte {exc.start})",
                        "save it as UTF-8") from None
    return parse_document(text, shown)


def parse_document(text: str, path: str) -> Document:
    """Compose YAML text (one document whose root is a mapping) and check every tag."""
    loader = RulesLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(path, exc) from None
    except yaml.YAMLError as exc:
        raise RuleError(path, None, None, None, f"invalid YAML: {exc}", "fix the YAML syntax") from None
    finally:
        loader.dispose()
    if root is None:
        raise RuleError(path, None, None, None, "the file is empty",
                        "define at least one !Measurements, !Events or !Heartbeat rule")
    if not isinstance(root, MappingNode) or root.tag != _YAML + "map":
        line, column = position(root)
        raise RuleError(path, line, column, None, "the top level must be a mapping of rule names to rules",
                        "write 'Name: !Measurements' and similar at the top level")
    _check_tags(path, root)
    return Document(path, root, loader)


def _check_tags(path: str, root: Node) -> None:
    seen: set[int] = set()
    stack: list[Node] = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        tag = node.tag
        if tag not in KNOWN_TAGS and tag not in PLAIN_TAGS:
            line, column = position(node)
            if tag.startswith(_YAML):
                kind = tag[len(_YAML):]
                hint = "quote the value to keep it a string" if kind in ("timestamp", "binary") else (
                    "use plain YAML mappings, lists, strings, numbers, booleans and null")
                raise RuleError(path, line, column, None, f"unsupported YAML type !!{kind}", hint)
            raise RuleError(
                path, line, column, None, f"unknown tag {tag!r}",
                "known tags: " + ", ".join(sorted(KNOWN_TAGS)),
            )
        if isinstance(node, MappingNode):
            for key, value in node.value:
                stack.append(key)
                stack.append(value)
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)


def _yaml_error(path: str, exc: yaml.MarkedYAMLError) -> RuleError:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "invalid YAML"
    if exc.context and exc.problem:
        problem = f"{exc.context}, {exc.problem}"
    return RuleError(
        path,
        mark.line + 1 if mark else None,
        mark.column + 1 if mark else None,
        None,
        f"invalid YAML: {problem}",
        "fix the YAML syntax at this position",
    )
