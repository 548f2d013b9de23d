"""The Kaggle winners' recipe as measured steps of the study.

A step is a configuration (a run, a run with its classifier gate, an ensemble of runs, a run
retrained with pseudo-labels or with per-class BCE weights) scored on the held-out test split,
and the step it builds on. ``step_table`` gives one row per step: the test Kaggle metric and
defect Dice with their 95% intervals, the paired bootstrap of the Kaggle metric against the step
it builds on (on the same test images), its Holm-adjusted p-value over the table's steps (one
family) and a verdict that says what was computed (``stats.verdict``: each step is one training
seed, so it says "single seed"), and the inference speed of the configuration (``throughput``, measured side by side on one
machine). Steps are read from the run folders' ``metrics.json`` and ``test_scores.csv``; an
ensemble's come from ``evaluation.evaluate_ensemble``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..data.errors import SteelnbError
from ..judge import comparison
from ..judge import postprocess as pp
from ..judge.ensemble import load_ensemble
from ..judge.stats import format_ci


class RecipeError(SteelnbError):
    """A recipe step that cannot be measured (not evaluated, or on other test images); names it."""


@dataclass
class Step:
    """One row of the recipe: ``metrics`` of its configuration (a run's ``runfolder.RunRecord``, or
    an ensemble's), the name of the step it is measured against (None: predicting nothing) and
    the run folders that predict with it (one, or an ensemble's members)."""

    name: str
    metrics: Mapping[str, Any]
    against: str | None = None
    weights: Sequence[str | Path] = field(default_factory=list)
    note: str = ""


COLUMNS = [
    "step",
    "run",
    "Kaggle [95% CI]",
    "all-empty",
    "defect Dice [95% CI]",
    "against",
    "gain [95% CI]",
    "Holm p",
    "verdict",
    "images/s",
    "note",
]


#: the steps a study may add to its single run, in the table's order: (step, the 08_recipe
#: parameter naming its run, note). The ensemble (``build_steps``' ``ensemble``) comes after the
#: steps that change how one run is trained or gated and before those that retrain it on more data
RUN_STEPS = (
    ("classifier gate", "gate_run", "head trained jointly; gate tuned on validation"),
    ("whole resized images (no crops)", "resize_run", "the same budget on resized sheets"),
    (None, "ensemble", "probabilities averaged"),
    ("pseudo-labels", "pseudo_run", "unlabelled test images at a fixed share of each batch"),
    ("per-class BCE pos_weight", "pos_weight_run", "defect pixels weighted per class"),
)


def build_steps(
    base: Mapping[str, Any],
    runs: Sequence[Mapping[str, Any]],
    step_runs: Mapping[str, str],
    ensemble: Mapping[str, Any] | None = None,
    members: Sequence[str | Path] = (),
    where: str | Path = "weights",
) -> list[Step]:
    """The recipe's steps in ``RUN_STEPS`` order: the single run ``base`` (a ``RunRecord``),
    then each step whose run ``step_runs`` names (parameter -> run folder name, "" for none; found
    in ``runs``, else a ``ComparisonError`` naming the step and ``where``) and the ensemble of
    ``members`` when its metrics ``ensemble`` are given; each measured against the single run."""
    first = comparison.folder_of(base).path
    steps = [Step("single run", base, weights=[first], note="crops, TTA and tuned post-processing")]
    for step, parameter, note in RUN_STEPS:
        if step is None:
            if ensemble is not None:
                steps.append(
                    Step(
                        f"ensemble of {len(members)}",
                        ensemble,
                        "single run",
                        weights=list(members),
                        note=note,
                    )
                )
        elif step_runs.get(parameter):
            m = comparison.find_run(runs, step_runs[parameter], where, step)
            steps.append(
                Step(step, m, against="single run", weights=[comparison.folder_of(m).path], note=note)
            )
    return steps


def _gain(step: Step, by_name: Mapping[str, Step], n_boot: int, seed: int) -> tuple[str, str, Any]:
    """(against, "gain [low, high]", the paired difference) of a step against the one it builds on."""
    base = by_name.get(step.against) if step.against else None
    if step.against and base is None:
        raise RecipeError(f"step {step.name!r}: measured against {step.against!r}, which is not a step")
    try:
        diff = comparison.paired(step.metrics, base.metrics if base else None, n_boot=n_boot, seed=seed)
    except (comparison.ComparisonError, FileNotFoundError) as e:
        raise RecipeError(f"step {step.name!r}: {e}") from None
    k = diff["kaggle"]
    text = format_ci(k["diff"], k["low"], k["high"], digits=4)
    return step.against or "predicting nothing", text, k


def step_table(
    steps: Sequence[Step], speeds: Mapping[str, float] | None = None, n_boot: int = 2000, seed: int = 0
) -> pd.DataFrame:
    """One row per step (``COLUMNS``), in the order given; ``speeds`` maps step name -> images/s.
    "all-empty" is the Kaggle metric of predicting nothing on the same test images; the table's
    comparisons are one family for the Holm adjustment."""
    by_name = {s.name: s for s in steps}
    rows, diffs = [], []
    for s in steps:
        t = s.metrics.get("test") or {}
        if t.get("kaggle") is None:
            raise RecipeError(f"step {s.name!r}: run {s.metrics.get('run')!r} has no test-split evaluation")
        against, gain, diff = _gain(s, by_name, n_boot, seed)
        diffs.append(diff)
        rows.append(
            {
                "step": s.name,
                "run": s.metrics.get("run"),
                "Kaggle [95% CI]": comparison.ci_text(t, "kaggle"),
                "all-empty": t.get("all_empty_kaggle", float("nan")),
                "defect Dice [95% CI]": comparison.ci_text(t, "defect_dice"),
                "against": against,
                "gain [95% CI]": gain,
                "images/s": (speeds or {}).get(s.name, float("nan")),
                "note": s.note,
                "kaggle": t["kaggle"],
            }
        )
    for row, d in zip(rows, comparison.adjust(diffs)):
        row.update({"Holm p": d["p_holm"], "verdict": comparison.verdict(d)})
    return pd.DataFrame(rows, columns=[*COLUMNS, "kaggle"])


def throughput(
    weights: Sequence[str | Path],
    images: Sequence[str | Path],
    params: pp.PostParams | None = None,
    tta: str = "none",
    batch_size: int = 8,
    device: str = "cpu",
) -> float:
    """Images per second of one configuration: predicting ``images`` (an ensemble when several
    run folders are given) and post-processing them with ``params`` (the classifier gate included),
    models loaded beforehand. Compare only numbers measured side by side on one machine."""
    if not images:
        raise RecipeError("throughput: no images to time")
    ens = load_ensemble(weights, device)
    start = time.perf_counter()
    n = 0
    for batch in ens.predict(images, tta=tta, batch_size=batch_size, device=device, progress=False):
        pp.apply(batch.probs, params, batch.class_probs)
        n += len(batch.ids)
    return n / (time.perf_counter() - start)
