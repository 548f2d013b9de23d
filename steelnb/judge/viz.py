"""Pictures people can read: defect outlines over the steel image, truth above prediction.

One colour per class everywhere (Okabe-Ito, safe for colour-blind readers). Every function
returns a ``matplotlib.figure.Figure`` built without pyplot, so a notebook shows it inline and
a batch job can save many without leaking figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..data.config import N_CLASSES
from ..data.fileio import atomic_path

#: Okabe-Ito colours per class 1..4 (orange, sky blue, yellow, reddish purple), RGB hex.
CLASS_COLORS = ("#E69F00", "#56B4E9", "#F0E442", "#CC79A7")
CLASS_NAMES = tuple(f"class {c}" for c in range(1, N_CLASSES + 1))


def class_rgb(c: int) -> tuple[int, int, int]:
    """RGB 0..255 of class index ``c`` (0-based)."""
    h = CLASS_COLORS[c].lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def draw_outlines(
    image: np.ndarray, masks: np.ndarray | None, thickness: int = 2, fill_alpha: float = 0.15
) -> np.ndarray:
    """Image (H, W, 3) or (H, W) uint8 with each class of masks (4, H, W) outlined -> RGB (H, W, 3).

    Masks of another size than the image are resized (nearest). A light fill marks the inside
    so that thin or tiny defects stay visible.
    """
    out = np.ascontiguousarray(
        np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image[..., :3]
    ).copy()
    if masks is None:
        return out
    h, w = out.shape[:2]
    for c in range(min(N_CLASSES, masks.shape[0])):
        m = np.asarray(masks[c], np.uint8)
        if m.shape != (h, w):
            m = cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST)
        if not m.any():
            continue
        color = np.array(class_rgb(c), np.float32)
        if fill_alpha > 0:
            inside = m > 0
            out[inside] = ((1 - fill_alpha) * out[inside] + fill_alpha * color).astype(np.uint8)
        contours, _ = cv2.findContours(m, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, tuple(int(v) for v in color), thickness)
    return out


def legend_handles(classes: Iterable[int] = range(N_CLASSES)) -> list[Patch]:
    """Legend patches for class indices (0-based)."""
    return [Patch(facecolor=CLASS_COLORS[c], edgecolor="black", label=CLASS_NAMES[c]) for c in classes]


def _present(masks: np.ndarray | None) -> list[int]:
    return [] if masks is None else [c for c in range(masks.shape[0]) if np.asarray(masks[c]).any()]


def overlay_figure(
    image: np.ndarray,
    pred: np.ndarray | None = None,
    truth: np.ndarray | None = None,
    title: str = "",
    width_in: float = 14.0,
) -> Figure:
    """One image with truth (top, when given) and prediction (below) outlined; masks (4, H, W).

    Panels are stacked vertically: a 1600 x 256 image reads best full width.
    """
    panels = [(n, m) for n, m in (("truth", truth), ("prediction", pred)) if m is not None] or [
        ("image", None)
    ]
    h, w = image.shape[:2]
    fig = Figure(figsize=(width_in, width_in * h / w * len(panels) + 0.6 * len(panels) + 0.4))
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, (name, masks) in zip(axes, panels):
        ax.imshow(draw_outlines(image, masks))
        ax.set_title(f"{title}  {name}".strip(), fontsize=10, loc="left")
        ax.set_axis_off()
    shown = sorted(set(_present(truth)) | set(_present(pred)))
    if shown:
        fig.legend(
            handles=legend_handles(shown), loc="upper right", ncol=len(shown), fontsize=9, frameon=False
        )
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Save as PNG via a temporary file then rename (a half-written picture never appears)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return Path(path)


def save_overlays(
    items: Iterable[tuple[str, np.ndarray, np.ndarray | None, np.ndarray | None]],
    out_dir: str | Path,
    dpi: int = 100,
) -> list[Path]:
    """Write ``<out_dir>/<image stem>.png`` for each (image_id, image, pred, truth); returns the paths."""
    paths = []
    for image_id, image, pred, truth in items:
        fig = overlay_figure(image, pred, truth, title=image_id)
        paths.append(save_figure(fig, Path(out_dir) / f"{Path(image_id).stem}.png", dpi=dpi))
    return paths


def masks_from_labels(
    labels: pd.DataFrame, image_id: str, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Truth masks (4, H, W) of one image from the tidy label table (empty when unlabelled)."""
    from ..data.labels import image_masks

    rows = labels[labels["ImageId"] == image_id]
    enc = dict(zip(rows["ClassId"].astype(int), rows["EncodedPixels"]))
    return image_masks(enc, shape, image_id) if shape else image_masks(enc, image_id=image_id)


def show_examples(
    images_dir: str | Path,
    labels: pd.DataFrame | str | Path,
    image_ids: Sequence[str],
    preds: Mapping[str, np.ndarray] | None = None,
    width_in: float = 14.0,
) -> Figure:
    """Several images stacked, truth outlined (and prediction, when ``preds`` maps id -> (4, H, W)).

    ``labels`` is the tidy table or a label CSV. Meant for notebooks: the figure shows inline.
    """
    from ..data.images import read_image
    from ..data.labels import read_labels

    if not isinstance(labels, pd.DataFrame):
        labels = read_labels(labels)
    rows = []
    for image_id in image_ids:
        image = read_image(Path(images_dir) / image_id)
        truth = masks_from_labels(labels, image_id, image.shape[:2])
        rows.append((image_id, "truth", draw_outlines(image, truth), truth))
        if preds is not None and image_id in preds:
            rows.append((image_id, "prediction", draw_outlines(image, preds[image_id]), preds[image_id]))
    if not rows:
        raise ValueError("show_examples: no image ids given")
    h, w = rows[0][2].shape[:2]
    fig = Figure(figsize=(width_in, len(rows) * (width_in * h / w + 0.4) + 0.4))
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    shown: set[int] = set()
    for ax, (image_id, kind, picture, masks) in zip(axes, rows):
        ax.imshow(picture)
        present = _present(masks)
        shown |= set(present)
        classes = ", ".join(str(c + 1) for c in present) or "none"
        ax.set_title(f"{image_id}  {kind}: classes {classes}", fontsize=9, loc="left")
        ax.set_axis_off()
    fig.legend(
        handles=legend_handles(sorted(shown) or range(N_CLASSES)),
        loc="upper right",
        ncol=N_CLASSES,
        fontsize=9,
        frameon=False,
    )
    fig.tight_layout()
    return fig


def plot_probabilities(image: np.ndarray, probs: np.ndarray, width_in: float = 14.0) -> Figure:
    """The image and each class's probability map (4, H, W) in [0, 1] or uint8 x255, stacked."""
    probs = np.asarray(probs, np.float32) / (255.0 if np.asarray(probs).dtype == np.uint8 else 1.0)
    h, w = image.shape[:2]
    fig = Figure(figsize=(width_in, (N_CLASSES + 1) * (width_in * h / w + 0.4)))
    axes = fig.subplots(N_CLASSES + 1, 1)
    axes[0].imshow(image, cmap="gray")
    axes[0].set_title("image", fontsize=9, loc="left")
    for c in range(N_CLASSES):
        im = axes[c + 1].imshow(probs[c], vmin=0, vmax=1, cmap="viridis", aspect="auto")
        axes[c + 1].set_title(
            f"{CLASS_NAMES[c]} probability (max {probs[c].max():.2f})", fontsize=9, loc="left", color="black"
        )
    for ax in axes:
        ax.set_axis_off()
    fig.colorbar(im, ax=list(axes), fraction=0.02)
    return fig


def plot_metrics(table: pd.DataFrame, metric: str = "dice", width_in: float = 9.0) -> Figure:
    """Grouped bars of one metric per class from the evaluation table, one bar per variant.

    ``table`` has columns tta, postprocess, class, and the metric (``evaluation.csv``).
    """
    per_class = table[table["class"] != "mean"]
    variants = per_class[["tta", "postprocess"]].drop_duplicates().itertuples(index=False)
    classes = list(dict.fromkeys(per_class["class"]))
    fig = Figure(figsize=(width_in, 3.5))
    ax = fig.subplots()
    variants = list(variants)
    width = 0.8 / max(len(variants), 1)
    for k, (tta, post) in enumerate(variants):
        sub = per_class[(per_class["tta"] == tta) & (per_class["postprocess"] == post)].set_index("class")
        ax.bar(
            np.arange(len(classes)) + k * width,
            [sub.loc[c, metric] for c in classes],
            width,
            label=f"tta={tta}, {post}",
        )
    ax.set_xticks(np.arange(len(classes)) + width * (len(variants) - 1) / 2, [f"class {c}" for c in classes])
    ax.set_ylim(0, 1)
    ax.set_ylabel(metric)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig
