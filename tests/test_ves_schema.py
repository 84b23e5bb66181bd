"""Our VES schemas against a corpus of hand-written events, and against the official ONAP schemas.

Each corpus case says whether the event is valid. Our schema must give that
verdict; when the official ONAP files are present (``/work/shared/reference/ves``
or ``$VES_STREAMS_OFFICIAL_SCHEMA_DIR``) the official schema must give the
same one, so "our schema accepts it" keeps meaning "ONAP accepts it".
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ves_streams.dev.collector import schema as ves_schema
from ves_streams.dev.collector.schema import format_errors, official_validator, validate_event, validate_request

OFFICIAL_DIR = Path(os.environ.get("VES_STREAMS_OFFICIAL_SCHEMA_DIR", "/work/shared/reference/ves"))

Event = dict[str, Any]


# --- VES 7.2.1 events -------------------------------------------------------


def header7(domain: str, **overrides: Any) -> dict[str, Any]:
    header: dict[str, Any] = {
        "domain": domain,
        "eventId": f"{domain}-compute-0-000042",
        "eventName": f"{domain}_compute-0",
        "eventType": "hostOS",
        "lastEpochMicrosec": 1700000010000000,
        "priority": "Normal",
        "reportingEntityName": "compute-0",
        "sequence": 42,
        "sourceName": "compute-0",
        "startEpochMicrosec": 1700000000000000,
        "version": "4.1",
        "vesEventListenerVersion": "7.2.1",
    }
    header.update(overrides)
    return header


def measurement7() -> Event:
    return {
        "commonEventHeader": header7("measurement", nfNamingCode="HOST", timeZoneOffset="UTC+00.00"),
        "measurementFields": {
            "measurementFieldsVersion": "4.0",
            "measurementInterval": 10,
            "additionalFields": {"collectd_version": "5.12.0"},
            "additionalMeasurements": [
                {"name": "interface-eth0", "hashMap": {"if_octets-rx": "1234.5", "if_octets-tx": "42"}},
                {"name": "empty", "hashMap": {}},
            ],
            "cpuUsageArray": [
                {"cpuIdentifier": "0", "percentUsage": 12.5, "cpuIdle": 87.5, "cpuUsageUser": 10.0,
                 "cpuUsageSystem": 2.5, "cpuWait": 0.0, "cpuUsageSteal": 0, "cpuUsageInterrupt": 0,
                 "cpuUsageNice": 0, "cpuUsageSoftIrq": 0.1},
            ],
            "memoryUsageArray": [
                {"vmIdentifier": "compute-0", "memoryFree": 1024.0, "memoryUsed": 2048.0,
                 "memoryBuffered": 12, "memoryCached": 512, "memorySlabRecl": 1, "memorySlabUnrecl": 2},
            ],
            "nicPerformanceArray": [
                {"nicIdentifier": "eth0", "valuesAreSuspect": "false", "receivedOctetsDelta": 100,
                 "transmittedOctetsDelta": 200, "receivedErrorPacketsDelta": 0,
                 "operationalState": "inService"},
            ],
            "diskUsageArray": [
                {"diskIdentifier": "sda", "diskOctetsReadLast": 0, "diskOctetsWriteLast": 4096,
                 "diskOpsReadLast": 0, "diskOpsWriteLast": 1, "diskTimeWriteLast": 0.5},
            ],
            "loadArray": [{"shortTerm": 0.5, "midTerm": 0.4, "longTerm": 0.3}],
        },
    }


def fault7() -> Event:
    return {
        "commonEventHeader": header7("fault", priority="High", eventName="Fault_compute-0_cpu"),
        "faultFields": {
            "faultFieldsVersion": "4.0",
            "alarmCondition": "cpu-usage-high",
            "eventSeverity": "MAJOR",
            "eventSourceType": "host",
            "specificProblem": "CPU usage above 90%",
            "vfStatus": "Active",
            "alarmAdditionalInformation": {"plugin": "cpu", "value": "93.1"},
            "alarmInterfaceA": "cpu0",
            "eventCategory": "resource",
        },
    }


def heartbeat7() -> Event:
    return {
        "commonEventHeader": header7("heartbeat", eventName="Heartbeat_compute-0"),
        "heartbeatFields": {"heartbeatFieldsVersion": "3.0", "heartbeatInterval": 60,
                            "additionalFields": {"collectd": "up"}},
    }


# --- VES 5.4.1 events -------------------------------------------------------


def header5(domain: str, **overrides: Any) -> dict[str, Any]:
    header: dict[str, Any] = {
        "domain": domain,
        "eventId": f"{domain}-compute-0-7",
        "eventName": f"{domain}_compute-0",
        "lastEpochMicrosec": 1500000010000000,
        "priority": "Normal",
        "reportingEntityName": "compute-0",
        "sequence": 7,
        "sourceName": "compute-0",
        "startEpochMicrosec": 1500000000000000,
        "version": 3.0,
    }
    header.update(overrides)
    return header


def measurement5() -> Event:
    return {
        "commonEventHeader": header5("measurementsForVfScaling"),
        "measurementsForVfScalingFields": {
            "measurementsForVfScalingVersion": 2.0,
            "measurementInterval": 10,
            "additionalFields": [{"name": "collectd_version", "value": "5.12.0"}],
            "additionalMeasurements": [
                {"name": "interface-eth0", "arrayOfFields": [{"name": "if_octets-rx", "value": "1234.5"}]},
            ],
            "cpuUsageArray": [{"cpuIdentifier": "0", "percentUsage": 12.5, "cpuIdle": 87.5}],
            "memoryUsageArray": [{"vmIdentifier": "compute-0", "memoryFree": 1024, "memoryUsed": 2048}],
            "vNicPerformanceArray": [{"vNicIdentifier": "eth0", "valuesAreSuspect": "true", "receivedOctetsDelta": 1}],
            "diskUsageArray": [{"diskIdentifier": "sda", "diskOctetsWriteLast": 4096}],
        },
    }


def fault5() -> Event:
    return {
        "commonEventHeader": header5("fault", priority="High"),
        "faultFields": {
            "faultFieldsVersion": 2.0,
            "alarmCondition": "cpu-usage-high",
            "eventSeverity": "CRITICAL",
            "eventSourceType": "host",
            "specificProblem": "CPU usage above 90%",
            "vfStatus": "Active",
            "alarmAdditionalInformation": [{"name": "plugin", "value": "cpu"}],
        },
    }


def heartbeat5() -> Event:
    return {
        "commonEventHeader": header5("heartbeat"),
        "heartbeatFields": {"heartbeatFieldsVersion": 1.0, "heartbeatInterval": 60},
    }


# --- the corpus --------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    version: str
    build: Callable[[], Event]
    valid: bool

    def event(self) -> Event:
        return self.build()


def edit(base: Callable[[], Event], change: Callable[[Event], object]) -> Callable[[], Event]:
    """A builder that applies ``change`` to a fresh copy of ``base()``."""

    def build() -> Event:
        event = copy.deepcopy(base())
        change(event)
        return event

    return build


def set_(path: str, value: Any) -> Callable[[Event], None]:
    def change(event: Event) -> None:
        *parents, last = path.split(".")
        node: Any = event
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value

    return change


def drop(path: str) -> Callable[[Event], None]:
    def change(event: Event) -> None:
        *parents, last = path.split(".")
        node: Any = event
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[last]

    return change


H = "commonEventHeader"
M = "measurementFields"
F = "faultFields"
B = "heartbeatFields"
M5 = "measurementsForVfScalingFields"

CORPUS: list[Case] = [
    # VES 7 accepted
    Case("v7-measurement", "7", measurement7, True),
    Case("v7-fault", "7", fault7, True),
    Case("v7-heartbeat", "7", heartbeat7, True),
    Case("v7-header-only", "7", lambda: {H: header7("heartbeat")}, True),
    Case("v7-internal-header-fields", "7", edit(heartbeat7, set_(f"{H}.internalHeaderFields", {"x": 1})), True),
    Case("v7-header-version-4.0.1", "7", edit(fault7, set_(f"{H}.version", "4.0.1")), True),
    Case("v7-listener-7.0", "7", edit(fault7, set_(f"{H}.vesEventListenerVersion", "7.0")), True),
    Case("v7-fault-severity-normal", "7", edit(fault7, set_(f"{F}.eventSeverity", "NORMAL")), True),
    Case("v7-minimal-measurement", "7",
         lambda: {H: header7("measurement"), M: {"measurementFieldsVersion": "4.0", "measurementInterval": 60.5}}, True),
    # VES 7 refused
    Case("v7-unknown-header-property", "7", edit(fault7, set_(f"{H}.hostname", "compute-0")), False),
    Case("v7-unknown-event-block", "7", edit(fault7, set_("extraFields", {})), False),
    Case("v7-unknown-measurement-property", "7", edit(measurement7, set_(f"{M}.cpuCount", 4)), False),
    Case("v7-unknown-fault-property", "7", edit(fault7, set_(f"{F}.severity", "MAJOR")), False),
    Case("v7-unknown-cpu-property", "7", edit(measurement7, set_(f"{M}.cpuUsageArray.0.cpuSteal", 0)), False),
    Case("v7-hashmap-number-value", "7",
         edit(measurement7, set_(f"{M}.additionalMeasurements.0.hashMap.if_octets-rx", 1234.5)), False),
    Case("v7-additional-fields-number-value", "7", edit(measurement7, set_(f"{M}.additionalFields.n", 1)), False),
    Case("v7-alarm-information-number-value", "7",
         edit(fault7, set_(f"{F}.alarmAdditionalInformation.value", 93.1)), False),
    Case("v7-additional-measurements-v5-shape", "7",
         edit(measurement7, set_(f"{M}.additionalMeasurements",
                                 [{"name": "x", "arrayOfFields": [{"name": "a", "value": "1"}]}])), False),
    Case("v7-header-version-number", "7", edit(fault7, set_(f"{H}.version", 4.0)), False),
    Case("v7-header-version-3.0", "7", edit(fault7, set_(f"{H}.version", "3.0")), False),
    Case("v7-listener-version-5.4.1", "7", edit(fault7, set_(f"{H}.vesEventListenerVersion", "5.4.1")), False),
    Case("v7-listener-version-7.3", "7", edit(fault7, set_(f"{H}.vesEventListenerVersion", "7.3")), False),
    Case("v7-listener-version-number", "7", edit(fault7, set_(f"{H}.vesEventListenerVersion", 7.2)), False),
    Case("v7-missing-listener-version", "7", edit(fault7, drop(f"{H}.vesEventListenerVersion")), False),
    Case("v7-missing-source-name", "7", edit(measurement7, drop(f"{H}.sourceName")), False),
    Case("v7-missing-header", "7", edit(fault7, drop(H)), False),
    Case("v7-domain-v5-name", "7", edit(measurement7, set_(f"{H}.domain", "measurementsForVfScaling")), False),
    Case("v7-bad-priority", "7", edit(fault7, set_(f"{H}.priority", "Urgent")), False),
    Case("v7-sequence-string", "7", edit(fault7, set_(f"{H}.sequence", "42")), False),
    Case("v7-sequence-float", "7", edit(fault7, set_(f"{H}.sequence", 42.0)), False),
    Case("v7-bad-severity", "7", edit(fault7, set_(f"{F}.eventSeverity", "critical")), False),
    Case("v7-fault-missing-alarm-condition", "7", edit(fault7, drop(f"{F}.alarmCondition")), False),
    Case("v7-fault-missing-vf-status", "7", edit(fault7, drop(f"{F}.vfStatus")), False),
    Case("v7-fault-bad-vf-status", "7", edit(fault7, set_(f"{F}.vfStatus", "Up")), False),
    Case("v7-fault-version-number", "7", edit(fault7, set_(f"{F}.faultFieldsVersion", 4.0)), False),
    Case("v7-measurement-version-3.0", "7", edit(measurement7, set_(f"{M}.measurementFieldsVersion", "3.0")), False),
    Case("v7-measurement-missing-interval", "7", edit(measurement7, drop(f"{M}.measurementInterval")), False),
    Case("v7-cpu-missing-percent-usage", "7", edit(measurement7, drop(f"{M}.cpuUsageArray.0.percentUsage")), False),
    Case("v7-memory-missing-vm-identifier", "7",
         edit(measurement7, drop(f"{M}.memoryUsageArray.0.vmIdentifier")), False),
    Case("v7-nic-suspect-boolean", "7", edit(measurement7, set_(f"{M}.nicPerformanceArray.0.valuesAreSuspect", False)),
         False),
    Case("v7-nic-missing-suspect", "7", edit(measurement7, drop(f"{M}.nicPerformanceArray.0.valuesAreSuspect")), False),
    Case("v7-disk-value-string", "7", edit(measurement7, set_(f"{M}.diskUsageArray.0.diskOpsWriteLast", "1")), False),
    Case("v7-load-unknown-property", "7", edit(measurement7, set_(f"{M}.loadArray.0.veryLongTerm", 1)), False),
    Case("v7-heartbeat-interval-float", "7", edit(heartbeat7, set_(f"{B}.heartbeatInterval", 60.5)), False),
    Case("v7-heartbeat-interval-integral-float", "7", edit(heartbeat7, set_(f"{B}.heartbeatInterval", 60.0)), False),
    Case("v7-heartbeat-version-2.0", "7", edit(heartbeat7, set_(f"{B}.heartbeatFieldsVersion", "2.0")), False),
    Case("v7-heartbeat-missing-interval", "7", edit(heartbeat7, drop(f"{B}.heartbeatInterval")), False),
    # VES 5 accepted
    Case("v5-measurement", "5", measurement5, True),
    Case("v5-fault", "5", fault5, True),
    Case("v5-heartbeat", "5", heartbeat5, True),
    Case("v5-header-version-integer", "5", edit(fault5, set_(f"{H}.version", 3)), True),
    # 28.4.1 has no additionalProperties: false anywhere, so these pass there too.
    Case("v5-unknown-header-property", "5", edit(fault5, set_(f"{H}.hostname", "compute-0")), True),
    Case("v5-unknown-block", "5", edit(fault5, set_("extraFields", {"a": 1})), True),
    Case("v5-load-array-not-in-5", "5", edit(measurement5, set_(f"{M5}.loadArray", [{"shortTerm": 1}])), True),
    # VES 5 refused
    Case("v5-header-version-string", "5", edit(fault5, set_(f"{H}.version", "3.0")), False),
    Case("v5-domain-v7-name", "5", edit(measurement5, set_(f"{H}.domain", "measurement")), False),
    Case("v5-missing-header", "5", edit(fault5, drop(H)), False),
    Case("v5-missing-event-id", "5", edit(fault5, drop(f"{H}.eventId")), False),
    Case("v5-bad-severity", "5", edit(fault5, set_(f"{F}.eventSeverity", "SEVERE")), False),
    Case("v5-fault-missing-source-type", "5", edit(fault5, drop(f"{F}.eventSourceType")), False),
    Case("v5-fault-version-string", "5", edit(fault5, set_(f"{F}.faultFieldsVersion", "2.0")), False),
    Case("v5-fault-information-hashmap", "5",
         edit(fault5, set_(f"{F}.alarmAdditionalInformation", {"plugin": "cpu"})), False),
    Case("v5-field-number-value", "5",
         edit(measurement5, set_(f"{M5}.additionalMeasurements.0.arrayOfFields.0.value", 1234.5)), False),
    Case("v5-additional-measurements-v7-shape", "5",
         edit(measurement5, set_(f"{M5}.additionalMeasurements", [{"name": "x", "hashMap": {"a": "1"}}])), False),
    Case("v5-missing-interval", "5", edit(measurement5, drop(f"{M5}.measurementInterval")), False),
    Case("v5-missing-measurement-version", "5", edit(measurement5, drop(f"{M5}.measurementsForVfScalingVersion")),
         False),
    Case("v5-vnic-missing-identifier", "5", edit(measurement5, drop(f"{M5}.vNicPerformanceArray.0.vNicIdentifier")),
         False),
    Case("v5-heartbeat-interval-float", "5", edit(heartbeat5, set_(f"{B}.heartbeatInterval", 60.0)), False),
]


@pytest.fixture(scope="module")
def official() -> dict[str, Any] | None:
    """Official validators by major version, or None (with a warning) when the files are not on this machine."""
    if not (OFFICIAL_DIR / ves_schema.OFFICIAL_SCHEMA_FILES["7"]).is_file():
        warnings.warn(f"official VES schemas not found in {OFFICIAL_DIR}: agreement with them not checked")
        return None
    return {major: official_validator(major, OFFICIAL_DIR) for major in ves_schema.SUPPORTED_MAJORS}


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_our_schema_gives_the_expected_verdict(case: Case) -> None:
    errors = validate_event(case.event(), case.version)
    if case.valid:
        assert errors == []
    else:
        assert errors, "our schema accepted an invalid event"


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_the_fast_compiled_validator_and_jsonschema_reach_the_same_verdict(case: Case) -> None:
    """The compiled validator decides, jsonschema explains: they must agree on every case."""
    checks = ves_schema._validators(case.version)
    instance = {"event": case.event()}
    fast_accepts = ves_schema._fast_rejection(checks.fast_event, instance) is None
    slow_accepts = not list(checks.event.iter_errors(instance))
    assert fast_accepts == slow_accepts == case.valid
    batch = {"eventList": [instance["event"]]}
    assert (ves_schema._fast_rejection(checks.fast_request, batch) is None) == (not list(checks.request.iter_errors(batch)))


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_official_schema_agrees(case: Case, official: dict[str, Any] | None) -> None:
    if official is None:
        return
    errors = format_errors(official[case.version], {"event": case.event()})
    if case.valid:
        assert errors == [], "the official schema refuses an event we call valid"
    else:
        assert errors, "the official schema accepts an event we call invalid"


@pytest.mark.parametrize("version", ["5", "7"])
def test_batches_of_the_corpus_agree_with_the_official_schema(version: str, official: dict[str, Any] | None) -> None:
    valid = [c.event() for c in CORPUS if c.version == version and c.valid]
    invalid = [c.event() for c in CORPUS if c.version == version and not c.valid]
    assert validate_request({"eventList": valid}, version) == []
    for bad in invalid:
        assert validate_request({"eventList": [*valid, bad]}, version)
    if official is not None:
        assert format_errors(official[version], {"eventList": valid}) == []
        assert format_errors(official[version], {"eventList": [*valid, invalid[0]]})


def test_error_names_the_path_and_the_problem() -> None:
    errors = validate_event(edit(fault7, set_(f"{H}.version", 4))(), "7")
    assert "event.commonEventHeader.version: 4 is not of type 'string'" in errors


def test_error_paths_index_into_lists() -> None:
    event = edit(measurement7, set_(f"{M}.additionalMeasurements.0.hashMap.if_octets-rx", 1.5))()
    errors = validate_request({"eventList": [heartbeat7(), event]}, "7")
    assert errors == [
        "eventList[1].measurementFields.additionalMeasurements[0].hashMap.if_octets-rx: 1.5 is not of type 'string'"
    ]


def test_unknown_header_property_is_named() -> None:
    errors = validate_event(edit(fault7, set_(f"{H}.hostname", "x"))(), "v7")
    assert errors == ["event.commonEventHeader: Additional properties are not allowed ('hostname' was unexpected)"]


@pytest.mark.parametrize("body", [{}, {"event": heartbeat7(), "eventList": [heartbeat7()]}])
def test_request_needs_exactly_one_envelope(body: dict[str, Any]) -> None:
    errors = validate_request(body, "7")
    assert errors and errors[0].startswith("body: expected exactly one of 'event' or 'eventList'")


def test_request_refuses_unknown_envelope_and_non_objects() -> None:
    assert validate_request({"events": [heartbeat7()]}, "7") == [
        "body: Additional properties are not allowed ('events' was unexpected)"
    ]
    assert validate_request([1], "7") == ["body: [1] is not of type 'object'"]
    assert validate_event("x", "7") == ["event: 'x' is not of type 'object'"]


@pytest.mark.parametrize("version", ["7", "v7", "7.2.1", 7])
def test_version_spellings(version: Any) -> None:
    assert validate_event(heartbeat7(), version) == []
    assert validate_event(heartbeat5(), version)


@pytest.mark.parametrize("version", ["6", "v8", "", "seven"])
def test_unsupported_version_is_a_clear_error(version: str) -> None:
    with pytest.raises(ves_schema.UnsupportedVesVersionError, match="unsupported VES version"):
        validate_event(heartbeat7(), version)


def test_load_schema_returns_a_copy() -> None:
    schema = ves_schema.load_schema("7")
    assert schema["$schema"] == "http://json-schema.org/draft-04/schema#"
    schema["definitions"].clear()
    assert ves_schema.load_schema("7")["definitions"]
    assert validate_event(heartbeat7(), "7") == []


def test_missing_schema_dir_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ves_schema, "_shipped_schema_dir", lambda: tmp_path / "pkg")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ves_schema.SCHEMA_DIR_ENV, raising=False)
    with pytest.raises(ves_schema.SchemaNotFoundError, match=r"ves-5\.json not found .*VES_STREAMS_SCHEMA_DIR"):
        ves_schema.schema_path("5")
    monkeypatch.setenv(ves_schema.SCHEMA_DIR_ENV, str(Path(__file__).resolve().parent.parent / "schemas"))
    assert ves_schema.schema_path("5").name == "ves-5.json"


def test_official_validator_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ves_schema.SchemaNotFoundError, match="CommonEventFormat_30.2.1_ONAP.json"):
        official_validator("7", tmp_path)


# --- structure: what we model, we model as the official file does -----------

#: Our definitions that mirror an official definition of the same name, property for property.
MIRRORED = {
    "7": ["event", "commonEventHeader", "namedHashMap", "measurementFields", "cpuUsage", "memoryUsage",
          "nicPerformance", "diskUsage", "load", "faultFields", "heartbeatFields"],
    "5": ["event", "commonEventHeader", "field", "namedArrayOfFields", "measurementsForVfScalingFields", "cpuUsage",
          "memoryUsage", "vNicPerformance", "diskUsage", "faultFields", "heartbeatFields"],
}


def _leaf(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: schema[k] for k in ("type", "enum") if k in schema}


@pytest.mark.parametrize(
    ("version", "name"), [(v, n) for v, names in MIRRORED.items() for n in names], ids=lambda x: str(x)
)
def test_mirrored_definition_matches_the_official_one(version: str, name: str, official: dict[str, Any] | None) -> None:
    if official is None:
        return
    ours = ves_schema.load_schema(version)["definitions"][name]
    theirs = official[version].schema["definitions"][name]
    assert set(ours["properties"]) == set(theirs["properties"]), "property names differ"
    assert sorted(ours.get("required", [])) == sorted(theirs.get("required", []))
    assert ours.get("additionalProperties", True) == theirs.get("additionalProperties", True)
    for prop, their_prop in theirs["properties"].items():
        our_prop = ours["properties"][prop]
        if "type" in their_prop:
            assert _leaf(our_prop) == _leaf(their_prop), f"{name}.{prop} differs"


def test_listener_version_accepts_exactly_the_7x_versions() -> None:
    candidates = ["7.0", "7.0.1", "7.1", "7.1.1", "7.2", "7.2.1", "7", "7.3", "7.2.2", "5.4.1", "7.2.1\n", " 7.2"]
    accepted = [
        c for c in candidates
        if not validate_event(edit(heartbeat7, set_(f"{H}.vesEventListenerVersion", c))(), "7")
    ]
    assert accepted == ["7.0", "7.0.1", "7.1", "7.1.1", "7.2", "7.2.1"]
