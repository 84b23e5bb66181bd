"""collectd's wire formats, parsed into small immutable records.

Two things arrive on Kafka from collectd:

* **value lists**, as ``write_kafka`` with ``Format JSON`` publishes them: a
  JSON array of objects with ``values``, ``dstypes``, ``dsnames``, ``time``,
  ``interval``, ``host``, ``plugin``, ``plugin_instance``, ``type`` and
  ``type_instance``. One value list carries one value per data source, so it
  becomes one :class:`Sample` per data source.
* **notifications**, in either of two shapes: the JSON that collectd 5.9+
  emits (``labels`` / ``annotations`` / ``startsAt``, modelled on
  Alertmanager), or the flat legacy shape that Barometer's patched
  ``write_kafka`` published (``host``, ``plugin``, ..., ``severity`` as
  ``NOTIF_*``, ``message``, ``time``). Both become one :class:`Notification`
  whose ``severity`` is always in the legacy ``NOTIF_*`` form, so Barometer's
  ``!MapValue`` severity tables work unchanged.

Everything here is pure: bytes in, records out, or :class:`MalformedInput`
with a reason a human can act on. Nothing is ever half-parsed: a message is
either wholly valid or wholly rejected (and then dead-lettered by the caller).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Annotated, Any

import msgspec
import orjson

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_NAME_LENGTH",
    "MalformedInput",
    "Notification",
    "Sample",
    "ValueList",
    "SEVERITIES",
    "parse_notifications",
    "split_notifications_by_host",
    "parse_value_lists",
    "parse_value_lists_checked",
    "decode_json",
    "decode_normalised_value_lists",
    "decode_well_formed_value_lists",
]

#: Largest Kafka message accepted from collectd. write_kafka sends one value
#: list per message (a few hundred bytes); anything near this is not collectd.
MAX_MESSAGE_BYTES = 1024 * 1024
#: collectd's own limit is DATA_MAX_NAME_LEN (128); allow generous slack for
#: patched builds but refuse absurd identifiers that would bloat every event.
MAX_NAME_LENGTH = 1024
#: Nesting deeper than this is never collectd and only costs parse time.
MAX_DEPTH = 8

#: Legacy severities, the form rules see.
SEVERITIES = ("NOTIF_FAILURE", "NOTIF_WARNING", "NOTIF_OKAY")
_SEVERITY_ALIASES = {
    "FAILURE": "NOTIF_FAILURE",
    "WARNING": "NOTIF_WARNING",
    "OKAY": "NOTIF_OKAY",
    "NOTIF_FAILURE": "NOTIF_FAILURE",
    "NOTIF_WARNING": "NOTIF_WARNING",
    "NOTIF_OKAY": "NOTIF_OKAY",
    # collectd's numeric severities (notification_t.severity).
    "1": "NOTIF_FAILURE",
    "2": "NOTIF_WARNING",
    "4": "NOTIF_OKAY",
}


class MalformedInput(ValueError):
    """A message that is not a valid collectd value list or notification.

    ``reason`` is a short sentence naming what is wrong; it is what goes into
    the dead-letter record, so it never includes the message body itself.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Sample(msgspec.Struct, frozen=True, gc=False):
    """One data source of one value list: the unit the rule engine selects.

    A msgspec struct rather than a frozen dataclass: a window renders every
    sample of every host (~95 per host), and a frozen dataclass's ``__init__``
    sets each field through ``object.__setattr__`` (1.0 us a sample against
    0.07 us; immutable and hashable all the same).
    """

    host: str
    plugin: str
    plugin_instance: str
    type: str
    type_instance: str
    ds_name: str
    value: float | int
    time: float
    interval: float
    dstype: str = "gauge"

    @property
    def series(self) -> tuple[str, str, str, str, str]:
        """Identity of this sample within its host (latest value wins)."""
        return (self.plugin, self.plugin_instance, self.type, self.type_instance, self.ds_name)


# Integers orjson (and so the Python checks) reads as ints: beyond 64 bits it makes them floats. msgspec
# bounds fit an int64, so the rare integer above 2**63 - 1 goes the Python way.
_WireInt = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_WireName = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_LENGTH)]
_WireText = Annotated[str, msgspec.Meta(max_length=MAX_NAME_LENGTH)]


class ValueList(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    """One collectd value list (one ``write_kafka`` message element).

    A msgspec struct, so that a well-formed message decodes straight into it
    with every type, length and range checked in C
    (:func:`decode_well_formed_value_lists`); the annotations are those
    checks. What they cannot say (the three arrays as long as each other, a
    positive interval) is checked after decoding. Unknown fields are refused
    rather than skipped: msgspec would skip them unchecked (an overflowing
    number, deep nesting), so a message carrying one (collectd's ``meta``, for
    instance) takes the Python checks.
    """

    host: _WireName
    plugin: _WireName
    plugin_instance: _WireText
    type: _WireName
    type_instance: _WireText
    time: float
    interval: float
    values: Annotated[tuple[_WireInt | float | None, ...], msgspec.Meta(min_length=1)]
    dstypes: tuple[_WireText, ...]
    dsnames: tuple[_WireText, ...]

    @property
    def series(self) -> tuple[str, str, str, str]:
        """Identity of this value list within its host."""
        return (self.plugin, self.plugin_instance, self.type, self.type_instance)

    def samples(self) -> list[Sample]:
        """One :class:`Sample` per data source; NaN values (JSON ``null``) are skipped,
        as collectd itself does not report them as current values."""
        out: list[Sample] = []
        for value, dstype, ds_name in zip(self.values, self.dstypes, self.dsnames):
            if value is None:
                continue
            out.append(
                Sample(
                    self.host,
                    self.plugin,
                    self.plugin_instance,
                    self.type,
                    self.type_instance,
                    ds_name,
                    value,
                    self.time,
                    self.interval,
                    dstype,
                )
            )
        return out

    def to_json(self) -> dict[str, Any]:
        """The write_kafka JSON object for this value list (round-trips through parsing)."""
        return {
            "values": list(self.values),
            "dstypes": list(self.dstypes),
            "dsnames": list(self.dsnames),
            "time": self.time,
            "interval": self.interval,
            "host": self.host,
            "plugin": self.plugin,
            "plugin_instance": self.plugin_instance,
            "type": self.type,
            "type_instance": self.type_instance,
        }


@dataclass(frozen=True, slots=True)
class Notification:
    """A collectd notification, whatever shape it arrived in.

    ``severity`` is ``NOTIF_FAILURE``, ``NOTIF_WARNING`` or ``NOTIF_OKAY``.
    ``meta`` keeps the extra annotations or labels (threshold values, data
    source) as strings for rules that want them.
    """

    host: str
    plugin: str
    plugin_instance: str
    type: str
    type_instance: str
    severity: str
    message: str
    time: float
    meta: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


# --------------------------------------------------------------------------
# decoding


def decode_json(raw: bytes | str) -> Any:
    """Parse one Kafka message body as JSON, refusing what collectd never sends.

    Invalid UTF-8 is not fatal: collectd copies host and instance names byte
    for byte, so a stray Latin-1 byte is decoded as U+FFFD and the rest of the
    message survives. Oversized or pathologically nested input is refused
    before it costs memory.
    """
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise MalformedInput(f"message value is {type(raw).__name__}, expected bytes")
    if len(raw) == 0:
        raise MalformedInput("empty message")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise MalformedInput(f"message of {len(raw)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            text = bytes(raw).decode("utf-8", "replace")
        else:
            # Valid UTF-8 that orjson refused: genuinely not JSON (or too deep).
            raise MalformedInput(f"not JSON: {_short(str(exc))}") from None
        try:
            data = json.loads(
                text, parse_int=_int_as_orjson, parse_float=_float_as_orjson, parse_constant=_no_constant
            )
        except (ValueError, RecursionError):
            raise MalformedInput(f"not JSON: {_short(str(exc))}") from None
    # Depth can only exceed the limit if there are more openers than the limit;
    # a write_kafka message has two, so the walk is skipped for real traffic.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:
        _check_depth(data, MAX_DEPTH)
    return data


def _int_as_orjson(literal: str) -> int | float:
    """An integer literal as orjson reads it: an int within 64 bits, a float beyond.

    The invalid-UTF-8 fallback must read numbers as the main path does; a
    Python int of any size would reach the renderer and overflow there.
    """
    value = int(literal)
    if -(2**63) <= value < 2**64:
        return value
    return _float_as_orjson(literal)  # beyond a double's range it is infinite: refused as not JSON


def _float_as_orjson(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise ValueError(f"number {_short(literal, 40)} is out of range")
    return value


def _no_constant(literal: str) -> float:
    raise ValueError(f"{literal} is not JSON")


def _check_depth(data: Any, limit: int) -> None:
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise MalformedInput(f"JSON nested deeper than {limit} levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _elements(data: Any, what: str) -> list[dict[str, Any]]:
    if isinstance(data, dict):
        return [data]
    if not isinstance(data, list):
        raise MalformedInput(f"{what} must be a JSON array or object, got {type(data).__name__}")
    if not data:
        raise MalformedInput(f"{what} array is empty")
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise MalformedInput(f"{what}[{i}] is {type(item).__name__}, expected an object")
    return data


def _name(obj: dict[str, Any], key: str, where: str, *, required: bool) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise MalformedInput(f"{where}: missing field {key!r}")
        return ""
    if not isinstance(value, str):
        raise MalformedInput(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    if required and not value:
        raise MalformedInput(f"{where}: field {key!r} is empty")
    if len(value) > MAX_NAME_LENGTH:
        raise MalformedInput(f"{where}: field {key!r} is {len(value)} characters, limit {MAX_NAME_LENGTH}")
    return value


def _number(obj: dict[str, Any], key: str, where: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MalformedInput(f"{where}: field {key!r} must be a number")
    if not math.isfinite(value):
        raise MalformedInput(f"{where}: field {key!r} is not finite")
    return float(value)


# --------------------------------------------------------------------------
# value lists


def parse_value_lists(raw: bytes | str) -> list[ValueList]:
    """Parse one ``write_kafka`` (``Format JSON``) message into value lists.

    Raises :class:`MalformedInput` if any element is invalid; a message is
    accepted or rejected as a whole so a dead-letter record is never partial.

    Well-formed messages take :func:`decode_well_formed_value_lists` (msgspec
    checks the types, lengths and ranges in C while decoding); anything it
    does not accept is parsed again by the Python checks, which name what is
    wrong. The fast path accepts nothing the Python one refuses and returns the
    same value lists (``tests/test_collectd.py`` holds the two side by side).
    ``python -m bench.parse_bench``, 2026-12-03: 2.3 µs a value list against
    7.1 µs for the Python checks (3.1x less CPU).
    """
    if isinstance(raw, (bytes, bytearray)):
        fast = decode_well_formed_value_lists(raw)
        if fast is not None:
            return fast
    return parse_value_lists_checked(raw)


def parse_value_lists_checked(raw: bytes | str) -> list[ValueList]:
    """:func:`parse_value_lists` by the Python checks alone: what a rejection's reason comes from."""
    items = _elements(decode_json(raw), "value list message")
    return [_value_list(item, f"value list {i}") for i, item in enumerate(items)]


_VALUE_LISTS = msgspec.json.Decoder(list[ValueList] | ValueList)
_NORMALISED_VALUE_LISTS = msgspec.json.Decoder(list[ValueList])


def decode_well_formed_value_lists(raw: bytes | bytearray) -> list[ValueList] | None:
    """The value lists of a well-formed message, or None for the Python checks to parse (and name the fault).

    msgspec refuses non-finite numbers (JSON has none; an overflowing literal
    is out of range), invalid UTF-8, wrong types and over-long names; what is
    left to check here is what a schema cannot say. No depth limit: the
    schema has no field a deeper value could hide in (unknown fields are
    refused), so a message nested deeper than :data:`MAX_DEPTH` is declined
    by the schema and the Python checks name the fault, while a message of
    many value lists (two brackets each) decodes here.
    """
    if not raw or len(raw) > MAX_MESSAGE_BYTES:
        return None  # the Python path's size limit decides
    try:
        decoded = _VALUE_LISTS.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return _value_lists_of(decoded if isinstance(decoded, list) else [decoded])


def decode_normalised_value_lists(raw: bytes | bytearray) -> list[ValueList] | None:
    """An array of value lists in :meth:`ValueList.to_json`'s form (what ingest writes), or None.

    What it returns is exactly what :func:`parse_value_lists` returns for the
    same bytes; whatever that would normalise (a ``null`` instance, missing
    ``dstypes``, one object rather than an array) or refuse is declined.
    Several value lists carry more brackets than :data:`MAX_DEPTH`, so no
    depth limit: the schema has no nesting a value list could hide.
    """
    if not raw or len(raw) > MAX_MESSAGE_BYTES:
        return None
    try:
        decoded = _NORMALISED_VALUE_LISTS.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return _value_lists_of(decoded)


def _value_lists_of(value_lists: list[ValueList]) -> list[ValueList] | None:
    """``value_lists`` if each one's arrays are as long as each other and its interval positive, else None."""
    if not value_lists:
        return None
    for vl in value_lists:
        count = len(vl.values)
        if len(vl.dsnames) != count or len(vl.dstypes) != count or vl.interval <= 0:
            return None
    return value_lists


def _value_list(obj: dict[str, Any], where: str) -> ValueList:
    values = obj.get("values")
    dstypes = obj.get("dstypes")
    dsnames = obj.get("dsnames")
    if not isinstance(values, list) or not values:
        raise MalformedInput(f"{where}: 'values' must be a non-empty array")
    if not isinstance(dsnames, list) or len(dsnames) != len(values):
        raise MalformedInput(f"{where}: 'dsnames' must be an array as long as 'values'")
    if dstypes is None:
        dstypes = ["gauge"] * len(values)
    if not isinstance(dstypes, list) or len(dstypes) != len(values):
        raise MalformedInput(f"{where}: 'dstypes' must be an array as long as 'values'")
    for v in values:
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise MalformedInput(f"{where}: 'values' must hold numbers or null")
    for n in (*dsnames, *dstypes):
        if not isinstance(n, str) or len(n) > MAX_NAME_LENGTH:
            raise MalformedInput(f"{where}: 'dsnames' and 'dstypes' must hold short strings")
    interval = _number(obj, "interval", where)
    if interval <= 0:
        raise MalformedInput(f"{where}: 'interval' must be positive")
    return ValueList(
        host=_name(obj, "host", where, required=True),
        plugin=_name(obj, "plugin", where, required=True),
        plugin_instance=_name(obj, "plugin_instance", where, required=False),
        type=_name(obj, "type", where, required=True),
        type_instance=_name(obj, "type_instance", where, required=False),
        time=_number(obj, "time", where),
        interval=interval,
        values=tuple(v if v is None or math.isfinite(v) else None for v in values),
        dstypes=tuple(dstypes),
        dsnames=tuple(dsnames),
    )


# --------------------------------------------------------------------------
# notifications

_RESERVED_LABELS = frozenset({"alertname", "instance", "severity", "service", "type"})
# The threshold plugin's message names every identifier unambiguously:
# "Host H, plugin P (instance PI) type T (instance TI): ..."
_THRESHOLD_MESSAGE = re.compile(
    r"^Host (?P<host>.+?), plugin (?P<plugin>[^\s(]+)(?: \(instance (?P<pi>[^)]*)\))?"
    r" type (?P<type>[^\s(:]+)(?: \(instance (?P<ti>[^)]*)\))?:"
)


def parse_notifications(raw: bytes | str) -> list[Notification]:
    """Parse one notification message, in either shape, into notifications."""
    items = _elements(decode_json(raw), "notification message")
    out = []
    for i, item in enumerate(items):
        where = f"notification {i}"
        if "labels" in item or "annotations" in item:
            out.append(_alertmanager_notification(item, where))
        else:
            out.append(_legacy_notification(item, where))
    return out


def split_notifications_by_host(raw: bytes | str) -> list[tuple[str, bytes]]:
    """One notification message as ``(host, message)`` pairs, one per host, in first-seen order.

    A message of one host comes back unchanged; a message holding several
    hosts' notifications is cut into one JSON array per host of the
    original objects (nothing of them is lost), each host's in their order.
    So the relay can key each host's notifications by host, and the fault
    stage can send misplaced ones to their host's partition.
    Raises :class:`MalformedInput` as :func:`parse_notifications` does.
    """
    items = _elements(decode_json(raw), "notification message")
    groups: dict[str, list[dict[str, Any]]] = {}
    for i, item in enumerate(items):
        where = f"notification {i}"
        if "labels" in item or "annotations" in item:
            host = _alertmanager_notification(item, where).host
        else:
            host = _legacy_notification(item, where).host
        groups.setdefault(host, []).append(item)
    if len(groups) == 1:
        [host] = groups
        return [(host, raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw))]
    return [(host, orjson.dumps(group)) for host, group in groups.items()]


def _severity(value: Any, where: str) -> str:
    key = str(value).strip().upper() if value is not None else ""
    try:
        return _SEVERITY_ALIASES[key]
    except KeyError:
        raise MalformedInput(f"{where}: unknown severity {_short(key, 40)!r}") from None


def _legacy_notification(obj: dict[str, Any], where: str) -> Notification:
    message = obj.get("message", "")
    if not isinstance(message, str):
        raise MalformedInput(f"{where}: 'message' must be a string")
    time_value = obj.get("time")
    if isinstance(time_value, str):
        when = _parse_time(time_value, where)
    else:
        when = _number(obj, "time", where)
    return Notification(
        host=_name(obj, "host", where, required=True),
        plugin=_name(obj, "plugin", where, required=False),
        plugin_instance=_name(obj, "plugin_instance", where, required=False),
        type=_name(obj, "type", where, required=False),
        type_instance=_name(obj, "type_instance", where, required=False),
        severity=_severity(obj.get("severity"), where),
        message=message,
        time=when,
        meta={},
    )


def _alertmanager_notification(obj: dict[str, Any], where: str) -> Notification:
    labels = obj.get("labels") or {}
    annotations = obj.get("annotations") or {}
    if not isinstance(labels, dict) or not isinstance(annotations, dict):
        raise MalformedInput(f"{where}: 'labels' and 'annotations' must be objects")
    for key, value in (*labels.items(), *annotations.items()):
        if not isinstance(value, str):
            raise MalformedInput(f"{where}: label or annotation {_short(key, 40)!r} must be a string")
    host = _name(labels, "instance", f"{where} labels", required=True)
    message = annotations.get("summary", "")
    severity = _severity(labels.get("severity", annotations.get("severity")), where)
    starts_at = obj.get("startsAt")
    if not isinstance(starts_at, str):
        raise MalformedInput(f"{where}: 'startsAt' must be an RFC 3339 string")
    when = _parse_time(starts_at, where)

    plugin, plugin_instance, type_, type_instance = _identifiers(labels, message)
    meta = {k: v for k, v in annotations.items() if k != "summary"}
    return Notification(
        host=host,
        plugin=plugin,
        plugin_instance=plugin_instance,
        type=type_,
        type_instance=type_instance,
        severity=severity,
        message=message,
        time=when,
        meta=meta,
    )


def _identifiers(labels: dict[str, str], message: str) -> tuple[str, str, str, str]:
    """Recover plugin, plugin_instance, type and type_instance from collectd's labels.

    collectd folds the identifiers into labels (``collectd_<plugin>_<type>``,
    ``<plugin>: <plugin_instance>``, ``type: <type_instance>``) in a way that
    loses information when only one instance is set or when the type starts
    with the plugin name. The threshold plugin's message states all four, so
    it is trusted first; otherwise the labels are read as collectd wrote them,
    and a lone ``<plugin>`` label is taken as the plugin instance.
    """
    match = _THRESHOLD_MESSAGE.match(message)
    if match:
        return (
            match["plugin"],
            match["pi"] or "",
            match["type"],
            match["ti"] or "",
        )
    alertname = labels.get("alertname", "")
    suffix = alertname[len("collectd_") :] if alertname.startswith("collectd_") else alertname
    plugin_keys = [k for k in labels if k not in _RESERVED_LABELS]
    if plugin_keys:
        plugin = plugin_keys[0]
        type_ = suffix[len(plugin) + 1 :] if suffix.startswith(plugin + "_") else suffix
        if "type" in labels:
            return plugin, labels[plugin], type_, labels["type"]
        return plugin, labels[plugin], type_, ""
    # No instance labels: either the type starts with the plugin name
    # (collectd_<type>) or the split is at the first underscore.
    plugin, _, rest = suffix.partition("_")
    return (plugin, "", suffix, "") if not rest else (plugin, "", rest, "")


def _parse_time(text: str, where: str) -> float:
    """RFC 3339 to epoch seconds; collectd writes nanoseconds, Python reads micro."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    value = re.sub(r"(\.\d{6})\d+", r"\1", value)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise MalformedInput(f"{where}: time {_short(text, 40)!r} is not RFC 3339") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()
