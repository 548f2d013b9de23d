"""Losses by name: values, autocast safety, and that each one can drive a model to fit a batch."""
from __future__ import annotations

import pytest
import torch

from steelnb.config import LOSSES
from steelnb.losses import LossError, build_loss
from steelnb.models import build_model

torch.set_num_threads(1)


def test_unknown_loss_and_bad_params() -> None:
    with pytest.raises(LossError, match="dice_bce"):
        build_loss("dice")
    with pytest.raises(LossError, match="tversky"):
        build_loss("tversky", gamma_typo=1)


def test_tversky_defaults_are_reference() -> None:
    loss = build_loss("tversky").loss
    assert (loss.alpha, loss.beta) == (0.1, 0.9)


def test_dice_bce_is_sum_of_parts() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, generator=g)
    target = (torch.rand(2, 4, 8, 8, generator=g) > 0.5).float()
    probs = torch.sigmoid(logits)
    inter, card = (probs * target).sum((0, 2, 3)), (probs + target).sum((0, 2, 3))
    dice = (1 - 2 * inter / card).mean()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert build_loss("dice_bce")(logits, target).item() == pytest.approx((dice + bce).item(), rel=1e-4)
    assert build_loss("dice_bce", dice_weight=0.0)(logits, target).item() == pytest.approx(bce.item(), rel=1e-5)


@pytest.mark.parametrize("name", LOSSES)
def test_loss_is_float32_under_autocast(name: str) -> None:
    logits = torch.randn(2, 4, 8, 8, dtype=torch.bfloat16)
    target = (torch.rand(2, 4, 8, 8) > 0.5).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = build_loss(name)(logits, target)
    assert out.dtype == torch.float32 and torch.isfinite(out)


@pytest.mark.parametrize("name", LOSSES)
def test_loss_decreases_overfitting_one_batch(name: str) -> None:
    torch.manual_seed(0)
    model = build_model("Unet", "resnet18", encoder_weights=None, classes=4)
    x = torch.randn(2, 3, 32, 64)
    y = torch.zeros(2, 4, 32, 64)
    y[:, 0, 8:20, 10:40] = 1
    y[1, 2, 20:28, :] = 1
    loss = build_loss(name)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        value = loss(model(x), y)
        value.backward()
        opt.step()
        losses.append(value.item())
    assert losses[-1] < 0.8 * losses[0], losses
