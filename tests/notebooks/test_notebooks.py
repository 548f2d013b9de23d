"""Each notebook once through papermill on tiny parameters, as one batch plan into a temporary
folder (the same path `steelnb run` takes); then assertions on what each run produced."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from nbout import outputs
from tinydata import TINY_TRAIN

from steelnb.batch import pipeline

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run all eight notebooks once (two tiny training runs, and the recipe's gate and pseudo-label
    runs apart in variants/) and return paths and the result table."""
    tmp = tmp_path_factory.mktemp("batch")
    data, weights, book = tmp / "synthetic", tmp / "weights", tmp / "book"
    variants = tmp / "variants"
    plan = {
        "name": "tiny",
        "notebooks_dir": str(REPO / "notebooks"),
        "book_dir": str(book),
        "data": {"dir": str(data), "synthetic": {"n_images": 40, "seed": 1}},
        "defaults": {
            "data_dir": str(data),
            "out_dir": str(weights),
            "weights_dir": str(weights),
            "runs_dir": str(book / "runs"),
            "subset": "subset_study.csv",
            "folds": "folds.csv",
            "max_images": 16,
            "height": 64,
            "width": 320,
            "epochs": 1,
            "batch_size": 4,
            "limit_train_batches": 2,
            "limit_val_batches": 1,
            "n_show": 1,
            "progress_bar": False,
        },
        "stages": [
            {
                "name": "data",
                "runs": [
                    {"notebook": "01_eda", "parameters": {"n_grey": 8, "real_masks": 40, "n_examples": 1}},
                    {
                        "notebook": "02_class_balance",
                        "parameters": {"per_class": 6, "n_folds": 3, "min_test": 0},
                    },
                ],
            },
            {
                "name": "train",
                "parallel": True,
                "runs": [
                    {
                        "notebook": "03_train",
                        "matrix": {"loss": ["dice_bce", "tversky"]},
                        "parameters": {"encoder": "resnet50"},
                    },
                    {
                        "notebook": "03_train",
                        "name": "03_train__gate",
                        "parameters": {
                            "encoder": "resnet50",
                            "cls_weight": 0.2,
                            "run_name": "gate",
                            "out_dir": str(variants),
                        },
                    },
                ],
            },
            {  # after two batches no class is confident at 0.05 / 0.95: loose bounds, to test the plumbing
                "name": "pseudo",
                "runs": [
                    {"notebook": "07_pseudo_labels", "parameters": {"tta": "none", "lo": 0.99, "hi": 0.995}}
                ],
            },
            {
                "name": "retrain",
                "runs": [
                    {
                        "notebook": "03_train",
                        "name": "03_train__pseudo",
                        "parameters": {
                            "encoder": "resnet50",
                            "run_name": "pseudo",
                            "out_dir": str(variants),
                            "pseudo_labels": "pseudo_labels.csv",
                            "pseudo_share": 0.25,
                        },
                    }
                ],
            },
            {
                "name": "compare",
                "runs": [
                    {
                        "notebook": "04_loss_ablation",
                        "parameters": {"encoder": "resnet50", "losses": ["dice_bce", "tversky"]},
                    },
                    {
                        "notebook": "05_evaluate",
                        "parameters": {"tune_height": 32, "tune_width": 160, "n_overlays": 1, "tta": "hv"},
                    },
                    {
                        "notebook": "08_recipe",
                        "parameters": {
                            "variants_dir": str(variants),
                            "gate_run": "gate",
                            "pseudo_run": "pseudo",
                            "ensemble": ["resnet50__dice_bce__64x320", "resnet50__tversky__64x320"],
                            "tta": "none",
                            "tune_height": 32,
                            "tune_width": 160,
                            "speed_images": 2,
                        },
                    },
                ],
            },
            {
                "name": "results",
                "runs": [{"notebook": "06_results", "parameters": {"variants_dir": str(variants)}}],
            },
        ],
    }
    table = pipeline.run_plan(plan, build=False)
    return {
        "table": table.set_index("slug"),
        "data": data,
        "weights": weights,
        "variants": variants,
        "runs": book / "runs",
    }


def _done(batch: dict, slug: str) -> tuple[str, int]:
    row = batch["table"].loc[slug]
    assert row["status"] == "done", f"{slug} failed: {row['error']}"
    return outputs(batch["runs"] / f"{slug}.ipynb")


def test_eda(batch: dict) -> None:
    text, pngs = _done(batch, "01_eda")
    assert "40 images" in text and "defect-free" in text and "share of images" in text
    assert pngs >= 6  # counts, co-occurrence, areas, pieces, positions x2, grey levels, examples


def test_class_balance_writes_subsets_and_the_three_splits(batch: dict) -> None:
    _done(batch, "02_class_balance")
    subset = pd.read_csv(batch["data"] / "subset_balanced.csv")
    study = pd.read_csv(batch["data"] / "subset_study.csv", keep_default_na=False)
    folds = pd.read_csv(batch["data"] / "folds.csv")
    assert list(folds.columns) == ["ImageId", "fold"] and set(folds["fold"]) == {-1, 0, 1, 2}  # -1: test
    # the folds: both subsets' images, topped up with defect-free ones to the Kaggle share (fold_images)
    union = set(subset["ImageId"]) | set(study["ImageId"])
    extra = set(folds["ImageId"]) - union
    assert union <= set(folds["ImageId"]) and not extra & set(subset["ImageId"])
    labelled = set(pd.read_csv(batch["data"] / "train.csv")["ImageId"])
    assert not extra & labelled  # every image added is defect-free (no mask row)
    assert not folds["ImageId"].duplicated().any()
    assert len(subset) <= 4 * 6  # per_class=6: a short class's shortfall goes to the others
    assert (study["classes"] == "").sum() > 0  # the study subset keeps defect-free images
    test = set(folds.loc[folds["fold"] == -1, "ImageId"])
    assert test & set(study.loc[study["classes"] == "", "ImageId"])  # and so does the test split


def test_train_writes_metrics_and_shows_curves(batch: dict) -> None:
    for loss in ("dice_bce", "tversky"):
        text, pngs = _done(batch, f"03_train__resnet50_{loss}")
        run = batch["weights"] / f"resnet50__{loss}__64x320"
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["loss"] == loss and metrics["history"] and 0 <= metrics["best"]["kaggle"] <= 1
        assert metrics["data"]["kind"] == "synthetic" and metrics["data"]["n_test"] >= 1
        test = metrics["test"]
        assert test["split"] == "test" and test["images"] == metrics["data"]["n_test"]
        assert test["kaggle_ci95"][0] <= test["kaggle"] <= test["kaggle_ci95"][1]
        assert "all_empty_kaggle" in test and "kaggle_gain_ci95" in test and "defect_dice" in test
        assert (run / "test_scores.csv").is_file()
        assert str(run.resolve()) in text  # the run folder's path is shown
        assert "held-out test images" in text and "predicting nothing" in text
        assert pngs >= 3  # curves, per-class bars, predictions beside the truth


def test_loss_ablation_compares_both_losses(batch: dict) -> None:
    text, pngs = _done(batch, "04_loss_ablation")
    assert "resnet50__dice_bce__64x320" in text and "resnet50__tversky__64x320" in text and pngs >= 2
    # the loss family is Holm-adjusted, one seed says so, and each per-class view names its split
    assert "after Holm adjustment over 1 comparisons" not in text  # one comparison is not a family
    assert "(one comparison, unadjusted); single seed" in text
    assert (
        "validation split, best epoch, raw" in text
        and "test split, post-processed, per class and run" in text
    )


def test_evaluate_tunes_and_writes_submission(batch: dict) -> None:
    text, _ = _done(batch, "05_evaluate")
    run = next(p.parent for p in batch["weights"].rglob("postprocess.yaml"))
    sub = pd.read_csv(run / "submission" / "submission.csv", keep_default_na=False)
    n_test = len(list((batch["data"] / "test_images").glob("*.jpg")))
    assert len(sub) == 4 * n_test and set(sub["ClassId"]) == {1, 2, 3, 4}
    assert "hv" in text and "tuned on validation" in text and "all-empty prediction" in text
    assert "held-out test images" in text and "95% CI" in text


def test_results_has_a_row_per_run(batch: dict) -> None:
    html, _ = _done(batch, "06_results")
    text = " ".join(re.sub(r"<[^>]+>", " ", html).split())
    assert "2 run(s): 2 compared here, 0 left out, 0 failed" in text
    for loss in ("dice_bce", "tversky"):
        assert (
            f"resnet50__{loss}__64x320 0 resnet50 {loss} 64x320 synthetic" in text
        )  # run, seed, encoder, loss, size, data
    assert "each arm minus the all-empty prediction" in text and "Validation chose" in text
    # the per-class choice: the two runs and the recipe's gate run (not the pseudo-label run, trained
    # on the test images' pseudo-labels), judged on test against the run validation chose
    assert "validation: each class's run, of 3 candidates" in text, text
    assert "the per-class choice scores" in text
    assert re.search(
        r"\(paired on the same images: (gain: excludes|loss: excludes|includes) 0 \(one comparison, unadjusted\); single seed\)",
        text,
    ), text
    # synthetic runs: the reference's Severstal numbers are not set beside them
    assert "not Severstal numbers" in text and "0.513" not in text  # (outputs only; the caveat is markdown)


def test_recipe_notebooks_label_retrain_and_table_the_steps(batch: dict) -> None:
    """07 labels the unlabelled images with the trained run, a run trains with them at a share of
    each batch, and 08 tables every step (gate, ensemble, pseudo-labels) against the single run,
    which 06 then shows."""
    text, _ = _done(batch, "07_pseudo_labels")
    assert "unlabelled images" in text and (batch["data"] / "pseudo_labels.csv").is_file()
    _done(batch, "03_train__gate")
    _done(batch, "03_train__pseudo")
    assert json.loads((batch["variants"] / "pseudo" / "metrics.json").read_text())["test"]["split"] == "test"
    text, _ = _done(batch, "08_recipe")
    table = pd.read_csv(batch["weights"] / "recipe.csv", keep_default_na=False)
    assert list(table["step"]) == ["single run", "classifier gate", "ensemble of 2", "pseudo-labels"]
    assert list(table["against"]) == ["predicting nothing"] + ["single run"] * 3
    assert (
        all(v.endswith("after Holm adjustment over 4 comparisons; single seed") for v in table["verdict"])
        and (table["images/s"] > 0).all()
    )
    assert "defect-free test images screened" in text  # the gate's own table
    html, _ = _done(batch, "06_results")
    assert "classifier gate" in html and "ensemble of 2" in html


def test_train_over_two_processes_from_the_notebook(batch: dict, tmp_path: Path) -> None:
    """devices=2, strategy="ddp": Lightning refuses to start DDP processes from a kernel, so 03
    trains in a child Python (training.fit_anywhere) whose two processes form one world; the
    notebook then evaluates the run as usual."""
    import papermill as pm

    out = tmp_path / "03_ddp.ipynb"
    pm.execute_notebook(
        str(REPO / "notebooks" / "03_train.ipynb"),
        str(out),
        cwd=str(REPO / "notebooks"),
        progress_bar=False,
        parameters={
            "data_dir": str(batch["data"]),
            "subset": "subset_study.csv",
            "folds": "folds.csv",
            "out_dir": str(tmp_path / "weights"),
            **TINY_TRAIN,
            "max_images": 8,
            "epochs": 1,
            "limit_train_batches": 2,
            "limit_val_batches": 1,
            "devices": 2,
            "strategy": "ddp",
        },
    )
    run = tmp_path / "weights" / "resnet50__dice_bce__64x320"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["epochs_run"] == 1
    assert metrics["test"]["split"] == "test"  # evaluated in the kernel after the child's training
    assert (run / "launch.yaml").is_file()


def test_results_compare_arms_over_their_seeds(tmp_path: Path) -> None:
    """06 on scored runs with no training behind them: two arms of three seeds (<arm>__seed<N>)
    and one single run. The pairs table rests on 3 vs 3 seeds and is Holm-adjusted; the single run
    is labelled single seed; the summary names validation's choice, not the best test score."""
    import papermill as pm
    from scored import scored_run

    from steelnb.judge import postprocess as pp

    weights = tmp_path / "weights"
    data = {"kind": "synthetic", "n_test": 12, "clean_test": 6}
    for arm, found, val in (("good", (0.9, 0.85, 0.8), 0.70), ("poor", (0.2, 0.25, 0.3), 0.60)):
        for seed, f in enumerate(found):
            folder = weights / f"{arm}__seed{seed}"
            m = scored_run(folder, f)
            extra = {
                "data": data,
                "seed": seed,
                "best": {"kaggle": 0.5},
                "test": {**m["test"], "val_tuned_kaggle": val + seed / 100},
                # each class's tuned validation score: the per-class choice of each seed's runs
                "postprocess": pp.PostParams(score=val, class_scores=(val,) * 4).to_dict(),
            }
            (folder / "metrics.json").write_text(json.dumps({"run": folder.name, **extra}))
    lone = scored_run(weights / "lone", 0.95)  # the best test score, but validation prefers good
    (weights / "lone" / "metrics.json").write_text(
        json.dumps(
            {
                "run": "lone",
                "data": data,
                "best": {"kaggle": 0.9},
                "test": {**lone["test"], "val_tuned_kaggle": 0.5},
            }
        )
    )
    out = tmp_path / "06.ipynb"
    pm.execute_notebook(
        str(REPO / "notebooks" / "06_results.ipynb"),
        str(out),
        parameters={
            "weights_dir": str(weights),
            "runs_dir": str(tmp_path / "runs"),
            "pairs": [["good", "poor", "good against poor"], ["lone", "poor", "lone against poor"]],
        },
        cwd=str(REPO / "notebooks"),
        kernel_name="python3",
        progress_bar=False,
    )
    text = " ".join(re.sub(r"<[^>]+>", " ", outputs(out)[0]).split())
    assert "7 run(s): 7 compared here" in text
    assert "3 vs 3 seeds" in text and "gain: excludes 0 after Holm adjustment over 2 comparisons" in text
    assert "Holm p and verdict: after Holm adjustment over 3 comparisons" in text  # 3 arms against nothing
    # the per-class test table shows every seed of the chosen arm and of each pair's first arm
    assert all(f"good__seed{s} 1" in text for s in range(3)) and "lone 1" in text
    assert "single seed" in text and "3 seeds" in text
    assert "Validation chose **good__seed2**" in outputs(out)[0] and "lone**" not in outputs(out)[0]
    # one per-class choice per seed, of that seed's runs (lone kept no class scores: left out),
    # each judged on test, the differences from validation's choice Holm-adjusted over the seeds
    assert "left out of the per-class choice" in text and "lone" in text.split("left out of the per-class")[1]
    assert all(f"of 2 candidates of seed {s}" in text for s in range(3)), text
    assert all(f"per-class choice, seed {s} 1" in text for s in range(3))
    assert "the per-class choice of seed 1 scores" in text
    assert text.count("; single seed)") >= 3 and "Holm adjustment over 3 comparisons; single seed)" in text
