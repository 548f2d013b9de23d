"""From a checkpoint and image files to mask probabilities: the model-facing half of prediction.

Images are decoded by content on the CPU (DataLoader workers), resized to the model's size,
normalised (ImageNet) and flipped for test-time augmentation on the device; the averaged
sigmoid probabilities are resized back to 256 x 1600. ``predict`` yields one batch at a time,
so thousands of images never sit in memory at full resolution. ``load`` reads a checkpoint;
``four_classes`` and ``check_classes`` serve one-class (reference) checkpoints.

A model with an image-level classification head (``models.has_classifier``) gives the map of its
mask logits as its probabilities, and its TTA-averaged class probabilities (B, C) beside them
(``Batch.class_probs``), for the gate of ``postprocess``.
``predict_members`` averages several models (an ensemble: each at its own input size, resized to
one output size); ``predict`` is the case of one model.

What is made of the probabilities lives elsewhere: ``predict_run.run_predict`` writes the
submission and its evaluation, ``evaluation.tune`` tunes post-processing on labelled images.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data.config import HEIGHT, N_CLASSES, WIDTH
from ..data.errors import SteelnbError
from ..data.images import IMAGE_SUFFIXES, IMAGENET_MEAN, IMAGENET_STD, list_images, read_image

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
    counts = Counter(p.name for p in paths)  # one pass: list.count per name was quadratic
    dup = sorted(n for n, k in counts.items() if k > 1)
    if dup:
        raise InferenceError(f"several images named {dup[0]}: image ids (file names) must be unique")
    return paths


class _Images(torch.utils.data.Dataset):
    """uint8 images (H, W, 3), one at each of ``sizes`` (the models' input sizes, (H, W)); a bad
    file yields its error text instead. ``expect`` (H, W): an image of another size is a bad file."""

    def __init__(
        self, paths: Sequence[Path], sizes: Sequence[tuple[int, int]], expect: tuple[int, int] | None = None
    ) -> None:
        self.paths, self.sizes, self.expect = list(paths), [tuple(s) for s in sizes], expect

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, list[np.ndarray] | None, str]:
        try:
            image = read_image(self.paths[i])
        except (ValueError, OSError) as e:
            return i, None, str(e) or f"{self.paths[i]}: unreadable image"
        if self.expect is not None and image.shape[:2] != tuple(self.expect):
            (h, w), (eh, ew) = image.shape[:2], self.expect
            return i, None, f"{self.paths[i]}: image is {h}x{w} (height x width); expected {eh}x{ew}"
        out = []
        for h, w in self.sizes:  # same interpolation as albumentations' Resize
            same = image.shape[:2] == (h, w)
            out.append(image if same else cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR))
        return i, out, ""


def _collate(items: list) -> tuple[list[int], list[torch.Tensor] | None, list[tuple[int, str]]]:
    """-> (indices of good images, per size uint8 (B, H, W, 3) stacked in the worker so it can be
    pinned, errors)."""
    good = [(i, images) for i, images, _ in items if images is not None]
    xs = (
        [torch.from_numpy(np.stack([im[k] for _, im in good])) for k in range(len(good[0][1]))]
        if good
        else None
    )
    return [i for i, _ in good], xs, [(i, reason) for i, images, reason in items if images is None]


@dataclass
class Batch:
    """One batch of predictions: ``probs`` (B, 4, H, W) float32 in [0, 1] or uint8 x255.

    ``plain``: the same without TTA (only with ``with_plain``); ``skipped``: (image id, reason).
    ``class_probs``: (B, C) float32, the image-level class probabilities of a model with a
    classification head, averaged over the TTA flips (None without a head); ``plain_class_probs``:
    the same without TTA (only with ``with_plain``).
    """

    ids: list[str]
    probs: np.ndarray
    plain: np.ndarray | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    class_probs: np.ndarray | None = None
    plain_class_probs: np.ndarray | None = None


@dataclass
class Probabilities:
    """``predict_tensors``' output, on the images' device: ``probs`` (B, C, H, W) float32 averaged
    over the TTA flips; ``plain`` the identity flip alone (None unless asked for); ``class_probs``
    (B, C) float32 and ``plain_class_probs`` the same for the classification head (None without one)."""

    probs: torch.Tensor
    plain: torch.Tensor | None = None
    class_probs: torch.Tensor | None = None
    plain_class_probs: torch.Tensor | None = None


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def _normalised(images: torch.Tensor, flips: Sequence[tuple[int, ...]]) -> torch.Tensor:
    """uint8 images (B, H, W, 3) -> normalised float (B x len(flips), 3, H, W), flip by flip."""
    dev = images.device
    mean = torch.tensor(IMAGENET_MEAN, device=dev).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=dev).view(1, 3, 1, 1) * 255
    x = (images.permute(0, 3, 1, 2).float() - mean) / std
    x = torch.cat([x.flip(f) if f else x for f in flips])
    # channels_last: CUDA's tensor cores want it, and on CPU oneDNN ran the study's encoders
    # 1.18-1.35x faster with it at inference at 64x416 (bench/bench_layout.py; training measured
    # it slower, so SegmentationModule keeps NCHW on CPU)
    return x.contiguous(memory_format=torch.channels_last)


def _resized(t: torch.Tensor | None, out_size: tuple[int, int] | None) -> torch.Tensor | None:
    if t is None or out_size is None or tuple(t.shape[-2:]) == tuple(out_size):
        return t
    return F.interpolate(t, size=out_size, mode="bilinear", align_corners=False)


@torch.no_grad()
def predict_tensors(
    model: nn.Module,
    images: torch.Tensor,
    tta: str = "none",
    out_size: tuple[int, int] | None = (HEIGHT, WIDTH),
    with_plain: bool = False,
) -> Probabilities:
    """uint8 images (B, H, W, 3) on the model's device -> ``Probabilities`` (B, C, *out_size).

    The flips of ``tta`` run as one batch of size B x len(flips); their sigmoid probabilities are
    flipped back and averaged. A model with a classification head gives the same map (of its mask
    logits alone: the mask loss is trained on every image, so sigmoid(mask) is already P(pixel is
    class c), and multiplying by P(c in the image) counted an absent class twice) and its class
    probabilities sigmoid(class logits) (B, C), averaged over the flips too, for the gate.
    """
    from ..model.models import split_logits

    if tta not in TTA_FLIPS:
        raise InferenceError(f"tta={tta!r}: expected one of {', '.join(TTA_FLIPS)}")
    flips = TTA_FLIPS[tta]
    with _autocast(images.device):
        masks, labels = split_logits(model(_normalised(images, flips)))
    # an exported graph (``exported.OnnxModel``) ends in its sigmoid: an ensemble's mean of them
    prob = (lambda t: t.float()) if getattr(model, "outputs_probabilities", False) else torch.sigmoid
    probs = prob(masks.float()).chunk(len(flips))
    probs = [p.flip(f) if f else p for p, f in zip(probs, flips)]
    avg = torch.stack(probs).mean(0) if len(probs) > 1 else probs[0]
    out = Probabilities(_resized(avg, out_size), _resized(probs[0], out_size) if with_plain else None)
    if labels is not None:  # image-level: flips change nothing to undo
        cls = prob(labels.float()).chunk(len(flips))
        out.class_probs = torch.stack(cls).mean(0) if len(cls) > 1 else cls[0]
        out.plain_class_probs = cls[0] if with_plain else None
    return out


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
    ``predict_tensors`` gives the class probabilities of a model with a classification head too.
    """
    out = predict_tensors(model, images, tta, out_size, with_plain)
    return out.probs, out.plain


def _accumulate(total: Probabilities | None, part: Probabilities) -> Probabilities:
    """Running sums of members' ``Probabilities``; class probabilities only while every member has them."""
    if total is None:
        return part
    both = total.class_probs is not None and part.class_probs is not None

    def add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
        return None if a is None or b is None else a + b

    return Probabilities(
        total.probs + part.probs,
        add(total.plain, part.plain),
        add(total.class_probs, part.class_probs) if both else None,
        add(total.plain_class_probs, part.plain_class_probs) if both else None,
    )


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
    (bf16, else fp16); channels_last on every device (the model is converted in place).
    ``quantize`` returns uint8 x255 probabilities (4x less memory). ``on_error="skip"`` reports bad files in ``Batch.skipped`` and goes on; "raise"
    raises ``InferenceError`` naming the file after the earlier batches were yielded.
    """
    return predict_members(
        [(model, tuple(size or out_size))],
        images,
        tta,
        batch_size,
        device,
        on_error,
        out_size,
        quantize,
        with_plain,
        num_workers,
        progress,
    )


def predict_members(
    members: Sequence[tuple[nn.Module, tuple[int, int]]],
    images: str | Path | Sequence[str | Path],
    tta: str = "none",
    batch_size: int = 8,
    device: str | torch.device = "auto",
    on_error: str = "raise",
    out_size: tuple[int, int] = (HEIGHT, WIDTH),
    quantize: bool = False,
    with_plain: bool = False,
    num_workers: int | None = None,
    progress: bool = True,
    image_size: tuple[int, int] | None = None,
) -> Iterator[Batch]:
    """``predict`` for an ensemble: (model, input size (H, W)) pairs, each image read once and
    resized to every member's size; yields ``Batch`` es of the members' mean probabilities
    (B, C, *out_size), each member with the flips of ``tta`` and resized to ``out_size`` first.
    ``class_probs`` is the members' mean when every member has a classification head, else None.
    One member gives exactly ``predict``'s numbers. Options as ``predict``'s; ``image_size``
    (H, W): images of another size are bad files (an exported model's sheet size), else any size
    is resized to the members'.
    """
    if not members:
        raise InferenceError("no model to predict with (an empty list of members)")
    if on_error not in ("raise", "skip"):
        raise InferenceError(f"on_error={on_error!r}: expected 'raise' or 'skip'")
    if tta not in TTA_FLIPS:
        raise InferenceError(f"tta={tta!r}: expected one of {', '.join(TTA_FLIPS)}")
    paths = image_paths(images)
    dev = resolve_device(device)
    models = [model.to(dev).eval().to(memory_format=torch.channels_last) for model, _ in members]
    sizes = list(dict.fromkeys(tuple(size) for _, size in members))
    which = [sizes.index(tuple(size)) for _, size in members]
    options = _Options(tta, batch_size, on_error, out_size, quantize, with_plain, num_workers, image_size)
    return _batches(paths, models, sizes, which, dev, options, progress)


@dataclass(frozen=True)
class _Options:
    """How ``predict_members`` predicts (its arguments of the same names)."""

    tta: str
    batch_size: int
    on_error: str
    out_size: tuple[int, int]
    quantize: bool
    with_plain: bool
    num_workers: int | None
    image_size: tuple[int, int] | None


def _batches(
    paths: list[Path],
    models: list[nn.Module],
    sizes: list[tuple[int, int]],
    which: list[int],
    dev: torch.device,
    options: _Options,
    progress: bool,
) -> Iterator[Batch]:
    """The generator behind ``predict_members`` (its arguments checked before the first batch is
    asked for): batches of ``paths``, member k predicting the images at ``sizes[which[k]]``."""
    num_workers = options.num_workers
    if num_workers is None:
        num_workers = min(8, os.cpu_count() or 1) if dev.type == "cuda" else 0
    loader = torch.utils.data.DataLoader(
        _Images(paths, sizes, options.image_size),
        batch_size=options.batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=dev.type == "cuda",
    )
    with tqdm(total=len(paths), desc=f"predict (tta={options.tta})", unit="img", disable=not progress) as bar:
        for index, xs, errors in loader:
            skipped = [(paths[i].name, reason) for i, reason in errors]
            batch = _predicted([paths[i].name for i in index], xs, models, which, dev, options)
            batch.skipped = [] if options.on_error == "raise" else skipped
            bar.update(len(index) + len(errors))
            # the good images of a batch are yielded before its first bad file raises
            yield batch
            if skipped and options.on_error == "raise":
                name, reason = skipped[0]
                raise InferenceError(reason if name in reason else f"{name}: {reason}")


def _predicted(
    ids: list[str],
    xs: list[torch.Tensor] | None,
    models: list[nn.Module],
    which: list[int],
    dev: torch.device,
    options: _Options,
) -> Batch:
    """One ``Batch`` of the members' mean probabilities of the good images ``xs`` (one uint8
    (B, H, W, 3) tensor per input size; None: no good image, an empty batch)."""
    out_size, with_plain = options.out_size, options.with_plain
    empty = np.zeros((0, N_CLASSES, *out_size), np.uint8 if options.quantize else np.float32)
    batch = Batch(ids, empty, empty if with_plain else None)
    if xs is None:
        return batch
    xs = [x.to(dev, non_blocking=True) for x in xs]
    total = None
    for model, k in zip(models, which):
        total = _accumulate(total, predict_tensors(model, xs[k], options.tta, out_size, with_plain))
    n, quantize = len(models), options.quantize
    batch.probs = _mean_probs(total.probs, n, quantize)
    batch.plain = _mean_probs(total.plain, n, quantize) if with_plain else None
    batch.class_probs = _mean_class_probs(total.class_probs, n)
    batch.plain_class_probs = _mean_class_probs(total.plain_class_probs, n) if with_plain else None
    return batch


def _mean_probs(total: torch.Tensor | None, n: int, quantize: bool) -> np.ndarray | None:
    """The members' summed probabilities -> their mean as float32, or uint8 x255 with ``quantize``."""
    if total is None:
        return None
    mean = total / n
    return (mean * 255).round_().to(torch.uint8).cpu().numpy() if quantize else mean.cpu().numpy()


def _mean_class_probs(total: torch.Tensor | None, n: int) -> np.ndarray | None:
    """The members' summed class probabilities (B, C) -> their mean, float32."""
    return None if total is None else (total / n).float().cpu().numpy()


def load(weights: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Any]:
    """``models.load_model`` with a clear error for a missing path: -> (model in eval mode, ModelInfo)."""
    from ..model.models import load_model

    if not Path(weights).exists():
        raise InferenceError(f"{weights}: checkpoint or run folder not found")
    model, info = load_model(weights, map_location="cpu")
    return model.to(resolve_device(device)).eval(), info


def four_classes(probs: np.ndarray, class_id: int | None) -> np.ndarray:
    """A one-class model's output (B, 1, H, W) placed at class ``class_id`` of (B, 4, H, W); its
    class probabilities (B, 1) likewise in (B, 4)."""
    if probs.shape[1] == N_CLASSES:
        return probs
    out = np.zeros((probs.shape[0], N_CLASSES, *probs.shape[2:]), probs.dtype)
    out[:, int(class_id) - 1] = probs[:, 0]
    return out


def check_classes(info: Any, class_id: int | None) -> str:
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
