"""The table of active alarms: what each collectd notification means for its alarm (VES 7.2).

VES 7.2 (commonEventHeader ``eventId``, ``startEpochMicrosec``, ``sequence``,
and "EventId Use Cases Examples") makes a fault an *alarm*: its onset,
every re-raise, every severity change and its clear share one eventId and
one ``startEpochMicrosec``, with a ``sequence`` that grows by one per
event; after the clear, the next raise of the same alarm is a new alarm
with a new eventId. collectd's threshold plugin with ``Persist true``
re-sends a FAILURE every interval while a threshold stays crossed, so the
re-raise is the common case.

**An alarm's identity** is :data:`AlarmKey`: the notification's host,
plugin, plugin instance, type and type instance, which is what collectd's
threshold plugin keeps one state for (its ``threshold_t`` is looked up by
exactly these names). Not the severity (a WARNING turning FAILURE is the same
alarm changing severity), not the message (it states the current value, so
it changes with every re-raise), not the data source (collectd checks the
data sources of one value list together and names the one that crossed in
its message).

**The transitions** (:meth:`AlarmTable.apply`): a FAILURE or WARNING for a
key not in the table is an *onset* (sequence 0); for a key in the table, a
*raise* (sequence + 1, the new severity). An OKAY for a key in the table is
the *clear* (sequence + 1) and removes it; an OKAY for an unknown key
(raised before this pipeline knew it) is an *unmatched clear*, an alarm of
its own with an id derived from the clear.

**A repeat is the same step.** A notification equal to the alarm's latest
(same names, severity, time and message: collectd posting it again after a
failed answer, or a record forwarded twice at-least-once) renders that
step again, with its sequence, and changes nothing. For that a cleared
alarm stays in the table, marked cleared (not active: ``GET /alarms`` and a
resend skip it), until the next raise of its key starts a new alarm.

**Determinism.** A transition depends only on the table and the
notification, and the eventId on the rule, the key and the onset's time
(:meth:`ves_streams.rules.ids.DeterministicIds.for_alarm`), so replaying
the same notifications over the same table gives the same ids and
sequences. The fault stage keeps the table per input partition and
changelogs it (:func:`encode_change`; the Kafka side is
:mod:`ves_streams.runtime.changelog`, driven by
:mod:`ves_streams.stages.faults`).

Nothing here touches Kafka.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from ves_streams.collectd import MalformedInput, Notification
from ves_streams.rules import AlarmPhase

__all__ = [
    "CLEAR_SEVERITY",
    "AlarmKey",
    "AlarmState",
    "AlarmTable",
    "Change",
    "Transition",
    "alarm_key",
    "decode_change",
    "encode_change",
    "encode_key",
]

#: collectd's severity of a clear
CLEAR_SEVERITY = "NOTIF_OKAY"

#: host, plugin, plugin_instance, type, type_instance
AlarmKey = tuple[str, str, str, str, str]

#: what a transition is: the alarm's first event, a later raise, its clear, a clear of an unknown
#: alarm, or an operator's resend of its latest event
ONSET, RAISE, CLEAR, UNMATCHED_CLEAR, RESEND, REPEAT = "onset", "raise", "clear", "unmatched-clear", "resend", "repeat"


def alarm_key(notification: Notification) -> AlarmKey:
    """The identity of the alarm ``notification`` is about (see the module docstring)."""
    n = notification
    return (n.host, n.plugin, n.plugin_instance, n.type, n.type_instance)


def encode_key(key: AlarmKey) -> bytes:
    """The changelog key of an alarm: its identity as a JSON array (compaction keeps one per alarm)."""
    return orjson.dumps(list(key))


@dataclass(frozen=True, slots=True)
class AlarmState:
    """One active alarm.

    ``onset`` is its first notification's time and ``last`` its latest's
    (epoch seconds); ``sequence`` the number of its latest event (0 at the
    onset); ``notification`` the latest, which a resend renders again;
    ``event_ids`` the eventIds its events carry (one per matching rule);
    ``cleared``: the latest was the clear (kept only to recognise a repeat).
    """

    key: AlarmKey
    onset: float
    severity: str
    sequence: int
    last: float
    notification: Notification
    event_ids: tuple[str, ...] = ()
    cleared: bool = False

    def to_json(self) -> dict[str, Any]:
        """What ``GET /alarms`` shows of it."""
        host, plugin, plugin_instance, type_, type_instance = self.key
        return {
            "host": host, "plugin": plugin, "plugin_instance": plugin_instance, "type": type_,
            "type_instance": type_instance, "eventId": self.event_ids[0] if self.event_ids else None,
            "eventIds": list(self.event_ids), "onset": self.onset, "last": self.last,
            "severity": self.severity, "sequence": self.sequence,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class Transition:
    """What one notification (or a resend) does to its alarm.

    ``phase`` is what the renderer needs (:class:`~ves_streams.rules.AlarmPhase`);
    ``after`` the alarm's state once the event is out (None: not tracked).
    """

    kind: str
    key: AlarmKey
    notification: Notification
    phase: AlarmPhase
    after: AlarmState | None


@dataclass(frozen=True, slots=True)
class Change:
    """One changelog record: the alarm's state after a transition and its source offset.

    ``source_offset`` is the input offset whose processing made the change;
    a restore applies only changes whose input offset the consumer group
    has committed (the rest are made again when those records are re-read).
    """

    key: AlarmKey
    state: AlarmState | None
    source_offset: int


@dataclass(slots=True)
class AlarmTable:
    """The active alarms of one input partition; see the module docstring.

    :meth:`apply` decides a transition without changing the table (a batch
    decides against an overlay, :meth:`overlay`, and the stage applies it
    with :meth:`commit` only once the broker acknowledged the batch).
    """

    alarms: dict[AlarmKey, AlarmState] = field(default_factory=dict)

    def __len__(self) -> int:
        """The number of active alarms."""
        return sum(1 for state in list(self.alarms.values()) if not state.cleared)

    def __iter__(self) -> Iterator[AlarmState]:
        """The active alarms (a copy: another thread may read while the stage applies a batch)."""
        return iter([state for state in list(self.alarms.values()) if not state.cleared])

    def get(self, key: AlarmKey) -> AlarmState | None:
        return self.alarms.get(key)

    def overlay(self) -> AlarmOverlay:
        """A view of this table that takes a batch's changes without changing it."""
        return AlarmOverlay(self)

    def put(self, key: AlarmKey, state: AlarmState | None) -> None:
        """Set (or, with None, remove) one alarm: a restored change or an acknowledged one."""
        if state is None:
            self.alarms.pop(key, None)
        else:
            self.alarms[key] = state


class AlarmOverlay:
    """A batch's pending changes over an :class:`AlarmTable`: read through, written aside."""

    __slots__ = ("table", "changes")

    def __init__(self, table: AlarmTable) -> None:
        self.table = table
        #: key -> its state after the batch (None: cleared), in the order first changed
        self.changes: dict[AlarmKey, AlarmState | None] = {}

    def get(self, key: AlarmKey) -> AlarmState | None:
        if key in self.changes:
            return self.changes[key]
        return self.table.get(key)

    def apply(self, notification: Notification) -> Transition:
        """The transition ``notification`` makes, recorded in the overlay."""
        key = alarm_key(notification)
        current = self.get(key)
        when = notification.time
        if current is not None and notification == current.notification:
            return Transition(REPEAT, key, notification, AlarmPhase(current.onset, current.last, current.sequence), current)
        if notification.severity == CLEAR_SEVERITY:
            if current is None or current.cleared:
                return Transition(UNMATCHED_CLEAR, key, notification, AlarmPhase(when, when, 0, tracked=False), None)
            after = replace(current, severity=notification.severity, sequence=current.sequence + 1, last=when,
                            notification=notification, cleared=True)  # fmt: skip
            self.changes[key] = after
            return Transition(CLEAR, key, notification, AlarmPhase(current.onset, when, after.sequence), after)
        if current is None or current.cleared:
            after = AlarmState(key, when, notification.severity, 0, when, notification)
            self.changes[key] = after
            return Transition(ONSET, key, notification, AlarmPhase(when, when, 0), after)
        after = replace(current, severity=notification.severity, sequence=current.sequence + 1, last=when,
                        notification=notification)  # fmt: skip
        self.changes[key] = after
        return Transition(RAISE, key, notification, AlarmPhase(current.onset, when, after.sequence), after)

    def resend(self, key: AlarmKey) -> Transition | None:
        """The next event of an active alarm, repeating its latest (same id and start, sequence + 1)."""
        current = self.get(key)
        if current is None or current.cleared:
            return None
        after = replace(current, sequence=current.sequence + 1)
        self.changes[key] = after
        phase = AlarmPhase(current.onset, current.last, after.sequence)
        return Transition(RESEND, key, current.notification, phase, after)

    def note_event_ids(self, key: AlarmKey, event_ids: tuple[str, ...]) -> None:
        """Remember the eventIds an alarm's events were rendered with (shown by ``GET /alarms``)."""
        state = self.changes.get(key)
        if state is not None and event_ids and state.event_ids != event_ids:
            self.changes[key] = replace(state, event_ids=event_ids)

    def active_keys(self) -> list[AlarmKey]:
        """Every alarm active with the batch's changes, table order first."""
        def active(k: AlarmKey) -> bool:
            state = self.get(k)
            return state is not None and not state.cleared

        keys = [k for k in self.table.alarms if active(k)]
        keys += [k for k in self.changes if k not in self.table.alarms and active(k)]
        return keys

    def commit(self) -> None:
        """Apply the batch's changes to the table (the broker acknowledged them)."""
        for key, state in self.changes.items():
            self.table.put(key, state)
        self.changes = {}


# -- the changelog record's value --------------------------------------------


def encode_change(change: Change) -> bytes:
    """The changelog value of ``change``: the state and its source offset.

    Never a Kafka tombstone, not even for a clear: the restore's filter needs
    the offset; compaction keeps one record per alarm identity.
    """
    body: dict[str, Any] = {"offset": change.source_offset, "state": None}
    state = change.state
    if state is not None:
        n = state.notification
        body["state"] = {
            "onset": state.onset, "severity": state.severity, "sequence": state.sequence, "last": state.last,
            "event_ids": list(state.event_ids), "cleared": state.cleared,
            "notification": {"host": n.host, "plugin": n.plugin, "plugin_instance": n.plugin_instance, "type": n.type,
                             "type_instance": n.type_instance, "severity": n.severity, "message": n.message,
                             "time": n.time, "meta": dict(n.meta)},
        }  # fmt: skip
    return orjson.dumps(body)


def decode_change(key: bytes, value: bytes) -> Change:
    """The change a changelog record holds; :class:`MalformedInput` when it is not one of ours."""
    try:
        parts = orjson.loads(key)
        body = orjson.loads(value)
        if not (isinstance(parts, list) and len(parts) == 5 and all(isinstance(p, str) for p in parts)):
            raise ValueError("key is not an alarm identity")
        alarm: AlarmKey = (parts[0], parts[1], parts[2], parts[3], parts[4])
        offset = int(body["offset"])
        raw = body["state"]
        if raw is None:
            return Change(alarm, None, offset)
        n = raw["notification"]
        notification = Notification(
            host=str(n["host"]), plugin=str(n["plugin"]), plugin_instance=str(n["plugin_instance"]), type=str(n["type"]),
            type_instance=str(n["type_instance"]), severity=str(n["severity"]), message=str(n["message"]),
            time=float(n["time"]), meta={str(k): str(v) for k, v in _mapping(n.get("meta")).items()},
        )  # fmt: skip
        state = AlarmState(alarm, float(raw["onset"]), str(raw["severity"]), int(raw["sequence"]), float(raw["last"]),
                           notification, tuple(str(i) for i in raw.get("event_ids") or ()),
                           bool(raw.get("cleared", False)))  # fmt: skip
        return Change(alarm, state, offset)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise MalformedInput(f"not an alarm changelog record: {type(exc).__name__}: {exc}") from None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}
