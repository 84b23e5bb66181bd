"""A render error skips one event, is logged and returned; it never stops the render."""

from __future__ import annotations

import logging

from ves_streams.collectd import Notification
from ves_streams.rules import RenderContext, RenderError

from .helpers import load, sample

CTX = RenderContext()

CPU_RULE = """
    CPU: !Measurements
      - SELECT: {plugin: cpu, type_instance: idle}
      - ITEM-DESC:
          cpu: "{vl.plugin_instance}"
          user: !ValueItem
            - SELECT: {plugin: cpu, type_instance: user}
    """


def test_value_item_selecting_two_samples_is_a_render_error():
    topology = load(CPU_RULE, "host.yaml")
    samples = [sample(type_instance="idle"), sample(type_instance="user"),
               sample(plugin_instance="1", type_instance="user")]
    result = topology.render_measurements(samples, CTX)
    assert result.events == []
    assert result.errors == [RenderError(
        rule="CPU", host="h1",
        reason="host.yaml:6:13: !ValueItem selected 2 samples (cpu/0/percent/user/value, "
               "cpu/1/percent/user/value), expected one (hint: add fields such as plugin_instance, "
               "type_instance or ds_name to its SELECT so it matches exactly one sample)",
    )]


def test_value_item_selecting_nothing_without_default_is_a_render_error():
    topology = load(CPU_RULE, "host.yaml")
    (error,) = topology.render_measurements([sample(type_instance="idle")], CTX).errors
    assert error.reason.startswith("host.yaml:6:13: !ValueItem selected no sample for "
                                   "{plugin='cpu', type_instance='user'}")
    assert "add '- DEFAULT: <value>'" in error.reason


def test_one_failing_event_does_not_stop_the_others():
    topology = load("""
    CPU: !Measurements
      - SELECT: {plugin: cpu, type_instance: idle}
      - ITEM-DESC:
          cpu: "{vl.plugin_instance}"
          user: !ValueItem
            - SELECT: {plugin: cpu, plugin_instance: "{vl.plugin_instance}", type_instance: user}
    Memory: !Measurements
      - SELECT: {plugin: memory}
      - ITEM-DESC: {free: !Number "{vl.value}"}
    """)
    samples = [
        sample(type_instance="idle"),  # cpu 0 has a user value
        sample(type_instance="user"),
        sample(plugin_instance="1", type_instance="idle"),  # cpu 1 has none: its event is skipped
        sample(plugin_instance="2", type_instance="idle"),
        sample(plugin_instance="2", type_instance="user", value=3),
        sample(plugin="memory", plugin_instance="", type="memory", type_instance="free", value=7),
    ]
    result = topology.render_measurements(samples, CTX)
    assert [(e.rule, e.body) for e in result.events] == [
        ("CPU", {"cpu": "0", "user": 1.0}),
        ("CPU", {"cpu": "2", "user": 3}),
        ("Memory", {"free": 7}),
    ]
    assert [(e.rule, e.host) for e in result.errors] == [("CPU", "h1")]


def test_unmapped_map_value_is_a_render_error_with_the_table_keys():
    topology = load("""
        Faults: !Events
          - ITEM-DESC:
              severity: !MapValue
                VALUE: "{n.severity}"
                TO: {NOTIF_FAILURE: CRITICAL, NOTIF_WARNING: WARNING}
        """, "guest.yaml")
    n = Notification("compute-0", "load", "", "load", "", "NOTIF_OKAY", "ok again", 1.0)
    result = topology.render_notification(n, CTX)
    assert result.events == []
    (error,) = result.errors
    assert (error.rule, error.host) == ("Faults", "compute-0")
    assert error.reason == ("guest.yaml:4:17: !MapValue has no entry for 'NOTIF_OKAY' (TO keys: "
                            "'NOTIF_FAILURE', 'NOTIF_WARNING') (hint: add 'NOTIF_OKAY' to the TO table)")


def test_render_errors_are_logged_with_rule_host_and_reason(caplog):
    topology = load(CPU_RULE)
    with caplog.at_level(logging.WARNING, logger="ves_streams.rules"):
        topology.render_measurements([sample(type_instance="idle")], CTX)
    (record,) = caplog.records
    assert "rule 'CPU': skipped an event for host 'h1'" in record.getMessage()


def test_unexpected_errors_are_contained_too():
    topology = load('M: !Measurements\n  - SELECT: {plugin: cpu}\n  - ITEM-DESC: {x: !Number "{vl.value}"}\n')

    def bug(text: str) -> float:
        raise RuntimeError("bug")

    convert_node = topology._plan.measurements[0].item.items[0][1]
    object.__setattr__(convert_node, "convert", bug)  # simulate a defect inside the engine
    result = topology.render_measurements([sample()], CTX)
    assert result.events == [] and result.errors[0].reason == "unexpected error: RuntimeError: bug"
