"""The capture replay stands in for collectd: same message shape, live timestamps, N hosts."""

from __future__ import annotations

import orjson

from ves_streams.collectd import parse_notifications, parse_value_lists
from ves_streams.dev.replay import DEFAULT_CAPTURE_DIR, host_names, load_capture, notification_messages, round_messages

CAPTURE = load_capture(
    DEFAULT_CAPTURE_DIR / "compute-0.values.jsonl", DEFAULT_CAPTURE_DIR / "compute-0.notifications.jsonl"
)


def test_capture_splits_into_the_rounds_collectd_produced() -> None:
    assert CAPTURE.interval == 5.0
    assert sum(len(r) for r in CAPTURE.rounds) == 915
    # a full round carries every plugin once; only the first (warm-up) round may be short
    full = max(len(r) for r in CAPTURE.rounds)
    assert all(len(r) == full for r in CAPTURE.rounds[1:])
    assert len(CAPTURE.notifications) == 11


def test_replayed_round_is_write_kafka_json_for_every_host_at_the_given_time() -> None:
    hosts = host_names(3)
    messages = list(round_messages(CAPTURE, 1, hosts, now=1234.5))
    assert len(messages) == 3 * len(CAPTURE.rounds[1])
    parsed = [vl for m in messages for vl in parse_value_lists(m)]
    assert {vl.host for vl in parsed} == set(hosts)
    assert {vl.time for vl in parsed} == {1234.5}
    assert all(len(orjson.loads(m)) == 1 for m in messages)


def test_replayed_notifications_name_the_new_host_everywhere() -> None:
    (offset, message), *_ = notification_messages(CAPTURE, ["compute-00042"], now=99.0)
    (note,) = parse_notifications(message)
    assert offset == 0.0
    assert note.host == "compute-00042"
    assert note.message.startswith("Host compute-00042, plugin memory")
    assert note.time == 99.0
