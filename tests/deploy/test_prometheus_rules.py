"""The Prometheus alert rules (``deploy/prometheus/``): valid, unit-tested, and about metrics the code exports.

``promtool`` (Debian's ``prometheus`` package) checks the rule file and the
example configuration and runs the rules' unit tests
(``ves-streams-alerts.test.yml``). Where promtool is missing those tests are
skipped with a loud reason, unless
``VES_STREAMS_REQUIRE_PROMETHEUS`` is set (CI sets it and installs the
package): then a missing promtool is a failure. The other tests need no
promtool: the shape of each alert, a firing and a quiet test case for each,
and every metric, label and label value of the expressions checked against
the code's registry (:mod:`tests.deploy.metric_names`).
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from tests.deploy import metric_names
from tests.deploy.metric_names import parse_promql, problems

RULES = metric_names.RULES
PROMETHEUS_DIR = RULES.parent
RULE_TESTS = PROMETHEUS_DIR / "ves-streams-alerts.test.yml"
SEVERITIES = {"critical", "warning", "info"}


def _alerts() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"] if "alert" in rule]


ALERTS = _alerts()


@pytest.fixture(scope="module")
def promtool() -> str:
    return metric_names.promtool()


def _run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120)


# -- promtool -------------------------------------------------------------


def test_promtool_checks_the_rules(promtool: str) -> None:
    result = _run(promtool, "check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout + result.stderr


def test_promtool_checks_the_example_configuration(promtool: str) -> None:
    """prometheus.example.yml parses and loads the rule file."""
    result = _run(promtool, "check", "config", "prometheus.example.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass(promtool: str) -> None:
    result = _run(promtool, "test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


# -- the rule file ----------------------------------------------------------


def test_one_group_named_ves_streams() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    assert [g["name"] for g in groups] == ["ves-streams"]


def test_every_alert_says_how_bad_what_and_what_to_check() -> None:
    names = [alert["alert"] for alert in ALERTS]
    assert ALERTS and len(names) == len(set(names)), f"alert names must be unique: {names}"
    for alert in ALERTS:
        name = alert["alert"]
        assert name.startswith("VesStreams"), name
        assert alert.get("labels", {}).get("severity") in SEVERITIES, f"{name}: labels.severity one of {SEVERITIES}"
        annotations = alert.get("annotations", {})
        assert annotations.get("summary", "").strip(), f"{name}: no annotations.summary"
        description = annotations.get("description", "")
        assert len(description) >= 200, f"{name}: annotations.description should say what it means and what to check"
        assert "check" in description.lower(), f"{name}: the description should say what to check"


# -- the unit tests -----------------------------------------------------------


def _rule_test_cases() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULE_TESTS.read_text())
    return [case for group in document["tests"] for case in group.get("alert_rule_test", [])]


def test_the_test_file_tests_this_rule_file() -> None:
    assert "test" in RULE_TESTS.name
    assert yaml.safe_load(RULE_TESTS.read_text())["rule_files"] == [RULES.name]


def test_every_alert_is_exercised_firing_and_quiet() -> None:
    cases = _rule_test_cases()
    firing = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if "exp_alerts" in c and c["exp_alerts"] == []}
    names = {alert["alert"] for alert in ALERTS}
    assert not names - firing, f"alerts no test case fires: {sorted(names - firing)}"
    assert not names - quiet, f"alerts without a case where they must not fire (exp_alerts: []): {sorted(names - quiet)}"
    tested = {c["alertname"] for c in cases}
    assert not tested - names, f"test cases of alerts the rule file does not have: {sorted(tested - names)}"


def test_firing_cases_expect_the_severity_and_annotations() -> None:
    """promtool compares labels and annotations; a case without them would expect none and fail anyway."""
    severity = {alert["alert"]: alert["labels"]["severity"] for alert in ALERTS}
    for case in _rule_test_cases():
        for expected in case.get("exp_alerts") or []:
            assert expected["exp_labels"].get("severity") == severity[case["alertname"]], case["alertname"]
            assert set(expected.get("exp_annotations", {})) >= {"summary", "description"}, case["alertname"]


# -- the metrics the rules use ----------------------------------------------


def test_every_metric_of_the_rules_is_exported_by_the_code() -> None:
    exprs = metric_names.rule_exprs()
    assert len(exprs) == len(ALERTS)
    found = [problem for expr in exprs for problem in problems(expr)]
    assert not found, "\n".join(found)


# -- the expression reader itself ---------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names", "grouping"),
    [
        ("up == 0", {"up"}, set()),
        (
            'sum by (job, topic) (rate(a_total{topic="x", stage!~"y|z"}[5m])) / on (job) group_left b',
            {"a_total", "b"},
            {"job", "topic"},
        ),
        (
            "histogram_quantile(0.9, sum without (instance) (rate(h_bucket{job=~\"$job\"}[$__rate_interval]))) > 1e3",
            {"h_bucket"},
            {"instance"},
        ),
        ('deriv(sum(c)[10m:1m]) > 0 and d offset 10m unless {__name__="e", x="1"}', {"c", "d", "e"}, set()),
        ('max(x{instance=~"${instance}"}) by (check)', {"x"}, {"check"}),
    ],
)
def test_the_expression_reader(expr: str, names: set[str], grouping: set[str]) -> None:
    query = parse_promql(expr)
    assert query.names == names
    assert query.grouping == grouping


def test_the_checks_find_a_wrong_name_label_and_value() -> None:
    known = {"m_total": frozenset({"outcome"}), "h_bucket": frozenset({"le"})}
    assert problems('sum by (le) (rate(h_bucket[5m]))', known=known) == []
    assert problems("m_total + nope", known=known)[0].startswith("nope: no such metric")
    assert "no label 'stage'" in problems('m_total{stage="x"}', known=known)[0]
    assert "never uses that value" in problems('m_total{outcome="no-such-outcome-word"}', known=known)[0]
    assert "grouping by 'code'" in problems("sum by (code) (m_total)", known=known)[0]
