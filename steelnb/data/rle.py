"""Run-length encoding in the Kaggle Severstal convention.

Pairs ``start length``; starts are 1-indexed and count down each column first (column-major,
Fortran order) over the 256 x 1600 mask. Both directions are vectorised with NumPy.
"""

from __future__ import annotations

import warnings

import numpy as np

from .config import HEIGHT, WIDTH
from .errors import SteelnbError

SHAPE = (HEIGHT, WIDTH)
_INT64_MAX = np.iinfo(np.int64).max


class RLEError(SteelnbError):
    """A run-length string is malformed; the message says what is wrong."""


def encode(mask: np.ndarray) -> str:
    """Encode a binary mask (H, W) as a Kaggle RLE string ("" for an empty mask).

    Any non-zero value counts as foreground.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise RLEError(f"encode expects a 2-D mask (H, W), got shape {mask.shape}")
    if mask.dtype == bool:
        m = mask.view(np.uint8)
    elif mask.dtype == np.uint8 and mask.max(initial=0) <= 1:
        m = mask
    else:
        m = np.not_equal(mask, 0).view(np.uint8)
    # only the columns between the first and last foreground column are scanned
    cols = np.flatnonzero(m.any(axis=0))
    if not cols.size:
        return ""
    c0, c1 = int(cols[0]), int(cols[-1]) + 1
    height = m.shape[0]
    padded = np.zeros((c1 - c0) * height + 2, dtype=np.uint8)
    padded[1:-1] = m[:, c0:c1].T.ravel()  # column-major order of that band
    # run boundaries are where the padded signal changes value (1-indexed positions)
    edges = np.flatnonzero(padded[1:] != padded[:-1]) + (1 + c0 * height)
    runs = edges.copy()
    runs[1::2] -= edges[0::2]
    return " ".join(map(str, runs.tolist()))


def _fromstring_raises() -> bool:
    """Whether this NumPy's ``fromstring`` raises (rather than warns) on unparsable text."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            np.fromstring("1 x", dtype=np.int64, sep=" ")
        except ValueError:
            return True
    return False


_FROMSTRING_RAISES = _fromstring_raises()


def _fast_ints(text: str) -> np.ndarray | None:
    """An even, non-zero number of unsigned integers parsed by NumPy's C reader (several times
    faster than ``np.array(text.split())``), or None: then ``parse`` takes the careful path.

    Without a sign character every number read is one whitespace-separated token, so the
    values are exactly those of the tokens.
    """
    if "-" in text or "+" in text:
        return None
    try:
        if _FROMSTRING_RAISES:
            values = np.fromstring(text, dtype=np.int64, sep=" ")
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("error", DeprecationWarning)  # older NumPy only warns on bad text
                values = np.fromstring(text, dtype=np.int64, sep=" ")
    except (ValueError, DeprecationWarning):
        return None
    if not values.size or values.size % 2:
        return None  # empty or odd: let the careful path say
    return values


def parse(rle: str, shape: tuple[int, int] = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """Validate an RLE string and return its 0-indexed run starts and lengths.

    Raises ``RLEError`` on: an odd number of tokens, non-integer tokens, start < 1,
    length < 1, runs past the end of the mask, runs unsorted or overlapping.
    """
    if rle is None or (isinstance(rle, float) and np.isnan(rle)):
        rle = ""
    if not isinstance(rle, str):
        raise RLEError(f"expected an RLE string, got {type(rle).__name__}")
    values = _fast_ints(rle)
    if values is None or values.max() == _INT64_MAX:  # not plain, or an overflow clamped to the limit
        tokens = rle.split()
        if not tokens:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        if len(tokens) % 2:
            raise RLEError(f"odd number of tokens ({len(tokens)}): RLE must be pairs 'start length'")
        try:
            values = np.array(tokens, dtype=np.int64)
        except ValueError:
            bad = next(t for t in tokens if not t.lstrip("+-").isdigit())
            raise RLEError(f"non-integer token {bad!r}") from None
    starts, lengths = values[0::2], values[1::2]
    size = shape[0] * shape[1]
    ends = starts + lengths - 1  # last pixel, 1-indexed
    # one cheap test for the valid case: increasing disjoint runs, the first start >= 1, the
    # last end inside, every length >= 1; otherwise the checks below find the first fault
    if starts[0] >= 1 and ends[-1] <= size and lengths.min() >= 1 and (starts[1:] > ends[:-1]).all():
        return starts - 1, lengths
    if (starts < 1).any():
        i = int(np.argmax(starts < 1))
        raise RLEError(f"run {i + 1}: start {starts[i]} < 1 (starts are 1-indexed)")
    if (lengths < 1).any():
        i = int(np.argmax(lengths < 1))
        raise RLEError(f"run {i + 1}: length {lengths[i]} < 1")
    if (ends > size).any():
        i = int(np.argmax(ends > size))
        raise RLEError(
            f"run {i + 1}: {starts[i]} {lengths[i]} ends at pixel {ends[i]}, past the end of a "
            f"{shape[0]}x{shape[1]} mask ({size} pixels)"
        )
    overlap = starts[1:] <= ends[:-1]
    i = int(np.argmax(overlap))
    what = "unsorted" if starts[i + 1] < starts[i] else "overlapping"
    raise RLEError(f"runs {i + 1} and {i + 2} are {what}: start {starts[i + 1]} <= previous end {ends[i]}")


def decode(rle: str, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """Decode a Kaggle RLE string into a uint8 0/1 mask of ``shape`` (H, W)."""
    size = shape[0] * shape[1]
    values = _fast_ints(rle) if isinstance(rle, str) else None
    if values is not None and np.maximum.reduce(values) <= size:
        # the mask is alternating background / foreground runs: gap, run, gap, ..., run, gap,
        # bounded by 1, start, start + length, ..., size + 1 (1-indexed)
        bounds = np.empty(values.size + 2, dtype=np.int64)
        bounds[0], bounds[-1] = 1, size + 1
        bounds[1:-1] = values
        bounds[2:-1:2] += values[0::2]
        counts = np.subtract(bounds[1:], bounds[:-1])
        alternating = _alternating(counts.size)  # 0, 1, 0, 1, ...: the value of each run
        # valid runs (the checks of parse() in one go): every gap >= 0, every length >= 1
        if np.minimum.reduce(counts - alternating) >= 0:
            return np.repeat(alternating, counts).reshape(shape, order="F")
    starts, lengths = parse(rle, shape)  # raises the precise error, or takes other spellings
    bounds = np.empty(2 * starts.size + 2, dtype=np.int64)
    bounds[0], bounds[-1] = 0, size
    bounds[1:-1:2] = starts
    np.add(starts, lengths, out=bounds[2:-1:2])
    counts = np.subtract(bounds[1:], bounds[:-1])
    return np.repeat(_alternating(counts.size), counts).reshape(shape, order="F")


def _alternating(n: int) -> np.ndarray:
    """uint8 0, 1, 0, 1, ... of length ``n`` (a view of a cached array)."""
    global _ALTERNATING
    if _ALTERNATING.size < n:
        _ALTERNATING = _make_alternating(max(n, 2 * _ALTERNATING.size))
    return _ALTERNATING[:n]


def _make_alternating(n: int) -> np.ndarray:
    values = (np.arange(n) % 2).astype(np.uint8)
    values.flags.writeable = False  # shared by every call
    return values


_ALTERNATING = _make_alternating(4096)


def area(rle: str, shape: tuple[int, int] = SHAPE) -> int:
    """Number of foreground pixels of an RLE string, without decoding it."""
    _, lengths = parse(rle, shape)
    return int(lengths.sum())
