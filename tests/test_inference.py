"""Model-facing prediction (``steelnb.judge.inference``): TTA, preprocessing, streaming batches, odd and
bad image files, checkpoints. The prediction run (submission, evaluation) is in test_predict_run."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from steelnb.judge import inference as inf

torch.set_num_threads(1)


class FlipSymmetric(nn.Module):
    """A model made flip-equivariant by construction: the mean of f over the four flips."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flips = [(), (-1,), (-2,), (-2, -1)]
        return torch.stack(
            [self.inner(x.flip(f) if f else x).flip(f) if f else self.inner(x) for f in flips]
        ).mean(0)


def _conv_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 5, padding=2)).eval()


def _images(n: int = 2, h: int = 32, w: int = 96, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8))


def test_tta_of_a_symmetric_model_equals_plain() -> None:
    model = FlipSymmetric(_conv_net())
    x = _images()
    plain, _ = inf.predict_tensor(model, x, "none", out_size=None)
    for tta in ("h", "hv"):
        out, identity = inf.predict_tensor(model, x, tta, out_size=None, with_plain=True)
        assert torch.allclose(out, plain, atol=1e-5), tta
        assert torch.allclose(identity, plain, atol=1e-6)
    # a model that is not symmetric: TTA must change the output (so the test above can fail)
    asym = _conv_net()
    a, _ = inf.predict_tensor(asym, x, "none", out_size=None)
    b, _ = inf.predict_tensor(asym, x, "hv", out_size=None)
    assert (a - b).abs().max() > 1e-3
    # hv is the mean of the four flipped predictions, flipped back
    # images are (B, H, W, 3): width is dim 2, height dim 1; outputs (B, C, H, W): dims 3 and 2
    flipped = []
    for image_dims, out_dims in [((), ()), ((2,), (3,)), ((1,), (2,)), ((1, 2), (2, 3))]:
        p, _ = inf.predict_tensor(asym, x.flip(image_dims) if image_dims else x, "none", out_size=None)
        flipped.append(p.flip(out_dims) if out_dims else p)
    manual = torch.stack(flipped)
    assert torch.allclose(b, manual.mean(0), atol=1e-5)
    with pytest.raises(inf.InferenceError, match="tta"):
        inf.predict_tensor(asym, x, "vh")


def test_preprocessing_matches_val_transforms(tmp_path) -> None:
    from steelnb.data.dataset import val_transforms

    image = np.random.default_rng(1).integers(0, 256, (256, 1600, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image[..., ::-1])
    model = _conv_net()
    batch = next(inf.predict(model, tmp_path, size=(64, 320), out_size=(64, 320), progress=False))
    x = torch.as_tensor(val_transforms(64, 320)(image=image)["image"])[None]
    with torch.no_grad():
        expected = torch.sigmoid(model(x)).numpy()
    assert np.abs(batch.probs - expected).max() < 1e-4


def test_cpu_inference_runs_channels_last_and_gives_the_default_layouts_probabilities(tmp_path) -> None:
    """predict puts the model and its input in channels_last on CPU too, where oneDNN ran the
    study's encoders 1.18-1.35x faster (bench/bench_layout.py); the probabilities stay those of
    the default (contiguous) layout."""
    from steelnb.data.dataset import val_transforms
    from steelnb.model.models import build_model

    torch.manual_seed(0)
    model = build_model("Unet", "resnet18", None, 4, encoder_depth=4, decoder_channels=(32, 16, 16, 8)).eval()
    image = np.random.default_rng(2).integers(0, 256, (256, 1600, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image[..., ::-1])
    x = torch.as_tensor(val_transforms(64, 320)(image=image)["image"])[None]
    with torch.no_grad():
        expected = torch.sigmoid(model(x)).numpy()
    assert model.encoder.conv1.weight.is_contiguous()
    batch = next(
        inf.predict(model, tmp_path, size=(64, 320), out_size=(64, 320), device="cpu", progress=False)
    )
    assert model.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert np.abs(batch.probs - expected).max() < 1e-4


def test_predict_streams_batches(tmp_path) -> None:
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"{i}.jpg"), _images(1, 128, 800, seed=i)[0].numpy())
    batches = list(
        inf.predict(_conv_net(), tmp_path, size=(64, 320), batch_size=2, quantize=True, progress=False)
    )
    assert [b.ids for b in batches] == [["0.jpg", "1.jpg"], ["2.jpg", "3.jpg"], ["4.jpg"]]
    assert batches[0].probs.shape == (2, 4, 256, 1600) and batches[0].probs.dtype == np.uint8


def test_predict_reads_odd_images_and_reports_bad_ones(odd_images, tiny_run) -> None:
    folder, names = odd_images
    model, info = inf.load(tiny_run)
    assert (info.classes, info.height, info.width) == (4, 64, 320)
    batches = list(inf.predict(model, folder, (64, 320), batch_size=2, on_error="skip", progress=False))
    probs = {i: p for b in batches for i, p in zip(b.ids, b.probs)}
    skipped = dict(s for b in batches for s in b.skipped)
    assert sorted(skipped) == ["truncated.jpg", "zz_text.jpg"]
    assert "truncated" in skipped["truncated.jpg"] and "not a readable image" in skipped["zz_text.jpg"]
    assert sorted(probs) == sorted([*names, "grey.jpg", "png_named.jpg", "small.jpg"])
    assert np.array_equal(probs["png_named.jpg"], probs[names[0]])  # decoded by content, same pixels
    assert probs["grey.jpg"].shape == probs["small.jpg"].shape == (4, 256, 1600)
    # on_error="raise": the batches before the bad file come out, then the error names it
    seen = []
    with pytest.raises(inf.InferenceError, match="truncated.jpg"):
        for b in inf.predict(model, folder, (64, 320), batch_size=2, progress=False):
            seen += b.ids
    assert seen and "truncated.jpg" not in seen and set(seen) <= set(probs)
    with pytest.raises(inf.InferenceError, match="on_error"):
        next(inf.predict(model, folder, on_error="ignore"))


def test_image_paths_and_load_name_the_problem(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(inf.InferenceError, match="empty.*no images"):
        inf.image_paths(tmp_path / "empty")
    with pytest.raises(inf.InferenceError, match="nowhere: image folder not found"):
        inf.image_paths(tmp_path / "nowhere")
    with pytest.raises(inf.InferenceError, match="several images named a.jpg"):
        inf.image_paths([tmp_path / "x" / "a.jpg", tmp_path / "y" / "a.jpg"])
    with pytest.raises(inf.InferenceError, match="nope.ckpt: checkpoint or run folder not found"):
        inf.load(tmp_path / "nope.ckpt")


def test_one_class_helpers() -> None:
    probs = np.arange(2 * 1 * 3 * 5, dtype=np.float32).reshape(2, 1, 3, 5)
    four = inf.four_classes(probs, 3)
    assert four.shape == (2, 4, 3, 5) and np.array_equal(four[:, 2], probs[:, 0])
    assert not four[:, [0, 1, 3]].any()
    assert inf.four_classes(four, None) is four
    one, all_four = (SimpleNamespace(classes=c, path=Path("m.pth")) for c in (1, 4))
    assert "class 3 only" in inf.check_classes(one, 3)
    with pytest.raises(inf.InferenceError, match="name the class"):
        inf.check_classes(one, None)
    with pytest.raises(inf.InferenceError, match="class_id=2 given"):
        inf.check_classes(all_four, 2)


class _WithHead(nn.Module):
    """A conv net with an image-level head, returning (mask logits, class logits) as smp does."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seg = _conv_net(seed)
        torch.manual_seed(seed + 1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4))
        self.classification_head = self.head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # the head sees only the left half: flips change its logits, so the TTA mean is tested
        return self.seg(x), self.head(x[..., : x.shape[-1] // 2])


def test_class_probs_are_averaged_over_flips_and_leave_the_map_alone() -> None:
    """The class probabilities come beside the map, for the tuned gate; they do not scale it (the
    mask head is trained on every image, so scaling by P(c in image) counted absence twice)."""
    model = _WithHead().eval()
    x = _images()
    out = inf.predict_tensors(model, x, "h", out_size=None, with_plain=True)
    norm = inf._normalised(x, [(), (-1,)])
    with torch.no_grad():
        masks, labels = model(norm)
    p = torch.sigmoid(masks)
    want = (p[:2] + p[2:].flip(-1)) / 2
    assert torch.allclose(out.probs, want, atol=1e-6)
    assert torch.allclose(out.plain, p[:2], atol=1e-6)
    cls = torch.sigmoid(labels)
    assert torch.allclose(out.class_probs, (cls[:2] + cls[2:]) / 2, atol=1e-6)
    assert torch.allclose(out.plain_class_probs, cls[:2], atol=1e-6)
    assert (cls[:2] - cls[2:]).abs().max() > 1e-4  # the flip did change the head's logits
    probs, plain = inf.predict_tensor(model, x, "h", out_size=None, with_plain=True)  # the old pair
    assert torch.equal(probs, out.probs) and torch.equal(plain, out.plain)
    no_head = inf.predict_tensors(_conv_net(), x, "h", out_size=None)
    assert no_head.class_probs is None and no_head.plain_class_probs is None


def test_members_average_and_one_model_twice_is_the_model(tmp_path) -> None:
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.jpg"), _images(1, 128, 800, seed=i)[0].numpy())
    a, b = _WithHead(0).eval(), _WithHead(5).eval()

    def run(members, **kw) -> list[inf.Batch]:
        return list(inf.predict_members(members, tmp_path, "h", batch_size=2, progress=False, **kw))

    alone = list(inf.predict(a, tmp_path, (64, 320), "h", batch_size=2, with_plain=True, progress=False))
    twice = run([(a, (64, 320)), (a, (64, 320))], with_plain=True)
    for x, y in zip(alone, twice):
        assert x.ids == y.ids and np.allclose(x.probs, y.probs) and np.allclose(x.plain, y.plain)
        assert np.allclose(x.class_probs, y.class_probs) and np.allclose(
            x.plain_class_probs, y.plain_class_probs
        )
    # two models at two input sizes: the mean of what each predicts alone at the common output size
    both = run([(a, (64, 320)), (b, (32, 160))], quantize=False)
    one = run([(a, (64, 320))])
    other = run([(b, (32, 160))])
    for m, p, q in zip(both, one, other):
        assert np.allclose(m.probs, (p.probs + q.probs) / 2, atol=1e-6)
        assert np.allclose(m.class_probs, (p.class_probs + q.class_probs) / 2, atol=1e-6)
    # a member without a head: the ensemble has no class probabilities
    mixed = run([(a, (64, 320)), (_conv_net(), (64, 320))])
    assert all(m.class_probs is None for m in mixed)
    with pytest.raises(inf.InferenceError, match="no model"):
        inf.predict_members([], tmp_path)
