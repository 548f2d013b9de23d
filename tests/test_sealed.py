"""The sealed test split: probes and bench tools judge on validation only. A guard in the package
(``sampling.sealed``) refuses test images; ``evaluation.judge_on_validation``, which the tools call,
scores the validation ids of a tiny folds file and never a test id; bench/learn_probe.py's and
bench/tuning_bound.py's judging goes through it; and no bench tool calls what scores the test split."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from steelnb.data import sampling
from steelnb.data.config import TrainConfig
from steelnb.data.dataset import SteelDataModule
from steelnb.data.synthetic import generate
from steelnb.judge import evaluation
from steelnb.judge import postprocess as pp
from steelnb.model.runfolder import RunFolder, Splits

REPO = Path(__file__).resolve().parents[1]


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_guard_refuses_test_images() -> None:
    assert sampling.sealed(["a", "b"], ["c"], "probe") == ["a", "b"]
    with pytest.raises(
        sampling.SealedSplitError, match=r"^bench/x.py: asked to score 1 image\(s\) of the sealed"
    ):
        sampling.sealed(["a", "c"], ["c", "d"], "bench/x.py")
    assert issubclass(sampling.SealedSplitError, ValueError)


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> tuple[TrainConfig, SteelDataModule]:
    """A tiny synthetic set with a folds file holding a test split (fold -1)."""
    data = generate(tmp_path_factory.mktemp("sealed") / "data", n_images=30, n_test=0, seed=0)
    ids = sorted(p.name for p in (data / "train_images").iterdir())
    from steelnb.data.labels import read_labels

    labels = read_labels(data / "train.csv")
    classes = labels.groupby("ImageId")["ClassId"].apply(lambda c: "".join(map(str, sorted(c))))
    table = pd.DataFrame({"ImageId": ids, "classes": [classes.get(i, "") for i in ids]})
    folds = sampling.assign_folds(table, n_folds=5, seed=0, test_share=0.3)
    folds.to_csv(data / "folds.csv", index=False)
    cfg = TrainConfig(data_dir=str(data), subset="all", folds="folds.csv", height=32, width=160, device="cpu")
    dm = SteelDataModule(cfg)
    assert dm.test_ids and dm.val_ids and not set(dm.test_ids) & set(dm.val_ids)
    return cfg, dm


@pytest.fixture
def scored(monkeypatch, split) -> list[list[str]]:
    """Every image id list that tuning or scoring is asked for, with no model behind it."""
    cfg, dm = split
    asked: list[list[str]] = []

    def tune(ens, images, labels, image_ids, *a, **kw):
        asked.append(list(image_ids))
        return pp.PostParams(score=0.5)

    def score(weights, images_dir, labels_csv, image_ids, params, *a, **kw):
        asked.append(list(image_ids))
        rows = [(i, c, 0, 0, 0, 0, 0, 0) for i in image_ids for c in range(1, 5)]
        return pd.DataFrame(rows, columns=["ImageId", "ClassId", *evaluation.COUNT_COLUMNS])

    data = evaluation.RunData(cfg, Splits.of(dm))
    monkeypatch.setattr(
        evaluation, "_loaded", lambda run_dir, device, model: (RunFolder(run_dir), None, data)
    )
    monkeypatch.setattr(evaluation, "tune_on", tune)
    monkeypatch.setattr(evaluation, "score_images", score)
    return asked


def _never_test(asked: list[list[str]], dm: SteelDataModule) -> None:
    assert asked, "nothing was scored"
    for ids in asked:
        assert ids == dm.val_ids and not set(ids) & set(dm.test_ids)


def test_judge_on_validation_scores_validation_only(scored, split, tmp_path: Path, monkeypatch) -> None:
    _, dm = split
    block = evaluation.judge_on_validation(tmp_path, tta="h", tune_size=(32, 160), n_boot=50)
    assert block["split"] == "validation" and block["images"] == len(dm.val_ids)
    _never_test(scored, dm)
    # a split whose validation holds a test image is refused before anything is scored
    leaky = evaluation.RunData(split[0], Splits((), (*dm.val_ids, dm.test_ids[0]), tuple(dm.test_ids)))
    scored.clear()
    monkeypatch.setattr(
        evaluation, "_loaded", lambda run_dir, device, model: (RunFolder(run_dir), None, leaky)
    )
    with pytest.raises(sampling.SealedSplitError, match="a probe"):
        evaluation.judge_on_validation(tmp_path)
    assert scored == []


def test_learn_probe_judges_on_validation(scored, split, tmp_path: Path) -> None:
    _, dm = split
    row = _tool("learn_probe").judge(tmp_path, "h", (32, 160), 2)
    assert row["split"] == "validation"
    _never_test(scored, dm)


def test_tuning_bound_judges_on_validation(scored, split, tmp_path: Path, capsys) -> None:
    _, dm = split
    run = tmp_path / "weights" / "r"
    run.mkdir(parents=True)
    metrics = {"run": "r", "best": {"kaggle": 0.4}, "test": {"tta": "h", "tune_size": [32, 160]}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert _tool("tuning_bound").main([str(tmp_path / "weights")]) == 0
    assert "r | 1.000 | 0.400 |" in capsys.readouterr().out  # every tiny pair scored empty here
    _never_test(scored, dm)


def test_no_bench_tool_calls_what_scores_the_test_split() -> None:
    """The calls that score the test split (the notebooks' evaluation) or read its scores; a bench
    tool that needs a number judges on validation (evaluation.judge_on_validation)."""
    scoring = re.compile(
        r"\b(test_ids|evaluate_run|compare_variants|evaluate_ensemble|read_scores|test_scores)\b"
    )
    for tool in sorted((REPO / "bench").glob("*.py")):
        code = "\n".join(line for line in tool.read_text().splitlines() if not line.lstrip().startswith("#"))
        assert not scoring.search(code), f"{tool.name}: {scoring.search(code)[0]}"
