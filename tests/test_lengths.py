"""Functions and classes that read in one sitting: none in steelnb runs past ``FUNCTION_LINES``
(a class past ``CLASS_LINES``) unless ``LONGER`` names it with the reason it is kept so.

A length counts the lines from ``def`` or ``class`` to the last line of the body, docstring and
comments included (decorators not). A name is ``<module>.<qualified name>``, the module by its
file's name alone, so that moving a module into a subpackage keeps its entries.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "steelnb"
FUNCTION_LINES = 50
CLASS_LINES = 220

#: the functions and classes kept longer than the limits, each with its reason (none today)
LONGER: dict[str, str] = {}


def lengths(source: str, module: str) -> dict[str, tuple[str, int]]:
    """{``module.Qualified.name``: ("function" or "class", lines)} of every function, method,
    nested function and class in ``source``."""
    found: dict[str, tuple[str, int]] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}.{child.name}"
                kind = "class" if isinstance(child, ast.ClassDef) else "function"
                found[name] = (kind, child.end_lineno - child.lineno + 1)  # type: ignore[operator]
                visit(child, name)
            else:
                visit(child, prefix)

    visit(ast.parse(source), module)
    return found


def too_long(found: dict[str, tuple[str, int]]) -> dict[str, int]:
    """{name: lines} of the functions over ``FUNCTION_LINES`` and the classes over ``CLASS_LINES``."""
    limit = {"function": FUNCTION_LINES, "class": CLASS_LINES}
    return {name: n for name, (kind, n) in found.items() if n > limit[kind]}


def package_lengths() -> dict[str, tuple[str, int]]:
    found: dict[str, tuple[str, int]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        found |= lengths(path.read_text(), path.stem)
    return found


def test_the_count_runs_from_def_to_the_last_line_of_every_kind() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(FUNCTION_LINES - 2))
    source = (
        f"def short():\n    '''doc'''\n{body}\n\n"  # FUNCTION_LINES lines: at the limit
        f"class C:\n    @property\n    def long(self):\n        '''doc'''\n        # why\n"
        + body.replace("    ", "        ")
        + "\n        def inner():\n            pass\n"
    )
    found = lengths(source, "m")
    assert found["m.short"] == ("function", FUNCTION_LINES)
    assert found["m.C.long"] == ("function", FUNCTION_LINES + 3)  # decorator out, comment in
    assert found["m.C.long.inner"] == ("function", 2)
    assert found["m.C"][0] == "class"
    assert too_long(found) == {"m.C.long": FUNCTION_LINES + 3}


def test_no_function_or_class_runs_past_its_limit_without_a_reason() -> None:
    over = too_long(package_lengths())
    unlisted = {name: n for name, n in over.items() if name not in LONGER}
    assert not unlisted, (
        f"over {FUNCTION_LINES} lines (classes {CLASS_LINES}): {unlisted}; split them into steps that "
        "read in one sitting, or list them in LONGER with the reason they stay long"
    )


def test_every_name_kept_longer_is_still_long_and_says_why() -> None:
    over = too_long(package_lengths())
    stale = sorted(set(LONGER) - set(over))
    assert not stale, f"{stale} are within the limits now (or gone): take them out of LONGER"
    assert all(reason.strip() for reason in LONGER.values())
