"""The per-class choice of runs (steelnb.judge.classwise): each class from the run with the best
tuned validation score on it, never from the test split; its rows of that run's test scores;
predicting nothing where the best run switched the class off; clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from steelnb.judge import classwise, comparison, evaluation
from steelnb.judge import postprocess as pp
from steelnb.model.counts import dice_of
from steelnb.model.runfolder import RunFolder, RunRecord

IMAGES = 24


def _run(
    folder: Path,
    found: list[float],
    class_val: list[float] | None,
    off: tuple[int, ...] = (),
    images: int = IMAGES,
) -> RunRecord:
    """A scored run: class c's defect (200 px) on the images i with i % 4 == c - 1, found at
    ``found[c - 1]`` on test, 40 false pixels of class c on image c + 4 (an image without it);
    its validation class scores ``class_val`` (their mean the run's validation score); the classes
    in ``off`` switched off by its post-processing (nothing predicted: no tp, no fp)."""
    rows = []
    for i in range(images):
        for c in range(1, 5):
            truth = 200 if i % 4 == c - 1 else 0
            tp = 0 if c in off else int(truth * found[c - 1])
            fp = 40 if (c not in off and i == c + 4) else 0
            rows.append((f"{i:09x}.jpg", c, tp, fp, truth - tp, tp, fp, truth - tp))
    folder.mkdir(parents=True)
    scores = pd.DataFrame(rows, columns=["ImageId", "ClassId", *evaluation.COUNT_COLUMNS])
    scores.to_csv(folder / evaluation.SCORES_FILE, index=False)
    test = evaluation.summarize(evaluation.counts_of(scores), n_boot=200)
    params = pp.PostParams(
        classes=tuple(pp.ClassParams(enabled=c not in off) for c in range(1, 5)),
        score=None if class_val is None else float(np.mean(class_val)),
        class_scores=None if class_val is None else tuple(class_val),
    )
    metrics = {
        "run": folder.name,
        "test": {**test, "val_tuned_kaggle": params.score},
        "postprocess": params.to_dict(),
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return RunRecord(RunFolder(folder), json.loads(json.dumps(metrics)))


def test_each_class_comes_from_the_run_validation_prefers_for_it(tmp_path: Path) -> None:
    # a: the best on validation for class 1 but the worse on test; b: class 2's; class 3: a switched
    # it off and b ties it on validation (nothing wins the tie); class 4: a tie, to a (better overall)
    a = _run(tmp_path / "a", [0.2, 0.5, 0.5, 0.6], [0.96, 0.80, 0.90, 0.85], off=(3,))
    b = _run(tmp_path / "b", [0.9, 0.9, 0.9, 0.9], [0.90, 0.85, 0.90, 0.85])
    choice = classwise.choose_by_class([b, a])
    assert [m and m["run"] for m in choice] == ["a", "b", None, "a"]

    scores = {"a": a.folder.scores(), "b": b.folder.scores()}
    combined = classwise.combined_scores(choice, scores)
    for c, name in ((1, "a"), (2, "b"), (4, "a")):
        own = scores[name][scores[name]["ClassId"] == c].reset_index(drop=True)
        mine = combined[combined["ClassId"] == c].reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, own[mine.columns])
    third = combined[combined["ClassId"] == 3]
    assert (third["tp"] == 0).all() and (third["fp"] == 0).all() and third["fn"].sum() == 200 * IMAGES // 4

    summary = classwise.classwise_summary([a, b], against=b, n_boot=200)
    assert list(summary["choice"]["run"]) == ["a", "b", "none: predicting nothing", "a"]
    assert summary["choice"]["validation Kaggle of the class (tuned)"].tolist()[:2] == [0.96, 0.85]
    counts = evaluation.counts_of(combined)
    assert summary["test"]["kaggle"] == pytest.approx(float(dice_of(counts).mean()))
    # against b it loses class 1 (0.2 against 0.9 found), class 3 and class 4's 0.9: a paired loss
    assert summary["paired"]["diff"] == pytest.approx(summary["test"]["kaggle"] - b["test"]["kaggle"])
    assert summary["paired"]["diff"] < 0 and summary["paired"]["n"] == IMAGES


def test_runs_without_class_scores_or_on_other_images_are_refused(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", [0.5] * 4, [0.9] * 4)
    old = _run(tmp_path / "old", [0.5] * 4, None)
    with pytest.raises(comparison.ComparisonError, match=r"no per-class validation scores in old .*evaluate"):
        classwise.choose_by_class([a, old])
    with pytest.raises(comparison.ComparisonError, match="no runs to choose from"):
        classwise.choose_by_class([])
    other = _run(tmp_path / "other", [0.9] * 4, [0.95] * 4, images=20)
    with pytest.raises(comparison.ComparisonError, match="other: scored other test images than a"):
        classwise.classwise_summary([other], against=a, n_boot=100)


def test_tuning_keeps_each_class_score_and_the_file_reads_it_back(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    truth = np.zeros((6, 4, 16, 32), np.uint8)
    truth[::2, 1, 4:10, 5:20] = 1
    probs = np.clip(truth * 0.8 + rng.random(truth.shape) * 0.3, 0, 1)
    params = pp.tune_postprocess(
        probs, truth, thresholds=(0.5, 0.9), min_areas=(0,), top_probs=(0.0,), total_areas=(0,)
    )
    assert len(params.class_scores) == 4 and params.score == pytest.approx(np.mean(params.class_scores))
    assert params.class_scores[1] == pytest.approx(1.0)  # class 2 found exactly at 0.9
    again = pp.PostParams.from_yaml(params.to_yaml(tmp_path / "postprocess.yaml"))
    assert again == params
    with pytest.raises(pp.PostprocessError, match="x.yaml: expected 4 class scores"):
        pp.PostParams.from_dict({**params.to_dict(), "class_scores": [0.9]}, source="x.yaml")


def test_runs_are_grouped_by_seed_in_order() -> None:
    runs = [{"run": "a1", "seed": 1}, {"run": "b0", "seed": 0}, {"run": "x"}, {"run": "a0", "seed": 0}]
    groups = classwise.by_seed(runs)
    assert list(groups) == [0, 1, None]
    assert [m["run"] for m in groups[0]] == ["b0", "a0"] and [m["run"] for m in groups[None]] == ["x"]
    assert classwise.by_seed([]) == {}
