"""Fault injection through ``POST /_control`` on the real collector process."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from tests.dev.collector.samples import fault7, heartbeat7, measurement7
from tests.plugins.collector import VesCollector


def send(collector: VesCollector, event: dict[str, Any] | None = None) -> requests.Response:
    return requests.post(collector.event_url(7), json={"event": event or heartbeat7()}, timeout=30)


def test_503_window_then_recovery(ves_collector: VesCollector) -> None:
    faults = ves_collector.control(status=503, seconds=3, retry_after=1)
    assert faults["status"]["status"] == 503
    refused = send(ves_collector)
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["requestError"]["serviceException"]["messageId"] == "SVC1000"
    assert ves_collector.events() == []
    deadline = time.monotonic() + 10
    while (response := send(ves_collector)).status_code == 503:
        assert time.monotonic() < deadline, "collector still answers 503 long after the window"
        time.sleep(0.2)
    assert response.status_code == 202
    assert len(ves_collector.events()) == 1
    assert ves_collector.stats()["faults"]["status"] is None


def test_429_for_a_count_of_requests(ves_collector: VesCollector) -> None:
    ves_collector.control(status=429, retry_after=2, count=3)
    answers = [send(ves_collector) for _ in range(4)]
    assert [a.status_code for a in answers] == [429, 429, 429, 202]
    assert all(a.headers["Retry-After"] == "2" for a in answers[:3])
    assert len(ves_collector.events()) == 1
    assert ves_collector.stats()["requests"] == {"202": 1, "429": 3}
    [status_429] = {r["status"] for r in ves_collector.rejected()}
    assert status_429 == 429


def test_status_without_limit_lasts_until_reset(ves_collector: VesCollector) -> None:
    ves_collector.control(status=500)
    assert [send(ves_collector).status_code for _ in range(3)] == [500, 500, 500]
    ves_collector.control(reset=True)
    assert send(ves_collector).status_code == 202


def test_delay_is_per_request_and_does_not_block_the_server(ves_collector: VesCollector) -> None:
    ves_collector.control(delay=2.0)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=3) as pool:
        pending = [pool.submit(send, ves_collector) for _ in range(3)]
        health = requests.get(f"{ves_collector.url}/healthcheck", timeout=10)
        health_elapsed = time.monotonic() - started
        answers = [p.result() for p in pending]
    elapsed = time.monotonic() - started
    assert [a.status_code for a in answers] == [202, 202, 202]
    assert health.status_code == 200 and health_elapsed < 1.5, "healthcheck waited for the delayed requests"
    # One after the other they would take 6 s.
    assert 2.0 <= elapsed < 4.5, f"3 delayed requests took {elapsed:.2f}s: delays are not concurrent"
    ves_collector.control(delay=0)
    started = time.monotonic()
    assert send(ves_collector).status_code == 202
    assert time.monotonic() - started < 1.5


def test_rejected_event_ids_get_400(ves_collector: VesCollector) -> None:
    ves_collector.control(reject_event_ids=["poison-1"])
    poisoned = fault7(event_id="poison-1")
    refused = send(ves_collector, poisoned)
    assert refused.status_code == 400
    assert "poison-1" in refused.json()["requestError"]["serviceException"]["variables"][0]
    batch = [measurement7(), measurement7(event_id="poison-1")]
    assert requests.post(ves_collector.batch_url(7), json={"eventList": batch}, timeout=10).status_code == 400
    healthy = fault7(event_id="healthy-1")
    assert send(ves_collector, healthy).status_code == 202
    assert ves_collector.events() == [healthy]
    ves_collector.control(reject_event_ids=[])
    assert send(ves_collector, poisoned).status_code == 202


def test_reset_clears_every_fault(ves_collector: VesCollector) -> None:
    ves_collector.control(status=503, seconds=60, delay=0.5, reject_event_ids=["x"])
    faults = ves_collector.control(reset=True)
    assert faults == {
        "status": None, "delay": 0.0, "reject_event_ids": [], "reject_status": 400,
        "charset": None, "body_bytes": 0, "echo_auth": False, "onap_refusal": None, "refuse_domains": [],
    }
    assert send(ves_collector, fault7(event_id="x")).status_code == 202


@pytest.mark.parametrize(
    "command",
    [{"status": 200}, {"status": "503"}, {"seconds": 5}, {"count": 0, "status": 503}, {"delay": -1},
     {"reject_event_ids": "x"}, {"stauts": 503}, {}, {"reject_status": 200}, {"charset": 5},
     {"body_bytes": -1}, {"echo_auth": "yes"}, {"onap_refusal": "nope"}, {"refuse_domains": "fault"}],
)
def test_malformed_control_commands_are_refused_and_change_nothing(
    ves_collector: VesCollector, command: dict[str, Any]
) -> None:
    response = requests.post(f"{ves_collector.url}/_control", json=command, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]
    assert send(ves_collector).status_code == 202


def test_control_is_off_without_the_flag(ves_collector_factory: Any) -> None:
    collector: VesCollector = ves_collector_factory(control=False)
    assert requests.post(f"{collector.url}/_control", json={"status": 503}, timeout=10).status_code in (404, 405)
    assert send(collector).status_code == 202
    assert "faults" not in collector.stats()


# -- misbehaviours: the ways a collector (or a proxy in front of it) says no badly -----


def test_an_error_answer_declares_the_charset_asked_for(ves_collector: VesCollector) -> None:
    ves_collector.control(status=500, charset="x-no-such-charset")
    answer = send(ves_collector)
    assert answer.status_code == 500
    assert answer.headers["Content-Type"] == "application/json; charset=x-no-such-charset"


def test_an_error_answer_is_padded_to_the_size_asked_for(ves_collector: VesCollector) -> None:
    ves_collector.control(status=503, body_bytes=3_000_000)
    answer = send(ves_collector)
    assert answer.status_code == 503 and len(answer.content) == 3_000_000
    assert answer.json()["requestError"]["serviceException"]["messageId"] == "SVC1000"


def test_retry_after_is_sent_as_given_when_a_string(ves_collector: VesCollector) -> None:
    ves_collector.control(status=503, retry_after="-5")
    assert send(ves_collector).headers["Retry-After"] == "-5"


def test_echo_auth_puts_the_credentials_in_the_answer(ves_collector_factory: Any) -> None:
    collector: VesCollector = ves_collector_factory(username="sink", password="pw-echoed")
    collector_auth = ("sink", "pw-echoed")
    requests.post(f"{collector.url}/_control", json={"status": 500, "echo_auth": True}, timeout=10)
    answer = requests.post(collector.event_url(7), json={"event": heartbeat7()}, auth=collector_auth, timeout=10)
    assert answer.status_code == 500
    echo = answer.json()["echo"]
    assert echo["password"] == "pw-echoed" and echo["authorization"].startswith("Basic ")


def test_reject_status_answers_a_poisoned_event_with_500(ves_collector: VesCollector) -> None:
    ves_collector.control(reject_event_ids=["poison-5xx"], reject_status=500)
    assert send(ves_collector, fault7(event_id="poison-5xx")).status_code == 500
    assert send(ves_collector, fault7(event_id="healthy-5xx")).status_code == 202


def test_stats_count_client_connections(ves_collector: VesCollector) -> None:
    with requests.Session() as session:
        for _ in range(3):
            session.post(ves_collector.event_url(7), json={"event": heartbeat7()}, timeout=10)
    assert ves_collector.stats()["connections"] == 1
    send(ves_collector)
    assert ves_collector.stats()["connections"] == 2


def test_onap_configuration_refusals_answer_as_onap_does(ves_collector: VesCollector) -> None:
    ves_collector.control(onap_refusal="no_stream", refuse_domains=["fault"])
    refused = send(ves_collector, fault7(event_id="no-stream-1"))
    assert refused.status_code == 400
    assert refused.json()["requestError"]["serviceException"]["variables"] == ["No domain defined for stream id", "400"]
    assert send(ves_collector, heartbeat7()).status_code == 202, "other domains still go through"
    ves_collector.control(reset=True, onap_refusal="http_with_auth")
    refused = send(ves_collector)
    assert (refused.status_code, refused.text) == (400, "Operation not permitted")
    ves_collector.control(reset=True, onap_refusal="api_version")
    refused = send(ves_collector)
    assert (refused.status_code, refused.text) == (400, "API version v7 is not supported")
    ves_collector.control(reset=True)
    assert send(ves_collector).status_code == 202
