"""The Grafana dashboard (``deploy/grafana/ves-streams.json``): importable, and about metrics the code exports.

No Grafana runs here; these checks stand for what an import would refuse
or show broken: the JSON, the schema version (Grafana 10+), the data source
and ``job``/``instance`` variables every query goes through, panel ids and
positions, a query on every panel, every query parsed by ``promtool`` (skipped
without it unless ``VES_STREAMS_REQUIRE_PROMETHEUS`` is set, as in
``test_prometheus_rules.py``), and every metric, label and label value of
the queries checked against the code's registry
(:mod:`tests.deploy.metric_names`).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import metric_names
from tests.deploy.metric_names import DASHBOARD, dashboard_exprs, dashboard_panels, parse_promql, problems

DATASOURCE_UID = "${DS_PROMETHEUS}"


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return dashboard_panels(dashboard["panels"])


def _variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def _uses_datasource_variable(datasource: Any) -> bool:
    return isinstance(datasource, dict) and datasource.get("uid") == DATASOURCE_UID and datasource.get("type") == "prometheus"


def test_the_dashboard_is_for_grafana_10_and_later(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] >= 38
    assert dashboard["uid"] and dashboard["title"]
    assert dashboard.get("id") is None, "an exported dashboard carries no database id"


def test_data_source_job_and_instance_variables(dashboard: dict[str, Any]) -> None:
    variables = _variables(dashboard)
    source = variables["DS_PROMETHEUS"]
    assert source["type"] == "datasource" and source["query"] == "prometheus"
    for name in ("job", "instance"):
        variable = variables[name]
        assert variable["type"] == "query", name
        assert _uses_datasource_variable(variable["datasource"]), name
        query = variable["query"] if isinstance(variable["query"], str) else variable["query"]["query"]
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert match and match.group(2) == name, f"{name}: {query}"
        assert not problems(match.group(1)), problems(match.group(1))
    assert "$job" in variables["instance"]["definition"], "the worker list follows the chosen job"


def test_panel_ids_are_unique(panels: list[dict[str, Any]]) -> None:
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert all(isinstance(i, int) for i in ids)


def test_every_panel_has_a_place_and_none_overlap(panels: list[dict[str, Any]]) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert all(isinstance(grid.get(k), int) for k in ("x", "y", "w", "h")), panel["title"]
        assert 0 <= grid["x"] and grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_every_panel_queries_prometheus(panels: list[dict[str, Any]]) -> None:
    for panel in panels:
        if panel["type"] == "row":
            continue
        title = panel["title"]
        assert _uses_datasource_variable(panel.get("datasource")), f"{title}: datasource must be ${{DS_PROMETHEUS}}"
        targets = panel.get("targets", [])
        assert targets and all(t.get("expr", "").strip() for t in targets), f"{title}: every target needs an expr"
        refs = [t["refId"] for t in targets]
        assert len(refs) == len(set(refs)), f"{title}: refIds must be unique"
        for target in targets:
            assert _uses_datasource_variable(target.get("datasource", panel["datasource"])), title
        assert panel.get("description"), f"{title}: say what the panel shows"


def test_every_query_follows_the_job_and_instance_variables() -> None:
    for expr in dashboard_exprs():
        for selector in parse_promql(expr).selectors:
            matchers = {label: value for label, _, value in selector.matchers}
            assert matchers.get("job") == "$job" and matchers.get("instance") == "$instance", f"{selector.name} in {expr}"


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query (Grafana's variables put in) as a recording rule."""
    promtool = metric_names.promtool()
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": metric_names.without_grafana_variables(expr)}
        for i, expr in enumerate(dashboard_exprs())
    ]}]}  # fmt: skip
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(json.dumps(rules))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_metric_of_the_dashboard_is_exported_by_the_code() -> None:
    found = [problem for expr in dashboard_exprs() for problem in problems(expr)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    ("what", "metric"),
    [
        ("messages in per topic", "ves_streams_messages_in_total"),
        ("events out per domain", "ves_streams_events_out_total"),
        ("delivery latency", "ves_streams_sink_delivery_latency_seconds_bucket"),
        ("batch sizes", "ves_streams_sink_batch_events_bucket"),
        ("batch sizes", "ves_streams_sink_batch_bytes_bucket"),
        ("collector status codes", "ves_streams_sink_http_responses_total"),
        ("retries", "ves_streams_sink_retries_total"),
        ("lag", "ves_streams_consumer_lag"),
        ("dead letters", "ves_streams_dead_letters_total"),
        ("dead letters", "ves_streams_sink_dead_lettered_total"),
        ("windows rendered, late, skipped", "ves_streams_render_windows_total"),
        ("readiness", "ves_streams_ready"),
    ],
)
def test_the_dashboard_shows(what: str, metric: str) -> None:
    used = {name for expr in dashboard_exprs() for name in parse_promql(expr).names}
    assert metric in used, f"no panel shows {what} ({metric})"


def test_there_are_panels_per_worker() -> None:
    per_worker = [expr for expr in dashboard_exprs() if "instance" in parse_promql(expr).grouping]
    assert len(per_worker) >= 5, per_worker
