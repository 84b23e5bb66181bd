"""Secrets never print: configs, URLs with userinfo, error messages."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from ves_streams.sink.config import CollectorConfig, KafkaSecurity, Secret, SinkConfig
from ves_streams.sink.errors import (
    PermanentDeliveryError,
    SinkConfigError,
    TransientDeliveryError,
    scrub,
    scrub_url,
)

PASSWORD = "s3cr3t-Pa55"


def _config() -> SinkConfig:
    return SinkConfig(
        bootstrap_servers="127.0.0.1:9092",
        collector=CollectorConfig(url="https://ves:8443", username="sink", password=Secret(PASSWORD)),
        kafka_security=KafkaSecurity(
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_plain_username="k",
            sasl_plain_password=Secret("kafka-" + PASSWORD),
        ),
    )


def test_config_repr_and_str_never_show_passwords() -> None:
    config = _config()
    for text in (repr(config), str(config), repr(config.collector), repr(config.kafka_security)):
        assert PASSWORD not in text
    assert isinstance(config.collector.password, Secret)
    assert config.collector.password.reveal() == PASSWORD
    assert repr(Secret(PASSWORD)) == "Secret('********')" and str(Secret(PASSWORD)) == "********"
    assert f"{Secret(PASSWORD)}" == "********"


def test_config_secrets_lists_every_password_for_scrubbing() -> None:
    basic = base64.b64encode(f"sink:{PASSWORD}".encode()).decode()
    assert {PASSWORD, basic, "kafka-" + PASSWORD} <= set(_config().secrets())


def test_every_form_of_the_collector_password_is_masked() -> None:
    password = 'p"w/ é'
    collector = CollectorConfig(url="https://ves:8443", username="sink", password=Secret(password))
    basic = base64.b64encode(f"sink:{password}".encode()).decode()
    echoed = f'Authorization: Basic {basic}; json "p\\"w/ \u00e9"; raw {password}; url p%22w%2F%20%C3%A9'
    scrubbed = scrub(echoed, collector.secrets())
    assert basic not in scrubbed and password not in scrubbed and "p%22w%2F%20%C3%A9" not in scrubbed


def test_url_userinfo_is_scrubbed() -> None:
    assert scrub_url("POST https://user:pw@ves:8443/eventListener/v7 failed") == (
        "POST https://***@ves:8443/eventListener/v7 failed"
    )
    assert scrub_url("http://token@h/x and http://a:b@c") == "http://***@h/x and http://***@c"
    assert scrub_url("no url here: a@b") == "no url here: a@b"


def test_scrub_masks_known_secrets_longest_first() -> None:
    assert scrub(f"auth {PASSWORD} and {PASSWORD}x", [PASSWORD, "Pa55"]) == "auth *** and ***x"
    assert scrub("nothing", ["", PASSWORD]) == "nothing"


def test_collector_url_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(SinkConfigError) as info:
        CollectorConfig(url=f"https://sink:{PASSWORD}@ves:8443")
    assert PASSWORD not in str(info.value) and "VES_STREAMS_COLLECTOR_PASSWORD" in str(info.value)
    with pytest.raises(SinkConfigError) as info:
        CollectorConfig(url="https://ves:8443", backup_url=f"https://sink:{PASSWORD}@ves2:8443")
    assert PASSWORD not in str(info.value)


def test_delivery_errors_scrub_urls() -> None:
    error = TransientDeliveryError(f"cannot reach https://u:{PASSWORD}@h/x", url=f"https://u:{PASSWORD}@h/x")
    assert PASSWORD not in str(error) and PASSWORD not in (error.url or "")
    refused = PermanentDeliveryError("refused", status=400, body=f"echo https://u:{PASSWORD}@h", url="https://h")
    assert PASSWORD not in refused.body


def test_collector_url_keeps_prefix_and_drops_listener_path() -> None:
    assert CollectorConfig(url="https://ves:8443/").url == "https://ves:8443"
    assert CollectorConfig(url="https://ves:8443/prefix/eventListener/v7/eventBatch").url == "https://ves:8443/prefix"
    c = CollectorConfig(url="http://ves:30000/eventListener/v5", ves_version="5")
    assert c.batch_url(c.url) == "http://ves:30000/eventListener/v5/eventBatch"
    assert c.single_url(c.url) == "http://ves:30000/eventListener/v5"
    settings_style: Any = "v7.2.1"
    assert CollectorConfig(url="http://v", ves_version=settings_style).ves_version == "7"


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"url": "ftp://ves"}, "http"),
        ({"url": "http://ves", "ves_version": "6"}, "7 or 5"),
        ({"url": "http://ves", "password": "x"}, "USERNAME"),
        ({"url": "http://ves", "timeout": 0}, "timeout"),
        ({"url": "http://ves", "client_key": "k.pem"}, "CLIENT_CERT"),
    ],
)
def test_invalid_collector_settings_name_the_setting(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(SinkConfigError, match=words):
        CollectorConfig(**kwargs)  # type: ignore[arg-type]
