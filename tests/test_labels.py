"""Label formats: both Kaggle CSV layouts, the image table, and the malformed-CSV catalogue."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from steelnb.data import labels as lb
from steelnb.data import rle


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_new_and_old_format_give_the_same_table(tmp_path):
    new = write(
        tmp_path / "new.csv", "ImageId,ClassId,EncodedPixels\nb.jpg,3,5 2\na.jpg,1,1 3\na.jpg,4,10 1\n"
    )
    old = write(
        tmp_path / "old.csv",
        "ImageId_ClassId,EncodedPixels\n"
        + "".join(f"a.jpg_{c},{ {1: '1 3', 4: '10 1'}.get(c, '') }\n" for c in range(1, 5))
        + "".join(f"b.jpg_{c},{'5 2' if c == 3 else ''}\n" for c in range(1, 5))
        + "".join(f"clean.jpg_{c},\n" for c in range(1, 5)),
    )
    a, b = lb.read_labels(new), lb.read_labels(old)
    pd.testing.assert_frame_equal(a, b)
    assert a.values.tolist() == [["a.jpg", 1, "1 3"], ["a.jpg", 4, "10 1"], ["b.jpg", 3, "5 2"]]


def test_submission_column_order_and_empty_masks(tmp_path):
    p = write(tmp_path / "sub.csv", "ImageId,EncodedPixels,ClassId\na.jpg,1 3,1\na.jpg,,2\n")
    assert lb.read_labels(p).values.tolist() == [["a.jpg", 1, "1 3"]]


def test_write_labels_old_format_round_trip(tmp_path):
    table = pd.DataFrame({"ImageId": ["x.jpg"], "ClassId": [2], "EncodedPixels": ["7 3"]})
    path = lb.write_labels(table, tmp_path / "old.csv", fmt="old", image_ids=["y.jpg"])
    raw = pd.read_csv(path, keep_default_na=False)
    assert list(raw.columns) == ["ImageId_ClassId", "EncodedPixels"] and len(raw) == 8
    pd.testing.assert_frame_equal(lb.read_labels(path), table)
    # the new format has no row for a clean image: asking it to keep one is refused, nothing written
    with pytest.raises(
        lb.LabelError, match=r"new.csv: the new format cannot list defect-free images \(1, first y.jpg\)"
    ):
        lb.write_labels(table, tmp_path / "new.csv", image_ids=["x.jpg", "y.jpg"])
    assert not (tmp_path / "new.csv").exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("ImageId,EncodedPixels\na.jpg,1 2\n", "missing columns"),
        ("ImageId,ClassId,EncodedPixels\na.jpg,5,1 2\n", r"line 2: unknown ClassId '5'"),
        ("ImageId,ClassId,EncodedPixels\na.jpg,one,1 2\n", "unknown ClassId 'one'"),
        (
            "ImageId,ClassId,EncodedPixels\na.jpg,1,1 2\na.jpg,1,9 2\n",
            r"lines 2, 3: image a.jpg class 1 has different masks",
        ),
        (
            "ImageId,ClassId,EncodedPixels\na.jpg,1,1 2\nb.jpg,2,0 4\n",
            r"line 3: image b.jpg class 2: .*start 0 < 1",
        ),
        ("ImageId_ClassId,EncodedPixels\na.jpg,1 2\n", "not '<image>_<class>'"),
        ("", "empty file"),
    ],
)
def test_malformed_csv_names_file_and_line(tmp_path, text, message):
    p = write(tmp_path / "bad.csv", text)
    with pytest.raises(lb.LabelError, match=message) as err:
        lb.read_labels(p)
    assert str(p) in str(err.value)


def test_identical_duplicate_rows_are_merged(tmp_path):
    p = write(tmp_path / "dup.csv", "ImageId,ClassId,EncodedPixels\na.jpg,1,1 2\na.jpg,1,1 2\n")
    assert len(lb.read_labels(p)) == 1


def test_missing_file():
    with pytest.raises(lb.LabelError, match="label file not found"):
        lb.read_labels("/nonexistent/train.csv")


def test_image_masks_rejects_a_pixel_in_two_classes():
    with pytest.raises(lb.LabelError, match="two classes"):
        lb.image_masks({1: "1 10", 3: "5 3"}, image_id="a.jpg")
    m = lb.image_masks({1: "1 10", 3: "20 3"})
    assert m.shape == (4, 256, 1600) and m[0].sum() == 10 and m[2].sum() == 3 and m[1].sum() == 0


def test_image_masks_channels_last_is_the_transposed_stack_on_real_labels(shared_data):
    """The data set decodes (H, W, 4) in place: the same pixels as (4, H, W) transposed, for
    every real image of the label file with one to four classes (the overlap check included)."""
    table = lb.encodings_by_image(shared_data / "severstal-labels" / "train_partial.csv")
    by_count = {}
    for image_id, enc in table.items():
        by_count.setdefault(len(enc), image_id)
    assert {1, 2, 3} <= set(by_count), by_count  # images with one, two and three classes
    for image_id in [*by_count.values(), "clean.jpg"]:
        enc = table.get(image_id, {})
        hwc = lb.image_masks(enc, image_id=image_id, channels_last=True)
        assert hwc.shape == (256, 1600, 4) and hwc.flags.c_contiguous
        np.testing.assert_array_equal(hwc, lb.image_masks(enc, image_id=image_id).transpose(1, 2, 0))
    with pytest.raises(lb.LabelError, match="a.jpg: a pixel carries two classes"):
        lb.image_masks({1: "1 10", 3: "5 3"}, image_id="a.jpg", channels_last=True)
    with pytest.raises(lb.LabelError, match="b.jpg class 2"):
        lb.image_masks({2: "409590 20"}, image_id="b.jpg", channels_last=True)


def test_image_table_missing_image_policy(tmp_path):
    (tmp_path / "imgs").mkdir()
    for name in ("a.jpg", "c.jpg"):
        (tmp_path / "imgs" / name).write_bytes(b"")
    p = write(tmp_path / "t.csv", "ImageId,ClassId,EncodedPixels\na.jpg,1,1 2\nb.jpg,2,5 5\n")
    with pytest.raises(lb.LabelError, match=r"absent from .*imgs, first b.jpg"):
        lb.image_table(p, tmp_path / "imgs")
    with pytest.warns(UserWarning, match="skipped 1 labelled image"):
        t = lb.image_table(p, tmp_path / "imgs", on_missing="skip")
    assert t["ImageId"].tolist() == ["a.jpg", "c.jpg"]
    assert t["has_defect"].tolist() == [True, False]
    assert t["area_1"].tolist() == [2, 0]


def test_image_table_counts_parts():
    mask = np.zeros((256, 1600), np.uint8)
    mask[10:20, 10:20] = 1
    mask[100:110, 500:530] = 1  # second, separate component
    labels = pd.DataFrame({"ImageId": ["a.jpg"], "ClassId": [3], "EncodedPixels": [rle.encode(mask)]})
    t = lb.image_table(labels, image_ids=["z.jpg"])
    row = t.set_index("ImageId").loc["a.jpg"]
    assert (row["parts_3"], row["area_3"], row["classes"]) == (2, 400, "3")
    assert t.set_index("ImageId").loc["z.jpg", "has_defect"] == False  # noqa: E712


# -- the real files ------------------------------------------------------------------------


def test_real_new_format_equals_derived_old_format(shared_data, tmp_path):
    src = shared_data / "severstal-labels" / "train_partial.csv"
    new = lb.read_labels(src)
    clean = pd.read_csv(shared_data / "severstal-labels" / "train_partial_images.csv")
    old_path = lb.write_labels(new, tmp_path / "old.csv", fmt="old", image_ids=clean["ImageId"])
    assert len(pd.read_csv(old_path)) == 4 * len(clean)
    pd.testing.assert_frame_equal(lb.read_labels(old_path), new)
    assert new.groupby("ClassId").size().tolist() == [704, 247, 3547, 676]


def test_real_balanced_subset_with_index_column(shared_data):
    t = lb.read_labels(shared_data / "severstal-labels" / "train_balanced.csv")
    assert t.groupby("ClassId").size().tolist() == [250, 247, 253, 250]
    assert t["ImageId"].nunique() == 968


def test_real_sample_image_table_finds_the_clean_images(shared_data):
    sample = shared_data / "severstal-sample"
    t = lb.image_table(sample / "train.csv", sample / "train_images")
    assert len(t) == 34
    assert int((~t["has_defect"]).sum()) == 10
    assert t[[f"area_{c}" for c in range(1, 5)]].astype(bool).sum().tolist() == [5, 1, 16, 4]
    areas = pd.read_csv(shared_data / "severstal-labels" / "mask_areas.csv").set_index("image_id")
    for row in t.itertuples():
        for c in range(1, 5):
            assert getattr(row, f"area_{c}") == areas.at[row.ImageId, f"area_class_{c}"]


def test_real_sample_with_a_missing_image(shared_data, tmp_path):
    sample = shared_data / "severstal-sample"
    shutil.copytree(sample / "train_images", tmp_path / "imgs")
    (tmp_path / "imgs" / "000a4bcdd.jpg").unlink()
    with pytest.raises(lb.LabelError, match="000a4bcdd.jpg"):
        lb.image_table(sample / "train.csv", tmp_path / "imgs")
