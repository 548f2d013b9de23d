"""Defect-to-background contrast: exact values on a hand-made image, then the real sample and
a small synthetic set (one row per mask)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from steelnb.data import rle
from steelnb.data.contrast import (
    ContrastError,
    contrast_summary,
    contrast_table,
    describe_gap,
    mask_contrast,
    ring_mask,
)
from steelnb.data.labels import read_labels
from steelnb.data.synthetic import generate


def striped(h: int = 40, w: int = 60) -> np.ndarray:
    """Background of alternating columns 100 / 110: mean 105, std 5 over any column-balanced set."""
    img = np.full((h, w), 100, np.uint8)
    img[:, 1::2] = 110
    return img


def square(h: int = 40, w: int = 60) -> np.ndarray:
    """A 10 x 10 mask at rows 10..19, columns 20..29 (even width: its ring has as many even
    columns as odd ones, being mirror-symmetric about column 24.5)."""
    m = np.zeros((h, w), bool)
    m[10:20, 20:30] = True
    return m


def test_square_of_known_grey_gives_exact_delta_and_snr() -> None:
    img, m = striped(), square()
    img[m] = 160
    out = mask_contrast(img, m, ring=3)
    assert out["area"] == 100 and out["defect_mean"] == 160
    assert out["ring_mean"] == pytest.approx(105) and out["ring_std"] == pytest.approx(5)
    assert out["delta"] == pytest.approx(55) and out["abs_delta"] == pytest.approx(55)
    assert out["snr"] == pytest.approx(11)
    assert out["ring_area"] == ring_mask(m, 3).sum() > 0
    dark = mask_contrast(np.where(m, 30, img).astype(np.uint8), m, ring=3)
    assert dark["delta"] == pytest.approx(-75) and dark["snr"] == pytest.approx(15)


def test_ring_leaves_out_other_defects_and_the_dark_margin() -> None:
    img, m = striped(), square()
    img[m] = 160
    img[:9] = 10  # dark margin over the ring's top rows
    other = np.zeros_like(m)
    other[20:26] = True  # another defect over its bottom rows, very bright
    img[other] = 250
    out = mask_contrast(img, m, ring=3, exclude=other)
    # what is left of the ring is still column-balanced: the values stay exact
    assert out["ring_mean"] == pytest.approx(105) and out["snr"] == pytest.approx(11)
    assert out["ring_area"] == (ring_mask(m, 3) & ~other).sum() - (ring_mask(m, 3)[:9]).sum()
    assert mask_contrast(img, m, ring=3)["ring_mean"] > 105  # without exclude the bright defect counts


def test_no_background_left_gives_nan_and_bad_input_raises() -> None:
    img = striped()
    full = np.ones(img.shape, bool)
    out = mask_contrast(img, full)
    assert out["area"] == img.size and np.isnan(out["delta"]) and np.isnan(out["snr"])
    with pytest.raises(ContrastError, match="empty mask"):
        mask_contrast(img, np.zeros(img.shape, bool), image_id="x.jpg")
    with pytest.raises(ContrastError, match="same shape"):
        mask_contrast(img, square(40, 61))
    with pytest.raises(ContrastError, match="ring=0"):
        mask_contrast(img, square(), ring=0)


def test_real_sample(shared_data: Path) -> None:
    sample = shared_data / "severstal-sample"
    labels = read_labels(sample / "train.csv")
    table = contrast_table((sample / "train.csv", sample / "train_images"))
    assert len(table) == len(labels) == 26
    assert table["ClassId"].value_counts().sort_index().tolist() == [5, 1, 16, 4]
    merged = table.merge(labels, on=["ImageId", "ClassId"])
    assert (merged["area"] == merged["EncodedPixels"].map(rle.area)).all()
    assert table[["ring_mean", "delta", "snr"]].notna().all().all() and (table["ring_area"] > 0).all()
    assert table["delta"].abs().equals(table["abs_delta"]) and (table["abs_delta"] < 255).all()
    # a Kaggle-layout folder reads the same; max_images keeps the first images in id order
    few = contrast_table(sample, max_images=3)
    assert list(few["ImageId"].unique()) == sorted(labels["ImageId"].unique())[:3]
    pd.testing.assert_frame_equal(few, table[table["ImageId"].isin(few["ImageId"])].reset_index(drop=True))


def test_small_synthetic_set(tmp_path: Path) -> None:
    data = generate(tmp_path / "synthetic", n_images=16, n_test=0, seed=0)
    labels = read_labels(data / "train.csv")
    table = contrast_table(data)
    assert len(table) == len(labels) > 0
    assert sorted(zip(table["ImageId"], table["ClassId"])) == sorted(
        zip(labels["ImageId"], labels["ClassId"])
    )
    assert (table["abs_delta"] > 5).all()  # every synthetic defect is drawn 20+ grey levels off
    summary = contrast_summary({"real": table, "twin": table})
    assert summary.loc[("twin", int(table["ClassId"].iloc[0])), "masks"] >= 1
    assert list(summary.columns) == [
        "masks",
        "abs_delta p10",
        "abs_delta median",
        "abs_delta p90",
        "snr p10",
        "snr median",
        "snr p90",
    ]
    text = describe_gap(table, table.assign(abs_delta=2 * table["abs_delta"]), "twin")
    assert "stronger" in text and "x2.0" in text
