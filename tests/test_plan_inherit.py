"""Plans that extend another (``extends``, ``replace``), and plans/rehearsal.yaml: plans/full.yaml
with only what a CPU cannot do replaced."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_notebook

from steelnb import pipeline

REPO = Path(__file__).resolve().parents[1]


def _project(tmp_path: Path, plans: dict[str, dict]) -> Path:
    (tmp_path / "notebooks").mkdir()
    cell = new_code_cell(
        'a: int = 1  # a\nsize: int = 8  # size\nenc: str = "big"  # encoder\nout: str = "w"  # out'
    )
    cell.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[cell])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(tmp_path / "notebooks" / "01_x.ipynb"))
    (tmp_path / "plans").mkdir()
    for name, spec in plans.items():
        (tmp_path / "plans" / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    return tmp_path


BASE = {
    "name": "base",
    "data": {"dir": "../data/kaggle", "synthetic": None},
    "defaults": {"a": 5, "size": 256, "out": "w/base"},
    "benchmarks": ["bench/x.py"],
    "stages": [{"name": "s", "runs": [{"notebook": "01_x", "matrix": {"enc": ["big", "bigger"]}}]}],
}


def test_extends_merges_defaults_and_replaces_values(tmp_path: Path) -> None:
    child = {
        "extends": "base",
        "defaults": {"a": 6},
        "data": {"dir": "../data/twin"},
        "benchmarks": [],
        "replace": {"enc": {"big": "small", "bigger": "smaller"}, "size": {256: 64}},
    }
    root = _project(tmp_path, {"base": BASE, "child": child})
    plan = pipeline.load_plan(root / "plans" / "child.yaml")
    assert plan.name == "child" and plan.benchmarks == []
    assert plan.data_dir == (root / "data" / "twin").resolve()
    params = [r["parameters"] for r in pipeline.effective_runs(plan)]
    assert params == [
        {"a": 6, "size": 64, "enc": "small", "out": "w/base"},
        {"a": 6, "size": 64, "enc": "smaller", "out": "w/base"},
    ]
    assert [r.slug for r in plan.runs] == ["01_x__small", "01_x__smaller"]  # named after what runs
    base = [r["parameters"] for r in pipeline.effective_runs(root / "plans" / "base.yaml")]
    assert base[0] == {"a": 5, "size": 256, "enc": "big", "out": "w/base"}


def test_extends_loops_and_bad_replace_are_plan_errors(tmp_path: Path) -> None:
    root = _project(
        tmp_path,
        {
            "a": {"extends": "b", "stages": BASE["stages"]},
            "b": {"extends": "a", "stages": BASE["stages"]},
            "c": {"extends": "base", "replace": {"enc": "small"}},
            "base": BASE,
        },
    )
    with pytest.raises(pipeline.PlanError, match="comes back to itself"):
        pipeline.load_plan(root / "plans" / "a.yaml")
    with pytest.raises(pipeline.PlanError, match="'replace' must map a parameter"):
        pipeline.load_plan(root / "plans" / "c.yaml")


#: What the rehearsal may change in a run of the full plan: what a CPU cannot do (encoder, size,
#: steps, ImageNet weights without a network, loader processes, the device) and where it writes.
CPU_ONLY = {"encoder", "height", "width", "epochs", "encoder_weights", "num_workers", "device"}
WHERE = {"data_dir", "out_dir", "weights_dir"}


def test_rehearsal_is_the_full_plan_but_for_what_a_cpu_cannot_do() -> None:
    full, rehearsal = pipeline.effective_runs("full"), pipeline.effective_runs("rehearsal")
    assert [(r["notebook"], r["stage"]) for r in rehearsal] == [(r["notebook"], r["stage"]) for r in full]
    for f, r in zip(full, rehearsal):
        changed = {k for k in f["parameters"] if f["parameters"][k] != r["parameters"][k]}
        assert changed <= CPU_ONLY | WHERE, (f["slug"], changed - CPU_ONLY - WHERE)
        p = r["parameters"]
        if r["notebook"] == "03_train":
            assert (p["epochs"], p["encoder_weights"], p["device"]) == (1, "", "cpu")
            assert (p["height"], p["width"]) in {(64, 192), (64, 416)}
            # judged as the full plan judges: hv TTA, tuned at full resolution
            assert (p["eval_tta"], p["tune_height"], p["tune_width"]) == ("hv", 256, 1600)
            assert p["out_dir"].startswith("../weights/rehearsal")
    folders = [
        (
            r["parameters"]["out_dir"],
            r["parameters"]["run_name"] or r["parameters"]["encoder"],
            r["parameters"]["loss"],
            r["parameters"]["width"],
        )
        for r in rehearsal
        if r["notebook"] == "03_train"
    ]
    assert len(set(folders)) == len(folders) == 8  # no two runs write one folder
    assert pipeline.load_plan("rehearsal").benchmarks == []
