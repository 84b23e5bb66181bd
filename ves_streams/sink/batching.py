"""Group parsed records into VES requests: one domain per batch, per-host order within a domain.

The rule (what :class:`Batcher` guarantees):

* **One domain per batch.** ONAP's collector refuses an ``eventList`` that
  mixes domains (400 SVC0001), so there is one *open* batch per domain and,
  while the sink has more than one request in flight (:meth:`Batcher.use_lanes`),
  per Kafka partition. The partition is a *lane*: a host's events all come from
  one partition (``ves-events`` is keyed by ``sourceName``), so batches of
  different partitions never share a host and may be in flight together,
  while the batches of one lane follow each other. One batch per domain
  for all partitions made consecutive batches of a backlog (several rounds
  of the same hosts) share hosts, and wait for each other.
* **Per-host order within a domain.** A sealed batch is delivered only
  after every earlier unfinished batch of its domain that shares a host
  with it (the delivery handler sees to it), and records keep their Kafka
  order inside a batch, so each host's (each key's, the event's ``sourceName``)
  events of one domain reach the collector in the order they were produced.
  Across domains there is no order: a VES collector publishes each domain to
  its own topic (ONAP: measurements, faults and heartbeats on separate
  DMaaP topics), so an order between a host's measurement and its fault is
  lost downstream anyway. Keeping it here cost a request per domain switch:
  with a collector at 2 s per request, batches stayed at 3-6 events and the
  backlog never drained (drill 4). Keys never span partitions, so this is
  Kafka's own per-partition order restricted to one key and one domain.
* **Limits.** A batch is sealed when it reaches ``max_events``, when adding a
  record would take its body past ``max_bytes`` (the batch is split there),
  or ``linger_ms`` after its first record arrived. An event whose body alone
  exceeds ``max_bytes`` is returned as :class:`Rejected` (to be
  dead-lettered), never sent and never a crash.
* **Bounded memory.** At most ``OPEN_BUDGET`` batches' worth of events and of
  bytes are held open across all domains; past that the oldest open batch is
  sealed. With a bounded number of sealed batches in flight, what the sink
  holds in memory does not depend on how long the collector is away.

With ``enabled=False`` every record is its own single-event request
(``{"event": ...}`` to ``/eventListener/v7``).

Everything here is pure: time is an argument (seconds, any monotonic clock).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ves_streams.sink.errors import SinkConfigError
from ves_streams.sink.records import SinkRecord

__all__ = [
    "OPEN_BUDGET",
    "Batch",
    "BatchLimits",
    "Batcher",
    "Rejected",
    "batch_body",
    "batch_body_size",
    "single_body",
    "single_body_size",
]

#: How many batches' worth of events/bytes may be open across all domains.
OPEN_BUDGET = 4

_BATCH_PREFIX = b'{"eventList":['
_BATCH_SUFFIX = b"]}"
_SINGLE_PREFIX = b'{"event":'
_SINGLE_SUFFIX = b"}"


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """When a batch is sealed. Defaults match the project's documented settings."""

    enabled: bool = True
    max_events: int = 100
    max_bytes: int = 1024 * 1024
    linger_ms: int = 20

    def __post_init__(self) -> None:
        if self.max_events < 1:
            raise SinkConfigError(f"sink batch max events must be >= 1, got {self.max_events}")
        if self.max_bytes < 64:
            raise SinkConfigError(f"sink batch max bytes must be >= 64, got {self.max_bytes}")
        if self.linger_ms < 0:
            raise SinkConfigError(f"sink linger ms must be >= 0, got {self.linger_ms}")

    @property
    def linger(self) -> float:
        """Linger in seconds."""
        return self.linger_ms / 1000.0


def batch_body_size(event_count: int, events_bytes: int) -> int:
    """Size of ``{"eventList":[e1,...,en]}`` for events totalling ``events_bytes``."""
    return len(_BATCH_PREFIX) + events_bytes + max(0, event_count - 1) + len(_BATCH_SUFFIX)


def single_body_size(event_bytes: int) -> int:
    """Size of ``{"event":e}``."""
    return len(_SINGLE_PREFIX) + event_bytes + len(_SINGLE_SUFFIX)


def batch_body(records: tuple[SinkRecord, ...]) -> bytes:
    """The ``eventBatch`` request body, events in the given order."""
    return _BATCH_PREFIX + b",".join(r.event_json for r in records) + _BATCH_SUFFIX


def single_body(record: SinkRecord) -> bytes:
    """The single-event request body."""
    return _SINGLE_PREFIX + record.event_json + _SINGLE_SUFFIX


@dataclass(frozen=True, slots=True)
class Batch:
    """Records of one domain to deliver in one request, in delivery order.

    ``single`` means "send as ``{"event": ...}``", which is how records go
    when batching is off and how a refused batch is retried event by event.
    """

    domain: str
    records: tuple[SinkRecord, ...]
    single: bool = False
    #: sealed because it could take no more (count, bytes or the open budget), not because it lingered:
    #: a full request waiting for a permit is what tells the sink more concurrency would help
    full: bool = False

    def body(self) -> bytes:
        """The request body."""
        if self.single:
            return single_body(self.records[0])
        return batch_body(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def one_by_one(self) -> list[Batch]:
        """This batch as single-event requests, same order."""
        return [Batch(self.domain, (r,), single=True) for r in self.records]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that must not be sent, with the dead-letter reason."""

    record: SinkRecord
    reason: str


@dataclass(slots=True)
class _OpenBatch:
    domain: str
    opened_at: float
    records: list[SinkRecord] = field(default_factory=list)
    events_bytes: int = 0

    def size_with(self, record: SinkRecord) -> int:
        return batch_body_size(len(self.records) + 1, self.events_bytes + len(record.event_json))


class Batcher:
    """Accumulates records into per-domain batches; see the module docstring.

    Use: :meth:`add` each record (in Kafka order) and deliver what it
    returns; deliver :meth:`due` batches when :meth:`next_deadline` passes;
    :meth:`room` says how many records may be fetched before the budget is
    exhausted.
    """

    def __init__(self, limits: BatchLimits) -> None:
        self.limits = limits
        #: open batches by (domain, Kafka partition): a partition is a lane (see the module docstring)
        self._open: dict[tuple[str, int], _OpenBatch] = {}
        self._events = 0
        self._bytes = 0
        #: open batches per domain and partition (lanes), or per domain only
        self._lanes = True

    @property
    def buffered_events(self) -> int:
        """Records held in open batches."""
        return self._events

    @property
    def buffered_bytes(self) -> int:
        """Event bytes held in open batches."""
        return self._bytes

    def room(self) -> int:
        """How many more records can be taken before the open budget is full (>= 1)."""
        if not self.limits.enabled:
            return 1
        return max(1, OPEN_BUDGET * self.limits.max_events - self._events)

    def use_lanes(self, lanes: bool) -> list[Batch]:
        """Open batches per domain and partition (``True``) or per domain only; returns what a switch sealed.

        Lanes pay only when requests fly together: with one request at a
        time they only make each request carry one partition's events. A
        switch seals every open batch first (oldest first, to be delivered
        before anything opened after it), so a host's events never sit in
        two open batches of one domain.
        """
        if lanes == self._lanes:
            return []
        self._lanes = lanes
        return self.flush()

    def next_deadline(self, may_seal: Callable[[str], bool] | None = None) -> float | None:
        """When the oldest open batch (of a domain ``may_seal`` allows) lingers out, or None if none is open."""
        opened = [b.opened_at for (d, _), b in self._open.items() if may_seal is None or may_seal(d)]
        if not opened:
            return None
        return min(opened) + self.limits.linger

    def add(self, record: SinkRecord, now: float) -> tuple[list[Batch], Rejected | None]:
        """Take one record; return the batches sealed by it (deliver in order) and any rejection.

        A rejected record is not held; the caller dead-letters it. Its key
        order is unaffected: a dead letter is not delivered, so it cannot be
        out of order.
        """
        limits = self.limits
        size = len(record.event_json)
        if not limits.enabled:
            if single_body_size(size) > limits.max_bytes:
                return [], self._oversize(record, single_body_size(size))
            return [Batch(record.domain, (record,), single=True, full=True)], None
        if batch_body_size(1, size) > limits.max_bytes:
            return [], self._oversize(record, batch_body_size(1, size))

        sealed: list[Batch] = []
        domain = record.domain
        lane = (domain, record.partition if self._lanes else -1)
        current = self._open.get(lane)
        if current is not None and (
            len(current.records) >= limits.max_events or current.size_with(record) > limits.max_bytes
        ):
            sealed.append(self._seal(lane, full=True))
            current = None
        if current is None:
            current = _OpenBatch(domain, now)
            self._open[lane] = current
        current.records.append(record)
        current.events_bytes += size
        self._events += 1
        self._bytes += size
        if len(current.records) >= limits.max_events:
            sealed.append(self._seal(lane, full=True))
        while self._open and (
            self._events > OPEN_BUDGET * limits.max_events or self._bytes > OPEN_BUDGET * limits.max_bytes
        ):
            sealed.append(self._seal(next(iter(self._open)), full=True))
        return sealed, None

    def due(self, now: float, may_seal: Callable[[str], bool] | None = None) -> list[Batch]:
        """Seal and return every open batch that has lingered long enough, oldest first.

        ``may_seal(domain)`` False keeps that domain's batch open however long
        it lingered: the sink has no request to spare for it, and the batch
        is better off filling up meanwhile.
        """
        linger = self.limits.linger
        ready = [
            k for k, b in self._open.items() if now >= b.opened_at + linger and (may_seal is None or may_seal(k[0]))
        ]
        return [self._seal(d) for d in ready]

    def flush(self) -> list[Batch]:
        """Seal and return every open batch, oldest first."""
        return [self._seal(d) for d in list(self._open)]

    def _seal(self, lane: tuple[str, int], *, full: bool = False) -> Batch:
        ob = self._open.pop(lane)
        domain = ob.domain
        self._events -= len(ob.records)
        self._bytes -= ob.events_bytes
        return Batch(domain, tuple(ob.records), full=full)

    def _oversize(self, record: SinkRecord, body_size: int) -> Rejected:
        return Rejected(
            record,
            f"event too large: request body would be {body_size} bytes, "
            f"the sink's limit is {self.limits.max_bytes} (VES_STREAMS_SINK_BATCH_MAX_BYTES)",
        )
