"""Defect-to-background contrast: how far a mask's grey level stands from its surroundings.

For each mask the background is a ring around it (the mask dilated by ``ring`` pixels, minus
every defect pixel of the image, minus the dark margin beyond the edge of the sheet). The
signed ``delta`` is defect mean minus ring mean; ``snr`` is ``|delta|`` over the ring's standard
deviation, a contrast measured in units of the background's own texture. Used to compare the
synthetic twin with the real images (notebook 01).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from . import rle
from .errors import SteelnbError
from .images import read_image
from .labels import read_labels

RING = 15  # pixels: wide enough for a stable mean, narrow enough to stay local
DARK_LEVEL = 25  # grey below this is the dark margin beyond the sheet, not background
COLUMNS = [
    "ImageId",
    "ClassId",
    "area",
    "defect_mean",
    "ring_mean",
    "ring_std",
    "ring_area",
    "delta",
    "abs_delta",
    "snr",
]
STATS = ("abs_delta", "snr")


class ContrastError(SteelnbError):
    """An image and a mask do not fit together; the message names the image and what was expected."""


def ring_mask(mask: np.ndarray, ring: int = RING) -> np.ndarray:
    """Pixels within ``ring`` pixels of ``mask`` (H, W) but outside it: bool (H, W).

    The neighbourhood is a disc (elliptic structuring element of diameter 2 * ring + 1).
    """
    if ring < 1:
        raise ContrastError(f"ring={ring}: expected a width of at least 1 pixel")
    m = np.asarray(mask, dtype=bool)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * ring + 1, 2 * ring + 1))
    return cv2.dilate(m.view(np.uint8), kernel).astype(bool) & ~m


def mask_contrast(
    image_grey: np.ndarray,
    mask: np.ndarray,
    ring: int = RING,
    exclude: np.ndarray | None = None,
    dark_level: int = DARK_LEVEL,
    image_id: str = "?",
) -> dict[str, float]:
    """Contrast of one mask against the background ring around it.

    ``image_grey`` uint8 (H, W); ``mask`` bool (H, W), non-empty; ``exclude`` bool (H, W): other
    defect pixels of the image, kept out of the ring. Ring pixels darker than ``dark_level``
    (the margin beyond the sheet) are left out too. Returns area, defect_mean, ring_mean,
    ring_std, ring_area, delta (defect - ring, signed), abs_delta and snr (|delta| / ring_std);
    the ring values are NaN when no background pixel is left (snr is inf for a flat ring).
    """
    img = np.asarray(image_grey)
    m = np.asarray(mask, dtype=bool)
    if img.ndim != 2 or m.shape != img.shape:
        raise ContrastError(
            f"image {image_id}: expected a grey image (H, W) and a mask of the same shape, "
            f"got {img.shape} and {m.shape}"
        )
    if not m.any():
        raise ContrastError(f"image {image_id}: empty mask; expected at least one defect pixel")
    background = ring_mask(m, ring) & (img >= dark_level)
    if exclude is not None:
        background &= ~np.asarray(exclude, dtype=bool)
    defect = img[m].astype(np.float64)
    out = {"area": float(m.sum()), "defect_mean": float(defect.mean()), "ring_area": float(background.sum())}
    if not background.any():
        return {**out, **dict.fromkeys(("ring_mean", "ring_std", "delta", "abs_delta", "snr"), np.nan)}
    around = img[background].astype(np.float64)
    delta = out["defect_mean"] - float(around.mean())
    std = float(around.std())
    snr = abs(delta) / std if std > 0 else (np.inf if delta else 0.0)
    return {
        **out,
        "ring_mean": float(around.mean()),
        "ring_std": std,
        "delta": delta,
        "abs_delta": abs(delta),
        "snr": snr,
    }


def _source(source: str | Path | tuple[str | Path | pd.DataFrame, str | Path]) -> tuple[pd.DataFrame, Path]:
    """(labels, images folder) from a Kaggle-layout folder or a (labels, images_dir) pair."""
    if isinstance(source, tuple):
        labels, images_dir = source
        return (labels if isinstance(labels, pd.DataFrame) else read_labels(labels)), Path(images_dir)
    data_dir = Path(source)
    return read_labels(data_dir / "train.csv"), data_dir / "train_images"


def contrast_table(
    source: str | Path | tuple[str | Path | pd.DataFrame, str | Path],
    max_images: int | None = None,
    ring: int = RING,
    dark_level: int = DARK_LEVEL,
) -> pd.DataFrame:
    """One row per mask of the labelled images: ImageId, ClassId, area, defect_mean, ring_mean,
    ring_std, ring_area, delta, abs_delta, snr.

    ``source`` is a Kaggle-layout folder (``train.csv``, ``train_images/``) or a pair (labels
    file or tidy table, images folder). ``max_images`` keeps the first labelled images in
    ImageId order (ids are random hex, so that is an unbiased sample). The other defects of
    an image are kept out of each mask's ring.
    """
    labels, images_dir = _source(source)
    ids = sorted(labels["ImageId"].unique())[:max_images]
    rows = []
    for image_id in ids:
        grey = read_image(images_dir / image_id)[..., 0]  # three identical grey channels
        own = labels[labels["ImageId"] == image_id]
        masks = {
            int(c): rle.decode(enc, grey.shape).astype(bool)
            for c, enc in own[["ClassId", "EncodedPixels"]].itertuples(index=False)
        }
        defects = np.logical_or.reduce(list(masks.values()))
        for c, m in masks.items():
            stats = mask_contrast(
                grey, m, ring, exclude=defects & ~m, dark_level=dark_level, image_id=image_id
            )
            rows.append({"ImageId": image_id, "ClassId": c, **stats})
    return pd.DataFrame(rows, columns=COLUMNS).astype({"area": int, "ring_area": int})


def contrast_summary(tables: Mapping[str, pd.DataFrame], q: tuple[float, float] = (0.1, 0.9)) -> pd.DataFrame:
    """Per set and class: masks, and the median and ``q`` percentiles of abs_delta and snr.

    ``tables`` maps a set name to a ``contrast_table``. Index (set, ClassId); columns
    ``masks``, ``abs_delta p10``, ``abs_delta median``, ``abs_delta p90``, likewise ``snr``.
    """
    parts = []
    for name, t in tables.items():
        g = t.groupby("ClassId")
        cols = {"masks": g.size()}
        for s in STATS:
            cols[f"{s} p{round(100 * q[0])}"] = g[s].quantile(q[0])
            cols[f"{s} median"] = g[s].median()
            cols[f"{s} p{round(100 * q[1])}"] = g[s].quantile(q[1])
        parts.append(pd.DataFrame(cols).assign(set=name).reset_index())
    return pd.concat(parts).set_index(["set", "ClassId"]).sort_index()


def describe_gap(real: pd.DataFrame, twin: pd.DataFrame, twin_name: str = "the twin") -> str:
    """One sentence per class on how ``twin``'s median abs_delta and snr compare with ``real``'s,
    and one on the background texture (median ring std) that the snr divides by.

    Both are ``contrast_table`` results; classes absent from either are named as such.
    """
    r = real.groupby("ClassId")[list(STATS)].median()
    t = twin.groupby("ClassId")[list(STATS)].median()
    lines = []
    for c in sorted(set(r.index) | set(t.index)):
        if c not in r.index or c not in t.index:
            lines.append(f"class {c}: no masks in the {'real sample' if c not in r.index else twin_name}.")
            continue
        ratio = t.loc[c, "abs_delta"] / r.loc[c, "abs_delta"]
        word = "stronger" if ratio > 1.25 else "weaker" if ratio < 0.8 else "about as strong"
        lines.append(
            f"class {c}: {twin_name}'s defects are {word} than the real ones "
            f"(median |delta| {t.loc[c, 'abs_delta']:.0f} vs {r.loc[c, 'abs_delta']:.0f} grey levels, "
            f"x{ratio:.1f}; median snr {t.loc[c, 'snr']:.1f} vs {r.loc[c, 'snr']:.1f})."
        )
    lines.append(
        f"The background around the masks varies with a median std of {twin['ring_std'].median():.0f} "
        f"grey levels in {twin_name} against {real['ring_std'].median():.0f} in the real images."
    )
    return " ".join(lines)
