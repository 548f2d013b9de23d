"""Severstal label files: read both CSV formats into one tidy table, and build the image table.

Tidy table: one row per defect mask, columns ``ImageId`` (str), ``ClassId`` (int 1..4),
``EncodedPixels`` (non-empty RLE). Defect-free images never appear in it; the image table
(``image_table``) joins the labels with the images on disk so that they do.

The pseudo-label CSV (``steelnb.winners.pseudo`` writes it) is a label table too:
``read_pseudo_labels`` reads it for training, and ``summary_path`` names the JSON summary beside it;
they live here, in the data layer, so that ``dataset`` reads pseudo-labels without importing the
recipe (which imports inference).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from . import rle
from .config import HEIGHT, N_CLASSES, WIDTH
from .errors import SteelnbError
from .fileio import write_csv
from .images import list_images

COLUMNS = ["ImageId", "ClassId", "EncodedPixels"]
CLASS_IDS = tuple(range(1, N_CLASSES + 1))


class LabelError(SteelnbError):
    """A label file or image folder is not valid; the message names the file and line or image."""


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise LabelError(f"{path}: label file not found")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise LabelError(f"{path}: not a readable CSV ({e})") from e
    except pd.errors.EmptyDataError:
        raise LabelError(f"{path}: empty file, expected a header line") from None


def _as_columns(raw: pd.DataFrame, path: Path, line: pd.Series) -> pd.DataFrame:
    """Either label format -> a frame with ImageId, ClassId, EncodedPixels (strings)."""
    cols = list(raw.columns)
    if "ImageId_ClassId" in cols and "EncodedPixels" in cols:
        key = raw["ImageId_ClassId"].str.strip()
        split = key.str.rsplit("_", n=1, expand=True)
        if split.shape[1] != 2 or split[1].isna().any():
            i = int(np.argmax(split[1].isna().to_numpy())) if split.shape[1] == 2 else 0
            raise LabelError(f"{path}, line {line.iloc[i]}: {key.iloc[i]!r} is not '<image>_<class>'")
        return pd.DataFrame({"ImageId": split[0], "ClassId": split[1], "EncodedPixels": raw["EncodedPixels"]})
    if set(COLUMNS) <= set(cols):
        return raw[COLUMNS].copy()
    raise LabelError(
        f"{path}: missing columns; found {cols}, expected ImageId,ClassId,EncodedPixels "
        "(new format) or ImageId_ClassId,EncodedPixels (old format)"
    )


def _check_values(table: pd.DataFrame, path: Path, line: pd.Series) -> pd.DataFrame:
    """Stripped ids and RLEs, integer ClassIds 1..4, no empty ImageId; errors name the line."""
    table["ImageId"] = table["ImageId"].str.strip()
    table["EncodedPixels"] = table["EncodedPixels"].str.strip()
    cls = pd.to_numeric(table["ClassId"].str.strip(), errors="coerce")
    bad = ~cls.isin(CLASS_IDS)
    if bad.any():
        i = int(np.argmax(bad.to_numpy()))
        raise LabelError(
            f"{path}, line {line.iloc[i]}: unknown ClassId {table['ClassId'].iloc[i]!r} "
            f"for image {table['ImageId'].iloc[i]}; expected 1..{N_CLASSES}"
        )
    table["ClassId"] = cls.astype(int)
    empty_id = table["ImageId"] == ""
    if empty_id.any():
        i = int(np.argmax(empty_id.to_numpy()))
        raise LabelError(f"{path}, line {line.iloc[i]}: empty ImageId")
    return table.assign(_line=line)


def _merge_duplicates(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Identical repeated (image, class) rows merge; different masks for one pair are an error."""
    dup = table.duplicated(["ImageId", "ClassId"], keep=False)
    if not dup.any():
        return table
    for (image, c), g in table[dup].groupby(["ImageId", "ClassId"]):
        if g["EncodedPixels"].nunique() > 1:
            lines = ", ".join(map(str, g["_line"]))
            raise LabelError(
                f"{path}, lines {lines}: image {image} class {c} has different masks in several rows"
            )
    return table.drop_duplicates(["ImageId", "ClassId"])


def read_labels(path: str | Path, validate: bool = True) -> pd.DataFrame:
    """Read a Severstal label CSV in any of its formats into the tidy table.

    Formats: new ``ImageId,ClassId,EncodedPixels`` (defect rows; a leading unnamed index
    column is tolerated; the submission's column order too), old ``ImageId_ClassId,
    EncodedPixels`` (four rows per image, empty = no defect). Rows with an empty mask are
    dropped; identical duplicate rows are merged. With ``validate`` every RLE is parsed.
    Returns a DataFrame sorted by (ImageId, ClassId) with a fresh index.
    """
    path = Path(path)
    raw = _read_csv(path)
    raw.columns = [c.strip() for c in raw.columns]
    if len(raw.columns) and (raw.columns[0] == "" or raw.columns[0].startswith("Unnamed")):
        raw = raw.drop(columns=raw.columns[0])
    line = pd.Series(np.arange(len(raw)) + 2, index=raw.index)  # header is line 1
    table = _check_values(_as_columns(raw, path, line), path, line)
    table = _merge_duplicates(table[table["EncodedPixels"] != ""], path)
    if validate:
        for image, c, enc, ln in table[["ImageId", "ClassId", "EncodedPixels", "_line"]].itertuples(
            index=False
        ):
            try:
                rle.parse(enc)
            except rle.RLEError as e:
                raise LabelError(f"{path}, line {ln}: image {image} class {c}: {e}") from None
    table = table.drop(columns="_line").sort_values(["ImageId", "ClassId"], kind="stable")
    return table.reset_index(drop=True)


def write_labels(
    labels: pd.DataFrame,
    path: str | Path,
    fmt: Literal["new", "old"] = "new",
    image_ids: Iterable[str] | None = None,
) -> Path:
    """Write the tidy table as a Kaggle CSV, atomically.

    ``fmt="old"`` writes four rows per image (``image_ids`` adds defect-free images); the new
    format has one row per mask, so it refuses ``image_ids`` that hold a defect-free image.
    """
    path = Path(path)
    if fmt == "new":
        clean = sorted(set(() if image_ids is None else image_ids) - set(labels["ImageId"]))
        if clean:  # the new format has no row for an image without a mask: it would vanish silently
            raise LabelError(
                f"{path}: the new format cannot list defect-free images ({len(clean)}, first {clean[0]}); "
                "write fmt='old' or an ImageId list (e.g. the image table's ImageId column)"
            )
        out = labels[COLUMNS]
    elif fmt == "old":
        ids = sorted(set(labels["ImageId"]) | set(() if image_ids is None else image_ids))
        enc = {(i, c): e for i, c, e in labels[COLUMNS].itertuples(index=False)}
        out = pd.DataFrame(
            [(f"{i}_{c}", enc.get((i, c), "")) for i in ids for c in CLASS_IDS],
            columns=["ImageId_ClassId", "EncodedPixels"],
        )
    else:
        raise LabelError(f"fmt={fmt!r}: expected 'new' or 'old'")
    write_csv(path, out)
    return path


def encodings_by_image(path: str | Path) -> dict[str, dict[int, str]]:
    """A label file (any format ``read_labels`` reads) as {ImageId: {ClassId: RLE}}.

    Defect-free images are absent: ``image_masks(table.get(image_id, {}))`` is then all empty.
    """
    out: dict[str, dict[int, str]] = {}
    for image_id, c, enc in read_labels(path)[COLUMNS].itertuples(index=False):
        out.setdefault(image_id, {})[int(c)] = enc
    return out


def image_masks(
    encodings: Mapping[int, str] | Iterable[tuple[int, str]],
    shape: tuple[int, int] = (HEIGHT, WIDTH),
    image_id: str = "?",
    channels_last: bool = False,
) -> np.ndarray:
    """Decode one image's masks: {ClassId: RLE} (or (ClassId, RLE) pairs) -> uint8 array (4, H, W),
    or (H, W, 4) with ``channels_last`` (as albumentations takes masks; decoded in place, since a
    transpose afterwards costs three times the decoding).

    The one RLE-to-mask loop of steelnb: the data set, inference, evaluation and the plots all
    decode through here. Raises ``LabelError`` naming the image if an RLE does not fit ``shape``
    or a pixel carries two classes (never so in the real data).
    """
    masks = np.zeros((*shape, N_CLASSES) if channels_last else (N_CLASSES, *shape), dtype=np.uint8)
    pairs = list(encodings.items() if isinstance(encodings, Mapping) else encodings)
    for c, enc in pairs:
        try:
            mask = rle.decode(enc, shape)
        except rle.RLEError as e:
            raise LabelError(f"image {image_id} class {c}: {e} (image is {shape[0]}x{shape[1]})") from None
        if channels_last:
            masks[..., int(c) - 1] = mask
        else:
            masks[int(c) - 1] = mask
    # two classes can only meet where two masks were decoded; uint8 holds the sum of four 0/1 masks
    axis = -1 if channels_last else 0
    if len(pairs) > 1 and (np.add.reduce(masks, axis=axis, dtype=np.uint8) > 1).any():
        raise LabelError(f"image {image_id}: a pixel carries two classes")
    return masks


def _count_parts(enc: str) -> int:
    import cv2

    mask = rle.decode(enc)
    n, _ = cv2.connectedComponents(mask, connectivity=8)
    return int(n - 1)


def image_table(
    labels: pd.DataFrame | str | Path,
    images_dir: str | Path | None = None,
    image_ids: Iterable[str] | None = None,
    on_missing: Literal["error", "skip"] = "error",
    count_parts: bool = True,
) -> pd.DataFrame:
    """One row per image, defect-free images included.

    The images are those in ``images_dir`` (or ``image_ids`` when no folder is given, or both).
    Columns: ImageId, has_defect, n_classes, classes ("1 3"), area_1..area_4 (pixels),
    parts_1..parts_4 (8-connected components; only with ``count_parts``).
    A labelled image absent from the folder raises ``LabelError`` (``on_missing="error"``) or
    is dropped with one warning that gives the count (``"skip"``).
    """
    source = str(labels) if not isinstance(labels, pd.DataFrame) else "labels"
    if not isinstance(labels, pd.DataFrame):
        labels = read_labels(labels)
    ids: set[str] = set(() if image_ids is None else image_ids)
    if images_dir is not None:
        labels, on_disk = _on_disk(labels, images_dir, on_missing, source)
        ids |= on_disk
    ids |= set(labels["ImageId"])
    table = pd.DataFrame({"ImageId": sorted(ids)}).set_index("ImageId")
    areas = labels.assign(area=[rle.area(e) for e in labels["EncodedPixels"]])
    table = _per_class(table, areas, "area")
    present = table[[f"area_{c}" for c in CLASS_IDS]].to_numpy() > 0
    table.insert(0, "n_classes", present.sum(1))
    table.insert(0, "has_defect", present.any(1))
    table.insert(2, "classes", [" ".join(str(c) for c, p in zip(CLASS_IDS, row) if p) for row in present])
    if count_parts:
        table = _per_class(
            table, labels.assign(parts=[_count_parts(e) for e in labels["EncodedPixels"]]), "parts"
        )
    return table.reset_index()


def _on_disk(
    labels: pd.DataFrame, images_dir: str | Path, on_missing: str, source: str
) -> tuple[pd.DataFrame, set[str]]:
    """The labels of the images in ``images_dir`` and the ids found there; a labelled image absent
    from the folder raises ``LabelError`` or, with ``on_missing="skip"``, is dropped with one warning."""
    on_disk = set(list_images(images_dir))
    missing = sorted(set(labels["ImageId"]) - on_disk)
    if missing:
        if on_missing == "error":
            raise LabelError(
                f"{source}: {len(missing)} labelled image(s) absent from {images_dir}, "
                f"first {missing[0]} (pass on_missing='skip' to drop them)"
            )
        warnings.warn(
            f"{source}: skipped {len(missing)} labelled image(s) absent from {images_dir}", stacklevel=3
        )
        labels = labels[~labels["ImageId"].isin(missing)]
    return labels, on_disk


def _per_class(table: pd.DataFrame, rows: pd.DataFrame, column: str) -> pd.DataFrame:
    """``table`` (indexed by ImageId) with ``<column>_1..4``: ``rows[column]`` summed per image and
    class, 0 where an image has none."""
    wide = rows.pivot_table(index="ImageId", columns="ClassId", values=column, aggfunc="sum")
    for c in CLASS_IDS:
        table[f"{column}_{c}"] = wide[c] if c in wide else 0
    return table.fillna(0).astype({f"{column}_{c}": int for c in CLASS_IDS})


def summary_path(labels_csv: str | Path) -> Path:
    """The JSON summary written beside a pseudo-label CSV (same name, ``.json``)."""
    return Path(labels_csv).with_suffix(".json")


def read_pseudo_labels(path: str | Path, images_dir: str | Path) -> tuple[list[str], pd.DataFrame]:
    """A pseudo-label CSV -> (every kept image id, defect-free ones included; tidy label table).

    Raises ``LabelError`` naming the file for an empty set or an image absent from ``images_dir``.
    """
    path = Path(path)
    labels = read_labels(path)
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    ids = sorted(set(raw["ImageId"].str.strip()) - {""})
    if not ids:
        raise LabelError(f"{path}: no pseudo-labelled images in this file")
    missing = sorted(set(ids) - set(list_images(images_dir)))
    if missing:
        raise LabelError(
            f"{path}: {len(missing)} pseudo-labelled image(s) absent from {images_dir}, first {missing[0]}"
        )
    return ids, labels
