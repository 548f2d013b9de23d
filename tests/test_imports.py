"""The package's imports point one way: no module of steelnb imports, directly or through others,
a module that imports it back, whether at the top or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "steelnb"


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """{module: the steelnb modules it imports (relative or absolute, anywhere in the file)}."""
    names = {p.stem for p in package.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                parts = (node.module or "").split(".")
                if node.level == 1:
                    found |= {parts[0]} if node.module else {a.name for a in node.names}
                elif parts[0] == "steelnb":
                    found |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("steelnb.")}
        graph[path.stem] = (found & names) - {path.stem}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, each as the path of modules that closes it."""
    found, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for nxt in sorted(graph.get(module, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_the_walk_sees_imports_of_every_kind() -> None:
    graph = import_graph()
    assert "config" in graph["training"]  # from .config import ...
    assert "synthetic" in graph["pipeline"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_import_cycle_in_steelnb() -> None:
    assert cycles(import_graph()) == []


def test_no_test_module_imports_another() -> None:
    """What tests share lives in helper modules (conftest, factories, tinydata, nbout, browser,
    scored), so that running one test file never runs or depends on another's module."""
    tests = Path(__file__).resolve().parent
    modules = {p.stem for p in tests.rglob("test_*.py")}
    found = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            found += [f"{path.relative_to(tests)} imports {n}" for n in names if n.split(".")[0] in modules]
    assert not found, found
