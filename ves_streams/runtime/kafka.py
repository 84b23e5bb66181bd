"""One Kafka connection for every client of a process: the broker list parsed once, security built once.

A worker runs several Kafka clients: Faust's own (the measurements agent,
its tables and producer), the stage loops' and the sink's aiokafka clients,
and the tools (relay, replay, bench). :class:`KafkaConnection` is what they
are all built from, so that a secured cluster is reached the same way by
each, and the broker string (``kafka://h1:9092;h2:9092``, ``h1:9092,h2``)
is read in one place. Passwords are :class:`~ves_streams.secret.Secret`
and never show in ``repr``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any

from ves_streams.secret import Secret

__all__ = ["KafkaConfigError", "KafkaConnection", "KafkaSecurity", "parse_broker"]


class KafkaConfigError(ValueError):
    """A Kafka connection setting is invalid; the message names it."""


def parse_broker(broker: str) -> tuple[tuple[str, int], ...]:
    """``kafka://h1:9092;h2:9092`` (or ``h1:9092,h2:9092``, ports optional) as ``((host, port), ...)``."""
    out = []
    for part in str(broker).replace(";", ",").split(","):
        part = part.strip().removeprefix("kafka://")
        if not part:
            continue
        host, sep, port = part.rpartition(":")
        if not sep:  # no port given: Kafka's default
            host, port = part, ""
        if port and not port.isdigit():
            raise KafkaConfigError(f"Kafka broker {part!r}: the port must be a number (VES_STREAMS_BROKER)")
        out.append((host or "localhost", int(port) if port else 9092))
    if not out:
        raise KafkaConfigError("Kafka bootstrap servers (VES_STREAMS_BROKER) must not be empty")
    return tuple(out)


def _as_secret(value: Any) -> Secret | None:
    """A settings secret (ours, pydantic's, or a plain string) as a :class:`Secret`; empty is None."""
    if value is None or isinstance(value, Secret):
        return value
    if hasattr(value, "reveal"):
        value = value.reveal()
    elif hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    return Secret(str(value)) if str(value) else None


def _opt_str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """Kafka client security options, passed through to aiokafka (consumer and DLQ producer).

    ``security_protocol`` is one of PLAINTEXT, SSL, SASL_PLAINTEXT,
    SASL_SSL; the ``ssl_*`` files build the client's SSL context.
    """

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: Secret | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sasl_plain_password", _as_secret(self.sasl_plain_password))
        allowed = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
        if self.security_protocol not in allowed:
            raise KafkaConfigError(f"Kafka security protocol {self.security_protocol!r}: use one of {', '.join(allowed)}")

    @classmethod
    def from_settings(cls, settings: Any) -> KafkaSecurity:
        """From :class:`ves_streams.settings.Settings` attributes (``kafka_*``; a missing one keeps the default).

        Shared by every aiokafka client the project runs beside Faust's own
        (the sink's, the stage loops'), so they all reach the same secured cluster.
        """

        def get(name: str, default: Any = None) -> Any:
            value = getattr(settings, name, None)
            return default if value is None else value

        return cls(
            security_protocol=str(get("kafka_security_protocol", "PLAINTEXT")),
            sasl_mechanism=_opt_str(get("kafka_sasl_mechanism")),
            sasl_plain_username=_opt_str(get("kafka_sasl_username")),
            sasl_plain_password=_as_secret(get("kafka_sasl_password")),
            ssl_cafile=_opt_str(get("kafka_ssl_cafile")),
            ssl_certfile=_opt_str(get("kafka_ssl_certfile")),
            ssl_keyfile=_opt_str(get("kafka_ssl_keyfile")),
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context (CA file, optional client certificate) for SSL and SASL_SSL; None otherwise."""
        if self.security_protocol not in ("SSL", "SASL_SSL"):
            return None
        context = ssl.create_default_context(cafile=self.ssl_cafile)
        if self.ssl_certfile:
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        return context

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``AIOKafkaConsumer``/``AIOKafkaProducer``."""
        kwargs: dict[str, Any] = {"security_protocol": self.security_protocol}
        context = self.ssl_context()
        if context is not None:
            kwargs["ssl_context"] = context
        if self.sasl_mechanism:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
        if self.sasl_plain_username is not None:
            kwargs["sasl_plain_username"] = self.sasl_plain_username
        if self.sasl_plain_password is not None:
            kwargs["sasl_plain_password"] = self.sasl_plain_password.reveal()
        return kwargs

    def secrets(self) -> tuple[str, ...]:
        return (self.sasl_plain_password.reveal(),) if self.sasl_plain_password is not None else ()




@dataclass(frozen=True, slots=True)
class KafkaConnection:
    """Where the cluster is and how to talk to it; every client of the process is built from this."""

    addresses: tuple[tuple[str, int], ...]
    security: KafkaSecurity = field(default_factory=KafkaSecurity)

    @classmethod
    def from_settings(cls, settings: Any, broker: str | None = None) -> KafkaConnection:
        """From :class:`ves_streams.settings.Settings` (``broker`` and the ``kafka_*`` security settings).

        ``broker`` (a command's ``--broker`` flag) wins over the settings' broker; the security is theirs.
        """
        return cls(parse_broker(broker or settings.broker), KafkaSecurity.from_settings(settings))

    @classmethod
    def parse(cls, broker: str, security: KafkaSecurity | None = None) -> KafkaConnection:
        return cls(parse_broker(broker), security or KafkaSecurity())

    @property
    def bootstrap_servers(self) -> str:
        """``h1:9092,h2:9092``, the form Kafka clients take."""
        return ",".join(f"{host}:{port}" for host, port in self.addresses)

    @property
    def faust_broker(self) -> str:
        """``kafka://h1:9092;h2:9092``, the form Faust's ``broker`` setting takes."""
        return "kafka://" + ";".join(f"{host}:{port}" for host, port in self.addresses)

    @property
    def plaintext(self) -> bool:
        """No TLS and no SASL: a plain client can list the brokers before the real clients start."""
        return self.security.security_protocol == "PLAINTEXT"

    def client_kwargs(self) -> dict[str, Any]:
        """Security keyword arguments for ``AIOKafkaConsumer``/``AIOKafkaProducer``/the admin client."""
        return self.security.client_kwargs()

    def faust_credentials(self) -> Any:
        """Faust's ``broker_credentials`` for the same security (None for plaintext)."""
        import faust

        sec = self.security
        context = sec.ssl_context()
        if sec.sasl_mechanism:
            if sec.sasl_plain_username is None or sec.sasl_plain_password is None:
                raise KafkaConfigError("VES_STREAMS_KAFKA_USERNAME: SASL needs a username and a password")
            return faust.SASLCredentials(
                username=sec.sasl_plain_username,
                password=sec.sasl_plain_password.reveal(),
                ssl_context=context,
                mechanism=sec.sasl_mechanism,
            )
        if context is not None:
            return faust.SSLCredentials(context)
        return None

    def secrets(self) -> tuple[str, ...]:
        """Strings to mask in any message (the SASL password)."""
        return self.security.secrets()
