"""What a worker's ``/metrics`` serves, and what a PromQL expression asks for.

Shared by the checks of the Prometheus rules and of the Grafana dashboard
(``deploy/``): every metric, label and label value they use must be one the
code exports, so that a renamed metric breaks a test here rather than an
alert in production.

* :func:`exposed_metrics` builds the list from the code itself: the
  processing metrics (:class:`ves_streams.metrics.Metrics` on a fresh
  registry, with a lag source and a readiness so that its custom collectors
  show their labels), the sink's (module level in
  :mod:`ves_streams.sink.metrics`) and the process collectors that
  prometheus_client puts on the default registry, which ``/metrics`` serves.
  Names are as exposed: a Counter ``x`` is ``x_total`` (and ``x_created``),
  a Histogram ``h`` is ``h_bucket`` (label ``le``), ``h_sum``, ``h_count``.
* :func:`parse_promql` finds the selectors (metric name, matchers) and the
  grouping labels (``by``, ``without``, ``on``, ``ignoring``,
  ``group_left``, ``group_right``) of an expression; Grafana's ``$variables``
  are accepted.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "ves_streams"
RULES = REPO / "deploy" / "prometheus" / "ves-streams-alerts.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "ves-streams.json"

#: Set (CI does) to make a missing promtool a failure rather than a skip.
REQUIRE_PROMETHEUS = "VES_STREAMS_REQUIRE_PROMETHEUS"
#: Labels Prometheus attaches to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})
#: Series Prometheus makes itself for every target (name -> labels beyond job and instance).
PROMETHEUS_SERIES: dict[str, frozenset[str]] = {
    "up": frozenset(),
    "scrape_duration_seconds": frozenset(),
    "scrape_samples_scraped": frozenset(),
}

#: Labels whose values are fixed words of the code; an equality matcher on one of them must
#: use a word that appears as a string literal in ``ves_streams/`` (a typo finds nothing).
VOCABULARY_LABELS = frozenset({"outcome", "reason", "stage", "kind", "endpoint", "check"})


def _exposed_names(family_name: str, family_type: str) -> list[tuple[str, frozenset[str]]]:
    """The sample names (and the labels they add) of a metric family of a prometheus_client type."""
    none: frozenset[str] = frozenset()
    if family_type == "counter":
        return [(family_name + "_total", none), (family_name + "_created", none)]
    if family_type == "histogram":
        return [(family_name + "_bucket", frozenset({"le"})), (family_name + "_sum", none),
                (family_name + "_count", none), (family_name + "_created", none)]  # fmt: skip
    if family_type == "summary":
        return [(family_name, frozenset({"quantile"})), (family_name + "_sum", none),
                (family_name + "_count", none), (family_name + "_created", none)]  # fmt: skip
    if family_type == "info":
        return [(family_name + "_info", none)]
    return [(family_name, none)]


@lru_cache(maxsize=1)
def exposed_metrics() -> dict[str, frozenset[str]]:
    """Every sample name a worker's ``/metrics`` serves -> its label names (job, instance excluded)."""
    from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
    from prometheus_client.metrics import MetricWrapperBase

    from ves_streams.metrics import Metrics, Readiness
    from ves_streams.sink import metrics as sink_metrics

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    # the custom collectors export samples (and so their labels) only once they have a source
    metrics.add_lag_source(lambda: [("a-topic", 0, 0)])
    metrics.report_readiness(Readiness({"a-check": lambda: None}))
    wrappers: list[MetricWrapperBase] = [v for v in vars(metrics).values() if isinstance(v, MetricWrapperBase)]
    for value in vars(sink_metrics).values():
        if isinstance(value, MetricWrapperBase):
            registry.register(value)  # a collector may sit on several registries
            wrappers.append(value)
    # what prometheus_client registers on the default registry, which /metrics serves
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)

    # label names of metrics without children yet: their wrappers know them
    declared = {w._name: frozenset(w._labelnames) for w in wrappers}  # noqa: SLF001 -- no public accessor
    found: dict[str, set[str]] = {}
    for family in registry.collect():
        labels = set(declared.get(family.name, ()))
        for sample in family.samples:
            labels.update(sample.labels)
        for name, extra in _exposed_names(family.name, family.type):
            found.setdefault(name, set()).update(labels - {"le", "quantile"} | extra)
        for sample in family.samples:  # names a collector makes up beyond the usual suffixes
            found.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(labels) for name, labels in found.items()}


def known_metrics() -> dict[str, frozenset[str]]:
    """What a rule or a panel may use: :func:`exposed_metrics` and Prometheus's own series."""
    return {**PROMETHEUS_SERIES, **exposed_metrics()}


@lru_cache(maxsize=1)
def source_strings() -> frozenset[str]:
    """Every string literal of the ``ves_streams`` package (the words label values are made of)."""
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
    return frozenset(found)


def rule_exprs() -> list[str]:
    """The ``expr`` of every rule of :data:`RULES`."""
    document = yaml.safe_load(RULES.read_text())
    return [rule["expr"] for group in document["groups"] for rule in group["rules"]]


def dashboard_panels(panels: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every panel of :data:`DASHBOARD`, those inside collapsed rows too."""
    if panels is None:
        panels = json.loads(DASHBOARD.read_text())["panels"]
    found = []
    for panel in panels:
        found.append(panel)
        found += dashboard_panels(panel.get("panels", []))
    return found


def dashboard_exprs() -> list[str]:
    """The ``expr`` of every target of every panel of :data:`DASHBOARD`."""
    return [t["expr"] for panel in dashboard_panels() for t in panel.get("targets", []) if t.get("expr")]


def promtool() -> str:
    """The promtool binary; skips the calling test without one, fails it if ``VES_STREAMS_REQUIRE_PROMETHEUS`` is set."""
    binary = shutil.which("promtool")
    if binary is None:
        message = "PROMTOOL UNAVAILABLE (apt-get install prometheus)"
        if REQUIRE_PROMETHEUS in os.environ:
            pytest.fail(f"{message}; {REQUIRE_PROMETHEUS} is set: the promtool checks of deploy/ must run")
        sys.stderr.write(f"\n*** {message}: the promtool checks of deploy/ are SKIPPED ***\n")
        pytest.skip(message)
    return binary


def without_grafana_variables(expr: str) -> str:
    """``expr`` as Prometheus sees it once Grafana has put in its variables (all workers, a 5 m rate interval)."""
    expr = re.sub(r"\$\{?__(rate_)?interval\}?", "5m", expr)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


# --------------------------------------------------------------------------
# PromQL


@dataclass(frozen=True)
class Selector:
    name: str
    #: label -> (operator, value)
    matchers: tuple[tuple[str, str, str], ...] = ()

    @property
    def labels(self) -> set[str]:
        return {label for label, _, _ in self.matchers}


@dataclass
class Query:
    selectors: list[Selector] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)

    @property
    def names(self) -> set[str]:
        return {s.name for s in self.selectors}


_AGGREGATIONS = frozenset({
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
    "quantile", "limitk", "limit_ratio",
})  # fmt: skip
_GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = frozenset({"and", "or", "unless", "offset", "bool", "atan2", "inf", "nan", "start", "end"})

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<variable>\$\{[^}]*\}|\$\w+)
  | (?P<range>\[[^\]]*\])
  | (?P<number>(?:0x[0-9a-fA-F]+|[0-9][0-9a-zA-Z_.]*|\.[0-9][0-9a-zA-Z_.]*)(?:[eE][+-]?[0-9]+)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=@])
  | (?P<punct>[(){},])
    """,
    re.X,
)


def _tokens(expr: str) -> list[tuple[str, str]]:
    out = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise ValueError(f"cannot read PromQL at {pos}: {expr[pos:pos + 30]!r} in {expr!r}")
        pos = match.end()
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            out.append((kind, match.group()))
    return out


def _unquote(text: str) -> str:
    if text.startswith("`"):
        return text[1:-1]
    return ast.literal_eval(text)  # PromQL's escapes are Go's, which Python reads alike for what we use


def parse_promql(expr: str) -> Query:
    """The selectors and grouping labels of ``expr`` (raises ``ValueError`` on what it cannot read)."""
    tokens = _tokens(expr)
    query = Query()
    i = 0

    def peek(at: int) -> tuple[str, str]:
        return tokens[at] if at < len(tokens) else ("end", "")

    def matchers(at: int) -> tuple[list[tuple[str, str, str]], int]:
        """Reads ``{label op "value", ...}`` from the ``{`` at ``at``; returns them and the index after ``}``."""
        assert tokens[at] == ("punct", "{")
        at += 1
        found = []
        while peek(at) != ("punct", "}"):
            (kind, label), (op_kind, op), (value_kind, value) = peek(at), peek(at + 1), peek(at + 2)
            if kind != "ident" or op_kind != "op" or op not in ("=", "!=", "=~", "!~"):
                raise ValueError(f"cannot read the matchers of {expr!r}")
            if value_kind == "variable":  # Grafana: {instance=~$instance} without quotes
                value = "$"
            elif value_kind == "string":
                value = _unquote(value)
            else:
                raise ValueError(f"cannot read the matchers of {expr!r}")
            found.append((label, op, value))
            at += 3
            if peek(at) == ("punct", ","):
                at += 1
        return found, at + 1

    while i < len(tokens):
        kind, text = tokens[i]
        if kind == "ident" and text in _GROUPING:
            i += 1
            if peek(i) == ("punct", "("):
                i += 1
                while peek(i) != ("punct", ")"):
                    label_kind, label = peek(i)
                    if label_kind == "ident":
                        query.grouping.add(label)
                    elif label != ",":
                        raise ValueError(f"cannot read the grouping of {expr!r}")
                    i += 1
                i += 1
            continue
        if kind == "ident" and (text in _AGGREGATIONS or text in _KEYWORDS or peek(i + 1) == ("punct", "(")):
            i += 1  # a function, an aggregation or a keyword
            continue
        if kind == "ident":
            if peek(i + 1) == ("punct", "{"):
                found, i = matchers(i + 1)
            else:
                found, i = [], i + 1
            query.selectors.append(Selector(text, tuple(found)))
            continue
        if (kind, text) == ("punct", "{"):  # {__name__="...", ...}
            found, i = matchers(i)
            names = [value for label, op, value in found if label == "__name__" and op == "="]
            if len(names) != 1:
                raise ValueError(f"a selector without a metric name in {expr!r}")
            query.selectors.append(Selector(names[0], tuple(m for m in found if m[0] != "__name__")))
            continue
        i += 1
    return query


def problems(expr: str, *, known: dict[str, frozenset[str]] | None = None) -> list[str]:
    """What in ``expr`` the code does not export: metric names, label names, vocabulary label values."""
    known = known_metrics() if known is None else known
    query = parse_promql(expr)
    found = []
    if not query.selectors:
        found.append(f"no metric in {expr!r}")
    available: set[str] = set(TARGET_LABELS)
    for selector in query.selectors:
        labels = known.get(selector.name)
        if labels is None:
            found.append(f"{selector.name}: no such metric (in {expr!r})")
            continue
        available |= labels
        for label, op, value in selector.matchers:
            if label not in labels and label not in TARGET_LABELS:
                found.append(f"{selector.name} has no label {label!r} (has {sorted(labels)}; in {expr!r})")
            elif label in VOCABULARY_LABELS and op in ("=", "!=") and value not in source_strings():
                found.append(f"{selector.name}{{{label}={value!r}}}: the code never uses that value (in {expr!r})")
    for label in sorted(query.grouping - available):
        found.append(f"grouping by {label!r}, a label none of {sorted(query.names)} has (in {expr!r})")
    return found
