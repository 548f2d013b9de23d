"""Every third-party module that steelnb imports is declared in pyproject.toml, and nothing
declared is left unused by the package, its notebooks, benchmarks and tests."""

from __future__ import annotations

import ast
import json
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# declared for what the package runs, not imports: the notebook runner and kernel, the book, the lab
RUNTIME_ONLY = {"ipykernel", "jupyter-book", "jupyterlab", "tensorboard", "torchvision"}


def _declared() -> set[str]:
    text = (REPO / "pyproject.toml").read_text()
    block = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    names = re.findall(r'^\s*"([A-Za-z0-9_.\-]+)', block, re.M)
    return {n.lower().replace("_", "-") for n in names}


def _imports(sources: list[str]) -> set[str]:
    found: set[str] = set()
    for src in sources:
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"steelnb", "__future__"}


def _distributions(modules: set[str]) -> set[str]:
    dists = packages_distributions()
    return {d.lower().replace("_", "-") for m in modules for d in dists.get(m, [m])}


def test_package_imports_are_declared() -> None:
    used = _distributions(_imports([p.read_text() for p in (REPO / "steelnb").glob("*.py")]))
    missing = sorted(used - _declared())
    assert not missing, f"imported by steelnb but not in pyproject.toml dependencies: {missing}"


def test_declared_dependencies_are_used() -> None:
    sources = [p.read_text() for d in ("steelnb", "bench", "tests") for p in (REPO / d).rglob("*.py")]
    for nb in (REPO / "notebooks").glob("*.ipynb"):
        cells = json.loads(nb.read_text())["cells"]
        sources += [
            "\n".join(line for line in "".join(c["source"]).splitlines() if not line.startswith(("%", "!")))
            for c in cells
            if c["cell_type"] == "code"
        ]
    used = _distributions(_imports(sources))
    unused = sorted(_declared() - used - RUNTIME_ONLY)
    assert not unused, f"declared in pyproject.toml but imported nowhere: {unused}"
