"""The VES sink: ``ves-events`` records delivered over HTTP(S) to a VES collector.

Read in this order, each module owning one step:

* ``config``    :class:`SinkConfig` (Kafka side, :class:`CollectorConfig`,
  batching limits, retry policy, Kafka security) and ``from_settings``;
* ``records``   a Kafka record -> :class:`~ves_streams.sink.records.SinkRecord`
  or a reason to dead-letter it; dead-letter records;
* ``validation`` each event against the VES schema of the collector's version;
* ``batching``  one domain per batch, per-host order within a domain, count/byte/linger limits;
* ``retry``     which failures retry, how long to wait, primary/backup URL;
* ``refusals``  a refusal about the collector's configuration (held) or the events;
* ``client``    ``requests`` on a dedicated thread: POST, TLS, Basic auth;
* ``delivery``  one batch to the collector: retries, failover, event-by-event
  fallback when a batch is refused, splitting a batch the collector singles
  out, holds while its configuration refuses;
* ``offsets``   what may be committed (the contiguous finished prefix);
* ``service``   :class:`SinkService`, the ``mode.Service`` that owns the
  consumer, the DLQ producer and the HTTP client and runs the loop;
* ``metrics``   Prometheus counters and histograms;
* ``errors``    the one exception hierarchy and credential scrubbing.

Everything but ``client``, ``delivery`` and ``service`` is pure. Names are
exported lazily so that importing the configuration does not import aiokafka.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BatchLimits",
    "CollectorConfig",
    "KafkaSecurity",
    "RetryPolicy",
    "Secret",
    "SinkConfig",
    "SinkError",
    "SinkService",
]

_EXPORTS = {
    "BatchLimits": "ves_streams.sink.batching",
    "CollectorConfig": "ves_streams.sink.config",
    "KafkaSecurity": "ves_streams.sink.config",
    "RetryPolicy": "ves_streams.sink.retry",
    "Secret": "ves_streams.sink.config",
    "SinkConfig": "ves_streams.sink.config",
    "SinkError": "ves_streams.sink.errors",
    "SinkService": "ves_streams.sink.service",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ves_streams.sink' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
