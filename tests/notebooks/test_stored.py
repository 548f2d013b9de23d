"""The notebooks as stored: no outputs, one parameters cell of typed, commented literals,
no def/class, and `papermill --help-notebook` documents every parameter."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
NAMES = [
    "01_eda",
    "02_class_balance",
    "03_train",
    "04_loss_ablation",
    "05_evaluate",
    "06_results",
    "07_pseudo_labels",
    "08_recipe",
    "09_real_sample",
]


def _parameters(nb: dict) -> list[tuple[str, str, str]]:
    """(name, type, comment) of each line of the cell tagged parameters."""
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "exactly one cell tagged 'parameters'"
    out = []
    for line in "".join(cells[0]["source"]).splitlines():
        if line.startswith("# fmt: "):  # the formatter leaves the parameter lines as written
            continue
        code, _, comment = line.partition("  # ")
        node = ast.parse(code).body[0]
        assert isinstance(node, ast.AnnAssign), f"{line!r}: expected 'name: type = literal  # comment'"
        ast.literal_eval(node.value)  # literals only
        assert comment.strip() and line.count("=") == 1, f"{line!r}: one '=', and a comment"
        out.append((node.target.id, ast.unparse(node.annotation), comment.strip()))
    return out


def test_all_notebooks_present() -> None:
    assert [p.stem for p in NOTEBOOKS] == NAMES


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs_and_thin(path: Path) -> None:
    nb = json.loads(path.read_text())
    assert nb["cells"][0]["cell_type"] == "markdown" and nb["cells"][0]["source"][0].startswith("# ")
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, (
                f"{path.name}: stored with outputs"
            )
            source = "".join(cell["source"])
            tree = ast.parse("\n".join(ln for ln in source.splitlines() if not ln.startswith("%")))
            assert not [
                n
                for n in ast.walk(tree)
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            ], f"{path.name}: def/class belong in steelnb"
    names = [n for n, _, _ in _parameters(nb)]
    assert names == [n.lower() for n in names] and len(set(names)) == len(names)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_help_notebook_documents_every_parameter(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`papermill --help-notebook`, the command itself through click's runner in this process (a
    Python started and papermill imported per notebook cost more than the check)."""
    from click.testing import CliRunner
    from papermill.cli import papermill

    params = _parameters(json.loads(path.read_text()))
    result = CliRunner().invoke(papermill, ["--help-notebook", str(path)])
    text = " ".join(result.output.split())
    assert result.exit_code == 0 and "Parameters inferred for notebook" in text, text[-2000:]
    assert "Unable to parse" not in caplog.text + text  # papermill logs a line it cannot read
    for name, type_, comment in params:
        assert f"{name}: {type_} (default" in text, f"{name} missing from --help-notebook"
        assert " ".join(comment.split()) in text, f"{name}: comment not shown"
