"""The README is the operator's manual: it must name every setting the worker reads."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from ves_streams.settings import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _documented() -> set[str]:
    """Every ``VES_STREAMS_*`` name in the first column of the configuration table."""
    names: set[str] = set()
    for row in README.splitlines():
        if row.startswith("| `VES_STREAMS_"):
            names.update(re.findall(r"`(VES_STREAMS_[A-Z_]+)`", row.split("|")[1]))
    return names


def test_every_setting_is_in_the_readme() -> None:
    read = {f.metadata["env"] for f in dataclasses.fields(Settings) if f.metadata.get("env")}
    missing = read - _documented()
    assert not missing, f"settings missing from the README's configuration table: {sorted(missing)}"


def test_the_readme_documents_no_setting_the_worker_ignores() -> None:
    read = {f.metadata["env"] for f in dataclasses.fields(Settings) if f.metadata.get("env")}
    stale = _documented() - read
    assert not stale, f"README documents settings the worker does not read: {sorted(stale)}"
