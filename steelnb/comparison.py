"""Test-split tables and paired comparisons of runs, for the ablation, evaluation and results pages.

A number is shown with its split, the all-empty baseline and its 95% bootstrap interval; a
difference between two runs is the paired bootstrap of their per-image scores on the same test
images (``test_scores.csv``), and it is called real only when its interval excludes zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import stats
from .errors import SteelnbError
from .evaluation import counts_of, read_scores
from .metrics import dice_of
from .provenance import split_fingerprint

#: What makes two runs comparable: the same data, test split and mask size.
COMPARABLE = ("data", "test split", "mask size")


class ComparisonError(SteelnbError):
    """Runs that cannot be compared (not evaluated, or scored on other images); names them."""


def ci_text(block: Mapping[str, Any] | pd.Series | None, key: str) -> str:
    """``block[key]`` with its interval ``block[key + "_ci95"]`` as "v [low, high]" ("–" when absent)."""
    if block is None or len(block) == 0 or block.get(key) is None:
        return "–"
    value, interval = block.get(key), block.get(f"{key}_ci95")
    if isinstance(value, float) and np.isnan(value):
        return "–"
    if not isinstance(interval, (list, tuple, np.ndarray)) or len(interval) != 2:
        return f"{value:.3f}"
    return stats.format_ci(value, interval[0], interval[1])


def test_row(m: Mapping[str, Any]) -> dict[str, Any]:
    """One run's test-split numbers: values (for sorting/plots) and "v [low, high]" strings."""
    t, d = m.get("test") or {}, m.get("data") or {}
    return {
        "run": m.get("run"),
        "encoder": m.get("encoder"),
        "loss": m.get("loss"),
        "mask size": f"{m.get('height')}x{m.get('width')}",
        "data": d.get("kind", "?"),
        "split": t.get("split", "not evaluated"),
        "train / val / test images": f"{d.get('n_train', '?')} / {d.get('n_val', '?')} / {d.get('n_test', '?')}",
        "n_test": d.get("n_test"),
        "clean test images": d.get("clean_test"),
        "Kaggle": t.get("kaggle", np.nan),
        "Kaggle [95% CI]": ci_text(t, "kaggle"),
        "Kaggle low": (t.get("kaggle_ci95") or [np.nan])[0],
        "Kaggle high": (t.get("kaggle_ci95") or [np.nan, np.nan])[1],
        "all-empty": t.get("all_empty_kaggle", np.nan),
        "gain over all-empty [95% CI]": ci_text(t, "kaggle_gain"),
        "gain real": bool(t.get("gain_real", False)),
        "defect Dice": t.get("defect_dice", np.nan),
        "defect Dice [95% CI]": ci_text(t, "defect_dice"),
        "Dice [95% CI]": ci_text(t, "dice"),
        "IoU [95% CI]": ci_text(t, "iou"),
        "epochs": m.get("epochs_run"),
        "best epoch": m.get("best_epoch"),
        "starts from": start_of(m),
        "_path": m.get("_path"),
    }


def test_table(runs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per run (``report.read_metrics`` dicts), sorted by test Kaggle metric."""
    rows = [test_row(m) for m in runs]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.sort_values("Kaggle", ascending=False, na_position="last").reset_index(drop=True)


def comparable(
    runs: Sequence[Mapping[str, Any]],
    like: Mapping[str, Any] | None = None,
    same_start: bool = False,
) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """The evaluated runs comparable with ``like`` (default: the largest evaluated group).

    Returns (kept runs, a table of the left-out runs with the reason). Runs are comparable when
    they share data kind and folder, test split (the same test images: ``test_split``) and mask
    size, and with ``same_start`` (an ablation) the run they started from (``init_from``, none
    for runs from scratch); a run without a test block (not evaluated, or failed before its first
    epoch) is left out with that reason.
    """

    def key(m: Mapping[str, Any]) -> tuple:
        """(what is judged: data, test split, size; the start, with ``same_start``, else None)."""
        d = m.get("data") or {}
        judged = (d.get("kind"), d.get("dir"), test_split(m), m.get("height"), m.get("width"))
        return judged, start_of(m) if same_start else None

    # each evaluated run's key once: an older run's split is read from its test_scores.csv
    keys = {id(m): key(m) for m in runs if (m.get("test") or {}).get("kaggle") is not None}
    if like is None and keys:
        counts = list(keys.values())
        like_key = max(set(counts), key=lambda k: (counts.count(k), str(k)))
    else:
        like_key = key(like) if like is not None else None
    kept, left = [], []
    for m in runs:
        k = keys.get(id(m))
        if k is None:
            left.append(
                (m.get("run"), "no test-split evaluation (not evaluated, or failed before its first epoch)")
            )
        elif k != like_key:
            d = m.get("data") or {}
            left.append(
                (
                    m.get("run"),
                    f"other data, test split or size: {d.get('kind')} {Path(str(d.get('dir'))).name}, "
                    f"{d.get('n_test')} test images (split {k[0][2]}), {m.get('height')}x{m.get('width')}"
                    if k[0] != like_key[0]
                    else f"another start: {_start(k[1])}, the others {_start(like_key[1])}",
                )
            )
        else:
            kept.append(dict(m))
    return kept, pd.DataFrame(left, columns=["run", "left out because"])


def start_name(init_from: str | None) -> str:
    """The folder name of the run a fine-tune started from (``init_from``); "" from scratch."""
    return Path(str(init_from)).name if init_from else ""


def start_of(m: Mapping[str, Any]) -> str:
    """What a run's weights started from: the run it fine-tuned (``init_from``), else its encoder
    weights ("imagenet", or a weights file as ``<folder>/<file>``, e.g. a classification stage's
    ``last.ckpt``); "" from scratch."""
    if m.get("init_from"):
        return start_name(m["init_from"])
    weights = m.get("encoder_weights")
    if not weights:
        return ""
    path = Path(str(weights))
    return f"{path.parent.name}/{path.name}" if path.suffix else str(weights)


def _start(start: str) -> str:
    return f"from {start}" if start else "from scratch"


def test_split(m: Mapping[str, Any]) -> str | None:
    """The fingerprint of the test images a run was judged on (``provenance.split_fingerprint``):
    from its data block, or for a run recorded before it was kept there, from its test_scores.csv."""
    recorded = (m.get("data") or {}).get("test_split")
    if recorded:
        return recorded
    scores = read_scores(m["_path"]) if m.get("_path") else None
    return None if scores is None else split_fingerprint(scores["ImageId"].unique())


def find_run(
    runs: Sequence[Mapping[str, Any]], name: str, where: str | Path = "weights", what: str = ""
) -> dict[str, Any]:
    """The run whose folder is named ``name``; a ``ComparisonError`` naming the step or role
    (``what``), the folder searched (``where``) and the runs there when there is none."""
    names = [Path(str(m.get("_path", m.get("run", "")))).name for m in runs]
    for m, n in zip(runs, names):
        if n == name:
            return dict(m)
    prefix = f"{what}: " if what else ""
    raise ComparisonError(f"{prefix}run {name!r} not found under {where}; runs: {', '.join(names)}")


def choose_run(
    runs: Sequence[Mapping[str, Any]], name: str = "", where: str | Path = "weights"
) -> tuple[dict[str, Any], pd.DataFrame]:
    """The run to evaluate: the one named ``name`` (its folder name), else the comparable run with
    the best validation Kaggle metric (a selection on validation, never on test).

    Returns (its metrics, the runs left out with the reason). Raises ``ComparisonError`` naming
    ``where`` and the runs when there is none, when ``name`` is not among them, or when the run
    has no best epoch (it failed or stopped before its first validation).
    """
    if not runs:
        raise ComparisonError(f"no training runs (metrics.json) under {where}: run 03_train first")
    named = [find_run(runs, name, where)] if name else []
    if named and (named[0].get("best") or {}).get("kaggle") is None:
        raise ComparisonError(
            f"run {name!r} under {where} has no best epoch (it failed or stopped before its first "
            "validation); train it again or name another run"
        )
    kept, left_out = comparable(runs, like=named[0] if named else None)
    kept = [m for m in kept if (m.get("best") or {}).get("kaggle") is not None]
    if named:
        return dict(named[0]), left_out
    if not kept:
        raise ComparisonError(
            f"no evaluated run with a best epoch under {where}; left out:\n{left_out.to_string(index=False)}"
        )
    return dict(max(kept, key=lambda m: m["best"]["kaggle"])), left_out


def per_image(m: Mapping[str, Any]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(test image ids, Dice (N, C), truth empty (N, C) bool) of a run, from one read of its test_scores.csv."""
    scores = read_scores(m["_path"])
    if scores is None:
        raise ComparisonError(
            f"{m['_path']}: no test_scores.csv; evaluate the run first (evaluation.evaluate_run)"
        )
    ids = sorted(scores["ImageId"].unique())
    counts = counts_of(scores, image_ids=ids)
    return ids, dice_of(counts), (counts[..., 0] + counts[..., 2]) == 0


def paired(
    a: Mapping[str, Any],
    b: Mapping[str, Any] | None,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired bootstrap of run ``a`` minus run ``b`` (None: the all-empty prediction) on the test
    images they share: {"kaggle": difference of the Kaggle metric, "defect": of the Dice on the
    pairs whose truth is not empty (None against the all-empty prediction, which scores 0 there),
    "images": N}; each difference as ``stats.paired_bootstrap`` gives it."""
    ids, da, truth_empty = per_image(a)
    if b is None:
        db = truth_empty.astype(float)
    else:
        ids_b, db, _ = per_image(b)
        if ids != ids_b:
            raise ComparisonError(
                f"{a['_path']} and {b['_path']}: scored on different test images "
                f"({len(ids)} and {len(ids_b)}); not a paired comparison"
            )
    kaggle = stats.paired_bootstrap(da, db, n_boot=n_boot, seed=seed)
    defect = (
        None
        if b is None
        else stats.paired_bootstrap(
            stats.defect_values(da, truth_empty),
            stats.defect_values(db, truth_empty),
            n_boot=n_boot,
            seed=seed,
            pooled=True,
        )
    )
    return {"kaggle": kaggle, "defect": defect, "images": len(ids)}


def verdict(diff: Mapping[str, Any]) -> str:
    """ "real gain" / "real loss" when the paired interval lies above / below zero, else noise."""
    if diff["low"] > 0:
        return "real gain"
    return "real loss" if diff["high"] < 0 else "not separable from noise"


def paired_table(
    runs: Sequence[Mapping[str, Any]],
    against: Mapping[str, Any] | None,
    label: str = "run",
    n_boot: int = 2000,
) -> pd.DataFrame:
    """Each run against ``against`` (a run, or None for the all-empty prediction): the Kaggle-metric
    and defect-Dice differences with their paired 95% intervals, and whether each is real."""
    rows = []
    for m in runs:
        if against is not None and m.get("_path") == against.get("_path"):
            continue
        diff = paired(m, against, n_boot=n_boot)
        k, d = diff["kaggle"], diff["defect"]
        rows.append(
            {
                label: m.get(label),
                "against": "all-empty" if against is None else against.get(label),
                "Kaggle difference [95% CI]": stats.format_ci(k["diff"], k["low"], k["high"]),
                "Kaggle: real?": verdict(k),
                "defect Dice difference [95% CI]": stats.format_ci(d["diff"], d["low"], d["high"])
                if d
                else "–",
                "defect Dice: real?": verdict(d) if d else "–",
                "test images": diff["images"],
            }
        )
    return pd.DataFrame(rows)


def plot_test(table: pd.DataFrame, width_in: float = 10.0) -> Figure:
    """Test Kaggle metric of each run (``test_table``) with its 95% interval, and each run's
    all-empty baseline as a grey tick."""
    rows = table.dropna(subset=["Kaggle"])
    fig = Figure(figsize=(width_in, 0.45 * max(len(rows), 1) + 1.2))
    ax = fig.subplots()
    y = np.arange(len(rows))
    low = rows["Kaggle"].to_numpy() - rows["Kaggle low"].to_numpy()
    high = rows["Kaggle high"].to_numpy() - rows["Kaggle"].to_numpy()
    ax.errorbar(rows["Kaggle"], y, xerr=[low, high], fmt="o", capsize=3, label="Kaggle metric (95% CI)")
    ax.scatter(rows["all-empty"], y, marker="|", s=300, color="grey", label="all-empty prediction")
    ax.set_yticks(y, rows["run"].astype(str))
    ax.invert_yaxis()
    ax.set_xlabel("Kaggle metric on the held-out test split")
    ax.legend(frameon=False, loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def per_class_table(scored: Mapping[str, pd.DataFrame], n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per scores table (a run's ``test_scores.csv``, or out-of-fold scores, by name) and class: the
    images holding the class, the Dice over them with its 95% bootstrap interval over those images
    (NaN where no image holds it), and the class's Kaggle score over all images beside predicting
    nothing's. Column ``start`` holds the name."""
    rows = []
    for name, scores in scored.items():
        ids = sorted(scores["ImageId"].unique())
        counts = counts_of(scores, image_ids=ids)
        dice, empty = dice_of(counts), (counts[..., 0] + counts[..., 2]) == 0
        for c in range(dice.shape[1]):
            holds = ~empty[:, c]
            row: dict[str, Any] = {"start": name, "class": c + 1, "images with the class": int(holds.sum())}
            if holds.any():
                est, lo, hi = stats.bootstrap_ci(dice[holds, c], n_boot=n_boot, seed=seed)
                row.update(dice=est, dice_ci95=[lo, hi])
            else:
                row.update(dice=None, dice_ci95=None)
            row.update(kaggle=float(dice[:, c].mean()), all_empty_kaggle=float(empty[:, c].mean()))
            rows.append(row)
    return pd.DataFrame(rows)


def pairs_table(
    runs: Sequence[Mapping[str, Any]], pairs: Sequence[Sequence[str]], n_boot: int = 2000
) -> pd.DataFrame:
    """Named pairs of runs ``[a, b, label]`` (run folder names), each ``a`` minus ``b`` on the test
    images they share (``paired``): the Kaggle-metric and defect-Dice differences with their
    paired 95% intervals and verdicts. A pair whose runs are not both among ``runs`` gets a row
    that says so. Each pair is one training seed of each arm: the interval covers images only."""
    by_name = {m.get("run"): m for m in runs}
    rows = []
    for a, b, label in pairs:
        row: dict[str, Any] = {"comparison": label, "run": a, "against": b}
        if a not in by_name or b not in by_name:
            missing = ", ".join(n for n in (a, b) if n not in by_name)
            rows.append(row | {"Kaggle difference [95% CI]": f"not compared: {missing} not among the runs"})
            continue
        diff = paired(by_name[a], by_name[b], n_boot=n_boot)
        k, d = diff["kaggle"], diff["defect"]
        rows.append(
            row
            | {
                "Kaggle difference [95% CI]": stats.format_ci(k["diff"], k["low"], k["high"]),
                "Kaggle: verdict": verdict(k),
                "defect Dice difference [95% CI]": stats.format_ci(d["diff"], d["low"], d["high"]),
                "test images": diff["images"],
                "training seeds": "one per arm",
            }
        )
    return pd.DataFrame(rows)
