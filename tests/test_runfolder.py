"""A training run's folder as a type: the splits written at fit and read back, an old folder
without them, a missing metrics file named, and each of the folder's file names spelled in one
module (no other module or notebook spells one, and none reads an injected ``"_path"`` key)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import nbformat
import pytest
from factories import data_config

from steelnb.batch import report
from steelnb.model import runfiles
from steelnb.model.runfolder import RunFolder, RunFolderError, RunRecord, Splits, read_runs

REPO = Path(__file__).resolve().parents[1]


def _strings(source: str) -> list[str]:
    """Every string constant of Python ``source`` that is not a docstring."""
    tree = ast.parse(source)
    docs = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
    ]


def _sources() -> dict[str, str]:
    """{name: Python source} of every package module and every notebook's code (magics left out)."""
    out = {p.relative_to(REPO).as_posix(): p.read_text() for p in sorted((REPO / "steelnb").glob("*.py"))}
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = [c.source for c in nbformat.read(path, 4).cells if c.cell_type == "code"]
        code = "\n".join(line for c in cells for line in c.splitlines() if not line.lstrip().startswith("%"))
        out[path.relative_to(REPO).as_posix()] = code
    return out


def test_file_names_are_spelled_in_one_module_and_no_one_reads_a_path_key() -> None:
    """A run folder's file names as values (``folder / "metrics.json"``) live in ``runfiles``;
    prose in a message may name them. No module or notebook reads ``"_path"``."""
    found = []
    for name, source in _sources().items():
        if name == "steelnb/model/runfiles.py":
            continue
        strings = _strings(source)
        found += [f"{name}: {s!r}" for s in strings if s in runfiles.ALL or s == "_path"]
    assert not found, found
    assert len(set(runfiles.ALL)) == len(runfiles.ALL)


def test_the_check_sees_a_spelled_name_and_skips_docstrings() -> None:
    code = 'def f(p):\n    """reads metrics.json"""\n    return p / "metrics.json", m["_path"]\n'
    assert _strings(code) == ["metrics.json", "_path"]


@pytest.mark.slow  # 5-14 s on two cores (trains, exports or starts a process): CI runs it, the fast loop does not
def test_splits_written_at_fit_read_back_as_the_data_module_has_them(tmp_path: Path) -> None:
    from steelnb.data.dataset import SteelDataModule
    from steelnb.data.synthetic import generate
    from steelnb.model.training import fit

    data = generate(tmp_path / "synthetic", n_images=30, n_test=0, seed=2)
    cfg = data_config(data, epochs=1, device="cpu", out_dir=str(tmp_path / "w"), run_name="r")
    run = RunFolder(fit(cfg, progress_bar=False))
    assert run.splits_file.is_file() and json.loads(run.splits_file.read_text())["test"]
    dm = SteelDataModule(cfg)
    got = run.splits()
    assert (list(got.train), list(got.validation), list(got.test)) == (dm.train_ids, dm.val_ids, dm.test_ids)
    assert run.config().run_name == "r" and run.splits_file.parent == run.config_file.parent
    # an old folder without the splits file: rebuilt from its config, the same ids
    run.splits_file.unlink()
    assert run.splits() == got == run.splits(cfg)


def test_splits_round_trip_and_a_bad_file_is_named(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    splits = Splits(("a.jpg", "b.jpg"), ("c.jpg",), ("d.jpg", "e.jpg"))
    assert run.write_splits(splits) == tmp_path / runfiles.SPLITS_FILE
    assert run.splits() == splits
    run.splits_file.write_text(json.dumps({"train": []}))
    with pytest.raises(RunFolderError, match=rf"{runfiles.SPLITS_FILE}: expected lists of image ids"):
        run.splits()
    run.splits_file.write_text("{")
    with pytest.raises(RunFolderError, match=rf"{runfiles.SPLITS_FILE}: not a readable"):
        run.splits()


def test_a_missing_or_broken_metrics_file_is_named(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "r")
    with pytest.raises(RunFolderError, match=rf"r/{runfiles.METRICS_FILE}: not found; train the run first"):
        run.metrics()
    run.path.mkdir()
    run.metrics_file.write_text("not json")
    with pytest.raises(RunFolderError, match=rf"r/{runfiles.METRICS_FILE}: not a readable"):
        run.metrics()
    with pytest.raises(report.ReportError, match=rf"r/{runfiles.METRICS_FILE}: not a readable"):
        report.read_metrics(tmp_path)


def test_records_read_like_their_metrics_and_carry_their_folder(tmp_path: Path) -> None:
    for name in ("b", "a"):
        RunFolder(tmp_path / name).path.mkdir()
        RunFolder(tmp_path / name).write_metrics({"loss": name})
    runs = read_runs(tmp_path)
    assert [r["run"] for r in runs] == ["a", "b"] and all(isinstance(r, RunRecord) for r in runs)
    assert runs[0].path == tmp_path / "a" and runs[0]["loss"] == "a" and "_path" not in runs[0]
    assert dict(runs[0].replace(seed=1)) == {"loss": "a", "run": "a", "seed": 1} and "seed" not in runs[0]
    assert RunFolder.of(runs[0]) == runs[0].folder == RunFolder.of(tmp_path / "a" / runfiles.METRICS_FILE)
