"""Run configuration: one frozen dataclass, saved as YAML beside every checkpoint.

A run folder holds ``config.yaml``; ``TrainConfig.from_yaml`` rebuilds the exact run from it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import SteelnbError
from .fileio import read_mapping, write_text

#: Image geometry of the Severstal data set (height, width).
HEIGHT, WIDTH = 256, 1600
N_CLASSES = 4
#: The reference project's three encoders: the documented, tested set.
REFERENCE_ENCODERS = ("resnet50", "efficientnet-b3", "efficientnet-b4")
LOSSES = ("dice_bce", "tversky", "focal", "lovasz")
SELECT_BY = ("val_dice", "val_kaggle", "val_loss")
SCHEDULES = ("plateau", "onecycle")


class ConfigError(SteelnbError):
    """A configuration file or value is not valid; the message names the file or field."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything needed to reproduce one training run.

    Defaults are the reference recipe (Adam 1e-3 encoder / 1e-2 decoder+head,
    ReduceLROnPlateau 0.15 / 2, 256x768 masks) sized for a CPU run on the synthetic set.
    """

    # data
    data_dir: str = "data/synthetic"
    labels: str = "train.csv"  # relative to data_dir unless absolute
    images: str = "train_images"  # relative to data_dir unless absolute
    # training images: "study" (image-level balanced + the Kaggle share of clean images),
    # "balanced" (mask-level, as the reference did), "images" (image-level + clean_images), "all",
    # or a CSV of ImageIds
    subset: str = "study"
    per_class: int = 250
    clean_images: int = 0  # defect-free images added to the subset "images"
    max_images: int = 0  # cap on the training images (0 = no cap); validation and test are not capped
    # CSV ImageId,fold written by the class-balance notebook (fold -1 = held-out test split); ""
    # computes them on the subset with test_share
    folds: str = ""
    n_folds: int = 5  # validation is fold `fold` of `n_folds` folds stratified by class set
    fold: int = 0
    test_share: float = 0.2  # share of the images held out as the test split when folds are computed
    min_test: int = 0  # ... but at least this many test images, up to half (sampling.assign_folds)
    height: int = 256
    width: int = 768
    crop_width: int = 0  # > 0: train on random crops of height x crop_width of the resized image
    crop_defect_share: float = 0.0  # share of crops placed on a defect (when the image has one)
    num_workers: int = 0
    # model
    arch: str = "Unet"
    encoder: str = "efficientnet-b4"
    encoder_weights: str | None = None  # "imagenet" needs the network (or a cached file)
    classes: int = N_CLASSES
    # encoder stages the UNet uses (smp encoder_depth, 3-5): 5 is the whole encoder, down to 1/32
    # of the image; 4 stops at 1/16, where a 64-pixel-high image is already 4 pixels high
    encoder_depth: int = 5
    # UNet decoder widths, deepest block first, one per encoder stage; empty: smp's default
    # (256, 128, 64, 32, 16)[:encoder_depth]
    decoder_channels: tuple[int, ...] = ()
    # start every pixel at this defect probability (segmentation-head bias logit(p), RetinaNet's
    # prior init) instead of smp's 0.5, which BCE first drives to "no defect anywhere"; 0: smp's init
    head_prior: float = 0.0
    # > 0: an image-level classification head (smp aux_params) trained with BCE on "class c is in
    # the image (crop)" at this weight beside the segmentation loss; post-processing tunes a gate
    # on its probability: below a class threshold the class is emptied, or needs a larger minimum
    # area (the Kaggle winners' gate). The mask probabilities are the mask head's own
    cls_weight: float = 0.0
    # weight of the segmentation loss; 0 (with cls_weight > 0) trains the encoder and the
    # classification head alone on image-level labels, clean images included: the classification
    # stage whose last.ckpt a segmentation run then takes as its encoder_weights (the reference's
    # proposed, never-run "classification first")
    seg_weight: float = 1.0
    # pseudo-labels (``steelnb.winners.pseudo.make_pseudo_labels``): a label CSV of confidently predicted
    # unlabelled images, relative to data_dir unless absolute; "" = none
    pseudo_labels: str = ""
    pseudo_images: str = "test_images"  # their folder, relative to data_dir unless absolute
    # share of each training batch drawn from the pseudo-labelled images (0 = off): every batch
    # holds round(pseudo_share * batch_size) of them; validation and the test split never do
    pseudo_share: float = 0.0
    # a run folder or checkpoint whose whole model (encoder, decoder, head) this run starts from,
    # with a new optimiser and schedule (not a resume); relative to the working folder; "" = none
    init_from: str = ""
    # loss
    loss: str = "dice_bce"
    loss_params: Mapping[str, Any] = field(default_factory=dict)
    # BCE pos_weight of dice_bce, one positive number per class (the 1st place: 2, 2, 1, 1.5);
    # empty: none. A string "2,2,1,1.5" (the command line) is read as that list
    pos_weight: list[float] = field(default_factory=list)
    # optimisation
    lr_encoder: float = 1e-3
    lr_decoder: float = 1e-2  # decoder and segmentation head
    plateau_factor: float = 0.15
    plateau_patience: int = 2
    early_stopping_patience: int = 5  # 0 turns early stopping off; must exceed plateau_patience
    warmup_epochs: float = 0.0  # warm-up over this many epochs (plateau: linear from 1 %; onecycle: its rise)
    # "plateau": the reference's ReduceLROnPlateau on the validation loss; "onecycle": warm-up to
    # lr_encoder / lr_decoder, then cosine decay to ~0 by the last step (short runs from scratch)
    schedule: str = "plateau"
    # stochastic depth of the encoder's residual blocks (smp's EfficientNets: 0.2 at the last block);
    # None keeps the encoder's own. Training from scratch briefly, 0 avoids the train/eval variance
    # shift it leaves in BatchNorm statistics
    drop_path_rate: float | None = None
    bn_momentum: float | None = None  # set every BatchNorm's momentum (smp's EfficientNets use 0.01)
    epochs: int = 10
    batch_size: int = 8
    accumulate_grad_batches: int = 1
    limit_train_batches: float = 1.0  # int-valued floats >1 mean a batch count
    limit_val_batches: float = 1.0
    threshold: float = 0.5
    # the validation measure that picks best.ckpt: val_dice (pooled Dice at the threshold; the
    # post-processing tuned later removes the false positives that val_kaggle punishes, so an
    # early all-empty epoch would win on val_kaggle), val_kaggle or val_loss
    select_by: str = "val_dice"
    # hardware
    device: str = "auto"  # "auto" picks CUDA when present, else "cpu"
    devices: int = 1
    strategy: str = "auto"  # e.g. "ddp" for several GPUs, torchrun or SLURM
    num_nodes: int = 1
    precision: str = "auto"  # auto: bf16-mixed / 16-mixed on CUDA, 32-true on CPU
    channels_last: bool = True
    # bookkeeping
    seed: int = 0
    out_dir: str = "weights"
    run_name: str = ""  # "" derives <encoder>__<loss>__<height>x<width>
    resume: bool = False

    def __post_init__(self) -> None:
        _check_training(self)
        _check_split_and_model(self)
        object.__setattr__(self, "decoder_channels", _decoder_channels(self))
        _check_pseudo(self)
        object.__setattr__(self, "pos_weight", _pos_weight(self))
        # loss_params arrives from YAML/CLI as a plain dict; keep it immutable-ish by copying
        object.__setattr__(self, "loss_params", dict(self.loss_params or {}))

    # -- derived values ---------------------------------------------------------------------
    @property
    def name(self) -> str:
        """Run folder name: ``run_name`` or ``<encoder>__<loss>__<H>x<W>``, with ``__ft`` after it
        for a run that starts from another (``init_from``), so a fine-tune never overwrites its start."""
        derived = f"{self.encoder}__{self.loss}__{self.height}x{self.width}" + (
            "__ft" if self.init_from else ""
        )
        return self.run_name or derived

    @property
    def model_kwargs(self) -> dict[str, Any]:
        """Architecture options beyond arch/encoder/classes, for ``models.build_model``."""
        out: dict[str, Any] = {"decoder_channels": self.decoder_channels} if self.decoder_channels else {}
        if self.encoder_depth != 5:
            out["encoder_depth"] = self.encoder_depth
            out.setdefault("decoder_channels", (256, 128, 64, 32, 16)[: self.encoder_depth])
        if self.cls_weight > 0:
            out["classifier"] = True
        return out

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    def resolve(self, path: str) -> Path:
        """A data path relative to ``data_dir`` (absolute paths pass through)."""
        p = Path(path)
        return p if p.is_absolute() else Path(self.data_dir) / p

    # -- YAML -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["loss_params"] = dict(self.loss_params)
        d["decoder_channels"] = list(self.decoder_channels)  # YAML has lists, not tuples
        return d

    def to_yaml(self, path: str | Path) -> Path:
        """Write the config as YAML (atomically) and return the path.

        ``data_dir`` and ``out_dir`` are written relative to the file's folder (see ``from_yaml``),
        so a run folder's ``config.yaml`` works from the repository root, from ``notebooks/`` and
        after the whole project has moved.
        """
        return write_text(path, yaml.safe_dump(_file_fields(self.to_dict(), path), sort_keys=False))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown config field(s) {', '.join(unknown)}")
        try:
            return cls(**dict(data))
        except TypeError as e:  # wrong type that dataclass cannot take
            raise ConfigError(f"{source}: {e}") from e
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from e

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Read a config written by ``to_yaml`` (or by hand).

        In a file ``to_yaml`` wrote (it says so in ``_paths``), a relative ``data_dir`` or ``out_dir``
        is relative to the file's folder; in any other file (by hand, or from before this rule),
        relative to the working folder, as on the command line. The config returned holds them
        relative to the working folder.
        """
        path = Path(path)
        return cls.from_dict(_read_fields(path), source=str(path))

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> TrainConfig:
        """The config of a notebook's parameters (``03_train``'s cell tagged ``parameters``, with
        papermill's overrides): ``TrainConfig.from_parameters(globals())``.

        Takes the keys of ``parameters`` that are config fields (others, such as a notebook's own
        ``n_show``, and the kernel's globals are ignored; absent fields keep their defaults) and
        reads the literals that stand for None in a parameters cell (``PARAMETER_NONE``), which holds
        literals only. A bad value raises ``ConfigError`` naming the field, as ``from_dict``.
        """
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in parameters.items() if k in known}
        for name, is_none in PARAMETER_NONE.items():
            if name in values and values[name] is not None and is_none(values[name]):
                values[name] = None
        return cls.from_dict(values, source="notebook parameters")

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


# -- checks of a config's fields (``TrainConfig.__post_init__``, in this order) ---------------------
def _check_training(cfg: TrainConfig) -> None:
    """The loss, image size, folds, batch and epochs, early stopping, schedule, BatchNorm momentum and
    the measure that selects the best epoch."""
    if cfg.loss not in LOSSES:
        raise ConfigError(f"loss={cfg.loss!r}: expected one of {', '.join(LOSSES)}")
    if cfg.height % 32 or cfg.width % 32:
        raise ConfigError(f"height/width {cfg.height}x{cfg.width}: both must be multiples of 32 for a UNet")
    if cfg.n_folds < 2 or not 0 <= cfg.fold < cfg.n_folds:
        raise ConfigError(
            f"fold={cfg.fold} of n_folds={cfg.n_folds}: need n_folds >= 2 and 0 <= fold < n_folds"
        )
    if cfg.batch_size < 1 or cfg.epochs < 1:
        raise ConfigError("batch_size and epochs must be at least 1")
    if 0 < cfg.early_stopping_patience <= cfg.plateau_patience:
        raise ConfigError(
            f"early_stopping_patience={cfg.early_stopping_patience} <= plateau_patience={cfg.plateau_patience}: "
            "early stopping would end the run in the same epoch as the learning rate drops; make it larger"
        )
    if cfg.schedule not in SCHEDULES:
        raise ConfigError(f"schedule={cfg.schedule!r}: expected one of {', '.join(SCHEDULES)}")
    if cfg.bn_momentum is not None and not 0 < cfg.bn_momentum <= 1:
        raise ConfigError(f"bn_momentum={cfg.bn_momentum}: expected a value in (0, 1] or None")
    if cfg.select_by not in SELECT_BY:
        raise ConfigError(f"select_by={cfg.select_by!r}: expected one of {', '.join(SELECT_BY)}")


def _check_split_and_model(cfg: TrainConfig) -> None:
    """The test split, the crops and the model's options: stochastic depth, the classification and
    segmentation weights, the head prior and the encoder depth."""
    if not 0 <= cfg.test_share < 1:
        raise ConfigError(f"test_share={cfg.test_share}: expected 0 <= test_share < 1")
    if cfg.min_test < 0:
        raise ConfigError(f"min_test={cfg.min_test}: expected >= 0")
    if cfg.crop_width and (cfg.crop_width % 32 or not 0 < cfg.crop_width <= cfg.width):
        raise ConfigError(f"crop_width={cfg.crop_width}: expected a multiple of 32 up to width={cfg.width}")
    if cfg.drop_path_rate is not None and not 0 <= cfg.drop_path_rate < 1:
        raise ConfigError(f"drop_path_rate={cfg.drop_path_rate}: expected a rate in [0, 1) or None")
    if cfg.cls_weight < 0:
        raise ConfigError(f"cls_weight={cfg.cls_weight}: expected >= 0 (0: no classification head)")
    if cfg.seg_weight < 0 or (cfg.seg_weight == 0 and cfg.cls_weight <= 0):
        raise ConfigError(
            f"seg_weight={cfg.seg_weight}: expected >= 0, and 0 only with cls_weight > 0 "
            "(a classification stage); nothing would be trained"
        )
    if not 0 <= cfg.head_prior < 1:
        raise ConfigError(f"head_prior={cfg.head_prior}: expected a probability in [0, 1) (0: smp's init)")
    if cfg.encoder_depth not in (3, 4, 5):
        raise ConfigError(f"encoder_depth={cfg.encoder_depth}: expected 3, 4 or 5 encoder stages")


def _decoder_channels(cfg: TrainConfig) -> tuple[int, ...]:
    """``decoder_channels`` as a tuple of ``encoder_depth`` positive widths (or empty)."""
    channels = tuple(int(c) for c in (cfg.decoder_channels or ()))
    if channels and (len(channels) != cfg.encoder_depth or min(channels) < 1):
        raise ConfigError(
            f"decoder_channels={list(cfg.decoder_channels)}: expected {cfg.encoder_depth} positive "
            f"widths (one per decoder block, deepest first, encoder_depth={cfg.encoder_depth}) or "
            "empty for smp's default"
        )
    return channels


def _check_pseudo(cfg: TrainConfig) -> None:
    """pseudo_share in [0, 1), a whole number of pseudo images per batch, and a CSV to draw from."""
    if not 0 <= cfg.pseudo_share < 1:
        raise ConfigError(
            f"pseudo_share={cfg.pseudo_share}: expected a share of each batch in [0, 1) (0: no pseudo-labels)"
        )
    if cfg.pseudo_share == 0:
        return
    if not cfg.pseudo_labels:
        raise ConfigError(
            f"pseudo_share={cfg.pseudo_share} needs pseudo_labels: the CSV written by "
            "steelnb.winners.pseudo.make_pseudo_labels"
        )
    if not cfg.pseudo_images:
        raise ConfigError("pseudo_images is empty: name the folder of the pseudo-labelled images")
    k = round(cfg.pseudo_share * cfg.batch_size)
    if not 0 < k < cfg.batch_size:
        raise ConfigError(
            f"pseudo_share={cfg.pseudo_share} with batch_size={cfg.batch_size} gives {k} pseudo-labelled "
            "image(s) per batch; expected at least 1 and at least one real image"
        )


def _pos_weight(cfg: TrainConfig) -> list[float]:
    """``pos_weight`` as a list of ``classes`` positive floats (or empty)."""
    raw: Any = cfg.pos_weight
    if isinstance(raw, str):
        raw = raw.replace(",", " ").strip("[]() ").split()
    try:
        weights = [float(w) for w in (raw or ())]
    except (TypeError, ValueError):
        raise ConfigError(
            f"pos_weight={cfg.pos_weight!r}: expected {cfg.classes} positive numbers, one per class"
        ) from None
    if not weights:
        return []
    if len(weights) != cfg.classes or not all(0 < w < float("inf") for w in weights):
        raise ConfigError(
            f"pos_weight={cfg.pos_weight!r}: expected {cfg.classes} positive numbers, one per class "
            "(e.g. 2, 2, 1, 1.5), or empty for none"
        )
    if cfg.loss != "dice_bce":
        raise ConfigError(f"pos_weight is a BCE weight: it needs loss='dice_bce', not {cfg.loss!r}")
    if "pos_weight" in (cfg.loss_params or {}):
        raise ConfigError("pos_weight is given twice, as a field and in loss_params; keep the field")
    return weights


#: the literal that stands for None in a notebook's parameters cell (papermill parameters are
#: literals, and a typed ``float`` cannot hold None), per config field, as a test of the value
PARAMETER_NONE: dict[str, Callable[[Any], bool]] = {
    "encoder_weights": lambda v: v == "",  # empty: random initialisation
    "bn_momentum": lambda v: v == 0,  # 0: the library's own momentum
    "drop_path_rate": lambda v: v < 0,  # -1 (any negative): the encoder's own rate
}

#: where ``03_train``'s parameters cell starts from other defaults than ``TrainConfig``, and why
#: (a test compares the two and fails on a difference not listed here, or listed wrong)
NOTEBOOK_DEFAULTS: dict[str, tuple[Any, str]] = {
    "data_dir": ("../data/synthetic", "a notebook runs in notebooks/, one folder below the repository"),
    "out_dir": ("../weights", "a notebook runs in notebooks/, one folder below the repository"),
    "max_images": (64, "the defaults run in a few minutes on a CPU (DESIGN.md); 0 would train on all"),
    "min_test": (256, "at least as many test images as 02_class_balance holds out, so 03 alone matches it"),
    "height": (64, "64x416 is a quarter of 256x1600, small enough for a CPU run"),
    "width": (416, "64x416 is a quarter of 256x1600, small enough for a CPU run"),
    "epochs": (2, "a few minutes on a CPU; real runs override it"),
    "batch_size": (4, "64 images at 4 a batch: enough steps in two epochs on a CPU"),
    "head_prior": (0.01, "a short run from random weights learns from a 1 % head prior (plans/smoke.yaml)"),
}


#: the config fields that are paths of their own (the other data paths are relative to data_dir)
PATH_FIELDS = ("data_dir", "out_dir")
#: the key by which a saved config says its paths are relative to the file's folder
PATHS_KEY, PATHS_FROM_FILE = "_paths", "relative to this file"


def _file_fields(data: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """A config's fields as ``to_yaml`` writes them to ``path``: ``PATH_FIELDS`` relative to the
    file's folder, and ``PATHS_KEY`` saying so."""
    folder = Path(path).resolve().parent
    for name in PATH_FIELDS:
        data[name] = _relative(Path(data[name]).resolve(), folder)
    data[PATHS_KEY] = PATHS_FROM_FILE
    return data


def _read_fields(path: Path) -> dict[str, Any]:
    """The fields of a config file, ``PATH_FIELDS`` relative to the working folder (``from_yaml``)."""
    data = read_mapping(path, ConfigError, "config file", "a mapping of config fields")
    folder = path.resolve().parent
    if data.pop(PATHS_KEY, None) == PATHS_FROM_FILE:
        for name in PATH_FIELDS:
            if isinstance(data.get(name), str) and not Path(data[name]).is_absolute():
                data[name] = _relative(folder / data[name], Path.cwd())
    return data


def _relative(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` (with ``..`` as needed), or absolute where none exists."""
    try:
        return os.path.relpath(os.path.normpath(path), start)
    except ValueError:  # another drive (Windows)
        return str(path)
