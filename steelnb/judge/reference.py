"""The reference project's reported numbers, and the runs of ours most like them, side by side.

The reference reported one number per encoder: a *soft* IoU (on probabilities, no threshold) with
the four classes merged into one mask, on a validation split of its mask-balanced subset (no
defect-free images): ResNet-50 0.4132 at 256x1600, EfficientNet-B3 0.513 and EfficientNet-B4
0.597 at 256x768. ``reference_rows`` sets beside them every Kaggle-data run of ours with the same
encoder and mask size, and the run trained on the reference's own subset (the full plan's
``weights/full-reference``), each labelled like for like or not and why. Synthetic runs are never
set beside them (their numbers are not Severstal numbers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .comparison import ci_text

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


def reference_rows(runs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The reference's three rows and, after each, our Kaggle-data runs (``report.read_metrics``
    dicts, the reference-subset run's included) at its encoder and mask size; then any other
    run of ours on the reference's subset. Columns: COLUMNS; ``value`` is text (ours: the test IoU
    with its 95% interval, and the validation soft IoU, pooled over the four class channels)."""
    kaggle = [m for m in runs if (m.get("data") or {}).get("kind") == "kaggle"]
    rows: list[dict[str, Any]] = []
    shown: set[int] = set()

    def ours(m: Mapping[str, Any], matched: bool) -> dict[str, Any]:
        d, soft = m.get("data") or {}, (m.get("best") or {}).get("soft_iou")
        return {
            "source": "steelnb",
            "run": m.get("run"),
            "encoder": m.get("encoder"),
            "mask size": f"{m.get('height')}x{m.get('width')}",
            "trained on": f"{d.get('subset')} ({d.get('n_train', '?')} images)",
            "judged on": f"test split, {d.get('n_test', '?')} images ({d.get('clean_test', '?')} defect-free)",
            "metric": "IoU at a threshold, per class (test); soft IoU per class, pooled (validation)",
            "value": f"IoU {ci_text(m.get('test'), 'iou')}; validation soft IoU "
            + (f"{soft:.3f}" if isinstance(soft, (int, float)) else "–"),
            "like for like": _why(m, matched),
        }

    for encoder, size, value in REFERENCE:
        rows.append(
            {
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
        )
        for m in kaggle:
            if m.get("encoder") == encoder and f"{m.get('height')}x{m.get('width')}" == size:
                rows.append(ours(m, True))
                shown.add(id(m))
    rows += [
        ours(m, False)
        for m in kaggle
        if id(m) not in shown and (m.get("data") or {}).get("subset") in REFERENCE_SUBSETS
    ]
    return pd.DataFrame(rows, columns=COLUMNS)
