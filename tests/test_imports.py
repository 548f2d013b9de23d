"""The package's imports point one way: down the layers its folders declare.

steelnb's subpackages are the stages of the flow, bottom to top as ``LAYERS`` lists them; the
modules left at ``steelnb/`` itself (the command line, ``__main__`` and the two documented old
paths) sit above them all. Every import of a steelnb module, at the top of a file or inside a
function, points to its own layer or one below, and no import cycle closes, lazy ones included."""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "steelnb"
# bottom to top: a module imports from its own layer and the ones before it here, never after
LAYERS = ("data", "model", "judge", "winners", "batch")
TOP = "steelnb"  # the modules at steelnb/ itself, above every layer
AT_TOP = {"__init__", "__main__", "cli", "config", "training"}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    """steelnb/judge/stats.py -> "judge.stats"; steelnb/cli.py -> "cli"; steelnb/__init__.py -> ""."""
    parts = list(path.relative_to(package).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """{module name: its file} for every module of the package, subpackages included."""
    return {module_name(p, package): p for p in sorted(package.rglob("*.py"))}


def steelnb_imports(
    path: Path, package: Path = PACKAGE, known: dict[str, Path] | None = None
) -> Iterator[tuple[int, str]]:
    """(line, module) for each steelnb module ``path`` imports, anywhere in the file (relative or
    absolute; ``from .data import rle`` gives "data.rle", ``from . import x`` of a name that is not
    a module gives the package). ``known``: the package's modules (default: found again)."""
    known = modules(package) if known is None else known
    name = module_name(path, package)
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    here = [p for p in here if p]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else list(here)
                parts = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "steelnb":
                parts = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:
                sub = ".".join([*parts, alias.name])
                yield node.lineno, sub if sub in known else ".".join(parts)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "steelnb":
                    yield node.lineno, ".".join(alias.name.split(".")[1:])


def folder_layer(name: str) -> str:
    """The layer of a module by its folder: "judge.stats" -> "judge"; "cli" or "" -> TOP."""
    first = name.split(".")[0]
    return first if first in LAYERS else TOP


def violations(package: Path = PACKAGE, layer_of: Callable[[str], str] = folder_layer) -> list[str]:
    """Each import that points to a higher layer, as "file:line: who (layer) imports what (layer)"."""
    rank = {layer: i for i, layer in enumerate((*LAYERS, TOP))}
    found, known = [], modules(package)
    for name, path in known.items():
        mine = layer_of(name)
        for line, target in steelnb_imports(path, package, known):
            theirs = layer_of(target)
            if rank[theirs] > rank[mine]:
                where = path.relative_to(package.parent)
                found.append(
                    f"{where}:{line}: {name or 'steelnb'} (layer {mine}) imports {target or 'steelnb'} "
                    f"(layer {theirs}), a higher layer"
                )
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """{module: the steelnb modules it imports (relative or absolute, anywhere in the file)}."""
    known = modules(package)
    return {
        name: {t for _, t in steelnb_imports(path, package, known)} - {name} for name, path in known.items()
    }


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


def _package(root: Path, files: dict[str, str]) -> Path:
    """A toy steelnb package under ``root``: {relative path: source}, with every __init__.py."""
    pkg = root / "steelnb"
    for rel, src in {"__init__.py": "", **files}.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(pkg).parents:
            (pkg / parent / "__init__.py").touch()
        path.write_text(src)
    return pkg


def test_the_walk_sees_imports_of_every_kind(tmp_path: Path) -> None:
    graph = import_graph()
    assert "data.config" in graph["model.training"]  # from ..data.config import ...
    assert "data.dataset" in graph["model.training"]  # inside fit()
    assert "data.config" in graph[""]  # the package's own __init__
    pkg = _package(
        tmp_path,
        {
            "data/rle.py": "",
            "data/labels.py": "from . import rle\nfrom .rle import encode\n",
            "model/models.py": "import steelnb.data.rle as rle\nfrom steelnb.data import labels, rle\n",
            "cli.py": "def main():\n    from .model import models\n    from . import __version__\n",
        },
    )
    assert import_graph(pkg) == {
        "": set(),
        "cli": {"", "model.models"},
        "data": set(),
        "data.labels": {"data.rle"},
        "data.rle": set(),
        "model": set(),
        "model.models": {"data.labels", "data.rle"},
    }
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_import_cycle_in_steelnb() -> None:
    assert cycles(import_graph()) == []


def test_every_module_lies_in_a_layer() -> None:
    """Only the command line, __main__ and the two documented paths stay at steelnb/ itself."""
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.stem not in AT_TOP)
    folders = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
    assert not loose, f"modules at steelnb/ that belong in one of {LAYERS}: {loose}"
    assert folders == sorted(LAYERS), f"steelnb's subpackages {folders} are not the layers {LAYERS}"


def test_imports_point_down_the_layers() -> None:
    found = violations()
    assert not found, "imports up the layers (" + " < ".join(LAYERS) + " < the top):\n" + "\n".join(found)


def test_an_import_up_the_layers_is_found_inside_a_function(tmp_path: Path) -> None:
    """The flat layout's fault: dataset (data) read pseudo-labels through pseudo (the recipe), which
    imports inference (judging), each import inside a function."""
    pkg = _package(
        tmp_path,
        {
            "data/dataset.py": "def load():\n    from ..winners.pseudo import read\n    return read()\n",
            "judge/inference.py": "def predict():\n    from ..model import models\n",
            "model/models.py": "",
            "winners/pseudo.py": "def read():\n    from ..judge.inference import predict\n",
            "cli.py": "from .winners import pseudo\n",
        },
    )
    assert violations(pkg) == [
        "steelnb/data/dataset.py:2: data.dataset (layer data) imports winners.pseudo (layer winners), a higher layer"
    ]


def test_no_test_module_imports_another() -> None:
    """What tests share lives in helper modules (conftest, factories, tinydata, nbout, browser,
    scored), so that running one test file never runs or depends on another's module."""
    tests = Path(__file__).resolve().parent
    test_modules = {p.stem for p in tests.rglob("test_*.py")}
    found = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            found += [
                f"{path.relative_to(tests)} imports {n}" for n in names if n.split(".")[0] in test_modules
            ]
    assert not found, found


def test_the_documented_paths_are_the_moved_modules() -> None:
    """README and book: ``from steelnb.config import TrainConfig``, ``from steelnb.training import fit``."""
    import steelnb.config
    import steelnb.data.config
    import steelnb.model.training
    import steelnb.training
    from steelnb.config import TrainConfig
    from steelnb.training import fit

    assert steelnb.config is steelnb.data.config and steelnb.training is steelnb.model.training
    assert TrainConfig is steelnb.data.config.TrainConfig and fit is steelnb.model.training.fit


def test_reading_results_imports_no_model_code() -> None:
    """The results pages (04, 06) and a user comparing runs import ``judge.comparison`` (06 also
    ``judge.classwise``) and ``batch.report``: pandas and numpy, not torch, smp or torchmetrics (about 4.5 of their 6 s of
    imports in a kernel). Counted in a fresh interpreter, since this one has torch already."""
    import subprocess
    import sys

    code = (
        "import sys; import steelnb.judge.comparison, steelnb.judge.classwise, steelnb.judge.crossval, steelnb.batch.report; "
        "print(sorted(m for m in ('torch', 'segmentation_models_pytorch', 'torchmetrics', 'lightning', 'timm') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
