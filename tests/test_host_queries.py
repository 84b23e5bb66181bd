"""The host directory behind ``/hosts``: what a worker lists, and where it sends a question."""

from __future__ import annotations

from ves_streams.collectd import ValueList
from ves_streams.host_queries import HostDirectory
from ves_streams.state import HostIndex, series_key


def _vl(host: str, plugin: str, when: float) -> ValueList:
    return ValueList(host, plugin, "", "gauge", "", when, 10.0, (1.0,), ("gauge",), ("value",))


def _directory(active: list[int], owners: dict[int, str]) -> HostDirectory:
    index = HostIndex()
    placement = {"a": 0, "b": 0, "c": 1, "far": 2}
    for host, partition in placement.items():
        if partition in active:
            for i, plugin in enumerate(("cpu", "memory", "load")):
                vl = _vl(host, plugin, 1000.0 + i)
                index.put(partition, series_key(vl), (vl,))
    index.set_marker(0, 990.0)
    index.built = True
    return HostDirectory(
        index=index, ensure_index=lambda: None, active_partitions=lambda: active,
        partition_of=lambda host: placement.get(host, 1), owners=lambda: owners, own_url=lambda: "http://me:6066",
    )  # fmt: skip


def test_hosts_are_listed_sorted_with_partition_newest_sample_series_and_last_window() -> None:
    body = _directory([0, 1], {}).hosts(limit=10)
    assert body["worker"] == "http://me:6066" and body["partitions"] == [0, 1]
    assert [h["host"] for h in body["hosts"]] == ["a", "b", "c"]
    assert body["hosts"][0] == {"host": "a", "partition": 0, "last_sample": 1002.0, "series": 3, "last_window": 990.0}
    assert body["hosts"][2]["last_window"] is None  # partition 1 has rendered no window yet
    assert (body["count"], body["truncated"]) == (3, False)


def test_the_limit_bounds_the_list_and_says_it_truncated() -> None:
    body = _directory([0, 1], {}).hosts(limit=2)
    assert [h["host"] for h in body["hosts"]] == ["a", "b"]
    assert (body["count"], body["truncated"]) == (3, True)


def test_a_host_of_an_own_partition_is_answered_here_and_an_unknown_one_is_a_404() -> None:
    directory = _directory([0, 1], {2: "http://other:6066"})
    assert directory.locate("b") == (0, "http://me:6066")
    status, body = directory.local_answer("b", 0)
    assert status == 200 and body["worker"] == "http://me:6066" and body["series"] == 3
    status, body = directory.local_answer("nobody", 1)
    assert status == 404 and "unknown host 'nobody'" in body["error"] and body["partition"] == 1


def test_a_host_of_another_workers_partition_is_located_at_its_owner_and_nowhere_while_unowned() -> None:
    assert _directory([0, 1], {2: "http://other:6066"}).locate("far") == (2, "http://other:6066")
    assert _directory([0, 1], {}).locate("far") == (2, None)
