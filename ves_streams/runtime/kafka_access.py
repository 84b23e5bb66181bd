"""Can this worker log in to Kafka? Asked once at start, so that bad trust or credentials say so.

Kafka clients treat a certificate they cannot verify and a refused SASL
login like an unreachable broker: aiokafka logs ``Unable connect`` and keeps
retrying, and a worker configured with a wrong password or the wrong CA
would wait forever with nothing naming the setting at fault.
:func:`probe_access` makes one connection the way every client of the
worker will (:class:`~ves_streams.runtime.kafka.KafkaConnection`): first the
TLS handshake with the configured CA and hostname verification, then the
SASL login, and raises :class:`KafkaAccessError` with one line that names
the ``VES_STREAMS_*`` setting and the broker, never the password.

A broker that does not answer at all is not an access error: the worker
waits for it (:mod:`ves_streams.broker_wait`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

from aiokafka.errors import KafkaError

from ves_streams.runtime.kafka import KafkaConnection
from ves_streams.secret import scrub

__all__ = ["KafkaAccessError", "probe_access"]


class KafkaAccessError(Exception):
    """The broker answered but refused this worker's trust or credentials; the message names the setting."""


async def probe_access(connection: KafkaConnection, *, timeout: float = 15.0) -> bool:
    """Check trust and credentials against the first bootstrap server that answers.

    Returns True when a broker accepted them, False when none answered within
    ``timeout`` (the caller's waiting takes over). Raises
    :class:`KafkaAccessError` when a broker answered and refused.
    """
    security = connection.security
    if connection.plaintext:
        return True
    context = security.ssl_context()
    for host, port in connection.addresses:
        if context is not None:
            try:
                _reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port, ssl=context, server_hostname=host), timeout
                )
            except ssl.SSLCertVerificationError as exc:
                raise KafkaAccessError(
                    f"VES_STREAMS_KAFKA_SSL_CAFILE: the certificate of the Kafka broker at {host}:{port} was not "
                    f"verified with {security.ssl_cafile or 'the system CAs'}: {exc.verify_message}"
                ) from None
            except (OSError, asyncio.TimeoutError):
                continue  # not answering (or not TLS at all): the next one, then the caller's wait
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        if not security.sasl_mechanism:
            return True
        try:
            conn = await asyncio.wait_for(_login(connection, host, port, timeout), timeout)
        except KafkaError as exc:
            if _refused_login(exc):
                raise KafkaAccessError(
                    f"VES_STREAMS_KAFKA_PASSWORD (or VES_STREAMS_KAFKA_USERNAME): the Kafka broker at {host}:{port} "
                    f"refused the {security.sasl_mechanism} login of user {security.sasl_plain_username!r}: "
                    f"{scrub(_reason(exc), connection.secrets())}"
                ) from None
            continue
        except (OSError, asyncio.TimeoutError):
            continue
        conn.close()
        return True
    return False


async def _login(connection: KafkaConnection, host: str, port: int, timeout: float) -> Any:
    from aiokafka.conn import create_conn

    return await create_conn(host, port, request_timeout_ms=int(timeout * 1000), **connection.client_kwargs())


def _refused_login(exc: KafkaError) -> bool:
    from aiokafka.errors import AuthenticationFailedError, IllegalSaslStateError, SaslAuthenticationFailed

    return isinstance(exc, (SaslAuthenticationFailed, AuthenticationFailedError, IllegalSaslStateError))


def _reason(exc: KafkaError) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
