"""The EDA notebook's numbers: class shares, co-occurrence, grey levels and mask positions,
checked on tables and images small enough to count by hand."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from steelnb.data import eda, rle

# four images: one with classes 1 and 3, one with 3, one with 2, 3 and 4, one defect-free
TABLE = pd.DataFrame(
    {
        "ImageId": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"],
        "area_1": [10, 0, 0, 0],
        "area_2": [0, 0, 7, 0],
        "area_3": [5, 8, 9, 0],
        "area_4": [0, 0, 3, 0],
    }
)
TIDY = pd.DataFrame(
    {"ImageId": ["a.jpg", "a.jpg", "b.jpg", "c.jpg", "c.jpg", "c.jpg"], "ClassId": [1, 3, 3, 2, 3, 4]}
)


def test_presence_reads_our_table_and_the_real_one() -> None:
    ours = eda.presence(TABLE)
    assert ours.columns.tolist() == ["class 1", "class 2", "class 3", "class 4"]
    assert ours.sum().tolist() == [1, 1, 3, 1]
    real = pd.DataFrame({f"has_class_{c}": v for c, v in zip(range(1, 5), ([1, 0], [0, 0], [1, 1], [0, 1]))})
    assert eda.presence(real, "has_class_{c}").to_numpy().tolist() == [
        [True, False, True, False],
        [False, False, True, True],
    ]
    with pytest.raises(eda.EdaError, match="has_class_1"):
        eda.presence(TABLE, "has_class_{c}")


def test_class_counts_and_defect_free_share() -> None:
    counts = eda.class_counts(TIDY, eda.presence(TABLE))
    assert counts["masks"].tolist() == [1, 1, 3, 1, 0]
    assert counts["share of images"].tolist() == [0.25, 0.25, 0.75, 0.25, 0.25]
    with_real = eda.class_counts(TIDY, eda.presence(TABLE), eda.presence(TABLE.iloc[:2]))
    assert with_real["real: share of images"].tolist() == [0.5, 0.0, 1.0, 0.0, 0.0]


def test_cooccurrence_counts_images_with_both_classes() -> None:
    co = eda.cooccurrence(eda.presence(TABLE))
    assert co.loc["class 3", "class 3"] == 3  # the diagonal: images showing the class
    assert co.loc["class 1", "class 3"] == co.loc["class 3", "class 1"] == 1
    assert co.loc["class 2", "class 4"] == 1 and co.loc["class 1", "class 2"] == 0
    assert eda.classes_per_image(eda.presence(TABLE)).to_dict() == {0: 1, 1: 1, 2: 1, 3: 1}


def test_grey_levels_of_known_images(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    flat = np.full((8, 10), 100, np.uint8)
    edged = flat.copy()
    edged[:, :2] = 0  # two of ten columns unlit
    cv2.imwrite(str(folder / "a.png"), flat)
    cv2.imwrite(str(folder / "b.png"), edged)
    (folder / "notes.txt").write_text("not an image")
    grey = eda.grey_levels({"set": folder}, n=5, dark_level=20).set_index("image")
    assert grey.index.tolist() == ["a.png", "b.png"]
    assert grey.loc["a.png", "mean"] == 100 and grey.loc["a.png", "std"] == 0
    assert grey.loc["b.png", "dark margin share"] == pytest.approx(0.2)
    assert grey.loc["b.png", "mean"] == pytest.approx(80)
    assert len(eda.grey_levels({"set": folder}, n=1)) == 1


def test_mask_positions_marks_where_masks_lie() -> None:
    mask = np.zeros((256, 1600), np.uint8)
    mask[:, :800] = 1  # the left half of the sheet
    tidy = pd.DataFrame({"ImageId": ["a.jpg"], "ClassId": [2], "EncodedPixels": [rle.encode(mask)]})
    heat = eda.mask_positions(tidy, bins=(4, 8))
    assert heat.shape == (4, 4, 8)
    assert heat[1, :, :4].min() == 1 and heat[1, :, 4:].max() == 0
    assert heat[[0, 2, 3]].max() == 0
