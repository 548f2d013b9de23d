"""The reference's numbers beside the runs of ours most like them: which runs, and the label."""

from __future__ import annotations

import json
from pathlib import Path

from steelnb.batch import report
from steelnb.judge import reference


def _metrics(run: str, encoder: str, width: int, subset: str, kind: str = "kaggle") -> dict:
    return {
        "run": run,
        "encoder": encoder,
        "loss": "dice_bce",
        "height": 256,
        "width": width,
        "best": {"soft_iou": 0.5},
        "data": {"kind": kind, "subset": subset, "n_train": 900, "n_test": 533, "clean_test": 250},
        "test": {"iou": 0.61, "iou_ci95": [0.58, 0.64], "kaggle": 0.9},
    }


def test_reference_rows_quote_the_reference_and_label_ours() -> None:
    runs = [
        _metrics("resnet50__dice_bce__256x1600", "resnet50", 1600, "subset_study.csv"),
        _metrics("resnet50__dice_bce__256x768", "resnet50", 768, "subset_study.csv"),  # no reference row
        _metrics("efficientnet-b4__dice_bce__256x768", "efficientnet-b4", 768, "subset_study.csv"),
        _metrics(
            "efficientnet-b4__dice_bce__256x768__reference-subset",
            "efficientnet-b4",
            768,
            "subset_balanced.csv",
        ),
        _metrics("efficientnet-b3__dice_bce__256x768", "efficientnet-b3", 768, "study", kind="synthetic"),
    ]
    rows = reference.reference_rows(runs)
    assert list(rows.columns) == reference.COLUMNS
    assert rows["run"].tolist() == [
        "reference resnet50",
        "resnet50__dice_bce__256x1600",
        "reference efficientnet-b3",  # the synthetic B3 run is never set beside it
        "reference efficientnet-b4",
        "efficientnet-b4__dice_bce__256x768",
        "efficientnet-b4__dice_bce__256x768__reference-subset",
    ]
    ref = rows[rows["source"] == "reference"].set_index("encoder")
    assert ref["value"].to_dict() == {
        "resnet50": "0.4132",
        "efficientnet-b3": "0.513",
        "efficientnet-b4": "0.597",
    }
    assert ref["mask size"].to_dict() == {
        "resnet50": "256x1600",
        "efficientnet-b3": "256x768",
        "efficientnet-b4": "256x768",
    }
    assert (ref["metric"] == "soft IoU on probabilities, four classes merged into one mask").all()
    ours = rows[rows["source"] == "steelnb"].set_index("run")
    assert ours["like for like"].str.startswith("no").all()
    assert "the nearest" in ours.loc["efficientnet-b4__dice_bce__256x768__reference-subset", "like for like"]
    assert "study subset" in ours.loc["resnet50__dice_bce__256x1600", "like for like"]
    assert (
        ours.loc["resnet50__dice_bce__256x1600", "value"]
        == "IoU 0.610 [0.580, 0.640]; validation soft IoU 0.500"
    )
    assert reference.reference_rows(runs[-1:])["source"].tolist() == ["reference"] * 3


def test_reference_dir_is_the_full_plans_folder(tmp_path: Path) -> None:
    assert reference.reference_dir("../weights/full") == Path("../weights/full-reference")
    run = tmp_path / "full-reference" / "efficientnet-b4__dice_bce__256x768__reference-subset"
    run.mkdir(parents=True)
    m = _metrics(run.name, "efficientnet-b4", 768, "subset_balanced.csv")
    (run / "metrics.json").write_text(json.dumps(m))
    found = report.read_metrics(reference.reference_dir(tmp_path / "full"))
    assert reference.reference_rows(found)["run"].iloc[-1] == run.name


def test_the_seeds_of_an_arm_share_one_row_with_their_means_and_each_seeds_interval() -> None:
    """A plan's ``seeds: [0, 1, 2]`` writes ``<run>__seed<N>``: beside the reference they are one
    arm, one row (not one row per seed), with the means over the seeds and each seed's interval."""
    runs = []
    for seed, (iou, soft) in enumerate([(0.60, 0.50), (0.63, 0.56), (0.57, 0.47)]):
        m = _metrics(f"resnet50__dice_bce__256x1600__seed{seed}", "resnet50", 1600, "subset_study.csv")
        m["seed"], m["best"]["soft_iou"] = seed, soft
        m["test"] = {"iou": iou, "iou_ci95": [iou - 0.03, iou + 0.03], "kaggle": 0.9}
        runs.append(m)
    single = _metrics("efficientnet-b4__dice_bce__256x768", "efficientnet-b4", 768, "subset_study.csv")
    rows = reference.reference_rows([runs[2], single, runs[0], runs[1]]).set_index("run")
    assert rows.index.tolist() == [
        "reference resnet50",
        "resnet50__dice_bce__256x1600 (3 seeds)",
        "reference efficientnet-b3",
        "reference efficientnet-b4",
        "efficientnet-b4__dice_bce__256x768",
    ]
    assert rows.loc["resnet50__dice_bce__256x1600 (3 seeds)", "value"] == (
        "IoU 0.600, mean of 3 seeds (seed 0: 0.600 [0.570, 0.630]; seed 1: 0.630 [0.600, 0.660]; "
        "seed 2: 0.570 [0.540, 0.600]); validation soft IoU 0.510, mean of 3 seeds"
    )
    assert rows.loc["efficientnet-b4__dice_bce__256x768", "value"].startswith("IoU 0.610 [0.580, 0.640]")
