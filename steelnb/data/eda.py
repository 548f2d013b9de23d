"""The numbers of the EDA notebook, computed here so that tests check them.

Two kinds of input: the image table of ``labels.image_table`` (one row per image, ``area_1`` ..
``area_4`` pixels, ``has_defect``) and the real data's ``mask_areas.csv`` (``has_class_1`` ..
``has_class_4``, ``has_defect``); ``presence`` reads either.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from .config import N_CLASSES
from .errors import SteelnbError
from .images import IMAGE_SUFFIXES, read_image

CLASS_NAMES = [f"class {c}" for c in range(1, N_CLASSES + 1)]


class EdaError(SteelnbError):
    """A table lacks the columns an EDA summary needs; names them."""


def presence(frame: pd.DataFrame, column: str = "area_{c}") -> pd.DataFrame:
    """Which classes each image shows: bool DataFrame with columns "class 1".."class 4".

    ``column`` is the per-class column pattern: "area_{c}" (pixels, our image table) or
    "has_class_{c}" (0/1, the real ``mask_areas.csv``); a class is present where it is > 0.
    """
    cols = [column.format(c=c) for c in range(1, N_CLASSES + 1)]
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise EdaError(f"presence: columns {missing} not in the table (has {list(frame.columns)[:8]} ...)")
    out = frame[cols].apply(pd.to_numeric).gt(0)
    out.columns = CLASS_NAMES
    return out.reset_index(drop=True)


def class_counts(
    tidy: pd.DataFrame, present: pd.DataFrame, real_present: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Masks per class and the share of images showing each class, plus the defect-free share.

    Rows: "class 1".."class 4", "defect-free"; columns: masks, share of images (and "real: share
    of images" when ``real_present`` is given).
    """
    masks = [int((tidy["ClassId"] == c).sum()) for c in range(1, N_CLASSES + 1)]

    def shares(p: pd.DataFrame) -> list[float]:
        return [float(p[c].mean()) for c in CLASS_NAMES] + [float((~p.any(axis=1)).mean())]

    out = pd.DataFrame(
        {"masks": [*masks, 0], "share of images": shares(present)}, index=[*CLASS_NAMES, "defect-free"]
    )
    if real_present is not None:
        out["real: share of images"] = shares(real_present)
    return out


def cooccurrence(present: pd.DataFrame) -> pd.DataFrame:
    """Images showing both classes, for each pair (the diagonal: images showing the class)."""
    p = present.astype(int)
    return p.T @ p


def classes_per_image(present: pd.DataFrame) -> pd.Series:
    """How many images show 0, 1, 2, ... classes."""
    return present.sum(axis=1).value_counts().sort_index().rename("images by number of classes")


def grey_levels(folders: Mapping[str, str | Path], n: int = 60, dark_level: int = 20) -> pd.DataFrame:
    """Grey-level statistics of the first ``n`` images (by name) of each folder.

    One row per image: set, image, mean, std (0..255) and the dark margin share (the share of
    columns whose mean grey is below ``dark_level``: the unlit edges of the sheet).
    """
    rows = []
    for title, folder in folders.items():
        paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:n]
        for p in paths:
            grey = read_image(p)[..., 0].astype(np.float64)  # three identical channels
            rows.append(
                {
                    "set": title,
                    "image": p.name,
                    "mean": float(grey.mean()),
                    "std": float(grey.std()),
                    "dark margin share": float((grey.mean(0) < dark_level).mean()),
                }
            )
    return pd.DataFrame(rows, columns=["set", "image", "mean", "std", "dark margin share"])


def mask_positions(
    tidy: pd.DataFrame, bins: tuple[int, int] = (32, 200), limit: int = 2000, seed: int = 0
) -> np.ndarray:
    """Where defects lie: share of masks covering each cell of a (rows, cols) grid, per class.

    ``tidy``: ImageId, ClassId, EncodedPixels. Decodes at most ``limit`` masks per class (seeded
    sample). Returns (4, rows, cols) float in [0, 1].
    """
    import cv2

    from . import rle

    heat = np.zeros((N_CLASSES, *bins))
    for c in range(1, N_CLASSES + 1):
        rows = tidy[tidy["ClassId"] == c]
        if len(rows) > limit:
            rows = rows.sample(limit, random_state=seed)
        for enc in rows["EncodedPixels"]:
            heat[c - 1] += cv2.resize(
                rle.decode(enc).astype(np.float32), bins[::-1], interpolation=cv2.INTER_AREA
            )
        heat[c - 1] /= max(len(rows), 1)
    return heat
