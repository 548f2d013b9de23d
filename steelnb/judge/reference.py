"""The reference project's reported numbers, and the runs of ours most like them, side by side.

The reference reported one number per encoder: a *soft* IoU (on probabilities, no threshold) with
the four classes merged into one mask, on a validation split of its mask-balanced subset (no
defect-free images): ResNet-50 0.4132 at 256x1600, EfficientNet-B3 0.513 and EfficientNet-B4
0.597 at 256x768. ``reference_rows`` sets beside them every Kaggle-data run of ours with the same
encoder and mask size, and the run trained on the reference's own subset (the full plan's
``weights/full-reference``), each labelled like for like or not and why, one row per arm: the
seeds of an arm (``<run>__seed<N>``, as a plan's ``seeds:`` writes them) share a row that gives
the mean over its seeds and each seed's value, since the reference's numbers are context and
not a comparison. Synthetic runs are never set beside them (their numbers are not Severstal
numbers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .comparison import arm_of, ci_text, group_arms

__all__ = ["REFERENCE", "REFERENCE_METRIC", "reference_dir", "reference_rows"]

#: The reference's numbers: encoder, mask size, soft IoU (classes merged).
REFERENCE = (
    ("resnet50", "256x1600", 0.4132),
    ("efficientnet-b3", "256x768", 0.513),
    ("efficientnet-b4", "256x768", 0.597),
)
REFERENCE_METRIC = "soft IoU on probabilities, four classes merged into one mask"
REFERENCE_SPLIT = "validation split of its mask-balanced subset (no defect-free images)"
#: The subset the reference trained on, as our runs name it.
REFERENCE_SUBSETS = ("balanced", "subset_balanced.csv")
COLUMNS = [
    "source",
    "run",
    "encoder",
    "mask size",
    "trained on",
    "judged on",
    "metric",
    "value",
    "like for like",
]


def reference_dir(weights_dir: str | Path) -> Path:
    """The folder of the run trained as the reference did, beside ``weights_dir``:
    ``../weights/full`` -> ``../weights/full-reference`` (plans/full.yaml writes it there, apart
    from the runs 04 and 05 compare)."""
    p = Path(weights_dir)
    return p.with_name(f"{p.name}-reference")


def _why(m: Mapping[str, Any], matched: bool) -> str:
    """Like for like or not, and why, for one of our runs."""
    on_reference = (m.get("data") or {}).get("subset") in REFERENCE_SUBSETS
    differs = (
        "judged on the held-out test split (the Kaggle share of defect-free images) with thresholded "
        "per-class masks, where the reference's soft IoU merged the classes on validation images of its subset"
    )
    if on_reference and matched:
        return f"no, the nearest: the reference's subset, encoder and mask size; {differs}"
    if on_reference:
        return f"no: the reference's subset, but no reference number at this encoder and size; {differs}"
    return f"no: same encoder and mask size, trained on the study subset (defect-free images kept); {differs}"


def _soft(m: Mapping[str, Any]) -> float | None:
    soft = (m.get("best") or {}).get("soft_iou")
    return float(soft) if isinstance(soft, (int, float)) else None


def _value(arm: Sequence[Mapping[str, Any]]) -> str:
    """One run: its test IoU with its 95% interval and its validation soft IoU. Several seeds of
    an arm: the means over them, then each seed's test IoU with its interval."""
    if len(arm) == 1:
        soft = _soft(arm[0])
        return f"IoU {ci_text(arm[0].get('test'), 'iou')}; validation soft IoU " + (
            "–" if soft is None else f"{soft:.3f}"
        )
    ious = [(m.get("test") or {}).get("iou") for m in arm]
    softs = [_soft(m) for m in arm]
    mean_iou = f"{sum(ious) / len(ious):.3f}" if all(isinstance(v, (int, float)) for v in ious) else "–"
    mean_soft = f"{sum(softs) / len(softs):.3f}" if all(v is not None for v in softs) else "–"
    each = "; ".join(f"seed {m.get('seed', '?')}: {ci_text(m.get('test'), 'iou')}" for m in arm)
    return (
        f"IoU {mean_iou}, mean of {len(arm)} seeds ({each}); validation soft IoU {mean_soft}, "
        f"mean of {len(arm)} seeds"
    )


def _reference_row(encoder: str, size: str, value: float) -> dict[str, Any]:
    """One of the reference's numbers as a row of COLUMNS."""
    return {
        "source": "reference",
        "run": f"reference {encoder}",
        "encoder": encoder,
        "mask size": size,
        "trained on": "its mask-balanced subset (1,000 masks, no defect-free images)",
        "judged on": REFERENCE_SPLIT,
        "metric": REFERENCE_METRIC,
        "value": f"{value}",
        "like for like": "the reference's number",
    }


def reference_rows(runs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The reference's three rows and, after each, our Kaggle-data runs (``report.read_metrics``
    dicts, the reference-subset run's included) at its encoder and mask size, one row per arm
    (``comparison.arm_of``: its seeds together); then any other arm of ours on the reference's
    subset. Columns: COLUMNS; ``value`` is text (ours: the test IoU with its 95% interval, and
    the validation soft IoU, pooled over the four class channels; an arm of several seeds: their
    means and each seed's interval)."""
    kaggle = [m for m in runs if (m.get("data") or {}).get("kind") == "kaggle"]
    arms = list(group_arms(kaggle).values())
    rows: list[dict[str, Any]] = []
    shown: set[int] = set()

    def ours(arm: Sequence[Mapping[str, Any]], matched: bool) -> dict[str, Any]:
        m = arm[0]
        d = m.get("data") or {}
        return {
            "source": "steelnb",
            "run": m.get("run") if len(arm) == 1 else f"{arm_of(m)} ({len(arm)} seeds)",
            "encoder": m.get("encoder"),
            "mask size": f"{m.get('height')}x{m.get('width')}",
            "trained on": f"{d.get('subset')} ({d.get('n_train', '?')} images)",
            "judged on": f"test split, {d.get('n_test', '?')} images ({d.get('clean_test', '?')} defect-free)",
            "metric": "IoU at a threshold, per class (test); soft IoU per class, pooled (validation)",
            "value": _value(arm),
            "like for like": _why(m, matched),
        }

    for encoder, size, value in REFERENCE:
        rows.append(_reference_row(encoder, size, value))
        for i, arm in enumerate(arms):
            m = arm[0]
            if m.get("encoder") == encoder and f"{m.get('height')}x{m.get('width')}" == size:
                rows.append(ours(arm, True))
                shown.add(i)
    rows += [
        ours(arm, False)
        for i, arm in enumerate(arms)
        if i not in shown and (arm[0].get("data") or {}).get("subset") in REFERENCE_SUBSETS
    ]
    return pd.DataFrame(rows, columns=COLUMNS)
