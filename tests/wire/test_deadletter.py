"""Dead-letter records: original bytes, reason and source in headers, size-capped."""

from __future__ import annotations

import orjson

from ves_streams.wire.deadletter import Source, malformed_input, render_error
from ves_streams.wire.deadletter import DLQ_MAX_VALUE_BYTES


def test_malformed_input_keeps_key_bytes_and_names_reason_and_source() -> None:
    raw = b"\xff\xfenot json"
    record = malformed_input(b"k", raw, "not JSON: oops", "values", Source("collectd", 3, 42))
    assert record.key == b"k"
    assert record.value == raw
    assert dict(record.headers) == {
        "ves-streams-reason": b"not JSON: oops",
        "ves-streams-stage": b"values",
        "ves-streams-source-topic": b"collectd",
        "ves-streams-source-partition": b"3",
        "ves-streams-source-offset": b"42",
    }


def test_oversized_input_is_cut_and_its_size_recorded() -> None:
    raw = b"x" * (10 * 1024 * 1024)
    record = malformed_input(None, raw, "too big", "values", Source("collectd", 0, 1))
    assert len(record.value) == DLQ_MAX_VALUE_BYTES
    assert dict(record.headers)["ves-streams-original-size"] == str(len(raw)).encode()


def test_long_reason_is_cut() -> None:
    record = malformed_input(None, b"x", "r" * 5000, "values", Source("collectd", 0, 1))
    assert len(dict(record.headers)["ves-streams-reason"]) <= 1024


def test_render_error_reports_rule_host_and_window() -> None:
    record = render_error("Host Measurements", "compute-0", "no such field", "measurements", Source("s", 1, 9), interval_start=1000.0)
    assert record.key == b"compute-0"
    assert orjson.loads(record.value) == {
        "rule": "Host Measurements",
        "host": "compute-0",
        "reason": "no such field",
        "stage": "measurements",
        "interval_start": 1000.0,
    }
    headers = dict(record.headers)
    assert headers["ves-streams-rule"] == b"Host Measurements"
    assert headers["ves-streams-host"] == b"compute-0"


def test_render_error_of_a_notification_keeps_the_notification() -> None:
    record = render_error("Faults", "h", "bad", "fault", Source("n", 0, 1), original=b'{"host":"h"}')
    assert record.value == b'{"host":"h"}'
