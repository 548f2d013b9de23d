"""Images and masks as tensors: reading, albumentations transforms, Dataset and DataModule.

``SteelDataset`` keeps only the RLE strings of its images and decodes an image's masks when
the item is asked for, so memory does not grow with the data set. ``SteelDataModule`` turns a
``TrainConfig`` into train/validation loaders (subset, cap, stratified folds); with
``pseudo_share`` its training batches each hold a fixed number of pseudo-labelled images
(``steelnb.winners.pseudo``), drawn by ``PseudoShareSampler``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import lightning as L
import numpy as np
import pandas as pd
import torch
from albumentations.pytorch import ToTensorV2
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler

from .config import ConfigError, TrainConfig
from .images import IMAGENET_MEAN, IMAGENET_STD, read_image
from .labels import COLUMNS, LabelError, image_masks, image_table, read_labels
from .sampling import assign_folds, read_folds, sealed_folds, select_subset, split_ids
from .synthetic import sealed_ids


def _to_tensor() -> ToTensorV2:
    return ToTensorV2(transpose_mask=True)


def _crop(height: int, crop_width: int, defect_share: float) -> list[A.BasicTransform]:
    """A random (height, crop_width) crop; with probability ``defect_share`` one that holds a
    defect when the image has one (albumentations' CropNonEmptyMaskIfExists)."""
    if defect_share <= 0:
        return [A.RandomCrop(height, crop_width)]
    if defect_share >= 1:
        return [A.CropNonEmptyMaskIfExists(height, crop_width)]
    # OneOf picks a child with probability proportional to the child's p
    return [
        A.OneOf(
            [
                A.CropNonEmptyMaskIfExists(height, crop_width, p=defect_share),
                A.RandomCrop(height, crop_width, p=1 - defect_share),
            ],
            p=1.0,
        )
    ]


def train_transforms(
    height: int, width: int, seed: int | None = None, crop_width: int = 0, crop_defect_share: float = 0.0
) -> A.Compose:
    """Training augmentation: resize to (height, width), a random crop of (height, crop_width)
    when ``crop_width`` (the Kaggle winners trained on crops and predicted whole images), flips,
    brightness/contrast, ImageNet normalisation, to tensors: image float32 (3, H, W'), mask uint8 (C, H, W').

    albumentations keeps its own random state (global seeds do not reach it): ``seed`` makes
    the augmentation reproducible; ``SteelDataModule`` reseeds it in each loader worker.
    """
    return A.Compose(
        [
            A.Resize(height, width, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST),
            *(_crop(height, crop_width, crop_defect_share) if crop_width and crop_width < width else []),
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
            A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
            _to_tensor(),
        ],
        seed=seed,
    )


def val_transforms(height: int, width: int) -> A.Compose:
    """Validation / inference: resize, ImageNet normalisation, to tensors (as ``train_transforms``).

    Call as ``val_transforms(h, w)(image=rgb)["image"]`` -> float32 tensor (3, h, w).
    """
    return A.Compose(
        [
            A.Resize(height, width, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST),
            A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
            _to_tensor(),
        ]
    )


class UnpaddedDistributedSampler(DistributedSampler):
    """Validation sampler for DDP that gives each rank ``indices[rank::world]`` without padding.

    torch's DistributedSampler repeats images so that every rank gets as many, and a metric
    summed over ranks then counts those images twice; here each image is seen exactly once
    (ranks may run one batch apart, which summed metric states do not mind). Lightning keeps
    a DistributedSampler it is given instead of inserting its own.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))  # type: ignore[arg-type]
        self.total_size = len(dataset)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


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
        return image_masks(self.encodings.get(image_id, ()), shape, image_id=image_id, channels_last=True)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = read_image(self.images_dir / self.image_ids[index])
        masks = self.masks(index, image.shape[:2])
        if self.transform is None:
            return (
                torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32) / 255.0),
                torch.from_numpy(masks.transpose(2, 0, 1).astype(np.float32)),
            )
        out = self.transform(image=image, mask=masks)
        return out["image"].float(), torch.as_tensor(out["mask"]).float()


class PseudoShareSampler(DistributedSampler):
    """Training sampler whose every batch holds ``per_batch`` pseudo-labelled items and
    ``batch_size - per_batch`` real ones, for a dataset of ``n_real`` real items followed by
    ``n_pseudo`` pseudo-labelled ones (``ConcatDataset([real, pseudo])``).

    It yields indices batch after batch, so a DataLoader with the same ``batch_size`` cuts them
    into those batches. An epoch is one pass over the real items (``n_real // real per batch``
    batches, at least one; the last partial batch is dropped, as the plain training loader drops
    it); the pseudo items are drawn from successive shuffles of the pseudo set, repeating when it
    is short. Positions within a batch are shuffled. Everything follows ``seed`` and the epoch
    (Lightning calls ``set_epoch``). Under DDP every process builds the same batches and takes
    every ``num_replicas``-th from ``rank``, each the same count; being a DistributedSampler,
    Lightning keeps it instead of inserting its own.
    """

    def __init__(
        self,
        dataset: Dataset,
        n_real: int,
        n_pseudo: int,
        batch_size: int,
        per_batch: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if not 0 < per_batch < batch_size or n_real < 1 or n_pseudo < 1:
            raise ValueError(
                f"per_batch={per_batch}, batch_size={batch_size}, n_real={n_real}, n_pseudo={n_pseudo}: "
                "need 0 < per_batch < batch_size and both sets non-empty"
            )
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.n_real, self.n_pseudo = n_real, n_pseudo
        self.batch_size, self.per_batch = batch_size, per_batch
        self.batches = max(1, n_real // (batch_size - per_batch) // num_replicas)  # per process
        self.num_samples = self.batches * batch_size
        self.total_size = self.num_samples * num_replicas

    @staticmethod
    def _stream(rng: np.random.Generator, n: int, count: int) -> np.ndarray:
        """``count`` indices from successive shuffles of range(n)."""
        passes = -(-count // n)
        return np.concatenate([rng.permutation(n) for _ in range(passes)])[:count]

    def global_batches(self) -> np.ndarray:
        """The epoch's batches of all processes: int64 (num_replicas * batches, batch_size) indices."""
        rng = np.random.default_rng([self.seed, self.epoch])
        total, real_per = self.batches * self.num_replicas, self.batch_size - self.per_batch
        real = self._stream(rng, self.n_real, total * real_per).reshape(total, real_per)
        pseudo = self._stream(rng, self.n_pseudo, total * self.per_batch).reshape(total, self.per_batch)
        return rng.permuted(np.concatenate([real, pseudo + self.n_real], axis=1), axis=1)

    def __iter__(self) -> Iterator[int]:
        return iter(self.global_batches()[self.rank :: self.num_replicas].ravel().tolist())

    def __len__(self) -> int:
        return self.num_samples


class MixedDataset(ConcatDataset):
    """Real training items followed by pseudo-labelled ones, sharing one ``transform`` (so that a
    loader worker reseeds the augmentation of both, see ``_seed_worker``). ``image_ids``: the ids
    in index order; ``n_real``: how many come first from the real split."""

    def __init__(self, real: SteelDataset, pseudo: SteelDataset) -> None:
        super().__init__([real, pseudo])
        self.transform = real.transform
        self.n_real = len(real)
        self.image_ids = real.image_ids + pseudo.image_ids


class SteelDataModule(L.LightningDataModule):
    """Train / validation / test data from a ``TrainConfig``.

    ``config.subset`` chooses the training images ("study": ``study_subset``, image-level
    balanced with the Kaggle share of clean images; "balanced": the images of the reference's
    ``balanced_subset`` with all their masks; "images": ``image_subset`` with ``clean_images``;
    "all"; or a CSV whose ImageId column is used). The split comes from ``config.folds`` (CSV
    ImageId,fold; fold -1 is the held-out test split, fold ``config.fold`` validation) or, when
    none is given, from ``assign_folds`` on the subset with ``config.test_share`` (a generated set's
    sealed images, where it has them, are then the test split: ``sampling.sealed_folds``). With a folds
    file the validation and test images are those of the file, whatever the subset, so runs on
    different subsets are judged on the same images. ``max_images`` caps the training images only.
    Attributes: ``labels`` (tidy, the images of all three splits), ``table``, ``train_ids``,
    ``val_ids``, ``test_ids``.

    With ``config.pseudo_share`` > 0 every training batch holds ``round(pseudo_share * batch_size)``
    images of ``config.pseudo_labels`` (a ``steelnb.winners.pseudo`` CSV of images in
    ``config.pseudo_images``), with the training transforms; validation and the test split are
    unchanged. The pseudo set is read when first asked for (``pseudo_ids``, ``pseudo_info``, the
    train loader: when training starts), so evaluating such a run does not need it; it is refused
    when its folder is the labelled one or when it names a labelled image.
    """

    def __init__(self, config: TrainConfig) -> None:
        super().__init__()
        self.config = config
        self.images_dir = config.resolve(config.images)
        labels = read_labels(config.resolve(config.labels))
        full = image_table(labels, self.images_dir, on_missing="skip", count_parts=False)
        subset = self._subset(full, labels)
        splits = split_ids(self._folds(full, subset), config.fold)
        in_subset = set(subset["ImageId"])
        train = [i for i in splits["train"] if i in in_subset]
        if config.max_images and len(train) > config.max_images:
            keep = np.random.default_rng(config.seed).choice(len(train), config.max_images, replace=False)
            train = [train[k] for k in np.sort(keep)]
        self.train_ids: list[str] = train
        self.val_ids: list[str] = splits["val"]
        self.test_ids: list[str] = splits["test"]
        used = set(train) | set(self.val_ids) | set(self.test_ids)
        self.full_table = full  # every image of the folder, for provenance
        self.table = full[full["ImageId"].isin(used)].reset_index(drop=True)
        self.labels = labels[labels["ImageId"].isin(used)].reset_index(drop=True)
        self._pseudo: tuple[list[str], pd.DataFrame] | None = None
        src = config.resolve(config.folds) if config.folds else config.resolve(config.labels)
        if not self.train_ids or not self.val_ids:
            raise LabelError(
                f"{src}: {len(train)} train and {len(self.val_ids)} validation images for fold {config.fold} of "
                f"{config.n_folds} (subset {config.subset!r}); need both non-empty"
            )

    def _subset(self, table: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
        cfg = self.config
        return select_subset(
            cfg.subset,
            table,
            labels,
            cfg.resolve,
            per_class=cfg.per_class,
            n_clean=cfg.clean_images,
            seed=cfg.seed,
        )

    def _folds(self, full: pd.DataFrame, subset: pd.DataFrame) -> pd.DataFrame:
        """ImageId,fold for the run: the folds file (checked) or folds computed on the subset."""
        cfg = self.config
        if not cfg.folds:
            # a generated set's sealed test images are its test split whoever cuts the folds (02 or here)
            sealed = sealed_ids(cfg.data_dir)
            if sealed and subset["ImageId"].isin(set(sealed)).any():
                return sealed_folds(subset, sealed, n_folds=cfg.n_folds, seed=cfg.seed)
            return assign_folds(
                subset, n_folds=cfg.n_folds, seed=cfg.seed, test_share=cfg.test_share, min_test=cfg.min_test
            )
        return read_folds(cfg.resolve(cfg.folds), full, subset, fold=cfg.fold, n_folds=cfg.n_folds)

    # -- pseudo-labels --------------------------------------------------------------------------
    @property
    def pseudo_dir(self) -> Path | None:
        """The folder of the pseudo-labelled images (None when ``pseudo_share`` is 0)."""
        cfg = self.config
        return cfg.resolve(cfg.pseudo_images) if cfg.pseudo_share > 0 else None

    def _load_pseudo(self) -> tuple[list[str], pd.DataFrame]:
        """(pseudo-labelled image ids, their tidy labels), read and checked once; empty when off."""
        if self._pseudo is not None:
            return self._pseudo
        cfg = self.config
        if cfg.pseudo_share <= 0:
            self._pseudo = ([], self.labels.iloc[:0])
            return self._pseudo
        splits = {"train": self.train_ids, "validation": self.val_ids, "test": self.test_ids}
        self._pseudo = _read_pseudo_set(cfg, self.images_dir, splits, set(self.full_table["ImageId"]))
        return self._pseudo

    @property
    def pseudo_ids(self) -> list[str]:
        """The pseudo-labelled image ids the training batches draw from ([] when ``pseudo_share`` is 0)."""
        return list(self._load_pseudo()[0])

    @property
    def pseudo_info(self) -> dict[str, Any] | None:
        """What the training used from a pseudo-label set, for metrics.json (None when off): files,
        share, images per batch, image counts and the runs that made it (its JSON summary)."""
        cfg = self.config
        ids, labels = self._load_pseudo()
        if not ids:
            return None
        csv = cfg.resolve(cfg.pseudo_labels)
        return {
            "labels": str(csv.resolve()),
            "images": str(cfg.resolve(cfg.pseudo_images).resolve()),
            "share": cfg.pseudo_share,
            "per_batch": round(cfg.pseudo_share * cfg.batch_size),
            "n_images": len(ids),
            "clean": len(set(ids) - set(labels["ImageId"])),
            "runs": _made_by(csv),
        }

    def dataset(self, split: str) -> SteelDataset:
        """The ``"train"`` (augmented, cropped when ``crop_width``), ``"pseudo"`` (the pseudo-labelled
        images with the training transforms), ``"val"`` or ``"test"`` dataset."""
        cfg = self.config
        if split in ("train", "pseudo"):
            transform = train_transforms(
                cfg.height,
                cfg.width,
                seed=cfg.seed,
                crop_width=cfg.crop_width,
                crop_defect_share=cfg.crop_defect_share,
            )
            if split == "train":
                return SteelDataset(self.images_dir, self.labels, self.train_ids, transform)
            ids, labels = self._load_pseudo()
            return SteelDataset(cfg.resolve(cfg.pseudo_images), labels, ids, transform)
        ids = {"val": self.val_ids, "test": self.test_ids}
        if split not in ids:
            raise ValueError(f"split={split!r}: expected 'train', 'pseudo', 'val' or 'test'")
        return SteelDataset(self.images_dir, self.labels, ids[split], val_transforms(cfg.height, cfg.width))

    def _mixed_loader(self) -> DataLoader:
        """The training loader with ``pseudo_share`` of each batch from the pseudo-labelled set."""
        cfg = self.config
        real, pseudo = self.dataset("train"), self.dataset("pseudo")
        pseudo.transform = real.transform  # one augmentation stream, reseeded per worker
        ds = MixedDataset(real, pseudo)
        trainer = getattr(self, "trainer", None)
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = PseudoShareSampler(
            ds,
            len(real),
            len(pseudo),
            cfg.batch_size,
            round(cfg.pseudo_share * cfg.batch_size),
            seed=cfg.seed,
            num_replicas=world,
            rank=rank,
        )
        return DataLoader(
            ds,
            batch_size=cfg.batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=cfg.num_workers,
            persistent_workers=cfg.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            worker_init_fn=_seed_worker if cfg.num_workers > 0 else None,
        )

    def _loader(self, split: str) -> DataLoader:
        ds = self.dataset(split)
        workers = self.config.num_workers
        sampler = None
        trainer = getattr(self, "trainer", None)
        if split != "train" and trainer is not None and trainer.world_size > 1:
            sampler = UnpaddedDistributedSampler(ds, trainer.world_size, trainer.global_rank)
        return DataLoader(
            ds,
            batch_size=self.config.batch_size,
            shuffle=split == "train" and sampler is None,
            sampler=sampler,
            # a last batch of one breaks BatchNorm in training
            drop_last=split == "train" and len(ds) > self.config.batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            worker_init_fn=_seed_worker if workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._mixed_loader() if self.config.pseudo_share > 0 else self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")


# -- the pseudo-label set of a run ------------------------------------------------------------------
def _read_pseudo_set(
    cfg: TrainConfig, images_dir: Path, splits: dict[str, list[str]], labelled: set[str]
) -> tuple[list[str], pd.DataFrame]:
    """(pseudo-labelled image ids, their tidy labels) of ``cfg.pseudo_labels``, checked: the file and
    its folder exist, the folder is not the labelled ``images_dir``, and no id is in one of the
    run's ``splits`` ({name: ids}) or among the ``labelled`` images of the folder."""
    from .labels import read_pseudo_labels

    csv, folder = cfg.resolve(cfg.pseudo_labels), cfg.resolve(cfg.pseudo_images)
    if not csv.is_file():
        raise ConfigError(f"pseudo_labels={cfg.pseudo_labels!r}: {csv}: pseudo-label file not found")
    if not folder.is_dir():
        raise ConfigError(f"pseudo_images={cfg.pseudo_images!r}: {folder}: image folder not found")
    if folder.resolve() == images_dir.resolve():
        raise ConfigError(
            f"pseudo_images={cfg.pseudo_images!r}: {folder} is the labelled image folder; pseudo-labels "
            "come from unlabelled images (test_images)"
        )
    ids, labels = read_pseudo_labels(csv, folder)
    for name, split in splits.items():
        leak = sorted(set(ids) & set(split))
        if leak:
            raise LabelError(
                f"{csv}: {len(leak)} pseudo-labelled image(s) are in the {name} split, first {leak[0]}; "
                "a pseudo-label set takes unlabelled images only"
            )
    leak = sorted(set(ids) & labelled)
    if leak:
        raise LabelError(
            f"{csv}: {len(leak)} pseudo-labelled image(s) are labelled images of {images_dir}, "
            f"first {leak[0]}; a pseudo-label set takes unlabelled images only"
        )
    return ids, labels


def _made_by(csv: Path) -> Any:
    """The runs that made a pseudo-label set, from its JSON summary (None without a readable one)."""
    from .labels import summary_path

    if summary_path(csv).is_file():
        try:
            return json.loads(summary_path(csv).read_text()).get("runs")
        except (ValueError, AttributeError):
            return None
    return None
