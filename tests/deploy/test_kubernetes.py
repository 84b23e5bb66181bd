"""deploy/kubernetes cannot be applied here (no cluster); these checks keep it honest.

Every manifest document is validated against the Kubernetes OpenAPI schema
(``kubernetes-validate``, strict: an unknown or misspelt field fails), for
the oldest Kubernetes the manifests claim (1.30) and the newest the validator
ships. The rest checks what the schema cannot see and a broken manifest would
get wrong: a worker without its probes, role or data volume, a password as a
literal value, a variable no setting reads, a selector that selects nothing,
a port or a ``$(VAR)`` that resolves to nothing, a file the kustomization
forgets.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ves_streams import settings as settings_module
from ves_streams.settings import Role, Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
COLLECTOR_COMPONENT = K8S / "extras" / "collector"

#: Files in deploy/kubernetes that are not resources of the base kustomization.
NOT_RESOURCES = {"kustomization.yaml", "secret.example.yaml"}
#: The oldest Kubernetes the manifests are written for; the newest the validator ships is checked too.
OLDEST_KUBERNETES = "1.30"

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}
WORKER_ARGV = ["faust", "-A", "ves_streams", "worker"]
WEB_PORT_DEFAULT = next(f.default for f in dataclasses.fields(Settings) if f.name == "web_port")

#: Peak RSS of one worker at 1000 hosts (MB, README "Performance": 281-324 MB over a day's runs)
#: and of a sink-only worker (bench/README.md, the sink line: 84 MB).
PROCESSING_PEAK_RSS_MB = 324
SINK_PEAK_RSS_MB = 84
#: Headroom a memory limit leaves over the peak (a recovery, RocksDB caches).
MEMORY_LIMIT_HEADROOM = 1.5


# --------------------------------------------------------------------------
# loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys; kubectl refuses them. So do we."""


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def load_documents(path: Path) -> list[dict[str, Any]]:
    with path.open() as stream:  # a file stream: errors name the file and line
        return [doc for doc in yaml.load_all(stream, Loader=_UniqueKeyLoader) if doc is not None]


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


BASE_FILES = sorted(p for p in K8S.glob("*.yaml") if p.name not in NOT_RESOURCES)
EXAMPLE_FILES = [K8S / "secret.example.yaml"]
COMPONENT_FILES = sorted(p for p in COLLECTOR_COMPONENT.glob("*.yaml") if p.name != "kustomization.yaml")
MANIFEST_FILES = BASE_FILES + EXAMPLE_FILES + COMPONENT_FILES

DOCUMENTS: list[tuple[Path, int, dict[str, Any]]] = [
    (path, index, doc) for path in MANIFEST_FILES for index, doc in enumerate(load_documents(path))
]
BASE_DOCUMENTS = [doc for path, _, doc in DOCUMENTS if path in BASE_FILES]
DEPLOYED_DOCUMENTS = [doc for path, _, doc in DOCUMENTS if path not in EXAMPLE_FILES]


def doc_id(path: Path, index: int, doc: dict[str, Any]) -> str:
    return f"{rel(path)}#{index}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def of_kind(docs: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") in kinds]


def name_of(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


WORKLOADS = of_kind(DEPLOYED_DOCUMENTS, *WORKLOAD_KINDS)
CONFIGMAPS = {d["metadata"]["name"]: d.get("data", {}) for d in of_kind(DEPLOYED_DOCUMENTS, "ConfigMap")}
EXAMPLE_SECRETS = {
    d["metadata"]["name"]: {**d.get("stringData", {}), **d.get("data", {})}
    for d in of_kind([doc for path, _, doc in DOCUMENTS if path in EXAMPLE_FILES], "Secret")
}


def containers_of(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def all_containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for workload in WORKLOADS:
        for container in containers_of(workload):
            yield workload, container


def container_id(workload: dict[str, Any], container: dict[str, Any]) -> str:
    return f"{name_of(workload)}:{container['name']}"


# --------------------------------------------------------------------------
# what the project says: the image's command, the settings, the served paths


def image_cmd() -> list[str]:
    """The CMD of the Dockerfile's ``ves-streams`` stage (what a container without command runs)."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    stage = dockerfile.split("AS ves-streams", 1)[1].split("\nFROM ", 1)[0]
    match = re.search(r"^CMD\s+(\[.*\])\s*$", stage, flags=re.M)
    assert match, "no exec-form CMD in the Dockerfile's ves-streams stage"
    return json.loads(match.group(1))


def argv_of(container: dict[str, Any]) -> list[str]:
    """What the container runs (the image has no ENTRYPOINT: args alone replace its CMD)."""
    command, args = container.get("command"), container.get("args")
    if command:
        return list(command) + list(args or [])
    return list(args) if args else image_cmd()


def is_worker(container: dict[str, Any]) -> bool:
    return argv_of(container)[: len(WORKER_ARGV)] == WORKER_ARGV


def setting_names() -> set[str]:
    """Every ``VES_STREAMS_*`` variable the worker reads (``Settings`` fields built with ``_env``)."""
    names = {f.metadata["env"] for f in dataclasses.fields(Settings) if "env" in f.metadata}
    assert names, "found no settings: has the way Settings names its variables changed?"
    assert all(n.startswith(settings_module.PREFIX) for n in names)
    assert {"VES_STREAMS_BROKER", "VES_STREAMS_ROLE", "VES_STREAMS_WEB_PORT"} <= names
    return names


def secret_setting_names() -> set[str]:
    """Settings held as :class:`Secret` (passwords), plus every ``*_USERNAME``/``*_PASSWORD`` one."""
    secret = {f.metadata["env"] for f in dataclasses.fields(Settings) if "env" in f.metadata and "Secret" in str(f.type)}
    assert {"VES_STREAMS_COLLECTOR_PASSWORD", "VES_STREAMS_KAFKA_PASSWORD"} <= secret
    return secret | {n for n in setting_names() if looks_secret(n)}


def looks_secret(name: str) -> bool:
    return re.search(r"(PASSWORD|USERNAME|SECRET|TOKEN)$", name) is not None


def worker_paths() -> set[str]:
    """Paths the worker's web server serves (``@app.page`` in ``metrics.register_views``)."""
    from ves_streams.metrics import register_views

    return set(re.findall(r"""@app\.page\(\s*["']([^"']+)["']""", inspect.getsource(register_views)))


def aiohttp_get_paths(app: Any) -> set[str]:
    paths = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        if route.method in ("GET", "*") and "path" in info:
            paths.add(info["path"])
    return paths


def relay_paths() -> set[str]:
    from ves_streams.notification_relay import make_relay_app

    with warnings.catch_warnings():
        # the relay's /healthcheck handler is a plain lambda (aiohttp: "Bare functions are deprecated")
        warnings.filterwarnings("ignore", "Bare functions are deprecated", DeprecationWarning)
        app = make_relay_app(None, "collectd-notifications")  # type: ignore[arg-type]  # the producer is used per request
    return aiohttp_get_paths(app)


def collector_paths() -> set[str]:
    from ves_streams.dev.collector.config import CollectorConfig
    from ves_streams.dev.collector.server import create_app

    return aiohttp_get_paths(create_app(CollectorConfig(), None))  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# a container's environment, as Kubernetes builds it


def env_sources(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Variable name -> its source: ``{"value": ...}``, ``{"valueFrom": ...}`` or ``{"configMap": name}``."""
    out: dict[str, dict[str, Any]] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        assert ref is not None, f"envFrom other than a configMapRef: {source}"
        assert ref["name"] in CONFIGMAPS, f"envFrom names no ConfigMap of deploy/kubernetes: {ref['name']}"
        prefix = source.get("prefix", "")
        for key in CONFIGMAPS[ref["name"]]:
            out[prefix + key] = {"configMap": ref["name"], "key": key}
    for var in container.get("env", []):
        out[var["name"]] = {k: v for k, v in var.items() if k != "name"}
    return out


def resolve_env(container: dict[str, Any], secrets: dict[str, dict[str, str]] | None = None) -> dict[str, str]:
    """The variables the process sees: ConfigMap values, literals, field refs (a made-up pod IP), and
    Secret keys when ``secrets`` has them (an optional key that is missing leaves the variable unset)."""
    out: dict[str, str] = {}
    for name, source in env_sources(container).items():
        if "configMap" in source:
            out[name] = str(CONFIGMAPS[source["configMap"]][source["key"]])
        elif "value" in source:
            out[name] = expand(str(source["value"]), out)
        elif "valueFrom" in source:
            ref = source["valueFrom"]
            if "configMapKeyRef" in ref:
                out[name] = str(CONFIGMAPS[ref["configMapKeyRef"]["name"]][ref["configMapKeyRef"]["key"]])
            elif "secretKeyRef" in ref:
                value = (secrets or {}).get(ref["secretKeyRef"]["name"], {}).get(ref["secretKeyRef"]["key"])
                if value is None:
                    assert ref["secretKeyRef"].get("optional"), f"{name}: a required Secret key the test cannot supply"
                else:
                    out[name] = value
            elif "fieldRef" in ref:
                out[name] = {"status.podIP": "10.1.2.3", "metadata.name": "pod-0"}.get(ref["fieldRef"]["fieldPath"], "x")
            else:
                raise AssertionError(f"{name}: unexpected valueFrom {ref}")
    return out


_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion (an undefined reference stays as it is)."""
    return _REFERENCE.sub(lambda m: env.get(m.group(1), m.group(0)), text)


def worker_settings(container: dict[str, Any], secrets: dict[str, dict[str, str]] | None = None) -> Settings:
    """The settings the worker in ``container`` would start with (or a failure naming why it would not)."""
    env = resolve_env(container, secrets)
    try:
        return Settings.from_env(env)
    except SettingsError as exc:
        pytest.fail(f"container {container['name']} (VES_STREAMS_ROLE={env.get('VES_STREAMS_ROLE')}) would not start: {exc}")


def resolved_argv(container: dict[str, Any]) -> list[str]:
    env = resolve_env(container)
    return [expand(arg, env) for arg in argv_of(container)]


def container_ports(workload: dict[str, Any]) -> dict[str | int, int]:
    """Port name or number -> number, over the pod's containers."""
    ports: dict[str | int, int] = {}
    for container in containers_of(workload):
        for port in container.get("ports", []):
            ports[port["containerPort"]] = port["containerPort"]
            if "name" in port:
                ports[port["name"]] = port["containerPort"]
    return ports


def probe_port(workload: dict[str, Any], container: dict[str, Any], probe: dict[str, Any]) -> int:
    port = probe["httpGet"]["port"]
    own = {p["containerPort"] for p in container.get("ports", [])} | {p.get("name") for p in container.get("ports", [])}
    assert port in own, f"{container_id(workload, container)}: probe port {port!r} is no port of this container"
    return container_ports(workload)[port]


def flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector (``matchLabels``/``matchExpressions``) or a Service's plain selector map."""
    match_labels = selector.get("matchLabels", {}) if "matchLabels" in selector or "matchExpressions" in selector else selector
    if any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    for expr in selector.get("matchExpressions", []) if "matchExpressions" in selector else []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": labels.get(key) in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return bool(match_labels or selector.get("matchExpressions"))


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"].get("labels", {})


def selected_workloads(selector: dict[str, Any]) -> list[dict[str, Any]]:
    return [w for w in WORKLOADS if selects(selector, pod_labels(w))]


_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|k|Ki|M|Mi|G|Gi|T|Ti)?$")
_FACTORS = {None: 1, "m": 1e-3, "k": 1e3, "Ki": 2**10, "M": 1e6, "Mi": 2**20, "G": 1e9, "Gi": 2**30, "T": 1e12, "Ti": 2**40}


def quantity(value: str | int | float) -> float:
    match = _QUANTITY.match(str(value))
    assert match, f"not a quantity we parse: {value!r}"
    return float(match.group(1)) * _FACTORS[match.group(2)]


# --------------------------------------------------------------------------
# the schema


def _validator() -> Any:
    try:
        import kubernetes_validate
    except ImportError:  # a check that silently skips would be worth nothing
        pytest.fail("kubernetes-validate is not installed: pip install -e '.[test]'")
    return kubernetes_validate


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, "newest"])
@pytest.mark.parametrize(("path", "index"), [(p, i) for p, i, _ in DOCUMENTS], ids=[doc_id(*d) for d in DOCUMENTS])
def test_manifest_matches_the_kubernetes_schema(path: Path, index: int, version: str) -> None:
    kv = _validator()
    if version == "newest":
        version = kv.utils.major_minor(kv.latest_version())
    doc = load_documents(path)[index]
    problem = validated = None
    try:
        validated = kv.validate(doc, version, strict=True)
    except kv.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path) or "(top)"
        problem = f"{doc_id(path, index, doc)} against Kubernetes {exc.version}, at {where}: {exc.message}"
    except kv.utils.SchemaNotFoundError as exc:
        problem = f"{doc_id(path, index, doc)}: {exc.message}"
    if problem:  # outside the except: the validator's traceback would print the whole schema
        pytest.fail(problem)
    assert validated == version, f"validated against {validated}, not {version} (the validator lacks its schema)"


def test_the_documents_were_found() -> None:
    kinds = {d["kind"] for d in BASE_DOCUMENTS}
    assert {"ConfigMap", "Service", "StatefulSet", "Deployment", "PodDisruptionBudget"} <= kinds
    names = [name_of(d) for d in DEPLOYED_DOCUMENTS + of_kind([d for _, _, d in DOCUMENTS], "Secret")]
    assert len(names) == len(set(names)), f"two documents of one kind and name: {sorted(names)}"


# --------------------------------------------------------------------------
# kustomize


def test_the_kustomization_lists_every_base_file() -> None:
    kustomization = load_documents(K8S / "kustomization.yaml")[0]
    assert kustomization["kind"] == "Kustomization"
    resources = kustomization.get("resources", [])
    assert len(resources) == len(set(resources)), f"listed twice: {resources}"
    assert sorted(resources) == sorted(p.name for p in BASE_FILES), (
        "deploy/kubernetes/kustomization.yaml must list exactly the base files "
        f"(all *.yaml but {sorted(NOT_RESOURCES)}): lists {sorted(resources)}, "
        f"directory has {sorted(p.name for p in BASE_FILES)}"
    )
    assert not set(resources) & {p.name for p in EXAMPLE_FILES}, "an example Secret must never be applied"
    assert not any(r.startswith("extras") for r in resources), "the collector is an optional extra"


def test_the_collector_component_points_the_sinks_at_the_collector() -> None:
    component = load_documents(COLLECTOR_COMPONENT / "kustomization.yaml")[0]
    assert component["kind"] == "Component"
    assert sorted(component["resources"]) == sorted(p.name for p in COMPONENT_FILES)
    services = {s["metadata"]["name"]: s for s in of_kind(DEPLOYED_DOCUMENTS, "Service")}
    (patch,) = component["patches"]
    assert patch["target"]["kind"] == "ConfigMap" and patch["target"]["name"] in CONFIGMAPS
    (op,) = yaml.safe_load(patch["patch"])
    key = op["path"].removeprefix("/data/")
    assert op["op"] == "replace" and key in CONFIGMAPS[patch["target"]["name"]], f"patches a key the base lacks: {key}"
    url = re.match(r"^http://([^:/]+):(\d+)$", op["value"])
    assert url, op["value"]
    service = services.get(url.group(1))
    assert service is not None, f"{key} names no Service: {op['value']}"
    assert int(url.group(2)) in [p["port"] for p in service["spec"]["ports"]]
    settings = Settings.from_env({**CONFIGMAPS[patch["target"]["name"]], key: op["value"]})
    assert settings.collector_url == op["value"]


def _kustomize() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def _build(directory: Path) -> list[dict[str, Any]]:
    command = _kustomize()
    if command is None:
        pytest.skip("neither kustomize nor kubectl is installed")
    result = subprocess.run([*command, str(directory)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{shlex.join([*command, str(directory)])}:\n{result.stderr}"
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_kustomize_builds_the_base() -> None:
    built = _build(K8S)
    assert sorted(name_of(d) for d in built) == sorted(name_of(d) for d in BASE_DOCUMENTS)


def test_kustomize_builds_an_overlay_with_the_collector(tmp_path: Path) -> None:
    overlay = tmp_path / "with-collector"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(K8S, overlay)],
                "components": [os.path.relpath(COLLECTOR_COMPONENT, overlay)],
            }
        )
    )
    built = _build(overlay)
    names = {name_of(d) for d in built}
    assert {"Deployment/ves-streams-collector", "Service/ves-streams-collector"} <= names
    assert {name_of(d) for d in BASE_DOCUMENTS} <= names
    (config,) = [d for d in built if d["kind"] == "ConfigMap"]
    assert config["data"]["VES_STREAMS_COLLECTOR_URL"] == "http://ves-streams-collector:30000"


# --------------------------------------------------------------------------
# workers: role, probes, data volume, metrics


def test_there_is_a_processing_fleet_and_a_sink_fleet() -> None:
    roles: dict[str, str] = {}
    for workload, container in all_containers():
        if is_worker(container):
            role = resolve_env(container).get("VES_STREAMS_ROLE")
            assert role in (Role.PROCESS.value, Role.SINK.value), (
                f"{container_id(workload, container)}: VES_STREAMS_ROLE must be process or sink "
                f"(split fleets; `all` would process in every sink pod), got {role!r}"
            )
            roles[role] = workload["kind"]
    assert roles == {"process": "StatefulSet", "sink": "Deployment"}, roles


@pytest.mark.parametrize(
    ("workload", "container"),
    [(w, c) for w, c in all_containers() if is_worker(c)],
    ids=[container_id(w, c) for w, c in all_containers() if is_worker(c)],
)
def test_worker_probes_health_and_ready_on_its_web_port(workload: dict[str, Any], container: dict[str, Any]) -> None:
    who = container_id(workload, container)
    env = resolve_env(container)
    web_port = int(env.get("VES_STREAMS_WEB_PORT") or WEB_PORT_DEFAULT)
    served = worker_paths()
    assert {"/health", "/ready", "/metrics"} <= served, served
    expected = {"livenessProbe": "/health", "readinessProbe": "/ready", "startupProbe": "/health"}
    for kind in ("livenessProbe", "readinessProbe"):
        assert kind in container, f"{who}: no {kind}"
    for kind, path in expected.items():
        probe = container.get(kind)
        if probe is None:
            continue
        assert "httpGet" in probe, f"{who}: {kind} is not an HTTP probe"
        assert probe["httpGet"]["path"] == path, f"{who}: {kind} on {probe['httpGet']['path']}, not {path}"
        assert probe["httpGet"].get("scheme", "HTTP") == "HTTP"
        assert probe_port(workload, container, probe) == web_port == 6066, f"{who}: {kind} not on the web port"


@pytest.mark.parametrize("workload", [w for w in WORKLOADS if any(is_worker(c) for c in containers_of(w))],
                         ids=name_of)  # fmt: skip
def test_worker_pods_are_scraped_on_their_metrics_path(workload: dict[str, Any]) -> None:
    annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
    (container,) = [c for c in containers_of(workload) if is_worker(c)]
    web_port = int(resolve_env(container).get("VES_STREAMS_WEB_PORT") or WEB_PORT_DEFAULT)
    assert annotations.get("prometheus.io/scrape") == "true", name_of(workload)
    assert annotations.get("prometheus.io/port") == str(web_port)
    assert annotations.get("prometheus.io/path") == "/metrics" and "/metrics" in worker_paths()
    assert web_port in container_ports(workload).values()


def test_only_pods_that_serve_metrics_are_scraped() -> None:
    for workload in WORKLOADS:
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") == "true":
            assert any(is_worker(c) for c in containers_of(workload)), f"{name_of(workload)} serves no /metrics"


def test_processing_state_is_on_a_claimed_volume_and_the_sinks_on_a_scratch_one() -> None:
    for workload, container in all_containers():
        if not is_worker(container):
            continue
        settings = worker_settings(container)
        mounts = {Path(m["mountPath"]): m["name"] for m in container.get("volumeMounts", [])}
        assert settings.data_dir in mounts, f"{container_id(workload, container)}: data dir {settings.data_dir} is not a volume"
        volume = mounts[settings.data_dir]
        if settings.role is Role.PROCESS:
            assert workload["kind"] == "StatefulSet"
            templates = {t["metadata"]["name"]: t for t in workload["spec"].get("volumeClaimTemplates", [])}
            assert volume in templates, f"the processing workers' RocksDB dir must be on a volumeClaimTemplate, is on {volume}"
            assert templates[volume]["spec"]["accessModes"] == ["ReadWriteOnce"]
        else:
            volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"].get("volumes", [])}
            assert "emptyDir" in volumes[volume], f"a sink keeps nothing: its data dir wants an emptyDir, not {volumes[volume]}"


def test_the_statefulset_has_a_headless_service() -> None:
    services = {s["metadata"]["name"]: s for s in of_kind(DEPLOYED_DOCUMENTS, "Service")}
    for workload in of_kind(WORKLOADS, "StatefulSet"):
        service = services.get(workload["spec"]["serviceName"])
        assert service is not None, f"{name_of(workload)}: serviceName names no Service"
        assert service["spec"].get("clusterIP") == "None", "the StatefulSet's Service must be headless"
        assert selects(service["spec"]["selector"], pod_labels(workload))


# --------------------------------------------------------------------------
# environment: names, secrets, the settings a worker would start with


@pytest.mark.parametrize(("workload", "container"), list(all_containers()),
                         ids=[container_id(w, c) for w, c in all_containers()])  # fmt: skip
def test_every_variable_is_a_setting(workload: dict[str, Any], container: dict[str, Any]) -> None:
    known = setting_names()
    sources = env_sources(container)
    for name in sources:
        assert name in known, f"{container_id(workload, container)}: {name} is read by no setting (typo?)"
    argv = argv_of(container)
    if not is_worker(container) and argv[1:2] != ["relay"]:  # the relay reads the VES_STREAMS_* settings too
        # only there for $(VAR) in the command line, or the collector's --password-env
        from ves_streams.dev.collector.config import DEFAULT_PASSWORD_ENV

        used = {m for arg in argv for m in _REFERENCE.findall(arg)}
        password_env = (flag(argv, "--password-env") or DEFAULT_PASSWORD_ENV) if argv[1:2] == ["collector"] else None
        for name in sources:
            assert name in used or name == password_env, f"{container_id(workload, container)}: {name} is used by nothing"


def test_configmaps_hold_only_settings_and_no_secrets() -> None:
    for name, data in CONFIGMAPS.items():
        for key, value in data.items():
            assert key in setting_names(), f"ConfigMap {name}: {key} is read by no setting"
            assert key not in secret_setting_names() and not looks_secret(key), f"ConfigMap {name}: {key} belongs in a Secret"
            assert isinstance(value, str), f"ConfigMap {name}: {key} must be a string, is {value!r}"


@pytest.mark.parametrize(("workload", "container"), list(all_containers()),
                         ids=[container_id(w, c) for w, c in all_containers()])  # fmt: skip
def test_credentials_come_from_secrets(workload: dict[str, Any], container: dict[str, Any]) -> None:
    secret = secret_setting_names()
    for name, source in env_sources(container).items():
        if name in secret or looks_secret(name):
            ref = source.get("valueFrom", {}).get("secretKeyRef")
            assert ref is not None and "value" not in source, (
                f"{container_id(workload, container)}: {name} must come from valueFrom.secretKeyRef, not {source}"
            )
            assert ref["name"] in EXAMPLE_SECRETS, f"{name}: Secret {ref['name']} is not in secret.example.yaml"
            assert ref["key"] in EXAMPLE_SECRETS[ref["name"]], f"{name}: secret.example.yaml lacks key {ref['key']}"
    for arg in argv_of(container):
        assert not re.search(r"pass(word)?=", arg, flags=re.I), f"{container_id(workload, container)}: a password on the command line"


def test_sinks_get_both_collector_credentials_and_everyone_both_kafka_ones() -> None:
    for workload, container in all_containers():
        if not is_worker(container):
            continue
        names = set(env_sources(container))
        kafka = {"VES_STREAMS_KAFKA_USERNAME", "VES_STREAMS_KAFKA_PASSWORD"}
        collector = {"VES_STREAMS_COLLECTOR_USERNAME", "VES_STREAMS_COLLECTOR_PASSWORD"}
        assert kafka <= names, f"{container_id(workload, container)}: lacks {kafka - names}"
        if resolve_env(container)["VES_STREAMS_ROLE"] == Role.SINK.value:
            assert collector <= names, f"{container_id(workload, container)}: lacks {collector - names}"
        else:
            assert not collector & names, "processing workers deliver nothing: no collector credentials"


def service_link_variables(service: dict[str, Any]) -> set[str]:
    """The variables Kubernetes puts into every pod of the namespace for a Service (``enableServiceLinks``)."""
    if service["spec"].get("clusterIP") == "None":
        return set()
    base = service["metadata"]["name"].upper().replace("-", "_")
    names = {f"{base}_SERVICE_HOST", f"{base}_SERVICE_PORT", f"{base}_PORT"}
    for port in service["spec"]["ports"]:
        proto = port.get("protocol", "TCP")
        if "name" in port:
            names.add(f"{base}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}")
        prefix = f"{base}_PORT_{port['port']}_{proto}"
        names |= {prefix, f"{prefix}_PROTO", f"{prefix}_PORT", f"{prefix}_ADDR"}
    return names


def test_service_links_do_not_pose_as_settings() -> None:
    links = set().union(*(service_link_variables(s) for s in of_kind(DEPLOYED_DOCUMENTS, "Service")))
    posing = sorted(n for n in links if n.startswith(settings_module.PREFIX))
    if not posing:
        return
    # what a worker would make of them: unknown settings at best, a colliding one at worst
    assert Settings.from_env({n: "tcp://10.0.0.1:80" for n in posing if n not in setting_names()}).unknown
    for workload in WORKLOADS:
        assert workload["spec"]["template"]["spec"].get("enableServiceLinks") is False, (
            f"{name_of(workload)}: set enableServiceLinks: false, or its pods get {posing[:3]}..., which a worker "
            "reads as (unknown, or colliding) settings"
        )


@pytest.mark.parametrize("with_secrets", [False, True], ids=["no-secret", "example-secret"])
def test_each_worker_starts_with_its_settings(with_secrets: bool) -> None:
    for workload, container in all_containers():
        if not is_worker(container):
            continue
        env = resolve_env(container, EXAMPLE_SECRETS if with_secrets else None)
        if with_secrets:
            env["VES_STREAMS_KAFKA_SASL_MECHANISM"] = "SCRAM-SHA-512"  # the Kafka pair needs it (configmap.yaml)
            env["VES_STREAMS_KAFKA_SECURITY_PROTOCOL"] = "SASL_SSL"  # and, without a CA file, says TLS
        try:
            settings = Settings.from_env(env)
        except SettingsError as exc:
            pytest.fail(f"{container_id(workload, container)} would not start: {exc}")
        assert not settings.unknown, settings.unknown
        if with_secrets:
            assert settings.kafka_sasl_password is not None
            assert (settings.collector_password is not None) == (settings.role is Role.SINK)


# --------------------------------------------------------------------------
# the relay and the collector: command lines, ports, probes


def _cli_containers() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(w, c) for w, c in all_containers() if argv_of(c)[:1] == ["ves-streams"]]


def test_the_relay_and_the_collector_are_deployed() -> None:
    commands = sorted(argv_of(c)[1] for _, c in _cli_containers())
    assert commands == ["collector", "relay"], commands


@pytest.mark.parametrize(("workload", "container"), _cli_containers(), ids=[container_id(w, c) for w, c in _cli_containers()])
def test_cli_container_runs_a_command_our_cli_accepts(workload: dict[str, Any], container: dict[str, Any]) -> None:
    from ves_streams.cli import build_parser

    who = container_id(workload, container)
    argv = resolved_argv(container)
    unresolved = [a for a in argv if _REFERENCE.search(a)]
    assert not unresolved, f"{who}: $(VAR) that the container's env does not define: {unresolved}"
    args = build_parser().parse_args(argv[1:])
    assert args.host == "0.0.0.0", f"{who}: listens on {args.host}, unreachable from other pods"
    ports = {p["containerPort"] for p in container.get("ports", [])}
    assert args.port in ports, f"{who}: serves on {args.port}, declares {sorted(ports)}"
    served = {"relay": relay_paths, "collector": collector_paths}[argv[1]]()
    for kind in ("livenessProbe", "readinessProbe"):
        probe = container.get(kind)
        assert probe is not None and "httpGet" in probe, f"{who}: no HTTP {kind}"
        assert probe["httpGet"]["path"] in served, f"{who}: {kind} on {probe['httpGet']['path']}, served: {sorted(served)}"
        assert probe_port(workload, container, probe) == args.port


def test_the_relay_publishes_where_the_workers_read() -> None:
    (relay,) = [c for _, c in _cli_containers() if argv_of(c)[1] == "relay"]
    argv = resolved_argv(relay)
    for _, container in all_containers():
        if is_worker(container):
            settings = worker_settings(container)
            assert flag(argv, "--topic") == settings.notifications_topic
            assert Settings.from_env({"VES_STREAMS_BROKER": flag(argv, "--broker") or ""}).broker == settings.broker


def test_the_relay_asks_for_the_secrets_token_and_refuses_to_run_open_without_it() -> None:
    from ves_streams.notification_relay import RelayAccess, exposure_error

    (relay,) = [c for _, c in _cli_containers() if argv_of(c)[1] == "relay"]
    host = flag(resolved_argv(relay), "--host") or ""
    env = resolve_env(relay, EXAMPLE_SECRETS)
    # the Kafka pair needs its mechanism and, without a CA file, its protocol (configmap.yaml)
    env.update(VES_STREAMS_KAFKA_SASL_MECHANISM="SCRAM-SHA-512", VES_STREAMS_KAFKA_SECURITY_PROTOCOL="SASL_SSL")
    with_token = Settings.from_env(env)
    assert with_token.relay_token is not None
    assert exposure_error(host, RelayAccess(token=with_token.relay_token), None, False) is None
    without = Settings.from_env(resolve_env(relay))
    assert without.relay_token is None and exposure_error(host, RelayAccess(), None, False) is not None


# --------------------------------------------------------------------------
# resources, selectors, disruption budgets, services


@pytest.mark.parametrize(("workload", "container"), list(all_containers()),
                         ids=[container_id(w, c) for w, c in all_containers()])  # fmt: skip
def test_every_container_has_requests_and_limits(workload: dict[str, Any], container: dict[str, Any]) -> None:
    who = container_id(workload, container)
    resources = container.get("resources", {})
    for part in ("requests", "limits"):
        for what in ("cpu", "memory"):
            assert what in resources.get(part, {}), f"{who}: no {part}.{what}"
            assert quantity(resources[part][what]) > 0
    for what in ("cpu", "memory"):
        assert quantity(resources["requests"][what]) <= quantity(resources["limits"][what]), f"{who}: {what} request > limit"


def test_memory_fits_the_benchmark_figures() -> None:
    peaks = {Role.PROCESS: PROCESSING_PEAK_RSS_MB, Role.SINK: SINK_PEAK_RSS_MB}
    for workload, container in all_containers():
        if not is_worker(container):
            continue
        role = worker_settings(container).role
        peak = peaks[role] * 1e6
        memory = container["resources"]
        assert quantity(memory["requests"]["memory"]) >= peak, f"{container_id(workload, container)}: request below the peak RSS"
        assert quantity(memory["limits"]["memory"]) >= MEMORY_LIMIT_HEADROOM * peak, (
            f"{container_id(workload, container)}: limit leaves less than {MEMORY_LIMIT_HEADROOM}x the peak RSS"
        )


def test_every_workload_selects_its_own_pods() -> None:
    for workload in WORKLOADS:
        assert selects(workload["spec"]["selector"], pod_labels(workload)), f"{name_of(workload)}: selector misses its template"
        others = [name_of(w) for w in selected_workloads(workload["spec"]["selector"]) if w is not workload]
        assert not others, f"{name_of(workload)}'s selector also selects {others}"


def test_disruption_budgets_cover_the_workers_and_select_one_workload() -> None:
    covered = set()
    for pdb in of_kind(DEPLOYED_DOCUMENTS, "PodDisruptionBudget"):
        selected = selected_workloads(pdb["spec"]["selector"])
        assert len(selected) == 1, f"{name_of(pdb)} selects {[name_of(w) for w in selected]}, not one workload"
        workload = selected[0]
        replicas = workload["spec"].get("replicas", 1)
        if "minAvailable" in pdb["spec"]:
            assert isinstance(pdb["spec"]["minAvailable"], int) and pdb["spec"]["minAvailable"] < replicas, (
                f"{name_of(pdb)}: minAvailable must stay below the {replicas} replicas, or no node can be drained"
            )
        else:
            assert pdb["spec"]["maxUnavailable"] not in (0, "0%")
        covered.add(name_of(workload))
    fleets = {name_of(w) for w, c in all_containers() if is_worker(c)}
    assert fleets and fleets <= covered, f"no PodDisruptionBudget for {fleets - covered}"


def test_every_service_selects_one_workload_and_targets_its_ports() -> None:
    for service in of_kind(DEPLOYED_DOCUMENTS, "Service"):
        selected = selected_workloads(service["spec"]["selector"])
        assert len(selected) == 1, f"{name_of(service)} selects {[name_of(w) for w in selected]}"
        ports = container_ports(selected[0])
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert target in ports, f"{name_of(service)}: targetPort {target!r} is no port of {name_of(selected[0])}"


def test_mounts_name_volumes_and_images_are_the_project_image() -> None:
    for workload, container in all_containers():
        spec = workload["spec"]
        volumes = {v["name"] for v in spec["template"]["spec"].get("volumes", [])}
        volumes |= {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes, f"{container_id(workload, container)}: mounts unknown volume {mount['name']}"
        assert container["image"] == "ves-streams:latest", f"{container_id(workload, container)}: {container['image']}"
