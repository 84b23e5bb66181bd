"""Relay collectd notifications from ``write_http`` to Kafka.

Stock collectd's ``write_kafka`` (5.12, Debian's ``collectd-core``) publishes
value lists only; the notification support Barometer relied on was a patch.
collectd's ``write_http`` plugin does post notifications (``Notifications
true``, ``Format "JSON"``), so this small HTTP endpoint receives them and
produces each POST body as a message on the notifications topic, keyed by
the notifications' host: Kafka's default partitioner puts one host's
notifications in one partition, in order, which the fault stage's alarms
need (one host's raise before its clear). A body holding several hosts'
notifications becomes one message per host (the original objects, each
host's in their order); a body of one host goes unchanged. The body is
collectd's 5.9+ JSON notification array, exactly what the fault stage
parses; one that does not parse goes unkeyed and unchanged (the fault stage
dead-letters it, with its bytes).

Guarantee: the HTTP answer is 200 only after the broker acknowledged every
message of the body with ``acks=all``; otherwise 503, and collectd logs the
failure (and posts it again: the fault stage's eventIds make a repeat
recognisable). The relay holds nothing in memory beyond the request in
flight.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from ves_streams.collectd import MAX_MESSAGE_BYTES, MalformedInput, split_notifications_by_host
from ves_streams.runtime.kafka import KafkaConnection

__all__ = ["keyed_messages", "make_relay_app", "run_relay", "register"]

log = logging.getLogger(__name__)


def keyed_messages(body: bytes) -> list[tuple[bytes | None, bytes]]:
    """The ``(key, value)`` messages a POST body becomes: one per host, keyed by it; unkeyed if it does not parse."""
    try:
        return [(host.encode("utf-8", "surrogatepass"), payload) for host, payload in split_notifications_by_host(body)]
    except MalformedInput:
        return [(None, body)]


def make_relay_app(producer: AIOKafkaProducer, topic: str) -> web.Application:
    """An aiohttp application that forwards each POST body to ``topic``, keyed by host."""

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        if not body:
            return web.Response(status=400, text="empty body\n")
        try:
            sent = [await producer.send(topic, value, key=key) for key, value in keyed_messages(body)]
            await asyncio.gather(*sent)
        except KafkaError as exc:
            log.warning("relay: could not publish a notification to %s: %s", topic, type(exc).__name__)
            return web.Response(status=503, text="broker unavailable\n")
        return web.Response(status=200)

    app = web.Application(client_max_size=MAX_MESSAGE_BYTES)
    app.router.add_post("/{tail:.*}", receive)
    app.router.add_get("/healthcheck", lambda _r: web.Response(text="ok\n"))
    return app


async def run_relay(broker: str | KafkaConnection, topic: str, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM; ``broker`` is a broker string (plaintext) or a connection with its security."""
    connection = broker if isinstance(broker, KafkaConnection) else KafkaConnection.parse(broker)
    producer = AIOKafkaProducer(bootstrap_servers=connection.bootstrap_servers, acks="all", enable_idempotence=True,
                                **connection.client_kwargs())  # fmt: skip
    await producer.start()
    runner = web.AppRunner(make_relay_app(producer, topic), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("relay: collectd write_http notifications on http://%s:%d/ -> Kafka topic %s", host, port, topic)
    print(f"relay listening on http://{host}:{port}/ -> {topic}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await producer.stop()


def _handle(args: argparse.Namespace) -> int:
    import os

    from ves_streams.runtime.kafka import KafkaSecurity
    from ves_streams.settings import Settings, SettingsError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        # the same VES_STREAMS_* settings as the worker (broker, topic, Kafka TLS and SASL); flags win
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"ves-streams relay: {exc}", file=sys.stderr)
        return 2
    connection = KafkaConnection.parse(args.broker or settings.broker, KafkaSecurity.from_settings(settings))
    topic = args.topic or settings.notifications_topic
    try:
        asyncio.run(run_relay(connection, topic, args.host, args.port))
    except KafkaError as exc:
        print(f"ves-streams relay: cannot reach Kafka at {connection.bootstrap_servers}: {type(exc).__name__}", file=sys.stderr)
        return 1
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "relay",
        help="receive collectd write_http notifications and publish them to Kafka",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.add_argument("--broker", default=None,
                        help="Kafka bootstrap (default: VES_STREAMS_BROKER, else kafka://localhost:9092); "
                             "TLS and SASL come from VES_STREAMS_KAFKA_*, as for the worker")  # fmt: skip
    parser.add_argument("--topic", default=None,
                        help="topic (default: VES_STREAMS_NOTIFICATIONS_TOPIC, else collectd-notifications)")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default %(default)s)")
    parser.add_argument("--port", type=int, default=18089, help="listen port (default %(default)s)")
    parser.set_defaults(handler=_handle)
