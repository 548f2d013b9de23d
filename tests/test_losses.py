"""Losses by name: values, autocast safety, and that each one can drive a model to fit a batch."""

from __future__ import annotations

import pytest
import torch
from segmentation_models_pytorch.losses import BINARY_MODE, MULTILABEL_MODE, LovaszLoss

from steelnb.data.config import LOSSES
from steelnb.model.losses import LossError, build_loss
from steelnb.model.models import build_model

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


def test_pos_weight_is_torch_bce_with_per_class_pos_weight() -> None:
    """dice_bce's BCE with pos_weight (4,) equals torch's BCEWithLogitsLoss(pos_weight) with the
    weights broadcast over the class axis; it weighs the defect pixels only, and stays out of the
    state dict (the config holds it)."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 8, 8, generator=g)
    target = (torch.rand(2, 4, 8, 8, generator=g) > 0.7).float()
    weights = [2.0, 2.0, 1.0, 1.5]
    torch_bce = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(weights).view(4, 1, 1))
    ours = build_loss("dice_bce", dice_weight=0.0, pos_weight=weights)
    assert ours(logits, target).item() == pytest.approx(torch_bce(logits, target).item(), rel=1e-6)
    plain = build_loss("dice_bce", dice_weight=0.0)(logits, target)
    assert ours(logits, target).item() > plain.item()  # more weight on the positives
    empty = torch.zeros_like(target)  # no defect pixel: the weights change nothing
    assert ours(logits, empty).item() == pytest.approx(
        build_loss("dice_bce", dice_weight=0.0)(logits, empty).item(), rel=1e-6
    )
    assert not any("pos_weight" in k for k in ours.state_dict())
    scalar = build_loss("dice_bce", dice_weight=0.0, pos_weight=3.0)(logits, target)
    assert scalar.item() == pytest.approx(
        torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(3.0))(logits, target).item(), rel=1e-6
    )
    with pytest.raises(LossError, match="3 values for 4 classes"):
        build_loss("dice_bce", pos_weight=[1.0, 2.0, 3.0])(logits, target)
    with pytest.raises(LossError, match="positive"):
        build_loss("dice_bce", pos_weight=[1.0, 0.0, 1.0, 1.0])


def test_pos_weight_from_config_and_bad_values() -> None:
    """TrainConfig.pos_weight reaches the loss through loss_from_config; a bad value is a
    ConfigError naming the field."""
    from steelnb.data.config import ConfigError, TrainConfig
    from steelnb.model.losses import loss_from_config

    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 8, 8, generator=g)
    target = (torch.rand(2, 4, 8, 8, generator=g) > 0.7).float()
    cfg = TrainConfig(pos_weight=[2, 2, 1, 1.5], loss_params={"dice_weight": 0.0})
    assert cfg.pos_weight == [2.0, 2.0, 1.0, 1.5]
    want = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([2, 2, 1, 1.5]).view(4, 1, 1))(logits, target)
    assert loss_from_config(cfg)(logits, target).item() == pytest.approx(want.item(), rel=1e-6)
    assert TrainConfig(pos_weight="2,2,1,1.5").pos_weight == [2.0, 2.0, 1.0, 1.5]  # the command line
    assert TrainConfig.from_dict(cfg.to_dict()).pos_weight == cfg.pos_weight  # config.yaml round trip
    assert TrainConfig().pos_weight == []
    plain = TrainConfig(loss_params={"dice_weight": 0.0})
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert loss_from_config(plain)(logits, target).item() == pytest.approx(bce.item(), rel=1e-6)
    bad = {
        "three": ([1, 2, 3], "pos_weight=.*4 positive numbers"),
        "zero": ([1, 0, 1, 1], "pos_weight=.*4 positive numbers"),
        "negative": ([1, -2, 1, 1], "pos_weight=.*4 positive numbers"),
        "nan": ([1, float("nan"), 1, 1], "pos_weight=.*4 positive numbers"),
        "text": ("a,b,c,d", "pos_weight=.*4 positive numbers"),
    }
    for value, message in bad.values():
        with pytest.raises(ConfigError, match=message):
            TrainConfig(pos_weight=value)
    with pytest.raises(ConfigError, match="pos_weight is a BCE weight.*'focal'"):
        TrainConfig(pos_weight=[1, 1, 1, 1], loss="focal")
    with pytest.raises(ConfigError, match="given twice"):
        TrainConfig(pos_weight=[1, 1, 1, 1], loss_params={"pos_weight": 2.0})
    with pytest.raises(ConfigError, match="<dict>: pos_weight="):
        TrainConfig.from_dict({"pos_weight": [1, 2]})
