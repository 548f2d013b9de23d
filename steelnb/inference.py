"""From a checkpoint to probabilities, masks, a Kaggle submission and an evaluation.

Images are decoded by content on the CPU (DataLoader workers), resized to the model's size,
normalised (ImageNet) and flipped for test-time augmentation on the device; the averaged
sigmoid probabilities are resized back to 256 x 1600. ``predict`` yields one batch at a time,
so thousands of images never sit in memory at full resolution.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import metrics
from . import postprocess as pp
from .config import HEIGHT, N_CLASSES, WIDTH
from .errors import SteelnbError
from .fileio import write_csv
from .images import IMAGE_SUFFIXES, IMAGENET_MEAN, IMAGENET_STD, list_images, read_image

#: Flip dimensions of each test-time augmentation, on (N, C, H, W): -1 horizontal, -2 vertical.
TTA_FLIPS: dict[str, tuple[tuple[int, ...], ...]] = {
    "none": ((),),
    "h": ((), (-1,)),
    "hv": ((), (-1,), (-2,), (-2, -1)),
}


class InferenceError(SteelnbError):
    """Bad inference input (no images, unknown option, unreadable image); names the file."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" -> CUDA when available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def image_paths(images: str | Path | Sequence[str | Path]) -> list[Path]:
    """A folder (its .jpg/.jpeg/.png files, sorted) or a list of image files -> paths.

    Raises ``InferenceError`` for a missing or empty folder and for two files of one name
    (the submission keys images by file name).
    """
    if isinstance(images, (str, Path)):
        folder = Path(images)
        if not folder.is_dir():
            raise InferenceError(f"{folder}: image folder not found")
        paths = [folder / n for n in list_images(folder)]
        if not paths:
            raise InferenceError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return paths
    paths = [Path(p) for p in images]
    if not paths:
        raise InferenceError("empty list of images")
    names = [p.name for p in paths]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InferenceError(f"several images named {dup[0]}: image ids (file names) must be unique")
    return paths


class _Images(torch.utils.data.Dataset):
    """uint8 images (H, W, 3) at the model's size; a bad file yields its error text instead."""

    def __init__(self, paths: Sequence[Path], size: tuple[int, int]) -> None:
        self.paths, self.size = list(paths), size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str]:
        try:
            image = read_image(self.paths[i])
        except (ValueError, OSError) as e:
            return i, None, str(e) or f"{self.paths[i]}: unreadable image"
        h, w = self.size
        if image.shape[:2] != (h, w):  # same interpolation as albumentations' Resize
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        return i, image, ""


def _collate(items: list) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    """-> (indices of good images, uint8 (B, H, W, 3) stacked in the worker so it can be pinned, errors)."""
    good = [(i, image) for i, image, _ in items if image is not None]
    x = torch.from_numpy(np.stack([image for _, image in good])) if good else None
    return [i for i, _ in good], x, [(i, reason) for i, image, reason in items if image is None]


@dataclass
class Batch:
    """One batch of predictions: ``probs`` (B, 4, H, W) float32 in [0, 1] or uint8 x255.

    ``plain``: the same without TTA (only with ``with_plain``); ``skipped``: (image id, reason).
    """

    ids: list[str]
    probs: np.ndarray
    plain: np.ndarray | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


@torch.no_grad()
def predict_tensor(
    model: nn.Module,
    images: torch.Tensor,
    tta: str = "none",
    out_size: tuple[int, int] | None = (HEIGHT, WIDTH),
    with_plain: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 images (B, H, W, 3) on the model's device -> (probs, plain) float32 (B, C, *out_size).

    The flips of ``tta`` run as one batch of size B x len(flips); their sigmoid probabilities are
    flipped back and averaged. ``plain`` is the identity flip alone (None unless ``with_plain``).
    """
    if tta not in TTA_FLIPS:
        raise InferenceError(f"tta={tta!r}: expected one of {', '.join(TTA_FLIPS)}")
    flips = TTA_FLIPS[tta]
    dev = images.device
    mean = torch.tensor(IMAGENET_MEAN, device=dev).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=dev).view(1, 3, 1, 1) * 255
    x = (images.permute(0, 3, 1, 2).float() - mean) / std
    x = torch.cat([x.flip(f) if f else x for f in flips])
    if dev.type == "cuda":  # channels_last pays on CUDA only (slower on CPU in bench_train)
        x = x.contiguous(memory_format=torch.channels_last)
    with _autocast(dev):
        logits = model(x)
    probs = torch.sigmoid(logits.float()).chunk(len(flips))
    probs = [p.flip(f) if f else p for p, f in zip(probs, flips)]
    avg = torch.stack(probs).mean(0) if len(probs) > 1 else probs[0]
    plain = probs[0] if with_plain else None
    if out_size is not None and tuple(avg.shape[-2:]) != tuple(out_size):
        avg = F.interpolate(avg, size=out_size, mode="bilinear", align_corners=False)
        plain = (
            None
            if plain is None
            else F.interpolate(plain, size=out_size, mode="bilinear", align_corners=False)
        )
    return avg, plain


def predict(
    model: nn.Module,
    images: str | Path | Sequence[str | Path],
    size: tuple[int, int] | None = None,
    tta: str = "none",
    batch_size: int = 8,
    device: str | torch.device = "auto",
    on_error: str = "raise",
    out_size: tuple[int, int] = (HEIGHT, WIDTH),
    quantize: bool = False,
    with_plain: bool = False,
    num_workers: int | None = None,
    progress: bool = True,
) -> Iterator[Batch]:
    """Yield ``Batch`` es of probabilities (B, C, *out_size) for a folder or list of images.

    ``size`` (H, W) is the model's input size (default: the output size). On CUDA: autocast
    (bf16, else fp16) and channels_last. ``quantize`` returns uint8 x255 probabilities (4x less
    memory). ``on_error="skip"`` reports bad files in ``Batch.skipped`` and goes on; "raise"
    raises ``InferenceError`` naming the file after the earlier batches were yielded.
    """
    if on_error not in ("raise", "skip"):
        raise InferenceError(f"on_error={on_error!r}: expected 'raise' or 'skip'")
    if tta not in TTA_FLIPS:
        raise InferenceError(f"tta={tta!r}: expected one of {', '.join(TTA_FLIPS)}")
    paths = image_paths(images)
    dev = resolve_device(device)
    model = model.to(dev).eval()
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if num_workers is None:
        num_workers = min(8, os.cpu_count() or 1) if dev.type == "cuda" else 0
    loader = torch.utils.data.DataLoader(
        _Images(paths, tuple(size or out_size)),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=dev.type == "cuda",
    )
    with tqdm(total=len(paths), desc=f"predict (tta={tta})", unit="img", disable=not progress) as bar:
        for index, x, errors in loader:
            skipped = [(paths[i].name, reason) for i, reason in errors]
            ids = [paths[i].name for i in index]
            probs = plain = np.zeros((0, N_CLASSES, *out_size), np.uint8 if quantize else np.float32)
            if x is not None:
                p, q = predict_tensor(model, x.to(dev, non_blocking=True), tta, out_size, with_plain)
                conv = (lambda t: (t * 255).round_().to(torch.uint8)) if quantize else (lambda t: t)
                probs = conv(p).cpu().numpy()
                plain = conv(q).cpu().numpy() if q is not None else None
            bar.update(len(index) + len(errors))
            # the good images of a batch are yielded before its first bad file raises
            yield Batch(ids, probs, plain if with_plain else None, [] if on_error == "raise" else skipped)
            if skipped and on_error == "raise":
                name, reason = skipped[0]
                raise InferenceError(reason if name in reason else f"{name}: {reason}")


def load(weights: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Any]:
    """``models.load_model`` with a clear error for a missing path: -> (model in eval mode, ModelInfo)."""
    from .models import load_model

    if not Path(weights).exists():
        raise InferenceError(f"{weights}: checkpoint or run folder not found")
    model, info = load_model(weights, map_location="cpu")
    return model.to(resolve_device(device)).eval(), info


def _four(probs: np.ndarray, class_id: int | None) -> np.ndarray:
    """A one-class model's output (B, 1, H, W) placed at class ``class_id`` of (B, 4, H, W)."""
    if probs.shape[1] == N_CLASSES:
        return probs
    out = np.zeros((probs.shape[0], N_CLASSES, *probs.shape[2:]), probs.dtype)
    out[:, int(class_id) - 1] = probs[:, 0]
    return out


def _check_classes(info: Any, class_id: int | None) -> str:
    """A note for one-class checkpoints; errors for a missing or needless ``class_id``."""
    if info.classes == N_CLASSES:
        if class_id is not None:
            raise InferenceError(
                f"{info.path}: class_id={class_id} given, but the model predicts all {N_CLASSES} classes"
            )
        return ""
    if info.classes != 1:
        raise InferenceError(f"{info.path}: model has {info.classes} classes; expected {N_CLASSES} or 1")
    if class_id not in range(1, N_CLASSES + 1):
        raise InferenceError(
            f"{info.path}: one-class checkpoint: name the class its mask stands for "
            f"with class_id (--class-id) 1..{N_CLASSES}, got {class_id}"
        )
    return f"one-class checkpoint: masks written for class {class_id} only; the other classes are left empty"


def _truth(labels: dict[str, dict[int, str]] | None, image_id: str) -> np.ndarray:
    """Truth masks (4, 256, 1600) of one image from {ImageId: {ClassId: RLE}} (empty when absent)."""
    from .labels import image_masks

    return image_masks((labels or {}).get(image_id, {}), image_id=image_id)


def _by_image(labels: str | Path) -> dict[str, dict[int, str]]:
    from .labels import read_labels

    table = read_labels(labels)
    out: dict[str, dict[int, str]] = {}
    for image_id, c, enc in table.itertuples(index=False):
        out.setdefault(image_id, {})[int(c)] = enc
    return out


def tune(
    weights: str | Path,
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

    Defaults: the run's own validation images (its config's data, fold and subset). Probabilities
    are kept as uint8 at ``size`` (H, W) (N x 4 x H x W bytes) and truth resized (nearest).
    ``grids``: thresholds, min_areas, top_probs, total_areas of ``tune_postprocess``.
    """
    model, info = load(weights, device)
    _check_classes(info, class_id)
    if images is None or labels is None or image_ids is None:
        from .dataset import SteelDataModule

        if info.config is None:
            raise InferenceError(
                f"{weights}: no training config in the checkpoint: pass images, labels and image_ids"
            )
        dm = SteelDataModule(info.config)
        images, image_ids = images or dm.images_dir, image_ids or dm.val_ids
        labels = labels or info.config.resolve(info.config.labels)
    table = _by_image(labels)
    paths = [Path(images) / i for i in image_ids] if image_ids is not None else images
    probs, truth = [], []
    for batch in predict(
        model,
        paths,
        (info.height or HEIGHT, info.width or WIDTH),
        tta,
        batch_size,
        device,
        out_size=size,
        quantize=True,
        progress=progress,
    ):
        probs.append(_four(batch.probs, class_id))
        for image_id in batch.ids:
            t = _truth(table, image_id)
            truth.append(np.stack([cv2.resize(m, size[::-1], interpolation=cv2.INTER_NEAREST) for m in t]))
    params = pp.tune_postprocess(np.concatenate(probs), np.stack(truth), **grids)
    if save:
        params.to_yaml(info.path.parent / pp.FILE_NAME)
    return params


def run_predict(
    weights: str | Path,
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
    """Predict a folder of images: ``<out>/submission.csv`` (+ ``skipped.csv``, ``overlays/*.png``).

    Uses ``postprocess.yaml`` beside the checkpoint when present (else threshold 0.5). With
    ``labels``: ``evaluation.csv`` (Dice, IoU, Kaggle metric per class; raw and post-processed;
    without and with TTA), ``presence.csv`` and ``worst.csv``; overlays then show the worst images.
    With ``on_error="raise"`` a bad image stops the run, the masks made so far are kept in
    ``submission.partial.csv`` and the error names the file. Returns a summary dict.
    """
    from . import evaluation
    from . import submission as sub

    out = Path(out)
    model, info = load(weights, device)
    note = _check_classes(info, class_id)
    loaded = pp.load_params(info.path)
    params = loaded or pp.PostParams()
    table = _by_image(labels) if labels is not None else None
    classes = [class_id - 1] if note else list(range(N_CLASSES))
    main = (tta, "postprocessed" if loaded else "raw")
    variants = {
        (t, p): prm
        for t in dict.fromkeys(["none", tta])
        for p, prm in [("raw", pp.PostParams()), ("postprocessed", params)]
        if p == "raw" or loaded
    }
    if table is None:
        variants = {main: params}
    rows: list[tuple[str, str, int]] = []
    counts: dict[tuple[str, str], list[np.ndarray]] = {v: [] for v in variants}
    done: list[str] = []
    skipped: list[tuple[str, str]] = []
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("skipped.csv", "submission.partial.csv"):
        (out / stale).unlink(missing_ok=True)
    stream = predict(
        model,
        images,
        (info.height or HEIGHT, info.width or WIDTH),
        tta,
        batch_size,
        device,
        on_error,
        quantize=True,
        with_plain=table is not None and tta != "none",
        progress=progress,
    )
    try:
        for batch in stream:
            skipped += batch.skipped
            probs = {tta: _four(batch.probs, class_id)}
            if batch.plain is not None:
                probs["none"] = _four(batch.plain, class_id)
            for k, image_id in enumerate(batch.ids):
                masks = pp.apply(probs[tta][k], params)
                rows += sub.mask_rows(image_id, masks)
                done.append(image_id)
                if table is not None:
                    truth = _truth(table, image_id)
                    for (t, p), prm in variants.items():
                        pred = masks if (t, p) == main else pp.apply(probs[t][k], prm)
                        counts[(t, p)].append(metrics.pixel_counts(pred, truth))
    except InferenceError as e:
        if rows:
            write_csv(out / "submission.partial.csv", pd.DataFrame(rows, columns=sub.SUBMISSION_COLUMNS))
            partial = out / "submission.partial.csv"
            raise InferenceError(f"{e} (masks of the {len(done)} images before it: {partial})") from None
        raise
    if not done:
        raise InferenceError(
            f"{images}: no image could be read ({len(skipped)} skipped, first: {skipped[0][1]})"
        )
    result: dict[str, Any] = {
        "submission": sub.write_submission(rows, out / "submission.csv", done),
        "images": len(done),
        "skipped": len(skipped),
        "tta": tta,
        "postprocess": str(info.path.parent / pp.FILE_NAME) if loaded else "default",
        "model": f"{info.arch}/{info.encoder} ({info.source}, {info.classes} classes)",
        "note": note,
    }
    if skipped:
        result["skipped_csv"] = out / "skipped.csv"
        write_csv(result["skipped_csv"], pd.DataFrame(skipped, columns=["ImageId", "reason"]))
    show = done[:overlays]
    if table is not None:
        files, worst = evaluation.write_evaluation(
            {v: np.stack(c) for v, c in counts.items()}, done, out, main, classes, k=max(20, overlays)
        )
        result.update(files)
        show = worst["ImageId"].head(overlays).tolist()
    if overlays > 0:
        result["overlays"] = _overlays(images, show, rows, table, out / "overlays")
    return result


def _overlays(
    images: Any,
    show: Sequence[str],
    rows: Sequence[tuple[str, str, int]],
    table: dict[str, dict[int, str]] | None,
    out: Path,
) -> list[Path]:
    """PNG overlays of the images ``show``: prediction from the submission rows, truth from labels."""
    from .rle import decode
    from .viz import save_overlays

    paths = {p.name: p for p in image_paths(images)}
    preds = {(i, int(c)): e for i, e, c in rows}

    def items() -> Iterator[tuple]:
        for image_id in show:
            image = cv2.resize(read_image(paths[image_id]), (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
            pred = np.stack([decode(preds[(image_id, c)]) for c in range(1, N_CLASSES + 1)])
            yield image_id, image, pred, _truth(table, image_id) if table is not None else None

    return save_overlays(items(), out)
