"""docker-compose.yml cannot run here (no Docker engine); these checks keep it honest.

They parse the compose file and the Dockerfile it builds, and check what a
broken file would get wrong: a worker that cannot be scaled, a build target or
COPY source that does not exist, a command our CLI would refuse, a collectd
config pointing at the wrong broker or relay.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from ves_streams import resources
from ves_streams.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_compose_has_the_whole_pipeline() -> None:
    assert set(SERVICES) == {"kafka", "collectd", "relay", "worker", "collector"}


def test_every_dependency_names_a_service() -> None:
    for name, service in SERVICES.items():
        depends = service.get("depends_on", {})
        for dep in depends if isinstance(depends, (list, dict)) else []:
            assert dep in SERVICES, f"{name} depends on unknown service {dep}"


def test_worker_can_be_scaled() -> None:
    worker = SERVICES["worker"]
    assert "container_name" not in worker, "a fixed container name prevents --scale"
    assert "ports" not in worker, "a published host port prevents --scale"
    assert not worker.get("volumes"), "replicas must not share one RocksDB directory"


def test_build_targets_exist_in_the_dockerfile() -> None:
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", DOCKERFILE, flags=re.M))
    for name, service in SERVICES.items():
        build = service.get("build")
        if build:
            assert build["target"] in stages, f"{name}: no stage {build['target']} in Dockerfile"


def test_dockerfile_copies_only_paths_that_exist() -> None:
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", DOCKERFILE, flags=re.M))
    for line in DOCKERFILE.splitlines():
        if line.startswith("COPY"):
            words = shlex.split(line)[1:]
            flags = dict(w[2:].partition("=")[::2] for w in words if w.startswith("--"))
            sources = [w for w in words if not w.startswith("--")][:-1]
            if "from" in flags:  # copied out of an earlier stage
                assert flags["from"] in stages, f"Dockerfile copies from unknown stage {flags['from']}"
                continue
            for src in sources:
                assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"


def test_the_image_installs_the_wheel_and_no_tests() -> None:
    assert "pip wheel" in DOCKERFILE and "pip install /tmp/dist/*.whl" in DOCKERFILE
    copied = [w for line in DOCKERFILE.splitlines() if line.startswith("COPY") for w in shlex.split(line)[1:]]
    assert not any(w.startswith("tests") for w in copied), "the image must not need the tests"
    assert "VES_STREAMS_TOPOLOGY" not in re.sub(r"#.*", "", DOCKERFILE)  # the shipped default applies


@pytest.mark.parametrize("service", ["collector", "relay"])
def test_service_commands_parse_with_our_cli(service: str) -> None:
    command = SERVICES[service]["command"]
    assert command[0] == "ves-streams"
    args = build_parser().parse_args(command[1:])
    assert args.command == service


def test_worker_environment_points_at_the_compose_broker_and_collector() -> None:
    env = SERVICES["worker"]["environment"]
    assert env["VES_STREAMS_BROKER"] == "kafka://kafka:9092"
    assert "collector:30000" in env["VES_STREAMS_COLLECTOR_URL"]
    # ${VES_STREAMS_TOPOLOGY:-host.yaml}: the image holds the shipped topologies only
    topology = re.sub(r"^\$\{\w+:-(.*)\}$", r"\1", env["VES_STREAMS_TOPOLOGY"])
    assert resources.shipped_topology(topology) is not None


def test_kafka_advertises_the_name_clients_use() -> None:
    env = SERVICES["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]


def test_compose_collectd_config_targets_kafka_and_the_relay() -> None:
    conf = (ROOT / "deploy" / "collectd" / "collectd.conf").read_text()
    relay_cmd = SERVICES["relay"]["command"]
    relay_port = relay_cmd[relay_cmd.index("--port") + 1]
    assert '"metadata.broker.list" "kafka:9092"' in conf
    assert f"http://relay:{relay_port}/" in conf
    # the relay listens on the compose network: it asks for the token collectd sends
    token = re.sub(r"^\$\{\w+:-(.*)\}$", r"\1", SERVICES["relay"]["environment"]["VES_STREAMS_RELAY_TOKEN"])
    assert token and f'Header "Authorization: Bearer {token}"' in conf
    assert re.search(r"^\s*Format JSON", conf, flags=re.M)
