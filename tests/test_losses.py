"""Losses by name: values, autocast safety, and that each one can drive a model to fit a batch."""

from __future__ import annotations

import pytest
import torch
from segmentation_models_pytorch.losses import BINARY_MODE, MULTILABEL_MODE, LovaszLoss

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
    assert build_loss("dice_bce", dice_weight=0.0)(logits, target).item() == pytest.approx(
        bce.item(), rel=1e-5
    )


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


def _two_sizes() -> tuple[torch.Tensor, torch.Tensor]:
    """Channel 0: 4-pixel defects, predicted empty (wrong); channel 1: half the image, right."""
    target = torch.zeros(2, 2, 16, 16)
    target[:, 0, 3:5, 3:5] = 1
    target[:, 1, :, :8] = 1
    logits = 4 * (2 * target - 1)
    logits[:, 0] = -4.0
    return logits, target


def test_lovasz_is_per_class_not_pooled() -> None:
    logits, target = _two_sizes()
    ours = build_loss("lovasz", symmetric=False)(logits, target)
    pooled = LovaszLoss(MULTILABEL_MODE, from_logits=True)(logits, target)
    single = LovaszLoss(BINARY_MODE, from_logits=True)
    separate = torch.stack([single(logits[:, c], target[:, c]) for c in range(2)]).mean()
    # all of channel 0 is missed (IoU 0 there), channel 1 is perfect: per class (5 + 0) / 2
    assert ours.item() == pytest.approx(2.5, rel=1e-5)
    assert pooled.item() < 0.2 < 2.0 < ours.item()
    assert torch.allclose(ours, separate)


def test_lovasz_per_image_is_mean_of_single_images() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, 8, 8, generator=g)
    target = (torch.rand(3, 4, 8, 8, generator=g) > 0.7).float()
    per_image = build_loss("lovasz", per_image=True, symmetric=False)(logits, target)
    alone = [build_loss("lovasz", symmetric=False)(logits[i : i + 1], target[i : i + 1]) for i in range(3)]
    assert torch.allclose(per_image, torch.stack(alone).mean())
    single = LovaszLoss(BINARY_MODE, from_logits=True)
    terms = [single(logits[i, c], target[i, c]) for i in range(3) for c in range(4)]
    assert torch.allclose(per_image, torch.stack(terms).mean())
    assert not torch.allclose(per_image, build_loss("lovasz", symmetric=False)(logits, target))


def test_symmetric_lovasz_punishes_every_false_alarm_of_an_absent_class() -> None:
    """A class absent from the batch with 10 false-alarm pixels: the plain hinge's gradient
    reaches one of them, the symmetric one (class and complement averaged) reaches all ten."""
    logits = torch.full((1, 1, 8, 8), -3.0)
    logits[0, 0, 0, : 10 - 8] = 2.0
    logits[0, 0, 1, :] = 2.0  # 10 pixels at logit 2, none of them true
    target = torch.zeros(1, 1, 8, 8)
    grads = {}
    for sym in (False, True):
        x = logits.clone().requires_grad_(True)
        build_loss("lovasz", symmetric=sym)(x, target).backward()
        grads[sym] = int((x.grad[0, 0] > 0).sum())
    assert grads == {False: 1, True: 10}
    g = torch.Generator().manual_seed(2)
    x, t = torch.randn(2, 4, 8, 8, generator=g), (torch.rand(2, 4, 8, 8, generator=g) > 0.6).float()
    single = LovaszLoss(BINARY_MODE, from_logits=True)
    both = torch.stack(
        [(single(x[:, c], t[:, c]) + single(-x[:, c], 1 - t[:, c])) / 2 for c in range(4)]
    ).mean()
    assert torch.allclose(build_loss("lovasz")(x, t), both)
