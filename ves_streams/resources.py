"""Where the files ves-streams ships are: topologies, VES schemas, the recorded capture.

They are package data, read with :mod:`importlib.resources`, so a wheel
installed anywhere and an editable install (``pip install -e .``, what
``make`` does) find them the same way:

* ``ves_streams.topologies``: the rule files, ``*.yaml`` and ``ves5/*.yaml``;
* ``ves_streams.schemas``: the VES JSON schemas ``ves-5.json`` and ``ves-7.json``;
* ``ves_streams/dev/capture/``: the recorded collectd capture that
  ``ves-streams replay`` publishes.

In the repository the first two stay at the top (``topologies/``,
``schemas/``), where users look for them; ``pyproject.toml`` maps them into
the package (setuptools ``package-dir``), which an editable install honours
too. Nothing else in ``ves_streams`` locates shipped files.

One exception to importlib.resources: when ``ves_streams`` is imported from
a source checkout (``PYTHONPATH=checkout``, or its editable install), that
checkout's ``topologies/`` and ``schemas/`` are used directly. Without an
install the mapping does not exist, and with several checkouts (git
worktrees) an editable install of another one must not serve its files.

This module imports nothing of ves-streams, so the worker may use it
without importing the development tooling (``ves_streams.dev``): the
capture's package is imported only when :func:`capture_dir` is called.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = [
    "DEFAULT_TOPOLOGY",
    "ShippedTopology",
    "capture_dir",
    "checkout_dir",
    "default_topology",
    "run_dir",
    "schemas_dir",
    "shipped_topologies",
    "shipped_topology",
    "topologies_dir",
]

#: The topology a worker uses when ``VES_STREAMS_TOPOLOGY`` is unset.
DEFAULT_TOPOLOGY = "host.yaml"

_TOPOLOGIES = "ves_streams.topologies"
_SCHEMAS = "ves_streams.schemas"
#: The capture is a data directory of this package (no ``__init__.py``:
#: importlib.resources would see a namespace package, not a plain path).
_CAPTURE_PARENT, _CAPTURE_DIR = "ves_streams.dev", "capture"


#: Where the mapped data packages come from in a source checkout (pyproject.toml's package-dir).
_CHECKOUT_DIRS = {_TOPOLOGIES: "topologies", _SCHEMAS: "schemas"}


def _directory(package: str) -> Path:
    """The directory of a data package, as a real path (ves-streams is never run zipped)."""
    checkout = checkout_dir()
    if checkout is not None and package in _CHECKOUT_DIRS:
        return checkout / _CHECKOUT_DIRS[package]
    root = resources.files(package)
    if not isinstance(root, Path):  # a zip import: load_topology and friends need files
        raise RuntimeError(f"{package} is not installed as plain files ({root!r}); reinstall ves-streams with pip")
    return root


def topologies_dir() -> Path:
    """The directory holding the shipped topologies (``topologies/`` in a checkout)."""
    return _directory(_TOPOLOGIES)


def schemas_dir() -> Path:
    """The directory holding the shipped VES schemas (``schemas/`` in a checkout)."""
    return _directory(_SCHEMAS)


def capture_dir() -> Path:
    """The recorded collectd capture (``*.values.jsonl``, ``*.notifications.jsonl``)."""
    return _directory(_CAPTURE_PARENT) / _CAPTURE_DIR


def default_topology() -> Path:
    """The shipped ``host.yaml``: what a worker renders with unless told otherwise."""
    return topologies_dir() / DEFAULT_TOPOLOGY


@dataclass(frozen=True, slots=True)
class ShippedTopology:
    """One shipped rule file: ``name`` is its path below the topologies (``ves5/host.yaml``)."""

    name: str
    path: Path

    @property
    def description(self) -> str:
        """The first sentence of the file's header comment, on one line ('' if it has none)."""
        return describe(self.path)


def shipped_topologies() -> list[ShippedTopology]:
    """Every shipped topology, sorted: the top-level files first, then ``ves5/...``."""
    root = topologies_dir()
    files = sorted(root.rglob("*.yaml"), key=lambda p: (len(p.relative_to(root).parts), p.relative_to(root).as_posix()))
    return [ShippedTopology(p.relative_to(root).as_posix(), p) for p in files]


def shipped_topology(name: str) -> Path | None:
    """The shipped file ``name`` names, or None.

    Accepts what ``ves-streams topologies`` lists (``host.yaml``,
    ``ves5/host.yaml``), the same without ``.yaml``, and the repository's
    spelling ``topologies/host.yaml``.
    """
    text = name.strip().replace("\\", "/").removeprefix("./").removeprefix("topologies/")
    if not text or text.startswith("/") or ".." in text.split("/"):
        return None
    if not text.endswith((".yaml", ".yml")):
        text += ".yaml"
    for topology in shipped_topologies():
        if topology.name == text:
            return topology.path
    return None


_PROLOGUE = re.compile(r"^\s*#\s?(.*)$")


def describe(path: Path) -> str:
    """The first sentence of a YAML file's leading comment block, without the ``ves-streams topology:`` prefix."""
    lines: list[str] = []
    try:
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip() in ("", "---") and not lines:
                    continue
                match = _PROLOGUE.match(line)
                if match is None or not match.group(1).strip():
                    break
                lines.append(match.group(1).strip())
    except OSError:
        return ""
    text = " ".join(lines)
    text = re.sub(r"^ves-streams topology:\s*", "", text)
    sentence = re.match(r"(.+?[.:;])(\s|$)", text)
    return (sentence.group(1) if sentence else text).rstrip(".:;").strip()


@functools.cache
def checkout_dir() -> Path | None:
    """The source checkout ``ves_streams`` is imported from (editable install, PYTHONPATH), or None for a wheel.

    Used for the checkout's own ``topologies/`` and ``schemas/`` (see the
    module docstring), the ``.run/`` directory of ``make run`` and ``make
    kafka-up``, and resolving a relative ``VES_STREAMS_TOPOLOGY`` against the
    repository.
    """
    root = Path(__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if not ((root / "topologies").is_dir() and (root / "schemas").is_dir() and pyproject.is_file()):
        return None
    try:
        named = re.search(r'^name\s*=\s*"ves-streams"', pyproject.read_text(encoding="utf-8"), flags=re.M)
    except OSError:
        return None
    return root if named else None


def run_dir() -> Path:
    """Where ``make run`` and ``make kafka-up`` keep state: ``.run/`` in the checkout, else in the current directory."""
    return (checkout_dir() or Path.cwd()) / ".run"
