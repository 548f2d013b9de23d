"""Run-length encoding: hand-made masks, every real mask, and the malformed-input catalogue."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from steelnb.data import rle
from steelnb.data.labels import read_labels


def test_column_major_one_indexed_runs():
    mask = np.zeros((4, 3), np.uint8)
    mask[1:3, 0] = 1  # pixels 2,3 of column 0
    mask[3, 0] = 1  # pixel 4 joins the run
    mask[0, 1] = 1  # first pixel of column 1 = index 5: touches the run, so it merges
    mask[2, 2] = 1  # index 11
    assert rle.encode(mask) == "2 4 11 1"
    assert np.array_equal(rle.decode("2 4 11 1", (4, 3)), mask)


def test_empty_and_full_masks():
    assert rle.encode(np.zeros((256, 1600), np.uint8)) == ""
    assert rle.decode("").sum() == 0
    full = rle.decode("1 409600")
    assert full.dtype == np.uint8 and full.shape == (256, 1600) and full.all()
    assert rle.encode(full) == "1 409600"
    assert rle.decode(float("nan")).sum() == 0  # pandas' missing value reads as empty


def test_random_masks_round_trip():
    rng = np.random.default_rng(0)
    for p in (0.001, 0.3, 0.9):
        mask = (rng.random((256, 1600)) < p).astype(np.uint8)
        enc = rle.encode(mask)
        assert np.array_equal(rle.decode(enc), mask)
        assert rle.area(enc) == mask.sum()


def test_encode_rejects_wrong_rank():
    with pytest.raises(rle.RLEError, match="2-D"):
        rle.encode(np.zeros((2, 4, 4)))


@pytest.mark.parametrize(
    "bad, message",
    [
        ("1 2 3", "odd number of tokens"),
        ("1 x", "non-integer token 'x'"),
        ("1.5 2", "non-integer"),
        ("0 5", "start 0 < 1"),
        ("-3 5", "< 1"),
        ("5 0", "length 0 < 1"),
        ("409600 2", "past the end"),
        ("100 5 50 5", "unsorted"),
        ("100 5 102 5", "overlapping"),
    ],
)
def test_malformed_rle_raises_with_reason(bad, message):
    with pytest.raises(rle.RLEError, match=message):
        rle.decode(bad)
    assert issubclass(rle.RLEError, ValueError)


def test_adjacent_runs_are_valid():
    # a run may start right after the previous one ends (not an overlap)
    m = rle.decode("1 3 4 2", (3, 2))
    assert m.sum() == 5


def test_every_real_mask_round_trips_and_matches_the_known_area(shared_data):
    labels = read_labels(shared_data / "severstal-labels" / "train_partial.csv")
    assert len(labels) == 5174
    areas = pd.read_csv(shared_data / "severstal-labels" / "mask_areas.csv").set_index("image_id")
    for image, c, enc in labels.itertuples(index=False):
        mask = rle.decode(enc)
        assert rle.encode(mask) == enc, (image, c)
        assert int(mask.sum()) == int(areas.at[image, f"area_class_{c}"]), (image, c)
