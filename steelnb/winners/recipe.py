"""The Kaggle winners' recipe as measured steps of the study.

A step is a configuration (a run, a run with its classifier gate, an ensemble of runs, a run
retrained with pseudo-labels or with per-class BCE weights) scored on the held-out test split,
and the step it builds on. A step is an **arm**: one run, or the same configuration trained at
several seeds (folders ``<arm>__seed<N>``, ``comparison.find_arm``; an ensemble arm is one
ensemble per seed, ``ensemble_groups``). ``step_table`` gives one row per step: the test Kaggle
metric and defect Dice with their 95% intervals (over seeds and images for an arm of several:
``comparison.arm_value``), the difference of the Kaggle metric from the step it builds on on the
same test images (``comparison.paired_arms``: the two-level bootstrap over both arms' seeds and
the images, the paired image bootstrap for one seed each), its Holm-adjusted p-value over the
table's steps (one family) and a verdict that says what was computed (``stats.verdict``, with
"single seed" where an arm has one), and the inference speed of the configuration
(``throughput``, measured side by side on one machine, on the first seed). Steps are read from
the run folders' ``metrics.json`` and ``test_scores.csv``; an ensemble's come from
``evaluation.evaluate_ensemble``.

A step's seed ``s`` descends from the single run's seed ``s`` (the pseudo-labels of that seed,
an ensemble holding it); the bootstrap draws the two arms' seeds independently. Where a step
inherits its seed's luck (a positive dependence), ignoring it widens the interval of their
difference rather than narrowing it; it was not measured.
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
    arm: Sequence[Mapping[str, Any]] = ()  # every seed's metrics, ``metrics`` first (empty: just ``metrics``)

    def __post_init__(self) -> None:
        self.arm = list(self.arm) or [self.metrics]
        self.metrics = self.arm[0]


COLUMNS = [
    "step",
    "run",
    "Kaggle [95% CI]",
    "all-empty",
    "defect Dice [95% CI]",
    "against",
    "gain [95% CI]",
    "training seeds",
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
    base: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    runs: Sequence[Mapping[str, Any]],
    step_runs: Mapping[str, str],
    ensemble: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    members: Sequence[str | Path] = (),
    where: str | Path = "weights",
) -> list[Step]:
    """The recipe's steps in ``RUN_STEPS`` order: the single run ``base`` (a ``RunRecord``, or an
    arm: its seeds' records), then each step whose run ``step_runs`` names (parameter -> run
    folder or arm name, "" for none; found in ``runs`` by ``comparison.find_arm``, else a
    ``ComparisonError`` naming the step and ``where``) and the ensemble of ``members`` (the first
    seed's run folders) when its metrics ``ensemble`` are given (one ensemble's, or one per seed);
    each measured against the single run."""
    base_arm = [base] if isinstance(base, Mapping) else list(base)
    first = comparison.folder_of(base_arm[0]).path
    note = "crops, TTA and tuned post-processing"
    steps = [Step("single run", base_arm[0], weights=[first], note=note, arm=base_arm)]
    for step, parameter, note in RUN_STEPS:
        if step is None:
            if ensemble is not None:
                arm = [ensemble] if isinstance(ensemble, Mapping) else list(ensemble)
                name = f"ensemble of {len(members)}"
                steps.append(Step(name, arm[0], "single run", weights=list(members), note=note, arm=arm))
        elif step_runs.get(parameter):
            arm = comparison.find_arm(runs, step_runs[parameter], where, step)
            weights = [comparison.folder_of(arm[0]).path]
            steps.append(Step(step, arm[0], against="single run", weights=weights, note=note, arm=arm))
    return steps


def ensemble_groups(member_arms: Sequence[Sequence[Mapping[str, Any]]]) -> dict[str, list[Path]]:
    """The ensembles of an arm of ensembles: {folder suffix ("" or "__seed<N>"): the members' run
    folders}, one ensemble per seed that every member arm has (each member's run of that seed);
    members without seeds (a single run each) give the one ensemble "". A ``RecipeError`` when
    the member arms share no seed."""
    by_seed = [
        {(g[1] if (g := comparison.SEED_SUFFIX.search(comparison.folder_name(m))) else None): m for m in arm}
        for arm in member_arms
    ]
    if all(list(b) == [None] for b in by_seed):
        return {"": [comparison.folder_of(b[None]).path for b in by_seed]}
    shared = sorted(set.intersection(*(set(b) - {None} for b in by_seed)), key=int)
    if not shared:
        names = ", ".join(comparison.arm_of(a[0]) for a in member_arms)
        raise RecipeError(f"ensemble of {names}: the member arms share no training seed")
    return {f"__seed{s}": [comparison.folder_of(b[s]).path for b in by_seed] for s in shared}


def _gain(step: Step, by_name: Mapping[str, Step], n_boot: int, seed: int) -> tuple[str, str, Any]:
    """(against, "gain [low, high]", the difference) of a step's arm against the one it builds on."""
    base = by_name.get(step.against) if step.against else None
    if step.against and base is None:
        raise RecipeError(f"step {step.name!r}: measured against {step.against!r}, which is not a step")
    try:
        diff = comparison.paired_arms(step.arm, base.arm if base else None, n_boot=n_boot, seed=seed)
    except (comparison.ComparisonError, FileNotFoundError) as e:
        raise RecipeError(f"step {step.name!r}: {e}") from None
    k = diff["kaggle"]
    text = format_ci(k["diff"], k["low"], k["high"], digits=4)
    return step.against or "predicting nothing", text, k


def _values(step: Step, n_boot: int) -> dict[str, Any]:
    """The run, Kaggle and defect-Dice columns of a step: one run's from its test block; an arm of
    several seeds', their mean with the interval over seeds and images (``comparison.arm_value``)."""
    t = step.metrics.get("test") or {}
    if len(step.arm) == 1:
        run, kaggle = step.metrics.get("run"), t["kaggle"]
        cells = [comparison.ci_text(t, "kaggle"), comparison.ci_text(t, "defect_dice")]
    else:
        run = f"{comparison.arm_of(step.metrics)} ({len(step.arm)} seeds)"
        values = [comparison.arm_value(step.arm, w, n_boot=n_boot) for w in ("kaggle", "defect_dice")]
        kaggle = values[0]["value"]
        cells = [format_ci(v["value"], v["low"], v["high"]) for v in values]
    return {"run": run, "Kaggle [95% CI]": cells[0], "defect Dice [95% CI]": cells[1], "kaggle": kaggle}


def step_table(
    steps: Sequence[Step], speeds: Mapping[str, float] | None = None, n_boot: int = 2000, seed: int = 0
) -> pd.DataFrame:
    """One row per step (``COLUMNS``), in the order given; ``speeds`` maps step name -> images/s.
    "all-empty" is the Kaggle metric of predicting nothing on the same test images; the table's
    comparisons are one family for the Holm adjustment."""
    by_name = {s.name: s for s in steps}
    rows, diffs = [], []
    for s in steps:
        for m in s.arm:
            if (m.get("test") or {}).get("kaggle") is None:
                raise RecipeError(f"step {s.name!r}: run {m.get('run')!r} has no test-split evaluation")
        against, gain, diff = _gain(s, by_name, n_boot, seed)
        diffs.append(diff)
        rows.append(
            {
                "step": s.name,
                **_values(s, n_boot),
                "all-empty": (s.metrics.get("test") or {}).get("all_empty_kaggle", float("nan")),
                "against": against,
                "gain [95% CI]": gain,
                "training seeds": comparison.seeds_text(diff, against_rule=s.against is None),
                "images/s": (speeds or {}).get(s.name, float("nan")),
                "note": s.note,
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
