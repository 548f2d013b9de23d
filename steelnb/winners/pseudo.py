"""Pseudo-labels: confident predictions on the unlabelled test images, as extra training data.

The 1st place of the Severstal competition predicted the competition's unlabelled test images
with its ensemble, kept an image when every class was confident (classifier probability >= 0.95
or <= 0.05) and the segmentation agreed, and trained again with those images in each batch.
``select_confident`` is that rule; ``make_pseudo_labels`` applies it to a folder of unlabelled
images (``test_images/``) and writes a label CSV with a JSON summary beside it, which
``TrainConfig.pseudo_labels`` names; ``SteelDataModule`` then draws ``pseudo_share`` of every
training batch from it.

No leak: the labelled images (the run's train, validation and held-out test splits, all from
``train_images/``) never enter a pseudo-labelled set. ``make_pseudo_labels`` refuses the labelled
folder and any labelled image id, and ``SteelDataModule`` checks the ids again when training
starts. Validation, the test split and post-processing tuning see labelled images only.

CSV: ``ImageId,ClassId,EncodedPixels`` with four rows per kept image, one per class, the RLE
(256 x 1600, ``steelnb.data.rle``) empty where the class is confidently absent. ``labels.read_labels``
reads the masks (it drops the empty rows); the ImageId column lists every kept image, the
defect-free ones included.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from torch import nn

from ..data import rle
from ..data.config import HEIGHT, N_CLASSES, WIDTH, ConfigError, TrainConfig
from ..data.errors import SteelnbError
from ..data.fileio import write_csv, write_json
from ..data.images import list_images
from ..data.labels import CLASS_IDS, COLUMNS, read_labels, summary_path
from ..model.runfiles import CONFIG_FILE

#: A run: a run folder or checkpoint file, or an already loaded (model, ModelInfo) pair.
Run = str | Path | tuple[nn.Module, Any]


class PseudoLabelError(SteelnbError):
    """A pseudo-label set would hold a labelled image, or its input is unusable; names the file or id."""


def _as_probs(probs: np.ndarray) -> np.ndarray:
    """float32 probabilities from float in [0, 1] or uint8 x255 (``predict(quantize=True)``)."""
    probs = np.asarray(probs)
    return probs.astype(np.float32) / 255.0 if probs.dtype == np.uint8 else probs.astype(np.float32)


def exclusive_masks(mask_probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Mask probabilities (N, C, H, W) -> bool masks (N, C, H, W) at ``threshold``, one class per
    pixel: where several classes pass, the most probable keeps the pixel (a label decodes only
    when no pixel carries two classes, as in the real data)."""
    probs = _as_probs(mask_probs)
    if probs.ndim != 4:
        raise PseudoLabelError(f"mask probabilities of shape {probs.shape}: expected (N, C, H, W)")
    top = probs.argmax(1)[:, None]
    return (probs >= threshold) & (np.arange(probs.shape[1]).reshape(1, -1, 1, 1) == top)


def select_confident(
    class_probs: np.ndarray | None,
    segmentation: np.ndarray,
    hi: float = 0.95,
    lo: float = 0.05,
    threshold: float = 0.5,
    min_area: int = 1,
) -> np.ndarray:
    """Which images are confident in every class: bool (N,).

    ``class_probs``: (N, C) image-level class probabilities (a classification head), or None.
    ``segmentation``: mask probabilities (N, C, H, W) (float in [0, 1] or uint8 x255), or the
    mask areas (N, C) in pixels after thresholding. An image is kept when, for each class c, the
    image-level probability p is >= ``hi`` or <= ``lo`` and the segmentation agrees: a class with
    p >= ``hi`` has a mask of at least ``min_area`` pixels at ``threshold`` (pixels where two
    classes pass go to the more probable, see ``exclusive_masks``), a class with p <= ``lo`` has
    fewer (none with the default ``min_area=1``).

    Without ``class_probs`` (a model without a classification head) the segmentation's own
    confidence stands in: the class's largest pixel probability plays p. That needs the
    probabilities, not areas.
    """
    if not 0 <= lo < hi <= 1:
        raise PseudoLabelError(f"hi={hi}, lo={lo}: expected 0 <= lo < hi <= 1")
    seg = np.asarray(segmentation)
    if seg.ndim == 4:
        probs = _as_probs(seg)
        areas = exclusive_masks(probs, threshold).sum((2, 3))
        p = probs.max((2, 3)) if class_probs is None else np.asarray(class_probs, dtype=np.float32)
    elif seg.ndim == 2:
        if class_probs is None:
            raise PseudoLabelError(
                "select_confident: mask areas (N, C) without class probabilities; give the mask "
                "probabilities (N, C, H, W), whose largest pixel value stands in for the class probability"
            )
        areas, p = seg, np.asarray(class_probs, dtype=np.float32)
    else:
        raise PseudoLabelError(
            f"segmentation of shape {seg.shape}: expected probabilities (N, C, H, W) or areas (N, C)"
        )
    if p.shape != areas.shape:
        raise PseudoLabelError(
            f"class probabilities {p.shape} and segmentation {seg.shape}: expected the same (N, C)"
        )
    present, absent = p >= hi, p <= lo
    agrees = np.where(present, areas >= min_area, areas < min_area)
    return ((present | absent) & agrees).all(1)


# -- the runs and what they were trained on ---------------------------------------------------------
def _run_config(path: Path | None, info: Any) -> TrainConfig | None:
    """The run's config: ``config.yaml`` of its folder (paths as written there), else the checkpoint's."""
    folder = None if path is None else (path if path.is_dir() else path.parent)
    if folder is not None and (folder / CONFIG_FILE).is_file():
        try:
            return TrainConfig.from_yaml(folder / CONFIG_FILE)
        except ConfigError:
            pass
    return getattr(info, "config", None)


def _load_runs(
    runs: Run | Sequence[Run], device: str
) -> list[tuple[nn.Module, Any, str, TrainConfig | None]]:
    """(model, info, name, config) per run; every model predicts the four classes."""
    from ..judge.inference import load

    items: list[Run] = [runs] if isinstance(runs, (str, Path, tuple)) else list(runs)
    if not items:
        raise PseudoLabelError("no runs given: pass a run folder, a checkpoint or (model, info) pairs")
    out = []
    for item in items:
        if isinstance(item, tuple):
            model, info = item
            known = getattr(info, "path", None)
            path = None if known is None else Path(known)
            name = str(known) if known is not None else f"model {len(out)}"
        else:
            path = Path(item)
            model, info = load(path, device="cpu")
            name = str(path)
        if getattr(info, "classes", N_CLASSES) != N_CLASSES:
            raise PseudoLabelError(
                f"{name}: the model predicts {info.classes} class(es); pseudo-labels need all {N_CLASSES}"
            )
        out.append((model, info, name, _run_config(path, info)))
    return out


def _labelled(
    runs: Iterable[tuple[str, TrainConfig | None]],
    labelled_ids: Iterable[str] | None,
    labelled_dirs: Iterable[str | Path],
) -> tuple[set[str], list[Path]]:
    """(labelled image ids, labelled image folders): the ids given, every image of the folders
    given, and every image of each run's labelled folder and label file (its train, validation
    and test splits are among them). Without ids or folders given, a run whose labelled data
    cannot be found here (no config, or its data moved) is an error naming the run."""
    ids = set() if labelled_ids is None else {str(i) for i in labelled_ids}
    folders = [Path(d) for d in labelled_dirs]
    given = labelled_ids is not None or bool(folders)
    for name, cfg in runs:
        found = False
        if cfg is not None:
            folder, labels = cfg.resolve(cfg.images), cfg.resolve(cfg.labels)
            folders.append(folder)
            if labels.is_file():
                ids |= set(read_labels(labels, validate=False)["ImageId"])
                found = True
            found = found or folder.is_dir()
        if not found and not given:
            where = "it has no config" if cfg is None else f"{cfg.resolve(cfg.images)} is not here"
            raise PseudoLabelError(
                f"{name}: cannot tell which images are labelled ({where}); pass labelled_ids (the run's "
                "train, validation and test image ids) or labelled_dirs"
            )
    for folder in folders:
        if folder.is_dir():
            ids |= set(list_images(folder))
    return ids, folders


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


# -- making the set -----------------------------------------------------------------------------
def make_pseudo_labels(
    runs: Run | Sequence[Run],
    images: str | Path,
    out_csv: str | Path,
    labelled_ids: Iterable[str] | None = None,
    *,
    labelled_dirs: Iterable[str | Path] = (),
    hi: float = 0.95,
    lo: float = 0.05,
    threshold: float = 0.5,
    min_area: int = 1,
    on_labelled: str = "raise",
    tta: str = "none",
    batch_size: int = 8,
    device: str = "auto",
    progress: bool = False,
) -> dict[str, Any]:
    """Predict the unlabelled images of folder ``images``, keep the confident ones, write their labels.

    ``runs``: one run (a run folder, a checkpoint, or a loaded ``(model, ModelInfo)``) or several,
    whose mask probabilities (256 x 1600) are averaged; so are their image-level probabilities (a
    model without a classification head contributes its largest pixel probability per class; with
    no head at all ``select_confident``'s fallback applies to the averaged masks). An image is kept
    by ``select_confident(hi, lo, threshold, min_area)``; its labels are the masks of the classes
    at >= ``hi`` (``exclusive_masks``), empty for the others.

    No leak: ``images`` must not be a labelled folder (each run's ``images`` folder, or one of
    ``labelled_dirs``), and no image of it may be labelled: the ids in ``labelled_ids`` and every
    image of the runs' labelled folders and label files (their train, validation and test splits).
    Such an image raises ``PseudoLabelError`` (``on_labelled="raise"``) or is left out and counted
    (``"skip"``). Writes ``out_csv`` (the module's format) and ``summary_path(out_csv)``, each
    atomically, and returns the summary: runs, folder, thresholds, images seen / kept, per-class
    counts of the kept images, images left out.
    """
    _check_options(on_labelled, hi, lo)
    folder, out_csv = Path(images), Path(out_csv)
    loaded = _load_runs(runs, device)
    known, labelled_folders = _labelled([(n, c) for _, _, n, c in loaded], labelled_ids, labelled_dirs)
    names, overlap, unlabelled = _unlabelled(folder, known, labelled_folders, on_labelled)
    files = [folder / n for n in unlabelled]
    streams = _prediction_streams(
        loaded, files, tta=tta, batch_size=batch_size, device=device, progress=progress
    )
    kept = _confident_rows(streams, folder, hi, lo, threshold, min_area)
    write_csv(out_csv, pd.DataFrame(kept.rows, columns=COLUMNS))
    rule = {"hi": hi, "lo": lo, "threshold": threshold, "min_area": min_area, "tta": tta}
    summary = _summary(out_csv, folder, [n for _, _, n, _ in loaded], rule, names, overlap, known, kept)
    write_json(summary_path(out_csv), summary)
    return summary


def _check_options(on_labelled: str, hi: float, lo: float) -> None:
    """``make_pseudo_labels``' own options, checked before any run is loaded."""
    if on_labelled not in ("raise", "skip"):
        raise PseudoLabelError(f"on_labelled={on_labelled!r}: expected 'raise' or 'skip'")
    if not 0 <= lo < hi <= 1:
        raise PseudoLabelError(f"hi={hi}, lo={lo}: expected 0 <= lo < hi <= 1")


def _prediction_streams(
    loaded: Sequence[tuple[nn.Module, Any, str, TrainConfig | None]],
    files: Sequence[Path],
    *,
    tta: str,
    batch_size: int,
    device: str,
    progress: bool,
) -> list[Iterator[Any]]:
    """One ``inference.predict`` stream per run over the same ``files`` (each at its run's input
    size, resized to 256 x 1600; unreadable files skipped), the first with the progress bar."""
    from ..judge.inference import image_paths, predict

    paths = image_paths(files)
    return [
        predict(
            model,
            paths,
            (info.height or HEIGHT, info.width or WIDTH),
            tta=tta,
            batch_size=batch_size,
            device=device,
            on_error="skip",
            out_size=(HEIGHT, WIDTH),
            progress=progress and i == 0,
        )
        for i, (model, info, _, _) in enumerate(loaded)
    ]


class _Kept(NamedTuple):
    """What the confidence rule kept of the predicted images."""

    rows: list[tuple[str, int, str]]  # four label rows (ImageId, ClassId, RLE or "") per kept image
    seen: int  # images predicted
    skipped: list[tuple[str, str]]  # (file name, reason) of the unreadable files
    heads: int  # the most runs with a classification head in one batch


def _confident_rows(
    streams: Sequence[Iterator[Any]], folder: Path, hi: float, lo: float, threshold: float, min_area: int
) -> _Kept:
    """The runs' batches side by side, averaged (``_averaged``), the confident images kept
    (``select_confident``) with their label rows (``_label_rows``)."""
    rows: list[tuple[str, int, str]] = []
    seen, skipped, heads = 0, [], 0
    for batches in zip(*streams):
        ids, probs, class_probs, n_heads = _averaged(batches, folder)
        skipped += batches[0].skipped
        seen, heads = seen + len(ids), max(heads, n_heads)
        if ids:
            keep = select_confident(class_probs, probs, hi=hi, lo=lo, threshold=threshold, min_area=min_area)
            rows += _label_rows(ids, probs, class_probs, keep, hi, threshold)
    return _Kept(rows, seen, skipped, heads)


def _summary(
    out_csv: Path,
    folder: Path,
    run_names: list[str],
    rule: dict[str, Any],
    names: Sequence[str],
    overlap: Sequence[str],
    known: set[str],
    kept: _Kept,
) -> dict[str, Any]:
    """The JSON summary of a pseudo-label set: its files, runs, what stood for the image-level
    probability, the rule's settings, and the counts of images seen, kept and left out."""
    heads, rows, n_kept = kept.heads, kept.rows, len(kept.rows) // N_CLASSES
    if heads == len(run_names):
        confidence = "classification head"
    else:
        confidence = "largest pixel probability" if heads == 0 else "head where present, else pixels"
    return {
        "labels": str(out_csv),
        "images_dir": str(folder.resolve()),
        "runs": run_names,
        "confidence": confidence,
        **rule,
        "images_in_folder": len(names),
        "labelled_left_out": len(overlap),
        "seen": kept.seen,
        "kept": n_kept,
        "kept_share": n_kept / kept.seen if kept.seen else 0.0,
        "per_class": {str(c): sum(1 for r in rows if r[1] == c and r[2]) for c in CLASS_IDS},
        "clean": n_kept - len({r[0] for r in rows if r[2]}),
        "unreadable": [f"{name}: {reason}" for name, reason in kept.skipped],
        "labelled_ids_checked": len(known),
    }


def _unlabelled(
    folder: Path, known: set[str], labelled_folders: Sequence[Path], on_labelled: str
) -> tuple[list[str], list[str], list[str]]:
    """(every image name of ``folder``, the labelled ones among them, the unlabelled ones); the
    no-leak checks: ``folder`` is no labelled folder, and a labelled image raises unless skipped."""
    if not folder.is_dir():
        raise PseudoLabelError(f"{folder}: folder of unlabelled images not found")
    for lab in labelled_folders:
        if _same_folder(folder, lab):
            raise PseudoLabelError(
                f"{folder}: this is the labelled image folder {lab} (train, validation and test splits); "
                "pseudo-labels come from the unlabelled images (test_images)"
            )
    names = list_images(folder)
    overlap = sorted(set(names) & known)
    if overlap and on_labelled == "raise":
        raise PseudoLabelError(
            f"{folder}: {len(overlap)} image(s) are labelled (train, validation or test split), first "
            f"{overlap[0]}; a pseudo-label set takes unlabelled images only (on_labelled='skip' leaves them out)"
        )
    unlabelled = [n for n in names if n not in known]
    if not unlabelled:
        raise PseudoLabelError(f"{folder}: no unlabelled images to pseudo-label ({len(names)} labelled)")
    return names, overlap, unlabelled


def _averaged(batches: Sequence[Any], folder: Path) -> tuple[list[str], np.ndarray, np.ndarray | None, int]:
    """One batch of every run -> (ids, mean mask probabilities (N, C, H, W), mean class
    probabilities (N, C) or None, how many runs had a head). A run without a head contributes its
    largest pixel probability per class where others have one."""
    ids = batches[0].ids
    if any(b.ids != ids for b in batches):  # same files, same order: a bug if not
        raise PseudoLabelError(f"{folder}: the runs predicted different images in one batch")
    if not ids:
        return ids, np.zeros((0,)), None, 0
    probs = np.mean([_as_probs(b.probs) for b in batches], axis=0)
    heads = [getattr(b, "class_probs", None) for b in batches]
    n_heads = sum(h is not None for h in heads)
    if n_heads == 0:
        return ids, probs, None, 0
    per_run = [
        np.asarray(h, np.float32) if h is not None else _as_probs(b.probs).max((2, 3))
        for h, b in zip(heads, batches)
    ]
    return ids, probs, np.mean(per_run, axis=0), n_heads


def _label_rows(
    ids: Sequence[str],
    probs: np.ndarray,
    class_probs: np.ndarray | None,
    keep: np.ndarray,
    hi: float,
    threshold: float,
) -> list[tuple[str, int, str]]:
    """Four rows (ImageId, ClassId, RLE or "") per kept image: the mask of each class at >= ``hi``."""
    image_p = probs.max((2, 3)) if class_probs is None else class_probs
    masks = exclusive_masks(probs, threshold)
    return [
        (ids[j], c, rle.encode(masks[j, c - 1]) if image_p[j, c - 1] >= hi else "")
        for j in np.flatnonzero(keep)
        for c in CLASS_IDS
    ]
