"""Reading ves-events records, dead-letter records, and the commit watermark."""

from __future__ import annotations

import dataclasses

import orjson

from ves_streams.sink.offsets import OffsetTracker
from ves_streams.sink.records import Malformed, SinkRecord, dead_letter, parse_record

from tests.sink.events import event, kafka_headers, kafka_value


def _parse(value: bytes | None, headers: list[tuple[str, bytes]] | None = None) -> SinkRecord | Malformed:
    return parse_record(topic="t", partition=1, offset=5, key=b"h1", value=value, headers=headers or [])


def test_domain_and_id_come_from_headers_when_present() -> None:
    ev = event("fault", "h1", 3)
    parsed = _parse(kafka_value(ev), [("ves-domain", b"fault"), ("ves-event-id", b"id-from-header")])
    assert isinstance(parsed, SinkRecord)
    assert (parsed.domain, parsed.event_id) == ("fault", "id-from-header")
    assert orjson.loads(parsed.event_json) == ev


def test_domain_and_id_come_from_the_event_when_headers_are_absent() -> None:
    parsed = _parse(kafka_value(event("heartbeat", "h1", 3)))
    assert isinstance(parsed, SinkRecord)
    assert (parsed.domain, parsed.event_id) == ("heartbeat", "h1-heartbeat-3")


def test_malformed_records_get_a_reason_and_never_raise() -> None:
    cases = {
        None: "empty",
        b"": "empty",
        b"{not json": "not JSON",
        b"[1, 2]": '{"event"',
        b'{"events": {}}': '{"event"',
        b'{"event": {"commonEventHeader": {}}}': "no domain",
        b'{"event": {"commonEventHeader": {"domain": 7}}}': "no domain",
        b"\xff\xfe": "not JSON",
    }
    for value, words in cases.items():
        parsed = _parse(value)
        assert isinstance(parsed, Malformed), value
        assert words in parsed.reason, (value, parsed.reason)


def test_dead_letter_keeps_value_key_headers_and_says_why() -> None:
    ev = event("fault", "h1", 3)
    parsed = parse_record(
        topic="ves-events", partition=2, offset=9, key=b"h1", value=kafka_value(ev), headers=kafka_headers(ev)
    )
    assert isinstance(parsed, SinkRecord)
    letter = dead_letter(
        parsed, reason="refused", status=400, body='{"requestError": 1}', url="https://u:pw@ves/eventListener/v7"
    )
    headers = dict(letter.headers)
    assert letter.value == kafka_value(ev) and letter.key == b"h1"
    assert headers["ves-domain"] == b"fault"
    # the project's one dead-letter scheme, the same as the workers' (wire/deadletter.py)
    assert headers["ves-streams-status"] == b"400"
    assert headers["ves-streams-body"] == b'{"requestError": 1}'
    assert (headers["ves-streams-source-topic"], headers["ves-streams-source-partition"], headers["ves-streams-source-offset"]) == (b"ves-events", b"2", b"9")
    assert headers["ves-streams-url"] == b"https://***@ves/eventListener/v7"
    assert headers["ves-streams-stage"] == b"delivery"
    again = dead_letter(dataclasses.replace(parsed, headers=letter.headers), reason="again")
    assert [k for k, _ in again.headers].count("ves-streams-reason") == 1
    assert dict(again.headers)["ves-streams-reason"] == b"again"


def test_a_dead_letter_of_the_old_header_scheme_refused_again_carries_only_the_new_one() -> None:
    ev = event("fault", "h1", 3)
    old = kafka_headers(ev) + [("ves-dlq-reason", b"refused"), ("ves-dlq-source", b"ves-events/2/9")]
    parsed = parse_record(topic="ves-events-dlq", partition=0, offset=1, key=b"h1", value=kafka_value(ev), headers=old)
    assert isinstance(parsed, SinkRecord)
    letter = dead_letter(parsed, reason="again", status=400)
    keys = [k for k, _ in letter.headers]
    assert not [k for k in keys if k.startswith("ves-dlq-")]
    assert dict(letter.headers)["ves-streams-reason"] == b"again" and "ves-domain" in keys


def test_commit_point_is_the_contiguous_finished_prefix_per_partition() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    for offset in (10, 11, 12, 13):
        tracker.consumed("p0", offset)
    tracker.consumed("p1", 3)
    tracker.finished("p0", 12)
    tracker.finished("p0", 11)
    assert tracker.committable() == {}
    tracker.finished("p0", 10)
    assert tracker.committable() == {"p0": 13}
    tracker.committed({"p0": 13})
    assert tracker.committable() == {}
    tracker.finished("p1", 3)
    tracker.finished("p0", 13)
    assert tracker.committable() == {"p0": 14, "p1": 4}
    assert tracker.in_flight() == 0


def test_unknown_offsets_are_ignored() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    tracker.finished("p0", 1)
    assert tracker.committable() == {}


def test_an_event_failing_the_ves_schema_is_invalid_with_the_path_of_the_offending_value() -> None:
    from ves_streams.sink.validation import schema_check

    check = schema_check("7")
    good = event("fault", "h1", 1)
    bad = event("fault", "h1", 2)
    bad["commonEventHeader"]["version"] = 4.1
    assert isinstance(parse_record(topic="t", partition=0, offset=0, key=b"h1", value=kafka_value(good), check=check),
                      SinkRecord)  # fmt: skip
    parsed = parse_record(topic="t", partition=0, offset=1, key=b"h1", value=kafka_value(bad), check=check)
    assert isinstance(parsed, Malformed) and parsed.kind == "invalid"
    assert parsed.reason == "event does not conform to the VES 7 schema: event.commonEventHeader.version must be string"
    assert schema_check("5")(good) is not None, "a VES 7 event is not a VES 5 one"
