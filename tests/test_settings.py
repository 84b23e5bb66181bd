"""Settings: defaults, environment parsing, errors naming the variable, header precedence, secrets."""

from __future__ import annotations

import copy
import dataclasses
import io
import logging
import pickle
from pathlib import Path

import pytest

from ves_streams import resources
from ves_streams.settings import ProcessingGuarantee, Role, Secret, Settings, SettingsError

PROJECT_DIR = Path(__file__).resolve().parent.parent


def test_defaults_without_environment() -> None:
    s = Settings.from_env({})
    assert s.broker == "kafka://localhost:9092"
    assert s.collector_url == "http://localhost:30000"
    assert s.collector_backup_url is None
    assert s.collector_password is None
    assert s.interval == 10.0
    assert s.app_id == "ves-streams"
    assert s.role is Role.ALL
    assert s.processing_guarantee is ProcessingGuarantee.AT_LEAST_ONCE
    assert s.web_port == 6066
    assert s.partitions == 4
    assert s.replication == 1
    assert s.standby_replicas == 0
    assert s.dlq_topic == "ves-streams-dlq"
    assert s.events_topic == "ves-events"
    assert s.values_topic == "collectd"
    assert s.notifications_topic == "collectd-notifications"
    assert s.sink_batch_max_events == 100
    assert s.sink_batch_max_bytes == 1024 * 1024
    assert s.sink_linger_ms == 20
    assert s.sink_batching is True
    assert s.sink_retry_max == 0
    assert s.hostname  # the machine's name
    assert s.topology.name == "host.yaml"
    assert s.explicit == frozenset()


def test_every_variable_is_read() -> None:
    env = {
        "VES_STREAMS_BROKER": "k1:9092,k2:9093",
        "VES_STREAMS_COLLECTOR_URL": "https://collector.example:8443/",
        "VES_STREAMS_COLLECTOR_BACKUP_URL": "https://backup.example:8443",
        "VES_STREAMS_COLLECTOR_USERNAME": "ves",
        "VES_STREAMS_COLLECTOR_PASSWORD": "s3cret",
        "VES_STREAMS_COLLECTOR_TIMEOUT": "2.5",
        "VES_STREAMS_INTERVAL": "2",
        "VES_STREAMS_HEARTBEAT_INTERVAL": "30",
        "VES_STREAMS_APP_ID": "my-app",
        "VES_STREAMS_ROLE": "Process",
        "VES_STREAMS_PROCESSING_GUARANTEE": "exactly_once",
        "VES_STREAMS_DATA_DIR": "/tmp/x",
        "VES_STREAMS_WEB_PORT": "7000",
        "VES_STREAMS_WEB_HOST": "worker-1.ves-streams",
        "VES_STREAMS_PARTITIONS": "8",
        "VES_STREAMS_REPLICATION": "3",
        "VES_STREAMS_DLQ_TOPIC": "my-dlq",
        "VES_STREAMS_HOSTNAME": "worker-1",
        "VES_STREAMS_SINK_BATCH_MAX_EVENTS": "10",
        "VES_STREAMS_SINK_BATCH_MAX_BYTES": "65536",
        "VES_STREAMS_SINK_LINGER_MS": "0",
        "VES_STREAMS_SINK_BATCHING": "off",
        "VES_STREAMS_SINK_RETRY_MAX": "5",
        "VES_STREAMS_SINK_RETRY_BACKOFF_INITIAL": "1",
        "VES_STREAMS_SINK_RETRY_BACKOFF_MAX": "60",
        "VES_STREAMS_SINK_UNREADY_AFTER": "90",
        "VES_STREAMS_SINK_MAX_CONCURRENCY": "4",
        "VES_STREAMS_KAFKA_SASL_MECHANISM": "scram-sha-512",
        "VES_STREAMS_KAFKA_USERNAME": "kuser",
        "VES_STREAMS_KAFKA_PASSWORD": "kpass",
        "VES_STREAMS_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "VES_STREAMS_COLLECTOR_ALLOW_BASIC_OVER_HTTP": "false",
    }
    s = Settings.from_env(env)
    assert s.broker == "kafka://k1:9092;k2:9093"
    assert s.bootstrap_servers == ["k1:9092", "k2:9093"]
    assert s.collector_url == "https://collector.example:8443"
    assert s.collector_backup_url == "https://backup.example:8443"
    assert s.collector_password is not None and s.collector_password.reveal() == "s3cret"
    assert s.collector_timeout == 2.5
    assert s.interval == 2.0
    assert s.heartbeat_interval == 30.0
    assert s.app_id == "my-app"
    assert s.role is Role.PROCESS and s.role.processes and not s.role.sinks
    assert s.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE
    assert s.data_dir == Path("/tmp/x")
    assert (s.web_port, s.partitions, s.replication) == (7000, 8, 3)
    assert s.web_host == "worker-1.ves-streams"
    assert s.sink_unready_after == 90.0
    assert s.sink_max_concurrency == 4
    assert s.dlq_topic == "my-dlq"
    assert s.hostname == "worker-1"
    assert (s.sink_batch_max_events, s.sink_batch_max_bytes, s.sink_linger_ms, s.sink_batching) == (10, 65536, 0, False)
    assert s.kafka_security_protocol == "SASL_SSL" and s.collector_basic_over_http is False
    assert (s.sink_retry_max, s.sink_retry_initial_backoff, s.sink_retry_max_backoff) == (5, 1.0, 60.0)
    assert s.kafka_sasl_mechanism == "SCRAM-SHA-512"
    assert s.explicit == frozenset(env)


def test_empty_variable_counts_as_unset() -> None:
    assert Settings.from_env({"VES_STREAMS_INTERVAL": "  "}).interval == 10.0


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("VES_STREAMS_INTERVAL", "abc", "VES_STREAMS_INTERVAL: must be a positive number of seconds, got 'abc'"),
        ("VES_STREAMS_INTERVAL", "0", "VES_STREAMS_INTERVAL: must be a positive number of seconds, got '0'"),
        ("VES_STREAMS_INTERVAL", "nan", "VES_STREAMS_INTERVAL: must be a positive number of seconds, got 'nan'"),
        ("VES_STREAMS_WEB_PORT", "70000", "VES_STREAMS_WEB_PORT: must be a TCP port (1-65535), got '70000'"),
        ("VES_STREAMS_PARTITIONS", "0", "VES_STREAMS_PARTITIONS: must be a whole number of partitions"),
        ("VES_STREAMS_ROLE", "both", "VES_STREAMS_ROLE: must be one of all, process, sink, got 'both'"),
        ("VES_STREAMS_PROCESSING_GUARANTEE", "twice", "VES_STREAMS_PROCESSING_GUARANTEE: must be one of"),
        ("VES_STREAMS_COLLECTOR_URL", "ftp://x", "VES_STREAMS_COLLECTOR_URL: must be an http:// or https:// URL"),
        ("VES_STREAMS_BROKER", "kafka://", "VES_STREAMS_BROKER: must be kafka://host:port"),
        ("VES_STREAMS_BROKER", "http://h:9092", "VES_STREAMS_BROKER: must be kafka://host:port"),
        ("VES_STREAMS_APP_ID", "bad id", "VES_STREAMS_APP_ID: must be a Kafka topic name"),
        ("VES_STREAMS_DLQ_TOPIC", "a/b", "VES_STREAMS_DLQ_TOPIC: must be a Kafka topic name"),
        ("VES_STREAMS_SINK_BATCHING", "maybe", "VES_STREAMS_SINK_BATCHING: must be on/off"),
        ("VES_STREAMS_SINK_BATCH_MAX_BYTES", "12", "VES_STREAMS_SINK_BATCH_MAX_BYTES: must be a number of bytes"),
        ("VES_STREAMS_SINK_MAX_CONCURRENCY", "0", "VES_STREAMS_SINK_MAX_CONCURRENCY: must be a whole number of requests"),
        ("VES_STREAMS_TOPOLOGY", "no/such/file.yaml", "VES_STREAMS_TOPOLOGY: must name an existing topology file"),
        ("VES_STREAMS_COLLECTOR_CA_BUNDLE", "/no/such/ca.pem", "VES_STREAMS_COLLECTOR_CA_BUNDLE: must name an existing file"),
        ("VES_STREAMS_KAFKA_SASL_MECHANISM", "GSSAPI", "VES_STREAMS_KAFKA_SASL_MECHANISM: must be one of PLAIN"),
        ("VES_STREAMS_VES_VERSION", "6", "VES_STREAMS_VES_VERSION: must be a VES version"),
    ],
)
def test_invalid_values_fail_naming_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({variable: value})
    assert str(info.value).startswith(message)


def test_inconsistent_combinations_fail_naming_a_variable() -> None:
    with pytest.raises(SettingsError, match="^VES_STREAMS_COLLECTOR_PASSWORD: "):
        Settings.from_env({"VES_STREAMS_COLLECTOR_USERNAME": "u"})
    with pytest.raises(SettingsError, match="^VES_STREAMS_KAFKA_SASL_MECHANISM: "):
        Settings.from_env({"VES_STREAMS_KAFKA_USERNAME": "u", "VES_STREAMS_KAFKA_PASSWORD": "p"})
    with pytest.raises(SettingsError, match="^VES_STREAMS_SINK_RETRY_BACKOFF_MAX: "):
        Settings.from_env({"VES_STREAMS_SINK_RETRY_BACKOFF_INITIAL": "10", "VES_STREAMS_SINK_RETRY_BACKOFF_MAX": "1"})
    with pytest.raises(SettingsError, match="^VES_STREAMS_DLQ_TOPIC: topic 'ves-events'"):
        Settings.from_env({"VES_STREAMS_DLQ_TOPIC": "ves-events"})


def test_url_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"VES_STREAMS_COLLECTOR_URL": "https://user:hunter2@collector:8443"})
    assert "hunter2" not in str(info.value)


def test_topology_resolves_against_cwd_then_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    from_repo = Settings.from_env({"VES_STREAMS_TOPOLOGY": "tests/fixtures/barometer/host.yaml"})
    assert from_repo.topology == (PROJECT_DIR / "tests/fixtures/barometer/host.yaml").resolve()
    local = tmp_path / "tests/fixtures/barometer/host.yaml"
    local.parent.mkdir(parents=True)
    local.write_text("{}\n")
    from_cwd = Settings.from_env({"VES_STREAMS_TOPOLOGY": "tests/fixtures/barometer/host.yaml"})
    assert from_cwd.topology == local.resolve()


def test_default_topology_is_the_shipped_host_yaml_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    s = Settings.from_env({})
    assert s.topology == resources.topologies_dir() / "host.yaml"
    assert s.topology.is_file()
    assert Settings().topology == s.topology


@pytest.mark.parametrize("value", ["guest.yaml", "guest", "ves5/host.yaml", "topologies/ves5/host.yaml"])
def test_a_relative_topology_may_name_a_shipped_one(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    expected = resources.topologies_dir() / (value.removeprefix("topologies/").removesuffix(".yaml") + ".yaml")
    assert Settings.from_env({"VES_STREAMS_TOPOLOGY": value}).topology == expected


def test_a_file_in_the_current_directory_wins_over_a_shipped_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "guest.yaml").write_text("{}\n")
    assert Settings.from_env({"VES_STREAMS_TOPOLOGY": "guest.yaml"}).topology == (tmp_path / "guest.yaml").resolve()


def test_a_missing_topology_names_the_setting_and_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingsError, match=r"^VES_STREAMS_TOPOLOGY: must name an existing topology file \(looked in "
                       r"the current directory, the repository and the shipped topologies"):
        Settings.from_env({"VES_STREAMS_TOPOLOGY": "nosuch.yaml"})
    with pytest.raises(SettingsError, match="^VES_STREAMS_TOPOLOGY: must name an existing topology file"):
        Settings.from_env({"VES_STREAMS_TOPOLOGY": str(tmp_path / "host.yaml")})


class _Header:
    values_topic = "header-values"
    notifications_topic = None
    events_topic = "header-events"
    interval = 5
    heartbeat_interval = 60.0
    ves_version = "5.4.1"
    sink = {"url": "https://from-header:8443", "batch_max_events": 7}


def test_topology_header_fills_defaults_but_environment_wins() -> None:
    s = Settings.from_env({"VES_STREAMS_INTERVAL": "2", "VES_STREAMS_EVENTS_TOPIC": "env-events"})
    applied = s.with_topology_header(_Header())
    assert applied.interval == 2.0  # env wins
    assert applied.events_topic == "env-events"  # env wins
    assert applied.values_topic == "header-values"  # header over default
    assert applied.notifications_topic == "collectd-notifications"  # header None: default kept
    assert applied.ves_version == "5.4.1"
    assert applied.collector_url == "https://from-header:8443"
    assert applied.sink_batch_max_events == 7
    # a plain mapping works as well
    assert s.with_topology_header({"values_topic": "m"}).values_topic == "m"


def test_invalid_header_value_names_the_header_field() -> None:
    with pytest.raises(SettingsError, match="^topology header interval: must be a positive number"):
        Settings.from_env({}).with_topology_header({"interval": -1})


def test_settings_are_frozen() -> None:
    s = Settings.from_env({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.interval = 1.0  # type: ignore[misc]


def test_unknown_variables_are_listed_not_fatal() -> None:
    s = Settings.from_env({"VES_STREAMS_INTERVALL": "3", "VES_STREAMS_REQUIRE_COLLECTD": "1"})
    assert s.unknown == ("VES_STREAMS_INTERVALL",)


def test_passwords_never_appear_in_repr_str_logs_or_copies(caplog: pytest.LogCaptureFixture) -> None:
    s = Settings.from_env(
        {
            "VES_STREAMS_COLLECTOR_URL": "https://collector.example:8443",
            "VES_STREAMS_COLLECTOR_USERNAME": "ves",
            "VES_STREAMS_COLLECTOR_PASSWORD": "collector-hunter2",
            "VES_STREAMS_KAFKA_SASL_MECHANISM": "PLAIN",
            "VES_STREAMS_KAFKA_USERNAME": "k",
            "VES_STREAMS_KAFKA_PASSWORD": "kafka-hunter2",
            "VES_STREAMS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        }
    )
    texts = [repr(s), str(s), f"{s}", f"{s!r}", str(s.describe()), repr(dataclasses.asdict(s)), repr(copy.deepcopy(s))]
    logger = logging.getLogger("test.settings")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger="test.settings"):
            logger.info("settings: %s", s)
            logger.info("settings: %r", s)
            logger.info("password: %s", s.collector_password)
    finally:
        logger.removeHandler(handler)
    texts += [caplog.text, stream.getvalue()]
    for text in texts:
        assert "hunter2" not in text
    assert "********" in repr(s)
    assert s.collector_password is not None and s.collector_password.reveal() == "collector-hunter2"
    assert s.kafka_sasl_password is not None and s.kafka_sasl_password.reveal() == "kafka-hunter2"
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_secret_behaves_like_a_value_without_showing_it() -> None:
    a, b = Secret("x"), Secret("x")
    assert a == b and hash(a) == hash(b) and a != Secret("y")
    assert str(a) == "********" and f"{a:>20}" == "********" and repr(a) == "Secret('********')"


def test_invalid_url_with_credentials_never_echoes_them() -> None:
    for url in ("ftp://user:hunter2@x", "https://user:hunter2@[bad", "https://hunter2@collector"):
        with pytest.raises(SettingsError) as info:
            Settings.from_env({"VES_STREAMS_COLLECTOR_BACKUP_URL": url})
        assert "hunter2" not in str(info.value)
        assert str(info.value).startswith("VES_STREAMS_COLLECTOR_BACKUP_URL: ")


def test_the_alarm_lifecycle_defaults_to_on_for_ves_7_and_off_for_ves_5_and_can_be_set() -> None:
    from ves_streams.rules import load_topology

    assert Settings.from_env({}).alarms_kept  # VES 7.2.1 by default
    barometer = load_topology(Path(__file__).resolve().parents[1] / "topologies" / "ves5" / "host.yaml")
    assert not Settings.from_env({}).with_topology_header(barometer.header).alarms_kept
    assert Settings.from_env({"VES_STREAMS_ALARM_LIFECYCLE": "on"}).with_topology_header(barometer.header).alarms_kept
    assert not Settings.from_env({"VES_STREAMS_ALARM_LIFECYCLE": "off"}).alarms_kept
    assert not Settings.from_env({}).with_topology_header({"alarm_lifecycle": False}).alarms_kept
    with pytest.raises(SettingsError, match="VES_STREAMS_ALARM_LIFECYCLE"):
        Settings.from_env({"VES_STREAMS_ALARM_LIFECYCLE": "sometimes"})


# -- no silent security downgrade ---------------------------------------------------------


_SASL = {"VES_STREAMS_KAFKA_SASL_MECHANISM": "PLAIN", "VES_STREAMS_KAFKA_USERNAME": "k",
         "VES_STREAMS_KAFKA_PASSWORD": "kafka-hunter2"}  # fmt: skip


def test_sasl_without_a_ca_file_must_say_whether_tls_is_wanted() -> None:
    with pytest.raises(SettingsError, match="^VES_STREAMS_KAFKA_SECURITY_PROTOCOL: ") as info:
        Settings.from_env(_SASL)
    assert "kafka-hunter2" not in str(info.value)
    assert Settings.from_env({**_SASL, "VES_STREAMS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}).kafka_security_protocol == "SASL_SSL"
    plain = Settings.from_env({**_SASL, "VES_STREAMS_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext"})
    assert plain.kafka_security_protocol == "SASL_PLAINTEXT"


def test_sasl_with_a_ca_file_is_sasl_ssl(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    assert Settings.from_env({**_SASL, "VES_STREAMS_KAFKA_SSL_CAFILE": str(ca)}).kafka_security_protocol == "SASL_SSL"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"VES_STREAMS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "VES_STREAMS_KAFKA_SASL_MECHANISM"),
        ({**_SASL, "VES_STREAMS_KAFKA_SECURITY_PROTOCOL": "SSL"}, "VES_STREAMS_KAFKA_SECURITY_PROTOCOL"),
        ({"VES_STREAMS_KAFKA_SECURITY_PROTOCOL": "TLS"}, "VES_STREAMS_KAFKA_SECURITY_PROTOCOL"),
    ],
)
def test_a_security_protocol_that_contradicts_the_rest_is_refused(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=f"^{named}: "):
        Settings.from_env(env)


def test_basic_credentials_to_an_http_collector_need_an_explicit_opt_in() -> None:
    creds = {"VES_STREAMS_COLLECTOR_USERNAME": "ves", "VES_STREAMS_COLLECTOR_PASSWORD": "collector-hunter2"}
    with pytest.raises(SettingsError, match="^VES_STREAMS_COLLECTOR_URL: ") as info:
        Settings.from_env({**creds, "VES_STREAMS_COLLECTOR_URL": "http://collector:30000"})
    assert "collector-hunter2" not in str(info.value)
    with pytest.raises(SettingsError, match="^VES_STREAMS_COLLECTOR_BACKUP_URL: "):
        Settings.from_env({**creds, "VES_STREAMS_COLLECTOR_URL": "https://a:8443",
                           "VES_STREAMS_COLLECTOR_BACKUP_URL": "http://b:30000"})  # fmt: skip
    allowed = Settings.from_env(
        {**creds, "VES_STREAMS_COLLECTOR_URL": "http://collector:30000", "VES_STREAMS_COLLECTOR_ALLOW_BASIC_OVER_HTTP": "true"}
    )
    assert allowed.collector_basic_over_http is True
    assert Settings.from_env({"VES_STREAMS_COLLECTOR_URL": "http://collector:30000"}).collector_username is None
