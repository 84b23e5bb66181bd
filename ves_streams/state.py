"""Per-host sample state: the latest value list of every series, with aging.

Layout, chosen so that the changelog stays small and recovery is cheap:

* the Faust table (RocksDB, changelog-backed) is keyed by **series** --
  ``[host, plugin, plugin_instance, type, type_instance]`` as a JSON array --
  and holds that series' latest value list as JSON. A changelog record is
  one value list, never a whole host.
* the table is co-partitioned with the samples repartition topic, which is
  keyed (and explicitly partitioned, :func:`host_partition`) by host, so all
  series of a host live in one partition.
* :class:`HostIndex` is an in-memory view ``partition -> host -> series ->
  ValueList`` of the *active* partitions, so rendering a host is a lookup.
  It is rebuilt from the table after every rebalance (the table is then
  recovered from its changelog) and kept current by :class:`SampleStore`.
* aging is Barometer's: a value list not updated within twice its own
  interval is dropped (:func:`is_expired`). Dropping deletes the table key,
  so the changelog gets a tombstone and compaction forgets the series.
* one extra key per partition (:func:`marker_key`) remembers the end of the
  last interval rendered for that partition; it de-duplicates render ticks
  and tells a new owner which intervals a failed worker did not render.

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
    "HostIndex",
    "LocalState",
    "MappingState",
    "RocksDBPartitions",
    "SampleStore",
    "decode_trusted_value_lists",
    "decode_value_list",
    "encode_value_list",
    "host_partition",
    "is_expired",
    "local_state_of",
    "marker_key",
    "series_key",
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


def encode_value_list(vl: ValueList) -> bytes:
    """A table value: the value list's JSON (the fields of :meth:`ValueList.to_json`, in declaration order)."""
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


def is_expired(vl: ValueList, now: float) -> bool:
    """True when ``vl`` was not updated within twice its interval (Barometer's rule).

    The same boundary as ``ves_streams.rules.fresh_samples``: a value list is
    current while ``now - time < 2 x interval``.
    """
    return now - vl.time >= AGE_FACTOR * vl.interval


@dataclass(slots=True)
class RebuildReport:
    partitions: int = 0
    hosts: int = 0
    series: int = 0
    unreadable: int = 0


@dataclass(slots=True)
class _Partition:
    hosts: dict[str, dict[bytes, ValueList]] = field(default_factory=dict)
    #: host -> time of its oldest value list since it (re)appeared
    first_seen: dict[str, float] = field(default_factory=dict)
    marker: float | None = None


class HostIndex:
    """``partition -> host -> series key -> ValueList`` for this worker's active partitions.

    Not thread-safe and not persistent: it mirrors the table, which is the
    source of truth. :meth:`invalidate` on rebalance; :meth:`rebuild` from the
    recovered table before the next use.
    """

    def __init__(self) -> None:
        self._partitions: dict[int, _Partition] = {}
        self.built = False
        #: one copy of each name and name tuple the index holds (see :meth:`_shared`)
        self._names: dict[Any, Any] = {}

    def invalidate(self) -> None:
        self._partitions.clear()
        self._names.clear()
        self.built = False

    def _shared(self, vl: ValueList) -> ValueList:
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
            try:
                vl = decode_value_list(raw)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                report.unreadable += 1
                continue
            part = self._partitions.get(partition_of(vl.host))
            if part is None:
                continue
            vl = self._shared(vl)
            part.hosts.setdefault(vl.host, {})[key] = vl
            # The table keeps only each series' newest value list, so its times say
            # nothing about when the host appeared: a recovered host is an old one.
            part.first_seen[vl.host] = -math.inf
            report.series += 1
        report.hosts = sum(len(p.hosts) for p in self._partitions.values())
        self.built = True
        return report

    def _part(self, partition: int) -> _Partition:
        part = self._partitions.get(partition)
        if part is None:
            part = self._partitions[partition] = _Partition()
        return part

    def get(self, partition: int, host: str, key: bytes) -> ValueList | None:
        part = self._partitions.get(partition)
        if part is None:
            return None
        return part.hosts.get(host, {}).get(key)

    def put(self, partition: int, key: bytes, vl: ValueList) -> None:
        part = self._part(partition)
        vl = self._shared(vl)
        part.hosts.setdefault(vl.host, {})[key] = vl
        seen = part.first_seen.get(vl.host)
        if seen is None or vl.time < seen:
            part.first_seen[vl.host] = vl.time

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

    def value_lists(self, partition: int, host: str) -> list[ValueList]:
        part = self._partitions.get(partition)
        if part is None:
            return []
        return list(part.hosts.get(host, {}).values())

    def series(self, partition: int) -> Iterator[tuple[bytes, ValueList]]:
        part = self._partitions.get(partition)
        if part is None:
            return
        for series in part.hosts.values():
            yield from series.items()

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


class SampleStore:
    """The table and its index, updated together.

    Every mutating method must run while the Faust stream is processing a
    record of ``partition`` (Faust writes a table change to the changelog
    partition of the record being processed).

    ``local`` is where :meth:`apply` and :meth:`expire` write: by default the
    table itself; the agents pass the Faust table's local store
    (:func:`local_state_of` ``table.data``: RocksDB, no changelog) and produce
    the changes both return to the changelog themselves, in one go. Faust's
    per-key changelog path (a future, a buffered task and a RocksDB offset
    write per key) cost more than the rest of the stage together at ~70
    series per host and interval, and its tombstones filled Faust's producer
    buffer when many series aged out at once.
    """

    def __init__(self, table: MutableMapping[bytes, bytes], index: HostIndex, local: LocalState | None = None) -> None:
        self.table = table
        self.index = index
        self.local: LocalState = MappingState(table) if local is None else local

    def apply(self, partition: int, value_lists: Iterable[ValueList]) -> list[tuple[bytes, bytes]]:
        """Keep each series' newest value list; returns the ``(key, value)`` pairs written.

        A value list older than the one held (a replay after a restart, or
        out-of-order delivery) is ignored, so state never goes backwards, and
        one equal to it is not written again.
        """
        changes: list[tuple[bytes, bytes]] = []
        local = self.local
        for vl in value_lists:
            key = series_key(vl)
            held = self.index.get(partition, vl.host, key)
            if held is not None and held.time > vl.time:
                continue
            if held == vl:
                continue
            value = encode_value_list(vl)
            local.put(partition, key, value)
            self.index.put(partition, key, vl)
            changes.append((key, value))
        return changes

    def expire(self, partition: int, now: float) -> list[bytes]:
        """Delete every series of ``partition`` expired at ``now``; returns their keys.

        The caller produces a tombstone per key to the changelog, so that
        compaction forgets the series and a new owner does not recover it.
        """
        expired = [(key, vl.host) for key, vl in self.index.series(partition) if is_expired(vl, now)]
        local = self.local
        for key, host in expired:
            local.delete(partition, key)
            self.index.remove(partition, host, key)
        return [key for key, _ in expired]

    def samples(self, partition: int, host: str) -> list[Sample]:
        """All samples of a host (one per data source of each value list), in series order.

        The order does not depend on the history of the index (arrival order
        vs. a rebuild from RocksDB), so any worker renders a host's window
        into the same event body.
        """
        out: list[Sample] = []
        for vl in sorted(self.index.value_lists(partition, host), key=lambda v: v.series):
            out.extend(vl.samples())
        return out

    def marker(self, partition: int) -> float | None:
        return self.index.marker(partition)

    def set_marker(self, partition: int, end: float) -> None:
        if not math.isfinite(end):
            raise ValueError("marker must be finite")
        self.table[marker_key(partition)] = orjson.dumps(end)
        self.index.set_marker(partition, end)
