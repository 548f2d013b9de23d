"""What a prediction run writes and how it scores: the Kaggle submission, evaluation tables.

Submission: the competition's final format ``ImageId,EncodedPixels,ClassId``, one row per
image and class (4 x N rows), an empty EncodedPixels for no defect; written atomically and
re-read to validate. Evaluation: per-(image, class) confusion counts (N, 4, 3) -> tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import postprocess as pp
from . import rle
from .config import N_CLASSES
from .errors import SteelnbError
from .fileio import atomic_path, write_csv

# --- submission ----------------------------------------------------------------------------------
SUBMISSION_COLUMNS = ["ImageId", "EncodedPixels", "ClassId"]


class SubmissionError(SteelnbError):
    """A submission file is not in the competition's format; names the file and line."""


def write_submission(
    rows: Sequence[tuple[str, str, int]], path: str | Path, image_ids: Sequence[str]
) -> Path:
    """Write (ImageId, EncodedPixels, ClassId) rows to a temporary file, re-read and validate it,
    then rename it into place: an invalid submission never replaces ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        pd.DataFrame(list(rows), columns=SUBMISSION_COLUMNS).to_csv(tmp, index=False)
        try:
            validate_submission(tmp, image_ids)
        except SubmissionError as e:
            raise SubmissionError(str(e).replace(str(tmp), str(path))) from None
    return path


def validate_submission(path: str | Path, image_ids: Sequence[str]) -> pd.DataFrame:
    """Check a submission: columns ImageId,EncodedPixels,ClassId; one row per (image, class 1..4)
    for exactly ``image_ids``; every EncodedPixels a valid 256 x 1600 RLE ("" = no defect)."""
    path = Path(path)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(frame.columns) != SUBMISSION_COLUMNS:
        raise SubmissionError(f"{path}: columns {list(frame.columns)}, expected {SUBMISSION_COLUMNS}")
    expected = {(i, str(c)) for i in image_ids for c in range(1, N_CLASSES + 1)}
    if len(frame) != len(expected):
        raise SubmissionError(f"{path}: {len(frame)} rows, expected {len(expected)} (4 per image)")
    found = set(zip(frame["ImageId"], frame["ClassId"]))
    if found != expected:
        missing, extra = sorted(expected - found), sorted(found - expected)
        what = (
            f"image {missing[0][0]} class {missing[0][1]} missing"
            if missing
            else f"unexpected row for image {extra[0][0]} class {extra[0][1]}"
        )
        raise SubmissionError(f"{path}: {what}; expected one row per image and class 1..{N_CLASSES}")
    for line, (image, enc, c) in enumerate(frame.itertuples(index=False), start=2):
        try:
            rle.parse(enc)
        except rle.RLEError as e:
            raise SubmissionError(f"{path}, line {line}: image {image} class {c}: {e}") from None
    return frame


# --- evaluation ---------------------------------------------------------------------------------
def evaluation_table(
    counts: dict[tuple[str, str], np.ndarray], classes: Sequence[int] = range(N_CLASSES)
) -> pd.DataFrame:
    """Per-class and mean Dice, IoU, Kaggle metric for each variant.

    ``counts[(tta, postprocess)]``: int array (N, 4, 3) of tp, fp, fn per (image, class).
    Dice and IoU sum pixels over images (1 when a class is empty in both, as ``metrics.iou_dice``);
    ``kaggle`` averages per-image Dice (the competition metric). Columns: tta, postprocess,
    class ("1".."4", "mean"), dice, iou, kaggle, images.
    """
    rows = []
    for (tta, post), cnt in counts.items():
        cls = list(classes)
        tp, fp, fn = (cnt[:, cls, k].astype(np.float64) for k in range(3))
        per_image = pp.dice_counts(tp, tp + fp, tp + fn)  # (N, C)
        stp, sfp, sfn = tp.sum(0), fp.sum(0), fn.sum(0)
        dice = pp.dice_counts(stp, stp + sfp, stp + sfn)
        iou = np.where(stp + sfp + sfn == 0, 1.0, stp / np.maximum(stp + sfp + sfn, 1))
        kaggle = per_image.mean(0)
        for j, c in enumerate(cls):
            rows.append((tta, post, str(c + 1), dice[j], iou[j], kaggle[j], len(cnt)))
        rows.append((tta, post, "mean", dice.mean(), iou.mean(), per_image.mean(), len(cnt)))
    return pd.DataFrame(rows, columns=["tta", "postprocess", "class", "dice", "iou", "kaggle", "images"])


def presence_table(counts: np.ndarray, classes: Sequence[int] = range(N_CLASSES)) -> pd.DataFrame:
    """Image-level presence per class from counts (N, 4, 3): precision, recall, support."""
    rows = []
    for c in classes:
        tp, fp, fn = (counts[:, c, k] for k in range(3))
        pred, truth = (tp + fp) > 0, (tp + fn) > 0
        hit = int((pred & truth).sum())
        precision = hit / int(pred.sum()) if pred.any() else float("nan")
        recall = hit / int(truth.sum()) if truth.any() else float("nan")
        rows.append((str(c + 1), precision, recall, int(truth.sum()), int(pred.sum())))
    return pd.DataFrame(
        rows, columns=["class", "precision", "recall", "images_with_defect", "images_predicted"]
    )


def mask_rows(image_id: str, masks: np.ndarray) -> list[tuple[str, str, int]]:
    """Submission rows of one image: masks (4, 256, 1600) -> [(ImageId, RLE or "", ClassId)] x 4."""
    return [(image_id, rle.encode(masks[c]), c + 1) for c in range(N_CLASSES)]


def confusion_counts(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Masks (4, H, W) of one image -> int64 (4, 3): tp, fp, fn pixels per class."""
    p, t = pred.astype(bool), truth.astype(bool)
    tp = (p & t).sum((-2, -1))
    return np.stack([tp, p.sum((-2, -1)) - tp, t.sum((-2, -1)) - tp], -1).astype(np.int64)


def worst_images(
    counts: np.ndarray, image_ids: Sequence[str], k: int = 20, classes: Sequence[int] = range(N_CLASSES)
) -> pd.DataFrame:
    """The k images of lowest mean Dice over ``classes``, with Dice per class (counts (N, 4, 3))."""
    cls = list(classes)
    tp, fp, fn = (counts[:, cls, j].astype(np.float64) for j in range(3))
    dice = pp.dice_counts(tp, tp + fp, tp + fn)
    frame = pd.DataFrame(dice, columns=[f"dice_{c + 1}" for c in cls])
    frame.insert(0, "dice", dice.mean(1))
    frame.insert(0, "ImageId", list(image_ids))
    return frame.sort_values(["dice", "ImageId"], kind="stable").head(k).reset_index(drop=True)


def write_evaluation(
    counts: dict[tuple[str, str], np.ndarray],
    image_ids: Sequence[str],
    out: str | Path,
    main: tuple[str, str],
    classes: Sequence[int] = range(N_CLASSES),
    k: int = 20,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Write ``evaluation.csv`` (all variants), ``presence.csv`` and ``worst.csv`` (variant ``main``).

    Returns ({"evaluation": path, "presence": path, "worst": path, "kaggle": main's metric}, worst).
    """
    out = Path(out)
    evaluation = evaluation_table(counts, classes)
    worst = worst_images(counts[main], image_ids, k=k, classes=classes)
    files: dict[str, Any] = {}
    for name, frame in (
        ("evaluation", evaluation),
        ("presence", presence_table(counts[main], classes)),
        ("worst", worst),
    ):
        write_csv(out / f"{name}.csv", frame)
        files[name] = out / f"{name}.csv"
    mean = evaluation[evaluation["class"] == "mean"].set_index(["tta", "postprocess"])
    files["kaggle"] = float(mean.loc[main, "kaggle"])
    return files, worst
