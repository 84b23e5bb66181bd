"""The run's CA, broker certificate and SCRAM user for a secured local Kafka."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from pathlib import Path

from ves_streams.dev.kafka_security import KafkaSecrets, client_env, make_secrets, write_client_env


def _handshake(secrets: KafkaSecrets, cafile: Path, hostname: str) -> None:
    """A TLS handshake with a server using the broker's key store, verified as a client would."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(secrets.keystore)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        client_ctx = ssl.create_default_context(cafile=str(cafile))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=hostname):
                pass
    finally:
        listener.close()
        thread.join(5)


def test_the_broker_certificate_verifies_for_localhost_against_the_runs_ca(tmp_path: Path) -> None:
    secrets = make_secrets(tmp_path / "sec")
    _handshake(secrets, secrets.ca_file, "localhost")


def test_another_runs_ca_or_another_name_fails_verification(tmp_path: Path) -> None:
    import pytest

    secrets = make_secrets(tmp_path / "sec")
    other = make_secrets(tmp_path / "other")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(secrets, other.ca_file, "localhost")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(secrets, secrets.ca_file, "kafka.example")


def test_secrets_are_kept_for_the_next_start_and_private(tmp_path: Path) -> None:
    first = make_secrets(tmp_path / "sec")
    again = make_secrets(tmp_path / "sec")
    assert (again.username, again.password, again.ca_file) == (first.username, first.password, first.ca_file)
    assert first.password not in repr(first)
    for path in (first.keystore, tmp_path / "sec" / "scram.txt", tmp_path / "sec" / "ca.key"):
        assert path.stat().st_mode & 0o077 == 0, path
    done = subprocess.run(["openssl", "verify", "-CAfile", str(first.ca_file), str(tmp_path / "sec" / "broker.crt")],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_client_env_is_every_setting_a_client_needs_written_for_its_owner_only(tmp_path: Path) -> None:
    secrets = make_secrets(tmp_path / "sec")
    env = client_env(secrets, "kafka://localhost:9093")
    assert env == {
        "VES_STREAMS_BROKER": "kafka://localhost:9093",
        "VES_STREAMS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "VES_STREAMS_KAFKA_USERNAME": secrets.username,
        "VES_STREAMS_KAFKA_PASSWORD": secrets.password,
        "VES_STREAMS_KAFKA_SSL_CAFILE": str(secrets.ca_file),
    }
    path = write_client_env(tmp_path / "client.env", env)
    assert path.stat().st_mode & 0o777 == 0o600
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    assert lines == [f"{k}={v}" for k, v in env.items()]
