"""Checkpoints that survive faults: written whole or not at all, refused when they cannot fit,
and carrying the random states a resumed run needs.

``AtomicCheckpointIO`` is Lightning's checkpoint writer made atomic (``fileio.atomic_path``); it
writes a checkpoint only when its size, estimated from its tensors (``checkpoint_size``), is free
on the disk. ``RandomStates`` keeps Python's, NumPy's, torch's and the training augmentation's
random states in ``last.ckpt`` and restores them on a resume.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..data.fileio import atomic_path, disk_full, free_space


def checkpoint_size(checkpoint: Any) -> int:
    """An upper estimate of the bytes ``torch.save`` writes for ``checkpoint``: its tensors' storages
    (each counted once), a zip record of 4 KB each at most, and 1 MB for the pickled rest."""
    seen: dict[int, int] = {}
    stack = [checkpoint]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            seen[storage.data_ptr() or id(storage)] = storage.nbytes()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return sum(seen.values()) + 4096 * len(seen) + 2**20


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic: each checkpoint goes to a temporary file beside
    its target and is renamed onto it once written (``fileio.atomic_path``), so a process killed
    or failing mid-write leaves the previous checkpoint whole. Lightning calls it on rank 0 only.

    A checkpoint is written only when its estimated size (``checkpoint_size``) is free on the
    disk, beside the one it replaces; otherwise, or when the disk fills while it is written (torch
    reports that as a RuntimeError), ``DiskFullError`` names the checkpoint, the free space and
    the size."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None
    ) -> None:
        size = checkpoint_size(checkpoint)
        with atomic_path(path, size=size) as tmp:
            try:
                super().save_checkpoint(checkpoint, str(tmp), storage_options)
            except RuntimeError as e:  # torch's writer says "file write failed", or less
                if free_space(Path(path).parent) >= size - tmp.stat().st_size:
                    raise
                raise disk_full(path, size) from e


class RandomStates(Callback):
    """The random states (Python, NumPy, torch and the training augmentation's) in ``last.ckpt``,
    restored when a run resumes: an epoch resumed from its start draws the same shuffle and
    augmentations as the run that never stopped (a mid-epoch resume still sees other ones)."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    @staticmethod
    def _augmentation(trainer: L.Trainer) -> list[Any]:
        """The training augmentation and every transform in it: albumentations gives each its
        own generators (seeded alike), so each one's state is kept."""
        loader = trainer.train_dataloader
        stack = [getattr(getattr(loader, "dataset", None), "transform", None)]
        found = []
        while stack:
            t = stack.pop(0)
            if hasattr(t, "py_random") and hasattr(t, "random_generator"):
                found.append(t)
            stack.extend(getattr(t, "transforms", None) or [])
        return found

    def state_dict(self) -> dict[str, Any]:
        _, key, pos, has_gauss, gauss = np.random.get_state()  # plain values: weights_only loads them
        numpy = {"key": key.tolist(), "pos": pos, "has_gauss": has_gauss, "gauss": gauss}
        state = {"python": random.getstate(), "numpy": numpy, "torch": torch.get_rng_state()}
        augs = self._augmentation(self._trainer) if getattr(self, "_trainer", None) else []
        state["augmentation"] = [
            (t.py_random.getstate(), t.random_generator.bit_generator.state) for t in augs
        ]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # the global states at once: on a resume Lightning makes the loader's iterator (which draws
        # its base seed) before any hook that runs after the restore; the augmentation's once the
        # loaders exist (on_train_start)
        random.setstate(state["python"])
        n = state["numpy"]
        np.random.set_state(
            ("MT19937", np.array(n["key"], dtype=np.uint32), n["pos"], n["has_gauss"], n["gauss"])
        )
        torch.set_rng_state(state["torch"])
        self._pending = state

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state, self._pending = self._pending, None
        if state is None:
            return
        augs, saved = self._augmentation(trainer), state.get("augmentation") or []
        if len(augs) == len(saved):  # the same augmentation as when it was saved
            for t, (py, gen) in zip(augs, saved):
                t.py_random.setstate(py)
                t.random_generator.bit_generator.state = gen
