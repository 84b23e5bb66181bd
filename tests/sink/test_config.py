"""SinkConfig.from_settings reads the project's Settings object, and nothing else."""

from __future__ import annotations

import pytest

from ves_streams.settings import Settings
from ves_streams.sink.config import SinkConfig
from ves_streams.sink.errors import SinkConfigError
from ves_streams.sink.service import SinkService


def _settings(**env: str) -> Settings:
    return Settings.from_env({f"VES_STREAMS_{k}": v for k, v in env.items()})


def test_from_settings_maps_every_sink_setting(tmp_path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    settings = _settings(
        APP_ID="edge1",
        BROKER="kafka://k1:9092;k2:9093",
        COLLECTOR_URL="https://ves:8443",
        COLLECTOR_BACKUP_URL="https://ves2:8443",
        COLLECTOR_USERNAME="sink",
        COLLECTOR_PASSWORD="pw-123",
        COLLECTOR_CA_BUNDLE=str(ca),
        COLLECTOR_TIMEOUT="3.5",
        VES_VERSION="5.4.1",
        SINK_BATCHING="off",
        SINK_BATCH_MAX_EVENTS="50",
        SINK_BATCH_MAX_BYTES="65536",
        SINK_LINGER_MS="20",
        SINK_RETRY_MAX="4",
        SINK_MAX_CONCURRENCY="6",
        EVENTS_TOPIC="my-events",
        EVENTS_DLQ_TOPIC="my-events-dlq",
    )
    config = SinkConfig.from_settings(settings)
    assert config.bootstrap_servers == "k1:9092,k2:9093"
    assert config.group_id == "edge1-sink"
    assert (config.events_topic, config.dlq_topic) == ("my-events", "my-events-dlq")
    c = config.collector
    assert (c.url, c.backup_url, c.username) == ("https://ves:8443", "https://ves2:8443", "sink")
    assert c.password is not None and c.password.reveal() == "pw-123"
    assert (c.ca_bundle, c.timeout, c.ves_version) == (str(ca), 3.5, "5")
    assert c.batch_url(c.url) == "https://ves:8443/eventListener/v5/eventBatch"
    b = config.batching
    assert (b.enabled, b.max_events, b.max_bytes, b.linger_ms) == (False, 50, 65536, 20)
    assert config.retry.max_attempts == 5, "4 retries after the first attempt"
    assert (config.concurrency.maximum, config.concurrency.initial) == (6, 1), "adapts from one request up to six"
    assert "pw-123" not in repr(config)


def test_from_settings_defaults_are_the_documented_ones() -> None:
    config = SinkConfig.from_settings(_settings())
    assert config.group_id == "ves-streams-sink"
    assert (config.events_topic, config.dlq_topic) == ("ves-events", "ves-events-dlq")
    assert config.collector.ves_version == "7"
    assert (config.batching.max_events, config.batching.max_bytes, config.batching.linger_ms) == (100, 1024 * 1024, 20)
    assert (config.retry.initial_backoff, config.retry.max_backoff, config.retry.max_attempts) == (0.5, 30.0, 0)
    assert config.concurrency.maximum == 32
    assert config.kafka_security.security_protocol == "PLAINTEXT"


def test_service_builds_from_settings_without_touching_kafka() -> None:
    service = SinkService.from_settings(_settings(COLLECTOR_URL="http://ves:30000"))
    assert service.config.collector.url == "http://ves:30000"
    assert not service.is_ready()


def test_settings_without_a_collector_url_is_refused() -> None:
    class Bare:
        broker = "kafka://k:9092"

    with pytest.raises(SinkConfigError, match="VES_STREAMS_COLLECTOR_URL"):
        SinkConfig.from_settings(Bare())


def test_schema_validation_before_sending_is_on_unless_turned_off() -> None:
    from ves_streams.sink.handler import DeliveryHandler
    from ves_streams.sink.service import SinkService

    assert SinkConfig.from_settings(_settings()).validate is True
    off = SinkConfig.from_settings(_settings(SINK_VALIDATE="false"))
    assert off.validate is False
    handler = SinkService(off).handler  # the handler the sink runs checks nothing
    assert isinstance(handler, DeliveryHandler) and handler._schema_check() is None  # noqa: SLF001
