"""Bootstrap confidence intervals over images for per-image scores.

Scores come as shape (N,) (one score per image) or (N, C) (e.g. Dice of the C classes of each
image). The bootstrap always resamples whole images with replacement, because images, not
(image, class) pairs, are the independent units.

- ``bootstrap_ci``: percentile interval of the mean score. By default an image's score is the
  nanmean of its row, and the estimate weights images equally (mean of per-image means).
  ``pooled=True`` instead takes the nanmean over all entries of the (resampled) rows, so that
  e.g. defect Dice matches the mean over (image, class) pairs.
- ``paired_bootstrap``: two methods on the same images; bootstraps the difference with the
  same resampled images for both.
- ``defect_values`` / ``defect_mean``: Dice restricted to pairs whose truth is not empty.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import SteelnbError

_CHUNK_ELEMENTS = 4_000_000  # bounds memory of the (n_boot, N) index matrix


class StatsError(SteelnbError):
    """Scores or options of the wrong shape or value; names what was expected."""


def _sums(values: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-image (sum, count) of the non-NaN entries, shapes (N,), of (N,) or (N, C) scores."""
    v = np.asarray(values, dtype=float)
    if v.ndim == 1:
        v = v[:, None]
    if v.ndim != 2:
        raise StatsError(f"{name}: expected shape (N,) or (N, C), got {v.shape}")
    ok = ~np.isnan(v)
    return np.where(ok, v, 0.0).sum(axis=1), ok.sum(axis=1).astype(float)


def _weights(s: np.ndarray, c: np.ndarray, pooled: bool) -> tuple[np.ndarray, np.ndarray]:
    """Numerator and denominator per image, so that a replicate is sum(num[i]) / sum(den[i])."""
    if pooled:
        return s, c
    with np.errstate(invalid="ignore", divide="ignore"):
        return s / c, (c > 0).astype(float)


def _check(n: int, n_boot: int, level: float, name: str) -> None:
    if n == 0:
        raise StatsError(f"{name}: expected at least one image with a non-NaN score, got none")
    if n_boot < 1:
        raise StatsError(f"n_boot: expected >= 1, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise StatsError(f"level: expected a value in (0, 1), got {level}")


def _replicates(
    n: int, n_boot: int, seed: int, ratios: list[tuple[np.ndarray, np.ndarray]]
) -> list[np.ndarray]:
    """For each (num, den) pair, shape (N,), the n_boot ratios sum(num[idx]) / sum(den[idx]).

    Every pair sees the same resampled index matrix (n_boot, N), drawn in chunks.
    """
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // n)
    out: list[list[np.ndarray]] = [[] for _ in ratios]
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        for k, (num, den) in enumerate(ratios):
            out[k].append(num[idx].sum(axis=1) / den[idx].sum(axis=1))
    return [np.concatenate(o) for o in out]


def _interval(reps: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(reps, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_ci(
    values: Any, n_boot: int = 2000, level: float = 0.95, seed: int = 0, pooled: bool = False
) -> tuple[float, float, float]:
    """Mean score over images with its percentile-bootstrap interval (images resampled).

    values: (N,) or (N, C) scores; NaN entries are ignored, an all-NaN row drops the image.
    pooled=False: estimate = mean over images of each row's nanmean (images weigh equally).
    pooled=True: estimate = nanmean over all entries, each replicate the nanmean of the
    resampled rows' entries (pairs weigh equally). Identical for (N,) input.
    Returns (estimate, low, high); (v, v, v) for a single image.
    """
    s, c = _sums(values, "values")
    keep = c > 0
    num, den = _weights(s[keep], c[keep], pooled)
    n = int(keep.sum())
    _check(n, n_boot, level, "values")
    est = float(num.sum() / den.sum())
    if n == 1:
        return est, est, est
    (reps,) = _replicates(n, n_boot, seed, [(num, den)])
    low, high = _interval(reps, level)
    return est, low, high


def paired_bootstrap(
    a: Any, b: Any, n_boot: int = 2000, level: float = 0.95, seed: int = 0, pooled: bool = False
) -> dict[str, Any]:
    """Paired bootstrap of mean(a) - mean(b), two methods scored on the same images in order.

    a, b: (N,) or (N, C) scores of the same shape; an image is dropped when its row is all NaN
    in a or in b. Both means use the same resampled images; ``pooled`` as in ``bootstrap_ci``.
    Returns {"diff", "low", "high", "real" (interval excludes 0), "n" (images used)}.
    """
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_arr.shape != b_arr.shape:
        raise StatsError(
            f"a and b: expected the same shape (same images, same order), "
            f"got a {a_arr.shape} and b {b_arr.shape}"
        )
    sa, ca = _sums(a_arr, "a")
    sb, cb = _sums(b_arr, "b")
    keep = (ca > 0) & (cb > 0)
    na, da = _weights(sa[keep], ca[keep], pooled)
    nb, db = _weights(sb[keep], cb[keep], pooled)
    n = int(keep.sum())
    _check(n, n_boot, level, "a and b")
    diff = float(na.sum() / da.sum() - nb.sum() / db.sum())
    if n == 1:
        low = high = diff
    else:
        ra, rb = _replicates(n, n_boot, seed, [(na, da), (nb, db)])
        low, high = _interval(ra - rb, level)
    return {"diff": diff, "low": low, "high": high, "real": bool(low > 0 or high < 0), "n": n}


def format_ci(est: float, low: float, high: float, digits: int = 3) -> str:
    """Estimate and interval as text, e.g. "0.812 [0.790, 0.833]"."""
    return f"{est:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def defect_values(dice: Any, truth_empty: Any) -> np.ndarray:
    """Dice (N, C) with the pairs whose truth is empty set to NaN (float copy, shape (N, C)).

    ``bootstrap_ci(defect_values(d, e))`` bootstraps images for the defect Dice; images with
    no defect drop out. Its default estimate weights each defective image equally (mean of
    per-image means), which differs slightly from the mean over pairs (``defect_mean``);
    ``pooled=True`` gives exactly the mean over pairs.
    """
    d = np.asarray(dice, dtype=float)
    e = np.asarray(truth_empty)
    if d.ndim != 2 or d.shape != e.shape or e.dtype != bool:
        raise StatsError(
            f"dice and truth_empty: expected shape (N, C) each, truth_empty bool, "
            f"got dice {d.shape} and truth_empty {e.shape} {e.dtype}"
        )
    return np.where(e, np.nan, d)


def defect_mean(dice: Any, truth_empty: Any) -> float:
    """Mean Dice over the (image, class) pairs of (N, C) whose truth is not empty; NaN if none."""
    v = defect_values(dice, truth_empty)
    ok = ~np.isnan(v)
    return float(v[ok].mean()) if ok.any() else float("nan")
