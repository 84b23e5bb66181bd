"""The alarm table: onset, re-raise, severity change, clear, unmatched clear, resend; its changelog records."""

from __future__ import annotations

import pytest

from ves_streams.collectd import MalformedInput, Notification
from ves_streams.stages.alarms import (
    AlarmTable,
    Change,
    alarm_key,
    decode_change,
    encode_change,
    encode_key,
)


def note(severity: str, time: float, *, host: str = "compute-0", type_instance: str = "user", message: str = "m") -> Notification:
    return Notification(host, "cpu", "0", "percent", type_instance, severity, message, time, meta={"DataSource": "value"})


def test_raises_then_clear_share_the_onset_and_count_up_then_the_alarm_leaves():
    table = AlarmTable()
    batch = table.overlay()
    onset = batch.apply(note("NOTIF_WARNING", 100.0))
    again = batch.apply(note("NOTIF_WARNING", 110.0))
    worse = batch.apply(note("NOTIF_FAILURE", 120.0))
    clear = batch.apply(note("NOTIF_OKAY", 130.0))
    assert [t.kind for t in (onset, again, worse, clear)] == ["onset", "raise", "raise", "clear"]
    assert [t.phase.sequence for t in (onset, again, worse, clear)] == [0, 1, 2, 3]
    assert {t.phase.onset for t in (onset, again, worse, clear)} == {100.0}
    assert [t.phase.last for t in (onset, again, worse, clear)] == [100.0, 110.0, 120.0, 130.0]
    assert worse.after is not None and worse.after.severity == "NOTIF_FAILURE"
    assert clear.after is not None and clear.after.cleared and all(t.phase.tracked for t in (onset, again, worse, clear))
    batch.commit()
    assert len(table) == 0
    reraise = table.overlay().apply(note("NOTIF_FAILURE", 140.0))
    assert (reraise.kind, reraise.phase.onset, reraise.phase.sequence) == ("onset", 140.0, 0)


def test_the_table_changes_only_when_the_batch_is_committed():
    table = AlarmTable()
    batch = table.overlay()
    batch.apply(note("NOTIF_FAILURE", 100.0))
    assert len(table) == 0  # an abandoned batch leaves the table as it was
    replay = table.overlay().apply(note("NOTIF_FAILURE", 100.0))
    assert (replay.kind, replay.phase.sequence) == ("onset", 0)
    batch.commit()
    state = table.get(alarm_key(note("NOTIF_FAILURE", 0)))
    assert state is not None and (state.onset, state.sequence) == (100.0, 0)


def test_a_clear_of_an_unknown_alarm_is_untracked_and_changes_nothing():
    table = AlarmTable()
    batch = table.overlay()
    clear = batch.apply(note("NOTIF_OKAY", 50.0))
    assert clear.kind == "unmatched-clear" and not clear.phase.tracked and clear.phase.sequence == 0
    assert batch.changes == {}


def test_alarms_are_per_identity_not_per_message_or_severity():
    batch = AlarmTable().overlay()
    batch.apply(note("NOTIF_FAILURE", 1.0, type_instance="user"))
    other = batch.apply(note("NOTIF_FAILURE", 2.0, type_instance="system"))
    same = batch.apply(note("NOTIF_WARNING", 3.0, type_instance="user", message="different text"))
    assert other.kind == "onset" and same.kind == "raise" and same.phase.onset == 1.0


def test_resend_repeats_the_latest_event_with_the_next_sequence():
    table = AlarmTable()
    batch = table.overlay()
    batch.apply(note("NOTIF_WARNING", 100.0))
    batch.apply(note("NOTIF_FAILURE", 110.0, message="latest"))
    batch.commit()
    resend_batch = table.overlay()
    [key] = resend_batch.active_keys()
    resend = resend_batch.resend(key)
    assert resend is not None
    assert (resend.kind, resend.phase.onset, resend.phase.last, resend.phase.sequence) == ("resend", 100.0, 110.0, 2)
    assert resend.notification.message == "latest"
    assert resend_batch.resend(("gone", "", "", "", "")) is None


def test_changelog_records_round_trip_state_and_source_offset():
    batch = AlarmTable().overlay()
    onset = batch.apply(note("NOTIF_FAILURE", 100.25))
    batch.note_event_ids(onset.key, ("abc",))
    state = batch.get(onset.key)
    change = Change(onset.key, state, 41)
    assert decode_change(encode_key(onset.key), encode_change(change)) == change
    cleared = Change(onset.key, None, 42)
    assert decode_change(encode_key(onset.key), encode_change(cleared)) == cleared
    with pytest.raises(MalformedInput):
        decode_change(b"[1]", b"{}")


def test_to_json_shows_what_get_alarms_lists():
    batch = AlarmTable().overlay()
    onset = batch.apply(note("NOTIF_FAILURE", 100.0))
    batch.note_event_ids(onset.key, ("id-1",))
    shown = batch.get(onset.key).to_json()  # type: ignore[union-attr]
    assert shown["eventId"] == "id-1" and shown["onset"] == 100.0 and shown["sequence"] == 0
    assert shown["severity"] == "NOTIF_FAILURE" and shown["host"] == "compute-0"


def test_a_repeat_of_the_latest_notification_is_the_same_step_and_changes_nothing():
    table = AlarmTable()
    batch = table.overlay()
    batch.apply(note("NOTIF_FAILURE", 100.0))
    raised = batch.apply(note("NOTIF_FAILURE", 110.0))
    batch.commit()
    again = table.overlay()
    repeat = again.apply(note("NOTIF_FAILURE", 110.0))  # collectd posting it again, a forward replayed
    assert (repeat.kind, repeat.phase) == ("repeat", raised.phase) and again.changes == {}
    clear = again.apply(note("NOTIF_OKAY", 120.0))
    clear_again = again.apply(note("NOTIF_OKAY", 120.0))
    assert (clear_again.kind, clear_again.phase) == ("repeat", clear.phase)
    later_okay = again.apply(note("NOTIF_OKAY", 130.0))
    assert later_okay.kind == "unmatched-clear"
    again.commit()
    assert len(table) == 0 and list(table) == []
    assert table.overlay().active_keys() == []
    assert table.overlay().resend(alarm_key(note("NOTIF_OKAY", 0))) is None
