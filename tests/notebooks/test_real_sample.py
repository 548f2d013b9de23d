"""09_real_sample through papermill at a tiny size on the 34 real labelled images (skipped where
../shared/data is absent), at two training seeds as the plan's three: every image judged once out
of fold by each seed, the baseline row recomputed from the real label file, both starts paired
over seeds and images, and a submission for the 72 real test images."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from nbout import outputs

from steelnb.batch import pipeline
from steelnb.data.labels import read_labels
from steelnb.judge.evaluation import read_scores

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_real_sample_cross_validates_every_real_image_once(shared_data: Path, tmp_path: Path) -> None:
    sample, test_images = (
        shared_data / "severstal-sample",
        shared_data / "severstal-test-sample" / "test_images",
    )
    weights, book = tmp_path / "weights", tmp_path / "book"
    plan = {
        "name": "tiny-real",
        "notebooks_dir": str(REPO / "notebooks"),
        "book_dir": str(book),
        "data": {"dir": str(sample)},
        "defaults": {"runs_dir": str(book / "runs")},
        "stages": [
            {
                "name": "real",
                "runs": [
                    {
                        "notebook": "09_real_sample",
                        "parameters": {
                            "data_dir": str(sample),
                            "test_images": str(test_images),
                            "out_dir": str(weights),
                            "n_folds": 3,
                            "height": 32,
                            "width": 224,
                            "tune_height": 32,
                            "tune_width": 224,
                            "epochs": 1,
                            "eval_tta": "none",
                            "n_overlays": 1,
                            "train_seeds": [0, 1],
                        },
                    }
                ],
            }
        ],
    }
    results = pipeline.run_plan(plan, build=False)
    assert list(results["status"]) == ["done"], results
    images = sorted(p.name for p in (sample / "train_images").glob("*.jpg"))
    for start in ("imagenet", "scratch"):
        for seed in (0, 1):
            judged = [set(read_scores(weights / f"{start}__cv{k}__seed{seed}")["ImageId"]) for k in range(3)]
            assert sorted(set().union(*judged)) == images and sum(map(len, judged)) == len(images)
    truth = read_labels(sample / "train.csv")
    empty_pairs = 4 * len(images) - len(truth.groupby(["ImageId", "ClassId"]))
    text, pngs = outputs(book / "runs" / "09_real_sample.ipynb")
    assert f"against {empty_pairs / (4 * len(images)):.3f} for predicting nothing" in text
    assert f"Out of fold on {len(images)} real Severstal images" in text
    assert "imagenet - scratch" in text and "class 3" in text and "2 training seeds per start" in text
    assert "single seed" not in text  # the comparison rests on both seeds
    sub = pd.read_csv(weights / "test-sample" / "submission.csv", keep_default_na=False)
    assert len(sub) == 4 * len(list(test_images.glob("*.jpg"))) == 288
    assert len(list((weights / "overlays").glob("*.png"))) == 1 and pngs >= 2  # a fold's and a test image
