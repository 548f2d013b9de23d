"""Training with Lightning: ``SegmentationModule`` and ``fit(config) -> run folder``.

Run folder ``config.run_dir`` (weights/<name>/): ``best.ckpt`` (the best epoch by
``config.select_by`` on the validation split), ``last.ckpt`` (every epoch and every
``ckpt_every_n_steps`` optimizer steps), ``config.yaml``, ``metrics.json`` and ``logs/``
(TensorBoard, CSV). Checkpoints are written atomically by ``AtomicCheckpointIO``. Plateau
scheduling and early stopping follow ``val_loss``.

One writer per run folder: ``fit`` holds the folder's lock (``steelnb.data.locks``; rank 0 of a DDP
run), so a second training into it is refused before it changes anything. A checkpoint that
cannot fit on the disk is not written (``AtomicCheckpointIO``: its size is estimated from its
tensors before writing) and stops the run with ``DiskFullError``, the earlier checkpoints intact
and the message saying how to resume. ``last.ckpt`` carries the random states (``RandomStates``),
so a run resumed from an epoch's end draws the same batches and augmentations as one that never
stopped.
"""

from __future__ import annotations

import contextlib
import logging
import math
import subprocess
import sys
import time
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from ..data.config import ConfigError, TrainConfig
from ..data.errors import SteelnbError
from ..data.fileio import DiskFullError, write_json
from ..data.locks import hold
from .checkpoints import AtomicCheckpointIO, RandomStates
from .losses import loss_from_config
from .metrics import SegmentationMetrics
from .models import build_model, split_logits
from .provenance import code_info, data_info
from .runfolder import RunFolder, Splits

_QUIET = (
    r".*does not have many workers.*",
    r".*number of training batches.*logging interval.*",
    r".*Checkpoint directory.*exists and is not empty.*",
    r".*is_initialized.*",
    r".*Precision.*is not supported by the model summary.*",
    r".*tensorboardX.*",
    r".*LeafSpec.*",
)


#: devices whose parameters torch's fused Adam updates (elsewhere, e.g. MPS, the default loop)
FUSED_ADAM_DEVICES = ("cpu", "cuda")


class SegmentationModule(L.LightningModule):
    """Model + loss + optimiser recipe of one TrainConfig; batches are (images (N, 3, H, W),
    masks (N, C, H, W)). Hyper-parameters hold the config as a plain dict (weights_only-safe)."""

    def __init__(self, config: TrainConfig | dict[str, Any]) -> None:
        super().__init__()
        cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
        self.save_hyperparameters({"config": cfg.to_dict()})
        self.config = cfg
        self.model = build_model(cfg.arch, cfg.encoder, cfg.encoder_weights, cfg.classes, **cfg.model_kwargs)
        if cfg.drop_path_rate is not None:
            set_drop_path(self.model.encoder, cfg.drop_path_rate, cfg.encoder)
        if cfg.init_from:
            start_from(self.model, cfg)
        elif cfg.head_prior > 0:  # RetinaNet's prior init: sigmoid(bias) = head_prior at every pixel
            bias = self.model.segmentation_head[0].bias
            torch.nn.init.constant_(bias, math.log(cfg.head_prior / (1 - cfg.head_prior)))
        if (
            cfg.bn_momentum is not None
        ):  # smp's EfficientNets keep TF's 0.01: a short run's running stats stay at init
            for m in self.model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.momentum = cfg.bn_momentum
        # channels_last pays on CUDA (tensor cores). On CPU, alone and at one thread, a training step
        # of the smoke's encoders ran 1.05-1.24x faster with it (bench/bench_layout.py --train), but
        # inside the smoke (two workers) its training runs took 966 s against 992 s, and every run's
        # numbers moved (bench/learning.md): so CPU training keeps NCHW
        self.channels_last = cfg.channels_last and cfg.device != "cpu" and torch.cuda.is_available()
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.loss = loss_from_config(cfg)  # the loss, its params and the per-class BCE pos_weight
        self.val_metrics = SegmentationMetrics(cfg.classes, cfg.threshold)  # summed over DDP processes
        self.last_val: dict[str, Any] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """images (N, 3, H, W) -> logits (N, C, H, W); with a classification head (cls_weight > 0)
        the pair (mask logits, class logits (N, C)), in training and in eval mode alike."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The loss minimised on a batch, and the classification head's BCE (None without a head)."""
        masks, labels = split_logits(self(x))
        if labels is not None:  # image-level class logits (cls_weight > 0)
            cls_loss = F.binary_cross_entropy_with_logits(labels.float(), y.amax((2, 3)).float())
            seg = (
                self.loss(masks, y) if self.config.seg_weight else masks.sum() * 0.0
            )  # 0: classification stage
            return self.config.seg_weight * seg + self.config.cls_weight * cls_loss, cls_loss
        return self.loss(masks, y), None

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch[0], batch[1]
        loss, cls_loss = self.training_loss(x, y)
        n = len(x)
        if cls_loss is not None:
            self.log("train_cls_loss_step", cls_loss.detach(), on_step=True, on_epoch=False, batch_size=n)
        self.log("loss", loss.detach(), prog_bar=True, logger=False, batch_size=n)
        self.log("train_loss_step", loss.detach(), on_step=True, on_epoch=False, batch_size=n)
        # the epoch's mean over images and processes (float64 sums), for metrics.json's history
        self.log(
            "train_loss",
            loss.detach().double(),
            on_step=False,
            on_epoch=True,
            sync_dist=True,
            logger=False,
            batch_size=n,
        )
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_metrics.reset()

    def validation_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        # with a head, validation scores the mask logits alone, as prediction's probability map is
        # (the class logits gate whole classes at a threshold tuned after training)
        logits, _ = split_logits(self(x))
        self.log(
            "val_loss", self.loss(logits, y), on_epoch=True, prog_bar=True, sync_dist=True, batch_size=len(x)
        )
        self.val_metrics.update(torch.sigmoid(logits.float()), y)

    def on_validation_epoch_end(self) -> None:
        res = self.last_val = self.val_metrics.compute()  # torchmetrics sums the processes' states
        for k in ("dice", "iou", "kaggle", "soft_iou"):
            self.log(f"val_{k}", res[f"{k}_mean"], prog_bar=k == "kaggle")
            for c, v in enumerate(res[k], 1):
                self.log(f"val_{k}_{c}", v)

    def param_groups(self) -> list[dict[str, Any]]:
        """Encoder at ``lr_encoder``; decoder AND segmentation head (all the rest) at ``lr_decoder``."""
        enc = [p for p in self.model.encoder.parameters() if p.requires_grad]
        enc_ids = {id(p) for p in enc}
        rest = [p for p in self.model.parameters() if p.requires_grad and id(p) not in enc_ids]
        trainable = {id(p) for p in self.parameters() if p.requires_grad}
        grouped = [id(p) for p in enc + rest]
        assert len(grouped) == len(set(grouped)) and set(grouped) == trainable, (
            "every trainable parameter must be in exactly one optimizer group"
        )
        return [
            {"params": enc, "lr": self.config.lr_encoder, "name": "encoder"},
            {"params": rest, "lr": self.config.lr_decoder, "name": "decoder"},
        ]

    def configure_optimizers(self) -> Any:
        """Adam on ``param_groups`` with the config's schedule.

        plateau: ReduceLROnPlateau on the validation loss each epoch, and with ``warmup_epochs`` a
        linear warm-up from 1 % per step (both scale the rate, so a drop during warm-up is kept).
        onecycle: per step, a warm-up over ``warmup_epochs`` (at least 10 % of the steps) to each
        group's rate, then a cosine decay to nearly zero at the last planned step.
        """
        cfg = self.config
        # the fused kernel: one update for all tensors instead of a loop of small ops (on one CPU
        # thread 13 ms against 56 ms a step for B3, ~8 % of the step; bench/bench_train.py)
        opt = torch.optim.Adam(self.param_groups(), fused=self.device.type in FUSED_ADAM_DEVICES)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        if cfg.schedule == "onecycle":
            rise = min(0.9, max(0.1, cfg.warmup_epochs / cfg.epochs))
            if abs(rise * total - 1) < 1e-6:  # OneCycleLR divides by (warm-up steps - 1): 0/0 for one
                rise = (2.0 if total > 2 else 0.5) / total
            one = torch.optim.lr_scheduler.OneCycleLR(
                opt,
                max_lr=[cfg.lr_encoder, cfg.lr_decoder],
                total_steps=total,
                pct_start=rise,
                cycle_momentum=False,
            )
            return [opt], [{"scheduler": one, "interval": "step"}]
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience
        )
        scheds: list[dict[str, Any]] = [{"scheduler": plateau, "monitor": "val_loss", "interval": "epoch"}]
        if cfg.warmup_epochs > 0:
            steps = max(1, round(cfg.warmup_epochs * total / cfg.epochs))
            warm = torch.optim.lr_scheduler.LinearLR(
                opt, start_factor=0.01, end_factor=1.0, total_iters=steps
            )
            scheds.append({"scheduler": warm, "interval": "step"})
        return [opt], scheds


def start_from(model: torch.nn.Module, cfg: TrainConfig) -> None:
    """Load ``cfg.init_from``'s weights into ``model``; a checkpoint of another model is refused
    with a message naming it and what differs."""
    from .models import CheckpointError, has_classifier, load_model

    try:
        start, info = load_model(cfg.init_from)
    except CheckpointError as e:
        raise ConfigError(f"init_from={cfg.init_from!r}: {e}") from None
    want = (cfg.arch, cfg.encoder, cfg.classes, cfg.cls_weight > 0)
    got = (info.arch, info.encoder, info.classes, has_classifier(start))
    if want != got:
        raise ConfigError(
            f"init_from={cfg.init_from!r}: {info.path} holds {info.arch}/{info.encoder} with {info.classes} "
            f"classes{' and a classifier head' if got[3] else ''}; this run builds {cfg.arch}/{cfg.encoder} "
            f"with {cfg.classes} classes{' and a classifier head' if want[3] else ''}"
        )
    model.load_state_dict(start.state_dict())


def set_drop_path(encoder: torch.nn.Module, rate: float, name: str = "encoder") -> None:
    """Set the stochastic-depth rate of an smp encoder (EfficientNet's ``_drop_connect_rate``);
    rate 0 is accepted by every encoder, a positive rate only by one that has stochastic depth."""
    if hasattr(encoder, "_drop_connect_rate"):
        encoder._drop_connect_rate = float(rate)
    elif rate > 0:
        raise ConfigError(f"drop_path_rate={rate}: encoder {name} has no stochastic depth to set")


class RunRecorder(Callback):
    """Per-epoch history, throughput and memory -> ``metrics.json``; its state rides in checkpoints.

    An epoch's entry is taken at the end of its training epoch: the validation numbers of that
    epoch (kept at validation end) with the epoch's ``train_loss`` (``self.log``'d on_epoch, so
    Lightning has reduced it by then)."""

    def __init__(self, config: TrainConfig, data: dict[str, Any] | None = None) -> None:
        self.config, self.path, self.data = config, RunFolder(config.run_dir).metrics_file, data
        self.code = code_info()  # the same for the whole run: git is asked once, not at every epoch
        self.history: list[dict[str, Any]] = []
        self.wall_before, self.images, self.train_time = 0.0, 0, 0.0
        self._fit_t0 = self._epoch_t0 = time.perf_counter()
        self._epoch_images, self._epoch_time, self._lrs = 0, 0.0, [0.0, 0.0]
        self._val: dict[str, Any] | None = None  # this epoch's validation, until the epoch ends

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "wall_time_s": self.wall_time(),
            "images": self.images,
            "train_time_s": self.train_time + self._epoch_time,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state["history"])
        self.wall_before, self.images, self.train_time = (
            state["wall_time_s"],
            state["images"],
            state["train_time_s"],
        )

    def wall_time(self) -> float:
        return self.wall_before + time.perf_counter() - self._fit_t0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_t0 = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_t0, self._epoch_images, self._epoch_time = time.perf_counter(), 0, 0.0
        self._lrs = [g["lr"] for g in trainer.optimizers[0].param_groups]

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._epoch_images += len(batch[0]) * trainer.world_size
        self._epoch_time = time.perf_counter() - self._epoch_t0

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not isinstance(pl_module, SegmentationModule) or not pl_module.last_val:
            return
        m = trainer.callback_metrics
        self._val = {**pl_module.last_val, "val_loss": float(m["val_loss"]) if "val_loss" in m else None}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._val is None:
            return
        v, self._val = self._val, None
        self.images += self._epoch_images
        self.train_time += self._epoch_time
        self._epoch_images, self._epoch_time = 0, 0.0
        m = trainer.callback_metrics  # on every process: reading it reduces train_loss over them
        self.history.append(
            {
                "epoch": trainer.current_epoch + 1,
                "train_loss": float(m["train_loss"]) if "train_loss" in m else None,
                "val_loss": v["val_loss"],
                **{f"val_{k}": v[f"{k}_mean"] for k in ("dice", "iou", "kaggle", "soft_iou")},
                "val_empty_kaggle": v["empty_kaggle_mean"],  # what predicting nothing scores
                "val_images": v.get("images"),
                "lr_encoder": self._lrs[0],
                "lr_decoder": self._lrs[-1],
                "per_class": {k: v[k] for k in ("dice", "iou", "kaggle", "soft_iou")},
            }
        )
        if trainer.is_global_zero:
            self.write(trainer)

    def write(self, trainer: L.Trainer) -> dict[str, Any]:
        """Write metrics.json (atomically) from the history so far; return its content."""

        def summary(h: dict[str, Any] | None) -> dict[str, Any] | None:
            if h is None:
                return None
            return {
                "val_loss": h["val_loss"],
                **{k: h[f"val_{k}"] for k in ("dice", "iou", "kaggle", "soft_iou")},
                "per_class": h["per_class"],
            }

        key, sign = self.config.select_by, (-1 if self.config.select_by == "val_loss" else 1)
        scored = [h for h in self.history if h.get(key) is not None]
        best = max(scored, key=lambda h: sign * h[key], default=None)  # first of ties
        cfg = self.config
        peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
        data = {
            "run": cfg.name,
            "arch": cfg.arch,
            "encoder": cfg.encoder,
            "loss": cfg.loss,
            "height": cfg.height,
            "width": cfg.width,
            "epochs_planned": cfg.epochs,
            "epochs_run": len(self.history),
            "best_epoch": best["epoch"] if best else None,
            "best_by": cfg.select_by,
            "best": summary(best),
            "all_empty_kaggle": self.history[-1]["val_empty_kaggle"] if self.history else None,
            "final": summary(self.history[-1] if self.history else None),
            "history": self.history,
            "wall_time_s": self.wall_time(),
            "peak_gpu_mem_mb": peak,
            "train_images_per_s": self.images / self.train_time if self.train_time > 0 else None,
            "device": str(trainer.strategy.root_device),
            "world_size": trainer.world_size,
            "precision": str(trainer.precision),
            "encoder_weights": cfg.encoder_weights,
            "init_from": cfg.init_from or None,  # the run this one started from (a fine-tune)
            "seed": cfg.seed,
            "data": self.data,
            "code": self.code,
        }
        write_json(self.path, data)
        return data


def _data_block(cfg: TrainConfig, datamodule: Any) -> dict[str, Any] | None:
    """``provenance.data_info`` of a SteelDataModule-like object (None for other data modules)."""
    if not all(hasattr(datamodule, a) for a in ("train_ids", "val_ids", "labels")):
        return None
    table = getattr(datamodule, "full_table", None)
    n_images = len(table) if table is not None else len(getattr(datamodule, "table", []))
    splits = {
        "train": datamodule.train_ids,
        "val": datamodule.val_ids,
        "test": getattr(datamodule, "test_ids", []),
    }
    info = data_info(cfg.data_dir, cfg.subset, n_images, splits, set(datamodule.labels["ImageId"]))
    # the pseudo-labelled set a run trained on (None when off); reading it checks it for leaks
    return {**info, "pseudo": getattr(datamodule, "pseudo_info", None)}


def resolve_accelerator(device: str) -> str:
    """ "auto" -> "gpu" when CUDA is present else "cpu"; "cuda" -> "gpu" (error when absent)."""
    if device == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if device in ("cuda", "gpu"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device!r}: no CUDA device visible; use device='auto' or 'cpu'")
        return "gpu"
    return device


def resolve_precision(precision: str, accelerator: str) -> str:
    """ "auto" -> bf16-mixed (CUDA with bf16), 16-mixed (older CUDA, loss scaling), 32-true (CPU)."""
    if precision != "auto":
        return precision
    if accelerator == "gpu":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def _limit(v: float) -> float | int:
    return int(v) if v > 1 and float(v).is_integer() else v


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Hide Lightning's notebook-cluttering info lines and known harmless warnings."""
    names = (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
        "lightning.fabric",
    )
    levels = [logging.getLogger(n).level for n in names]
    with warnings.catch_warnings():
        for pattern in _QUIET:
            warnings.filterwarnings("ignore", message=pattern)
        for n in names:
            logging.getLogger(n).setLevel(logging.WARNING)
        try:
            yield
        finally:
            for n, lv in zip(names, levels):
                logging.getLogger(n).setLevel(lv)


def _checkpoints(cfg: TrainConfig, run_dir: Path, every_n_steps: int) -> list[Callback]:
    """best.ckpt (weights only: a third of the size with Adam's state) by ``cfg.select_by``, and
    last.ckpt (full, for resume) at every epoch end and every ``every_n_steps`` optimizer steps
    (mid-epoch: a killed run loses at most that many). Each last.ckpt writer is a one-file top-k
    without a monitor, as Lightning's save_last=True writes at an epoch end only where a top-k
    checkpoint was saved at that same step."""
    best = ModelCheckpoint(
        dirpath=run_dir,
        filename="best",
        monitor=cfg.select_by,
        mode="min" if cfg.select_by == "val_loss" else "max",
        save_top_k=1,
        save_weights_only=True,
        enable_version_counter=False,
        auto_insert_metric_name=False,
    )
    last = dict(dirpath=run_dir, filename="last", save_top_k=1, enable_version_counter=False)
    return [
        best,
        ModelCheckpoint(**last, every_n_epochs=1),
        ModelCheckpoint(**last, every_n_train_steps=every_n_steps),
    ]


def _trainer(cfg: TrainConfig, run_dir: Path, callbacks: list[Callback], progress_bar: bool) -> L.Trainer:
    """The Lightning trainer of a run: device and precision, limits, loggers, atomic checkpoints."""
    accelerator = resolve_accelerator(cfg.device)
    return L.Trainer(
        accelerator=accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        num_nodes=cfg.num_nodes,
        precision=resolve_precision(cfg.precision, accelerator),
        max_epochs=cfg.epochs,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        limit_train_batches=_limit(cfg.limit_train_batches),
        limit_val_batches=_limit(cfg.limit_val_batches),
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        num_sanity_val_steps=0,
        log_every_n_steps=10,
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        default_root_dir=str(run_dir),
        logger=[
            TensorBoardLogger(str(run_dir), name="logs", version="tensorboard"),
            CSVLogger(str(run_dir), name="logs", version="csv"),
        ],
        # CPU: bitwise reproducible; CUDA: cuDNN autotuning (nearest-upsample backward has no
        # deterministic CUDA kernel anyway)
        deterministic=accelerator == "cpu",
        benchmark=accelerator == "gpu",
        sync_batchnorm=cfg.devices * cfg.num_nodes > 1 and accelerator == "gpu",
    )


def fit(
    config: TrainConfig,
    datamodule: L.LightningDataModule | None = None,
    progress_bar: bool = True,
    callbacks: Sequence[Callback] = (),
    ckpt_every_n_steps: int = 100,
) -> Path:
    """Train one model; return its run folder (see module docstring).

    ``resume=True`` continues from ``last.ckpt`` (mid-epoch too) to the planned epochs; otherwise
    earlier checkpoints/metrics in the run folder are replaced. ``datamodule`` defaults to
    ``steelnb.data.dataset.SteelDataModule(config)``.
    """
    cfg, run_dir, run = config, config.run_dir, RunFolder(config.run_dir)
    with quiet(), contextlib.ExitStack() as stack:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        if resolve_accelerator(cfg.device) == "gpu":
            torch.set_float32_matmul_precision("high")
        if datamodule is None:
            from ..data.dataset import SteelDataModule

            datamodule = SteelDataModule(cfg)
        recorder = RunRecorder(cfg, _data_block(cfg, datamodule))
        cbs = [recorder, RandomStates(), *_checkpoints(cfg, run_dir, ckpt_every_n_steps), *callbacks]
        if cfg.early_stopping_patience > 0:
            cbs.append(EarlyStopping(monitor="val_loss", mode="min", patience=cfg.early_stopping_patience))
        trainer = _trainer(cfg, run_dir, cbs, progress_bar)
        if trainer.is_global_zero:
            stack.enter_context(hold(run_dir, f"training run {cfg.name}", RUN_ADVICE))
        ckpt_path = str(run.last_ckpt) if cfg.resume and run.last_ckpt.is_file() else None  # under the lock
        if trainer.is_global_zero:
            _prepare_folder(run, cfg, datamodule, fresh=ckpt_path is None)
        try:
            trainer.fit(
                SegmentationModule(cfg), datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True
            )
        except DiskFullError as e:
            raise DiskFullError(f"{e}. Training {cfg.name} stopped; {_resume_advice(cfg)}") from None
        if trainer.is_global_zero:
            recorder.write(trainer)
    return run_dir


def _prepare_folder(run: RunFolder, cfg: TrainConfig, datamodule: Any, fresh: bool) -> None:
    """Before training: a ``fresh`` run removes what an earlier run of its name left; then the
    config and, for a data module with the three splits, their ids (``RunFolder.write_splits``)."""
    if fresh:
        for path in (run.best_ckpt, run.last_ckpt, run.metrics_file, run.postprocess_file, run.splits_file):
            path.unlink(missing_ok=True)
    cfg.to_yaml(run.config_file)
    if all(hasattr(datamodule, a) for a in ("train_ids", "val_ids", "test_ids")):
        run.write_splits(Splits.of(datamodule))


#: what a user refused by a run folder's lock can do besides waiting
RUN_ADVICE = "to train beside it, give this run another name (run_name) or out_dir"


def _resume_advice(cfg: TrainConfig) -> str:
    """How to continue a run stopped by a full disk (or what it keeps when nothing was saved)."""
    run = RunFolder(cfg.run_dir)
    last = run.last_ckpt
    if not last.is_file():
        return f"no {last.name} was written yet: once there is room, train it again"
    step = torch.load(last, map_location="cpu", weights_only=True, mmap=True).get("global_step")
    return (
        f"{last} (step {step}) is intact: once there is room, continue it with "
        f"steelnb train --config {run.config_file} --resume"
    )


class TrainingError(SteelnbError):
    """A training run in a child Python failed; names the run folder and quotes its last lines."""


#: strategies whose processes Lightning may start from inside a Jupyter kernel (it forks them)
KERNEL_STRATEGIES = ("ddp_notebook", "ddp_fork")


def needs_own_process(config: TrainConfig) -> bool:
    """Whether ``config`` must be trained outside this Python: a DDP run over several devices or
    nodes, from an interactive kernel. Lightning 2.6 refuses ``strategy="ddp"`` there, whether it
    would start the processes itself (it re-runs the script, and a kernel has none) or Slurm's
    ``srun`` started them (one task per device, as ``steelnb run --executor slurm`` asks for): a
    child Python inherits the task's Slurm variables and joins the world as that rank."""
    from lightning.fabric.utilities.imports import _IS_INTERACTIVE

    if config.devices * config.num_nodes <= 1 or config.strategy.startswith(KERNEL_STRATEGIES):
        return False
    return bool(_IS_INTERACTIVE)


def fit_in_child(config: TrainConfig, progress_bar: bool = False, tail: int = 40) -> Path:
    """Train ``config`` with ``steelnb train`` in a child Python (no test-split evaluation: the
    caller does that), printing its output as it comes; return the run folder. The config goes
    through ``<run folder>/launch.yaml``. Raises ``TrainingError`` with the last ``tail`` lines of
    the child's output when it fails."""
    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = run_dir / "launch.yaml"
    config.to_yaml(spec)
    cmd = [sys.executable, "-m", "steelnb.cli", "train", "--config", str(spec), "--no-evaluate"]
    if not progress_bar:
        cmd.append("--no-progress-bar")
    lines: deque[str] = deque(maxlen=tail)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line.rstrip())
    if proc.returncode != 0:
        raise TrainingError(
            f"{run_dir}: training in a child Python ({' '.join(cmd[1:])}) failed with exit code "
            f"{proc.returncode}; its last lines:\n" + "\n".join(lines)
        )
    return run_dir


def fit_anywhere(config: TrainConfig, progress_bar: bool = True) -> Path:
    """``fit`` where it can run: in this Python, or in a child one when ``needs_own_process`` (a
    multi-device run started from a notebook). What a notebook calls; returns the run folder."""
    if needs_own_process(config):
        return fit_in_child(config, progress_bar=progress_bar)
    return fit(config, progress_bar=progress_bar)
