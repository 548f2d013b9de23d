"""Post-processing tuned on labelled images: the validation half of judging a run.

``tune`` searches the post-processing (``postprocess.tune_postprocess``: thresholds, minimum
areas, and for a model with a classification head its gate) on the probabilities of labelled
images, by default the run's own validation split, and saves it as ``postprocess.yaml`` beside
the checkpoint, where ``predict_run.run_predict`` finds it. ``tune_on`` is the search itself on
a loaded model or ensemble, saving nothing. Validation selects; the test split only reports.

Imports: this module uses ``ensemble`` and ``inference`` (probabilities), ``labels`` (truth
masks) and ``runfolder`` (a run's splits); ``evaluation`` uses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..data.labels import encodings_by_image, image_masks
from ..data.sampling import sealed
from ..model.runfolder import RunFolder
from . import postprocess as pp
from .ensemble import Ensemble
from .inference import InferenceError, check_classes, four_classes
from .scoring import as_ensemble

__all__ = ["tune", "tune_on"]


def tune(
    weights: str | Path | Ensemble,
    images: str | Path | None = None,
    labels: str | Path | None = None,
    image_ids: Sequence[str] | None = None,
    tta: str = "none",
    size: tuple[int, int] = (128, 800),
    batch_size: int = 8,
    device: str = "auto",
    class_id: int | None = None,
    save: bool = True,
    progress: bool = True,
    **grids: Any,
) -> pp.PostParams:
    """Tune post-processing on labelled images and save ``postprocess.yaml`` beside the checkpoint.

    Defaults: the run's own validation images (its splits, ``RunFolder.splits``). Probabilities
    are kept as uint8 at ``size`` (H, W) (N x 4 x H x W bytes) and truth resized (nearest).
    ``grids``: thresholds, min_areas, top_probs, total_areas (and, for a model with a
    classification head, cls_thresholds and gate_min_areas) of ``tune_postprocess``.
    """
    ens = as_ensemble(weights, device)
    info = ens.infos[0]
    check_classes(info, class_id)
    if images is None or labels is None or image_ids is None:
        images, labels, image_ids = _validation_images(weights, info, images, labels, image_ids)
    params = tune_on(ens, images, labels, image_ids, tta, size, batch_size, device, class_id, progress, grids)
    if save:
        params.to_yaml(RunFolder(info.path.parent).postprocess_file)
    return params


def tune_on(
    ens: Ensemble,
    images: str | Path,
    labels: str | Path,
    image_ids: Sequence[str] | None,
    tta: str,
    size: tuple[int, int],
    batch_size: int,
    device: str,
    class_id: int | None,
    progress: bool,
    grids: dict[str, Any],
) -> pp.PostParams:
    """``tune``'s search on the (ensemble's) probabilities of ``image_ids`` (None: every image of
    the folder ``images``), with its class probabilities when it has them; saves nothing."""
    probs, truth, cp = tuning_arrays(
        ens, images, labels, image_ids, tta, size, batch_size, device, class_id, progress
    )
    return pp.tune_postprocess(probs, truth, class_probs=cp, **grids)


def tuning_arrays(
    ens: Ensemble,
    images: str | Path,
    labels: str | Path,
    image_ids: Sequence[str] | None,
    tta: str,
    size: tuple[int, int],
    batch_size: int,
    device: str,
    class_id: int | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """What the search runs on: the probabilities (N, 4, H, W) uint8 x255 at ``size``, the truth
    (N, 4, H, W) at that size and the class probabilities (N, 4) (None without a head)."""
    table = encodings_by_image(labels)
    paths = [Path(images) / i for i in image_ids] if image_ids is not None else images
    probs, truth, class_probs = [], [], []
    for batch in ens.predict(paths, tta, batch_size, device, out_size=size, quantize=True, progress=progress):
        probs.append(four_classes(batch.probs, class_id))
        if batch.class_probs is not None:
            class_probs.append(four_classes(batch.class_probs, class_id))
        for image_id in batch.ids:
            masks = image_masks(table.get(image_id, {}), image_id=image_id)
            truth.append(
                np.stack([cv2.resize(m, size[::-1], interpolation=cv2.INTER_NEAREST) for m in masks])
            )
    cp = np.concatenate(class_probs) if class_probs and len(class_probs) == len(probs) else None
    return np.concatenate(probs), np.stack(truth), cp


def run_validation_arrays(
    ens: Ensemble, folder: RunFolder, batch_size: int, who: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``tuning_arrays`` of an evaluated run's validation images on the CPU, at the TTA and tuning
    size its evaluation used (``metrics.json["test"]``), for the bench tools that time what tuning
    runs on; ``sampling.sealed`` refuses, naming ``who``, ids that reach the test split."""
    cfg = ens.infos[0].config  # the checkpoint's training config
    splits = folder.splits(cfg)
    done = folder.metrics()["test"]
    return tuning_arrays(
        ens,
        cfg.resolve(cfg.images),
        cfg.resolve(cfg.labels),
        sealed(splits.validation, splits.test, who),
        done["tta"],
        tuple(done["tune_size"]),
        batch_size,
        "cpu",
    )


def _validation_images(
    weights: str | Path | Ensemble,
    info: Any,
    images: str | Path | None,
    labels: str | Path | None,
    image_ids: Sequence[str] | None,
) -> tuple[Any, Any, Any]:
    """(images folder, label file, image ids), each given one or else the run's validation split."""
    if info.config is None:
        raise InferenceError(
            f"{weights}: no training config in the checkpoint: pass images, labels and image_ids"
        )
    cfg = info.config
    val_ids = image_ids or list(RunFolder(info.path.parent).splits(cfg).validation)
    return images or cfg.resolve(cfg.images), labels or cfg.resolve(cfg.labels), image_ids or val_ids
