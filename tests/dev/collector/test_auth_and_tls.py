"""Basic auth and TLS on the real collector process."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
import requests

from tests.dev.collector.samples import fault7, heartbeat7
from tests.plugins.collector import PROJECT_DIR, TlsFiles, VesCollector

PASSWORD = "s3cret-Pa55word-only-in-env"


@pytest.fixture
def auth_collector(ves_collector_factory: Any) -> VesCollector:
    collector: VesCollector = ves_collector_factory(username="ves", password=PASSWORD)
    return collector


def test_missing_credentials_get_401_with_a_policy_exception(auth_collector: VesCollector) -> None:
    response = requests.post(auth_collector.event_url(7), json={"event": heartbeat7()}, timeout=10)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert response.json()["requestError"]["policyException"]["messageId"] == "POL2000"
    assert auth_collector.events() == []


@pytest.mark.parametrize("credentials", [("ves", "wrong"), ("other", PASSWORD), ("ves", PASSWORD + "x")])
def test_wrong_credentials_get_401(auth_collector: VesCollector, credentials: tuple[str, str]) -> None:
    response = requests.post(auth_collector.event_url(7), json={"event": heartbeat7()}, auth=credentials, timeout=10)
    assert response.status_code == 401
    assert auth_collector.events() == []


def test_right_credentials_get_202(auth_collector: VesCollector) -> None:
    event = fault7()
    response = requests.post(auth_collector.event_url(7), json={"event": event}, auth=auth_collector.auth, timeout=10)
    assert response.status_code == 202
    assert auth_collector.events() == [event]


def test_password_never_appears_in_output_or_records(auth_collector: VesCollector) -> None:
    requests.post(auth_collector.event_url(7), json={"event": heartbeat7()}, auth=("ves", PASSWORD), timeout=10)
    requests.post(auth_collector.event_url(7), json={"event": heartbeat7()}, auth=("ves", PASSWORD[:-1]), timeout=10)
    requests.post(auth_collector.event_url(7), json={"event": {}}, auth=("ves", PASSWORD), timeout=10)
    assert auth_collector.stop() == 0
    output = auth_collector.output()
    assert "user 'ves'" in output and "refused  401" in output and "accepted heartbeat" in output
    for text in (output, auth_collector.record.read_text(), auth_collector.rejected_record.read_text()):
        assert PASSWORD not in text
        assert PASSWORD[:-1] not in text
    assert PASSWORD not in " ".join(auth_collector.process.args)  # type: ignore[arg-type]


def test_username_without_password_refuses_to_start() -> None:
    env = {k: v for k, v in os.environ.items() if k != "VES_STREAMS_COLLECTOR_PASSWORD"}
    result = subprocess.run(
        [sys.executable, "-m", "ves_streams.cli", "collector", "--port", "0", "--username", "ves",
         "--password-env", "MY_COLLECTOR_PASSWORD"],
        cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "MY_COLLECTOR_PASSWORD" in result.stderr


def test_tls_with_the_self_signed_cert_as_ca_bundle(
    ves_collector_factory: Any, ves_collector_tls_files: TlsFiles
) -> None:
    collector: VesCollector = ves_collector_factory(tls=ves_collector_tls_files)
    assert collector.url.startswith("https://")
    event = heartbeat7()
    response = requests.post(collector.event_url(7), json={"event": event}, verify=collector.verify, timeout=10)
    assert response.status_code == 202
    assert collector.events() == [event]
    with pytest.raises(requests.exceptions.SSLError):
        requests.post(collector.event_url(7), json={"event": heartbeat7()}, timeout=10)  # system CAs only
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(collector.event_url(7).replace("https://", "http://"), json={"event": heartbeat7()}, timeout=10)
    assert len(collector.events()) == 1


def test_tls_and_basic_auth_together(ves_collector_factory: Any, ves_collector_tls_files: TlsFiles) -> None:
    collector: VesCollector = ves_collector_factory(tls=ves_collector_tls_files, username="ves", password=PASSWORD)
    url, verify = collector.event_url(7), collector.verify
    assert requests.post(url, json={"event": heartbeat7()}, verify=verify, timeout=10).status_code == 401
    assert requests.post(url, json={"event": heartbeat7()}, verify=verify, auth=collector.auth, timeout=10).status_code == 202


def test_tls_cert_without_key_refuses_to_start(ves_collector_tls_files: TlsFiles) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ves_streams.cli", "collector", "--port", "0", "--tls-cert", str(ves_collector_tls_files.cert)],
        cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "--tls-cert and --tls-key go together" in result.stderr


def test_mutual_tls_requires_a_client_certificate(
    ves_collector_factory: Any, ves_collector_tls_files: TlsFiles, ves_collector_client_tls_files: TlsFiles
) -> None:
    client = ves_collector_client_tls_files
    collector: VesCollector = ves_collector_factory(tls=ves_collector_tls_files, client_tls=client)
    event = heartbeat7()
    response = requests.post(collector.event_url(7), json={"event": event}, timeout=10, **collector.tls_kwargs())
    assert response.status_code == 202
    with pytest.raises(requests.exceptions.ConnectionError):  # SSLError is a ConnectionError
        requests.post(collector.event_url(7), json={"event": heartbeat7()}, verify=collector.verify, timeout=10)
    assert collector.events() == [event]
