"""Post-processing of predicted probabilities into masks, and its tuning on validation data.

Per class: a pixel ``threshold``; a ``min_area`` (connected components smaller than it are
dropped); and two image-level gates, either of which empties the class for an image:
``min_top_prob`` (the class's highest probability must reach it) and ``min_total_area`` (the
area left after dropping small components must reach it). Areas are in pixels of the full
256 x 1600 image; masks of another size scale them by the ratio of the pixel counts, so the
same parameters apply to probabilities kept at reduced size for tuning.

The classifier gate (models with an image-level classification head): a class whose image-level
probability is below ``cls_threshold`` is emptied (``gate_min_area`` 0, the 1st place's gate) or
kept only in components of at least ``gate_min_area`` pixels (khornlund's variant);
``cls_threshold`` 0 switches it off. An image whose every class the gate empties (or that is
disabled) is *screened*: no mask is decoded or post-processed for it (``screened``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from ..data.config import HEIGHT, N_CLASSES, WIDTH
from ..data.errors import SteelnbError
from ..data.fileio import read_mapping, write_text
from ..model.counts import dice_from_counts
from ..model.runfiles import POSTPROCESS_FILE

FILE_NAME = POSTPROCESS_FILE
FULL_PIXELS = HEIGHT * WIDTH
#: Default grids of ``tune_postprocess`` (areas in full-resolution pixels).
THRESHOLDS = tuple(np.round(np.arange(0.2, 0.96, 0.05), 2).tolist())
MIN_AREAS = (0, 100, 250, 500, 1000, 1500, 2000, 3000, 5000, 8000)
TOP_PROBS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9)
TOTAL_AREAS = (0, 500, 1000, 2000, 4000, 8000)
#: Default gate grids (searched only with class probabilities): thresholds on the image-level
#: class probability, and per threshold both modes, emptying (0) or a larger minimum area. The
#: threshold is chosen on validation, so only the classifier's ranking counts, not its calibration;
#: the grid reaches down to 0.01 because a short run's head ranks well but gives low probabilities
#: (the smoke's gate run: class-3 images at a median 0.02-0.07, the others below 0.01, so every
#: threshold from 0.3 up emptied nearly all of them; bench/learning.md, bench/bench_tuning.py)
CLS_THRESHOLDS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
GATE_MIN_AREAS = (0, 2000, 4000, 8000)


class PostprocessError(SteelnbError):
    """Invalid post-processing parameters or inputs; the message names the file or field."""


@dataclass(frozen=True)
class ClassParams:
    """Post-processing of one class (areas in pixels of a 256 x 1600 image); ``enabled=False``
    predicts nothing for the class (tuning chooses it when no setting beats that on validation).

    ``cls_threshold`` > 0: the classifier gate, for an image whose class probability is below it:
    ``gate_min_area`` 0 empties the class, > 0 raises its minimum area to that many pixels."""

    threshold: float = 0.5
    min_area: int = 0
    min_top_prob: float = 0.0
    min_total_area: int = 0
    enabled: bool = True
    cls_threshold: float = 0.0
    gate_min_area: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold < 1.0 or not 0.0 <= self.min_top_prob <= 1.0:
            raise PostprocessError(f"{self}: threshold must be in [0, 1) and min_top_prob in [0, 1]")
        if not 0.0 <= self.cls_threshold <= 1.0:
            raise PostprocessError(f"{self}: cls_threshold must be in [0, 1] (0: no classifier gate)")
        if self.min_area < 0 or self.min_total_area < 0 or self.gate_min_area < 0:
            raise PostprocessError(f"{self}: areas must be >= 0")

    def gated(self, class_prob: float | None) -> bool:
        """True when the classifier gate acts on an image of this class probability (None: no head)."""
        return self.cls_threshold > 0 and class_prob is not None and class_prob < self.cls_threshold

    def empties(self, class_prob: float | None) -> bool:
        """True when the class is empty whatever the pixels say: disabled, or emptied by the gate."""
        return not self.enabled or (self.gated(class_prob) and self.gate_min_area == 0)


@dataclass(frozen=True)
class PostParams:
    """Per-class parameters, one ``ClassParams`` for each of the classes 1..4."""

    classes: tuple[ClassParams, ...] = field(default_factory=lambda: (ClassParams(),) * N_CLASSES)
    score: float | None = None  # validation Kaggle metric reached when tuned (information only)
    #: each class's validation Kaggle score reached when tuned (``score`` is their mean): what
    #: ``classwise`` chooses a run per class by; None for parameters tuned before it was kept
    class_scores: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.classes) != N_CLASSES:
            raise PostprocessError(f"expected {N_CLASSES} class parameter sets, got {len(self.classes)}")
        if self.class_scores is not None and len(self.class_scores) != N_CLASSES:
            raise PostprocessError(f"expected {N_CLASSES} class scores, got {len(self.class_scores)}")

    def to_dict(self) -> dict:
        out: dict = {"classes": {i + 1: dataclasses.asdict(c) for i, c in enumerate(self.classes)}}
        if self.score is not None:
            out["score"] = float(self.score)
        if self.class_scores is not None:
            out["class_scores"] = [float(s) for s in self.class_scores]
        return out

    def to_yaml(self, path: str | Path) -> Path:
        """Write atomically (temporary file then rename); ``path`` may be a run folder."""
        path = Path(path)
        if path.is_dir():
            path = path / FILE_NAME
        return write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_yaml(cls, path: str | Path) -> PostParams:
        """Read parameters written by ``to_yaml`` (``path`` may be a run folder)."""
        path = Path(path)
        if path.is_dir():
            path = path / FILE_NAME
        data = read_mapping(path, PostprocessError, "post-processing file", "a mapping with 'classes'")
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> PostParams:
        """Parameters from ``to_dict``'s layout (class keys as ints, or as strings after JSON)."""
        try:
            per_class = data["classes"]
            classes = tuple(
                ClassParams(**(per_class[c] if c in per_class else per_class[str(c)]))
                for c in range(1, N_CLASSES + 1)
            )
        except (KeyError, TypeError) as e:
            raise PostprocessError(
                f"{source}: expected 'classes: {{1..{N_CLASSES}: parameters}}' ({e!r})"
            ) from None
        scores = data.get("class_scores")
        try:
            return cls(
                classes=classes,
                score=data.get("score"),
                class_scores=None if scores is None else tuple(scores),
            )
        except TypeError as e:
            raise PostprocessError(f"{source}: class_scores: expected {N_CLASSES} numbers ({e})") from None
        except PostprocessError as e:
            raise PostprocessError(f"{source}: {e}") from None


def load_params(run_dir: str | Path) -> PostParams | None:
    """``postprocess.yaml`` beside a checkpoint (run folder or .ckpt path), or None when absent."""
    run_dir = Path(run_dir)
    path = (run_dir if run_dir.is_dir() else run_dir.parent) / FILE_NAME
    return PostParams.from_yaml(path) if path.is_file() else None


def _as_prob(probs: np.ndarray) -> np.ndarray:
    """Probabilities as float32; uint8 input is read as quantised probability x 255."""
    probs = np.asarray(probs)
    return (
        probs.astype(np.float32) / 255.0 if probs.dtype == np.uint8 else probs.astype(np.float32, copy=False)
    )


def _area_scale(shape: Sequence[int]) -> float:
    return shape[-2] * shape[-1] / FULL_PIXELS


def apply_class(prob: np.ndarray, p: ClassParams, class_prob: float | None = None) -> np.ndarray:
    """One class of one image: probabilities (H, W) -> uint8 0/1 mask (H, W). ``class_prob``: the
    image-level probability of the class (None: no classifier, the gate does nothing)."""
    prob = _as_prob(prob)
    scale = _area_scale(prob.shape)
    if p.empties(class_prob) or prob.max(initial=0.0) < p.min_top_prob:
        return np.zeros(prob.shape, np.uint8)
    min_area = max(p.min_area, p.gate_min_area) if p.gated(class_prob) else p.min_area
    mask = (prob > p.threshold).astype(np.uint8)
    if min_area > 0 and mask.any():
        n, comp, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        keep = stats[:, cv2.CC_STAT_AREA] >= min_area * scale
        keep[0] = False
        mask = keep[comp].astype(np.uint8)
    if p.min_total_area > 0 and mask.sum() < p.min_total_area * scale:
        mask[:] = 0
    return mask


def _class_probs(class_probs: np.ndarray | None, n: int) -> np.ndarray | None:
    """Class probabilities as float (n, 4), or None; errors name the shape expected."""
    if class_probs is None:
        return None
    cp = np.asarray(class_probs, np.float64)
    cp = cp[None] if cp.ndim == 1 else cp
    if cp.shape != (n, N_CLASSES):
        raise PostprocessError(
            f"class probabilities of shape {np.shape(class_probs)}: expected ({n}, {N_CLASSES}) "
            f"(or ({N_CLASSES},) for one image)"
        )
    return cp


def apply(
    probs: np.ndarray, params: PostParams | None = None, class_probs: np.ndarray | None = None
) -> np.ndarray:
    """Probabilities (4, H, W) or (N, 4, H, W), float in [0, 1] or uint8 x255 -> uint8 masks, same shape.

    ``class_probs``: image-level class probabilities (4,) or (N, 4) of a model with a
    classification head, for the classifier gate; None (or every ``cls_threshold`` 0) leaves it off.
    """
    params = params or PostParams()
    probs = np.asarray(probs)
    if probs.ndim not in (3, 4) or probs.shape[-3] != N_CLASSES:
        raise PostprocessError(f"expected probabilities (4, H, W) or (N, 4, H, W), got shape {probs.shape}")
    batch = probs[None] if probs.ndim == 3 else probs
    cp = _class_probs(class_probs, batch.shape[0])
    out = np.zeros(batch.shape, np.uint8)
    for i in range(batch.shape[0]):
        for c in range(N_CLASSES):
            out[i, c] = apply_class(batch[i, c], params.classes[c], None if cp is None else float(cp[i, c]))
    return out[0] if probs.ndim == 3 else out


def emptied(class_probs: np.ndarray | None, params: PostParams, n: int | None = None) -> np.ndarray:
    """Which (image, class) pairs are empty before any pixel is looked at: bool (N, 4), the class
    disabled or emptied by the classifier gate. ``class_probs`` (N, 4) or (4,); None (no head):
    ``n`` images, where only disabled classes are empty."""
    if class_probs is None:
        if n is None:
            raise PostprocessError("emptied: give class_probs (N, 4) or the number of images n")
        return np.tile([not c.enabled for c in params.classes], (n, 1)).astype(bool)
    cp = _class_probs(class_probs, np.atleast_2d(np.asarray(class_probs)).shape[0])
    out = [[c.empties(float(v)) for c, v in zip(params.classes, row)] for row in cp]
    return np.array(out, bool).reshape(-1, N_CLASSES)


def screened(class_probs: np.ndarray | None, params: PostParams, n: int | None = None) -> np.ndarray:
    """Images the gate screens out: bool (N,), every class emptied before any pixel is looked at
    (``emptied``). Such an image needs no mask decoding and no post-processing, so the share
    screened is the share of that time saved. In a two-stage pipeline (encoder and head first, the
    decoder only for the images left) that is the decoder's forward pass, the upsampling to
    256 x 1600 and the post-processing; ``inference.predict`` decodes whole batches, so there it
    saves the post-processing (connected components, RLE) only."""
    return emptied(class_probs, params, n).all(1)


def _kept_counts(
    probs: np.ndarray, truth: np.ndarray, thr: float, min_a: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted area and its overlap with the truth left at each minimum area: probs (N, H, W),
    truth (N, H, W) bool, areas (A,) in pixels of this size -> (area (A, N), intersection (A, N))."""
    n = probs.shape[0]
    kept_area = np.zeros((len(min_a), n))
    kept_inter = np.zeros((len(min_a), n))
    for i in range(n):
        mask = (probs[i] > thr).astype(np.uint8)
        if not mask.any():
            continue
        k, comp, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        areas = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
        inters = np.bincount(comp[truth[i]], minlength=k)[1:].astype(np.float64)
        keep = areas[None, :] >= min_a[:, None]  # (A, K)
        kept_area[:, i] = keep @ areas
        kept_inter[:, i] = keep @ inters
    return kept_area, kept_inter


def _gates(
    class_probs: np.ndarray | None, cls_thresholds: Sequence[float], gate_min_areas: Sequence[int]
) -> list[tuple[float, int]]:
    """The gate settings searched: off first (ties go to it), then each threshold in both modes."""
    if class_probs is None:
        return [(0.0, 0)]
    return [(0.0, 0)] + [(float(t), int(a)) for t in cls_thresholds if t > 0 for a in gate_min_areas]


def _gated(
    all_area: np.ndarray,
    all_inter: np.ndarray,
    at: dict[int, int],
    min_areas: Sequence[int],
    class_probs: np.ndarray | None,
    cls_thr: float,
    gate_area: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The counts each image keeps under one gate setting, per minimum area: from the counts at
    every area (A', N) (row ``at[area]``) -> (area (A, N), intersection (A, N)). A gated image
    (class probability below ``cls_thr``) keeps nothing (``gate_area`` 0) or what the larger
    minimum area ``gate_area`` keeps."""
    rows = [at[int(a)] for a in min_areas]
    kept_area, kept_inter = all_area[rows], all_inter[rows]  # (A, N)
    if cls_thr > 0:
        hit = class_probs < cls_thr  # (N,)
        if gate_area == 0:
            kept_area, kept_inter = np.where(hit, 0.0, kept_area), np.where(hit, 0.0, kept_inter)
        else:
            raised = [at[max(int(a), gate_area)] for a in min_areas]
            kept_area = np.where(hit, all_area[raised], kept_area)
            kept_inter = np.where(hit, all_inter[raised], kept_inter)
    return kept_area, kept_inter


def _grid_dice(
    kept_area: np.ndarray, kept_inter: np.ndarray, top_ok: np.ndarray, tot_a: np.ndarray, t_area: np.ndarray
) -> np.ndarray:
    """Mean Dice over the images of every (top probability, minimum area, total area) setting:
    (P, A, T), from the kept counts (A, N), which images pass each top probability (P, N) and the
    total areas (T,) in pixels of this size. An image whose class is gated out predicts nothing."""
    on = top_ok[:, None, None, :] & (kept_area[None, :, None, :] >= tot_a[None, None, :, None])
    inter = np.where(on, kept_inter[None, :, None, :], 0.0)
    area = np.where(on, kept_area[None, :, None, :], 0.0)
    return dice_from_counts(inter, area - inter, t_area - inter).mean(-1)


def _tune_class(
    probs: np.ndarray,
    truth: np.ndarray,
    thresholds: Sequence[float],
    min_areas: Sequence[int],
    top_probs: Sequence[float],
    total_areas: Sequence[int],
    class_probs: np.ndarray | None = None,
    cls_thresholds: Sequence[float] = CLS_THRESHOLDS,
    gate_min_areas: Sequence[int] = GATE_MIN_AREAS,
) -> tuple[ClassParams, float]:
    """Grid search for one class: probs (N, H, W) float, truth (N, H, W) bool, class probabilities
    (N,) or None -> (best, mean Dice). Without class probabilities the gate stays off."""
    n = probs.shape[0]
    scale = _area_scale(probs.shape)
    t_area = truth.sum((1, 2))
    top = probs.reshape(n, -1).max(1)
    gates = _gates(class_probs, cls_thresholds, gate_min_areas)
    # components are counted once per threshold at every area a setting can ask for
    areas = sorted({*map(int, min_areas), *(a for _, a in gates if a > 0)})
    at = {a: j for j, a in enumerate(areas)}
    all_a = np.asarray(areas, np.float64) * scale  # (A',)
    tot_a = np.asarray(total_areas, np.float64) * scale  # (T,)
    top_ok = top[None, :] >= np.asarray(top_probs)[:, None]  # (P, N)
    best, best_score = ClassParams(), -1.0
    for thr in sorted(thresholds, key=lambda t: abs(t - 0.5)):  # ties go to the plainest setting
        all_area, all_inter = _kept_counts(probs, truth, thr, all_a)  # (A', N)
        for cls_thr, gate_area in gates:
            kept = _gated(all_area, all_inter, at, min_areas, class_probs, cls_thr, gate_area)
            score = _grid_dice(*kept, top_ok, tot_a, t_area)
            j = np.unravel_index(int(np.argmax(score)), score.shape)
            if score[j] > best_score + 1e-12:
                best_score = float(score[j])
                best = ClassParams(
                    float(thr),
                    int(min_areas[j[1]]),
                    float(top_probs[j[0]]),
                    int(total_areas[j[2]]),
                    cls_threshold=cls_thr,
                    gate_min_area=gate_area,
                )
    # predicting nothing for the class wins ties: a setting that only matches it on validation
    # (it predicts nothing there, or its hits and false alarms cancel) has shown nothing, and on
    # new images it fires where validation never saw it fire (the smoke's ties cost up to 0.03 of
    # a class's test score)
    off = float((t_area == 0).mean())
    if off >= best_score - 1e-12:
        return ClassParams(enabled=False), off
    return best, best_score


def tune_postprocess(
    probs: np.ndarray,
    truth: np.ndarray,
    thresholds: Sequence[float] = THRESHOLDS,
    min_areas: Sequence[int] = MIN_AREAS,
    top_probs: Sequence[float] = TOP_PROBS,
    total_areas: Sequence[int] = TOTAL_AREAS,
    class_probs: np.ndarray | None = None,
    cls_thresholds: Sequence[float] = CLS_THRESHOLDS,
    gate_min_areas: Sequence[int] = GATE_MIN_AREAS,
) -> PostParams:
    """Grid-search each class's parameters to maximise the Kaggle metric on validation data.

    probs: (N, 4, H, W) float in [0, 1] or uint8 x255 (reduced size is fine); truth: (N, 4, H, W)
    0/1 at the same size. Classes are searched independently: the metric is a mean over
    (image, class) pairs, so the best per class is the best overall. Returns ``PostParams``
    with ``score`` = the validation metric reached.

    ``class_probs`` (N, 4), from a model with a classification head: the classifier gate is
    searched too, off and every (threshold in ``cls_thresholds``, mode in ``gate_min_areas``: 0
    empties, > 0 raises the minimum area); off wins ties, so the score never falls below the
    search without them. None: the gate stays off and the search costs what it did before it.
    """
    probs, truth = np.asarray(probs), np.asarray(truth)
    if probs.ndim != 4 or probs.shape[1] != N_CLASSES or truth.shape != probs.shape:
        raise PostprocessError(
            f"expected probs and truth (N, 4, H, W) of one shape, got {probs.shape} and {truth.shape}"
        )
    if probs.shape[0] == 0:
        raise PostprocessError("no images to tune on")
    cp = _class_probs(class_probs, probs.shape[0])
    best, scores = [], []
    for c in range(N_CLASSES):
        p, s = _tune_class(
            _as_prob(probs[:, c]),
            truth[:, c] > 0,
            thresholds,
            min_areas,
            top_probs,
            total_areas,
            None if cp is None else cp[:, c],
            cls_thresholds,
            gate_min_areas,
        )
        best.append(p)
        scores.append(s)
    return PostParams(
        classes=tuple(best), score=float(np.mean(scores)), class_scores=tuple(map(float, scores))
    )
