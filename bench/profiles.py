"""Where a profiled worker's time went: a flat summary of a pyinstrument session.

pyinstrument's own text view is a call tree that folds library frames away,
which hides exactly what matters here (how much of the worker is Faust,
aiokafka and asyncio rather than ves-streams). This summary adds two flat
views of the same samples of the event loop's thread:

* time spent *in* each package's own code (self time, by package), with the
  idle time waiting in ``epoll`` kept apart;
* the functions with the most self time, and the ves-streams functions
  with the most inclusive time (recursion counted once).

``python -m bench.profiles SESSION`` prints it for a saved session.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

__all__ = ["summarise"]

def _is_idle(frame: Any) -> bool:
    """The event loop waiting for sockets: time the thread had nothing to do."""
    return frame.function == "epoll.poll" or frame.class_name in ("EpollSelector", "PollSelector", "SelectSelector")


def _package(path: str | None) -> str:
    if not path or path.startswith("<"):
        return "<built-in>"
    path = path.replace("\\", "/")
    if "/site-packages/" in path:
        return path.split("/site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    for marker in ("/ves_streams/", "/bench/"):
        if marker in path:
            return marker.strip("/")
    if "/lib/python3" in path:
        return "stdlib:" + path.rsplit("/lib/", 1)[1].split("/", 2)[1].removesuffix(".py")
    return Path(path).name


def _walk(frame: Any, stack: frozenset[str], by_package: dict[str, float], self_times: dict[str, float],
          inclusive: dict[str, float]) -> None:  # fmt: skip
    if _is_idle(frame):
        by_package["(idle: event loop waiting in epoll)"] += frame.time
        return
    name = f"{frame.function}  {frame.file_path_short}:{frame.line_no}"
    # pyinstrument folds a frame's own samples into synthetic "[self]" children: count them here, once.
    real_children = [c for c in frame.children if c.function != "[self]"]
    own = frame.time - sum(c.time for c in real_children)
    if own > 0:
        package = _package(frame.file_path)
        by_package[package] += own
        self_times[name] += own
    if _package(frame.file_path) == "ves_streams" and name not in stack:
        inclusive[name] += frame.time
        stack = stack | {name}
    for child in real_children:
        _walk(child, stack, by_package, self_times, inclusive)


def summarise(session_path: Path, top: int = 25) -> str:
    """The flat summary of one pyinstrument session file."""
    from pyinstrument.session import Session

    session = Session.load(str(session_path))
    root = session.root_frame()
    by_package: dict[str, float] = defaultdict(float)
    self_times: dict[str, float] = defaultdict(float)
    inclusive: dict[str, float] = defaultdict(float)
    if root is not None:
        _walk(root, frozenset(), by_package, self_times, inclusive)
    total = session.duration or 1.0
    lines = [
        f"{session_path.name}: {session.duration:.1f} s recorded, {session.cpu_time:.1f} s CPU, "
        f"{session.sample_count} samples (event loop thread)",
        "",
        "Time by package (self time; share of the recorded duration):",
    ]
    for package, seconds in sorted(by_package.items(), key=lambda kv: -kv[1]):
        if seconds / total >= 0.005:
            lines.append(f"  {seconds:8.2f} s  {seconds / total:6.1%}  {package}")
    lines += ["", f"Top {top} functions by self time:"]
    for name, seconds in sorted(self_times.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {seconds:8.2f} s  {seconds / total:6.1%}  {name}")
    lines += ["", f"Top {top} ves_streams functions by inclusive time:"]
    for name, seconds in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {seconds:8.2f} s  {seconds / total:6.1%}  {name}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.profiles SESSION.pyisession", file=sys.stderr)
        return 2
    print(summarise(Path(args[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
