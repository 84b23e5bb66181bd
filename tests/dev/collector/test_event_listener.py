"""The collector's event listener API, through real HTTP against a real ``ves-streams collector`` process."""

from __future__ import annotations

import copy
from typing import Any

import requests

from tests.dev.collector.samples import fault7, heartbeat7, measurement5, measurement7
from tests.plugins.collector import VesCollector


def post(url: str, body: Any, **kwargs: Any) -> requests.Response:
    return requests.post(url, json=body, timeout=10, **kwargs)


def service_exception(response: requests.Response) -> dict[str, Any]:
    exception: dict[str, Any] = response.json()["requestError"]["serviceException"]
    return exception


def test_valid_v7_event_is_accepted_with_202_and_recorded(ves_collector: VesCollector) -> None:
    event = measurement7()
    response = post(ves_collector.event_url(7), {"event": event})
    assert response.status_code == 202
    assert response.content == b""
    [record] = ves_collector.records()
    assert record["event"] == event
    assert record["path"] == "/eventListener/v7"
    assert isinstance(record["received_at"], float)
    assert ves_collector.rejected() == []


def test_each_accepted_event_gets_a_console_line(ves_collector: VesCollector) -> None:
    event = fault7(event_id="fault-console-1")
    assert post(ves_collector.event_url(7), {"event": event}).status_code == 202
    ves_collector.wait_for(1)
    line = next(ln for ln in ves_collector.output().splitlines() if "fault-console-1" in ln)
    assert line.split()[:2] == ["accepted", "fault"]
    assert "source=compute-0" in line and "name=fault_compute-0" in line


def test_quiet_collector_prints_no_event_lines(ves_collector_factory: Any) -> None:
    collector = ves_collector_factory(quiet=True)
    assert post(collector.event_url(7), {"event": heartbeat7()}).status_code == 202
    assert collector.wait_for(1)
    assert "accepted" not in collector.output()


def test_invalid_event_is_refused_with_a_ves_error_and_not_recorded(ves_collector: VesCollector) -> None:
    event = measurement7()
    event["commonEventHeader"]["version"] = 4
    response = post(ves_collector.event_url(7), {"event": event})
    assert response.status_code == 400
    exception = service_exception(response)
    assert exception["messageId"] == "SVC0002"
    assert exception["text"] == "Bad Parameter: %1"
    assert "event.commonEventHeader.version: 4 is not of type 'string'" in exception["variables"][0]
    assert ves_collector.events() == []
    [refused] = ves_collector.rejected()
    assert refused["status"] == 400
    assert refused["body"] == {"event": event}
    assert refused["event_ids"] == [event["commonEventHeader"]["eventId"]]


def test_topic_and_prefixed_paths_are_event_listener_paths(ves_collector: VesCollector) -> None:
    assert post(ves_collector.event_url(7, topic="ves-measurement"), {"event": measurement7()}).status_code == 202
    assert post(f"{ves_collector.url}/ves/api/eventListener/v7", {"event": measurement7()}).status_code == 202
    assert post(f"{ves_collector.url}/ves/eventListener/v7/eventBatch", {"eventList": [heartbeat7()]}).status_code == 202
    paths = [r["path"] for r in ves_collector.records()]
    assert paths == ["/eventListener/v7/ves-measurement", "/ves/api/eventListener/v7", "/ves/eventListener/v7/eventBatch"]


def test_batch_of_one_domain_is_accepted_in_order(ves_collector: VesCollector) -> None:
    batch = [measurement7(source=f"host-{i}") for i in range(5)]
    response = post(ves_collector.batch_url(7), {"eventList": batch})
    assert response.status_code == 202
    records = ves_collector.records()
    assert [r["event"] for r in records] == batch
    assert len({r["request"] for r in records}) == 1
    assert ves_collector.stats()["events_accepted"] == 5


def test_batch_mixing_domains_is_refused_with_svc0001(ves_collector: VesCollector) -> None:
    response = post(ves_collector.batch_url(7), {"eventList": [measurement7(), fault7()]})
    assert response.status_code == 400
    exception = service_exception(response)
    assert exception["messageId"] == "SVC0001"
    assert "Mixed domains" in exception["text"]
    assert exception["variables"] == ["fault, measurement"]
    assert ves_collector.events() == []


def test_batch_with_one_invalid_event_is_refused_whole(ves_collector: VesCollector) -> None:
    bad = measurement7()
    bad["measurementFields"]["additionalMeasurements"][0]["hashMap"]["shortterm"] = 0.5
    response = post(ves_collector.batch_url(7), {"eventList": [measurement7(), bad, measurement7()]})
    assert response.status_code == 400
    assert service_exception(response)["variables"] == [
        "eventList[1].measurementFields.additionalMeasurements[0].hashMap.shortterm: 0.5 is not of type 'string'"
    ]
    assert ves_collector.events() == []


def test_empty_batch_is_refused(ves_collector: VesCollector) -> None:
    response = post(ves_collector.batch_url(7), {"eventList": []})
    assert response.status_code == 400
    assert service_exception(response)["variables"] == ["eventList is empty"]


def test_envelope_must_match_the_path(ves_collector: VesCollector) -> None:
    single_on_batch = post(ves_collector.batch_url(7), {"event": heartbeat7()})
    batch_on_single = post(ves_collector.event_url(7), {"eventList": [heartbeat7()]})
    assert (single_on_batch.status_code, batch_on_single.status_code) == (400, 400)
    assert "takes a body with 'eventList'" in service_exception(single_on_batch)["variables"][0]
    assert "takes a body with 'event'" in service_exception(batch_on_single)["variables"][0]
    assert ves_collector.events() == []


def test_v5_path_validates_with_the_v5_schema(ves_collector: VesCollector) -> None:
    v5_event = measurement5()
    assert post(ves_collector.event_url(5), {"event": v5_event}).status_code == 202
    on_v7 = post(ves_collector.event_url(7), {"event": measurement5()})
    v7_on_v5 = post(ves_collector.event_url(5), {"event": measurement7()})
    assert (on_v7.status_code, v7_on_v5.status_code) == (400, 400)
    assert "'measurementsForVfScaling' is not one of" in service_exception(on_v7)["variables"][0]
    assert "event.commonEventHeader.version: '4.1' is not of type 'number'" in service_exception(v7_on_v5)["variables"][0]
    # 28.4.1 semantics: an unknown header property passes on v5 but not on v7.
    extra5, extra7 = measurement5(), heartbeat7()
    extra5["commonEventHeader"]["hostname"] = extra7["commonEventHeader"]["hostname"] = "compute-0"
    assert post(ves_collector.event_url(5), {"event": extra5}).status_code == 202
    assert post(ves_collector.event_url(7), {"event": extra7}).status_code == 400
    assert ves_collector.events() == [v5_event, extra5]
    assert [r["path"] for r in ves_collector.records()] == ["/eventListener/v5"] * 2


def test_unsupported_version_is_refused(ves_collector: VesCollector) -> None:
    response = post(ves_collector.event_url(6), {"event": heartbeat7()})
    assert response.status_code == 400
    assert "API version 'v6' is not supported" in service_exception(response)["variables"][0]


def test_unparseable_json_is_refused_and_kept_raw(ves_collector: VesCollector) -> None:
    response = requests.post(ves_collector.event_url(7), data=b'{"event": {', timeout=10,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert service_exception(response)["variables"][0].startswith("Incorrect JSON payload")
    [refused] = ves_collector.rejected()
    assert refused["body"] is None and refused["raw"] == '{"event": {'


def test_body_must_be_declared_json(ves_collector: VesCollector) -> None:
    response = requests.post(ves_collector.event_url(7), data=b'{"event": {}}', timeout=10,
                             headers={"Content-Type": "text/plain"})
    assert response.status_code == 400
    assert "Content-Type" in service_exception(response)["variables"][0]


def test_stats_count_requests_by_status_and_events_by_domain(ves_collector: VesCollector) -> None:
    post(ves_collector.batch_url(7), {"eventList": [measurement7(), measurement7()]})
    post(ves_collector.event_url(7), {"event": fault7()})
    bad = copy.deepcopy(fault7())
    bad["faultFields"]["eventSeverity"] = "SEVERE"
    post(ves_collector.event_url(7), {"event": bad})
    stats = ves_collector.stats()
    assert stats["requests"] == {"202": 2, "400": 1}
    assert stats["requests_total"] == 3
    assert stats["events_accepted"] == 3
    assert stats["events_refused"] == 1
    assert stats["accepted_by_domain"] == {"fault": 1, "measurement": 2}


def test_healthcheck_and_unknown_paths(ves_collector: VesCollector) -> None:
    assert requests.get(f"{ves_collector.url}/healthcheck", timeout=10).json() == {"status": "ok"}
    assert requests.post(f"{ves_collector.url}/somewhere", json={}, timeout=10).status_code == 404
    assert requests.get(ves_collector.event_url(7), timeout=10).status_code == 405


def test_sigterm_stops_the_collector_cleanly(ves_collector: VesCollector) -> None:
    assert post(ves_collector.event_url(7), {"event": heartbeat7()}).status_code == 202
    assert ves_collector.stop() == 0
    assert "VES collector stopping" in ves_collector.output()
    assert len(ves_collector.events()) == 1
