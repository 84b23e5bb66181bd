"""Drill 5: poison and hostile input at rate, mixed into good traffic.

Every round (2 s) the feed sends, besides the good value lists, a volley of
messages no collectd sends -- malformed JSON, invalid UTF-8, deep nesting,
wrong shapes, absurd names, and every few rounds a 10 MB message -- to both
input topics; and good traffic that looks hostile: hosts and notification
texts made of template syntax, which must render literally.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import orjson
import pytest

from tests.agents.support import Record
from tests.drills.conftest import INTERVAL, Drill, FedExtra, print_figures
from ves_streams.collectd import MAX_DEPTH, MAX_NAME_LENGTH
from ves_streams.dev.replay import host_names
from ves_streams.wire.deadletter import DLQ_MAX_VALUE_BYTES

pytestmark = [pytest.mark.integration, pytest.mark.drill]

#: Good hosts whose names look like templates, format strings or markup: rendered literally or not at all.
HOSTILE_HOSTS = ["{vl.host}", "{{7*7}}", "${jndi:ldap://x/a}", "%s%n{0}", "<b>{system.id}</b>"]
#: A good host whose name arrives with a Latin-1 byte (collectd copies names byte for byte): kept, as U+FFFD.
LATIN1_HOST, LATIN1_RENDERED = "lat-e-n", "lat\ufffdn"
#: Each small poison message is sent this many times per round.
VOLLEY = 4
ROUNDS_PER_BIG = 4
BIG = 10 * 1024 * 1024

_VL = {"values": [1.0], "dstypes": ["gauge"], "dsnames": ["value"], "time": 0.0, "interval": 10.0,
       "host": "poison", "plugin": "cpu", "plugin_instance": "0", "type": "percent", "type_instance": "user"}  # fmt: skip


def _vl(**changes: Any) -> bytes:
    return orjson.dumps([{**_VL, "time": time.time(), **changes}])


#: label -> (raw message, a phrase its dead-letter reason must contain)
VALUE_POISON: dict[str, tuple[bytes, str]] = {
    "not json": (b"this is not json", "not JSON"),
    "truncated json": (b'[{"host": "x", "plugin": ', "not JSON"),
    "invalid utf-8": (b"\xff\xfe\xfd garbage \xc3\x28", "not JSON"),
    "deep nesting": (b"[" * 200 + b"]" * 200, "nested deeper"),
    "deep objects": (b'{"a":' * (MAX_DEPTH + 5) + b"1" + b"}" * (MAX_DEPTH + 5), "nested deeper"),
    "empty": (b"", "empty"),
    "wrong shape": (orjson.dumps([{"values": [1], "host": "x"}]), "dsnames"),
    "scalar": (b"42", "JSON array or object"),
    "absurd name": (_vl(host="h" * (MAX_NAME_LENGTH + 1)), "limit"),
    "non-finite": (b'[{"values":[1e999],"dstypes":["gauge"],"dsnames":["value"],"time":1,"interval":10,'
                   b'"host":"x","plugin":"cpu","type":"percent"}]', "not JSON"),  # fmt: skip
}
NOTIFICATION_POISON: dict[str, tuple[bytes, str]] = {
    "not json": (b"{nope", "not JSON"),
    "invalid utf-8": (b"\x80\x81\x82", "not JSON"),
    "deep nesting": (b"[" * 200 + b"]" * 200, "nested deeper"),
    "unknown severity": (orjson.dumps({"host": "h", "plugin": "cpu", "severity": "LOUD", "time": 1, "message": "m"}),
                         "unknown severity"),  # fmt: skip
}


def _notification_text(i: int) -> str:
    """Unique per notification, and full of template and format syntax that must come out literally."""
    return f"drill-note-{i:04d} {{vl.host}} {{{{7*7}}}} ${{jndi:ldap://x}} %s%n {{0}} {{n.message}}"


def _volley(values_topic: str, notifications_topic: str) -> Any:
    def extra(index: int) -> list[tuple[str, str, bytes]]:
        out = []
        for _ in range(VOLLEY):
            out += [(values_topic, f"values: {label}", raw) for label, (raw, _) in VALUE_POISON.items()]
            out += [(notifications_topic, f"notifications: {label}", raw) for label, (raw, _) in NOTIFICATION_POISON.items()]
        if index % ROUNDS_PER_BIG == 0:
            out.append((values_topic, "values: 10 MB", b"[" + b" " * BIG + b"]"))
        return out

    return extra


def _latin1(message: bytes) -> bytes:
    return message.replace(f'"host":"{LATIN1_HOST}"'.encode(), b'"host":"lat\xe9n"')


def test_poison_and_hostile_input_at_rate_is_dead_lettered_while_good_traffic_flows(drill: Drill) -> None:
    fed_hosts = host_names(6, "hi") + HOSTILE_HOSTS + [LATIN1_HOST]
    rendered_hosts = host_names(6, "hi") + HOSTILE_HOSTS + [LATIN1_RENDERED]
    processor = drill.processor("p1")
    sink = drill.sink("sink")
    drill.events
    dlq = drill.dlq
    started = time.monotonic()
    feed = drill.feed(fed_hosts, extra=_volley(drill.names.values, drill.names.notifications), rewrite=_latin1,
                      notification_text=_notification_text, notify_every=2)  # fmt: skip
    warm = drill.warm_up(rendered_hosts, timeout=90)
    time.sleep(35.0)
    feed.stop()
    fed_for = time.monotonic() - started
    drained = drill.drain(feed, rendered_hosts)
    report = drill.report(feed, rendered_hosts)

    sent = {(e.topic, e.partition, e.offset): e for e in feed.extras}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(dlq.snapshot()) < len(sent):
        time.sleep(0.5)
    time.sleep(2 * INTERVAL)
    letters = dlq.snapshot()
    matched: dict[tuple[str, int, int], Record] = {}
    unexplained: list[str] = []
    for letter in letters:
        h = letter.headers
        try:
            source = (h["ves-streams-source-topic"].decode(), int(h["ves-streams-source-partition"]), int(h["ves-streams-source-offset"]))
        except (KeyError, ValueError):
            unexplained.append(f"no source headers: {h}")
            continue
        if source not in sent:
            reason = h.get("ves-streams-reason", b"").decode("utf-8", "replace")
            unexplained.append(f"{source[0]}: {h.get('ves-streams-host', b'').decode('utf-8', 'replace')!r}: {reason[:300]}")
            continue
        if source in matched:
            unexplained.append(f"{source} dead-lettered twice")
        matched[source] = letter
    not_dead_lettered = Counter(e.label for key, e in sent.items() if key not in matched)
    wrong_reason: list[str] = []
    expected = {f"values: {k}": v[1] for k, v in VALUE_POISON.items()} | {
        f"notifications: {k}": v[1] for k, v in NOTIFICATION_POISON.items()} | {"values: 10 MB": "exceeds"}  # fmt: skip
    reasons: dict[str, str] = {}
    for key, letter in matched.items():
        fed: FedExtra = sent[key]
        reason = letter.headers.get("ves-streams-reason", b"").decode("utf-8", "replace")
        reasons.setdefault(fed.label, reason)
        if not reason or expected[fed.label] not in reason or reason.startswith("internal error"):
            wrong_reason.append(f"{fed.label}: {reason!r}")
        if fed.label == "values: 10 MB":
            size = int(letter.headers.get("ves-streams-original-size", b"0"))
            if size != fed.size or letter.value is None or len(letter.value) > DLQ_MAX_VALUE_BYTES:
                wrong_reason.append(f"10 MB letter: original-size {size}, value {len(letter.value or b'')} bytes")
    internal_errors = sum(w.log_text().count("internal error processing") for w in (processor, sink))
    literal = {e["commonEventHeader"]["sourceName"] for e in drill.collected.events()}
    print_figures(
        "5 poison and hostile input",
        {
            "good_hosts": len(rendered_hosts),
            "hostile_host_names": HOSTILE_HOSTS + [LATIN1_RENDERED],
            "fed_for_s": round(fed_for, 1),
            "warm_up_s": round(warm, 1),
            "poison_sent": len(sent),
            "poison_per_s": round(len(sent) / fed_for, 1),
            "poison_mb": round(sum(e.size for e in sent.values()) / 2**20, 1),
            "big_messages": sum(1 for e in sent.values() if e.label == "values: 10 MB"),
            "dead_letters": len(letters),
            "dead_letters_matched": len(matched),
            "not_dead_lettered": dict(not_dead_lettered),
            "unexplained_dead_letters": unexplained[:5],
            "wrong_reasons": wrong_reason[:5],
            "reason_per_kind": reasons,
            "internal_errors_logged": internal_errors,
            "hostile_hosts_rendered_literally": sorted(h for h in HOSTILE_HOSTS + [LATIN1_RENDERED] if h in literal),
            "drain_s": round(drained, 1),
            "workers_alive": {w.name: w.running for w in (processor, sink)},
            **feed.figures(),
            **report.figures(),
        },
    )
    assert processor.running and sink.running, "a worker died"
    assert not not_dead_lettered, f"poison not dead-lettered: {dict(not_dead_lettered)}"
    assert not unexplained, f"dead letters for no poison sent: {unexplained[:5]}"
    assert not wrong_reason, f"dead letters without the right reason: {wrong_reason[:5]}"
    assert internal_errors == 0, "poison reached an unexpected code path (internal error)"
    assert set(HOSTILE_HOSTS + [LATIN1_RENDERED]) <= literal, "a hostile host name was not rendered literally"
    # good traffic: every window of every good host (hostile-looking ones included), every notification once,
    # its template-looking text verbatim (the report matches it as a substring of specificProblem)
    report.check(max_missing_per_host=0)
