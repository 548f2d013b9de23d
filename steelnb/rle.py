"""Run-length encoding in the Kaggle Severstal convention.

Pairs ``start length``; starts are 1-indexed and count down each column first (column-major,
Fortran order) over the 256 x 1600 mask. Both directions are vectorised with NumPy.
"""
from __future__ import annotations

import numpy as np

from .config import HEIGHT, WIDTH

SHAPE = (HEIGHT, WIDTH)


class RLEError(ValueError):
    """A run-length string is malformed; the message says what is wrong."""


def encode(mask: np.ndarray) -> str:
    """Encode a binary mask (H, W) as a Kaggle RLE string ("" for an empty mask).

    Any non-zero value counts as foreground.
    """
    if mask.ndim != 2:
        raise RLEError(f"encode expects a 2-D mask (H, W), got shape {mask.shape}")
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if not flat.any():
        return ""
    # run boundaries are where the padded signal changes value
    padded = np.empty(flat.size + 2, dtype=np.int8)
    padded[0] = padded[-1] = 0
    padded[1:-1] = flat
    edges = np.flatnonzero(padded[1:] != padded[:-1]) + 1  # 1-indexed positions
    starts, ends = edges[0::2], edges[1::2]
    runs = np.empty(starts.size * 2, dtype=np.int64)
    runs[0::2] = starts
    runs[1::2] = ends - starts
    return " ".join(map(str, runs.tolist()))


def parse(rle: str, shape: tuple[int, int] = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """Validate an RLE string and return its 0-indexed run starts and lengths.

    Raises ``RLEError`` on: an odd number of tokens, non-integer tokens, start < 1,
    length < 1, runs past the end of the mask, runs unsorted or overlapping.
    """
    if rle is None or (isinstance(rle, float) and np.isnan(rle)):
        rle = ""
    if not isinstance(rle, str):
        raise RLEError(f"expected an RLE string, got {type(rle).__name__}")
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
    if (starts < 1).any():
        i = int(np.argmax(starts < 1))
        raise RLEError(f"run {i + 1}: start {starts[i]} < 1 (starts are 1-indexed)")
    if (lengths < 1).any():
        i = int(np.argmax(lengths < 1))
        raise RLEError(f"run {i + 1}: length {lengths[i]} < 1")
    ends = starts + lengths - 1  # last pixel, 1-indexed
    if (ends > size).any():
        i = int(np.argmax(ends > size))
        raise RLEError(
            f"run {i + 1}: {starts[i]} {lengths[i]} ends at pixel {ends[i]}, past the end of a "
            f"{shape[0]}x{shape[1]} mask ({size} pixels)"
        )
    if starts.size > 1:
        overlap = starts[1:] <= ends[:-1]
        if overlap.any():
            i = int(np.argmax(overlap))
            what = "unsorted" if starts[i + 1] < starts[i] else "overlapping"
            raise RLEError(
                f"runs {i + 1} and {i + 2} are {what}: start {starts[i + 1]} <= previous end {ends[i]}"
            )
    return starts - 1, lengths


def decode(rle: str, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """Decode a Kaggle RLE string into a uint8 0/1 mask of ``shape`` (H, W)."""
    starts, lengths = parse(rle, shape)
    size = shape[0] * shape[1]
    # +1 at each run start, -1 after its end; a cumulative sum paints the runs
    delta = np.zeros(size + 1, dtype=np.int8)
    # parse() guarantees sorted, disjoint runs, so starts (and ends) are unique indices
    delta[starts] += 1
    delta[starts + lengths] -= 1
    flat = np.cumsum(delta[:-1], dtype=np.int8).astype(np.uint8)
    return flat.reshape(shape, order="F")


def area(rle: str, shape: tuple[int, int] = SHAPE) -> int:
    """Number of foreground pixels of an RLE string, without decoding it."""
    _, lengths = parse(rle, shape)
    return int(lengths.sum())
