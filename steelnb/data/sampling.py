"""Class-balanced subsets and stratified folds.

``balanced_subset`` is the reference project's mask-level subset (1,000 masks, about 250 per
class); ``image_subset`` balances whole images instead (every mask of a chosen image is kept)
and can add defect-free images; ``study_subset`` is the image-level subset with the Kaggle
share of defect-free images, the default of the study. ``assign_folds`` splits images into a
held-out test split (fold ``TEST_FOLD`` = -1) and K folds, stratified by class set (defect-free
images are a stratum of their own); ``split_ids`` turns that into train / validation / test.
Everything is deterministic for a seed and independent of the row order of the input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import SteelnbError
from .labels import CLASS_IDS, COLUMNS, LabelError

#: The fold number that marks the held-out test split in a folds file (ImageId,fold).
TEST_FOLD = -1
#: Share of defect-free images in the Kaggle train set (5,902 of 12,568 images).
KAGGLE_CLEAN_SHARE = 5902 / 12568


class SamplingError(SteelnbError):
    """A sampling or split option out of range; names the option and the range."""


class SealedSplitError(SamplingError):
    """A probe, tuning tool or benchmark asked to score images of the sealed test split."""


def sealed(image_ids: Sequence[str], test_ids: Sequence[str], who: str) -> list[str]:
    """``image_ids``, checked to hold no image of the test split ``test_ids``: what a probe, a
    tuning tool or anything used to choose a setting may score (validation, or a development part
    of the training images). The test split only reports, in the notebooks' evaluation; a chooser
    that read it would turn the report into a selection. Raises ``SealedSplitError`` naming
    ``who`` and the test images asked for."""
    test = set(test_ids)
    seen = [i for i in image_ids if i in test]
    if seen:
        raise SealedSplitError(
            f"{who}: asked to score {len(seen)} image(s) of the sealed test split (e.g. {seen[0]}); "
            "probes and bench tools judge on validation only (evaluation.judge_on_validation)"
        )
    return list(image_ids)


def _require(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise LabelError(f"{what}: missing column(s) {', '.join(missing)}; found {list(frame.columns)}")


def class_quotas(counts: dict[int, int], per_class: int) -> dict[int, int]:
    """Masks to draw per class: ``per_class`` each, a short class gives all it has and the
    shortfall goes to the classes with the most masks left, so that the total stays
    ``per_class * 4`` when the data allow (the reference's 250/247/253/250 on the real labels).
    """
    quota = {c: min(per_class, counts.get(c, 0)) for c in CLASS_IDS}
    short = per_class * len(CLASS_IDS) - sum(quota.values())
    while short > 0:
        spare = {c: counts.get(c, 0) - quota[c] for c in CLASS_IDS}
        c = max(CLASS_IDS, key=lambda k: (spare[k], -k))
        if spare[c] <= 0:
            break
        quota[c] += 1
        short -= 1
    return quota


def balanced_subset(labels: pd.DataFrame, per_class: int = 250, seed: int = 0) -> pd.DataFrame:
    """The reference's class-balanced subset of a tidy label table (one row per mask).

    Draws ``class_quotas(..., per_class)`` masks of each class at random (seeded).
    Returns tidy rows ``ImageId, ClassId, EncodedPixels`` sorted by (ImageId, ClassId).
    """
    _require(labels, COLUMNS, "balanced_subset labels")
    if per_class < 0:
        raise SamplingError(f"per_class={per_class}: expected >= 0")
    tidy = labels[COLUMNS].sort_values(["ImageId", "ClassId"], kind="stable").reset_index(drop=True)
    counts = tidy["ClassId"].value_counts().to_dict()
    quota = class_quotas({int(k): int(v) for k, v in counts.items()}, per_class)
    rng = np.random.default_rng(seed)
    picked = []
    for c in CLASS_IDS:
        rows = np.flatnonzero(tidy["ClassId"].to_numpy() == c)
        picked.append(np.sort(rng.choice(rows, size=quota[c], replace=False)))
    out = tidy.iloc[np.concatenate(picked)]
    return out.sort_values(["ImageId", "ClassId"], kind="stable").reset_index(drop=True)


def image_subset(table: pd.DataFrame, per_class: int = 250, n_clean: int = 0, seed: int = 0) -> pd.DataFrame:
    """Image-level balanced subset of an image table (``labels.image_table``).

    Classes are visited rarest first; images showing the class are drawn (seeded) until
    ``per_class`` chosen images show it (or all of them do). A chosen image keeps all its
    masks, so common classes may exceed ``per_class``. ``n_clean`` defect-free images are
    added (all of them when fewer exist). Returns table rows sorted by ImageId.
    """
    _require(table, ["ImageId", "classes"], "image_subset table")
    if per_class < 0 or n_clean < 0:
        raise SamplingError(f"per_class={per_class}, n_clean={n_clean}: expected >= 0")
    table = table.sort_values("ImageId", kind="stable").reset_index(drop=True)
    sets = [frozenset(int(c) for c in str(s).split()) for s in table["classes"].fillna("")]
    has = {c: np.array([c in s for s in sets], dtype=bool) for c in CLASS_IDS}
    rng = np.random.default_rng(seed)
    chosen = np.zeros(len(table), dtype=bool)
    for c in sorted(CLASS_IDS, key=lambda k: (int(has[k].sum()), k)):
        need = per_class - int((chosen & has[c]).sum())
        pool = np.flatnonzero(has[c] & ~chosen)
        if need > 0 and pool.size:
            chosen[rng.choice(pool, size=min(need, pool.size), replace=False)] = True
    clean = np.flatnonzero(np.array([not s for s in sets], dtype=bool))
    if n_clean and clean.size:
        chosen[rng.choice(clean, size=min(n_clean, clean.size), replace=False)] = True
    return table[chosen].reset_index(drop=True)


def study_subset(
    table: pd.DataFrame, per_class: int = 250, clean_share: float = KAGGLE_CLEAN_SHARE, seed: int = 0
) -> pd.DataFrame:
    """The study's subset: ``image_subset`` plus defect-free images at ``clean_share`` of the total.

    With the Kaggle share (47 % clean) the Kaggle metric and its all-empty baseline mean on the
    subset what they mean on the leaderboard. Returns table rows sorted by ImageId.
    """
    if not 0 <= clean_share < 1:
        raise SamplingError(f"clean_share={clean_share}: expected 0 <= clean_share < 1")
    defective = image_subset(table, per_class=per_class, n_clean=0, seed=seed)
    n_clean = int(round(len(defective) * clean_share / (1 - clean_share)))
    return image_subset(table, per_class=per_class, n_clean=n_clean, seed=seed)


def assign_folds(
    table: pd.DataFrame, n_folds: int = 5, seed: int = 0, test_share: float = 0.0, min_test: int = 0
) -> pd.DataFrame:
    """Held-out test split and stratified K folds by class set: DataFrame[ImageId, fold] by ImageId.

    Within each stratum (the ``classes`` string, "" = defect-free) images are shuffled
    (seeded). ``test_share`` of them go to the test split (fold ``TEST_FOLD``): a running
    count over the strata gives each stratum its share rounded up or down, and the whole test
    split ``floor(test_share * N)`` images. The rest are dealt to folds 0..K-1 in
    turn, the dealing continuing from stratum to stratum so that fold sizes differ by at most
    one. Each image is in exactly one fold. ``test_share=0`` gives no test split.

    ``min_test``: with a test split (``test_share`` > 0), it holds at least this many images,
    but at most half of the table, when ``test_share`` of it would give fewer (on a small set the interval is otherwise
    too wide to tell runs apart); the same running count then deals exactly that many.
    """
    _require(table, ["ImageId", "classes"], "assign_folds table")
    if n_folds < 2:
        raise SamplingError(f"n_folds={n_folds}: expected >= 2")
    if not 0 <= test_share < 1:
        raise SamplingError(f"test_share={test_share}: expected 0 <= test_share < 1")
    if min_test < 0:
        raise SamplingError(f"min_test={min_test}: expected >= 0")
    n = len(table)
    n_test = max(int(np.floor(test_share * n)), min(min_test, n // 2)) if test_share > 0 else 0
    ids = table["ImageId"].astype(str)
    if ids.duplicated().any():
        raise LabelError(f"assign_folds table: image {ids[ids.duplicated()].iloc[0]} appears twice")
    frame = pd.DataFrame(
        {"ImageId": ids.to_numpy(), "classes": table["classes"].fillna("").astype(str).to_numpy()}
    )
    frame = frame.sort_values("ImageId", kind="stable").reset_index(drop=True)
    rng = np.random.default_rng(seed)
    fold = np.empty(len(frame), dtype=np.int64)
    dealt = seen = 0
    for _, rows in sorted(frame.groupby("classes").indices.items()):
        rows = rng.permutation(rows)
        k = seen + np.arange(rows.size)
        if n_test > np.floor(test_share * n):  # min_test binds: exactly n_test, in integers
            is_test = (k + 1) * n_test // n > k * n_test // n
        else:
            is_test = np.floor((k + 1) * test_share) > np.floor(k * test_share)
        seen += rows.size
        fold[rows[is_test]] = TEST_FOLD
        rest = rows[~is_test]
        fold[rest] = (dealt + np.arange(rest.size)) % n_folds
        dealt += rest.size
    return pd.DataFrame({"ImageId": frame["ImageId"], "fold": fold})


def sealed_folds(table: pd.DataFrame, sealed: list[str], n_folds: int = 5, seed: int = 0) -> pd.DataFrame:
    """Folds whose test split is the given ``sealed`` images: DataFrame[ImageId, fold] by ImageId.

    The images of ``table`` listed in ``sealed`` (a generated set's own test stream) get
    ``TEST_FOLD``; the others are dealt to K folds by ``assign_folds`` (stratified, no test share).
    """
    _require(table, ["ImageId", "classes"], "sealed_folds table")
    is_sealed = table["ImageId"].astype(str).isin(set(sealed))
    if not is_sealed.any():
        raise SamplingError("sealed_folds: none of the sealed test images is in the table")
    dev = assign_folds(table[~is_sealed], n_folds=n_folds, seed=seed)
    test = pd.DataFrame({"ImageId": table.loc[is_sealed, "ImageId"].astype(str), "fold": TEST_FOLD})
    return pd.concat([dev, test]).sort_values("ImageId", kind="stable").reset_index(drop=True)


def fold_images(
    table: pd.DataFrame,
    subsets: Sequence[Iterable[str]],
    clean_share: float = KAGGLE_CLEAN_SHARE,
    seed: int = 0,
) -> pd.DataFrame:
    """The images to cut the folds on: the union of ``subsets`` (image ids), topped up with
    defect-free images of the image ``table`` (drawn at random, seeded) until they are
    ``clean_share`` of it, or all of them when fewer exist. Folds stratified by class set then
    give validation and test that share of clean images whatever subsets the runs train on (the
    mask-level subset has none: the bare union of it and the study subset holds about 34 % on
    the real labels where the Kaggle set holds 47 %). Returns ``table`` rows sorted by ImageId.
    """
    _require(table, ["ImageId", "classes"], "fold_images table")
    if not 0 <= clean_share < 1:
        raise SamplingError(f"clean_share={clean_share}: expected 0 <= clean_share < 1")
    table = table.sort_values("ImageId", kind="stable").reset_index(drop=True)
    wanted: set[str] = set().union(*(set(map(str, s)) for s in subsets)) if subsets else set()
    chosen = table["ImageId"].astype(str).isin(wanted).to_numpy().copy()
    clean = (table["classes"].fillna("").astype(str) == "").to_numpy()
    n_defect, n_clean = int((chosen & ~clean).sum()), int((chosen & clean).sum())
    need = int(round(n_defect * clean_share / (1 - clean_share))) - n_clean
    pool = np.flatnonzero(clean & ~chosen)
    if need > 0 and pool.size:
        chosen[np.random.default_rng(seed).choice(pool, size=min(need, pool.size), replace=False)] = True
    return table[chosen].reset_index(drop=True)


def split_shares(folds: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Images and defect-free share per split of a folds table (ImageId, fold): DataFrame indexed
    by split ("fold 0".., "test") with columns images, defect_free, clean_share."""
    _require(folds, ["ImageId", "fold"], "split_shares folds")
    _require(table, ["ImageId", "classes"], "split_shares table")
    classes = table.set_index(table["ImageId"].astype(str))["classes"].fillna("").astype(str)
    f = folds.assign(clean=folds["ImageId"].astype(str).map(classes).eq("").to_numpy())
    f["split"] = [("test" if k == TEST_FOLD else f"fold {k}") for k in f["fold"]]
    out = f.groupby("split").agg(images=("clean", "size"), defect_free=("clean", "sum"))
    out["clean_share"] = out["defect_free"] / out["images"]
    return out.reindex(sorted(out.index, key=lambda s: (s == "test", s)))


def split_ids(folds: pd.DataFrame, fold: int = 0) -> dict[str, list[str]]:
    """Folds (ImageId, fold) -> {"train": ids, "val": ids of fold ``fold``, "test": ids of TEST_FOLD}."""
    _require(folds, ["ImageId", "fold"], "split_ids folds")
    f = folds["fold"].to_numpy()
    ids = folds["ImageId"].astype(str)
    return {
        "train": ids[(f != fold) & (f != TEST_FOLD)].tolist(),
        "val": ids[f == fold].tolist(),
        "test": ids[f == TEST_FOLD].tolist(),
    }


def train_val_split(
    table: pd.DataFrame, fold: int = 0, n_folds: int = 5, seed: int = 0
) -> tuple[list[str], list[str]]:
    """(train image ids, validation image ids): fold ``fold`` of ``assign_folds`` is validation."""
    if not 0 <= fold < n_folds:
        raise SamplingError(f"fold={fold}: expected 0 <= fold < n_folds={n_folds}")
    parts = split_ids(assign_folds(table, n_folds=n_folds, seed=seed), fold)  # no test split here
    return parts["train"], parts["val"]


# --- a run's subset and folds, as the config names them --------------------------------------------
def read_ids(path: Path, column: str = "ImageId") -> list[str]:
    """The image ids listed in a CSV's ``column`` (stripped)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if column not in frame.columns:
        raise LabelError(f"{path}: no {column} column; found {list(frame.columns)}")
    return frame[column].str.strip().tolist()


def select_subset(
    subset: str,
    table: pd.DataFrame,
    labels: pd.DataFrame,
    resolve: Callable[[str], Path],
    per_class: int = 250,
    n_clean: int = 0,
    seed: int = 0,
) -> pd.DataFrame:
    """The rows of the image ``table`` a run trains and judges on.

    ``subset``: "all", "study" (``study_subset``), "balanced" (the images of the reference's
    mask-level ``balanced_subset`` of ``labels``), "images" (``image_subset`` with ``n_clean``) or
    a CSV of ImageIds (``resolve`` turns it into a path, e.g. relative to the data folder).
    """
    if subset == "all":
        return table
    if subset == "study":
        return study_subset(table, per_class=per_class, seed=seed)
    if subset == "balanced":
        ids = set(balanced_subset(labels, per_class=per_class, seed=seed)["ImageId"])
        return table[table["ImageId"].isin(ids)]
    if subset == "images":
        return image_subset(table, per_class=per_class, n_clean=n_clean, seed=seed)
    path = resolve(subset)
    if path.suffix.lower() != ".csv" or not path.is_file():
        raise LabelError(
            f"subset={subset!r}: expected 'study', 'balanced', 'images', 'all' or an existing CSV file"
        )
    ids = read_ids(path)
    missing = sorted(set(ids) - set(table["ImageId"]))
    if missing:
        raise LabelError(f"{path}: {len(missing)} image(s) not among the labelled images, first {missing[0]}")
    return table[table["ImageId"].isin(set(ids))]


def read_folds(
    path: Path, full: pd.DataFrame, subset: pd.DataFrame, fold: int = 0, n_folds: int = 5
) -> pd.DataFrame:
    """A folds file (ImageId,fold; -1 = test) checked against the run: whole-number folds, no image
    twice, a fold for every image of ``subset``, and non-empty train, validation (``fold``) and
    test splits. Returns its rows for the images of ``full`` (ImageId, fold).
    """
    if not path.is_file():
        raise LabelError(f"{path}: folds file not found")
    frame = pd.read_csv(path, dtype={"ImageId": str}, keep_default_na=False)
    if not {"ImageId", "fold"} <= set(frame.columns):
        raise LabelError(f"{path}: expected columns ImageId,fold; found {list(frame.columns)}")
    folds = pd.to_numeric(frame["fold"], errors="coerce")
    if folds.isna().any() or (folds % 1 != 0).any():
        bad = frame["fold"][folds.isna() | (folds % 1 != 0)].iloc[0]
        raise LabelError(f"{path}: fold {bad!r} is not a whole number (-1 = test, 0..{n_folds - 1})")
    frame = frame.assign(fold=folds.astype(int))
    dup = frame["ImageId"].duplicated(keep=False)
    if dup.any():
        image = frame["ImageId"][dup].iloc[0]
        where = sorted(
            {"test" if f == TEST_FOLD else f"fold {f}" for f in frame["fold"][frame["ImageId"] == image]}
        )
        raise LabelError(
            f"{path}: image {image} is listed twice ({' and '.join(where)}); the test split must not "
            "overlap training or validation"
        )
    present = frame[frame["ImageId"].isin(set(full["ImageId"]))]
    absent = sorted(set(subset["ImageId"]) - set(present["ImageId"]))
    if absent:
        raise LabelError(f"{path}: no fold for image {absent[0]} of the subset ({len(absent)} such image(s))")
    counts = {name: len(ids) for name, ids in split_ids(present, fold).items()}
    empty = [name for name, n in counts.items() if n == 0]
    if empty:
        raise LabelError(
            f"{path}: the {' and '.join(empty)} split(s) are empty for fold {fold} ({counts}); "
            "a folds file needs fold -1 (test), the validation fold and training folds. Re-run "
            "02_class_balance or sampling.assign_folds(..., test_share=0.2)"
        )
    return present[["ImageId", "fold"]].reset_index(drop=True)
