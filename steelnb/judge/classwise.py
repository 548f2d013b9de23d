"""One run per class, chosen on validation: the per-class choice of a study's runs.

The Kaggle metric is a mean over (image, class) pairs, so each class can come from another model,
as the competition's winners did. For each class ``choose_by_class`` takes the run whose tuned
validation score on that class is the highest (``PostParams.class_scores``, kept in each run's
``metrics.json``); a class no run beats predicting nothing on (its best run switched it off)
predicts nothing. ``combined_scores`` then takes each class's rows of its run's
``test_scores.csv``: the test split only reports on a choice validation made. Ties go to the run
with the better validation score overall, and between a run that switched the class off and one
that did not, to predicting nothing (as tuning's do).

Imports: pandas and numpy only, with ``comparison`` (the runs' scores and validation scores),
``postprocess`` (a run's tuned parameters read back) and ``summaries``; no model code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ..data.config import N_CLASSES
from ..model.counts import dice_of
from . import postprocess as pp
from . import stats
from .comparison import ComparisonError, folder_name, folder_of, validation_score
from .scoretable import COUNT_COLUMNS, counts_of
from .summaries import summarize

__all__ = [
    "ClassChoice",
    "by_seed",
    "choose_by_class",
    "class_scores_of",
    "classwise_summary",
    "combined_scores",
]

#: per class 1..N_CLASSES: the run chosen, None to predict nothing
ClassChoice = list[Mapping[str, Any] | None]


def _params(m: Mapping[str, Any]) -> pp.PostParams | None:
    """A run's tuned post-processing as its ``metrics.json`` keeps it, or None when not evaluated."""
    block = m.get("postprocess")
    return None if not block else pp.PostParams.from_dict(block, source=f"{folder_name(m)}: metrics.json")


def class_scores_of(m: Mapping[str, Any]) -> list[float] | None:
    """A run's tuned validation score of each class, or None when its post-processing kept none."""
    params = _params(m)
    return None if params is None or params.class_scores is None else list(params.class_scores)


def by_seed(runs: Sequence[Mapping[str, Any]]) -> dict[int | None, list[Mapping[str, Any]]]:
    """The runs by training seed (``metrics.json``'s "seed"; None where a run has none), seeds in
    order: a per-class choice is made of one seed's runs, so that a study trained at several
    seeds makes one choice per seed and each is judged on its own."""
    groups: dict[int | None, list[Mapping[str, Any]]] = {}
    for m in runs:
        groups.setdefault(m.get("seed"), []).append(m)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))


def choose_by_class(runs: Sequence[Mapping[str, Any]]) -> ClassChoice:
    """For each class the run of ``runs`` with the highest tuned validation score on it (None: the
    best switched the class off, so it predicts nothing). Runs without class scores are refused."""
    missing = [folder_name(m) for m in runs if class_scores_of(m) is None]
    if missing or not runs:
        raise ComparisonError(
            f"no per-class validation scores in {', '.join(missing)} (evaluated before they were kept: "
            "evaluate the run again)"
            if missing
            else "no runs to choose from"
        )
    ranked = sorted(runs, key=lambda m: (-(validation_score(m) or 0.0), folder_name(m)))
    params = [_params(m) for m in ranked]
    choice: ClassChoice = []
    for c in range(N_CLASSES):  # min keeps the first of equals: the better run overall
        i = min(range(len(ranked)), key=lambda i: (-params[i].class_scores[c], params[i].classes[c].enabled))
        choice.append(ranked[i] if params[i].classes[c].enabled else None)
    return choice


def combined_scores(choice: ClassChoice, scores: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """A scores table (``test_scores.csv``'s columns ImageId, ClassId, tp, fp, fn) whose class c rows
    are those of the run chosen for c, and for a class none was chosen for, predicting nothing (no
    tp, no fp, the truth as fn). ``scores``: each run's table by folder name, all on the same test
    images (else ComparisonError naming the run that differs)."""
    tables = {name: t[["ImageId", "ClassId", *COUNT_COLUMNS[:3]]] for name, t in scores.items()}
    first_name, first = next(iter(tables.items()))
    ids = set(first["ImageId"])
    for name, table in tables.items():
        if set(table["ImageId"]) != ids:
            raise ComparisonError(f"{name}: scored other test images than {first_name}: not combined")
    parts = []
    for c, m in enumerate(choice, start=1):
        rows = (
            tables[folder_name(m)]
            if m is not None
            else first.assign(tp=0, fp=0, fn=first["tp"] + first["fn"])
        )
        parts.append(rows[rows["ClassId"] == c])
    return pd.concat(parts).sort_values(["ImageId", "ClassId"]).reset_index(drop=True)


def classwise_summary(
    runs: Sequence[Mapping[str, Any]], against: Mapping[str, Any], n_boot: int = 2000
) -> dict[str, Any]:
    """The per-class choice among ``runs`` judged on their shared test images: ``choice`` (a table
    of each class's run and its validation class score), ``scores`` (the combined table),
    ``test`` (``summarize``: Kaggle, its interval and predicting nothing's) and ``paired`` (the
    combined minus ``against``, paired on the same images: one comparison, single seed)."""
    choice = choose_by_class(runs)
    scores = {folder_name(m): folder_of(m).scores() for m in [against, *runs]}
    unscored = [name for name, table in scores.items() if table is None]
    if unscored:
        raise ComparisonError(f"no test_scores.csv in {', '.join(unscored)}: evaluate the run first")
    combined = combined_scores(choice, scores)
    ids = sorted(combined["ImageId"].unique())
    counts = counts_of(combined, image_ids=ids)
    paired = stats.paired_bootstrap(
        dice_of(counts), dice_of(counts_of(scores[folder_name(against)], image_ids=ids)), n_boot=n_boot
    )
    table = pd.DataFrame(
        [
            {
                "class": c + 1,
                "run": folder_name(m) if m is not None else "none: predicting nothing",
                "validation Kaggle of the class (tuned)": class_scores_of(m)[c] if m is not None else None,
            }
            for c, m in enumerate(choice)
        ]
    )
    return {"choice": table, "scores": combined, "test": summarize(counts, n_boot=n_boot), "paired": paired}
