"""The Kaggle submission file.

The competition's final format ``ImageId,EncodedPixels,ClassId``, one row per
image and class (4 x N rows), an empty EncodedPixels for no defect; written atomically and
re-read to validate. Evaluation: per-(image, class) confusion counts (N, 4, 3) -> tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import rle
from ..data.config import N_CLASSES
from ..data.errors import SteelnbError
from ..data.fileio import atomic_path

SUBMISSION_COLUMNS = ["ImageId", "EncodedPixels", "ClassId"]


class SubmissionError(SteelnbError):
    """A submission file is not in the competition's format; names the file and line."""


def write_submission(
    rows: Sequence[tuple[str, str, int]], path: str | Path, image_ids: Sequence[str]
) -> Path:
    """Write (ImageId, EncodedPixels, ClassId) rows to a temporary file, re-read and validate it,
    then rename it into place: an invalid submission never replaces ``path``."""
    path = Path(path)
    text = pd.DataFrame(list(rows), columns=SUBMISSION_COLUMNS).to_csv(index=False).encode()
    with atomic_path(path, size=len(text)) as tmp:  # refused whole when it cannot fit
        tmp.write_bytes(text)
        try:
            validate_submission(tmp, image_ids)
        except SubmissionError as e:
            raise SubmissionError(str(e).replace(str(tmp), str(path))) from None
    return path


def validate_submission(path: str | Path, image_ids: Sequence[str]) -> pd.DataFrame:
    """Check a submission: columns ImageId,EncodedPixels,ClassId; one row per (image, class 1..4)
    for exactly ``image_ids``; every EncodedPixels a valid 256 x 1600 RLE ("" = no defect)."""
    path = Path(path)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(frame.columns) != SUBMISSION_COLUMNS:
        raise SubmissionError(f"{path}: columns {list(frame.columns)}, expected {SUBMISSION_COLUMNS}")
    expected = {(i, str(c)) for i in image_ids for c in range(1, N_CLASSES + 1)}
    if len(frame) != len(expected):
        raise SubmissionError(f"{path}: {len(frame)} rows, expected {len(expected)} (4 per image)")
    found = set(zip(frame["ImageId"], frame["ClassId"]))
    if found != expected:
        missing, extra = sorted(expected - found), sorted(found - expected)
        what = (
            f"image {missing[0][0]} class {missing[0][1]} missing"
            if missing
            else f"unexpected row for image {extra[0][0]} class {extra[0][1]}"
        )
        raise SubmissionError(f"{path}: {what}; expected one row per image and class 1..{N_CLASSES}")
    for line, (image, enc, c) in enumerate(frame.itertuples(index=False), start=2):
        try:
            rle.parse(enc)
        except rle.RLEError as e:
            raise SubmissionError(f"{path}, line {line}: image {image} class {c}: {e}") from None
    return frame


def mask_rows(image_id: str, masks: np.ndarray) -> list[tuple[str, str, int]]:
    """Submission rows of one image: masks (4, 256, 1600) -> [(ImageId, RLE or "", ClassId)] x 4."""
    return [(image_id, rle.encode(masks[c]), c + 1) for c in range(N_CLASSES)]
