"""Cross-validation on a small labelled set: every image judged once, out of fold.

A set too small to hold out a test split of its own (the 34 real Severstal images beside the
repository) is cut into K folds stratified by class set (``sampling.assign_folds``). Run k of a
start trains with fold k as its test split, tunes epoch and post-processing on fold k+1 (its
validation) and trains on the other K-2 folds, so its test images never select anything. The K
runs' test scores (``test_scores.csv``) cover every image exactly once: the out-of-fold scores,
summarised as one held-out split is (``evaluation.summarize``: the Kaggle metric, predicting
nothing, the paired gain, each with its 95% bootstrap interval over images), per class over the
images that hold the class (``comparison.per_class_table``), and paired between two starts (ImageNet against scratch) on the
same images.

Folds files are written beside the runs (the data folder may be read-only), one per run, as
``cv<k>.csv``: fold k is the test split (``TEST_FOLD``) and fold k+1 is renumbered 0, the run's
validation fold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data.config import TrainConfig
from ..data.errors import SteelnbError
from ..data.fileio import write_csv
from ..data.sampling import TEST_FOLD, assign_folds
from ..model.counts import dice_of, truth_empty_of
from ..model.runfiles import SCORES_FILE
from ..model.runfolder import RunFolder, RunRecord
from . import stats
from .scoretable import counts_of
from .summaries import summarize

__all__ = [
    "CrossValError",
    "cv_configs",
    "cv_folds",
    "out_of_fold",
    "oof_table",
    "paired_starts",
    "choose_start",
]


class CrossValError(SteelnbError):
    """Fold runs that do not cover the images once each, or a fold count the set cannot fill."""


def cv_folds(table: pd.DataFrame, n_folds: int, seed: int = 0) -> list[pd.DataFrame]:
    """K folds files (DataFrame[ImageId, fold]) for a table with ImageId and classes: in the k-th,
    fold k is the test split, fold (k+1) mod K is fold 0 (validation), the rest folds 1..K-2."""
    if n_folds < 3:
        raise CrossValError(f"n_folds={n_folds}: need >= 3 (a test, a validation and a training fold)")
    if len(table) < n_folds:
        raise CrossValError(f"{len(table)} images cannot fill {n_folds} folds")
    base = assign_folds(table, n_folds=n_folds, seed=seed)
    out = []
    for k in range(n_folds):
        order = [(k + 1 + j) % n_folds for j in range(n_folds - 1)]  # validation first
        mapping = {fold: i for i, fold in enumerate(order)} | {k: TEST_FOLD}
        out.append(base.assign(fold=base["fold"].map(mapping)))
    return out


def cv_configs(
    base: TrainConfig,
    table: pd.DataFrame,
    starts: Mapping[str, str | None],
    n_folds: int,
    folds_dir: Path,
    train_seeds: Sequence[int] = (),
) -> dict[tuple[str, int, int], TrainConfig]:
    """The config of each (start, fold, training seed) run: ``base`` with the k-th folds file
    (written under ``folds_dir``, drawn with ``base.seed``: every training seed meets the same
    folds), validation fold 0 of K-1, ``encoder_weights`` of the start (None: scratch), ``seed``
    the training seed, and run name ``<start>__cv<k>`` (with ``train_seeds``:
    ``<start>__cv<k>__seed<N>``). ``starts`` maps a start's name to its ``encoder_weights``;
    ``train_seeds`` () trains once, at ``base.seed``."""
    if len(set(train_seeds)) != len(train_seeds) or any(type(s) is not int or s < 0 for s in train_seeds):
        raise CrossValError(f"train_seeds={list(train_seeds)!r}: expected distinct non-negative integers")
    files = []
    for k, folds in enumerate(cv_folds(table, n_folds, seed=base.seed)):
        files.append(write_csv(Path(folds_dir) / f"cv{k}.csv", folds).resolve())
    seeds = list(train_seeds) or [base.seed]
    return {
        (name, k, s): dataclasses.replace(
            base,
            folds=str(path),
            fold=0,
            n_folds=n_folds - 1,
            test_share=0.0,
            min_test=0,
            encoder_weights=weights,
            seed=s,
            run_name=f"{name}__cv{k}" + (f"__seed{s}" if train_seeds else ""),
        )
        for s in seeds
        for name, weights in starts.items()
        for k, path in enumerate(files)
    }


def out_of_fold(
    run_dirs: Sequence[str | Path | RunFolder | RunRecord], images: Sequence[str] | None = None
) -> pd.DataFrame:
    """The test scores of K fold runs (their folders, or ``report.read_metrics`` records) joined:
    every image once (checked against ``images`` when given). Raises CrossValError naming the run
    folder of an image scored twice or not at all."""
    frames, seen = [], {}
    for run in (RunFolder.of(r).path for r in run_dirs):
        scores = RunFolder(run).scores()
        if scores is None:
            raise CrossValError(f"{run}: no {SCORES_FILE}; evaluate the fold run first")
        for image in scores["ImageId"].unique():
            if image in seen:
                raise CrossValError(f"{run}: image {image} was already judged out of fold by {seen[image]}")
            seen[image] = run
        frames.append(scores)
    joined = pd.concat(frames, ignore_index=True)
    if images is not None and set(images) != set(seen):
        missing = sorted(set(images) - set(seen))
        raise CrossValError(
            f"the fold runs judge {len(seen)} images, not the {len(set(images))} of the set"
            + (f" (first missing: {missing[0]})" if missing else "")
        )
    return joined


def _dice(scores: pd.DataFrame, ids: list[str]) -> np.ndarray:
    """Dice (N, C) of the images ``ids`` in that order."""
    return dice_of(counts_of(scores, image_ids=ids))


def _arm_dice(oof: Sequence[pd.DataFrame], ids: list[str]) -> np.ndarray:
    """Dice (S, N, C) of an arm's S out-of-fold score tables on the images ``ids``."""
    for scores in oof[1:]:
        if sorted(scores["ImageId"].unique()) != ids:
            raise CrossValError("the seeds of one start were judged on different images")
    return np.stack([_dice(scores, ids) for scores in oof])


def oof_table(
    oof: Mapping[str, pd.DataFrame | Sequence[pd.DataFrame]], n_boot: int = 2000, seed: int = 0
) -> pd.DataFrame:
    """One row per start (its out-of-fold scores, or one table per training seed), then predicting
    nothing: images, training seeds, Kaggle metric and its 95% interval, the paired gain over
    predicting nothing and its interval, defect Dice. One seed: ``summarize``'s image bootstrap;
    several: their mean, the intervals over seeds and images (``stats.seed_bootstrap``)."""
    rows = []
    for name, scores in oof.items():
        tables = [scores] if isinstance(scores, pd.DataFrame) else list(scores)
        if len(tables) == 1:
            block = summarize(counts_of(tables[0]), n_boot=n_boot, seed=seed)
            block = {k: block[k] for k in _OOF_KEYS}
        else:
            block = _seeded_block(tables, n_boot, seed)
        rows.append({"start": name, "seeds": len(tables), **block})
    empty = rows[0]["all_empty_kaggle"] if rows else float("nan")
    rows.append({"start": "predicting nothing", "images": rows[0]["images"] if rows else 0, "kaggle": empty})
    return pd.DataFrame(rows)


_OOF_KEYS = (
    "images",
    "kaggle",
    "kaggle_ci95",
    "kaggle_gain",
    "kaggle_gain_ci95",
    "defect_dice",
    "defect_dice_ci95",
    "all_empty_kaggle",
)


def _seeded_block(tables: Sequence[pd.DataFrame], n_boot: int, seed: int) -> dict[str, Any]:
    """``_OOF_KEYS`` of several seeds' out-of-fold scores: the Kaggle metric, its gain over
    predicting nothing and the defect Dice, each the mean over seeds with its interval over seeds
    and images (``stats.arm_mean``; the gain ``stats.seed_bootstrap`` against predicting nothing)."""
    ids = sorted(tables[0]["ImageId"].unique())
    dice = _arm_dice(tables, ids)
    truth_empty = truth_empty_of(counts_of(tables[0], image_ids=ids))
    defect = np.stack([stats.defect_values(d, truth_empty) for d in dice])
    kaggle = stats.arm_mean(dice, n_boot=n_boot, seed=seed)
    gain = stats.seed_bootstrap(dice, truth_empty.astype(float)[None], n_boot=n_boot, seed=seed, fixed_b=True)
    dz = stats.arm_mean(defect, n_boot=n_boot, seed=seed, pooled=True)
    return {
        "images": len(ids),
        "kaggle": kaggle["diff"],
        "kaggle_ci95": [kaggle["low"], kaggle["high"]],
        "kaggle_gain": gain["diff"],
        "kaggle_gain_ci95": [gain["low"], gain["high"]],
        "defect_dice": dz["diff"],
        "defect_dice_ci95": [dz["low"], dz["high"]],
        "all_empty_kaggle": float(truth_empty.mean()),
    }


def paired_starts(
    a: pd.DataFrame | Sequence[pd.DataFrame],
    b: pd.DataFrame | Sequence[pd.DataFrame],
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Out-of-fold Kaggle metric of start ``a`` minus start ``b`` on the same images (each its
    scores, or one table per training seed): the paired bootstrap for one seed each, the two-level
    ``stats.seed_bootstrap`` over seeds and images for several; raises CrossValError on other images."""
    ta, tb = ([x] if isinstance(x, pd.DataFrame) else list(x) for x in (a, b))
    ids = sorted(ta[0]["ImageId"].unique())
    if ids != sorted(tb[0]["ImageId"].unique()):
        raise CrossValError("the two starts were judged on different images; not a paired comparison")
    return stats.seed_bootstrap(_arm_dice(ta, ids), _arm_dice(tb, ids), n_boot=n_boot, seed=seed)


def choose_start(runs: Mapping[str, Sequence[Mapping[str, Any]]]) -> tuple[str, Mapping[str, Any]]:
    """(start, fold run) chosen on validation alone: the start with the highest mean tuned
    validation Kaggle metric over its folds, and its fold run with the highest one. ``runs`` maps
    a start to its fold runs' metrics (``metrics.json`` with the ``test`` block that
    ``evaluate_run`` writes, whose ``val_tuned_kaggle`` is the validation score)."""

    def val(m: Mapping[str, Any]) -> float:
        return float(m["test"]["val_tuned_kaggle"])

    start = max(runs, key=lambda s: np.mean([val(m) for m in runs[s]]))
    return start, max(runs[start], key=val)
