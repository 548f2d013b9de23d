"""Provenance of a run: what data it saw and which code produced it, for ``metrics.json``.

``data_info`` names the data set (synthetic, Kaggle or other), the subset and the sizes of the
three splits with their defect-free images; ``code_info`` gives the git commit of the checkout
and the versions of the libraries that decide the numbers. A reader can then tell synthetic
numbers from Severstal numbers, and re-run the same code.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

#: Images in the Kaggle train set; a folder holding this many train images is the Kaggle data.
KAGGLE_TRAIN_IMAGES = 12568
SYNTHETIC_MARKER = "synthetic.json"  # written by steelnb.data.synthetic.generate
VERSIONED = (
    "torch",
    "segmentation-models-pytorch",
    "lightning",
    "albumentations",
    "timm",
    "numpy",
    "steelnb",
)


def data_kind(data_dir: str | Path, n_images: int) -> str:
    """ "synthetic" (the folder carries the generator's marker), "kaggle" (all 12,568 train
    images present) or "other" (e.g. a sample of the Kaggle images, or another data set)."""
    if (Path(data_dir) / SYNTHETIC_MARKER).is_file():
        return "synthetic"
    return "kaggle" if n_images >= KAGGLE_TRAIN_IMAGES else "other"


def data_info(
    data_dir: str | Path, subset: str, n_images: int, splits: Mapping[str, Sequence[str]], defective: set[str]
) -> dict[str, Any]:
    """The ``data`` block of metrics.json.

    ``n_images``: train images in the folder; ``splits``: {"train"|"val"|"test": image ids};
    ``defective``: ids of the images with at least one mask. Returns kind, dir, subset,
    n_train/n_val/n_test, clean_train/clean_val/clean_test and ``test_split``, the fingerprint of
    the test ids (``split_fingerprint``).
    """
    out: dict[str, Any] = {
        "kind": data_kind(data_dir, n_images),
        "dir": str(Path(data_dir).resolve()),
        "subset": subset,
        "images_in_folder": n_images,
    }
    for name in ("train", "val", "test"):
        ids = list(splits.get(name, []))
        out[f"n_{name}"] = len(ids)
        out[f"clean_{name}"] = sum(1 for i in ids if i not in defective)
    out["test_split"] = split_fingerprint(splits.get("test", []))
    return out


def split_fingerprint(ids: Sequence[str]) -> str:
    """A short fingerprint of a set of image ids (sha1 of the sorted ids, 12 hex digits): two runs
    were judged on the same test images exactly when their fingerprints match."""
    return hashlib.sha1("\n".join(sorted(map(str, ids))).encode()).hexdigest()[:12]


def git_commit(path: str | Path | None = None) -> dict[str, Any]:
    """{"commit": sha or None, "dirty": bool or None} of the git checkout holding ``path``."""
    where = Path(path or Path(__file__).resolve().parent)
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = (
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=where,
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
            != ""
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": sha or None, "dirty": dirty}


def code_info() -> dict[str, Any]:
    """The ``code`` block of metrics.json: git commit, dirty flag, Python and library versions."""
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {**git_commit(), "python": platform.python_version(), "versions": versions}
