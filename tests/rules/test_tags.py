"""What each tag renders: Barometer's tags exactly as Barometer, and the extensions."""

from __future__ import annotations

import pytest

from ves_streams.rules import RenderContext

from .helpers import load, sample

CTX = RenderContext(hostname="renderer", interval=20.0, now=1795300000.5)


CPU0_IDLE = "{plugin: cpu, plugin_instance: '0', type_instance: idle}"


def render_one(item_desc: str, samples, *, select: str = CPU0_IDLE) -> dict:
    """Render a one-event !Measurements rule whose event body is ``item_desc``."""
    text = f"M: !Measurements\n  - SELECT: {select}\n  - ITEM-DESC:\n" + "".join(
        f"      {line}\n" for line in item_desc.strip("\n").splitlines()
    )
    result = load(text).render_measurements(samples, CTX)
    assert result.errors == []
    (event,) = result.events
    return event.body


CPU = [
    sample(type_instance="idle", value=97.5),
    sample(type_instance="user", value=2),
    sample(type_instance="system", value=0.5),
    sample(plugin_instance="1", type_instance="idle", value=99.0),
]


def test_plain_template_renders_a_number_as_a_string():
    body = render_one('v: "{vl.value}"\nt: "{vl.time}"\ni: "{vl.interval}"', CPU[:1])
    assert body == {"v": "97.5", "t": "1795300000.0", "i": "10.0"}


@pytest.mark.parametrize(("value", "expected"), [(97, 97), (97.25, 97.25), (24108826624.0, 24108826624.0)])
def test_number_is_int_if_it_parses_else_float(value, expected):
    body = render_one('n: !Number "{vl.value}"', [sample(value=value)])
    assert body["n"] == expected and type(body["n"]) is type(expected)


def test_number_of_a_non_number_fails_the_event_not_the_render():
    topology = load("M: !Measurements\n  - SELECT: {plugin: cpu}\n  - ITEM-DESC:\n      n: !Number '{vl.host}'\n")
    result = topology.render_measurements([sample(host="compute-0")], CTX)
    assert result.events == []
    (error,) = result.errors
    assert error.rule == "M" and error.host == "compute-0"
    assert error.reason.startswith("t.yaml:4:10: !Number cannot convert 'compute-0'")
    assert "hint:" in error.reason


def test_bytes2kibibytes_divides_by_1024_and_rounds_to_3_places():
    assert render_one('k: !Bytes2Kibibytes "{vl.value}"', [sample(value=1000)])["k"] == 0.977
    assert render_one('k: !Bytes2Kibibytes "{vl.value}"', [sample(value=2048)])["k"] == 2.0


def test_strip_extra_dash_collapses_and_trims_dashes():
    body = render_one('s: !StripExtraDash "-{vl.plugin}--{vl.plugin_instance}-{vl.type_instance}-"',
                      [sample(plugin_instance="", type_instance="")], select="{plugin: cpu}")
    assert body["s"] == "cpu"


def test_microseconds_is_exact_integer_microseconds():
    body = render_one('t: !Microseconds "{vl.time}"', [sample(time=1795300336.028)])
    assert body["t"] == 1795300336028000 and isinstance(body["t"], int)


def test_map_value_looks_the_rendered_value_up():
    topology = load("""
        E: !Events
          - ITEM-DESC:
              s: !MapValue
                VALUE: "{n.severity}"
                TO: {NOTIF_FAILURE: CRITICAL, NOTIF_WARNING: WARNING, NOTIF_OKAY: NORMAL}
        """)
    from ves_streams.collectd import Notification

    n = Notification("h", "load", "", "load", "", "NOTIF_FAILURE", "m", 1.0)
    assert topology.render_notification(n, CTX).events[0].body == {"s": "CRITICAL"}


def test_value_item_default_value_is_number_of_the_value():
    body = render_one("""
u: !ValueItem
  - SELECT: {plugin: cpu, plugin_instance: "{vl.plugin_instance}", type_instance: user}
""", CPU)
    assert body == {"u": 2}


def test_value_item_value_is_rendered_with_the_selected_sample():
    body = render_one("""
u: !ValueItem
  - SELECT: {plugin: cpu, plugin_instance: "{vl.plugin_instance}", type_instance: system}
  - VALUE: "{vl.type_instance}={vl.value}"
""", CPU)
    assert body == {"u": "system=0.5"}


def test_value_item_selecting_nothing_renders_default():
    body = render_one("""
u: !ValueItem
  - SELECT: {plugin: cpu, type_instance: steal}
  - DEFAULT: 0
""", CPU[:1])
    assert body == {"u": 0}


def test_array_item_renders_one_item_per_selected_sample_in_sample_order():
    body = render_one("""
a: !ArrayItem
  - SELECT: {plugin: cpu, plugin_instance: "{vl.plugin_instance}"}
  - ITEM-DESC: {state: "{vl.type_instance}"}
""", CPU)
    assert body == {"a": [{"state": "idle"}, {"state": "user"}, {"state": "system"}]}


def test_array_item_selecting_nothing_renders_an_empty_list():
    body = render_one("a: !ArrayItem\n  - SELECT: {plugin: nothing}\n  - ITEM-DESC: {x: 1}", CPU[:1])
    assert body == {"a": []}


def test_index_key_renders_one_item_per_distinct_tuple_in_first_seen_order():
    body = render_one("""
a: !ArrayItem
  - SELECT: {plugin: cpu}
  - INDEX-KEY: [plugin, plugin_instance]
  - ITEM-DESC:
      name: "{vl.plugin}-{vl.plugin_instance}"
      states: !ArrayItem
        - SELECT: {plugin: "{vl.plugin}", plugin_instance: "{vl.plugin_instance}"}
        - ITEM-DESC: "{vl.type_instance}"
""", CPU)
    assert body == {"a": [{"name": "cpu-0", "states": ["idle", "user", "system"]},
                          {"name": "cpu-1", "states": ["idle"]}]}


def test_index_key_without_select_groups_every_sample_of_the_host():
    body = render_one("a: !ArrayItem\n  - INDEX-KEY: [plugin_instance]\n  - ITEM-DESC: '{vl.plugin_instance}'", CPU)
    assert body == {"a": ["0", "1"]}


def test_measurements_with_index_key_render_one_event_per_group():
    topology = load("""
        M: !Measurements
          - SELECT: {plugin: cpu}
          - INDEX-KEY: [plugin_instance]
          - ITEM-DESC: {cpu: "{vl.plugin_instance}"}
        """)
    assert [e.body for e in topology.render_measurements(CPU, CTX).events] == [{"cpu": "0"}, {"cpu": "1"}]


def test_map_item_builds_a_hashmap_of_strings():
    body = render_one("""
h: !MapItem
  - SELECT: {plugin: cpu, plugin_instance: "{vl.plugin_instance}"}
  - KEY: "{vl.type_instance}"
""", CPU)
    assert body == {"h": {"idle": "97.5", "user": "2", "system": "0.5"}}


def test_map_item_with_two_samples_for_one_key_fails_the_event():
    topology = load("""
        M: !Measurements
          - SELECT: {plugin: cpu, plugin_instance: '0', type_instance: idle}
          - ITEM-DESC:
              h: !MapItem
                - SELECT: {plugin: cpu}
                - KEY: "{vl.plugin}"
        """)
    result = topology.render_measurements(CPU, CTX)
    assert result.events == [] and "rendered the key 'cpu' for two samples" in result.errors[0].reason


def test_sum_item_sums_the_selected_values():
    body = render_one("""
busy: !SumItem
  - SELECT: {plugin: cpu, plugin_instance: "{vl.plugin_instance}", type_instance: "/(?!idle$)/"}
""", CPU)
    assert body == {"busy": 2.5}


def test_sum_item_selecting_nothing_renders_default_or_fails():
    assert render_one("s: !SumItem\n  - SELECT: {plugin: x}\n  - DEFAULT: 0", CPU)["s"] == 0
    topology = load("M: !Measurements\n  - SELECT: {plugin: cpu}\n  - ITEM-DESC:\n"
                    "      s: !SumItem\n        - SELECT: {plugin: x}\n")
    assert "selected no sample" in topology.render_measurements(CPU[:1], CTX).errors[0].reason


def test_system_and_config_fields():
    body = render_one('h: "{system.hostname}"\nt: "{system.time}"\nd: "{system.date}"\nc: "{config.interval}"',
                      CPU[:1])
    import datetime

    assert body == {"h": "renderer", "t": "1795300000.5",
                    "d": datetime.date.fromtimestamp(1795300000.5).isoformat(), "c": "20.0"}


def test_merge_keys_and_anchors_of_tagged_nodes_behave_as_in_pyyaml():
    topology = load("""
        base: &base
          id: "{system.id}"
          kind: N/A
          value: !Number "{vl.value}"
        fields: &fields
          used: !ValueItem
            - SELECT: {plugin: cpu, plugin_instance: "{vl.plugin_instance}", type_instance: user}
        M: !Measurements
          - SELECT: {plugin: cpu, plugin_instance: '0', type_instance: idle}
          - ITEM-DESC:
              header:
                <<: *base
                kind: cpu
              a: *fields
              b: *fields
        """)
    (event,) = topology.render_measurements(CPU, CTX).events
    header = event.body["header"]
    assert header["kind"] == "cpu" and header["value"] == 97.5 and header["id"].isdigit()
    assert event.body["a"] == event.body["b"] == {"used": 2}
    assert list(event.body["header"]) == ["id", "kind", "value"]  # overridden keys keep their place


def test_literal_braces_are_written_doubled():
    assert render_one('x: "{{literal}} {vl.plugin}"', CPU[:1]) == {"x": "{literal} cpu"}


def test_strings_in_plain_lists_are_templates_too():
    assert render_one('x: ["{vl.plugin}", 1, !Number "{vl.value}"]', CPU[:1]) == {"x": ["cpu", 1, 97.5]}
