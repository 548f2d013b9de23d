"""A trained run judged on its held-out test split, with 95% bootstrap intervals.

``evaluate_run(run_dir)`` tunes post-processing on the run's validation images (with the same
TTA it is then applied with), predicts the test images once, and writes

- ``test_scores.csv``: one row per (test image, class) with tp / fp / fn pixels, raw (threshold
  0.5) and post-processed, so that any two runs can be compared image by image later;
- the ``test`` block of ``metrics.json``: the Kaggle metric with its interval, what predicting
  nothing scores on the same images, the paired interval of the gain over it, Dice, IoU and
  defect Dice (mean Dice over the pairs whose truth is not empty), each with an interval.

Validation selects (epoch, schedule, post-processing); the test split only reports. ``tune``
is that selection of post-processing on labelled images (by default the run's validation split),
saved as ``postprocess.yaml`` beside the checkpoint, where ``predict_run.run_predict`` finds it.

A run with a classification head (``cls_weight`` > 0) also tunes the classifier gate (its class
probabilities go into ``postprocess.tune_postprocess``) and its test block gains ``gate``
(``gate_summary``): the share of defect-free and of defective test images the gate screens out,
and the false-positive pairs and Kaggle metric with the gate and without it.

``evaluate_ensemble(run_dirs, out)`` does the same for an ensemble of runs that share their data,
validation and test images (``ensemble.Ensemble``), into a folder of its own that the comparison
code reads like a run's (``metrics.json``, ``test_scores.csv``, ``postprocess.yaml``, and
``members.json`` naming the run folders).

Imports: this module uses ``inference`` and ``ensemble`` (probabilities) and ``labels`` (truth
masks); the prediction run (``predict_run``) uses this one for its tables, never the other way round.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from . import metrics, stats
from . import postprocess as pp
from .config import HEIGHT, N_CLASSES, WIDTH
from .ensemble import Ensemble, load_ensemble, write_members
from .errors import SteelnbError
from .fileio import write_csv, write_json
from .inference import InferenceError, check_classes, four_classes, load
from .labels import encodings_by_image, image_masks
from .sampling import sealed

SCORES_FILE = "test_scores.csv"
COUNT_COLUMNS = ["tp", "fp", "fn", "tp_raw", "fp_raw", "fn_raw"]
#: Extra columns of ``test_scores.csv`` for a run with a classification head: the image-level class
#: probability and the post-processed counts with the classifier gate switched off (the map of the
#: mask logits is the same in both; only the gate differs).
GATE_COLUMNS = ["class_prob", "tp_ungated", "fp_ungated", "fn_ungated"]


class EvaluationError(SteelnbError):
    """A run cannot be evaluated (no test split, no checkpoint, scores of other images)."""


def _pooled(counts: np.ndarray, what: str) -> np.ndarray:
    """Class-mean Dice or IoU of pixel counts summed over images: counts (B, N, C, 3) -> (B,)."""
    tp, fp, fn = (counts[..., k].sum(-2) for k in range(3))  # (B, C)
    of = metrics.dice_from_counts if what == "dice" else metrics.iou_from_counts
    return of(tp, fp, fn).mean(-1)


def _pooled_ci(counts: np.ndarray, what: str, n_boot: int, seed: int) -> tuple[float, float, float]:
    """Pooled Dice/IoU of counts (N, C, 3) with a percentile bootstrap over images."""
    rng = np.random.default_rng(seed)
    reps = np.concatenate(
        [
            _pooled(counts[rng.integers(0, len(counts), (100, len(counts)))], what)
            for _ in range(max(1, n_boot // 100))
        ]
    )
    low, high = np.quantile(reps, [0.025, 0.975])
    return float(_pooled(counts[None], what)[0]), float(low), float(high)


def summarize(counts: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The test block from counts (N, C, 3) of one prediction of N images.

    Keys: kaggle, kaggle_ci95, all_empty_kaggle, kaggle_gain, kaggle_gain_ci95, gain_real,
    dice(+_ci95), iou(+_ci95) (pooled over images, mean over classes), defect_dice(+_ci95),
    per_class_kaggle, images, defect_pairs.
    """
    dice = metrics.dice_of(counts)
    empty_truth = (counts[..., 0] + counts[..., 2]) == 0
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
        v, lo, hi = _pooled_ci(counts, what, n_boot, seed)
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


def _as_ensemble(weights: str | Path | Ensemble, device: str) -> Ensemble:
    """A checkpoint or run folder as a one-member ``Ensemble``; an ``Ensemble`` passes through."""
    return weights if isinstance(weights, Ensemble) else load_ensemble([weights], device)


def _ungated(params: pp.PostParams) -> pp.PostParams:
    """``params`` with the classifier gate of every class switched off."""
    return pp.PostParams(
        classes=tuple(dataclasses.replace(c, cls_threshold=0.0, gate_min_area=0) for c in params.classes),
        score=params.score,
    )


def score_images(
    weights: str | Path | Ensemble,
    images_dir: Path,
    labels_csv: Path,
    image_ids: Sequence[str],
    params: pp.PostParams,
    tta: str = "none",
    batch_size: int = 8,
    device: str = "auto",
    progress: bool = False,
) -> pd.DataFrame:
    """Predict ``image_ids`` at the model's size, score at 256 x 1600 raw and post-processed.

    ``weights``: a checkpoint or run folder, or an ``ensemble.Ensemble``. Returns the long table:
    ImageId, ClassId, tp, fp, fn (post-processed), tp_raw, fp_raw, fn_raw (threshold 0.5), one row
    per image and class; with class probabilities (every model has a classification head) also
    ``GATE_COLUMNS``: class_prob and tp/fp/fn_ungated (post-processed with the gate off).
    """
    ens = _as_ensemble(weights, device)
    table = encodings_by_image(labels_csv)
    ungated = _ungated(params)
    gate_on = ungated != params
    rows = []
    for batch in ens.predict(
        [images_dir / i for i in image_ids],
        tta,
        batch_size,
        device,
        out_size=(HEIGHT, WIDTH),
        progress=progress,
    ):
        for k, (image_id, prob) in enumerate(zip(batch.ids, batch.probs)):
            truth = image_masks(table.get(image_id, {}), image_id=image_id)
            cp = None if batch.class_probs is None else batch.class_probs[k]
            post = metrics.pixel_counts(pp.apply(prob, params, cp), truth)
            raw = metrics.pixel_counts(prob > 0.5, truth)
            if cp is None:
                rows += [(image_id, c + 1, *post[c], *raw[c]) for c in range(N_CLASSES)]
                continue
            free = metrics.pixel_counts(pp.apply(prob, ungated), truth) if gate_on else post
            rows += [(image_id, c + 1, *post[c], *raw[c], float(cp[c]), *free[c]) for c in range(N_CLASSES)]
    columns = ["ImageId", "ClassId", *COUNT_COLUMNS]
    return pd.DataFrame(rows, columns=columns + (GATE_COLUMNS if ens.has_classifier else []))


def counts_of(
    scores: pd.DataFrame, raw: bool = False, image_ids: Sequence[str] | None = None, ungated: bool = False
) -> np.ndarray:
    """Counts (N, C, 3) from a scores table (images in ``image_ids`` order, default sorted);
    ``raw``: at threshold 0.5; ``ungated``: post-processed with the classifier gate off."""
    cols = ["tp_raw", "fp_raw", "fn_raw"] if raw else ["tp", "fp", "fn"]
    cols = ["tp_ungated", "fp_ungated", "fn_ungated"] if ungated else cols
    if not set(cols) <= set(scores.columns):
        raise EvaluationError(
            f"scores hold no columns {', '.join(cols)} (a run without a classification head?)"
        )
    wide = scores.pivot(index="ImageId", columns="ClassId", values=cols)
    ids = sorted(wide.index) if image_ids is None else list(image_ids)
    missing = sorted(set(ids) - set(wide.index))
    if missing:
        raise EvaluationError(f"scores hold no row for image {missing[0]} ({len(missing)} missing)")
    wide = wide.loc[ids]
    return np.stack([wide[c].to_numpy() for c in cols], -1).astype(np.int64)


def read_scores(run_dir: str | Path) -> pd.DataFrame | None:
    """``test_scores.csv`` of a run folder, or None when the run was not evaluated."""
    path = Path(run_dir) / SCORES_FILE
    return pd.read_csv(path, dtype={"ImageId": str}) if path.is_file() else None


def _run_data(run_dir: str | Path) -> tuple[Any, Any]:
    """(config, SteelDataModule) of a run folder; errors when it has no config or no test split."""
    _, info = load(run_dir, "cpu")
    return info.config, _data_of(info, run_dir)


def _data_of(info: Any, run_dir: str | Path) -> Any:
    """The SteelDataModule of a loaded checkpoint's config; errors when it has no config or no test split."""
    from .dataset import SteelDataModule

    if info.config is None:
        raise EvaluationError(
            f"{info.path}: the checkpoint carries no training config; cannot find its splits"
        )
    data = SteelDataModule(info.config)
    if not data.test_ids:
        raise EvaluationError(
            f"{run_dir}: the run has no test split (folds without fold -1, or test_share=0)"
        )
    return data


def tune(
    weights: str | Path,
    images: str | Path | None = None,
    labels: str | Path | None = None,
    image_ids: Sequence[str] | None = None,
    tta: str = "none",
    size: tuple[int, int] = (128, 800),
    batch_size: int = 8,
    device: str = "auto",
    class_id: int | None = None,
    save: bool = True,
    progress: bool = True,
    **grids: Any,
) -> pp.PostParams:
    """Tune post-processing on labelled images and save ``postprocess.yaml`` beside the checkpoint.

    Defaults: the run's own validation images (its config's data, fold and subset). Probabilities
    are kept as uint8 at ``size`` (H, W) (N x 4 x H x W bytes) and truth resized (nearest).
    ``grids``: thresholds, min_areas, top_probs, total_areas (and, for a model with a
    classification head, cls_thresholds and gate_min_areas) of ``tune_postprocess``.
    """
    ens = _as_ensemble(weights, device)
    info = ens.infos[0]
    check_classes(info, class_id)
    if images is None or labels is None or image_ids is None:
        images, labels, image_ids = _validation_images(weights, info, images, labels, image_ids)
    params = _tune(ens, images, labels, image_ids, tta, size, batch_size, device, class_id, progress, grids)
    if save:
        params.to_yaml(info.path.parent / pp.FILE_NAME)
    return params


def _tune(
    ens: Ensemble,
    images: str | Path,
    labels: str | Path,
    image_ids: Sequence[str] | None,
    tta: str,
    size: tuple[int, int],
    batch_size: int,
    device: str,
    class_id: int | None,
    progress: bool,
    grids: dict[str, Any],
) -> pp.PostParams:
    """``tune``'s search on the (ensemble's) probabilities of ``image_ids`` (None: every image of
    the folder ``images``), with its class probabilities when it has them; saves nothing."""
    table = encodings_by_image(labels)
    paths = [Path(images) / i for i in image_ids] if image_ids is not None else images
    probs, truth, class_probs = [], [], []
    for batch in ens.predict(paths, tta, batch_size, device, out_size=size, quantize=True, progress=progress):
        probs.append(four_classes(batch.probs, class_id))
        if batch.class_probs is not None:
            class_probs.append(four_classes(batch.class_probs, class_id))
        for image_id in batch.ids:
            masks = image_masks(table.get(image_id, {}), image_id=image_id)
            truth.append(
                np.stack([cv2.resize(m, size[::-1], interpolation=cv2.INTER_NEAREST) for m in masks])
            )
    cp = np.concatenate(class_probs) if class_probs and len(class_probs) == len(probs) else None
    return pp.tune_postprocess(np.concatenate(probs), np.stack(truth), class_probs=cp, **grids)


def _validation_images(
    weights: str | Path,
    info: Any,
    images: str | Path | None,
    labels: str | Path | None,
    image_ids: Sequence[str] | None,
) -> tuple[Any, Any, Any]:
    """(images folder, label file, image ids), each given one or else the run's validation split."""
    from .dataset import SteelDataModule

    if info.config is None:
        raise InferenceError(
            f"{weights}: no training config in the checkpoint: pass images, labels and image_ids"
        )
    dm = SteelDataModule(info.config)
    return images or dm.images_dir, labels or info.config.resolve(info.config.labels), image_ids or dm.val_ids


def _tuned_scores(
    run_dir: str | Path,
    data: Any,
    tta: str,
    tune_size: tuple[int, int],
    batch_size: int,
    device: str,
    progress: bool,
    save: bool = True,
    score_ids: Sequence[str] | None = None,
) -> tuple[pp.PostParams, pd.DataFrame]:
    """Post-processing tuned on the validation images (saved beside the checkpoint unless not
    ``save``), then ``score_ids`` (default: the test images) scored with it: (parameters, scores)."""
    labels_csv = data.config.resolve(data.config.labels)
    params = tune(
        run_dir,
        images=data.images_dir,
        labels=labels_csv,
        image_ids=data.val_ids,
        tta=tta,
        size=tune_size,
        batch_size=batch_size,
        device=device,
        progress=progress,
        save=save,
    )
    ids = data.test_ids if score_ids is None else score_ids
    scores = score_images(
        run_dir, data.images_dir, labels_csv, ids, params, tta, batch_size, device, progress
    )
    return params, scores


def judge_on_validation(
    run_dir: str | Path,
    tta: str = "none",
    tune_size: tuple[int, int] = (128, 800),
    batch_size: int = 8,
    device: str = "auto",
    n_boot: int = 2000,
    who: str = "a probe",
) -> dict[str, Any]:
    """How a run does on its validation images only, for probes and bench tools (which must never
    read the sealed test split: ``sampling.sealed`` checks the ids): post-processing tuned on the
    validation images as ``evaluate_run`` tunes it, then those images scored with it.

    Tuned and scored on the same images, the number is optimistic (an upper bound of what tuning
    reaches there), and it is what chooses the best run (``val_tuned_kaggle``), so a probe and the
    study's choice read alike. Returns ``summarize``'s block of the validation images (interval,
    all-empty baseline, paired gain) with split "validation"; writes nothing.
    """
    cfg, data = _run_data(run_dir)
    ids = sealed(data.val_ids, data.test_ids, who)
    # tuned as evaluate_run tunes (on the validation images, not saved), then those images scored
    params, scores = _tuned_scores(run_dir, data, tta, tune_size, batch_size, device, False, False, ids)
    block = summarize(counts_of(scores, image_ids=sorted(ids)), n_boot=n_boot, seed=cfg.seed)
    block.update(
        split="validation",
        tta=tta,
        postprocess="tuned on these validation images (optimistic)",
        val_tuned_kaggle=params.score,
        tune_size=list(tune_size),
    )
    return block


def _stored_scores(
    run_dir: str | Path,
    data: Any,
    tta: str,
    tune_size: tuple[int, int],
) -> tuple[pp.PostParams, pd.DataFrame] | None:
    """(parameters, ``test_scores.csv``) of the run's own evaluation when ``evaluate_run`` wrote
    them with this TTA and tuning size on these test images (the same prediction again would give
    the same table), else None."""
    metrics_path = Path(run_dir) / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    block = metrics.get("test") or {}
    if block.get("tta") != tta or block.get("tune_size") != list(tune_size) or not metrics.get("postprocess"):
        return None
    scores = read_scores(run_dir)
    if scores is None or set(scores["ImageId"]) != set(data.test_ids):
        return None
    return pp.PostParams.from_dict(metrics["postprocess"], source=str(metrics_path)), scores


def evaluate_run(
    run_dir: str | Path,
    tta: str = "none",
    tune_size: tuple[int, int] = (128, 800),
    batch_size: int = 8,
    device: str = "auto",
    n_boot: int = 2000,
    progress: bool = False,
) -> dict[str, Any]:
    """Tune post-processing on validation, score the test split, write the test block.

    Writes ``postprocess.yaml``, ``test_scores.csv`` and ``metrics.json["test"]`` (and
    ``["test_raw"]``, the same at threshold 0.5 without post-processing) in ``run_dir``;
    returns the test block (with ``gate`` for a run with a classification head).
    """
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise EvaluationError(f"{metrics_path}: not found; train the run first")
    cfg, data = _run_data(run_dir)
    params, scores = _tuned_scores(run_dir, data, tta, tune_size, batch_size, device, progress)
    write_csv(run_dir / SCORES_FILE, scores)
    block, raw = _test_blocks(scores, params, len(data.val_ids), tta, tune_size, n_boot, cfg.seed)
    metrics = json.loads(metrics_path.read_text())
    metrics.update(test=block, test_raw=raw, postprocess=params.to_dict())
    write_json(metrics_path, metrics)
    return block


def _test_blocks(
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
    empty_truth = (counts[..., 0] + counts[..., 2]) == 0  # (N, C)
    clean = empty_truth.all(1)
    screened = pp.screened(class_probs, params)
    gated = np.array([[c.gated(float(v)) for c, v in zip(params.classes, row)] for row in class_probs], bool)

    def share(k: int, n: int) -> float | None:
        return k / n if n else None

    def fp_pairs(cnt: np.ndarray) -> int:
        return int((empty_truth & ((cnt[..., 0] + cnt[..., 1]) > 0)).sum())

    def missed(cnt: np.ndarray) -> int:
        return int((~empty_truth & ((cnt[..., 0] + cnt[..., 1]) == 0)).sum())

    with_gate, without = metrics.dice_of(counts), metrics.dice_of(free)
    gain = stats.paired_bootstrap(with_gate, without, n_boot=n_boot, seed=seed)
    n_clean, n_def = int(clean.sum()), int((~clean).sum())
    return {
        "images": len(ids),
        "clean_images": n_clean,
        "defective_images": n_def,
        "screened_clean": int((screened & clean).sum()),
        "screened_clean_share": share(int((screened & clean).sum()), n_clean),
        "screened_defective": int((screened & ~clean).sum()),
        "screened_defective_share": share(int((screened & ~clean).sum()), n_def),
        "screened_share": share(int(screened.sum()), len(ids)),
        "gated_pairs": int(gated.sum()),
        "false_positive_pairs": fp_pairs(counts),
        "false_positive_pairs_ungated": fp_pairs(free),
        "missed_defect_pairs": missed(counts),
        "missed_defect_pairs_ungated": missed(free),
        "kaggle_ungated": float(without.mean()),
        "gate_gain": gain["diff"],
        "gate_gain_ci95": [gain["low"], gain["high"]],
    }


def _shared_splits(run_dirs: Sequence[Path], datas: Sequence[Any]) -> None:
    """Raise ``EvaluationError`` naming two runs that do not share data, validation or test images."""
    first, where = datas[0], run_dirs[0]

    def what(d: Any) -> dict[str, Any]:
        labels = Path(d.config.resolve(d.config.labels)).resolve()
        return {
            "data (images folder and label file)": (Path(d.images_dir).resolve(), labels),
            "validation images": sorted(d.val_ids),
            "test images": sorted(d.test_ids),
        }

    ref = what(first)
    for run, d in zip(run_dirs[1:], datas[1:]):
        for name, value in what(d).items():
            if value != ref[name]:
                sizes = f" ({len(ref[name])} and {len(value)})" if isinstance(value, list) else ""
                raise EvaluationError(
                    f"{where} and {run}: the members do not share the {name}{sizes}; an ensemble is "
                    "tuned on one validation split and scored on one test split (members of other "
                    "folds can still predict together: steelnb predict --weights RUN RUN ...)"
                )


def evaluate_ensemble(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    tta: str = "none",
    tune_size: tuple[int, int] = (128, 800),
    batch_size: int = 8,
    device: str = "auto",
    n_boot: int = 2000,
    progress: bool = False,
) -> dict[str, Any]:
    """``evaluate_run`` for an ensemble of runs: post-processing tuned on the ensemble's validation
    probabilities (each member at its own size with ``tta``, averaged; the classifier gate too when
    every member has a head), the test split scored with it; returns the test block.

    The members must share data, validation and test images (else ``EvaluationError`` naming the
    runs). Writes into ``out`` (e.g. weights/<plan>/ensemble__<names>/): ``postprocess.yaml``,
    ``test_scores.csv``, ``members.json`` (the run folders and their models) and ``metrics.json``
    (run, kind "ensemble", members, encoder and loss joined by "+", the mask size when the members
    share it, the first member's data block, ``test``, ``test_raw``, ``postprocess``), so that
    ``comparison.paired`` pairs it with its members on the same test images.
    """
    run_dirs = [Path(r) for r in run_dirs]
    if not run_dirs:
        raise EvaluationError("evaluate_ensemble: no run folders given")
    out = Path(out)
    ens = load_ensemble(run_dirs, device)
    datas = [_data_of(info, run) for info, run in zip(ens.infos, run_dirs)]
    _shared_splits(run_dirs, datas)
    data, cfg = datas[0], ens.infos[0].config
    labels_csv = cfg.resolve(cfg.labels)
    params = _tune(
        ens, data.images_dir, labels_csv, data.val_ids, tta, tune_size, batch_size, device, None, progress, {}
    )
    scores = score_images(
        ens, data.images_dir, labels_csv, data.test_ids, params, tta, batch_size, device, progress
    )
    params.to_yaml(out / pp.FILE_NAME)
    write_csv(out / SCORES_FILE, scores)
    block, raw = _test_blocks(scores, params, len(data.val_ids), tta, tune_size, n_boot, cfg.seed)
    members = [str(r) for r in ens.run_dirs]
    write_members(out, ens, tta=tta, tune_size=list(tune_size))
    first = ens.run_dirs[0] / "metrics.json"
    sizes = set(ens.sizes)
    height, width = sizes.pop() if len(sizes) == 1 else (None, None)
    write_json(
        out / "metrics.json",
        {
            "run": out.name,
            "kind": "ensemble",
            "members": members,
            "arch": "+".join(i.arch for i in ens.infos),
            "encoder": "+".join(i.encoder for i in ens.infos),
            "loss": "+".join(dict.fromkeys(i.config.loss for i in ens.infos)),
            "height": height,
            "width": width,
            "seed": cfg.seed,
            "data": json.loads(first.read_text()).get("data") if first.is_file() else None,
            "test": block,
            "test_raw": raw,
            "postprocess": params.to_dict(),
        },
    )
    return block


def compare_variants(
    run_dir: str | Path,
    ttas: Sequence[str] = ("none", "hv"),
    tune_size: tuple[int, int] = (128, 800),
    batch_size: int = 8,
    device: str = "auto",
    n_boot: int = 2000,
    progress: bool = False,
    worst: int = 20,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Raw and post-processed, for each TTA in ``ttas``, on the test split of a run.

    Post-processing is tuned on validation separately for each TTA (it is applied to the
    probabilities it was tuned on); the last TTA's parameters stay in ``postprocess.yaml``. A TTA
    and tuning size that the run's own evaluation used are not predicted again: its parameters
    and test scores are read back. The ``worst`` test images of lowest mean Dice under the last TTA,
    post-processed, go to ``<run_dir>/evaluation/worst.csv`` (``worst_images``), so that showing
    them needs no second prediction of the whole split (``predict_run.overlay_images``).
    Returns (table: one row per (tta, postprocess) with the test block's numbers and the
    all-empty row; paired: each variant against the first one, raw, with its paired interval, its
    Holm p over the variants and ``stats.verdict``'s words).
    """
    cfg, data = _run_data(run_dir)
    dice: dict[tuple[str, str], np.ndarray] = {}
    rows = []
    scores = None
    for i, tta in enumerate(ttas):
        last = i == len(ttas) - 1
        stored = _stored_scores(
            run_dir, data, tta, tune_size
        )  # the run's own evaluation, when it is this one
        if stored is None:
            _, scores = _tuned_scores(run_dir, data, tta, tune_size, batch_size, device, progress, save=last)
        else:
            params, scores = stored
            if last:
                params.to_yaml(Path(run_dir))
        for post, raw in (("raw (0.5)", True), ("tuned on validation", False)):
            counts = counts_of(scores, raw=raw)
            dice[(tta, post)] = metrics.dice_of(counts)
            rows.append({"tta": tta, "postprocess": post, **summarize(counts, n_boot=n_boot, seed=cfg.seed)})
    if scores is not None:  # counts: the last TTA's, post-processed (the loop's last), in sorted image order
        ids = sorted(scores["ImageId"].unique())
        write_csv(Path(run_dir) / "evaluation" / "worst.csv", worst_images(counts, ids, k=worst))
    empty = (counts[..., 0] + counts[..., 2]) == 0
    table = pd.DataFrame(rows)
    base = {
        "tta": "–",
        "postprocess": "all-empty prediction",
        "kaggle": float(empty.mean()),
        "images": len(empty),
        "defect_dice": 0.0,
    }
    table = pd.concat([table, pd.DataFrame([base])], ignore_index=True)
    first = next(iter(dice))
    others = [v for v in dice if v != first]
    diffs = stats.adjust(
        [stats.paired_bootstrap(dice[v], dice[first], n_boot=n_boot, seed=cfg.seed) for v in others]
    )
    paired = [
        {
            "variant": f"{variant[0]} TTA, {variant[1]}",
            "against": f"{first[0]} TTA, {first[1]}",
            "Kaggle difference [95% CI]": stats.format_ci(g["diff"], g["low"], g["high"]),
            "Holm p": g["p_holm"],
            "verdict": stats.verdict(g),
        }
        for variant, g in zip(others, diffs)
    ]
    return table, pd.DataFrame(paired)


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
    rows, gains = [], []
    for (tta, post), cnt in counts.items():
        tp, fp, fn = (cnt[:, cls, k].astype(np.float64) for k in range(3))
        per_image = metrics.dice_from_counts(tp, fp, fn)  # (N, C)
        empty = ((tp + fn) == 0).astype(np.float64)  # predicting nothing: 1 where the truth is empty
        stp, sfp, sfn = tp.sum(0), fp.sum(0), fn.sum(0)
        dice, iou = metrics.dice_from_counts(stp, sfp, sfn), metrics.iou_from_counts(stp, sfp, sfn)
        scored, gain = _scored_rows(per_image, empty, n_boot, seed)
        gains.append(gain)
        for j, c in enumerate(cls):
            rows.append([tta, post, str(c + 1), dice[j], iou[j], *scored[j], np.nan, "", len(cnt)])
        rows.append([tta, post, "mean", dice.mean(), iou.mean(), *scored[-1], np.nan, "", len(cnt)])
    if not rows:
        return pd.DataFrame(columns=EVALUATION_COLUMNS)
    mean_rows = [i for i, r in enumerate(rows) if r[2] == "mean"]
    for i, g in zip(mean_rows, stats.adjust(gains)):
        rows[i][12], rows[i][13] = g["p_holm"], stats.verdict(g)
    # the baseline's own rows: pooled Dice and IoU of an empty mask (1 only where no image holds the class)
    zeros = np.zeros_like(sfn)
    truth = stp + sfn
    b_dice, b_iou = (
        metrics.dice_from_counts(zeros, zeros, truth),
        metrics.iou_from_counts(zeros, zeros, truth),
    )
    base, _ = _scored_rows(empty, empty, n_boot, seed)
    for j, c in enumerate(cls):
        rows.append(
            ["–", "all-empty prediction", str(c + 1), b_dice[j], b_iou[j], *base[j], np.nan, "", len(empty)]
        )
    rows.append(
        ["–", "all-empty prediction", "mean", b_dice.mean(), b_iou.mean(), *base[-1], np.nan, "", len(empty)]
    )
    return pd.DataFrame(rows, columns=EVALUATION_COLUMNS)


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
    dice = metrics.dice_from_counts(tp, fp, fn)
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
