"""Reading the batch record for the report: failed training runs of the last plan only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steelnb.batch import report, status


def test_failed_runs_of_the_last_plan_only(tmp_path: Path) -> None:
    def rec(slug: str, state: str, notebook: str = "03_train", **params) -> dict:
        return {
            "slug": slug,
            "notebook": notebook,
            "status": state,
            "error": "RuntimeError: boom",
            "parameters": params,
        }

    runs = {
        "a": rec("a", "failed", encoder="resnet50", loss="dice_bce", height=64, width=416),
        "b": rec("b", "done", encoder="efficientnet-b3", loss="dice_bce"),
        "c": rec("c", "failed", notebook="05_evaluate"),
        "old": rec("old", "failed", encoder="efficientnet-b4", loss="focal"),  # an earlier plan's
    }
    status.write_status(tmp_path, {"plan": "p", "order": ["a", "b", "c"], "runs": runs})
    failed = report.failed_runs(tmp_path)
    assert failed.to_dict("records") == [
        {
            "run": "resnet50__dice_bce__64x416",
            "encoder": "resnet50",
            "loss": "dice_bce",
            "mask size": "64x416",
            "status": "failed (RuntimeError: boom)",
        }
    ]
    assert report.failed_runs(tmp_path / "absent").empty and report.failed_runs(None).empty


def test_a_broken_status_file_is_named(tmp_path: Path) -> None:
    (tmp_path / status.STATUS_FILE).write_text("{not json")
    with pytest.raises(status.StatusError, match=r"status.json: not valid JSON"):
        status.read_status(tmp_path)


def test_runs_below_a_plan_folder_are_named_by_their_path(tmp_path: Path) -> None:
    """weights/ holding 03's default run and a plan's runs of the same name (weights/smoke/...):
    each table row must say which is which."""
    for folder in ("b4", "smoke/b4", "smoke/b3"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "metrics.json").write_text(json.dumps({"run": Path(folder).name}))
    runs = report.read_metrics(tmp_path)
    assert [m["run"] for m in runs] == ["b4", "smoke/b3", "smoke/b4"]
    assert [m.path.name for m in runs] == ["b4", "b3", "b4"]
    assert [m["run"] for m in report.read_metrics(tmp_path / "smoke")] == ["b3", "b4"]  # as before
    assert [m["run"] for m in report.read_metrics([tmp_path / "smoke" / "b4"])] == ["b4"]


def test_latest_by_keeps_the_last_written_run_of_each_value(tmp_path: Path) -> None:
    """04's one run per loss: the newest metrics.json wins (by mtime, not by name), and the older
    runs come back in the order they were superseded."""
    import os

    for i, (name, loss) in enumerate(
        [("b_old", "dice_bce"), ("a_mid", "dice_bce"), ("t", "tversky"), ("z", "dice_bce")]
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps({"loss": loss}))
        os.utime(tmp_path / name / "metrics.json", (1000 + i, 1000 + i))
    os.utime(tmp_path / "z" / "metrics.json", (990, 990))  # written first, though its name sorts last
    latest, older = report.latest_by(report.read_metrics(tmp_path), "loss")
    assert {loss: m["run"] for loss, m in latest.items()} == {"dice_bce": "a_mid", "tversky": "t"}
    assert [m["run"] for m in older] == ["z", "b_old"]
    # by loss and seed (the seeds plan): a run per pair, a run without a seed keyed as None
    (tmp_path / "s1").mkdir()
    (tmp_path / "s1" / "metrics.json").write_text(json.dumps({"loss": "tversky", "seed": 1}))
    latest, older = report.latest_by(report.read_metrics(tmp_path), ("loss", "seed"))
    assert {k: m["run"] for k, m in latest.items()} == {
        ("dice_bce", None): "a_mid",
        ("tversky", None): "t",
        ("tversky", 1): "s1",
    }
