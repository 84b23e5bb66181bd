"""Worker settings: one frozen object, read once at start, from the environment.

Precedence, highest first:

1. ``VES_STREAMS_*`` environment variables;
2. the topology file's header (``topology.header``: topic names, interval,
   VES version and the ``sink`` mapping), applied with
   :meth:`Settings.with_topology_header`;
3. the built-in defaults below.

So an operator can always override what a topology file suggests, and a
topology file can carry sensible defaults for the deployment it was written
for. ``VES_STREAMS_HEARTBEAT_INTERVAL`` overrides the topology's heartbeat
interval, both how often heartbeats are sent and the interval they state. Every value is checked when the worker starts: an invalid one raises
:class:`SettingsError` whose message starts with the variable's name, e.g.
``VES_STREAMS_INTERVAL: must be a positive number of seconds, got 'abc'``.

Secrets (the collector and Kafka passwords) are :class:`Secret` values: their
``repr``/``str`` never show the value, so printing or logging the settings
object is safe. Call :meth:`Secret.reveal` where the value is really needed.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit

from ves_streams import resources
from ves_streams.secret import Secret

__all__ = [
    "ProcessingGuarantee",
    "Role",
    "Secret",
    "Settings",
    "SettingsError",
]

PREFIX = "VES_STREAMS_"

T = TypeVar("T")


class SettingsError(ValueError):
    """An invalid setting; the message names it and says what is expected."""


class Role(str, enum.Enum):
    """What a worker does: everything, rules only, or HTTP delivery only."""

    ALL = "all"
    PROCESS = "process"
    SINK = "sink"

    @property
    def processes(self) -> bool:
        return self in (Role.ALL, Role.PROCESS)

    @property
    def sinks(self) -> bool:
        return self in (Role.ALL, Role.SINK)


class ProcessingGuarantee(str, enum.Enum):
    AT_LEAST_ONCE = "at_least_once"
    EXACTLY_ONCE = "exactly_once"


# --------------------------------------------------------------------------
# parsers: raw string -> value, or SettingsError naming the setting


def _fail(name: str, expected: str, raw: str) -> SettingsError:
    return SettingsError(f"{name}: {expected}, got {raw!r}")


def _positive_seconds(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise _fail(name, "must be a positive number of seconds", raw) from None
    if not math.isfinite(value) or value <= 0:
        raise _fail(name, "must be a positive number of seconds", raw)
    return value


def _non_negative_seconds(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise _fail(name, "must be a number of seconds (0 or more)", raw) from None
    if not math.isfinite(value) or value < 0:
        raise _fail(name, "must be a number of seconds (0 or more)", raw)
    return value


def _int_in(low: int, high: int | None, what: str) -> Callable[[str, str], int]:
    expected = f"must be {what}"

    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise _fail(name, expected, raw) from None
        if value < low or (high is not None and value > high):
            raise _fail(name, expected, raw)
        return value

    return parse


_BOOL = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _bool(name: str, raw: str) -> bool:
    try:
        return _BOOL[raw.strip().lower()]
    except KeyError:
        raise _fail(name, "must be on/off (true/false, 1/0, yes/no)", raw) from None


def _enum(cls: type[enum.Enum]) -> Callable[[str, str], Any]:
    choices = [m.value for m in cls]  # type: ignore[var-annotated]

    def parse(name: str, raw: str) -> Any:
        try:
            return cls(raw.strip().lower())
        except ValueError:
            raise _fail(name, f"must be one of {', '.join(choices)}", raw) from None

    return parse


def _http_url(name: str, raw: str) -> str:
    value = raw.strip()
    try:
        parts = urlsplit(value)
        hostname, password = parts.hostname, parts.password
    except ValueError:
        raise _fail(name, "must be an http:// or https:// URL", re.sub(r"//[^/@]*@", "//***@", raw)) from None
    if password or "@" in parts.netloc:
        raise SettingsError(f"{name}: must not carry credentials (use VES_STREAMS_COLLECTOR_USERNAME/_PASSWORD)")
    if parts.scheme not in ("http", "https") or not hostname:
        raise _fail(name, "must be an http:// or https:// URL", raw)
    return value.rstrip("/")


_HOST_PORT = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


def _broker(name: str, raw: str) -> str:
    """``kafka://h1:9092;h2:9092``, ``h1:9092,h2:9092`` -> Faust's ``kafka://h1:9092;h2:9092``."""
    value = raw.strip()
    servers = []
    for part in re.split(r"[;,]", value):
        part = part.strip()
        if not part:
            continue
        if "://" in part:
            scheme, _, part = part.partition("://")
            if scheme != "kafka":
                raise _fail(name, "must be kafka://host:port[;host:port...] or host:port[,host:port...]", raw)
        part = part.rstrip("/")
        if not _HOST_PORT.match(part):
            raise _fail(name, "must be kafka://host:port[;host:port...] or host:port[,host:port...]", raw)
        servers.append(part)
    if not servers:
        raise _fail(name, "must be kafka://host:port[;host:port...] or host:port[,host:port...]", raw)
    return "kafka://" + ";".join(servers)


_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def _topic_name(name: str, raw: str) -> str:
    value = raw.strip()
    if not _TOPIC.match(value) or value in (".", ".."):
        raise _fail(name, "must be a Kafka topic name (letters, digits, '.', '_', '-')", raw)
    return value


def _app_id(name: str, raw: str) -> str:
    value = _topic_name(name, raw)
    if len(value) > 200:
        raise _fail(name, "must be at most 200 characters (it prefixes topic names)", raw)
    return value


def _text(name: str, raw: str) -> str:
    value = raw.strip()
    if not value:
        raise _fail(name, "must not be empty", raw)
    return value


def _secret(name: str, raw: str) -> Secret:
    if not raw:
        raise SettingsError(f"{name}: must not be empty")
    return Secret(raw)


def _existing_file(name: str, raw: str) -> Path:
    path = Path(raw.strip()).expanduser()
    if not path.is_file():
        raise _fail(name, "must name an existing file", raw)
    return path


def _directory(name: str, raw: str) -> Path:
    value = raw.strip()
    if not value:
        raise _fail(name, "must be a directory path", raw)
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise _fail(name, "must be a directory (it exists and is not one)", raw)
    return path


def _topology_path(name: str, raw: str) -> Path:
    """A topology file.

    A relative path resolves against the current directory, then (in a
    source checkout) the repository root, then names a shipped topology as
    ``ves-streams topologies`` lists them (``guest.yaml``, ``ves5/host.yaml``;
    ``topologies/guest.yaml`` too), so the same value works in a checkout and
    in an installed wheel.
    """
    value = raw.strip()
    if not value:
        raise _fail(name, "must name a topology YAML file", raw)
    path = Path(value).expanduser()
    if path.is_absolute():
        if path.is_file():
            return path.resolve()
        raise _fail(name, "must name an existing topology file", raw)
    checkout = resources.checkout_dir()
    places = ["the current directory"]
    candidates = [Path.cwd() / path]
    if checkout is not None:
        candidates.append(checkout / path)
        places.append("the repository")
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    shipped = resources.shipped_topology(value)
    if shipped is not None:
        return shipped
    places.append("the shipped topologies")
    looked = ", ".join(places[:-1]) + " and " + places[-1]
    raise _fail(name, f"must name an existing topology file (looked in {looked}; `ves-streams topologies` lists "
                "the shipped ones)", raw)  # fmt: skip


def _ves_version(name: str, raw: str) -> str:
    value = raw.strip().lstrip("vV")
    if not re.fullmatch(r"[57](\.\d+){0,2}", value):
        raise _fail(name, "must be a VES version such as 7.2.1 or 5.4.1", raw)
    return value


_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


#: Kafka's security protocols, as ``VES_STREAMS_KAFKA_SECURITY_PROTOCOL`` takes them.
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


def _kafka_security_protocol(name: str, raw: str) -> str:
    value = raw.strip().upper()
    if value not in KAFKA_SECURITY_PROTOCOLS:
        raise _fail(name, f"must be one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}", raw)
    return value


def _sasl_mechanism(name: str, raw: str) -> str:
    value = raw.strip().upper()
    if value not in _SASL_MECHANISMS:
        raise _fail(name, f"must be one of {', '.join(_SASL_MECHANISMS)}", raw)
    return value


# --------------------------------------------------------------------------
# the settings object


def _env(name: str, parse: Callable[[str, str], Any], *, header: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    headers = (header,) if isinstance(header, str) else header
    return {"env": PREFIX + name, "parse": parse, "header": headers}


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a worker (processing or sink) is configured with.

    Build it with :meth:`from_env`; never construct it field by field in
    production code. ``explicit`` records which variables were set in the
    environment so that :meth:`with_topology_header` never overrides them.
    """

    broker: str = field(default="kafka://localhost:9092", metadata=_env("BROKER", _broker))
    collector_url: str = field(default="http://localhost:30000", metadata=_env("COLLECTOR_URL", _http_url, header="sink.url"))
    collector_backup_url: str | None = field(
        default=None, metadata=_env("COLLECTOR_BACKUP_URL", _http_url, header="sink.backup_url")
    )
    collector_username: str | None = field(default=None, metadata=_env("COLLECTOR_USERNAME", _text))
    collector_password: Secret | None = field(default=None, metadata=_env("COLLECTOR_PASSWORD", _secret))
    # The notification relay's bearer token (ves-streams relay; collectd's write_http sends it)
    relay_token: Secret | None = field(default=None, metadata=_env("RELAY_TOKEN", _secret))
    # Basic credentials to an http:// collector cross the network in clear: refused unless this says so
    collector_basic_over_http: bool = field(
        default=False, metadata=_env("COLLECTOR_ALLOW_BASIC_OVER_HTTP", _bool)
    )
    collector_ca_bundle: Path | None = field(default=None, metadata=_env("COLLECTOR_CA_BUNDLE", _existing_file))
    collector_client_cert: Path | None = field(default=None, metadata=_env("COLLECTOR_CLIENT_CERT", _existing_file))
    collector_client_key: Path | None = field(default=None, metadata=_env("COLLECTOR_CLIENT_KEY", _existing_file))
    collector_timeout: float = field(
        default=10.0, metadata=_env("COLLECTOR_TIMEOUT", _positive_seconds, header="sink.timeout")
    )

    #: Default: the shipped ``host.yaml`` (:func:`ves_streams.resources.default_topology`).
    topology: Path = field(default_factory=resources.default_topology, metadata=_env("TOPOLOGY", _topology_path))
    interval: float = field(default=10.0, metadata=_env("INTERVAL", _positive_seconds, header="interval"))
    #: Environment only: ``None`` means the topology's own (its header's
    #: ``heartbeat_interval``, else its ``interval``, else :attr:`interval`).
    heartbeat_interval: float | None = field(default=None, metadata=_env("HEARTBEAT_INTERVAL", _positive_seconds))

    app_id: str = field(default="ves-streams", metadata=_env("APP_ID", _app_id))
    role: Role = field(default=Role.ALL, metadata=_env("ROLE", _enum(Role)))
    processing_guarantee: ProcessingGuarantee = field(
        default=ProcessingGuarantee.AT_LEAST_ONCE, metadata=_env("PROCESSING_GUARANTEE", _enum(ProcessingGuarantee))
    )
    data_dir: Path = field(default=Path("ves-streams-data"), metadata=_env("DATA_DIR", _directory))
    web_port: int = field(default=6066, metadata=_env("WEB_PORT", _int_in(1, 65535, "a TCP port (1-65535)")))
    # The name other workers reach this one's web server by (GET /hosts/{name} forwards there);
    # None: the machine's hostname (Faust's default). On Kubernetes: the pod's DNS name.
    web_host: str | None = field(default=None, metadata=_env("WEB_HOST", _text))
    # The address the web server listens on; None: the address web_host (else the hostname) resolves
    # to, the pod's on Kubernetes, never every interface unless said ("0.0.0.0")
    web_bind: str | None = field(default=None, metadata=_env("WEB_BIND", _text))
    # Bearer token /hosts and /alarms ask for (probes and /metrics stay open); None: no token asked
    web_token: Secret | None = field(default=None, metadata=_env("WEB_TOKEN", _secret))
    partitions: int = field(default=4, metadata=_env("PARTITIONS", _int_in(1, 10_000, "a whole number of partitions (1 or more)")))
    replication: int = field(default=1, metadata=_env("REPLICATION", _int_in(1, 100, "a replication factor (1 or more)")))
    # 0, Kafka Streams' default: a Faust standby applies the other workers'
    # changelog record by record (two workers: ~4x the CPU per value list,
    # bench). A takeover restores the partition from the changelog instead
    # (worker-kill drill: no window missed). The one loss once seen with 0 was a
    # notification in a Faust agent at takeover; notifications have left Faust.
    standby_replicas: int = field(
        default=0, metadata=_env("STANDBY_REPLICAS", _int_in(0, 100, "a whole number of standby replicas (0 or more)"))
    )
    session_timeout: float = field(
        default=10.0, metadata=_env("KAFKA_SESSION_TIMEOUT", _positive_seconds)
    )
    # aiokafka's max.poll.interval.ms for the stage loops and the sink. They poll
    # (partitions paused) while a produce or a delivery waits, so an outage never
    # expires it; the drills set it low to prove that.
    max_poll_interval: float = field(
        default=300.0, metadata=_env("KAFKA_MAX_POLL_INTERVAL", _positive_seconds)
    )

    values_topic: str = field(default="collectd", metadata=_env("VALUES_TOPIC", _topic_name, header="values_topic"))
    notifications_topic: str = field(
        default="collectd-notifications",
        metadata=_env("NOTIFICATIONS_TOPIC", _topic_name, header="notifications_topic"),
    )
    events_topic: str = field(default="ves-events", metadata=_env("EVENTS_TOPIC", _topic_name, header="events_topic"))
    dlq_topic: str = field(default="ves-streams-dlq", metadata=_env("DLQ_TOPIC", _topic_name))
    events_dlq_topic: str = field(default="ves-events-dlq", metadata=_env("EVENTS_DLQ_TOPIC", _topic_name))

    hostname: str = field(default="", metadata=_env("HOSTNAME", _text))
    ves_version: str = field(default="7.2.1", metadata=_env("VES_VERSION", _ves_version, header="ves_version"))
    # Faults as alarms (VES 7.2: one eventId from raise to clear, stages/alarms.py); None: on for
    # VES 7.x, off for 5.x (see alarms_kept)
    alarm_lifecycle: bool | None = field(
        default=None, metadata=_env("ALARM_LIFECYCLE", _bool, header="alarm_lifecycle")
    )

    kafka_sasl_mechanism: str | None = field(default=None, metadata=_env("KAFKA_SASL_MECHANISM", _sasl_mechanism))
    kafka_sasl_username: str | None = field(default=None, metadata=_env("KAFKA_USERNAME", _text))
    kafka_sasl_password: Secret | None = field(default=None, metadata=_env("KAFKA_PASSWORD", _secret))
    kafka_ssl_cafile: Path | None = field(default=None, metadata=_env("KAFKA_SSL_CAFILE", _existing_file))
    # Explicit only where it cannot be told from the rest: SASL without a CA file must say SASL_PLAINTEXT
    # (the password crosses the network in clear with PLAIN) or SASL_SSL (the system's CAs)
    kafka_protocol: str | None = field(
        default=None, metadata=_env("KAFKA_SECURITY_PROTOCOL", _kafka_security_protocol)
    )

    sink_batching: bool = field(default=True, metadata=_env("SINK_BATCHING", _bool, header="sink.batching"))
    # Each event checked against its VES schema before it leaves (sink/validation.py); off saves its CPU
    sink_validate: bool = field(default=True, metadata=_env("SINK_VALIDATE", _bool))
    sink_batch_max_events: int = field(
        default=100,
        metadata=_env("SINK_BATCH_MAX_EVENTS", _int_in(1, 100_000, "a whole number of events (1 or more)"), header=("sink.batch_max_events", "sink.batch_size")),
    )
    sink_batch_max_bytes: int = field(
        default=1024 * 1024,
        metadata=_env("SINK_BATCH_MAX_BYTES", _int_in(1024, None, "a number of bytes (1024 or more)"), header="sink.batch_max_bytes"),
    )
    # Short: a lone fault event (an alarm) waits this long for company; bursts of
    # measurements fill batches by count long before it runs out.
    sink_linger_ms: int = field(
        default=20, metadata=_env("SINK_LINGER_MS", _int_in(0, 600_000, "milliseconds (0-600000)"), header="sink.linger_ms")
    )
    sink_retry_max: int = field(
        default=0, metadata=_env("SINK_RETRY_MAX", _int_in(0, None, "a whole number of retries (0 = forever)"), header="sink.retry_max")
    )
    sink_retry_initial_backoff: float = field(
        default=0.5, metadata=_env("SINK_RETRY_BACKOFF_INITIAL", _positive_seconds, header="sink.retry_backoff_initial")
    )
    sink_retry_max_backoff: float = field(
        default=30.0, metadata=_env("SINK_RETRY_BACKOFF_MAX", _positive_seconds, header="sink.retry_backoff_max")
    )
    # Requests in flight at most; the sink starts at one and adapts (ves_streams.sink.concurrency).
    # 1 = one request at a time.
    sink_max_concurrency: int = field(
        default=32,
        metadata=_env("SINK_MAX_CONCURRENCY", _int_in(1, 256, "a whole number of requests (1-256)"), header="sink.max_concurrency"),
    )
    # A sink whose every delivery has failed this long answers /ready with 503 (it keeps retrying:
    # readiness tells the orchestrator and the alerts, it stops nothing).
    sink_unready_after: float = field(
        default=60.0, metadata=_env("SINK_UNREADY_AFTER", _positive_seconds)
    )

    #: Environment variables that were set (so the topology header never overrides them).
    explicit: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    #: ``VES_STREAMS_*`` variables that are not settings (likely typos); the
    #: worker logs a warning naming them rather than refusing to start, since
    #: other tools of the project read a few variables of their own.
    unknown: tuple[str, ...] = field(default=(), repr=False, compare=False)

    # ------------------------------------------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read every ``VES_STREAMS_*`` variable.

        An empty variable counts as unset; unrecognised ones are listed in
        :attr:`unknown`. Raises :class:`SettingsError` naming
        the first invalid variable.
        """
        values: dict[str, Any] = {}
        explicit: set[str] = set()
        known = set()
        for f in dataclasses.fields(cls):
            env = f.metadata.get("env")
            if env is None:
                continue
            known.add(env)
            raw = environ.get(env)
            if raw is None or raw.strip() == "":
                continue
            values[f.name] = f.metadata["parse"](env, raw)
            explicit.add(env)
        unknown = tuple(
            sorted(k for k in environ if k.startswith(PREFIX) and k not in known and k not in _NOT_WORKER_SETTINGS)
        )
        if "hostname" not in values:
            values["hostname"] = socket.gethostname() or "localhost"
        settings = cls(**values, explicit=frozenset(explicit), unknown=unknown)
        settings._check_combinations()
        return settings

    def with_topology_header(self, header: Any) -> Settings:
        """Apply a topology header's values to the settings the environment left unset.

        ``header`` is the rule engine's ``topology.header`` (attributes
        ``values_topic``, ``notifications_topic``, ``events_topic``,
        ``interval``, ``ves_version`` and a ``sink``
        mapping) or a plain mapping with the same keys. ``None`` values are
        ignored (a header ``interval: null`` keeps the default). Sink keys
        read: ``url``, ``backup_url``, ``timeout``, ``batching``,
        ``batch_max_events`` (or ``batch_size``), ``batch_max_bytes``,
        ``linger_ms``, ``retry_max``, ``retry_backoff_initial``,
        ``retry_backoff_max``; others are left to the sink.
        """
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            paths = f.metadata.get("header")
            if paths is None or f.metadata["env"] in self.explicit:
                continue
            for path in paths:
                value = _lookup(header, path)
                if value is not None:
                    changes[f.name] = f.metadata["parse"](f"topology header {path}", str(value))
                    break
        if not changes:
            return self
        updated = dataclasses.replace(self, **changes)
        updated._check_combinations()
        return updated

    def _check_combinations(self) -> None:
        if (self.collector_password is None) != (self.collector_username is None):
            name = "VES_STREAMS_COLLECTOR_PASSWORD" if self.collector_password is None else "VES_STREAMS_COLLECTOR_USERNAME"
            raise SettingsError(f"{name}: must be set together with the collector username/password")
        if self.collector_client_key is not None and self.collector_client_cert is None:
            raise SettingsError("VES_STREAMS_COLLECTOR_CLIENT_CERT: must be set when VES_STREAMS_COLLECTOR_CLIENT_KEY is")
        if self.kafka_sasl_mechanism is not None and (self.kafka_sasl_username is None or self.kafka_sasl_password is None):
            raise SettingsError(
                "VES_STREAMS_KAFKA_USERNAME: VES_STREAMS_KAFKA_SASL_MECHANISM needs a username and a password"
            )
        if self.kafka_sasl_mechanism is None and (self.kafka_sasl_username is not None or self.kafka_sasl_password is not None):
            raise SettingsError(
                "VES_STREAMS_KAFKA_SASL_MECHANISM: must be set when a Kafka username or password is given"
            )
        self._check_no_silent_downgrade()
        if self.sink_retry_max_backoff < self.sink_retry_initial_backoff:
            raise SettingsError(
                "VES_STREAMS_SINK_RETRY_BACKOFF_MAX: must be at least VES_STREAMS_SINK_RETRY_BACKOFF_INITIAL"
                f" ({self.sink_retry_initial_backoff:g}), got {self.sink_retry_max_backoff:g}"
            )
        names = {
            "VES_STREAMS_VALUES_TOPIC": self.values_topic,
            "VES_STREAMS_NOTIFICATIONS_TOPIC": self.notifications_topic,
            "VES_STREAMS_EVENTS_TOPIC": self.events_topic,
            "VES_STREAMS_DLQ_TOPIC": self.dlq_topic,
            "VES_STREAMS_EVENTS_DLQ_TOPIC": self.events_dlq_topic,
        }
        seen: dict[str, str] = {}
        for env, topic in names.items():
            if topic in seen:
                raise SettingsError(f"{env}: topic {topic!r} is already used by {seen[topic]}")
            seen[topic] = env

    def _check_no_silent_downgrade(self) -> None:
        """Credentials never cross the network in clear unless a setting says so.

        SASL without a CA file used to become SASL_PLAINTEXT without a word
        (with PLAIN, the Kafka password in clear), and Basic credentials went
        to an ``http://`` collector: both now need an explicit setting.
        """
        protocol = self.kafka_protocol
        if protocol is None and self.kafka_sasl_mechanism is not None and self.kafka_ssl_cafile is None:
            raise SettingsError(
                "VES_STREAMS_KAFKA_SECURITY_PROTOCOL: SASL is configured without VES_STREAMS_KAFKA_SSL_CAFILE; "
                "set SASL_SSL (TLS with the system's CAs) or SASL_PLAINTEXT to accept the credentials in clear"
            )
        if protocol is not None and protocol.startswith("SASL_") and self.kafka_sasl_mechanism is None:
            raise SettingsError(f"VES_STREAMS_KAFKA_SASL_MECHANISM: must be set for {protocol}")
        if protocol is not None and not protocol.startswith("SASL_") and self.kafka_sasl_mechanism is not None:
            raise SettingsError(
                f"VES_STREAMS_KAFKA_SECURITY_PROTOCOL: {protocol} sends no SASL credentials, "
                "but VES_STREAMS_KAFKA_SASL_MECHANISM is set"
            )
        if self.collector_username is not None and not self.collector_basic_over_http:
            for name, url in (("VES_STREAMS_COLLECTOR_URL", self.collector_url),
                              ("VES_STREAMS_COLLECTOR_BACKUP_URL", self.collector_backup_url)):  # fmt: skip
                if url is not None and url.lower().startswith("http://"):
                    raise SettingsError(
                        f"{name}: Basic credentials would cross the network in clear to an http:// collector; "
                        "use https://, or set VES_STREAMS_COLLECTOR_ALLOW_BASIC_OVER_HTTP=true to accept it"
                    )

    # ------------------------------------------------------------------

    def web_bind_address(self) -> str:
        """Where the web server listens: :attr:`web_bind`, else the address this worker is reached at.

        Resolved when called (not at import): ``web_host``, else the
        machine's hostname; a name that does not resolve gives loopback, so
        the server is never open on every interface by accident.
        """
        if self.web_bind:
            return self.web_bind
        import socket

        name = self.web_host or socket.gethostname()
        try:
            return socket.gethostbyname(name)
        except OSError:
            return "127.0.0.1"

    @property
    def kafka_security_protocol(self) -> str:
        """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL: the explicit setting, else from what is configured."""
        if self.kafka_protocol is not None:
            return self.kafka_protocol
        if self.kafka_sasl_mechanism:
            return "SASL_SSL"  # without a CA file only when said explicitly (_check_no_silent_downgrade)
        return "SSL" if self.kafka_ssl_cafile else "PLAINTEXT"

    @property
    def alarms_kept(self) -> bool:
        """Whether the fault stage keeps alarms: :attr:`alarm_lifecycle`, else on for VES 7.x only.

        Off for VES 5.x by default: those are Barometer's files and
        collectors, which got one unrelated event per notification; turning
        the lifecycle on changes the eventIds they have seen so far.
        """
        if self.alarm_lifecycle is not None:
            return self.alarm_lifecycle
        return self.ves_version.startswith("7")

    @property
    def ves_events_topic(self) -> str:
        """Alias of :attr:`events_topic` (the sink's name for it)."""
        return self.events_topic

    @property
    def ves_events_dlq_topic(self) -> str:
        """Alias of :attr:`events_dlq_topic` (the sink's name for it)."""
        return self.events_dlq_topic

    @property
    def bootstrap_servers(self) -> list[str]:
        """``host:port`` strings, for clients other than Faust (aiokafka)."""
        return self.broker.removeprefix("kafka://").split(";")

    def describe(self) -> dict[str, str]:
        """Every setting as ``{VARIABLE: value}`` for a start-up log line; secrets masked."""
        out = {}
        for f in dataclasses.fields(self):
            env = f.metadata.get("env")
            if env is None:
                continue
            value = getattr(self, f.name)
            out[env] = "" if value is None else str(value.value if isinstance(value, enum.Enum) else value)
        return out


#: Variables read by other commands (tests, the run command, e2e helpers),
#: not by the worker; they are not typos.
_NOT_WORKER_SETTINGS = frozenset(
    {
        "VES_STREAMS_REQUIRE_COLLECTD",
        "VES_STREAMS_TEST_KAFKA_VERSION",
        "VES_STREAMS_KAFKA_VERSION",
        "VES_STREAMS_KAFKA_HOME",
        "VES_STREAMS_CACHE_DIR",
        "VES_STREAMS_SCHEMA_DIR",
        "VES_STREAMS_OFFICIAL_SCHEMA_DIR",
    }
)


def command_settings(command: str) -> Settings:
    """The ``VES_STREAMS_*`` settings a ``ves-streams`` command runs with (the worker's, read now).

    An invalid one stops the command with one line naming it (exit 2),
    never a traceback and never a secret.
    """
    import os
    import sys

    try:
        return Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"ves-streams {command}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _lookup(header: Any, path: str) -> Any:
    node = header
    for part in path.split("."):
        if node is None:
            return None
        if isinstance(node, Mapping):
            node = node.get(part)
        else:
            node = getattr(node, part, None)
    return node
