"""Every mistake that can be seen without data is a RuleError at file:line:col, with rule and hint."""

from __future__ import annotations

import pytest

from ves_streams.rules import RuleError, load_topology

from .helpers import load

HEADER = """\
Host Measurements: !Measurements
  - SELECT:
      plugin: memory
  - ITEM-DESC:
      event:
"""


def error_of(text: str) -> RuleError:
    with pytest.raises(RuleError) as info:
        load(text, "host.yaml")
    return info.value


def test_error_text_reads_file_line_column_rule_message_and_hint():
    err = error_of(HEADER + '        id: "{vl.nosuchfield}"\n')
    assert (err.file, err.line, err.column, err.rule) == ("host.yaml", 6, 13, "Host Measurements")
    assert str(err) == (
        "host.yaml:6:13: in rule 'Host Measurements': unknown reference {vl.nosuchfield} in "
        "'{vl.nosuchfield}': vl has no field 'nosuchfield' (hint: fields of vl: host, plugin, "
        "plugin_instance, type, type_instance, ds_name, value, time, interval)"
    )


def test_unknown_tag_is_reported_where_it_is_written():
    err = error_of(HEADER + "        a: !Numbre '{vl.value}'\n")
    assert (err.line, err.column) == (6, 12)
    assert "unknown tag '!Numbre'" in err.message and "!Number" in err.hint


def test_misspelled_rule_tag_is_not_silently_ignored():
    err = error_of("Host: !Measurement\n  - SELECT: {plugin: cpu}\n")
    assert (err.line, err.column) == (1, 7)
    assert "unknown tag '!Measurement'" in str(err)


def test_python_object_tags_are_refused_not_constructed():
    err = error_of(HEADER + "        a: !!python/object/apply:os.system ['echo pwned']\n")
    assert err.line == 6 and "unsupported YAML type !!python/object/apply:os.system" in err.message


def test_missing_item_desc_names_the_rule_and_what_to_add():
    err = error_of("Host Measurements: !Measurements\n  - SELECT: {plugin: cpu}\n")
    assert (err.line, err.column, err.rule) == (1, 20, "Host Measurements")
    assert err.message == "!Measurements has no ITEM-DESC"
    assert "ITEM-DESC" in err.hint


def test_nested_array_item_without_item_desc():
    err = error_of(HEADER + "        a: !ArrayItem\n          - SELECT: {plugin: cpu}\n")
    assert (err.line, err.column) == (6, 12) and err.message == "!ArrayItem has no ITEM-DESC"


def test_array_item_needs_select_or_index_key():
    err = error_of(HEADER + "        a: !ArrayItem\n          - ITEM-DESC: {x: 1}\n")
    assert "needs a SELECT or an INDEX-KEY" in err.message


def test_bad_regex_in_nested_select():
    err = error_of(HEADER + "        a: !ArrayItem\n          - SELECT: {plugin: '/^(cpu/'}\n"
                   "          - ITEM-DESC: {x: 1}\n")
    assert (err.line, err.column) == (7, 30)
    assert err.message.startswith("bad regex /^(cpu/: missing ), unterminated subpattern")
    assert "re.match" in err.hint


def test_bad_regex_in_top_level_select_and_in_condition():
    err = error_of("M: !Measurements\n  - SELECT: {plugin: '/[/'}\n  - ITEM-DESC: {x: 1}\n")
    assert (err.line, err.rule) == (2, "M") and "bad regex" in err.message
    err = error_of("E: !Events\n  - CONDITION: {severity: '/(?P<x/'}\n  - ITEM-DESC: {x: 1}\n")
    assert (err.line, err.column, err.rule) == (2, 27, "E") and "bad regex" in err.message


def test_unknown_root_is_an_unknown_reference():
    err = error_of(HEADER + '        a: "{foo.bar}"\n')
    assert err.message == "unknown reference {foo.bar} in '{foo.bar}'"
    assert "{vl.<field>}" in err.hint


def test_notification_fields_are_not_available_in_measurements():
    err = error_of(HEADER + '        a: "{n.message}"\n')
    assert err.message == "{n.message} is not available in a !Measurements rule"


def test_sample_fields_are_not_available_in_events():
    err = error_of("E: !Events\n  - ITEM-DESC:\n      event: {a: '{vl.host}'}\n")
    assert (err.line, err.column) == (3, 18) and "not available in an !Events rule" in err.message


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{}", "empty field"),
        ("{0}", "unknown reference {0}"),
        ("{vl}", "only '{vl.<field>}' is allowed"),
        ("{vl[0]}", "only '{vl.<field>}' is allowed"),
        ("{vl.host.upper}", "only '{vl.<field>}' is allowed"),
        ("{vl.host!r}", "conversion '!r'"),
        ("{vl.value:{config.interval}}", "nested field in the format spec"),
        ("{vl.host:.2f}", "format spec '.2f' does not apply"),
        ("{vl.host", "bad template"),
        ("}", "bad template"),
        ("{system.id:>5}", "takes no format spec"),
    ],
)
def test_templates_allow_only_documented_fields_attributes_and_specs(template, expected):
    err = error_of(HEADER + f"        a: {template!r}\n".replace("'", '"'))
    assert err.line == 6 and expected in err.message


def test_format_specs_that_apply_are_allowed():
    load(HEADER + '        a: "{vl.value:.2f} {vl.host:>10} {{literal}}"\n')


def test_index_key_item_may_only_read_its_index_fields():
    err = error_of(HEADER + "        a: !ArrayItem\n          - SELECT: {plugin: cpu}\n"
                   "          - INDEX-KEY: [plugin, plugin_instance]\n"
                   '          - ITEM-DESC: {name: "{vl.type_instance}"}\n')
    assert err.line == 9
    assert "only those fields of vl have a value" in err.message
    assert "add type_instance to INDEX-KEY" in err.hint


def test_index_key_must_name_sample_fields():
    err = error_of(HEADER + "        a: !ArrayItem\n          - INDEX-KEY: [plugin, value]\n"
                   "          - ITEM-DESC: {x: 1}\n")
    assert (err.line, err.column) == (7, 33) and "INDEX-KEY cannot group by 'value'" in err.message


def test_select_values_must_be_strings():
    err = error_of(HEADER + "        a: !ValueItem\n          - SELECT: {plugin: cpu, plugin_instance: 0}\n")
    assert (err.line, err.column) == (7, 52)
    assert err.message == "SELECT values must be strings, got '0'" and err.hint == 'quote it: "0"'


def test_select_can_only_name_sample_fields():
    err = error_of(HEADER + "        a: !ValueItem\n          - SELECT: {plugin: cpu, pluginn: x}\n")
    assert "SELECT cannot match on 'pluginn'" in err.message and "plugin_instance" in err.hint


def test_condition_can_only_name_notification_fields():
    err = error_of("E: !Events\n  - CONDITION: {ds_name: x}\n  - ITEM-DESC: {x: 1}\n")
    assert "CONDITION cannot match on 'ds_name'" in err.message and "severity" in err.hint


def test_unknown_key_in_an_item_lists_the_valid_ones():
    err = error_of("M: !Measurements\n  - SELEKT: {plugin: cpu}\n  - ITEM-DESC: {x: 1}\n")
    assert (err.line, err.column) == (2, 5)
    assert err.message == "unknown key 'SELEKT' in !Measurements" and "SELECT" in err.hint


def test_repeated_item_desc_is_an_error_but_repeated_select_is_not():
    err = error_of("M: !Measurements\n  - SELECT: {plugin: a}\n  - ITEM-DESC: {x: 1}\n  - ITEM-DESC: {x: 2}\n")
    assert err.line == 4 and err.message == "ITEM-DESC is given twice in !Measurements"
    load("M: !Measurements\n  - SELECT: {plugin: a}\n  - SELECT: {plugin: b}\n  - ITEM-DESC: {x: 1}\n")


def test_value_item_needs_select():
    err = error_of(HEADER + "        a: !ValueItem\n          - DEFAULT: 0\n")
    assert err.message == "!ValueItem has no SELECT"


def test_map_value_needs_value_and_to_and_a_mapping_table():
    err = error_of("E: !Events\n  - ITEM-DESC:\n      s: !MapValue {VALUE: '{n.severity}'}\n")
    assert (err.line, err.column) == (3, 10) and err.message == "!MapValue has no TO"
    err = error_of("E: !Events\n  - ITEM-DESC:\n      s: !MapValue {VALUE: '{n.severity}', TO: [a]}\n")
    assert err.message == "the TO of !MapValue must be a mapping"


def test_constant_map_value_missing_from_its_table_is_caught_at_load():
    err = error_of("E: !Events\n  - ITEM-DESC:\n      s: !MapValue {VALUE: X, TO: {A: B}}\n")
    assert (err.line, err.column) == (3, 28)
    assert err.message == "!MapValue VALUE 'X' is not in its TO table"


def test_constant_number_that_does_not_parse_is_caught_at_load():
    err = error_of(HEADER + "        a: !Number abc\n")
    assert (err.line, err.column) == (6, 12) and "!Number cannot convert 'abc'" in err.message


def test_items_that_select_samples_are_refused_in_events():
    err = error_of("E: !Events\n  - ITEM-DESC:\n      a: !ValueItem\n        - SELECT: {plugin: cpu}\n")
    assert (err.line, err.column) == (3, 10)
    assert "selects samples, which do not exist in an !Events rule" in err.message


def test_rule_tags_cannot_be_nested():
    err = error_of(HEADER + "        a: !Events\n          - ITEM-DESC: {x: 1}\n")
    assert "!Events is a top-level rule and cannot be nested" in err.message


def test_tag_on_the_wrong_kind_of_node():
    err = error_of(HEADER + "        a: !ArrayItem {SELECT: {plugin: cpu}}\n")
    assert err.message == "!ArrayItem cannot be applied to a mapping"
    assert err.hint == "!ArrayItem takes a list of '- KEY: value' elements"
    err = error_of(HEADER + "        a: !Number [1]\n")
    assert err.message == "!Number cannot be applied to a list"


def test_item_desc_of_a_rule_must_be_a_mapping():
    err = error_of("M: !Measurements\n  - SELECT: {plugin: a}\n  - ITEM-DESC: just text\n")
    assert (err.line, err.column) == (3, 16) and "must be a mapping" in err.message


def test_recursive_alias_is_refused():
    err = error_of(HEADER.replace("      event:\n", "      event: &loop\n") + "        again: *loop\n")
    assert "contains it" in err.message


def test_alias_bombs_are_refused():
    text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for i, name in enumerate("bcdefg"):
        prev = "abcdefg"[i]
        text += f"{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
    text += "M: !Measurements\n  - SELECT: {plugin: a}\n  - ITEM-DESC: {x: *g}\n"
    assert "expand to more than" in error_of(text).message


def test_non_finite_constants_are_refused():
    assert "not a finite number" in error_of(HEADER + "        a: .nan\n").message


def test_unquoted_dates_must_be_quoted():
    err = error_of(HEADER + "        a: 2024-01-01\n")
    assert "!!timestamp" in err.message and err.hint == "quote the value to keep it a string"


def test_yaml_syntax_errors_have_positions():
    err = error_of("M: !Measurements\n  - SELECT: {plugin: a\n  - ITEM-DESC: {}\n")
    assert err.line == 3 and err.message.startswith("invalid YAML")


def test_a_file_without_rules_is_an_error():
    err = error_of("commonEventHeader: {a: 1}\n")
    assert "no rules" in err.message and "!Measurements" in err.hint


def test_duplicate_rule_names_are_an_error():
    err = error_of("M: !Events\n  - ITEM-DESC: {x: 1}\nM: !Events\n  - ITEM-DESC: {x: 2}\n")
    assert err.line == 3 and "already defined" in err.message


def test_header_errors_name_the_key():
    err = error_of('ves-streams: {ves_version: 6}\nE: !Events\n  - ITEM-DESC: {x: 1}\n')
    assert (err.line, err.column, err.rule) == (1, 28, None)
    assert err.message == "header key 'ves_version': 6 is not a VES version"
    err = error_of('ves-streams: {interval: -1}\nE: !Events\n  - ITEM-DESC: {x: 1}\n')
    assert "not a positive number of seconds" in err.message
    err = error_of('ves-streams: {topic: x}\nE: !Events\n  - ITEM-DESC: {x: 1}\n')
    assert err.message == "unknown header key 'topic'" and "values_topic" in err.hint
    err = error_of('ves-streams: {events_topic: "a b"}\nE: !Events\n  - ITEM-DESC: {x: 1}\n')
    assert "is not a Kafka topic name" in err.message


def test_missing_file_is_a_rule_error(tmp_path):
    with pytest.raises(RuleError) as info:
        load_topology(tmp_path / "nope.yaml")
    assert str(info.value).startswith(f"{tmp_path / 'nope.yaml'}: cannot read the file")


def test_barometer_files_load_byte_for_byte_unchanged(tmp_path):
    from .helpers import BAROMETER

    for path in sorted(BAROMETER.glob("*.yaml")):
        topology = load_topology(path)
        assert topology.header.ves_version == "5.4.1" and topology.header.name == path.stem


def test_rules_loader_is_a_safe_loader_for_other_tools():
    import yaml

    from ves_streams.rules.loader import RulesLoader, TaggedValue

    data = yaml.load("a: !Number '{vl.value}'\nb: [1, 2]\n", Loader=RulesLoader)
    assert isinstance(data["a"], TaggedValue) and data["a"].tag == "!Number" and data["b"] == [1, 2]
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.load("a: !!python/object/apply:os.system ['true']\n", Loader=RulesLoader)
