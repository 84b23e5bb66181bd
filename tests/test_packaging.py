"""pyproject.toml lists its packages by hand (package-dir maps topologies/ and schemas/ in); keep it complete.

The wheel smoke test (.ci/wheel-smoke) proves an installed wheel works; this
catches the cheap mistake first: a new package or data directory that the
explicit list in pyproject.toml does not name would be left out of the wheel.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SETUPTOOLS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def _source_dir(package: str) -> Path:
    """Where setuptools takes ``package`` from, following package-dir like it does."""
    mapping = SETUPTOOLS.get("package-dir", {})
    parts = package.split(".")
    for cut in range(len(parts), 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in mapping:
            return REPO / mapping[prefix] / Path(*parts[cut:])
    return REPO / Path(*parts)


def _dirs_with_files(root: Path) -> set[Path]:
    """Every directory below ``root`` (itself included) that holds a file git would track."""
    found = set()
    for path in root.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and not path.name.endswith(".pyc"):
            found.add(path.parent)
    return found


def test_every_listed_package_exists() -> None:
    for package in SETUPTOOLS["packages"]:
        assert _source_dir(package).is_dir(), f"pyproject.toml lists {package}, but {_source_dir(package)} is missing"


def test_every_directory_of_the_package_is_listed() -> None:
    listed = {_source_dir(p).resolve() for p in SETUPTOOLS["packages"]}
    roots = [REPO / "ves_streams", REPO / "topologies", REPO / "schemas"]
    missing = sorted(
        d.relative_to(REPO).as_posix() for root in roots for d in _dirs_with_files(root) if d.resolve() not in listed
    )
    assert not missing, f"directories not in pyproject.toml's [tool.setuptools] packages (left out of the wheel): {missing}"


def test_the_data_the_package_reads_is_package_data() -> None:
    data = SETUPTOOLS["package-data"]
    assert "*.yaml" in data["ves_streams.topologies"]
    assert "*.yaml" in data["ves_streams.topologies.ves5"]
    assert "*.json" in data["ves_streams.schemas"]
    assert "*.jsonl" in data["ves_streams.dev.capture"]
