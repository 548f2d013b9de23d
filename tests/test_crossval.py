"""Cross-validation on a small labelled set: folds that judge every image once out of fold, the
out-of-fold scores joined and refused when they overlap, and the tables computed from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from steelnb.data.config import TrainConfig
from steelnb.data.sampling import TEST_FOLD
from steelnb.judge import comparison, crossval
from steelnb.judge.evaluation import SCORES_FILE


def _table(n: int = 20) -> pd.DataFrame:
    classes = ["", "1", "3", "3", "4"]
    return pd.DataFrame(
        {"ImageId": [f"{i:03d}.jpg" for i in range(n)], "classes": [classes[i % 5] for i in range(n)]}
    )


def test_each_image_is_tested_once_and_validated_by_the_next_fold() -> None:
    table = _table(20)
    files = crossval.cv_folds(table, n_folds=4)
    assert len(files) == 4
    tested = pd.concat([f.loc[f["fold"] == TEST_FOLD, "ImageId"] for f in files])
    assert sorted(tested) == sorted(table["ImageId"])  # every image once
    for k, f in enumerate(files):
        assert sorted(f["fold"].unique()) == [TEST_FOLD, 0, 1, 2]
        nxt = files[(k + 1) % 4]
        # run k's validation fold (0) is run k+1's test fold
        assert set(f.loc[f["fold"] == 0, "ImageId"]) == set(nxt.loc[nxt["fold"] == TEST_FOLD, "ImageId"])
    # stratified: each class set spread over the test folds
    for f in files:
        test = table[table["ImageId"].isin(f.loc[f["fold"] == TEST_FOLD, "ImageId"])]
        assert set(test["classes"]) == {"", "1", "3", "4"}
    with pytest.raises(crossval.CrossValError, match="n_folds=2"):
        crossval.cv_folds(table, n_folds=2)


def test_configs_write_the_folds_files_and_name_each_run(tmp_path: Path) -> None:
    base = TrainConfig(data_dir=str(tmp_path), subset="all", encoder="resnet18", out_dir=str(tmp_path / "w"))
    configs = crossval.cv_configs(
        base, _table(15), {"imagenet": "imagenet", "scratch": None}, 3, tmp_path / "f"
    )
    assert sorted(configs) == [(s, k, 0) for s in ("imagenet", "scratch") for k in range(3)]
    cfg = configs[("scratch", 2, 0)]
    assert cfg.encoder_weights is None and configs[("imagenet", 2, 0)].encoder_weights == "imagenet"
    assert (cfg.fold, cfg.n_folds, cfg.run_name) == (0, 2, "scratch__cv2")
    assert Path(cfg.folds).is_absolute() and pd.read_csv(cfg.folds)["fold"].min() == TEST_FOLD
    # training seeds: the same folds files, each seed its own run folder and seed
    seeded = crossval.cv_configs(base, _table(15), {"scratch": None}, 3, tmp_path / "g", train_seeds=[0, 4])
    assert sorted(seeded) == [("scratch", k, s) for k in range(3) for s in (0, 4)]
    assert seeded[("scratch", 1, 4)].run_name == "scratch__cv1__seed4" and seeded[("scratch", 1, 4)].seed == 4
    assert {seeded[("scratch", 1, s)].folds for s in (0, 4)} == {str((tmp_path / "g" / "cv1.csv").resolve())}
    with pytest.raises(crossval.CrossValError, match="train_seeds=\\[1, 1\\]"):
        crossval.cv_configs(base, _table(15), {"scratch": None}, 3, tmp_path / "h", train_seeds=[1, 1])


def _scores(ids: list[str], tp: int, fp: int, fn: int, empty: set[str] = frozenset()) -> pd.DataFrame:
    """Scores of ``ids``: class 3 has (tp, fp, fn) pixels on each image outside ``empty``, whose
    truth and prediction are empty everywhere; classes 1, 2 and 4 empty and predicted empty."""
    rows = []
    for i in ids:
        for c in range(1, 5):
            counts = (tp, fp, fn) if c == 3 and i not in empty else (0, 0, 0)
            rows.append({"ImageId": i, "ClassId": c, "tp": counts[0], "fp": counts[1], "fn": counts[2]})
    return pd.DataFrame(rows)


def _run(tmp_path: Path, name: str, scores: pd.DataFrame) -> Path:
    run = tmp_path / name
    run.mkdir()
    scores.to_csv(run / SCORES_FILE, index=False)
    return run


def test_out_of_fold_joins_the_folds_and_refuses_overlap_and_gaps(tmp_path: Path) -> None:
    a = _run(tmp_path, "cv0", _scores(["a", "b"], 1, 0, 0))
    b = _run(tmp_path, "cv1", _scores(["c"], 1, 0, 0))
    joined = crossval.out_of_fold([a, b], images=["a", "b", "c"])
    assert sorted(joined["ImageId"].unique()) == ["a", "b", "c"] and len(joined) == 12
    dup = _run(tmp_path, "cv2", _scores(["b"], 1, 0, 0))
    with pytest.raises(crossval.CrossValError, match=r"cv2: image b was already judged out of fold by .*cv0"):
        crossval.out_of_fold([a, dup])
    with pytest.raises(crossval.CrossValError, match="first missing: d"):
        crossval.out_of_fold([a, b], images=["a", "b", "c", "d"])
    with pytest.raises(crossval.CrossValError, match="no test_scores.csv"):
        crossval.out_of_fold([tmp_path / "missing"])


def test_tables_give_the_kaggle_metric_the_empty_baseline_and_each_class() -> None:
    ids = [f"{i}" for i in range(10)]
    clean = {"0", "1", "2", "3"}  # 4 defect-free images, 6 with class 3
    good = _scores(ids, 3, 1, 0, empty=clean)  # class-3 Dice 6/7 on each defective image
    bad = _scores(ids, 0, 0, 5, empty=clean)  # finds nothing: the all-empty prediction
    table = crossval.oof_table({"good": good, "bad": bad}, n_boot=200)
    row = table.set_index("start").loc["good"]
    dice3 = 6 / 7
    assert row["kaggle"] == pytest.approx((4 * 1.0 + 6 * (3 + dice3) / 4) / 10)
    empty = (4 * 1.0 + 6 * 0.75) / 10
    assert row["all_empty_kaggle"] == pytest.approx(empty)
    assert row["kaggle_gain"] == pytest.approx(row["kaggle"] - empty) and row["kaggle_gain_ci95"][0] > 0
    assert table.set_index("start").loc["bad", "kaggle_gain"] == pytest.approx(0.0)
    assert table["start"].iloc[-1] == "predicting nothing" and table["kaggle"].iloc[-1] == pytest.approx(
        empty
    )
    per = comparison.per_class_table({"good": good}, n_boot=200).set_index("class")
    assert per.loc[3, "images with the class"] == 6 and per.loc[3, "dice"] == pytest.approx(dice3)
    assert pd.isna(per.loc[1, "dice"]) and per.loc[1, "images with the class"] == 0
    assert per.loc[3, "all_empty_kaggle"] == pytest.approx(0.4)
    # the class's Kaggle score with its interval, and its paired gain over predicting nothing
    low, high = per.loc[3, "kaggle_ci95"]
    assert low <= per.loc[3, "kaggle"] <= high and high - low > 0
    assert per.loc[3, "kaggle_gain"] == pytest.approx(per.loc[3, "kaggle"] - 0.4)
    assert per.loc[3, "kaggle_gain_ci95"][0] <= per.loc[3, "kaggle_gain"] <= per.loc[3, "kaggle_gain_ci95"][1]
    assert per.loc[1, "kaggle_gain"] == pytest.approx(0.0)  # no image holds class 1, none predicted
    shown = comparison.per_class_shown(per.reset_index(), images="the images", label="start")
    assert list(shown.columns) == [
        "start",
        "class",
        "images with the class",
        "Dice over the images with the class [95% CI]",
        "class Kaggle [95% CI]",
        "class Kaggle, all-empty",
        "class gain over all-empty [95% CI]",
    ]
    assert shown.iloc[2]["class Kaggle [95% CI]"].startswith(f"{per.loc[3, 'kaggle']:.3f} [")
    d = crossval.paired_starts(good, bad, n_boot=200)
    assert d["diff"] == pytest.approx(row["kaggle_gain"]) and d["real"]
    with pytest.raises(crossval.CrossValError, match="different images"):
        crossval.paired_starts(good, _scores(ids[:5], 1, 0, 0))


def test_seeds_of_a_start_are_one_arm_over_seeds_and_images() -> None:
    """Several training seeds of a start: the table gives their mean with intervals over seeds and
    images (wider when the seeds disagree than one seed's over images), the comparison the
    two-level bootstrap (not "single seed"); seeds judged on other images are refused."""
    ids = [f"{i}" for i in range(12)]
    clean = {"0", "1", "2", "3"}
    seeds = [_scores(ids, tp, 1, 3 - tp, empty=clean) for tp in (0, 2, 3)]  # finds 0, 2/3, all
    bad = _scores(ids, 0, 0, 3, empty=clean)
    table = crossval.oof_table({"seeded": seeds, "one": seeds[1]}, n_boot=300).set_index("start")
    assert table.loc["seeded", "seeds"] == 3 and table.loc["one", "seeds"] == 1
    expected = np.mean([crossval.oof_table({"x": s}, n_boot=50)["kaggle"].iloc[0] for s in seeds])
    assert table.loc["seeded", "kaggle"] == pytest.approx(expected)
    width = {n: np.diff(table.loc[n, "kaggle_ci95"])[0] for n in ("seeded", "one")}
    assert width["seeded"] > width["one"]
    d = crossval.paired_starts(seeds, [bad, bad], n_boot=300)
    assert d["seeds"] == [3, 2] and not d["single_seed"]
    assert d["diff"] == pytest.approx(table.loc["seeded", "kaggle_gain"])
    with pytest.raises(crossval.CrossValError, match="seeds of one start were judged on different images"):
        crossval.paired_starts([seeds[0], _scores(ids[:6], 1, 0, 0)], bad)


def test_the_start_and_its_run_are_chosen_on_validation_alone() -> None:
    def m(val: float, test: float) -> dict:
        return {"test": {"val_tuned_kaggle": val, "kaggle": test}, "run": f"{val}"}

    runs = {"imagenet": [m(0.9, 0.5), m(0.8, 0.99)], "scratch": [m(0.7, 0.99), m(0.95, 0.99)]}
    start, run = crossval.choose_start(runs)
    assert start == "imagenet" and run["run"] == "0.9"  # mean 0.85 > 0.825; the test numbers play no part
    assert np.isclose(run["test"]["val_tuned_kaggle"], 0.9)
