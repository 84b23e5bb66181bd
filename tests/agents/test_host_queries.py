"""Interactive queries: ``GET /hosts`` and ``GET /hosts/{name}`` answered by either of two workers."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.agents.conftest import INTERVAL
from tests.agents.support import KafkaIO, Names, Worker, host_messages, measurement_windows
from ves_streams.wire.samples import host_partition

pytestmark = pytest.mark.integration

HOSTS = [f"query-host-{i}" for i in range(8)]


def _feed_until_rendered(kafka_io: KafkaIO, names: Names, workers: list[Worker]) -> None:
    events = kafka_io.reader([names.events])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for host in HOSTS:
            kafka_io.produce_many(names.values, host_messages(host, time.time(), interval=INTERVAL))
        time.sleep(INTERVAL)
        if set(measurement_windows(events.snapshot())) >= set(HOSTS):
            return
    raise AssertionError(f"not every host rendered within 60 s; logs:\n{workers[0].log_tail()}\n{workers[1].log_tail()}")


def test_either_worker_lists_its_own_hosts_and_answers_for_any_host_naming_its_owner(
    start_worker: Callable[..., Worker], kafka_io: KafkaIO, names: Names
) -> None:
    env = {"VES_STREAMS_WEB_HOST": "127.0.0.1"}
    workers = [start_worker("w1", **env), start_worker("w2", **env)]
    _feed_until_rendered(kafka_io, names, workers)
    urls = {w.name: f"http://127.0.0.1:{w.web_port}" for w in workers}

    listed = {w.name: w.get("/hosts").json() for w in workers}
    for name, body in listed.items():
        assert body["worker"] == urls[name]
        for entry in body["hosts"]:
            assert entry["partition"] in body["partitions"], entry
            assert entry["partition"] == host_partition(entry["host"], 4)
            assert entry["series"] > 0 and entry["last_sample"] > time.time() - 60
            assert entry["last_window"] is not None and entry["last_window"] % INTERVAL == 0
        assert body["count"] == len(body["hosts"]) and not body["truncated"]
    mine = {name: {e["host"] for e in body["hosts"]} for name, body in listed.items()}
    assert mine["w1"] | mine["w2"] == set(HOSTS), "every host is listed by the worker that holds it"
    assert not mine["w1"] & mine["w2"], "no host is held by both workers"
    assert not set(listed["w1"]["partitions"]) & set(listed["w2"]["partitions"])

    for host in HOSTS:
        owner = "w1" if host in mine["w1"] else "w2"
        answers = [w.get(f"/hosts/{host}", timeout=10) for w in workers]
        for asked, answer in zip(workers, answers):
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["host"] == host and body["worker"] == urls[owner], body
            assert body["asked"] == urls[asked.name]
            assert body["partition"] == host_partition(host, 4) and body["series"] > 0

    limited = workers[0].get("/hosts?limit=1").json()
    assert len(limited["hosts"]) == 1 and limited["truncated"] == (limited["count"] > 1)
    assert workers[0].get("/hosts?limit=0").status_code == 400

    for w in workers:
        unknown = w.get("/hosts/no-such-host", timeout=10)
        assert unknown.status_code == 404
        assert "unknown host 'no-such-host'" in unknown.json()["error"]


def test_a_worker_listens_only_where_told_asks_for_its_token_and_serves_no_faust_table_views(
    start_worker: Callable[..., Worker]
) -> None:
    import requests

    token = "web-t0ken-hunter2"
    worker = start_worker("guarded", wait=False, VES_STREAMS_WEB_BIND="127.0.0.2", VES_STREAMS_WEB_TOKEN=token)
    base = f"http://127.0.0.2:{worker.web_port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if requests.get(f"{base}/ready", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert worker.running and time.monotonic() < deadline, worker.log_tail()
        time.sleep(0.25)
    with pytest.raises(requests.ConnectionError):  # not on every interface: not on 127.0.0.1
        requests.get(f"http://127.0.0.1:{worker.web_port}/ready", timeout=2)
    assert requests.get(f"{base}/metrics", timeout=5).status_code == 200  # probes and scrapes stay open
    for path in ("/hosts", "/hosts/some-host", "/alarms"):
        refused = requests.get(f"{base}{path}", timeout=5)
        assert refused.status_code == 401, (path, refused.text)
        assert requests.get(f"{base}{path}", headers={"Authorization": "Bearer wrong"}, timeout=5).status_code == 401
        allowed = requests.get(f"{base}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert allowed.status_code in (200, 404), (path, allowed.text)  # 404: an unknown host, answered
    for path in ("/router/", "/table/samples-state/"):
        assert requests.get(f"{base}{path}", timeout=5).status_code == 404, path
    assert token not in worker.log_text()
