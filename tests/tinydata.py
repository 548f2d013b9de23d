"""A tiny in-memory data module for the training tests, importable by their subprocess scripts too."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

#: 03_train's parameters for a tiny CPU run (ResNet-50 at 64x320, batch 2, post-processing tuned
#: on 32x160 maps), which the notebook and Slurm tests complete with their data and folders
TINY_TRAIN = {
    "encoder": "resnet50",
    "height": 64,
    "width": 320,
    "batch_size": 2,
    "device": "cpu",
    "n_show": 1,
    "tune_height": 32,
    "tune_width": 160,
    "progress_bar": False,
}


class TinyData(L.LightningDataModule):
    """n images (3, h, w) with a bright class-1 rectangle; masks (4, h, w)."""

    def __init__(self, n: int = 8, h: int = 64, w: int = 64, batch_size: int = 2) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, 3, h, w, generator=g)
        y = torch.zeros(n, 4, h, w)
        y[:, 0, h // 4 : h // 2, w // 4 : w // 2] = 1
        x[:, :, h // 4 : h // 2, w // 4 : w // 2] += 2
        y[::2, 2, -8:, :] = 1
        self.ds, self.batch_size = TensorDataset(x, y), batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.ds, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.ds, batch_size=self.batch_size)
