"""A synthetic Severstal data set in the exact Kaggle layout, calibrated to the real statistics.

``generate(out)`` writes ``train.csv``, ``train_images/*.jpg`` (1600 x 256, three identical grey
channels), ``test_images/*.jpg`` and ``sample_submission.csv``. About half the images are
defect-free; per-class mask shares, median areas and shapes follow the real data (see
``../shared/data/README.md``): class 1 clusters of small bright or dark spots, class 2 narrow
bright vertical strips, class 3 dark elongated bands with diagonal scratches (heavy-tailed
area, often full height), class 4 large dark mottled blobs. Each mask is exactly the drawn
shape, minus pixels already taken by another class, so no pixel carries two classes.

``class_mix="study"`` draws the defective images' classes in equal shares instead, as the study
subset (``sampling.study_subset``, about 250 images of each class and the Kaggle share of clean
images) draws them from the Kaggle set: the smoke's set, so that the rare classes 1, 2 and 4 have
enough images to be learned, tuned and judged. ``sealed`` of the labelled images come from a
generator stream of their own and are listed in ``sealed_test.csv``: 02 makes them the test split,
and nothing that chooses a setting (a probe, a benchmark) ever sees an image drawn like them
before the report does.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from . import rle
from .config import HEIGHT, WIDTH
from .errors import SteelnbError
from .fileio import write_csv, write_json
from .labels import CLASS_IDS, COLUMNS, write_labels

#: Mask share per class in the full train.csv (897/247/5,150/801 of 7,095 masks).
MASK_SHARE = {1: 0.126, 2: 0.035, 3: 0.726, 4: 0.113}
#: Median mask area (pixels) and log-normal spread per class, from the real masks.
AREA_MEDIAN = {1: 3300.0, 2: 2900.0, 3: 12500.0, 4: 24000.0}
AREA_SIGMA = {1: 0.8, 2: 0.55, 3: 1.3, 4: 0.85}
#: Smallest and largest mask area per class in all 7,095 real masks (mask_areas.csv).
AREA_RANGE = {1: (163, 31303), 2: (316, 14023), 3: (115, 368240), 4: (491, 192780)}
DEFECT_SHARE = 0.53  # 6,666 of 12,568 real train images have a defect
TWO_CLASS_SHARE = 0.064  # 425 + 2 of 6,666 defective images show two classes or more
DARK_MARGIN_SHARE = 0.3  # images with a dark area beyond the edge of the sheet
JPEG_QUALITY = 90
#: File that marks a folder as a synthetic data set (its generation parameters), for provenance.
MARKER = "synthetic.json"
#: The sealed test images' ids (ImageId), when a set has them: 02 puts exactly these in the test split.
SEALED = "sealed_test.csv"
#: Class shares of the defective images' masks: the Kaggle set's, or the study subset's (equal).
CLASS_MIXES = {"kaggle": MASK_SHARE, "study": {c: 0.25 for c in MASK_SHARE}}
#: Entropy mixed into the seed of the sealed stream, so it shares no draw with the development images.
SEALED_STREAM = 0x5EA1ED


class SyntheticError(SteelnbError):
    """A bad count, or a folder the generator refuses to overwrite; names it."""


class MissingDataError(SteelnbError):
    """A data folder has no train.csv and is not one steelnb generates; says how to get the Kaggle data."""


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Low-resolution noise ``shape`` (h, w) resized to ``size`` (H, W): float32 (H, W)."""
    small = rng.standard_normal(shape).astype(np.float32)
    return cv2.resize(small, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)


def _background(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rolled-steel texture float32 (H, W) and the sheet as a bool (H, W) (False = margin)."""
    img = np.full((HEIGHT, WIDTH), rng.uniform(85, 135), dtype=np.float32)
    img += 5 * _smooth_noise(rng, (HEIGHT, 24), (HEIGHT, WIDTH))  # horizontal rolling streaks
    img += 4 * _smooth_noise(rng, (HEIGHT // 4, 1), (HEIGHT, WIDTH))  # row banding
    img += 7 * _smooth_noise(rng, (4, 24), (HEIGHT, WIDTH))  # uneven lighting
    img += rng.normal(0, 3.5, (HEIGHT, WIDTH)).astype(np.float32)
    sheet = np.ones((HEIGHT, WIDTH), dtype=bool)
    if rng.random() < DARK_MARGIN_SHARE:
        edge = rng.uniform(60, 420) + rng.uniform(-30, 30) * np.linspace(0, 1, HEIGHT)[:, None]
        x = np.arange(WIDTH)[None, :]
        sheet = (x >= edge) if rng.random() < 0.5 else (x < WIDTH - edge)
        dark = rng.uniform(8, 30) + rng.normal(0, 2, (HEIGHT, WIDTH)).astype(np.float32)
        img = np.where(sheet, img, dark)
    return img, sheet


def _place(rng: np.random.Generator, sheet: np.ndarray, half_w: float) -> float:
    """A centre column inside the sheet (on row 128), keeping ``half_w`` from its edges if possible."""
    cols = np.flatnonzero(sheet[HEIGHT // 2])
    lo, hi = cols[0] + half_w, cols[-1] - half_w
    return float(rng.uniform(lo, hi)) if hi > lo else float((cols[0] + cols[-1]) / 2)


def _spots(rng: np.random.Generator, area: float, sheet: np.ndarray) -> np.ndarray:
    """Class 1: a cluster of small elliptic spots of total area ~``area``: uint8 (H, W)."""
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    k = int(np.clip(round(area / 260), 3, 40))
    r = np.sqrt(area / (0.75 * k * np.pi))  # spots overlap: about 3/4 of the drawn area stays
    spread_x, spread_y = 2.2 * np.sqrt(area), min(0.9 * np.sqrt(area), 100.0)
    cx, cy = _place(rng, sheet, spread_x), rng.uniform(spread_y / 2, HEIGHT - spread_y / 2)
    for _ in range(k):
        x = int(cx + rng.uniform(-0.5, 0.5) * spread_x)
        y = int(np.clip(cy + rng.uniform(-0.5, 0.5) * spread_y, 0, HEIGHT - 1))
        ax = max(2, int(r * rng.uniform(0.8, 1.4)))
        ay = max(2, int(r * rng.uniform(0.6, 1.1)))
        cv2.ellipse(mask, (x, y), (ax, ay), float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return mask


def _strip(rng: np.random.Generator, area: float, sheet: np.ndarray) -> np.ndarray:
    """Class 2: a narrow, slightly slanted vertical strip: uint8 (H, W)."""
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    h = rng.uniform(140, HEIGHT)
    w = float(np.clip(area / h, 5, 45))
    y0 = rng.uniform(0, HEIGHT - h)
    x0 = _place(rng, sheet, 40)
    dx = rng.uniform(-15, 15)
    pts = np.array([[x0, y0], [x0 + w, y0], [x0 + w + dx, y0 + h], [x0 + dx, y0 + h]])
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask


def _band(rng: np.random.Generator, area: float, sheet: np.ndarray) -> np.ndarray:
    """Class 3: an elongated band with wobbly edges, full height in most cases: uint8 (H, W)."""
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    n = 9
    if area >= 20 * HEIGHT and rng.random() < 0.75:  # vertical, full height
        w = float(np.clip(area / HEIGHT, 4, 0.8 * WIDTH))
        x0 = _place(rng, sheet, w / 2) - w / 2
        y = np.linspace(0, HEIGHT, n)
        left = x0 + rng.uniform(-20, 20) * y / HEIGHT + rng.normal(0, 0.08 * w + 1, n)
        right = left + w * rng.uniform(0.85, 1.15, n)
        pts = np.concatenate([np.stack([left, y], 1), np.stack([right, y], 1)[::-1]])
    else:  # horizontal, elongated along the rolling direction
        h = float(rng.uniform(15, 110))
        w = area / h
        if w > 0.9 * WIDTH:
            w, h = 0.9 * WIDTH, min(area / (0.9 * WIDTH), HEIGHT)
        x0 = _place(rng, sheet, w / 2) - w / 2
        y0 = rng.uniform(0, HEIGHT - h)
        x = np.linspace(x0, x0 + w, n)
        top = y0 + rng.normal(0, 0.08 * h + 1, n)
        bottom = top + h * rng.uniform(0.85, 1.15, n)
        pts = np.concatenate([np.stack([x, top], 1), np.stack([x, bottom], 1)[::-1]])
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask


def _blob(rng: np.random.Generator, area: float, sheet: np.ndarray) -> np.ndarray:
    """Class 4: a large irregular blob: uint8 (H, W)."""
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    ry = min(HEIGHT * 0.48, np.sqrt(area / np.pi) * rng.uniform(0.6, 1.0))
    rx = area / (np.pi * ry)
    cx = _place(rng, sheet, rx)
    cy = rng.uniform(ry * 0.7, HEIGHT - ry * 0.7)
    t = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    rad = 1 + 0.12 * rng.standard_normal(t.size)
    pts = np.stack([cx + rx * rad * np.cos(t), cy + ry * rad * np.sin(t)], 1)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask


SHAPES = {1: _spots, 2: _strip, 3: _band, 4: _blob}


def _texture(rng: np.random.Generator, c: int) -> np.ndarray:
    """Intensity change a class-``c`` defect adds to the image: float32 (H, W)."""
    if c == 1:  # bright (mostly) or dark spots
        sign = 1.0 if rng.random() < 0.75 else -1.0
        return sign * rng.uniform(55, 85) + rng.normal(0, 8, (HEIGHT, WIDTH)).astype(np.float32)
    if c == 2:  # bright strip with vertical streaks
        return rng.uniform(40, 60) + 12 * _smooth_noise(rng, (1, WIDTH // 2), (HEIGHT, WIDTH))
    if c == 3:  # dark band crossed by thin diagonal scratches
        lines = np.where(rng.random(WIDTH + 2 * HEIGHT) < 0.12, -45.0, 0.0).astype(np.float32)
        slope = rng.choice([-1, 1]) * rng.uniform(0.3, 1.5)
        idx = np.arange(WIDTH)[None, :] + np.round(slope * np.arange(HEIGHT))[:, None].astype(int) + HEIGHT
        return rng.uniform(-35, -20) + lines[np.clip(idx, 0, lines.size - 1)]
    return rng.uniform(-80, -60) + 12 * _smooth_noise(rng, (16, 100), (HEIGHT, WIDTH))  # dark mottled blob


def _area(rng: np.random.Generator, c: int) -> float:
    lo, hi = AREA_RANGE[c]
    return float(np.clip(AREA_MEDIAN[c] * np.exp(AREA_SIGMA[c] * rng.standard_normal()), lo, hi))


def render(rng: np.random.Generator, classes: list[int]) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """One image with defects of ``classes``: uint8 grey (H, W) and {class: uint8 mask (H, W)}."""
    img, sheet = _background(rng)
    taken = ~sheet
    masks: dict[int, np.ndarray] = {}
    for c in classes:
        for _ in range(5):  # redraw a shape that falls entirely on taken pixels
            m = SHAPES[c](rng, _area(rng, c), sheet).astype(bool) & ~taken
            if m.any():
                break
        if not m.any():
            continue
        taken |= m
        img = np.where(m, img + _texture(rng, c), img)
        masks[c] = m.astype(np.uint8)
    return np.clip(img, 0, 255).astype(np.uint8), masks


def _allocate(
    rng: np.random.Generator, n_images: int, shares: dict[int, float] = MASK_SHARE
) -> list[list[int]]:
    """Classes per image: ~53% defective, ~6% of those with two classes, masks per class at ``shares``
    (the real ones by default)."""
    n_defect = int(round(n_images * DEFECT_SHARE))
    n_two = int(round(n_defect * TWO_CLASS_SHARE))
    total = n_defect + n_two
    exact = np.array([shares[c] for c in CLASS_IDS]) * total
    counts = np.floor(exact).astype(int)
    counts[np.argsort(counts - exact)[: total - counts.sum()]] += 1  # largest remainders
    pool = list(rng.permutation(np.repeat(CLASS_IDS, counts)))
    per_image: list[list[int]] = [[] for _ in range(n_images)]
    defective = rng.choice(n_images, size=n_defect, replace=False)
    for i, c in zip(defective, pool[:n_defect]):
        per_image[i].append(int(c))
    # a second class goes to a random image that shows one other class so far: drawn by rejection
    # from the list of single-class images (swap-removed once taken), so the loop is linear
    singles = [int(i) for i in defective]
    left = {k: sum(per_image[i][0] == k for i in singles) for k in CLASS_IDS}
    for c in pool[n_defect:]:
        if len(singles) == left[int(c)]:  # every single-class image shows c already
            continue
        while True:
            j = int(rng.integers(len(singles)))
            if per_image[singles[j]][0] != c:
                break
        i = singles[j]
        per_image[i].append(int(c))
        left[per_image[i][0]] -= 1
        singles[j] = singles[-1]
        singles.pop()
    return per_image


def _test_classes(rng: np.random.Generator) -> list[int]:
    """Classes of one unlabelled test image: defective with the train share, and then a second
    class with the train share of two-class images (a class drawn by its mask share each time)."""
    if rng.random() >= DEFECT_SHARE:
        return []
    shares = np.array([MASK_SHARE[c] for c in CLASS_IDS])
    first = int(rng.choice(CLASS_IDS, p=shares))
    if rng.random() >= TWO_CLASS_SHARE:
        return [first]
    rest = shares * (np.array(CLASS_IDS) != first)
    return [first, int(rng.choice(CLASS_IDS, p=rest / rest.sum()))]


def _image_ids(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct Kaggle-like ids: 9 hex digits + ``.jpg``."""
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n:
        name = f"{int(rng.integers(0, 16**9)):09x}.jpg"
        if name not in seen:
            seen.add(name)
            ids.append(name)
    return ids


def _write_jpeg(path: Path, grey: np.ndarray) -> None:
    bgr = cv2.merge([grey, grey, grey])
    if not cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
        raise OSError(f"{path}: could not write image")


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out``, replacing an earlier generated data set."""
    if out.exists():
        if not out.is_dir() or (any(out.iterdir()) and not (out / "train_images").is_dir()):
            raise SyntheticError(f"{out}: exists and is not a data set folder; refusing to overwrite it")
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old."))
        out.rename(old / "data")
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def generate(
    out: str | Path,
    n_images: int = 200,
    n_test: int | None = None,
    seed: int = 0,
    old_format: bool = False,
    class_mix: str = "kaggle",
    sealed: int = 0,
) -> Path:
    """Write a synthetic data set in the Kaggle layout into ``out`` and return ``out``.

    ``n_images`` labelled images (train.csv), ``sealed`` of them from their own generator stream
    (listed in ``sealed_test.csv``; 0: none), and ``n_test`` unlabelled test images (default
    ``n_images // 4``). ``class_mix``: "kaggle" (the real mask shares) or "study" (equal shares,
    as the study subset draws them). The same arguments give the same bytes. The set is built
    in a temporary folder beside ``out`` and renamed into place when complete; an earlier data
    set in ``out`` is replaced, any other non-empty folder is left alone (error).
    """
    n_test = _checked(n_images, n_test, class_mix, sealed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    draws = _draw(n_images, n_test, seed, sealed, CLASS_MIXES[class_mix])
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp."))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the data set is an ordinary folder
        (tmp / "train_images").mkdir()
        (tmp / "test_images").mkdir()
        rows = _write_images(tmp, draws)
        submission = pd.DataFrame(
            {"ImageId": draws.test_ids, "EncodedPixels": f"1 {HEIGHT * WIDTH}", "ClassId": 0}
        )
        write_csv(tmp / "sample_submission.csv", submission)
        if sealed:
            write_csv(tmp / SEALED, pd.DataFrame({"ImageId": sorted(draws.train_ids[n_images - sealed :])}))
        write_json(tmp / MARKER, _marker(n_images, n_test, seed, old_format, class_mix, sealed))
        # train.csv last: a folder holding it was written completely
        _write_train_csv(tmp / "train.csv", rows, draws.train_ids, old_format)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _checked(n_images: int, n_test: int | None, class_mix: str, sealed: int) -> int:
    """``generate``'s arguments checked (SyntheticError naming the bad one); returns ``n_test``
    with its default (``n_images // 4``) filled in."""
    if n_images < 0 or (n_test is not None and n_test < 0) or not 0 <= sealed <= n_images:
        raise SyntheticError(
            f"n_images={n_images}, n_test={n_test}, sealed={sealed}: expected counts >= 0, sealed <= n_images"
        )
    if class_mix not in CLASS_MIXES:
        raise SyntheticError(f"class_mix={class_mix!r}: expected one of {sorted(CLASS_MIXES)}")
    return n_images // 4 if n_test is None else n_test


@dataclass(frozen=True)
class _Draws:
    """What a set's generator streams decided before any pixel is drawn: the labelled images' ids,
    classes and pixel seeds (development images first, then the sealed ones), the unlabelled test
    images' ids (sorted) and pixel seeds."""

    train_ids: list[str]
    per_image: list[list[int]]
    image_seeds: list[np.random.SeedSequence]
    test_ids: list[str]
    test_seeds: list[np.random.SeedSequence]


def _draw(n_images: int, n_test: int, seed: int, sealed: int, shares: dict[int, float]) -> _Draws:
    """The ids, classes and per-image seeds of ``generate``'s set, in its streams' order."""
    n_dev = n_images - sealed
    seeds = np.random.SeedSequence(seed).spawn(n_images + n_test + 1)
    rng = np.random.default_rng(seeds[-1])
    ids = _image_ids(rng, n_images + n_test)
    per_image = _allocate(rng, n_dev, shares)
    # the sealed images: their own stream (classes and pixels), so no draw of the development set's
    # generator, whatever its seed, reproduces one of them
    sealed_seeds = np.random.SeedSequence([seed, SEALED_STREAM]).spawn(sealed + 1)
    per_image += _allocate(np.random.default_rng(sealed_seeds[-1]), sealed, shares)
    return _Draws(
        train_ids=ids[:n_images],
        per_image=per_image,
        image_seeds=seeds[:n_dev] + sealed_seeds[:sealed],
        test_ids=sorted(ids[n_images:]),
        test_seeds=seeds[n_images : n_images + n_test],
    )


def _write_images(tmp: Path, draws: _Draws) -> list[tuple[str, int, str]]:
    """Render and write every image of ``draws`` into ``tmp``'s ``train_images/`` and
    ``test_images/``; return the labelled images' label rows (ImageId, ClassId, RLE)."""
    rows = []
    for image_id, classes, s in zip(draws.train_ids, draws.per_image, draws.image_seeds):
        img, masks = render(np.random.default_rng(s), classes)
        _write_jpeg(tmp / "train_images" / image_id, img)
        rows += [(image_id, c, rle.encode(m)) for c, m in masks.items()]
    for image_id, s in zip(draws.test_ids, draws.test_seeds):
        r = np.random.default_rng(s)
        classes = _test_classes(r)
        _write_jpeg(tmp / "test_images" / image_id, render(r, classes)[0])
    return rows


def _write_train_csv(
    path: Path, rows: list[tuple[str, int, str]], train_ids: list[str], old_format: bool
) -> None:
    """The label table of ``rows``, sorted, in the old format (every image, one row per class) or
    the new (masks only)."""
    labels = pd.DataFrame(rows, columns=COLUMNS).sort_values(["ImageId", "ClassId"]).reset_index(drop=True)
    write_labels(
        labels, path, fmt="old" if old_format else "new", image_ids=train_ids if old_format else None
    )


def _marker(n_images: int, n_test: int, seed: int, old_format: bool, class_mix: str, sealed: int) -> dict:
    """The generation parameters written to ``MARKER`` (the defaults' keys as before, for provenance)."""
    marker = {
        "generator": "steelnb.synthetic",
        "n_images": n_images,
        "n_test": n_test,
        "seed": seed,
        "format": "old" if old_format else "new",
    }
    if class_mix != "kaggle" or sealed:
        marker |= {"class_mix": class_mix, "sealed": sealed}
    return marker


def drawn_table(
    n_images: int = 200,
    n_test: int | None = None,
    seed: int = 0,
    class_mix: str = "kaggle",
    sealed: int = 0,
) -> tuple[pd.DataFrame, list[str]]:
    """What ``generate`` with these arguments would label, without drawing a pixel: the image
    table (ImageId, classes: space-separated class ids, "" for a clean image) and the sealed
    images' ids. A class whose rendered mask comes out empty is dropped from the written
    train.csv, so a rendered set can hold a few masks fewer than this table: it is for counting
    (what a plan will train and judge on before its set exists), not a label file."""
    n_test = _checked(n_images, n_test, class_mix, sealed)
    draws = _draw(n_images, n_test, seed, sealed, CLASS_MIXES[class_mix])
    table = pd.DataFrame(
        {"ImageId": draws.train_ids, "classes": [" ".join(map(str, sorted(c))) for c in draws.per_image]}
    )
    return table, sorted(draws.train_ids[n_images - sealed :]) if sealed else []


def sealed_ids(data_dir: str | Path) -> list[str] | None:
    """The ids of a set's sealed test images (``sealed_test.csv``), or None when it has none."""
    path = Path(data_dir) / SEALED
    if not path.is_file():
        return None
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "ImageId" not in frame.columns:
        raise SyntheticError(f"{path}: no ImageId column; found {list(frame.columns)}")
    return frame["ImageId"].str.strip().tolist()


#: The embedded data set every notebook, the main command and the tests default to: 512 labelled
#: images in the study's class mix, the 256 of the test split sealed, and 16 unlabelled test images.
DEFAULT_SET = {"n_images": 512, "n_test": 16, "seed": 0, "class_mix": "study", "sealed": 256}


#: What a plan's ``data.synthetic`` block leaves out (pipeline's data stage, the dry run's estimate):
#: 512 labelled images and 16 unlabelled, the Kaggle mix, nothing sealed.
PLAN_SET = {"n_images": 512, "n_test": 16, "seed": 0, "class_mix": "kaggle", "sealed": 0}


def plan_set(block: Mapping[str, Any]) -> dict[str, Any]:
    """A plan's ``data.synthetic`` block with ``PLAN_SET`` filling what it leaves out, typed as
    ``generate`` takes it (n_images, n_test, seed, class_mix, sealed)."""
    syn = {**PLAN_SET, **block}
    return {
        "n_images": int(syn["n_images"]),
        "n_test": None if syn["n_test"] is None else int(syn["n_test"]),
        "seed": int(syn["seed"]),
        "class_mix": str(syn["class_mix"]),
        "sealed": int(syn["sealed"]),
    }


def ensure_data(
    data_dir: str | Path,
    n_images: int = DEFAULT_SET["n_images"],
    seed: int = DEFAULT_SET["seed"],
    n_test: int | None = DEFAULT_SET["n_test"],
    class_mix: str = DEFAULT_SET["class_mix"],
    sealed: int = DEFAULT_SET["sealed"],
    refresh: bool = False,
) -> Path:
    """Return ``data_dir``; generate the synthetic set there when it has no ``train.csv``.

    ``refresh``: also when the set there is a generated one with other parameters (a plan that
    declares its data set, run over a set from an earlier steelnb or another plan). A folder
    without the generator's marker (the Kaggle data) is never replaced. Only folders whose name contains ``synthetic`` are generated; another missing folder
    raises with the command that downloads the Kaggle data.
    """
    data_dir = Path(data_dir)
    n_test = n_images // 4 if n_test is None else n_test
    wanted = _marker(n_images, n_test, seed, False, class_mix, sealed)
    if (data_dir / "train.csv").is_file():
        marker = data_dir / MARKER
        if not refresh or not marker.is_file() or json.loads(marker.read_text()) == wanted:
            return data_dir  # the Kaggle data, or a generated set kept as it is
        print(f"{data_dir}: generated with other parameters than {wanted}; generating it again")
    elif "synthetic" not in data_dir.name and "smoke" not in data_dir.name:
        raise MissingDataError(
            f"{data_dir}: no train.csv. Get the Kaggle data with `kaggle competitions download "
            f"-c severstal-steel-defect-detection` and unzip it into {data_dir}"
        )
    return Path(
        generate(data_dir, n_images=n_images, n_test=n_test, seed=seed, class_mix=class_mix, sealed=sealed)
    )
