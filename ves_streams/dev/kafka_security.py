"""What a secured local Kafka needs, made for one run: a CA, a broker certificate, a SCRAM user.

``KafkaCluster(security="sasl_ssl")`` and ``ves-streams kafka up --security
sasl_ssl`` serve clients on a listener that requires TLS (the broker's
certificate is signed by a CA made here, for ``localhost`` and 127.0.0.1, so
clients verify the hostname) and SASL/SCRAM-SHA-512 (a user created in the
KRaft metadata when the storage is formatted). :func:`client_env` is every
``VES_STREAMS_*`` setting a client needs; :func:`write_client_env` puts it
in ``client.env`` (mode 0600: it holds the password).

The certificates come from the ``openssl`` command line tool, which Debian
ships (no Python dependency for tooling); Kafka reads them as PEM stores.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MECHANISM", "KafkaSecrets", "client_env", "make_secrets", "write_client_env"]

#: The SASL mechanism of the secured listener (the common choice for ONAP's Kafka).
MECHANISM = "SCRAM-SHA-512"
#: The user made for a run.
USERNAME = "ves-streams"
#: Days the run's certificates are valid.
DAYS = 30


class SecurityToolError(RuntimeError):
    """openssl is missing or refused to make a certificate."""


@dataclass(frozen=True, slots=True)
class KafkaSecrets:
    """The files and the credentials of one secured run (under ``directory``)."""

    directory: Path
    ca_file: Path
    #: the broker's private key and certificate chain, one PEM file (Kafka's PEM key store)
    keystore: Path
    username: str
    password: str

    def __repr__(self) -> str:  # the password never shows in a log line or a traceback
        return f"KafkaSecrets(directory={str(self.directory)!r}, username={self.username!r}, password='***')"

    @classmethod
    def load(cls, directory: Path) -> KafkaSecrets | None:
        """The secrets a previous run made in ``directory``, if complete."""
        directory = Path(directory)
        try:
            username, password = (directory / "scram.txt").read_text().split("\n", 2)[:2]
        except (OSError, ValueError):
            return None
        ca, keystore = directory / "ca.pem", directory / "broker.pem"
        if not (ca.exists() and keystore.exists() and username and password):
            return None
        return cls(directory, ca, keystore, username, password)


def _openssl(*args: str, cwd: Path) -> None:
    tool = shutil.which("openssl")
    if tool is None:
        raise SecurityToolError("openssl not found: install it (Debian: apt-get install openssl) to run a secured Kafka")
    done = subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise SecurityToolError(f"openssl {args[0]} failed: {done.stderr.strip()[-500:]}")


def make_secrets(directory: Path, *, hostname: str = "localhost") -> KafkaSecrets:
    """A CA, a broker key and certificate for ``hostname`` and 127.0.0.1, and a SCRAM password.

    Reuses what an earlier call left in ``directory`` (a broker restarted with
    the same data keeps its user and its certificate).
    """
    directory = Path(directory)
    existing = KafkaSecrets.load(directory)
    if existing is not None:
        return existing
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", str(DAYS), "-subj", "/CN=ves-streams local Kafka CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=directory)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
             "-subj", f"/CN={hostname}", cwd=directory)  # fmt: skip
    (directory / "broker.ext").write_text(
        f"subjectAltName=DNS:{hostname},IP:127.0.0.1\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "broker.crt", "-days", str(DAYS), "-extfile", "broker.ext", cwd=directory)  # fmt: skip
    keystore = directory / "broker.pem"
    keystore.write_text((directory / "broker.key").read_text() + (directory / "broker.crt").read_text())
    password = secrets.token_urlsafe(18)
    scram = directory / "scram.txt"
    scram.write_text(f"{USERNAME}\n{password}\n")
    for path in (keystore, scram, directory / "ca.key", directory / "broker.key"):
        os.chmod(path, 0o600)
    return KafkaSecrets(directory, directory / "ca.pem", keystore, USERNAME, password)


def client_env(secrets_: KafkaSecrets, broker_url: str) -> dict[str, str]:
    """Every ``VES_STREAMS_*`` setting a client of the secured listener needs."""
    return {
        "VES_STREAMS_BROKER": broker_url,
        "VES_STREAMS_KAFKA_SASL_MECHANISM": MECHANISM,
        "VES_STREAMS_KAFKA_USERNAME": secrets_.username,
        "VES_STREAMS_KAFKA_PASSWORD": secrets_.password,
        "VES_STREAMS_KAFKA_SSL_CAFILE": str(secrets_.ca_file),
    }


def write_client_env(path: Path, env: dict[str, str]) -> Path:
    """Write ``env`` as ``KEY=value`` lines (shell- and docker-compose-readable), readable by its owner only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("# ves-streams: settings for the secured local Kafka (holds a password)\n")
        out.writelines(f"{key}={value}\n" for key, value in env.items())
    return path
