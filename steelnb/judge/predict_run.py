"""A prediction run: a checkpoint (or an ensemble of several) over a folder of images to a Kaggle
submission, an evaluation against labels when given, and overlay pictures.

``run_predict`` streams ``inference.predict`` batches, applies the post-processing tuned beside
the checkpoint (``evaluation.tune`` writes it), and writes into one folder ``submission.csv``,
``skipped.csv`` (bad files), with labels ``evaluation.csv``, ``presence.csv`` and ``worst.csv``
(``evaluation.write_evaluation``), and ``overlays/*.png``. With several run folders the members'
probabilities are averaged (``ensemble.Ensemble``) and ``members.json`` beside the submission
names them; their post-processing is the file given (``evaluation.evaluate_ensemble`` writes one),
else the plain threshold. With class probabilities (models with a classification head) the
classifier gate of the post-processing acts too.

Imports point one way: this module uses ``evaluation``, ``ensemble`` and ``inference``; none uses it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from ..data import rle
from ..data.config import HEIGHT, N_CLASSES, WIDTH
from ..data.fileio import write_csv
from ..data.images import read_image
from ..data.labels import encodings_by_image, image_masks
from ..model import metrics
from ..model.runfiles import MEMBERS_FILE
from . import evaluation
from . import postprocess as pp
from . import submission as sub
from .ensemble import Ensemble, load_ensemble, write_members
from .inference import Batch, InferenceError, check_classes, four_classes, image_paths

Variant = tuple[str, str]  # (tta, "raw" | "postprocessed")


def run_predict(
    weights: str | Path | Sequence[str | Path] | Ensemble,
    images: str | Path | Sequence[str | Path],
    out: str | Path,
    labels: str | Path | None = None,
    tta: str = "none",
    overlays: int = 0,
    batch_size: int = 8,
    device: str = "auto",
    on_error: str = "raise",
    class_id: int | None = None,
    progress: bool = True,
    postprocess: str | Path | None = None,
) -> dict[str, Any]:
    """Predict a folder of images: ``<out>/submission.csv`` (+ ``skipped.csv``, ``overlays/*.png``).

    ``weights``: a run folder or checkpoint, or a list of them: several are an ensemble (their
    probabilities averaged, each at its own size with ``tta``), named in ``<out>/members.json`` and
    in the summary's ``members``; or an ``Ensemble`` already loaded. Post-processing: the file (or folder holding
    ``postprocess.yaml``) ``postprocess`` when given, else for one run ``postprocess.yaml`` beside
    its checkpoint when present, else threshold 0.5. With ``labels``: ``evaluation.csv`` (Dice,
    IoU, Kaggle metric per class with its 95% interval; raw and post-processed; without and with
    TTA; each variant's paired gain over predicting nothing, and that baseline's own rows:
    ``evaluation.evaluation_table``), ``presence.csv``
    and ``worst.csv``; overlays then show the worst images. With ``on_error="raise"`` a bad image
    stops the run, the masks made so far are kept in ``submission.partial.csv`` and the error
    names the file. Returns a summary dict (with ``screened``, the images the classifier gate
    emptied entirely, when the models have classification heads).
    """
    ens = _loaded(weights, device)
    check_classes(ens.infos[0], class_id)
    loaded, where = _params(ens, postprocess)
    return predict_with(
        ens,
        loaded,
        where,
        images,
        out,
        labels,
        tta,
        overlays,
        batch_size,
        device,
        on_error,
        class_id,
        progress,
    )


def predict_with(
    ens: Ensemble,
    loaded: pp.PostParams | None,
    where: str,
    images: str | Path | Sequence[str | Path],
    out: str | Path,
    labels: str | Path | None = None,
    tta: str = "none",
    overlays: int = 0,
    batch_size: int = 8,
    device: str = "auto",
    on_error: str = "raise",
    class_id: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """``run_predict`` with the models loaded (``ensemble.Ensemble``, or an exported model's:
    ``exported.load_exported``) and their post-processing ``loaded`` (None: threshold 0.5), read
    from ``where`` (a file, or "default"). Writes and returns what ``run_predict`` does."""
    out = Path(out)
    note = check_classes(ens.infos[0], class_id)
    table = encodings_by_image(labels) if labels is not None else None
    main, variants = _variants(tta, loaded, table is not None)
    run = _Collector(tta, class_id, loaded or pp.PostParams(), main, variants, table)
    _clear(out)
    plain = table is not None and tta != "none"  # the evaluation scores without TTA too
    batches = ens.predict(
        images, tta, batch_size, device, on_error, quantize=True, with_plain=plain, progress=progress
    )
    _collect(run, batches, out)
    if not run.done:
        first = run.skipped[0][1]
        raise InferenceError(f"{images}: no image could be read ({len(run.skipped)} skipped, first: {first})")
    result = _write_submission(run, out, ens, where, note)
    if len(ens) > 1:
        result["members"] = [str(r) for r in ens.run_dirs]
        result["members_json"] = write_members(out, ens, tta=tta, postprocess=where)
    if run.screened is not None:
        result["screened"] = run.screened
    result.update(_write_skipped(run.skipped, out))
    show = run.done[:overlays]
    if table is not None:
        classes = [class_id - 1] if note else list(range(N_CLASSES))
        files, show = _write_evaluation(run, out, classes, overlays)
        result.update(files)
    if overlays > 0:
        result["overlays"] = _overlays(images, show, run.rows, table, out / "overlays")
    return result


def _loaded(weights: str | Path | Sequence[str | Path] | Ensemble, device: str) -> Ensemble:
    """``weights`` loaded (one run folder or checkpoint, or a list of them); an ``Ensemble`` passes."""
    if isinstance(weights, Ensemble):
        return weights
    return load_ensemble([weights] if isinstance(weights, (str, Path)) else list(weights), device)


def overlay_images(
    weights: str | Path | Ensemble,
    images: Sequence[str | Path],
    out: str | Path,
    labels: str | Path | None = None,
    tta: str = "none",
    batch_size: int = 8,
    device: str = "auto",
) -> list[Path]:
    """PNG overlays in ``out`` of just ``images`` (in their order): the prediction with ``tta``,
    post-processed as ``run_predict`` does it (the run's ``postprocess.yaml``, else threshold 0.5),
    with the truth from ``labels`` outlined beside it. Only these images are predicted: the worst
    of a split come from its scores (``evaluation.compare_variants`` writes ``worst.csv``).
    ``weights``: a run folder or checkpoint, or an ``Ensemble`` already loaded."""
    if not images:
        return []
    ens = _loaded(weights, device)
    loaded, _ = _params(ens, None)
    main, variants = _variants(tta, loaded, labelled=False)
    run = _Collector(tta, None, loaded or pp.PostParams(), main, variants, None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _collect(run, ens.predict(list(images), tta, batch_size, device, quantize=True, progress=False), out)
    table = encodings_by_image(labels) if labels is not None else None
    return _overlays(list(images), run.done, run.rows, table, out)


def _params(ens: Ensemble, postprocess: str | Path | None) -> tuple[pp.PostParams | None, str]:
    """(post-processing, where it came from: its file, or "default"): the file ``postprocess``
    names, else one run's ``postprocess.yaml`` beside its checkpoint, else None (threshold 0.5)."""
    if postprocess is not None:
        path = Path(postprocess)
        path = path / pp.FILE_NAME if path.is_dir() else path
        return pp.PostParams.from_yaml(path), str(path)
    loaded = pp.load_params(ens.infos[0].path) if len(ens) == 1 else None
    return loaded, str(ens.infos[0].path.parent / pp.FILE_NAME) if loaded else "default"


def _variants(
    tta: str, loaded: pp.PostParams | None, labelled: bool
) -> tuple[Variant, dict[Variant, pp.PostParams]]:
    """The variant the submission is made of, and every variant scored (with labels only).

    The submission: ``tta`` post-processed with the saved parameters, else raw (threshold 0.5).
    With labels, also raw, and without TTA; each (tta, postprocess) once.
    """
    params = loaded or pp.PostParams()
    main = (tta, "postprocessed" if loaded else "raw")
    if not labelled:
        return main, {main: params}
    return main, {
        (t, p): prm
        for t in dict.fromkeys(["none", tta])
        for p, prm in [("raw", pp.PostParams()), ("postprocessed", params)]
        if p == "raw" or loaded
    }


@dataclass
class _Collector:
    """What a run keeps of its batches: submission rows, images done and skipped, and with labels
    the pixel counts (tp, fp, fn) of every variant, one (4, 3) array per image."""

    tta: str
    class_id: int | None
    params: pp.PostParams
    main: Variant
    variants: dict[Variant, pp.PostParams]
    table: dict[str, dict[int, str]] | None
    rows: list[tuple[str, str, int]] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    counts: dict[Variant, list[np.ndarray]] = field(init=False)
    screened: int | None = None  # images the classifier gate emptied (None: no class probabilities)

    def __post_init__(self) -> None:
        self.counts = {v: [] for v in self.variants}

    def add(self, batch: Batch) -> None:
        """Masks of one batch into the submission rows; with labels, counts of every variant."""
        self.skipped += batch.skipped
        probs = {self.tta: four_classes(batch.probs, self.class_id)}
        if batch.plain is not None:
            probs["none"] = four_classes(batch.plain, self.class_id)
        cps: dict[str, np.ndarray | None] = {t: None for t in probs}
        if batch.class_probs is not None:
            cps[self.tta] = four_classes(batch.class_probs, self.class_id)
            self.screened = (self.screened or 0) + int(pp.screened(cps[self.tta], self.params).sum())
        if batch.plain_class_probs is not None and "none" in probs:
            cps["none"] = four_classes(batch.plain_class_probs, self.class_id)
        for k, image_id in enumerate(batch.ids):
            cp = {t: None if c is None else c[k] for t, c in cps.items()}
            masks = pp.apply(probs[self.tta][k], self.params, cp[self.tta])
            self.rows += sub.mask_rows(image_id, masks)
            self.done.append(image_id)
            if self.table is not None:
                self._score(image_id, masks, {t: p[k] for t, p in probs.items()}, cp)

    def _score(
        self,
        image_id: str,
        masks: np.ndarray,
        probs: dict[str, np.ndarray],
        class_probs: dict[str, np.ndarray | None],
    ) -> None:
        truth = image_masks(self.table.get(image_id, {}), image_id=image_id)
        for (t, p), prm in self.variants.items():
            pred = masks if (t, p) == self.main else pp.apply(probs[t], prm, class_probs[t])
            self.counts[(t, p)].append(metrics.pixel_counts(pred, truth))


def _clear(out: Path) -> None:
    """Make the output folder; remove a former run's ``skipped.csv`` and partial submission."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("skipped.csv", "submission.partial.csv", MEMBERS_FILE):
        (out / stale).unlink(missing_ok=True)


def _collect(run: _Collector, batches: Iterable[Batch], out: Path) -> None:
    """Add every batch; on a bad image keep the masks made so far in ``submission.partial.csv``."""
    try:
        for batch in batches:
            run.add(batch)
    except InferenceError as e:
        if run.rows:
            partial = out / "submission.partial.csv"
            write_csv(partial, pd.DataFrame(run.rows, columns=sub.SUBMISSION_COLUMNS))
            raise InferenceError(f"{e} (masks of the {len(run.done)} images before it: {partial})") from None
        raise


def _write_submission(
    run: _Collector, out: Path, ens: Ensemble, postprocess: str, note: str
) -> dict[str, Any]:
    """Write (and validate) ``submission.csv`` -> the summary: its path, counts, settings, model."""
    return {
        "submission": sub.write_submission(run.rows, out / "submission.csv", run.done),
        "images": len(run.done),
        "skipped": len(run.skipped),
        "tta": run.tta,
        "postprocess": postprocess,
        "model": ens.describe(),
        "note": note,
    }


def _write_skipped(skipped: list[tuple[str, str]], out: Path) -> dict[str, Path]:
    """``skipped.csv`` (ImageId, reason) when images were skipped -> {"skipped_csv": path} or {}."""
    if not skipped:
        return {}
    write_csv(out / "skipped.csv", pd.DataFrame(skipped, columns=["ImageId", "reason"]))
    return {"skipped_csv": out / "skipped.csv"}


def _write_evaluation(
    run: _Collector, out: Path, classes: Sequence[int], overlays: int
) -> tuple[dict[str, Any], list[str]]:
    """The evaluation tables -> ({name: path, "kaggle": metric}, the worst images, to show)."""
    counts = {v: np.stack(c) for v, c in run.counts.items()}
    files, worst = evaluation.write_evaluation(counts, run.done, out, run.main, classes, k=max(20, overlays))
    return files, worst["ImageId"].head(overlays).tolist()


def _overlays(
    images: Any,
    show: Sequence[str],
    rows: Sequence[tuple[str, str, int]],
    table: dict[str, dict[int, str]] | None,
    out: Path,
) -> list[Path]:
    """PNG overlays of the images ``show``: prediction from the submission rows, truth from labels."""
    from .viz import save_overlays  # matplotlib: only when overlays are asked for

    paths = {p.name: p for p in image_paths(images)}
    preds = {(i, int(c)): e for i, e, c in rows}

    def items() -> Iterator[tuple]:
        for image_id in show:
            image = cv2.resize(read_image(paths[image_id]), (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
            pred = np.stack([rle.decode(preds[(image_id, c)]) for c in range(1, N_CLASSES + 1)])
            truth = image_masks(table.get(image_id, {}), image_id=image_id) if table is not None else None
            yield image_id, image, pred, truth

    return save_overlays(items(), out)
