"""``{alarm.*}``: the fields a fault rule renders an alarm's lifecycle with (VES 7.2)."""

from __future__ import annotations

import textwrap

import pytest

from ves_streams.collectd import Notification
from ves_streams.rules import AlarmPhase, DeterministicIds, RenderContext, RuleError

from .helpers import load

RULE = textwrap.dedent("""
    ves-streams: {name: t, ves_version: "7.2.1"}
    Faults: !Events
      - ITEM-DESC:
          event:
            commonEventHeader:
              domain: fault
              eventId: "{alarm.id}"
              legacyId: "{system.id}"
              sequence: !Number "{alarm.sequence}"
              startEpochMicrosec: !Microseconds "{alarm.start}"
              lastEpochMicrosec: !Microseconds "{alarm.last}"
              sourceName: "{n.host}"
    """)
RAISE = Notification("compute-0", "cpu", "0", "percent", "user", "NOTIF_FAILURE", "95 %", 1795300000.5)


def header(result):
    [event] = result.events
    return event.body["event"]["commonEventHeader"]


def test_without_a_lifecycle_every_notification_is_an_alarm_of_its_own():
    topology = load(RULE)
    h = header(topology.render_notification(RAISE, RenderContext(ids=DeterministicIds())))
    assert h["eventId"] == h["legacyId"] == DeterministicIds().for_notification("Faults", RAISE)()
    assert h["sequence"] == 0
    assert h["startEpochMicrosec"] == h["lastEpochMicrosec"] == 1795300000500000


def test_a_tracked_alarm_renders_the_onsets_id_start_and_its_sequence():
    topology = load(RULE)
    later = Notification("compute-0", "cpu", "0", "percent", "user", "NOTIF_WARNING", "85 %", 1795300020.0)
    phase = AlarmPhase(onset=RAISE.time, last=later.time, sequence=2)
    h = header(topology.render_notification(later, RenderContext(ids=DeterministicIds(), alarm=phase)))
    onset_id = DeterministicIds().for_alarm("Faults", RAISE, RAISE.time)()
    assert h["eventId"] == h["legacyId"] == onset_id  # {system.id} of a fault is the alarm's id too
    assert h["sequence"] == 2
    assert h["startEpochMicrosec"] == 1795300000500000
    assert h["lastEpochMicrosec"] == 1795300020000000


def test_alarm_ids_differ_per_onset_rule_and_identity_not_per_severity_or_message():
    ids = DeterministicIds()
    base = ids.for_alarm("R", RAISE, 1.0)()
    changed = Notification("compute-0", "cpu", "0", "percent", "user", "NOTIF_OKAY", "ok", 9.0)
    assert ids.for_alarm("R", changed, 1.0)() == base
    assert ids.for_alarm("R", RAISE, 2.0)() != base
    assert ids.for_alarm("Other", RAISE, 1.0)() != base
    other = Notification("compute-0", "cpu", "1", "percent", "user", "NOTIF_FAILURE", "95 %", 1.0)
    assert ids.for_alarm("R", other, 1.0)() != base


def test_an_untracked_clear_takes_the_id_derived_from_itself():
    topology = load(RULE)
    clear = Notification("compute-0", "cpu", "0", "percent", "user", "NOTIF_OKAY", "ok", 1795300030.0)
    phase = AlarmPhase(onset=clear.time, last=clear.time, sequence=0, tracked=False)
    h = header(topology.render_notification(clear, RenderContext(ids=DeterministicIds(), alarm=phase)))
    assert h["eventId"] == DeterministicIds().for_notification("Faults", clear)()
    assert h["sequence"] == 0


@pytest.mark.parametrize("rule", ["!Measurements", "!Heartbeat"])
def test_alarm_fields_exist_only_in_fault_rules(rule):
    text = textwrap.dedent(f"""
        R: {rule}
          - SELECT: {{plugin: cpu}}
          - ITEM-DESC:
              event: {{commonEventHeader: {{eventId: "{{alarm.id}}"}}}}
        """)
    if rule == "!Heartbeat":
        text = text.replace("  - SELECT: {plugin: cpu}\n", "")
    with pytest.raises(RuleError, match="alarm.id"):
        load(text)


def test_header_alarm_lifecycle_is_a_boolean_or_absent():
    assert load(RULE).header.alarm_lifecycle is None
    on = load(RULE.replace('ves_version: "7.2.1"}', 'ves_version: "7.2.1", alarm_lifecycle: false}'))
    assert on.header.alarm_lifecycle is False
    with pytest.raises(RuleError, match="alarm_lifecycle"):
        load(RULE.replace('ves_version: "7.2.1"}', 'ves_version: "7.2.1", alarm_lifecycle: maybe}'))
