"""The test-split evaluation of a run: numbers from hand-made counts, and a run's metrics.json
carrying its data, code and test blocks after a real (tiny) training run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from factories import data_config

from steelnb.judge import evaluation

REPO = Path(__file__).resolve().parents[1]


def test_summarize_hand_made_counts() -> None:
    # 3 images x 2 classes of (tp, fp, fn)
    counts = np.array(
        [
            [[10, 0, 0], [0, 0, 0]],  # perfect defect; empty pair predicted empty
            [[0, 5, 0], [0, 0, 0]],  # false positive on an empty pair; empty pair
            [[5, 5, 0], [0, 0, 10]],  # Dice 2*5/(10+5) on a defect; a missed defect
        ]
    )
    out = evaluation.summarize(counts, n_boot=500)
    dice = np.array([[1, 1], [0, 1], [10 / 15, 0]])
    assert out["kaggle"] == pytest.approx(dice.mean())
    assert out["all_empty_kaggle"] == pytest.approx(3 / 6)  # three pairs have an empty truth
    assert out["kaggle_gain"] == pytest.approx(dice.mean() - 0.5)
    assert out["defect_pairs"] == 3 and out["defect_dice"] == pytest.approx((1 + 10 / 15 + 0) / 3)
    # pooled over images: class 1 tp 15, fp 10, fn 0; class 2 tp 0 fn 10
    assert out["dice"] == pytest.approx((30 / 40 + 0) / 2) and out["iou"] == pytest.approx((15 / 25 + 0) / 2)
    for key in ("kaggle", "dice", "iou", "defect_dice", "kaggle_gain"):
        low, high = out[f"{key}_ci95"]
        assert low <= out[key] <= high, key
    assert out["per_class_kaggle"] == pytest.approx(dice.mean(0).tolist())


def test_all_empty_prediction_gains_nothing() -> None:
    rng = np.random.default_rng(0)
    truth_area = rng.integers(0, 2, (40, 4)) * rng.integers(100, 1000, (40, 4))
    counts = np.stack([np.zeros_like(truth_area), np.zeros_like(truth_area), truth_area], -1)
    out = evaluation.summarize(counts, n_boot=500)
    assert out["kaggle"] == pytest.approx(out["all_empty_kaggle"])
    assert out["kaggle_gain_ci95"] == [0.0, 0.0] and not out["gain_real"]
    assert out["defect_dice"] == 0.0


def test_counts_of_orders_and_checks_images() -> None:
    scores = pd.DataFrame(
        [(i, c, c, 0, 1, 0, 0, 0) for i in ("b.jpg", "a.jpg") for c in (1, 2, 3, 4)],
        columns=["ImageId", "ClassId", *evaluation.COUNT_COLUMNS],
    )
    counts = evaluation.counts_of(scores)
    assert counts.shape == (2, 4, 3) and counts[0, :, 0].tolist() == [1, 2, 3, 4]
    with pytest.raises(evaluation.EvaluationError, match="c.jpg"):
        evaluation.counts_of(scores, image_ids=["a.jpg", "c.jpg"])


def test_variant_tables_are_looked_up_by_keys_and_shown_with_labels() -> None:
    """compare_variants' table holds keys (postprocess raw / tuned / all_empty); only the rendered
    table (steelnb.judge.tables) says "tuned on validation" and carries the "v [low, high]" texts."""
    from steelnb.judge import stats, tables

    counts = np.array([[[10, 0, 0], [0, 0, 0]], [[0, 5, 0], [0, 0, 0]], [[5, 5, 0], [0, 0, 10]]])
    block = evaluation.summarize(counts, n_boot=200)
    empty = {"tta": "–", "postprocess": "all_empty", "kaggle": block["all_empty_kaggle"], "images": 3}
    table = pd.DataFrame(
        [{"tta": "none", "postprocess": p, **block} for p in ("raw", "tuned")]
        + [{**empty, "defect_dice": 0.0}]
    )
    shown = tables.variants_table(table)
    assert list(shown["postprocess"]) == ["raw (0.5)", "tuned on validation", "all-empty prediction"]
    assert list(table["postprocess"]) == ["raw", "tuned", "all_empty"]  # the keys stay for lookups
    assert shown["Kaggle [95% CI]"].iloc[0] == stats.format_ci(block["kaggle"], *block["kaggle_ci95"])
    assert shown["Kaggle [95% CI]"].iloc[2] == f"{block['all_empty_kaggle']:.3f}"
    assert list(shown.columns[:3]) == ["tta", "postprocess", "images"]
    assert list(tables.variants_paired_table(pd.DataFrame()).columns)[2] == "Kaggle difference [95% CI]"


@pytest.mark.slow
def test_run_records_data_code_and_test(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from steelnb.data.synthetic import generate
    from steelnb.model.training import fit

    data = generate(tmp_path / "synthetic", n_images=40, n_test=0, seed=1)
    cfg = data_config(
        data, epochs=1, device="cpu", out_dir=str(tmp_path / "weights"), run_name="tiny", seed=3
    )
    run = fit(cfg, progress_bar=False)
    m = json.loads((run / "metrics.json").read_text())
    assert m["data"]["kind"] == "synthetic" and m["data"]["subset"] == "all"
    assert (m["data"]["n_train"], m["data"]["n_val"], m["data"]["n_test"]) == (25, 7, 8)
    from steelnb.data.dataset import SteelDataModule

    dm = SteelDataModule(cfg)
    defective = set(dm.labels["ImageId"])
    assert m["data"]["clean_test"] == sum(i not in defective for i in dm.test_ids)
    assert m["data"]["clean_train"] == sum(i not in defective for i in dm.train_ids)
    assert m["seed"] == 3 and m["encoder_weights"] is None
    assert set(m["code"]["versions"]) >= {"torch", "segmentation-models-pytorch", "lightning"}
    assert m["code"]["versions"]["torch"]
    block = evaluation.evaluate_run(run, tune_size=(32, 200), n_boot=200)
    m = json.loads((run / "metrics.json").read_text())
    assert m["test"] == json.loads(json.dumps(block)) and m["test"]["split"] == "test"
    for key in (
        "kaggle",
        "kaggle_ci95",
        "all_empty_kaggle",
        "kaggle_gain_ci95",
        "dice",
        "iou",
        "defect_dice",
    ):
        assert key in m["test"], key
    scores = evaluation.read_scores(run)
    assert len(scores) == 8 * 4 and scores["ImageId"].nunique() == 8
    # the all-empty baseline is the share of empty (image, class) pairs among the test images
    truth = scores["tp"] + scores["fn"]
    assert m["test"]["all_empty_kaggle"] == pytest.approx(float((truth == 0).mean()))
    assert (run / "postprocess.yaml").is_file() and "test_raw" in m
    # 05's comparison reads the run's own evaluation back (same TTA and tuning size) and predicts
    # only the other TTA; the last TTA's parameters end in postprocess.yaml, as before
    from steelnb.judge.postprocess import PostParams

    calls = []
    real = evaluation._tuned_scores
    monkeypatch.setattr(evaluation, "_tuned_scores", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    table, paired = evaluation.compare_variants(run, ttas=("h", "none"), tune_size=(32, 200), n_boot=200)
    assert calls == ["h"]
    # the three variants against the first are one family: Holm-adjusted, one training run
    assert len(paired) == 3 and (paired["p_holm"].between(0, 1)).all()
    assert paired["verdict"].str.endswith("after Holm adjustment over 3 comparisons; single seed").all()
    # the labels a reader sees are only the rendered tables' (tables), the lookups use keys
    from steelnb.judge import stats, tables

    shown = tables.variants_paired_table(paired)
    assert list(shown["variant"]) == [
        "h TTA, tuned on validation",
        "none TTA, raw (0.5)",
        "none TTA, tuned on validation",
    ]
    assert (shown["against"] == "h TTA, raw (0.5)").all() and list(shown["Holm p"]) == list(paired["p_holm"])
    first = paired.iloc[0]
    assert shown["Kaggle difference [95% CI]"].iloc[0] == stats.format_ci(
        first["kaggle_diff"], *first["kaggle_diff_ci95"]
    )
    assert set(tables.variants_table(table)["postprocess"]) == {
        "raw (0.5)",
        "tuned on validation",
        "all-empty prediction",
    }
    # the worst test images of the last TTA (the run's own evaluation here), for 05's overlays
    worst = pd.read_csv(run / "evaluation" / "worst.csv", dtype={"ImageId": str})
    ids = sorted(scores["ImageId"].unique())
    expect = evaluation.worst_images(evaluation.counts_of(scores), ids)
    assert len(worst) == 8 and worst["dice"].is_monotonic_increasing
    pd.testing.assert_frame_equal(worst, expect, check_dtype=False)
    tuned = table[(table["tta"] == "none") & (table["postprocess"] == "tuned")].iloc[0]
    assert tuned["kaggle"] == pytest.approx(m["test"]["kaggle"])
    assert PostParams.from_yaml(run) == PostParams.from_dict(m["postprocess"])
    evaluation.compare_variants(run, ttas=("none", "h"), tune_size=(32, 200), n_boot=200)
    assert calls == ["h", "h"]
    from steelnb.judge.evaluation import tune

    h = tune(
        run,
        images=dm.images_dir,
        labels=cfg.resolve(cfg.labels),
        image_ids=dm.val_ids,
        tta="h",
        size=(32, 200),
        save=False,
        progress=False,
    )
    assert PostParams.from_yaml(run) == h
    # bench/tuning_bound.py: tuned on the validation images and scored there (never the test
    # split), a run reaches at least what predicting nothing scores on them (switching every
    # class off is one of the settings tried)
    import importlib.util

    spec = importlib.util.spec_from_file_location("tuning_bound", REPO / "bench" / "tuning_bound.py")
    bound = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bound)
    capsys.readouterr()
    assert bound.main([str(run.parent)]) == 0
    row = capsys.readouterr().out.splitlines()[-1].split(" | ")
    assert row[0] == run.name and float(row[1]) == pytest.approx(m["all_empty_kaggle"], abs=5e-4)
    assert float(row[3]) >= float(row[1])
    assert bound.main([str(tmp_path / "nothing")]) == 1


@pytest.mark.slow
def test_cli_train_evaluates_on_the_test_split(tmp_path: Path, capsys) -> None:
    from steelnb.cli import main
    from steelnb.data.synthetic import generate

    data = generate(tmp_path / "synthetic", n_images=30, n_test=0, seed=4)
    main(
        [
            "train",
            "--data-dir",
            str(data),
            "--subset",
            "all",
            "--encoder",
            "resnet18",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--height",
            "64",
            "--width",
            "320",
            "--device",
            "cpu",
            "--out-dir",
            str(tmp_path / "w"),
            "--run-name",
            "cli",
        ]
    )
    out = capsys.readouterr().out
    m = json.loads((tmp_path / "w" / "cli" / "metrics.json").read_text())
    assert (
        m["test"]["images"] == 6 and f"test split (6 images): Kaggle metric {m['test']['kaggle']:.3f}" in out
    )


def test_class_dice_is_the_mean_over_the_images_that_hold_the_class() -> None:
    from steelnb.judge.summaries import class_dice

    counts = np.zeros((3, 4, 3))  # (images, classes, tp/fp/fn)
    counts[0, 0] = (10, 0, 0)  # class 1 found exactly on image 0 ...
    counts[1, 0] = (0, 5, 10)  # ... missed on image 1
    counts[2, 0] = (0, 7, 0)  # a false alarm on an image without it: not in the class's Dice
    counts[2, 2] = (3, 1, 2)  # class 3 on image 2: Dice 6 / 9
    out = class_dice(counts)
    assert out["class_images"] == [2, 0, 1, 0]
    assert out["class_dice"] == [pytest.approx(0.5), None, pytest.approx(6 / 9), None]
