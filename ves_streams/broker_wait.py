"""Wait for Kafka before a worker starts its clients.

A worker started before its broker (a host booting, a broker being
replaced, `docker compose up` racing the broker's health check) must wait and
say so, not exit: Faust's consumer gives up with ``KafkaConnectionError``
when no bootstrap server answers at start. :func:`wait_for_broker` runs
before the app's producer and consumer start and returns once a bootstrap
server accepts a connection and, on a plaintext listener, a real client lists
the cluster's brokers. It never gives up by default: an orchestrator stops a
worker that waits too long; a worker that exits only loses its place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from ves_streams.runtime.kafka import KafkaConnection, parse_broker

__all__ = ["bootstrap_addresses", "bootstrap_servers", "wait_for_broker"]

log = logging.getLogger(__name__)


def bootstrap_addresses(broker: str) -> list[tuple[str, int]]:
    """``kafka://h1:9092;h2:9092`` (or ``h1:9092,h2:9092``) as ``[(host, port), ...]`` (:func:`parse_broker`)."""
    return list(parse_broker(broker))


def bootstrap_servers(broker: str) -> str:
    """``kafka://h1:9092;h2:9092`` as the ``h1:9092,h2:9092`` string Kafka clients take."""
    return KafkaConnection.parse(broker).bootstrap_servers


async def _reachable(addresses: Sequence[tuple[str, int]], timeout: float) -> bool:
    for host, port in addresses:
        try:
            _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (OSError, asyncio.TimeoutError):
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False


async def _lists_brokers(bootstrap: str, timeout: float) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout)
        return bool(cluster.get("brokers")) and cluster.get("controller_id", -1) >= 0
    except Exception:  # any failure means "not ready yet"; the loop retries
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


async def wait_for_broker(
    broker: str,
    *,
    plaintext: bool = True,
    max_delay: float = 10.0,
    report: Callable[[str], None] | None = None,
) -> float:
    """Return once Kafka at ``broker`` answers; the seconds spent waiting.

    Each failed attempt is reported (to ``report``, default the log at
    WARNING) with the addresses tried, then retried after a delay growing to
    ``max_delay``. With SASL or TLS (``plaintext=False``) an open port is
    taken as the answer: the clients authenticate themselves and retry.
    """
    say = report or log.warning
    addresses = bootstrap_addresses(broker)
    bootstrap = bootstrap_servers(broker)
    started = time.monotonic()
    delay, attempt = 0.5, 0
    while True:
        attempt += 1
        if await _reachable(addresses, timeout=3.0) and (not plaintext or await _lists_brokers(bootstrap, 5.0)):
            waited = time.monotonic() - started
            if attempt > 1:
                say(f"Kafka broker at {bootstrap} is reachable after {waited:.1f} s; starting")
            return waited
        say(f"waiting for the Kafka broker at {bootstrap}: not reachable yet (attempt {attempt}, retrying in {delay:.1f} s)")
        await asyncio.sleep(delay)
        delay = min(max_delay, delay * 2)
