"""Everything the sink needs, in one frozen object checked once at construction.

:class:`SinkConfig` groups the settings by who uses them: the Kafka side
(flat: servers, group, topics, :class:`KafkaSecurity`), the collector
(:class:`CollectorConfig`: URLs, credentials, TLS, timeouts, VES version),
batching (:class:`~ves_streams.sink.batching.BatchLimits`) and retries
(:class:`~ves_streams.sink.retry.RetryPolicy`). Every invalid value raises
:class:`~ves_streams.sink.errors.SinkConfigError` naming the setting.

Secrets (the collector password, a SASL password) are :class:`Secret`: their
``repr``/``str`` are ``'***'``, so a config can be printed or logged whole.
URLs must not carry credentials (``https://user:pw@host``): they are
refused, with the URL scrubbed, so credentials only ever live in
:class:`Secret`.

:meth:`SinkConfig.from_settings` maps the project's settings object
(``ves_streams.settings``) onto this one; it reads attributes only, never the
environment.
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import orjson

from ves_streams.runtime.kafka import KafkaConnection, KafkaSecurity
from ves_streams.secret import Secret
from ves_streams.sink.batching import BatchLimits
from ves_streams.sink.concurrency import ConcurrencyLimits
from ves_streams.sink.errors import SinkConfigError, scrub_url
from ves_streams.sink.retry import RetryPolicy

__all__ = [
    "DEFAULT_DLQ_TOPIC",
    "DEFAULT_EVENTS_TOPIC",
    "CollectorConfig",
    "KafkaSecurity",
    "Secret",
    "SinkConfig",
    "VesVersion",
]

DEFAULT_EVENTS_TOPIC = "ves-events"
DEFAULT_DLQ_TOPIC = "ves-events-dlq"

VesVersion = Literal["5", "7"]

#: a listener path at the end of a collector URL: ``/eventListener[/vN[.m][/eventBatch | /{topic}]]``
_LISTENER_SUFFIX = re.compile(r"/eventListener(?:/v(?P<version>[0-9][0-9.]*)(?:/(?P<rest>[^/]+))?)?/?$")


def _secret(value: Secret | str | None) -> Secret | None:
    if value is None or isinstance(value, Secret):
        return value
    return Secret(value) if value else None


def _normalize_version(value: object) -> VesVersion:
    text = str(value).strip().lower().lstrip("v")
    major = text.split(".", 1)[0]
    if major == "5":
        return "5"
    if major == "7":
        return "7"
    raise SinkConfigError(f"VES version {value!r} is not supported by the sink: use 7 or 5")


def _listener_parts(url: str) -> tuple[str, str | None, str | None]:
    """``url`` without its listener path, the path's VES version (None if absent) and topic (None if absent)."""
    trimmed = url.rstrip("/")
    match = _LISTENER_SUFFIX.search(trimmed)
    if match is None:
        return trimmed, None, None
    rest = match.group("rest")
    return trimmed[: match.start()], match.group("version"), rest if rest and rest != "eventBatch" else None


def _base_url(setting: str, url: str) -> str:
    """Check a collector URL and strip any event-listener path the user included."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SinkConfigError(f"{setting} {scrub_url(url)!r}: must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise SinkConfigError(
            f"{setting} {scrub_url(url)!r}: must not contain credentials; "
            "set VES_STREAMS_COLLECTOR_USERNAME and VES_STREAMS_COLLECTOR_PASSWORD instead"
        )
    if parts.query or parts.fragment:
        raise SinkConfigError(f"{setting} {url!r}: must not have a query or fragment")
    return _listener_parts(url)[0]


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    """Where and how the sink talks HTTP(S) to the VES collector.

    ``url`` is the collector's base URL (``https://ves.example:8443``, or
    with a path prefix); the sink appends ``/eventListener/v7[/eventBatch]``.
    A URL may carry the full listener path instead: ``.../eventListener/v7``,
    ``.../eventListener/v7/eventBatch``, or Barometer's
    ``{Path}/eventListener/v5/{Topic}``, whose topic then ends the URL of
    every single-event request (batches go to ``.../eventBatch``). A
    version in the URL must agree with ``ves_version`` (refused otherwise,
    naming both). ``ca_bundle`` verifies the server (system trust store
    when None); ``client_cert``/``client_key`` enable mutual TLS.
    """

    url: str
    backup_url: str | None = None
    username: str | None = None
    password: Secret | None = field(default=None, repr=False)
    ca_bundle: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    #: Seconds to wait for the collector's answer (read timeout).
    timeout: float = 10.0
    #: Seconds to wait for the TCP/TLS connection.
    connect_timeout: float = 5.0
    ves_version: VesVersion = "7"
    #: the topic of a Barometer-style URL (``/eventListener/v5/{topic}``) per base URL; set from the URLs
    topics: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "ves_version", _normalize_version(self.ves_version))
        topics: list[tuple[str, str]] = []
        for attribute, setting in (
            ("url", "collector URL (VES_STREAMS_COLLECTOR_URL)"),
            ("backup_url", "collector backup URL (VES_STREAMS_COLLECTOR_BACKUP_URL)"),
        ):
            value = getattr(self, attribute)
            if not value:
                object.__setattr__(self, attribute, None)
                continue
            base = _base_url(setting, value)
            _, version, topic = _listener_parts(value)
            if version is not None and _normalize_version(version) != self.ves_version:
                raise SinkConfigError(
                    f"{setting} {scrub_url(value)!r} names VES version v{version}, but the sink sends VES "
                    f"{self.ves_version} (VES_STREAMS_VES_VERSION, or the topology's ves_version): make them agree"
                )
            if topic is not None:
                topics.append((base, topic))
            object.__setattr__(self, attribute, base)
        object.__setattr__(self, "topics", tuple(topics))
        object.__setattr__(self, "password", _secret(self.password))
        if self.password is not None and not self.username:
            raise SinkConfigError(
                "collector password is set but the username is not (VES_STREAMS_COLLECTOR_USERNAME)"
            )
        if self.client_key and not self.client_cert:
            raise SinkConfigError("collector client key is set without a client cert (VES_STREAMS_COLLECTOR_CLIENT_CERT)")
        for name, value in (("timeout", self.timeout), ("connect timeout", self.connect_timeout)):
            if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise SinkConfigError(f"collector {name} must be a positive number of seconds, got {value!r}")

    def batch_url(self, base: str) -> str:
        """The eventBatch URL on ``base`` (the primary or the backup)."""
        return f"{base}/eventListener/v{self.ves_version}/eventBatch"

    def single_url(self, base: str) -> str:
        """The single-event URL on ``base`` (ending in its topic when the configured URL had one)."""
        topic = dict(self.topics).get(base)
        return f"{base}/eventListener/v{self.ves_version}" + (f"/{topic}" if topic else "")

    def secrets(self) -> tuple[str, ...]:
        """Strings to mask in anything the collector echoes: the password, and every form it travels in.

        The username is not secret, but ``user:password`` is what Basic auth
        sends, base64-encoded (RFC 7617): a collector or proxy that echoes
        the ``Authorization`` header echoes that, so it is masked too, as
        are the password JSON-escaped and percent-encoded.
        """
        if self.password is None:
            return ()
        password = self.password.reveal()
        basic = base64.b64encode(f"{self.username or ''}:{password}".encode("utf-8")).decode("ascii")
        forms = (password, basic, orjson.dumps(password).decode("utf-8")[1:-1], quote(password, safe=""))
        return tuple(dict.fromkeys(form for form in forms if form))


@dataclass(frozen=True, slots=True)
class SinkConfig:
    """The sink's whole configuration; see the module docstring.

    ``group_id`` defaults to ``<app id>-sink`` when built by
    :meth:`from_settings`; it is a consumer group of its own, so delivery
    lags and scales independently of processing.
    """

    bootstrap_servers: str
    collector: CollectorConfig
    group_id: str = "ves-streams-sink"
    events_topic: str = DEFAULT_EVENTS_TOPIC
    dlq_topic: str = DEFAULT_DLQ_TOPIC
    batching: BatchLimits = field(default_factory=BatchLimits)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    concurrency: ConcurrencyLimits = field(default_factory=ConcurrencyLimits)
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    #: Where a new consumer group starts: "earliest" so events produced before the sink first ran are delivered.
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    #: The consumer's group session timeout (a dead sink's partitions move after this long).
    session_timeout_ms: int = 10_000
    #: aiokafka's max.poll.interval.ms; the sink polls (paused) while it waits, so an outage never expires it.
    max_poll_interval_ms: int = 300_000
    #: Each event checked against its VES schema before it leaves (``VES_STREAMS_SINK_VALIDATE``).
    validate: bool = True

    def __post_init__(self) -> None:
        if not self.bootstrap_servers:
            raise SinkConfigError("Kafka bootstrap servers (VES_STREAMS_BROKER) must not be empty")
        if not self.group_id:
            raise SinkConfigError("sink consumer group id must not be empty")
        if not self.events_topic or not self.dlq_topic:
            raise SinkConfigError("sink events topic and DLQ topic must not be empty")
        if self.events_topic == self.dlq_topic:
            raise SinkConfigError(f"sink DLQ topic must differ from the events topic ({self.events_topic!r})")
        if self.auto_offset_reset not in ("earliest", "latest"):
            raise SinkConfigError(f"sink auto_offset_reset must be earliest or latest, got {self.auto_offset_reset!r}")

    def secrets(self) -> tuple[str, ...]:
        """Every secret string, for scrubbing messages."""
        return self.collector.secrets() + self.kafka_security.secrets()

    @classmethod
    def from_settings(cls, settings: Any) -> SinkConfig:
        """Build the sink's config from :class:`ves_streams.settings.Settings` (attributes only, no environment).

        Attributes read (a missing or None one keeps this class's default;
        ``collector_url`` is required): ``app_id`` (group ``<app_id>-sink``),
        ``bootstrap_servers`` (or ``broker``), ``ves_events_topic``,
        ``ves_events_dlq_topic``, ``collector_url``, ``collector_backup_url``,
        ``collector_username``, ``collector_password``,
        ``collector_ca_bundle``, ``collector_client_cert``,
        ``collector_client_key``, ``collector_timeout``, ``ves_version``,
        ``session_timeout``, ``sink_batching``, ``sink_batch_max_events``,
        ``sink_batch_max_bytes``, ``sink_linger_ms``, ``sink_retry_max``
        (retries after the first attempt; 0 = forever),
        ``sink_retry_initial_backoff``, ``sink_retry_max_backoff``,
        ``sink_max_concurrency``, ``kafka_security_protocol``, ``kafka_sasl_mechanism``,
        ``kafka_sasl_username``, ``kafka_sasl_password``,
        ``kafka_ssl_cafile``, ``kafka_ssl_certfile``, ``kafka_ssl_keyfile``.
        """

        def get(name: str, default: Any = None) -> Any:
            value = getattr(settings, name, None)
            return default if value is None else value

        url = get("collector_url")
        if not url:
            raise SinkConfigError("collector URL (VES_STREAMS_COLLECTOR_URL) is not set")
        batch_defaults = BatchLimits()
        retry_defaults = RetryPolicy()
        collector_defaults_timeout = 10.0
        app_id = get("app_id", "ves-streams")
        return cls(
            bootstrap_servers=_servers(get("bootstrap_servers") or get("broker", "")),
            group_id=f"{app_id}-sink",
            events_topic=get("ves_events_topic", DEFAULT_EVENTS_TOPIC),
            dlq_topic=get("ves_events_dlq_topic", DEFAULT_DLQ_TOPIC),
            collector=CollectorConfig(
                url=str(url),
                backup_url=_opt_str(get("collector_backup_url")),
                username=_opt_str(get("collector_username")),
                password=_revealed(get("collector_password")),
                ca_bundle=_opt_str(get("collector_ca_bundle")),
                client_cert=_opt_str(get("collector_client_cert")),
                client_key=_opt_str(get("collector_client_key")),
                timeout=float(get("collector_timeout", collector_defaults_timeout)),
                ves_version=get("ves_version", "7"),
            ),
            batching=BatchLimits(
                enabled=bool(get("sink_batching", batch_defaults.enabled)),
                max_events=int(get("sink_batch_max_events", batch_defaults.max_events)),
                max_bytes=int(get("sink_batch_max_bytes", batch_defaults.max_bytes)),
                linger_ms=int(get("sink_linger_ms", batch_defaults.linger_ms)),
            ),
            retry=RetryPolicy(
                initial_backoff=float(get("sink_retry_initial_backoff", retry_defaults.initial_backoff)),
                max_backoff=float(get("sink_retry_max_backoff", retry_defaults.max_backoff)),
                max_attempts=_attempts(int(get("sink_retry_max", 0))),
            ),
            concurrency=ConcurrencyLimits(maximum=int(get("sink_max_concurrency", ConcurrencyLimits().maximum))),
            session_timeout_ms=int(float(get("session_timeout", 10.0)) * 1000),
            max_poll_interval_ms=int(float(get("max_poll_interval", 300.0)) * 1000),
            kafka_security=KafkaSecurity.from_settings(settings),
            validate=bool(get("sink_validate", True)),
        )


def _revealed(value: Any) -> Secret | None:
    """A settings secret (ours, pydantic's, or a plain string) as this module's :class:`Secret`."""
    if value is None:
        return None
    if hasattr(value, "reveal"):
        value = value.reveal()
    elif hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    return _secret(str(value))


def _attempts(retries: int) -> int:
    """``VES_STREAMS_SINK_RETRY_MAX`` counts retries; the policy counts attempts (0 stays "forever")."""
    return retries + 1 if retries > 0 else 0


def _opt_str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def _servers(value: Any) -> str:
    """``"a:9092,b:9092"``, a list of servers, or a ``kafka://`` URL (Faust's form) -> ``"a:9092,b:9092"``."""
    text = ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
    if not text.replace(";", "").replace(",", "").strip():
        return ""  # refused by SinkConfig, naming VES_STREAMS_BROKER
    return KafkaConnection.parse(text).bootstrap_servers
