"""ves_streams.resources: the shipped topologies, schemas and capture are found through the package."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ves_streams import resources

REPO = Path(__file__).resolve().parent.parent


def test_the_shipped_directories_hold_the_files() -> None:
    assert (resources.topologies_dir() / "host.yaml").is_file()
    assert (resources.topologies_dir() / "ves5" / "node.yaml").is_file()
    for name in ("ves-5.json", "ves-7.json"):
        assert json.loads((resources.schemas_dir() / name).read_text())["definitions"]
    assert (resources.capture_dir() / "compute-0.values.jsonl").is_file()
    assert (resources.capture_dir() / "compute-0.notifications.jsonl").is_file()


def test_in_a_checkout_the_shipped_files_are_the_repository_directories() -> None:
    # What an editable install (make) and PYTHONPATH=checkout both give.
    assert resources.topologies_dir() == REPO / "topologies"
    assert resources.schemas_dir() == REPO / "schemas"
    assert resources.checkout_dir() == REPO
    assert resources.run_dir() == REPO / ".run"


def test_default_topology_is_host_yaml() -> None:
    assert resources.default_topology() == resources.topologies_dir() / resources.DEFAULT_TOPOLOGY == (
        resources.topologies_dir() / "host.yaml"
    )


def test_shipped_topologies_lists_every_yaml_file_top_level_first() -> None:
    names = [t.name for t in resources.shipped_topologies()]
    on_disk = sorted(p.relative_to(REPO / "topologies").as_posix() for p in (REPO / "topologies").rglob("*.yaml"))
    assert sorted(names) == on_disk
    assert names[:3] == ["guest.yaml", "host.yaml", "hypervisor.yaml"]
    assert all(n.startswith("ves5/") for n in names[3:])


def test_every_shipped_topology_has_a_one_line_description() -> None:
    for topology in resources.shipped_topologies():
        text = topology.description
        assert text and "\n" not in text, topology.name
        assert not text.startswith("ves-streams topology"), text
    host = next(t for t in resources.shipped_topologies() if t.name == "host.yaml")
    assert host.description.startswith("a compute host's platform metrics")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("---\n# ves-streams topology: a test file. More text.\n# on two lines\nfoo: 1\n", "a test file"),
        ("# first line\n# continues here. Second sentence\n\nfoo: 1\n", "first line continues here"),
        ("foo: 1\n# a comment later\n", ""),
        ("", ""),
    ],
)
def test_describe_reads_the_first_sentence_of_the_header_comment(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(content)
    assert resources.describe(path) == expected


def test_describe_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert resources.describe(tmp_path / "nope.yaml") == ""


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("host.yaml", "host.yaml"),
        ("host", "host.yaml"),
        ("ves5/guest.yaml", "ves5/guest.yaml"),
        ("topologies/hypervisor.yaml", "hypervisor.yaml"),
        ("./ves5/node", "ves5/node.yaml"),
    ],
)
def test_shipped_topology_by_name(name: str, expected: str) -> None:
    assert resources.shipped_topology(name) == resources.topologies_dir() / expected


@pytest.mark.parametrize("name", ["", "nosuch.yaml", "../pyproject.toml", "/etc/passwd", "ves5/../host.yaml", "README.md"])
def test_shipped_topology_refuses_what_is_not_one(name: str) -> None:
    assert resources.shipped_topology(name) is None


def test_an_install_maps_the_same_directories_as_the_checkout() -> None:
    """Where the package-dir mapping is importable (an editable install of this checkout), it agrees."""
    from importlib import resources as importlib_resources

    for package, directory in (("ves_streams.topologies", "topologies"), ("ves_streams.schemas", "schemas")):
        try:
            root = importlib_resources.files(package)
        except ModuleNotFoundError:
            continue  # PYTHONPATH=checkout without an install: no mapping to compare
        if Path(str(root)).resolve().parent == REPO:
            assert Path(str(root)) == REPO / directory
