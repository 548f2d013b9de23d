"""Test-split tables and paired comparisons of runs, for the ablation, evaluation and results pages.

A number is shown with its split, the all-empty baseline and its 95% bootstrap interval; a
difference between two arms is the bootstrap of their per-image scores on the same test images
(``test_scores.csv``).

- **An arm** is a configuration trained with one or more seeds: its runs are the folders whose
  name is the arm's name with a ``__seed<N>`` suffix (``arm_of``; a run without the suffix is an
  arm of its own). Plans vary the seed by writing that suffix (a plan's ``seeds``, which
  ``steelnb.batch.pipeline`` expands, or by hand as ``plans/seeds.yaml``); the name is
  the identity because it is what a plan controls and a reader sees (the config minus ``seed``
  would also merge runs that differ only in a path). A difference of two arms is
  ``stats.seed_bootstrap`` over their seeds and the shared test images; with one seed per arm it
  is the paired image bootstrap, and the table says "single seed".
- **A table is a family**: its comparisons' bootstrap p-values are Holm-adjusted together
  (``adjust``), and the verdict says what was computed ("excludes 0 after Holm adjustment over 7
  comparisons"), never "real".
- **Best is chosen on validation**: ``choose_run`` takes the post-processed validation Kaggle
  metric (``val_tuned_kaggle``, stored in each run's test block by ``evaluation.evaluate_run``),
  averaged over an arm's seeds; the test split then only reports on that choice.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..data.errors import SteelnbError
from ..model.counts import dice_of, truth_empty_of
from ..model.provenance import split_fingerprint
from ..model.runfiles import METRICS_FILE, SCORES_FILE
from ..model.runfolder import RunFolder, RunRecord
from . import stats
from .scoretable import counts_of

#: What makes two runs comparable: the same data, test split and mask size.
COMPARABLE = ("data", "test split", "mask size")
#: The suffix that names a run's training seed within its arm (``arm_of``).
SEED_SUFFIX = re.compile(r"__seed(\d+)$")


#: a table's family and its verdict words live with the bootstrap (evaluation uses them too)
adjust, verdict, family_text, ALPHA = stats.adjust, stats.verdict, stats.family_text, stats.ALPHA


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
        "arm": arm_of(m),
        "seed": m.get("seed"),
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
        "validation Kaggle (tuned)": validation_score(m),
        "starts from": start_of(m),
    }


def test_table(runs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per run (``report.read_metrics`` records), sorted by test Kaggle metric."""
    rows = [test_row(m) for m in runs]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.sort_values("Kaggle", ascending=False, na_position="last").reset_index(drop=True)


def comparable(
    runs: Sequence[Mapping[str, Any]],
    like: Mapping[str, Any] | None = None,
    same_start: bool = False,
) -> tuple[list[Mapping[str, Any]], pd.DataFrame]:
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
            kept.append(m)
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
    scores = m.folder.scores() if isinstance(m, RunRecord) else None
    return None if scores is None else split_fingerprint(scores["ImageId"].unique())


def folder_of(m: Mapping[str, Any]) -> RunFolder:
    """The run folder of a run (a ``RunRecord`` of ``report.read_metrics``); ``ComparisonError``
    for metrics read without their folder."""
    if isinstance(m, RunRecord):
        return m.folder
    raise ComparisonError(
        f"run {m.get('run')!r}: metrics without their run folder; read runs with report.read_metrics"
    )


def folder_name(m: Mapping[str, Any]) -> str:
    """The name of a run's folder (its ``run`` for metrics read without their folder)."""
    return m.folder.name if isinstance(m, RunRecord) else Path(str(m.get("run", ""))).name


def find_run(
    runs: Sequence[Mapping[str, Any]], name: str, where: str | Path = "weights", what: str = ""
) -> Mapping[str, Any]:
    """The run whose folder is named ``name``; a ``ComparisonError`` naming the step or role
    (``what``), the folder searched (``where``) and the runs there when there is none."""
    names = [folder_name(m) for m in runs]
    for m, n in zip(runs, names):
        if n == name:
            return m
    prefix = f"{what}: " if what else ""
    raise ComparisonError(f"{prefix}run {name!r} not found under {where}; runs: {', '.join(names)}")


def find_arm(
    runs: Sequence[Mapping[str, Any]], name: str, where: str | Path = "weights", what: str = ""
) -> list[Mapping[str, Any]]:
    """The runs of one arm, by seed: ``name`` without a ``__seed<N>`` suffix is an arm, every
    seed of it found in ``runs`` (a run folder of that exact name, unseeded, is an arm of one); a
    name with the suffix is that one run. A ``ComparisonError`` as ``find_run``'s when none is found."""
    if SEED_SUFFIX.search(name):
        return [find_run(runs, name, where, what)]
    arm = group_arms([m for m in runs if arm_of(m) == name]).get(name)
    return list(arm) if arm else [find_run(runs, name, where, what)]


def arm_value(arm: Sequence[Mapping[str, Any]], what: str = "kaggle", n_boot: int = 2000) -> dict[str, Any]:
    """The test-split mean of an arm over its seeds with its 95% interval over seeds and images
    (``stats.arm_mean``): ``what`` "kaggle" (every image and class) or "defect_dice" (the pairs
    whose truth is not empty, pooled). {"value", "low", "high", "seeds", "single_seed"}; one seed
    gives the paired image bootstrap's interval of that run."""
    if what not in ("kaggle", "defect_dice"):
        raise ComparisonError(f"what={what!r}: expected 'kaggle' or 'defect_dice'")
    _, dice, truth_empty = arm_scores(arm)
    if what == "defect_dice":
        dice = np.stack([stats.defect_values(d, truth_empty) for d in dice])
    d = stats.arm_mean(dice, n_boot=n_boot, pooled=what == "defect_dice")
    return {
        "value": d["diff"],
        "low": d["low"],
        "high": d["high"],
        "seeds": len(arm),
        "single_seed": len(arm) == 1,
    }


def validation_score(m: Mapping[str, Any]) -> float | None:
    """The post-processed validation Kaggle metric of a run (``test.val_tuned_kaggle``: the score
    its post-processing was tuned to on validation), which chooses the best run; None when the
    run was not evaluated. Not the raw threshold-0.5 ``best.kaggle``: the reported numbers are
    post-processed, so the choice is too."""
    value = (m.get("test") or {}).get("val_tuned_kaggle")
    return None if value is None else float(value)


def arm_of(m: Mapping[str, Any] | str) -> str:
    """The arm of a run (its metrics, or its folder name): the name without a ``__seed<N>`` suffix."""
    name = m if isinstance(m, str) else str(m.get("run") or folder_name(m))
    return SEED_SUFFIX.sub("", name)


def group_arms(runs: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Runs by arm (``arm_of``), arms in the order of their first run, each arm's runs by seed."""
    arms: dict[str, list[Mapping[str, Any]]] = {}
    for m in runs:
        arms.setdefault(arm_of(m), []).append(m)
    return {
        a: sorted(ms, key=lambda m: (m.get("seed") is None, m.get("seed") or 0)) for a, ms in arms.items()
    }


def choose_run(
    runs: Sequence[Mapping[str, Any]], name: str = "", where: str | Path = "weights"
) -> tuple[Mapping[str, Any], pd.DataFrame]:
    """The run to evaluate: the one named ``name`` (its folder name), else, among the comparable
    runs, the arm with the best mean post-processed validation Kaggle metric (``validation_score``)
    over its seeds and of it the seed that scores best there (a selection on validation, never on test).

    Returns (its metrics, the runs left out with the reason). Raises ``ComparisonError`` naming
    ``where`` and the runs when there is none, when ``name`` is not among them, or when the run
    has no best epoch (it failed or stopped before its first validation).
    """
    if not runs:
        raise ComparisonError(f"no training runs ({METRICS_FILE}) under {where}: run 03_train first")
    named = [find_run(runs, name, where)] if name else []
    if named and (named[0].get("best") or {}).get("kaggle") is None:
        raise ComparisonError(
            f"run {name!r} under {where} has no best epoch (it failed or stopped before its first "
            "validation); train it again or name another run"
        )
    kept, left_out = comparable(runs, like=named[0] if named else None)
    kept = [m for m in kept if (m.get("best") or {}).get("kaggle") is not None]
    if named:
        return named[0], left_out
    scored = [m for m in kept if validation_score(m) is not None]
    for m in kept:
        if validation_score(m) is None:
            left_out.loc[len(left_out)] = [m.get("run"), "no post-processed validation score (evaluate it)"]
    if not scored:
        raise ComparisonError(
            f"no evaluated run with a best epoch under {where}; left out:\n{left_out.to_string(index=False)}"
        )
    arms = group_arms(scored)
    best_arm = max(arms.values(), key=lambda ms: float(np.mean([validation_score(m) for m in ms])))
    return max(best_arm, key=validation_score), left_out


def per_image(m: Mapping[str, Any]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(test image ids, Dice (N, C), truth empty (N, C) bool) of a run, from one read of its test_scores.csv."""
    folder = folder_of(m)
    scores = folder.scores()
    if scores is None:
        raise ComparisonError(
            f"{folder.path}: no {SCORES_FILE}; evaluate the run first (evaluation.evaluate_run)"
        )
    ids = sorted(scores["ImageId"].unique())
    counts = counts_of(scores, image_ids=ids)
    return ids, dice_of(counts), truth_empty_of(counts)


def arm_scores(arm: Sequence[Mapping[str, Any]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(test image ids, Dice (S, N, C), truth empty (N, C)) of an arm's S seeds, which must have
    been scored on the same test images."""
    ids, first, truth_empty = per_image(arm[0])
    dice = [first]
    for m in arm[1:]:
        ids_m, d, _ = per_image(m)
        if ids_m != ids:
            raise ComparisonError(
                f"{folder_of(arm[0]).path} and {folder_of(m).path}: seeds of one arm scored on different test images "
                f"({len(ids)} and {len(ids_m)})"
            )
        dice.append(d)
    return ids, np.stack(dice), truth_empty


def paired_arms(
    a: Sequence[Mapping[str, Any]],
    b: Sequence[Mapping[str, Any]] | None,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Arm ``a`` (its seeds' runs) minus arm ``b`` (None: the all-empty prediction) on the test
    images they share: {"kaggle": difference of the Kaggle metric, "defect": of the Dice on the
    pairs whose truth is not empty (None against the all-empty prediction, which scores 0 there),
    "images": N, "seeds": [S_a, S_b]}; each difference as ``stats.seed_bootstrap`` gives it
    (its "p" is what ``adjust`` adjusts)."""
    ids, da, truth_empty = arm_scores(a)
    if b is None:
        db = truth_empty.astype(float)[None]
    else:
        ids_b, db, _ = arm_scores(b)
        if ids != ids_b:
            raise ComparisonError(
                f"{folder_of(a[0]).path} and {folder_of(b[0]).path}: scored on different test images "
                f"({len(ids)} and {len(ids_b)}); not a paired comparison"
            )
    kaggle = stats.seed_bootstrap(da, db, n_boot=n_boot, seed=seed, fixed_b=b is None)
    defect = (
        None
        if b is None
        else stats.seed_bootstrap(
            *(np.stack([stats.defect_values(d, truth_empty) for d in arm]) for arm in (da, db)),
            n_boot=n_boot,
            seed=seed,
            pooled=True,
        )
    )
    return {"kaggle": kaggle, "defect": defect, "images": len(ids), "seeds": kaggle["seeds"]}


def paired(
    a: Mapping[str, Any],
    b: Mapping[str, Any] | None,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Run ``a`` minus run ``b`` (None: the all-empty prediction): ``paired_arms`` of one seed each,
    the paired image bootstrap (``stats.paired_bootstrap``)."""
    return paired_arms([a], None if b is None else [b], n_boot=n_boot, seed=seed)


def seeds_text(diff: Mapping[str, Any], against_rule: bool = False) -> str:
    """How many training seeds a difference rests on: "3 vs 3 seeds", "3 seeds", "single seed"."""
    sa, sb = diff.get("seeds", [1, 1])
    if diff.get("single_seed", True):
        return "single seed"
    return f"{sa} seeds" if against_rule else f"{sa} vs {sb} seeds"


def _diff_columns(prefix: str, diffs: Sequence[Mapping[str, Any] | None]) -> list[dict[str, Any]]:
    """The interval, Holm p and verdict columns of one family of differences (None: "–")."""
    fam = adjust([d for d in diffs if d is not None])
    it = iter(fam)
    out = []
    for d in diffs:
        if d is None:
            out.append(
                {f"{prefix} difference [95% CI]": "–", f"{prefix}: Holm p": np.nan, f"{prefix}: verdict": "–"}
            )
            continue
        d = next(it)
        out.append(
            {
                f"{prefix} difference [95% CI]": stats.format_ci(d["diff"], d["low"], d["high"]),
                f"{prefix}: Holm p": d["p_holm"],
                f"{prefix}: verdict": verdict(d),
            }
        )
    return out


def paired_table(
    runs: Sequence[Mapping[str, Any]],
    against: Mapping[str, Any] | None,
    label: str = "run",
    n_boot: int = 2000,
) -> pd.DataFrame:
    """Each arm of ``runs`` (``group_arms``) against the arm of ``against`` (a run: all the seeds of
    its arm among ``runs``; None: the all-empty prediction): the Kaggle-metric and defect-Dice
    differences with their 95% intervals over seeds and images (``paired_arms``), each column's
    family Holm-adjusted (``adjust``) and its verdict. ``label``: the run field shown (the arm's
    name for "run")."""
    arms = group_arms(runs)
    base = None
    if against is not None:
        base = arms.get(arm_of(against)) or [against]
    rows, kaggle, defect = [], [], []
    for name, arm in arms.items():
        if base is not None and name == arm_of(base[0]):
            continue
        diff = paired_arms(arm, base, n_boot=n_boot)
        kaggle.append(diff["kaggle"])
        defect.append(diff["defect"])
        rows.append(
            {
                label: name if label == "run" else arm[0].get(label),
                "against": "all-empty"
                if base is None
                else (arm_of(base[0]) if label == "run" else base[0].get(label)),
                "training seeds": seeds_text(diff["kaggle"], against_rule=base is None),
                "test images": diff["images"],
            }
        )
    for row, k, d in zip(rows, _diff_columns("Kaggle", kaggle), _diff_columns("defect Dice", defect)):
        row.update(k | d)
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
    (NaN where no image holds it), and the class's Kaggle score over all images with its interval,
    beside predicting nothing's and the paired gain over it (same images). Column ``start`` holds
    the name."""
    rows = []
    for name, scores in scored.items():
        ids = sorted(scores["ImageId"].unique())
        counts = counts_of(scores, image_ids=ids)
        dice, empty = dice_of(counts), truth_empty_of(counts)
        for c in range(dice.shape[1]):
            holds = ~empty[:, c]
            row: dict[str, Any] = {"start": name, "class": c + 1, "images with the class": int(holds.sum())}
            if holds.any():
                est, lo, hi = stats.bootstrap_ci(dice[holds, c], n_boot=n_boot, seed=seed)
                row.update(dice=est, dice_ci95=[lo, hi])
            else:
                row.update(dice=None, dice_ci95=None)
            est, lo, hi = stats.bootstrap_ci(dice[:, c], n_boot=n_boot, seed=seed)
            gain = stats.paired_bootstrap(dice[:, c], empty[:, c].astype(float), n_boot=n_boot, seed=seed)
            row.update(
                kaggle=est,
                kaggle_ci95=[lo, hi],
                all_empty_kaggle=float(empty[:, c].mean()),
                kaggle_gain=gain["diff"],
                kaggle_gain_ci95=[gain["low"], gain["high"]],
            )
            rows.append(row)
    return pd.DataFrame(rows)


def per_class_shown(
    by_class: pd.DataFrame, images: str = "the test images", label: str = "run"
) -> pd.DataFrame:
    """``per_class_table`` as the report shows it: each class's Dice over ``images`` that hold it
    and its Kaggle score, with their intervals as text, beside predicting nothing's score and the
    paired gain over it, the columns named for a reader (the name column called ``label``)."""
    records = by_class.to_dict("records")
    dice = f"Dice over {images} with the class [95% CI]"
    return by_class.assign(
        **{
            dice: [ci_text(r, "dice") for r in records],
            "class Kaggle [95% CI]": [ci_text(r, "kaggle") for r in records],
            "class gain over all-empty [95% CI]": [ci_text(r, "kaggle_gain") for r in records],
        }
    )[
        [
            "start",
            "class",
            "images with the class",
            dice,
            "class Kaggle [95% CI]",
            "all_empty_kaggle",
            "class gain over all-empty [95% CI]",
        ]
    ].rename(columns={"start": label, "all_empty_kaggle": "class Kaggle, all-empty"})


def pairs_table(
    runs: Sequence[Mapping[str, Any]], pairs: Sequence[Sequence[str]], n_boot: int = 2000
) -> pd.DataFrame:
    """Named pairs of arms ``[a, b, label]`` (arm names, ``arm_of``: a run folder name, or one
    without its ``__seed<N>`` suffix), each ``a`` minus ``b`` over their seeds and the test images
    they share (``paired_arms``): the Kaggle-metric and defect-Dice differences with their 95%
    intervals, Holm-adjusted over the pairs compared, and verdicts; the seeds each rests on. A pair
    whose arms are not both among ``runs`` gets a row that says so."""
    arms = group_arms(runs)
    rows, kaggle, defect, compared = [], [], [], []
    for a, b, label in pairs:
        row: dict[str, Any] = {"comparison": label, "run": arm_of(a), "against": arm_of(b)}
        missing = [n for n in (a, b) if arm_of(n) not in arms]
        if missing:
            rows.append(
                row | {"Kaggle difference [95% CI]": f"not compared: {', '.join(missing)} not among the runs"}
            )
            continue
        diff = paired_arms(arms[arm_of(a)], arms[arm_of(b)], n_boot=n_boot)
        kaggle.append(diff["kaggle"])
        defect.append(diff["defect"])
        compared.append(len(rows))
        rows.append(row | {"training seeds": seeds_text(diff["kaggle"]), "test images": diff["images"]})
    for i, k, d in zip(compared, _diff_columns("Kaggle", kaggle), _diff_columns("defect Dice", defect)):
        rows[i].update(k | d)
    return pd.DataFrame(rows)
