"""No comprehension rebuilds a collection or reads a file for each of its elements.

``[i for i in ids if i in set(labels["ImageId"])]`` builds the set once per element: linear on a
smoke's 256 test images and quadratic at the Kaggle scale, where it surfaces hours into a run (05
read the label file once per test image: its choice cell took 143 s of the full-size rehearsal,
bench/scaling.md). This test reads every comprehension of the package and of the notebooks' code
cells and refuses a condition that calls one of ``PER_ELEMENT`` (build a collection, count a list,
read a file): compute it once before the comprehension.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: calls that cost a pass over a collection (or a file read) each time a condition evaluates them
PER_ELEMENT = {"set", "frozenset", "list", "sorted", "dict", "read_labels", "read_csv", "scores", "count"}
COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)


def _name(call: ast.Call) -> str:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def _invariant(node: ast.AST, targets: set[str]) -> bool:
    """Whether ``node`` names none of the comprehension's loop variables (the same value each time)."""
    return not any(isinstance(n, ast.Name) and n.id in targets for n in ast.walk(node))


def _repeated(call: ast.Call, targets: set[str]) -> bool:
    """A ``PER_ELEMENT`` call whose pass does not depend on the element: a method of a
    loop-invariant object (``names.count(n)``), or a function of loop-invariant arguments
    (``set(labels["ImageId"])``)."""
    if _name(call) not in PER_ELEMENT:
        return False
    if isinstance(call.func, ast.Attribute):
        return _invariant(call.func.value, targets)
    return all(_invariant(a, targets) for a in [*call.args, *(k.value for k in call.keywords)])


def per_element_calls(source: str) -> list[str]:
    """ "line: call" for each call inside a comprehension (its element or its conditions) that makes
    the same pass over a collection, or reads the same file, for every element."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, COMPREHENSIONS):
            targets = {n.id for g in node.generators for n in ast.walk(g.target) if isinstance(n, ast.Name)}
            body = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
            for part in [*body, *(c for g in node.generators for c in g.ifs)]:
                found += [
                    f"{c.lineno}: {_name(c)}(...)"
                    for c in ast.walk(part)
                    if isinstance(c, ast.Call) and _repeated(c, targets)
                ]
    return sorted(set(found), key=found.index)


def _cells(path: Path) -> list[str]:
    """The code cells of a notebook, IPython magics left out."""
    nb = json.loads(path.read_text())
    return [
        "\n".join(ln for ln in "".join(c["source"]).splitlines() if not ln.lstrip().startswith(("%", "!")))
        for c in nb["cells"]
        if c["cell_type"] == "code"
    ]


def test_the_check_finds_a_set_rebuilt_per_element() -> None:
    assert per_element_calls("x = [i for i in ids if i in set(labels['ImageId'])]") == ["1: set(...)"]
    assert per_element_calls("n = sum(i not in set(read_labels(p)['ImageId']) for i in test)") == [
        "1: set(...)",
        "1: read_labels(...)",
    ]
    assert per_element_calls("dup = {n for n in names if names.count(n) > 1}") == ["1: count(...)"]
    assert per_element_calls("known = set(a)\nx = [i for i in ids if i in known]") == []
    # a pass over the element itself is the work, not a repeat
    assert per_element_calls("x = [sorted(g) for g in groups if g.count('|') == 4]") == []


def test_no_comprehension_of_the_package_or_the_notebooks_repeats_a_pass_per_element() -> None:
    found = {}
    for path in sorted((ROOT / "steelnb").rglob("*.py")):
        if hits := per_element_calls(path.read_text()):
            found[str(path.relative_to(ROOT))] = hits
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for k, cell in enumerate(_cells(path)):
            if hits := per_element_calls(cell):
                found[f"{path.relative_to(ROOT)}, code cell {k + 1}"] = hits
    assert not found, f"compute these once before the comprehension: {found}"
