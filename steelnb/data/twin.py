"""A Kaggle-size synthetic twin: synthetic sheets that carry a real label table.

``generate_twin(labels_dir, out)`` reads the real label files of ``../shared/data/severstal-labels``
and writes a data set in the Kaggle layout (``train.csv``, ``train_images/``, ``test_images/``,
``sample_submission.csv``) whose labels are those of the Kaggle train set: the 12,568 real train
image ids; for the images whose labels are complete (``train_partial_images.csv``) their real masks
(``train_partial.csv``, byte for byte); for the others a mask of each class ``defect_types.csv``
gives them, drawn with ``steelnb.data.synthetic``'s shape of that class at the pixel area
``mask_areas.csv`` gives; the test images named as in ``sample_submission.csv``. Images are drawn
with ``steelnb.data.synthetic``'s steel texture and each class's defect texture on its mask. It exists
to run the study at the Kaggle set's size (the counts, the class mix, the sizes of the splits)
where the Kaggle images cannot be had; its numbers are synthetic numbers (its folder carries the
synthetic marker). ``fraction`` keeps that share of the train and test images, stratified by
class set, so that the cost of each stage can be measured against the number of images.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import rle
from .config import HEIGHT, WIDTH
from .errors import SteelnbError
from .fileio import write_csv, write_json
from .labels import CLASS_IDS, COLUMNS, write_labels
from .synthetic import MARKER, SHAPES, _background, _replace_dir, _test_classes, _texture, _write_jpeg, render

__all__ = ["FILES", "TwinError", "read_label_tables", "keep_fraction", "generate_twin"]

#: The label files a twin is built from, in the folder given.
FILES = {
    "types": "defect_types.csv",
    "areas": "mask_areas.csv",
    "masks": "train_partial.csv",
    "complete": "train_partial_images.csv",
    "submission": "sample_submission.csv",
}
AREA_COLUMNS = [f"area_class_{c}" for c in CLASS_IDS]


class TwinError(SteelnbError):
    """A label file of the twin is missing or disagrees with another; names the file and image."""


def _read(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.is_file():
        raise TwinError(f"{path}: label file not found (a twin needs {', '.join(FILES.values())})")
    try:
        frame = pd.read_csv(path, dtype={columns[0]: str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise TwinError(f"{path}: not a readable CSV ({e})") from e
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise TwinError(f"{path}: missing column(s) {', '.join(missing)}; found {list(frame.columns)}")
    return frame


def read_label_tables(labels_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(images, real masks, test ids) of the label folder, checked against each other.

    ``images``: one row per train image, by ImageId: ``ImageId``, ``area_class_1..4`` (pixels,
    0 = absent), ``complete`` (bool: its real masks are known). ``real masks``: the tidy rows
    (``ImageId, ClassId, EncodedPixels``) of the complete images. Raises ``TwinError`` naming
    the file and the first image where the class sets of ``defect_types.csv``,
    ``mask_areas.csv`` and ``train_partial.csv`` disagree.
    """
    d = Path(labels_dir)
    types = _read(d / FILES["types"], ["ImageId_ClassId", *map(str, CLASS_IDS)])
    areas = _read(d / FILES["areas"], ["image_id", *AREA_COLUMNS])
    masks = _read(d / FILES["masks"], COLUMNS)
    complete = _read(d / FILES["complete"], ["ImageId"])
    submission = _read(d / FILES["submission"], ["ImageId"])
    types = types.rename(columns={"ImageId_ClassId": "ImageId"}).set_index("ImageId").sort_index()
    areas = areas.rename(columns={"image_id": "ImageId"}).set_index("ImageId").sort_index()
    if not types.index.equals(areas.index):
        odd = sorted(set(types.index) ^ set(areas.index))
        raise TwinError(f"{d / FILES['areas']}: image {odd[0]} is in only one of it and {FILES['types']}")
    present = types[[str(c) for c in CLASS_IDS]].to_numpy(int) > 0
    bad = np.flatnonzero((present != (areas[AREA_COLUMNS].to_numpy(float) > 0)).any(axis=1))
    if bad.size:
        raise TwinError(
            f"{d / FILES['areas']}: image {types.index[bad[0]]}: its areas give other classes than {FILES['types']}"
        )
    images = areas[AREA_COLUMNS].astype(np.int64).reset_index()
    images["complete"] = images["ImageId"].isin(set(complete["ImageId"]))
    masks = masks.assign(ClassId=masks["ClassId"].astype(int))
    real = masks[masks["ImageId"].isin(set(images["ImageId"][images["complete"]]))]
    got = np.zeros_like(present)
    pos = pd.Index(images["ImageId"]).get_indexer(real["ImageId"])
    got[pos, real["ClassId"].to_numpy() - 1] = True
    wrong = np.flatnonzero((got != present)[images["complete"].to_numpy()].any(axis=1))
    if wrong.size:
        image = images["ImageId"][images["complete"]].iloc[wrong[0]]
        raise TwinError(
            f"{d / FILES['masks']}: image {image}: its masks give other classes than {FILES['types']}"
        )
    test_ids = sorted(set(submission["ImageId"].astype(str)))
    return images, real.sort_values(["ImageId", "ClassId"]).reset_index(drop=True), test_ids


def class_sets(images: pd.DataFrame) -> pd.Series:
    """The class set of each image as a string ("" = defect-free, "1 3", ...)."""
    has = images[AREA_COLUMNS].to_numpy() > 0
    return pd.Series(
        [" ".join(str(c) for c, h in zip(CLASS_IDS, row) if h) for row in has], index=images.index
    )


def keep_fraction(strata: pd.Series, fraction: float, seed: int = 0) -> np.ndarray:
    """Positions (sorted) of ``fraction`` of the items, stratified by ``strata``: each stratum
    gives its share rounded by a running count over the strata, so the total is
    ``floor(fraction * N)`` and the mix is kept to one item per stratum."""
    if not 0 < fraction <= 1:
        raise TwinError(f"fraction={fraction}: expected 0 < fraction <= 1")
    if fraction == 1:
        return np.arange(len(strata))
    rng = np.random.default_rng(seed)
    picked, seen = [], 0
    for _, rows in sorted(pd.Series(strata.to_numpy()).groupby(strata.to_numpy()).indices.items()):
        k = seen + np.arange(rows.size)
        take = np.floor((k + 1) * fraction) > np.floor(k * fraction)
        picked.append(rng.permutation(rows)[take])
        seen += rows.size
    return np.sort(np.concatenate(picked)) if picked else np.arange(0)


def _drawn_masks(rng: np.random.Generator, areas: dict[int, int], sheet: np.ndarray) -> dict[int, np.ndarray]:
    """One mask per class of ``areas`` ({class: pixels}), smallest first so a large class-3 band
    cannot leave a small class no room: {class: bool (H, W)}, disjoint, each non-empty."""
    taken = np.zeros((HEIGHT, WIDTH), bool)
    out = {}
    for c in sorted(areas, key=lambda k: areas[k]):
        for where in (sheet, sheet, sheet, np.ones_like(sheet)):  # off the sheet only as a last resort
            m = SHAPES[c](rng, float(areas[c]), where).astype(bool) & ~taken
            if m.any():
                break
        if not m.any():  # every shape fell on taken pixels: a small square on free ones
            y, x = np.argwhere(~taken)[0]
            m = np.zeros_like(taken)
            m[y : y + 8, x : x + 8] = True
            m &= ~taken
        taken |= m
        out[c] = m
    return out


def _paint(rng: np.random.Generator, img: np.ndarray, masks: dict[int, np.ndarray]) -> np.ndarray:
    """The sheet ``img`` float32 (H, W) with each class's texture on its mask: uint8 (H, W)."""
    for c, m in masks.items():
        img = np.where(m, img + _texture(rng, c), img)
    return np.clip(img, 0, 255).astype(np.uint8)


def _train_image(
    rng: np.random.Generator, real: list[tuple[int, str]] | None, areas: dict[int, int]
) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """One train image: uint8 grey (H, W) and its (class, RLE) rows; ``real`` masks when known,
    otherwise masks drawn at ``areas``."""
    img, sheet = _background(rng)
    if real is not None:
        masks = {c: rle.decode(enc).astype(bool) for c, enc in real}
        if masks and any((m & ~sheet).any() for m in masks.values()):
            img = np.where(
                sheet, img, img[sheet].mean() if sheet.any() else img
            )  # no margin under a real defect
        return _paint(rng, img, masks), list(real)
    masks = _drawn_masks(rng, areas, sheet)
    return _paint(rng, img, masks), [(c, rle.encode(m.astype(np.uint8))) for c, m in sorted(masks.items())]


def generate_twin(labels_dir: str | Path, out: str | Path, fraction: float = 1.0, seed: int = 0) -> Path:
    """Write the twin of the label folder ``labels_dir`` into ``out`` (Kaggle layout); return ``out``.

    ``fraction`` keeps that share of the train images (stratified by class set) and of the test
    images. Image ``i`` of the full table is drawn from seed ``(seed, i)``, so an image is the
    same at every fraction. Built in a temporary folder beside ``out`` and renamed into place;
    an earlier data set in ``out`` is replaced, any other non-empty folder is refused.
    """
    images, real, test_ids = read_label_tables(labels_dir)
    keep = keep_fraction(class_sets(images), fraction, seed)
    test_keep = np.sort(
        np.random.default_rng([seed, 1]).permutation(len(test_ids))[: int(np.floor(fraction * len(test_ids)))]
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp."))
    try:
        os.chmod(tmp, 0o755)
        rows = _write_train(tmp, images, real, keep, seed)
        kept_tests = _write_test(tmp, test_ids, test_keep, seed)
        write_json(
            tmp / MARKER,
            {
                "generator": "steelnb.twin",
                "labels": str(Path(labels_dir).resolve()),
                "fraction": fraction,
                "n_images": int(keep.size),
                "n_real_images": int(images["complete"].to_numpy()[keep].sum()),
                "n_test": len(kept_tests),
                "seed": seed,
                "format": "new",
            },
        )
        labels = (
            pd.DataFrame(rows, columns=COLUMNS).sort_values(["ImageId", "ClassId"]).reset_index(drop=True)
        )
        write_labels(labels, tmp / "train.csv", fmt="new")  # last: a folder holding it is complete
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_train(
    tmp: Path, images: pd.DataFrame, real: pd.DataFrame, keep: np.ndarray, seed: int
) -> list[tuple[str, int, str]]:
    """The kept train images into ``tmp/train_images``: real masks where the image is fully labelled,
    else drawn with its class set and areas; returns their label rows (ImageId, ClassId, RLE)."""
    by_image: dict[str, list[tuple[int, str]]] = {}
    for image_id, c, enc in real[COLUMNS].itertuples(index=False):
        by_image.setdefault(image_id, []).append((int(c), enc))
    ids = images["ImageId"].to_numpy()
    area_values = images[AREA_COLUMNS].to_numpy()
    complete = images["complete"].to_numpy()
    (tmp / "train_images").mkdir()
    rows: list[tuple[str, int, str]] = []
    for i in keep:
        areas = {c: int(a) for c, a in zip(CLASS_IDS, area_values[i]) if a > 0}
        known = by_image.get(ids[i], []) if complete[i] else None
        img, masks = _train_image(np.random.default_rng([seed, 0, int(i)]), known, areas)
        _write_jpeg(tmp / "train_images" / ids[i], img)
        rows += [(ids[i], c, enc) for c, enc in masks]
    return rows


def _write_test(tmp: Path, test_ids: Sequence[str], test_keep: np.ndarray, seed: int) -> list[str]:
    """The kept test images into ``tmp/test_images`` and ``sample_submission.csv``; returns their ids."""
    (tmp / "test_images").mkdir()
    for j in test_keep:
        r = np.random.default_rng([seed, 1, int(j)])
        _write_jpeg(tmp / "test_images" / test_ids[j], render(r, _test_classes(r))[0])
    kept_tests = [test_ids[j] for j in test_keep]
    write_csv(
        tmp / "sample_submission.csv",
        pd.DataFrame({"ImageId": kept_tests, "EncodedPixels": f"1 {HEIGHT * WIDTH}", "ClassId": 0}),
    )
    return kept_tests
