"""Counts of a scored prediction summarised, each number with its 95% bootstrap interval.

``summarize`` turns the counts (N, C, 3) of one prediction of N images into the block a run's
``metrics.json`` holds for a split: the Kaggle metric, what predicting nothing scores on the same
images, the paired interval of the gain over it, Dice, IoU and defect Dice (mean Dice over the
pairs whose truth is not empty). ``gate_summary`` says what a classifier gate did; ``test_blocks``
is a run's ``test`` and ``test_raw`` blocks of its scores. ``evaluation_table``,
``presence_table`` and ``worst_images`` are the tables of a prediction run (``steelnb predict
--labels``), which ``write_evaluation`` writes. Every interval comes from ``stats``.

Imports: this module uses ``scoring`` (counts), ``metrics`` and ``stats``; ``evaluation`` and
``predict_run`` use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data.config import N_CLASSES
from ..data.fileio import write_csv
from ..model.counts import dice_from_counts, dice_of, iou_from_counts, truth_empty_of
from . import postprocess as pp
from . import stats
from .scoretable import counts_of

__all__ = [
    "EVALUATION_COLUMNS",
    "evaluation_table",
    "gate_summary",
    "presence_table",
    "summarize",
    "test_blocks",
    "worst_images",
    "write_evaluation",
]


def _pooled(counts: np.ndarray, what: str) -> np.ndarray:
    """Class-mean Dice or IoU of pixel counts summed over images: counts (B, N, C, 3) -> (B,)."""
    tp, fp, fn = (counts[..., k].sum(-2) for k in range(3))  # (B, C)
    of = dice_from_counts if what == "dice" else iou_from_counts
    return of(tp, fp, fn).mean(-1)


def summarize(counts: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The test block from counts (N, C, 3) of one prediction of N images.

    Keys: kaggle, kaggle_ci95, all_empty_kaggle, kaggle_gain, kaggle_gain_ci95, gain_real,
    dice(+_ci95), iou(+_ci95) (pooled over images, mean over classes), defect_dice(+_ci95),
    per_class_kaggle, images, defect_pairs.
    """
    dice = dice_of(counts)
    empty_truth = truth_empty_of(counts)
    empty_dice = empty_truth.astype(np.float64)  # predicting nothing: 1 on empty pairs, 0 elsewhere
    est, low, high = stats.bootstrap_ci(dice, n_boot=n_boot, seed=seed)
    gain = stats.paired_bootstrap(dice, empty_dice, n_boot=n_boot, seed=seed)
    out: dict[str, Any] = {
        "images": int(len(counts)),
        "kaggle": est,
        "kaggle_ci95": [low, high],
        "all_empty_kaggle": float(empty_dice.mean()),
        "kaggle_gain": gain["diff"],
        "kaggle_gain_ci95": [gain["low"], gain["high"]],
        "gain_real": bool(gain["low"] > 0),
    }
    for what in ("dice", "iou"):
        v, lo, hi = stats.pooled_ci(counts, lambda c, w=what: _pooled(c, w), n_boot=n_boot, seed=seed)
        out[what], out[f"{what}_ci95"] = v, [lo, hi]
    out["defect_pairs"] = int((~empty_truth).sum())
    if out["defect_pairs"]:
        v, lo, hi = stats.bootstrap_ci(
            stats.defect_values(dice, empty_truth), n_boot=n_boot, seed=seed, pooled=True
        )
        out["defect_dice"], out["defect_dice_ci95"] = v, [lo, hi]
    else:
        out["defect_dice"], out["defect_dice_ci95"] = None, None
    out["per_class_kaggle"] = dice.mean(0).tolist()
    return out


def class_dice(counts: np.ndarray) -> dict[str, list]:
    """Per class, from counts (N, C, 3): the images holding it and the mean Dice over those images
    (None where no image holds it), the number the class goal reads."""
    dice, empty = dice_of(counts), truth_empty_of(counts)
    holds = ~empty
    return {
        "class_images": holds.sum(0).astype(int).tolist(),
        "class_dice": [float(dice[h, c].mean()) if h.any() else None for c, h in enumerate(holds.T)],
    }


def test_blocks(
    scores: pd.DataFrame,
    params: pp.PostParams,
    n_val: int,
    tta: str,
    tune_size: tuple[int, int],
    n_boot: int,
    seed: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(test block, raw test block) of a scores table: ``summarize`` with what was done, and the
    ``gate`` block when the scores carry class probabilities."""
    block = summarize(counts_of(scores), n_boot=n_boot, seed=seed)
    block.update(
        split="test",
        tta=tta,
        postprocess="tuned on validation",
        n_val_tuned=n_val,
        val_tuned_kaggle=params.score,
        tune_size=list(tune_size),
    )
    gate = gate_summary(scores, params, n_boot=n_boot, seed=seed)
    if gate is not None:
        block["gate"] = gate
    raw = summarize(counts_of(scores, raw=True), n_boot=n_boot, seed=seed)
    raw.update(split="test", tta=tta, postprocess="none (threshold 0.5)")
    return block, raw


def gate_summary(
    scores: pd.DataFrame, params: pp.PostParams, n_boot: int = 2000, seed: int = 0
) -> dict[str, Any] | None:
    """What the classifier gate did on the scored images (None when ``scores`` has no class
    probabilities: a model without a classification head).

    An image is *screened* when every class is emptied before any pixel is looked at (gated with
    ``gate_min_area`` 0, or disabled; ``postprocess.screened``). A screened image needs no mask
    decoding and no post-processing, so ``screened_share`` is the share of that work saved: in a
    two-stage pipeline (encoder and classification head first, the decoder only for the images
    left) the decoder's forward pass, the upsampling to 256 x 1600 and the post-processing of that
    share of the images; ``inference.predict`` decodes whole batches, so there it saves the
    post-processing (connected components, RLE) only. The 1st place reported about half of the
    empty images screened.

    Keys: images, clean_images / defective_images (truth empty in every class / not),
    screened_clean (+ _share: of the defect-free images, the saving that costs nothing),
    screened_defective (+ _share: of the defective images, wrongly screened: every defect missed),
    screened_share (of all images), gated_pairs ((image, class) pairs whose class probability is
    below its threshold), false_positive_pairs and false_positive_pairs_ungated (empty truth,
    something predicted; with the gate and with it switched off), missed_defect_pairs (+ _ungated),
    kaggle_ungated, and gate_gain with gate_gain_ci95 (paired bootstrap of the Kaggle metric with
    the gate minus without it).
    """
    if "class_prob" not in scores.columns:
        return None
    ids = sorted(scores["ImageId"].unique())
    class_probs = scores.pivot(index="ImageId", columns="ClassId", values="class_prob").loc[ids].to_numpy()
    counts, free = counts_of(scores, image_ids=ids), counts_of(scores, image_ids=ids, ungated=True)
    empty_truth = truth_empty_of(counts)  # (N, C)
    gated = np.array([[c.gated(float(v)) for c, v in zip(params.classes, row)] for row in class_probs], bool)
    without = dice_of(free)
    gain = stats.paired_bootstrap(dice_of(counts), without, n_boot=n_boot, seed=seed)
    return {
        **_screened(empty_truth.all(1), pp.screened(class_probs, params)),
        "gated_pairs": int(gated.sum()),
        "false_positive_pairs": _pairs(empty_truth, counts, predicted=True),
        "false_positive_pairs_ungated": _pairs(empty_truth, free, predicted=True),
        "missed_defect_pairs": _pairs(~empty_truth, counts, predicted=False),
        "missed_defect_pairs_ungated": _pairs(~empty_truth, free, predicted=False),
        "kaggle_ungated": float(without.mean()),
        "gate_gain": gain["diff"],
        "gate_gain_ci95": [gain["low"], gain["high"]],
    }


def _share(k: int, n: int) -> float | None:
    return k / n if n else None


def _screened(clean: np.ndarray, screened: np.ndarray) -> dict[str, Any]:
    """``gate_summary``'s image counts: clean (N,) truth empty in every class, ``screened`` (N,)."""
    n_clean, n_def = int(clean.sum()), int((~clean).sum())
    return {
        "images": len(clean),
        "clean_images": n_clean,
        "defective_images": n_def,
        "screened_clean": int((screened & clean).sum()),
        "screened_clean_share": _share(int((screened & clean).sum()), n_clean),
        "screened_defective": int((screened & ~clean).sum()),
        "screened_defective_share": _share(int((screened & ~clean).sum()), n_def),
        "screened_share": _share(int(screened.sum()), len(clean)),
    }


def _pairs(where: np.ndarray, counts: np.ndarray, predicted: bool) -> int:
    """The (image, class) pairs among ``where`` (N, C) with something predicted (or with nothing)."""
    some = (counts[..., 0] + counts[..., 1]) > 0
    return int((where & (some if predicted else ~some)).sum())


# --- tables of a prediction run (steelnb predict --labels) -------------------------------------
def _scored_rows(
    per_image: np.ndarray, empty: np.ndarray, n_boot: int, seed: int
) -> tuple[list[tuple[float, ...]], dict[str, Any]]:
    """Per class of per-image Dice (N, C), then their mean: (kaggle, its 95% interval, the all-empty
    score, the paired gain over it with its interval), and the mean's paired difference."""
    rows = []
    for j in range(per_image.shape[1]):
        est, low, high = stats.bootstrap_ci(per_image[:, j], n_boot=n_boot, seed=seed)
        g = stats.paired_bootstrap(per_image[:, j], empty[:, j], n_boot=n_boot, seed=seed)
        rows.append((est, low, high, float(empty[:, j].mean()), g["diff"], g["low"], g["high"]))
    est, low, high = stats.bootstrap_ci(per_image, n_boot=n_boot, seed=seed)
    g = stats.paired_bootstrap(per_image, empty, n_boot=n_boot, seed=seed)
    rows.append((est, low, high, float(empty.mean()), g["diff"], g["low"], g["high"]))
    return rows, g


EVALUATION_COLUMNS = [
    "tta",
    "postprocess",
    "class",
    "dice",
    "iou",
    "kaggle",
    "kaggle_low",
    "kaggle_high",
    "all_empty_kaggle",
    "gain",
    "gain_low",
    "gain_high",
    "gain_holm_p",
    "verdict",
    "images",
]


def evaluation_table(
    counts: dict[tuple[str, str], np.ndarray],
    classes: Sequence[int] = range(N_CLASSES),
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per-class and mean Dice, IoU, Kaggle metric for each variant, beside predicting nothing.

    ``counts[(tta, postprocess)]``: int array (N, 4, 3) of tp, fp, fn per (image, class), the same
    images for every variant. Dice and IoU sum pixels over images (1 when a class is empty in both,
    as ``metrics.iou_dice``); ``kaggle`` averages per-image Dice (the competition metric), with its
    95% bootstrap interval over images (``kaggle_low``, ``kaggle_high``); ``all_empty_kaggle`` is
    what predicting nothing scores on the same images and ``gain`` the paired bootstrap of the
    difference (``gain_low``, ``gain_high``). The mean rows' gains are one family: ``gain_holm_p``
    and ``verdict`` (``stats.verdict``; a prediction run is one training seed). The last rows
    (tta "–", postprocess "all-empty prediction") are the baseline itself.
    """
    cls = list(classes)
    rows: list[list[Any]] = []
    gains, truth = [], None
    for (tta, post), cnt in counts.items():
        variant, gain, truth = _variant_rows(tta, post, cnt[:, cls], cls, n_boot, seed)
        rows += variant
        gains.append(gain)
    if truth is None:
        return pd.DataFrame(columns=EVALUATION_COLUMNS)
    mean_rows = [i for i, r in enumerate(rows) if r[2] == "mean"]
    for i, g in zip(mean_rows, stats.adjust(gains)):
        rows[i][12], rows[i][13] = g["p_holm"], stats.verdict(g)
    return pd.DataFrame(rows + _baseline_rows(*truth, cls, n_boot, seed), columns=EVALUATION_COLUMNS)


def _variant_rows(
    tta: str, post: str, cnt: np.ndarray, cls: list[int], n_boot: int, seed: int
) -> tuple[list[list[Any]], dict[str, Any], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``evaluation_table``'s rows of one variant (counts (N, C, 3) of the classes ``cls``), the
    paired gain of its mean, and its truth: (pixels per class, pixels missed per class, empty (N, C))."""
    tp, fp, fn = (cnt[..., k].astype(np.float64) for k in range(3))
    per_image = dice_from_counts(tp, fp, fn)  # (N, C)
    empty = ((tp + fn) == 0).astype(np.float64)  # predicting nothing: 1 where the truth is empty
    stp, sfp, sfn = tp.sum(0), fp.sum(0), fn.sum(0)
    dice, iou = dice_from_counts(stp, sfp, sfn), iou_from_counts(stp, sfp, sfn)
    scored, gain = _scored_rows(per_image, empty, n_boot, seed)
    rows = [
        [tta, post, str(c + 1), dice[j], iou[j], *scored[j], np.nan, "", len(cnt)] for j, c in enumerate(cls)
    ]
    rows.append([tta, post, "mean", dice.mean(), iou.mean(), *scored[-1], np.nan, "", len(cnt)])
    return rows, gain, (stp, sfn, empty)


def _baseline_rows(
    stp: np.ndarray, sfn: np.ndarray, empty: np.ndarray, cls: list[int], n_boot: int, seed: int
) -> list[list[Any]]:
    """The all-empty prediction's rows: pooled Dice and IoU of an empty mask (1 only where no
    image holds the class) and its Kaggle metric on the same images."""
    zeros = np.zeros_like(sfn)
    truth = stp + sfn
    b_dice, b_iou = (
        dice_from_counts(zeros, zeros, truth),
        iou_from_counts(zeros, zeros, truth),
    )
    base, _ = _scored_rows(empty, empty, n_boot, seed)
    post = "all-empty prediction"
    rows = [
        ["–", post, str(c + 1), b_dice[j], b_iou[j], *base[j], np.nan, "", len(empty)]
        for j, c in enumerate(cls)
    ]
    rows.append(["–", post, "mean", b_dice.mean(), b_iou.mean(), *base[-1], np.nan, "", len(empty)])
    return rows


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


def worst_images(
    counts: np.ndarray, image_ids: Sequence[str], k: int = 20, classes: Sequence[int] = range(N_CLASSES)
) -> pd.DataFrame:
    """The k images of lowest mean Dice over ``classes``, with Dice per class (counts (N, 4, 3))."""
    cls = list(classes)
    tp, fp, fn = (counts[:, cls, j].astype(np.float64) for j in range(3))
    dice = dice_from_counts(tp, fp, fn)
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
    """Write ``evaluation.csv`` (all variants and the all-empty baseline, ``evaluation_table``),
    ``presence.csv`` and ``worst.csv`` (variant ``main``).

    Returns ({"evaluation": path, "presence": path, "worst": path, "kaggle": main's metric,
    "all_empty_kaggle": predicting nothing's, "gain_over_all_empty": main's gain with its 95%
    interval and verdict, as text}, worst).
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
    row = mean.loc[main]
    files["kaggle"] = float(row["kaggle"])
    files["all_empty_kaggle"] = float(row["all_empty_kaggle"])
    files["gain_over_all_empty"] = (
        f"{stats.format_ci(row['gain'], row['gain_low'], row['gain_high'])} ({row['verdict']})"
    )
    return files, worst
