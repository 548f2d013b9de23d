"""Tiny training configs for the tests: the settings that make a CPU run take seconds, in one
place (importable by the tests' subprocess scripts too, as ``tinydata``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steelnb.data.config import TrainConfig

#: a run of seconds on a CPU: ResNet-18 without pretrained weights at 64x64, batch 2, one epoch,
#: no early stopping (for ``tinydata.TinyData`` or a tiny synthetic set)
TINY_RUN: dict[str, Any] = {
    "encoder": "resnet18",
    "epochs": 1,
    "batch_size": 2,
    "height": 64,
    "width": 64,
    "early_stopping_patience": 0,
    "device": "cpu",
}


def tiny_config(out_dir: str | Path, **fields: Any) -> TrainConfig:
    """``TINY_RUN`` with ``fields`` on top, its run folder ``<out_dir>/run``."""
    return TrainConfig(**{**TINY_RUN, "out_dir": str(out_dir), "run_name": "run", **fields})


def data_config(data_dir: str | Path, **fields: Any) -> TrainConfig:
    """A tiny run on a data folder in the Kaggle layout (a synthetic set, the real sample): every
    image (subset "all"), ResNet-18 at 64x320 (the sheets' aspect), batch 4; ``fields`` on top."""
    base = {"subset": "all", "encoder": "resnet18", "height": 64, "width": 320, "batch_size": 4}
    return TrainConfig(**{"data_dir": str(data_dir), **base, **fields})
