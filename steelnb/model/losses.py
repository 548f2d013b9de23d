"""Losses by name, built on ``smp.losses``, on logits (N, C, H, W) vs 0/1 targets (N, C, H, W).

Every loss runs in float32 with autocast switched off, so it is safe under mixed precision
(sigmoid/log of float16 logits underflow). The four classes are modelled as independent sigmoid
channels (multilabel). That is a modelling choice, not a property of the data: in all 12,568
Severstal train images the class masks never overlap, so a softmax over "background + 4 classes"
would fit the data too. ``loss_from_config`` builds a run's loss, with the config's per-class BCE
``pos_weight`` (the 1st place's 2, 2, 1, 1.5) when it sets one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from ..data.config import LOSSES, TrainConfig
from ..data.errors import SteelnbError

MULTILABEL = smp.losses.MULTILABEL_MODE


class LossError(SteelnbError):
    """Unknown loss name or parameters the loss does not take."""


class DiceBCELoss(nn.Module):
    """The reference's DiceBCE: ``dice_weight * Dice + bce_weight * BCE`` (soft Dice from logits).

    ``pos_weight``: BCE weight of the positive (defect) pixels, one number for all classes or one
    per class (C,), as ``nn.BCEWithLogitsLoss(pos_weight=...)`` with the weights broadcast over
    (N, C, H, W); the 1st place used 2, 2, 1, 1.5. It is a non-persistent buffer: it follows the
    module to the device and stays out of checkpoints (the config holds it).
    """

    pos_weight: torch.Tensor | None

    def __init__(
        self,
        dice_weight: float = 1.0,
        bce_weight: float = 1.0,
        smooth: float = 0.0,
        pos_weight: float | Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.dice = smp.losses.DiceLoss(MULTILABEL, from_logits=True, smooth=smooth)
        self.register_buffer("pos_weight", _pos_weight(pos_weight), persistent=False)
        self.dice_weight, self.bce_weight = float(dice_weight), float(bce_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits (N, C, H, W), target (N, C, H, W) 0/1 -> scalar."""
        pw = self.pos_weight
        if pw is not None and pw.numel() > 1 and pw.shape[0] != logits.shape[1]:
            raise LossError(
                f"dice_bce: pos_weight has {pw.shape[0]} values for {logits.shape[1]} classes; "
                "give one per class"
            )
        bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw)
        return self.dice_weight * self.dice(logits, target) + self.bce_weight * bce

    def extra_repr(self) -> str:
        pw = None if self.pos_weight is None else self.pos_weight.flatten().tolist()
        return f"dice_weight={self.dice_weight}, bce_weight={self.bce_weight}, pos_weight={pw}"


def _pos_weight(value: float | Sequence[float] | None) -> torch.Tensor | None:
    """None, a scalar tensor, or per-class weights (C, 1, 1) that broadcast over (N, C, H, W)."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        weights = torch.tensor(float(value))
    else:
        try:
            weights = torch.tensor([float(v) for v in value]).view(-1, 1, 1)
        except (TypeError, ValueError):
            raise LossError(
                f"dice_bce: pos_weight={value!r}: expected a number or one number per class"
            ) from None
    if not bool(torch.isfinite(weights).all() and (weights > 0).all()) or not weights.numel():
        raise LossError(f"dice_bce: pos_weight={value!r}: expected positive numbers")
    return weights


class PerClassLovaszLoss(nn.Module):
    """Lovász hinge computed per class (channel) and averaged over the C classes.

    smp's ``LovaszLoss(MULTILABEL)`` flattens (N, C, H, W) into one vector and takes a single
    hinge over all channels at once: one pooled IoU dominated by the class with the most defect
    pixels (class 3 on Severstal). Here each channel ``logits[:, c]`` (N, H, W) goes through smp's
    binary ``LovaszLoss`` on its own, so each class weighs 1/C whatever its size.

    ``per_image=False`` (default): per class over the whole batch, then the mean over classes.
    It is the default because most Severstal images are empty for a given class, and the hinge
    of an empty image only penalises its largest false positive; pooling over the batch keeps
    each class's IoU over all its pixels. ``per_image=True``: per image AND per class, then the
    mean over the N * C terms. ``ignore_index`` is passed to smp unchanged.

    ``symmetric=True`` (default) averages the hinge of each class with the hinge of its
    complement (``-logits`` against ``1 - target``). The plain hinge of a class absent from the
    batch has an empty IoU and gives a gradient to its single largest false positive only, so on
    Severstal, where most (image, class) pairs are empty, false alarms go almost unpunished; the
    complement's IoU counts every one of them (the symmetric Lovász of the TGS Salt winners).
    """

    def __init__(
        self, per_image: bool = False, ignore_index: int | None = None, symmetric: bool = True
    ) -> None:
        super().__init__()
        self.per_image, self.symmetric = bool(per_image), bool(symmetric)
        self.lovasz = smp.losses.LovaszLoss(
            smp.losses.BINARY_MODE, per_image=self.per_image, ignore_index=ignore_index, from_logits=True
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits (N, C, H, W), target (N, C, H, W) 0/1 -> scalar, mean of C class losses."""
        per_class = []
        for c in range(logits.shape[1]):
            loss = self.lovasz(logits[:, c], target[:, c])
            if self.symmetric:
                loss = (loss + self.lovasz(-logits[:, c], 1 - target[:, c])) / 2
            per_class.append(loss)
        return torch.stack(per_class).mean()

    def extra_repr(self) -> str:
        return f"per_image={self.per_image}, symmetric={self.symmetric}"


class Float32Loss(nn.Module):
    """Wraps a loss: casts logits/targets to float32 and disables autocast inside."""

    def __init__(self, loss: nn.Module, name: str) -> None:
        super().__init__()
        self.loss, self.name = loss, name

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits (N, C, H, W) any float dtype, target (N, C, H, W) 0/1 -> scalar float32."""
        if logits.shape != target.shape:
            raise LossError(
                f"loss {self.name}: logits {tuple(logits.shape)} and target "
                f"{tuple(target.shape)} must have the same (N, C, H, W) shape"
            )
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self.loss(logits.float(), target.float())

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


def _tversky(alpha: float = 0.1, beta: float = 0.9, **kw: Any) -> nn.Module:
    # reference: alpha weighs false positives, beta false negatives (beta > alpha favours recall)
    return smp.losses.TverskyLoss(MULTILABEL, from_logits=True, alpha=alpha, beta=beta, **kw)


_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "dice_bce": DiceBCELoss,
    "tversky": _tversky,
    "focal": lambda **kw: smp.losses.FocalLoss(MULTILABEL, **kw),
    "lovasz": PerClassLovaszLoss,
}
assert set(_FACTORIES) == set(LOSSES)


def build_loss(name: str, **params: Any) -> nn.Module:
    """Loss ``name`` (dice_bce | tversky | focal | lovasz) with keyword ``params``.

    Returns a module ``loss(logits (N, C, H, W), target (N, C, H, W)) -> scalar``.
    Defaults: dice_bce weights 1/1; tversky alpha 0.1, beta 0.9; focal gamma 2;
    lovasz per class over the batch, symmetric (class and complement), averaged over classes
    (``per_image=True``: per image and class; ``symmetric=False``: the class hinge alone).
    """
    if name not in _FACTORIES:
        raise LossError(f"unknown loss {name!r}: expected one of {', '.join(_FACTORIES)}")
    try:
        loss = _FACTORIES[name](**params)
    except TypeError as e:
        raise LossError(f"loss {name!r}: bad parameters {params}: {e}") from None
    return Float32Loss(loss, name)


def loss_from_config(config: TrainConfig) -> nn.Module:
    """``build_loss`` of a run: ``config.loss`` with ``config.loss_params`` and, when set, the
    per-class ``config.pos_weight`` (dice_bce's BCE ``pos_weight``; the config checks both)."""
    params = dict(config.loss_params)
    if config.pos_weight:
        params["pos_weight"] = list(config.pos_weight)
    return build_loss(config.loss, **params)
