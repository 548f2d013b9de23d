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
- ``seed_bootstrap``: two arms with several training seeds each, scored on the same images: the
  two-level bootstrap of the difference (seeds within each arm and images, crossed); one seed
  per arm is ``paired_bootstrap`` exactly, and the result says it is single-seed.
- ``bootstrap_p`` / ``holm``: a two-sided bootstrap p-value of a difference from its replicates,
  and the Holm adjustment of a table's family of them.
- ``adjust`` / ``verdict``: a table's family of differences Holm-adjusted, and the words that say
  what was computed ("gain: excludes 0 after Holm adjustment over 7 comparisons; single seed").
- ``defect_values`` / ``defect_mean``: Dice restricted to pairs whose truth is not empty.
- ``pooled_ci``: a statistic of the resampled images taken together (e.g. Dice of pixel counts
  summed over images), with its percentile interval.

Why not ``scipy.stats.bootstrap``: it resamples one observation axis (jointly across samples with
``paired=True``), which is the image bootstrap, but not two crossed factors (seeds drawn per arm,
images drawn once for both arms) as ``seed_bootstrap`` needs; and the ratio-of-sums estimates of
``pooled`` and one shared index matrix for several statistics (so that a difference's two means see
the same images) are cheaper by hand than as a vectorised scipy statistic. The percentile
interval here is scipy's ``method="percentile"``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..data.errors import SteelnbError

#: The family-wise level of the Holm-adjusted verdicts (``verdict``).
ALPHA = 0.05
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


def pooled_ci(
    values: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray], n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """A statistic of whole samples of images with its 95% percentile-bootstrap interval.

    ``values``: (N, ...) per image (e.g. pixel counts (N, C, 3)); ``statistic`` maps a stack of
    samples (B, N, ...) to (B,) (e.g. the class-mean Dice of the counts summed over the images).
    Images are resampled 100 samples at a time, ``max(1, n_boot // 100)`` times. Returns
    (the statistic of all images, low, high).
    """
    rng = np.random.default_rng(seed)
    n = len(values)
    reps = np.concatenate(
        [statistic(values[rng.integers(0, n, (100, n))]) for _ in range(max(1, n_boot // 100))]
    )
    low, high = np.quantile(reps, [0.025, 0.975])
    return float(statistic(values[None])[0]), float(low), float(high)


def paired_bootstrap(
    a: Any, b: Any, n_boot: int = 2000, level: float = 0.95, seed: int = 0, pooled: bool = False
) -> dict[str, Any]:
    """Paired bootstrap of mean(a) - mean(b), two methods scored on the same images in order.

    a, b: (N,) or (N, C) scores of the same shape; an image is dropped when its row is all NaN
    in a or in b. Both means use the same resampled images; ``pooled`` as in ``bootstrap_ci``.
    Returns {"diff", "low", "high", "real" (interval excludes 0), "n" (images used), "p" (two-sided
    bootstrap p-value, ``bootstrap_p``; 1.0 for a single image)}.
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
        p = 1.0
    else:
        ra, rb = _replicates(n, n_boot, seed, [(na, da), (nb, db)])
        low, high = _interval(ra - rb, level)
        p = bootstrap_p(ra - rb)
    return {"diff": diff, "low": low, "high": high, "real": bool(low > 0 or high < 0), "n": n, "p": p}


def bootstrap_p(replicates: Any) -> float:
    """Two-sided bootstrap p-value of "the difference is 0" from its replicates (B,).

    Twice the smaller share of replicates on either side of 0, each share counted as
    (1 + k) / (B + 1) so that it is never 0, capped at 1. It inverts the percentile interval: the
    (1 - alpha) interval excludes 0 where p is below alpha (up to the replicates' resolution, 2 / (B + 1)).
    """
    r = np.asarray(replicates, dtype=float)
    if r.ndim != 1 or len(r) == 0:
        raise StatsError(f"replicates: expected shape (B,) with B >= 1, got {r.shape}")
    below, above = (1 + np.sum(r <= 0)) / (len(r) + 1), (1 + np.sum(r >= 0)) / (len(r) + 1)
    return float(min(1.0, 2.0 * min(below, above)))


def holm(pvalues: Any, alpha: float = 0.05) -> np.ndarray:
    """Holm-adjusted p-values (k,) of a family of k comparisons.

    Holm controls the family-wise error rate at ``alpha`` under any dependence between the
    comparisons (a table's rows share an arm, or the test images, so they are dependent) and rejects
    at least what Bonferroni does. Chosen over simultaneous max-statistic intervals because a
    table's rows come from separate bootstraps (each pair its own images and seeds) rather than one
    replicate matrix; the intervals shown stay the unadjusted 95% ones, and the verdict reads the
    adjusted p-value. An empty family gives an empty array. ``alpha`` is the level the verdicts
    read the adjusted values at; the adjustment itself does not depend on it.

    The step-down is computed here rather than by statsmodels' ``multipletests(method="holm")``,
    which the tests check it equals: that function runs a full ``gc.collect()`` on every call,
    0.1-0.8 s in a process that holds torch and a notebook's objects, for each table of a report.
    """
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1 or np.isnan(p).any() or ((p < 0) | (p > 1)).any():
        raise StatsError(f"pvalues: expected shape (k,) of values in [0, 1], got {p!r}")
    if not 0 < alpha < 1:
        raise StatsError(f"alpha: expected a level in (0, 1), got {alpha!r}")
    order = np.argsort(p, kind="stable")
    k = len(p)
    # the i-th smallest p-value times the k - i comparisons left, never below an earlier one, capped at 1
    stepped = np.minimum(1.0, np.maximum.accumulate((k - np.arange(k)) * p[order]))
    adjusted = np.empty(k)
    adjusted[order] = stepped
    return adjusted


def _arm(values: Any, name: str) -> np.ndarray:
    """Scores of one arm as (S, N, C) floats: (N,) is one seed of (N, 1), (S, N) S seeds of (N, 1)."""
    v = np.asarray(values, dtype=float)
    if v.ndim == 1:
        v = v[None, :, None]
    elif v.ndim == 2:
        v = v[:, :, None]
    if v.ndim != 3 or v.shape[0] == 0:
        raise StatsError(f"{name}: expected shape (N,), (S, N) or (S, N, C) with S >= 1, got {v.shape}")
    return v


def seed_bootstrap(
    a: Any,
    b: Any,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    pooled: bool = False,
    fixed_b: bool = False,
) -> dict[str, Any]:
    """Two-level bootstrap of mean(a) - mean(b): S_a and S_b training seeds of two arms, every seed
    scored on the same N images in the same order.

    a: (S_a, N) or (S_a, N, C); b: (S_b, N) or (S_b, N, C); (N,) is one seed. An arm's mean is the
    mean over its seeds of each seed's mean over images (``pooled`` as in ``bootstrap_ci``). An image
    is dropped when its row is all NaN for any seed of either arm. ``fixed_b``: b is no trained arm
    but a fixed rule (the all-empty prediction, one row): it has no seed to lack.

    The scheme: a finding must hold for another draw of the training (seed) and of the images, and
    here the two factors are crossed (every seed scores every image), so a replicate draws both, as
    the bootstrap of a crossed design does (Owen 2007, "the pigeonhole bootstrap"): the N images once
    with replacement, shared by both arms (the pairing that removes the images' common difficulty),
    and independently S_a seeds of arm a and S_b of arm b with replacement (the seeds of two arms are
    unrelated draws of the training). The replicate is the difference of the two resampled means.
    Resampling both factors counts their interaction in both, so the interval leans conservative;
    with three seeds the seed level's bootstrap variance is (S - 1) / S of the usual estimate, which
    leans the other way: read an interval from three seeds as approximate. With one seed per arm the
    seed draw is the identity and the result is ``paired_bootstrap``'s (same replicates).

    Returns {"diff", "low", "high", "real", "n" (images), "p" (``bootstrap_p``), "seeds" ([S_a, S_b]),
    "single_seed" (an arm has one seed: the interval covers the images, not the training)}.
    """
    va, vb = _arm(a, "a"), _arm(b, "b")
    if va.shape[1:] != vb.shape[1:]:
        raise StatsError(
            f"a and b: expected the same images and classes (N, C), got a {va.shape} and b {vb.shape}"
        )
    seeds = [int(va.shape[0]), int(vb.shape[0])]
    if seeds == [1, 1]:
        out = paired_bootstrap(va[0], vb[0], n_boot=n_boot, level=level, seed=seed, pooled=pooled)
        return out | {"seeds": seeds, "single_seed": True}
    single = seeds[0] == 1 or (seeds[1] == 1 and not fixed_b)
    ratios, n = _common_images(va, vb, n_boot, level, pooled)
    means = np.array([num.sum() / den.sum() for num, den in ratios])
    diff = float(means[: seeds[0]].mean() - means[seeds[0] :].mean())
    reps = _crossed_replicates(ratios, seeds, n, n_boot, seed)
    low, high = _interval(reps, level)
    found = {"diff": diff, "low": low, "high": high, "real": bool(low > 0 or high < 0), "n": n}
    return found | {"p": bootstrap_p(reps), "seeds": seeds, "single_seed": single}


def arm_mean(
    values: Any, n_boot: int = 2000, level: float = 0.95, seed: int = 0, pooled: bool = False
) -> dict[str, Any]:
    """The mean of one arm, (S, N) or (S, N, C) scores of S seeds on the same N images, with its
    interval over seeds and images: ``seed_bootstrap`` of the arm against a zero arm of the same
    NaN pattern, so the difference is the arm's own mean (``diff``, ``low``, ``high``, ...)."""
    v = _arm(values, "values")
    zero = np.where(np.isnan(v[:1]), np.nan, 0.0)
    return seed_bootstrap(v, zero, n_boot=n_boot, level=level, seed=seed, pooled=pooled, fixed_b=True)


def _common_images(
    va: np.ndarray, vb: np.ndarray, n_boot: int, level: float, pooled: bool
) -> tuple[list[tuple[np.ndarray, np.ndarray]], int]:
    """Both arms' seeds (S, N, C) -> ((num, den) per image of each seed, a's seeds first, as
    ``_weights``; the number of images): the images every seed scored (a row all NaN for any seed
    of either arm drops the image)."""
    parts = [_sums(v, name) for v, name in [*((x, "a") for x in va), *((x, "b") for x in vb)]]
    keep = np.logical_and.reduce([c > 0 for _, c in parts])
    n = int(keep.sum())
    _check(n, n_boot, level, "a and b")
    return [_weights(s[keep], c[keep], pooled) for s, c in parts], n


def _crossed_replicates(
    ratios: Sequence[tuple[np.ndarray, np.ndarray]], seeds: Sequence[int], n: int, n_boot: int, seed: int
) -> np.ndarray:
    """The crossed bootstrap's replicates (B,) of mean(a) - mean(b): the ``n`` images drawn once
    for every seed (``_replicates``, stream ``default_rng(seed)``), then S_a seeds of a and S_b of
    b drawn with replacement (stream ``default_rng([seed, 1])``)."""
    rng = np.random.default_rng([seed, 1])  # a stream apart from the images' (default_rng(seed))
    per_seed = np.stack(_replicates(n, n_boot, seed, list(ratios)))  # (S_a + S_b, B): images drawn once
    pick_a = rng.integers(0, seeds[0], size=(n_boot, seeds[0]))
    pick_b = seeds[0] + rng.integers(0, seeds[1], size=(n_boot, seeds[1]))
    cols = np.arange(n_boot)[:, None]
    return per_seed[pick_a, cols].mean(axis=1) - per_seed[pick_b, cols].mean(axis=1)


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


def adjust(diffs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A table's family of differences (``stats`` results with "p"), each with "p_holm" (Holm over
    the family, ``holm``) and "family" (its size) added, for ``verdict``."""
    p_holm = holm([d["p"] for d in diffs])
    return [dict(d, p_holm=float(p), family=len(diffs)) for d, p in zip(diffs, p_holm)]


def family_text(k: int) -> str:
    """How a family of ``k`` comparisons was adjusted, in words ("after Holm adjustment over 7
    comparisons"; one comparison: "(one comparison, unadjusted)")."""
    return f"after Holm adjustment over {k} comparisons" if k > 1 else "(one comparison, unadjusted)"


def verdict(diff: Mapping[str, Any]) -> str:
    """What was computed, in words: whether the difference's p-value, Holm-adjusted over its
    family when ``adjust`` added one, lies below ``ALPHA``, and on how many seeds it rests, e.g.
    "gain: excludes 0 after Holm adjustment over 7 comparisons; single seed". Without a family
    (one comparison) the unadjusted 95% interval decides."""
    k = int(diff.get("family", 1))
    excludes = diff["p_holm"] < ALPHA if k > 1 else bool(diff["low"] > 0 or diff["high"] < 0)
    how = family_text(k)
    words = (f"{'gain' if diff['diff'] > 0 else 'loss'}: excludes 0 " if excludes else "includes 0 ") + how
    return words + ("; single seed" if diff.get("single_seed", True) else "")
