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
recognisable). The relay holds nothing in memory beyond the requests in
flight.

**Who may post.** A notification becomes a fault for the host it names, so
whoever reaches the relay could raise or clear any host's alarms. The relay
takes a bearer token (``VES_STREAMS_RELAY_TOKEN``; collectd's ``write_http``
sends it with ``Header "Authorization: Bearer ..."``), compared in constant
time, and/or mutual TLS (``--tls-cert``, ``--tls-key``, ``--client-ca``:
only clients with a certificate that CA signed get through the handshake).
Listening on anything but loopback without either, it refuses to start
unless told ``--insecure-no-auth`` (logged at start). At most
``--max-concurrent`` POSTs are served at once (503 with ``Retry-After``
beyond, never a queue), and a body is at most 1 MiB (collectd's own limit;
413 beyond).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from ves_streams.collectd import MAX_MESSAGE_BYTES, MalformedInput, split_notifications_by_host
from ves_streams.runtime.kafka import KafkaConnection
from ves_streams.secret import Secret
from ves_streams.web_access import bearer_matches

__all__ = ["RelayAccess", "exposure_error", "keyed_messages", "make_relay_app", "run_relay", "register"]

log = logging.getLogger(__name__)


def keyed_messages(body: bytes) -> list[tuple[bytes | None, bytes]]:
    """The ``(key, value)`` messages a POST body becomes: one per host, keyed by it; unkeyed if it does not parse."""
    try:
        return [(host.encode("utf-8", "surrogatepass"), payload) for host, payload in split_notifications_by_host(body)]
    except MalformedInput:
        return [(None, body)]


#: POSTs served at once by default: collectd posts a notification at a time per host.
MAX_CONCURRENT = 64


@dataclass(frozen=True)
class RelayAccess:
    """Who may post: a bearer token (None: none asked for) and how many POSTs at once."""

    token: Secret | None = None
    max_concurrent: int = MAX_CONCURRENT

    def authorized(self, header: str | None) -> bool:
        """True when no token is asked for, or ``header`` is ``Bearer <the token>`` (constant-time compare)."""
        return bearer_matches(self.token, header)


def exposure_error(host: str, access: RelayAccess, client_ca: Path | None, insecure: bool) -> str | None:
    """Why the relay must not listen on ``host`` as configured, or None.

    Loopback is the machine's own: collectd beside the relay. Anything else
    (an interface, ``0.0.0.0``, a name) needs the token or mutual TLS.
    """
    if access.token is not None or client_ca is not None or insecure:
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        if host == "localhost":
            return None
    return (f"--host {host}: listening beyond loopback without VES_STREAMS_RELAY_TOKEN or --client-ca lets anyone "
            "who reaches it raise and clear any host's alarms; set one, or --insecure-no-auth to run open")  # fmt: skip


def make_relay_app(producer: AIOKafkaProducer, topic: str, access: RelayAccess | None = None) -> web.Application:
    """An aiohttp application that forwards each authorized POST body to ``topic``, keyed by host."""
    access = access or RelayAccess()
    in_flight = 0

    async def receive(request: web.Request) -> web.Response:
        nonlocal in_flight
        if not access.authorized(request.headers.get("Authorization")):
            return web.Response(status=401, text="unauthorized\n", headers={"WWW-Authenticate": 'Bearer realm="ves-streams-relay"'})
        if in_flight >= access.max_concurrent:
            return web.Response(status=503, text="too many requests at once\n", headers={"Retry-After": "1"})
        in_flight += 1
        try:
            return await forward(request)
        finally:
            in_flight -= 1

    async def forward(request: web.Request) -> web.Response:
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


async def run_relay(
    broker: str | KafkaConnection,
    topic: str,
    host: str,
    port: int,
    access: RelayAccess | None = None,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM; ``broker`` is a broker string (plaintext) or a connection with its security."""
    connection = broker if isinstance(broker, KafkaConnection) else KafkaConnection.parse(broker)
    producer = AIOKafkaProducer(bootstrap_servers=connection.bootstrap_servers, acks="all", enable_idempotence=True,
                                **connection.client_kwargs())  # fmt: skip
    await producer.start()
    runner = web.AppRunner(make_relay_app(producer, topic, access), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=tls)
    await site.start()
    scheme = "https" if tls is not None else "http"
    log.info("relay: collectd write_http notifications on %s://%s:%d/ -> Kafka topic %s", scheme, host, port, topic)
    print(f"relay listening on {scheme}://{host}:{port}/ -> {topic}", flush=True)
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
    from ves_streams.settings import command_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # the same VES_STREAMS_* settings as the worker (broker, topic, Kafka TLS and SASL); flags win
    settings = command_settings("relay")
    connection = KafkaConnection.from_settings(settings, broker=args.broker)
    topic = args.topic or settings.notifications_topic
    access = RelayAccess(token=settings.relay_token, max_concurrent=args.max_concurrent)
    refused = exposure_error(args.host, access, args.client_ca, args.insecure_no_auth)
    if refused is not None:
        print(f"ves-streams relay: {refused}", file=sys.stderr)
        return 2
    if (args.tls_cert is None) != (args.tls_key is None) or (args.client_ca is not None and args.tls_cert is None):
        print("ves-streams relay: --tls-cert and --tls-key go together, and --client-ca needs them", file=sys.stderr)
        return 2
    if args.insecure_no_auth and access.token is None and args.client_ca is None:
        log.warning("relay: --insecure-no-auth: anyone who reaches %s:%d can post notifications", args.host, args.port)
    try:
        tls = _server_tls(args.tls_cert, args.tls_key, args.client_ca)
    except (OSError, ssl.SSLError) as exc:
        print(f"ves-streams relay: --tls-cert/--tls-key/--client-ca: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(run_relay(connection, topic, args.host, args.port, access, tls))
    except KafkaError as exc:
        print(f"ves-streams relay: cannot reach Kafka at {connection.bootstrap_servers}: {type(exc).__name__}", file=sys.stderr)
        return 1
    return 0


def _server_tls(cert: Path | None, key: Path | None, client_ca: Path | None) -> ssl.SSLContext | None:
    """The relay's TLS (None: plain HTTP); with ``client_ca``, clients must show a certificate it signed."""
    if cert is None or key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.load_verify_locations(cafile=client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


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
    parser.add_argument("--tls-cert", type=Path, default=None, help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", type=Path, default=None, help="... and this key (PEM)")
    parser.add_argument("--client-ca", type=Path, default=None,
                        help="mutual TLS: only clients with a certificate this CA signed may connect")  # fmt: skip
    parser.add_argument("--max-concurrent", type=int, default=MAX_CONCURRENT,
                        help="POSTs served at once; beyond, 503 with Retry-After (default %(default)s)")  # fmt: skip
    parser.add_argument("--insecure-no-auth", action="store_true",
                        help="listen beyond loopback with neither VES_STREAMS_RELAY_TOKEN nor --client-ca (logged)")  # fmt: skip
    parser.set_defaults(handler=_handle)
