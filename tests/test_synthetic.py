"""The synthetic data set: Kaggle layout, geometry, determinism, and statistics near the real ones."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from steelnb.cli import main
from steelnb.data import labels as lb
from steelnb.data import rle
from steelnb.data.images import list_images
from steelnb.data.synthetic import generate

N_IMAGES = 300
#: Tolerances of the statistics test: mask share per class within SHARE_TOL (absolute),
#: median mask area per class within a factor AREA_FACTOR of the real median.
SHARE_TOL = 0.08
AREA_FACTOR = 2.0


@pytest.fixture(scope="session")
def synth(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("synth") / "set", n_images=N_IMAGES, seed=0)


@pytest.fixture(scope="session")
def synth_labels(synth) -> pd.DataFrame:
    return lb.read_labels(synth / "train.csv")


def shares_and_medians(labels: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    area = labels["EncodedPixels"].map(rle.area)
    share = labels["ClassId"].value_counts(normalize=True).reindex([1, 2, 3, 4], fill_value=0.0)
    return share, area.groupby(labels["ClassId"]).median().reindex([1, 2, 3, 4])


def test_layout(synth) -> None:
    assert sorted(p.name for p in synth.iterdir()) == [
        "sample_submission.csv",
        "synthetic.json",
        "test_images",
        "train.csv",
        "train_images",
    ]
    marker = json.loads(
        (synth / "synthetic.json").read_text()
    )  # provenance: runs tell synthetic from Kaggle data
    assert marker["generator"] == "steelnb.synthetic" and marker["n_images"] == N_IMAGES
    train = list_images(synth / "train_images")
    test = list_images(synth / "test_images")
    assert len(train) == N_IMAGES and len(test) == N_IMAGES // 4
    assert not set(train) & set(test)
    assert all(len(n) == 13 and n.endswith(".jpg") and int(n[:9], 16) >= 0 for n in train + test)
    sub = pd.read_csv(synth / "sample_submission.csv")
    assert list(sub.columns) == ["ImageId", "EncodedPixels", "ClassId"]  # the real file's header
    assert sorted(sub["ImageId"]) == test
    assert (sub["EncodedPixels"] == "1 409600").all() and (sub["ClassId"] == 0).all()


def test_image_geometry(synth) -> None:
    for folder in ("train_images", "test_images"):
        path = sorted((synth / folder).iterdir())[0]
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert img.shape == (256, 1600, 3) and img.dtype == np.uint8
        assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()
        assert 20 < img.mean() < 200 and img.std() > 3  # a textured grey sheet, not blank


def test_statistics_near_the_real_labels(synth_labels, shared_data) -> None:
    real = lb.read_labels(shared_data / "severstal-labels" / "train_partial.csv", validate=False)
    real_share, real_median = shares_and_medians(real)
    share, median = shares_and_medians(synth_labels)
    assert (share - real_share).abs().max() <= SHARE_TOL, pd.DataFrame(
        {"synthetic": share, "real": real_share}
    )
    ratio = median / real_median
    assert ((ratio <= AREA_FACTOR) & (ratio >= 1 / AREA_FACTOR)).all(), pd.DataFrame(
        {"synthetic": median, "real": real_median}
    )
    # heavy tail of class 3: some masks far above the median
    area3 = synth_labels.loc[synth_labels["ClassId"] == 3, "EncodedPixels"].map(rle.area)
    assert area3.max() > 5 * area3.median()


def test_image_table_and_clean_share(synth, synth_labels) -> None:
    table = lb.image_table(synth_labels, synth / "train_images")
    assert len(table) == N_IMAGES
    assert 0.40 <= 1 - table["has_defect"].mean() <= 0.60  # about half the images are clean
    assert table["n_classes"].max() == 2 and (table["n_classes"] == 2).sum() >= 3
    assert set(synth_labels["ClassId"]) == {1, 2, 3, 4}
    # class 1 masks are clusters of several spots; class 4 blobs are single large parts
    assert table.loc[table["area_1"] > 0, "parts_1"].median() >= 3
    assert table.loc[table["area_4"] > 0, "parts_4"].median() == 1


def test_no_pixel_in_two_classes_and_defects_visible(synth, synth_labels) -> None:
    for image_id, group in list(synth_labels.groupby("ImageId"))[:40]:
        masks = lb.image_masks(dict(zip(group["ClassId"], group["EncodedPixels"])), image_id=image_id)
        assert masks.sum(0).max() == 1
        img = cv2.imread(str(synth / "train_images" / image_id), cv2.IMREAD_GRAYSCALE).astype(float)
        for c in group["ClassId"]:
            inside = masks[c - 1].astype(bool)
            ring = cv2.dilate(masks[c - 1], np.ones((15, 15), np.uint8)).astype(bool) & ~masks.any(0)
            # a defect differs from the steel around it by a clear margin
            assert (
                abs(img[inside].mean() - img[ring].mean()) > 12
                or abs(img[inside].std() - img[ring].std()) > 5
            )


def test_deterministic_bytes_and_seed_matters(tmp_path) -> None:
    a = generate(tmp_path / "a", n_images=12, seed=5)
    b = generate(tmp_path / "b", n_images=12, seed=5)
    c = generate(tmp_path / "c", n_images=12, seed=6)
    assert (a / "train.csv").read_bytes() == (b / "train.csv").read_bytes()
    first = list_images(a / "train_images")[0]
    assert (a / "train_images" / first).read_bytes() == (b / "train_images" / first).read_bytes()
    assert (a / "sample_submission.csv").read_bytes() == (b / "sample_submission.csv").read_bytes()
    assert list_images(a / "train_images") != list_images(c / "train_images")


def test_old_format_reads_equal(tmp_path) -> None:
    new = generate(tmp_path / "new", n_images=16, n_test=2, seed=1)
    old = generate(tmp_path / "old", n_images=16, n_test=2, seed=1, old_format=True)
    header = (old / "train.csv").read_text().splitlines()[0]
    assert header == "ImageId_ClassId,EncodedPixels"
    assert len((old / "train.csv").read_text().splitlines()) == 1 + 4 * 16  # four rows per image
    pd.testing.assert_frame_equal(lb.read_labels(old / "train.csv"), lb.read_labels(new / "train.csv"))
    assert len(list_images(old / "test_images")) == 2


def test_regenerate_replaces_and_refuses_foreign_folder(tmp_path) -> None:
    out = generate(tmp_path / "set", n_images=4, seed=0)
    generate(out, n_images=6, seed=1)
    assert len(list_images(out / "train_images")) == 6
    assert [p.name for p in tmp_path.iterdir()] == ["set"]  # no temporary folders left behind
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not a data set"):
        generate(foreign, n_images=2)
    assert (foreign / "keep.txt").read_text() == "x"


def test_cli_synth(tmp_path, capsys) -> None:
    assert main(["synth", str(tmp_path / "cli"), "--images", "8", "--seed", "2"]) == 0
    assert len(list_images(tmp_path / "cli" / "train_images")) == 8
    assert len(list_images(tmp_path / "cli" / "test_images")) == 2
    assert "wrote synthetic data set" in capsys.readouterr().out
    assert main(["synth", str(tmp_path / "s"), "--images", "8", "--class-mix", "study", "--sealed", "3"]) == 0
    assert len(pd.read_csv(tmp_path / "s" / "sealed_test.csv")) == 3


def test_mask_areas_span_the_real_range(shared_data) -> None:
    from steelnb.data.synthetic import AREA_RANGE

    areas = pd.read_csv(shared_data / "severstal-labels" / "mask_areas.csv")
    for c, (lo, hi) in AREA_RANGE.items():
        real = areas[f"area_class_{c}"][areas[f"area_class_{c}"] > 0]
        assert (lo, hi) == (real.min(), real.max()), c


def test_test_images_carry_two_classes_at_the_train_share() -> None:
    from steelnb.data.synthetic import DEFECT_SHARE, TWO_CLASS_SHARE, _test_classes

    rng = np.random.default_rng(0)
    draws = [_test_classes(rng) for _ in range(20000)]
    defective = [d for d in draws if d]
    two = [d for d in defective if len(d) == 2]
    assert abs(len(defective) / len(draws) - DEFECT_SHARE) < 0.015
    assert abs(len(two) / len(defective) - TWO_CLASS_SHARE) < 0.01
    assert all(d[0] != d[1] for d in two) and max(len(d) for d in draws) == 2


def test_study_mix_and_sealed_stream(tmp_path) -> None:
    """The study mix gives each class its quarter of the masks; the sealed images come from their own
    stream: the same pixels and masks whatever the development images, listed in sealed_test.csv."""
    from steelnb.data.synthetic import sealed_ids

    a = generate(tmp_path / "a", n_images=60, n_test=0, seed=3, class_mix="study", sealed=24)
    b = generate(tmp_path / "b", n_images=90, n_test=0, seed=3, class_mix="study", sealed=24)
    counts = lb.read_labels(a / "train.csv")["ClassId"].value_counts()
    assert counts.max() - counts.min() <= 1 + 1  # equal shares, two-class images drawn at random
    ids_a, ids_b = sealed_ids(a), sealed_ids(b)
    assert len(ids_a) == len(ids_b) == 24 and set(ids_a) <= set(list_images(a / "train_images"))

    def sealed_content(root: Path, ids: list[str]) -> list[tuple[bytes, tuple]]:
        tidy = lb.read_labels(root / "train.csv").set_index("ImageId")
        out = []
        for i in ids:
            masks = tidy.loc[[i]] if i in tidy.index else tidy.iloc[:0]
            out.append(((root / "train_images" / i).read_bytes(), tuple(masks["EncodedPixels"])))
        return out

    # the ids are drawn with the development ids; the content is the stream's
    by_stream_a = sorted(sealed_content(a, ids_a))
    by_stream_b = sorted(sealed_content(b, ids_b))
    assert by_stream_a == by_stream_b
    dev_a = sorted(set(list_images(a / "train_images")) - set(ids_a))
    assert not {(a / "train_images" / i).read_bytes() for i in dev_a} & {c for c, _ in by_stream_a}
    assert json.loads((a / "synthetic.json").read_text())["sealed"] == 24
    assert sealed_ids(generate(tmp_path / "c", n_images=8, n_test=0)) is None  # the default: none sealed
    with pytest.raises(ValueError, match="class_mix"):
        generate(tmp_path / "d", n_images=8, class_mix="even")
    with pytest.raises(ValueError, match="sealed"):
        generate(tmp_path / "d", n_images=8, sealed=9)


def test_ensure_data_refresh_regenerates_only_a_stale_generated_set(tmp_path) -> None:
    from steelnb.data.synthetic import ensure_data

    out = tmp_path / "synthetic"
    generate(out, n_images=8, n_test=0, seed=0)  # an earlier steelnb's set, other parameters
    kept = ensure_data(out, n_images=12, n_test=0, sealed=4)  # a notebook: keeps what is there
    assert len(list_images(kept / "train_images")) == 8
    ensure_data(out, n_images=12, n_test=0, sealed=4, refresh=True)  # a plan: its own set
    assert len(list_images(out / "train_images")) == 12 and len(
        json.loads((out / "synthetic.json").read_text())
    )
    before = (out / "train.csv").stat().st_mtime_ns
    ensure_data(out, n_images=12, n_test=0, sealed=4, refresh=True)  # the same parameters: untouched
    assert (out / "train.csv").stat().st_mtime_ns == before
    kaggle = tmp_path / "kaggle_synthetic"
    kaggle.mkdir()
    (kaggle / "train.csv").write_text("ImageId,ClassId,EncodedPixels\n")  # no marker: never replaced
    ensure_data(kaggle, n_images=12, refresh=True)
    assert (kaggle / "train.csv").read_text() == "ImageId,ClassId,EncodedPixels\n"
