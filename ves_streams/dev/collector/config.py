"""Settings of the local VES collector: one frozen object, checked once at start.

The password is held in a :class:`Secret` whose ``repr``/``str`` never show
the value, so a settings object can be printed or logged whole.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from ves_streams.dev.collector.errors import CollectorConfigError
from ves_streams.secret import Secret

__all__ = ["DEFAULT_PASSWORD_ENV", "Secret", "BasicAuthCredentials", "CollectorConfig", "rejected_path_for"]

#: Environment variable holding the Basic auth password unless ``--password-env`` names another.
DEFAULT_PASSWORD_ENV = "VES_STREAMS_COLLECTOR_PASSWORD"


@dataclass(frozen=True, slots=True)
class BasicAuthCredentials:
    """The one user the collector accepts when Basic auth is on."""

    username: str
    password: Secret


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    """Everything ``ves-streams collector`` needs; build it with :meth:`checked`."""

    host: str = "127.0.0.1"
    port: int = 30000
    record: Path | None = None
    record_rejected: Path | None = None
    auth: BasicAuthCredentials | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    control: bool = False
    quiet: bool = False

    def checked(self) -> CollectorConfig:
        """Return ``self`` after checking the settings that can be checked before binding; raise otherwise."""
        if not 0 <= self.port <= 65535:
            raise CollectorConfigError(f"--port {self.port}: must be 0..65535 (0 picks a free port)")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise CollectorConfigError("--tls-cert and --tls-key go together: give both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise CollectorConfigError("--tls-client-ca needs --tls-cert and --tls-key (client certificates need TLS)")
        for flag, path in (
            ("--tls-cert", self.tls_cert),
            ("--tls-key", self.tls_key),
            ("--tls-client-ca", self.tls_client_ca),
        ):
            if path is not None and not path.is_file():
                raise CollectorConfigError(f"{flag} {path}: no such file")
        if self.auth is not None and not self.auth.username:
            raise CollectorConfigError("--username must not be empty")
        if self.record is not None and self.record_rejected is not None and self.record == self.record_rejected:
            raise CollectorConfigError("--record and --record-rejected must be different files")
        return self

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert is not None else "http"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server TLS context, or None for plain HTTP; raises with the file names when they do not load.

        With ``tls_client_ca`` the handshake requires a client certificate
        signed by that CA (mutual TLS); a client without one never reaches HTTP.
        """
        if self.tls_cert is None or self.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(str(self.tls_cert), str(self.tls_key))
        except (ssl.SSLError, OSError) as exc:
            raise CollectorConfigError(
                f"cannot load --tls-cert {self.tls_cert} / --tls-key {self.tls_key}: {exc}"
            ) from exc
        if self.tls_client_ca is not None:
            try:
                context.load_verify_locations(cafile=str(self.tls_client_ca))
            except (ssl.SSLError, OSError) as exc:
                raise CollectorConfigError(f"cannot load --tls-client-ca {self.tls_client_ca}: {exc}") from exc
            context.verify_mode = ssl.CERT_REQUIRED
        return context


def rejected_path_for(record: Path) -> Path:
    """Where rejected requests go by default: ``events.jsonl`` -> ``events.rejected.jsonl``, same directory."""
    suffix = record.suffix or ".jsonl"
    return record.with_name(f"{record.stem if record.suffix else record.name}.rejected{suffix}")
