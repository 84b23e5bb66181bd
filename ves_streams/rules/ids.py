"""What ``{system.id}`` renders: Barometer's counter, or an id stable across retries.

Barometer's ``system.id`` is a process-wide counter incremented on every
read; :class:`CounterIds` reproduces it (the CLI's default, so ``ves-streams
render`` numbers events as Barometer did). A streaming worker that may render
the same interval twice (a rebalance, a retry) needs the same eventId both
times so the collector can discard the duplicate; :class:`DeterministicIds`
derives the id from what the event is about instead:

* measurements: the rule, the host, the identity of the selected item (its
  series, or its INDEX-KEY values) and the start of the interval;
* heartbeats: the rule, the host and the start of the interval;
* notifications: the rule and the notification's own content (host, plugin,
  instances, type, severity, time, message);
* alarms (the fault stage's alarm lifecycle, :mod:`ves_streams.stages.alarms`):
  the rule, the alarm's identity (host, plugin, instances, type) and its onset
  time, so every event of one alarm, from its onset to its clear, has the
  same id, and a replay of the onset after a crash makes the same one.

Within one event every ``{system.id}`` renders the same deterministic id.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from ves_streams.collectd import Notification

__all__ = ["IdPolicy", "CounterIds", "DeterministicIds", "IdSource"]

#: Called each time a template reads ``{system.id}``.
IdSource = Callable[[], "int | str"]


class IdPolicy(Protocol):
    """How ``{system.id}`` is produced for each kind of event."""

    def for_measurement(self, rule: str, host: str, identity: tuple[str, ...]) -> IdSource: ...

    def for_notification(self, rule: str, notification: Notification) -> IdSource: ...

    def for_heartbeat(self, rule: str, host: str) -> IdSource: ...

    def for_alarm(self, rule: str, notification: Notification, onset: float) -> IdSource: ...


@dataclass(slots=True)
class CounterIds:
    """Barometer's ``system.id``: 1, 2, 3, ... across every event, one per read.

    Thread-safe; share one instance for a whole run to get Barometer's numbering.
    """

    start: int = 1
    _counter: Iterable[int] = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._counter = itertools.count(self.start)

    def _next(self) -> int:
        with self._lock:
            return next(self._counter)  # type: ignore[call-overload]

    def for_measurement(self, rule: str, host: str, identity: tuple[str, ...]) -> IdSource:
        return self._next

    def for_notification(self, rule: str, notification: Notification) -> IdSource:
        return self._next

    def for_heartbeat(self, rule: str, host: str) -> IdSource:
        return self._next

    def for_alarm(self, rule: str, notification: Notification, onset: float) -> IdSource:
        return self._next


@dataclass(frozen=True, slots=True)
class DeterministicIds:
    """Ids that depend only on the event's content: a replayed render repeats them.

    ``interval_start`` is the start of the measurement interval being rendered
    (epoch seconds); pass the same value when rendering that interval again.
    Ids are 32 lowercase hex characters.
    """

    interval_start: float = 0.0

    def for_measurement(self, rule: str, host: str, identity: tuple[str, ...]) -> IdSource:
        return _constant(_digest("m", rule, host, *identity, repr(float(self.interval_start))))

    def for_notification(self, rule: str, notification: Notification) -> IdSource:
        n = notification
        return _constant(
            _digest(
                "n", rule, n.host, n.plugin, n.plugin_instance, n.type, n.type_instance,
                n.severity, repr(float(n.time)), n.message,
            )
        )

    def for_heartbeat(self, rule: str, host: str) -> IdSource:
        return _constant(_digest("h", rule, host, repr(float(self.interval_start))))

    def for_alarm(self, rule: str, notification: Notification, onset: float) -> IdSource:
        """The id of the alarm ``notification`` belongs to, which began at ``onset``.

        Independent of the notification's severity, message and time: a
        re-raise, a severity change and the clear all render the onset's id.
        """
        n = notification
        return _constant(_digest("a", rule, n.host, n.plugin, n.plugin_instance, n.type, n.type_instance, repr(float(onset))))


def _digest(*parts: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        data = part.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(4, "big"))  # length-prefixed: no ambiguity between parts
        h.update(data)
    return h.hexdigest()


def _constant(value: str) -> IdSource:
    return lambda: value
