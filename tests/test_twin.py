"""The Kaggle-size twin: its labels are the real label table's (counts, class sets, clean share,
masks per image, areas), at a fraction keeping the class mix; bad label files are named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from steelnb.cli import main
from steelnb.data import labels as lb
from steelnb.data import rle
from steelnb.data.images import list_images
from steelnb.data.twin import FILES, TwinError, class_sets, keep_fraction, read_label_tables

FRACTION = 1 / 64


def _real_tables(shared_data: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    return read_label_tables(shared_data / "severstal-labels")


def _check_twin(out: Path, shared_data: Path, fraction: float) -> None:
    """The twin in ``out`` against the real files at ``fraction`` of their images."""
    images, real, test_ids = _real_tables(shared_data)
    twin = lb.read_labels(out / "train.csv")
    ids = list_images(out / "train_images")
    assert len(ids) == int(np.floor(fraction * len(images)))
    table = images.set_index("ImageId").loc[ids]
    # every image's class set is the real one; the defect-free share and masks per image follow
    got = twin.groupby("ImageId")["ClassId"].apply(lambda s: " ".join(map(str, sorted(s))))
    want = class_sets(table.reset_index()).set_axis(ids)
    assert got.reindex(ids, fill_value="").equals(want)
    real_share = (class_sets(images) == "").mean()
    assert abs((want == "").mean() - real_share) < 0.01
    per_image = twin.groupby("ImageId").size().value_counts(normalize=True)
    real_per = class_sets(images)[class_sets(images) != ""].str.split().map(len).value_counts(normalize=True)
    assert abs(per_image.get(1, 0) - real_per[1]) < 0.03
    # class counts: each class's share of the masks within one mask per class of the full mix
    full = (images[[f"area_class_{c}" for c in lb.CLASS_IDS]] > 0).sum().to_numpy()
    counts = twin["ClassId"].value_counts().reindex(lb.CLASS_IDS, fill_value=0).to_numpy()
    assert np.all(np.abs(counts - fraction * full) <= np.maximum(2, 0.05 * fraction * full))
    # areas: the complete images carry their real masks byte for byte; drawn ones near the real area
    twin = twin.assign(area=twin["EncodedPixels"].map(rle.area))
    target = [table.loc[i, f"area_class_{c}"] for i, c in zip(twin["ImageId"], twin["ClassId"])]
    complete = table.loc[twin["ImageId"], "complete"].to_numpy()
    assert np.array_equal(twin["area"].to_numpy()[complete], np.array(target)[complete])
    known = real.merge(twin, on=["ImageId", "ClassId"], suffixes=("", "_twin"))
    assert len(known) == int(complete.sum())
    assert (known["EncodedPixels"] == known["EncodedPixels_twin"]).all()
    ratio = twin["area"].to_numpy()[~complete] / np.array(target)[~complete]
    assert ratio.size > 0 and 0.8 < np.median(ratio) < 1.25 and (ratio > 0.3).all()
    # test images named as in sample_submission.csv, the submission listing them
    tests = list_images(out / "test_images")
    assert len(tests) == int(np.floor(fraction * len(test_ids))) and set(tests) <= set(test_ids)
    sub = pd.read_csv(out / "sample_submission.csv")
    assert sorted(sub["ImageId"]) == tests and list(sub.columns) == ["ImageId", "EncodedPixels", "ClassId"]
    marker = json.loads((out / "synthetic.json").read_text())
    assert marker["generator"] == "steelnb.twin" and marker["fraction"] == fraction


@pytest.mark.slow  # 5-14 s on two cores (trains, exports or starts a process): CI runs it, the fast loop does not
def test_twin_carries_the_real_label_table(shared_data, tmp_path) -> None:
    out = tmp_path / "twin"
    assert (
        main(
            [
                "synth",
                str(out),
                "--labels",
                str(shared_data / "severstal-labels"),
                "--fraction",
                str(FRACTION),
            ]
        )
        == 0
    )
    _check_twin(out, shared_data, FRACTION)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the temp folder was renamed


@pytest.mark.scale  # the checks above at 1/64 run everywhere; this one renders all 18,074 images
def test_twin_at_full_size(shared_data, tmp_path) -> None:
    from steelnb.data.twin import generate_twin

    _check_twin(generate_twin(shared_data / "severstal-labels", tmp_path / "twin"), shared_data, 1.0)


def test_keep_fraction_keeps_the_mix_and_the_total() -> None:
    strata = pd.Series(["", "3"] * 50 + ["1"] * 20 + ["2"] * 3)
    kept = keep_fraction(strata, 0.25, seed=0)
    assert len(kept) == int(0.25 * len(strata)) and len(set(kept)) == len(kept)
    mix = strata.iloc[kept].value_counts()
    assert mix[""] in (12, 13) and mix["3"] in (12, 13) and mix["1"] == 5
    assert np.array_equal(keep_fraction(strata, 1.0), np.arange(len(strata)))
    with pytest.raises(TwinError, match="fraction=0"):
        keep_fraction(strata, 0)


def test_bad_label_files_are_named(shared_data, tmp_path) -> None:
    src = shared_data / "severstal-labels"
    for name in FILES.values():
        shutil.copy(src / name, tmp_path / name)
    (tmp_path / FILES["complete"]).unlink()
    with pytest.raises(TwinError, match="train_partial_images.csv: label file not found"):
        read_label_tables(tmp_path)
    shutil.copy(src / FILES["complete"], tmp_path / FILES["complete"])
    areas = pd.read_csv(src / FILES["areas"])
    first = areas.index[areas["area_class_3"] > 0][0]
    areas.loc[first, "area_class_3"] = 0  # a class the other file says is there
    areas.to_csv(tmp_path / FILES["areas"], index=False)
    with pytest.raises(TwinError, match=rf"mask_areas.csv: image {areas.loc[first, 'image_id']}"):
        read_label_tables(tmp_path)
    with pytest.raises(TwinError, match="missing column"):
        pd.DataFrame({"x": [1]}).to_csv(tmp_path / FILES["types"], index=False)
        read_label_tables(tmp_path)
