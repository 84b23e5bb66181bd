"""collectd wire formats: what is accepted, what it becomes, and why the rest is refused."""

from __future__ import annotations

import orjson
import pytest

from ves_streams.collectd import (
    MAX_MESSAGE_BYTES,
    MalformedInput,
    Notification,
    parse_notifications,
    parse_value_lists,
    parse_value_lists_checked,
)
from ves_streams.collectd import decode_well_formed_value_lists as decode_fast
from ves_streams.resources import capture_dir

FIXTURES = capture_dir()


def _vl(**overrides: object) -> bytes:
    base: dict[str, object] = {
        "values": [1.5, 2],
        "dstypes": ["gauge", "derive"],
        "dsnames": ["rx", "tx"],
        "time": 1700000000.25,
        "interval": 10.0,
        "host": "h1",
        "plugin": "interface",
        "plugin_instance": "eth0",
        "type": "if_octets",
        "type_instance": "",
    }
    base.update(overrides)
    return orjson.dumps([{k: v for k, v in base.items() if v is not ...}])


def test_every_captured_value_list_parses_into_one_sample_per_data_source() -> None:
    lines = (FIXTURES / "compute-0.values.jsonl").read_bytes().splitlines()
    value_lists = [vl for line in lines for vl in parse_value_lists(line)]
    assert len(value_lists) == len(lines)
    raw_sources = sum(len(orjson.loads(line)[0]["values"]) for line in lines)
    assert sum(len(vl.samples()) for vl in value_lists) == raw_sources
    assert {vl.host for vl in value_lists} == {"compute-0"}


def test_value_list_becomes_samples_keyed_by_series() -> None:
    (vl,) = parse_value_lists(_vl())
    rx, tx = vl.samples()
    assert (rx.ds_name, rx.value, rx.dstype) == ("rx", 1.5, "gauge")
    assert (tx.ds_name, tx.value, tx.dstype) == ("tx", 2, "derive")
    assert rx.series == ("interface", "eth0", "if_octets", "", "rx")
    assert rx.time == 1700000000.25 and rx.interval == 10.0


def test_nan_values_written_as_null_are_skipped_not_rejected() -> None:
    (vl,) = parse_value_lists(_vl(values=[None, 3]))
    assert [s.ds_name for s in vl.samples()] == ["tx"]


def test_value_list_round_trips_through_its_json() -> None:
    (vl,) = parse_value_lists(_vl())
    assert parse_value_lists(orjson.dumps([vl.to_json()])) == [vl]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty message"),
        (b"not json", "not JSON"),
        (b"42", "must be a JSON array or object"),
        (b"[]", "array is empty"),
        (b"[1]", "expected an object"),
        (_vl(host=...), "missing field 'host'"),
        (_vl(host=""), "field 'host' is empty"),
        (_vl(host=7), "field 'host' must be a string"),
        (_vl(values=[1]), "'dsnames' must be an array as long as 'values'"),
        (_vl(values=["1", 2]), "'values' must hold numbers or null"),
        (_vl(interval=0), "'interval' must be positive"),
        (_vl(time="yesterday"), "field 'time' must be a number"),
        (_vl(plugin="p" * 5000), "limit 1024"),
        (b"[" * 50 + b"]" * 50, "nested deeper"),
        (b" " * (MAX_MESSAGE_BYTES + 1), "exceeds the"),
    ],
)
def test_malformed_value_lists_are_refused_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(MalformedInput) as excinfo:
        parse_value_lists(raw)
    assert reason in excinfo.value.reason


def test_the_fast_decoder_returns_exactly_what_the_python_checks_return_for_the_whole_capture() -> None:
    lines = (FIXTURES / "compute-0.values.jsonl").read_bytes().splitlines()
    fast = [decode_fast(line) for line in lines]
    assert None not in fast, "the fast decoder declined a real collectd message"
    checked = [parse_value_lists_checked(line) for line in lines]
    assert fast == checked
    # the same types too (an int stays an int, a float a float): events render them differently
    assert [[tuple(map(type, vl.values)) for vl in vls] for vls in fast] == [
        [tuple(map(type, vl.values)) for vl in vls] for vls in checked
    ]


@pytest.mark.parametrize(
    "raw",
    [
        _vl(),
        _vl(values=[None, 3]),
        _vl(time=1700000000, interval=10),
        _vl(values=[9223372036854775807, -9223372036854775808]),
        orjson.loads(_vl()) and orjson.dumps(orjson.loads(_vl())[0]),  # one object, not an array
        _vl(plugin="p" * 1024),
        orjson.dumps([orjson.loads(_vl(host=f"h{i}"))[0] for i in range(20)]),  # 40 brackets, depth 3
    ],
)
def test_the_fast_decoder_agrees_with_the_python_checks_on_what_they_accept(raw: bytes) -> None:
    fast = decode_fast(raw)
    assert fast is not None
    assert fast == parse_value_lists_checked(raw)
    assert [tuple(map(type, vl.values)) for vl in fast] == [tuple(map(type, vl.values)) for vl in parse_value_lists_checked(raw)]


@pytest.mark.parametrize(
    "raw",
    [
        b"[]",
        b"[1]",
        # what the Python checks normalise (collectd always sends every field): they do it
        _vl(dstypes=...),
        _vl(dstypes=None, plugin_instance=None, type_instance=...),
        _vl(host=...),
        _vl(host=""),
        _vl(host=7),
        _vl(host=None),
        _vl(plugin_instance=3),
        _vl(values=[1]),
        _vl(values=[]),
        _vl(values=[True, 2]),
        _vl(values=["1", 2]),
        _vl(values=[77, 1]).replace(b"77", b"18446744073709551616"),  # a float to orjson: the Python checks decide
        _vl(values=[18446744073709551615, 1]),  # an int to orjson, beyond msgspec's int64 bounds
        _vl(dstypes=["gauge"]),
        _vl(dsnames=None),
        _vl(interval=0),
        _vl(interval=-10),
        _vl(interval=True),
        _vl(time="yesterday"),
        _vl(plugin="p" * 1025),
        _vl(extra=[[[[[[[[1]]]]]]]]),  # deeper than MAX_DEPTH: the Python checks refuse it
        _vl(extra={"ignored": [1, 2]}),  # an unknown field: msgspec would skip it unchecked
        _vl(extra=1).replace(b'"extra":1', b'"extra":1e400'),  # ... and so an out-of-range number in it
        _vl(host="HOST").replace(b"HOST", b"h\xff"),
        _vl().replace(b"1.5", b"1e400"),
        _vl().replace(b"1.5", b"NaN"),
    ],
)
def test_the_fast_decoder_leaves_every_other_message_to_the_python_checks(raw: bytes) -> None:
    assert decode_fast(raw) is None
    try:
        expected: object = parse_value_lists_checked(raw)
    except MalformedInput as exc:
        expected = exc.reason
    try:
        got: object = parse_value_lists(raw)
    except MalformedInput as exc:
        got = exc.reason
    assert got == expected


def test_one_bad_element_rejects_the_whole_message() -> None:
    good = orjson.loads(_vl())[0]
    with pytest.raises(MalformedInput, match="value list 1"):
        parse_value_lists(orjson.dumps([good, {"values": [1]}]))


def test_invalid_utf8_in_a_name_is_kept_as_a_replacement_character() -> None:
    raw = _vl(host="HOST").replace(b"HOST", b"h\xff{0}")
    (vl,) = parse_value_lists(raw)
    assert vl.host == "h\ufffd{0}"


@pytest.mark.parametrize(
    "number",
    [b"7", b"18446744073709551615", b"18446744073709551616", b"-9223372036854775809", b"9" * 30, b"9" * 400, b"1e400", b"NaN"],
)
def test_a_message_with_invalid_utf8_reads_its_numbers_as_a_valid_one_would(number: bytes) -> None:
    valid = _vl(values=[77, 1]).replace(b"77", number)
    invalid = valid.replace(b'"h1"', b'"h\xff"')
    outcomes = []
    for raw in (valid, invalid):
        try:
            (vl,) = parse_value_lists(raw)
            outcomes.append((vl.values, [type(v) for v in vl.values], [s.value for s in vl.samples()]))
        except MalformedInput as exc:
            outcomes.append(exc.reason.split(":")[0])
    assert outcomes[0] == outcomes[1]


def test_collectd_json_notifications_are_read_in_the_legacy_model() -> None:
    lines = (FIXTURES / "compute-0.notifications.jsonl").read_bytes().splitlines()
    notes = [n for line in lines for n in parse_notifications(line)]
    assert len(notes) == 11
    memory = notes[0]
    assert (memory.host, memory.plugin, memory.plugin_instance, memory.type, memory.type_instance) == (
        "compute-0",
        "memory",
        "",
        "memory",
        "free",
    )
    assert memory.severity == "NOTIF_WARNING"
    assert memory.meta["DataSource"] == "value"
    assert {n.severity for n in notes} == {"NOTIF_WARNING", "NOTIF_OKAY", "NOTIF_FAILURE"}
    assert all(n.plugin == "load" and n.type == "load" for n in notes[1:])
    # startsAt 2026-11-21T22:32:16.027730861Z, nanoseconds truncated to microseconds
    assert memory.time == pytest.approx(1795300336.02773, abs=1e-6)


def test_labels_alone_identify_plugin_instance_and_type_instance() -> None:
    note = {
        "labels": {
            "alertname": "collectd_interface_if_octets",
            "instance": "h1",
            "interface": "eth0",
            "type": "rx",
            "severity": "FAILURE",
            "service": "collectd",
        },
        "annotations": {"summary": "link saturated"},
        "startsAt": "2026-01-01T00:00:00Z",
    }
    (n,) = parse_notifications(orjson.dumps([note]))
    assert (n.plugin, n.plugin_instance, n.type, n.type_instance) == ("interface", "eth0", "if_octets", "rx")
    assert n.severity == "NOTIF_FAILURE"
    assert n.message == "link saturated"


def test_flat_legacy_notifications_are_accepted_as_barometer_published_them() -> None:
    legacy = {
        "host": "compute-1",
        "plugin": "virt",
        "plugin_instance": "vm-7",
        "type": "domain_state",
        "type_instance": "",
        "severity": "NOTIF_FAILURE",
        "message": "domain crashed",
        "time": 1700000000.5,
    }
    assert parse_notifications(orjson.dumps(legacy)) == [
        Notification("compute-1", "virt", "vm-7", "domain_state", "", "NOTIF_FAILURE", "domain crashed", 1700000000.5)
    ]


@pytest.mark.parametrize(
    ("note", "reason"),
    [
        ({"host": "h", "severity": "LOUD", "message": "m", "time": 1}, "unknown severity"),
        ({"host": "h", "severity": "NOTIF_OKAY", "message": 5, "time": 1}, "'message' must be a string"),
        ({"labels": {"severity": "OKAY"}, "annotations": {}, "startsAt": "2026-01-01T00:00:00Z"}, "'instance'"),
        ({"labels": {"instance": "h", "severity": "OKAY"}, "annotations": {}, "startsAt": "soon"}, "not RFC 3339"),
    ],
)
def test_malformed_notifications_are_refused_with_a_reason(note: dict[str, object], reason: str) -> None:
    with pytest.raises(MalformedInput) as excinfo:
        parse_notifications(orjson.dumps(note))
    assert reason in excinfo.value.reason


def test_a_notification_message_splits_by_host_keeping_each_hosts_objects_in_order() -> None:
    from ves_streams.collectd import split_notifications_by_host

    def flat(host: str, message: str) -> dict[str, object]:
        return {"host": host, "plugin": "cpu", "severity": "FAILURE", "message": message, "time": 1.0, "extra": [1]}

    one = orjson.dumps([flat("a", "1"), flat("a", "2")])
    assert split_notifications_by_host(one) == [("a", one)]  # one host: unchanged bytes
    mixed = orjson.dumps([flat("a", "1"), flat("b", "2"), flat("a", "3")])
    split = split_notifications_by_host(mixed)
    assert [host for host, _ in split] == ["a", "b"]
    assert [orjson.loads(body) for _, body in split] == [[flat("a", "1"), flat("a", "3")], [flat("b", "2")]]
    assert [n.message for n in parse_notifications(split[0][1])] == ["1", "3"]
    with pytest.raises(MalformedInput):
        split_notifications_by_host(b'[{"severity": "FAILURE"}]')
