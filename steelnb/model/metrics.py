"""Segmentation metrics on (N, C, H, W) masks or probabilities; numpy arrays or torch tensors.

- ``dice_per_image`` / ``kaggle_metric``: the competition metric, mean Dice over every
  (image, class) pair, a pair with both masks empty scoring 1.
- ``iou_dice``: IoU and Dice per class from confusion counts summed over all images
  (``smp.metrics.get_stats``), a class empty in both prediction and truth scoring 1.
- ``pixel_counts``, ``dice_of``, ``dice_from_counts``, ``iou_from_counts``: the same on numpy count
  arrays (tp, fp, fn per image and class), for bootstrapping and the post-processing search.
- ``soft_iou``: the reference project's "IoU" on probabilities (no threshold). It is NOT the
  competition metric and is reported only to compare with the reference.
``SegmentationMetrics`` (a ``torchmetrics.Metric``) gathers all of these batch by batch in O(C)
memory; under DDP torchmetrics sums its states over the processes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import segmentation_models_pytorch as smp
import torch
from torchmetrics import Metric

from ..data.errors import SteelnbError
from .counts import dice_from_counts as dice_from_counts  # re-exported: the numpy half of the metrics
from .counts import dice_of as dice_of
from .counts import iou_from_counts as iou_from_counts
from .counts import pixel_counts as pixel_counts
from .counts import truth_empty_of as truth_empty_of

EPS = 1e-7


class MetricError(SteelnbError):
    """Inputs of the wrong shape or type; names what was expected."""


def _tensor(x: Any, name: str) -> torch.Tensor:
    t = torch.from_numpy(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    if t.ndim != 4:
        raise MetricError(f"{name}: expected shape (N, C, H, W), got {tuple(t.shape)}")
    return t.detach()


def _pair(pred: Any, truth: Any) -> tuple[torch.Tensor, torch.Tensor]:
    p, t = _tensor(pred, "pred"), _tensor(truth, "truth")
    if p.shape != t.shape:
        raise MetricError(f"pred {tuple(p.shape)} and truth {tuple(t.shape)}: expected equal (N, C, H, W)")
    return p, t.to(p.device)


def binarize(x: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Bool masks: bool stays, numbers become ``x > threshold`` (0/1 masks pass unchanged)."""
    return x if x.dtype == torch.bool else x > threshold


def confusion(pred: Any, truth: Any, threshold: float = 0.5) -> tuple[torch.Tensor, ...]:
    """(tp, fp, fn, tn) pixel counts, each (N, C) int64, via ``smp.metrics.get_stats``."""
    p, t = _pair(pred, truth)
    return smp.metrics.get_stats(binarize(p, threshold).long(), binarize(t, 0.5).long(), mode="multilabel")


def _dice(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    """Dice (F1) of counts, element-wise, float64; 1 where both masks are empty (smp's zero_division)."""
    tp, fp, fn = (x.double() for x in (tp, fp, fn))
    return smp.metrics.f1_score(tp, fp, fn, torch.zeros_like(tp), reduction="none", zero_division=1.0)


def _iou(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    """IoU of counts, element-wise, float64; 1 where both masks are empty."""
    tp, fp, fn = (x.double() for x in (tp, fp, fn))
    return smp.metrics.iou_score(tp, fp, fn, torch.zeros_like(tp), reduction="none", zero_division=1.0)


def dice_per_image(pred: Any, truth: Any, threshold: float = 0.5) -> np.ndarray:
    """Dice of each (image, class) pair -> float64 (N, C); 1 where both masks are empty."""
    tp, fp, fn, _ = confusion(pred, truth, threshold)
    return _dice(tp, fp, fn).cpu().numpy()


def kaggle_metric(pred: Any, truth: Any, threshold: float = 0.5) -> float:
    """The Severstal leaderboard metric: mean of ``dice_per_image`` over all N*C pairs."""
    return float(dice_per_image(pred, truth, threshold).mean())


def iou_dice(pred: Any, truth: Any, threshold: float = 0.5) -> dict[str, Any]:
    """Per-class and mean IoU/Dice from pixel counts summed over the N images.

    Returns ``{"iou": [C floats], "dice": [C], "iou_mean": float, "dice_mean": float}``.
    """
    tp, fp, fn, _ = (s.sum(0) for s in confusion(pred, truth, threshold))
    iou, dice = _iou(tp, fp, fn), _dice(tp, fp, fn)
    return {
        "iou": iou.tolist(),
        "dice": dice.tolist(),
        "iou_mean": float(iou.mean()),
        "dice_mean": float(dice.mean()),
    }


def soft_iou(probs: Any, truth: Any, per_class: bool = False) -> float | np.ndarray:
    """The reference's soft IoU on probabilities: sum(p*t) / (sum(p) + sum(t) - sum(p*t)).

    Summed over all images (and classes unless ``per_class``; then an array (C,)). Not the
    competition metric: it rewards confident near-empty predictions differently.
    """
    p, t = _pair(probs, truth)
    p, t = p.double(), t.double()
    dims = (0, 2, 3) if per_class else (0, 1, 2, 3)
    inter = (p * t).sum(dims)
    union = p.sum(dims) + t.sum(dims) - inter
    out = ((inter + EPS) / (union + EPS)).cpu().numpy()
    return out if per_class else float(out)


class SegmentationMetrics(Metric):
    """Running sums for an epoch of validation batches; nothing per image is kept.

    ``update(probs (N, C, H, W), truth (N, C, H, W))``; ``compute() -> dict`` with per-class
    lists ``dice``, ``iou``, ``kaggle`` (per-image Dice averaged per class), ``soft_iou``,
    ``empty_kaggle`` (the Kaggle metric of predicting nothing at all: the share of empty truth
    masks, the score any model must beat), their means (``*_mean``) and ``images`` (how many were
    counted). Every state is a float64 sum (``dist_reduce_fx="sum"``): under DDP ``compute`` adds
    the processes' states, so each image must reach exactly one process (no sampler padding:
    ``dataset.UnpaddedDistributedSampler``).
    """

    is_differentiable = False
    full_state_update = False
    # the per-class sums: confusion counts, per-image Dice, soft intersection and union, images
    # whose truth mask is empty
    SUMS = ("tp", "fp", "fn", "dice_sum", "inter", "union", "empty")

    def __init__(self, classes: int = 4, threshold: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.classes, self.threshold = classes, threshold
        for name in self.SUMS:
            self.add_state(name, torch.zeros(classes, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("images", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, probs: torch.Tensor, truth: torch.Tensor) -> None:
        p, t = _pair(probs, truth)
        if p.shape[1] != self.classes:
            raise MetricError(f"expected {self.classes} classes (N, C, H, W), got {tuple(p.shape)}")
        tp, fp, fn, _ = confusion(p, t, self.threshold)
        pd, td = p.double(), t.double()
        inter = (pd * td).sum((0, 2, 3))
        sums = {
            "tp": tp.sum(0),
            "fp": fp.sum(0),
            "fn": fn.sum(0),
            "dice_sum": _dice(tp, fp, fn).sum(0),
            "inter": inter,
            "union": pd.sum((0, 2, 3)) + td.sum((0, 2, 3)) - inter,
            "empty": (~(t.flatten(2) != 0).any(2)).sum(0),
        }
        for name, v in sums.items():
            setattr(self, name, getattr(self, name) + v.double().to(self.device))
        self.images = self.images + p.shape[0]

    def compute(self) -> dict[str, Any]:
        tp, fp, fn, dsum, inter, union, empty = (getattr(self, name).cpu() for name in self.SUMS)
        n = self.images.cpu().clamp(min=1)
        out = {
            "dice": _dice(tp, fp, fn),
            "iou": _iou(tp, fp, fn),
            "kaggle": dsum / n,
            "soft_iou": (inter + EPS) / (union + EPS),
            "empty_kaggle": empty / n,
        }
        res: dict[str, Any] = {k: v.tolist() for k, v in out.items()}
        res.update({f"{k}_mean": float(v.mean()) for k, v in out.items()})
        res["soft_iou_mean"] = float((inter.sum() + EPS) / (union.sum() + EPS))  # as soft_iou()
        res["images"] = int(self.images)  # images counted (each exactly once, DDP included)
        return res
