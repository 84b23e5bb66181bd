"""The one Kafka connection object: the broker list parsed once, the same security for every client."""

from __future__ import annotations

import pytest

from ves_streams.runtime.kafka import KafkaConfigError, KafkaConnection, KafkaSecurity, parse_broker
from ves_streams.settings import Settings


@pytest.mark.parametrize(
    ("broker", "expected"),
    [
        ("kafka://h1:9092;h2:9093", (("h1", 9092), ("h2", 9093))),
        ("h1:9092,h2:9093", (("h1", 9092), ("h2", 9093))),
        ("kafka://h1", (("h1", 9092),)),
        (" kafka://h1:1 ; ", (("h1", 1),)),
    ],
)
def test_every_broker_string_form_parses_to_the_same_addresses(broker: str, expected: tuple[tuple[str, int], ...]) -> None:
    assert parse_broker(broker) == expected


@pytest.mark.parametrize("broker", ["", " ; ", "kafka://h1:port"])
def test_a_broker_string_without_a_usable_address_names_the_setting(broker: str) -> None:
    with pytest.raises(KafkaConfigError, match="VES_STREAMS_BROKER"):
        parse_broker(broker)


def test_faust_and_aiokafka_get_the_same_cluster_in_their_own_forms() -> None:
    connection = KafkaConnection.from_settings(Settings.from_env({"VES_STREAMS_BROKER": "kafka://a:1;b:2"}))
    assert connection.bootstrap_servers == "a:1,b:2"
    assert connection.faust_broker == "kafka://a:1;b:2"
    assert connection.plaintext and connection.faust_credentials() is None
    assert connection.client_kwargs() == {"security_protocol": "PLAINTEXT"}


def test_sasl_credentials_reach_every_client_and_never_the_repr() -> None:
    security = KafkaSecurity(security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512",
                             sasl_plain_username="ves", sasl_plain_password="hunter2-kafka")  # type: ignore[arg-type]  # fmt: skip
    connection = KafkaConnection.parse("h:9092", security)
    assert not connection.plaintext
    kwargs = connection.client_kwargs()
    assert (kwargs["sasl_mechanism"], kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("SCRAM-SHA-512", "ves", "hunter2-kafka")
    credentials = connection.faust_credentials()
    assert credentials.username == "ves" and credentials.password == "hunter2-kafka"
    assert "hunter2-kafka" not in repr(connection) and connection.secrets() == ("hunter2-kafka",)
