"""Drill-only helpers: real workers on a 3-broker cluster, a steady feed, and what reached the collector.

A drill (see ``tests/drills/test_*.py``) runs the product as deployed:
processing workers (``VES_STREAMS_ROLE=process``) and a separate sink
(``VES_STREAMS_ROLE=sink``, its own consumer group) as ``faust -A
ves_streams worker`` subprocesses, every topic at replication factor 3 with
``min.insync.replicas`` 2, and the real collector. It then damages something
and checks what the collector received against what was fed.

* :class:`Drill` owns one drill's topics, workers, Kafka I/O and feed.
* :class:`Feed` is a background producer: every interval, one round of
  ``write_kafka``-shaped value lists (the recorded capture, re-hosted and
  re-timed with :func:`ves_streams.dev.replay.round_messages`) for every host,
  sent mid-window; every few rounds one notification with a unique token.
* :func:`delivery_report` joins the collector's events with the
  ``ves-events`` records (whose headers name each event's window) and
  computes the invariants: missing windows per host, per-host order, eventId
  uniqueness, fault events per notification, events not delivered.
* :class:`Collectors` reads what the collector(s) accepted incrementally
  (a drill may restart the collector on its port, or fill it with 150 MiB).
* :class:`RssSampler` samples ``VmRSS`` (and CPU) of processes while a fault
  lasts; :func:`scrape` reads a worker's ``/metrics``.
* :func:`burst_events` and :func:`produce_records` put large valid events
  straight on ``ves-events``; :class:`LocatingProducer` sends poison and
  reports where each message landed, to match it with its dead letter.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.procs import cpu_seconds, rss_mb
from tests.agents.support import PROJECT_DIR, KafkaIO, Names, Record, TopicReader, Worker, notification
from tests.plugins.collector import VesCollector
from tests.plugins.kafka import create_topics
from ves_streams.dev.replay import DEFAULT_CAPTURE_DIR, Capture, load_capture, round_messages

#: Render interval of the drills' workers (windows every 2 s).
INTERVAL = 2.0
#: Heartbeats every 10 s, so a drill sees several (the heartbeat interval is the topology's:
#: the drills run topologies/host.yaml with this one value changed, see :func:`drill_topology`).
HEARTBEAT_INTERVAL = 10.0
PARTITIONS = 4
REPLICATION = 3
#: Consumer-group session timeout of the workers: a SIGKILLed worker is evicted within this.
SESSION_TIMEOUT = 6.0
#: Input topics accept messages this large, so a 10 MB message reaches the worker (which must refuse it).
BIG_MESSAGE_BYTES = 16 * 1024 * 1024


@cache
def capture() -> Capture:
    """The recorded collectd capture; its value lists carry ``interval`` 5 s, so samples stay fresh 10 s."""
    return load_capture(DEFAULT_CAPTURE_DIR / "compute-0.values.jsonl")


def freshness() -> float:
    """How long a sample counts as current (Barometer's aging: twice its collectd interval)."""
    return 2.0 * capture().interval


# -- the feed ------------------------------------------------------------------------


@dataclass(frozen=True)
class FedRound:
    """One round of value lists for every host: their ``time`` and when the broker acknowledged them."""

    sample_time: float
    acked_at: float


@dataclass(frozen=True)
class FedExtra:
    """A message the feed sent besides the rounds (poison, hostile input): where it landed."""

    topic: str
    label: str
    partition: int
    offset: int
    size: int


@dataclass(frozen=True)
class FedNotification:
    host: str
    token: str
    raw: bytes
    acked_at: float
    partition: int = -1
    offset: int = -1


class LocatingProducer:
    """An aiokafka producer on a :class:`KafkaIO`'s loop that says where each record landed.

    Random keys (as ``write_kafka``), acks from all in-sync replicas, requests
    up to 17 MiB so a 10 MB message can be sent.
    """

    def __init__(self, io: KafkaIO) -> None:
        self.io = io
        self._producer: Any = None

    def _run(self, coro: Any, timeout: float = 120.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.io.loop).result(timeout)

    def send_many(self, topic: str, values: Sequence[bytes]) -> list[tuple[int, int]]:
        """Send ``values`` in order; returns ``(partition, offset)`` of each once all are acknowledged."""
        from aiokafka import AIOKafkaProducer

        async def send() -> list[tuple[int, int]]:
            if self._producer is None:
                self._producer = AIOKafkaProducer(bootstrap_servers=self.io.bootstrap, acks="all",
                                                  max_request_size=BIG_MESSAGE_BYTES + 2**20, request_timeout_ms=60000)  # fmt: skip
                await self._producer.start()
            futures = [await self._producer.send(topic, v, key=os.urandom(4).hex().encode()) for v in values]
            return [(m.partition, m.offset) for m in await asyncio.gather(*futures)]

        result: list[tuple[int, int]] = self._run(send())
        return result

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            self._run(producer.stop(), timeout=30)


class Feed:
    """Produces a round for every host each ``interval``, mid-window, until stopped.

    A round (or notification) whose produce fails is sent again, the same
    bytes, until acknowledged: the feed is at-least-once, as ``write_kafka``
    with retries is, and a value list or notification sent twice is the same
    sample or the same notification (same eventId).
    """

    def __init__(
        self,
        io: KafkaIO,
        names: Names,
        hosts: Sequence[str],
        *,
        interval: float = INTERVAL,
        notify_every: int = 3,
        notification_text: Callable[[int], str] = lambda i: f"drill notification {i:04d}",
        extra: Callable[[int], list[tuple[str, str, bytes]]] | None = None,
        rewrite: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.io = io
        self.names = names
        self.hosts = list(hosts)
        self.interval = interval
        self.notify_every = notify_every
        self.notification_text = notification_text
        self.extra = extra
        self.rewrite = rewrite
        self.extras: list[FedExtra] = []
        self._producer: LocatingProducer | None = None
        self.rounds: list[FedRound] = []
        self.notifications: list[FedNotification] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drill-feed", daemon=True)
        self._crash: BaseException | None = None

    def start(self) -> Feed:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(90)
        if self._thread.is_alive():
            raise AssertionError("the feed thread did not stop within 90 s (producer stuck?)")
        if self._producer is not None:
            self._producer.close()
            self._producer = None
        if self._crash is not None:
            raise AssertionError(f"the feed crashed: {self._crash!r}") from self._crash

    def _send(self, what: str, send: Callable[[], None]) -> bool:
        """Retry until acknowledged; False if the drill stopped first."""
        while not self._stop.is_set():
            try:
                send()
                return True
            except Exception as exc:  # retried: the broker may be down on purpose
                self.failures.append(f"{time.strftime('%H:%M:%S')} {what}: {type(exc).__name__}: {exc}")
                self._stop.wait(0.5)
        return False

    def _run(self) -> None:
        try:
            index = 0
            while not self._stop.is_set():
                boundary = math.floor(time.time() / self.interval) * self.interval
                due = boundary + self.interval / 2
                if due < time.time():
                    due += self.interval
                if self._stop.wait(max(0.0, due - time.time())):
                    break
                now = time.time()
                messages = list(round_messages(capture(), index, self.hosts, now))
                if self.rewrite is not None:
                    messages = [self.rewrite(m) for m in messages]
                if not self._send(f"round {index}", lambda: self.io.produce_many(self.names.values, messages)):
                    break
                self.rounds.append(FedRound(now, time.time()))
                if self.extra is not None and not self._send_extras(index):
                    break
                if self.notify_every and index % self.notify_every == 0:
                    n = len(self.notifications)
                    host = self.hosts[n % len(self.hosts)]
                    token = self.notification_text(n)
                    raw = notification(host, time.time(), token)
                    where: list[tuple[int, int]] = []

                    def send_notification() -> None:
                        if self._producer is None:
                            self._producer = LocatingProducer(self.io)
                        where[:] = self._producer.send_many(self.names.notifications, [raw])

                    if not self._send(f"notification {n}", send_notification):
                        break
                    self.notifications.append(FedNotification(host, token, raw, time.time(), *where[0]))
                index += 1
        except BaseException as exc:
            self._crash = exc

    def _send_extras(self, index: int) -> bool:
        if self._producer is None:
            self._producer = LocatingProducer(self.io)
        by_topic: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
        for topic, label, raw in self.extra(index) if self.extra is not None else ():
            by_topic[topic].append((label, raw))
        for topic, items in by_topic.items():
            where: list[tuple[int, int]] = []

            def send() -> None:
                assert self._producer is not None
                where[:] = self._producer.send_many(topic, [raw for _, raw in items])

            if not self._send(f"extras to {topic}", send):
                return False
            self.extras += [FedExtra(topic, label, p, o, len(raw)) for (label, raw), (p, o) in zip(items, where)]
        return True

    def max_gap(self) -> float:
        """Longest time between two acknowledged rounds (the feed's own hiccups)."""
        acked = [r.acked_at for r in self.rounds]
        return max((b - a for a, b in zip(acked, acked[1:])), default=0.0)

    def fresh_windows(self, *, skip: int = 1) -> list[float]:
        """Starts of the windows every host should have a measurement event for.

        A window ``[s, s + interval)`` counts when some round was acknowledged
        before ``s`` and is still current at the window's end; the first
        ``skip`` such windows are left out (the pipeline was warming up).
        """
        if not self.rounds:
            return []
        first = math.ceil(self.rounds[0].acked_at / self.interval) * self.interval
        last = self.rounds[-1].acked_at + freshness()
        out = []
        s = first
        while s + self.interval <= last:
            end = s + self.interval
            if any(r.acked_at <= s and end - r.sample_time < freshness() for r in self.rounds):
                out.append(round(s, 6))
            s = round(s + self.interval, 6)
        return out[skip:]

    def figures(self) -> dict[str, Any]:
        return {
            "rounds": len(self.rounds),
            "value_lists": sum(len(self.hosts) * len(capture().rounds[i % len(capture().rounds)]) for i in range(len(self.rounds))),
            "notifications": len(self.notifications),
            "extras": len(self.extras),
            "max_gap_s": round(self.max_gap(), 2),
            "produce_retries": len(self.failures),
        }


# -- the drill ------------------------------------------------------------------------


def drill_topology(directory: Path) -> Path:
    """``topologies/host.yaml`` with heartbeats every :data:`HEARTBEAT_INTERVAL` seconds instead of 60."""
    text = (PROJECT_DIR / "topologies" / "host.yaml").read_text()
    changed = re.sub(r"(?m)^(\s*heartbeat_interval:\s*)\d+(\.\d*)?\s*$", rf"\g<1>{HEARTBEAT_INTERVAL:g}", text)
    if changed == text:
        raise AssertionError("topologies/host.yaml has no 'heartbeat_interval: N' header line to change for the drills")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "drill-host.yaml"
    path.write_text(changed)
    return path


def drill_env(broker_url: str, names: Names, collector_url: str, role: str, topology: Path | None = None) -> dict[str, str]:
    """A worker's settings in a drill (interval 2 s, replication 3, session timeout 6 s)."""
    return {
        "VES_STREAMS_BROKER": broker_url,
        "VES_STREAMS_ROLE": role,
        "VES_STREAMS_INTERVAL": str(INTERVAL),
        **({"VES_STREAMS_TOPOLOGY": str(topology)} if topology is not None else {}),
        "VES_STREAMS_PARTITIONS": str(PARTITIONS),
        "VES_STREAMS_REPLICATION": str(REPLICATION),
        "VES_STREAMS_KAFKA_SESSION_TIMEOUT": str(SESSION_TIMEOUT),
        "VES_STREAMS_HOSTNAME": "ves-streams-drill",
        "VES_STREAMS_COLLECTOR_URL": collector_url,
        "VES_STREAMS_SINK_LINGER_MS": "100",
        **names.env(),
    }


class Drill:
    """One drill's topics, workers, Kafka I/O and feed; :meth:`close` stops everything it started."""

    def __init__(self, name: str, bootstrap: str, broker_url: str, collector: VesCollector, workdir: Path) -> None:
        self.names = Names.unique(name[:30])
        self.bootstrap = bootstrap
        self.broker_url = broker_url
        self.collector = collector
        self.workdir = workdir
        self.topology = drill_topology(workdir)
        self.workers: list[Worker] = []
        #: What the collector(s) accepted, read incrementally; :meth:`drain` and :meth:`report` use it.
        self.collected = Collectors(collector)
        self.feeds: list[Feed] = []
        self.started = time.monotonic()
        self._io: KafkaIO | None = None
        self._events: TopicReader | None = None
        self._dlq: TopicReader | None = None

    # -- set-up

    @property
    def io(self) -> KafkaIO:
        if self._io is None:
            self._io = KafkaIO(self.bootstrap)
        return self._io

    def create_topics(self) -> None:
        """Inputs (16 MiB messages allowed) and outputs at RF 3; Faust creates its own (samples, changelog) at RF 3."""
        n = self.names
        create_topics(self.bootstrap, [n.values, n.notifications], PARTITIONS, REPLICATION,
                      configs={"max.message.bytes": str(BIG_MESSAGE_BYTES)}, timeout=60)  # fmt: skip
        create_topics(self.bootstrap, [n.events, n.dlq, n.events_dlq], PARTITIONS, REPLICATION, timeout=60)

    def worker(self, name: str, role: str, *, wait: bool = True, **env: str) -> Worker:
        settings = {**drill_env(self.broker_url, self.names, self.collector.url, role, self.topology), **env}
        worker = Worker(name, settings, self.workdir / "workers")
        self.workers.append(worker)
        worker.start()
        if wait:
            worker.wait_ready(timeout=120)
        return worker

    def processor(self, name: str = "p1", *, wait: bool = True, **env: str) -> Worker:
        return self.worker(name, "process", wait=wait, **env)

    def sink(self, name: str = "sink", *, wait: bool = True, **env: str) -> Worker:
        """A sink-only worker (``VES_STREAMS_ROLE=sink``) of the same app: its own consumer group ``<app id>-sink``."""
        return self.worker(name, "sink", wait=wait, **env)

    @property
    def events(self) -> TopicReader:
        """Every ``ves-events`` record since the beginning (eventId, domain, host, window from the headers)."""
        if self._events is None:
            self._events = self.io.reader([self.names.events])
        return self._events

    @property
    def dlq(self) -> TopicReader:
        if self._dlq is None:
            self._dlq = self.io.reader([self.names.dlq])
        return self._dlq

    def feed(self, hosts: Sequence[str], **options: Any) -> Feed:
        feed = Feed(self.io, self.names, hosts, **options)
        self.feeds.append(feed)
        return feed.start()

    # -- waiting

    def warm_up(self, hosts: Sequence[str], timeout: float = 60.0) -> float:
        """Wait until every host has a measurement event at the collector; returns how long it took."""
        start = time.monotonic()
        wanted = set(hosts)

        def every_host_measured(events: list[dict[str, Any]]) -> bool:
            return wanted <= {e["commonEventHeader"]["sourceName"] for e in events if e["commonEventHeader"]["domain"] == "measurement"}

        self.collector.wait_for(every_host_measured, timeout=timeout)
        return time.monotonic() - start

    def drain(self, feed: Feed, hosts: Sequence[str], timeout: float = 60.0, *, collector: VesCollector | Collectors | None = None) -> float:
        """After the feed stopped: wait until the collector has every event of ``ves-events``
        and the measurement windows the feed makes due (or ``timeout``); returns the seconds waited."""
        collector = collector or self.collected
        start = time.monotonic()
        deadline = start + timeout
        windows = feed.fresh_windows()
        while time.monotonic() < deadline:
            began = time.monotonic()
            report = delivery_report(collector.events(), self.events.snapshot(), hosts, windows, feed.notifications)
            if not report.undelivered and not any(report.missing.values()) and report.faults_ok:
                break
            time.sleep(max(0.5, time.monotonic() - began))  # reading a big record file is not free
        # ves-events may still be receiving the last windows: one more interval, then stable
        time.sleep(INTERVAL)
        return time.monotonic() - start

    def report(
        self, feed: Feed, hosts: Sequence[str], *, collector: VesCollector | Collectors | None = None, contents: bool = False
    ) -> DeliveryReport:
        """What reached the collector; with ``contents``, each window's values are checked against what was fed."""
        collector = collector or self.collected
        events = collector.events()
        oracle = WindowContents(feed, self.topology) if contents else None
        # the reader may lag the collector by a few records; wait for it to know every eventId
        deadline = time.monotonic() + 30
        while True:
            report = delivery_report(events, self.events.snapshot(), hosts, feed.fresh_windows(), feed.notifications, oracle)
            if not report.unknown or time.monotonic() > deadline:
                return report
            time.sleep(0.5)

    # -- teardown

    def close(self, failed: bool) -> None:
        for feed in self.feeds:
            try:
                feed.stop()
            except AssertionError as exc:
                print(f"\n===== feed: {exc}")
        for worker in self.workers:
            worker.kill()
        if self._io is not None:
            self._io.close()
        if failed:
            for worker in self.workers:
                print(f"\n===== {worker.name} log (tail) =====\n{worker.log_tail(60)}")


# -- what reached the collector -------------------------------------------------------


class WindowContents:
    """What each host's measurement event of a window must carry, worked out from what the feed sent.

    An oracle of its own, not the worker's state: per series, the value list
    of the newest round stamped before the window's end (Barometer's cache,
    rounds applied in the order they were fed), rendered with the drill's
    topology. A window in which no round was stamped is not checked (its
    content is a carried value). Only ``measurementFields`` are compared.
    """

    def __init__(self, feed: Feed, topology: Path, interval: float = INTERVAL) -> None:
        from ves_streams.rules import load_topology
        from ves_streams.stages.render import TopologyRenderer

        self.feed = feed
        self.interval = interval
        self.renderer = TopologyRenderer(load_topology(topology), hostname="drill", interval=interval, ves_version="7.2.1")
        self._cache: dict[tuple[str, float], Any] = {}

    def fields(self, host: str, start: float) -> Any:
        key = (host, start)
        if key not in self._cache:
            self._cache[key] = self._render(host, start)
        return self._cache[key]

    def _render(self, host: str, start: float) -> Any:
        from ves_streams.collectd import parse_value_lists
        from ves_streams.identity import Interval

        end = round(start + self.interval, 6)
        rounds = [(i, r) for i, r in enumerate(self.feed.rounds) if r.sample_time < end]
        if not rounds or rounds[-1][1].sample_time < start:
            return None
        latest: dict[tuple[str, ...], Any] = {}
        for i, fed in rounds:
            for raw in round_messages(capture(), i, [host], fed.sample_time):
                for vl in parse_value_lists(raw):
                    latest[(vl.plugin, vl.plugin_instance, vl.type, vl.type_instance)] = vl
        samples = [s for vl in sorted(latest.values(), key=lambda v: v.series) for s in vl.samples()]
        rendered = self.renderer.measurements(host, samples, Interval(start, end))
        bodies = [e.body["event"] for e in rendered.events if e.domain == "measurement"]
        if len(bodies) != 1:
            return None
        fields = bodies[0].get("measurementFields")
        return measurement_digest(fields), fields


def measurement_digest(fields: Any) -> str:
    """A digest of an event's ``measurementFields`` that does not depend on the order of its arrays."""
    return hashlib.blake2b(orjson.dumps(_unordered(fields), option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()


def _unordered(value: Any) -> Any:
    """``value`` through JSON, with its arrays sorted: a rule's INDEX-KEY arrays follow no order."""
    value = orjson.loads(orjson.dumps(value))

    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return sorted((walk(x) for x in v), key=lambda x: orjson.dumps(x, option=orjson.OPT_SORT_KEYS))
        return v

    return walk(value)



@dataclass
class DeliveryReport:
    """The invariants of a drill, computed from the collector's events and the ``ves-events`` records."""

    events: int = 0
    distinct: int = 0
    by_domain: dict[str, int] = field(default_factory=dict)
    #: eventIds received more than once: how many extra copies.
    duplicates: int = 0
    #: collector eventIds not (yet) seen on ves-events.
    unknown: list[str] = field(default_factory=list)
    #: (domain, host, window) rendered with more than one eventId, or an eventId used for several windows.
    ambiguous: list[str] = field(default_factory=list)
    #: host -> expected window starts with no measurement event.
    missing: dict[str, list[float]] = field(default_factory=dict)
    #: host -> window starts whose measurement event carries other values than the rounds fed up to
    #: that window's end give (another round's samples); checked when the report knows what was fed.
    wrong_content: dict[str, list[float]] = field(default_factory=dict)
    #: measurement events whose content was compared with what was fed.
    content_checked: int = 0
    #: the first window found carrying other samples: (host, window, the measurementFields fed), for the figures.
    content_diff: tuple[str, float, Any] | None = None
    #: host -> heartbeat boundaries (inside the expected windows) with no heartbeat.
    missing_heartbeats: dict[str, list[float]] = field(default_factory=dict)
    #: host -> [(earlier window, later window)] where the later one arrived first.
    out_of_order: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    #: eventIds on ves-events never accepted by the collector.
    undelivered: list[str] = field(default_factory=list)
    notifications: int = 0
    fault_ids: int = 0
    #: notification token -> number of distinct fault eventIds carrying it (must be 1 each).
    faults_per_notification: dict[str, int] = field(default_factory=dict)
    #: fault events whose text names no notification that was sent.
    stray_faults: int = 0
    #: notifications with no fault event: (token, host, partition, offset, acknowledged at).
    lost_notifications: list[tuple[str, str, int, int, float]] = field(default_factory=list)
    expected_windows: int = 0

    @property
    def faults_ok(self) -> bool:
        return (
            self.fault_ids == self.notifications
            and all(n == 1 for n in self.faults_per_notification.values())
            and self.stray_faults == 0
        )

    def worst_missing(self) -> int:
        return max((len(w) for w in self.missing.values()), default=0)

    def figures(self) -> dict[str, Any]:
        return {
            "events_received": self.events,
            "distinct_event_ids": self.distinct,
            "duplicates_same_id": self.duplicates,
            "by_domain": self.by_domain,
            "expected_windows_per_host": self.expected_windows,
            "worst_host_missing_windows": self.worst_missing(),
            "hosts_missing_windows": {h: len(w) for h, w in self.missing.items() if w},
            "windows_content_checked": self.content_checked,
            "hosts_windows_with_other_rounds_samples": {h: len(w) for h, w in self.wrong_content.items() if w},
            "first_window_with_other_samples": str(self.content_diff)[:1500] if self.content_diff else None,
            "hosts_missing_heartbeats": {h: len(w) for h, w in self.missing_heartbeats.items() if w},
            "out_of_order": sum(len(v) for v in self.out_of_order.values()),
            "notifications_sent": self.notifications,
            "distinct_fault_ids": self.fault_ids,
            "stray_faults": self.stray_faults,
            "lost_notifications": [(t, h, f"notifications[{p}]@{o}") for t, h, p, o, _ in self.lost_notifications],
            "undelivered": len(self.undelivered),
            "unknown_ids": len(self.unknown),
            "ambiguous_ids": len(self.ambiguous),
        }

    def check(self, *, max_missing_per_host: int = 0) -> None:
        """Assert every invariant; ``max_missing_per_host`` is the slack a fault is allowed."""
        assert not self.unknown, f"collector events not on ves-events: {self.unknown[:5]}"
        assert not self.ambiguous, f"eventIds not 1:1 with (domain, host, window): {self.ambiguous[:5]}"
        assert self.expected_windows > 0, "no window was due: the drill fed nothing?"
        worst = {h: w for h, w in self.missing.items() if len(w) > max_missing_per_host}
        assert not worst, f"hosts missing more than {max_missing_per_host} measurement windows: {worst}"
        wrong = {h: w for h, w in self.wrong_content.items() if w}
        assert not wrong, f"measurement windows carrying another round's samples: {wrong}"
        worst_hb = {h: w for h, w in self.missing_heartbeats.items() if len(w) > max(1, max_missing_per_host)}
        assert not worst_hb, f"hosts missing heartbeats: {worst_hb}"
        assert not any(self.out_of_order.values()), f"per-host order broken: {dict(self.out_of_order)}"
        assert not self.undelivered, f"{len(self.undelivered)} events of ves-events never reached the collector"
        assert self.fault_ids == self.notifications, f"{self.notifications} notifications but {self.fault_ids} distinct fault eventIds"
        bad = {t: n for t, n in self.faults_per_notification.items() if n != 1}
        assert not bad, f"notifications not rendered as exactly one fault eventId: {bad}"
        assert self.stray_faults == 0, f"{self.stray_faults} fault events for no notification sent"


def delivery_report(
    collector_events: list[dict[str, Any]],
    records: list[Record],
    hosts: Sequence[str],
    windows: Sequence[float],
    notifications: Sequence[FedNotification],
    contents: WindowContents | None = None,
) -> DeliveryReport:
    """Join the collector's events with the ``ves-events`` records and compute the invariants.

    ``windows`` are the measurement window starts every host must have
    (:meth:`Feed.fresh_windows`); ``notifications`` what the feed sent;
    ``contents``, when given, what each window's measurement event must carry.
    """
    report = DeliveryReport(events=len(collector_events), notifications=len(notifications), expected_windows=len(windows))
    label: dict[str, tuple[str, str, float | None]] = {}
    ids_of: dict[tuple[str, str, float | None], set[str]] = defaultdict(set)
    for r in records:
        host = r.key.decode("utf-8", "replace") if r.key is not None else ""
        where = (r.domain, host, r.interval_start)
        if r.event_id in label and label[r.event_id] != where:
            report.ambiguous.append(f"{r.event_id}: {label[r.event_id]} and {where}")
        label[r.event_id] = where
        if r.domain in ("measurement", "heartbeat") and r.interval_start is not None:
            ids_of[where].add(r.event_id)
    report.ambiguous += [f"{where}: {sorted(ids)}" for where, ids in ids_of.items() if len(ids) > 1]

    counts = Counter(e["commonEventHeader"]["eventId"] for e in collector_events)
    report.distinct = len(counts)
    report.duplicates = sum(n - 1 for n in counts.values())
    report.by_domain = dict(Counter(e["commonEventHeader"]["domain"] for e in collector_events))
    report.unknown = [i for i in counts if i not in label]
    report.undelivered = [i for i in label if i not in counts]

    seen: dict[str, list[float]] = defaultdict(list)
    beats: dict[str, set[float]] = defaultdict(set)
    first_seen: set[str] = set()
    for e in collector_events:
        header = e["commonEventHeader"]
        event_id = header["eventId"]
        if event_id in first_seen or event_id not in label:
            continue
        first_seen.add(event_id)
        domain, host, start = label[event_id]
        if domain == "measurement" and start is not None:
            seen[host].append(start)
            expected = contents.fields(host, start) if contents is not None else None
            if expected is not None:
                report.content_checked += 1
                got = e["measurementDigest"] if "measurementDigest" in e else measurement_digest(e.get("measurementFields"))
                if got != expected[0]:
                    report.wrong_content.setdefault(host, []).append(start)
                    if report.content_diff is None:
                        report.content_diff = (host, start, expected[1])
        elif domain == "heartbeat" and start is not None:
            beats[host].add(start)
    for host in hosts:
        got = seen.get(host, [])
        have = set(got)
        report.missing[host] = [w for w in windows if w not in have]
        report.out_of_order[host] = [(b, a) for a, b in zip(got, got[1:]) if b <= a]
        due = [b for b in _heartbeat_boundaries(windows) if b not in beats.get(host, set())]
        report.missing_heartbeats[host] = due

    # one fault event per notification: an alarm's raises and clear share an eventId and differ by sequence
    fault_ids: dict[tuple[str, int], str] = {}
    for e in collector_events:
        header = e["commonEventHeader"]
        if header["domain"] == "fault":
            occurrence = (header["eventId"], int(header.get("sequence", 0)))
            fault_ids[occurrence] = str(e.get("faultFields", {}).get("specificProblem", ""))
    report.fault_ids = len(fault_ids)
    tokens = {n.token for n in notifications}
    per_token: Counter[str] = Counter()
    for text in fault_ids.values():
        matched = [t for t in tokens if t in text]
        if len(matched) == 1:
            per_token[matched[0]] += 1
        else:
            report.stray_faults += 1
    report.faults_per_notification = {t: per_token.get(t, 0) for t in tokens}
    report.lost_notifications = [(n.token, n.host, n.partition, n.offset, n.acked_at) for n in notifications
                                 if per_token.get(n.token, 0) == 0]  # fmt: skip
    return report


def _heartbeat_boundaries(windows: Sequence[float]) -> list[float]:
    """Heartbeat boundaries strictly inside the span of ``windows`` (each window's end can carry one)."""
    if not windows:
        return []
    lo, hi = windows[0] + INTERVAL, windows[-1]
    first = math.ceil(lo / HEARTBEAT_INTERVAL) * HEARTBEAT_INTERVAL
    out = []
    b = first
    while b <= hi:
        out.append(round(b, 6))
        b += HEARTBEAT_INTERVAL
    return out


# -- the cluster ----------------------------------------------------------------------


def partition_leaders(bootstrap: str, topics: Sequence[str]) -> Counter[int]:
    """How many partitions of ``topics`` each broker (node id) leads."""
    from aiokafka.admin import AIOKafkaAdminClient

    result: Counter[int] = Counter()
    errors: list[BaseException] = []

    async def describe() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
        await admin.start()
        try:
            for topic in await admin.describe_topics(list(topics)):
                for p in topic["partitions"]:
                    result[p["leader"]] += 1
        finally:
            await admin.close()

    def run() -> None:
        try:
            asyncio.run(describe())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="describe-topics")
    thread.start()
    thread.join(60)
    if errors:
        raise errors[0]
    return result


def produce_records(bootstrap: str, topic: str, records: Sequence[tuple[bytes, bytes, list[tuple[str, bytes]]]]) -> float:
    """Produce ``(key, value, headers)`` records (acks=all) and wait for every ack; returns the seconds it took."""
    from aiokafka import AIOKafkaProducer

    errors: list[BaseException] = []
    took: list[float] = []

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=4 * 1024 * 1024,
                                    linger_ms=20, request_timeout_ms=60000)  # fmt: skip
        await producer.start()
        start = time.monotonic()
        try:
            futures = [await producer.send(topic, value, key=key, headers=headers) for key, value, headers in records]
            await asyncio.gather(*futures)
        finally:
            took.append(time.monotonic() - start)
            await producer.stop()

    def run() -> None:
        try:
            asyncio.run(send())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="produce-records")
    thread.start()
    thread.join(300)
    if errors:
        raise errors[0]
    return took[0] if took else 0.0


def burst_events(template: dict[str, Any], count: int, size: int, tag: str) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """``count`` valid VES events of about ``size`` bytes each, for ``ves-events``, copied from ``template``
    (a measurement event the collector accepted) with a unique eventId and sourceName each."""
    import copy
    import uuid

    out = []
    pad = {f"k{i:03d}": "x" * 1000 for i in range(max(1, size // 1010))}
    for i in range(count):
        event = copy.deepcopy(template)
        header = event["commonEventHeader"]
        header["eventId"] = f"{tag}-{uuid.uuid4().hex}"
        header["sourceName"] = f"{tag}-{i:05d}"
        fields = event.setdefault("measurementFields", {})
        fields.setdefault("additionalMeasurements", []).append({"name": "drill-padding", "hashMap": pad})
        value = orjson.dumps({"event": event})
        headers = [("ves-domain", b"measurement"), ("ves-event-id", header["eventId"].encode()), ("ves-version", b"7.2.1")]
        out.append((header["sourceName"].encode(), value, headers))
    return out


class Collectors:
    """What one or more collectors in a row accepted (one stopped, another started on its port), read
    incrementally: each call parses only the lines recorded since the last one, and keeps of each event
    its ``commonEventHeader``, ``faultFields`` and a digest of its ``measurementFields`` (all the drills look at), so a drill that polls a
    collector holding hundreds of megabytes neither re-parses nor holds them."""

    def __init__(self, *collectors: VesCollector) -> None:
        self.collectors = list(collectors)
        self._offsets: dict[Path, int] = {}
        self._records: dict[Path, list[dict[str, Any]]] = {}

    @property
    def url(self) -> str:
        return self.collectors[-1].url

    def add(self, collector: VesCollector) -> None:
        self.collectors.append(collector)

    def _read(self, path: Path) -> list[dict[str, Any]]:
        records = self._records.setdefault(path, [])
        offset = self._offsets.get(path, 0)
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return records
        end = data.rfind(b"\n") + 1  # complete lines only: the collector may be writing the last one
        for line in data[:end].split(b"\n"):
            if line.strip():
                r = orjson.loads(line)
                event = r["event"]
                slim = {"commonEventHeader": event["commonEventHeader"]}
                if "faultFields" in event:
                    slim["faultFields"] = event["faultFields"]
                if "measurementFields" in event:  # what a window carried, as a digest (WindowContents)
                    slim["measurementDigest"] = measurement_digest(event["measurementFields"])
                records.append({"received_at": r["received_at"], "request": r["request"], "event": slim})
        self._offsets[path] = offset + end
        return records

    def records(self) -> list[dict[str, Any]]:
        """``{"received_at", "request", "event"}`` of every accepted event, collector after collector."""
        return [r for c in self.collectors for r in self._read(c.record)]

    def events(self) -> list[dict[str, Any]]:
        return [r["event"] for r in self.records()]


# -- processes ------------------------------------------------------------------------


class RssSampler:
    """Samples the RSS (and CPU time) of some processes every ``period`` seconds on a thread."""

    def __init__(self, processes: dict[str, int], period: float = 1.0) -> None:
        self.processes = processes
        self.period = period
        self.samples: dict[str, list[tuple[float, float]]] = {name: [] for name in processes}
        self.cpu: dict[str, list[tuple[float, float]]] = {name: [] for name in processes}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for name, pid in self.processes.items():
                value = rss_mb(pid)
                if value is not None:
                    self.samples[name].append((now, value))
                cpu = cpu_seconds(pid)
                if cpu is not None:
                    self.cpu[name].append((now, cpu))
            self._stop.wait(self.period)

    def growth(self, name: str) -> float:
        """Largest RSS minus the first sample, MiB."""
        values = [v for _, v in self.samples[name]]
        return max(values) - values[0] if values else 0.0

    def cpu_percent(self, name: str) -> float | None:
        """Average CPU use of the process while sampled (100 = one core)."""
        cpu = self.cpu[name]
        if len(cpu) < 2 or cpu[-1][0] <= cpu[0][0]:
            return None
        return 100.0 * (cpu[-1][1] - cpu[0][1]) / (cpu[-1][0] - cpu[0][0])

    def figures(self) -> dict[str, dict[str, float | None]]:
        out: dict[str, dict[str, float | None]] = {}
        for name, samples in self.samples.items():
            values = [v for _, v in samples]
            if values:
                cpu = self.cpu_percent(name)
                out[name] = {"first_mb": round(values[0], 1), "max_mb": round(max(values), 1),
                             "last_mb": round(values[-1], 1), "growth_mb": round(self.growth(name), 1),
                             "cpu_percent": None if cpu is None else round(cpu), "samples": len(values)}  # fmt: skip
        return out


_METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def scrape(worker: Worker) -> dict[str, float]:
    """A worker's ``/metrics`` as ``{"name{labels}": value}`` (empty if it does not answer)."""
    try:
        text = worker.get("/metrics", timeout=5).text
    except Exception:
        return {}
    out = {}
    for line in text.splitlines():
        m = _METRIC_LINE.match(line)
        if m and not line.startswith("#"):
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def metric_sum(metrics: dict[str, float], name: str, **labels: str) -> float:
    """Sum of the series of ``name`` whose labels include ``labels``."""
    total = 0.0
    for key, value in metrics.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total


def print_figures(title: str, figures: dict[str, Any]) -> None:
    """One block per drill, easy to grep in the test output."""
    print(f"\n===== DRILL {title} =====")
    for key, value in figures.items():
        print(f"  {key}: {value}")


# -- fixtures -------------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"drill_{report.when}_failed", report.failed)


@pytest.fixture
def drill(request: pytest.FixtureRequest, kafka_cluster3: Any, ves_collector: VesCollector, tmp_path: Path) -> Iterator[Drill]:
    """A :class:`Drill` on a fresh 3-node cluster with the inputs and outputs created at RF 3."""
    d = Drill(request.node.name.removeprefix("test_"), kafka_cluster3.bootstrap_servers, kafka_cluster3.broker_url,
              ves_collector, tmp_path)  # fmt: skip
    try:
        d.create_topics()
        yield d
    finally:
        d.close(failed=getattr(request.node, "drill_call_failed", True))
        print(f"\n===== drill wall time: {time.monotonic() - d.started:.1f}s =====")
