"""The samples topic (``<app id>-samples``): its records, headers, ticks and partitioner, in one place.

Written by the repartition stage and by each worker's render ticks, read
by the measurements agent and by the host index when it places recovered
keys. Two kinds of record share each partition, told apart by the header
``ves-streams-kind``:

* ``values``: key = host (UTF-8), value = a JSON array of that host's
  collectd value lists from one input batch (:class:`SamplesRecord`, made
  by :func:`samples_records`; read back by :func:`decode_trusted_value_lists`);
* ``tick``: key empty, value ``{"end": seconds, "interval": seconds}``
  (:class:`Tick`, :func:`encode_tick`, :func:`decode_tick`): render the
  window that ends at ``end``.

A host's records go to :func:`host_partition` (Kafka's murmur2 partitioner
on the host name), explicitly, so the producer and the index always agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson
from aiokafka.partitioner import murmur2

from ves_streams.collectd import MalformedInput, ValueList, decode_normalised_value_lists

__all__ = [
    "HEADER_KIND",
    "KIND_TICK",
    "KIND_VALUES",
    "SAMPLES_RECORD_MAX_BYTES",
    "SamplesRecord",
    "Tick",
    "decode_tick",
    "decode_trusted_value_lists",
    "encode_tick",
    "host_partition",
    "key_partition",
    "kind_of",
    "samples_records",
    "value_list_from_json",
]

HEADER_KIND = "ves-streams-kind"
KIND_VALUES = b"values"
KIND_TICK = b"tick"
#: A samples record stays well under the producer's 1 MB request limit.
SAMPLES_RECORD_MAX_BYTES = 256 * 1024
VALUES_HEADERS: tuple[tuple[str, bytes], ...] = ((HEADER_KIND, KIND_VALUES),)
TICK_HEADERS: list[tuple[str, bytes]] = [(HEADER_KIND, KIND_TICK)]


def kind_of(headers: Iterable[tuple[str, bytes]] | dict[str, bytes] | None) -> bytes | None:
    """The (last) ``ves-streams-kind`` header value of a samples record, if any."""
    if not headers:
        return None
    items = headers.items() if isinstance(headers, dict) else headers
    found = None
    for key, value in items:
        if key == HEADER_KIND:
            found = value
    return found


def host_partition(host: str, partitions: int) -> int:
    """The samples partition of ``host``: Kafka's default (murmur2) partitioner on the host name.

    The repartition stage produces each host's value lists to this partition explicitly, and
    :class:`HostIndex` uses it to place recovered keys, so the two always agree.
    """
    return key_partition(host.encode("utf-8", "surrogatepass"), partitions)


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as aiokafka's ``send``) gives ``key``."""
    if partitions < 1:
        raise ValueError("partitions must be positive")
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class SamplesRecord:
    """One host's value lists (from one batch), for the samples topic."""

    host: str
    partition: int
    value: bytes

    @property
    def key(self) -> bytes:
        return self.host.encode("utf-8", "surrogatepass")

    @property
    def headers(self) -> Sequence[tuple[str, bytes]]:
        return VALUES_HEADERS


def samples_records(
    items: Iterable[tuple[str, bytes]], partitions: int, max_bytes: int = SAMPLES_RECORD_MAX_BYTES
) -> list[SamplesRecord]:
    """Group ``(host, value list JSON)`` pairs by host (first-seen order) into samples-topic records.

    A host's value lists are split over several records when they would
    exceed ``max_bytes`` (the producer refuses records over 1 MB).
    """
    by_host: dict[str, list[list[bytes]]] = {}
    sizes: dict[str, int] = {}
    for host, item in items:
        chunks = by_host.get(host)
        if chunks is None:
            chunks = by_host[host] = [[]]
            sizes[host] = 0
        if chunks[-1] and sizes[host] + len(item) + 1 > max_bytes:
            chunks.append([])
            sizes[host] = 0
        chunks[-1].append(item)
        sizes[host] += len(item) + 1
    return [
        SamplesRecord(host, host_partition(host, partitions), b"[" + b",".join(chunk) + b"]")
        for host, chunks in by_host.items()
        for chunk in chunks
    ]


@dataclass(frozen=True, slots=True)
class Tick:
    """A render request: the window ending at ``end`` (a wall-clock boundary)."""

    end: float
    interval: float


def encode_tick(tick: Tick) -> bytes:
    return orjson.dumps({"end": tick.end, "interval": tick.interval})


def decode_tick(raw: bytes) -> Tick:
    try:
        data = orjson.loads(raw)
        return Tick(end=float(data["end"]), interval=float(data["interval"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise MalformedInput(f"tick is not {{'end': seconds, 'interval': seconds}}: {exc}") from None


def decode_trusted_value_lists(raw: bytes) -> list[ValueList] | None:
    """The value lists of a samples record that ingest wrote, or None if it is not such a record.

    Ingest validated every value list with ``collectd.parse_value_lists``;
    re-validating them in Python (the depth walk and per-field checks) cost
    the samples stage as much as ingest's parse, so the record is decoded
    against the normalised layout ingest writes, checked in C
    (:func:`~ves_streams.collectd.decode_normalised_value_lists`). A record
    this cannot read (not from ingest, or from a version that wrote another
    layout) returns None, and the caller parses it with the full parser,
    which dead-letters it with a reason if it is malformed.
    """
    return decode_normalised_value_lists(raw)


def value_list_from_json(d: dict) -> ValueList:  # type: ignore[type-arg]
    values, dstypes, dsnames = d["values"], d["dstypes"], d["dsnames"]
    if not (type(values) is list and type(dstypes) is list and type(dsnames) is list and len(values) == len(dstypes) == len(dsnames)):
        raise ValueError("values, dstypes and dsnames must be lists of one length")
    for t in type(d["time"]), type(d["interval"]):
        if t is not float and t is not int:
            raise ValueError("time and interval must be numbers")
    return ValueList(
        host=d["host"],
        plugin=d["plugin"],
        plugin_instance=d["plugin_instance"],
        type=d["type"],
        type_instance=d["type_instance"],
        time=float(d["time"]),
        interval=float(d["interval"]),
        values=tuple(values),
        dstypes=tuple(dstypes),
        dsnames=tuple(dsnames),
    )


