"""``ves-streams topologies``: the rule files that ship with ves-streams.

``ves-streams topologies`` lists them (name and the first sentence of the
file's header comment); ``ves-streams topologies copy NAME [DEST]`` copies
one out for editing, refusing to overwrite a file unless ``--force``. The
files themselves are found by :mod:`ves_streams.resources`; a worker uses
``host.yaml`` when ``VES_STREAMS_TOPOLOGY`` is unset and accepts any listed
name in it.

Exit codes: 0 done; 1 the destination exists or cannot be written; 2 no
shipped topology has that name.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any, TextIO

from ves_streams import resources

__all__ = ["register", "list_command", "copy_command"]


def register(subparsers: Any) -> None:
    """Add ``topologies`` (list) with its sub-commands ``list`` and ``copy``."""
    parser = subparsers.add_parser(
        "topologies",
        help="list the topologies shipped with ves-streams, or copy one out for editing",
        description="Without a sub-command: list the shipped topologies (the default one is "
        f"{resources.DEFAULT_TOPOLOGY}). VES_STREAMS_TOPOLOGY accepts a listed name or a path to your own copy.",
    )
    parser.set_defaults(handler=list_command)
    commands = parser.add_subparsers(dest="topologies_command", metavar="SUBCOMMAND")

    listing = commands.add_parser("list", help="list the shipped topologies (the default)")
    listing.add_argument("--paths", action="store_true", help="also print where each file is installed")
    listing.set_defaults(handler=list_command)

    copy = commands.add_parser(
        "copy",
        help="copy a shipped topology to a file you can edit",
        description="Copy a shipped topology (a name from `ves-streams topologies`) to DEST, by default "
        "its file name in the current directory; DEST may be a directory. An existing file is kept unless --force.",
    )
    copy.add_argument("name", metavar="NAME", help="a shipped topology, e.g. host.yaml or ves5/host.yaml")
    copy.add_argument("dest", metavar="DEST", nargs="?", default=None, help="file or directory (default: ./NAME's file name)")
    copy.add_argument("--force", action="store_true", help="overwrite DEST if it exists")
    copy.set_defaults(handler=copy_command)


def list_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    topologies = resources.shipped_topologies()
    width = max((len(t.name) for t in topologies), default=0)
    for topology in topologies:
        default = " (default)" if topology.name == resources.DEFAULT_TOPOLOGY else ""
        line = f"{topology.name:<{width}}  {topology.description}{default}".rstrip()
        print(line, file=out)
        if getattr(args, "paths", False):
            print(f"{'':<{width}}  {topology.path}", file=out)
    return 0


def copy_command(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    source = resources.shipped_topology(args.name)
    if source is None:
        names = ", ".join(t.name for t in resources.shipped_topologies())
        print(f"ves-streams topologies copy: no shipped topology {args.name!r} (shipped: {names})", file=err)
        return 2
    dest = Path(args.dest).expanduser() if args.dest else Path(source.name)
    if dest.is_dir():
        dest = dest / source.name
    if dest.exists() and not args.force:
        print(f"ves-streams topologies copy: {dest} exists; not overwritten (use --force)", file=err)
        return 1
    try:
        shutil.copyfile(source, dest)
    except OSError as exc:
        print(f"ves-streams topologies copy: cannot write {dest}: {exc.strerror or exc}", file=err)
        return 1
    shipped = source.relative_to(resources.topologies_dir()).as_posix()
    print(f"copied {shipped} to {dest}; after editing: ves-streams check {dest}; "
          f"VES_STREAMS_TOPOLOGY={dest} faust -A ves_streams worker", file=out)  # fmt: skip
    return 0
