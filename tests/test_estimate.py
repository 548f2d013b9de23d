"""The dry run's cost estimate: counts times measured rates, or "unmeasured on this device"."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from steelnb import cli
from steelnb.batch import estimate, pipeline
from steelnb.batch.benchmarks import Measure, write_result


def _results(folder: Path) -> Path:
    write_result(
        folder / "bench_train_cuda.json",
        benchmark="train",
        device="GPU",
        setting={},
        measures=[Measure("resnet50: training images/s at 256x768, batch 8", "images/s", 100.0, 40.0)],
        rows=[{"encoder": "resnet50", "full images/s": 50.0}],
    )
    write_result(
        folder / "bench_infer_cuda.json",
        benchmark="infer",
        device="GPU",
        setting={},
        measures=[
            Measure("predict_tensor on uint8 tensors: images/s, TTA none (1 pass)", "images/s", 200.0),
            Measure("predict_tensor on uint8 tensors: images/s, TTA hv (4 passes)", "images/s", 40.0),
        ],
    )
    return folder


def test_measured_rates_read_the_bench_results(tmp_path: Path) -> None:
    train, infer = estimate.measured_rates(_results(tmp_path), "cuda")
    assert train == {("resnet50", "256x768"): 100.0, ("resnet50", "256x1600"): 50.0}
    assert infer == {"none": 200.0, "hv": 40.0}
    assert estimate.measured_rates(tmp_path, "cpu") == ({}, {})


def test_estimate_is_counts_times_rates(tmp_path: Path) -> None:
    runs = [r for r in pipeline.effective_runs("full") if r["notebook"] == "03_train"]
    counts = {"study": 1000, "balanced": 600, "val": 400, "test": 500}
    table = estimate.estimate_runs(runs, counts, _results(tmp_path), "cuda").set_index("run")
    r50 = table.loc["03_train__resnet50_dice_bce__seed0"]
    # 40 epochs of 1000 images at 100/s, 40 validations of 400 at 200/s, 900 images at hv's 40/s
    assert r50["hours"] == pytest.approx((40 * 1000 / 100 + 40 * 400 / 200 + 900 / 40) / 3600)
    full = table.loc["03_train__resnet50_dice_bce_256x1600__seed1"]
    assert full["train images/s"] == 50.0 and full["train rate"] == "measured"
    assert math.isnan(table.loc["03_train__efficientnet-b4_dice_bce__seed2", "hours"])  # no B4 benchmark
    assert table.loc["03_train__efficientnet-b4_dice_bce__seed2", "train rate"] == "unmeasured on this device"
    ref = table.loc["03_train__efficientnet-b4_dice_bce_256x768_reference-subset__seed0"]
    assert ref["train images x epochs"] == "600 x 40"
    text = estimate.estimate_text(runs, None, kind="cuda", results_dir=tmp_path)
    assert (
        "03_train__resnet50_dice_bce__seed0: train 1" in text and "total: unmeasured on this device" in text
    )


def test_estimate_counts_every_seed(tmp_path: Path) -> None:
    """The full plan's three seeds are three runs each in the estimate: three times the rows and the
    hours of ``--seeds 0``."""
    counts = {"study": 1000, "balanced": 600, "val": 400, "test": 500}

    def table(seeds: list[int] | None) -> object:
        runs = [
            r
            for r in pipeline.effective_runs(pipeline.load_plan("full", seeds))
            if r["notebook"] == "03_train"
        ]
        return estimate.estimate_runs(runs, counts, _results(tmp_path), "cuda")

    three, one = table(None), table([0])
    assert len(three) == 3 * len(one) == 24
    assert three["hours"].sum() == pytest.approx(3 * one["hours"].sum()) and one["hours"].sum() > 0
    assert sorted(three["run"]) == sorted(
        f"{r.removesuffix('__seed0')}__seed{s}" for r in one["run"] for s in (0, 1, 2)
    )


def test_scaled_rate_is_said(tmp_path: Path) -> None:
    rate, how = estimate._train_rate({("resnet50", "256x768"): 100.0}, "resnet50", "256x1536")
    assert rate == pytest.approx(50.0) and how == "scaled by pixels from 256x768"


def test_dry_run_prints_the_estimate(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "full", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "estimated time on this device" in out
    assert "03_train__efficientnet-b4_dice_bce_256x768_reference-subset__seed2: train" in out
    assert "total:" in out


def test_a_synthetic_plan_counts_the_set_it_will_draw(tmp_path: Path) -> None:
    """Before its set exists, a synthetic plan's estimate counts the labels its block will draw
    (sealed images as the test split), and they are the counts of that set once generated; not
    the real label table's."""
    from steelnb.data.synthetic import generate

    block = {"n_images": 48, "n_test": 2, "seed": 3, "class_mix": "study", "sealed": 20}
    before, source = estimate._counts(tmp_path / "missing", block)
    assert "not generated yet" in source and before["test"] == 20
    data = generate(tmp_path / "set", **block)
    after, _ = estimate._counts(data, None)
    assert before == after
    assert before["val"] + before["test"] < 100  # the real label table gives hundreds
