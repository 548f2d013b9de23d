"""Plans that extend another (``extends``, ``replace``), and plans/rehearsal.yaml: plans/full.yaml
with only what a CPU cannot do replaced."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_notebook

from steelnb.batch import pipeline

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
    """The full plan at one of its seeds (the rehearsal's ``seeds: [0]``; ``--seeds 0`` of the full
    plan), run for run, with the same folder names but for what the encoder and size change."""
    rehearsal = pipeline.effective_runs("rehearsal")
    full = pipeline.effective_runs(pipeline.load_plan("full", seeds=[0]))
    assert pipeline.load_plan("rehearsal").seeds == [0] and pipeline.load_plan("full").seeds == [0, 1, 2]
    assert [(r["notebook"], r["stage"]) for r in rehearsal] == [(r["notebook"], r["stage"]) for r in full]
    for f, r in zip(full, rehearsal):
        changed = {k for k in f["parameters"] if f["parameters"][k] != r["parameters"][k]}
        p = r["parameters"]
        if "run_name" in changed:  # the folder 03 derives from the replaced encoder and size, at seed 0
            assert p["run_name"] == f"{p['encoder']}__{p['loss']}__{p['height']}x{p['width']}__seed0"
            changed.remove("run_name")
        assert changed <= CPU_ONLY | WHERE, (f["slug"], changed - CPU_ONLY - WHERE)
        if r["notebook"] == "03_train":
            assert p["seed"] == 0 and p["run_name"].endswith("__seed0")
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


@pytest.mark.slow
def test_rehearsal_runs_end_to_end_on_a_small_twin(shared_data, tmp_path: Path) -> None:
    """The rehearsal's data stage, one training run and 05 through the batch runner on 1/512 of the
    twin (24 train images, 10 test images): the folds hold the Kaggle share of clean images, the run
    is judged at 256x1600 with hv TTA, and 05 writes a validated submission of 4 rows per test image."""
    import pandas as pd

    from steelnb.data.twin import generate_twin

    project = tmp_path / "project"
    shutil.copytree(REPO / "notebooks", project / "notebooks")
    generate_twin(shared_data / "severstal-labels", project / "data" / "twin", fraction=1 / 512)
    full = yaml.safe_load((REPO / "plans" / "full.yaml").read_text())
    by_name = {s["name"]: s for s in full["stages"]}
    plan = {
        "extends": "rehearsal",
        "name": "rehearsal-ci",
        "notebooks_dir": str(project / "notebooks"),
        "book_dir": str(project / "book"),
        "defaults": {"runs_dir": "../book/runs"},
        "stages": [
            {
                "name": "data",
                "runs": [r for r in by_name["data"]["runs"] if r["notebook"] == "02_class_balance"],
            },
            {
                "name": "train",
                "runs": [{"notebook": "03_train", "parameters": {"encoder": "resnet50", "loss": "dice_bce"}}],
            },
            {
                "name": "compare",
                "runs": [r for r in by_name["compare"]["runs"] if r["notebook"] == "05_evaluate"],
            },
        ],
    }
    results = pipeline.run_plan(plan, build=False)
    assert (results["status"] == "done").all(), results[["slug", "status", "error"]].to_string()
    twin = project / "data" / "twin"
    folds = pd.read_csv(twin / "folds.csv")
    assert len(folds) > 0
    run = project / "weights" / "rehearsal" / "resnet18__dice_bce__64x192__seed0"  # the rehearsal's one seed
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"]["kind"] == "synthetic" and metrics["encoder"] == "resnet18"
    sub = pd.read_csv(run / "submission" / "submission.csv", keep_default_na=False)
    n_test = len(list((twin / "test_images").iterdir()))
    assert n_test == 10 and len(sub) == 4 * n_test
