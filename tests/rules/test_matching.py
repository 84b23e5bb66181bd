"""SELECT and CONDITION semantics: Barometer's, scoped to one host."""

from __future__ import annotations

from ves_streams.collectd import Notification
from ves_streams.rules import RenderContext

from .helpers import load, sample

CTX = RenderContext()


def selected(select: str, samples, *, nested: bool = False) -> list[str]:
    """The plugin_instance/type_instance of each sample a SELECT picks, in order."""
    if nested:
        text = f"""
            M: !Measurements
              - SELECT: {{plugin: anchor}}
              - ITEM-DESC:
                  got: !ArrayItem
                    - SELECT: {select}
                    - ITEM-DESC: "{{vl.plugin}}/{{vl.type_instance}}"
            """
        samples = [sample(plugin="anchor", type_instance="ref"), *samples]
        (event,) = load(text).render_measurements(samples, CTX).events
        return event.body["got"]
    text = f'M: !Measurements\n  - SELECT: {select}\n  - ITEM-DESC: {{got: "{{vl.plugin}}/{{vl.type_instance}}"}}\n'
    return [e.body["got"] for e in load(text).render_measurements(samples, CTX).events]


SAMPLES = [
    sample(plugin="cpu", type_instance="idle"),
    sample(plugin="cpufreq", type_instance="0"),
    sample(plugin="memory", type_instance="free"),
    sample(plugin="memory", type_instance="used"),
]


def test_plain_value_matches_by_string_equality():
    assert selected("{plugin: cpu}", SAMPLES) == ["cpu/idle"]


def test_regex_is_anchored_at_the_start_only_like_re_match():
    assert selected("{plugin: '/cpu/'}", SAMPLES) == ["cpu/idle", "cpufreq/0"]
    assert selected("{plugin: '/pu/'}", SAMPLES) == []
    assert selected("{plugin: '/cpu$/'}", SAMPLES) == ["cpu/idle"]


def test_negative_lookahead_regex_as_in_barometer_files():
    assert selected("{plugin: '/^(?!memory|cpu).*$/'}", SAMPLES) == []
    assert selected("{plugin: '/^(?!memory).*$/'}", SAMPLES) == ["cpu/idle", "cpufreq/0"]


def test_all_keys_of_a_select_must_match():
    assert selected("{plugin: memory, type_instance: used}", SAMPLES) == ["memory/used"]


def test_repeated_select_means_any_of_them_and_each_sample_once():
    assert selected("{plugin: memory}\n  - SELECT: {type_instance: '/(free|idle)/'}", SAMPLES) == [
        "cpu/idle", "memory/free", "memory/used",
    ]


def test_a_single_slash_is_not_a_regex():
    assert selected("{plugin: '/'}", [sample(plugin="/"), *SAMPLES]) == ["//idle"]


def test_nested_select_values_are_templates_of_the_enclosing_sample():
    got = selected("{plugin: memory, type_instance: '/{vl.type_instance}|free/'}",
                   SAMPLES, nested=True)
    assert got == ["memory/free"]
    got = selected("{plugin: '/{vl.plugin}/'}", SAMPLES, nested=True)
    assert got == ["anchor/ref"]


def test_top_level_select_is_literal_as_in_barometer():
    topology = load('M: !Measurements\n  - SELECT: {plugin: "{vl.plugin}"}\n  - ITEM-DESC: {x: 1}\n')
    assert topology.render_measurements([sample(plugin="{vl.plugin}"), sample()], CTX).events[0].body == {"x": 1}
    assert len(topology.render_measurements([sample()], CTX).events) == 0


def test_selectors_only_see_the_host_being_rendered():
    topology = load("""
        M: !Measurements
          - SELECT: {plugin: memory, type_instance: free}
          - ITEM-DESC:
              used: !ValueItem
                - SELECT: {plugin: memory, type_instance: used}
        """)
    a = [sample(host="a", plugin="memory", type_instance="free"), sample(host="a", plugin="memory",
                                                                         type_instance="used", value=1)]
    b = [sample(host="b", plugin="memory", type_instance="free"), sample(host="b", plugin="memory",
                                                                         type_instance="used", value=2)]
    assert [e.body for e in topology.render_measurements(a, CTX).events] == [{"used": 1}]
    assert [e.body for e in topology.render_measurements(b, CTX).events] == [{"used": 2}]


def test_latest_sample_of_a_series_wins_and_keeps_its_first_position():
    topology = load('M: !Measurements\n  - SELECT: {plugin: cpu}\n  - ITEM-DESC: {v: "{vl.value}"}\n')
    samples = [sample(value=1), sample(plugin_instance="1", value=5), sample(value=2)]
    assert [e.body["v"] for e in topology.render_measurements(samples, CTX).events] == ["2", "5"]


NOTE = Notification("compute-0", "load", "", "load", "", "NOTIF_WARNING", "load is high", 1795300000.25)


def events_for(condition: str, notification: Notification = NOTE) -> int:
    topology = load(f'E: !Events\n  - CONDITION: {condition}\n  - ITEM-DESC: {{m: "{{n.message}}"}}\n')
    return len(topology.render_notification(notification, CTX).events)


def test_condition_matches_by_equality_and_regex():
    assert events_for("{plugin: load}") == 1
    assert events_for("{plugin: virt}") == 0
    assert events_for("{plugin: '/^(?!virt).*$/', severity: NOTIF_WARNING}") == 1
    assert events_for("{message: '/load/'}") == 1
    assert events_for("{message: '/high/'}") == 0


def test_events_without_condition_match_every_notification():
    topology = load('E: !Events\n  - ITEM-DESC: {s: "{n.severity}", t: !Number "{n.time}"}\n')
    assert topology.render_notification(NOTE, CTX).events[0].body == {"s": "NOTIF_WARNING", "t": 1795300000.25}


def test_every_matching_events_rule_renders_in_file_order():
    topology = load("""
        First: !Events
          - ITEM-DESC: {rule: one}
        Never: !Events
          - CONDITION: {plugin: virt}
          - ITEM-DESC: {rule: never}
        Second: !Events
          - ITEM-DESC: {rule: two}
        """)
    assert [e.rule for e in topology.render_notification(NOTE, CTX).events] == ["First", "Second"]
