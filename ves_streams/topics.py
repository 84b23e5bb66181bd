"""Every Kafka topic the workers read or write, in one place.

=====================================  =========================  ==============================================
topic (default name)                   key                        value
=====================================  =========================  ==============================================
``collectd``                           anything (write_kafka      JSON array of collectd value lists
                                       keys randomly)
``collectd-notifications``             anything                   collectd notification JSON (either shape)
``<app id>-samples`` (repartition)     host (UTF-8)               JSON array of one host's value lists, or a
                                                                  render tick (header ``ves-streams-kind: tick``)
``<app id>-samples-state-changelog``   host (``["host"]``, JSON)  the host's series, each its held value lists;
                                                                  tombstone when all aged out (state.py)
``<app id>-alarms-changelog``          alarm identity (JSON       the alarm's state and the input offset that
                                       array), compacted          made it (stages/alarms.py)
``ves-events``                         VES ``sourceName``         ``{"event": {...}}``; headers ``ves-domain``,
                                                                  ``ves-event-id``, ``ves-version``
``ves-streams-dlq``                    the input's key            the input's bytes (or a render error report);
                                                                  headers ``ves-streams-*`` (reason, stage, source)
``ves-events-dlq``                     (the sink's)               events the collector refused for good
=====================================  =========================  ==============================================

Names come from :class:`~ves_streams.settings.Settings` (and so from the
environment or the topology header). Topics the workers own are created at
start with ``VES_STREAMS_PARTITIONS`` partitions and
``VES_STREAMS_REPLICATION`` replicas; existing topics are left as they are.
All topics use raw bytes serializers: decoding happens in our code, so a
message that does not decode is dead-lettered instead of silently skipped by
Faust.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import faust
    from faust.types import TopicT

    from ves_streams.settings import Settings

__all__ = [
    "HEADER_DOMAIN",
    "HEADER_EVENT_ID",
    "HEADER_VES_VERSION",
    "STATE_TABLE",
    "TopicNames",
    "Topics",
]

#: Faust table holding the latest value list of every series (see state.py).
STATE_TABLE = "samples-state"

# Headers on ves-events (so the sink batches by domain without parsing JSON).
HEADER_DOMAIN = "ves-domain"
HEADER_EVENT_ID = "ves-event-id"
HEADER_VES_VERSION = "ves-version"
HEADER_INTERVAL_START = "ves-streams-interval-start"

# The samples repartition topic carries two kinds of record (its contract: wire/samples.py).

# Dead-letter headers and size limits: wire/deadletter.py (one scheme for both dead-letter topics).

#: The repartition topic only needs to hold what is not yet processed.
SAMPLES_RETENTION = timedelta(days=1)

#: The alarm changelog is compacted, but never a record younger than this: a restore skips the
#: changes whose input offset is not committed yet, so the change before such one (which
#: compaction would drop once the newer exists) must survive until the newer one's offset is
#: committed -- within a second normally, within the group's failover after a crash. A day is
#: the longest the whole pipeline may stay down between a crash and its takeover without losing
#: the state of an alarm raised again just before the crash.
ALARMS_MIN_COMPACTION_LAG = timedelta(days=1)
#: The alarm changelog's topic settings (created by the fault stage, runtime/changelog.py, with as
#: many partitions as the notifications topic)
ALARMS_CHANGELOG_CONFIG = {
    "cleanup.policy": "compact",
    "min.compaction.lag.ms": str(int(ALARMS_MIN_COMPACTION_LAG.total_seconds() * 1000)),
}


@dataclass(frozen=True, slots=True)
class TopicNames:
    """The names of every topic, derived from the settings."""

    values: str
    notifications: str
    samples: str
    events: str
    dlq: str
    events_dlq: str
    state_changelog: str
    alarms_changelog: str

    @classmethod
    def from_settings(cls, settings: Settings) -> TopicNames:
        return cls(
            values=settings.values_topic,
            notifications=settings.notifications_topic,
            samples=f"{settings.app_id}-samples",
            events=settings.events_topic,
            dlq=settings.dlq_topic,
            events_dlq=settings.events_dlq_topic,
            # Faust names a table's changelog "<app id>-<table>-changelog".
            state_changelog=f"{settings.app_id}-{STATE_TABLE}-changelog",
            alarms_changelog=f"{settings.app_id}-alarms-changelog",
        )


class Topics:
    """The Faust topic objects of one app (all raw bytes), and their creation.

    Input and repartition topics are *internal* so Faust creates them when it
    subscribes; output topics (events, dead letters) are created by
    :meth:`ensure_outputs` before the first record is produced to them.
    """

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.names = TopicNames.from_settings(settings)
        common: dict[str, Any] = {
            "key_type": bytes,
            "value_type": bytes,
            "key_serializer": "raw",
            "value_serializer": "raw",
            "partitions": settings.partitions,
            "replicas": settings.replication,
        }
        n = self.names
        self.values: TopicT = app.topic(n.values, internal=True, **common)
        self.notifications: TopicT = app.topic(n.notifications, internal=True, **common)
        self.samples: TopicT = app.topic(n.samples, internal=True, retention=SAMPLES_RETENTION, **common)
        self.events: TopicT = app.topic(n.events, **common)
        self.dlq: TopicT = app.topic(n.dlq, **common)
        self.events_dlq: TopicT = app.topic(n.events_dlq, **common)
        self._outputs_declared = False
        self._lock: asyncio.Lock | None = None

    @property
    def outputs(self) -> tuple[TopicT, ...]:
        return (self.events, self.dlq, self.events_dlq)

    async def ensure_outputs(self) -> None:
        """Create the output topics once per process (a no-op for existing topics)."""
        if self._outputs_declared:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._outputs_declared:
                return
            for topic in self.outputs:
                await topic.maybe_declare()
            self._outputs_declared = True
