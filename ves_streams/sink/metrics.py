"""Prometheus metrics of the VES sink, on the default registry.

The app's ``/metrics`` view exposes the default registry, so these appear
there without wiring. Names start with ``ves_streams_sink_``. Labels are
bounded: ``domain`` is a VES domain (a dozen values), ``code`` an HTTP
status, ``endpoint`` is ``primary`` or ``backup``, ``reason`` one of the
short fixed words below.

Defined once at import; several :class:`~ves_streams.sink.service.SinkService`
instances in one process (tests) share them.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "BATCHES",
    "BATCH_BYTES",
    "BATCH_EVENTS",
    "DEAD_LETTERED",
    "DELIVERED",
    "END_TO_END_LATENCY",
    "ENDPOINT_ACTIVE",
    "HELD",
    "HTTP_RESPONSES",
    "REQUEST_LATENCY",
    "RETRIES",
    "COMMITS",
    "CONCURRENCY_LIMIT",
    "REQUESTS_IN_FLIGHT",
]

DELIVERED = Counter(
    "ves_streams_sink_events_delivered",
    "VES events accepted by the collector",
    ["domain"],
)
BATCHES = Counter(
    "ves_streams_sink_requests",
    "Requests sent to the collector, by kind (batch or single) and outcome (accepted, retried, refused, split)",
    ["kind", "outcome"],
)
BATCH_EVENTS = Histogram(
    "ves_streams_sink_batch_events",
    "Events per request sent to the collector",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
BATCH_BYTES = Histogram(
    "ves_streams_sink_batch_bytes",
    "Request body bytes sent to the collector",
    buckets=(1e3, 4e3, 16e3, 64e3, 256e3, 1e6, 4e6),
)
REQUEST_LATENCY = Histogram(
    "ves_streams_sink_request_seconds",
    "Time from sending a request to the collector's answer",
    ["endpoint"],
)
END_TO_END_LATENCY = Histogram(
    "ves_streams_sink_delivery_latency_seconds",
    "Time from an event's Kafka timestamp to the collector accepting it",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
HTTP_RESPONSES = Counter(
    "ves_streams_sink_http_responses",
    "Collector answers by HTTP status code ('none' when no response arrived)",
    ["code", "endpoint"],
)
RETRIES = Counter(
    "ves_streams_sink_retries",
    "Delivery attempts that failed transiently and will be retried, by reason "
    "(unavailable, throttled, endpoint, network, configuration)",
    ["reason"],
)
DEAD_LETTERED = Counter(
    "ves_streams_sink_dead_lettered",
    "Records sent to the dead-letter topic, by reason (malformed, invalid, oversize, refused, poisoned, exhausted)",
    ["reason"],
)
HELD = Gauge(
    "ves_streams_sink_held_by_collector",
    "1 while the collector refuses a domain's events for a reason of its own configuration (delivery of the "
    "domain held: nothing dead-lettered or committed until it accepts them)",
    ["domain"],
)
ENDPOINT_ACTIVE = Gauge(
    "ves_streams_sink_endpoint_active",
    "1 for the collector endpoint (primary or backup) the sink last delivered to",
    ["endpoint"],
)
REQUESTS_IN_FLIGHT = Gauge(
    "ves_streams_sink_requests_in_flight",
    "Requests to the collector under way",
)
CONCURRENCY_LIMIT = Gauge(
    "ves_streams_sink_concurrency_limit",
    "How many requests the sink may have in flight now (adaptive: grows while round trips stay flat, "
    "shrinks on errors and rising latency)",
)
COMMITS = Counter(
    "ves_streams_sink_offset_commits",
    "Offset commits of the sink's consumer group, by outcome (ok, failed)",
    ["outcome"],
)


def _zero_fixed_vocabularies() -> None:
    """Create every series of a fixed label vocabulary at 0, so that alerts see its first increase."""
    for reason in ("unavailable", "throttled", "endpoint", "network", "configuration"):
        RETRIES.labels(reason=reason)
    for reason in ("malformed", "invalid", "oversize", "refused", "poisoned", "exhausted"):
        DEAD_LETTERED.labels(reason=reason)
    for kind in ("batch", "single"):
        for outcome in ("accepted", "retried", "refused", "split"):
            BATCHES.labels(kind=kind, outcome=outcome)
    for outcome in ("ok", "failed"):
        COMMITS.labels(outcome=outcome)
    for domain in ("fault", "heartbeat", "measurement", "measurementsForVfScaling"):  # the shipped topologies' domains
        HELD.labels(domain=domain).set(0)


_zero_fixed_vocabularies()
