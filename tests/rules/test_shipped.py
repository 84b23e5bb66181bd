"""``ves-streams topologies``: list the shipped rule files, copy one out for editing."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ves_streams import resources
from ves_streams.cli import build_parser, main
from ves_streams.rules import load_topology

from .helpers import TOPOLOGIES


def run(*argv: str) -> tuple[int, str, str]:
    """Parse like the command line and call the handler with captured output."""
    args = build_parser().parse_args(["topologies", *argv])
    out, err = io.StringIO(), io.StringIO()
    kwargs = {"out": out} if args.handler.__name__ == "list_command" else {"out": out, "err": err}
    code = args.handler(args, **kwargs)
    return code, out.getvalue(), err.getvalue()


def test_list_names_every_shipped_file_with_its_description() -> None:
    code, out, _ = run()
    assert code == 0
    lines = out.splitlines()
    names = [line.split()[0] for line in lines]
    assert names == [t.name for t in resources.shipped_topologies()]
    assert sorted(names) == sorted(p.relative_to(TOPOLOGIES).as_posix() for p in TOPOLOGIES.rglob("*.yaml"))
    host = next(line for line in lines if line.startswith("host.yaml "))
    assert "a compute host's platform metrics" in host and host.endswith("(default)")
    assert any(line.startswith("ves5/node.yaml ") and "Barometer's node.yaml" in line for line in lines)


def test_list_sub_command_and_paths() -> None:
    code, out, _ = run("list", "--paths")
    assert code == 0
    assert str(resources.topologies_dir() / "ves5" / "host.yaml") in out
    assert run("list")[1] == run()[1]


def test_the_command_is_reachable_through_main(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topologies"]) == 0
    assert "hypervisor.yaml" in capsys.readouterr().out


def test_copy_writes_the_file_to_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run("copy", "host.yaml")
    assert (code, err) == (0, "")
    copied = tmp_path / "host.yaml"
    assert copied.read_bytes() == (TOPOLOGIES / "host.yaml").read_bytes()
    assert "copied host.yaml to host.yaml" in out
    assert load_topology(copied).header.ves_version == "7.2.1"


def test_copy_to_a_file_or_into_a_directory(tmp_path: Path) -> None:
    code, _, _ = run("copy", "ves5/guest", str(tmp_path / "mine.yaml"))
    assert code == 0
    assert (tmp_path / "mine.yaml").read_bytes() == (TOPOLOGIES / "ves5" / "guest.yaml").read_bytes()
    (tmp_path / "dir").mkdir()
    code, _, _ = run("copy", "topologies/hypervisor.yaml", str(tmp_path / "dir"))
    assert code == 0
    assert (tmp_path / "dir" / "hypervisor.yaml").read_bytes() == (TOPOLOGIES / "hypervisor.yaml").read_bytes()


def test_copy_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    dest = tmp_path / "host.yaml"
    dest.write_text("# my edits\n")
    code, out, err = run("copy", "host.yaml", str(dest))
    assert code == 1 and out == ""
    assert err == f"ves-streams topologies copy: {dest} exists; not overwritten (use --force)\n"
    assert dest.read_text() == "# my edits\n"
    code, _, _ = run("copy", "host.yaml", str(tmp_path), "--force")  # into the directory, same file
    assert code == 0
    assert dest.read_bytes() == (TOPOLOGIES / "host.yaml").read_bytes()


def test_copy_of_an_unknown_name_lists_the_shipped_ones(tmp_path: Path) -> None:
    code, out, err = run("copy", "nosuch.yaml", str(tmp_path / "x.yaml"))
    assert code == 2 and out == ""
    assert err.startswith("ves-streams topologies copy: no shipped topology 'nosuch.yaml' (shipped: guest.yaml, ")
    assert "ves5/node.yaml" in err
    assert not (tmp_path / "x.yaml").exists()


def test_copy_to_an_unwritable_place_is_one_line(tmp_path: Path) -> None:
    code, _, err = run("copy", "host.yaml", str(tmp_path / "no" / "such" / "dir" / "h.yaml"))
    assert code == 1
    assert err.startswith("ves-streams topologies copy: cannot write ") and err.count("\n") == 1
