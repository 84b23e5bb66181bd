"""The optional ``ves-streams:`` header that makes one file describe a whole topology.

::

    ves-streams:
      name: host                          # default: the file name without .yaml
      ves_version: "7.2.1"                # default "7.2.1"; "5.4.1" when there is no header
      values_topic: collectd              # Kafka topic of write_kafka value lists
      notifications_topic: collectd-notifications
      events_topic: ves-events            # rendered events, consumed by the sink
      interval: 10                        # seconds between measurement renders;
                                          # omit or null: use collectd's interval
      heartbeat_interval: 60              # seconds; omit: the measurement interval
      event_ids: deterministic            # or counter; omit: the caller decides
      alarm_lifecycle: true               # faults as alarms (VES 7.2); omit: on for VES 7, off for 5
      sink:                               # free-form options for the VES sink
        batch_size: 20

Barometer ignores top-level keys that are not rules, so a file with a header
still runs under Barometer; a Barometer file without one runs here with the
defaults above (and VES 5.4.1).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .loader import PLAIN_TAGS, Document

__all__ = ["HEADER_KEY", "VES_VERSIONS", "TopologyHeader", "parse_header", "default_header"]

HEADER_KEY = "ves-streams"
#: VES event listener versions a topology may declare.
VES_VERSIONS = ("5.0", "5.1", "5.2", "5.3", "5.4", "5.4.1", "7.0", "7.0.1", "7.1", "7.1.1", "7.2", "7.2.1")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


@dataclass(frozen=True, slots=True)
class TopologyHeader:
    """Settings of a topology, from its ``ves-streams:`` header or the defaults."""

    name: str
    ves_version: str = "7.2.1"
    values_topic: str = "collectd"
    notifications_topic: str = "collectd-notifications"
    events_topic: str = "ves-events"
    interval: float | None = None
    heartbeat_interval: float | None = None
    sink: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    source_path: str = ""
    event_ids: str | None = None
    #: the fault stage keeps alarms (one eventId from raise to clear); None: the VES version's default
    alarm_lifecycle: bool | None = None

    @property
    def ves_major(self) -> int:
        return int(self.ves_version.split(".", 1)[0])


def default_header(doc: Document, name: str) -> TopologyHeader:
    """A Barometer file without a header: defaults, and VES 5.4.1 as Barometer sends."""
    return TopologyHeader(name=name, ves_version="5.4.1", source_path=doc.path)


def parse_header(doc: Document, node: Node, name: str) -> TopologyHeader:
    """Validate the header mapping; every bad value is a RuleError naming the key."""
    if not isinstance(node, MappingNode) or node.tag != "tag:yaml.org,2002:map":
        raise doc.error(node, None, f"'{HEADER_KEY}' must be a mapping of settings",
                        "see topologies/README.md for the header keys")
    _plain_only(doc, node)
    doc.flatten(node)
    values: dict[str, Any] = {"name": name, "source_path": doc.path}
    known = {f for f in TopologyHeader.__dataclass_fields__ if f != "source_path"}
    for key_node, value_node in node.value:
        key = doc.construct(key_node)
        if key not in known:
            raise doc.error(key_node, None, f"unknown header key {key!r}",
                            "known keys: " + ", ".join(sorted(known)))
        value = doc.construct(value_node)
        values[key] = _check(doc, key, value, value_node)
    return TopologyHeader(**values)


def _check(doc: Document, key: str, value: Any, node: Node) -> Any:
    def bad(message: str, hint: str) -> Exception:
        return doc.error(node, None, f"header key '{key}': {message}", hint)

    if key == "name":
        if not isinstance(value, str) or not value.strip():
            raise bad("must be a non-empty string", "name the topology, e.g. 'name: host'")
        return value
    if key == "ves_version":
        text = value if isinstance(value, str) else None
        if text not in VES_VERSIONS:
            raise bad(f"{value!r} is not a VES version", 'quote it and use one of: ' + ", ".join(VES_VERSIONS))
        return text
    if key.endswith("_topic"):
        if not isinstance(value, str) or not _TOPIC.match(value):
            raise bad(f"{value!r} is not a Kafka topic name", "use 1-249 characters from [A-Za-z0-9._-]")
        return value
    if key in ("interval", "heartbeat_interval"):
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise bad(f"{value!r} is not a positive number of seconds", "write e.g. 10 or 2.5, or null")
        return float(value)
    if key == "event_ids":
        if value not in (None, "counter", "deterministic"):
            raise bad(f"{value!r} is not an id policy", "use 'counter' (Barometer's) or 'deterministic'")
        return value
    if key == "alarm_lifecycle":
        if value is not None and not isinstance(value, bool):
            raise bad(f"{value!r} is not true or false", "write 'alarm_lifecycle: true' or 'false' (or omit it)")
        return value
    if key == "sink":
        if value is None:
            value = {}
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise bad("must be a mapping with string keys", "write e.g. 'sink: {batch_size: 20}'")
        return MappingProxyType(dict(value))
    raise AssertionError(key)  # pragma: no cover - keys are checked against the dataclass


def _plain_only(doc: Document, root: Node) -> None:
    stack = [root]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.tag not in PLAIN_TAGS:
            raise doc.error(node, None, f"tag {node.tag!r} is not allowed in the '{HEADER_KEY}' header",
                            "the header holds plain settings; move rules to their own top-level keys")
        if isinstance(node, MappingNode):
            for k, v in node.value:
                stack += [k, v]
        elif isinstance(node, SequenceNode):
            stack += node.value
        elif not isinstance(node, ScalarNode):  # pragma: no cover
            raise doc.error(node, None, "unexpected YAML node")
