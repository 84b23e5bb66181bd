"""Data is data: braces, quotes, regex syntax, huge or broken strings render literally.

Templates are parsed when the file is loaded; rendering only ever calls
``format()`` on a field's value, so nothing in a host name, instance or
message is ever interpreted as a template, a regex or code.
"""

from __future__ import annotations

import json

import orjson
import pytest

from ves_streams.collectd import Notification, parse_notifications, parse_value_lists
from ves_streams.rules import RenderContext, load_topology

from .helpers import CAPTURE_VALUES, TOPOLOGIES, latest_samples, load, sample, validator

CTX = RenderContext()
HOSTILE = [
    "{system.id}",
    "{vl.plugin}",
    "{0.__class__.__mro__}",
    "{vl.host!r:>99999999}",
    "{{}}}{",
    '"quoted" \'single\' \\back\\slash',
    "/.*/",
    "a" * 1000,
    "caf\ufffd-\ufffd",
]


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_fields_render_literally_everywhere(value):
    topology = load("""
        M: !Measurements
          - SELECT: {plugin: cpu}
          - ITEM-DESC:
              host: "{vl.host}"
              joined: "<{vl.host}|{vl.plugin_instance}|{vl.type_instance}>"
              dashed: !StripExtraDash "{vl.host}-{vl.plugin_instance}"
              same: !ValueItem
                - SELECT: {plugin: cpu, plugin_instance: "{vl.plugin_instance}", type_instance: "{vl.type_instance}"}
                - VALUE: "{vl.plugin_instance}"
              keyed: !MapItem
                - SELECT: {plugin: cpu, plugin_instance: "{vl.plugin_instance}"}
                - KEY: "{vl.type_instance}"
        """)
    (event,) = topology.render_measurements([sample(host=value, plugin_instance=value, type_instance=value)],
                                            CTX).events
    assert event.body == {
        "host": value,
        "joined": f"<{value}|{value}|{value}>",
        "dashed": "-".join(p for p in f"{value}-{value}".split("-") if p),
        "same": value,
        "keyed": {value: "1.0"},
    }
    assert json.loads(orjson.dumps(event.body)) == event.body


def test_data_that_looks_like_a_regex_is_matched_literally():
    topology = load("""
        M: !Measurements
          - SELECT: {plugin: cpu, type_instance: idle}
          - ITEM-DESC:
              others: !ArrayItem
                - SELECT: {plugin: other, plugin_instance: "{vl.plugin_instance}"}
                - ITEM-DESC: "{vl.plugin_instance}"
              escaped: !ArrayItem
                - SELECT: {plugin: other, plugin_instance: "/{vl.plugin_instance}$/"}
                - ITEM-DESC: "{vl.plugin_instance}"
        """)
    samples = [sample(plugin_instance="/.*/", type_instance="idle"),
               sample(plugin="other", plugin_instance="/.*/"),
               sample(plugin="other", plugin_instance="anything")]
    (event,) = topology.render_measurements(samples, CTX).events
    assert event.body == {"others": ["/.*/"], "escaped": ["/.*/"]}


def test_a_regex_template_escapes_the_data_it_inserts():
    topology = load("""
        M: !Measurements
          - SELECT: {plugin: cpu}
          - ITEM-DESC:
              m: !ArrayItem
                - SELECT: {plugin: disk, plugin_instance: "/{vl.plugin_instance}[0-9]$/"}
                - ITEM-DESC: "{vl.plugin_instance}"
        """)
    samples = [sample(plugin_instance="sd.("), sample(plugin="disk", plugin_instance="sd.(1"),
               sample(plugin="disk", plugin_instance="sdX(1")]
    assert topology.render_measurements(samples, CTX).events[0].body == {"m": ["sd.(1"]}


def test_hostile_notification_message_renders_literally():
    topology = load('E: !Events\n  - ITEM-DESC: {m: "{n.message}", h: !StripExtraDash "{n.host}-{n.plugin}"}\n')
    message = 'Data source "value" is {currently} {n.severity} %s \\u0000 ' + "x" * 10000
    n = Notification("{system.hostname}", "{n.message}", "", "t", "", "NOTIF_OKAY", message, 1.0)
    (event,) = topology.render_notification(n, CTX).events
    assert event.body == {"m": message, "h": "{system.hostname}-{n.message}"}


def test_non_utf8_bytes_arrive_as_replacement_characters_and_render():
    line = CAPTURE_VALUES.read_bytes().splitlines()[0].replace(b'"compute-0"', b'"comp\xffute-0"')
    samples = [s for vl in parse_value_lists(line) for s in vl.samples()]
    assert samples[0].host == "comp\ufffdute-0"
    topology = load('M: !Measurements\n  - SELECT: {plugin: interface}\n  - ITEM-DESC: {h: "{vl.host}"}\n')
    assert topology.render_measurements(samples, CTX).events[0].body == {"h": "comp\ufffdute-0"}
    raw = (b'[{"host":"n\xfe","plugin":"p","plugin_instance":"","type":"t","type_instance":"",'
           b'"severity":"FAILURE","message":"m\xff{x}","time":1.0}]')
    (n,) = parse_notifications(raw)
    (event,) = load('E: !Events\n  - ITEM-DESC: {m: "{n.message}"}\n').render_notification(n, CTX).events
    assert event.body == {"m": "m\ufffd{x}"}


def test_ves7_host_topology_stays_valid_with_a_hostile_host_name():
    hostile = '{system.id}"\\' + "\ufffd" * 3 + "/.*/" + "h" * 500
    samples = [s.__class__(**{**{f: getattr(s, f) for f in s.__slots__}, "host": hostile})
               for s in latest_samples(CAPTURE_VALUES)]
    (event,) = load_topology(TOPOLOGIES / "host.yaml").render_measurements(samples, CTX).events
    header = event.body["event"]["commonEventHeader"]
    assert header["sourceName"] == hostile
    assert list(validator(7).iter_errors(event.body)) == []
