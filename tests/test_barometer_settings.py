"""``ves-streams import-barometer``: Barometer's ves_app_config.conf as VES_STREAMS_* settings, password never shown."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
from pathlib import Path

import pytest

from ves_streams.barometer_settings import BarometerConfigError, barometer_settings
from ves_streams.sink.batching import Batch
from ves_streams.sink.client import VesHttpClient
from ves_streams.sink.config import CollectorConfig
from ves_streams.sink.delivery import BatchDelivery
from ves_streams.sink.retry import RetryPolicy

from tests.plugins.collector import PROJECT_DIR, VesCollector
from tests.sink.events import record

PASSWORD = "baro-Secret-42"

BAROMETER_CONF = f"""
[config]
Domain = 127.0.0.1
Port = 30000
Path = vendor
Topic = example_vnf
UseHttps = false
Username = ves
Password = {PASSWORD}
SendEventInterval = 20.0
ApiVersion = 5.1
KafkaPort = 9092
KafkaBroker = kafka-0
"""


def _settings(text: str) -> dict[str, str | None]:
    return {line.name: line.value for line in barometer_settings(text)}


def test_every_barometer_setting_has_its_equivalent() -> None:
    settings = _settings(BAROMETER_CONF)
    assert settings["VES_STREAMS_COLLECTOR_URL"] == "http://127.0.0.1:30000/vendor/eventListener/v5.1/example_vnf"
    assert settings["VES_STREAMS_VES_VERSION"] == "5.1"
    assert settings["VES_STREAMS_COLLECTOR_USERNAME"] == "ves"
    assert settings["VES_STREAMS_COLLECTOR_PASSWORD"] is None
    assert settings["VES_STREAMS_INTERVAL"] == "20"
    assert settings["VES_STREAMS_BROKER"] == "kafka://kafka-0:9092"


def test_the_printed_url_is_one_the_sink_understands() -> None:
    settings = _settings(BAROMETER_CONF.replace("UseHttps = false", "UseHttps = true"))
    url = settings["VES_STREAMS_COLLECTOR_URL"]
    assert url is not None and url.startswith("https://")
    config = CollectorConfig(url=url, ves_version=settings["VES_STREAMS_VES_VERSION"] or "")
    assert config.single_url(config.url) == "https://127.0.0.1:30000/vendor/eventListener/v5/example_vnf"
    assert config.batch_url(config.url) == "https://127.0.0.1:30000/vendor/eventListener/v5/eventBatch"


@pytest.mark.parametrize(
    "text, words",
    [
        ("Domain = x", "INI"),
        ("[other]\nDomain = x", "[config]"),
        ("[config]\nPort = http", "Port"),
        ("[config]\nApiVersion = 6", "ApiVersion"),
        ("[config]\nUseHttps = maybe", "UseHttps"),
        ("[config]\nSendEventInterval = soon", "SendEventInterval"),
    ],
)
def test_a_file_that_cannot_be_mapped_names_the_key(text: str, words: str) -> None:
    with pytest.raises(BarometerConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        barometer_settings(text)


def test_the_command_prints_settings_and_never_the_password(tmp_path: Path) -> None:
    conf = tmp_path / "ves_app_config.conf"
    conf.write_text(BAROMETER_CONF)
    result = subprocess.run(
        [sys.executable, "-m", "ves_streams.cli", "import-barometer", str(conf)],
        capture_output=True, text=True, timeout=60, cwd=PROJECT_DIR,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "VES_STREAMS_COLLECTOR_URL=http://127.0.0.1:30000/vendor/eventListener/v5.1/example_vnf" in result.stdout
    assert "# VES_STREAMS_COLLECTOR_PASSWORD=..." in result.stdout
    basic = base64.b64encode(f"ves:{PASSWORD}".encode()).decode()
    for secret in (PASSWORD, basic):
        assert secret not in result.stdout + result.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "ves_streams.cli", "import-barometer", str(tmp_path / "nope.conf")],
        capture_output=True, text=True, timeout=60, cwd=PROJECT_DIR,
    )  # fmt: skip
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_a_barometer_topic_url_delivers_to_the_topic_path(ves_collector: VesCollector) -> None:
    url = f"{ves_collector.url}/vendor/eventListener/v7/example_vnf"
    collector = CollectorConfig(url=url)

    async def main() -> None:
        client = VesHttpClient(collector)
        await client.start()
        try:
            delivery = BatchDelivery(collector, RetryPolicy(), client)
            single = await delivery.deliver(Batch("fault", (record("fault", "h1", 1),), single=True))
            batch = await delivery.deliver(Batch("fault", (record("fault", "h1", 2), record("fault", "h1", 3))))
            assert single is not None and batch is not None and len(single.delivered) + len(batch.delivered) == 3
        finally:
            await client.close()

    asyncio.run(main())
    paths = [r["path"] for r in ves_collector.records()]
    assert paths == ["/vendor/eventListener/v7/example_vnf"] + ["/vendor/eventListener/v7/eventBatch"] * 2
