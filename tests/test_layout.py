"""The house's shape, pinned: which rooms may import which.

Read from the source with ``ast`` (imports under ``TYPE_CHECKING`` and inside
functions count: a cycle that only shows at type-check time or on a lazy
import path is still a cycle a reader has to untangle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import ves_streams

PACKAGE_DIR = Path(ves_streams.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """Module -> the ``ves_streams`` modules it imports (any import, anywhere in the file)."""
    modules = {_module_name(p): p for p in PACKAGE_DIR.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node)
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            for target in targets:
                # the longest known module that the import names (``from a import b`` may name module a.b)
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and target.startswith("ves_streams"):
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        v = todo.pop()
        if v in seen:
            continue
        seen.add(v)
        todo.extend(graph.get(v, ()))
    return seen


def test_the_worker_never_imports_the_development_tooling() -> None:
    graph = import_graph()
    worker = _reachable(graph, "ves_streams.app")
    assert "ves_streams.app" in worker and len(worker) > 10
    assert sorted(m for m in worker if m.startswith("ves_streams.dev")) == []


def test_no_module_of_the_package_is_part_of_an_import_cycle() -> None:
    # a package's __init__ exporting its own submodules (lazily) is its front door, not a cycle
    graph = {name: {t for t in targets if not t.startswith(name + ".")} for name, targets in import_graph().items()}
    assert _cycles(graph) == []
