"""Images and masks as tensors: reading, albumentations transforms, Dataset and DataModule.

``SteelDataset`` keeps only the RLE strings of its images and decodes an image's masks when
the item is asked for, so memory does not grow with the data set. ``SteelDataModule`` turns a
``TrainConfig`` into train/validation loaders (subset, cap, stratified folds).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import albumentations as A
import cv2
import lightning as L
import numpy as np
import pandas as pd
import torch
from albumentations.pytorch import ToTensorV2
from torch.utils.data import DataLoader, Dataset

from . import rle
from .config import N_CLASSES, TrainConfig
from .labels import COLUMNS, LabelError, image_table, read_labels
from .sampling import assign_folds, balanced_subset, image_subset


class ImageError(ValueError):
    """An image file is missing, unreadable or truncated; the message names the file."""


def read_image(path: str | Path) -> np.ndarray:
    """Read an image by its content (a PNG named .jpg works): uint8 RGB (H, W, 3).

    Grey images come back as three identical channels. Raises ``ImageError`` naming the
    file when it is missing, not an image, or truncated.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(f"{path}: cannot read image file ({e.strerror or e})") from None
    buf = np.frombuffer(data, dtype=np.uint8)
    # OpenCV decodes a truncated JPEG with a warning and grey fill: check the end marker first
    if data[:2] == b"\xff\xd8" and data.rstrip(b"\x00\r\n ")[-2:] != b"\xff\xd9":
        raise ImageError(f"{path}: truncated JPEG (no end-of-image marker); expected a complete image")
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if image is None:
        raise ImageError(f"{path}: not a readable image ({len(data)} bytes); expected a JPEG or PNG")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _to_tensor() -> ToTensorV2:
    return ToTensorV2(transpose_mask=True)


def train_transforms(height: int, width: int, seed: int | None = None) -> A.Compose:
    """Training augmentation: resize to (height, width), flips, brightness/contrast,
    ImageNet normalisation, to tensors: image float32 (3, H, W), mask uint8 (C, H, W).

    albumentations keeps its own random state (global seeds do not reach it): ``seed`` makes
    the augmentation reproducible; ``SteelDataModule`` reseeds it in each loader worker.
    """
    return A.Compose([
        A.Resize(height, width, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST),
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
        A.Normalize(),  # ImageNet mean and std
        _to_tensor(),
    ], seed=seed)


def val_transforms(height: int, width: int) -> A.Compose:
    """Validation / inference: resize, ImageNet normalisation, to tensors (as ``train_transforms``).

    Call as ``val_transforms(h, w)(image=rgb)["image"]`` -> float32 tensor (3, h, w).
    """
    return A.Compose([
        A.Resize(height, width, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST),
        A.Normalize(),
        _to_tensor(),
    ])


def _seed_worker(worker_id: int) -> None:
    """DataLoader worker init: a distinct, reproducible augmentation stream per worker
    (torch derives each worker's seed from the seeded main process)."""
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info is not None else None
    if isinstance(transform, A.BaseCompose):
        transform.set_random_seed(info.seed % 2**32)


class SteelDataset(Dataset):
    """(image float32 (3, H, W), masks float32 (4, H, W)) per image id.

    ``labels`` is a tidy label table; images absent from it are defect-free. Only the RLE
    strings are kept; masks are decoded per item. Without ``transform`` the image is scaled
    to [0, 1] at full size.
    """

    def __init__(
        self,
        images_dir: str | Path,
        labels: pd.DataFrame,
        image_ids: Sequence[str],
        transform: A.Compose | None = None,
    ) -> None:
        self.images_dir = Path(images_dir)
        self.image_ids = [str(i) for i in image_ids]
        self.transform = transform
        wanted = set(self.image_ids)
        rows = labels[COLUMNS][labels["ImageId"].isin(wanted)]
        self.encodings: dict[str, tuple[tuple[int, str], ...]] = {}
        for image_id, c, enc in rows.itertuples(index=False):
            self.encodings[image_id] = self.encodings.get(image_id, ()) + ((int(c), str(enc)),)

    def __len__(self) -> int:
        return len(self.image_ids)

    def masks(self, index: int, shape: tuple[int, int]) -> np.ndarray:
        """Decoded masks of item ``index``: uint8 (H, W, 4) for albumentations."""
        image_id = self.image_ids[index]
        out = np.zeros((*shape, N_CLASSES), dtype=np.uint8)
        for c, enc in self.encodings.get(image_id, ()):
            try:
                out[..., c - 1] = rle.decode(enc, shape)
            except rle.RLEError as e:
                raise LabelError(f"image {image_id} class {c}: {e} (image is {shape[0]}x{shape[1]})") from None
        return out

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = read_image(self.images_dir / self.image_ids[index])
        masks = self.masks(index, image.shape[:2])
        if self.transform is None:
            return (torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32) / 255.0),
                    torch.from_numpy(masks.transpose(2, 0, 1).astype(np.float32)))
        out = self.transform(image=image, mask=masks)
        return out["image"].float(), torch.as_tensor(out["mask"]).float()


class SteelDataModule(L.LightningDataModule):
    """Train/validation loaders from a ``TrainConfig``.

    Reads the labels and the image table (``config.images`` folder), applies ``config.subset``
    ("balanced": the images of ``balanced_subset``, with all their masks; "images":
    ``image_subset`` with ``clean_images``; "all"; or a CSV whose ImageId column is used), caps
    at ``max_images`` (seeded), and splits by ``config.folds`` (CSV ImageId,fold) or
    ``assign_folds``. Attributes: ``labels`` (tidy, chosen images only), ``table``,
    ``train_ids``, ``val_ids``.
    """

    def __init__(self, config: TrainConfig) -> None:
        super().__init__()
        self.config = config
        self.images_dir = config.resolve(config.images)
        labels = read_labels(config.resolve(config.labels))
        table = image_table(labels, self.images_dir, on_missing="skip", count_parts=False)
        table = self._subset(table, labels)
        if config.max_images and len(table) > config.max_images:
            keep = np.random.default_rng(config.seed).choice(len(table), config.max_images, replace=False)
            table = table.iloc[np.sort(keep)]
        self.table = table.reset_index(drop=True)
        self.labels = labels[labels["ImageId"].isin(set(self.table["ImageId"]))].reset_index(drop=True)
        folds = self._folds()
        val = folds["fold"].to_numpy() == config.fold
        self.train_ids: list[str] = folds["ImageId"][~val].tolist()
        self.val_ids: list[str] = folds["ImageId"][val].tolist()
        if not self.train_ids or not self.val_ids:
            raise LabelError(
                f"{config.resolve(config.labels)}: {len(self.table)} image(s) give {len(self.train_ids)} train and "
                f"{len(self.val_ids)} validation images for fold {config.fold} of {config.n_folds}; need both non-empty"
            )

    def _subset(self, table: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
        cfg = self.config
        if cfg.subset == "all":
            return table
        if cfg.subset == "balanced":
            ids = set(balanced_subset(labels, per_class=cfg.per_class, seed=cfg.seed)["ImageId"])
            return table[table["ImageId"].isin(ids)]
        if cfg.subset == "images":
            return image_subset(table, per_class=cfg.per_class, n_clean=cfg.clean_images, seed=cfg.seed)
        path = cfg.resolve(cfg.subset)
        if path.suffix.lower() != ".csv" or not path.is_file():
            raise LabelError(f"subset={cfg.subset!r}: expected 'balanced', 'images', 'all' or an existing CSV file")
        ids = self._read_ids(path)
        missing = sorted(set(ids) - set(table["ImageId"]))
        if missing:
            raise LabelError(f"{path}: {len(missing)} image(s) not in {self.images_dir}, first {missing[0]}")
        return table[table["ImageId"].isin(set(ids))]

    @staticmethod
    def _read_ids(path: Path, column: str = "ImageId") -> list[str]:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        if column not in frame.columns:
            raise LabelError(f"{path}: no {column} column; found {list(frame.columns)}")
        return frame[column].str.strip().tolist()

    def _folds(self) -> pd.DataFrame:
        cfg = self.config
        if not cfg.folds:
            return assign_folds(self.table, n_folds=cfg.n_folds, seed=cfg.seed)
        path = cfg.resolve(cfg.folds)
        if not path.is_file():
            raise LabelError(f"{path}: folds file not found")
        frame = pd.read_csv(path, dtype={"ImageId": str}, keep_default_na=False)
        if not {"ImageId", "fold"} <= set(frame.columns):
            raise LabelError(f"{path}: expected columns ImageId,fold; found {list(frame.columns)}")
        if frame["ImageId"].duplicated().any():
            raise LabelError(f"{path}: image {frame['ImageId'][frame['ImageId'].duplicated()].iloc[0]} in two folds")
        folds = self.table[["ImageId"]].merge(frame[["ImageId", "fold"]], on="ImageId", how="left")
        if folds["fold"].isna().any():
            raise LabelError(f"{path}: no fold for image {folds['ImageId'][folds['fold'].isna()].iloc[0]}")
        return folds.astype({"fold": int})

    def dataset(self, split: str) -> SteelDataset:
        """The ``"train"`` (augmented) or ``"val"`` dataset."""
        cfg = self.config
        if split == "train":
            transform = train_transforms(cfg.height, cfg.width, seed=cfg.seed)
            return SteelDataset(self.images_dir, self.labels, self.train_ids, transform)
        return SteelDataset(self.images_dir, self.labels, self.val_ids, val_transforms(cfg.height, cfg.width))

    def _loader(self, split: str) -> DataLoader:
        ds = self.dataset(split)
        workers = self.config.num_workers
        return DataLoader(
            ds,
            batch_size=self.config.batch_size,
            shuffle=split == "train",
            # a last batch of one breaks BatchNorm in training
            drop_last=split == "train" and len(ds) > self.config.batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            worker_init_fn=_seed_worker if workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")
