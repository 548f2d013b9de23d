"""A prediction of labelled images scored image by image: pixel counts per (image, class).

``score_images`` predicts images (a run's model or an ensemble) and counts, at 256 x 1600, the
true-positive, false-positive and false-negative pixels of each (image, class), raw (threshold
0.5) and post-processed: the long table a run's ``test_scores.csv`` holds, from which any two
runs can be compared image by image later. ``counts_of`` turns such a table into counts
(N, C, 3) in a chosen image order and ``read_scores`` reads a run's table back (both from
``scoretable``, which needs no torch, re-exported here).

Imports: this module uses ``ensemble`` and ``inference`` (probabilities), ``labels`` (truth
masks) and ``postprocess``; the summaries (``summaries``) and the evaluation of a run
(``evaluation``) use it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..data.config import HEIGHT, N_CLASSES, WIDTH
from ..data.labels import encodings_by_image, image_masks
from ..model import metrics
from ..model.runfiles import SCORES_FILE
from . import postprocess as pp
from .ensemble import Ensemble, load_ensemble
from .scoretable import COUNT_COLUMNS, GATE_COLUMNS, EvaluationError, counts_of, read_scores

__all__ = [
    "COUNT_COLUMNS",
    "GATE_COLUMNS",
    "SCORES_FILE",
    "EvaluationError",
    "as_ensemble",
    "counts_of",
    "read_scores",
    "score_images",
]


def as_ensemble(weights: str | Path | Ensemble, device: str) -> Ensemble:
    """A checkpoint or run folder as a one-member ``Ensemble``; an ``Ensemble`` passes through."""
    return weights if isinstance(weights, Ensemble) else load_ensemble([weights], device)


def ungated(params: pp.PostParams) -> pp.PostParams:
    """``params`` with the classifier gate of every class switched off."""
    return pp.PostParams(
        classes=tuple(dataclasses.replace(c, cls_threshold=0.0, gate_min_area=0) for c in params.classes),
        score=params.score,
    )


def score_images(
    weights: str | Path | Ensemble,
    images_dir: Path,
    labels_csv: Path,
    image_ids: Sequence[str],
    params: pp.PostParams,
    tta: str = "none",
    batch_size: int = 8,
    device: str = "auto",
    progress: bool = False,
) -> pd.DataFrame:
    """Predict ``image_ids`` at the model's size, score at 256 x 1600 raw and post-processed.

    ``weights``: a checkpoint or run folder, or an ``ensemble.Ensemble``. Returns the long table:
    ImageId, ClassId, tp, fp, fn (post-processed), tp_raw, fp_raw, fn_raw (threshold 0.5), one row
    per image and class; with class probabilities (every model has a classification head) also
    ``GATE_COLUMNS``: class_prob and tp/fp/fn_ungated (post-processed with the gate off).
    """
    ens = as_ensemble(weights, device)
    table = encodings_by_image(labels_csv)
    free_params = ungated(params)
    gate_on = free_params != params
    rows = []
    paths = [images_dir / i for i in image_ids]
    for batch in ens.predict(paths, tta, batch_size, device, out_size=(HEIGHT, WIDTH), progress=progress):
        for k, (image_id, prob) in enumerate(zip(batch.ids, batch.probs)):
            truth = image_masks(table.get(image_id, {}), image_id=image_id)
            cp = None if batch.class_probs is None else batch.class_probs[k]
            post = metrics.pixel_counts(pp.apply(prob, params, cp), truth)
            raw = metrics.pixel_counts(prob > 0.5, truth)
            if cp is None:
                rows += [(image_id, c + 1, *post[c], *raw[c]) for c in range(N_CLASSES)]
                continue
            free = metrics.pixel_counts(pp.apply(prob, free_params), truth) if gate_on else post
            rows += [(image_id, c + 1, *post[c], *raw[c], float(cp[c]), *free[c]) for c in range(N_CLASSES)]
    columns = ["ImageId", "ClassId", *COUNT_COLUMNS]
    return pd.DataFrame(rows, columns=columns + (GATE_COLUMNS if ens.has_classifier else []))
