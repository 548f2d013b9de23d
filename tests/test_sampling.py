"""Balanced subsets and stratified folds, on hand-made tables and on the real labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from steelnb.data import labels as lb
from steelnb.data.sampling import (
    KAGGLE_CLEAN_SHARE,
    TEST_FOLD,
    SamplingError,
    assign_folds,
    balanced_subset,
    class_quotas,
    fold_images,
    image_subset,
    split_ids,
    split_shares,
    study_subset,
    train_val_split,
)


def toy_labels(counts: dict[int, int]) -> pd.DataFrame:
    """Tidy labels with ``counts[c]`` masks of class c, one image per mask, plus a few shared images."""
    rows = [(f"{c}{i:07x}a.jpg", c, "1 10") for c, n in counts.items() for i in range(n)]
    rows += [(f"{1}{i:07x}a.jpg", 3, "20 5") for i in range(0, counts.get(1, 0), 3)]  # two-class images
    return pd.DataFrame(rows, columns=lb.COLUMNS).sort_values(["ImageId", "ClassId"]).reset_index(drop=True)


def toy_table(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sets = rng.choice(["", "", "3", "3", "1", "4", "2", "1 3", "3 4"], size=n)
    return pd.DataFrame(
        {"ImageId": [f"{i:09x}.jpg" for i in range(n)], "classes": sets, "has_defect": sets != ""}
    )


def test_quotas_fill_the_shortfall_like_the_reference() -> None:
    assert class_quotas({1: 704, 2: 247, 3: 3547, 4: 676}, 250) == {1: 250, 2: 247, 3: 253, 4: 250}
    assert class_quotas({1: 5, 2: 1, 3: 16, 4: 4}, 250) == {1: 5, 2: 1, 3: 16, 4: 4}
    # the shortfall goes one by one to the class with the most masks left (ties: lower ClassId)
    assert class_quotas({1: 10, 2: 10, 3: 10}, 4) == {1: 6, 2: 5, 3: 5, 4: 0}


def test_balanced_subset_counts_and_rows() -> None:
    labels = toy_labels({1: 30, 2: 5, 3: 60, 4: 20})
    sub = balanced_subset(labels, per_class=10, seed=1)
    assert sub["ClassId"].value_counts().sort_index().tolist() == [10, 5, 15, 10]
    assert list(sub.columns) == lb.COLUMNS
    # every row is a row of the input, none twice
    merged = sub.merge(labels, on=lb.COLUMNS, how="left", indicator=True)
    assert (merged["_merge"] == "both").all() and not sub.duplicated().any()


def test_balanced_subset_deterministic_and_order_free() -> None:
    labels = toy_labels({1: 30, 2: 5, 3: 60, 4: 20})
    a = balanced_subset(labels, per_class=10, seed=3)
    b = balanced_subset(labels.sample(frac=1, random_state=7), per_class=10, seed=3)
    c = balanced_subset(labels, per_class=10, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_balanced_subset_on_real_partial_labels(shared_data) -> None:
    labels = lb.read_labels(shared_data / "severstal-labels" / "train_partial.csv", validate=False)
    sub = balanced_subset(labels, per_class=250, seed=0)
    counts = sub["ClassId"].value_counts().sort_index().to_dict()
    assert counts == {1: 250, 2: 247, 3: 253, 4: 250}  # the reference's numbers
    assert len(sub) == 1000
    # class 2 contributes all 247 of its masks
    all2 = set(labels.loc[labels["ClassId"] == 2, "ImageId"])
    assert set(sub.loc[sub["ClassId"] == 2, "ImageId"]) == all2


def test_balanced_subset_of_the_reference_subset(shared_data) -> None:
    ref = lb.read_labels(shared_data / "severstal-labels" / "train_balanced.csv", validate=False)
    assert ref["ClassId"].value_counts().sort_index().tolist() == [250, 247, 253, 250]
    sub = balanced_subset(ref, per_class=100, seed=0)
    assert sub["ClassId"].value_counts().sort_index().tolist() == [100, 100, 100, 100]
    # asking for more than there is returns the whole table
    pd.testing.assert_frame_equal(balanced_subset(ref, per_class=300, seed=0), ref)


def test_image_subset_keeps_masks_and_adds_clean() -> None:
    table = toy_table(300)
    sub = image_subset(table, per_class=20, n_clean=7, seed=0)
    assert sub["ImageId"].is_unique
    assert set(sub["ImageId"]) <= set(table["ImageId"])
    # rows are unchanged rows of the table (all masks of a chosen image kept)
    pd.testing.assert_frame_equal(sub, table[table["ImageId"].isin(sub["ImageId"])].reset_index(drop=True))
    assert (sub["classes"] == "").sum() == 7
    for c in "1234":
        shown = sub["classes"].str.contains(c).sum()
        available = table["classes"].str.contains(c).sum()
        assert shown >= min(20, available)
    # the rarest class is filled exactly, without overshoot
    assert sub["classes"].str.contains("2").sum() == 20
    pd.testing.assert_frame_equal(sub, image_subset(table, per_class=20, n_clean=7, seed=0))


def test_image_subset_on_real_labels(shared_data) -> None:
    labels = lb.read_labels(shared_data / "severstal-labels" / "train_partial.csv", validate=False)
    ids = pd.read_csv(shared_data / "severstal-labels" / "train_partial_images.csv")["ImageId"]
    table = lb.image_table(labels, image_ids=ids, count_parts=False)
    sub = image_subset(table, per_class=250, n_clean=100, seed=0)
    shows = {c: int((sub[f"area_{c}"] > 0).sum()) for c in (1, 2, 3, 4)}
    assert shows[2] == 247  # class 2 has fewer images than asked: all of them
    assert all(shows[c] >= 250 for c in (1, 3, 4))
    assert int((~sub["has_defect"]).sum()) == 100


def test_folds_disjoint_cover_and_stratified() -> None:
    table = toy_table(503)
    folds = assign_folds(table, n_folds=5, seed=0)
    assert folds["ImageId"].is_unique and set(folds["ImageId"]) == set(table["ImageId"])
    assert set(folds["fold"]) == {0, 1, 2, 3, 4}
    sizes = folds["fold"].value_counts()
    assert sizes.max() - sizes.min() <= 1
    joined = folds.merge(table, on="ImageId")
    for _, group in joined.groupby("classes"):
        per_fold = group["fold"].value_counts().reindex(range(5), fill_value=0)
        assert per_fold.max() - per_fold.min() <= 1  # each class set spread evenly
    pd.testing.assert_frame_equal(folds, assign_folds(table.iloc[::-1], n_folds=5, seed=0))
    assert not folds.equals(assign_folds(table, n_folds=5, seed=1))


def test_test_split_held_out_and_stratified() -> None:
    table = toy_table(503)
    folds = assign_folds(table, n_folds=5, seed=0, test_share=0.2)
    test = folds[folds["fold"] == TEST_FOLD]
    assert len(test) == int(503 * 0.2)
    joined = folds.merge(table, on="ImageId")
    for classes, group in joined.groupby("classes"):  # every class set (clean too) gives its share
        share = (group["fold"] == TEST_FOLD).sum()
        assert abs(share - 0.2 * len(group)) <= 1, classes
    rest = folds[folds["fold"] != TEST_FOLD]["fold"].value_counts()
    assert set(rest.index) == {0, 1, 2, 3, 4} and rest.max() - rest.min() <= 1
    for k in range(5):
        parts = split_ids(folds, k)
        assert parts["test"] == test["ImageId"].tolist()  # the same test images for every fold
        assert not set(parts["train"]) & (set(parts["val"]) | set(parts["test"]))
        assert sorted(sum(parts.values(), [])) == sorted(table["ImageId"])
    # without a test share the folds are what they always were
    pd.testing.assert_frame_equal(assign_folds(table, 5, 0, test_share=0.0), assign_folds(table, 5, 0))


def test_min_test_raises_a_small_sets_test_split_and_keeps_it_stratified() -> None:
    """A set too small for test_share alone to give min_test images holds out exactly min_test,
    each class set its share, but never more than half of it; a large one keeps test_share."""
    table = toy_table(511)
    folds = assign_folds(table, n_folds=5, seed=0, test_share=0.2, min_test=200)
    test = folds["fold"] == TEST_FOLD
    assert test.sum() == 200
    joined = folds.merge(table, on="ImageId")
    for classes, group in joined.groupby("classes"):
        assert abs((group["fold"] == TEST_FOLD).sum() - 200 / 511 * len(group)) <= 1, classes
    rest = folds[~test]["fold"].value_counts()
    assert set(rest.index) == {0, 1, 2, 3, 4} and rest.max() - rest.min() <= 1
    big = toy_table(2000)
    pd.testing.assert_frame_equal(
        assign_folds(big, 5, 0, test_share=0.2, min_test=256), assign_folds(big, 5, 0, test_share=0.2)
    )
    half = assign_folds(table, n_folds=5, seed=0, test_share=0.2, min_test=400)
    assert (half["fold"] == TEST_FOLD).sum() == 255
    pd.testing.assert_frame_equal(  # no test split asked for: none, whatever min_test says
        assign_folds(table, 5, 0, test_share=0.0, min_test=256), assign_folds(table, 5, 0)
    )
    with pytest.raises(SamplingError, match="min_test=-1"):
        assign_folds(table, n_folds=5, seed=0, min_test=-1)


def test_study_subset_has_the_kaggle_clean_share() -> None:
    table = toy_table(2000)
    sub = study_subset(table, per_class=40, seed=0)
    clean = int((sub["classes"] == "").sum())
    assert abs(clean / len(sub) - KAGGLE_CLEAN_SHARE) < 0.01
    defective = sub[sub["classes"] != ""]
    pd.testing.assert_frame_equal(
        defective.reset_index(drop=True), image_subset(table, per_class=40, seed=0).reset_index(drop=True)
    )
    with pytest.raises(ValueError, match="clean_share"):
        study_subset(table, clean_share=1.0)


def test_train_val_split() -> None:
    table = toy_table(100)
    seen: list[str] = []
    for k in range(4):
        train, val = train_val_split(table, fold=k, n_folds=4, seed=2)
        assert not set(train) & set(val)
        assert sorted(train + val) == sorted(table["ImageId"])
        seen += val
    assert sorted(seen) == sorted(table["ImageId"])  # every image validates exactly once
    with pytest.raises(ValueError):
        train_val_split(table, fold=4, n_folds=4)


def test_folds_on_real_image_table(shared_data) -> None:
    labels = lb.read_labels(shared_data / "severstal-labels" / "train_partial.csv", validate=False)
    ids = pd.read_csv(shared_data / "severstal-labels" / "train_partial_images.csv")["ImageId"]
    table = lb.image_table(labels, image_ids=ids, count_parts=False)
    folds = assign_folds(table, n_folds=5, seed=0).merge(table, on="ImageId")
    share = folds.groupby("fold")["has_defect"].mean()
    overall = table["has_defect"].mean()
    assert (share - overall).abs().max() < 0.005
    assert (
        folds.loc[folds["classes"] == "2", "fold"].value_counts().max()
        - folds.loc[folds["classes"] == "2", "fold"].value_counts().min()
        <= 1
    )


def test_missing_columns_raise() -> None:
    with pytest.raises(lb.LabelError, match="classes"):
        assign_folds(pd.DataFrame({"ImageId": ["a.jpg"]}))
    with pytest.raises(lb.LabelError, match="EncodedPixels"):
        balanced_subset(pd.DataFrame({"ImageId": ["a.jpg"], "ClassId": [1]}))


def test_sealed_folds_make_exactly_the_sealed_images_the_test_split() -> None:
    from steelnb.data.sampling import TEST_FOLD, sealed_folds

    table = pd.DataFrame(
        {"ImageId": [f"{i:03d}.jpg" for i in range(40)], "classes": ["", "1", "3", "2 4"] * 10}
    )
    sealed = [f"{i:03d}.jpg" for i in range(0, 40, 3)] + ["not-in-table.jpg"]
    folds = sealed_folds(table, sealed, n_folds=4, seed=1)
    assert list(folds["ImageId"]) == sorted(table["ImageId"])
    test = set(folds.loc[folds["fold"] == TEST_FOLD, "ImageId"])
    assert test == set(sealed) & set(table["ImageId"])
    dev = folds[folds["fold"] != TEST_FOLD]
    assert sorted(dev["fold"].unique()) == [0, 1, 2, 3]
    assert dev["fold"].value_counts().max() - dev["fold"].value_counts().min() <= 1
    with pytest.raises(ValueError, match="none of the sealed"):
        sealed_folds(table, ["x.jpg"])


def _defect_types_table(shared_data) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(image table ImageId,classes; tidy rows, one per mask) of all 12,568 real train images."""
    dt = pd.read_csv(shared_data / "severstal-labels" / "defect_types.csv").rename(
        columns={"ImageId_ClassId": "ImageId"}
    )
    has = dt[["1", "2", "3", "4"]].to_numpy() > 0
    table = pd.DataFrame(
        {
            "ImageId": dt["ImageId"],
            "classes": [" ".join(str(c) for c in (1, 2, 3, 4) if h[c - 1]) for h in has],
        }
    )
    rows, cols = np.nonzero(has)
    tidy = pd.DataFrame(
        {"ImageId": dt["ImageId"].to_numpy()[rows], "ClassId": cols + 1, "EncodedPixels": "1 1"}
    )
    return table, tidy


def test_folds_hold_the_kaggle_clean_share_on_the_real_labels(shared_data) -> None:
    """02's folds on the real defect_types.csv: the union of the study and the mask-level subsets
    alone gives validation and test about 34 % clean images; fold_images tops it up to 47 %."""
    table, tidy = _defect_types_table(shared_data)
    assert len(table) == 12568 and (table["classes"] == "").sum() == 5902
    balanced = balanced_subset(tidy, per_class=250, seed=0)
    study = study_subset(table, per_class=250, seed=0)
    union = table[table["ImageId"].isin(set(balanced["ImageId"]) | set(study["ImageId"]))]
    before = split_shares(assign_folds(union, 5, 0, test_share=0.2, min_test=256), table)
    assert (before["clean_share"] < 0.36).all()  # the defect the reading found
    chosen = fold_images(table, [balanced["ImageId"], study["ImageId"]], seed=0)
    assert set(union["ImageId"]) <= set(chosen["ImageId"])
    after = split_shares(assign_folds(chosen, 5, 0, test_share=0.2, min_test=256), table)
    assert list(after.index) == ["fold 0", "fold 1", "fold 2", "fold 3", "fold 4", "test"]
    assert np.allclose(after["clean_share"], KAGGLE_CLEAN_SHARE, atol=0.005), after
    assert after["images"].sum() == len(chosen)


def test_fold_images_tops_up_only_with_clean_images_and_never_removes() -> None:
    table = toy_table(400)
    clean = table["ImageId"][table["classes"] == ""]
    defective = table["ImageId"][table["classes"] != ""]
    out = fold_images(table, [defective[:60], defective[40:100]], clean_share=0.4, seed=0)
    assert len(out) == 167 and (out["classes"] == "").sum() == 67  # 100 defective, 67 clean: 40 %
    assert set(defective[:100]) <= set(out["ImageId"])
    assert fold_images(table, [defective[:60]], 0.5, seed=0).equals(
        fold_images(table, [defective[:60]], 0.5, 0)
    )
    many = fold_images(table, [clean, defective[:10]], clean_share=0.5)  # already above: nothing added
    assert len(many) == len(clean) + 10
    with pytest.raises(SamplingError, match="clean_share=1"):
        fold_images(table, [], clean_share=1)
