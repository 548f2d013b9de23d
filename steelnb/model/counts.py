"""Dice and IoU from pixel counts (numpy only): tp, fp, fn per (image, class).

What the evaluation's bootstrap, the post-processing search and the comparison of runs compute on,
without torch (``steelnb.model.metrics`` re-exports every name, beside its tensor metrics), so
that reading a study's results (``steelnb.judge.comparison``, the report) imports no model code.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def pixel_counts(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Masks (..., C, H, W) -> int64 (..., C, 3): tp, fp, fn pixels per mask pair."""
    p, t = np.asarray(pred).astype(bool), np.asarray(truth).astype(bool)
    tp = (p & t).sum((-2, -1))
    return np.stack([tp, p.sum((-2, -1)) - tp, t.sum((-2, -1)) - tp], -1).astype(np.int64)


def dice_from_counts(tp: Any, fp: Any, fn: Any) -> np.ndarray:
    """Dice element-wise from pixel counts; 1 where prediction and truth are both empty."""
    tp, fp, fn = (np.asarray(a, np.float64) for a in (tp, fp, fn))
    den = 2 * tp + fp + fn
    return np.where(den > 0, 2 * tp / np.maximum(den, 1.0), 1.0)


def iou_from_counts(tp: Any, fp: Any, fn: Any) -> np.ndarray:
    """IoU element-wise from pixel counts; 1 where prediction and truth are both empty."""
    tp, fp, fn = (np.asarray(a, np.float64) for a in (tp, fp, fn))
    den = tp + fp + fn
    return np.where(den > 0, tp / np.maximum(den, 1.0), 1.0)


def dice_of(c: np.ndarray) -> np.ndarray:
    """Dice of each pair from counts (..., 3) of tp, fp, fn."""
    return dice_from_counts(c[..., 0], c[..., 1], c[..., 2])


def truth_empty_of(c: np.ndarray) -> np.ndarray:
    """Whether each pair's truth is empty (no tp, no fn), from counts (..., 3) of tp, fp, fn."""
    return (c[..., 0] + c[..., 2]) == 0
