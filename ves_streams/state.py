"""Per-host sample state by event time: each series' samples of the windows not yet rendered.

A measurement event says "these were host H's values in ``[T, T + interval)``",
so a window is rendered from the samples whose collectd ``time`` falls in it,
never from whatever arrived last (Kafka Streams' windowed store, emitted when
the window's tick closes it). Layout, chosen so that the changelog stays small
and recovery is cheap:

* the Faust table (RocksDB, changelog-backed) is keyed by **host**
  (:func:`host_key`, ``[host]`` as a JSON array) and holds the host's
  series, each as its **held value lists**, oldest first: at most one per
  window (the newest collectd sent for it) for every window not yet
  rendered, plus the newest one of a rendered window while no later window
  has a sample of its own (Barometer's cache: a window the series did not
  report in renders its last value while it is fresh). A host's record is
  written once per changelog flush that saw it change
  (:meth:`SampleStore.take_changes`), not once per value list: ~70 series
  per host and interval made ~70 records (and RocksDB writes) where one
  does. A table of an earlier release (one record per series) is read as
  well, and its series records get tombstones once their hosts are
  written the new way.
* the table is co-partitioned with the samples repartition topic, which is
  keyed (and explicitly partitioned, :func:`host_partition`) by host, so all
  series of a host live in one partition.
* :class:`HostIndex` is an in-memory view ``partition -> host -> series ->
  held value lists`` of the *active* partitions, so rendering a host is a
  lookup. It is rebuilt from the table after every rebalance (the table is
  then recovered from its changelog) and kept current by :class:`SampleStore`.
* rendering window ``W`` takes, per series, the newest held value list whose
  ``time`` is before ``W``'s end (:meth:`SampleStore.samples`); one stamped
  in ``W`` wins over an older one, and a value list of a later window is
  never seen. The rule engine's aging then drops a carried value that is no
  longer fresh, as Barometer does.
* a value list whose window was already rendered is **late**: counted
  (:attr:`Applied.late`) and dropped, never folded into another window. An
  older one than the series' newest rendered value is a replay and is
  dropped silently. (Future-stamped value lists never get here: ingest
  dead-letters them, :func:`ves_streams.stages.repartition.sample_time_error`.)
* aging is Barometer's: a series whose newest value list is older than twice
  its own interval is dropped (:func:`is_expired`). Dropping deletes the
  table key, so the changelog gets a tombstone and compaction forgets it.
* one extra key per partition (:func:`marker_key`) remembers the end of the
  last interval rendered for that partition; it de-duplicates render ticks,
  tells a new owner which intervals a failed worker did not render, and
  tells which samples are late.

Everything here works on any ``MutableMapping[bytes, bytes]``; the agents
pass the Faust table, unit tests a dict.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import orjson

from ves_streams.collectd import Sample, ValueList
from ves_streams.runtime import faust_compat
from ves_streams.wire.samples import decode_trusted_value_lists, host_partition, value_list_from_json

__all__ = [
    "Applied",
    "Held",
    "HostIndex",
    "LocalState",
    "MappingState",
    "RocksDBPartitions",
    "SampleStore",
    "decode_trusted_value_lists",
    "decode_held",
    "decode_value_list",
    "decode_host",
    "encode_held",
    "encode_host",
    "encode_value_list",
    "host_key",
    "host_partition",
    "is_expired",
    "local_state_of",
    "marker_key",
    "needed",
    "newest_before",
    "series_key",
    "window_index",
]

log = logging.getLogger(__name__)

#: Keys that are not series start with a NUL byte (a JSON array never does).
_MARKER_PREFIX = b"\x00last-rendered:"

#: Barometer's aging: a value list is current for twice its interval.
AGE_FACTOR = 2.0
#: Most names :class:`HostIndex` shares before it starts its table again (a few per series at most).
MAX_SHARED_NAMES = 500_000


def _compact_dumps(obj: object) -> bytes:
    """``orjson.dumps`` for bytes this process keeps: an exact-size copy.

    orjson 3.13 returns bytes objects with about 4 KiB of allocation behind
    each, however short; the host index keeps one key per series, so at 1000
    hosts that alone was ~200 MB of RSS (measured: 200k keys, 798 MB plain,
    29 MB copied).
    """
    return bytes(memoryview(orjson.dumps(obj)))


def host_key(host: str) -> bytes:
    """Table key of a host's record: ``[host]``."""
    return _compact_dumps([host])


def series_key(vl: ValueList) -> bytes:
    """Table key of a value list's series: ``[host, plugin, plugin_instance, type, type_instance]``."""
    return _compact_dumps([vl.host, vl.plugin, vl.plugin_instance, vl.type, vl.type_instance])


def marker_key(partition: int) -> bytes:
    """Table key of a partition's "last rendered interval end" marker."""
    return _MARKER_PREFIX + str(partition).encode()


def _marker_partition(key: bytes) -> int | None:
    if not key.startswith(_MARKER_PREFIX):
        return None
    try:
        return int(key[len(_MARKER_PREFIX) :])
    except ValueError:
        return None


#: msgspec writes a :class:`ValueList` straight from its fields, into exact-size bytes.
_TABLE_ENCODER = msgspec.json.Encoder()
_TABLE_DECODER = msgspec.json.Decoder(ValueList)
_HELD_DECODER = msgspec.json.Decoder(tuple[ValueList, ...])
_HOST_DECODER = msgspec.json.Decoder(list[tuple[ValueList, ...]])

#: A series' held value lists, oldest first, at most one per window.
Held = tuple[ValueList, ...]


def encode_value_list(vl: ValueList) -> bytes:
    """A value list's JSON (the fields of :meth:`ValueList.to_json`, in declaration order)."""
    return _TABLE_ENCODER.encode(vl)


def decode_value_list(raw: bytes) -> ValueList:
    """Inverse of :func:`encode_value_list` (trusted input: our own table).

    What msgspec's checks refuse (an integer value beyond int64, which the
    Python decode keeps) is read the Python way.
    """
    try:
        return _TABLE_DECODER.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return value_list_from_json(orjson.loads(raw))


def encode_held(held: Held) -> bytes:
    """A table value: the series' held value lists as a JSON array, oldest first."""
    return _TABLE_ENCODER.encode(held)


def decode_held(raw: bytes) -> Held:
    """Inverse of :func:`encode_held`; a single value list (the table of releases before
    event-time windows, recovered from an old changelog) reads as one held value list."""
    if raw[:1] == b"{":
        return (decode_value_list(raw),)
    try:
        return _HELD_DECODER.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        data = orjson.loads(raw)
        if not isinstance(data, list):
            raise ValueError("a held series is a JSON array") from None
        return tuple(value_list_from_json(item) for item in data)


def encode_host(series: Iterable[Held]) -> bytes:
    """A host's table value: each of its series' held value lists, ``[[vl, ...], ...]``."""
    return _TABLE_ENCODER.encode(list(series))


def decode_host(raw: bytes) -> list[Held]:
    """Inverse of :func:`encode_host` (trusted input: our own table)."""
    try:
        return _HOST_DECODER.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        data = orjson.loads(raw)
        if not isinstance(data, list) or not all(isinstance(held, list) for held in data):
            raise ValueError("a host record is a JSON array of arrays") from None
        return [tuple(value_list_from_json(item) for item in held) for held in data]


def is_host_record(raw: bytes) -> bool:
    """A host record (``[[...``) rather than a series record of an earlier release (``[{...`` or ``{...``)."""
    return raw[:2] == b"[[" or raw == b"[]"


def is_expired(vl: ValueList, now: float) -> bool:
    """True when ``vl`` was not updated within twice its interval (Barometer's rule).

    The same boundary as ``ves_streams.rules.fresh_samples``: a value list is
    current while ``now - time < 2 x interval``.
    """
    return now - vl.time >= AGE_FACTOR * vl.interval


def window_index(t: float, interval: float) -> int:
    """Which window ``[k x interval, (k + 1) x interval)`` the time ``t`` falls in (``k``).

    Rounded like :func:`ves_streams.identity.next_boundary`, so a sample
    stamped on a boundary belongs to the window that starts there.
    """
    return math.floor(round(t / interval, 9))


def newest_before(held: Held, end: float) -> ValueList | None:
    """The newest of ``held`` stamped before ``end``: what window ``[..., end)`` renders for the series."""
    for vl in reversed(held):
        if vl.time < end:
            return vl
    return None


def needed(held: Held, marker: float | None, interval: float) -> Held:
    """``held`` without what no window left to render can use.

    Windows before ``marker`` are rendered; each later window renders its
    own value list or, without one, the newest before it. So of the value
    lists stamped before ``marker`` only the newest can still be rendered,
    and only while the first window after ``marker`` has none of its own.
    """
    if marker is None or not held or held[0].time >= marker:
        return held
    cut = 0
    while cut < len(held) and held[cut].time < marker:
        cut += 1
    rest = held[cut:]
    if rest and window_index(rest[0].time, interval) == window_index(marker, interval):
        return rest
    return held[cut - 1 :]


@dataclass(slots=True)
class RebuildReport:
    partitions: int = 0
    hosts: int = 0
    series: int = 0
    unreadable: int = 0
    #: partition -> series records of an earlier release's table (one per series), to be tombstoned
    legacy: dict[int, list[bytes]] = field(default_factory=dict)


@dataclass(slots=True)
class _Partition:
    hosts: dict[str, dict[bytes, Held]] = field(default_factory=dict)
    #: host -> time of its oldest value list since it (re)appeared
    first_seen: dict[str, float] = field(default_factory=dict)
    marker: float | None = None


class HostIndex:
    """``partition -> host -> series key -> held value lists`` for this worker's active partitions.

    Not thread-safe and not persistent: it mirrors the table, which is the
    source of truth. :meth:`invalidate` on rebalance; :meth:`rebuild` from the
    recovered table before the next use.
    """

    def __init__(self) -> None:
        self._partitions: dict[int, _Partition] = {}
        self.built = False
        #: one copy of each name and name tuple the index holds (see :meth:`share`)
        self._names: dict[Any, Any] = {}

    def invalidate(self) -> None:
        self._partitions.clear()
        self._names.clear()
        self.built = False

    def share(self, vl: ValueList) -> ValueList:
        """``vl`` with its names (host, plugin, ..., ``dstypes``, ``dsnames``) shared with the index's others.

        A decoded value list owns fresh copies of all of them: ~13 objects and
        ~500 bytes of the ~700 each of the ~70,000 value lists of 1000 hosts
        held (48 MB, tracemalloc), although a host's names repeat every
        interval and most of them across hosts. The table is emptied on
        rebalance and when it outgrows :data:`MAX_SHARED_NAMES` (hosts that
        come and go must not leave their names behind forever).
        """
        names = self._names
        if len(names) > MAX_SHARED_NAMES:
            names.clear()
        share = names.setdefault
        return ValueList(
            host=share(vl.host, vl.host),
            plugin=share(vl.plugin, vl.plugin),
            plugin_instance=share(vl.plugin_instance, vl.plugin_instance),
            type=share(vl.type, vl.type),
            type_instance=share(vl.type_instance, vl.type_instance),
            time=vl.time,
            interval=vl.interval,
            values=vl.values,
            dstypes=share(vl.dstypes, vl.dstypes),
            dsnames=share(vl.dsnames, vl.dsnames),
        )

    def rebuild(
        self,
        items: Iterable[tuple[bytes, bytes | None]],
        partitions: Collection[int],
        partition_of: Callable[[str], int],
    ) -> RebuildReport:
        """Rebuild from ``(key, value)`` pairs of the table for the given active partitions."""
        self._partitions = {p: _Partition() for p in partitions}
        report = RebuildReport(partitions=len(self._partitions))
        for key, raw in items:
            if raw is None:
                continue
            marker_of = _marker_partition(key)
            if marker_of is not None:
                part = self._partitions.get(marker_of)
                if part is not None:
                    try:
                        part.marker = float(orjson.loads(raw))
                    except (orjson.JSONDecodeError, TypeError, ValueError):
                        report.unreadable += 1
                continue
            legacy = not is_host_record(raw)
            try:
                series = [decode_held(raw)] if legacy else decode_host(raw)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                report.unreadable += 1
                continue
            for held in series:
                if not held:
                    continue
                host = held[0].host
                partition = partition_of(host)
                part = self._partitions.get(partition)
                if part is None:
                    break
                part.hosts.setdefault(host, {})[series_key(held[0])] = tuple(self.share(vl) for vl in held)
                # The table keeps only what is left to render, so its times say nothing
                # about when the host appeared: a recovered host is an old one.
                part.first_seen[host] = -math.inf
                report.series += 1
                if legacy:
                    report.legacy.setdefault(partition, []).append(key)
        report.hosts = sum(len(p.hosts) for p in self._partitions.values())
        self.built = True
        return report

    def _part(self, partition: int) -> _Partition:
        part = self._partitions.get(partition)
        if part is None:
            part = self._partitions[partition] = _Partition()
        return part

    def held(self, partition: int, host: str, key: bytes) -> Held:
        """The series' held value lists, oldest first (empty when the series is not held)."""
        part = self._partitions.get(partition)
        if part is None:
            return ()
        return part.hosts.get(host, {}).get(key, ())

    def put(self, partition: int, key: bytes, held: Held) -> None:
        """Hold ``held`` (non-empty, oldest first, one host's series) for the series ``key``, as given.

        A value list new to the index should be :meth:`share`-d first.
        """
        part = self._partitions.get(partition)
        if part is None:
            part = self._partitions[partition] = _Partition()
        host = held[0].host
        series = part.hosts.get(host)
        if series is None:
            series = part.hosts[host] = {}
        series[key] = held
        oldest = held[0].time
        seen = part.first_seen.get(host)
        if seen is None or oldest < seen:
            part.first_seen[host] = oldest

    def host_series(self, partition: int, host: str) -> dict[bytes, Held]:
        """The host's series (key -> held value lists); empty when the host is not held."""
        part = self._partitions.get(partition)
        if part is None:
            return {}
        return part.hosts.get(host, {})

    def remove(self, partition: int, host: str, key: bytes) -> None:
        part = self._partitions.get(partition)
        if part is None:
            return
        series = part.hosts.get(host)
        if series is None:
            return
        series.pop(key, None)
        if not series:
            del part.hosts[host]
            part.first_seen.pop(host, None)

    def first_seen(self, partition: int, host: str) -> float | None:
        """Time of the host's oldest value list since it (re)appeared in this partition.

        A host that appears mid-window has only part of its series in that
        window (collectd's plugins report over the interval); rendering it
        would miss values its rules require.
        """
        part = self._partitions.get(partition)
        return part.first_seen.get(host) if part else None

    def partitions(self) -> list[int]:
        return sorted(self._partitions)

    def hosts(self, partition: int) -> list[str]:
        part = self._partitions.get(partition)
        return sorted(part.hosts) if part else []

    def value_lists(self, partition: int, host: str, before: float = math.inf) -> list[ValueList]:
        """Per series of ``host``, the newest value list stamped before ``before`` (default: the newest)."""
        part = self._partitions.get(partition)
        if part is None:
            return []
        out = []
        for held in part.hosts.get(host, {}).values():
            vl = held[-1] if held[-1].time < before else newest_before(held, before)
            if vl is not None:
                out.append(vl)
        return out

    def series(self, partition: int) -> Iterator[tuple[bytes, Held]]:
        part = self._partitions.get(partition)
        if part is None:
            return
        for series in part.hosts.values():
            yield from series.items()

    def replace(self, partition: int, host: str, key: bytes, held: Held) -> None:
        """Hold ``held`` (already in the index, a subset of what it holds) for ``key``: no sharing, no first-seen."""
        part = self._partitions.get(partition)
        if part is not None and host in part.hosts:
            part.hosts[host][key] = held

    def marker(self, partition: int) -> float | None:
        part = self._partitions.get(partition)
        return part.marker if part else None

    def set_marker(self, partition: int, end: float) -> None:
        self._part(partition).marker = end

    def size(self) -> tuple[int, int]:
        """(hosts, series) across all partitions."""
        hosts = sum(len(p.hosts) for p in self._partitions.values())
        series = sum(len(s) for p in self._partitions.values() for s in p.hosts.values())
        return hosts, series


class LocalState(Protocol):
    """Where :class:`SampleStore` writes series: by partition, without a changelog."""

    def put(self, partition: int, key: bytes, value: bytes) -> None: ...

    def delete(self, partition: int, key: bytes) -> None: ...


class MappingState:
    """A plain mapping as :class:`LocalState` (unit tests; the partition is not needed)."""

    def __init__(self, mapping: MutableMapping[bytes, bytes]) -> None:
        self.mapping = mapping

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        self.mapping[key] = value

    def delete(self, partition: int, key: bytes) -> None:
        self.mapping.pop(key, None)


class RocksDBPartitions:
    """A Faust RocksDB table store as :class:`LocalState`: straight to the partition's database.

    Faust's ``Store.__setitem__`` serialises the key and value through its
    codec registry, looks the partition up from the current event and
    updates a key-to-partition cache on every write, and ``__delitem__``
    deletes from *every* partition's database when the key is not cached:
    measured at 1000 hosts, that was 60 % of the samples stage's state
    writes and most of its expiry. Our keys and values are already bytes
    and we know the partition, so this calls the partition's ``Rdict``
    (:func:`~ves_streams.runtime.faust_compat.partition_db_opener`, which
    opens it on first use) directly. What it writes is what Faust would:
    Faust reads it back unchanged.
    """

    def __init__(self, store: Any) -> None:
        self._partition_db = faust_compat.partition_db_opener(store)

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        self._partition_db(partition).put(key, value)

    def delete(self, partition: int, key: bytes) -> None:
        self._partition_db(partition).delete(key)


def local_state_of(store: Any) -> LocalState:
    """The fastest :class:`LocalState` for a Faust table's local store (``table.data``).

    Faust's RocksDB store is written per partition database; anything else
    (Faust's memory store, a mapping) as a mapping. A RocksDB store whose
    partition databases cannot be reached raises
    :class:`~ves_streams.runtime.faust_compat.FaustCompatError` rather than
    falling back to Faust's slow per-key path.
    """
    if faust_compat.is_rocksdb_store(store):
        return RocksDBPartitions(store)
    return MappingState(store)


@dataclass(slots=True)
class Applied:
    """What :meth:`SampleStore.apply` did with a batch of value lists."""

    #: value lists held (their hosts' records are written by :meth:`SampleStore.take_changes`)
    held: int = 0
    #: value lists whose window was already rendered: counted and dropped
    late: int = 0
    #: the first of them (for a log line that names a host)
    late_example: ValueList | None = None


class SampleStore:
    """The table and its index, updated together.

    Every mutating method must run while the Faust stream is processing a
    record of ``partition`` (Faust writes a table change to the changelog
    partition of the record being processed).

    ``interval`` is the render interval: windows are its wall-clock
    multiples. ``keep`` bounds the windows a series holds (the backfill limit
    and the current one: an older window could not be rendered anyway).

    :meth:`apply` and :meth:`expire` change the index and note the hosts
    they changed; :meth:`take_changes` writes each such host's record to
    ``local`` and returns the records for the changelog. ``local`` is by
    default the table itself; the agents pass the Faust table's local store
    (:func:`local_state_of` ``table.data``: RocksDB, no changelog) and
    produce the records to the changelog themselves, in one go. Faust's
    per-key changelog path (a future, a buffered task and a RocksDB offset
    write per key) cost more than the rest of the stage together at ~70
    series per host and interval, and its tombstones filled Faust's producer
    buffer when many series aged out at once.
    """

    def __init__(
        self,
        table: MutableMapping[bytes, bytes],
        index: HostIndex,
        local: LocalState | None = None,
        *,
        interval: float = 10.0,
        keep: int = 12,
    ) -> None:
        if interval <= 0 or not math.isfinite(interval):
            raise ValueError("interval must be a positive number of seconds")
        self.table = table
        self.index = index
        self.local: LocalState = MappingState(table) if local is None else local
        self.interval = interval
        self.keep = max(2, keep)
        #: partition -> hosts changed since their record was last written
        self._dirty: dict[int, set[str]] = {}
        #: partition -> series records of an earlier release's table still to be tombstoned
        self._legacy: dict[int, list[bytes]] = {}

    def adopt(self, report: RebuildReport) -> None:
        """After :meth:`HostIndex.rebuild`: an earlier release's series records are rewritten per host.

        Their hosts are written the new way at the next :meth:`take_changes`,
        which also tombstones the old records, so that compaction forgets them.
        """
        self._legacy = {p: list(keys) for p, keys in report.legacy.items()}
        for partition in self._legacy:
            self._dirty.setdefault(partition, set()).update(self.index.hosts(partition))

    def forget(self) -> None:
        """The partitions moved: nothing is owed to the changelog by this worker any more."""
        self._dirty.clear()
        self._legacy.clear()

    def pending_hosts(self) -> int:
        """Hosts whose records :meth:`take_changes` has still to write."""
        return sum(len(hosts) for hosts in self._dirty.values())

    def dirty_partitions(self) -> list[int]:
        """Partitions with a record to write."""
        return sorted(p for p in set(self._dirty) | set(self._legacy) if self._dirty.get(p) or self._legacy.get(p))

    def take_changes(self, partition: int) -> list[tuple[bytes, bytes | None]]:
        """Write the changed hosts' records of ``partition`` to the local state; return them for the changelog.

        One record per host however many of its series changed (a value None
        is a tombstone: the host holds no series any more), after the
        tombstones of an earlier release's series records.
        """
        out: list[tuple[bytes, bytes | None]] = []
        local = self.local
        for key in self._legacy.pop(partition, ()):
            local.delete(partition, key)
            out.append((key, None))
        for host in sorted(self._dirty.pop(partition, ())):
            key = host_key(host)
            series = self.index.host_series(partition, host)
            if series:
                value = encode_host(series.values())
                local.put(partition, key, value)
                out.append((key, value))
            else:
                local.delete(partition, key)
                out.append((key, None))
        return out

    def apply(self, partition: int, value_lists: Iterable[ValueList]) -> Applied:
        """Hold each value list in its window (the newest per series and window).

        * one stamped before the partition's marker (its window was rendered)
          and newer than the series' newest rendered value list is late:
          counted, not held; an older or equal one is a replay: ignored;
        * one older than the series' value list of the same window is ignored
          (collectd sent a newer one), so a window's content never goes back;
        * an equal one changes nothing.

        The hosts changed are noted for :meth:`take_changes`.
        """
        applied = Applied()
        index = self.index
        interval = self.interval
        keep = self.keep
        marker = index.marker(partition)
        #: the first window not rendered yet: a value list in it makes everything older unneeded
        first_open = window_index(marker, interval) if marker is not None else None
        dirty = self._dirty.get(partition)
        if dirty is None:
            dirty = self._dirty[partition] = set()
        for vl in value_lists:
            key = series_key(vl)
            held = index.held(partition, vl.host, key)
            t = vl.time
            if marker is not None and t < marker:
                rendered = newest_before(held, marker)
                if rendered is None or t > rendered.time:
                    applied.late += 1
                    if applied.late_example is None:
                        applied.late_example = vl
                continue
            w = window_index(t, interval)
            if not held:
                updated: Held = (index.share(vl),)
            else:
                last = held[-1]
                if window_index(last.time, interval) < w:  # the usual case: the series' next window
                    if marker is not None and last.time < marker:  # all of held is rendered
                        updated = (index.share(vl),) if w == first_open else (last, index.share(vl))
                    else:
                        updated = needed(held + (index.share(vl),), marker, interval)
                else:
                    changed = _hold(held, vl, w, interval)
                    if changed is None:
                        continue
                    updated = needed(tuple(index.share(v) if v is vl else v for v in changed), marker, interval)
            if len(updated) > keep:
                updated = updated[-keep:]
            index.put(partition, key, updated)
            dirty.add(vl.host)
            applied.held += 1
        return applied

    def expire(self, partition: int, now: float) -> list[bytes]:
        """Forget every series of ``partition`` expired at ``now``; returns their keys.

        A series is expired when its newest value list is (nothing newer is
        held for a later window). Its host's record is rewritten without it
        at the next :meth:`take_changes` (a tombstone once the host has no
        series left), so a new owner does not recover it. In passing, the
        index forgets held value lists no window left to render can use
        (:func:`needed`); the table keeps them until the host is next
        written, and a rebuild drops them.
        """
        marker = self.index.marker(partition)
        interval = self.interval
        expired: list[tuple[bytes, str]] = []
        trimmed: list[tuple[bytes, Held]] = []
        for key, held in self.index.series(partition):
            if is_expired(held[-1], now):
                expired.append((key, held[-1].host))
            elif len(held) > 1:
                kept = needed(held, marker, interval)
                if len(kept) != len(held):
                    trimmed.append((key, kept))
        if expired:
            dirty = self._dirty.setdefault(partition, set())
        for key, host in expired:
            self.index.remove(partition, host, key)
            dirty.add(host)
        for key, kept in trimmed:
            self.index.replace(partition, kept[0].host, key, kept)
        return [key for key, _ in expired]

    def samples(self, partition: int, host: str, end: float = math.inf) -> list[Sample]:
        """The samples window ``[..., end)`` renders for a host, in series order.

        Per series, the newest value list stamped before ``end`` (one data
        source, one sample); value lists of later windows are not seen. The
        order does not depend on the history of the index (arrival order vs.
        a rebuild from RocksDB), so any worker renders a host's window into
        the same event body.
        """
        out: list[Sample] = []
        for vl in sorted(self.index.value_lists(partition, host, end), key=lambda v: v.series):
            out.extend(vl.samples())
        return out

    def marker(self, partition: int) -> float | None:
        return self.index.marker(partition)

    def set_marker(self, partition: int, end: float) -> None:
        if not math.isfinite(end):
            raise ValueError("marker must be finite")
        self.table[marker_key(partition)] = orjson.dumps(end)
        self.index.set_marker(partition, end)


def _hold(held: Held, vl: ValueList, window: int, interval: float) -> Held | None:
    """``held`` with ``vl`` in its window, or None when nothing changes (an older or equal one is there)."""
    for i, other in enumerate(held):
        w = window_index(other.time, interval)
        if w == window:
            if other.time > vl.time or other == vl:
                return None
            return held[:i] + (vl,) + held[i + 1 :]
        if w > window:
            return held[:i] + (vl,) + held[i:]
    return held + (vl,)
