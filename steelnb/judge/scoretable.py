"""A run's scores table (``test_scores.csv``: one row per (test image, class) with tp / fp / fn
pixels) read back and turned into counts, with pandas and numpy only: what comparing runs needs
(``comparison``, ``crossval``, the report), without the model code that made the table
(``scoring``, which re-exports these names).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.errors import SteelnbError
from ..model.runfolder import RunFolder

__all__ = ["COUNT_COLUMNS", "GATE_COLUMNS", "EvaluationError", "counts_of", "read_scores"]

COUNT_COLUMNS = ["tp", "fp", "fn", "tp_raw", "fp_raw", "fn_raw"]
#: Extra columns of ``test_scores.csv`` for a run with a classification head: the image-level class
#: probability and the post-processed counts with the classifier gate switched off (the map of the
#: mask logits is the same in both; only the gate differs).
GATE_COLUMNS = ["class_prob", "tp_ungated", "fp_ungated", "fn_ungated"]


class EvaluationError(SteelnbError):
    """A run cannot be evaluated (no test split, no checkpoint, scores of other images)."""


def counts_of(
    scores: pd.DataFrame, raw: bool = False, image_ids: Sequence[str] | None = None, ungated: bool = False
) -> np.ndarray:
    """Counts (N, C, 3) from a scores table (images in ``image_ids`` order, default sorted);
    ``raw``: at threshold 0.5; ``ungated``: post-processed with the classifier gate off."""
    cols = ["tp_raw", "fp_raw", "fn_raw"] if raw else ["tp", "fp", "fn"]
    cols = ["tp_ungated", "fp_ungated", "fn_ungated"] if ungated else cols
    if not set(cols) <= set(scores.columns):
        raise EvaluationError(
            f"scores hold no columns {', '.join(cols)} (a run without a classification head?)"
        )
    wide = scores.pivot(index="ImageId", columns="ClassId", values=cols)
    ids = sorted(wide.index) if image_ids is None else list(image_ids)
    missing = sorted(set(ids) - set(wide.index))
    if missing:
        raise EvaluationError(f"scores hold no row for image {missing[0]} ({len(missing)} missing)")
    wide = wide.loc[ids]
    return np.stack([wide[c].to_numpy() for c in cols], -1).astype(np.int64)


def read_scores(run_dir: str | Path | RunFolder) -> pd.DataFrame | None:
    """``test_scores.csv`` of a run folder, or None when the run was not evaluated."""
    return RunFolder.of(run_dir).scores()
